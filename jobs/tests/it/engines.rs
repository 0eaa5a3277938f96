//! The same SQL and UDFs give identical results on the embedded engine and on Ballista
//! standalone (an in-process scheduler and executor).

use super::support::{self, area};

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
                let fa = std::fs::read(area(&a.path().join("output"), ar, ch, day).join(file))
                    .expect("a");
                let fb = std::fs::read(area(&b.path().join("output"), ar, ch, day).join(file))
                    .expect("b");
                assert!(
                    fa == fb,
                    "{ar}/{ch}/{day}/{file} differs between local and standalone"
                );
            }
        }
    }
}
