//! reckon's error type and its mapping to the exit codes of CONTRACT.md.

use std::path::PathBuf;

/// What went wrong, sorted by what the scheduler should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Exit 2: a usage or configuration error; retrying will not help.
    #[error("{0}")]
    Config(String),
    /// Exit 3: a bill failed validation (totals, markers, container, too many rejected rows).
    #[error("bad input: {0}")]
    BadInput(String),
    /// Exit 75: the channel has not published the bill yet.
    #[error("not ready: {0}")]
    NotReady(String),
    /// Exit 75: a service could not be reached (a database, an object store, the network).
    /// Retried inside the stage first; after the last attempt, retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Exit 1: an I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The storage root (or another object store) failed: exit 75 when the store could not
    /// be reached after object_store's own retries (5xx, 429, timeouts, resets), 2 when it
    /// refused the credentials, else 1.
    #[error("{what}: {source}")]
    Store {
        /// The object (or folder) as the user names it.
        what: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// Exit 1: the engine failed. A query that ran out of its memory pool says which setting
    /// gives it more.
    #[error("engine: {0}{hint}", hint = memory_hint(.0))]
    Engine(#[from] datafusion::error::DataFusionError),
    /// Exit 1: Parquet or Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Exit 1: Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// Exit 2 for a wrong option, else 1: generating the synthetic data set failed.
    #[error("generate: {0}")]
    Generate(#[from] reckon_gen::Error),
    /// Exit 1: anything else, with its context.
    #[error("{0}")]
    Other(String),
}

/// What to change when the engine ran out of the pool `memory_limit_mb` sets.
fn memory_hint(e: &datafusion::error::DataFusionError) -> &'static str {
    match e.find_root() {
        datafusion::error::DataFusionError::ResourcesExhausted(_) => {
            " (the stage needs more memory than its pool: raise memory_limit_mb, or lower \
             target_partitions so fewer sorts and joins share it)"
        }
        _ => "",
    }
}

/// reckon's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error (CONTRACT.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Generate(reckon_gen::Error::Config(_)) => 2,
            Error::BadInput(_) => 3,
            Error::NotReady(_) | Error::Unavailable(_) => 75,
            Error::Store { source, .. } if store_transient(source) => 75,
            Error::Store {
                source:
                    object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. },
                ..
            } => 2,
            _ => 1,
        }
    }

    /// The run status this error leaves a channel-date in (manifest and final JSON).
    pub fn status(&self) -> crate::records::DayStatus {
        use crate::records::DayStatus;
        match self {
            Error::BadInput(_) => DayStatus::Incomplete,
            Error::NotReady(_) => DayStatus::Waiting,
            Error::Unavailable(_) => DayStatus::Unavailable,
            Error::Store { source, .. } if store_transient(source) => DayStatus::Unavailable,
            _ => DayStatus::Failed,
        }
    }

    /// Whether trying again in a moment may succeed: a service that could not be reached, or
    /// the engine's object store failing on its transport. Bad input, bad configuration and a
    /// bill not yet published are not (the last is for the scheduler to retry later).
    pub fn is_transient(&self) -> bool {
        use datafusion::error::DataFusionError as D;
        fn io_transient(e: &std::io::Error) -> bool {
            use std::io::ErrorKind as K;
            matches!(
                e.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::Interrupted
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::NetworkDown
            )
        }
        fn df_transient(e: &D) -> bool {
            match e {
                D::ObjectStore(e) => store_transient(e),
                D::IoError(e) => io_transient(e),
                D::Context(_, inner) => df_transient(inner),
                D::External(e) => {
                    e.downcast_ref::<object_store::Error>()
                        .is_some_and(store_transient)
                        || e.downcast_ref::<std::io::Error>().is_some_and(io_transient)
                }
                _ => false,
            }
        }
        match self {
            Error::Unavailable(_) => true,
            Error::Io { source, .. } => io_transient(source),
            Error::Engine(e) => df_transient(e),
            Error::Store { source, .. } => store_transient(source),
            _ => false,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Whether an object store's error is its transport failing (after its own retries), as
/// opposed to an answer: a missing object, a refused precondition or credentials, a bad path.
fn store_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Other(format!("json: {e}"))
    }
}

/// Attaches a path to an `io::Result`.
pub trait IoContext<T> {
    /// Names `path` in the error.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
