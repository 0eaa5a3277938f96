//! The platform side from an object store: the generated warehouse on a real S3-compatible
//! server gives the same results as on the local disk, read by explicit partition paths.

use std::path::Path;

use crate::services::{unavailable, S3};
use crate::support::{file_of, reckon};

fn run_with(env: &[(&'static str, String)], args: &[&str]) -> (i32, String, String) {
    let mut c = reckon();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("reckon runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `reckon run` of one day with the config `cfg`.
fn run_day(env: &[(&'static str, String)], cfg: &Path, date: &str) -> (i32, String, String) {
    run_with(
        env,
        &[
            "run",
            "--config",
            cfg.to_str().expect("utf8"),
            "--date",
            date,
        ],
    )
}

fn generate(dir: &Path, env: &[(&'static str, String)], extra: &[&str]) {
    let mut args = vec![
        "generate",
        "--out",
        dir.to_str().expect("utf8"),
        "--from",
        "2026-11-20",
        "--days",
        "1",
        "--rows",
        "3000",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = run_with(env, &args);
    assert_eq!(code, 0, "generate: {err}");
}

/// Runs day 2026-11-20 from both configs; asserts the diffs are byte-identical and returns each
/// channel's manifest of `remote`.
fn run_both_and_compare(
    env: &[(&'static str, String)],
    local: &Path,
    remote: &Path,
    what: &str,
) -> Vec<(&'static str, serde_json::Value)> {
    for dir in [local, remote] {
        let cfg = dir.join("reckon.toml");
        let (code, out, err) = run_day(env, &cfg, "2026-11-20");
        assert_eq!(code, 0, "{}: {err}\n{out}", dir.display());
    }
    let diffs = |root: &Path, channel| {
        std::fs::read(file_of(
            &root.join("output"),
            "results",
            channel,
            "2026-11-20",
            "diffs.parquet",
        ))
        .expect("diffs")
    };
    ["alipay", "wechat"]
        .into_iter()
        .map(|channel| {
            assert!(
                diffs(local, channel) == diffs(remote, channel),
                "{channel}: the diffs differ between disk and {what}"
            );
            let m = serde_json::from_slice(
                &std::fs::read(remote.join(format!(
                    "output/runs/channel={channel}/dt=2026-11-20/manifest.json"
                )))
                .expect("manifest"),
            )
            .expect("json");
            (channel, m)
        })
        .collect()
}

/// A started S3 server, a data set generated on disk (`local`), and the same data set
/// (`remote`) generated with `extra` and its warehouse at `s3://BUCKET/PREFIX` (`url`).
struct OnS3 {
    _s3: S3,
    _tmp: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    local: std::path::PathBuf,
    remote: std::path::PathBuf,
    url: String,
}

/// `None` (having said why, or failed in CI) when no S3 server can start.
fn on_s3(bucket: &str, prefix: &str, extra: &[&str]) -> Option<OnS3> {
    let s3 = match S3::start(bucket) {
        Ok(s) => s,
        Err(why) => {
            unavailable("an S3-compatible server (moto)", &why);
            return None;
        }
    };
    let env = s3.env();
    let tmp = tempfile::tempdir().expect("tmp");
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    generate(&local, &env, &[]);
    let url = format!("s3://{}/{prefix}", s3.bucket);
    let mut args = extra.to_vec();
    args.extend(["--warehouse-url", &url]);
    generate(&remote, &env, &args);
    Some(OnS3 {
        _s3: s3,
        _tmp: tmp,
        env,
        local,
        remote,
        url,
    })
}

#[test]
fn a_warehouse_on_s3_reconciles_like_one_on_disk() {
    // Kept whole until the test ends: the server runs and the files stay.
    let Some(t) = on_s3("reckon-wh", "warehouse", &[]) else {
        return;
    };
    let (env, local, remote, url) = (t.env.clone(), &t.local, &t.remote, &t.url);
    assert!(
        !remote.join("warehouse").exists(),
        "the warehouse moved to S3"
    );
    let toml = std::fs::read_to_string(remote.join("reckon.toml")).expect("config");
    assert!(
        toml.contains(&format!("orders = \"{url}/orders\"")),
        "{toml}"
    );

    for (_, m) in run_both_and_compare(&env, local, remote, "S3") {
        let read: Vec<String> = m["stages"]["collect"]["detail"]["partitions_read"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        assert!(
            !read.is_empty()
                && read
                    .iter()
                    .all(|p| p.starts_with("s3://reckon-wh/warehouse/")),
            "{read:?}"
        );
        assert!(
            read.iter()
                .all(|p| ["dt=2026-11-19/", "dt=2026-11-20/", "dt=2026-11-21/"]
                    .iter()
                    .any(|d| p.ends_with(d))),
            "{read:?}"
        );
    }

    // A day the warehouse does not have yet is "not ready" (75), from S3 as from disk.
    let cfg = remote.join("reckon.toml");
    let (code, _, err) = run_day(&env, &cfg, "2026-11-25");
    assert_eq!(code, 75, "{err}");
}

#[test]
fn a_warehouse_in_postgres_is_snapshotted_in_chunks_and_reconciles_like_one_on_disk() {
    let pg = match crate::services::Postgres::start() {
        Ok(p) => p,
        Err(why) => return unavailable("a PostgreSQL server", &why),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("pg"));
    generate(&local, &[], &[]);
    generate(&remote, &[], &["--warehouse-url", &pg.url]);
    assert!(!remote.join("warehouse").exists());
    let n: u64 = pg
        .psql("SELECT count(*) FROM orders")
        .trim()
        .parse()
        .expect("count");
    assert!(n > 5000, "{n} orders loaded");
    // Small chunks, so the day is read in several fetches under the rate limit.
    let cfg = remote.join("reckon.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text.replace(
        "channel_column = \"pay_channel\" }",
        "channel_column = \"pay_channel\", chunk_rows = 1000, chunks_per_second = 50 }",
    );
    std::fs::write(&cfg, text).expect("config");

    for (channel, m) in run_both_and_compare(&[], &local, &remote, "PostgreSQL") {
        let read = m["stages"]["collect"]["detail"]["partitions_read"].to_string();
        assert!(
            read.contains("postgres orders:") && read.contains("chunks"),
            "{read}"
        );
        assert!(file_of(
            &remote.join("output"),
            "platform_source",
            channel,
            "2026-11-20",
            "orders.parquet"
        )
        .exists());
    }
    // The snapshot's transaction was read-only: nothing is left open on the server.
    let open = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reckon'");
    assert_eq!(open.trim(), "0");
}

/// `(category, txn_type, merchant_order_id, reason)` of every diff row.
fn diff_rows(root: &Path, channel: &str) -> Vec<(String, String, Option<String>, String)> {
    let path = file_of(
        &root.join("output"),
        "results",
        channel,
        "2026-11-20",
        "diffs.parquet",
    );
    let mut out = Vec::new();
    for b in crate::support::read(&path) {
        for i in 0..b.num_rows() {
            let s = |c| crate::support::s(&b, c, i);
            out.push((
                s("category").unwrap_or_default(),
                s("txn_type").unwrap_or_default(),
                s("merchant_order_id"),
                s("reason").unwrap_or_default(),
            ));
        }
    }
    out
}

#[test]
fn the_second_look_finds_in_the_database_what_the_warehouse_lacks() {
    let pg = match crate::services::Postgres::start() {
        Ok(p) => p,
        Err(why) => return unavailable("a PostgreSQL server", &why),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    generate(&dir, &[], &[]);
    let cfg = dir.join("reckon.toml");
    let args = |stage: &'static str| {
        vec![
            "stage".to_string(),
            stage.to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--date".into(),
            "2026-11-20".into(),
            "--channel".into(),
            "wechat".into(),
        ]
    };
    let (code, _, err) = run_day(&[], &cfg, "2026-11-20");
    assert_eq!(code, 0, "{err}");
    let before = diff_rows(&dir, "wechat");
    let missing: Vec<String> = before
        .iter()
        .filter(|(c, t, k, _)| c == "MISSING_IN_PLATFORM" && t == "PAY" && k.is_some())
        .filter_map(|(_, _, k, _)| k.clone())
        .collect();
    assert!(missing.len() >= 2, "{missing:?}");
    let late: Vec<&String> = missing.iter().step_by(2).collect();
    let values: Vec<String> = late.iter().map(|k| format!("('{k}')")).collect();
    pg.psql(
        "CREATE TABLE orders (order_no text PRIMARY KEY); CREATE TABLE refunds (refund_no text)",
    );
    pg.psql(&format!("INSERT INTO orders VALUES {}", values.join(", ")));
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(&format!(
        "\n[second_look]\nurl = {:?}\nbatch = 1\nqueries_per_second = 100\npool_size = 2\n",
        pg.url
    ));
    std::fs::write(&cfg, text).expect("config");

    for stage in ["reconcile", "report"] {
        let a = args(stage);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, _, err) = run_with(&[], &a);
        assert_eq!(code, 0, "{stage}: {err}");
    }
    let after = diff_rows(&dir, "wechat");
    assert_eq!(after.len(), before.len(), "categories and rows stay");
    for (c, _, k, reason) in &after {
        let is_late = k.as_ref().is_some_and(|k| late.contains(&k));
        if c == "MISSING_IN_PLATFORM" && is_late {
            assert!(reason.contains("database has it"), "{k:?}: {reason}");
        } else {
            assert!(!reason.contains("database has it"), "{k:?}: {reason}");
        }
    }
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("output/runs/channel=wechat/dt=2026-11-20/manifest.json"))
            .expect("manifest"),
    )
    .expect("json");
    assert_eq!(
        m["stages"]["reconcile"]["detail"]["second_look"]["found_in_database"],
        late.len() as u64
    );
    // Refund keys are looked up too (in `refunds`, where none is).
    let looked_up = m["stages"]["reconcile"]["detail"]["second_look"]["looked_up"]
        .as_u64()
        .unwrap_or(0);
    assert!(looked_up >= missing.len() as u64, "{looked_up}");
    // One key a query: the queries ran two at a time, on the pool's two connections.
    assert_eq!(
        m["stages"]["reconcile"]["detail"]["second_look"]["connections"],
        2
    );

    let look = |m: &serde_json::Value, k: &str| {
        m["stages"]["reconcile"]["detail"]["second_look"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("second_look.{k}: {m}"))
    };
    let manifest = || -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(dir.join("output/runs/channel=wechat/dt=2026-11-20/manifest.json"))
                .expect("manifest"),
        )
        .expect("json")
    };
    let reconcile = || {
        let a = args("reconcile");
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, _, err) = run_with(&[], &a);
        assert_eq!(code, 0, "{err}");
    };

    // The rate limit holds over all connections: at 4 queries a second (a burst of 4), Q
    // queries cannot take less than (Q - 4) / 4 seconds.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("queries_per_second = 100", "queries_per_second = 4"),
    )
    .expect("config");
    reconcile();
    let m = manifest();
    let queries = look(&m, "queries");
    assert!(queries >= 6, "enough queries to see the limit: {queries}");
    let floor = (queries - 4) * 250;
    assert!(
        look(&m, "elapsed_ms") + 50 >= floor,
        "{queries} queries in {} ms, under the {floor} ms the limit allows",
        look(&m, "elapsed_ms")
    );
    assert_eq!(look(&m, "found_in_database"), late.len() as u64);

    // A query that times out is tried again: `orders` is locked for a few seconds, each
    // lookup gives up after 1 s and retries with a backoff, and once the lock is gone every
    // lookup answers as before.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("queries_per_second = 4", "queries_per_second = 100")
            .replace("batch = 1", "batch = 1\nattempts = 12\ntimeout_secs = 1"),
    )
    .expect("config");
    let locker = pg.psql_background(
        "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT;",
    );
    pg.wait_for_lock("orders");
    reconcile();
    locker.wait();
    let m = manifest();
    assert!(look(&m, "retries") > 0, "no query was retried: {m}");
    assert_eq!(look(&m, "found_in_database"), late.len() as u64, "{m}");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("\nattempts = 12\ntimeout_secs = 1", "")).expect("config");

    // A database that cannot be reached: the stage says so and can be retried (exit 75).
    let text = std::fs::read_to_string(&cfg).expect("config");
    let port = pg
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or("")
        .to_string();
    std::fs::write(
        &cfg,
        text.replace(&format!(":{port}/"), ":1/")
            .replace("batch = 1", "batch = 1\nattempts = 2\ntimeout_secs = 2"),
    )
    .expect("config");
    let a = args("reconcile");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, _, err) = run_with(&[], &a);
    assert_eq!(code, 75, "{err}");
}

fn collect_read(m: &serde_json::Value) -> Vec<String> {
    m["stages"]["collect"]["detail"]["partitions_read"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_delta_warehouse_is_read_through_its_log_and_reconciles_like_parquet() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (parquet, delta) = (tmp.path().join("parquet"), tmp.path().join("delta"));
    generate(&parquet, &[], &[]);
    generate(&delta, &[], &["--warehouse-format", "delta"]);
    let orders = delta.join("warehouse/orders");
    assert!(
        orders.join("_delta_log").is_dir(),
        "a Delta log was written"
    );
    let toml = std::fs::read_to_string(delta.join("reckon.toml")).expect("config");
    assert!(toml.contains("format = \"delta\""), "{toml}");

    // A file the log does not list is not part of the table: a Hive reader would count its
    // rows twice, the Delta reader never opens it.
    let day = orders.join("dt=2026-11-20");
    let part = std::fs::read_dir(&day)
        .expect("partition")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .expect("a data file");
    std::fs::copy(&part, day.join("stray-copy.parquet")).expect("copy");

    for (channel, m) in run_both_and_compare(&[], &parquet, &delta, "Delta on disk") {
        let read = collect_read(&m);
        assert_eq!(read.len(), 2, "{channel}: {read:?}");
        assert!(
            read.iter().all(|r| r.starts_with("delta ")
                && r.contains(" version 0: ")
                && r.ends_with("in dt=2026-11-19..2026-11-21")),
            "{channel}: {read:?}"
        );
    }

    let cfg = delta.join("reckon.toml");
    let run = |date: &str| {
        run_with(
            &[],
            &[
                "stage",
                "collect",
                "--config",
                cfg.to_str().expect("utf8"),
                "--date",
                date,
                "--channel",
                "alipay",
            ],
        )
    };
    // A day the table has no files for yet is "not ready".
    let (code, _, err) = run("2026-11-25");
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("has no files in dt=2026-11-25"), "{err}");

    // Delta tables are files: a PostgreSQL warehouse cannot be one.
    let (code, _, err) = run_with(
        &[],
        &[
            "generate",
            "--out",
            tmp.path().join("pg").to_str().expect("utf8"),
            "--from",
            "2026-11-20",
            "--rows",
            "10",
            "--warehouse-format",
            "delta",
            "--warehouse-url",
            "postgres://nobody@127.0.0.1:1/none",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--warehouse-format delta needs a file or s3://"),
        "{err}"
    );

    // A directory that is not a Delta table is a configuration error naming the setting.
    std::fs::remove_dir_all(orders.join("_delta_log")).expect("rm log");
    let (code, _, err) = run("2026-11-21");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("warehouse.orders") && err.contains("not a Delta table"),
        "{err}"
    );
}

#[test]
fn a_delta_warehouse_on_s3_reconciles_like_parquet_on_disk() {
    // Kept whole until the test ends: the server runs and the files stay.
    let Some(t) = on_s3("reckon-delta", "lake", &["--warehouse-format", "delta"]) else {
        return;
    };
    let (env, local, remote, url) = (t.env.clone(), &t.local, &t.remote, &t.url);
    for (channel, m) in run_both_and_compare(&env, local, remote, "Delta on S3") {
        let read = collect_read(&m);
        assert!(
            read.len() == 2
                && read
                    .iter()
                    .all(|r| r.starts_with(&format!("delta {url}/")) && r.contains(" version 0: ")),
            "{channel}: {read:?}"
        );
    }
}
