//! One difference as the desk's detail page shows it: its row of the committed
//! `diffs.parquet` (every column, the analyst's own among them), its entry in the day's ledger
//! (the ageing key the desk decides by), and its history across the committed days since it
//! was first seen.

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, Date32Array, Decimal128Array, RecordBatch, StringArray};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::logical_expr::{col, lit, Expr};
use datafusion::prelude::SessionContext;
use rust_decimal::Decimal;
use serde::Serialize;

use super::query::{date, decimal, strings, text, typed};
use super::Difference;
use crate::error::Result;
use crate::store::Store;

/// A field both sides have, side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub field: &'static str,
    pub channel: String,
    pub platform: String,
    /// Both sides present and not equal.
    pub differs: bool,
}

/// The fields of a difference row the two sides each have: (shown as, channel's, platform's).
const PAIRS: [(&str, &str, &str); 3] = [
    ("amount", "channel_amount", "platform_amount"),
    ("status", "channel_status", "platform_status"),
    ("time", "channel_time", "platform_time"),
];

/// A day of a difference's history (its ledger entry on that day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub date: NaiveDate,
    pub state: String,
    pub category: String,
    pub channel_amount: Option<Decimal>,
    pub platform_amount: Option<Decimal>,
    pub resolved_by: Option<String>,
    pub decision: Option<String>,
    pub decision_review: Option<String>,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    pub channel: String,
    pub bill_date: NaiveDate,
    pub diff_id: String,
    /// Every column of its row, in the file's order, as text ("" for NULL).
    pub fields: Vec<(String, String)>,
    pub pairs: Vec<Pair>,
    /// What the desk decides by (from the ledger), with the difference as it stands.
    pub difference: Option<Difference>,
    pub first_seen: Option<NaiveDate>,
    /// Oldest first.
    pub history: Vec<Seen>,
}

impl Detail {
    /// The value of column `name`, if present and not NULL.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// The committed day's rows of `results/…/name` that `filter` keeps (None: not committed).
async fn rows_where(
    store: &Store,
    ctx: &SessionContext,
    channel: &str,
    day: NaiveDate,
    name: &str,
    filter: Expr,
) -> Result<Option<Vec<RecordBatch>>> {
    let Some(c) = store.committed(channel, day).await? else {
        return Ok(None);
    };
    let Some(file) = c.file("results", name) else {
        return Ok(None);
    };
    let table = crate::engine::listing(ctx, name, &[store.url(&file.path)]).await?;
    let batches = ctx.read_table(table)?.filter(filter)?.collect().await?;
    Ok(Some(batches))
}

/// The difference `diff_id` of `channel`'s committed `day`, or None when the day is not
/// committed or has no such difference. History is read for at most `history_days` days.
pub async fn detail(
    store: &Store,
    ctx: &SessionContext,
    channel: &str,
    day: NaiveDate,
    diff_id: &str,
    history_days: i64,
) -> Result<Option<Detail>> {
    store.register(ctx);
    let Some(batches) = rows_where(
        store,
        ctx,
        channel,
        day,
        "diffs.parquet",
        col("diff_id").eq(lit(diff_id)),
    )
    .await?
    else {
        return Ok(None);
    };
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let schema = b.schema();
    let mut fields = Vec::new();
    for (f, a) in schema.fields().iter().zip(b.columns()) {
        let v = if a.is_valid(0) {
            array_value_to_string(a, 0)?
        } else {
            String::new()
        };
        fields.push((f.name().clone(), v));
    }
    let mut detail = Detail {
        channel: channel.to_string(),
        bill_date: day,
        diff_id: diff_id.to_string(),
        fields,
        pairs: Vec::new(),
        difference: None,
        first_seen: None,
        history: Vec::new(),
    };
    detail.pairs = PAIRS
        .iter()
        .map(|(field, c, p)| {
            let (c, p) = (detail.field(c), detail.field(p));
            Pair {
                field,
                channel: c.unwrap_or_default().to_string(),
                platform: p.unwrap_or_default().to_string(),
                differs: matches!((c, p), (Some(a), Some(b)) if a != b),
            }
        })
        .collect();
    let ledger = rows_where(
        store,
        ctx,
        channel,
        day,
        "ledger.parquet",
        col("diff_id").eq(lit(diff_id)),
    )
    .await?
    .unwrap_or_default();
    let Some(entry) = ledger.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Some(detail));
    };
    let diff = ledger_differences(entry, channel)?.into_iter().next();
    let key = diff
        .as_ref()
        .map(|(_, d)| d.ageing_key.clone())
        .unwrap_or_default();
    detail.difference = diff.map(|(_, d)| d);
    detail.first_seen = date(&typed::<Date32Array>(entry, "first_seen")?, 0);
    let from = detail
        .first_seen
        .unwrap_or(day)
        .max(day - chrono::Duration::days(history_days));
    detail.history = history(store, ctx, channel, &key, from, day).await?;
    Ok(Some(detail))
}

/// The ledger entries of `key` on each committed day from `from` to the latest one after
/// `at` (the difference may have been resolved since), oldest first.
async fn history(
    store: &Store,
    ctx: &SessionContext,
    channel: &str,
    key: &str,
    from: NaiveDate,
    at: NaiveDate,
) -> Result<Vec<Seen>> {
    let mut out = Vec::new();
    let mut d = from;
    let mut after = 0;
    loop {
        let batches = rows_where(
            store,
            ctx,
            channel,
            d,
            "ledger.parquet",
            col("ageing_key").eq(lit(key)),
        )
        .await?;
        if d > at {
            // Past the day shown: follow it until it leaves the ledger (or a week of gaps).
            match &batches {
                Some(b) if b.iter().any(|b| b.num_rows() > 0) => after = 0,
                _ => after += 1,
            }
            if after > 7 {
                break;
            }
        }
        for b in batches.iter().flatten() {
            let (state, category) = (strings(b, "state")?, strings(b, "category")?);
            // Ledgers written before the desk have no decision columns.
            let (resolved_by, decision, review) = (
                strings(b, "resolved_by").ok(),
                strings(b, "decision").ok(),
                strings(b, "decision_review").ok(),
            );
            let maybe = |a: &Option<StringArray>, i: usize| a.as_ref().and_then(|a| text(a, i));
            let (ca, pa) = (
                typed::<Decimal128Array>(b, "channel_amount")?,
                typed::<Decimal128Array>(b, "platform_amount")?,
            );
            for i in 0..b.num_rows() {
                out.push(Seen {
                    date: d,
                    state: text(&state, i).unwrap_or_default(),
                    category: text(&category, i).unwrap_or_default(),
                    channel_amount: decimal(&ca, i),
                    platform_amount: decimal(&pa, i),
                    resolved_by: maybe(&resolved_by, i),
                    decision: maybe(&decision, i),
                    decision_review: maybe(&review, i),
                });
            }
        }
        if out
            .last()
            .is_some_and(|s| s.date == d && s.state == "resolved")
            && d >= at
        {
            break;
        }
        d += chrono::Duration::days(1);
    }
    Ok(out)
}

/// The differences `ids` of `channel`'s committed `day` as the desk decides them (from the
/// day's ledger), by `diff_id`; an id the ledger does not have is absent.
pub async fn differences_of(
    store: &Store,
    ctx: &SessionContext,
    channel: &str,
    day: NaiveDate,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Difference>> {
    store.register(ctx);
    let wanted: Vec<Expr> = ids.iter().map(|i| lit(i.as_str())).collect();
    let filter = col("diff_id").in_list(wanted, false);
    let batches = rows_where(store, ctx, channel, day, "ledger.parquet", filter)
        .await?
        .unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for b in &batches {
        out.extend(ledger_differences(b, channel)?);
    }
    Ok(out)
}

/// Each entry of a ledger batch as the desk decides it: (`diff_id`, the difference); an entry
/// without a `diff_id` (resolved on an earlier day) is left out.
fn ledger_differences(b: &RecordBatch, channel: &str) -> Result<Vec<(String, Difference)>> {
    let (id, key, category, match_key) = (
        strings(b, "diff_id")?,
        strings(b, "ageing_key")?,
        strings(b, "category")?,
        strings(b, "match_key")?,
    );
    let (ca, pa) = (
        typed::<Decimal128Array>(b, "channel_amount")?,
        typed::<Decimal128Array>(b, "platform_amount")?,
    );
    Ok((0..b.num_rows())
        .filter_map(|i| {
            let diff = Difference {
                channel: channel.to_string(),
                ageing_key: text(&key, i).unwrap_or_default(),
                category: text(&category, i).unwrap_or_default(),
                match_key: text(&match_key, i),
                channel_amount: decimal(&ca, i),
                platform_amount: decimal(&pa, i),
            };
            text(&id, i).map(|id| (id, diff))
        })
        .collect())
}
