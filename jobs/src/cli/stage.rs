//! `reckon stage NAME`: one stage of one channel and date, for a DAG's task.

use std::path::PathBuf;

use reckon::config::parse_date;
use reckon::error::Result;
use reckon::pipeline::{run_channel, Runtime};
use reckon::records::Stage;
use reckon::sql::SqlDir;

use super::{print_json, threshold_code, Engine};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// fetch, normalize, collect, reconcile or report.
    name: String,
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    date: String,
    #[arg(long)]
    channel: String,
    #[command(flatten)]
    engine: Engine,
    /// Exit 3 when the report finds a threshold passed.
    #[arg(long)]
    fail_on_threshold: bool,
}

pub async fn run(a: Args) -> Result<i32> {
    let date = parse_date(&a.date)?;
    let stage: Stage = a.name.parse()?;
    let config = super::load(&a.config, &a.engine)?;
    config.channel(&a.channel)?;
    let sql = SqlDir::for_config(&config)?;
    let rt = Runtime::open(&config, a.engine.engine.as_deref()).await?;
    let out = run_channel(&config, &a.channel, date, &rt.engines, &sql, &[stage]).await;
    if stage == reckon::records::Stage::Report {
        reckon::pipeline::drain_replica(&config).await;
    }
    rt.close();
    let out = out?;
    print_json(&out.result.to_json());
    Ok(threshold_code(
        a.fail_on_threshold,
        out.result.threshold_passed(),
        out.exit_code,
    ))
}
