//! `reckon audit`: the review desk's audit.

use std::path::PathBuf;

use reckon::config::Config;
use reckon::desk::Desk;
use reckon::error::Result;

use super::print_json;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check the desk's audit chain: every entry present, in order, hashing to its hash and
    /// naming the one before; every decision and comment with its entry.
    Verify {
        #[arg(long)]
        config: PathBuf,
    },
}

/// Exit 0 when the audit is intact, 1 naming every entry that is not.
pub async fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Verify { config } => {
            let config = Config::load(&config)?;
            let desk = Desk::open(&config.desk, &config.base_dir).await?;
            let verdict = desk.verify_audit().await?;
            for p in &verdict.problems {
                eprintln!("audit: {p}");
            }
            if verdict.intact() {
                eprintln!(
                    "audit: {} entries, intact; the last hashes to {}",
                    verdict.entries, verdict.head
                );
            }
            print_json(&serde_json::json!({
                "intact": verdict.intact(),
                "entries": verdict.entries,
                "head": verdict.head,
                "problems": verdict.problems,
            }));
            Ok(if verdict.intact() { 0 } else { 1 })
        }
    }
}
