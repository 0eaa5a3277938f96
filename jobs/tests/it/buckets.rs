//! The bucketed reconciliation: a day whose sides are written in hash buckets and joined one
//! bucket at a time gives the same bytes as the day joined whole.

use std::path::Path;

use super::support::{self, file_of};

/// The recorded bucket count of `stage` for a channel-day (1 when the record has none).
fn buckets(root: &Path, channel: &str, day: &str, stage: &str) -> u64 {
    support::manifest(root, channel, day)["stages"][stage]["detail"]["buckets"]
        .as_u64()
        .unwrap_or(1)
}

/// Runs one stage of a channel-day.
fn stage_day(cfg: &Path, stage: &str, day: &str, channel: &str) {
    let out = support::run(&[
        "stage",
        stage,
        "--config",
        cfg.to_str().expect("utf8"),
        "--date",
        day,
        "--channel",
        channel,
    ]);
    assert!(
        out.status.success(),
        "{stage} {channel} {day}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_day_joined_in_buckets_gives_the_bytes_of_the_day_joined_whole() {
    let days = ["2026-11-20", "2026-11-21", "2026-11-22"];
    let (whole, split) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let cw = support::generate(whole.path(), days[0], 3, 1500, 23);
    let cs = support::generate(split.path(), days[0], 3, 1500, 23);
    // A few hundred records a bucket: each side in several buckets, not always as many as
    // reconcile joins in (normalize guesses from the bill's bytes, collect counts).
    let text = std::fs::read_to_string(&cs).expect("config");
    std::fs::write(&cs, format!("bucket_rows = 400\n{text}")).expect("config");
    let mut counts = Vec::new();
    for (i, day) in days.into_iter().enumerate() {
        let (code, a, err) = support::run_day(&cw, day, &[]);
        assert_eq!(code, 0, "{a} {err}");
        // The middle day on Ballista standalone: the bucket views travel to an executor.
        let engine = if i == 1 { "standalone" } else { "local" };
        let b = if i < 2 {
            let (code, b, err) = support::run_day(&cs, day, &["--engine", engine]);
            assert_eq!(code, 0, "{b} {err}");
            b
        } else {
            // The last day stage by stage, with bucket_rows lowered before reconcile: it
            // joins in more buckets than either side was written in.
            for ch in ["alipay", "wechat"] {
                for stage in ["fetch", "normalize", "collect"] {
                    stage_day(&cs, stage, day, ch);
                }
            }
            let text = std::fs::read_to_string(&cs).expect("config");
            std::fs::write(&cs, text.replace("bucket_rows = 400", "bucket_rows = 60"))
                .expect("config");
            for ch in ["alipay", "wechat"] {
                stage_day(&cs, "reconcile", day, ch);
                stage_day(&cs, "report", day, ch);
            }
            serde_json::Value::Null
        };
        for ch in ["alipay", "wechat"] {
            let summary = |root: &Path| -> serde_json::Value {
                let f = file_of(&root.join("output"), "results", ch, day, "summary.json");
                serde_json::from_slice(&std::fs::read(f).expect("summary")).expect("json")
            };
            let (sa, sb) = (summary(whole.path()), summary(split.path()));
            for key in ["counts", "amounts", "ageing", "conservation", "match_rate"] {
                assert_eq!(sa[key], sb[key], "{ch} {day}: {key} differs ({b})");
            }
            for (area, file) in [
                ("results", "diffs.parquet"),
                ("results", "ledger.parquet"),
                ("carryover", "part-0.parquet"),
                ("stats", "by_hour.parquet"),
                ("stats", "by_merchant.parquet"),
            ] {
                let fa = std::fs::read(file_of(&whole.path().join("output"), area, ch, day, file))
                    .expect("whole");
                let fb = std::fs::read(file_of(&split.path().join("output"), area, ch, day, file))
                    .expect("split");
                assert!(
                    fa == fb,
                    "{area}/{ch}/{day}/{file}: the bucketed day differs"
                );
            }
            let root = split.path().join("output");
            counts.push([
                buckets(&root, ch, day, "normalize"),
                buckets(&root, ch, day, "collect"),
                buckets(&root, ch, day, "reconcile"),
            ]);
            assert_eq!(
                buckets(&whole.path().join("output"), ch, day, "reconcile"),
                1,
                "the default joins a small day whole"
            );
        }
    }
    // Every bucketed day checks and replays to the same bytes, with bucket_rows changed since
    // (the replay writes the bill in the buckets it was committed in).
    let text = std::fs::read_to_string(&cs).expect("config");
    std::fs::write(&cs, text.replace("bucket_rows = 60", "bucket_rows = 250")).expect("config");
    let out = support::run(&["verify", "--config", cs.to_str().expect("utf8"), "--replay"]);
    assert!(
        out.status.success(),
        "verify --replay: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        counts.iter().all(|c| c.iter().all(|n| *n > 1)),
        "every side and join in buckets: {counts:?}"
    );
    // Both ways of meeting a side: reconcile in fewer buckets than it was written in, and in
    // more.
    assert!(
        counts.iter().any(|[n, c, r]| n > r || c > r),
        "no side with more buckets than the join: {counts:?}"
    );
    assert!(
        counts.iter().any(|[n, c, r]| n < r || c < r),
        "no side with fewer buckets than the join: {counts:?}"
    );
}

#[test]
fn a_query_whose_match_key_is_not_the_channels_is_refused_when_bucketed() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = support::generate_with(
        dir.path(),
        "2026-11-20",
        1,
        600,
        5,
        &["--channel", "alipay"],
    );
    // The analyst's query builds the key in lower case: records meet as before within a
    // bucket, but the sides were bucketed on the channel's key, so pairs could be torn apart.
    let sql = dir.path().join("sql");
    std::fs::create_dir_all(&sql).expect("sql dir");
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/reconcile.sql"))
            .expect("reconcile.sql");
    let edited = text
        .replace("'REFUND:' || refund_id", "'refund:' || refund_id")
        .replace("'PAY:' || merchant_order_id", "'pay:' || merchant_order_id");
    assert_ne!(edited, text);
    std::fs::write(sql.join("reconcile.sql"), edited).expect("write");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        format!("bucket_rows = 100\nsql_dir = \"sql\"\n{text}"),
    )
    .expect("config");
    let only = ["--channel", "alipay"];
    let (code, out, err) = support::run_day(&cfg, "2026-11-20", &only);
    assert_eq!(code, 2, "{out} {err}");
    assert!(
        err.contains("bucket_rows") && err.contains("match_key") && err.contains("reconcile.sql"),
        "the error names the query, the key and the setting: {err}"
    );
    // Joined whole, the same query runs (its keys are its own business).
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("bucket_rows = 100", "bucket_rows = 100000000"),
    )
    .expect("config");
    let (code, out, err) = support::run_day(&cfg, "2026-11-20", &only);
    assert_eq!(code, 0, "{out} {err}");
}
