//! `reckon stream`: the real-time mode, and what its state holds.

use std::path::PathBuf;
use std::time::Duration;

use reckon::config::Config;
use reckon::error::Result;
use reckon::stream::{state::State, RunOptions, Stream, DEFAULT_DATABASE};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop (exit 0) once nothing has arrived for this many seconds and no day is due to
    /// close (for a backfill from the queue, and the tests); default: run until SIGTERM.
    #[arg(long)]
    exit_when_idle: Option<u64>,
    /// This consumer's name in the lease (default: host and process id).
    #[arg(long)]
    holder: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Compares the stream's day of a channel with the batch job's (once the bill is
    /// reconciled): every record whose outcome differs, as JSON; an alert when any does.
    Compare {
        #[arg(long)]
        config: PathBuf,
        /// The day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// Only these channels (repeatable). When absent, every channel whose day both the
        /// bill and the stream have committed (the others are named on stderr).
        #[arg(long)]
        channel: Vec<String>,
        /// Records listed at most per channel (all are counted).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// The state's counts as JSON: records by side and state, rejected messages, messages
    /// counted once.
    Status {
        #[arg(long)]
        config: PathBuf,
    },
}

pub async fn run(a: Args) -> Result<i32> {
    if let Some(Command::Compare {
        config,
        date,
        channel,
        limit,
    }) = &a.command
    {
        return compare(config, date, channel, *limit).await;
    }
    if let Some(Command::Status { config }) = a.command {
        let config = Config::load(&config)?;
        let options = reckon::stream::options(&config)?;
        let database = options.database.as_deref().unwrap_or(DEFAULT_DATABASE);
        let state = State::open(database, &config.base_dir).await?;
        println!("{}", serde_json::to_string(&state.counts().await?)?);
        return Ok(0);
    }
    let Some(path) = a.config else {
        return Err(reckon::Error::Config(
            "reckon stream needs --config FILE".into(),
        ));
    };
    let config = Config::load(&path)?;
    let run = RunOptions {
        exit_when_idle: a.exit_when_idle.map(Duration::from_secs),
        holder: a.holder,
    };
    let stream = Stream::open(&config, &run).await?;
    let figures = stream.run(&run).await?;
    println!("{}", serde_json::to_string(&figures)?);
    Ok(0)
}

async fn compare(
    config: &std::path::Path,
    date: &str,
    only: &[String],
    limit: usize,
) -> Result<i32> {
    let config = Config::load(config)?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|e| reckon::Error::Config(format!("--date {date}: {e}")))?;
    let store = reckon::pipeline::store(&config)?;
    let mut out = Vec::new();
    // Without --channel, every channel whose day both the bill and the stream have committed;
    // the others are named, and only when none can be compared is that an error.
    let mut skipped = Vec::new();
    for channel in config
        .channels
        .iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
    {
        let c = match reckon::stream::compare::compare(&store, channel, day, limit).await {
            Ok(c) => c,
            Err(reckon::Error::NotReady(why)) if only.is_empty() => {
                tracing::warn!("not compared: {why}");
                skipped.push(why);
                continue;
            }
            Err(e) => return Err(e),
        };
        if c.differing > 0 {
            let alert = reckon::alerts::Alert {
                cause: reckon::alerts::Cause::StreamDiffers,
                channel: c.channel.clone(),
                bill_date: c.bill_date.clone(),
                stage: None,
                exit_code: 0,
                message: format!(
                    "{} of {} records differ between the stream's day and the bill's: lost or duplicated messages, or a bill that differs from the notifications",
                    c.differing, c.keys
                ),
                detail: serde_json::to_value(&c.records[..c.records.len().min(20)])?,
            };
            reckon::alerts::send(config.alerts.as_ref(), &alert).await;
        }
        out.push(c);
    }
    if out.is_empty() && !skipped.is_empty() {
        return Err(reckon::Error::NotReady(skipped.join("; ")));
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(0)
}
