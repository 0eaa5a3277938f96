//! `reckon backfill`: every date of a range in order.

use std::path::PathBuf;

use reckon::config::parse_date;
use reckon::error::Result;

use super::{print_json, Engine};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// First bill date, YYYY-MM-DD.
    #[arg(long)]
    from: String,
    /// Last bill date, YYYY-MM-DD (inclusive).
    #[arg(long)]
    to: String,
    /// Only these channels (repeatable); all when absent.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Run dates already reconciled again.
    #[arg(long)]
    force: bool,
    /// Channels of one date run at once, at most.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    #[command(flatten)]
    engine: Engine,
}

pub async fn run(a: Args) -> Result<i32> {
    let (from, to) = (parse_date(&a.from)?, parse_date(&a.to)?);
    let req = reckon::backfill::Request {
        channels: &a.channels,
        from,
        to,
        force: a.force,
        parallel: a.parallel,
    };
    let (config, rt) = super::open(&a.config, &a.engine).await?;
    let result = reckon::backfill::run(&config, &req, &rt.engines).await;
    rt.close();
    let outcomes = result?;
    print!("{}", reckon::backfill::table(&outcomes));
    let (summary, code) = reckon::backfill::summary(&req, &outcomes);
    print_json(&summary);
    Ok(code)
}
