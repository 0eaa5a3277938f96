//! Fuzzing the template engine: no input may panic it. Every shipped template reads its
//! example bill mutated at random (bytes flipped, inserted, deleted; lines cut, repeated and
//! swapped; the file truncated) and arbitrary bytes. Cases per template: `RECKON_FUZZ_CASES`
//! (default 300). Inputs that once found a bug are kept below as regression cases.

use std::io::Read;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reckon::formats::{normalize_bytes, Target, Template, BUILT_IN};

/// The text of each example bill as its body engine reads it (zip members unpacked).
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../formats/examples");
    let member = |zip_name: &str, suffix: &str| -> Vec<u8> {
        let f = std::fs::File::open(dir.join(zip_name)).expect("zip");
        let mut z = zip::ZipArchive::new(f).expect("zip");
        for i in 0..z.len() {
            let mut e = z.by_index(i).expect("member");
            let name = encoding_rs::GBK.decode(e.name_raw()).0.into_owned();
            if name.ends_with(suffix) {
                let mut v = Vec::new();
                e.read_to_end(&mut v).expect("read");
                return v;
            }
        }
        panic!("no member {suffix}");
    };
    let file = |n: &str| std::fs::read(dir.join(n)).expect("example");
    vec![
        (
            "alipay_trade_v1",
            member("20881234567890120156_20261120.csv.zip", "业务明细.csv"),
        ),
        (
            "alipay_fund_v1",
            member("20881234567890120156_20261120_fund.csv.zip", "账务明细.csv"),
        ),
        ("wechat_trade_v3", file("tradebill_20261120.csv")),
        ("wechat_trade_v2", file("wechat_v2_20190601.csv")),
        ("stripe_balance_v1", file("stripe_balance_2026-11-20.csv")),
        (
            "generic_acquirer_v1",
            file("settlement_detail_report_batch_412.csv"),
        ),
        ("camt053_v1", file("camt053_20261120.xml")),
    ]
}

/// The template with a plain container, so the body engine sees the member's bytes.
fn plain(name: &str) -> Template {
    let text = BUILT_IN
        .iter()
        .find(|(n, _)| *n == name)
        .expect("template")
        .1;
    let text = text.replace("kind = \"zip\"", "kind = \"plain\"");
    // Only the container's member line goes; the summary's stays.
    let mut seen = false;
    let text = text
        .lines()
        .filter(|l| {
            let first = l.starts_with("member =") && !seen;
            seen |= first;
            !first
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut t = Template::parse(&text, name).expect("template");
    // The summary member lives in the zip, which is not fuzzed here: its checks may be absent.
    if let Some(totals) = t.totals.as_mut() {
        if totals.summary.take().is_some() {
            totals.checks.iter_mut().for_each(|c| c.optional = true);
        }
    }
    t
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    RepeatLine(usize),
    SwapLines(usize, usize),
    DropLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(b','),
                    Just(b'"'),
                    Just(b'`'),
                    Just(b'\n'),
                    Just(b'\r'),
                    Just(b'<'),
                    Just(b'>'),
                    Just(b'&'),
                    Just(b'-'),
                    Just(b'.'),
                    Just(0xFF),
                    Just(0xA1),
                    any::<u8>()
                ],
                1..8
            )
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::RepeatLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::DropLine),
    ]
}

fn apply(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % n] ^= b | 1;
                }
            }
            Mutation::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Delete(i, k) => {
                let at = i % n;
                let end = (at + k).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % n),
            Mutation::RepeatLine(i) | Mutation::DropLine(i) | Mutation::SwapLines(i, _) => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let k = lines.len();
                match m {
                    Mutation::RepeatLine(_) => {
                        let l = lines[i % k].clone();
                        lines.insert(i % k, l);
                    }
                    Mutation::DropLine(_) => {
                        lines.remove(i % k);
                    }
                    Mutation::SwapLines(_, j) => lines.swap(i % k, j % k),
                    _ => {}
                }
                bytes = lines.join(&b'\n');
            }
        }
    }
    bytes
}

fn cases() -> u32 {
    std::env::var("RECKON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn run_one(t: &Template, bytes: &[u8], dir: &Path) -> Result<(), String> {
    let (n, r) = (dir.join("n.parquet"), dir.join("r.parquet"));
    let target = Target {
        channel: "fuzz",
        bill_date: None,
        source_name: "fuzz",
        normalized: &n,
        buckets: None,
        rejected: &r,
        max_rejected: 1000,
    };
    // Ok or Err are both fine; a panic fails the test.
    normalize_bytes(t, bytes, &target)
        .and_then(|s| s.accepted())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_engine_never_panics_on_mutated_bills() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut total = 0u32;
    for (name, seed) in corpus() {
        let t = plain(name);
        if let Err(e) = run_one(&t, &seed, dir.path()) {
            panic!("{name}: the unmutated example must pass: {e}");
        }
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = prop::collection::vec(mutation(), 1..6);
        runner
            .run(&strategy, |ms| {
                let bytes = apply(seed.clone(), &ms);
                let _ = run_one(&t, &bytes, dir.path());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut runner = TestRunner::new(Config {
            cases: cases() / 3,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
                let _ = run_one(&t, &bytes, dir.path());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        total += cases() + cases() / 3;
    }
    eprintln!("fuzz: {total} cases over {} templates", BUILT_IN.len());
}

#[test]
fn inputs_that_once_broke_the_engine() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases: &[(&str, &[u8])] = &[
        // A quote opened and never closed at the end of a line.
        ("wechat_trade_v3", b"a,b\r\n`\"x\r\n"),
        // A header and nothing else.
        ("stripe_balance_v1", b"id,type\n"),
        // An XML record that never closes.
        ("camt053_v1", b"<Document><BkToCstmrStmt><Stmt><Ntry><Amt>1"),
        // A multi-byte character cut at the end of the file.
        ("alipay_trade_v1", b"#-----\xe4\xb8"),
    ];
    for (name, bytes) in cases {
        let _ = run_one(&plain(name), bytes, dir.path());
    }
}
