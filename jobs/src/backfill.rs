//! Backfill: every date of a range in order (day D's carry-over and ledger feed day D+1), the
//! channels of one date side by side. Finished days are skipped unless forced, so a backfill
//! killed half way resumes at its first unfinished date when started again. A channel whose
//! day fails stops there: its later days would reconcile against a missing carry-over.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::config::Config;
use crate::engine::Engines;
use crate::error::{Error, Result};
use crate::pipeline::{run_channel, store, worst};
use crate::records::{DayStatus, Stage};
use crate::sql::SqlDir;

/// What a backfill was asked to do.
pub struct Request<'a> {
    /// The channels (all when empty).
    pub channels: &'a [String],
    /// First and last date, inclusive.
    pub from: NaiveDate,
    /// See `from`.
    pub to: NaiveDate,
    /// Run finished dates again.
    pub force: bool,
    /// Channels of one date run at once, at most.
    pub parallel: usize,
}

/// One channel-day's line in the backfill's table.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The date.
    pub date: NaiveDate,
    /// The channel.
    pub channel: String,
    /// What became of it.
    pub status: LineStatus,
    /// Its exit code (0 for skipped).
    pub exit_code: i32,
    /// The error, for a failure.
    pub error: Option<String>,
}

/// What became of a channel-day in a backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStatus {
    /// It ran: the status it left the day in (`reconciled`, `incomplete`, `waiting`, …).
    Ran(DayStatus),
    /// Already reconciled, and not forced: left alone.
    Skipped,
    /// An earlier day of its channel failed in this backfill: it waits for that one.
    Blocked,
}

impl LineStatus {
    /// Its name in the table and the JSON line.
    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::Ran(s) => s.as_str(),
            LineStatus::Skipped => "skipped",
            LineStatus::Blocked => "blocked",
        }
    }
}

impl std::fmt::Display for LineStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reports progress: a bar on a terminal, one line per channel-day otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} channel-days  {msg}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        Self {
            bar,
            total,
            done: 0,
        }
    }

    fn tick(&mut self, o: &Outcome) {
        self.done += 1;
        let line = format!(
            "{} {} {}{}",
            o.date,
            o.channel,
            o.status,
            o.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        match &self.bar {
            Some(b) => {
                b.set_message(line);
                b.inc(1);
            }
            None => eprintln!("backfill {}/{}: {line}", self.done, self.total),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Runs the backfill; returns each channel-day's outcome, in date then channel order.
pub async fn run(config: &Config, req: &Request<'_>, engines: &Engines) -> Result<Vec<Outcome>> {
    if req.to < req.from {
        return Err(Error::Config(format!(
            "--to {} is before --from {}",
            req.to, req.from
        )));
    }
    let names = config.channel_names(req.channels)?;
    let sql = SqlDir::for_config(config)?;
    let store = store(config)?;
    let dates: Vec<NaiveDate> = req.from.iter_days().take_while(|d| *d <= req.to).collect();
    let mut progress = Progress::new((dates.len() * names.len()) as u64);
    let mut blocked: BTreeMap<String, NaiveDate> = BTreeMap::new();
    let mut out = Vec::new();
    for date in dates {
        let mut todo = Vec::new();
        let mut lines: BTreeMap<String, Outcome> = BTreeMap::new();
        for name in &names {
            let status = store.manifest(name, date).await?.status;
            let line = |status: LineStatus, error: Option<String>| Outcome {
                date,
                channel: name.clone(),
                status,
                exit_code: 0,
                error,
            };
            if let Some(failed) = blocked.get(name) {
                let why = format!("{failed} failed for this channel: later days wait for it");
                lines.insert(name.clone(), line(LineStatus::Blocked, Some(why)));
            } else if status == DayStatus::Reconciled && !req.force {
                lines.insert(name.clone(), line(LineStatus::Skipped, None));
            } else {
                todo.push(name.clone());
            }
        }
        for o in lines.values() {
            progress.tick(o);
        }
        let sql = &sql;
        let results: Vec<(String, Result<crate::pipeline::ChannelOutcome>)> =
            futures::stream::iter(todo.into_iter().map(|name| async move {
                let r = run_channel(config, &name, date, engines, sql, &Stage::ALL).await;
                (name, r)
            }))
            .buffer_unordered(req.parallel.max(1))
            .collect()
            .await;
        for (name, r) in results {
            let o = match r {
                Ok(c) => Outcome {
                    date,
                    channel: name.clone(),
                    status: LineStatus::Ran(if c.exit_code == 0 {
                        DayStatus::Reconciled
                    } else {
                        c.result.status()
                    }),
                    exit_code: c.exit_code,
                    error: c.result.error().map(String::from),
                },
                Err(e) => Outcome {
                    date,
                    channel: name.clone(),
                    status: LineStatus::Ran(e.status()),
                    exit_code: e.exit_code(),
                    error: Some(e.to_string()),
                },
            };
            if o.exit_code != 0 {
                blocked.insert(name.clone(), date);
            }
            progress.tick(&o);
            lines.insert(name, o);
        }
        // Channels in the config's order.
        for name in &names {
            if let Some(o) = lines.remove(name) {
                out.push(o);
            }
        }
    }
    progress.finish();
    crate::pipeline::drain_replica(config).await;
    Ok(out)
}

/// The outcomes as a table of dates (rows) and channels (columns).
pub fn table(outcomes: &[Outcome]) -> String {
    use std::fmt::Write;
    let mut channels: Vec<&str> = Vec::new();
    for o in outcomes {
        if !channels.contains(&o.channel.as_str()) {
            channels.push(&o.channel);
        }
    }
    let mut by_date: BTreeMap<NaiveDate, BTreeMap<&str, &str>> = BTreeMap::new();
    for o in outcomes {
        by_date
            .entry(o.date)
            .or_default()
            .insert(&o.channel, o.status.as_str());
    }
    let width = channels
        .iter()
        .map(|c| c.len())
        .chain(outcomes.iter().map(|o| o.status.as_str().len()))
        .max()
        .unwrap_or(8);
    let mut s = format!("{:<10}", "date");
    for c in &channels {
        let _ = write!(s, "  {c:<width$}");
    }
    s.push('\n');
    for (d, row) in &by_date {
        let _ = write!(s, "{d}");
        for c in &channels {
            let _ = write!(s, "  {:<width$}", row.get(c).copied().unwrap_or("-"));
        }
        s.push('\n');
    }
    for o in outcomes
        .iter()
        .filter(|o| o.error.is_some() && o.exit_code != 0)
    {
        let _ = writeln!(
            s,
            "{} {}: {}",
            o.date,
            o.channel,
            o.error.as_deref().unwrap_or("")
        );
    }
    s
}

/// The outcomes as the final JSON line, with the worst exit code.
pub fn summary(req: &Request<'_>, outcomes: &[Outcome]) -> (Value, i32) {
    let code = worst(&outcomes.iter().map(|o| o.exit_code).collect::<Vec<_>>());
    let days: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "bill_date": o.date.to_string(),
                "channel": o.channel,
                "status": o.status.as_str(),
                "exit_code": o.exit_code,
                "error": o.error,
            })
        })
        .collect();
    (
        json!({
            "from": req.from.to_string(),
            "to": req.to.to_string(),
            "exit_code": code,
            "days": days,
        }),
        code,
    )
}
