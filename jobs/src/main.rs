//! The `reckon` command line: parses flags, calls the library, maps errors to exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reckon::config::{parse_date, Config};
use reckon::error::{Error, Result};
use reckon::generate::{generate, GenerateOptions};
use reckon::pipeline::{run_channel, run_day, Runtime};
use reckon::sql::SqlDir;

/// mimalloc returns freed memory to the system sooner than glibc's allocator under
/// DataFusion's many threads, which lowers the peak resident memory of a large join.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc.h of libmimalloc-sys 0.1.49 (pinned exactly in
/// Cargo.toml; the Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives freed pages back to the system at once instead of after mimalloc's default delay of
/// one second. A reconcile frees its duplicate check's hash tables while the join's build side
/// grows; at 10M records a side this lowers the peak by about 0.5 GB at no measured cost in
/// time (BENCHMARKS.md). `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)]
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer option; it has no preconditions and is safe
        // to call at any time from any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[derive(Parser)]
#[command(
    name = "reckon",
    version,
    about = "Daily payment reconciliation on DataFusion and Ballista"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: `text` (for people) or `json` (one object per line, for log
    /// collectors; each carries channel, date, stage, invocation and run_id where known).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a labelled sample and reconcile one day on the embedded engine.
    Demo {
        /// Folder for the sample and its outputs.
        #[arg(long, default_value = "reckon-demo")]
        dir: PathBuf,
        /// Payments per channel.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
    },
    /// Generate a labelled synthetic data set (bills, warehouse, labels, reckon.toml).
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// First bill date, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// Payments per channel per day.
        #[arg(long)]
        rows: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Only this channel (repeatable: alipay, wechat); both when absent.
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// Write the warehouse there instead (`s3://bucket/prefix`; an S3-compatible server's
        /// endpoint from AWS_ENDPOINT) and point reckon.toml at it.
        #[arg(long)]
        warehouse_url: Option<String>,
        /// The warehouse tables' format: parquet (Hive partitions) or delta (the same files
        /// with a Delta Lake log).
        #[arg(long, default_value = "parquet", value_parser = ["parquet", "delta"])]
        warehouse_format: String,
    },
    /// Run the whole daily job (fetch, normalize, collect, reconcile, report) for a date.
    Run {
        #[command(flatten)]
        day: Day,
        /// local, standalone, or df://HOST:PORT (overrides the config).
        #[arg(long)]
        engine: Option<String>,
        /// Accepted for the scheduler's sake: every run recomputes its stages.
        #[arg(long)]
        force: bool,
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
        /// Exit 3 when a channel's day passes one of its thresholds (default: exit 0, the
        /// summary says so).
        #[arg(long)]
        fail_on_threshold: bool,
        /// Seconds to wait for another run of the same channel-date (overrides the config).
        #[arg(long)]
        lease_wait: Option<u64>,
    },
    /// Run one stage of one channel and date.
    Stage {
        /// fetch, normalize, collect, reconcile or report.
        name: String,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        date: String,
        #[arg(long)]
        channel: String,
        #[arg(long)]
        engine: Option<String>,
        /// Exit 3 when the report finds a threshold passed.
        #[arg(long)]
        fail_on_threshold: bool,
        /// Seconds to wait for another run of the same channel-date (overrides the config).
        #[arg(long)]
        lease_wait: Option<u64>,
    },
    /// Run every date of a range in order, the channels of a date side by side; skips dates
    /// already reconciled unless --force; resumable; ends with a table of dates and statuses.
    Backfill {
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
        /// local, standalone, or df://HOST:PORT (overrides the config).
        #[arg(long)]
        engine: Option<String>,
        /// Seconds to wait for another run of the same channel-date (overrides the config).
        #[arg(long)]
        lease_wait: Option<u64>,
    },
    /// Each channel's state for a date: its status, each stage, its run id, whether a run
    /// holds it now.
    Status {
        #[command(flatten)]
        day: Day,
        /// Print JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a reconciled day's summary per channel as a table (from `summary.json`).
    Report {
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
    },
    /// A Ballista cluster of reckon's scheduler and executors on this machine (loopback).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// The analysts' SQL files.
    Sql {
        #[command(subcommand)]
        command: SqlCommand,
    },
    /// Normalize one bill file with a template, to OUT/normalized.parquet and
    /// OUT/rejected.parquet; prints rows read, written, rejected and skipped, and the totals.
    Normalize {
        /// A built-in template name (alipay_trade_v1, …) or a template file.
        #[arg(long)]
        format: String,
        /// The bill file, as the channel delivers it (zip, gzip or plain).
        #[arg(long)]
        input: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Bill date written into the rows, YYYY-MM-DD; default: the local date of the first row.
        #[arg(long)]
        bill_date: Option<String>,
        /// Channel name written into the rows; default: the template name's first word.
        #[arg(long)]
        channel: Option<String>,
        /// More rejected rows than this fails the file.
        #[arg(long, default_value_t = 1000)]
        max_rejected: u64,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a scheduler and executors on 127.0.0.1, wait until they are ready, and print the
    /// `df://` URL for `--engine`.
    Up {
        /// Logs, pid files, work directories and cluster.json.
        #[arg(long, default_value = ".reckon-cluster")]
        dir: PathBuf,
        /// Executors to start.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Where reckon-scheduler and reckon-executor are (default: beside reckon).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Tasks each executor runs at once (its --vcores).
        #[arg(long, default_value_t = 2)]
        vcores: usize,
        /// Each executor's memory pool in MiB: sorts, aggregates and sort-merge joins spill
        /// past it.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Seconds to wait for the cluster to be ready.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
    /// Stop exactly the processes `up` started.
    Down {
        #[arg(long, default_value = ".reckon-cluster")]
        dir: PathBuf,
    },
}

/// One day of some or all channels.
#[derive(clap::Args, Debug)]
struct Day {
    #[arg(long)]
    config: PathBuf,
    /// Bill date, YYYY-MM-DD, in the channel's time zone.
    #[arg(long)]
    date: String,
    /// Only these channels (repeatable); all when absent.
    #[arg(long = "channel")]
    channels: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum SqlCommand {
    /// Parse every SQL file, refuse anything but one query, and plan it against the tables
    /// the job gives it, without data; each error names the file, line and column.
    Check {
        /// The SQL folder (default: the config's, else the copy built into reckon).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A config: its channel's rules are the parameters, and platform.sql is planned
        /// against the warehouse's own tables.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RECKON_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,datafusion=warn,ballista=warn,ballista_scheduler::display=off,\
             deltalake_core=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn",
        )
    });
    if format == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(reckon::logs::JsonSpanFields)
            .event_format(reckon::logs::FlatJson)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the commands that reconcile hold a large join; the others (normalize, generate)
    // churn through small allocations, where purging at once costs page faults.
    if matches!(
        cli.command,
        Command::Run { .. }
            | Command::Stage { .. }
            | Command::Demo { .. }
            | Command::Backfill { .. }
    ) {
        purge_freed_memory_at_once();
    }
    init_logs(&cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Collectors get the invocation on every line; people see it in leases and alerts.
    let root = if cli.log_format == "json" {
        tracing::info_span!("reckon", invocation = reckon::lease::invocation_id())
    } else {
        tracing::Span::none()
    };
    // The scheduler reads the last stdout line of these even when they fail before any
    // channel ran (an unreachable engine, a bad config).
    let json_line = matches!(
        cli.command,
        Command::Run { .. } | Command::Stage { .. } | Command::Backfill { .. }
    );
    let code = match runtime.block_on(tracing::Instrument::instrument(dispatch(cli.command), root))
    {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if json_line {
                print_json(&serde_json::json!({
                    "status": e.status(),
                    "error": e.to_string(),
                    "exit_code": e.exit_code(),
                }));
            }
            e.exit_code()
        }
    };
    let _ = std::io::stdout().flush();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The exit code of a run that went through: 3 with `--fail-on-threshold` when a threshold
/// passed (differences are results, so by default they do not fail a run).
fn threshold_code(fail_on_threshold: bool, summary: &serde_json::Value, code: i32) -> i32 {
    if code == 0 && fail_on_threshold && reckon::stages::report::threshold_passed(summary) {
        eprintln!(
            "error: a threshold passed (--fail-on-threshold); see \"thresholds\" in the summary"
        );
        3
    } else {
        code
    }
}

/// `reckon run --preview`: each channel previewed, its table on stdout, then one JSON line.
async fn preview_day(
    config: &Config,
    channels: &[String],
    date: chrono::NaiveDate,
    engines: &reckon::engine::Engines,
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

/// Prints the final JSON line the scheduler reads.
fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

async fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Demo { dir, rows } => {
            let (text, code) = reckon::demo::run(&dir, rows).await?;
            print!("{text}");
            Ok(code)
        }
        Command::Generate {
            out,
            from,
            days,
            rows,
            seed,
            channels,
            warehouse_url,
            warehouse_format,
        } => {
            let from = parse_date(&from)?;
            if warehouse_format == "delta"
                && warehouse_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("postgres"))
            {
                return Err(Error::Config(
                    "--warehouse-format delta needs a file or s3:// warehouse".into(),
                ));
            }
            let out_dir = out.clone();
            let g = generate(&GenerateOptions {
                out,
                from,
                days,
                rows,
                seed,
                channels,
            })?;
            if warehouse_format == "delta" {
                reckon::generate::warehouse_to_delta(&out_dir).await?;
            }
            if let Some(url) = &warehouse_url {
                let n = reckon::generate::move_warehouse(&out_dir, url).await?;
                eprintln!("warehouse: {n} files written to {url}");
            }
            println!(
                "generated {} bill rows, {} warehouse rows, {} labels; config: {}",
                g.bill_rows,
                g.warehouse_rows,
                g.labels,
                g.config.display()
            );
            Ok(0)
        }
        Command::Run {
            day:
                Day {
                    config,
                    date,
                    channels,
                },
            engine,
            force: _,
            fail_on_threshold,
            lease_wait,
            preview,
            sql_dir,
            show,
        } => {
            let date = parse_date(&date)?;
            let mut config = Config::load(&config)?;
            if let Some(w) = lease_wait {
                config.orchestration.lease_wait_secs = w;
            }
            if let Some(dir) = sql_dir {
                let abs = std::path::absolute(&dir)
                    .map_err(|e| Error::Config(format!("--sql-dir {}: {e}", dir.display())))?;
                config.sql_dir = Some(abs.display().to_string());
            }
            let rt = Runtime::open(&config, engine.as_deref()).await?;
            if preview {
                let result = preview_day(&config, &channels, date, &rt.engines, show).await;
                rt.close();
                return result;
            }
            let result = run_day(&config, &channels, date, &rt.engines).await;
            rt.close();
            let (summary, code) = result?;
            print_json(&summary);
            Ok(threshold_code(fail_on_threshold, &summary, code))
        }
        Command::Stage {
            name,
            config,
            date,
            channel,
            engine,
            fail_on_threshold,
            lease_wait,
        } => {
            let date = parse_date(&date)?;
            if !reckon::stages::STAGES.contains(&name.as_str()) {
                return Err(Error::Config(format!(
                    "unknown stage {name:?}: one of {}",
                    reckon::stages::STAGES.join(", ")
                )));
            }
            let mut config = Config::load(&config)?;
            if let Some(w) = lease_wait {
                config.orchestration.lease_wait_secs = w;
            }
            config.channel(&channel)?;
            let sql = SqlDir::for_config(&config)?;
            let rt = Runtime::open(&config, engine.as_deref()).await?;
            let out =
                run_channel(&config, &channel, date, &rt.engines, &sql, &[name.as_str()]).await;
            rt.close();
            let out = out?;
            print_json(&out.summary);
            Ok(threshold_code(
                fail_on_threshold,
                &out.summary,
                out.exit_code,
            ))
        }
        Command::Backfill {
            config,
            from,
            to,
            channels,
            force,
            parallel,
            engine,
            lease_wait,
        } => {
            let (from, to) = (parse_date(&from)?, parse_date(&to)?);
            let mut config = Config::load(&config)?;
            if let Some(w) = lease_wait {
                config.orchestration.lease_wait_secs = w;
            }
            let req = reckon::backfill::Request {
                channels: &channels,
                from,
                to,
                force,
                parallel,
            };
            let rt = Runtime::open(&config, engine.as_deref()).await?;
            let result = reckon::backfill::run(&config, &req, &rt.engines).await;
            rt.close();
            let outcomes = result?;
            print!("{}", reckon::backfill::table(&outcomes));
            let (summary, code) = reckon::backfill::summary(&req, &outcomes);
            print_json(&summary);
            Ok(code)
        }
        Command::Status {
            day:
                Day {
                    config,
                    date,
                    channels,
                },
            json,
        } => {
            let date = parse_date(&date)?;
            let config = Config::load(&config)?;
            let states = reckon::status::states(&config, &channels, date)?;
            if json {
                print_json(&serde_json::Value::Array(states));
            } else {
                print!("{}", reckon::status::render(&states));
            }
            Ok(0)
        }
        Command::Report {
            day:
                Day {
                    config,
                    date,
                    channels,
                },
            hourly,
            by_merchant,
            top,
        } => {
            let date = parse_date(&date)?;
            let config = Config::load(&config)?;
            let store = reckon::pipeline::store(&config)?;
            for name in &config.channel_names(&channels)? {
                let path = store.area("results", name, date).join("summary.json");
                let text = std::fs::read(&path).map_err(|_| {
                    Error::NotReady(format!(
                        "no summary for {name} on {date} ({}): reconcile the day first",
                        path.display()
                    ))
                })?;
                let summary: serde_json::Value = serde_json::from_slice(&text)?;
                print!("{}", reckon::stages::report::render(&summary));
                for (wanted, file, grain, limit) in [
                    (hourly, "by_hour.parquet", "hour", usize::MAX),
                    (by_merchant, "by_merchant.parquet", "merchant_id", top),
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
        Command::Cluster { command } => match command {
            ClusterCommand::Up {
                dir,
                executors,
                bin_dir,
                vcores,
                memory_mb,
                wait_secs,
            } => {
                let c = reckon::cluster::up(&reckon::cluster::UpOptions {
                    dir,
                    executors,
                    bin_dir,
                    concurrent_tasks: vcores,
                    memory_pool_bytes: memory_mb.map(|m| m * 1024 * 1024),
                    wait: std::time::Duration::from_secs(wait_secs),
                })?;
                for p in &c.processes {
                    eprintln!(
                        "{} pid {} port {} log {}",
                        p.name,
                        p.pid,
                        p.port,
                        p.log.display()
                    );
                }
                print_json(&serde_json::to_value(&c)?);
                Ok(0)
            }
            ClusterCommand::Down { dir } => {
                for p in reckon::cluster::down(&dir)? {
                    eprintln!("stopped {p}");
                }
                Ok(0)
            }
        },
        Command::Sql {
            command: SqlCommand::Check { dir, config },
        } => {
            let config = config.as_deref().map(Config::load).transpose()?;
            let sql = match (&dir, &config) {
                (Some(d), _) if !d.is_dir() => {
                    return Err(Error::Config(format!(
                        "--dir {} is not a directory",
                        d.display()
                    )))
                }
                (Some(d), _) => SqlDir {
                    dir: Some(d.clone()),
                },
                (None, Some(c)) => SqlDir::for_config(c)?,
                (None, None) => SqlDir { dir: None },
            };
            let reports = reckon::sqlcheck::check(&sql, config.as_ref()).await?;
            let mut errors = 0;
            for r in &reports {
                if r.findings.is_empty() {
                    println!("ok     {} ({})", r.file, r.checked);
                }
                for f in &r.findings {
                    errors += 1;
                    println!("error  {f}");
                }
            }
            println!("{} file(s), {errors} error(s)", reports.len());
            Ok(if errors > 0 { 2 } else { 0 })
        }
        Command::Normalize {
            format,
            input,
            out,
            bill_date,
            channel,
            max_rejected,
        } => {
            let bill_date = bill_date.as_deref().map(parse_date).transpose()?;
            let n = match reckon::formats::normalize_to_dir(
                &format,
                &input,
                &out,
                bill_date,
                channel.as_deref(),
                max_rejected,
            ) {
                Ok(n) => n,
                Err(e) => {
                    print_json(&serde_json::json!({
                        "input": input.display().to_string(), "format": format,
                        "status": e.status(), "error": e.to_string(),
                    }));
                    return Err(e);
                }
            };
            let s = &n.stats;
            eprintln!(
                "{}: {} records read, {} written, {} rejected, {} skipped (template {})",
                input.display(),
                s.rows_read,
                s.rows_written,
                s.rows_rejected,
                s.rows_skipped,
                n.template
            );
            for t in &s.totals {
                eprintln!(
                    "  totals {}: bill {} = parsed {} {}",
                    t.value,
                    t.expected,
                    t.parsed,
                    if t.ok { "ok" } else { "MISMATCH" }
                );
            }
            if s.totals.is_empty() {
                eprintln!("  totals: the template checks none");
            }
            eprintln!(
                "  wrote {} and {}",
                n.normalized.display(),
                n.rejected.display()
            );
            print_json(&serde_json::json!({
                "input": input.display().to_string(), "format": n.template, "status": "ok",
                "bill_date": s.bill_date.map(|d| d.to_string()),
                "rows_read": s.rows_read, "rows_written": s.rows_written,
                "rows_rejected": s.rows_rejected, "rows_skipped": s.rows_skipped,
                "totals": s.totals,
                "normalized": n.normalized.display().to_string(),
                "rejected": n.rejected.display().to_string(),
            }));
            Ok(0)
        }
    }
}
