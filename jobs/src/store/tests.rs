//! The store's unit tests: publishing, committing, cleaning, manifests, staging.
use super::*;
use crate::records::{DayStatus, Output, Stage};

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).expect("date")
}

fn staged_with(store: &Store, files: &[(&str, &str)]) -> Staging {
    let s = store
        .staging("reconcile", "alipay", date())
        .expect("staging");
    for (n, text) in files {
        std::fs::write(s.join(n), text).expect("write");
    }
    s
}

#[tokio::test]
async fn publish_puts_the_same_outputs_in_the_same_version_folder_and_others_beside() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::local(tmp.path()).expect("store");
    let a = staged_with(&store, &[("diffs.parquet", "d1"), ("ledger.parquet", "l1")]);
    let first = store
        .publish(&a, "results", "alipay", date())
        .await
        .expect("publish");
    assert_eq!(first.len(), 2);
    assert!(first[0]
        .path
        .starts_with("results/channel=alipay/dt=2026-11-20/_v="));
    assert_eq!(first[0].sha256, hex::encode(Sha256::digest(b"d1")));
    assert!(!a.exists(), "the staging folder is gone");
    let again = staged_with(&store, &[("diffs.parquet", "d1"), ("ledger.parquet", "l1")]);
    let second = store
        .publish(&again, "results", "alipay", date())
        .await
        .expect("again");
    assert_eq!(first, second, "the same outputs: the same folder and bytes");
    let other = staged_with(&store, &[("diffs.parquet", "d2"), ("ledger.parquet", "l1")]);
    let third = store
        .publish(&other, "results", "alipay", date())
        .await
        .expect("other");
    assert_ne!(third[0].path, first[0].path, "new outputs never overwrite");
    assert_eq!(
        std::fs::read(tmp.path().join(&first[0].path)).expect("old"),
        b"d1",
        "what a reader of the earlier folder reads is untouched"
    );
}

#[tokio::test]
async fn a_commit_names_every_file_and_refuses_a_version_it_did_not_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::local(tmp.path()).expect("store");
    let mut m = Manifest::new("alipay", "2026-11-20");
    let s = staged_with(&store, &[("part-0.parquet", "p")]);
    let files = store
        .publish(&s, "platform", "alipay", date())
        .await
        .expect("publish");
    let collect = Output::Collect(crate::records::CollectDetail {
        rows: 1,
        partitions_read: vec![],
        sha256: "x".into(),
        buckets: 1,
        sql: "platform.sql".into(),
        spilled: Default::default(),
    });
    let ran = Ran {
        finished_at: "2026-11-21T00:00:00Z".into(),
        duration_ms: 1,
        attempts: 1,
    };
    m.record_done(Stage::Collect, &ran, files.clone(), collect);
    assert!(store
        .committed("alipay", date())
        .await
        .expect("read")
        .is_none());
    let c = store.commit(&m, date(), None).await.expect("first commit");
    assert_eq!(c.files, files);
    let (read, v) = store
        .committed_at("alipay", date())
        .await
        .expect("read")
        .expect("committed");
    assert_eq!(read.files, files);
    // A writer that read no pointer (or an older one) cannot replace it.
    let e = store.commit(&m, date(), None).await.expect_err("exists");
    assert_eq!(e.exit_code(), 75, "{e}");
    store
        .commit(&m, date(), Some(&v))
        .await
        .expect("at its version");
    let e = store
        .commit(&m, date(), Some(&v))
        .await
        .expect_err("stale version");
    assert!(e.to_string().contains("another run committed"), "{e}");
}

#[tokio::test]
async fn clean_removes_only_folders_no_manifest_names() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::local(tmp.path()).expect("store");
    let publish = |files: &'static [(&'static str, &'static str)]| {
        let s = staged_with(&store, files);
        let store = store.clone();
        async move {
            store
                .publish(&s, "results", "alipay", date())
                .await
                .expect("publish")
        }
    };
    let committed = publish(&[("diffs.parquet", "committed")]).await;
    let working = publish(&[("diffs.parquet", "working")]).await;
    let reader = publish(&[("diffs.parquet", "being read")]).await;
    let orphan = publish(&[("diffs.parquet", "crashed before its record")]).await;
    let ran = Ran {
        finished_at: "t".into(),
        duration_ms: 0,
        attempts: 1,
    };
    let report = |files: Vec<FileSum>| {
        let mut m = Manifest::new("alipay", "2026-11-20");
        m.stages.report = Some(Record {
            state: crate::records::StageState::Done,
            finished_at: ran.finished_at.clone(),
            duration_ms: 0,
            files: files.iter().map(|f| f.path.clone()).collect(),
            checksums: files,
            detail: Detail::Failed { error: "-".into() },
            attempts: 1,
        });
        m.status = DayStatus::Reconciled;
        m
    };
    store
        .commit(&report(committed.clone()), date(), None)
        .await
        .expect("commit");
    store
        .save_manifest(&report(working.clone()), date())
        .await
        .expect("save");
    let gone = store
        .clean("alipay", date(), &[reader[0].path.clone()])
        .await
        .expect("clean");
    assert_eq!(gone, 1);
    for (f, there) in [
        (&committed, true),
        (&working, true),
        (&reader, true),
        (&orphan, false),
    ] {
        assert_eq!(tmp.path().join(&f[0].path).exists(), there, "{}", f[0].path);
    }
}

#[tokio::test]
async fn a_day_reconciled_before_pointers_reads_as_committed_from_its_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::local(tmp.path()).expect("store");
    let old = "carryover/channel=alipay/dt=2026-11-20/part-0.parquet";
    std::fs::create_dir_all(tmp.path().join(old).parent().expect("dir")).expect("dir");
    std::fs::write(tmp.path().join(old), b"carry").expect("write");
    // A manifest as reckon wrote it before #18: files at fixed paths, no checksums.
    let text = format!(
        r#"{{"channel":"alipay","bill_date":"2026-11-20","run_id":"r1","status":"reconciled",
        "error":null,"stages":{{
          "reconcile":{{"state":"done","finished_at":"t","duration_ms":1,"files":["{old}"],
            "detail":{{"error":"-"}}}},
          "report":{{"state":"done","finished_at":"t","duration_ms":1,
            "files":["results/channel=alipay/dt=2026-11-20/summary.json"],
            "detail":{{"error":"-"}}}}}}}}"#
    );
    let rel = store.manifest_path("alipay", date());
    store
        .root()
        .put(&rel, text.into_bytes())
        .await
        .expect("put");
    let c = store
        .committed("alipay", date())
        .await
        .expect("read")
        .expect("a reconciled day reads as committed");
    assert_eq!(c.run_id.as_deref(), Some("r1"));
    let carry = c.area("carryover").next().expect("its carry-over");
    assert_eq!(
        store.sha256_of(carry).await.expect("sha"),
        hex::encode(Sha256::digest(b"carry"))
    );
    // Once it has a pointer, the pointer decides.
    let other = tempfile::tempdir().expect("tmp");
    let fresh = Store::local(other.path()).expect("store");
    assert!(fresh
        .committed("alipay", date())
        .await
        .expect("read")
        .is_none());
}

#[tokio::test]
async fn a_manifest_is_saved_whole_and_read_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::local(tmp.path()).expect("store");
    let fresh = store.manifest("alipay", date()).await.expect("fresh");
    assert_eq!(fresh.status, DayStatus::NeverRun);
    let mut m = fresh;
    m.run_id = Some("abc".into());
    m.status = DayStatus::Reconciled;
    store.save_manifest(&m, date()).await.expect("save");
    let back = store.manifest("alipay", date()).await.expect("read");
    assert_eq!(back.run_id.as_deref(), Some("abc"));
    assert_eq!(back.status, DayStatus::Reconciled);
    let dir = tmp.path().join(store.area("runs", "alipay", date()));
    let names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["manifest.json"], "no temporary file left");
}

#[test]
fn staging_goes_when_dropped_and_a_killed_attempts_at_the_next_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::local(tmp.path()).expect("store");
    let path = {
        let s = store.staging("fetch", "wechat", date()).expect("staging");
        std::fs::write(s.join("x"), b"x").expect("write");
        s.to_path_buf()
    };
    assert!(!path.exists(), "a failed attempt leaves nothing");
    // What a SIGKILL leaves: a folder no guard removed.
    let left = store
        .scratch()
        .join("staging/wechat-2026-11-20-collect-1-2");
    let other = store
        .scratch()
        .join("staging/alipay-2026-11-20-collect-1-2");
    std::fs::create_dir_all(&left).expect("left");
    std::fs::create_dir_all(&other).expect("other");
    store.clear_stale_staging("wechat", date()).expect("clear");
    assert!(!left.exists());
    assert!(other.exists(), "another channel's attempt is not touched");
}
