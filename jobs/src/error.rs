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
    /// Exit 1: an I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Exit 1: the engine failed.
    #[error("engine: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    /// Exit 1: Parquet or Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Exit 1: Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// Exit 1: anything else, with its context.
    #[error("{0}")]
    Other(String),
}

/// reckon's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error (CONTRACT.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::BadInput(_) => 3,
            Error::NotReady(_) => 75,
            _ => 1,
        }
    }

    /// The run status this error leaves a channel-date in (manifest and final JSON).
    pub fn status(&self) -> &'static str {
        match self {
            Error::BadInput(_) => "incomplete",
            Error::NotReady(_) => "waiting",
            _ => "failed",
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
