//! The five stages of a channel-day: fetch, normalize, collect, reconcile, report. Each is
//! idempotent: it writes aside, commits by rename, and records itself in the run manifest.

pub mod ageing;
pub mod collect;
pub mod fetch;
pub mod normalize;
pub mod reconcile;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::config::{Channel, Config};
use crate::engine::Engines;
use crate::error::{Error, Result};
use crate::sql::SqlDir;
use crate::store::{Manifest, StageRecord, Store};

/// The stage names, in order.
pub const STAGES: [&str; 5] = ["fetch", "normalize", "collect", "reconcile", "report"];

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

    /// The manifest of this channel-day.
    pub fn manifest(&self) -> Result<Manifest> {
        self.store.manifest(self.name(), self.date)
    }

    /// The record of an earlier stage that must be done, or "not ready" naming it.
    pub fn require(&self, manifest: &Manifest, stage: &str, by: &str) -> Result<StageRecord> {
        manifest.done(stage).cloned().ok_or_else(|| {
            Error::NotReady(format!(
                "{by} of {} {} needs stage {stage} to be done first",
                self.name(),
                self.date
            ))
        })
    }

    /// An absolute path from a manifest's relative one.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.store.root().join(relative)
    }
}

/// Runs one stage by name and records it in the manifest (state, time, files, detail); its
/// log lines carry the stage.
pub async fn run_stage(job: &Job<'_>, stage: &str) -> Result<StageRecord> {
    tracing::Instrument::instrument(
        stage_attempts(job, stage),
        tracing::info_span!("stage", stage),
    )
    .await
}

async fn stage_attempts(job: &Job<'_>, stage: &str) -> Result<StageRecord> {
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
            "fetch" => fetch::run(job).await,
            "normalize" => normalize::run(job),
            "collect" => collect::run(job).await,
            "reconcile" => reconcile::run(job).await,
            "report" => report::run(job),
            other => Err(Error::Config(format!(
                "unknown stage {other:?}: one of {}",
                STAGES.join(", ")
            ))),
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
    let mut manifest = job.manifest()?;
    let finished_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok((files, detail)) => {
            let record = StageRecord {
                state: "done".into(),
                finished_at,
                duration_ms,
                files,
                detail,
                attempts,
            };
            manifest.stages.insert(stage.to_string(), record.clone());
            // A stage that reran makes the later ones stale: they must run again.
            if let Some(i) = STAGES.iter().position(|s| *s == stage) {
                for later in &STAGES[i + 1..] {
                    if let Some(r) = manifest.stages.get_mut(*later) {
                        if stage != "fetch" || detail_changed(&record) {
                            r.state = "stale".into();
                        }
                    }
                }
            }
            if stage == "reconcile" {
                manifest.run_id = record.detail["run_id"].as_str().map(String::from);
            }
            // Short of the report, the day is partway: its stages so far are done, the rest
            // are to run (a DAG runs them one task at a time).
            manifest.status = if stage == "report" {
                "reconciled".into()
            } else {
                "in_progress".into()
            };
            manifest.error = None;
            job.store.save_manifest(&manifest, job.date)?;
            tracing::info!(duration_ms, "stage done");
            Ok(record)
        }
        Err(e) => {
            manifest.stages.insert(
                stage.to_string(),
                StageRecord {
                    state: "failed".into(),
                    finished_at,
                    duration_ms,
                    files: Vec::new(),
                    detail: serde_json::json!({ "error": e.to_string() }),
                    attempts,
                },
            );
            manifest.status = e.status().into();
            manifest.error = Some(e.to_string());
            job.store.save_manifest(&manifest, job.date)?;
            tracing::error!(error = %e, "stage failed");
            Err(e)
        }
    }
}

/// Whether a fetch brought different content than before (a re-issued bill).
fn detail_changed(record: &StageRecord) -> bool {
    record.detail["unchanged"].as_bool() != Some(true)
}

/// What a stage returns: committed files (relative to the root) and its detail.
pub type Outcome = (Vec<String>, serde_json::Value);
