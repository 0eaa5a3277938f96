//! `reckon report`: a reconciled day's summary per channel as a table.

use reckon::config::{parse_date, Config};
use reckon::error::{Error, Result};

use super::Day;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    day: Day,
    /// Also print the day hour by hour (in the channel's zone), from stats/.
    #[arg(long)]
    hourly: bool,
    /// Also print the day merchant by merchant, largest net unexplained first, from stats/.
    #[arg(long)]
    by_merchant: bool,
    /// How many merchants `--by-merchant` shows.
    #[arg(long, default_value_t = 20)]
    top: usize,
}

pub fn run(a: Args) -> Result<i32> {
    let date = parse_date(&a.day.date)?;
    let config = Config::load(&a.day.config)?;
    let store = reckon::pipeline::store(&config)?;
    for name in &config.channel_names(&a.day.channels)? {
        let path = store.area("results", name, date).join("summary.json");
        let text = std::fs::read(&path).map_err(|_| {
            Error::NotReady(format!(
                "no summary for {name} on {date} ({}): reconcile the day first",
                path.display()
            ))
        })?;
        let summary: reckon::records::Summary = serde_json::from_slice(&text)?;
        print!("{}", reckon::stages::report::render(&summary));
        for (wanted, file, grain, limit) in [
            (a.hourly, "by_hour.parquet", "hour", usize::MAX),
            (a.by_merchant, "by_merchant.parquet", "merchant_id", a.top),
        ] {
            if !wanted {
                continue;
            }
            let path = store.area("stats", name, date).join(file);
            if !path.exists() {
                return Err(Error::NotReady(format!(
                    "no statistics for {name} on {date} ({}): reconcile the day again with this version",
                    path.display()
                )));
            }
            let batches = reckon::parquet_io::read_file(&path)?;
            print!(
                "{}",
                reckon::stages::report::render_grain(&batches, grain, limit)?
            );
        }
    }
    Ok(0)
}
