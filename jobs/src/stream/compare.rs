//! The stream's day against the batch job's: once the channel's bill for a day is reconciled
//! (`reckon run`), `reckon stream compare` reads both committed days and lists every record
//! whose outcome differs. A record's outcome is its category, or MATCHED when the day has no
//! difference for it; a key in one day's inputs and not the other's (a lost message, a
//! message the bill does not have) differs too. So a message lost on the way to the queue, or
//! delivered twice, shows up as a named record, not as a count that is off by one.

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;

use crate::config::Channel;
use crate::error::{Error, Result};
use crate::store::{Committed, Store};

/// One record whose outcome differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Differing {
    pub match_key: String,
    /// The batch day's categories of the key (`MATCHED` when it has no difference; empty
    /// when the key is not in its inputs), in order.
    pub batch: String,
    /// The stream day's.
    pub stream: String,
}

/// The comparison of a channel-day.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub channel: String,
    pub bill_date: String,
    pub batch_run: Option<String>,
    pub stream_run: Option<String>,
    /// Keys in either day.
    pub keys: u64,
    /// How many differ, and up to `limit` of them.
    pub differing: u64,
    pub records: Vec<Differing>,
}

/// The match key `reconcile.sql` builds, over a table with the canonical columns.
fn key_sql(match_on: &str) -> &'static str {
    if match_on == "channel_txn_id" {
        "txn_type || ':' || channel_txn_id"
    } else {
        "CASE WHEN txn_type = 'REFUND' THEN 'REFUND:' || refund_id ELSE 'PAY:' || merchant_order_id END"
    }
}

async fn register(
    ctx: &SessionContext,
    store: &Store,
    day: &Committed,
    prefix: &str,
) -> Result<()> {
    for (area, table) in [
        ("normalized", "bill"),
        ("platform", "platform"),
        ("results", "diffs"),
    ] {
        let files: Vec<String> = day
            .files
            .iter()
            .filter(|f| f.path.starts_with(&format!("{area}/")))
            .filter(|f| area != "results" || f.path.ends_with("/diffs.parquet"))
            .map(|f| store.url(&f.path))
            .collect();
        if files.is_empty() {
            return Err(Error::NotReady(format!(
                "{} {}: the committed day has no {area} files",
                day.channel, day.bill_date
            )));
        }
        let t = crate::engine::listing(ctx, &format!("{prefix} {area}"), &files).await?;
        ctx.register_table(format!("{prefix}_{table}"), t)?;
    }
    Ok(())
}

/// Compares the committed day `day` of `channel` with the stream's; lists up to `limit`
/// differing records.
pub async fn compare(
    store: &Store,
    channel: &Channel,
    day: NaiveDate,
    limit: usize,
) -> Result<Comparison> {
    let stream_name = super::committed_name(&channel.name);
    let missing = |name: &str| {
        Error::NotReady(format!(
            "{name} {day} is not committed: {}",
            if name == channel.name {
                "reconcile the day's bill first (reckon run)"
            } else {
                "the stream has not closed the day yet"
            }
        ))
    };
    let batch = store
        .committed(&channel.name, day)
        .await?
        .ok_or_else(|| missing(&channel.name))?;
    let stream = store
        .committed(&stream_name, day)
        .await?
        .ok_or_else(|| missing(&stream_name))?;
    let ctx = crate::engine::analyst_context(SessionConfig::new().with_target_partitions(2));
    store.register(&ctx);
    register(&ctx, store, &batch, "b").await?;
    register(&ctx, store, &stream, "s").await?;
    let key = key_sql(&channel.match_key);
    let outcome = |p: &str| {
        format!(
            "{p}_keys AS (
                SELECT {key} AS match_key FROM {p}_bill
                UNION SELECT {key} AS match_key FROM {p}_platform
            ),
            {p}_cats AS (
                SELECT match_key, string_agg(category, ',' ORDER BY category) AS categories
                FROM {p}_diffs WHERE match_key IS NOT NULL GROUP BY match_key
            ),
            {p}_out AS (
                SELECT k.match_key, coalesce(c.categories, 'MATCHED') AS categories
                FROM {p}_keys k LEFT JOIN {p}_cats c ON k.match_key = c.match_key
                WHERE k.match_key IS NOT NULL
            )"
        )
    };
    let sql = format!(
        "WITH {}, {}
        SELECT coalesce(b.match_key, s.match_key) AS match_key,
               coalesce(b.categories, '') AS batch, coalesce(s.categories, '') AS stream
        FROM b_out b FULL OUTER JOIN s_out s ON b.match_key = s.match_key
        ORDER BY 1",
        outcome("b"),
        outcome("s")
    );
    let mut keys = 0u64;
    let mut differing = 0u64;
    let mut records = Vec::new();
    for batch_rows in ctx.sql(&sql).await?.collect().await? {
        // Text columns may come as views: read as plain strings.
        let col = |i: usize| -> Result<datafusion::arrow::array::StringArray> {
            let a = datafusion::arrow::compute::cast(
                batch_rows.column(i),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )?;
            Ok(a.as_string::<i32>().clone())
        };
        let (k, b, s) = (col(0)?, col(1)?, col(2)?);
        for i in 0..batch_rows.num_rows() {
            keys += 1;
            if b.value(i) == s.value(i) || k.is_null(i) {
                continue;
            }
            differing += 1;
            if records.len() < limit {
                records.push(Differing {
                    match_key: k.value(i).to_string(),
                    batch: b.value(i).to_string(),
                    stream: s.value(i).to_string(),
                });
            }
        }
    }
    Ok(Comparison {
        channel: channel.name.clone(),
        bill_date: day.to_string(),
        batch_run: batch.run_id,
        stream_run: stream.run_id,
        keys,
        differing,
        records,
    })
}
