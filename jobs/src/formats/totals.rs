//! The bill's own totals: values captured from tail lines or a summary member, and each check
//! against what was read, exactly.

use std::collections::HashMap;

use regex::Regex;

use super::engine::{NormalizeStats, TotalsResult};
use super::rows::CheckAcc;
use super::split::Fields;
use super::template::{Cleanup, Template};
use crate::error::{Error, Result};

pub(super) fn capture(re: &Regex, line: &str, values: &mut HashMap<String, String>) {
    if let Some(caps) = re.captures(line) {
        for name in re.capture_names().flatten() {
            if let Some(m) = caps.name(name) {
                values.insert(name.to_string(), m.as_str().to_string());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn summary_values(
    t: &Template,
    s: &super::template::Summary,
    member: &str,
    text: &str,
    delim: u8,
    quote: Option<u8>,
    cleanup: &[Cleanup],
    values: &mut HashMap<String, String>,
) -> Result<()> {
    let start = s.start.as_deref().map(|r| t.regex(r)).transpose()?;
    let row = t.regex(&s.row)?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    if let Some(start) = &start {
        if !lines.by_ref().any(|l| start.is_match(l)) {
            return Err(Error::BadInput(format!(
                "summary {member}: no line matches {:?} ({})",
                start.as_str(),
                t.at("[totals.summary]")
            )));
        }
    }
    let header = lines
        .by_ref()
        .find(|l| !l.trim().is_empty() && (start.is_some() || !l.starts_with('#')))
        .unwrap_or("");
    let Some(total) = lines.find(|l| row.is_match(l)) else {
        return Err(Error::BadInput(format!(
            "summary {member}: no totals row matches {:?} ({})",
            row.as_str(),
            t.at("[totals.summary]")
        )));
    };
    let (mut h, mut v) = (Fields::default(), Fields::default());
    h.split(header, delim, quote, cleanup);
    v.split(total, delim, quote, cleanup);
    for (n, x) in h.to_vec(header).into_iter().zip(v.to_vec(total)) {
        values.entry(n).or_insert(x);
    }
    Ok(())
}

/// Compares each check with the bill's value; a missing value or a difference fails the file.
pub(crate) fn finish_totals(
    t: &Template,
    checks: &[CheckAcc],
    values: &HashMap<String, String>,
    source: &str,
    stats: &mut NormalizeStats,
) -> Result<()> {
    for c in checks {
        let skip = |why: String| TotalsResult {
            value: c.value.clone(),
            expected: String::new(),
            parsed: String::new(),
            ok: true,
            skipped: Some(why),
        };
        if let Some(col) = &c.absent_column {
            stats
                .totals
                .push(skip(format!("the body has no column {col:?}")));
            continue;
        }
        let Some(expected) = values.get(&c.value) else {
            if c.optional {
                stats
                    .totals
                    .push(skip("the bill states no such total".into()));
                continue;
            }
            return Err(Error::BadInput(format!(
                "{source}: the bill's totals have no value {:?} ({}): the tail or summary is missing or changed",
                c.value,
                t.at(&format!("\"{}\"", c.value))
            )));
        };
        let (parsed, ok) = if c.is_sum() {
            let sum = c.sum_text();
            // The bill's total is written the way its amounts are.
            let ok = c.unknown == 0 && c.parse_total(expected.trim()).is_ok_and(|w| w == c.sum);
            let parsed = if c.unknown > 0 {
                format!("{sum} (+{} rows with unreadable amounts)", c.unknown)
            } else {
                sum
            };
            (parsed, ok)
        } else {
            let want: String = expected.chars().filter(char::is_ascii_digit).collect();
            let ok = !want.is_empty()
                && expected
                    .trim()
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '.' || ch == ' ')
                && want.parse::<u64>().is_ok_and(|w| w == c.count);
            (c.count.to_string(), ok)
        };
        stats.totals.push(TotalsResult {
            value: c.value.clone(),
            expected: expected.clone(),
            parsed,
            ok,
            skipped: None,
        });
    }
    if let Some(bad) = stats.totals.iter().find(|c| !c.ok) {
        return Err(Error::BadInput(format!(
            "{source}: totals check failed: the bill says {} = {}, parsed {} ({})",
            bad.value,
            bad.expected,
            bad.parsed,
            t.at(&format!("\"{}\"", bad.value))
        )));
    }
    Ok(())
}
