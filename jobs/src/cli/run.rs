//! `reckon run`: the whole daily job for each channel, or `--preview` of an edit.

use std::path::PathBuf;

use reckon::config::{parse_date, Config};
use reckon::engine::Engines;
use reckon::error::{Error, Result};
use reckon::pipeline::run_day;
use reckon::sql::SqlDir;

use super::{print_json, threshold_code, Day, Engine};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    day: Day,
    #[command(flatten)]
    engine: Engine,
    /// Accepted for the scheduler's sake: every run recomputes its stages.
    #[arg(long)]
    force: bool,
    /// Exit 3 when a channel's day passes one of its thresholds (default: exit 0, the
    /// summary says so).
    #[arg(long)]
    fail_on_threshold: bool,
    /// Reconcile the day into a scratch area with this config, SQL and rules, and print
    /// what changes against the committed day; commit nothing, mark nothing stale.
    #[arg(long)]
    preview: bool,
    /// The SQL folder to use (overrides the config's `sql_dir`): an edited copy, with
    /// --preview.
    #[arg(long)]
    sql_dir: Option<PathBuf>,
    /// With --preview: how many changed differences the table lists (the JSON line has
    /// all).
    #[arg(long, default_value_t = 20)]
    show: usize,
}

pub async fn run(a: Args) -> Result<i32> {
    let _ = a.force;
    let date = parse_date(&a.day.date)?;
    let (mut config, rt) = super::open(&a.day.config, &a.engine).await?;
    if let Some(dir) = &a.sql_dir {
        let abs = std::path::absolute(dir)
            .map_err(|e| Error::Config(format!("--sql-dir {}: {e}", dir.display())))?;
        config.sql_dir = Some(abs.display().to_string());
    }
    if a.preview {
        let result = preview_day(&config, &a.day.channels, date, &rt.engines, a.show).await;
        rt.close();
        return result;
    }
    let result = run_day(&config, &a.day.channels, date, &rt.engines).await;
    rt.close();
    let day = result?;
    print_json(&day.to_json());
    Ok(threshold_code(
        a.fail_on_threshold,
        day.threshold_passed(),
        day.exit_code,
    ))
}

/// `reckon run --preview`: each channel previewed, its table on stdout, then one JSON line.
async fn preview_day(
    config: &Config,
    channels: &[String],
    date: chrono::NaiveDate,
    engines: &Engines,
    show: usize,
) -> Result<i32> {
    let sql = SqlDir::for_config(config)?;
    let mut out = Vec::new();
    let mut codes = Vec::new();
    for name in config.channel_names(channels)? {
        match reckon::preview::preview_channel(config, &name, date, engines, &sql).await {
            Ok(p) => {
                print!("{}", reckon::preview::render(&p, show));
                out.push(serde_json::to_value(&p)?);
                codes.push(0);
            }
            Err(e) => {
                eprintln!("error: {name} {date}: {e}");
                out.push(serde_json::json!({
                    "channel": name, "bill_date": date.to_string(),
                    "status": e.status(), "error": e.to_string(), "exit_code": e.exit_code(),
                }));
                codes.push(e.exit_code());
            }
        }
    }
    let code = reckon::pipeline::worst(&codes);
    print_json(&serde_json::json!({
        "preview": true, "bill_date": date.to_string(), "exit_code": code, "channels": out,
    }));
    Ok(code)
}
