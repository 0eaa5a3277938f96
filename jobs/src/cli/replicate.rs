//! `reckon replicate`: brings an `eventual` replica up to date from the backlog on the primary.

use std::path::PathBuf;

use reckon::config::{Config, ReplicaMode};
use reckon::error::{Error, Result};
use reckon::replica::{drain, lag, Replica};

use super::print_json;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
}

/// Exit 0 when the backlog is empty after it, 75 when days stay queued (the replica could not
/// be reached: retry later).
pub async fn run(a: Args) -> Result<i32> {
    let config = Config::load(&a.config)?;
    let replica =
        Replica::of(&config)?.ok_or_else(|| Error::Config("the config has no [replica]".into()))?;
    if replica.mode == ReplicaMode::Strong {
        eprintln!("the replica is strong: every committed day is on it already; checking the backlog all the same");
    }
    let primary = reckon::pipeline::store(&config)?;
    let orch = &config.orchestration;
    let base = std::time::Duration::from_millis(orch.retry_base_ms);
    let done = drain(&primary, &replica.store, orch.retry_attempts, base).await?;
    let left = lag(&primary).await?;
    for d in &done.replicated {
        eprintln!("replicated {d}");
    }
    for (d, why) in &done.failed {
        eprintln!("still queued {d}: {why}");
    }
    print_json(&serde_json::json!({
        "replica": replica.store.display(),
        "replicated": done.replicated,
        "failed": done.failed.iter().map(|(d, e)| serde_json::json!({"day": d, "error": e})).collect::<Vec<_>>(),
        "lag": left,
    }));
    Ok(if left.days == 0 { 0 } else { 75 })
}
