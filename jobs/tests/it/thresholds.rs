//! Thresholds per category: a day past one says so in its summary and still exits 0, unless
//! the scheduler asks `--fail-on-threshold` (exit 3). `reckon report` prints the day as a
//! table, with its net unexplained amount.

use std::path::Path;

use crate::support::{generate, run};

fn with_thresholds(cfg: &Path, lines: &str) {
    let text = std::fs::read_to_string(cfg).expect("config");
    let text = text.replacen(
        "name = \"alipay\"\n",
        &format!("name = \"alipay\"\n{lines}\n"),
        1,
    );
    std::fs::write(cfg, text).expect("config");
}

fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().last().expect("a JSON line")).expect("json")
}

#[test]
fn a_day_past_a_threshold_says_so_fails_only_when_asked_and_reports_as_a_table() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = generate(&tmp.path().join("d"), "2026-11-20", 1, 1000, 5);
    with_thresholds(
        &cfg,
        "thresholds.MISSING_IN_PLATFORM = { count = 0 }\n\
         thresholds.AMOUNT_MISMATCH = { count = 100000, amount = \"99999999.00\" }",
    );
    let c = cfg.to_str().expect("utf8");
    let base = [
        "run",
        "--config",
        c,
        "--date",
        "2026-11-20",
        "--channel",
        "alipay",
    ];
    let o = run(&base);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = last_json(&o.stdout);
    let t = &s["channels"][0]["thresholds"];
    assert_eq!(
        t["passed"],
        serde_json::json!(["MISSING_IN_PLATFORM"]),
        "{t}"
    );
    let checked = t["checked"].as_array().expect("checked");
    assert_eq!(checked.len(), 2, "{t}");
    let missing = checked
        .iter()
        .find(|c| c["category"] == "MISSING_IN_PLATFORM")
        .expect("checked");
    assert_eq!(
        missing["count"], s["channels"][0]["counts"]["MISSING_IN_PLATFORM"],
        "{t}"
    );
    assert!(missing["count"].as_u64().unwrap_or(0) > 0, "{t}");
    // The summary on disk says the same.
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(super::support::file_of(
            &tmp.path().join("d/output"),
            "results",
            "alipay",
            "2026-11-20",
            "summary.json",
        ))
        .expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["thresholds"], *t);

    // The net unexplained amount: channel minus platform over every difference that no rule
    // explains (all but the matched across days and the waiting), from the summary's amounts.
    let mut net = rust_decimal::Decimal::ZERO;
    for (category, a) in summary["amounts"].as_object().expect("amounts") {
        if ["MATCHED", "CROSS_DAY_MATCHED", "CROSS_DAY_PENDING"].contains(&category.as_str()) {
            continue;
        }
        let d = |v: &serde_json::Value| -> rust_decimal::Decimal {
            v.as_str().expect("amount").parse().expect("decimal")
        };
        net += d(&a["channel"]) - d(&a["platform"]);
    }
    assert_eq!(summary["net_unexplained"], net.to_string());
    let alipay_day = ["--config", c, "--date", "2026-11-20", "--channel", "alipay"];
    let o = run(&[&["report"][..], &alipay_day].concat());
    assert_eq!(o.status.code(), Some(0));
    let table = String::from_utf8_lossy(&o.stdout);
    for want in [
        "alipay 2026-11-20",
        &format!("net unexplained {net}"),
        "conservation holds",
        "threshold passed: MISSING_IN_PLATFORM",
    ] {
        assert!(table.contains(want), "{want:?} in:\n{table}");
    }
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.trim_start().starts_with("MISSING_IN_PLATFORM "))
        .expect("a row per category")
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[1], row[2], row[3]),
        (
            summary["counts"]["MISSING_IN_PLATFORM"]
                .to_string()
                .as_str(),
            summary["amounts"]["MISSING_IN_PLATFORM"]["channel"]
                .as_str()
                .unwrap_or(""),
            summary["amounts"]["MISSING_IN_PLATFORM"]["platform"]
                .as_str()
                .unwrap_or("")
        ),
        "{table}"
    );
    // The wechat channel was not reconciled: not ready.
    let o = run(&["report", "--config", c, "--date", "2026-11-20"]);
    assert_eq!(o.status.code(), Some(75), "a day not reconciled yet");

    let mut failing = base.to_vec();
    failing.push("--fail-on-threshold");
    let o = run(&failing);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a threshold passed"));
    let o = run(&[
        &["stage", "report"][..],
        &alipay_day,
        &["--fail-on-threshold"],
    ]
    .concat());
    assert_eq!(o.status.code(), Some(3));

    // Limits the day stays within pass nothing, with the flag too.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(
            "thresholds.MISSING_IN_PLATFORM = { count = 0 }",
            "thresholds.MISSING_IN_PLATFORM = { count = 100000 }",
        ),
    )
    .expect("config");
    let o = run(&failing);
    assert_eq!(o.status.code(), Some(0));

    // A threshold on something that is not a difference category is a configuration error.
    for bad in [
        "thresholds.MATCHED = { count = 1 }",
        "thresholds.MISSING = { count = 1 }",
        "thresholds.AMOUNT_MISMATCH = { amount = \"1.005\" }",
        "thresholds.FEE_MISMATCH = {}",
    ] {
        let cfg2 = tmp.path().join("bad.toml");
        let text = std::fs::read_to_string(&cfg)
            .expect("config")
            .replace("thresholds.MISSING_IN_PLATFORM = { count = 100000 }", bad);
        std::fs::write(&cfg2, text).expect("config");
        let o = run(&[
            "run",
            "--config",
            cfg2.to_str().expect("utf8"),
            "--date",
            "2026-11-20",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("thresholds."), "{bad}: {err}");
    }
}
