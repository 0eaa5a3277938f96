//! Locations of tables: a local directory (`file://` URL or path) or an object store
//! (`s3://bucket/prefix`). A table's partitions are found by their explicit paths, never by
//! listing the whole table.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::config::{resolve_location, Locator};
use crate::error::{Error, Result};

/// Where a table lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// A prefix in an object store.
    Remote {
        /// `s3://bucket/` — what the store is registered under.
        root: Url,
        /// The table's prefix inside the bucket.
        prefix: StorePath,
        /// The store.
        store: Arc<dyn ObjectStore>,
    },
}

impl Location {
    /// Parses a location setting (`what` names it in errors).
    pub fn parse(locator: &Locator, what: &str, value: &str) -> Result<Location> {
        if let Some((store, root, prefix)) = crate::store::s3_location(locator, what, value)? {
            return Ok(Location::Remote {
                root,
                prefix,
                store,
            });
        }
        resolve_location(&locator.base_dir, what, value)
            .map(Location::Local)
            .map_err(Error::Config)
    }

    /// The location as a user wrote it.
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Remote { root, prefix, .. } => format!("{root}{prefix}"),
        }
    }

    /// Makes the location readable by `ctx` (object stores are registered by bucket).
    pub fn register(&self, ctx: &SessionContext) {
        if let Location::Remote { root, store, .. } = self {
            ctx.register_object_store(root, store.clone());
        }
    }

    /// The URL of the sub-directory `name` (`dt=2026-11-20`) when it holds at least one file;
    /// only that directory is listed.
    pub async fn partition(&self, name: &str) -> Result<Option<String>> {
        match self {
            Location::Local(p) => {
                let d = p.join(name);
                Ok(d.is_dir().then(|| dir_url(&d)))
            }
            Location::Remote {
                root,
                prefix,
                store,
            } => {
                let dir = prefix.clone().join(name);
                let listed = store
                    .list_with_delimiter(Some(&dir))
                    .await
                    .map_err(|e| remote_error(&self.display(), e))?;
                Ok((!listed.objects.is_empty()).then(|| format!("{root}{dir}/")))
            }
        }
    }

    /// The URLs of the partition directories `column=…` directly below the location, in
    /// name order (one listing of the top level; for `reckon sql check`).
    pub async fn partitions(&self, column: &str) -> Result<Vec<String>> {
        let prefix = format!("{column}=");
        let mut out = match self {
            Location::Local(p) => std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|d| {
                    d.is_dir()
                        && d.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                })
                .map(|d| dir_url(&d))
                .collect::<Vec<_>>(),
            Location::Remote {
                root,
                prefix: table,
                store,
            } => store
                .list_with_delimiter(Some(table))
                .await
                .map_err(|e| remote_error(&self.display(), e))?
                .common_prefixes
                .into_iter()
                .filter(|d| d.filename().is_some_and(|n| n.starts_with(&prefix)))
                .map(|d| format!("{root}{d}/"))
                .collect(),
        };
        out.sort();
        Ok(out)
    }
}

impl Location {
    /// The names of the files directly below the location (one listing, not recursive); a
    /// local folder that does not exist is a configuration error.
    pub async fn file_names(&self) -> Result<Vec<String>> {
        match self {
            Location::Local(p) => {
                let entries = match std::fs::read_dir(p) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::Config(format!(
                            "the folder {} does not exist",
                            p.display()
                        )))
                    }
                    Err(e) => return Err(Error::io(p, e)),
                };
                let mut out = Vec::new();
                for e in entries {
                    let e = e.map_err(|e| Error::io(p, e))?;
                    if e.file_type().map_err(|x| Error::io(e.path(), x))?.is_file() {
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
                Ok(out)
            }
            Location::Remote { prefix, store, .. } => Ok(store
                .list_with_delimiter(Some(prefix))
                .await
                .map_err(|e| fetch_error(&self.display(), e))?
                .objects
                .into_iter()
                .filter_map(|m| m.location.filename().map(String::from))
                .collect()),
        }
    }

    /// Copies the file `name` directly below the location to `to`, streaming; returns its size.
    pub async fn copy_out(&self, name: &str, to: &std::path::Path) -> Result<u64> {
        match self {
            Location::Local(p) => {
                let (from, to) = (p.join(name), to.to_path_buf());
                crate::store::off_task(move || {
                    std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))
                })
                .await
            }
            Location::Remote { prefix, store, .. } => {
                use std::io::Write;
                let at = prefix.clone().join(name);
                let shown = format!("{}/{name}", self.display().trim_end_matches('/'));
                let mut stream = store
                    .get(&at)
                    .await
                    .map_err(|e| fetch_error(&shown, e))?
                    .into_stream();
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(to).map_err(|e| Error::io(to, e))?,
                );
                let mut size = 0u64;
                while let Some(chunk) = stream
                    .try_next()
                    .await
                    .map_err(|e| fetch_error(&shown, e))?
                {
                    out.write_all(&chunk).map_err(|e| Error::io(to, e))?;
                    size += chunk.len() as u64;
                }
                out.flush().map_err(|e| Error::io(to, e))?;
                Ok(size)
            }
        }
    }
}

/// An object-store failure while fetching a bill: a missing object is "not yet"; anything
/// else (the store unreachable, a throttled request) is worth retrying.
fn fetch_error(location: &str, e: object_store::Error) -> Error {
    match remote_error(location, e) {
        Error::Other(m) => Error::Unavailable(m),
        e => e,
    }
}

/// A local directory as a listing URL (with the trailing slash a directory needs).
pub fn dir_url(d: &std::path::Path) -> String {
    let s = d.to_string_lossy();
    if d.is_dir() && !s.ends_with('/') {
        format!("{s}/")
    } else {
        s.into_owned()
    }
}

fn remote_error(location: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => {
            Error::NotReady(format!("{location}: not found: {e}"))
        }
        other => Error::Other(format!("{location}: {other}")),
    }
}
