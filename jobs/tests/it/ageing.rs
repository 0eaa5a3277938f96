//! Ageing across days on a generated data set: a difference keeps the day it was first seen;
//! a pending record that matches the next day is resolved by the carry-over; a re-issued bill
//! that corrects a row resolves its difference; a rerun of the same inputs changes nothing.

use std::collections::HashMap;
use std::path::Path;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Decimal128Type;
use rust_decimal::Decimal;

use crate::support::{date, file_of, generate, read, run_day, s};

/// The ledger of a channel-day as `key → (state, first_seen, resolved_by, category)`.
fn ledger(root: &Path, day: &str) -> HashMap<String, (String, String, Option<String>, String)> {
    let mut out = HashMap::new();
    for b in read(&file_of(root, "results", "wechat", day, "ledger.parquet")) {
        for i in 0..b.num_rows() {
            out.insert(
                s(&b, "ageing_key", i).expect("key"),
                (
                    s(&b, "state", i).expect("state"),
                    date(&b, "first_seen", i),
                    s(&b, "resolved_by", i),
                    s(&b, "category", i).expect("category"),
                ),
            );
        }
    }
    out
}

fn run_wechat(cfg: &Path, day: &str) -> serde_json::Value {
    let (code, json, stderr) = run_day(cfg, day, &["--channel", "wechat"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    json["channels"][0].clone()
}

/// A field of a WeChat bill line, without its backtick.
fn field(line: &str, i: usize) -> String {
    line.split(',')
        .nth(i)
        .unwrap_or("")
        .trim_start_matches('`')
        .to_string()
}

#[test]
fn differences_age_across_days_and_a_reissued_bill_resolves_what_it_corrects() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 2, 2000, 11);
    let root = dir.join("output");

    // Day 1: no ledger before it, so every difference is new.
    let s1 = run_wechat(&cfg, "2026-11-20");
    let a1 = &s1["ageing"];
    let l1 = ledger(&root, "2026-11-20");
    assert_eq!(a1["new"].as_u64(), Some(l1.len() as u64), "{a1}");
    assert_eq!(a1["persisting"].as_u64(), Some(0), "{a1}");
    assert_eq!(a1["oldest_open"], "2026-11-20");
    let diffs1 = read(&file_of(
        &root,
        "results",
        "wechat",
        "2026-11-20",
        "diffs.parquet",
    ));
    let rows1: usize = diffs1.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows1, l1.len());
    for b in &diffs1 {
        for i in 0..b.num_rows() {
            assert_eq!(s(b, "state", i).as_deref(), Some("new"));
            assert_eq!(date(b, "first_seen", i), "2026-11-20");
        }
    }
    stats_add_up_to_the_summary(&root, &cfg, &s1);
    let pending1 = l1.values().filter(|e| e.3 == "CROSS_DAY_PENDING").count();
    assert!(
        pending1 > 0,
        "the data set has records waiting for the next day"
    );

    // Day 2: the day before's pending records are matched or still open, never new.
    let s2 = run_wechat(&cfg, "2026-11-21");
    let a2 = &s2["ageing"];
    let l2 = ledger(&root, "2026-11-21");
    let by_carry = a2["resolved"]["carry_over_match"].as_u64().unwrap_or(0);
    assert_eq!(
        by_carry,
        s2["counts"]["CROSS_DAY_MATCHED"].as_u64().expect("count"),
        "{a2}"
    );
    assert!(by_carry > 0, "{a2}");
    for (k, e) in &l1 {
        let now = l2
            .get(k)
            .unwrap_or_else(|| panic!("{k} {e:?} lost on day 2"));
        assert_eq!(now.1, "2026-11-20", "{k}: first seen moves: {now:?}");
        assert!(
            now.0 == "persisting" || now.2.as_deref() == Some("carry_over_match"),
            "{k}: {e:?} became {now:?}"
        );
    }
    let new2 = l2.values().filter(|e| e.0 == "new").count() as u64;
    assert_eq!(a2["new"].as_u64(), Some(new2));
    assert!(l2
        .values()
        .filter(|e| e.0 == "new")
        .all(|e| e.1 == "2026-11-21"));
    assert_eq!(
        a2["open"].as_u64(),
        Some(l2.values().filter(|e| e.0 != "resolved").count() as u64)
    );

    // The channel re-issues day 1's bill with one mismatched amount corrected.
    let (d1, row) = diffs1
        .iter()
        .find_map(|b| {
            (0..b.num_rows())
                .find(|&i| {
                    s(b, "category", i).as_deref() == Some("AMOUNT_MISMATCH")
                        && s(b, "txn_type", i).as_deref() == Some("PAY")
                })
                .map(|i| (b, i))
        })
        .expect("an amount mismatch on day 1");
    let want = Decimal::from_i128_with_scale(
        d1.column_by_name("platform_amount")
            .expect("platform_amount")
            .as_primitive::<Decimal128Type>()
            .value(row),
        2,
    );
    let line_no = crate::support::i64v(d1, "source_line", row).expect("line") as usize;
    let bill = dir.join("bills/wechat/tradebill_20261120.csv");
    let text = std::fs::read_to_string(&bill).expect("bill");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let old = lines[line_no - 1].clone();
    let (old_amount, old_fee): (Decimal, Decimal) = (
        field(&old, 12).parse().expect("amount"),
        field(&old, 22).parse().expect("fee"),
    );
    let fee = (want * Decimal::new(6, 3))
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    let mut cols: Vec<String> = old.split(',').map(String::from).collect();
    cols[12] = format!("`{want}");
    cols[24] = format!("`{want}");
    cols[22] = format!("`{fee}");
    lines[line_no - 1] = cols.join(",");
    // The summary line: 应结订单总金额, 手续费总金额 and 订单总金额 follow the correction.
    let last = lines.len() - 1;
    let mut tot: Vec<String> = lines[last].split(',').map(String::from).collect();
    let adjust = |v: &str, by: Decimal| {
        let d: Decimal = v.trim_start_matches('`').parse().expect("total");
        format!("`{}", d + by)
    };
    tot[1] = adjust(&tot[1], want - old_amount);
    tot[4] = adjust(&tot[4], fee - old_fee);
    tot[5] = adjust(&tot[5], want - old_amount);
    lines[last] = tot.join(",");
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    std::fs::write(&bill, lines.join(eol) + eol).expect("write bill");

    let s1b = run_wechat(&cfg, "2026-11-20");
    let a1b = &s1b["ageing"];
    assert_eq!(a1b["resolved"]["reissued_bill"].as_u64(), Some(1), "{a1b}");
    let l1b = ledger(&root, "2026-11-20");
    let resolved: Vec<_> = l1b.values().filter(|e| e.0 == "resolved").collect();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].3, "AMOUNT_MISMATCH");
    assert_eq!(
        s1b["counts"]["AMOUNT_MISMATCH"].as_u64(),
        s1["counts"]["AMOUNT_MISMATCH"].as_u64().map(|n| n - 1)
    );

    // The same inputs again: the same ledger, the resolution kept.
    let before = std::fs::read(file_of(
        &root,
        "results",
        "wechat",
        "2026-11-20",
        "ledger.parquet",
    ))
    .expect("ledger");
    let again = run_wechat(&cfg, "2026-11-20");
    assert_eq!(again["ageing"], s1b["ageing"]);
    let after = std::fs::read(file_of(
        &root,
        "results",
        "wechat",
        "2026-11-20",
        "ledger.parquet",
    ))
    .expect("ledger");
    assert!(before == after, "a rerun rewrote the ledger differently");
}

/// Each table of `stats/` (by hour, by merchant) sums to the summary's counts and amounts per
/// category; `reckon report --hourly --by-merchant` prints them.
fn stats_add_up_to_the_summary(root: &Path, cfg: &Path, summary: &serde_json::Value) {
    use datafusion::arrow::datatypes::{Int32Type, UInt64Type};
    let stats = |file: &str| file_of(root, "stats", "wechat", "2026-11-20", file);
    let mut hours = std::collections::BTreeSet::new();
    let mut merchants = std::collections::BTreeSet::new();
    for (file, grain) in [
        ("by_hour.parquet", "hour"),
        ("by_merchant.parquet", "merchant_id"),
    ] {
        let mut rows: HashMap<String, u64> = HashMap::new();
        let mut amounts: HashMap<String, (i128, i128)> = HashMap::new();
        for b in read(&stats(file)) {
            let n = b
                .column_by_name("rows")
                .expect("rows")
                .as_primitive::<UInt64Type>();
            let m = |c: &str| {
                b.column_by_name(c)
                    .expect(c)
                    .as_primitive::<Decimal128Type>()
                    .clone()
            };
            let (ca, pa) = (m("channel_amount"), m("platform_amount"));
            for i in 0..b.num_rows() {
                let cat = s(&b, "category", i).expect("category");
                *rows.entry(cat.clone()).or_default() += n.value(i);
                let e = amounts.entry(cat).or_default();
                e.0 += ca.value(i);
                e.1 += pa.value(i);
                if grain == "hour" {
                    let h = b
                        .column_by_name("hour")
                        .expect("hour")
                        .as_primitive::<Int32Type>();
                    assert!((0..24).contains(&h.value(i)), "hour {}", h.value(i));
                    hours.insert(h.value(i));
                } else {
                    merchants.insert(s(&b, "merchant_id", i));
                }
            }
        }
        for (cat, n) in summary["counts"].as_object().expect("counts") {
            let got = rows.get(cat).copied().unwrap_or(0);
            assert_eq!(got, n.as_u64().expect("n"), "{file} {cat}");
            let (c, p) = amounts.get(cat).copied().unwrap_or_default();
            let text = |v: i128| Decimal::from_i128_with_scale(v, 2).to_string();
            assert_eq!(summary["amounts"][cat]["channel"], text(c), "{file} {cat}");
            assert_eq!(summary["amounts"][cat]["platform"], text(p), "{file} {cat}");
        }
    }
    assert!(hours.len() > 12, "{hours:?}");
    // The warehouse's merchants, and the bill's account for records only the bill has.
    assert!(
        merchants.contains(&Some("M001".to_string())),
        "{merchants:?}"
    );
    assert!(
        merchants.contains(&Some("1900000109".to_string())),
        "{merchants:?}"
    );
    let o = crate::support::run(&[
        "report",
        "--config",
        cfg.to_str().expect("utf8"),
        "--date",
        "2026-11-20",
        "--channel",
        "wechat",
        "--hourly",
        "--by-merchant",
        "--top",
        "3",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    let hour_lines = text.lines().filter(|l| {
        let t = l.trim_start();
        t.len() > 2 && t.as_bytes()[..2].iter().all(u8::is_ascii_digit) && t.as_bytes()[2] == b' '
    });
    assert_eq!(hour_lines.count(), hours.len(), "{text}");
    let merchant_lines = text
        .lines()
        .filter(|l| l.trim_start().starts_with("M0") || l.trim_start().starts_with("1900000109"));
    assert_eq!(merchant_lines.count(), 3, "{text}");
    assert!(
        text.contains(&format!("… {} more", merchants.len() - 3)),
        "{text}"
    );
}
