//! Bad input gets a clear error and nothing is lost: malformed rows go to rejected/ and the
//! run goes on; a bill that fails its own checks stops that channel with exit 3.

use std::io::{Read, Write};
use std::path::Path;

use super::support::{self, area, file_of, read, s};

const DAY: &str = "2026-11-20";

#[test]
fn a_malformed_row_is_rejected_with_file_line_reason_and_raw_text() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = support::generate(tmp.path(), DAY, 1, 400, 3);
    // Corrupt one more WeChat row's status by hand (the generator already corrupts a time);
    // an amount would do too, but it also makes the bill's 订单总金额 unverifiable.
    let bill = tmp.path().join("bills/wechat/tradebill_20261120.csv");
    let text = std::fs::read_to_string(&bill).expect("bill");
    let mut lines: Vec<String> = text.split("\r\n").map(String::from).collect();
    let victim = 10;
    let fields: Vec<&str> = lines[victim - 1].split(',').collect();
    let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    f[9] = "`GONE".into();
    lines[victim - 1] = f.join(",");
    std::fs::write(&bill, lines.join("\r\n")).expect("write");

    let (code, json, stderr) = support::run_day(&config, DAY, &["--channel", "wechat"]);
    assert_eq!(code, 0, "{json} {stderr}");
    let root = tmp.path().join("output");
    let rejected = read(&file_of(&root, "rejected", "wechat", DAY, "part-0.parquet"));
    let mut found = false;
    let mut n = 0;
    for b in &rejected {
        for i in 0..b.num_rows() {
            n += 1;
            assert_eq!(
                s(b, "source_file", i).as_deref(),
                Some("tradebill_20261120.csv")
            );
            let reason = s(b, "reason", i).expect("reason");
            let raw = s(b, "raw", i).expect("raw");
            if support::i64v(b, "source_line", i) == Some(victim as i64) {
                assert!(reason.contains("GONE"), "{reason}");
                assert!(raw.contains("`GONE"), "{raw}");
                found = true;
            }
        }
    }
    assert!(found, "the corrupted line is in rejected/");
    assert_eq!(json["channels"][0]["inputs"]["rejected_rows"], n);
}

fn rewrite_alipay(dir: &Path, edit: impl Fn(&str) -> String) {
    let path = dir.join("bills/alipay/20881234567890120156_20261120.csv.zip");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&path).expect("zip")).expect("zip");
    let mut members = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).expect("member");
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).expect("read");
        members.push((f.name().to_string(), bytes));
    }
    let mut w = zip::ZipWriter::new(std::fs::File::create(&path).expect("create"));
    for (name, bytes) in members {
        w.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .expect("start");
        let bytes = if name.ends_with("业务明细.csv") {
            let text = encoding_rs::GBK.decode(&bytes).0.into_owned();
            encoding_rs::GBK.encode(&edit(&text)).0.into_owned()
        } else {
            bytes
        };
        w.write_all(&bytes).expect("write");
    }
    w.finish().expect("finish");
}

fn assert_incomplete(dir: &Path, config: &Path, needle: &str) {
    let (code, json, stderr) = support::run_day(config, DAY, &[]);
    assert_eq!(code, 3, "{json}\n{stderr}");
    let alipay = &json["channels"][0];
    assert_eq!(alipay["channel"], "alipay");
    assert_eq!(alipay["status"], "incomplete", "{alipay}");
    assert!(
        alipay["error"].as_str().expect("error").contains(needle),
        "{alipay}"
    );
    // The other channel still reconciled.
    assert_eq!(json["channels"][1]["status"], "reconciled");
    let root = dir.join("output");
    assert!(
        !area(&root, "results", "alipay", DAY).exists(),
        "no results for a bad bill"
    );
    assert!(
        !area(&root, "normalized", "alipay", DAY).exists(),
        "nothing half-normalized"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(area(&root, "runs", "alipay", DAY).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["status"], "incomplete");
}

#[test]
fn a_bill_without_its_end_marker_is_incomplete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = support::generate(tmp.path(), DAY, 1, 300, 4);
    rewrite_alipay(tmp.path(), |t| {
        let cut = t
            .find("#-----------------------------------------业务明细列表结束")
            .expect("marker");
        // Truncated mid-way through the body: drop the last rows and everything after.
        let body_end = t[..cut - 2].rfind("\r\n").expect("row");
        t[..body_end + 2].to_string()
    });
    assert_incomplete(tmp.path(), &config, "end marker is missing");
}

#[test]
fn a_bill_whose_totals_disagree_is_incomplete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = support::generate(tmp.path(), DAY, 1, 300, 5);
    rewrite_alipay(tmp.path(), |t| {
        // Remove one data row but keep the markers and the totals.
        let start = t.find("\r\n2026").expect("a row") + 2;
        let end = start + t[start..].find("\r\n").expect("eol") + 2;
        format!("{}{}", &t[..start], &t[end..])
    });
    assert_incomplete(tmp.path(), &config, "totals check failed");
}

#[test]
fn configuration_errors_exit_2_naming_the_problem() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = support::generate(tmp.path(), DAY, 1, 50, 6);
    let cfg = config.to_str().expect("utf8");
    let cases: [(&[&str], &str); 4] = [
        (
            &["run", "--config", "/nonexistent/reckon.toml", "--date", DAY],
            "/nonexistent/reckon.toml",
        ),
        (
            &["run", "--config", cfg, "--date", DAY, "--channel", "paypal"],
            "unknown channel \"paypal\"",
        ),
        (
            &["run", "--config", cfg, "--date", "2026-13-01"],
            "bad date \"2026-13-01\"",
        ),
        (
            &[
                "stage",
                "dance",
                "--config",
                cfg,
                "--date",
                DAY,
                "--channel",
                "alipay",
            ],
            "unknown stage",
        ),
    ];
    for (args, needle) in cases {
        let out = support::run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    std::fs::write(tmp.path().join("bad.toml"), "storage_root = 'x'\n[warehouse]\norders='a'\nrefunds='b'\n[[channel]]\nname='x'\nformat='alipay_trade_v1'\ntime_zone='Mars/Olympus'\nsource={kind='drop_folder',path='p',pattern='q'}\n").expect("write");
    let out = support::run(&[
        "run",
        "--config",
        tmp.path().join("bad.toml").to_str().expect("utf8"),
        "--date",
        DAY,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Mars/Olympus"), "{stderr}");
}

#[test]
fn a_bill_not_yet_published_exits_75() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = support::generate(tmp.path(), DAY, 1, 50, 7);
    let (code, json, _) = support::run_day(&config, "2026-11-25", &["--channel", "wechat"]);
    assert_eq!(code, 75, "{json}");
    assert_eq!(json["channels"][0]["status"], "waiting");
}

#[test]
fn a_bill_refused_for_its_totals_still_shows_its_rejected_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = support::generate(tmp.path(), DAY, 1, 300, 6);
    // One payment's 商家实收 made unreadable: the row is rejected, and the 交易合计 total can
    // no longer be matched.
    let victim = std::cell::Cell::new(0i64);
    rewrite_alipay(tmp.path(), |t| {
        let lines: Vec<&str> = t.split("\r\n").collect();
        let at = lines
            .iter()
            .position(|l| l.contains(",交易,"))
            .expect("a payment row");
        victim.set(at as i64 + 1);
        let mut f: Vec<String> = lines[at].split(',').map(String::from).collect();
        f[12] = "15.0x".into();
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        out[at] = f.join(",");
        out.join("\r\n")
    });
    assert_incomplete(tmp.path(), &config, "totals check failed");
    // The refused bill's rejected rows are published (never committed) where its error says.
    let (_, json, _) = support::run_day(&config, DAY, &["--channel", "alipay"]);
    let error = json["channels"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("rejected/channel=alipay"), "{error}");
    let shown = error
        .split(" rejected rows are in ")
        .nth(1)
        .expect("the error names the rejected rows");
    let rejected = read(Path::new(shown));
    let lines: Vec<i64> = rejected
        .iter()
        .flat_map(|b| (0..b.num_rows()).filter_map(|i| support::i64v(b, "source_line", i)))
        .collect();
    assert!(
        lines.contains(&victim.get()),
        "line {} is in rejected/: {lines:?}",
        victim.get()
    );
}
