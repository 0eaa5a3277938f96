//! Object storage as reckon's home (#18): the storage root on an S3 server for every stage and
//! command, a day that commits whole (one pointer, version folders), crash safety at every
//! named point of the commit, DuckDB reading the committed days straight from S3, and the
//! lease between processes on object storage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::services::{unavailable, venv, S3};
use super::support::{self, area, file_of, generate, run_day_env, stray_files};

const DAY: &str = "2026-11-20";
const NEXT: &str = "2026-11-21";

/// Every object under `prefix` of the bucket, downloaded into `to` (read with object_store,
/// not with reckon).
pub(super) fn mirror(s3: &S3, prefix: &str, to: &Path) {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&s3.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&s3.bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .expect("store");
        let base = object_store::path::Path::from(prefix);
        let all: Vec<_> = store.list(Some(&base)).try_collect().await.expect("list");
        for m in all {
            let rel: Vec<String> = m
                .location
                .prefix_match(&base)
                .expect("under the prefix")
                .map(|p| p.as_ref().to_string())
                .collect();
            let dest = to.join(rel.join("/"));
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("dir");
            let bytes = store
                .get(&m.location)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes");
            std::fs::write(&dest, &bytes).expect("write");
        }
    });
}

/// The committed files of a channel-day by area and name, with their bytes.
pub(super) fn committed(root: &Path, channel: &str, date: &str) -> BTreeMap<String, Vec<u8>> {
    let c = pointer_of(root, channel, date);
    let mut out = BTreeMap::new();
    for f in c["files"].as_array().expect("files") {
        let path = f["path"].as_str().expect("path");
        let bytes = std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        // Every file the pointer names is whole and is what it says.
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            f["sha256"].as_str().expect("sha256"),
            "{path}"
        );
        let area = path.split('/').next().expect("area");
        let name = path.rsplit('/').next().expect("name");
        // fetch.json records when the bill was fetched: not an output.
        if name != "fetch.json" {
            out.insert(format!("{area}/{name}"), bytes);
        }
    }
    out
}

pub(super) fn on_s3(config: &Path, bucket: &str, prefix: &str) {
    let text = std::fs::read_to_string(config).expect("config");
    let text = text.replace(
        "storage_root = \"output\"",
        &format!("storage_root = \"s3://{bucket}/{prefix}\""),
    );
    assert!(text.contains("s3://"), "the generated config changed");
    std::fs::write(config, text).expect("config");
}

fn env_of(s3: &S3) -> Vec<(&'static str, String)> {
    s3.env()
}

/// A moto server for a test, or `None` when it cannot start (outside CI).
pub(super) fn moto(bucket: &str) -> Option<S3> {
    match S3::start(bucket) {
        Ok(s) => Some(s),
        Err(why) => {
            unavailable("an S3-compatible server (moto)", &why);
            None
        }
    }
}

/// `reckon ARGS` with the S3 server's environment, which must exit `code` (its output is in
/// the failure message); returns what it wrote.
fn exits(env: &[(&'static str, String)], args: &[&str], code: i32) -> std::process::Output {
    let out = with_env(env, args).output().expect("reckon runs");
    assert_eq!(
        out.status.code(),
        Some(code),
        "reckon {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `reckon status --json` for the config `c` on `date`.
fn status_of(env: &[(&'static str, String)], c: &str, date: &str) -> serde_json::Value {
    let out = exits(env, &["status", "--config", c, "--date", date, "--json"], 0);
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `reckon ARGS` with the S3 server's environment.
fn with_env(env: &[(&'static str, String)], args: &[&str]) -> std::process::Command {
    let mut c = support::reckon();
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).args(args);
    c
}

fn run_env(config: &Path, date: &str, env: &[(&'static str, String)]) -> serde_json::Value {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, json, err) = run_day_env(config, date, &[], &env);
    assert_eq!(code, 0, "{json}\n{err}");
    json
}

#[test]
fn every_stage_and_command_runs_on_s3_and_a_day_commits_whole() {
    let Some(s3) = moto("reckon-root") else {
        return;
    };
    let env = env_of(&s3);
    let tmp = tempfile::tempdir().expect("tmp");
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let local_cfg = generate(&local, DAY, 2, 600, 31);
    let remote_cfg = generate(&remote, DAY, 2, 600, 31);
    on_s3(&remote_cfg, &s3.bucket, "prod");
    for day in [DAY, NEXT] {
        let a = run_env(&local_cfg, day, &[]);
        let b = run_env(&remote_cfg, day, &env);
        for ch in 0..2 {
            assert_eq!(
                a["channels"][ch]["run_id"], b["channels"][ch]["run_id"],
                "{a}\n{b}"
            );
        }
    }
    // What the S3 root holds, read with object_store: the same committed bytes as on disk,
    // and nothing a manifest does not name.
    let got = tmp.path().join("mirror");
    mirror(&s3, "prod", &got);
    let on_disk = local.join("output");
    for ch in ["alipay", "wechat"] {
        for day in [DAY, NEXT] {
            let (want, have) = (committed(&on_disk, ch, day), committed(&got, ch, day));
            assert_eq!(
                want.keys().collect::<Vec<_>>(),
                have.keys().collect::<Vec<_>>()
            );
            for (k, v) in &want {
                assert!(have[k] == *v, "{ch} {day} {k} differs between S3 and disk");
            }
            assert_eq!(stray_files(&got, ch, day), Vec::<String>::new());
        }
    }
    assert!(
        !remote.join("output").exists(),
        "nothing was written to a local output folder"
    );

    // A bucket that is not there is a configuration error that names it, not a retry.
    let nowhere = tmp.path().join("nowhere.toml");
    let text = std::fs::read_to_string(&remote_cfg).expect("config");
    let text = text.replace(
        &format!("s3://{}/prod", s3.bucket),
        "s3://reckon-not-made/prod",
    );
    std::fs::write(&nowhere, text).expect("config");
    let args = [
        "run",
        "--config",
        nowhere.to_str().expect("utf8"),
        "--date",
        DAY,
    ];
    let said = json_of(&exits(&env, &args, 2));
    for ch in said["channels"].as_array().expect("channels") {
        let err = ch["error"].as_str().unwrap_or_default();
        assert!(
            err.contains("the bucket \"reckon-not-made\" does not exist"),
            "{said}"
        );
    }

    // The other commands read the S3 root too.
    let cfg = remote_cfg.to_str().expect("utf8");
    let out = exits(
        &env,
        &["report", "--config", cfg, "--date", DAY, "--hourly"],
        0,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alipay 2026-11-20") && text.contains("MATCHED"),
        "{text}"
    );
    for s in status_of(&env, cfg, DAY).as_array().expect("array") {
        assert_eq!(s["status"], "reconciled", "{s}");
        assert!(s["committed"]["run_id"].is_string(), "{s}");
    }
    let out = exits(
        &env,
        &["backfill", "--config", cfg, "--from", DAY, "--to", NEXT],
        0,
    );
    let last = String::from_utf8_lossy(&out.stdout);
    assert!(
        last.contains("skipped"),
        "finished days are skipped: {last}"
    );
    exits(&env, &["sql", "check", "--config", cfg], 0);

    // Stage by stage on one host: normalize reads the bill fetch just uploaded from the local
    // scratch cache, not from the bucket, and reconcile the normalized bill and the snapshot
    // normalize and collect wrote; a reconcile on another host (another scratch folder) reads
    // them from the bucket. Every way commits the same bytes.
    let elsewhere = tmp.path().join("elsewhere.toml");
    let text = std::fs::read_to_string(&remote_cfg).expect("config");
    let scratch = tmp.path().join("other-host-scratch");
    std::fs::write(
        &elsewhere,
        format!(
            "scratch_dir = {:?}\n{text}",
            scratch.to_str().expect("utf8")
        ),
    )
    .expect("config");
    let other = elsewhere.to_str().expect("utf8");
    let steps = [
        ("fetch", cfg, None),
        ("normalize", cfg, Some("reading the bill this host fetched")),
        ("collect", cfg, None),
        ("reconcile", other, None),
        ("reconcile", cfg, Some("read from the scratch cache")),
    ];
    let mut results = Vec::new();
    for (stage, config, said) in steps {
        let args = ["stage", stage, "--config", config, "--date", DAY];
        let out = with_env(&env, &[&args[..], &["--channel", "alipay"]].concat())
            .env("RECKON_LOG", "info")
            .output()
            .expect("stage");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stage}: {err}");
        match said {
            Some(said) => assert!(err.contains(said), "{stage} read from the bucket: {err}"),
            None => assert!(
                !err.contains("read from the scratch cache"),
                "{stage} on {config}: {err}"
            ),
        }
        if stage == "reconcile" {
            let m = json_of(&out);
            results.push(m["stages"][0]["files"].clone());
        }
    }
    assert_eq!(
        results[0], results[1],
        "the cached inputs gave other results"
    );
    // A cache of no budget keeps nothing: the host's next stage reads the bill from the bucket.
    let uncached = remote_cfg.with_file_name("uncached.toml");
    std::fs::write(
        &uncached,
        format!(
            "scratch_dir = {:?}\nscratch_cache_mb = 0\n{text}",
            tmp.path().join("uncached-scratch").to_str().expect("utf8")
        ),
    )
    .expect("config");
    let cache = tmp.path().join("uncached-scratch/cache");
    for (stage, said, not) in [
        ("fetch", "it would go past scratch_cache_mb", "no such line"),
        ("normalize", "", "reading the bill this host fetched"),
    ] {
        let args = ["stage", stage, "--config", uncached.to_str().expect("utf8")];
        let out = with_env(
            &env,
            &[&args[..], &["--date", DAY, "--channel", "alipay"]].concat(),
        )
        .env("RECKON_LOG", "info")
        .output()
        .expect("stage");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stage}: {err}");
        assert!(err.contains(said), "{stage} kept the bill: {err}");
        assert!(!err.contains(not), "{stage} read a cached bill: {err}");
        let held = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
        assert_eq!(held, 0, "{stage} left files in {}", cache.display());
    }
    let again = tmp.path().join("mirror-again");
    mirror(&s3, "prod", &again);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(area(&again, "runs", "alipay", DAY).join("manifest.json"))
            .expect("manifest"),
    )
    .expect("json");
    let was = pointer_of(&got, "alipay", DAY);
    for stage in ["normalize", "reconcile"] {
        assert_eq!(
            m["stages"][stage]["files"], was["manifest"]["stages"][stage]["files"],
            "the {stage} stage by stage wrote other files"
        );
    }

    // The demo, with its outputs on S3.
    let demo = tmp.path().join("demo");
    let dir = demo.to_str().expect("utf8");
    let storage = ["--rows", "300", "--storage", "s3://reckon-root/demo"];
    let out = exits(&env, &[&["demo", "--dir", dir][..], &storage].concat(), 0);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("outputs under s3://reckon-root/demo"),
        "{said}"
    );
    let shown = tmp.path().join("demo-mirror");
    mirror(&s3, "demo", &shown);
    for ch in ["alipay", "wechat"] {
        assert!(
            !committed(&shown, ch, DAY).is_empty(),
            "{ch}: the demo committed nothing on S3"
        );
    }
    assert!(
        !demo.join("output").exists(),
        "the demo wrote outputs locally"
    );

    // DuckDB reads the committed days straight from S3, through their pointers.
    duckdb_reads_committed_days(&s3, &got);
}

/// DuckDB, as a downstream analyst would use it: the pointers of every committed day, then
/// the diffs files they name, read from the S3 server (httpfs' role played by fsspec/s3fs).
fn duckdb_reads_committed_days(s3: &S3, mirrored: &Path) {
    let dir = match venv(
        "duckdb",
        &["duckdb==1.4.*", "s3fs==2025.*", "fsspec==2025.*"],
    ) {
        Ok(d) => d,
        Err(why) => return unavailable("DuckDB with s3fs (PyPI)", &why),
    };
    let script = r#"
import json, sys, duckdb, s3fs
endpoint, bucket = sys.argv[1], sys.argv[2]
fs = s3fs.S3FileSystem(key="test", secret="test", client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
con = duckdb.connect()
con.register_filesystem(fs)
root = f"s3://{bucket}/prod"
# 1. The committed days: one pointer per channel-day.
con.sql(f"""
    CREATE TABLE pointers AS
    SELECT channel, bill_date, run_id, f.path AS path
    FROM (SELECT channel, bill_date, run_id, unnest(files) AS f
          FROM read_json('{root}/runs/channel=*/dt=*/committed.json'))
""")
con.sql(f"""
    SET VARIABLE diffs = (SELECT list('{root}/' || path ORDER BY path) FROM pointers
                          WHERE path LIKE 'results/%/diffs.parquet')
""")
# 2. The committed differences of every day, in one query.
rows = con.sql("""
    SELECT channel, CAST(bill_date AS VARCHAR) AS day, category, count(*) AS n
    FROM read_parquet(getvariable('diffs'))
    GROUP BY ALL ORDER BY ALL
""").fetchall()
print(json.dumps([list(r) for r in rows]))
"#;
    let out = std::process::Command::new(dir.join("bin/python"))
        .args(["-c", script, &s3.endpoint, &s3.bucket])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, String, String, u64)> =
        serde_json::from_slice(&out.stdout).expect("duckdb's answer");
    // The same counts the committed summaries have, per channel, day and category.
    let mut want = Vec::new();
    for ch in ["alipay", "wechat"] {
        for day in [DAY, NEXT] {
            let s: serde_json::Value = serde_json::from_slice(
                &std::fs::read(file_of(mirrored, "results", ch, day, "summary.json"))
                    .expect("summary"),
            )
            .expect("json");
            for (cat, n) in s["counts"].as_object().expect("counts") {
                let n = n.as_u64().expect("count");
                if cat != "MATCHED" && n > 0 {
                    want.push((ch.to_string(), day.to_string(), cat.clone(), n));
                }
            }
        }
    }
    want.sort();
    let mut got = rows;
    got.sort();
    assert_eq!(got, want);
}

/// A copy of the folder `from` at `to`.
fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

fn set_tolerance(cfg: &Path, tolerance: &str) {
    let text = std::fs::read_to_string(cfg).expect("config");
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("amount_tolerance") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("name = \"alipay\"") {
            out.push_str(&format!("amount_tolerance = \"{tolerance}\"\n"));
        }
    }
    std::fs::write(cfg, out).expect("config");
}

#[test]
fn a_crash_at_every_point_of_the_commit_leaves_a_whole_day_and_a_rerun_the_same_bytes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let base = tmp.path().join("base");
    let cfg = generate(&base, DAY, 1, 400, 17);
    let cfg_name = cfg.file_name().expect("name").to_owned();
    // The day committed once, on the rules it had.
    let (code, json, err) = support::run_day(&cfg, DAY, &["--channel", "alipay"]);
    assert_eq!(code, 0, "{json}\n{err}");
    // The rules change: a rerun gives other results. The reference rerun, never interrupted.
    let reference = tmp.path().join("reference");
    copy_dir(&base, &reference);
    set_tolerance(&reference.join(&cfg_name), "5.00");
    let (code, json, err) =
        support::run_day(&reference.join(&cfg_name), DAY, &["--channel", "alipay"]);
    assert_eq!(code, 0, "{json}\n{err}");
    let before = committed(&base.join("output"), "alipay", DAY);
    let want = committed(&reference.join("output"), "alipay", DAY);
    assert_ne!(before, want, "the rule change must change the results");

    let stages = ["fetch", "normalize", "collect", "reconcile", "report"];
    let mut points = Vec::new();
    for s in stages {
        points.push(format!("{s}:published"));
        points.push(format!("{s}:recorded"));
    }
    points.push("report:committed".into());
    points.push("report:cleaned".into());
    for point in points {
        let dir = tmp.path().join(point.replace(':', "-"));
        copy_dir(&base, &dir);
        let cfg = dir.join(&cfg_name);
        set_tolerance(&cfg, "5.00");
        let out = support::reckon()
            .env("RECKON_CRASH_AT", &point)
            .args([
                "run",
                "--config",
                cfg.to_str().expect("utf8"),
                "--date",
                DAY,
            ])
            .args(["--channel", "alipay"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(&format!("RECKON_CRASH_AT={point}")),
            "{point}: the run did not crash there: {err}"
        );
        // A reader sees one whole committed day: the earlier one, or (crashed after the
        // pointer was written) the new one. Never a mix, never a missing file.
        let seen = committed(&dir.join("output"), "alipay", DAY);
        let after_pointer =
            ["report:committed", "report:recorded", "report:cleaned"].contains(&point.as_str());
        assert!(
            seen == if after_pointer {
                want.clone()
            } else {
                before.clone()
            },
            "{point}: a reader sees neither the earlier day nor the new one whole"
        );
        let on_day = |command: &str| {
            support::run(&[
                command,
                "--config",
                cfg.to_str().expect("utf8"),
                "--date",
                DAY,
                "--channel",
                "alipay",
            ])
        };
        // Status says which run readers see while the new one is not committed.
        if point == "reconcile:recorded" {
            let status = on_day("status");
            let text = String::from_utf8_lossy(&status.stdout);
            let old_run = pointer_of(&base.join("output"), "alipay", DAY)["run_id"].clone();
            let old_run = old_run.as_str().expect("run id");
            assert!(
                text.contains(&format!("readers see run {old_run}")),
                "{text}"
            );
        }
        // The report reads the committed day too.
        let report = on_day("report");
        assert!(
            report.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&report.stderr)
        );
        // The rerun commits the new day, byte for byte the uninterrupted run's, and removes
        // what the crash left.
        let (code, json, err) = support::run_day(&cfg, DAY, &["--channel", "alipay"]);
        assert_eq!(code, 0, "{point}: {json}\n{err}");
        assert!(
            committed(&dir.join("output"), "alipay", DAY) == want,
            "{point}: the rerun's results differ from an uninterrupted run's"
        );
        // Only the folders the new pointer names, and those the earlier pointer named (a
        // reader may still read them; the next run removes them), are left.
        let stray = stray_files(&dir.join("output"), "alipay", DAY);
        let old: Vec<&String> = stray
            .iter()
            .filter(|s| !before_names(&base).contains(*s))
            .collect();
        assert!(old.is_empty(), "{point}: left behind: {old:?}");
        let (code, _, _) = support::run_day(&cfg, DAY, &["--channel", "alipay"]);
        assert_eq!(code, 0);
        assert_eq!(
            stray_files(&dir.join("output"), "alipay", DAY),
            Vec::<String>::new(),
            "{point}: the next run leaves only what the pointer names"
        );
    }
}

/// The day's committed pointer under a local root.
fn pointer_of(root: &Path, channel: &str, date: &str) -> serde_json::Value {
    let p = area(root, "runs", channel, date).join("committed.json");
    serde_json::from_slice(&std::fs::read(&p).expect("committed.json")).expect("json")
}

/// The paths the base day's committed pointer names.
fn before_names(base: &Path) -> Vec<String> {
    pointer_of(&base.join("output"), "alipay", DAY)["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect()
}

#[test]
fn the_lease_on_s3_keeps_two_processes_apart_and_an_expired_one_is_taken_over() {
    let Some(s3) = moto("reckon-lease") else {
        return;
    };
    let env = env_of(&s3);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, DAY, 1, 20_000, 9);
    on_s3(&cfg, &s3.bucket, "leases");
    let start = || {
        with_env(
            &env,
            &[
                "run",
                "--config",
                cfg.to_str().expect("utf8"),
                "--date",
                DAY,
            ],
        )
        .args(["--channel", "alipay", "--lease-wait", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
    };
    let lease = tmp.path().join("lease");
    let held = |s3: &S3| {
        let _ = std::fs::remove_dir_all(&lease);
        mirror(s3, "leases/runs", &lease);
        std::fs::read(lease.join("channel=alipay/dt=2026-11-20/lease.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|v| v.get("released").is_none())
    };
    let first = start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut holder = None;
    while holder.is_none() && std::time::Instant::now() < deadline {
        holder = held(&s3);
    }
    let holder = holder.expect("the first run took the lease on S3");
    assert_eq!(holder["pid"], first.id());
    let second = start().wait_with_output().expect("second");
    let a = first.wait_with_output().expect("first");
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert_eq!(second.status.code(), Some(75));
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(
        said.contains("is being run by") && said.contains(&format!(":{} ", holder["pid"])),
        "{said}"
    );
    assert!(held(&s3).is_none(), "the lease outlived its run");

    // A holder on another host that stopped renewing: its lease expires and is taken over.
    let stale = serde_json::json!({
        "host": "host-b", "pid": 4242, "invocation": "gone",
        "acquired_at": "2026-11-20T00:00:00Z", "expires_at": "2026-11-20T00:05:00Z"
    });
    let file = tmp.path().join("stale.json");
    std::fs::write(&file, stale.to_string()).expect("write");
    s3.put("leases/runs/channel=alipay/dt=2026-11-20/lease.json", &file)
        .expect("put");
    let out = start().wait_with_output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One that is alive (not expired) on another host is waited for, then refused.
    let live = serde_json::json!({
        "host": "host-b", "pid": 4242, "invocation": "alive",
        "acquired_at": "2026-11-20T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"
    });
    std::fs::write(&file, live.to_string()).expect("write");
    s3.put("leases/runs/channel=alipay/dt=2026-11-20/lease.json", &file)
        .expect("put");
    let out = start().wait_with_output().expect("run");
    assert_eq!(out.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&out.stdout).contains("host-b:4242"));
}

/// A child process stopped when dropped (also when the test fails).
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The fault-injecting proxy (`faulty_proxy.py`, with `args` after its stats file) in front of
/// `s3`: the process and the endpoint to reach it at; `None` when python cannot be had.
/// One day generated twice, the same way (`rows` records, `seed`): under a local root, and
/// with its root on a moto bucket at `prefix`, reached through the fault proxy.
struct Proxied {
    s3: S3,
    tmp: tempfile::TempDir,
    /// The proxy's fault counts (JSON).
    stats: PathBuf,
    _proxy: Stopped,
    /// The environment that reaches the bucket through the proxy.
    env: Vec<(&'static str, String)>,
    local: PathBuf,
    local_cfg: PathBuf,
    remote_cfg: PathBuf,
}

impl Proxied {
    /// The day, and the proxy started with `proxy_args`; `None` when a server cannot start
    /// (outside CI).
    fn start(
        bucket: &str,
        prefix: &str,
        proxy_args: &[&str],
        rows: u64,
        seed: u64,
    ) -> Option<Proxied> {
        let s3 = moto(bucket)?;
        let tmp = tempfile::tempdir().expect("tmp");
        let stats = tmp.path().join("faults.json");
        let (proxy, endpoint) = faulty_proxy(&s3, &stats, proxy_args)?;
        let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
        let local_cfg = generate(&local, DAY, 1, rows, seed);
        let remote_cfg = generate(&remote, DAY, 1, rows, seed);
        on_s3(&remote_cfg, &s3.bucket, prefix);
        let env = through(&env_of(&s3), &endpoint);
        Some(Proxied {
            s3,
            tmp,
            stats,
            _proxy: proxy,
            env,
            local,
            local_cfg,
            remote_cfg,
        })
    }

    /// What the proxy counted.
    fn faults(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&self.stats).expect("stats")).expect("json")
    }
}

fn faulty_proxy(s3: &S3, stats: &Path, args: &[&str]) -> Option<(Stopped, String)> {
    let python = match venv("moto", &["moto[server]==5.1.*", "boto3"]) {
        Ok(d) => d.join("bin/python"),
        Err(why) => {
            unavailable("python for the fault-injecting proxy", &why);
            return None;
        }
    };
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/faulty_proxy.py");
    let proxy = Stopped(
        std::process::Command::new(python)
            .arg(&script)
            .args([&port.to_string(), &s3.endpoint])
            .arg(stats)
            .args(args)
            .spawn()
            .expect("proxy"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !stats.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some((proxy, format!("http://127.0.0.1:{port}")))
}

/// `env` with the S3 endpoint replaced by `endpoint`.
fn through(env: &[(&'static str, String)], endpoint: &str) -> Vec<(&'static str, String)> {
    let mut env = env.to_vec();
    for (k, v) in env.iter_mut() {
        if *k == "AWS_ENDPOINT" {
            *v = endpoint.to_string();
        }
    }
    env
}

#[test]
fn a_bill_whose_upload_fails_is_never_committed_and_the_next_run_fetches_it_again() {
    // Every write of a bill (each channel's file name has the date and .csv) is refused: the
    // bill's upload, in the background while normalize runs, fails; a refusal is not retried.
    let Some(p) = Proxied::start("reckon-denied", "denied", &["1", "20261120.csv"], 300, 29) else {
        return;
    };
    let cfg = p.remote_cfg.to_str().expect("utf8");
    let (env, denied) = (env_of(&p.s3), &p.env);
    let out = exits(denied, &["run", "--config", cfg, "--date", DAY], 2);
    let said = json_of(&out);
    for (i, ch) in ["alipay", "wechat"].into_iter().enumerate() {
        let got = &said["channels"][i];
        assert_eq!(got["stage"], "fetch", "{said}");
        let err = got["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(&format!("raw/channel={ch}")) && err.contains("403"),
            "the error names the bill and the refusal: {said}"
        );
    }
    let faults = p.faults();
    assert!(faults["denied"].as_u64().unwrap_or(0) > 0, "{faults}");
    // Nothing committed; the fetch's record says it failed.
    for s in status_of(&env, cfg, DAY).as_array().expect("array") {
        assert!(
            s["committed"].is_null(),
            "a day committed without its bill: {s}"
        );
    }
    let got = p.tmp.path().join("mirror");
    mirror(&p.s3, "denied", &got);
    for ch in ["alipay", "wechat"] {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(area(&got, "runs", ch, DAY).join("manifest.json")).expect("manifest"),
        )
        .expect("json");
        assert_eq!(m["stages"]["fetch"]["state"], "failed", "{m}");
    }
    // The next run, with the store writable again, fetches the bill again and commits the day
    // as the local root does.
    run_env(&p.local_cfg, DAY, &[]);
    run_env(&p.remote_cfg, DAY, &env);
    let again = p.tmp.path().join("mirror-again");
    committed_like_local(&p.s3, "denied", &again, &p.local, "the failed upload");
    for ch in ["alipay", "wechat"] {
        let have = committed(&again, ch, DAY);
        assert!(
            have.keys()
                .any(|k| k.starts_with("raw/") && k.contains("20261120.csv")),
            "the bill is committed: {:?}",
            have.keys()
        );
    }
}

/// Mirrors `prefix` of `s3` into `to`, and checks that each channel's committed `DAY` holds
/// the files and bytes the local root `local` committed, and nothing else (`after`: after what).
fn committed_like_local(s3: &S3, prefix: &str, to: &Path, local: &Path, after: &str) {
    mirror(s3, prefix, to);
    for ch in ["alipay", "wechat"] {
        let (want, have) = (
            committed(&local.join("output"), ch, DAY),
            committed(to, ch, DAY),
        );
        assert!(
            want == have,
            "{ch}: the day differs from the local root's after {after}"
        );
        assert_eq!(stray_files(to, ch, DAY), Vec::<String>::new());
    }
}

#[test]
fn faults_of_the_store_are_retried_and_the_day_commits_the_same_bytes() {
    let Some(p) = Proxied::start("reckon-faults", "faulty", &["3"], 400, 23) else {
        return;
    };
    let text = std::fs::read_to_string(&p.remote_cfg).expect("config");
    // Requests time out after 2 s; the proxy answers some after 3 s.
    std::fs::write(
        &p.remote_cfg,
        format!("{text}\n[object_store]\ntimeout_secs = 2\n"),
    )
    .expect("config");
    run_env(&p.local_cfg, DAY, &[]);
    run_env(&p.remote_cfg, DAY, &p.env);
    let faults = p.faults();
    for kind in ["slow_down_503", "throttled_429", "reset", "late"] {
        assert!(
            faults[kind].as_u64().unwrap_or(0) > 0,
            "no {kind}: {faults}"
        );
    }
    let after = format!("the faults ({faults})");
    committed_like_local(
        &p.s3,
        "faulty",
        &p.tmp.path().join("mirror"),
        &p.local,
        &after,
    );
}

#[test]
fn a_commit_whose_put_never_arrived_is_put_again() {
    // The first two puts of a day's pointer are reset before they reach the server:
    // object_store does not repeat a conditional put, reckon must.
    let proxy = ["1", "reset:2:committed.json"];
    let Some(p) = Proxied::start("reckon-pointer", "reset", &proxy, 300, 37) else {
        return;
    };
    run_env(&p.local_cfg, DAY, &[]);
    let cfg = p.remote_cfg.to_str().expect("utf8");
    let out = with_env(&p.env, &["run", "--config", cfg, "--date", DAY])
        .env("RECKON_LOG", "warn")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("commit put failed; putting again"), "{err}");
    let faults = p.faults();
    assert_eq!(faults["reset"], 2, "{faults}");
    let mirror = p.tmp.path().join("mirror");
    committed_like_local(&p.s3, "reset", &mirror, &p.local, "the resets");
}

/// Appends `[object_store]` for `primary` and `[replica]` (mode, endpoint) to the config;
/// retries kept short so an unreachable replica fails fast.
/// The config `text` with the table `section` before its first `[[channel]]`, where the
/// generated config keeps its other tables.
fn before_channels(text: &str, section: &str) -> String {
    text.replacen("[[channel]]", &format!("{section}\n\n[[channel]]"), 1)
}

fn with_replica(cfg: &Path, primary: &S3, replica_root: &str, endpoint: &str, mode: &str) {
    let text = std::fs::read_to_string(cfg).expect("config");
    let base = text
        .split("\n[object_store]")
        .next()
        .expect("config")
        .to_string();
    let base = base
        .split("\n[replica]")
        .next()
        .expect("config")
        .to_string();
    let base = if base.contains("[orchestration]") {
        base
    } else {
        before_channels(
            &base,
            "[orchestration]\nretry_attempts = 2\nretry_base_ms = 100",
        )
    };
    std::fs::write(
        cfg,
        format!(
            "{base}\n[object_store]\nendpoint = \"{}\"\nallow_http = true\n\n\
             [replica]\nstorage_root = \"s3://{replica_root}\"\nmode = \"{mode}\"\n\
             object_store = {{ endpoint = \"{endpoint}\", allow_http = true, max_retries = 1, retry_timeout_secs = 3, timeout_secs = 2 }}\n",
            primary.endpoint
        ),
    )
    .expect("config");
}

/// Nothing listens there.
/// Mirrors two roots (a server, a prefix, a local folder each) and checks that both committed
/// the same files and bytes for every channel on `DAY` and `NEXT`.
fn same_days(one: (&S3, &str, &Path), other: (&S3, &str, &Path)) {
    for (s3, prefix, to) in [one, other] {
        mirror(s3, prefix, to);
    }
    for ch in ["alipay", "wechat"] {
        for day in [DAY, NEXT] {
            assert!(
                committed(one.2, ch, day) == committed(other.2, ch, day),
                "{ch} {day}"
            );
        }
    }
}

fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_replica_in_another_region_holds_every_committed_day_strong_or_eventual() {
    let (Some(primary), Some(second)) = (moto("reckon-primary"), moto("reckon-replica")) else {
        return;
    };
    let env = env_of(&primary);
    let tmp = tempfile::tempdir().expect("tmp");

    // Strong: the replica is down, the day does not commit anywhere (exit 75); back up, the
    // rerun commits it on both, byte for byte.
    let cfg = generate(&tmp.path().join("strong"), DAY, 2, 300, 41);
    on_s3(&cfg, &primary.bucket, "main");
    let copy = format!("{}/copy", second.bucket);
    with_replica(&cfg, &primary, &copy, &dead_endpoint(), "strong");
    let c = cfg.to_str().expect("utf8");
    let out = exits(&env, &["run", "--config", c, "--date", DAY], 75);
    let line = json_of(&out);
    assert_eq!(line["channels"][0]["stage"], "report", "{line}");
    let seen = tmp.path().join("strong-down");
    mirror(&primary, "main", &seen);
    assert!(
        !area(&seen, "runs", "alipay", DAY)
            .join("committed.json")
            .exists(),
        "the primary committed a day its replica does not hold"
    );
    with_replica(&cfg, &primary, &copy, &second.endpoint, "strong");
    for day in [DAY, NEXT] {
        exits(&env, &["run", "--config", c, "--date", day], 0);
    }
    let (a, b) = (tmp.path().join("strong-a"), tmp.path().join("strong-b"));
    same_days((&primary, "main", &a), (&second, "copy", &b));
    let out = exits(&env, &["verify", "--config", c, "--replica"], 0);
    assert_eq!(json_of(&out)["checked_days"], 4);

    // Eventual: the replica is down for two days of runs; they commit on the primary and wait
    // in the backlog; `reckon status` shows the lag; `reckon replicate` drains it later.
    let cfg = generate(&tmp.path().join("eventual"), DAY, 2, 300, 43);
    on_s3(&cfg, &primary.bucket, "events");
    let events = format!("{}/events", second.bucket);
    with_replica(&cfg, &primary, &events, &dead_endpoint(), "eventual");
    let c = cfg.to_str().expect("utf8");
    for day in [DAY, NEXT] {
        exits(&env, &["run", "--config", c, "--date", day], 0);
    }
    let states = status_of(&env, c, NEXT);
    let lag = &states[0]["replica"]["lag"];
    assert_eq!(lag["days"], 4, "{states}");
    assert_eq!(lag["oldest"], format!("alipay {DAY}"), "{states}");
    exits(&env, &["replicate", "--config", c], 75);
    with_replica(&cfg, &primary, &events, &second.endpoint, "eventual");
    let out = exits(&env, &["replicate", "--config", c], 0);
    assert_eq!(
        json_of(&out)["replicated"].as_array().map(Vec::len),
        Some(4)
    );
    let (a, b) = (tmp.path().join("events-a"), tmp.path().join("events-b"));
    same_days((&primary, "events", &a), (&second, "events", &b));
    let states = status_of(&env, c, NEXT);
    assert_eq!(states[0]["replica"]["lag"]["days"], 0, "{states}");

    // A replica object corrupted afterwards: verify names the day.
    let c_ptr = pointer_of(&b, "wechat", DAY);
    let victim = c_ptr["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .find(|p| p.ends_with("diffs.parquet"))
        .expect("diffs");
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"not the diffs").expect("junk");
    second.put(&format!("events/{victim}"), &junk).expect("put");
    let out = exits(&env, &["verify", "--config", c, "--replica"], 1);
    let v = json_of(&out);
    let named: Vec<&str> = v["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .filter_map(|d| d["day"].as_str())
        .collect();
    assert_eq!(named, [format!("wechat {DAY}")], "{v}");
}

#[test]
fn signed_days_verify_a_tampered_one_is_named_and_a_replay_gives_the_same_bytes() {
    let python = match venv("keys", &["rsa==4.9.*", "cryptography>=42,<47"]) {
        Ok(d) => d.join("bin/python"),
        Err(why) => return unavailable("python's cryptography (PyPI)", &why),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, DAY, 2, 400, 47);
    // An Ed25519 key made by another library: PKCS#8 private, SPKI public.
    let made = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys\n\
             from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\n\
             from cryptography.hazmat.primitives import serialization as s\n\
             k = Ed25519PrivateKey.generate()\n\
             open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
             open(sys.argv[2], 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n",
        ])
        .arg(dir.join("signing.pem"))
        .arg(dir.join("signing.pub.pem"))
        .output()
        .expect("python");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let secret = std::fs::read_to_string(dir.join("signing.pem")).expect("key");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let signing = "[signing]\nprivate_key_file = \"signing.pem\"";
    std::fs::write(&cfg, before_channels(&text, signing)).expect("config");
    let c = cfg.to_str().expect("utf8");
    let mut said = String::new();
    for day in [DAY, NEXT] {
        let (code, json, err) = support::run_day(&cfg, day, &[]);
        assert_eq!(code, 0, "{json}\n{err}");
        said.push_str(&err);
    }
    // A rerun of the second day on other rules: the committed day has an earlier run.
    set_tolerance(&cfg, "3.00");
    let (code, json, err) = support::run_day(&cfg, NEXT, &[]);
    assert_eq!(code, 0, "{json}\n{err}");
    said.push_str(&err);

    let verify = |args: &[&str]| {
        let mut all = vec!["verify", "--config", c];
        all.extend_from_slice(args);
        let out = support::run(&all);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), json_of(&out), err)
    };
    let (code, v, err) = verify(&[]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    let days = v["days"].as_array().expect("days");
    assert_eq!(days.len(), 4, "{v}");
    assert!(days.iter().all(|d| d["signature"] == "checked"), "{v}");
    // The day's recorded inputs are in the pointer.
    let pointer = pointer_of(&dir.join("output"), "alipay", NEXT);
    for input in [
        "raw_bill",
        "template",
        "platform.sql",
        "reconcile.sql",
        "rules",
        "platform_snapshot",
        "carry_in",
        "ledger_before",
    ] {
        let sha = pointer["inputs"][input].as_str().unwrap_or_default();
        assert_eq!(sha.len(), 64, "{input}: {}", pointer["inputs"]);
    }
    assert_eq!(pointer["reckon_version"], env!("CARGO_PKG_VERSION"));

    // Today's rules and SQL changed since; the replay runs on what the days recorded.
    set_tolerance(&cfg, "9.00");
    let sql = dir.join("sql/reconcile.sql");
    let edited = format!(
        "-- edited after the run\n{}",
        std::fs::read_to_string(&sql).expect("sql")
    );
    std::fs::write(&sql, edited).expect("sql");
    let (code, v, err) = verify(&["--replay"]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    for d in v["days"].as_array().expect("days") {
        assert!(d["compared"].as_u64().unwrap_or(0) >= 6, "{d}");
        assert_eq!(d["run_id"][0], d["run_id"][1], "{d}");
    }

    // A host that only checks: the public key alone.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(
            "private_key_file = \"signing.pem\"",
            "public_key_file = \"signing.pub.pem\"",
        ),
    )
    .expect("config");
    let (code, v, err) = verify(&["--date", DAY]);
    assert_eq!(code, Some(0), "{v}\n{err}");

    // A tampered output: named with its file.
    let diffs = file_of(
        &dir.join("output"),
        "results",
        "alipay",
        DAY,
        "diffs.parquet",
    );
    std::fs::write(&diffs, b"not the differences").expect("tamper");
    let (code, v, _) = verify(&["--date", DAY]);
    assert_eq!(code, Some(1), "{v}");
    let problems = v["days"][0]["problems"].to_string();
    assert!(problems.contains("diffs.parquet"), "{v}");
    // A tampered pointer: the signature no longer holds.
    let p = area(&dir.join("output"), "runs", "wechat", NEXT).join("committed.json");
    let mut pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("pointer")).expect("json");
    pointer["run_id"] = serde_json::json!("0000000000000000");
    std::fs::write(&p, serde_json::to_vec_pretty(&pointer).expect("json")).expect("tamper");
    let (code, v, _) = verify(&["--date", NEXT, "--channel", "wechat"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["days"][0]["signature"], "failed", "{v}");
    // A recorded input changed behind reckon's back: the replay no longer gives the
    // committed bytes, and says which.
    let rules = file_of(&dir.join("output"), "inputs", "alipay", NEXT, "rules.json");
    let mut r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rules).expect("rules")).expect("json");
    r["tolerance"] = serde_json::json!("50.00");
    std::fs::write(&rules, serde_json::to_vec_pretty(&r).expect("json")).expect("tamper");
    let (code, v, _) = verify(&["--replay", "--date", NEXT, "--channel", "alipay"]);
    assert_eq!(code, Some(1), "{v}");
    assert!(
        v["days"][0]["problems"].to_string().contains("results/"),
        "{v}"
    );
    // The key never shows in what reckon said.
    let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!said.contains(&body), "the signing key was logged");
}
