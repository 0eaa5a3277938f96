//! The review desk in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromium-driver), against `reckon serve` on generated, reconciled days. Screenshots of
//! each page go to `$CARGO_TARGET_TMPDIR/desk-browser/`. In CI a browser that cannot start
//! fails the test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::services::unavailable;
use crate::web::{desk_days, Server};

/// A running chromedriver in its own process group; the group (the driver and every
/// Chromium it started) is killed when dropped, so a failing test leaves no browser behind.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // kill(1) with a negative pid: every process of the group the driver leads.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs Debian's chromium and chromium-driver when missing (as root), and starts the
/// driver on a free port.
fn driver() -> Result<Driver, String> {
    let have = |b: &str| Path::new(b).exists();
    if !have("/usr/bin/chromedriver") || !have("/usr/bin/chromium") {
        if !is_root() {
            return Err("no chromium/chromedriver, and not root to install them".into());
        }
        let ok = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null"])
            .status()
            .map_err(|e| e.to_string())?;
        if !ok.success() {
            return Err("apt-get install chromium chromium-driver failed".into());
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut cmd = Command::new("/usr/bin/chromedriver");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("chromedriver: {e}"))?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("chromedriver did not listen within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(driver)
}

/// A new headless Chromium window.
async fn browser(driver: &Driver) -> Result<Client, String> {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000"
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        return Err("capabilities".into());
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .map_err(|e| format!("a Chromium session: {e}"))
}

/// Saves a screenshot of `c` as `name`.png.
async fn shot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

/// Clicks `css` on `c` and waits until the page it loads has replaced this one (the old
/// document's root goes stale): a form's POST and its redirect are not always awaited by the
/// click itself, and the next read must not see the old page.
async fn click_and_load(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.expect("the page");
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .expect("click");
    let start = std::time::Instant::now();
    while old.tag_name().await.is_ok() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "clicking {css} loaded no new page in 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn login(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    let field = |id: &'static str| c.find(Locator::Id(id));
    field("user")
        .await
        .expect("user")
        .send_keys(user)
        .await
        .expect("type");
    field("password")
        .await
        .expect("pw")
        .send_keys(password)
        .await
        .expect("type");
    click_and_load(c, "#login").await;
    assert!(
        text(c, "#who").await.starts_with(user),
        "{user} is logged in"
    );
}

/// Opens the first difference of the list at `query`; its URL.
async fn open_first(c: &Client, base: &str, query: &str) -> String {
    c.goto(&format!("{base}/differences?{query}"))
        .await
        .expect("list");
    click_and_load(c, "a.diff").await;
    c.current_url().await.expect("url").to_string()
}

async fn decide(c: &Client, action: &str, comment: &str) {
    c.find(Locator::Id("action"))
        .await
        .expect("action")
        .select_by_value(action)
        .await
        .expect("choose");
    c.find(Locator::Id("comment"))
        .await
        .expect("comment")
        .send_keys(comment)
        .await
        .expect("type");
    click_and_load(c, "#submit-decision").await;
}

#[test]
fn a_person_logs_in_filters_opens_and_decides_in_chromium() {
    let driver = match driver() {
        Ok(d) => d,
        Err(why) => return unavailable("Chromium and chromium-driver", &why),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let (cfg, _dir) = desk_days(tmp.path());
    crate::web::add_user(&cfg, "bea", "resolver", Some("bea's long passphrase"));
    let server = Server::start(&cfg, &tmp.path().join("serve.log"));
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("desk-browser");
    std::fs::create_dir_all(&shots).expect("screenshots folder");
    let base = server.base.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ann = match browser(&driver).await {
            Ok(c) => c,
            Err(why) => return unavailable("Chromium", &why),
        };
        login(&ann, &base, "ann", "ann's long passphrase").await;
        ann.goto(&format!("{base}/?to=2026-11-22&days=3"))
            .await
            .expect("overview");
        assert!(text(&ann, "#channel-wechat h2").await.contains("wechat"));
        shot(&ann, &shots, "01-overview").await;

        // Filter by category in the form: the filter lands in the URL, the count shrinks.
        ann.goto(&format!("{base}/differences?from=2026-11-20&to=2026-11-22"))
            .await
            .expect("list");
        let all: u64 = text(&ann, "#total").await.parse().expect("count");
        ann.find(Locator::Id("category"))
            .await
            .expect("category")
            .select_by_value("AMOUNT_MISMATCH")
            .await
            .expect("choose");
        click_and_load(&ann, "#apply").await;
        let url = ann.current_url().await.expect("url").to_string();
        assert!(url.contains("category=AMOUNT_MISMATCH"), "{url}");
        let some: u64 = text(&ann, "#total").await.parse().expect("count");
        assert!(some > 0 && some < all, "{some} of {all}");
        shot(&ann, &shots, "02-differences").await;

        // Open one: the sides, the meaning of the chosen action shown before submitting.
        let small = "from=2026-11-20&to=2026-11-22&category=AMOUNT_MISMATCH&max=100&decided=no";
        let one = open_first(&ann, &base, small).await;
        assert!(one.contains("/difference/wechat/"), "{one}");
        ann.find(Locator::Id("action"))
            .await
            .expect("action")
            .select_by_value("supported_timing")
            .await
            .expect("choose");
        let meaning = text(&ann, "#meaning").await;
        assert!(meaning.contains("expected on a later day"), "{meaning}");
        shot(&ann, &shots, "03-detail").await;
        decide(&ann, "write_off", "below the cost of chasing").await;
        assert_eq!(text(&ann, "#flash").await, "Decision recorded.");
        assert!(text(&ann, "#timeline").await.contains("write_off"));
        shot(&ann, &shots, "04-decided").await;

        // Two people on one difference: the second is told, and sees the first decision.
        let bea = browser(&driver).await.expect("a second window");
        login(&bea, &base, "bea", "bea's long passphrase").await;
        let other = open_first(&ann, &base, small).await;
        assert_ne!(
            other, one,
            "the undecided filter moved past the decided one"
        );
        bea.goto(&other).await.expect("the same difference");
        decide(&ann, "ignore", "a test order").await;
        decide(&bea, "platform_wins", "our order is right").await;
        let refusal = text(&bea, "#refusal").await;
        assert!(
            refusal.contains("changed by someone else") && refusal.contains("ignore by ann"),
            "{refusal}"
        );
        shot(&bea, &shots, "05-collision").await;

        // Four eyes: a large one waits for an approver; ada approves it.
        let big = "from=2026-11-20&to=2026-11-22&category=AMOUNT_MISMATCH&min=100.01&decided=no";
        let large = open_first(&ann, &base, big).await;
        decide(&ann, "channel_wins", "the bill is right").await;
        assert!(text(&ann, "#flash").await.contains("waits for an approver"));
        let ada = browser(&driver).await.expect("a third window");
        login(&ada, &base, "ada", "ada's long passphrase").await;
        ada.goto(&large).await.expect("the pending decision");
        shot(&ada, &shots, "06-pending").await;
        click_and_load(&ada, "button.approve").await;
        assert!(text(&ada, "#flash").await.contains("approved"));
        assert!(text(&ada, "#timeline .status").await.contains("effective"));

        ada.goto(&format!("{base}/runs?from=2026-11-20&to=2026-11-22"))
            .await
            .expect("runs");
        assert!(text(&ada, "#runs").await.contains("reconciled"));
        shot(&ada, &shots, "07-runs").await;
        for c in [ann, bea, ada] {
            let _ = c.close().await;
        }
    });
    eprintln!("screenshots in {}", shots.display());
}
