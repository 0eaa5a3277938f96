//! fetch: brings the channel's bill for the date into `raw/` through the channel's fetcher
//! (`fetchers/`), with its SHA-256 and the fetch's metadata in `fetch.json`.
//!
//! Identical content fetched again is a no-op (`unchanged`). Different content for a date
//! fetched before is a re-issued bill: the earlier file and its `fetch.json` move to
//! `raw/…/superseded/<sha256>/`, `fetch.json` lists every earlier fetch under `history`, and
//! the later stages of the date become stale, so the next run (or backfill) reconciles it again.

use serde::{Deserialize, Serialize};

use super::{Job, Outcome};
use crate::error::{IoContext, Result};
use crate::fetchers::{self, Request};
use crate::records::{FetchDetail, Output};
use crate::store::{sha256_file, write_atomic};

/// `raw/…/fetch.json`: the fetch's facts and every earlier fetch of the date.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FetchFile {
    #[serde(flatten)]
    fetch: FetchDetail,
    /// Earlier fetches of a re-issued bill, newest last (each as it was written).
    #[serde(default)]
    history: Vec<serde_json::Value>,
}

/// Runs the stage.
pub async fn run(job: &Job<'_>) -> Result<Outcome> {
    let fetcher = fetchers::for_channel(job.config, job.channel)?;
    let staged = job.store.staging("fetch", job.name(), job.date)?;
    let got = fetcher
        .fetch(&Request {
            channel: job.name(),
            date: job.date,
            dir: &staged,
        })
        .await?;
    let file = staged.join(&got.file);
    let sha = sha256_file(&file)?;
    let size = std::fs::metadata(&file).at(&file)?.len();
    let dest = job.store.area("raw", job.name(), job.date);
    let manifest = job.manifest()?;
    let last = manifest.stages.fetch.as_ref();
    let previous = last.and_then(|r| r.last_facts()).map(|f| f.sha256.clone());
    let earlier = read_fetch_file(&dest.join("fetch.json"));
    let earlier_file = earlier.as_ref().map(|e| e.fetch.file.clone());
    if previous.as_deref() == Some(sha.as_str())
        && earlier_file
            .as_deref()
            .is_some_and(|f| dest.join(f).is_file())
    {
        if let Some((rec, facts)) = last.and_then(|r| r.last_facts().map(|f| (r, f))) {
            tracing::info!(sha256 = %sha, "the bill is unchanged since the last fetch");
            let mut facts = facts.clone();
            facts.unchanged = true;
            return Ok((rec.files.clone(), Output::Fetch(facts)));
        }
    }
    let mut history = earlier
        .as_ref()
        .map(|e| e.history.clone())
        .unwrap_or_default();
    let earlier_sha = earlier.as_ref().map(|e| e.fetch.sha256.clone());
    let reissued = earlier_file.is_some() && earlier_sha.as_deref() != Some(sha.as_str());
    if let (true, Some(earlier)) = (reissued, &earlier) {
        // Keep the bill it replaces, with its metadata, beside the new one.
        let keep = dest.join("superseded").join(&earlier.fetch.sha256);
        std::fs::create_dir_all(&keep).at(&keep)?;
        for name in [earlier.fetch.file.clone(), "fetch.json".into()] {
            let from = dest.join(&name);
            if from.is_file() {
                std::fs::rename(&from, keep.join(&name)).at(&from)?;
            }
        }
        let mut entry = serde_json::to_value(&earlier.fetch)?;
        entry["superseded_to"] =
            serde_json::json!(job.store.relative(&keep.join(&earlier.fetch.file)));
        history.push(entry);
    }
    let facts = FetchDetail {
        file: got.file.clone(),
        sha256: sha.clone(),
        size,
        source: got.source.clone(),
        fetcher: fetcher.kind().to_string(),
        fetched_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        channel_detail: got.detail.clone(),
        unchanged: false,
        reissued_from_sha256: None,
    };
    let meta = FetchFile {
        fetch: facts.clone(),
        history,
    };
    write_atomic(
        &staged.join("fetch.json"),
        serde_json::to_vec_pretty(&serde_json::to_value(&meta)?)?.as_slice(),
    )?;
    tracing::info!(
        fetcher = fetcher.kind(),
        source = %got.source,
        size,
        sha256 = %sha,
        "bill fetched"
    );
    let files = job.store.publish(&staged, &dest, true)?;
    let files = files.iter().map(|p| job.store.relative(p)).collect();
    let mut facts = facts;
    // The bill the date's later stages last ran on: the manifest's, else raw/'s record.
    let before = previous.or(earlier_sha);
    if before.as_deref().is_some_and(|b| b != sha) {
        facts.reissued_from_sha256 = before;
        tracing::warn!(
            sha256 = %sha,
            "the bill changed since the last fetch: a re-issued bill; the date's later stages will run again"
        );
    }
    Ok((files, Output::Fetch(facts)))
}

/// The `fetch.json` of an earlier fetch, when there is one that reads.
fn read_fetch_file(path: &std::path::Path) -> Option<FetchFile> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}
