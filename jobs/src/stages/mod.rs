//! The five stages of a channel-day: fetch, normalize, collect, reconcile, report. Each is
//! idempotent: it writes aside, publishes into a version folder of its own, and records itself
//! in the working manifest; the report commits the day (`store` has the protocol).

pub mod ageing;
pub mod collect;
pub mod fetch;
pub mod normalize;
pub mod reconcile;
pub mod report;

use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::config::{Channel, Config};
use crate::engine::Engines;
use crate::error::{Error, Result};
use crate::records::Output;
pub use crate::records::Stage;
use crate::sql::SqlDir;
use crate::store::{Manifest, Ran, Store};

/// Everything a stage needs about the channel-day it works on.
pub struct Job<'a> {
    /// The whole configuration.
    pub config: &'a Config,
    /// The channel.
    pub channel: &'a Channel,
    /// The bill date.
    pub date: NaiveDate,
    /// The storage root.
    pub store: Store,
    /// The SQL files.
    pub sql: &'a SqlDir,
    /// The engine sessions (shared by the stages of a run).
    pub engines: &'a Engines,
}

impl Job<'_> {
    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.channel.name
    }

    /// The working manifest of this channel-day.
    pub async fn manifest(&self) -> Result<Manifest> {
        self.store.manifest(self.name(), self.date).await
    }

    /// The path (relative to the root) of the file named `name` that `stage` committed.
    pub fn committed_file(&self, manifest: &Manifest, stage: Stage, name: &str) -> Result<String> {
        manifest
            .stages
            .view(stage)
            .and_then(|v| {
                v.files
                    .into_iter()
                    .find(|f| f.rsplit('/').next() == Some(name))
            })
            .ok_or_else(|| {
                Error::NotReady(format!(
                    "{} {}: stage {stage} recorded no file {name}; run it again",
                    self.name(),
                    self.date
                ))
            })
    }

    /// Publishes a table reconcile reads (the normalized bill, the platform snapshot); when
    /// the reconciliation runs in this process, a hard link of each file stays in the scratch
    /// cache for it (see `Store::take_cached`).
    pub async fn publish_input(
        &self,
        staged: &std::path::Path,
        area: &str,
    ) -> Result<Vec<crate::store::FileSum>> {
        let (name, date) = (self.name(), self.date);
        match self.engines.in_process() {
            true => self.store.publish_cached(staged, area, name, date).await,
            false => self.store.publish(staged, area, name, date).await,
        }
    }

    /// Publishes what a stage ran on besides its data (the template's text, a SQL file as it
    /// was read, the channel's rules) into `inputs/…/_v=<hash>/`, so a day can be checked and
    /// replayed from what it recorded.
    pub async fn recipe(&self, files: &[(&str, &[u8])]) -> Result<Vec<crate::store::FileSum>> {
        let staged = self.store.staging("inputs", self.name(), self.date)?;
        for (name, bytes) in files {
            crate::store::write_atomic(&staged.join(name), bytes)?;
        }
        self.store
            .publish(&staged, "inputs", self.name(), self.date)
            .await
    }

    /// The files (relative to the root) of `area` that `stage` committed.
    pub fn committed_in(&self, manifest: &Manifest, stage: Stage, area: &str) -> Vec<String> {
        (manifest.stages.files_of(stage).iter())
            .filter(|f| f.starts_with(&format!("{area}/")))
            .cloned()
            .collect()
    }

    /// What `by` needs from an earlier stage (`get`), or "not ready" naming that stage.
    pub fn require<'m, T>(
        &self,
        manifest: &'m Manifest,
        stage: Stage,
        by: Stage,
        get: impl Fn(&'m Manifest) -> Option<T>,
    ) -> Result<T> {
        get(manifest).ok_or_else(|| {
            Error::NotReady(format!(
                "{by} of {} {} needs stage {stage} to be done first",
                self.name(),
                self.date
            ))
        })
    }
}

/// Runs one stage and records it in the manifest (state, time, files, its facts); its log
/// lines carry the stage.
pub async fn run_stage(job: &Job<'_>, stage: Stage) -> Result<Manifest> {
    tracing::Instrument::instrument(
        stage_attempts(job, stage),
        tracing::info_span!("stage", stage = stage.as_str()),
    )
    .await
}

async fn stage_attempts(job: &Job<'_>, stage: Stage) -> Result<Manifest> {
    use backon::Retryable;
    let started = Instant::now();
    tracing::info!("stage started");
    let orch = &job.config.orchestration;
    // Each stage writes aside and commits at its end, so an attempt that failed left nothing
    // visible and the next one starts clean.
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(orch.retry_base_ms))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(300))
        .with_max_times(orch.retry_attempts.saturating_sub(1) as usize)
        .with_jitter();
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let outcome = (|| async {
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match stage {
            Stage::Fetch => fetch::run(job).await,
            Stage::Normalize => normalize::run(job).await,
            Stage::Collect => collect::run(job).await,
            Stage::Reconcile => reconcile::run(job).await,
            Stage::Report => report::run(job).await,
        }
    })
    .retry(backoff)
    .when(Error::is_transient)
    .notify(|e, wait| {
        tracing::warn!(
            attempt = attempts.load(std::sync::atomic::Ordering::Relaxed),
            wait_ms = wait.as_millis() as u64,
            error = %e,
            "stage attempt failed; retrying"
        );
    })
    .await;
    let attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
    let outcome = outcome.map_err(|e| {
        if e.is_transient() && attempts > 1 {
            Error::Unavailable(format!("{e} (gave up after {attempts} attempts)"))
        } else {
            e
        }
    });
    // Stages run side by side record themselves one at a time.
    let _writing = job.store.manifest_lock().await;
    let mut manifest = job.manifest().await?;
    let ran = Ran {
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: started.elapsed().as_millis() as u64,
        attempts,
    };
    match outcome {
        Ok((files, output)) => {
            manifest.record_done(stage, &ran, files, output);
            // The report commits the day before the working manifest says `reconciled`: a day
            // the manifest calls reconciled is always committed (a backfill skips it).
            let previous = match stage {
                Stage::Report => Some(commit(job, &manifest).await?),
                _ => None,
            };
            job.store.save_manifest(&manifest, job.date).await?;
            crate::store::crash_point(stage.as_str(), "recorded");
            if let Some(keep) = previous {
                job.store.clean(job.name(), job.date, &keep).await?;
                crate::store::crash_point("report", "cleaned");
            }
            tracing::info!(duration_ms = ran.duration_ms, "stage done");
            Ok(manifest)
        }
        Err(e) => {
            manifest.record_failed(stage, &ran, e.status(), e.to_string());
            job.store.save_manifest(&manifest, job.date).await?;
            tracing::error!(error = %e, "stage failed");
            Err(e)
        }
    }
}

/// Runs `front` (fetch, then normalize) one after another, and `side` (collect) beside them:
/// collect reads only the warehouse, so the bill's copy, hash and parse (on tokio's blocking
/// threads) overlap the snapshot's scan and sort. A failure of `front` stops collect where it
/// is (nothing of it is recorded; its staging folder goes with the next run); the first
/// failure in stage order is returned, else the working manifest with both recorded.
pub async fn run_beside(
    job: &Job<'_>,
    front: &[Stage],
    side: Stage,
) -> std::result::Result<Manifest, (Stage, Error)> {
    let ahead = async {
        for stage in front {
            run_stage(job, *stage).await.map_err(|e| (*stage, e))?;
        }
        Ok(())
    };
    let beside = run_stage(job, side);
    tokio::pin!(ahead, beside);
    let mut collected = None;
    let ahead = tokio::select! {
        done = &mut ahead => done,
        ran = &mut beside => {
            collected = Some(ran);
            ahead.await
        }
    };
    // A failed fetch or normalize drops collect's future here: its plan stops.
    ahead?;
    let ran = match collected {
        Some(ran) => ran,
        None => beside.await,
    };
    ran.map_err(|e| (side, e))?;
    job.manifest().await.map_err(|e| (side, e))
}

/// Waits for the job's background uploads (the fetched bill, see `store/background.rs`). When
/// one failed, the fetch's record says so (the bill it names is not on the root, and the next
/// run fetches it again) and its error is returned.
pub async fn settle_uploads(job: &Job<'_>) -> Result<()> {
    let Err(e) = job.store.settle_uploads().await else {
        return Ok(());
    };
    let mut manifest = job.manifest().await?;
    let ran = Ran {
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: 0,
        attempts: 1,
    };
    manifest.record_failed(Stage::Fetch, &ran, e.status(), e.to_string());
    job.store.save_manifest(&manifest, job.date).await?;
    Err(e)
}

/// Commits the day the report recorded (see `store`): writes the pointer. Returns what the
/// previous pointer named: a reader may be reading it, so the cleaning that follows keeps it
/// (the next run of the day removes it).
async fn commit(job: &Job<'_>, manifest: &Manifest) -> Result<Vec<String>> {
    use crate::config::ReplicaMode;
    let previous = job.store.committed_at(job.name(), job.date).await?;
    settle_uploads(job).await?;
    let day = job.store.pointer_for(manifest).await?;
    let replica = crate::replica::Replica::of(job.config)?;
    if let Some(r) = replica.as_ref().filter(|r| r.mode == ReplicaMode::Strong) {
        // Both roots hold the day, checked, before either pointer says so.
        crate::replica::commit_day(&job.store, &r.store, &day).await?;
        crate::store::crash_point("report", "replicated");
    }
    job.store
        .write_pointer(&day, job.date, previous.as_ref().map(|(_, v)| v))
        .await?;
    crate::store::crash_point("report", "committed");
    if let Some(r) = replica.as_ref().filter(|r| r.mode == ReplicaMode::Eventual) {
        crate::replica::enqueue(&job.store, &day).await?;
        tracing::debug!(replica = r.store.display(), "queued for the replica");
    }
    tracing::info!(
        run_id = day.run_id.as_deref().unwrap_or_default(),
        files = day.files.len(),
        "day committed"
    );
    Ok(previous
        .map(|(c, _)| c.files.into_iter().map(|f| f.path).collect())
        .unwrap_or_default())
}

/// What a stage returns: the files it committed (with their checksums) and its typed record.
pub type Outcome = (Vec<crate::store::FileSum>, Output);
