//! The daily job: every stage of every selected channel for one date, on one engine session.

use std::time::Duration;

use crate::alerts::{Alert, Cause};
use crate::engine::Engines;
use crate::lease::{Lease, LeasePolicy};
use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::records::{DayStatus, Stage, Summary};
use crate::sql::SqlDir;
use crate::stages::{run_stage, Job};
use crate::store::{Manifest, RecordView, Store};

/// The engine sessions of one process with their storage root and scratch folder; `close`
/// removes the scratch space.
pub struct Runtime {
    /// The sessions.
    pub engines: Engines,
    /// The storage root.
    pub store: Store,
    work: std::path::PathBuf,
}

impl Runtime {
    /// Opens sessions on `kind` (the config's engine when `None`) for `config`.
    pub async fn open(config: &Config, kind: Option<&str>) -> Result<Runtime> {
        let kind = crate::engine::EngineKind::parse(kind.unwrap_or(&config.engine))
            .map_err(Error::Config)?;
        let store = store(config)?;
        let work = store.work_dir()?;
        let engines = crate::engine::open(&kind, &crate::engine::Sizing::of(config), &work).await?;
        // The storage root's object store, for both sessions (they share one runtime
        // environment when the engine is local).
        store.register(&engines.local);
        store.register(&engines.join);
        Ok(Runtime {
            engines,
            store,
            work,
        })
    }

    /// Removes this process's work folder. The shared scratch folders stay: another process
    /// may be creating its staging folder in them this very moment.
    pub fn close(self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// One channel-day's result, as the run's JSON line shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum ChannelResult {
    /// The report ran: the day's summary.
    Reconciled(Box<Summary>),
    /// Stages short of the report ran: what they did, and where the day stands.
    Stages(StagesDone),
    /// A stage failed, or the run could not have the channel-date's lease.
    Failed(Failure),
}

/// What stages short of the report did (the last line of `reckon stage fetch`, …).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StagesDone {
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The day's status.
    pub status: DayStatus,
    /// Each stage that ran: its state, time, attempts, files and facts.
    pub stages: Vec<RecordView>,
    /// Where the day stands.
    pub day: DayProgress,
}

/// Where a channel-day stands between stages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DayProgress {
    /// Its status.
    pub status: DayStatus,
    /// The stages done, in order.
    pub done: Vec<Stage>,
    /// The next stage to run; `None` when every one is done.
    pub next: Option<Stage>,
}

/// A failed channel-day.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The status the error leaves the day in.
    pub status: DayStatus,
    /// The stage that failed, or `lease`.
    pub stage: String,
    /// The error.
    pub error: String,
    /// Its exit code.
    pub exit_code: i32,
}

impl ChannelResult {
    /// The day's status.
    pub fn status(&self) -> DayStatus {
        match self {
            ChannelResult::Reconciled(s) => s.status,
            ChannelResult::Stages(s) => s.status,
            ChannelResult::Failed(f) => f.status,
        }
    }

    /// The error, when it failed.
    pub fn error(&self) -> Option<&str> {
        match self {
            ChannelResult::Failed(f) => Some(&f.error),
            _ => None,
        }
    }

    /// Whether the day passed one of its thresholds.
    pub fn threshold_passed(&self) -> bool {
        matches!(self, ChannelResult::Reconciled(s) if !s.thresholds.passed.is_empty())
    }

    /// As JSON, every object's keys in order (the run's JSON line).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// One channel's outcome and the exit code it asks for.
pub struct ChannelOutcome {
    /// What happened.
    pub result: ChannelResult,
    /// The exit code this channel asks for.
    pub exit_code: i32,
}

/// Every channel of one date: the run's JSON line and exit code.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DayRun {
    /// The date.
    pub bill_date: String,
    /// The most severe of the channels' exit codes.
    pub exit_code: i32,
    /// Each channel.
    pub channels: Vec<ChannelResult>,
}

impl DayRun {
    /// Whether any channel passed a threshold.
    pub fn threshold_passed(&self) -> bool {
        self.channels.iter().any(ChannelResult::threshold_passed)
    }

    /// As JSON, every object's keys in order.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The storage root of `config`.
pub fn store(config: &Config) -> Result<Store> {
    let signer = crate::signing::Signer::of(config.signing.as_ref(), &config.locator())?;
    Ok(Store::open(
        &config.locator(),
        "storage_root",
        &config.storage_root,
        config.scratch_dir.as_deref(),
    )?
    .signed_by(signer)
    .cache_budget(config.scratch_cache_bytes()))
}

/// Runs `stages` for one channel and date; a failure is recorded and returned as the outcome.
/// Its log lines carry the channel and date (and, once reconciled, the run id).
pub async fn run_channel(
    config: &Config,
    channel: &str,
    date: NaiveDate,
    engines: &Engines,
    sql: &SqlDir,
    stages: &[Stage],
) -> Result<ChannelOutcome> {
    let span = tracing::info_span!(
        "job",
        channel,
        date = %date,
        run_id = tracing::field::Empty
    );
    tracing::Instrument::instrument(
        channel_stages(config, channel, date, engines, sql, stages),
        span,
    )
    .await
}

async fn channel_stages(
    config: &Config,
    channel: &str,
    date: NaiveDate,
    engines: &Engines,
    sql: &SqlDir,
    stages: &[Stage],
) -> Result<ChannelOutcome> {
    let ch = config.channel(channel)?;
    let engines = &engines.for_job()?;
    let job = Job {
        config,
        channel: ch,
        date,
        store: store(config)?,
        sql,
        engines,
    };
    let failed = |stage: &str, e: &Error| ChannelOutcome {
        result: ChannelResult::Failed(Failure {
            channel: channel.to_string(),
            bill_date: date.to_string(),
            status: e.status(),
            stage: stage.to_string(),
            error: e.to_string(),
            exit_code: e.exit_code(),
        }),
        exit_code: e.exit_code(),
    };
    // One run of a channel-date at a time: the lease is held until this function returns.
    let policy = LeasePolicy {
        ttl: Duration::from_secs(config.orchestration.lease_ttl_secs.max(1)),
        wait: Duration::from_secs(config.orchestration.lease_wait_secs),
    };
    let lease = match Lease::acquire(&job.store, channel, date, policy).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "not run");
            return Ok(failed("lease", &e));
        }
    };
    let outcome = leased_stages(&job, ch, stages, &failed).await;
    // The bill's upload ends before the lease does, whatever the stages did.
    let outcome = match crate::stages::settle_uploads(&job).await {
        Ok(()) => outcome,
        Err(e) => Ok(failed("fetch", &e)),
    };
    lease.release().await;
    outcome
}

/// The stages of a channel-day, under its lease.
async fn leased_stages(
    job: &Job<'_>,
    ch: &crate::config::Channel,
    stages: &[Stage],
    failed: &dyn Fn(&str, &Error) -> ChannelOutcome,
) -> Result<ChannelOutcome> {
    let (config, channel, date) = (job.config, ch.name.as_str(), job.date);
    job.store.clear_stale_staging(channel, date)?;
    job.store.prune_cache();
    // What an earlier run of the day left and no manifest names (a crash before its commit,
    // the folders a superseded commit named) goes now, under the lease.
    job.store.clean(channel, date, &[]).await?;
    let mut manifest = job.manifest().await?;
    let before = manifest.run_id.clone();
    let mut summary: Option<Summary> = None;
    // collect reads only the warehouse: it runs beside fetch and normalize.
    let front: Vec<Stage> = (stages.iter().copied())
        .filter(|s| matches!(s, Stage::Fetch | Stage::Normalize))
        .collect();
    let beside = !front.is_empty() && stages.contains(&Stage::Collect);
    let mut ran_beside = false;
    for stage in stages {
        let in_front = front.contains(stage) || *stage == Stage::Collect;
        if beside && in_front && ran_beside {
            continue;
        }
        // The fetched bill's upload (in the background) ends before the report commits: one
        // that failed is the fetch's failure.
        let settled = match *stage {
            Stage::Report => crate::stages::settle_uploads(job).await,
            _ => Ok(()),
        };
        let ran = match settled {
            Ok(()) if beside && in_front => {
                ran_beside = true;
                crate::stages::run_beside(job, &front, Stage::Collect).await
            }
            Ok(()) => run_stage(job, *stage).await.map_err(|e| (*stage, e)),
            Err(e) => Err((Stage::Fetch, e)),
        };
        match ran {
            Ok(m) => manifest = m,
            Err((stage, e)) => {
                if let Some(alert) = failure_alert(ch, date, stage.as_str(), &e)? {
                    crate::alerts::send(config.alerts.as_ref(), &alert).await;
                }
                return Ok(failed(stage.as_str(), &e));
            }
        }
        if *stage == Stage::Reconcile {
            if let Some(id) = &manifest.run_id {
                tracing::Span::current().record("run_id", id.as_str());
            }
        }
        // The report stage already built the summary: take it from its record.
        if *stage == Stage::Report {
            summary = manifest.reported().map(|r| r.summary.clone());
        }
    }
    if let Some(s) = summary.as_ref().filter(|s| !s.thresholds.passed.is_empty()) {
        let alert = Alert {
            cause: Cause::Threshold,
            channel: channel.to_string(),
            bill_date: date.to_string(),
            stage: None,
            exit_code: 0,
            message: format!(
                "categories past their thresholds: {}",
                s.thresholds.passed.join(", ")
            ),
            detail: serde_json::to_value(&s.thresholds)?,
        };
        crate::alerts::send(config.alerts.as_ref(), &alert).await;
    }
    let result = match summary {
        Some(mut s) => {
            let after = manifest.run_id.clone();
            if before.is_some() && after != before {
                let marked = mark_later_stale(
                    &job.store,
                    channel,
                    date,
                    before.as_deref(),
                    after.as_deref(),
                )
                .await?;
                if !marked.is_empty() {
                    s.marked_stale = Some(marked);
                }
            }
            ChannelResult::Reconciled(Box::new(s))
        }
        None => ChannelResult::Stages(stages_done(&manifest, channel, date, stages)),
    };
    Ok(ChannelOutcome {
        result,
        exit_code: 0,
    })
}

/// What `stages` did (each one's files and facts) and where the day stands: the stages done
/// and the next to run. The final line of a `reckon stage` short of the report.
fn stages_done(m: &Manifest, channel: &str, date: NaiveDate, stages: &[Stage]) -> StagesDone {
    let done: Vec<Stage> = Stage::ALL.into_iter().filter(|s| m.is_done(*s)).collect();
    StagesDone {
        channel: channel.to_string(),
        bill_date: date.to_string(),
        status: m.status,
        stages: stages.iter().filter_map(|s| m.stages.view(*s)).collect(),
        day: DayProgress {
            status: m.status,
            done,
            next: Stage::ALL.into_iter().find(|s| !m.is_done(*s)),
        },
    }
}

/// The alert a failed stage calls for: a bill not yet there is worth one only past its
/// deadline; other waits (a warehouse partition, another run) are for the scheduler's retry.
fn failure_alert(
    ch: &crate::config::Channel,
    date: NaiveDate,
    stage: &str,
    e: &Error,
) -> Result<Option<Alert>> {
    let alert = |cause, message: String| Alert {
        cause,
        channel: ch.name.clone(),
        bill_date: date.to_string(),
        stage: Some(stage.to_string()),
        exit_code: e.exit_code(),
        message,
        detail: json!({ "error": e.to_string(), "status": e.status() }),
    };
    Ok(match e {
        Error::NotReady(_) if stage == "fetch" => match ch.bill_due(date) {
            Some(due) if chrono::Utc::now() >= due => Some(alert(
                Cause::BillLate,
                format!(
                    "the bill of {date} has not arrived by {} ({}): {e}",
                    ch.bill_deadline.as_deref().unwrap_or(""),
                    ch.time_zone
                ),
            )),
            _ => None,
        },
        Error::NotReady(_) => None,
        _ => Some(alert(Cause::StageFailed, e.to_string())),
    })
}

/// After day `date` of `channel` was reconciled again with different results, marks every
/// later reconciled day of the channel stale (their carry-in and ledger came from the old
/// results) and says so; returns those dates.
async fn mark_later_stale(
    store: &Store,
    channel: &str,
    date: NaiveDate,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<Vec<String>> {
    let later: Vec<NaiveDate> = store
        .dates("runs", channel)
        .await?
        .into_iter()
        .filter(|d| *d > date)
        .collect();
    let mut marked = Vec::new();
    for d in later {
        let mut m = store.manifest(channel, d).await?;
        if m.status != DayStatus::Reconciled {
            continue;
        }
        m.status = DayStatus::Stale;
        m.error = Some(format!(
            "{date} was reconciled again with different results (run {} became {}); its carry-over and ledger feed this day: run it again",
            before.unwrap_or("-"),
            after.unwrap_or("-")
        ));
        store.save_manifest(&m, d).await?;
        tracing::warn!(channel, date = %d, rerun = %date, "marked stale: an earlier day changed");
        marked.push(d.to_string());
    }
    Ok(marked)
}

/// Runs the whole job for `channels` (all when empty) on `date`; the exit code is the most
/// severe of the channels' (2, then 3, then 1, then 75).
pub async fn run_day(
    config: &Config,
    channels: &[String],
    date: NaiveDate,
    engines: &Engines,
) -> Result<DayRun> {
    let names = config.channel_names(channels)?;
    let sql = SqlDir::for_config(config)?;
    let mut results = Vec::new();
    let mut codes = Vec::new();
    for name in &names {
        let out = run_channel(config, name, date, engines, &sql, &Stage::ALL).await?;
        codes.push(out.exit_code);
        results.push(out.result);
    }
    drain_replica(config).await;
    Ok(DayRun {
        bill_date: date.to_string(),
        exit_code: worst(&codes),
        channels: results,
    })
}

/// At the end of a run: brings an `eventual` replica up to date from the backlog, each day
/// retried with the orchestration's backoff. A replica that stays out of reach fails nothing:
/// its days stay queued (`reckon status` shows the lag) for the next run or `reckon replicate`.
pub async fn drain_replica(config: &Config) -> Option<crate::replica::Drained> {
    let replica = match crate::replica::Replica::of(config) {
        Ok(Some(r)) if r.mode == crate::config::ReplicaMode::Eventual => r,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "the replica is misconfigured; nothing replicated");
            return None;
        }
    };
    let primary = match store(config) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "nothing replicated");
            return None;
        }
    };
    let orch = &config.orchestration;
    let base = Duration::from_millis(orch.retry_base_ms);
    match crate::replica::drain(&primary, &replica.store, orch.retry_attempts, base).await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "the replication backlog could not be read");
            None
        }
    }
}

/// The most severe exit code: configuration (2), bad input (3), failure (1), not ready (75).
pub fn worst(codes: &[i32]) -> i32 {
    [2, 3, 1, 75]
        .into_iter()
        .find(|c| codes.contains(c))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_day_reconciled_again_with_new_results_makes_later_reconciled_days_stale() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).expect("date");
        for (d, status) in [
            (19, DayStatus::Reconciled),
            (21, DayStatus::Reconciled),
            (22, DayStatus::Incomplete),
            (23, DayStatus::Reconciled),
        ] {
            let mut m = Manifest::new("wechat", &day(d).to_string());
            m.status = status;
            store.save_manifest(&m, day(d)).await.expect("save");
        }
        let marked = mark_later_stale(&store, "wechat", day(20), Some("old"), Some("new"))
            .await
            .expect("mark");
        assert_eq!(marked, ["2026-11-21", "2026-11-23"]);
        let m = store.manifest("wechat", day(21)).await.expect("read");
        assert_eq!(m.status, DayStatus::Stale);
        assert!(m.error.is_some_and(|e| e.contains("run old became new")));
        assert_eq!(
            store
                .manifest("wechat", day(22))
                .await
                .expect("read")
                .status,
            DayStatus::Incomplete,
            "only reconciled days go stale"
        );
        assert_eq!(
            store
                .manifest("wechat", day(19))
                .await
                .expect("read")
                .status,
            DayStatus::Reconciled,
            "earlier days are not touched"
        );
    }

    #[test]
    fn the_most_severe_exit_code_wins() {
        assert_eq!(worst(&[]), 0);
        assert_eq!(worst(&[0, 0]), 0);
        assert_eq!(worst(&[75, 0]), 75);
        assert_eq!(worst(&[75, 1]), 1);
        assert_eq!(worst(&[1, 3, 75]), 3);
        assert_eq!(worst(&[3, 2, 1, 75]), 2);
    }
}
