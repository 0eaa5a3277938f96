//! `reckon run --preview`: a rule edit shown against the committed day before it touches it.

use crate::support::{channel_line, generate, reckon, run_day, snapshot};

#[test]
fn a_tolerance_edit_is_previewed_against_the_committed_day_and_commits_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 600, 13);
    let (code, json, err) = run_day(&cfg, "2026-11-20", &["--channel", "alipay"]);
    assert_eq!(code, 0, "{json}\n{err}");
    let committed = &json["channels"][0];
    let mismatched = committed["counts"]["AMOUNT_MISMATCH"]
        .as_i64()
        .expect("count");
    assert!(mismatched > 0, "the generated day has amount mismatches");

    // The analyst's edited copy, beside the original (same storage root): a tolerance that
    // accepts every planted amount difference.
    let edited = dir.join("reckon.preview.toml");
    std::fs::copy(&cfg, &edited).expect("copy");
    channel_line(&edited, "alipay", "amount_tolerance = \"100000.00\"");
    let before = snapshot(&dir.join("output"), &[]);
    let out = reckon()
        .args([
            "run",
            "--config",
            edited.to_str().expect("utf8"),
            "--date",
            "2026-11-20",
            "--channel",
            "alipay",
            "--preview",
            "--show",
            "5",
        ])
        .output()
        .expect("preview");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing committed, nothing marked stale, no scratch left: every byte as it was.
    assert!(
        before == snapshot(&dir.join("output"), &[]),
        "the preview changed the storage root"
    );

    let line: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("json line");
    assert_eq!(line["preview"], true);
    let p = &line["channels"][0];
    assert_eq!(p["committed_run_id"], committed["run_id"], "{p}");
    assert_ne!(
        p["preview_run_id"], committed["run_id"],
        "the rules are an input"
    );
    let cat = |name: &str| {
        p["categories"]
            .as_array()
            .expect("categories")
            .iter()
            .find(|c| c["category"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {p}"))
    };
    let amount = cat("AMOUNT_MISMATCH");
    assert_eq!(amount["committed"]["rows"], mismatched, "{amount}");
    assert_eq!(amount["preview"]["rows"], 0, "{amount}");
    assert_eq!(amount["change"]["rows"], -mismatched, "{amount}");
    let matched = cat("MATCHED");
    let gained = matched["change"]["rows"].as_i64().expect("change");
    let to_fee = cat("FEE_MISMATCH")["change"]["rows"]
        .as_i64()
        .expect("change");
    assert_eq!(
        gained + to_fee,
        mismatched,
        "where the mismatches went: {p}"
    );

    // Each moved difference, by ageing key: every committed amount mismatch, and nothing else.
    let moved = p["moved"].as_array().expect("moved");
    assert_eq!(moved.len() as i64, mismatched, "{p}");
    for m in moved {
        assert_eq!(m["committed"], "AMOUNT_MISMATCH", "{m}");
        assert!(
            m["preview"] == "MATCHED" || m["preview"] == "FEE_MISMATCH",
            "{m}"
        );
        assert!(
            m["ageing_key"].as_str().is_some_and(|k| !k.is_empty()),
            "{m}"
        );
        assert!(m["match_key"].is_string(), "{m}");
    }
    // The table a person reads.
    assert!(stdout.contains("AMOUNT_MISMATCH"), "{stdout}");
    assert!(
        stdout.contains(&format!("{mismatched} differences change category")),
        "{stdout}"
    );
    assert!(
        stdout.contains("more (all in the JSON line)") || mismatched <= 5,
        "{stdout}"
    );

    // The committed day is unchanged: a plain run of the original config agrees with it.
    let (code, again, _) = run_day(&cfg, "2026-11-20", &["--channel", "alipay"]);
    assert_eq!(code, 0);
    assert_eq!(again["channels"][0]["run_id"], committed["run_id"]);
}
