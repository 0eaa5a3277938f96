//! report: `results/…/summary.json` from the stages' records: inputs, counts and amounts per
//! category, and the conservation check (every input record accounted for exactly once).

use std::collections::BTreeMap;

use reckon_udfs::{money_text, Category};

use super::{Job, Outcome, Stage};
use crate::error::{Error, Result};
use crate::records::{
    Conservation, Counts, DayStatus, Inputs, Output, Outputs, ReportDetail, SideAmounts, Summary,
    ThresholdCheck, Thresholds,
};
use crate::store::write_atomic;

/// Builds the summary of a channel-day from its manifest.
pub async fn summary(job: &Job<'_>) -> Result<Summary> {
    let manifest = job.manifest().await?;
    let normalized = job.require(&manifest, Stage::Normalize, Stage::Report, |m| {
        m.normalized()
    })?;
    let collected = job.require(&manifest, Stage::Collect, Stage::Report, |m| m.collected())?;
    let reconciled = job.require(&manifest, Stage::Reconcile, Stage::Report, |m| {
        m.reconciled().and_then(|r| r.facts())
    })?;
    let counts = &reconciled.counts;
    let inputs = Inputs {
        channel_rows: normalized.rows_written,
        platform_rows: collected.rows,
        rejected_rows: normalized.rows_rejected,
        carried_in_rows: reconciled.carry_in.rows,
    };
    let mut count_map = BTreeMap::new();
    let mut amounts = BTreeMap::new();
    let (mut ch, mut pf, mut ca, mut rows) = (0u64, 0u64, 0u64, 0u64);
    let mut refund_explained = 0u64;
    for c in Category::ALL {
        let s = counts
            .by_category
            .get(c.as_str())
            .cloned()
            .unwrap_or_default();
        count_map.insert(c.as_str().to_string(), s.rows);
        amounts.insert(
            c.as_str().to_string(),
            SideAmounts {
                channel: money_text(s.channel_amount),
                platform: money_text(s.platform_amount),
            },
        );
        ch += s.channel_records;
        pf += s.platform_records;
        ca += s.carried_records;
        rows += s.rows;
        if matches!(c, Category::Matched | Category::CrossDayMatched) {
            refund_explained += s.refund_explained;
        }
    }
    if let Some(unknown) = counts
        .by_category
        .keys()
        .find(|k| k.parse::<Category>().is_err())
    {
        return Err(Error::Other(format!(
            "the reconciliation produced an unknown category {unknown:?}"
        )));
    }
    // What no rule explains, channel minus platform: every difference except a match across
    // days and a record waiting for the next day. The goal is exactly zero.
    let net_unexplained: i128 = Category::ALL
        .iter()
        .filter(|c| {
            !matches!(
                c,
                Category::Matched | Category::CrossDayMatched | Category::CrossDayPending
            )
        })
        .filter_map(|c| counts.by_category.get(c.as_str()))
        .map(|s| s.channel_amount - s.platform_amount)
        .sum();
    let holds =
        ch == inputs.channel_rows && pf == inputs.platform_rows && ca == inputs.carried_in_rows;
    let matched = [Category::Matched, Category::CrossDayMatched]
        .iter()
        .filter_map(|c| count_map.get(c.as_str()))
        .sum::<u64>();
    let thresholds = check_thresholds(job, counts)?;
    // Each output where its stage published it.
    let file = |stage: Stage, name: &str| job.committed_file(&manifest, stage, name);
    let folder = |stage: Stage, area: &str| {
        job.committed_in(&manifest, stage, area)
            .first()
            .and_then(|f| f.rsplit_once('/').map(|(d, _)| d.to_string()))
            .unwrap_or_else(|| job.store.area(area, job.name(), job.date))
    };
    Ok(Summary {
        channel: job.name().to_string(),
        bill_date: job.date.to_string(),
        run_id: manifest.run_id.clone(),
        status: if holds {
            DayStatus::Reconciled
        } else {
            DayStatus::Failed
        },
        inputs,
        rows,
        counts: count_map,
        amounts,
        matched_refund_explained: refund_explained,
        net_unexplained: money_text(net_unexplained),
        match_rate: if rows == 0 {
            1.0
        } else {
            (matched as f64 / rows as f64 * 1e6).round() / 1e6
        },
        conservation: Conservation {
            holds,
            channel_records: ch,
            platform_records: pf,
            carried_in_records: ca,
        },
        thresholds,
        bill_totals: normalized.totals.clone(),
        diff_rows: reconciled.diff_rows,
        ageing: reconciled.ageing.stats.clone(),
        carry_out_rows: reconciled.carry_out_rows,
        outputs: Outputs {
            diffs: file(Stage::Reconcile, "diffs.parquet")?,
            ledger: file(Stage::Reconcile, "ledger.parquet")?,
            committed: job.store.committed_path(job.name(), job.date),
            carryover: folder(Stage::Reconcile, "carryover"),
            stats_by_hour: file(Stage::Reconcile, "by_hour.parquet")?,
            stats_by_merchant: file(Stage::Reconcile, "by_merchant.parquet")?,
            normalized: folder(Stage::Normalize, "normalized"),
            rejected: folder(Stage::Normalize, "rejected"),
            platform: folder(Stage::Collect, "platform"),
        },
        marked_stale: None,
    })
}

/// The channel's thresholds against the day. A passed threshold is a finding, not a
/// failure (see `--fail-on-threshold`).
fn check_thresholds(job: &Job<'_>, counts: &Counts) -> Result<Thresholds> {
    let mut out = Thresholds::default();
    for l in &job.channel.rules.limits {
        let s = counts
            .by_category
            .get(&l.category)
            .cloned()
            .unwrap_or_default();
        let amount = s.channel_amount.abs().max(s.platform_amount.abs());
        let over = l.count.is_some_and(|c| s.rows > c) || l.amount.is_some_and(|a| amount > a);
        if over {
            tracing::warn!(
                category = l.category,
                rows = s.rows,
                amount = money_text(amount),
                "a threshold is passed"
            );
            out.passed.push(l.category.clone());
        }
        out.checked.push(ThresholdCheck {
            category: l.category.clone(),
            count: s.rows,
            count_limit: l.count,
            amount: money_text(amount),
            amount_limit: l.amount.map(money_text),
            passed: over,
        });
    }
    Ok(out)
}

/// Runs the stage.
pub async fn run(job: &Job<'_>) -> Result<Outcome> {
    let s = summary(job).await?;
    let staged = job.store.staging("report", job.name(), job.date)?;
    let mut text = serde_json::to_vec_pretty(&s.to_json())?;
    text.push(b'\n');
    write_atomic(&staged.join("summary.json"), &text)?;
    let files = job
        .store
        .publish(&staged, "results", job.name(), job.date)
        .await?;
    crate::store::crash_point("report", "published");
    if !s.conservation.holds {
        // Published, for a person to read, but never committed: the next run removes it.
        return Err(Error::Other(format!(
            "conservation check failed for {} {}: {}; its summary (not committed): {}",
            job.name(),
            job.date,
            serde_json::to_value(&s.conservation)?,
            files
                .first()
                .map(|f| job.store.url(&f.path))
                .unwrap_or_default()
        )));
    }
    Ok((files, Output::Report(Box::new(ReportDetail { summary: s }))))
}

/// `summary.json` as a person reads it: one table per channel-day (for `reckon report`).
pub fn render(s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  run {}  {}",
        s.channel,
        s.bill_date,
        s.run_id.as_deref().unwrap_or(""),
        s.status
    );
    let i = &s.inputs;
    let _ = writeln!(
        out,
        "  inputs: {} channel rows ({} rejected), {} platform rows, {} carried in",
        i.channel_rows, i.rejected_rows, i.platform_rows, i.carried_in_rows
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>18} {:>18}",
        "category", "rows", "channel amount", "platform amount"
    );
    for c in Category::ALL {
        let name = c.as_str();
        let (channel, platform) = s
            .amounts
            .get(name)
            .map(|a| (a.channel.as_str(), a.platform.as_str()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>18} {:>18}",
            name,
            s.counts.get(name).copied().unwrap_or(0),
            channel,
            platform
        );
    }
    let _ = writeln!(
        out,
        "  match rate {:.2}%   net unexplained {}   conservation {}",
        s.match_rate * 100.0,
        s.net_unexplained,
        if s.conservation.holds {
            "holds"
        } else {
            "FAILS"
        }
    );
    let a = &s.ageing;
    let resolved = a
        .resolved
        .iter()
        .map(|(by, n)| format!("{n} by {by}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "  open differences {} ({} new, {} persisting; oldest from {})   resolved today {}",
        a.open,
        a.new,
        a.persisting,
        a.oldest_open.as_deref().unwrap_or("-"),
        if resolved.is_empty() {
            "0".into()
        } else {
            resolved
        }
    );
    let decided = a.resolved.get(crate::stages::ageing::BY_MANUAL).copied();
    if decided.is_some() || a.flagged > 0 {
        let _ = writeln!(
            out,
            "  review desk: {} decided today, {} undecided (open), {} with a decision that no longer fits (to review)",
            decided.unwrap_or(0),
            a.open,
            a.flagged
        );
    }
    for t in s.thresholds.checked.iter().filter(|t| t.passed) {
        let _ = writeln!(
            out,
            "  threshold passed: {} ({} rows, amount {}; limits: rows {}, amount {})",
            t.category,
            t.count,
            t.amount,
            t.count_limit.map_or("-".to_string(), |v| v.to_string()),
            t.amount_limit.as_deref().unwrap_or("-"),
        );
    }
    out
}

/// A statistics table of `stats/` (`by_hour.parquet` or `by_merchant.parquet`) grain by grain:
/// rows, differences, match rate, amounts and the net unexplained amount of each hour or
/// merchant. Merchants come largest net unexplained first (then most differences), at most
/// `limit` of them; hours in order.
pub fn render_grain(
    batches: &[datafusion::arrow::array::RecordBatch],
    grain: &str,
    limit: usize,
) -> Result<String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Int32Type, UInt64Type};
    use std::fmt::Write;
    #[derive(Default)]
    struct Line {
        rows: u64,
        matched: u64,
        channel: i128,
        platform: i128,
        unexplained: i128,
    }
    let mut lines: BTreeMap<Option<String>, Line> = BTreeMap::new();
    let bad = |c: &str| Error::Other(format!("stats: column {c} missing or mistyped"));
    for b in batches {
        let col = |n: &str| b.column_by_name(n).ok_or_else(|| bad(n));
        let cat = col("category")?
            .as_string_opt::<i32>()
            .ok_or_else(|| bad("category"))?;
        let g = col(grain)?;
        let key = |i: usize| -> Result<Option<String>> {
            if g.is_null(i) {
                return Ok(None);
            }
            if let Some(h) = g.as_primitive_opt::<Int32Type>() {
                return Ok(Some(format!("{:02}", h.value(i))));
            }
            let s = g.as_string_opt::<i32>().ok_or_else(|| bad(grain))?;
            Ok(Some(s.value(i).to_string()))
        };
        let rows = col("rows")?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| bad("rows"))?;
        let money = |n: &str| -> Result<_> {
            col(n)?
                .as_primitive_opt::<Decimal128Type>()
                .ok_or_else(|| bad(n))
        };
        let (ca, pa) = (money("channel_amount")?, money("platform_amount")?);
        for i in 0..b.num_rows() {
            let c: Category = cat
                .value(i)
                .parse()
                .map_err(|_| Error::Other(format!("stats: unknown category {:?}", cat.value(i))))?;
            let l = lines.entry(key(i)?).or_default();
            l.rows += rows.value(i);
            l.channel += ca.value(i);
            l.platform += pa.value(i);
            match c {
                Category::Matched | Category::CrossDayMatched => l.matched += rows.value(i),
                Category::CrossDayPending => {}
                _ => l.unexplained += ca.value(i) - pa.value(i),
            }
        }
    }
    let mut order: Vec<(&Option<String>, &Line)> = lines.iter().collect();
    if grain != "hour" {
        order.sort_by(|a, b| {
            b.1.unexplained
                .abs()
                .cmp(&a.1.unexplained.abs())
                .then((b.1.rows - b.1.matched).cmp(&(a.1.rows - a.1.matched)))
                .then(a.0.cmp(b.0))
        });
    }
    let width = order
        .iter()
        .map(|(k, _)| k.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(1)
        .max(grain.len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {grain:<width$} {:>9} {:>11} {:>10} {:>18} {:>18} {:>16}",
        "rows", "differences", "match rate", "channel amount", "platform amount", "net unexplained"
    );
    for (k, v) in order.iter().take(limit) {
        let rate = if v.rows == 0 {
            100.0
        } else {
            v.matched as f64 * 100.0 / v.rows as f64
        };
        let _ = writeln!(
            out,
            "  {:<width$} {:>9} {:>11} {:>9.2}% {:>18} {:>18} {:>16}",
            k.as_deref().unwrap_or("-"),
            v.rows,
            v.rows - v.matched,
            rate,
            money_text(v.channel),
            money_text(v.platform),
            money_text(v.unexplained)
        );
    }
    if order.len() > limit {
        let _ = writeln!(out, "  … {} more (--top N shows more)", order.len() - limit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `summary.json` as reckon wrote it before the ageing, thresholds, bill totals and
    /// outputs were added: `reckon report` still reads and renders it.
    #[test]
    fn an_older_summary_without_the_later_fields_still_renders() {
        let old = r#"{
          "channel": "alipay", "bill_date": "2026-11-20", "run_id": "abc123",
          "status": "reconciled",
          "inputs": {"channel_rows": 3, "platform_rows": 3, "rejected_rows": 0, "carried_in_rows": 0},
          "rows": 3,
          "counts": {"MATCHED": 2, "AMOUNT_MISMATCH": 1},
          "amounts": {"MATCHED": {"channel": "20.00", "platform": "20.00"},
                      "AMOUNT_MISMATCH": {"channel": "5.00", "platform": "4.00"}},
          "net_unexplained": "1.00", "match_rate": 0.666667,
          "conservation": {"holds": true, "channel_records": 3, "platform_records": 3,
                           "carried_in_records": 0}
        }"#;
        let s: Summary = serde_json::from_str(old).expect("an older summary reads");
        assert!(s.thresholds.passed.is_empty() && s.bill_totals.is_empty());
        let text = render(&s);
        assert!(
            text.starts_with("alipay 2026-11-20  run abc123  reconciled"),
            "{text}"
        );
        assert!(text.contains("AMOUNT_MISMATCH"), "{text}");
        assert!(text.contains("match rate 66.67%"), "{text}");
        assert!(text.contains("conservation holds"), "{text}");
    }
}
