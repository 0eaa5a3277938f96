//! `reckon demo`: a labelled sample data set, one day reconciled on the embedded engine, and a
//! short summary a person can read.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use chrono::NaiveDate;
use reckon_udfs::Category;
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateOptions};
use crate::pipeline::{run_day, Runtime};

/// The demo's bill date.
pub const DEMO_DATE: (i32, u32, u32) = (2026, 11, 20);

/// Runs the demo in `dir` with `rows` payments per channel; returns the text and exit code.
pub async fn run(dir: &Path, rows: u64) -> Result<(String, i32)> {
    let (y, m, d) = DEMO_DATE;
    let date = NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| Error::Other("demo date".into()))?;
    let started = Instant::now();
    let generated = generate(&GenerateOptions {
        out: dir.to_path_buf(),
        from: date,
        days: 1,
        rows,
        seed: 42,
        channels: Vec::new(),
    })?;
    let config = Config::load(&generated.config)?;
    let rt = Runtime::open(&config, Some("local")).await?;
    let ran = Instant::now();
    let (result, code) = run_day(&config, &[], date, &rt.engines).await?;
    let root = rt.store.root().display().to_string();
    rt.close();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reckon demo: generated 2 channels x 1 day ({} bill rows, {} warehouse rows, labelled) in {}",
        generated.bill_rows,
        generated.warehouse_rows,
        dir.display()
    );
    let _ = writeln!(
        out,
        "reconciled {date} on the embedded DataFusion engine in {:.1} s ({:.1} s in all)\n",
        ran.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for ch in result["channels"].as_array().cloned().unwrap_or_default() {
        render_channel(&mut out, &ch);
    }
    let _ = writeln!(out, "outputs under {root}/:");
    for (what, path) in [
        (
            "differences to review",
            format!("results/channel=*/dt={date}/diffs.parquet"),
        ),
        (
            "counts and amounts",
            format!("results/channel=*/dt={date}/summary.json"),
        ),
        (
            "carried to the next day",
            format!("carryover/channel=*/dt={date}/"),
        ),
        (
            "rows the parser rejected",
            format!("rejected/channel=*/dt={date}/"),
        ),
        (
            "run state",
            format!("runs/channel=*/dt={date}/manifest.json"),
        ),
    ] {
        let _ = writeln!(out, "  {path:<50} {what}");
    }
    let _ = writeln!(
        out,
        "\nThe SQL is in {}/sql/: edit it and rerun with\n  reckon run --config {} --date {date}",
        dir.display(),
        generated.config.display()
    );
    Ok((out, code))
}

/// One channel's table of categories.
pub fn render_channel(out: &mut String, ch: &Value) {
    let name = ch["channel"].as_str().unwrap_or("?");
    let status = ch["status"].as_str().unwrap_or("?");
    if status != "reconciled" {
        let _ = writeln!(
            out,
            "{name}: {status}: {}\n",
            ch["error"].as_str().unwrap_or("")
        );
        return;
    }
    let holds = ch["conservation"]["holds"] == Value::Bool(true);
    let _ = writeln!(
        out,
        "{name}  run {}  {} channel rows, {} platform rows, {} carried in, {} rejected; conservation {}",
        ch["run_id"].as_str().unwrap_or("-"),
        ch["inputs"]["channel_rows"],
        ch["inputs"]["platform_rows"],
        ch["inputs"]["carried_in_rows"],
        ch["inputs"]["rejected_rows"],
        if holds { "holds" } else { "FAILS" }
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>18} {:>18}",
        "category", "rows", "channel amount", "platform amount"
    );
    for c in Category::ALL {
        let n = ch["counts"][c.as_str()].as_u64().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let a = &ch["amounts"][c.as_str()];
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>18} {:>18}",
            c.as_str(),
            n,
            a["channel"].as_str().unwrap_or(""),
            a["platform"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(out);
}
