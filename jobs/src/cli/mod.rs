//! The command line: one module per command, each with its flags (`Args`) and what it does
//! (`run`); the config, the engine sessions and the final JSON line are set up here once.

mod audit;
mod backfill;
mod cluster;
mod desk;
mod generate;
mod normalize;
mod replicate;
mod report;
mod run;
mod serve;
mod sql;
mod stage;
mod status;
mod stream;
mod verify;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use reckon::config::Config;
use reckon::error::Result;
use reckon::pipeline::Runtime;

#[derive(Parser)]
#[command(
    name = "reckon",
    version,
    about = "Daily payment reconciliation on DataFusion and Ballista"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr: `text` (for people) or `json` (one object per line, for log
    /// collectors; each carries channel, date, stage, invocation and run_id where known).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate a labelled sample and reconcile one day on the embedded engine.
    Demo(generate::DemoArgs),
    /// Generate a labelled synthetic data set (bills, warehouse, labels, reckon.toml).
    Generate(generate::GenerateArgs),
    /// Run the whole daily job (fetch, normalize, collect, reconcile, report) for a date.
    Run(run::Args),
    /// Run one stage of one channel and date.
    Stage(stage::Args),
    /// Run every date of a range in order, the channels of a date side by side; skips dates
    /// already reconciled unless --force; resumable; ends with a table of dates and statuses.
    Backfill(backfill::Args),
    /// Each channel's state for a date: its status, each stage, its run id, whether a run
    /// holds it now.
    Status(status::Args),
    /// Print a reconciled day's summary per channel as a table (from `summary.json`).
    Report(report::Args),
    /// Bring an `eventual` replica up to date from the backlog kept on the primary.
    Replicate(replicate::Args),
    /// Check committed days: with --replica, that the replica holds them byte for byte.
    Verify(verify::Args),
    /// The review desk in a browser: its pages, logins and decisions.
    Serve(serve::Args),
    /// The review desk from the command line: its list of differences, its users and tokens.
    Desk {
        #[command(subcommand)]
        command: desk::Command,
    },
    /// The review desk's audit.
    Audit {
        #[command(subcommand)]
        command: audit::Command,
    },
    /// A Ballista cluster of reckon's scheduler and executors on this machine (loopback).
    Cluster {
        #[command(subcommand)]
        command: cluster::Command,
    },
    /// The analysts' SQL files.
    Sql {
        #[command(subcommand)]
        command: sql::Command,
    },
    /// Real-time reconciliation from a message queue (NATS JetStream, Kafka): runs until
    /// SIGTERM; `reckon stream status` prints what its state holds.
    Stream(stream::Args),
    /// Normalize one bill file with a template, to OUT/normalized.parquet and
    /// OUT/rejected.parquet; prints rows read, written, rejected and skipped, and the totals.
    Normalize(normalize::Args),
}

impl Command {
    /// Whether a scheduler reads its last stdout line, which is then JSON also when it fails
    /// before any channel ran (an unreachable engine, a bad config).
    pub fn ends_with_json(&self) -> bool {
        matches!(
            self,
            Command::Run(_) | Command::Stage(_) | Command::Backfill(_)
        )
    }
}

/// Runs the command; the exit code it asks for.
pub async fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Demo(a) => generate::demo(a).await,
        Command::Generate(a) => generate::run(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Stage(a) => stage::run(a).await,
        Command::Backfill(a) => backfill::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Report(a) => report::run(a).await,
        Command::Replicate(a) => replicate::run(a).await,
        Command::Audit { command } => audit::run(command).await,
        Command::Desk { command } => desk::run(command).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Cluster { command } => cluster::run(command),
        Command::Sql { command } => sql::run(command).await,
        Command::Normalize(a) => normalize::run(a),
        Command::Stream(a) => stream::run(a).await,
    }
}

/// One day of some or all channels.
#[derive(clap::Args, Debug)]
pub struct Day {
    #[arg(long)]
    pub config: PathBuf,
    /// Bill date, YYYY-MM-DD, in the channel's time zone.
    #[arg(long)]
    pub date: String,
    /// Only these channels (repeatable); all when absent.
    #[arg(long = "channel")]
    pub channels: Vec<String>,
}

/// How a command that runs stages is set up: the engine and the lease wait it overrides.
#[derive(clap::Args, Debug)]
pub struct Engine {
    /// local, standalone, or df://HOST:PORT (overrides the config).
    #[arg(long)]
    pub engine: Option<String>,
    /// Seconds to wait for another run of the same channel-date (overrides the config).
    #[arg(long)]
    pub lease_wait: Option<u64>,
}

/// The config with a command's overrides.
pub fn load(config: &Path, engine: &Engine) -> Result<Config> {
    let mut config = Config::load(config)?;
    if let Some(w) = engine.lease_wait {
        config.orchestration.lease_wait_secs = w;
    }
    Ok(config)
}

/// The config with a command's overrides, and the engine sessions on it.
pub async fn open(config: &Path, engine: &Engine) -> Result<(Config, Runtime)> {
    let config = load(config, engine)?;
    let rt = Runtime::open(&config, engine.engine.as_deref()).await?;
    Ok((config, rt))
}

/// The exit code of a run that went through: 3 with `--fail-on-threshold` when a threshold
/// passed (differences are results, so by default they do not fail a run).
pub fn threshold_code(fail_on_threshold: bool, passed: bool, code: i32) -> i32 {
    if code == 0 && fail_on_threshold && passed {
        eprintln!(
            "error: a threshold passed (--fail-on-threshold); see \"thresholds\" in the summary"
        );
        3
    } else {
        code
    }
}

/// Prints the final JSON line the scheduler reads.
pub fn print_json(v: &serde_json::Value) {
    println!("{v}");
}
