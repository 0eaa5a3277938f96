//! Bill templates on the example bills of `formats/examples/` (each in its channel's real
//! layout) through `reckon normalize`, and the ways a bill can be wrong.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};

use crate::support::{file_of, generate_with, i64v, read, run, run_day, s};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../formats/examples")
        .join(name)
}

/// Runs `reckon normalize`; returns (exit code, JSON line, stderr).
fn normalize(
    format: &str,
    input: &Path,
    out: &Path,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "normalize",
        "--format",
        format,
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let json = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("json line");
    (
        o.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn one(path: &Path) -> RecordBatch {
    let batches = read(path);
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| reckon::schema::BILL.clone());
    concat_batches(&schema, &batches).expect("concat")
}

fn money(b: &RecordBatch, col: &str, i: usize) -> Option<String> {
    let a = b
        .column_by_name(col)
        .expect(col)
        .as_primitive::<Decimal128Type>();
    (!a.is_null(i)).then(|| rust_decimal::Decimal::from_i128_with_scale(a.value(i), 2).to_string())
}

fn utc(b: &RecordBatch, i: usize) -> String {
    let a = b
        .column_by_name("txn_time")
        .expect("txn_time")
        .as_primitive::<TimestampMicrosecondType>();
    DateTime::<Utc>::from_timestamp_micros(a.value(i))
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// (txn_type, channel_txn_id, merchant_order_id, refund_id, amount, fee, status, UTC time)
type Expected<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    &'a str,
    &'a str,
);

fn check_rows(b: &RecordBatch, want: &[Expected<'_>]) {
    assert_eq!(b.num_rows(), want.len());
    for (i, w) in want.iter().enumerate() {
        let got = (
            s(b, "txn_type", i).unwrap_or_default(),
            s(b, "channel_txn_id", i).unwrap_or_default(),
            s(b, "merchant_order_id", i).unwrap_or_default(),
            s(b, "refund_id", i),
            money(b, "amount", i).unwrap_or_default(),
            money(b, "fee", i),
            s(b, "status", i).unwrap_or_default(),
            utc(b, i),
        );
        assert_eq!(
            (
                got.0.as_str(),
                got.1.as_str(),
                got.2.as_str(),
                got.3.as_deref(),
                got.4.as_str(),
                got.5.as_deref(),
                got.6.as_str(),
                got.7.as_str()
            ),
            *w,
            "row {i}"
        );
    }
}

#[test]
fn every_shipped_template_reads_its_example_bill() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cases: Vec<(&str, &str, Vec<Expected<'_>>, u64)> = vec![
        (
            "alipay_trade_v1",
            "20881234567890120156_20261120.csv.zip",
            vec![
                (
                    "PAY",
                    "2026112022001400001001",
                    "ORD20261120000001",
                    None,
                    "199.00",
                    Some("1.19"),
                    "SUCCESS",
                    "2026-11-20T00:01:15Z",
                ),
                (
                    "PAY",
                    "2026112022001400001002",
                    "ORD20261120000002",
                    None,
                    "32.50",
                    Some("0.20"),
                    "SUCCESS",
                    "2026-11-20T04:30:02Z",
                ),
                (
                    "PAY",
                    "2026112022001400001003",
                    "ORD20261120000003",
                    None,
                    "1288.00",
                    Some("7.73"),
                    "SUCCESS",
                    "2026-11-20T15:59:58Z",
                ),
                (
                    "REFUND",
                    "2026111922001400000990",
                    "ORD20261119000990",
                    Some("RF20261120000001"),
                    "199.00",
                    Some("1.19"),
                    "SUCCESS",
                    "2026-11-20T02:00:03Z",
                ),
            ],
            0,
        ),
        (
            "alipay_fund_v1",
            "20881234567890120156_20261120_fund.csv.zip",
            vec![
                (
                    "PAY",
                    "2026112022001400001001",
                    "ORD20261120000001",
                    None,
                    "199.00",
                    None,
                    "SUCCESS",
                    "2026-11-20T00:01:15Z",
                ),
                (
                    "REFUND",
                    "2026111922001400000990",
                    "ORD20261119000990",
                    Some("ORD20261119000990"),
                    "199.00",
                    None,
                    "SUCCESS",
                    "2026-11-20T02:00:03Z",
                ),
                (
                    "PAY",
                    "2026112022001400001002",
                    "ORD20261120000002",
                    None,
                    "32.50",
                    None,
                    "SUCCESS",
                    "2026-11-20T04:30:02Z",
                ),
            ],
            2,
        ),
        (
            "wechat_trade_v3",
            "tradebill_20261120.csv",
            vec![
                (
                    "PAY",
                    "4200001234202611200000000001",
                    "WX20261120000001",
                    None,
                    "88.00",
                    Some("0.53"),
                    "SUCCESS",
                    "2026-11-20T01:15:02Z",
                ),
                (
                    "PAY",
                    "4200001234202611200000000002",
                    "WX20261120000002",
                    None,
                    "1200.00",
                    Some("7.20"),
                    "SUCCESS",
                    "2026-11-20T05:40:11Z",
                ),
                (
                    "REFUND",
                    "50300001022026112000000001",
                    "WX20261119000099",
                    Some("WXR20261120000001"),
                    "45.00",
                    Some("0.27"),
                    "SUCCESS",
                    "2026-11-20T08:05:45Z",
                ),
            ],
            0,
        ),
        (
            "wechat_trade_v2",
            "wechat_v2_20190601.csv",
            vec![
                (
                    "PAY",
                    "4200000300201906010000000001",
                    "OLD20190601000001",
                    None,
                    "10.00",
                    Some("0.06"),
                    "SUCCESS",
                    "2019-06-01T02:11:12Z",
                ),
                (
                    "REFUND",
                    "50000000382019060100000001",
                    "OLD20190531000009",
                    Some("OLDR20190601000001"),
                    "20.00",
                    Some("0.12"),
                    "SUCCESS",
                    "2019-06-01T03:00:00Z",
                ),
            ],
            0,
        ),
        (
            "stripe_balance_v1",
            "stripe_balance_2026-11-20.csv",
            vec![
                (
                    "PAY",
                    "ch_3Q1aaa",
                    "1001",
                    None,
                    "49.99",
                    Some("1.75"),
                    "SUCCESS",
                    "2026-11-20T14:02:00Z",
                ),
                (
                    "PAY",
                    "py_3Q1bbb",
                    "1002",
                    None,
                    "1250.00",
                    Some("36.55"),
                    "SUCCESS",
                    "2026-11-20T15:30:00Z",
                ),
                (
                    "REFUND",
                    "re_3Q1ccc",
                    "0990",
                    Some("re_3Q1ccc"),
                    "19.99",
                    Some("0.00"),
                    "SUCCESS",
                    "2026-11-20T16:45:00Z",
                ),
            ],
            2,
        ),
        (
            "generic_acquirer_v1",
            "settlement_detail_report_batch_412.csv",
            vec![
                (
                    "PAY",
                    "8816178952346541",
                    "EU-20261120-0001",
                    None,
                    "120.00",
                    Some("0.12"),
                    "SUCCESS",
                    "2026-11-20T08:12:45Z",
                ),
                (
                    "PAY",
                    "8816178952346542",
                    "EU-20261120-0002",
                    None,
                    "35.50",
                    Some("0.04"),
                    "SUCCESS",
                    "2026-11-20T09:30:00Z",
                ),
                (
                    "REFUND",
                    "8816178952346543",
                    "EU-20261118-0077",
                    Some("RF-EU-0077"),
                    "60.00",
                    Some("0.06"),
                    "SUCCESS",
                    "2026-11-20T10:05:10Z",
                ),
            ],
            2,
        ),
        (
            "camt053_v1",
            "camt053_20261120.xml",
            vec![
                (
                    "PAY",
                    "BANKREF-0001",
                    "INV-2026-1120-01",
                    None,
                    "1250.00",
                    None,
                    "SUCCESS",
                    "2026-11-20T08:30:00Z",
                ),
                (
                    "PAY",
                    "BANKREF-0002",
                    "INV-2026-1120-02",
                    None,
                    "100.25",
                    None,
                    "SUCCESS",
                    "2026-11-19T23:00:00Z",
                ),
                (
                    "REFUND",
                    "BANKREF-0003",
                    "REFUND-2026-0990",
                    Some("REFUND-2026-0990"),
                    "100.00",
                    None,
                    "SUCCESS",
                    "2026-11-20T14:00:00Z",
                ),
            ],
            0,
        ),
    ];
    for (format, file, want, skipped) in cases {
        let out = tmp.path().join(format);
        let (code, json, err) = normalize(format, &example(file), &out, &[]);
        assert_eq!(code, 0, "{format}: {err}");
        assert_eq!(json["rows_skipped"], skipped, "{format}: {json}");
        assert_eq!(json["rows_rejected"], 0, "{format}: {json}");
        assert!(
            json["totals"]
                .as_array()
                .is_some_and(|t| t.iter().all(|c| c["ok"] == true)),
            "{format}: {json}"
        );
        let b = one(&out.join("normalized.parquet"));
        check_rows(&b, &want);
        assert_eq!(
            s(&b, "source_file", 0).map(|f| f.contains(file)),
            Some(true),
            "{format}"
        );
    }
}

#[test]
fn the_received_amount_and_the_merchant_are_read_where_the_bill_has_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    type Case<'a> = (&'a str, &'a str, &'a [Option<&'a str>], Option<&'a str>);
    let cases: [Case<'_>; 5] = [
        (
            "alipay_trade_v1",
            "20881234567890120156_20261120.csv.zip",
            &[
                Some("199.00"),
                Some("30.00"),
                Some("1288.00"),
                Some("199.00"),
            ],
            None,
        ),
        (
            "wechat_trade_v3",
            "tradebill_20261120.csv",
            &[Some("88.00"), Some("1200.00"), Some("45.00")],
            Some("1900000109"),
        ),
        // Net of the fee, refunds as positive amounts.
        (
            "stripe_balance_v1",
            "stripe_balance_2026-11-20.csv",
            &[Some("48.24"), Some("1213.45"), Some("19.99")],
            None,
        ),
        (
            "generic_acquirer_v1",
            "settlement_detail_report_batch_412.csv",
            &[Some("119.34"), Some("35.30"), Some("60.06")],
            Some("ShopCoEU"),
        ),
        // The older WeChat layout has no settlement amount.
        (
            "wechat_trade_v2",
            "wechat_v2_20190601.csv",
            &[None, None],
            Some("10000100"),
        ),
    ];
    for (format, file, want, merchant) in cases {
        let out = tmp.path().join(format);
        let (code, json, err) = normalize(format, &example(file), &out, &[]);
        assert_eq!(code, 0, "{format}: {err}");
        let b = one(&out.join("normalized.parquet"));
        let got: Vec<Option<String>> = (0..b.num_rows())
            .map(|i| money(&b, "received", i))
            .collect();
        assert!(got.len() >= want.len(), "{format}: {got:?}");
        assert_eq!(
            got[..want.len()]
                .iter()
                .map(|v| v.as_deref())
                .collect::<Vec<_>>(),
            want.to_vec(),
            "{format}: {json}"
        );
        for i in 0..b.num_rows() {
            assert_eq!(
                s(&b, "merchant_id", i).as_deref(),
                merchant,
                "{format} row {i}"
            );
        }
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
}

fn wechat_lines() -> Vec<String> {
    std::fs::read_to_string(example("tradebill_20261120.csv"))
        .expect("example")
        .split("\r\n")
        .map(str::to_string)
        .collect()
}

#[test]
fn malformed_rows_are_rejected_with_line_and_reason_and_the_rest_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut lines = wechat_lines();
    // Line 2: a bad date; line 3: a missing field (27 → 26). Totals still hold: the sums and
    // counts include rejected rows.
    lines[1] = lines[1].replacen("`2026-11-20 09:15:02", "`2026-11-31 09:15:02", 1);
    let fields: Vec<&str> = lines[2].split(',').collect();
    lines[2] = [&fields[..20], &fields[21..]].concat().join(",");
    let bill = tmp.path().join("bill.csv");
    write(&bill, lines.join("\r\n").as_bytes());
    let out = tmp.path().join("out");
    let (code, json, err) = normalize(
        "wechat_trade_v3",
        &bill,
        &out,
        &["--bill-date", "2026-11-20"],
    );
    // The fee column of the shortened row is unreadable, so the fee total cannot be verified.
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("手续费总金额"), "{err}");
    assert_eq!(json["status"], "incomplete");

    // The same with the count intact but the date broken only: the file passes.
    let mut lines = wechat_lines();
    lines[1] = lines[1].replacen("`2026-11-20 09:15:02", "`2026-11-31 09:15:02", 1);
    lines[3] = lines[3].replacen("`早餐", "`早餐\u{FFFD}", 1);
    let mut bytes = lines.join("\r\n").into_bytes();
    // An invalid UTF-8 sequence inside the refund row's product name.
    let at = bytes
        .windows(3)
        .position(|w| w == "\u{FFFD}".as_bytes())
        .expect("marker");
    bytes.splice(at..at + 3, [0xFF, 0xFE]);
    write(&bill, &bytes);
    let (code, json, err) = normalize(
        "wechat_trade_v3",
        &bill,
        &out,
        &["--bill-date", "2026-11-20"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["rows_read"], 3);
    assert_eq!(json["rows_written"], 1);
    assert_eq!(json["rows_rejected"], 2);
    let r = one(&out.join("rejected.parquet"));
    assert_eq!(i64v(&r, "source_line", 0), Some(2));
    assert!(
        s(&r, "reason", 0).is_some_and(|x| x.contains("交易时间") && x.contains("2026-11-31")),
        "{:?}",
        s(&r, "reason", 0)
    );
    assert!(s(&r, "raw", 0).is_some_and(|x| x.contains("WX20261120000001")));
    assert_eq!(i64v(&r, "source_line", 1), Some(4));
    assert!(s(&r, "reason", 1).is_some_and(|x| x.contains("invalid UTF-8")));
}

#[test]
fn reordered_and_extra_columns_are_matched_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lines = wechat_lines();
    let n = lines[0].split(',').count();
    let mut out_lines = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
        if (1..=3).contains(&i) || i == 0 {
            assert_eq!(f.len(), n);
            f.reverse();
            f.push(if i == 0 {
                "新增列".into()
            } else {
                "`x".into()
            });
        }
        out_lines.push(f.join(","));
    }
    let bill = tmp.path().join("bill.csv");
    write(&bill, out_lines.join("\r\n").as_bytes());
    let out = tmp.path().join("out");
    let (code, json, err) = normalize("wechat_trade_v3", &bill, &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["rows_written"], 3);
    assert_eq!(json["bill_date"], "2026-11-20");
    let b = one(&out.join("normalized.parquet"));
    assert_eq!(money(&b, "amount", 1).as_deref(), Some("1200.00"));

    // A missing column is named, with the template's line.
    let without: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i <= 3 {
                let f: Vec<&str> = l.split(',').collect();
                [&f[..22], &f[23..]].concat().join(",")
            } else {
                l.clone()
            }
        })
        .collect();
    write(&bill, without.join("\r\n").as_bytes());
    let (code, _, err) = normalize("wechat_trade_v3", &bill, &out, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("\"手续费\"") && err.contains("wechat_trade_v3.toml, line"),
        "{err}"
    );
}

#[test]
fn a_bill_that_does_not_fit_its_template_fails_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let bill = tmp.path().join("bill.csv");
    let lines = wechat_lines();

    // Truncated: no summary header.
    write(&bill, lines[..3].join("\r\n").as_bytes());
    let (code, json, err) = normalize("wechat_trade_v3", &bill, &out, &[]);
    assert_eq!(
        (code, json["status"].as_str()),
        (3, Some("incomplete")),
        "{err}"
    );
    assert!(err.contains("end marker is missing"), "{err}");
    assert!(!out.join("normalized.parquet").exists());

    // Totals that disagree.
    let mut bad = lines.clone();
    let last = bad.len() - 2;
    bad[last] = bad[last].replacen("`3,", "`4,", 1);
    write(&bill, bad.join("\r\n").as_bytes());
    let (code, _, err) = normalize("wechat_trade_v3", &bill, &out, &[]);
    assert_eq!(code, 3);
    assert!(err.contains("总交易单数 = 4, parsed 3"), "{err}");

    // LF where the template declares CRLF.
    write(&bill, lines.join("\n").as_bytes());
    let (code, _, err) = normalize("wechat_trade_v3", &bill, &out, &[]);
    assert_eq!(code, 3);
    assert!(
        err.contains("line_ending") || err.contains("CRLF") || err.contains("Crlf"),
        "{err}"
    );

    // A zip where a plain file is declared, and a plain file where a zip is.
    let (code, _, err) = normalize(
        "wechat_trade_v3",
        &example("20881234567890120156_20261120.csv.zip"),
        &out,
        &[],
    );
    assert_eq!(code, 3);
    assert!(err.contains("zip-compressed"), "{err}");
    let (code, _, err) = normalize(
        "alipay_trade_v1",
        &example("tradebill_20261120.csv"),
        &out,
        &[],
    );
    assert_eq!(code, 3);
    assert!(err.contains("not a zip archive"), "{err}");

    // GBK declared, UTF-8 given: the header cannot match, and the message says why.
    let text = "#支付宝业务明细查询\r\n#-----------------------------------------业务明细列表----------------------------------------\r\n支付宝交易号,商户订单号\r\n";
    let zip_path = tmp.path().join("utf8.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("zip"));
    z.start_file("x_业务明细.csv", zip::write::SimpleFileOptions::default())
        .expect("member");
    z.write_all(text.as_bytes()).expect("write");
    z.start_file(
        "x_业务明细(汇总).csv",
        zip::write::SimpleFileOptions::default(),
    )
    .expect("member");
    z.finish().expect("finish");
    let (code, _, err) = normalize("alipay_trade_v1", &zip_path, &out, &[]);
    assert_eq!(code, 3);
    assert!(err.contains("UTF-8"), "{err}");

    // A truncated XML statement.
    let xml = std::fs::read_to_string(example("camt053_20261120.xml")).expect("xml");
    let cut = &xml[..xml.find("<Ntry>").expect("entry") + 200];
    write(&tmp.path().join("s.xml"), cut.as_bytes());
    let (code, _, err) = normalize("camt053_v1", &tmp.path().join("s.xml"), &out, &[]);
    assert_eq!(code, 3);
    assert!(err.contains("truncated"), "{err}");

    // Too many rejected rows.
    let mut many = lines.clone();
    for l in many.iter_mut().take(4).skip(1) {
        *l = l.replacen("`2026-11-20", "`2026-11-99", 1);
    }
    write(&bill, many.join("\r\n").as_bytes());
    let (code, _, err) = normalize("wechat_trade_v3", &bill, &out, &["--max-rejected", "2"]);
    assert_eq!(code, 3);
    assert!(err.contains("more than 2 rows rejected"), "{err}");
}

#[test]
fn a_template_of_your_own_gzip_and_its_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let builtin = reckon::formats::BUILT_IN
        .iter()
        .find(|(n, _)| *n == "wechat_trade_v2")
        .expect("v2")
        .1;
    let mine = tmp.path().join("wechat_gz.toml");
    write(
        &mine,
        builtin
            .replace("kind = \"plain\"", "kind = \"gzip\"")
            .as_bytes(),
    );
    let gz = tmp.path().join("bill.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&std::fs::read(example("wechat_v2_20190601.csv")).expect("v2"))
        .expect("gz");
    write(&gz, &enc.finish().expect("gz"));
    let (code, json, err) = normalize(mine.to_str().expect("utf8"), &gz, &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["rows_written"], 2);

    // A plain file where gzip is declared.
    let (code, _, err) = normalize(
        mine.to_str().expect("utf8"),
        &example("wechat_v2_20190601.csv"),
        &out,
        &[],
    );
    assert_eq!(code, 3);
    assert!(err.contains("not a gzip file"), "{err}");

    // A template error names the file and the line.
    write(
        &mine,
        builtin
            .replace("sign = \"abs\"", "sign = \"absolute\"")
            .as_bytes(),
    );
    let (code, json, err) = normalize(mine.to_str().expect("utf8"), &gz, &out, &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(json["status"], "failed");
    assert!(err.contains("wechat_gz.toml, line 40"), "{err}");
    let (code, _, err) = normalize("no_such_format_v9", &gz, &out, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("alipay_trade_v1"), "{err}");
}

/// An Alipay trade bill laid out as the public samples are: LF lines, trailing tabs after the
/// ids, store, operator and counterparty, refunds negative in 订单金额 and 商家实收, and the tail
/// with 商家优惠 totals and the refund line's 商家实收退款共.
fn alipay_real(tail: &[&str]) -> Vec<u8> {
    let head = "#支付宝业务明细查询\n#账号：[20880211096256330156]\n#起始日期：[2026年11月20日 00:00:00]   终止日期：[2026年11月21日 00:00:00]\n#-----------------------------------------业务明细列表----------------------------------------\n支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\n";
    let rows = [
        "2026112022001458860515315453\t,svc_1001\t,交易\t,会员月卡,2026-11-20 10:55:16,2026-11-20 10:55:23,store_1\t,旗舰店\t,alipay\t,\t,*津(602***@qq.com)\t,20.00,18.00,0.00,0.00,0.00,2.00,0.00,,0.00\t,0.00,\t,-0.11,0.00,月卡",
        "2026112022001458860515315453\t,svc_1001\t,退款\t,会员月卡,2026-11-20 10:55:16,2026-11-20 10:56:48,store_1\t,旗舰店\t,alipay\t,\t,*津(602***@qq.com)\t,-18.00,-18.00,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,re_1001\t,0.11,0.00,月卡",
        "2026112022001465870515233238\t,20261120165659224L3\t,交易\t,订单INSURANCE88,2026-11-20 16:58:56,2026-11-20 16:58:58,\t,\t,\t,\t,*庚(182****01)\t,0.01,0.01,0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,\t,0.00,0.00,",
    ];
    let mut text = head.to_string();
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    text.push_str("#-----------------------------------------业务明细列表结束------------------------------------\n");
    for l in tail {
        text.push_str(l);
        text.push('\n');
    }
    text.into_bytes()
}

const REAL_TAIL: [&str; 3] = [
    "#交易合计：2笔，商家实收共18.01元，商家优惠共2.00元",
    "#退款合计：1笔，商家实收退款共-18.00元，商家优惠退款共0.00元",
    "#导出时间：[2026年11月21日 07:27:37]",
];

/// Zips `details` as Alipay delivers it (GBK member names and text), with no summary member
/// unless `summary` is given.
fn alipay_zip(path: &Path, details: &[u8], summary: Option<&str>) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).expect("zip"));
    let gbk = |t: &[u8]| {
        encoding_rs::GBK
            .encode(std::str::from_utf8(t).expect("utf8"))
            .0
            .into_owned()
    };
    z.start_file(
        "2088_20261120_业务明细.csv",
        zip::write::SimpleFileOptions::default(),
    )
    .expect("member");
    z.write_all(&gbk(details)).expect("write");
    if let Some(s) = summary {
        z.start_file(
            "2088_20261120_业务明细(汇总).csv",
            zip::write::SimpleFileOptions::default(),
        )
        .expect("member");
        z.write_all(&gbk(s.as_bytes())).expect("write");
    }
    z.finish().expect("finish");
}

const REAL_SUMMARY: &str = "#支付宝业务汇总查询\n#-----------------------------------------业务汇总列表----------------------------------------\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）\n合计,,2,1,2.01,0.01,0.00,2.00,0.00,0.00,0.00,0.01\n#-----------------------------------------业务汇总列表结束------------------------------------\n";

#[test]
fn alipay_trade_bills_with_the_real_tail_are_read_and_every_tail_line_is_accounted_for() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bill = tmp.path().join("real.csv.zip");
    let out = tmp.path().join("out");
    alipay_zip(&bill, &alipay_real(&REAL_TAIL), Some(REAL_SUMMARY));
    let (code, json, err) = normalize("alipay_trade_v1", &bill, &out, &[]);
    assert_eq!(code, 0, "{err}\n{json}");
    assert_eq!(json["rows_written"], 3, "{json}");
    let totals = json["totals"].as_array().expect("totals");
    let check = |name: &str| {
        totals
            .iter()
            .find(|t| t["value"] == name)
            .unwrap_or_else(|| panic!("{name} in {json}"))
            .clone()
    };
    for (name, expected) in [
        ("pay_count", "2"),
        ("pay_received", "18.01"),
        ("refund_count", "1"),
        ("refund_received", "-18.00"),
        ("pay_discount", "2.00"),
        ("refund_discount", "0.00"),
    ] {
        let c = check(name);
        assert_eq!(c["expected"], expected, "{c}");
        assert_eq!(c["ok"], true, "{c}");
        assert!(c.get("skipped").is_none(), "{c}");
    }
    let b = one(&out.join("normalized.parquet"));
    assert_eq!(s(&b, "refund_id", 1).as_deref(), Some("re_1001"));
    assert_eq!(money(&b, "amount", 1).as_deref(), Some("18.00"));
    assert_eq!(s(&b, "merchant_order_id", 0).as_deref(), Some("svc_1001"));

    // The same tail padded with commas to the header's width, as some exports write it.
    let padded: Vec<String> = REAL_TAIL.iter().map(|l| format!("{l},,,,")).collect();
    let padded: Vec<&str> = padded.iter().map(String::as_str).collect();
    alipay_zip(&bill, &alipay_real(&padded), Some(REAL_SUMMARY));
    let (code, _, err) = normalize("alipay_trade_v1", &bill, &out, &[]);
    assert_eq!(code, 0, "{err}");

    // A discount total that disagrees is a failed check like any other.
    let mut wrong = REAL_TAIL;
    wrong[0] = "#交易合计：2笔，商家实收共18.01元，商家优惠共2.50元";
    alipay_zip(&bill, &alipay_real(&wrong), Some(REAL_SUMMARY));
    let (code, _, err) = normalize("alipay_trade_v1", &bill, &out, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("pay_discount = 2.50, parsed 2.00"), "{err}");
}

#[test]
fn a_totals_line_no_pattern_knows_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bill = tmp.path().join("real.csv.zip");
    let out = tmp.path().join("out");
    // The refund line as the old template wanted it (商家实收共): on a real bill's tail this
    // wording is a changed line, and it must not leave the refund checks silently undone.
    let mut old = REAL_TAIL;
    old[1] = "#退款合计：1笔，商家实收共-18.00元";
    alipay_zip(&bill, &alipay_real(&old), Some(REAL_SUMMARY));
    let (code, json, err) = normalize("alipay_trade_v1", &bill, &out, &[]);
    assert_eq!(code, 3, "{json}");
    // Line 11: 4 head lines, the header, 3 rows, the end marker, then the tail.
    assert!(err.contains("line 11"), "{err}");
    assert!(err.contains("#退款合计：1笔，商家实收共-18.00元"), "{err}");
    assert!(
        err.contains("matches none of the template's totals patterns"),
        "{err}"
    );

    // A line the template has never seen after the body.
    let mut extra = REAL_TAIL.to_vec();
    extra.insert(2, "#已退款合计：9笔");
    alipay_zip(&bill, &alipay_real(&extra), Some(REAL_SUMMARY));
    let (code, _, err) = normalize("alipay_trade_v1", &bill, &out, &[]);
    assert_eq!(code, 3);
    assert!(
        err.contains("line 12") && err.contains("#已退款合计：9笔"),
        "{err}"
    );
    // The rows were all read: the rejected file shows what was refused (none here), and no
    // normalized file is left for a refused bill.
    assert!(out.join("rejected.parquet").exists());
    assert!(!out.join("normalized.parquet").exists());
}

#[test]
fn wechat_fees_with_fractions_of_a_cent_round_half_up_and_their_total_is_exact() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bill = tmp.path().join("fees.csv");
    let out = tmp.path().join("out");
    // As WeChat Pay writes them: 0.6% of 9.90 is 0.05940; the refund's fee is negative; the
    // summary's 手续费总金额 is the exact sum, five decimals.
    let head = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    let rows = [
        "`2026-11-20 10:00:00,`wx123,`1900000001,`0,`,`4200001,`pay_w1,`o1,`NATIVE,`SUCCESS,`OTHERS,`CNY,`9.90,`0.00,`0,`0,`0.00,`0.00,`,`,`Lily,`,`0.05940,`0.60%,`9.90,`0.00,`",
        "`2026-11-20 10:05:00,`wx123,`1900000001,`0,`,`4200003,`pay_w3,`o1,`NATIVE,`SUCCESS,`OTHERS,`CNY,`0.99,`0.00,`0,`0,`0.00,`0.00,`,`,`Tea,`,`0.00594,`0.60%,`0.99,`0.00,`",
        "`2026-11-20 11:00:00,`wx123,`1900000001,`0,`,`4200001,`pay_w1,`o1,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`500001,`rfd_1,`9.90,`0.00,`ORIGINAL,`SUCCESS,`Lily,`,`-0.05940,`0.60%,`0.00,`9.90,`",
    ];
    let mut text = format!("\u{feff}{head}\r\n");
    for r in rows {
        text.push_str(r);
        text.push_str("\r\n");
    }
    text.push_str("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n");
    text.push_str("`3,`10.89,`9.90,`0.00,`0.00594,`10.89,`9.90\r\n");
    write(&bill, text.as_bytes());
    let (code, json, err) = normalize("wechat_trade_v3", &bill, &out, &[]);
    assert_eq!(code, 0, "{err}\n{json}");
    assert_eq!(json["rows_rejected"], 0, "{json}");
    let b = one(&out.join("normalized.parquet"));
    assert_eq!(money(&b, "fee", 0).as_deref(), Some("0.06"));
    assert_eq!(money(&b, "fee", 1).as_deref(), Some("0.01"));
    assert_eq!(
        money(&b, "fee", 2).as_deref(),
        Some("0.06"),
        "abs of -0.05940"
    );
    let fee = json["totals"]
        .as_array()
        .and_then(|t| t.iter().find(|c| c["value"] == "手续费总金额"))
        .expect("fee total")
        .clone();
    assert_eq!(fee["parsed"], "0.00594", "{fee}");
    assert_eq!(fee["ok"], true, "{fee}");

    // The exact sum is compared exactly: a total rounded to the cent is a mismatch, not a pass.
    let rounded = text.replace("`0.00594,`10.89", "`0.01,`10.89");
    write(&bill, rounded.as_bytes());
    let (code, _, err) = normalize("wechat_trade_v3", &bill, &out, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("手续费总金额 = 0.01, parsed 0.00594"), "{err}");
}

/// The Acme Pay example of formats/README.md, taken from the README itself.
#[test]
fn the_worked_example_of_the_readme() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../formats/README.md"))
            .expect("readme");
    let part = &readme[readme.find("## Worked example").expect("section")..];
    let blocks: Vec<&str> = part.split("```").collect();
    let bill = blocks[1].trim_start_matches("text").trim_start();
    let template = blocks[3].trim_start_matches("toml").trim_start();
    let tmp = tempfile::tempdir().expect("tmp");
    write(&tmp.path().join("acme_v1.toml"), template.as_bytes());
    write(&tmp.path().join("acme_20261120.csv"), bill.as_bytes());
    let out = tmp.path().join("out");
    let t = tmp.path().join("acme_v1.toml");
    let (code, json, err) = normalize(
        t.to_str().expect("utf8"),
        &tmp.path().join("acme_20261120.csv"),
        &out,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["rows_written"], 3, "{json}");
    assert_eq!(json["totals"].as_array().map(Vec::len), Some(2), "{json}");
    let b = one(&out.join("normalized.parquet"));
    check_rows(
        &b,
        &[
            (
                "PAY",
                "A-1",
                "SO-1",
                None,
                "12.50",
                Some("0.08"),
                "SUCCESS",
                "2026-11-20T08:15:00Z",
            ),
            (
                "PAY",
                "A-2",
                "SO-2",
                None,
                "1200.00",
                Some("7.20"),
                "SUCCESS",
                "2026-11-20T22:59:00Z",
            ),
            (
                "REFUND",
                "R-1",
                "SO-0",
                Some("R-1"),
                "5.00",
                Some("0.00"),
                "SUCCESS",
                "2026-11-20T11:00:00Z",
            ),
        ],
    );
    assert_eq!(json["bill_date"], "2026-11-20");
}

/// A bill longer than a row group of the normalized file (256 Ki rows; the writer's batches
/// are 8 Ki), with columns the template fixes (a constant status and merchant, no refund id,
/// no received amount) and columns each row fills: every row keeps its own values and the
/// fixed ones, across the edges of batches and row groups and in the short last batch.
#[test]
fn columns_a_template_fixes_fill_every_batch_of_a_long_bill() {
    let tmp = tempfile::tempdir().expect("tmp");
    let template = r#"
name = "long_v1"
[container]
kind = "plain"
[body]
delimiter = ","
[columns.txn_type]
source = "kind"
[columns.channel_txn_id]
source = "ref"
[columns.merchant_order_id]
source = "order"
[columns.amount]
source = "amount"
[columns.merchant_id]
value = "M-7"
[columns.status]
value = "SUCCESS"
[columns.txn_time]
source = "at"
format = "%Y-%m-%d %H:%M:%S"
time_zone = "UTC"
"#;
    const ROWS: usize = 300_001;
    let mut bill = String::from("ref,order,kind,amount,at\n");
    for i in 0..ROWS {
        bill.push_str(&format!(
            "T{i},O{i},PAY,{}.{:02},2026-11-20 {:02}:{:02}:{:02}\n",
            i % 1000,
            i % 100,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60
        ));
    }
    write(&tmp.path().join("long_v1.toml"), template.as_bytes());
    write(&tmp.path().join("long.csv"), bill.as_bytes());
    let out = tmp.path().join("out");
    let t = tmp.path().join("long_v1.toml");
    let (code, json, err) = normalize(
        t.to_str().expect("utf8"),
        &tmp.path().join("long.csv"),
        &out,
        &["--bill-date", "2026-11-20"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["rows_written"], ROWS, "{json}");
    let b = one(&out.join("normalized.parquet"));
    assert_eq!(b.num_rows(), ROWS);
    let col = |name: &str| {
        b.column_by_name(name)
            .expect(name)
            .as_string::<i32>()
            .clone()
    };
    let (refs, status, merchant, refund) = (
        col("channel_txn_id"),
        col("status"),
        col("merchant_id"),
        col("refund_id"),
    );
    let (channel, source) = (col("channel"), col("source_file"));
    let lines = b.column_by_name("source_line").expect("line");
    let lines = lines.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    for i in 0..ROWS {
        assert_eq!(refs.value(i), format!("T{i}"), "row {i}");
        assert_eq!(
            money(&b, "amount", i),
            Some(format!("{}.{:02}", i % 1000, i % 100))
        );
        assert_eq!(lines.value(i), i as i64 + 2, "row {i}");
        assert_eq!(status.value(i), "SUCCESS", "row {i}");
        assert_eq!(merchant.value(i), "M-7", "row {i}");
        assert!(refund.is_null(i), "row {i}");
        assert!(money(&b, "received", i).is_none(), "row {i}");
        assert_eq!(source.value(i), "long.csv", "row {i}");
        assert!(!channel.value(i).is_empty(), "row {i}");
    }
    assert_eq!(status.null_count(), 0);
}

#[test]
fn a_stripe_dispute_is_rejected_so_that_it_is_seen() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bill = tmp.path().join("balance.csv");
    let out = tmp.path().join("out");
    let mut text =
        std::fs::read_to_string(example("stripe_balance_2026-11-20.csv")).expect("example");
    // A dispute takes a charge's money back as an `adjustment`; skipping it would hide it.
    text.push_str("\"txn_3Q1fff\",\"adjustment\",\"du_3Q1fff\",\"-49.99\",\"15.00\",\"-64.99\",\"usd\",\"2026-11-20 20:00\",\"2026-11-22 00:00\",\"Chargeback withdrawal for ch_3Q1aaa\",\"\",\"\",\"\",\"\",\"\",\"1001\"\n");
    write(&bill, text.as_bytes());
    let (code, json, err) = normalize("stripe_balance_v1", &bill, &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["rows_rejected"], 1, "{json}");
    let rejected = one(&out.join("rejected.parquet"));
    let reason = s(&rejected, "reason", 0).expect("reason");
    assert!(reason.contains("adjustment"), "{reason}");
}

#[test]
fn a_wechat_bill_delivered_gzip_compressed_reconciles_as_the_plain_one() {
    // WeChat Pay's bill download returns the same text gzip-compressed with tar_type=GZIP.
    let (plain, packed) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let args = ["--channel", "wechat"];
    let cp = generate_with(plain.path(), "2026-11-20", 1, 3_000, 5, &args);
    let cg = generate_with(
        packed.path(),
        "2026-11-20",
        1,
        3_000,
        5,
        &[args[0], args[1], "--gzip"],
    );
    let text =
        std::fs::read(plain.path().join("bills/wechat/tradebill_20261120.csv")).expect("bill");
    let gz =
        std::fs::read(packed.path().join("bills/wechat/tradebill_20261120.csv.gz")).expect("gz");
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unpacked)
        .expect("gunzip");
    assert!(
        unpacked == text,
        "the gzip bill holds the plain bill's bytes"
    );
    assert!(gz.len() * 3 < text.len(), "and is smaller");

    let (day, ch) = ("2026-11-20", "wechat");
    for cfg in [&cp, &cg] {
        let (code, _, err) = run_day(cfg, day, &["--channel", ch]);
        assert_eq!(code, 0, "{err}");
    }
    let out = |d: &Path| d.join("output");
    let summary = |d: &Path| -> serde_json::Value {
        let f = file_of(&out(d), "results", ch, day, "summary.json");
        serde_json::from_slice(&std::fs::read(f).expect("summary")).expect("json")
    };
    let (sp, sg) = (summary(plain.path()), summary(packed.path()));
    for key in ["counts", "amounts", "conservation", "match_rate"] {
        assert_eq!(sp[key], sg[key], "{key} differs");
    }
    for file in ["by_hour.parquet", "by_merchant.parquet"] {
        let a = std::fs::read(file_of(&out(plain.path()), "stats", ch, day, file)).expect("a");
        let b = std::fs::read(file_of(&out(packed.path()), "stats", ch, day, file)).expect("b");
        assert!(a == b, "stats/{file} differs");
    }
}
