//! Uploads that go on while later stages run: on an object-store root the fetched bill (the
//! day's one big file) uploads in the background while normalize parses the local copy. The
//! fetch's record names the bill's final path, SHA-256 and size, all known before the upload
//! ends; the commit waits for every upload first ([`Background::settle`]), and so does the end
//! of a run, whatever its outcome, so no run leaves with an upload unfinished.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// An upload running: the object it writes, and its task (the size sent, or why it failed).
type Running = (String, JoinHandle<Result<u64>>);

/// The uploads of one job still running.
#[derive(Debug, Clone, Default)]
pub struct Background(Arc<Mutex<Vec<Running>>>);

impl Background {
    /// Runs `upload` (of the object `what`) on its own task.
    pub fn spawn(&self, what: String, upload: impl Future<Output = Result<u64>> + Send + 'static) {
        tracing::info!(object = %what, "uploading in the background");
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let size = upload.await?;
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(size, seconds = secs, "background upload done");
            Ok(size)
        });
        self.lock().push((what, task));
    }

    /// Waits for every upload started so far; the first failure, once all have ended.
    pub async fn settle(&self) -> Result<()> {
        let tasks = std::mem::take(&mut *self.lock());
        let mut first = None;
        for (what, task) in tasks {
            let ended = match task.await {
                Ok(r) => r.map(|_| ()),
                Err(e) => Err(Error::Other(format!("the upload of {what} stopped: {e}"))),
            };
            if let Err(e) = ended {
                tracing::error!(object = %what, error = %e, "background upload failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
