//! fetch: brings the channel's bill for the date into `raw/` through the channel's fetcher
//! (`fetchers/`), with its SHA-256 and the fetch's metadata in `fetch.json`.
//!
//! Identical content fetched again is a no-op (`unchanged`). Different content for a date
//! fetched before is a re-issued bill: the earlier file and its `fetch.json` move to
//! `raw/…/superseded/<sha256>/`, `fetch.json` lists every earlier fetch under `history`, and
//! the later stages of the date become stale, so the next run (or backfill) reconciles it again.

use serde_json::{json, Value};

use super::{Job, Outcome};
use crate::error::{IoContext, Result};
use crate::fetchers::{self, Request};
use crate::store::{sha256_file, write_atomic};

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
    let previous = manifest
        .stages
        .get("fetch")
        .and_then(|r| r.detail["sha256"].as_str().map(String::from));
    let earlier = read_json(&dest.join("fetch.json"));
    let earlier_file = earlier["file"].as_str().map(String::from);
    if previous.as_deref() == Some(sha.as_str())
        && earlier_file
            .as_deref()
            .is_some_and(|f| dest.join(f).is_file())
    {
        let rec = manifest.stages.get("fetch").cloned().unwrap_or_default();
        let mut detail = rec.detail;
        detail["unchanged"] = json!(true);
        tracing::info!(sha256 = %sha, "the bill is unchanged since the last fetch");
        return Ok((rec.files, detail));
    }
    let mut history = earlier["history"].as_array().cloned().unwrap_or_default();
    let reissued = earlier_file.is_some() && earlier["sha256"].as_str() != Some(sha.as_str());
    if reissued {
        // Keep the bill it replaces, with its metadata, beside the new one.
        let old_sha = earlier["sha256"].as_str().unwrap_or("unknown").to_string();
        let keep = dest.join("superseded").join(&old_sha);
        std::fs::create_dir_all(&keep).at(&keep)?;
        for name in [
            earlier_file.clone().unwrap_or_default(),
            "fetch.json".into(),
        ] {
            let from = dest.join(&name);
            if from.is_file() {
                std::fs::rename(&from, keep.join(&name)).at(&from)?;
            }
        }
        let mut entry = earlier.clone();
        if let Some(o) = entry.as_object_mut() {
            o.remove("history");
        }
        entry["superseded_to"] = json!(job
            .store
            .relative(&keep.join(earlier_file.unwrap_or_default())));
        history.push(entry);
    }
    let meta = json!({
        "file": got.file,
        "sha256": sha,
        "size": size,
        "source": got.source,
        "fetcher": fetcher.kind(),
        "fetched_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "channel_detail": got.detail,
        "history": history,
    });
    write_atomic(
        &staged.join("fetch.json"),
        serde_json::to_vec_pretty(&meta)?.as_slice(),
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
    let mut detail = meta;
    if let Some(o) = detail.as_object_mut() {
        o.remove("history");
    }
    // The bill the date's later stages last ran on: the manifest's, else raw/'s record.
    let before = previous.or_else(|| earlier["sha256"].as_str().map(String::from));
    if before.as_deref().is_some_and(|b| b != sha) {
        detail["reissued_from_sha256"] = json!(before);
        tracing::warn!(
            sha256 = %sha,
            "the bill changed since the last fetch: a re-issued bill; the date's later stages will run again"
        );
    }
    Ok((files, detail))
}

fn read_json(path: &std::path::Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}
