//! fetch: brings the channel's bill for the date into `raw/` through the channel's fetcher
//! (`fetchers/`), with its SHA-256 and the fetch's metadata in `fetch.json`, both in the
//! bill's own version folder `raw/…/_v=<hash>/`.
//!
//! Identical content fetched again is a no-op (`unchanged`). Different content for a date
//! fetched before is a re-issued bill: the earlier bill stays in its version folder (named in
//! the record's `superseded` and in `fetch.json`'s `history`), and the later stages of the date
//! become stale, so the next run (or backfill) reconciles it again.

use serde::{Deserialize, Serialize};

use super::{Job, Outcome};
use crate::error::{IoContext, Result};
use crate::fetchers::{self, Request};
use crate::records::{FetchDetail, Output};
use crate::store::{off_task, sha256_file, write_atomic};

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
    let fetcher = fetchers::for_channel(&job.config.locator(), job.channel)?;
    let staged = job.store.staging("fetch", job.name(), job.date)?;
    let got = fetcher
        .fetch(&Request {
            channel: job.name(),
            date: job.date,
            dir: &staged,
        })
        .await?;
    let file = staged.join(&got.file);
    let sha = {
        let file = file.clone();
        off_task(move || sha256_file(&file)).await?
    };
    let size = std::fs::metadata(&file).at(&file)?.len();
    // On an object-store root the normalize of this host reads it from here, not the bucket.
    job.store.cache(&file, &sha);
    let manifest = job.manifest().await?;
    let last = manifest.stages.fetch.as_ref();
    let previous = last.and_then(|r| r.last_facts()).map(|f| f.sha256.clone());
    // The earlier fetch's metadata and bill, where its record says they were committed.
    let named = |name: &str| {
        last.and_then(|r| {
            r.files
                .iter()
                .find(|f| f.rsplit('/').next() == Some(name))
                .cloned()
        })
    };
    let earlier = match named("fetch.json") {
        Some(rel) => job
            .store
            .root()
            .get(&rel)
            .await?
            .and_then(|(b, _)| serde_json::from_slice::<FetchFile>(&b).ok()),
        None => None,
    };
    let earlier_bill = match earlier.as_ref().and_then(|e| named(&e.fetch.file)) {
        Some(rel) if job.store.root().exists(&rel).await? => Some(rel),
        _ => None,
    };
    if previous.as_deref() == Some(sha.as_str()) && earlier_bill.is_some() {
        if let Some((rec, facts)) = last.and_then(|r| r.last_facts().map(|f| (r, f))) {
            tracing::info!(sha256 = %sha, "the bill is unchanged since the last fetch");
            let mut facts = facts.clone();
            facts.unchanged = true;
            // Nothing to publish: its files are in place already.
            crate::store::crash_point("fetch", "published");
            return Ok((job.store.sums(rec).await?, Output::Fetch(facts)));
        }
    }
    let mut history = earlier
        .as_ref()
        .map(|e| e.history.clone())
        .unwrap_or_default();
    let earlier_sha = earlier.as_ref().map(|e| e.fetch.sha256.clone());
    let mut superseded = earlier
        .as_ref()
        .map(|e| e.fetch.superseded.clone())
        .unwrap_or_default();
    let reissued = earlier_bill.is_some() && earlier_sha.as_deref() != Some(sha.as_str());
    if let (true, Some(earlier), Some(bill)) = (reissued, &earlier, &earlier_bill) {
        // The bill it replaces stays in its own version folder, named here and kept.
        let mut entry = serde_json::to_value(&earlier.fetch)?;
        entry["superseded_to"] = serde_json::json!(bill);
        history.push(entry);
        superseded.push(bill.clone());
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
        superseded,
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
    let files = job
        .store
        .publish_bill(&staged, job.name(), job.date, &got.file, &sha)
        .await?;
    crate::store::crash_point("fetch", "published");
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
