//! `reckon cluster up|down`: a Ballista cluster of reckon's processes on loopback.

use std::path::PathBuf;

use reckon::error::Result;

use super::print_json;

#[derive(clap::Subcommand)]
pub enum Command {
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

pub fn run(command: Command) -> Result<i32> {
    match command {
        Command::Up {
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
        Command::Down { dir } => {
            for p in reckon::cluster::down(&dir)? {
                eprintln!("stopped {p}");
            }
            Ok(0)
        }
    }
}
