//! `reckon demo`: a labelled sample data set, one day reconciled on the embedded engine, and a
//! short summary a person can read.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use chrono::NaiveDate;
use reckon_udfs::Category;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::{run_day, ChannelResult, Runtime};
use crate::records::DayStatus;
use reckon_gen::{generate, GenerateOptions};

/// The demo's bill date.
pub const DEMO_DATE: (i32, u32, u32) = (2026, 11, 20);

/// Runs the demo in `dir` with `rows` payments per channel, its outputs on `storage` (the
/// storage root; `output/` in `dir` when `None`); returns the text and exit code.
pub async fn run(dir: &Path, rows: u64, storage: Option<&str>) -> Result<(String, i32)> {
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
        gzip: false,
    })?;
    crate::sql::write_builtin(&dir.join("sql"))?;
    if let Some(root) = storage {
        let path = &generated.config;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let line = format!("storage_root = {}", toml_string(root));
        let text = text.replacen("storage_root = \"output\"", &line, 1);
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
    }
    let config = Config::load(&generated.config)?;
    let rt = Runtime::open(&config, Some("local")).await?;
    let ran = Instant::now();
    let result = run_day(&config, &[], date, &rt.engines).await?;
    let code = result.exit_code;
    let root = rt.store.display();
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
    for ch in &result.channels {
        render_channel(&mut out, ch);
    }
    let _ = writeln!(out, "outputs under {root}/:");
    for (what, path) in [
        (
            "the committed day: every file below, by path",
            format!("runs/channel=*/dt={date}/committed.json"),
        ),
        (
            "differences to review",
            format!("results/channel=*/dt={date}/_v=*/diffs.parquet"),
        ),
        (
            "counts and amounts",
            format!("results/channel=*/dt={date}/_v=*/summary.json"),
        ),
        (
            "carried to the next day",
            format!("carryover/channel=*/dt={date}/_v=*/"),
        ),
        (
            "rows the parser rejected",
            format!("rejected/channel=*/dt={date}/_v=*/"),
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

/// `s` as a TOML string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// One channel's table of categories.
pub fn render_channel(out: &mut String, ch: &ChannelResult) {
    let s = match ch {
        ChannelResult::Reconciled(s) if s.status == DayStatus::Reconciled => s,
        ChannelResult::Reconciled(s) => {
            let _ = writeln!(out, "{}: {}\n", s.channel, s.status);
            return;
        }
        ChannelResult::Failed(f) => {
            let _ = writeln!(out, "{}: {}: {}\n", f.channel, f.status, f.error);
            return;
        }
        ChannelResult::Stages(st) => {
            let _ = writeln!(out, "{}: {}\n", st.channel, st.status);
            return;
        }
    };
    let _ = writeln!(
        out,
        "{}  run {}  {} channel rows, {} platform rows, {} carried in, {} rejected; conservation {}",
        s.channel,
        s.run_id.as_deref().unwrap_or("-"),
        s.inputs.channel_rows,
        s.inputs.platform_rows,
        s.inputs.carried_in_rows,
        s.inputs.rejected_rows,
        if s.conservation.holds { "holds" } else { "FAILS" }
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>18} {:>18}",
        "category", "rows", "channel amount", "platform amount"
    );
    for c in Category::ALL {
        let n = s.counts.get(c.as_str()).copied().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let (channel, platform) = s
            .amounts
            .get(c.as_str())
            .map(|a| (a.channel.as_str(), a.platform.as_str()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>18} {:>18}",
            c.as_str(),
            n,
            channel,
            platform
        );
    }
    let _ = writeln!(out);
}
