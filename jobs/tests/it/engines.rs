//! The same SQL and UDFs give identical results on the embedded engine and on Ballista
//! standalone (an in-process scheduler and executor).

use super::support::{self, file_of};

#[test]
fn standalone_ballista_matches_local() {
    let days = ["2026-11-20", "2026-11-21"];
    let (a, b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let ca = support::generate(a.path(), days[0], 2, 800, 11);
    let cb = support::generate(b.path(), days[0], 2, 800, 11);
    for day in days {
        let (code, local, err) = support::run_day(&ca, day, &["--engine", "local"]);
        assert_eq!(code, 0, "{local} {err}");
        let (code, standalone, err) = support::run_day(&cb, day, &["--engine", "standalone"]);
        assert_eq!(code, 0, "{standalone} {err}");
        assert_eq!(
            local["channels"], standalone["channels"],
            "summaries differ on {day}"
        );
        for ch in ["alipay", "wechat"] {
            for (ar, file) in [
                ("results", "diffs.parquet"),
                ("results", "summary.json"),
                ("carryover", "part-0.parquet"),
            ] {
                let fa =
                    std::fs::read(file_of(&a.path().join("output"), ar, ch, day, file)).expect("a");
                let fb =
                    std::fs::read(file_of(&b.path().join("output"), ar, ch, day, file)).expect("b");
                assert!(
                    fa == fb,
                    "{ar}/{ch}/{day}/{file} differs between local and standalone"
                );
            }
        }
    }
}

/// A cluster started by `reckon cluster up`, stopped (and checked stopped) on drop.
struct Cluster {
    dir: std::path::PathBuf,
    info: serde_json::Value,
}

impl Cluster {
    fn up(dir: &std::path::Path, executors: usize) -> Cluster {
        Cluster::up_with(dir, executors, &[])
    }

    /// [`Cluster::up`] with `env` in every process's environment.
    fn up_with(dir: &std::path::Path, executors: usize, env: &[(&str, String)]) -> Cluster {
        let o = support::reckon()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args([
                "cluster",
                "up",
                "--dir",
                dir.to_str().expect("utf8"),
                "--executors",
                &executors.to_string(),
            ])
            .output()
            .expect("cluster up");
        assert!(
            o.status.success(),
            "cluster up: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let info: serde_json::Value = serde_json::from_str(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .expect("json"),
        )
        .expect("json");
        Cluster {
            dir: dir.to_path_buf(),
            info,
        }
    }

    fn url(&self) -> String {
        self.info["url"].as_str().expect("url").to_string()
    }

    fn pids(&self) -> Vec<(String, u32)> {
        self.info["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name").to_string(),
                    p["pid"].as_u64().expect("pid") as u32,
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = support::run(&["cluster", "down", "--dir", self.dir.to_str().unwrap_or("")]);
    }
}

/// A running process (a zombie no one reaped has an empty command line).
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The files a reader relies on for `channel` on `day` (diffs, summary, carry-over).
fn outputs(root: &std::path::Path, day: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for ch in ["alipay", "wechat"] {
        for (ar, file) in [
            ("results", "diffs.parquet"),
            ("results", "summary.json"),
            ("carryover", "part-0.parquet"),
        ] {
            out.push(std::fs::read(file_of(root, ar, ch, day, file)).unwrap_or_default());
        }
    }
    out
}

/// Every file below `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_started_two_executor_cluster_matches_local_and_survives_faults() {
    let tmp = tempfile::tempdir().expect("tmp");
    let days = ["2026-11-20", "2026-11-21"];
    let local = tmp.path().join("local");
    let on_cluster = tmp.path().join("cluster");
    let cl = support::generate(&local, days[0], 2, 3000, 17);
    let cc = support::generate(&on_cluster, days[0], 2, 3000, 17);
    let cluster = Cluster::up(&tmp.path().join("cl"), 2);
    let url = cluster.url();
    for p in cluster.pids() {
        assert!(alive(p.1), "{} is not running", p.0);
    }

    // The generated days on both engines: the same summaries and the same bytes.
    for day in days {
        let (code, a, err) = support::run_day(&cl, day, &["--engine", "local"]);
        assert_eq!(code, 0, "{a} {err}");
        let (code, b, err) = support::run_day(&cc, day, &["--engine", &url]);
        assert_eq!(code, 0, "{b} {err}");
        assert_eq!(a["channels"], b["channels"], "summaries differ on {day}");
        assert!(
            outputs(&local.join("output"), day) == outputs(&on_cluster.join("output"), day),
            "outputs differ between local and the cluster on {day}"
        );
    }
    // Both executors did work.
    for i in [1, 2] {
        let log =
            std::fs::read_to_string(tmp.path().join(format!("cl/executor-{i}.log"))).expect("log");
        assert!(log.contains("task"), "executor-{i} ran no task:\n{log}");
    }

    // An executor killed in the middle of a reconcile: the run finishes on the other one or
    // fails with the engine's error; nothing partial is visible; a rerun gives the same
    // results.
    let before = outputs(&on_cluster.join("output"), days[1]);
    let mut run = support::reckon()
        .args([
            "run",
            "--config",
            cc.to_str().expect("utf8"),
            "--date",
            days[1],
            "--channel",
            "alipay",
            "--engine",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let staging = on_cluster.join("output/_scratch/staging");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let victim = cluster
        .pids()
        .into_iter()
        .find(|p| p.0 == "executor-1")
        .expect("executor-1")
        .1;
    let mut killed = false;
    while std::time::Instant::now() < deadline {
        let reconciling = std::fs::read_dir(&staging)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("-reconcile-"))
            })
            .unwrap_or(false);
        if reconciling {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &victim.to_string()])
                .status();
            killed = true;
            break;
        }
        if run.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let out = run.wait_with_output().expect("run");
    assert!(
        killed,
        "the run ended before its reconcile could be interrupted"
    );
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(code == 0 || code == 1, "exit {code}: {stdout}");
    if code == 1 {
        assert!(stdout.contains("\"stage\":\"reconcile\""), "{stdout}");
    }
    // Whatever happened, a reader sees whole files only. The inputs did not change, so a run
    // that finished on the other executor wrote the same bytes, and one that failed left the
    // previous results in place: either way the published files are exactly the earlier ones.
    let seen = outputs(&on_cluster.join("output"), days[1]);
    assert!(
        seen == before,
        "the published results changed (exit {code}): a partial or different output is visible"
    );
    // And nothing half-written sits beside them: every file of the day's areas is one a
    // manifest names (the abandoned attempt's folder goes at the next run).
    let stray = support::stray_files(&on_cluster.join("output"), "alipay", days[1]);
    assert!(
        stray
            .iter()
            .all(|f| !f.starts_with("results/") && !f.starts_with("carryover/"))
            || code == 1,
        "{stray:?}"
    );
    // The rerun, on the executor that is left, gives the results of the embedded engine.
    let (code, b, err) = support::run_day(&cc, days[1], &["--engine", &url]);
    assert_eq!(code, 0, "{b} {err}");
    assert!(
        outputs(&on_cluster.join("output"), days[1]) == outputs(&local.join("output"), days[1])
    );
    // The executors' routed parts were read and removed, the killed attempt's with them.
    let parts: Vec<_> = walk(&on_cluster.join("output/_parts"));
    assert!(parts.is_empty(), "routed parts left behind: {parts:?}");

    // `down` stops exactly what `up` started.
    let pids = cluster.pids();
    let o = support::run(&[
        "cluster",
        "down",
        "--dir",
        tmp.path().join("cl").to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (name, pid) in pids {
        assert!(!alive(pid), "{name} still runs after down");
    }
    assert!(!tmp.path().join("cl/cluster.json").exists());
}

#[test]
fn an_unreachable_scheduler_is_exit_1_with_nothing_published() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = support::generate(tmp.path(), "2026-11-20", 1, 200, 3);
    let (code, json, err) = support::run_day(&cfg, "2026-11-20", &["--engine", "df://127.0.0.1:1"]);
    assert_eq!(code, 1, "{json} {err}");
    assert!(
        format!("{json}{err}").contains("cannot reach the Ballista scheduler at df://127.0.0.1:1"),
        "{json} {err}"
    );
    assert!(!tmp.path().join("output/results").exists());
    assert!(!tmp.path().join("output/normalized").exists());
}

#[test]
fn a_cluster_with_no_shared_disk_reads_and_writes_s3_like_the_embedded_engine() {
    use super::storage::{committed, mirror, moto, on_s3};
    let Some(s3) = moto("reckon-cluster") else {
        return;
    };
    let env = s3.env();
    let tmp = tempfile::tempdir().expect("tmp");
    let days = ["2026-11-20", "2026-11-21"];
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let cl = support::generate(&local, days[0], 2, 2000, 29);
    let cr = support::generate(&remote, days[0], 2, 2000, 29);
    on_s3(&cr, &s3.bucket, "shared-nothing");
    // Every process in a folder of its own; what they share is the S3 server.
    let cluster = Cluster::up_with(&tmp.path().join("cl"), 2, &env);
    let url = cluster.url();
    let client_dir = tmp.path().join("client");
    std::fs::create_dir_all(&client_dir).expect("client dir");
    let mut cwds = vec![client_dir.clone()];
    for (name, pid) in cluster.pids() {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
        assert!(!cwds.contains(&cwd), "{name} shares {}", cwd.display());
        cwds.push(cwd);
    }
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for day in days {
        let (code, a, err) = support::run_day(&cl, day, &["--engine", "local"]);
        assert_eq!(code, 0, "{a} {err}");
        let out = support::reckon()
            .current_dir(&client_dir)
            .envs(env_ref.iter().copied())
            .args(["run", "--config", cr.to_str().expect("utf8"), "--date", day])
            .args(["--engine", &url])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in [1, 2] {
        let log =
            std::fs::read_to_string(tmp.path().join(format!("cl/executor-{i}.log"))).expect("log");
        assert!(log.contains("task"), "executor-{i} ran no task:\n{log}");
    }
    let got = tmp.path().join("mirror");
    mirror(&s3, "shared-nothing", &got);
    for ch in ["alipay", "wechat"] {
        for day in days {
            assert!(
                committed(&local.join("output"), ch, day) == committed(&got, ch, day),
                "{ch} {day}: the cluster on S3 and the embedded engine differ"
            );
        }
    }
    assert!(
        !remote.join("output").exists(),
        "nothing went to a local output folder"
    );
}
