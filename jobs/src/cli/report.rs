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

/// Reads each day through its committed pointer: the summary and statistics of one committed
/// run, never a mix with a run still in progress.
pub async fn run(a: Args) -> Result<i32> {
    let date = parse_date(&a.day.date)?;
    let config = Config::load(&a.day.config)?;
    let store = reckon::pipeline::store(&config)?;
    for name in &config.channel_names(&a.day.channels)? {
        let committed = store.committed(name, date).await?;
        let summary_file = committed
            .as_ref()
            .and_then(|c| c.file("results", "summary.json"));
        let Some(file) = summary_file else {
            return Err(Error::NotReady(format!(
                "no committed summary for {name} on {date} ({} names none): reconcile the day first",
                store.url(&store.committed_path(name, date))
            )));
        };
        let text = store
            .root()
            .get(&file.path)
            .await?
            .map(|(b, _)| b)
            .ok_or_else(|| {
                Error::Other(format!(
                    "{}: named by the committed pointer but missing",
                    store.url(&file.path)
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
            let Some(stats) = committed.as_ref().and_then(|c| c.file("stats", file)) else {
                return Err(Error::NotReady(format!(
                    "no {file} committed for {name} on {date}: reconcile the day again with this version"
                )));
            };
            let copy = store.local_copy(&stats.path).await?;
            let batches = reckon::parquet_io::read_file(copy.path())?;
            print!(
                "{}",
                reckon::stages::report::render_grain(&batches, grain, limit)?
            );
        }
    }
    Ok(0)
}
