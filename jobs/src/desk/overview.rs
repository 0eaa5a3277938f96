//! The desk's overview of each channel: its match rate day by day, where each day stands,
//! and its open differences (by category, by age, the oldest) as its latest committed ledger
//! has them. Read from the committed pointers and the ledger, never from a day loaded whole.

use chrono::NaiveDate;
use datafusion::arrow::array::{Date32Array, Decimal128Array, Int64Array};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use rust_decimal::Decimal;
use serde::Serialize;

use super::query::{date, decimal, strings, text, typed};
use crate::error::Result;
use crate::records::DayStatus;
use crate::store::Store;

/// A channel-day as the overview shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub date: NaiveDate,
    pub status: DayStatus,
    /// Matched rows over all rows, when reconciled.
    pub match_rate: Option<f64>,
    /// The last error, when it failed.
    pub error: Option<String>,
}

/// Open differences of one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Open {
    pub category: String,
    pub count: u64,
    pub channel_amount: Decimal,
    pub platform_amount: Decimal,
}

/// The ageing buckets of open differences, by days open counting the first day as 1.
pub const AGE_BUCKETS: [&str; 4] = ["1 day", "2-3 days", "4-7 days", "over 7 days"];

fn bucket(days_open: i64) -> usize {
    match days_open {
        i64::MIN..=1 => 0,
        2..=3 => 1,
        4..=7 => 2,
        _ => 3,
    }
}

/// The oldest open difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Oldest {
    pub first_seen: NaiveDate,
    pub diff_id: Option<String>,
    pub ageing_key: String,
    pub category: String,
}

/// One channel's overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Channel {
    pub channel: String,
    /// Oldest first.
    pub days: Vec<Day>,
    /// The latest committed day, whose ledger the open differences come from.
    pub latest: Option<NaiveDate>,
    pub open: Vec<Open>,
    /// Open differences per [`AGE_BUCKETS`].
    pub ageing: [u64; 4],
    pub oldest: Option<Oldest>,
}

impl Channel {
    /// The days of the window that are not reconciled.
    pub fn not_reconciled(&self) -> impl Iterator<Item = &Day> {
        self.days
            .iter()
            .filter(|d| d.status != DayStatus::Reconciled)
    }
}

/// The overview of `channels` over the `days` days ending on `to`.
pub async fn overview(
    store: &Store,
    ctx: &SessionContext,
    channels: &[String],
    to: NaiveDate,
    days: u32,
) -> Result<Vec<Channel>> {
    store.register(ctx);
    let mut out = Vec::new();
    for ch in channels {
        let mut c = Channel {
            channel: ch.clone(),
            days: Vec::new(),
            latest: None,
            open: Vec::new(),
            ageing: [0; 4],
            oldest: None,
        };
        let mut ledger = None;
        for back in (0..days).rev() {
            let d = to - chrono::Duration::days(i64::from(back));
            let day = match store.committed(ch, d).await? {
                Some(committed) => {
                    let summary = committed.manifest.reported().map(|r| &r.summary);
                    ledger = committed.file("results", "ledger.parquet").cloned();
                    c.latest = Some(d);
                    Day {
                        date: d,
                        status: summary.map_or(DayStatus::Reconciled, |s| s.status),
                        match_rate: summary.map(|s| s.match_rate),
                        error: None,
                    }
                }
                None => {
                    let m = store.manifest(ch, d).await?;
                    Day {
                        date: d,
                        status: m.status,
                        match_rate: None,
                        error: m.error,
                    }
                }
            };
            c.days.push(day);
        }
        if let (Some(file), Some(latest)) = (ledger, c.latest) {
            open_differences(ctx, &store.url(&file.path), latest, &mut c).await?;
        }
        out.push(c);
    }
    Ok(out)
}

/// Fills `c`'s open differences from the ledger at `url` (the ledger of `latest`).
async fn open_differences(
    ctx: &SessionContext,
    url: &str,
    latest: NaiveDate,
    c: &mut Channel,
) -> Result<()> {
    let table = crate::engine::listing(ctx, "the latest ledger", &[url.to_string()]).await?;
    let open = ctx
        .read_table(table)?
        .filter(col("state").not_eq(lit("resolved")))?;
    let groups = open
        .clone()
        .aggregate(
            vec![col("category"), col("first_seen")],
            vec![
                count(lit(1)).alias("n"),
                sum(col("channel_amount")).alias("c"),
                sum(col("platform_amount")).alias("p"),
            ],
        )?
        .collect()
        .await?;
    let mut by_category: std::collections::BTreeMap<String, Open> = Default::default();
    for b in &groups {
        let category = strings(b, "category")?;
        let first_seen = typed::<Date32Array>(b, "first_seen")?;
        let n = typed::<Int64Array>(b, "n")?;
        let (ca, pa) = (
            typed::<Decimal128Array>(b, "c")?,
            typed::<Decimal128Array>(b, "p")?,
        );
        for i in 0..b.num_rows() {
            let name = text(&category, i).unwrap_or_default();
            let o = by_category.entry(name.clone()).or_insert(Open {
                category: name,
                count: 0,
                channel_amount: Decimal::ZERO,
                platform_amount: Decimal::ZERO,
            });
            let rows = n.value(i).max(0) as u64;
            o.count += rows;
            o.channel_amount += decimal(&ca, i).unwrap_or_default();
            o.platform_amount += decimal(&pa, i).unwrap_or_default();
            if let Some(first) = date(&first_seen, i) {
                c.ageing[bucket((latest - first).num_days() + 1)] += rows;
            }
        }
    }
    c.open = by_category.into_values().collect();
    let oldest = open
        .sort(vec![
            col("first_seen").sort(true, false),
            col("ageing_key").sort(true, false),
        ])?
        .limit(0, Some(1))?
        .select_columns(&["first_seen", "diff_id", "ageing_key", "category"])?
        .collect()
        .await?;
    if let Some(b) = oldest.iter().find(|b| b.num_rows() > 0) {
        let first = typed::<Date32Array>(b, "first_seen")?;
        let (id, key, category) = (
            strings(b, "diff_id")?,
            strings(b, "ageing_key")?,
            strings(b, "category")?,
        );
        c.oldest = date(&first, 0).map(|first_seen| Oldest {
            first_seen,
            diff_id: text(&id, 0),
            ageing_key: text(&key, 0).unwrap_or_default(),
            category: text(&category, 0).unwrap_or_default(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ageing_buckets_count_the_first_day_as_one() {
        let got: Vec<usize> = [1, 2, 3, 4, 7, 8, 30].map(bucket).to_vec();
        assert_eq!(got, vec![0, 1, 1, 2, 2, 3, 3]);
    }
}
