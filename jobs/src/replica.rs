//! The replica: a second storage root (another bucket, another region) that holds every
//! committed day too.
//!
//! - `strong`: the report copies the day's files to the replica, reads each back to check its
//!   SHA-256 against the pointer, writes the replica's pointer, and only then the primary's. A
//!   replica that cannot be reached fails the report (exit 75, retry later) before either
//!   pointer is written: neither root has the day half-committed.
//! - `eventual`: the primary commits; the day goes into a durable backlog on the primary
//!   (`replication/pending/channel=C/dt=D.json`), drained at the end of every run and by
//!   `reckon replicate`, each day retried with backoff. `reckon status` shows the lag.
//!
//! Either way a replica day is written the same way: files first (each verified), the pointer
//! last, the version folders the replica's pointers no longer name removed after.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ReplicaMode};
use crate::error::{Error, Result};
use crate::store::{Committed, Store};

/// The replica of a config: its store and mode.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The replica's root.
    pub store: Store,
    /// How it keeps up.
    pub mode: ReplicaMode,
}

impl Replica {
    /// The replica `config` names, if any.
    pub fn of(config: &Config) -> Result<Option<Replica>> {
        let (Some(r), Some(locator)) = (&config.replica, config.replica_locator()) else {
            return Ok(None);
        };
        let store = Store::open(
            &locator,
            "replica.storage_root",
            &r.storage_root,
            config.scratch_dir.as_deref(),
        )?;
        Ok(Some(Replica {
            store,
            mode: r.mode,
        }))
    }
}

/// Copies every file `day` names from `primary` to `replica`, but those the replica's
/// current pointer already commits with the same SHA-256, and checks each copy by reading it
/// back from the replica against the pointer's SHA-256. Returns how many it copied.
async fn copy_day(
    primary: &Store,
    replica: &Store,
    day: &Committed,
    held: &[crate::store::FileSum],
) -> Result<u64> {
    let mut copied = 0;
    for f in day.files.iter().filter(|f| !held.contains(f)) {
        let sent = primary.root().copy_to(&f.path, replica.root()).await?;
        let (back, size) = replica.root().sha256(&f.path).await?;
        if sent != f.sha256 || back != f.sha256 || size != f.size {
            return Err(Error::Other(format!(
                "{}: the copy on the replica does not match the committed file (sha256 {} sent, {} read back, {} committed)",
                replica.url(&f.path),
                sent,
                back,
                f.sha256
            )));
        }
        copied += 1;
    }
    Ok(copied)
}

/// Commits `day` on the replica: its files (copied and checked), then its pointer, then the
/// version folders the replica's pointers no longer name.
pub async fn commit_day(primary: &Store, replica: &Store, day: &Committed) -> Result<()> {
    let date = parse(&day.bill_date)?;
    let before = replica.committed_at(&day.channel, date).await?;
    let held = before
        .as_ref()
        .map(|(c, _)| c.files.clone())
        .unwrap_or_default();
    copy_day(primary, replica, day, &held).await?;
    let keep: Vec<String> = held.into_iter().map(|f| f.path).collect();
    replica
        .write_pointer(day, date, before.as_ref().map(|(_, v)| v))
        .await?;
    replica.clean(&day.channel, date, &keep).await?;
    Ok(())
}

fn parse(d: &str) -> Result<NaiveDate> {
    d.parse()
        .map_err(|_| Error::Other(format!("a pointer with a bad bill_date {d:?}")))
}

/// A day waiting to be replicated (`replication/pending/channel=C/dt=D.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The run committed on the primary.
    pub run_id: Option<String>,
    /// When it was queued (UTC, RFC 3339): the lag is measured from the oldest.
    pub queued_at: String,
}

fn pending_path(channel: &str, date: &str) -> String {
    format!("replication/pending/channel={channel}/dt={date}.json")
}

/// Queues `day` for the replica, durably, on the primary (a day committed again while queued
/// keeps its first queueing time: the lag is how long the replica has been behind).
pub async fn enqueue(primary: &Store, day: &Committed) -> Result<()> {
    let rel = pending_path(&day.channel, &day.bill_date);
    let queued_at = match primary.root().get(&rel).await? {
        Some((b, _)) => serde_json::from_slice::<Pending>(&b)
            .map(|p| p.queued_at)
            .unwrap_or_else(|_| now()),
        None => now(),
    };
    let p = Pending {
        channel: day.channel.clone(),
        bill_date: day.bill_date.clone(),
        run_id: day.run_id.clone(),
        queued_at,
    };
    primary
        .root()
        .put(&rel, serde_json::to_vec_pretty(&p)?)
        .await
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The backlog, oldest first.
pub async fn backlog(primary: &Store) -> Result<Vec<(String, Pending)>> {
    let mut out = Vec::new();
    for rel in primary.root().list("replication/pending").await? {
        if !rel.ends_with(".json") {
            continue;
        }
        if let Some((b, _)) = primary.root().get(&rel).await? {
            match serde_json::from_slice::<Pending>(&b) {
                Ok(p) => out.push((rel, p)),
                Err(e) => tracing::warn!(file = rel, error = %e, "an unreadable backlog entry"),
            }
        }
    }
    out.sort_by(|a, b| a.1.queued_at.cmp(&b.1.queued_at));
    Ok(out)
}

/// How far the replica is behind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Lag {
    /// Days committed on the primary and not yet on the replica.
    pub days: usize,
    /// Seconds since the oldest of them was committed; 0 when none.
    pub age_secs: i64,
    /// The oldest waiting day, `channel date`.
    pub oldest: Option<String>,
}

/// The replica's lag from the backlog.
pub async fn lag(primary: &Store) -> Result<Lag> {
    let b = backlog(primary).await?;
    let Some((_, first)) = b.first() else {
        return Ok(Lag::default());
    };
    let age = DateTime::parse_from_rfc3339(&first.queued_at)
        .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0))
        .unwrap_or(0);
    Ok(Lag {
        days: b.len(),
        age_secs: age,
        oldest: Some(format!("{} {}", first.channel, first.bill_date)),
    })
}

/// What a drain did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drained {
    /// Days now on the replica.
    pub replicated: Vec<String>,
    /// Days still waiting, with why.
    pub failed: Vec<(String, String)>,
}

/// Replicates every day of the backlog (the day as it is committed now), each retried with
/// backoff up to `attempts` times; a day that still fails stays queued.
pub async fn drain(
    primary: &Store,
    replica: &Store,
    attempts: u32,
    base: Duration,
) -> Result<Drained> {
    use backon::Retryable;
    let mut out = Drained::default();
    for (rel, p) in backlog(primary).await? {
        let name = format!("{} {}", p.channel, p.bill_date);
        let date = parse(&p.bill_date)?;
        let Some(day) = primary
            .committed_at(&p.channel, date)
            .await?
            .map(|(c, _)| c)
        else {
            primary.root().delete(&rel).await?;
            continue;
        };
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(base)
            .with_factor(2.0)
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(attempts.saturating_sub(1) as usize)
            .with_jitter();
        let done = (|| commit_day(primary, replica, &day))
            .retry(backoff)
            .when(Error::is_transient)
            .notify(|e, wait| {
                tracing::warn!(day = name, error = %e, wait_ms = wait.as_millis() as u64, "replicating failed; retrying");
            })
            .await;
        match done {
            Ok(()) => {
                // The entry goes unless the day was committed again meanwhile (another run).
                let again = primary.root().get(&rel).await?;
                let same = again
                    .and_then(|(b, _)| serde_json::from_slice::<Pending>(&b).ok())
                    .is_some_and(|a| a.run_id == p.run_id);
                if same {
                    primary.root().delete(&rel).await?;
                }
                tracing::info!(day = name, "replicated");
                out.replicated.push(name);
            }
            Err(e) => {
                tracing::warn!(day = name, error = %e, "the replica could not be brought up to date; the day stays queued");
                out.failed.push((name, e.to_string()));
            }
        }
    }
    Ok(out)
}

/// One way a day differs between the roots.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    /// `channel date`.
    pub day: String,
    /// What differs.
    pub what: String,
}

/// Compares the committed days of `channels` on `dates` (every committed day when `dates` is
/// empty) between the roots: the pointers, and every file's bytes by SHA-256 on both sides.
pub async fn verify(
    primary: &Store,
    replica: &Store,
    channels: &[String],
    dates: &[NaiveDate],
) -> Result<(usize, Vec<Difference>)> {
    let mut diffs = Vec::new();
    let mut checked = 0;
    for ch in channels {
        let days = if dates.is_empty() {
            let mut d = primary.dates("runs", ch).await?;
            d.extend(replica.dates("runs", ch).await?);
            d.sort();
            d.dedup();
            d
        } else {
            dates.to_vec()
        };
        for date in days {
            let name = format!("{ch} {date}");
            let diff = |what: String| Difference {
                day: name.clone(),
                what,
            };
            let (a, b) = (
                primary.committed_at(ch, date).await?.map(|(c, _)| c),
                replica.committed_at(ch, date).await?.map(|(c, _)| c),
            );
            let (a, b) = match (a, b) {
                (None, None) => continue,
                (Some(_), None) => {
                    diffs.push(diff("not committed on the replica".into()));
                    continue;
                }
                (None, Some(_)) => {
                    diffs.push(diff("committed on the replica only".into()));
                    continue;
                }
                (Some(a), Some(b)) => (a, b),
            };
            checked += 1;
            if a.run_id != b.run_id || a.files != b.files {
                diffs.push(diff(format!(
                    "the pointers differ (run {} on the primary, {} on the replica)",
                    a.run_id.as_deref().unwrap_or("-"),
                    b.run_id.as_deref().unwrap_or("-")
                )));
                continue;
            }
            for f in &a.files {
                for (side, store) in [("primary", primary), ("replica", replica)] {
                    let got = match store.root().size(&f.path).await? {
                        None => None,
                        Some(_) => Some(store.root().sha256(&f.path).await?),
                    };
                    match got {
                        None => diffs.push(diff(format!("{} is missing on the {side}", f.path))),
                        Some((sha, _)) if sha != f.sha256 => diffs.push(diff(format!(
                            "{} on the {side} has sha256 {sha}, committed {}",
                            f.path, f.sha256
                        ))),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    Ok((checked, diffs))
}
