//! Orchestration: backfills (in order, channels side by side, resumable after a kill, the
//! same results as running day by day), stale later days after an earlier day changes,
//! `reckon status`, and the lease that keeps two runs of one channel-date apart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{generate, reckon, run, run_day, snapshot};

fn cfg_str(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// The files a reader of the results relies on (not the manifests, which hold times, nor
/// fetch.json, which names where the bill was found).
fn results(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    snapshot(root, &["_scratch", "runs/", "fetch.json"])
}

fn backfill(cfg: &Path, extra: &[&str]) -> (i32, String, serde_json::Value) {
    let mut args = vec![
        "backfill",
        "--config",
        cfg_str(cfg),
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-22",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let json = serde_json::from_str(out.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("{e}: {out}\n{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap_or(-1), out, json)
}

fn statuses(json: &serde_json::Value) -> Vec<String> {
    json["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            format!(
                "{} {} {}",
                d["bill_date"].as_str().unwrap_or(""),
                d["channel"].as_str().unwrap_or(""),
                d["status"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

#[test]
fn a_backfill_matches_day_by_day_resumes_after_a_kill_and_skips_finished_days() {
    let tmp = tempfile::tempdir().expect("tmp");
    let seq = tmp.path().join("seq");
    let cfg_seq = generate(&seq, "2026-11-20", 3, 3000, 21);
    let par = tmp.path().join("par");
    copy_dir(&seq, &par);
    let cfg_par = par.join("reckon.toml");

    // Day by day, one channel after the other.
    for day in ["2026-11-20", "2026-11-21", "2026-11-22"] {
        let (code, json, err) = run_day(&cfg_seq, day, &[]);
        assert_eq!(code, 0, "{json}\n{err}");
    }

    // A backfill, both channels at once, killed once the first day is done.
    let mut child = reckon()
        .args([
            "backfill",
            "--config",
            cfg_str(&cfg_par),
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-22",
            "--parallel",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let first_day = par.join("output/runs/channel=wechat/dt=2026-11-20/manifest.json");
    let done = |p: &Path| {
        std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|m| m["status"] == "reconciled")
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut killed = false;
    while Instant::now() < deadline {
        if done(&first_day) {
            child.kill().expect("kill");
            killed = true;
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.wait();
    assert!(killed, "the backfill ended before it could be killed");

    // Started again, it resumes: the finished days are skipped, the rest run.
    let (code, table, json) = backfill(&cfg_par, &["--parallel", "2"]);
    assert_eq!(code, 0, "{table}");
    let st = statuses(&json);
    assert!(
        st.contains(&"2026-11-20 wechat skipped".to_string()),
        "{st:?}"
    );
    assert!(
        st.contains(&"2026-11-22 alipay reconciled".to_string()),
        "{st:?}"
    );
    assert!(table.starts_with("date"), "{table}");
    assert!(table.contains("2026-11-22"), "{table}");

    // The same results as day by day, byte for byte.
    let (a, b) = (results(&seq.join("output")), results(&par.join("output")));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different files"
    );
    for (k, v) in &a {
        assert!(
            b.get(k) == Some(v),
            "{k} differs between day by day and the backfill"
        );
    }

    // Once more: everything is finished, nothing runs.
    let (code, _, json) = backfill(&cfg_par, &[]);
    assert_eq!(code, 0);
    assert!(
        statuses(&json).iter().all(|s| s.ends_with(" skipped")),
        "{json}"
    );
    // --force runs every date again, with the same results.
    let (code, _, json) = backfill(&cfg_par, &["--force", "--channel", "wechat"]);
    assert_eq!(code, 0);
    assert_eq!(statuses(&json).len(), 3, "{json}");
    assert!(
        statuses(&json).iter().all(|s| s.ends_with(" reconciled")),
        "{json}"
    );
    assert!(
        results(&par.join("output")) == b,
        "a forced rerun changed results"
    );
}

#[test]
fn an_earlier_day_that_changes_makes_later_days_stale_and_status_says_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 3, 500, 4);
    let (code, table, _) = backfill(&cfg, &["--channel", "wechat"]);
    assert_eq!(code, 0, "{table}");

    // The same day again with the same rules: same run id, nothing stale.
    let (code, json, err) = run_day(&cfg, "2026-11-20", &["--channel", "wechat"]);
    assert_eq!(code, 0, "{json}\n{err}");
    assert!(json["channels"][0].get("marked_stale").is_none(), "{json}");

    // A changed rule changes day 1's results: days 2 and 3 are stale.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replacen(
            "name = \"wechat\"\n",
            "name = \"wechat\"\namount_tolerance = \"100.00\"\n",
            1,
        ),
    )
    .expect("config");
    let (code, json, err) = run_day(&cfg, "2026-11-20", &["--channel", "wechat"]);
    assert_eq!(code, 0, "{json}\n{err}");
    assert_eq!(
        json["channels"][0]["marked_stale"],
        serde_json::json!(["2026-11-21", "2026-11-22"]),
        "{json}"
    );
    assert!(err.contains("marked stale"), "{err}");

    let o = run(&[
        "status",
        "--config",
        cfg_str(&cfg),
        "--date",
        "2026-11-21",
        "--json",
    ]);
    assert!(o.status.success());
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let wechat = st
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["channel"] == "wechat")
        .expect("wechat");
    assert_eq!(wechat["status"], "stale", "{st}");
    assert_eq!(wechat["stages"]["report"]["state"], "done", "{st}");
    assert!(
        wechat["error"]
            .as_str()
            .unwrap_or("")
            .contains("2026-11-20"),
        "{st}"
    );
    let alipay = st
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["channel"] == "alipay")
        .expect("alipay");
    assert_eq!(alipay["status"], "never run", "{st}");
    let o = run(&["status", "--config", cfg_str(&cfg), "--date", "2026-11-21"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("wechat") && text.contains("stale"), "{text}");

    // A backfill without --force runs the stale days again, and only them.
    let (code, table, json) = backfill(&cfg, &["--channel", "wechat"]);
    assert_eq!(code, 0, "{table}");
    assert_eq!(
        statuses(&json),
        vec![
            "2026-11-20 wechat skipped",
            "2026-11-21 wechat reconciled",
            "2026-11-22 wechat reconciled"
        ]
    );
}

/// Starts `reckon run` of alipay on the first day; returns the child.
fn start_run(cfg: &Path, lease_wait: &str) -> std::process::Child {
    reckon()
        .args([
            "run",
            "--config",
            cfg_str(cfg),
            "--date",
            "2026-11-20",
            "--channel",
            "alipay",
            "--lease-wait",
            lease_wait,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn lease_path(dir: &Path) -> PathBuf {
    dir.join("output/runs/channel=alipay/dt=2026-11-20/lease.json")
}

/// Whether the lease is held: there, and not marked released by a run that ended.
fn held(dir: &Path) -> bool {
    std::fs::read(lease_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("released").is_none())
}

fn wait_held(dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if held(dir) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn two_runs_of_one_channel_date_never_overlap() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 20_000, 9);

    // The second run does not wait: it exits 75 and names the holder.
    let first = start_run(&cfg, "0");
    let pid = first.id();
    assert!(wait_held(&dir), "no lease appeared");
    let second = start_run(&cfg, "0").wait_with_output().expect("second");
    let a = first.wait_with_output().expect("first");
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert_eq!(second.status.code(), Some(75));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        out.contains("is being run by") && out.contains(&format!(":{pid} ")),
        "{out}"
    );
    assert!(!held(&dir), "the lease outlived its run");
    let done = results(&dir.join("output"));

    // The second run waits its turn, then runs: both succeed, the results are those of one.
    let first = start_run(&cfg, "0");
    assert!(wait_held(&dir), "no lease appeared");
    let second = start_run(&cfg, "300");
    let a = first.wait_with_output().expect("first");
    let b = second.wait_with_output().expect("second");
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(
        b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(
        results(&dir.join("output")) == done,
        "overlapping runs changed results"
    );

    // A lease left by a killed run does not block the next one.
    let mut killed = start_run(&cfg, "0");
    assert!(wait_held(&dir), "no lease appeared");
    killed.kill().expect("kill");
    let _ = killed.wait();
    assert!(held(&dir), "the kill left no lease to test with");
    let (code, json, err) = run_day(&cfg, "2026-11-20", &["--channel", "alipay"]);
    assert_eq!(code, 0, "{json}\n{err}");
    assert!(err.contains("took over a stale lease"), "{err}");
}

/// A TCP forwarder on a free loopback port to `target` that starts listening only after
/// `delay` (a database coming back after an outage); `None` never listens.
fn late_proxy(target: u16, delay: Option<Duration>) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    if let Some(delay) = delay {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind");
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c2, mut s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut c1, mut s1) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
    }
    port
}

#[test]
fn a_stage_retries_a_database_that_comes_back_and_gives_up_on_one_that_does_not() {
    let pg = match crate::services::Postgres::start() {
        Ok(p) => p,
        Err(why) => return crate::services::unavailable("a PostgreSQL server", &why),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let o = run(&[
        "generate",
        "--out",
        cfg_str(&dir),
        "--from",
        "2026-11-20",
        "--days",
        "1",
        "--rows",
        "500",
        "--seed",
        "5",
        "--warehouse-url",
        &pg.url,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = dir.join("reckon.toml");
    let pg_port: u16 = pg
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in url");
    let base = std::fs::read_to_string(&cfg).expect("config");
    let through = |port: u16| {
        let text = base.replace(&format!(":{pg_port}/"), &format!(":{port}/"));
        assert_ne!(text, base, "the config names the database");
        std::fs::write(
            &cfg,
            format!("{text}\n[orchestration]\nretry_attempts = 3\nretry_base_ms = 1000\n"),
        )
        .expect("config");
    };

    // The database is back after 1.5 s: the first attempt fails, a later one succeeds.
    through(late_proxy(pg_port, Some(Duration::from_millis(1500))));
    let (code, json, err) = run_day(&cfg, "2026-11-20", &["--channel", "wechat"]);
    assert_eq!(code, 0, "{json}\n{err}");
    assert!(err.contains("stage attempt failed; retrying"), "{err}");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("output/runs/channel=wechat/dt=2026-11-20/manifest.json"))
            .expect("manifest"),
    )
    .expect("json");
    let attempts = m["stages"]["collect"]["attempts"]
        .as_u64()
        .expect("attempts");
    assert!((2..=3).contains(&attempts), "{}", m["stages"]["collect"]);
    assert_eq!(m["stages"]["fetch"]["attempts"], 1);

    // It never comes back: three attempts, then exit 75, the stage says why, and one alert
    // goes out once the retries are used up (none for the attempts before).
    through(late_proxy(pg_port, None));
    crate::alerts::set_alerts(&cfg, "json");
    let hook = crate::alerts::Hook::start(200);
    let url = hook.url();
    let (code, json, err) = crate::support::run_day_env(
        &cfg,
        "2026-11-20",
        &["--channel", "wechat"],
        &[("RECKON_TEST_WEBHOOK", url.as_str())],
    );
    assert_eq!(code, 75, "{json}\n{err}");
    let why = json["channels"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("gave up after 3 attempts"), "{json}");
    assert_eq!(json["channels"][0]["stage"], "collect");
    assert_eq!(json["channels"][0]["status"], "unavailable");
    let alerts = hook.take();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let body = &alerts[0].1;
    assert_eq!(body["cause"], "stage_failed", "{body}");
    assert_eq!(body["stage"], "collect", "{body}");
    assert_eq!(body["exit_code"], 75, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("gave up after 3 attempts")),
        "{body}"
    );
}

#[test]
fn json_log_lines_carry_channel_date_stage_and_run_ids() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 300, 6);
    let o = reckon()
        .env("RECKON_LOG", "info")
        .args([
            "run",
            "--config",
            cfg_str(&cfg),
            "--date",
            "2026-11-20",
            "--log-format",
            "json",
        ])
        .output()
        .expect("run");
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("json")).expect("json");
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 10, "{err}");
    let invocation = lines[0]["invocation"]
        .as_str()
        .expect("invocation")
        .to_string();
    for l in &lines {
        assert_eq!(l["invocation"], invocation.as_str(), "{l}");
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
        if l["message"] == "stage started" || l["message"] == "stage done" {
            for k in ["channel", "date", "stage"] {
                assert!(l[k].is_string(), "{k} missing: {l}");
            }
            assert_eq!(l["date"], "2026-11-20");
        }
    }
    for c in summary["channels"].as_array().expect("channels") {
        let ch = c["channel"].as_str().expect("channel");
        let report: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["channel"] == ch && l["stage"] == "report")
            .collect();
        assert!(!report.is_empty(), "{ch}: no report lines");
        for l in report {
            assert_eq!(l["run_id"], c["run_id"], "{l}");
        }
    }
}

#[test]
fn a_failed_day_blocks_its_channel_and_the_most_severe_exit_code_wins() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 3, 300, 21);
    // Alipay's bill of the 21st is cut before its end marker (bad input, exit 3); WeChat's
    // bill of the 22nd is not there yet (exit 75).
    let zip = dir.join("bills/alipay/20881234567890120156_20261121.csv.zip");
    let bytes = std::fs::read(&zip).expect("zip");
    std::fs::write(&zip, &bytes[..bytes.len() / 2]).expect("cut");
    std::fs::remove_file(dir.join("bills/wechat/tradebill_20261122.csv")).expect("remove");

    let (code, table, json) = backfill(&cfg, &[]);
    assert_eq!(code, 3, "3 outranks 75:\n{table}");
    assert_eq!(
        statuses(&json),
        [
            "2026-11-20 alipay reconciled",
            "2026-11-20 wechat reconciled",
            "2026-11-21 alipay incomplete",
            "2026-11-21 wechat reconciled",
            "2026-11-22 alipay blocked",
            "2026-11-22 wechat waiting",
        ],
        "{table}"
    );
    let blocked = &json["days"][4];
    assert_eq!(blocked["exit_code"], 0, "{blocked}");
    assert!(
        blocked["error"]
            .as_str()
            .is_some_and(|e| e.contains("2026-11-21 failed")),
        "{blocked}"
    );
    // The blocked day was not touched.
    assert!(!dir
        .join("output/runs/channel=alipay/dt=2026-11-22")
        .exists());

    // One date, both channels failing differently: 3 (bad input) outranks 75 (not ready)...
    std::fs::remove_file(dir.join("bills/wechat/tradebill_20261121.csv")).expect("remove");
    let (code, json, _) = run_day(&cfg, "2026-11-21", &["--force"]);
    let codes: Vec<i64> = json["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c["exit_code"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(codes, [3, 75], "{json}");
    assert_eq!((code, json["exit_code"].as_i64()), (3, Some(3)), "{json}");
    // ... and 2 (configuration) outranks both.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replacen(
            "format = \"alipay_trade_v1\"",
            "format = \"no_such_template\"",
            1,
        ),
    )
    .expect("config");
    let (code, json, _) = run_day(&cfg, "2026-11-21", &["--force"]);
    assert_eq!(code, 2, "{json}");
    assert_eq!(json["channels"][1]["exit_code"], 75, "{json}");
}
