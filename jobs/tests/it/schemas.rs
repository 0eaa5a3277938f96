//! Every output has its contract's schema on a day without differences as on a full day, so
//! one query reads many days: `SELECT … FROM 'results/*/*/diffs.parquet'`.

use std::path::Path;

use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::support::{file_of, generate, run_day};

/// A channel `clean` whose bill (WeChat's real layout, the example bill) the warehouse
/// matches record for record: its day has no differences at all.
async fn add_clean_channel(dir: &Path) {
    let bills = dir.join("bills/clean");
    std::fs::create_dir_all(&bills).expect("bills");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../formats/examples/tradebill_20261120.csv"),
        bills.join("tradebill_20261120.csv"),
    )
    .expect("bill");
    let ctx = SessionContext::new();
    let ts = |t: &str| format!("arrow_cast('{t}', 'Timestamp(Microsecond, Some(\"UTC\"))')");
    let orders = dir.join("warehouse/orders/dt=2026-11-20/clean.parquet");
    let refunds = dir.join("warehouse/refunds/dt=2026-11-20/clean.parquet");
    for (sql, path) in [
        (
            format!(
                "SELECT column1 AS order_no, 'clean' AS pay_channel, column2 AS channel_trade_no, \
                 CAST(column3 AS DECIMAL(18, 2)) AS amount, 'SUCCESS' AS status, \
                 column4 AS paid_at, 'M001' AS merchant_id FROM (VALUES \
                 ('WX20261120000001', '4200001234202611200000000001', '88.00', {}), \
                 ('WX20261120000002', '4200001234202611200000000002', '1200.00', {}))",
                ts("2026-11-20T01:15:02Z"),
                ts("2026-11-20T05:40:11Z")
            ),
            orders,
        ),
        (
            format!(
                "SELECT 'WXR20261120000001' AS refund_no, 'WX20261119000099' AS order_no, \
                 'clean' AS pay_channel, '50300001022026112000000001' AS channel_refund_no, \
                 CAST('45.00' AS DECIMAL(18, 2)) AS amount, 'SUCCESS' AS status, \
                 {} AS refunded_at, 'M001' AS merchant_id",
                ts("2026-11-20T08:05:45Z")
            ),
            refunds,
        ),
    ] {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("partition");
        ctx.sql(&format!(
            "COPY ({sql}) TO '{}' STORED AS PARQUET",
            path.display()
        ))
        .await
        .expect("plan")
        .collect()
        .await
        .expect("write");
    }
    let cfg = dir.join("reckon.toml");
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(
        "\n[[channel]]\nname = \"clean\"\nformat = \"wechat_trade_v3\"\ntime_zone = \"Asia/Shanghai\"\n\
         cut_window_secs = 300\ngrace_days = 1\nfee_rate = \"0.006\"\n\
         source = { kind = \"drop_folder\", path = \"bills/clean\", pattern = \"tradebill_{yyyymmdd}.csv\" }\n",
    );
    std::fs::write(&cfg, text).expect("config");
}

/// The Arrow schema of a Parquet file, as a reader sees it.
async fn schema_of(ctx: &SessionContext, path: &Path) -> String {
    let df = ctx
        .read_parquet(path.to_str().expect("utf8"), ParquetReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:?}", df.schema().as_arrow())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_day_and_a_full_day_have_one_schema_and_one_query_reads_both() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("d");
    let cfg = generate(&dir, "2026-11-20", 1, 400, 9);
    add_clean_channel(&dir).await;
    for channel in ["clean", "alipay"] {
        let (code, json, err) = run_day(&cfg, "2026-11-20", &["--channel", channel]);
        assert_eq!(code, 0, "{json}\n{err}");
    }
    let (_, json, _) = run_day(&cfg, "2026-11-20", &["--channel", "clean"]);
    let clean = &json["channels"][0];
    assert_eq!(
        clean["diff_rows"], 0,
        "the clean day has no differences: {clean}"
    );
    assert_eq!(clean["counts"]["MATCHED"], 3, "{clean}");

    let root = dir.join("output");
    let ctx = SessionContext::new();
    for (ar, file) in [
        ("results", "diffs.parquet"),
        ("results", "ledger.parquet"),
        ("stats", "by_hour.parquet"),
        ("stats", "by_merchant.parquet"),
        ("carryover", "part-0.parquet"),
    ] {
        let empty = schema_of(&ctx, &file_of(&root, ar, "clean", "2026-11-20", file)).await;
        let full = schema_of(&ctx, &file_of(&root, ar, "alipay", "2026-11-20", file)).await;
        assert_eq!(
            empty, full,
            "{ar}/{file}: the empty and the full day differ"
        );
    }
    // The contract's columns, in order, first.
    let diffs = ctx
        .read_parquet(
            file_of(&root, "results", "clean", "2026-11-20", "diffs.parquet")
                .to_str()
                .expect("utf8"),
            ParquetReadOptions::default(),
        )
        .await
        .expect("diffs");
    let names: Vec<String> = diffs
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let declared: Vec<String> = reckon::schema::DIFFS
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names[..declared.len()], declared[..]);
    for column in [
        "diff_id",
        "reason",
        "amount_delta",
        "channel_fee",
        "grace_until",
        "first_seen",
        "state",
    ] {
        assert!(names.iter().any(|n| n == column), "{column} in {names:?}");
    }

    // One query over every channel and day (DataFusion reads the Hive folders below
    // `results/`, the files named diffs.parquet).
    let results = format!("{}/results/", root.display());
    let only_diffs = ParquetReadOptions {
        file_extension: "diffs.parquet",
        ..Default::default()
    };
    ctx.register_parquet("diffs", &results, only_diffs)
        .await
        .expect("register");
    let rows = ctx
        .sql("SELECT category, count(*) AS n, sum(channel_amount) AS amount FROM diffs GROUP BY category")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("query");
    let n: usize = rows.iter().map(|b| b.num_rows()).sum();
    assert!(n > 3, "the full day's categories are read: {n}");
}
