//! Per-channel rules through the whole job: `compare_amount = "received"` reconciles on what
//! the merchant received, and is refused, naming the setting, when the template cannot say.

use crate::support::{channel_line as set, generate, run_day};

#[test]
fn compare_amount_received_runs_on_the_received_column_or_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 500, 3);

    // A WeChat template without the settlement amount: refused before anything is written.
    let v3 = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../formats/wechat_trade_v3.toml"),
    )
    .expect("template");
    let start = v3.find("[columns.received]").expect("received in v3");
    let end = start + v3[start..].find("\n\n").expect("block end");
    let own = dir.join("wechat_without_received.toml");
    std::fs::write(&own, format!("{}{}", &v3[..start], &v3[end + 2..])).expect("write");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(
            "format = \"wechat_trade_v3\"",
            &format!("format = {:?}", own.to_str().expect("utf8")),
        ),
    )
    .expect("config");
    set(&cfg, "wechat", "compare_amount = \"received\"");
    let (code, json, stderr) = run_day(&cfg, "2026-11-20", &["--channel", "wechat"]);
    assert_eq!(code, 2, "{json}\n{stderr}");
    let err = json["channels"][0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("compare_amount") && err.contains("received"),
        "{json}"
    );
    assert!(!dir
        .join("output/normalized/channel=wechat/dt=2026-11-20")
        .exists());

    // Alipay's template reads 商家实收: the day reconciles on it. The generated bills pay
    // the full order amount, so the categories are those of the order amount.
    let (code, base, stderr) = run_day(&cfg, "2026-11-20", &["--channel", "alipay"]);
    assert_eq!(code, 0, "{base}\n{stderr}");
    set(&cfg, "alipay", "compare_amount = \"received\"");
    let (code, got, stderr) = run_day(&cfg, "2026-11-20", &["--channel", "alipay"]);
    assert_eq!(code, 0, "{got}\n{stderr}");
    assert_eq!(got["channels"][0]["counts"], base["channels"][0]["counts"]);
    assert_ne!(got["channels"][0]["run_id"], base["channels"][0]["run_id"]);

    // A platform.sql written before merchants (no merchant_id output) still runs: the
    // platform side has no merchant, and `sql check` accepts the file.
    let sql = dir.join("sql/platform.sql");
    let text = std::fs::read_to_string(&sql).expect("platform.sql");
    let old = text.replace(",\n    merchant_id\nFROM unioned", "\nFROM unioned");
    assert_ne!(old, text, "the shipped platform.sql outputs merchant_id");
    std::fs::write(&sql, old).expect("write");
    let (code, got, stderr) = run_day(&cfg, "2026-11-20", &["--channel", "alipay"]);
    assert_eq!(code, 0, "{got}\n{stderr}");
    let check = crate::support::run(&["sql", "check", "--config", cfg.to_str().expect("utf8")]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // A rounding the config does not know is refused at load, naming the setting.
    set(&cfg, "alipay", "fee_rounding = \"bankers\"");
    let o = crate::support::run(&[
        "run",
        "--config",
        cfg.to_str().expect("utf8"),
        "--date",
        "2026-11-20",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fee_rounding") && err.contains("half_even"),
        "{err}"
    );
}

#[test]
fn a_reconcile_sql_that_loses_records_fails_the_conservation_check() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 400, 8);
    // An analyst's edit that drops the channel-only rows: every other number still looks
    // plausible, but the channel's records are no longer all accounted for.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let sql = dir.join("sql");
    std::fs::create_dir_all(&sql).expect("sql dir");
    for f in ["platform.sql", "reconcile.sql"] {
        std::fs::copy(repo.join(f), sql.join(f)).expect("copy");
    }
    let text = std::fs::read_to_string(sql.join("reconcile.sql")).expect("sql");
    let last = text.rfind("FROM classified").expect("the final FROM");
    let edited = format!(
        "{}FROM classified WHERE NOT (in_channel AND NOT in_platform){}",
        &text[..last],
        &text[last + "FROM classified".len()..]
    );
    std::fs::write(sql.join("reconcile.sql"), edited).expect("write");

    let (code, json, stderr) = run_day(&cfg, "2026-11-20", &["--channel", "alipay"]);
    assert_eq!(code, 1, "{json}\n{stderr}");
    let ch = &json["channels"][0];
    assert_eq!(ch["stage"], "report", "{ch}");
    assert!(
        ch["error"]
            .as_str()
            .is_some_and(|e| e.contains("conservation check failed")),
        "{ch}"
    );
    // The failed summary is published for a person to read, named in the error, never
    // committed.
    let error = ch["error"].as_str().unwrap_or_default();
    let shown = error
        .split("its summary (not committed): ")
        .nth(1)
        .expect("the error names the summary");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shown).expect("summary")).expect("json");
    assert!(
        !dir.join("output/runs/channel=alipay/dt=2026-11-20/committed.json")
            .exists(),
        "a day that fails conservation is not committed"
    );
    assert_eq!(summary["status"], "failed", "{summary}");
    assert_eq!(summary["conservation"]["holds"], false, "{summary}");
    let accounted = summary["conservation"]["channel_records"]
        .as_u64()
        .expect("count");
    let rows = summary["inputs"]["channel_rows"].as_u64().expect("rows");
    assert!(accounted < rows, "{accounted} of {rows}");
}
