//! `reckon sql check`: the analysts' SQL planned without data, each error at its file, line
//! and column.

use std::path::Path;

use crate::support::{generate, run};

fn check(args: &[&str]) -> (i32, String) {
    let mut all = vec!["sql", "check"];
    all.extend_from_slice(args);
    let o = run(&all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

/// The 1-based line and column where `needle` first occurs in `file`.
fn position(file: &Path, needle: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(file).expect("sql");
    for (n, line) in text.lines().enumerate() {
        if let Some(c) = line.find(needle) {
            return (n + 1, line[..c].chars().count() + 1);
        }
    }
    panic!("{needle} not in {}", file.display());
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("sql");
    assert!(text.contains(from), "{from} not in {}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn the_shipped_sql_checks_clean_and_each_error_is_named_where_it_is() {
    let (code, out) = check(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "ok     built-in sql/reconcile.sql (planned against bill, platform, carry_in)"
        ),
        "{out}"
    );

    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("d");
    let cfg = generate(&data, "2026-11-20", 1, 200, 3);
    let cfg = cfg.to_str().expect("utf8");
    let (code, out) = check(&["--config", cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("platform.sql (planned against orders, refunds)"),
        "{out}"
    );

    // A misspelt column in reconcile.sql: its line and column.
    let sql = data.join("sql");
    let reconcile = sql.join("reconcile.sql");
    edit(&reconcile, "c.fee AS c_fee", "c.fees AS c_fee");
    let (line, col) = position(&reconcile, "c.fees");
    let (code, out) = check(&["--config", cfg]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("reconcile.sql:{line}:{col}: ")) && out.contains("c.fees"),
        "{out}"
    );
    edit(&reconcile, "c.fees AS c_fee", "c.fee AS c_fee");

    // A warehouse column platform.sql names that the warehouse does not have.
    let platform = sql.join("platform.sql");
    let text = std::fs::read_to_string(&platform).expect("sql");
    edit(&platform, "channel_trade_no ", "channel_trade_id ");
    let (line, col) = position(&platform, "channel_trade_id");
    let (code, out) = check(&["--dir", sql.to_str().expect("utf8"), "--config", cfg]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("platform.sql:{line}:{col}: ")),
        "{out}"
    );
    std::fs::write(&platform, text).expect("restore");

    // An output column the job reads, renamed away.
    edit(
        &reconcile,
        "END                                                AS reason,",
        "END AS why,",
    );
    let (code, out) = check(&["--dir", sql.to_str().expect("utf8")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("has no column \"reason\", which the job reads"),
        "{out}"
    );

    // Anything but a query is refused, where it is.
    for (stmt, kind) in [
        ("CREATE TABLE kept AS SELECT 1", "CREATE TABLE"),
        ("INSERT INTO platform VALUES (1)", "INSERT"),
        ("COPY (SELECT 1) TO '/tmp/out.csv'", "COPY"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
    ] {
        std::fs::write(&reconcile, format!("-- tampered\n\n{stmt}\n")).expect("write");
        let (code, out) = check(&["--dir", sql.to_str().expect("utf8")]);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains(&format!("reconcile.sql:3:1: {kind} is not allowed")),
            "{stmt}: {out}"
        );
    }
}
