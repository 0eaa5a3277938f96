//! The review desk's state (issue #20): decisions with optimistic concurrency and four eyes,
//! and the hash-chained audit, on SQLite and on a real PostgreSQL: every scenario runs on
//! both.

use std::str::FromStr;

use reckon::desk::{Action, Desk, DeskConfig, Difference, Refusal, Role, State, Status, User};
use rust_decimal::Decimal;

use crate::support::run;

fn user(name: &str, role: Role) -> User {
    User {
        name: name.into(),
        role,
    }
}

fn diff(key: &str, amount: &str) -> Difference {
    Difference {
        channel: "wechat".into(),
        ageing_key: key.into(),
        category: "AMOUNT_MISMATCH".into(),
        match_key: Some(format!("PAY:{key}")),
        channel_amount: Some(Decimal::from_str(amount).expect("amount")),
        platform_amount: Some(Decimal::from_str("10.00").expect("amount")),
    }
}

fn config(database: &str) -> DeskConfig {
    DeskConfig {
        database: Some(database.into()),
        four_eyes_above: Some(Decimal::from_str("1000.00").expect("limit")),
        timeout_secs: Some(10),
        ..DeskConfig::default()
    }
}

/// The desk whose database `database` names (a SQLite file, or a PostgreSQL URL).
async fn desk_at(database: &str) -> Desk {
    Desk::open(&config(database), std::path::Path::new("."))
        .await
        .expect("open")
}

/// A SQLite desk in the file `path`.
async fn sqlite_desk(path: &std::path::Path) -> Desk {
    desk_at(&path.display().to_string()).await
}

/// [`scenarios`] and [`tampered`], each on a fresh desk whose database `at(i)` names.
fn every_case(at: impl Fn(usize) -> String) {
    let n = std::sync::atomic::AtomicUsize::new(0);
    runtime().block_on(async {
        let fresh =
            async || desk_at(&at(n.fetch_add(1, std::sync::atomic::Ordering::SeqCst))).await;
        scenarios(&fresh().await).await;
        tampered(fresh).await;
    });
}

/// Runs `sql` on the desk's own database (what someone with access to it could do).
async fn tamper(desk: &Desk, sql: &str) {
    let mut tx = desk.db().write().await.expect("begin");
    tx.exec(sql, &[]).await.expect(sql);
    tx.commit().await.expect("commit");
}

/// Whether the difference `key` is closed by a decision in force.
async fn decided(desk: &Desk, key: &str) -> bool {
    desk.state("wechat", key).await.expect("state").decided()
}

/// Every scenario, on one desk.
async fn scenarios(desk: &Desk) {
    let ann = user("ann", Role::Resolver);
    let bob = user("bob", Role::Resolver);
    let vic = user("vic", Role::Viewer);
    let ada = user("ada", Role::Approver);
    let small = diff("k-small", "10.50");

    // Refused before anything is written: no comment, a viewer, reopening an open difference.
    let r = desk
        .decide(&ann, &small, 0, Action::WriteOff, "  ")
        .await
        .expect("decide");
    assert_eq!(r, Err(Refusal::NoComment));
    let r = desk
        .decide(&vic, &small, 0, Action::WriteOff, "ok")
        .await
        .expect("decide");
    assert!(
        matches!(
            r,
            Err(Refusal::NotAllowed {
                role: Role::Viewer,
                ..
            })
        ),
        "{r:?}"
    );
    let r = desk
        .decide(&ann, &small, 0, Action::Reopen, "why")
        .await
        .expect("decide");
    assert_eq!(r, Err(Refusal::NothingToReopen));
    assert_eq!(
        desk.state("wechat", "k-small").await.expect("state"),
        State::default()
    );

    // Under the four-eyes amount: in force at once.
    let d = desk
        .decide(
            &ann,
            &small,
            0,
            Action::WriteOff,
            "rounding on the channel's side",
        )
        .await
        .expect("decide")
        .expect("decided");
    assert_eq!(
        (d.status, d.action, d.decided_by.as_str()),
        (Status::Effective, Action::WriteOff, "ann")
    );
    assert_eq!(
        d.channel_amount,
        Some(Decimal::from_str("10.50").expect("amount"))
    );
    assert_eq!(d.match_key.as_deref(), Some("PAY:k-small"));
    let s = desk.state("wechat", "k-small").await.expect("state");
    assert_eq!(s.version, 1);
    assert!(s.decided());

    // Two people on one difference: bob saw version 0 too; he is told, and sees ann's decision.
    let r = desk
        .decide(
            &bob,
            &small,
            0,
            Action::PlatformWins,
            "the platform is right",
        )
        .await
        .expect("decide");
    match r {
        Err(Refusal::Stale { seen: 0, current }) => {
            assert_eq!(current.version, 1);
            let first = current.decision.expect("the first decision");
            assert_eq!(
                (first.decided_by.as_str(), first.action),
                ("ann", Action::WriteOff)
            );
        }
        other => panic!("expected a stale refusal, got {other:?}"),
    }
    let text = desk
        .decide(&bob, &small, 0, Action::PlatformWins, "again")
        .await
        .expect("decide")
        .expect_err("stale")
        .to_string();
    assert!(text.contains("write_off by ann"), "{text}");

    // Reopened: open again, the earlier decision superseded, both in the history.
    let r = desk
        .decide(&bob, &small, 1, Action::Reopen, "the channel disputes it")
        .await
        .expect("decide")
        .expect("reopened");
    assert_eq!(r.action, Action::Reopen);
    assert!(!decided(desk, "k-small").await);
    let history = desk.decisions("wechat", "k-small").await.expect("history");
    assert_eq!(
        history
            .iter()
            .map(|d| (d.action, d.status))
            .collect::<Vec<_>>(),
        vec![
            (Action::WriteOff, Status::Superseded),
            (Action::Reopen, Status::Effective)
        ]
    );

    // Above the four-eyes amount: pending until an approver other than the author approves.
    let big = diff("k-big", "-25000.00");
    let d = desk
        .decide(&ann, &big, 0, Action::ChannelWins, "the order was repriced")
        .await
        .expect("decide")
        .expect("decided");
    assert_eq!(d.status, Status::PendingApproval);
    assert!(!decided(desk, "k-big").await);
    let r = desk.review(&bob, d.id, 1, true, "").await.expect("review");
    assert!(
        matches!(
            r,
            Err(Refusal::NotAllowed {
                role: Role::Resolver,
                needs: Role::Approver
            })
        ),
        "{r:?}"
    );
    let boss = user("ann", Role::Admin);
    let r = desk.review(&boss, d.id, 1, true, "").await.expect("review");
    assert_eq!(
        r,
        Err(Refusal::OwnDecision),
        "the author approving under another role"
    );
    let r = desk.review(&ada, d.id, 0, true, "").await.expect("review");
    assert!(matches!(r, Err(Refusal::Stale { seen: 0, .. })), "{r:?}");
    let ok = desk
        .review(&ada, d.id, 1, true, "")
        .await
        .expect("review")
        .expect("approved");
    assert_eq!(
        (ok.status, ok.reviewed_by.as_deref()),
        (Status::Effective, Some("ada"))
    );
    assert!(decided(desk, "k-big").await);
    let r = desk.review(&ada, d.id, 2, true, "").await.expect("review");
    assert_eq!(
        r,
        Err(Refusal::NotPending {
            status: Status::Effective
        })
    );

    // A rejection needs its reason, and leaves the difference open.
    let other = diff("k-other", "5000.00");
    let d = desk
        .decide(&bob, &other, 0, Action::Ignore, "a test order")
        .await
        .expect("decide")
        .expect("decided");
    assert_eq!(
        desk.review(&ada, d.id, 1, false, "").await.expect("review"),
        Err(Refusal::NoComment)
    );
    let r = desk
        .review(&ada, d.id, 1, false, "not a test order: merchant 7 is live")
        .await
        .expect("review")
        .expect("rejected");
    assert_eq!(r.status, Status::Rejected);
    assert!(!decided(desk, "k-other").await);

    // The audit: intact, one entry per change, in order.
    let v = desk.verify_audit().await.expect("verify");
    assert!(v.intact(), "{:?}", v.problems);
    assert_eq!(
        v.entries, 6,
        "decide, reopen, decide, approve, decide, reject"
    );

    // Comments keep their order and need text; assigning is a change of the version.
    assert_eq!(
        desk.comment(&vic, "wechat", "k-other", "hm")
            .await
            .expect("comment"),
        Err(Refusal::NotAllowed {
            role: Role::Viewer,
            needs: Role::Resolver
        })
    );
    assert_eq!(
        desk.comment(&bob, "wechat", "k-other", " ")
            .await
            .expect("comment"),
        Err(Refusal::NoComment)
    );
    for text in ["asked the merchant", "merchant confirms a live order"] {
        desk.comment(&bob, "wechat", "k-other", text)
            .await
            .expect("comment")
            .expect("commented");
    }
    let texts: Vec<String> = (desk.comments("wechat", "k-other").await.expect("comments"))
        .into_iter()
        .map(|c| format!("{}: {}", c.author, c.text))
        .collect();
    assert_eq!(
        texts,
        [
            "bob: asked the merchant",
            "bob: merchant confirms a live order"
        ]
    );
    let s = desk
        .assign(&ann, "wechat", "k-other", 2, Some("bob"))
        .await
        .expect("assign")
        .expect("assigned");
    assert_eq!((s.version, s.assignee.as_deref()), (3, Some("bob")));
    assert_eq!(
        s.decision.map(|d| d.status),
        Some(Status::Rejected),
        "the decision stays"
    );
    let r = desk
        .assign(&ann, "wechat", "k-other", 2, None)
        .await
        .expect("assign");
    assert!(matches!(r, Err(Refusal::Stale { seen: 2, .. })), "{r:?}");
    let v = desk.verify_audit().await.expect("verify");
    assert!(v.intact(), "{:?}", v.problems);
    assert_eq!(v.entries, 9, "two comments and an assignment more");
}

/// What `verify` finds on a desk filled by [`scenarios`] after `sql` ran on its database.
async fn verify_after(open: &impl AsyncFn() -> Desk, sql: &str) -> Vec<String> {
    let desk = open().await;
    scenarios(&desk).await;
    tamper(&desk, sql).await;
    desk.verify_audit().await.expect("verify").problems
}

/// The audit's tampering cases, each on a desk of its own.
async fn tampered(open: impl AsyncFn() -> Desk) {
    let has = |problems: &[String], text: &str| {
        assert!(
            problems.iter().any(|p| p.contains(text)),
            "{text:?} not in {problems:?}"
        )
    };
    // An edited entry.
    let p = verify_after(
        &open,
        "UPDATE desk_audit SET detail = replace(detail, 'write_off', 'ignore') WHERE seq = 1",
    )
    .await;
    assert_eq!(p.len(), 1, "{p:?}");
    has(&p, "entry 1 (decide by ann");

    // An entry deleted from the middle.
    let p = verify_after(&open, "DELETE FROM desk_audit WHERE seq = 3").await;
    has(&p, "entries 3..3 are missing");
    has(
        &p,
        "decision 3 of wechat/k-big: its audit entry 3 is missing",
    );

    // The last entry deleted (the chain alone cannot tell): the difference's state names it.
    let p = verify_after(&open, "DELETE FROM desk_audit WHERE seq = 9").await;
    assert_eq!(
        p,
        vec![
            "the last change (version 3) of wechat/k-other: its audit entry 9 is missing (deleted)"
                .to_string()
        ]
    );
    // A comment's entry deleted from the middle of the chain.
    let p = verify_after(&open, "DELETE FROM desk_audit WHERE seq = 7").await;
    has(
        &p,
        "comment 1 of wechat/k-other: its audit entry 7 is missing",
    );

    // A decision moved to another difference: its entry names the one it was taken on.
    let p = verify_after(
        &open,
        "UPDATE desk_decisions SET ageing_key = 'k-elsewhere' WHERE id = 1",
    )
    .await;
    has(
        &p,
        "decision 1 of wechat/k-elsewhere: its audit entry 1 is about wechat/k-small",
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn decisions_and_the_audit_on_sqlite() {
    let tmp = tempfile::tempdir().expect("tmp");
    every_case(|i| {
        tmp.path()
            .join(format!("desk-{i}.sqlite"))
            .display()
            .to_string()
    });
}

#[test]
fn decisions_and_the_audit_on_postgres() {
    let pg = match crate::services::Postgres::start() {
        Ok(p) => p,
        Err(why) => return crate::services::unavailable("a PostgreSQL server", &why),
    };
    // A database of its own for each desk.
    let base = pg.url.strip_suffix("/postgres").expect("the server's url");
    every_case(|i| {
        pg.psql(&format!("CREATE DATABASE desk{i}"));
        format!("{base}/desk{i}")
    });
}

/// Decisions from two tasks at once on one difference: exactly one wins, the audit stays one
/// chain.
#[test]
fn concurrent_decisions_on_one_difference_leave_one_winner() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let desk = sqlite_desk(&tmp.path().join("desk.sqlite")).await;
        let d = diff("k-race", "12.00");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (desk, d) = (desk.clone(), d.clone());
                tokio::spawn(async move {
                    let who = user(&format!("user{i}"), Role::Resolver);
                    desk.decide(&who, &d, 0, Action::WriteOff, "mine").await
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            match t.await.expect("task").expect("decide") {
                Ok(_) => won += 1,
                Err(Refusal::Stale { current, .. }) => assert_eq!(current.version, 1),
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1);
        assert!(desk.verify_audit().await.expect("verify").intact());
    });
}

/// `reckon audit verify` on a config's desk: exit 0 and the chain's head; after an edit, exit
/// 1 naming the entry.
#[test]
fn audit_verify_names_an_edited_entry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("reckon.toml");
    std::fs::write(
        &cfg,
        "storage_root = \"out\"\n[warehouse]\norders = \"w/orders\"\nrefunds = \"w/refunds\"\n\
         [[channel]]\nname = \"wechat\"\nformat = \"wechat_trade_v3\"\ntime_zone = \"Asia/Shanghai\"\n\
         source = { kind = \"drop_folder\", path = \"bills\", pattern = \"b_{yyyymmdd}.csv\" }\n\
         [desk]\ndatabase = \"state/desk.sqlite\"\nfour_eyes_above = \"1000.00\"\n",
    )
    .expect("config");
    runtime().block_on(async {
        let desk = sqlite_desk(&tmp.path().join("state/desk.sqlite")).await;
        scenarios(&desk).await;
    });
    let o = run(&["audit", "verify", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .expect("json"),
    )
    .expect("json");
    assert_eq!(
        (last["intact"].as_bool(), last["entries"].as_i64()),
        (Some(true), Some(9))
    );
    runtime().block_on(async {
        let desk = sqlite_desk(&tmp.path().join("state/desk.sqlite")).await;
        tamper(
            &desk,
            "UPDATE desk_audit SET actor = 'mallory' WHERE seq = 2",
        )
        .await;
    });
    let o = run(&["audit", "verify", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("entry 2 (decide by mallory"), "{err}");
}

/// The list's query on committed days: the count and sums of a filter equal those counted
/// from the committed files themselves; search, sort and pages.
#[test]
fn the_differences_list_counts_sums_searches_and_pages_committed_days() {
    use crate::support::{file_of, generate, read, s};
    use reckon::desk::query::{differences, Filter, Sort};

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 2, 3000, 5);
    for day in ["2026-11-20", "2026-11-21"] {
        let (code, _, err) = crate::support::run_day(&cfg, day, &["--channel", "wechat"]);
        assert_eq!(code, 0, "{err}");
    }
    // What the committed files hold, counted here.
    let root = dir.join("output");
    let mut all = Vec::new();
    for day in ["2026-11-20", "2026-11-21"] {
        for b in read(&file_of(&root, "results", "wechat", day, "diffs.parquet")) {
            let amounts = b
                .column_by_name("amount_delta")
                .expect("amount_delta")
                .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>()
                .clone();
            for i in 0..b.num_rows() {
                let delta = (!amounts.is_null(i))
                    .then(|| Decimal::from_i128_with_scale(amounts.value(i), 2));
                all.push((
                    s(&b, "diff_id", i).expect("diff_id"),
                    s(&b, "category", i).expect("category"),
                    delta,
                ));
            }
        }
    }
    assert!(all.len() > 20, "a sample with differences: {}", all.len());
    use datafusion::arrow::array::{Array, AsArray};

    let config = reckon::config::Config::load(&cfg).expect("config");
    let store = reckon::pipeline::store(&config).expect("store");
    let ctx = datafusion::prelude::SessionContext::new();
    let channels = vec!["wechat".to_string(), "alipay".to_string()];
    let base = Filter {
        channels: vec!["wechat".into()],
        from: chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date"),
        to: chrono::NaiveDate::from_ymd_opt(2026, 11, 22).expect("date"),
        categories: vec![],
        states: vec![],
        min_amount: None,
        max_amount: None,
        first_seen_by: None,
        search: None,
        keys: None,
        sort: Sort::DiffId,
        descending: false,
        page: 0,
        page_size: 7,
    };
    runtime().block_on(async {
        let page = differences(&store, &ctx, &channels, &base)
            .await
            .expect("query");
        assert_eq!(page.total as usize, all.len());
        let delta: Decimal = all.iter().filter_map(|r| r.2).sum();
        assert_eq!(page.delta_sum, delta);
        assert_eq!(
            page.not_committed,
            vec![(
                "wechat".to_string(),
                chrono::NaiveDate::from_ymd_opt(2026, 11, 22).expect("date")
            )]
        );
        // Pages in diff_id order, each the next 7.
        let mut ids: Vec<&String> = all.iter().map(|r| &r.0).collect();
        ids.sort();
        let second = differences(
            &store,
            &ctx,
            &channels,
            &Filter {
                page: 1,
                ..base.clone()
            },
        )
        .await
        .expect("query");
        let got: Vec<&String> = page
            .rows
            .iter()
            .chain(&second.rows)
            .map(|r| &r.diff_id)
            .collect();
        assert_eq!(got, ids[..14].to_vec());

        // One category: its count and its deltas.
        let category = all[0].1.clone();
        let one = differences(
            &store,
            &ctx,
            &channels,
            &Filter {
                categories: vec![category.clone()],
                ..base.clone()
            },
        )
        .await
        .expect("query");
        let theirs: Vec<_> = all.iter().filter(|r| r.1 == category).collect();
        assert_eq!(one.total as usize, theirs.len());
        assert_eq!(
            one.delta_sum,
            theirs.iter().filter_map(|r| r.2).sum::<Decimal>()
        );
        assert!(one.rows.iter().all(|r| r.category == category));

        // A search by id finds that difference alone.
        let wanted = all[all.len() / 2].0.clone();
        let found = differences(
            &store,
            &ctx,
            &channels,
            &Filter {
                search: Some(wanted.clone()),
                ..base.clone()
            },
        )
        .await
        .expect("query");
        assert_eq!(found.total, 1);
        assert_eq!(found.rows[0].diff_id, wanted);
        // Each row with the ageing key its day's ledger gives it.
        let (day, key) = (
            found.rows[0].bill_date.to_string(),
            found.rows[0].ageing_key.clone(),
        );
        let ledger = reckon::stages::ageing::read(&file_of(
            &root,
            "results",
            "wechat",
            &day,
            "ledger.parquet",
        ))
        .expect("ledger");
        let entry = ledger
            .iter()
            .find(|e| e.diff_id.as_deref() == Some(wanted.as_str()))
            .expect("its entry");
        assert_eq!(key.as_deref(), Some(entry.key.as_str()));
        assert!(page
            .rows
            .iter()
            .chain(&second.rows)
            .all(|r| r.ageing_key.is_some()));

        // The same from the command line: the table, then the page as JSON.
        let c = cfg.to_str().expect("utf8");
        let o = run(&[
            "desk",
            "list",
            "--config",
            c,
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-21",
            "--channel",
            "wechat",
            "--search",
            &wanted,
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.starts_with("1 differences;"), "{out}");
        let last: serde_json::Value =
            serde_json::from_str(out.lines().last().expect("json")).expect("json");
        assert_eq!(
            last["page"]["rows"][0]["diff_id"].as_str(),
            Some(wanted.as_str())
        );

        // The largest first: sizes never grow down the page.
        let big = differences(
            &store,
            &ctx,
            &channels,
            &Filter {
                sort: Sort::Amount,
                descending: true,
                page_size: 50,
                ..base.clone()
            },
        )
        .await
        .expect("query");
        let sizes: Vec<Decimal> = big
            .rows
            .iter()
            .map(|r| {
                [r.channel_amount, r.platform_amount]
                    .into_iter()
                    .flatten()
                    .map(|a| a.abs())
                    .max()
                    .unwrap_or_default()
            })
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        // And an amount range keeps only what is in it.
        let floor = sizes[sizes.len() / 2];
        let over = differences(
            &store,
            &ctx,
            &channels,
            &Filter {
                min_amount: Some(floor),
                ..base.clone()
            },
        )
        .await
        .expect("query");
        assert!(
            over.total >= (sizes.len() / 2 + 1) as u64 && over.total < page.total,
            "{}",
            over.total
        );
    });
}

/// Decisions reach the data: a decision that fits its difference resolves it by hand in the
/// next day's ledger, and later days no longer carry it; one whose difference changed since
/// stays open, flagged; the summary counts both; a replay applies the decisions the day
/// recorded, not the desk's of today.
#[test]
fn a_decision_resolves_its_difference_on_the_next_day_and_a_changed_one_is_flagged() {
    use crate::support::{file_of, generate, run_day};
    use reckon::stages::ageing;

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 3, 2000, 11);
    let root = dir.join("output");
    let day = |d: &str| {
        let (code, json, err) = run_day(&cfg, d, &["--channel", "wechat"]);
        assert_eq!(code, 0, "{json}\n{err}");
        json["channels"][0].clone()
    };
    let ledger = |d: &str| {
        ageing::read(&file_of(&root, "results", "wechat", d, "ledger.parquet")).expect("ledger")
    };
    day("2026-11-20");
    assert!(
        !dir.join("desk.sqlite").exists(),
        "a reconcile never creates a desk"
    );
    let open: Vec<ageing::Entry> = (ledger("2026-11-20").into_iter())
        .filter(|e| e.state != ageing::RESOLVED && e.category != "CROSS_DAY_PENDING")
        .collect();
    assert!(open.len() >= 2, "{open:?}");
    let (fits, changed) = (&open[0], &open[1]);
    let money = |c: Option<i128>| c.map(|c| Decimal::from_i128_with_scale(c, 2));
    runtime().block_on(async {
        let desk = Desk::open(&DeskConfig::default(), &dir)
            .await
            .expect("desk");
        let ann = user("ann", Role::Resolver);
        // The second as a person saw it before its amount changed (a cent apart).
        for (e, shift) in [(fits, 0), (changed, 1)] {
            let d = Difference {
                channel: "wechat".into(),
                ageing_key: e.key.clone(),
                category: e.category.clone(),
                match_key: e.match_key.clone(),
                channel_amount: match shift {
                    0 => money(e.channel_amount),
                    _ => money(Some(e.channel_amount.unwrap_or(0) + shift)),
                },
                platform_amount: money(e.platform_amount),
            };
            desk.decide(
                &ann,
                &d,
                0,
                Action::WriteOff,
                "below the cost of chasing it",
            )
            .await
            .expect("decide")
            .expect("decided");
        }
    });

    let s2 = day("2026-11-21");
    let l2 = ledger("2026-11-21");
    let by_key = |l: &[ageing::Entry], k: &str| l.iter().find(|e| e.key == k).cloned();
    let a = by_key(&l2, &fits.key).expect("the decided difference in the next ledger");
    assert_eq!(
        (
            a.state.as_str(),
            a.resolved_by.as_deref(),
            a.resolved_on.map(|d| d.to_string())
        ),
        (
            ageing::RESOLVED,
            Some(ageing::BY_MANUAL),
            Some("2026-11-21".to_string())
        )
    );
    let m = a.decision.expect("the decision on it");
    assert_eq!(
        (m.action.as_str(), m.decided_by.as_str(), m.changed),
        ("write_off", "ann", false)
    );
    assert!(!m.decided_at.is_empty());
    let b = by_key(&l2, &changed.key).expect("the changed one");
    assert_eq!(
        b.state,
        ageing::PERSISTING,
        "not closed by a decision that no longer fits"
    );
    assert!(b.decision.expect("flagged").changed);
    assert_eq!(
        s2["ageing"]["resolved"][ageing::BY_MANUAL].as_u64(),
        Some(1),
        "{}",
        s2["ageing"]
    );
    assert_eq!(
        s2["ageing"]["flagged"].as_u64(),
        Some(1),
        "{}",
        s2["ageing"]
    );

    // Later days no longer carry it; the flagged one stays open and flagged.
    day("2026-11-22");
    let l3 = ledger("2026-11-22");
    assert!(
        by_key(&l3, &fits.key).is_none(),
        "a decided difference carried on"
    );
    assert!(
        by_key(&l3, &changed.key)
            .expect("still open")
            .decision
            .expect("flag")
            .changed
    );

    // The report says it.
    let day2 = |command: &[&str]| {
        let c = cfg.to_str().expect("utf8");
        let tail = ["--config", c, "--date", "2026-11-21", "--channel", "wechat"];
        run(&[command, &tail].concat())
    };
    let o = day2(&["report"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("review desk: 1 decided today"), "{text}");

    // A replay of day 2 applies what the day recorded: byte for byte, whatever the desk says now.
    runtime().block_on(async {
        let desk = Desk::open(&DeskConfig::default(), &dir)
            .await
            .expect("desk");
        let state = desk.state("wechat", &fits.key).await.expect("state");
        desk.decide(
            &user("bob", Role::Resolver),
            &Difference {
                channel: "wechat".into(),
                ageing_key: fits.key.clone(),
                category: fits.category.clone(),
                match_key: fits.match_key.clone(),
                channel_amount: None,
                platform_amount: None,
            },
            state.version,
            Action::Reopen,
            "reopened after the day",
        )
        .await
        .expect("decide")
        .expect("reopened");
    });
    let o = day2(&["verify", "--replay"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
