//! `reckon sql check`: every SQL file planned without data.

use std::path::PathBuf;

use reckon::config::Config;
use reckon::error::{Error, Result};
use reckon::sql::SqlDir;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
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

pub async fn run(command: Command) -> Result<i32> {
    let Command::Check { dir, config } = command;
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
