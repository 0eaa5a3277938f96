//! `reckon verify`: checks committed days. With `--replica`, that the replica holds each day
//! exactly as the primary does (pointers, and every file's bytes by SHA-256 on both sides).

use std::path::PathBuf;

use reckon::config::{parse_date, Config};
use reckon::error::{Error, Result};
use reckon::replica::{verify, Replica};

use super::print_json;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
    /// Only this bill date (YYYY-MM-DD); every committed day when absent.
    #[arg(long)]
    date: Option<String>,
    /// Only these channels (repeatable); all when absent.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Compare the primary with the `[replica]` root.
    #[arg(long)]
    replica: bool,
}

/// Exit 0 when everything checked agrees, 1 naming each day that does not.
pub async fn run(a: Args) -> Result<i32> {
    let config = Config::load(&a.config)?;
    let channels = config.channel_names(&a.channels)?;
    let dates = match &a.date {
        Some(d) => vec![parse_date(d)?],
        None => Vec::new(),
    };
    if !a.replica {
        return Err(Error::Config(
            "say what to verify: --replica (compare the primary with [replica])".into(),
        ));
    }
    let replica = Replica::of(&config)?
        .ok_or_else(|| Error::Config("--replica: the config has no [replica]".into()))?;
    let primary = reckon::pipeline::store(&config)?;
    let (checked, differences) = verify(&primary, &replica.store, &channels, &dates).await?;
    for d in &differences {
        eprintln!("{}: {}", d.day, d.what);
    }
    eprintln!(
        "{checked} committed days compared between {} and {}: {}",
        primary.display(),
        replica.store.display(),
        if differences.is_empty() {
            "the same".to_string()
        } else {
            format!("{} differences", differences.len())
        }
    );
    print_json(&serde_json::json!({
        "checked_days": checked,
        "same": differences.is_empty(),
        "differences": differences,
    }));
    Ok(if differences.is_empty() { 0 } else { 1 })
}
