//! Alerts against a real HTTP server on loopback: one message per run and cause (a failed
//! stage, a late bill, a threshold passed), in the generic JSON, Slack and Lark formats; a
//! webhook that fails never fails the run; the webhook's URL (a secret) never reaches the logs.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::support::{channel_line, generate, reckon};

/// A webhook receiver: records each request's path and JSON body; answers `status`.
pub(crate) struct Hook {
    port: u16,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Hook {
    pub(crate) fn start(status: u16) -> Hook {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut r = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                sink.lock().expect("lock").push((path, json));
                let mut w = stream;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Hook { port, got }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/s3cr3t-token", self.port)
    }

    pub(crate) fn take(&self) -> Vec<(String, serde_json::Value)> {
        std::mem::take(&mut *self.got.lock().expect("lock"))
    }
}

const SECRET: &str = "s3cr3t-token";

/// `reckon run` with the webhook variable set and every log line on; asserts the secret is
/// not in the logs. Returns (exit code, stderr).
fn run_with_hook(cfg: &Path, url: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "run",
        "--config",
        cfg.to_str().expect("utf8"),
        "--date",
        "2026-11-20",
    ];
    args.extend_from_slice(extra);
    let o = reckon()
        .env("RECKON_LOG", "debug")
        .env("RECKON_TEST_WEBHOOK", url)
        .args(&args)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !err.contains(SECRET) && !out.contains(SECRET),
        "the webhook URL was logged"
    );
    (o.status.code().unwrap_or(-1), err)
}

pub(crate) fn set_alerts(cfg: &Path, format: &str) {
    let text = std::fs::read_to_string(cfg).expect("config");
    let start = text.find("\n[alerts]").unwrap_or(text.len());
    let end = text[start..]
        .find("\n[[")
        .map(|i| start + i)
        .unwrap_or(text.len());
    let text = format!(
        "{}\n[alerts]\nwebhook_url_env = \"RECKON_TEST_WEBHOOK\"\nformat = \"{format}\"\ntimeout_secs = 5\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(cfg, text).expect("config");
}

#[test]
fn alerts_go_out_once_per_run_and_cause_in_each_format() {
    let hook = Hook::start(200);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 800, 12);
    set_alerts(&cfg, "json");

    // Nothing wrong: no alert.
    let (code, err) = run_with_hook(&cfg, &hook.url(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(hook.take().is_empty());

    // A threshold passed by many records: one alert, for that channel.
    channel_line(
        &cfg,
        "alipay",
        "thresholds.MISSING_IN_PLATFORM = { count = 0 }",
    );
    let (code, err) = run_with_hook(&cfg, &hook.url(), &[]);
    assert_eq!(code, 0, "{err}");
    let got = hook.take();
    assert_eq!(got.len(), 1, "{got:?}");
    let (path, body) = &got[0];
    assert_eq!(path, "/hooks/s3cr3t-token");
    assert_eq!(body["cause"], "threshold_passed");
    assert_eq!(body["channel"], "alipay");
    assert_eq!(body["bill_date"], "2026-11-20");
    assert_eq!(
        body["detail"]["passed"],
        serde_json::json!(["MISSING_IN_PLATFORM"])
    );

    // A bill that fails its totals: one stage_failed alert, in each format.
    let bill = dir.join("bills/wechat/tradebill_20261120.csv");
    let text = std::fs::read_to_string(&bill).expect("bill");
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.len() - 1;
    let broken = lines[last].replacen('`', "`9", 1);
    lines[last] = &broken;
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    std::fs::write(&bill, lines.join(eol) + eol).expect("bill");
    for format in ["json", "slack", "lark"] {
        set_alerts(&cfg, format);
        let (code, err) = run_with_hook(&cfg, &hook.url(), &["--channel", "wechat"]);
        assert_eq!(code, 3, "{err}");
        let got = hook.take();
        assert_eq!(got.len(), 1, "{format}: {got:?}");
        let body = &got[0].1;
        match format {
            "json" => {
                assert_eq!(body["cause"], "stage_failed");
                assert_eq!(body["stage"], "normalize");
                assert_eq!(body["exit_code"], 3);
                assert!(
                    body["message"].as_str().unwrap_or("").contains("totals"),
                    "{body}"
                );
            }
            "slack" => {
                let t = body["text"].as_str().expect("slack text");
                assert!(
                    t.contains("stage_failed") && t.contains("wechat 2026-11-20"),
                    "{t}"
                );
            }
            _ => {
                assert_eq!(body["msg_type"], "text");
                let t = body["content"]["text"].as_str().expect("lark text");
                assert!(t.contains("normalize"), "{t}");
            }
        }
    }

    // No bill yet: an alert only once its deadline has passed.
    set_alerts(&cfg, "json");
    let zip = dir.join("bills/alipay/20881234567890120156_20261120.csv.zip");
    std::fs::remove_file(&zip).expect("remove bill");
    channel_line(&cfg, "alipay", "bill_deadline = \"09:30\"");
    let (code, err) = run_with_hook(&cfg, &hook.url(), &["--channel", "alipay"]);
    assert_eq!(code, 75, "{err}");
    let got = hook.take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1["cause"], "bill_late");
    assert!(
        got[0].1["message"].as_str().unwrap_or("").contains("09:30"),
        "{got:?}"
    );
    // A date whose deadline is still ahead: waiting, no alert.
    let o = reckon()
        .env("RECKON_TEST_WEBHOOK", hook.url())
        .args([
            "run",
            "--config",
            cfg.to_str().expect("utf8"),
            "--date",
            "2099-01-01",
            "--channel",
            "alipay",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(75));
    assert!(hook.take().is_empty());
}

#[test]
fn a_failing_webhook_never_fails_the_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 300, 13);
    set_alerts(&cfg, "json");
    channel_line(
        &cfg,
        "alipay",
        "thresholds.MISSING_IN_PLATFORM = { count = 0 }",
    );

    // The webhook answers 500: the run is still 0, and says the alert was not accepted.
    let hook = Hook::start(500);
    let (code, err) = run_with_hook(&cfg, &hook.url(), &["--channel", "alipay"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("alert not accepted by the webhook"), "{err}");
    assert_eq!(hook.take().len(), 1);

    // Nobody listens: still 0.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{closed}/hooks/s3cr3t-token");
    let (code, err) = run_with_hook(&cfg, &url, &["--channel", "alipay"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("alert not sent: the webhook could not connect"),
        "{err}"
    );
}
