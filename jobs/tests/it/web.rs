//! `reckon serve` over HTTP: the real server process on generated, reconciled days, asked
//! the way a browser and a script ask (cookies, forms, CSRF tokens, API tokens, a proxy's
//! header); HTML and JSON answers checked against the committed files and the desk.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::support::{generate, reckon, run_day};

/// A running `reckon serve`; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `reckon serve --config cfg` on a free loopback port, its log in `log`.
    pub fn start(cfg: &Path, log: &Path) -> Server {
        let err = std::fs::File::create(log).expect("log file");
        let mut child = reckon()
            .args(["serve", "--config", cfg.to_str().expect("utf8")])
            .args(["--listen", "127.0.0.1:0"])
            .env("RECKON_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("reckon serve starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("its address");
        let base = first
            .trim()
            .strip_prefix("reckon desk on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .trim_end_matches('/')
            .to_string();
        Server {
            child,
            base,
            log: log.to_path_buf(),
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTP client that keeps cookies, like a browser, from `from` (a loopback address).
pub struct Client {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
    header: Option<(String, String)>,
}

/// A response: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> String {
        (self.headers.get(LOCATION))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The value of `<input name="NAME" value="…">` (the first).
    pub fn input(&self, name: &str) -> String {
        let at = self
            .body
            .find(&format!("name=\"{name}\" value=\""))
            .unwrap_or_else(|| panic!("no input {name} in {}", self.body));
        let rest = &self.body[at + name.len() + 15..];
        rest[..rest.find('"').expect("closing quote")].to_string()
    }
}

impl Client {
    pub fn new(base: &str, from: &str) -> Client {
        let from: IpAddr = from.parse().expect("ip");
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(from)
                .build()
                .expect("client"),
            base: base.to_string(),
            cookies: HashMap::new(),
            header: None,
        }
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let v = v.to_str().expect("ascii");
            let pair = v.split(';').next().unwrap_or_default();
            let (k, val) = pair.split_once('=').expect("name=value");
            if val.is_empty() || v.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let mut req = req;
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header(COOKIE, c.join("; "));
        }
        if let Some((k, v)) = &self.header {
            req = req.header(k.as_str(), v.as_str());
        }
        let r = req.send().await.expect("the desk answers");
        let (status, headers) = (r.status(), r.headers().clone());
        self.keep(&headers);
        Answer {
            status,
            headers,
            body: r.text().await.expect("body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    pub async fn bearer(&mut self, path: &str, token: &str) -> Answer {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token);
        self.send(req).await
    }

    /// Logs in through the form.
    pub async fn login(&mut self, user: &str, password: &str) -> Answer {
        let form = self.get("/login").await;
        let csrf = form.input("csrf");
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("next", "/"),
                ("user", user),
                ("password", password),
            ],
        )
        .await
    }
}

/// `reckon desk user add` with the password on standard input.
pub fn add_user(cfg: &Path, name: &str, role: &str, password: Option<&str>) {
    let mut cmd = reckon();
    cmd.args([
        "desk",
        "user",
        "add",
        "--config",
        cfg.to_str().expect("utf8"),
    ])
    .args(["--name", name, "--role", role]);
    if password.is_none() {
        cmd.arg("--proxy-only");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reckon desk user add");
    if let Some(p) = password {
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{p}").expect("password");
    }
    let out = child.wait_with_output().expect("done");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `reckon desk token add`: the token it prints.
pub fn add_token(cfg: &Path, name: &str, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_reckon"))
        .args([
            "desk",
            "token",
            "add",
            "--config",
            cfg.to_str().expect("utf8"),
        ])
        .args(["--name", name, "--role", role])
        .output()
        .expect("reckon desk token add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Three reconciled WeChat days, a desk with four-eyes above 100.00 and a trusted proxy at
/// 127.0.0.2, and its users: (config, dir).
pub fn desk_days(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = tmp.join("d");
    let cfg = generate(&dir, "2026-11-20", 3, 2000, 11);
    for d in ["2026-11-20", "2026-11-21", "2026-11-22"] {
        let (code, json, err) = run_day(&cfg, d, &["--channel", "wechat"]);
        assert_eq!(code, 0, "{json}\n{err}");
    }
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(
        "\n[desk]\nfour_eyes_above = \"100.00\"\ntrusted_proxies = [\"127.0.0.2\"]\nproxy_header = \"X-Remote-User\"\n",
    );
    std::fs::write(&cfg, text).expect("config");
    add_user(&cfg, "ann", "resolver", Some("ann's long passphrase"));
    add_user(&cfg, "ada", "approver", Some("ada's long passphrase"));
    add_user(&cfg, "vic", "viewer", Some("vic's long passphrase"));
    add_user(&cfg, "pat", "resolver", None);
    (cfg, dir)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The first `href` of a link with class `class`.
fn link(body: &str, class: &str) -> String {
    let at = body
        .find(&format!("class=\"{class}\" href=\""))
        .unwrap_or_else(|| panic!("no link .{class}"));
    let rest = &body[at + class.len() + 15..];
    rest[..rest.find('"').expect("quote")].replace("&#x2f;", "/")
}

#[test]
fn the_desk_serves_its_pages_to_logged_in_users_and_refuses_everyone_else() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cfg, dir) = desk_days(tmp.path());
    let token = add_token(&cfg, "nightly", "viewer");
    assert!(token.starts_with("reckon_"), "{token}");
    let server = Server::start(&cfg, &tmp.path().join("serve.log"));
    let session = runtime().block_on(async {
        let mut ann = Client::new(&server.base, "127.0.0.1");

        // Nobody: to the login page, and the API says 401.
        let r = ann.get("/differences?from=2026-11-20").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert!(
            r.location().starts_with("/login?next=%2Fdifferences"),
            "{}",
            r.location()
        );
        assert_eq!(
            ann.get("/api/differences").await.status,
            StatusCode::UNAUTHORIZED
        );

        // The login form's cookie is HttpOnly, Secure and SameSite=Strict.
        let form = ann.get("/login").await;
        let set = form
            .headers
            .get(SET_COOKIE)
            .expect("cookie")
            .to_str()
            .expect("ascii");
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(flag), "{set}");
        }
        // A login without the form's token, with a wrong password, then right.
        let r = ann
            .post(
                "/login",
                &[("user", "ann"), ("password", "ann's long passphrase")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = ann.login("ann", "not it").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("Unknown user or wrong password"));
        assert_eq!(
            ann.login("pat", "").await.status,
            StatusCode::UNAUTHORIZED,
            "proxy-only"
        );
        let r = ann.login("ann", "ann's long passphrase").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let session = r
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("a"))
            .find(|v| v.starts_with("reckon_desk="))
            .expect("session cookie")
            .to_string();
        for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(session.contains(flag), "{session}");
        }

        // The overview: the channel, its chart, open differences by category, ageing.
        let o = ann.get("/?to=2026-11-22&days=3").await;
        assert_eq!(o.status, StatusCode::OK);
        for part in [
            "id=\"channel-wechat\"",
            "<polyline points=\"",
            "Open differences on 2026-11-22",
            "over 7 days",
            "Oldest open:",
            "ann (resolver)",
        ] {
            assert!(o.body.contains(part), "overview lacks {part}");
        }
        // alipay was not run: its days are listed as not reconciled.
        assert!(o.body.contains("never_run"), "{}", o.body);

        // The list: its count is the committed files' (the JSON API of the same filter).
        let q = "from=2026-11-20&to=2026-11-22&channel=wechat";
        let api = ann.get(&format!("/api/differences?{q}")).await;
        assert_eq!(api.status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&api.body).expect("json");
        let total = json["page"]["total"].as_u64().expect("total");
        let expected: usize = ["2026-11-20", "2026-11-21", "2026-11-22"]
            .iter()
            .map(|d| {
                let f = crate::support::file_of(
                    &dir.join("output"),
                    "results",
                    "wechat",
                    d,
                    "diffs.parquet",
                );
                crate::support::read(&f)
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(total, expected as u64);
        assert!(total > 50, "{total}");
        let page = ann.get(&format!("/differences?{q}&size=20")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body
                .contains(&format!("<strong id=\"total\">{total}</strong>")),
            "{}",
            page.body
        );
        assert!(page.body.contains("id=\"next\""), "a second page");
        // A category filter, kept in the URL of the next page.
        let cat = ann
            .get(&format!("/differences?{q}&category=AMOUNT_MISMATCH&size=5"))
            .await;
        assert!(
            cat.body.contains("category=AMOUNT_MISMATCH"),
            "the filter stays in the links"
        );
        assert!(
            !cat.body.contains("<td>MISSING_IN_CHANNEL</td>"),
            "only the category asked for"
        );
        assert!(cat.body.contains("<td>AMOUNT_MISMATCH</td>"));

        // A bad filter is a 400 naming it.
        let bad = ann.get("/differences?from=2026-13-01").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.body.contains("from"), "{}", bad.body);

        // Detail: both sides, the bill row, the desk's form.
        let small = ann
            .get(&format!(
                "/differences?{q}&category=AMOUNT_MISMATCH&max=100&sort=amount"
            ))
            .await;
        let href = link(&small.body, "diff");
        let d = ann.get(&href).await;
        assert_eq!(d.status, StatusCode::OK, "{href}");
        for part in [
            "id=\"sides\"",
            "class=\"differs\"",
            "Bill row:",
            "id=\"ageing-key\"",
            "id=\"decide\"",
            "id=\"history\"",
        ] {
            assert!(d.body.contains(part), "detail lacks {part}");
        }
        let (csrf, version) = (d.input("csrf"), d.input("version"));
        assert_eq!(version, "0");

        // A form without the CSRF token is refused; so is one without a comment.
        let decide = format!("{href}/decide");
        let r = ann
            .post(
                &decide,
                &[("version", "0"), ("action", "write_off"), ("comment", "x")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = ann.decide(&href, &csrf, "0", "write_off", " ").await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert!(r.body.contains("a comment is required"), "{}", r.body);
        let r = ann.decide(&href, &csrf, "0", "burn_it", "x").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.body.contains("unknown action"), "{}", r.body);
        // Decided; the page shows it.
        let r = ann
            .decide(&href, &csrf, "0", "write_off", "below the cost of chasing")
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert!(r.location().ends_with("?flash=decided"), "{}", r.location());
        let d = ann.get(&r.location()).await;
        assert!(d.body.contains("Decision recorded."));
        assert!(
            d.body.contains("<td>write_off</td><td>ann</td>"),
            "{}",
            d.body
        );
        assert_eq!(d.input("version"), "1");
        // A second person on the page as it was: refused, shown the first decision.
        let r = ann.decide(&href, &csrf, "0", "ignore", "late").await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert!(
            r.body.contains("version 0, now 1") && r.body.contains("write_off by ann"),
            "{}",
            r.body
        );
        // The undecided filter leaves it out; the decided one holds it alone.
        let undecided: serde_json::Value = serde_json::from_str(
            &ann.get(&format!("/api/differences?{q}&decided=no"))
                .await
                .body,
        )
        .expect("json");
        assert_eq!(undecided["page"]["total"].as_u64(), Some(total - 1));
        let decided: serde_json::Value = serde_json::from_str(
            &ann.get(&format!("/api/differences?{q}&decided=yes"))
                .await
                .body,
        )
        .expect("json");
        assert_eq!(decided["page"]["total"].as_u64(), Some(1));

        // Assign, then the assignee filter finds it.
        let r = ann
            .post(
                &format!("{href}/assign"),
                &[("csrf", &csrf), ("version", "1"), ("assignee", "ada")],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let mine: serde_json::Value = serde_json::from_str(
            &ann.get(&format!("/api/differences?{q}&assignee=ada"))
                .await
                .body,
        )
        .expect("json");
        assert_eq!(mine["page"]["total"].as_u64(), Some(1));
        let r = ann
            .post(
                &format!("{href}/comment"),
                &[("csrf", &csrf), ("text", "asked the channel")],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert!(ann.get(&href).await.body.contains("asked the channel"));

        // Four eyes: above 100.00 the decision waits; its author cannot approve; ada can.
        let big = ann
            .get(&format!(
                "/differences?{q}&category=AMOUNT_MISMATCH&min=100.01&decided=no"
            ))
            .await;
        let big_href = link(&big.body, "diff");
        let r = ann
            .decide(&big_href, &csrf, "0", "channel_wins", "the bill is right")
            .await;
        assert!(r.location().ends_with("?flash=pending"), "{}", r.location());
        let page = ann.get(&big_href).await;
        assert!(page.body.contains("pending_approval"));
        assert!(
            !page.body.contains("class=\"approve\""),
            "the author is offered no approval"
        );
        let mut ada = Client::new(&server.base, "127.0.0.1");
        assert_eq!(
            ada.login("ada", "ada's long passphrase").await.status,
            StatusCode::SEE_OTHER
        );
        let page = ada.get(&big_href).await;
        let id = {
            let at = page
                .body
                .find("action=\"/decisions/")
                .expect("a review form");
            let rest = &page.body[at + 19..];
            rest[..rest.find('/').expect("/")].to_string()
        };
        let (acsrf, aversion) = (page.input("csrf"), page.input("version"));
        let r = ada
            .post(
                &format!("/decisions/{id}/review"),
                &[
                    ("csrf", &acsrf),
                    ("version", &aversion),
                    ("verdict", "approve"),
                    ("back", &big_href),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert!(
            ada.get(&big_href).await.body.contains("ada at "),
            "reviewed by ada"
        );

        // A viewer reads but may not decide.
        let mut vic = Client::new(&server.base, "127.0.0.1");
        vic.login("vic", "vic's long passphrase").await;
        let page = vic.get(&href).await;
        assert!(!page.body.contains("id=\"decide\""));
        let r = vic
            .post(
                &format!("{big_href}/comment"),
                &[("csrf", &page.input("csrf")), ("text", "me too")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert!(r.body.contains("a viewer may not do this"), "{}", r.body);

        // A token reads the API; a wrong one is 401.
        let mut script = Client::new(&server.base, "127.0.0.1");
        let r = script
            .bearer(&format!("/api/differences?{q}&size=1"), &token)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            script
                .bearer("/api/differences", "reckon_nope")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );

        // The proxy's header counts from the trusted proxy's address only.
        let mut elsewhere = Client::new(&server.base, "127.0.0.1");
        elsewhere.header = Some(("X-Remote-User".into(), "pat".into()));
        assert_eq!(elsewhere.get("/").await.status, StatusCode::SEE_OTHER);
        let mut proxy = Client::new(&server.base, "127.0.0.2");
        proxy.header = Some(("X-Remote-User".into(), "pat".into()));
        let r = proxy.get("/runs?from=2026-11-20&to=2026-11-22").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.contains("pat (resolver)"));
        proxy.header = Some(("X-Remote-User".into(), "mallory".into()));
        assert_eq!(
            proxy.get("/").await.status,
            StatusCode::SEE_OTHER,
            "not a known user"
        );

        // Runs: each day's state; a day's inputs with their hashes and its rejected rows.
        assert!(r.body.contains("reconciled") && r.body.contains("never_run"));
        let run = ann.get("/runs/wechat/2026-11-21").await;
        assert_eq!(run.status, StatusCode::OK);
        assert!(
            run.body.contains("<td>raw_bill</td>") && run.body.contains("<td>reconcile.sql</td>")
        );
        // The generated bill has a row the normalizer rejected: shown with its file and line.
        let rejected = &run.body[run.body.find("id=\"rejected\"").expect("the rejected rows")..];
        assert!(
            rejected.contains("<td>tradebill_20261121.csv</td><td class=\"n\">"),
            "a rejected row with its file and line: {rejected}"
        );

        // Logged out: the session is gone.
        let r = ann.post("/logout", &[("csrf", &csrf)]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(ann.get("/").await.status, StatusCode::SEE_OTHER);
        session
    });
    let session = session["reckon_desk=".len()..]
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    // No password, token or session in the log.
    let log = server.log();
    assert!(log.contains("logged in"), "{log}");
    for secret in [
        "ann's long passphrase",
        "ada's long passphrase",
        &token,
        &session,
    ] {
        assert!(!log.contains(secret), "the log holds a secret");
    }
}

impl Client {
    /// Posts `file` as a multipart upload with the form's other `fields`.
    pub async fn upload(&mut self, path: &str, fields: &[(&str, &str)], file: &[u8]) -> Answer {
        let boundary = "reckon-test-boundary-7c1f";
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"decisions\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        self.send(req).await
    }
}

fn total(json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    v["page"]["total"].as_u64().expect("total")
}

/// The text of the element with `id` (up to its next tag).
fn by_id(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[at + id.len() + 6..];
    rest[..rest.find('<').unwrap_or(rest.len())].to_string()
}

#[test]
fn bulk_decisions_and_the_export_import_round_trip() {
    use reckon::desk::exchange::{parse_csv, parse_xlsx, COLUMNS};

    let tmp = tempfile::tempdir().expect("tmp");
    let (cfg, _dir) = desk_days(tmp.path());
    let server = Server::start(&cfg, &tmp.path().join("serve.log"));
    runtime().block_on(async {
        let mut ann = Client::new(&server.base, "127.0.0.1");
        assert_eq!(
            ann.login("ann", "ann's long passphrase").await.status,
            StatusCode::SEE_OTHER
        );
        let q = "from=2026-11-20&to=2026-11-22&channel=wechat&max=100";
        let page = ann
            .get(&format!("/differences?{q}&decided=no&size=5"))
            .await;
        let csrf = page.input("csrf");

        // The selection: two ticked rows.
        let picks: Vec<String> = page
            .body
            .match_indices("name=\"pick\" value=\"")
            .take(2)
            .map(|(at, m)| {
                let rest = &page.body[at + m.len()..];
                rest[..rest.find('"').expect("quote")].replace("&#x2f;", "/")
            })
            .collect();
        assert_eq!(picks.len(), 2);
        let r = ann
            .post(
                "/differences/bulk",
                &[
                    ("csrf", &csrf),
                    ("filter", q),
                    ("expect", "0"),
                    ("scope", "selected"),
                    ("action", "ignore"),
                    ("comment", "test orders"),
                    ("pick", &picks[0]),
                    ("pick", &picks[1]),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(by_id(&r.body, "bulk-decided"), "2");

        // Everything a filter matches, when the count is still the one confirmed.
        let f = format!("{q}&category=AMOUNT_MISMATCH&decided=no");
        let n = total(&ann.get(&format!("/api/differences?{f}")).await.body);
        assert!(n > 1, "{n}");
        let wrong = (n + 1).to_string();
        let r = ann
            .bulk(&csrf, &f, &wrong, "all", "write_off", "small")
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert!(
            r.body.contains(&format!("matches {n} differences now")),
            "{}",
            r.body
        );
        let r = ann
            .post(
                "/differences/bulk",
                &[
                    ("csrf", &csrf),
                    ("filter", &f),
                    ("expect", &n.to_string()),
                    ("scope", "all"),
                    ("action", "write_off"),
                    ("comment", "small"),
                ],
            )
            .await;
        assert_eq!(by_id(&r.body, "bulk-decided"), n.to_string(), "{}", r.body);
        assert_eq!(
            total(&ann.get(&format!("/api/differences?{f}")).await.body),
            0
        );
        // A second time: nothing left to decide.
        let r = ann.bulk(&csrf, &f, "0", "all", "write_off", "small").await;
        assert_eq!(by_id(&r.body, "bulk-decided"), "0");

        // Export one day's undecided ones as CSV (over several days, a difference open on
        // each is a row of each): every one, with its version and empty action.
        let e = "from=2026-11-22&to=2026-11-22&channel=wechat&max=100&decided=no";
        let left = total(&ann.get(&format!("/api/differences?{e}")).await.body);
        let csv = ann.get(&format!("/differences/export.csv?{e}")).await;
        assert_eq!(csv.status, StatusCode::OK);
        assert!(csv.headers["content-disposition"]
            .to_str()
            .expect("a")
            .contains(".csv"));
        let mut reader = csv::Reader::from_reader(csv.body.as_bytes());
        assert_eq!(
            reader.headers().expect("header").iter().collect::<Vec<_>>(),
            COLUMNS.to_vec()
        );
        let mut rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.expect("row").iter().map(str::to_string).collect())
            .collect();
        assert_eq!(rows.len() as u64, left);
        assert!(rows.len() >= 6, "{}", rows.len());
        assert!(rows.iter().all(|r| r[9] == "0" && r[10].is_empty()));

        // A person fills in three, and makes four mistakes.
        let (action, comment) = (10, 11);
        for r in rows.iter_mut().take(3) {
            r[action] = "channel_wins".into();
            r[comment] = "the bill is right".into();
        }
        rows[3][action] = "burn_it".into();
        rows[3][comment] = "x".into();
        rows[4][action] = "ignore".into();
        rows[5][action] = "ignore".into();
        rows[5][comment] = "stale".into();
        rows[5][9] = "7".into();
        let mut unknown = rows[0].clone();
        unknown[0] = "no-such-difference".into();
        rows.push(unknown);
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(COLUMNS).expect("header");
        for r in &rows {
            w.write_record(r).expect("row");
        }
        let file = w.into_inner().expect("csv");
        assert_eq!(parse_csv(&file).expect("parses").len(), rows.len());

        let preview = ann
            .upload("/differences/import", &[("csrf", &csrf)], &file)
            .await;
        assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
        assert_eq!(by_id(&preview.body, "problems"), "4");
        let body = &preview.body;
        assert!(
            body.contains("<td class=\"n\">5</td>") && body.contains("unknown action"),
            "line 5: the action"
        );
        assert!(body.contains("a comment is required"), "line 6");
        assert!(body.contains("stale: exported at version 7"), "line 7");
        assert!(body.contains("unknown difference"), "the last line");
        assert!(body.contains("3 to decide"), "{body}");
        // Nothing happened yet.
        assert_eq!(
            total(&ann.get(&format!("/api/differences?{e}")).await.body),
            left
        );
        let carried = {
            let at = body
                .find("<textarea name=\"lines\" hidden>")
                .expect("carried");
            let rest = &body[at + 30..];
            html_unescape(&rest[..rest.find("</textarea>").expect("end")])
        };
        let applied = ann
            .post(
                "/differences/import/apply",
                &[("csrf", &csrf), ("lines", &carried)],
            )
            .await;
        assert!(
            applied.body.contains("Applied: 3 decided"),
            "{}",
            applied.body
        );
        assert_eq!(
            total(&ann.get(&format!("/api/differences?{e}")).await.body),
            left - 3
        );
        // The same file again changes nothing.
        let again = ann
            .upload("/differences/import", &[("csrf", &csrf)], &file)
            .await;
        assert!(
            again.body.contains("0 to decide · 3 already so"),
            "{}",
            again.body
        );
        let r = ann
            .post(
                "/differences/import/apply",
                &[("csrf", &csrf), ("lines", &carried)],
            )
            .await;
        assert!(r.body.contains("Applied: 0 decided"), "{}", r.body);
        assert_eq!(
            total(&ann.get(&format!("/api/differences?{e}")).await.body),
            left - 3
        );
        // Without the form's token, an upload is refused.
        let r = ann.upload("/differences/import", &[], &file).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);

        // Excel: the export reads back; a filled-in workbook imports.
        let xlsx = ann.get(&format!("/differences/export.xlsx?{e}")).await;
        assert_eq!(xlsx.status, StatusCode::OK);
        let bytes = reqwest::get(format!("{}/assets/desk.css", server.base))
            .await
            .expect("css")
            .bytes()
            .await
            .expect("b");
        assert!(!bytes.is_empty(), "assets need no login");
        let raw = ann_bytes(
            &server.base,
            &mut ann,
            &format!("/differences/export.xlsx?{e}"),
        )
        .await;
        let lines = parse_xlsx(&raw).expect("the workbook reads");
        assert_eq!(lines.len() as u64, left - 3);
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        for (c, h) in COLUMNS.iter().enumerate() {
            sheet.write_string(0, c as u16, *h).expect("cell");
        }
        let l = &lines[0];
        for (c, v) in [&l.diff_id, &l.channel, &l.bill_date].iter().enumerate() {
            sheet.write_string(1, c as u16, v.as_str()).expect("cell");
        }
        sheet
            .write_number(1, 9, 0)
            .expect("version as a number, as Excel keeps it");
        sheet.write_string(1, 10, "platform_wins").expect("cell");
        sheet
            .write_string(1, 11, "our order is right")
            .expect("cell");
        let filled = book.save_to_buffer().expect("xlsx");
        let preview = ann
            .upload("/differences/import", &[("csrf", &csrf)], &filled)
            .await;
        assert!(preview.body.contains("1 to decide"), "{}", preview.body);
    });
}

/// The body of an authenticated GET, as bytes.
async fn ann_bytes(base: &str, c: &mut Client, path: &str) -> Vec<u8> {
    let cookies: Vec<String> = c.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookies.join("; "))
        .send()
        .await
        .expect("get");
    r.bytes().await.expect("bytes").to_vec()
}

impl Client {
    /// Posts the detail page's decision form.
    pub async fn decide(
        &mut self,
        href: &str,
        csrf: &str,
        version: &str,
        action: &str,
        comment: &str,
    ) -> Answer {
        let form = [
            ("csrf", csrf),
            ("version", version),
            ("action", action),
            ("comment", comment),
        ];
        self.post(&format!("{href}/decide"), &form).await
    }

    /// Posts the list's bulk form for everything `filter` matches.
    pub async fn bulk(
        &mut self,
        csrf: &str,
        filter: &str,
        expect: &str,
        scope: &str,
        action: &str,
        comment: &str,
    ) -> Answer {
        let form = [
            ("csrf", csrf),
            ("filter", filter),
            ("expect", expect),
            ("scope", scope),
            ("action", action),
            ("comment", comment),
        ];
        self.post("/differences/bulk", &form).await
    }
}

/// Undoes askama's HTML escaping of a text.
fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn serve_without_users_exits_2_saying_how_to_add_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = generate(&tmp.path().join("d"), "2026-11-20", 1, 50, 3);
    let out = reckon()
        .args(["serve", "--config", cfg.to_str().expect("utf8")])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("reckon serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("desk-users") && err.contains("reckon desk user add"),
        "{err}"
    );
}
