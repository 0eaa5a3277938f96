//! `reckon verify`: checks committed days.
//!
//! - by default: each day's signature (with `[signing]`) and every file its pointer names,
//!   hashed again, and the recorded inputs;
//! - `--replay`: each day reconciled again from its recorded inputs into a scratch root, every
//!   output compared byte for byte;
//! - `--replica`: the replica holds each day exactly as the primary does.

use std::path::PathBuf;

use chrono::NaiveDate;
use reckon::config::{parse_date, Config};
use reckon::error::{Error, Result};
use reckon::replica::{verify, Replica};
use reckon::signing::Verifier;

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
    /// Reconcile each day again from its recorded inputs and compare every output.
    #[arg(long, conflicts_with = "replica")]
    replay: bool,
    /// Compare the primary with the `[replica]` root.
    #[arg(long)]
    replica: bool,
}

/// The committed days to look at: `date`, or every day of the channels on the root.
async fn days(
    store: &reckon::store::Store,
    channels: &[String],
    date: Option<NaiveDate>,
) -> Result<Vec<(String, NaiveDate)>> {
    let mut out = Vec::new();
    for ch in channels {
        match date {
            Some(d) => out.push((ch.clone(), d)),
            None => {
                for d in store.dates("runs", ch).await? {
                    out.push((ch.clone(), d));
                }
            }
        }
    }
    Ok(out)
}

/// Exit 0 when everything checked agrees, 1 naming each day that does not.
pub async fn run(a: Args) -> Result<i32> {
    let config = Config::load(&a.config)?;
    let channels = config.channel_names(&a.channels)?;
    let date = a.date.as_deref().map(parse_date).transpose()?;
    let primary = reckon::pipeline::store(&config)?;
    if a.replica {
        let replica = Replica::of(&config)?
            .ok_or_else(|| Error::Config("--replica: the config has no [replica]".into()))?;
        let dates: Vec<NaiveDate> = date.into_iter().collect();
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
        return Ok(if differences.is_empty() { 0 } else { 1 });
    }
    let todo = days(&primary, &channels, date).await?;
    let mut results = Vec::new();
    let mut bad = 0;
    if a.replay {
        let rt = reckon::pipeline::Runtime::open(&config, Some("local")).await?;
        for (ch, d) in &todo {
            if let Some(r) = reckon::verify::replay_day(&config, ch, *d, &rt.engines).await? {
                eprintln!(
                    "{}: {}",
                    r.day,
                    if r.problems.is_empty() {
                        format!("replayed, {} outputs byte-identical", r.compared)
                    } else {
                        r.problems.join("; ")
                    }
                );
                bad += usize::from(!r.problems.is_empty());
                results.push(serde_json::to_value(&r)?);
            }
        }
        rt.close();
    } else {
        let verifier = Verifier::of(config.signing.as_ref(), &config.locator())?;
        for (ch, d) in &todo {
            if let Some(c) = reckon::verify::check_day(&primary, verifier.as_ref(), ch, *d).await? {
                eprintln!(
                    "{}: signature {}, {} files: {}",
                    c.day,
                    c.signature,
                    c.files,
                    if c.problems.is_empty() {
                        "whole".to_string()
                    } else {
                        c.problems.join("; ")
                    }
                );
                bad += usize::from(!c.problems.is_empty());
                results.push(serde_json::to_value(&c)?);
            }
        }
    }
    if results.is_empty() {
        return Err(Error::NotReady(
            "no committed day to verify among those asked for".into(),
        ));
    }
    print_json(&serde_json::json!({ "days": results, "failed": bad }));
    Ok(if bad == 0 { 0 } else { 1 })
}
