//! `reckon cluster up|down`: a Ballista cluster of reckon's own scheduler and executors on
//! loopback, for trying `--engine df://…` on one machine and for the tests. `up` starts the
//! processes with logs and pid files in a folder, waits until the executors report ready, and
//! writes `cluster.json`; `down` stops exactly the processes that file names (each checked to
//! still be the binary it started, so a reused pid is left alone). Real deployments run the
//! binaries under their own supervisor (cluster/README.md).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// What `up` was asked for.
pub struct UpOptions {
    /// Where logs, pid files, work directories and `cluster.json` go.
    pub dir: PathBuf,
    /// Executors to start.
    pub executors: usize,
    /// Where `reckon-scheduler` and `reckon-executor` are; default: beside `reckon`.
    pub bin_dir: Option<PathBuf>,
    /// Each executor's `--vcores` (tasks at once).
    pub concurrent_tasks: usize,
    /// Each executor's `--memory-pool-size` in bytes (spilling past it).
    pub memory_pool_bytes: Option<u64>,
    /// How long to wait for the cluster to be ready.
    pub wait: Duration,
}

/// One started process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    /// `scheduler` or `executor-N`.
    pub name: String,
    /// Its binary's file name.
    pub binary: String,
    /// The process id.
    pub pid: u32,
    /// Its main port (the scheduler's gRPC, an executor's Flight).
    pub port: u16,
    /// An executor's health port.
    pub health_port: Option<u16>,
    /// Its log file.
    pub log: PathBuf,
}

/// `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    /// `df://127.0.0.1:PORT`, for `--engine`.
    pub url: String,
    /// The scheduler, then the executors.
    pub processes: Vec<Process>,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Other(format!("no free port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::Other(format!("no free port: {e}")))?
        .port())
}

fn alive(pid: u32, binary: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(binary))
        .unwrap_or(false)
}

/// The binary `name` in `bin_dir`, else beside the running `reckon`.
fn binary(bin_dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    let dir = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default(),
    };
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::Config(format!(
            "{} not found: build it with `cargo build -p reckon-cluster` (it goes beside reckon), or pass --bin-dir",
            p.display()
        )))
    }
}

/// Starts `bin` in its own working folder `cwd` (created): the processes of a cluster share
/// no folder, as on separate hosts.
fn spawn(
    bin: &Path,
    args: &[String],
    cwd: &Path,
    log: &Path,
    pid_file: &Path,
) -> Result<std::process::Child> {
    std::fs::create_dir_all(cwd).at(cwd)?;
    let out = std::fs::File::create(log).at(log)?;
    let err = out.try_clone().at(log)?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // Its own process group: a Ctrl-C in the terminal that ran `up` does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().at(bin)?;
    std::fs::write(pid_file, format!("{}\n", child.id())).at(pid_file)?;
    Ok(child)
}

/// Whether a child `up` started has exited (its status is collected, so no zombie is left).
fn exited(child: &mut std::process::Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// Whether `GET /readyz` on `port` answers 200.
fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let n = s.read(&mut head).unwrap_or(0);
    String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200")
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Starts a scheduler and `opts.executors` executors on loopback; returns the cluster.
pub fn up(opts: &UpOptions) -> Result<Cluster> {
    let state = opts.dir.join("cluster.json");
    if let Ok(c) = read(&opts.dir) {
        if c.processes.iter().any(|p| alive(p.pid, &p.binary)) {
            return Err(Error::Config(format!(
                "a cluster is already up at {} ({}): `reckon cluster down --dir {}` first",
                c.url,
                state.display(),
                opts.dir.display()
            )));
        }
    }
    std::fs::create_dir_all(&opts.dir).at(&opts.dir)?;
    // Each process runs in a folder of its own: paths handed to it (its work directory) must
    // not be relative to this one.
    let dir = std::fs::canonicalize(&opts.dir).at(&opts.dir)?;
    let opts = &UpOptions {
        dir,
        bin_dir: opts.bin_dir.clone(),
        ..*opts
    };
    let scheduler_bin = binary(opts.bin_dir.as_deref(), "reckon-scheduler")?;
    let executor_bin = binary(opts.bin_dir.as_deref(), "reckon-executor")?;
    let mut started: Vec<Process> = Vec::new();
    let result = start_all(opts, &scheduler_bin, &executor_bin, &mut started);
    match result {
        Ok(url) => {
            let c = Cluster {
                url,
                processes: started,
            };
            let bytes = serde_json::to_vec_pretty(&c)?;
            crate::store::write_atomic(&state, &bytes)?;
            Ok(c)
        }
        Err(e) => {
            // Leave nothing running that nobody knows of.
            stop(&started);
            Err(e)
        }
    }
}

fn start_all(
    opts: &UpOptions,
    scheduler_bin: &Path,
    executor_bin: &Path,
    started: &mut Vec<Process>,
) -> Result<String> {
    let deadline = Instant::now() + opts.wait;
    let port = free_port()?;
    let log = opts.dir.join("scheduler.log");
    let args: Vec<String> = [
        "--bind-host",
        "127.0.0.1",
        "--external-host",
        "127.0.0.1",
        "--bind-port",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut scheduler = spawn(
        scheduler_bin,
        &args,
        &opts.dir.join("scheduler"),
        &log,
        &opts.dir.join("scheduler.pid"),
    )?;
    let pid = scheduler.id();
    started.push(Process {
        name: "scheduler".into(),
        binary: "reckon-scheduler".into(),
        pid,
        port,
        health_port: None,
        log: log.clone(),
    });
    while !listening(port) {
        if Instant::now() > deadline || exited(&mut scheduler) {
            return Err(Error::Other(format!(
                "the scheduler did not start listening on 127.0.0.1:{port}; see {}",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut children = Vec::new();
    for i in 1..=opts.executors {
        let name = format!("executor-{i}");
        let (flight, grpc, health) = (free_port()?, free_port()?, free_port()?);
        let work = opts.dir.join(&name).join("work");
        std::fs::create_dir_all(&work).at(&work)?;
        let log = opts.dir.join(format!("{name}.log"));
        let mut args: Vec<String> = vec![
            "--bind-host".into(),
            "127.0.0.1".into(),
            "--external-host".into(),
            "127.0.0.1".into(),
            "--bind-port".into(),
            flight.to_string(),
            "--bind-grpc-port".into(),
            grpc.to_string(),
            "--bind-health-port".into(),
            health.to_string(),
            "--scheduler-host".into(),
            "127.0.0.1".into(),
            "--scheduler-port".into(),
            port.to_string(),
            "--scheduler-connect-timeout-seconds".into(),
            "30".into(),
            "--work-dir".into(),
            work.display().to_string(),
            "--vcores".into(),
            opts.concurrent_tasks.max(1).to_string(),
            "--id".into(),
            name.clone(),
        ];
        if let Some(bytes) = opts.memory_pool_bytes {
            args.push("--memory-pool-size".into());
            args.push(bytes.to_string());
        }
        let child = spawn(
            executor_bin,
            &args,
            &opts.dir.join(&name),
            &log,
            &opts.dir.join(format!("{name}.pid")),
        )?;
        let pid = child.id();
        children.push(child);
        started.push(Process {
            name,
            binary: "reckon-executor".into(),
            pid,
            port: flight,
            health_port: Some(health),
            log,
        });
    }
    for (p, child) in started
        .iter()
        .filter(|p| p.health_port.is_some())
        .zip(children.iter_mut())
    {
        let h = p.health_port.unwrap_or_default();
        while !ready(h) {
            if Instant::now() > deadline || exited(child) {
                return Err(Error::Other(format!(
                    "{} did not become ready (health port {h}); see {}",
                    p.name,
                    p.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(format!("df://127.0.0.1:{port}"))
}

/// The cluster `up` wrote in `dir`.
pub fn read(dir: &Path) -> Result<Cluster> {
    let path = dir.join("cluster.json");
    let bytes = std::fs::read(&path).at(&path)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Stops `processes` (executors first): SIGTERM, then SIGKILL after 10 s. A pid that is no
/// longer the binary started is left alone. Returns what was stopped.
fn stop(processes: &[Process]) -> Vec<String> {
    let mut stopped = Vec::new();
    for p in processes.iter().rev() {
        if !alive(p.pid, &p.binary) {
            continue;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &p.pid.to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while alive(p.pid, &p.binary) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(p.pid, &p.binary) {
            let _ = Command::new("kill")
                .args(["-KILL", &p.pid.to_string()])
                .status();
        }
        stopped.push(format!("{} (pid {})", p.name, p.pid));
    }
    stopped
}

/// Stops the cluster `up` started in `dir` and removes its state (the logs stay).
pub fn down(dir: &Path) -> Result<Vec<String>> {
    let c = read(dir).map_err(|_| {
        Error::Config(format!(
            "no cluster in {} (no cluster.json): nothing to stop",
            dir.display()
        ))
    })?;
    let stopped = stop(&c.processes);
    for p in &c.processes {
        let _ = std::fs::remove_file(dir.join(format!("{}.pid", p.name)));
        let _ = std::fs::remove_dir_all(dir.join(&p.name));
    }
    std::fs::remove_file(dir.join("cluster.json")).at(dir.join("cluster.json"))?;
    Ok(stopped)
}
