//! `reckon status`: each channel's state for a date.

use reckon::config::{parse_date, Config};
use reckon::error::Result;

use super::{print_json, Day};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    day: Day,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args) -> Result<i32> {
    let date = parse_date(&a.day.date)?;
    let config = Config::load(&a.day.config)?;
    let states = reckon::status::states(&config, &a.day.channels, date).await?;
    if a.json {
        print_json(&serde_json::Value::Array(states));
    } else {
        print!("{}", reckon::status::render(&states));
    }
    Ok(0)
}
