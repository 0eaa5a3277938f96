//! The fetchers against servers on loopback that implement the channels' documented protocols
//! (`channel_apis.py`, keys generated at start), and against a real S3-compatible server:
//! signed requests the server verifies, signed answers reckon verifies, "not yet" as exit 75,
//! 5xx retried, refusals and tampering failing with the channel's words, WeChat's hash checked,
//! re-issued bills recorded, and no secret in any log line or output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::services::{unavailable, ChannelApis, S3};
use crate::support::{area, file_of, generate, reckon, run_day};

const DAY: &str = "2026-11-20";

/// A generated data set, the channel APIs serving its bills, and its config pointing at them.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    cfg: PathBuf,
    apis: ChannelApis,
    bills: PathBuf,
}

const TOKEN: &str = "tok-5ecret-bearer-77";
const BASIC_PASSWORD: &str = "pw-5ecret-basic-88";

fn setup() -> Option<Setup> {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let cfg = generate(&dir, DAY, 1, 400, 8);
    let bills = tmp.path().join("served");
    let d = DAY;
    for (from, to) in [
        ("bills/alipay", format!("alipay/trade/{d}")),
        ("bills/wechat", format!("wechat/{d}")),
        ("bills/wechat", "files/wechat".to_string()),
    ] {
        let to = bills.join(to);
        std::fs::create_dir_all(&to).expect("mkdir");
        for f in std::fs::read_dir(dir.join(from)).expect("bills").flatten() {
            std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
        }
    }
    let env = [
        ("FILES_TOKEN", TOKEN),
        ("FILES_USER", "recon"),
        ("FILES_PASSWORD", BASIC_PASSWORD),
    ];
    let apis = match ChannelApis::start(&bills, &tmp.path().join("keys"), &env) {
        Ok(a) => a,
        Err(e) => {
            unavailable("the channel API server (Python cryptography)", &e);
            return None;
        }
    };
    // Quick retries for the tests.
    let mut text = std::fs::read_to_string(&cfg).expect("cfg");
    text.push_str("\n[orchestration]\nretry_base_ms = 20\n");
    std::fs::write(&cfg, text).expect("cfg");
    Some(Setup {
        _tmp: tmp,
        dir,
        cfg,
        apis,
        bills,
    })
}

/// Replaces channel `name`'s `source = …` line.
fn set_source(cfg: &Path, name: &str, source: &str) {
    let text = std::fs::read_to_string(cfg).expect("cfg");
    let at = text
        .find(&format!("name = \"{name}\""))
        .expect("channel in config");
    let s = at + text[at..].find("source = ").expect("source line");
    let e = s + text[s..].find('\n').expect("line end");
    let text = format!("{}source = {source}{}", &text[..s], &text[e..]);
    std::fs::write(cfg, text).expect("cfg");
}

impl Setup {
    /// Alipay with the app key in `key` (bare base64 PKCS#1, or PKCS#8 PEM).
    fn alipay_with(&self, key: &str) {
        set_source(
            &self.cfg,
            "alipay",
            &format!(
                r#"{{ kind = "alipay", gateway = "{}/gateway.do", app_id = "2021000000000001", private_key_file = "{}", alipay_public_key_file = "{}" }}"#,
                self.apis.base,
                self.apis.keys.join(key).display(),
                self.apis.keys.join("alipay_public.b64").display()
            ),
        );
    }

    fn alipay(&self) {
        self.alipay_with("alipay_app_private.b64");
    }

    fn wechat(&self, platform_file: &str) {
        set_source(
            &self.cfg,
            "wechat",
            &format!(
                r#"{{ kind = "wechatpay_v3", base_url = "{}", mchid = "1900000109", serial_no = "{}", private_key_env = "WX_MERCHANT_KEY", platform_key_file = "{}", platform_serial = "{}" }}"#,
                self.apis.base,
                self.apis.key("wechat_merchant_serial.txt"),
                self.apis.keys.join(platform_file).display(),
                self.apis.key("wechat_platform_serial.txt"),
            ),
        );
    }

    /// `reckon stage NAME` for one channel with the merchant key in the environment and every
    /// log line on; returns (exit code, last stdout line as JSON, stderr).
    fn stage(&self, stage: &str, channel: &str, date: &str) -> (i32, Value, String) {
        let out = on_day(
            &mut self.reckon(),
            &["stage", stage],
            &self.cfg,
            date,
            Some(channel),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.assert_no_secret(&stderr);
        self.assert_no_secret(&stdout);
        let last = stdout.lines().last().unwrap_or("").to_string();
        let v = serde_json::from_str(&last).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v, stderr)
    }

    fn reckon(&self) -> Command {
        let mut c = reckon();
        c.env("RECKON_LOG", "debug")
            .env("WX_MERCHANT_KEY", self.apis.key("wechat_merchant_key.pem"))
            .env("BANK_TOKEN", TOKEN)
            .env("BANK_USER", "recon")
            .env("BANK_PASSWORD", BASIC_PASSWORD);
        c
    }

    /// The secrets that must never be printed or stored: key material and passwords.
    fn secrets(&self) -> Vec<String> {
        let mut out = vec![TOKEN.to_string(), BASIC_PASSWORD.to_string()];
        for k in ["alipay_app_private.b64", "wechat_merchant_key.pem"] {
            // A run of the key's base64 long enough to be unmistakable.
            let text: String = self
                .apis
                .key(k)
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect();
            out.push(text[40..100].to_string());
        }
        out
    }

    fn assert_no_secret(&self, text: &str) {
        for s in self.secrets() {
            assert!(!text.contains(&s), "a secret reached the output: …{s}…");
        }
    }

    fn manifest(&self, channel: &str, date: &str) -> Value {
        let p = area(&self.dir.join("output"), "runs", channel, date).join("manifest.json");
        serde_json::from_slice(&std::fs::read(&p).expect("manifest")).expect("manifest JSON")
    }

    fn fetch_json(&self, channel: &str) -> Value {
        let p = file_of(&self.dir.join("output"), "raw", channel, DAY, "fetch.json");
        serde_json::from_slice(&std::fs::read(&p).expect("fetch.json")).expect("JSON")
    }
}

/// `cmd` (a reckon command) running `verb` (`run`, or `stage NAME`) with `cfg` for `date`
/// and, when given, one channel.
fn on_day(
    cmd: &mut Command,
    verb: &[&str],
    cfg: &Path,
    date: &str,
    channel: Option<&str>,
) -> Output {
    cmd.args(verb)
        .arg("--config")
        .arg(cfg)
        .args(["--date", date]);
    if let Some(ch) = channel {
        cmd.args(["--channel", ch]);
    }
    cmd.output().expect("reckon runs")
}

fn summaries(v: &Value) -> Vec<Value> {
    v["channels"]
        .as_array()
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_else(|| vec![v.clone()])
}

fn counts(summary: &Value) -> Value {
    summary["counts"].clone()
}

#[test]
fn bills_fetched_through_the_signed_apis_reconcile_like_the_dropped_files() {
    let Some(t) = setup() else { return };
    // The same data through the drop folders first.
    let dropped = t.dir.parent().expect("tmp").join("dropped");
    std::fs::create_dir_all(&dropped).expect("mkdir");
    let plain = dropped.join("reckon.toml");
    let text = std::fs::read_to_string(&t.cfg).expect("cfg");
    let base = t.dir.display().to_string();
    std::fs::write(
        &plain,
        text.replace("\"bills/", &format!("\"{base}/bills/"))
            .replace("\"warehouse/", &format!("\"{base}/warehouse/")),
    )
    .expect("cfg");
    let (code, want, err) = run_day(&plain, DAY, &[]);
    assert_eq!(code, 0, "{err}");

    t.alipay();
    t.wechat("wechat_platform_cert.pem");
    let out = on_day(&mut t.reckon(), &["run"], &t.cfg, DAY, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    t.assert_no_secret(&stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Value = serde_json::from_str(stdout.lines().last().expect("line")).expect("JSON");
    let (want, got) = (summaries(&want), summaries(&got));
    assert_eq!(got.len(), 2);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g["status"], "reconciled", "{g}");
        assert_eq!(counts(g), counts(w), "{}", g["channel"]);
    }

    // The server checked every signature reckon made; reckon checked every answer.
    let reqs = t.apis.requests();
    let signed: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.get("signature_ok").is_some())
        .collect();
    assert_eq!(signed.len(), 3, "{reqs:?}");
    assert!(signed.iter().all(|r| r["signature_ok"] == true), "{reqs:?}");

    // raw/ holds the files byte for byte, with their hashes and where they came from.
    let ali = t.fetch_json("alipay");
    assert_eq!(ali["fetcher"], "alipay");
    assert_eq!(ali["file"], "20881234567890120156_20261120.csv.zip");
    assert!(
        !ali["source"].as_str().unwrap_or("").contains("token"),
        "{ali}"
    );
    let served = std::fs::read(
        t.bills
            .join("alipay/trade")
            .join(DAY)
            .join("20881234567890120156_20261120.csv.zip"),
    )
    .expect("served");
    let kept = std::fs::read(file_of(
        &t.dir.join("output"),
        "raw",
        "alipay",
        DAY,
        "20881234567890120156_20261120.csv.zip",
    ))
    .expect("kept");
    assert_eq!(served, kept);
    let wx = t.fetch_json("wechat");
    assert_eq!(wx["fetcher"], "wechatpay_v3");
    assert_eq!(wx["channel_detail"]["hash_type"], "SHA1");

    // Nothing under the storage root holds a secret.
    for (name, bytes) in crate::support::snapshot(&t.dir.join("output"), &[]) {
        t.assert_no_secret(&String::from_utf8_lossy(&bytes));
        assert!(!name.contains(TOKEN));
    }

    // Fetching the same content again is a no-op.
    let (code, v, err) = t.stage("fetch", "wechat", DAY);
    assert_eq!(code, 0, "{v} {err}");
    let m = t.manifest("wechat", DAY);
    assert_eq!(m["stages"]["fetch"]["detail"]["unchanged"], true, "{m}");
    assert_eq!(m["stages"]["reconcile"]["state"], "done", "{m}");
}

#[test]
fn a_bill_not_published_yet_is_exit_75_on_both_apis() {
    let Some(t) = setup() else { return };
    // The other key formats: a PKCS#8 PEM app key, WeChat's platform public key (not a cert).
    t.alipay_with("alipay_app_private.pem");
    t.wechat("wechat_platform_public.pem");
    for ch in ["alipay", "wechat"] {
        let (code, v, err) = t.stage("fetch", ch, "2026-11-21");
        assert_eq!(code, 75, "{ch}: {v} {err}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("isp.bill_not_exist") || e.contains("NO_STATEMENT_EXIST"),
            "{ch}: {e}"
        );
        assert_eq!(t.manifest(ch, "2026-11-21")["status"], "waiting");
    }
}

#[test]
fn server_errors_are_retried_and_refusals_fail_with_the_channels_words() {
    let Some(t) = setup() else { return };
    t.alipay();
    t.wechat("wechat_platform_cert.pem");

    // Two 503s, then the bill: three attempts, recorded.
    t.apis.control(json!({ "fail": 2 }));
    let (code, v, err) = t.stage("fetch", "wechat", DAY);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(t.manifest("wechat", DAY)["stages"]["fetch"]["attempts"], 3);
    assert!(err.contains("retrying"), "{err}");

    // More 503s than attempts: "unavailable", exit 75.
    t.apis.control(json!({ "fail": 10 }));
    let (code, v, _) = t.stage("fetch", "alipay", DAY);
    assert_eq!(code, 75, "{v}");
    assert_eq!(v["status"], "unavailable", "{v}");
    t.apis.control(json!({ "fail": 0 }));

    // A refusal is not retried and carries the channel's code.
    t.apis
        .control(json!({ "reject": { "status": 400, "code": "PARAM_ERROR", "message": "bill_date out of range" } }));
    let (code, v, _) = t.stage("fetch", "wechat", DAY);
    assert_eq!(code, 2, "{v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("PARAM_ERROR") && e.contains("bill_date out of range"),
        "{e}"
    );
    t.apis.control(
        json!({ "reject": { "code": "isv.invalid-bill-type", "message": "账单类型不合法" } }),
    );
    let (code, v, _) = t.stage("fetch", "alipay", DAY);
    assert_eq!(code, 2, "{v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("isv.invalid-bill-type") && e.contains("40004"),
        "{e}"
    );
    t.apis.control(json!({ "reject": null }));

    // Answers signed by someone else are refused, on both APIs.
    t.apis.control(json!({ "tamper": true }));
    for ch in ["alipay", "wechat"] {
        let (code, v, _) = t.stage("fetch", ch, DAY);
        assert_eq!(code, 2, "{ch}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("signature does not verify"),
            "{ch}: {v}"
        );
    }
    t.apis.control(json!({ "tamper": false }));

    // A download that does not match WeChat's published SHA1 is bad input.
    t.apis.control(json!({ "bad_hash": true }));
    let (code, v, _) = t.stage("fetch", "wechat", DAY);
    assert_eq!(code, 3, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("SHA1"),
        "{v}"
    );
    t.apis.control(json!({ "bad_hash": false }));

    // Nothing listening at all: retried like a 5xx, then "unavailable".
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let text = std::fs::read_to_string(&t.cfg).expect("cfg");
    std::fs::write(
        &t.cfg,
        text.replace(&t.apis.base, &format!("http://127.0.0.1:{closed}")),
    )
    .expect("cfg");
    let (code, v, err) = t.stage("fetch", "wechat", DAY);
    assert_eq!(
        (code, v["status"].as_str()),
        (75, Some("unavailable")),
        "{v}"
    );
    assert!(err.contains("could not connect"), "{err}");
    assert_eq!(t.manifest("wechat", DAY)["stages"]["fetch"]["attempts"], 3);
    std::fs::write(&t.cfg, text).expect("cfg");

    // A missing key variable is a configuration error naming it.
    let out = on_day(
        &mut reckon(),
        &["stage", "fetch"],
        &t.cfg,
        DAY,
        Some("wechat"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WX_MERCHANT_KEY"));
}

#[test]
fn https_with_credentials_and_a_reissued_bill_that_reruns_the_day() {
    let Some(t) = setup() else { return };
    let url = format!("{}/files/wechat/tradebill_{{yyyymmdd}}.csv", t.apis.base);
    set_source(
        &t.cfg,
        "wechat",
        &format!(
            r#"{{ kind = "https", url = "{url}", auth = "bearer", token_env = "BANK_TOKEN" }}"#
        ),
    );
    let (code, v, err) = t.stage("fetch", "wechat", DAY);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(t.fetch_json("wechat")["file"], "tradebill_20261120.csv");
    let out = on_day(&mut t.reckon(), &["run"], &t.cfg, DAY, Some("wechat"));
    assert_eq!(out.status.code(), Some(0));
    let first = t.manifest("wechat", DAY);
    assert_eq!(first["status"], "reconciled");

    // Wrong credentials are refused (401), not retried; a missing file is "not yet".
    set_source(
        &t.cfg,
        "wechat",
        &format!(
            r#"{{ kind = "https", url = "{url}", auth = "basic", user_env = "BANK_USER", password_env = "BANK_TOKEN" }}"#
        ),
    );
    let (code, v, _) = t.stage("fetch", "wechat", DAY);
    assert_eq!(code, 2, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("401"),
        "{v}"
    );
    set_source(
        &t.cfg,
        "wechat",
        &format!(
            r#"{{ kind = "https", url = "{url}", auth = "basic", user_env = "BANK_USER", password_env = "BANK_PASSWORD" }}"#
        ),
    );
    let (code, v, _) = t.stage("fetch", "wechat", "2026-11-21");
    assert_eq!(code, 75, "{v}");

    // The channel re-issues the day's bill: one payment's amount corrected.
    let served = t.bills.join("files/wechat/tradebill_20261120.csv");
    let old = std::fs::read_to_string(&served).expect("bill");
    std::fs::write(&served, reissue(&old)).expect("write");
    let (code, v, err) = t.stage("fetch", "wechat", DAY);
    assert_eq!(code, 0, "{v} {err}");
    let m = t.manifest("wechat", DAY);
    assert!(
        m["stages"]["fetch"]["detail"]["reissued_from_sha256"].is_string(),
        "{m}"
    );
    assert_eq!(m["stages"]["reconcile"]["state"], "stale", "{m}");
    assert_eq!(m["stages"]["normalize"]["state"], "stale", "{m}");
    // The warehouse's snapshot does not depend on the bill: collect need not run again.
    assert_eq!(m["stages"]["collect"]["state"], "done", "{m}");
    let fj = t.fetch_json("wechat");
    let hist = fj["history"].as_array().expect("history");
    assert_eq!(hist.len(), 1, "{fj}");
    let kept = t
        .dir
        .join("output")
        .join(hist[0]["superseded_to"].as_str().expect("superseded_to"));
    assert_eq!(std::fs::read_to_string(kept).expect("old bill"), old);

    // The next run reconciles the day again, on the new bill.
    let out = on_day(&mut t.reckon(), &["run"], &t.cfg, DAY, Some("wechat"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = t.manifest("wechat", DAY);
    assert_eq!(second["status"], "reconciled");
    assert_ne!(second["run_id"], first["run_id"]);
}

/// The bill with the first payment's settled amount raised by 0.01, and the summary's total
/// with it: a bill a channel could re-issue.
fn reissue(bill: &str) -> String {
    let lines: Vec<&str> = bill.split("\r\n").collect();
    let header = lines[0];
    let cols: Vec<&str> = header.split(',').collect();
    let amount = cols
        .iter()
        .position(|c| c.trim_start_matches('\u{feff}') == "应结订单金额")
        .expect("amount column");
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let bump = |v: &str| -> String {
        let n: rust_decimal::Decimal = v.trim_start_matches('`').parse().expect("decimal");
        format!("`{}", n + rust_decimal::Decimal::new(1, 2))
    };
    let mut f: Vec<String> = out[1].split(',').map(String::from).collect();
    f[amount] = bump(&f[amount]);
    out[1] = f.join(",");
    // The summary's values line follows the line that starts 总交易单数.
    let at = out
        .iter()
        .position(|l| l.starts_with("总交易单数"))
        .expect("summary header")
        + 1;
    let mut s: Vec<String> = out[at].split(',').map(String::from).collect();
    s[1] = bump(&s[1]);
    out[at] = s.join(",");
    out.join("\r\n")
}

#[test]
fn a_bill_in_an_object_store_is_fetched_by_listing_one_prefix() {
    let s3 = match S3::start("reckon-bills") {
        Ok(s) => s,
        Err(e) => return unavailable("moto S3 server", &e),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let cfg = generate(&dir, DAY, 1, 200, 9);
    let bill = std::fs::read_dir(dir.join("bills/alipay"))
        .expect("bills")
        .flatten()
        .next()
        .expect("a bill")
        .path();
    let name = bill
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    s3.put(&format!("incoming/alipay/{name}"), &bill)
        .expect("upload");
    s3.put(
        "incoming/alipay/20881234567890120156_20261121.csv.zip",
        &bill,
    )
    .expect("upload");
    set_source(
        &cfg,
        "alipay",
        r#"{ kind = "object_store", url = "s3://reckon-bills/incoming/alipay/", pattern = "*_{yyyymmdd}.csv.zip" }"#,
    );
    let mut text = std::fs::read_to_string(&cfg).expect("cfg");
    text.push_str(&format!(
        "\n[object_store]\nendpoint = \"{}\"\nallow_http = true\nregion = \"us-east-1\"\n",
        s3.endpoint
    ));
    std::fs::write(&cfg, text).expect("cfg");
    let out = on_day(reckon().envs(s3.env()), &["run"], &cfg, DAY, Some("alipay"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = |f: &str| file_of(&dir.join("output"), "raw", "alipay", DAY, f);
    assert_eq!(
        std::fs::read(raw(&name)).expect("raw"),
        std::fs::read(&bill).expect("bill")
    );
    let fj: Value = serde_json::from_slice(&std::fs::read(raw("fetch.json")).expect("fetch.json"))
        .expect("JSON");
    assert_eq!(fj["fetcher"], "object_store");
    assert_eq!(
        fj["source"],
        format!("s3://reckon-bills/incoming/alipay/{name}")
    );
    // A day with nothing under the prefix is "not yet".
    let out = on_day(
        reckon().envs(s3.env()),
        &["stage", "fetch"],
        &cfg,
        "2026-11-22",
        Some("alipay"),
    );
    assert_eq!(out.status.code(), Some(75));
}
