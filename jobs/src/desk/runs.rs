//! The desk's runs page: where each channel-day stands, the inputs it was reconciled from
//! with their hashes, and the bill rows normalize rejected (file, line, reason, raw text).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use datafusion::arrow::array::Int64Array;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::query::{strings, text, typed};
use crate::error::Result;
use crate::records::DayStatus;
use crate::store::Store;

/// A channel-day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub channel: String,
    pub date: NaiveDate,
    pub status: DayStatus,
    pub error: Option<String>,
    pub run_id: Option<String>,
    /// When it was committed (empty: not committed).
    pub committed_at: Option<String>,
    /// The SHA-256 of each input, by name.
    pub inputs: BTreeMap<String, String>,
    pub rows_read: Option<u64>,
    pub rows_rejected: Option<u64>,
    pub diff_rows: Option<u64>,
    pub match_rate: Option<f64>,
    /// The files of the day's rejected table, relative to the storage root.
    rejected: Vec<String>,
}

/// A bill row normalize refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub source_file: String,
    pub source_line: i64,
    pub reason: String,
    pub raw: String,
}

/// Where normalize publishes the bill rows it rejected, relative to the storage root.
const REJECTED_TABLE: &str = "rejected/";

/// The channel-day's run: the committed day's record, else the working manifest's.
pub async fn run(store: &Store, channel: &str, date: NaiveDate) -> Result<Run> {
    let committed = store.committed(channel, date).await?;
    let (m, committed_at, inputs) = match committed {
        Some(c) => (c.manifest, Some(c.committed_at), c.inputs),
        None => (store.manifest(channel, date).await?, None, BTreeMap::new()),
    };
    let normalized = m.normalized().cloned();
    let rejected = m
        .stages
        .files()
        .into_iter()
        .flat_map(|(names, _)| names.iter())
        .filter(|n| n.starts_with(REJECTED_TABLE))
        .cloned()
        .collect();
    let summary = m.reported().map(|r| r.summary.clone());
    Ok(Run {
        channel: channel.to_string(),
        date,
        status: m.status,
        error: m.error.clone(),
        run_id: m.run_id.clone(),
        committed_at: committed_at.filter(|c| !c.is_empty()),
        inputs,
        rows_read: normalized.as_ref().map(|n| n.rows_read),
        rows_rejected: normalized.as_ref().map(|n| n.rows_rejected),
        diff_rows: summary.as_ref().map(|s| s.diff_rows),
        match_rate: summary.as_ref().map(|s| s.match_rate),
        rejected,
    })
}

/// The runs of `channels` from `from` to `to`, newest day first.
pub async fn runs(
    store: &Store,
    channels: &[String],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Run>> {
    let mut out = Vec::new();
    let mut d = to;
    while d >= from {
        for ch in channels {
            out.push(run(store, ch, d).await?);
        }
        d -= chrono::Duration::days(1);
    }
    Ok(out)
}

/// Up to `limit` of the run's rejected rows, by file and line.
pub async fn rejected(
    store: &Store,
    ctx: &SessionContext,
    run: &Run,
    limit: usize,
) -> Result<Vec<Rejected>> {
    if run.rejected.is_empty() {
        return Ok(Vec::new());
    }
    store.register(ctx);
    let urls: Vec<String> = run.rejected.iter().map(|p| store.url(p)).collect();
    let table = crate::engine::listing(ctx, "the rejected rows", &urls).await?;
    let batches = ctx
        .read_table(table)?
        .sort(vec![
            datafusion::logical_expr::col("source_file").sort(true, false),
            datafusion::logical_expr::col("source_line").sort(true, false),
        ])?
        .limit(0, Some(limit))?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let (file, reason, raw) = (
            strings(b, "source_file")?,
            strings(b, "reason")?,
            strings(b, "raw")?,
        );
        let line = typed::<Int64Array>(b, "source_line")?;
        for i in 0..b.num_rows() {
            out.push(Rejected {
                source_file: text(&file, i).unwrap_or_default(),
                source_line: line.value(i),
                reason: text(&reason, i).unwrap_or_default(),
                raw: text(&raw, i).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}
