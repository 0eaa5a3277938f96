//! Closing a day: the stream's records of a channel-day become a committed day of the storage
//! root in the batch job's layout, under the channel's stream name (`wechat.stream`, beside
//! the batch job's `wechat`), so the desk, `reckon report`, the checks and the comparison with
//! the day's bill read it as they read any day.
//!
//! The first three stages are the stream's own, recorded in the day's manifest as the batch
//! job records its own: *fetch* keeps the day's channel records as JSON lines (the stream's
//! "bill", with the broker as its source and `stream` as its fetcher: this is how a day says
//! it came from the stream), *normalize* writes them as `normalized/`, *collect* writes the
//! platform's records as `platform/`, both in the channel's hash buckets. Then the batch
//! job's reconcile and report run unchanged: the same SQL, the day before's carry-over (the
//! stream's own), the ledger, the desk's decisions, the commit.

use std::io::Write;

use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use super::record::Side;
use super::state::State;
use crate::buckets::BucketWriter;
use crate::config::{Channel, Config};
use crate::error::{Error, IoContext, Result};
use crate::pipeline::Runtime;
use crate::records::{CollectDetail, FetchDetail, NormalizeDetail, Output, Stage};
use crate::schema;
use crate::sql::SqlDir;
use crate::stages::{run_stage, Job};
use crate::store::Ran;

/// Records read from the state at a time.
const CHUNK: usize = 20_000;

/// What closes days: the engine sessions and the storage root, opened once.
pub struct Closer<'a> {
    config: &'a Config,
    runtime: Runtime,
    sql: SqlDir,
    broker: String,
}

impl<'a> Closer<'a> {
    /// Opens the engine and the storage root of `config`.
    pub async fn new(config: &'a Config, broker: &str) -> Result<Closer<'a>> {
        Ok(Closer {
            config,
            runtime: Runtime::open(config, None).await?,
            sql: SqlDir::for_config(config)?,
            broker: broker.to_string(),
        })
    }

    /// Closes `day` of `channel`: commits it under the channel's stream name; its run id.
    pub async fn close(
        &mut self,
        channel: &Channel,
        day: NaiveDate,
        state: &State,
    ) -> Result<String> {
        let mut named = channel.clone();
        named.name = super::committed_name(&channel.name);
        let job = Job {
            config: self.config,
            channel: &named,
            date: day,
            store: self.runtime.store.clone(),
            sql: &self.sql,
            engines: &self.runtime.engines,
        };
        let started = std::time::Instant::now();
        let written = write_day(&job, &channel.name, day, state).await?;
        let ran = Ran {
            finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            duration_ms: started.elapsed().as_millis() as u64,
            attempts: 1,
        };
        let fetch = FetchDetail {
            file: written.bill.clone(),
            sha256: written.bill_sha256.clone(),
            size: written.bill_size,
            source: self.broker.clone(),
            fetcher: "stream".into(),
            fetched_at: ran.finished_at.clone(),
            channel_detail: serde_json::json!({
                "channel_records": written.channel_rows,
                "platform_records": written.platform_rows,
            }),
            unchanged: false,
            reissued_from_sha256: None,
            superseded: Vec::new(),
        };
        let normalize = NormalizeDetail {
            template: "stream".into(),
            raw_file: written.bill.clone(),
            rows_read: written.channel_rows,
            rows_written: written.channel_rows,
            rows_rejected: 0,
            rows_skipped: 0,
            sha256: crate::buckets::digest(&written.normalized, written.buckets),
            buckets: written.buckets,
            totals: Vec::new(),
        };
        let collect = CollectDetail {
            rows: written.platform_rows,
            partitions_read: vec![format!("stream {}", self.broker)],
            sha256: crate::buckets::digest(&written.platform, written.buckets),
            buckets: written.buckets,
            sql: "stream".into(),
            spilled: Default::default(),
        };
        {
            let _writing = job.store.manifest_lock().await;
            let mut manifest = job.manifest().await?;
            manifest.record_done(Stage::Fetch, &ran, written.raw, Output::Fetch(fetch));
            manifest.record_done(
                Stage::Normalize,
                &ran,
                written.normalized,
                Output::Normalize(normalize),
            );
            manifest.record_done(
                Stage::Collect,
                &ran,
                written.platform,
                Output::Collect(collect),
            );
            job.store.save_manifest(&manifest, day).await?;
        }
        run_stage(&job, Stage::Reconcile).await?;
        let manifest = run_stage(&job, Stage::Report).await?;
        Ok(manifest.run_id.clone().unwrap_or_default())
    }
}

/// The files a closed day's first three stages published.
struct Written {
    bill: String,
    bill_sha256: String,
    bill_size: u64,
    raw: Vec<crate::store::FileSum>,
    normalized: Vec<crate::store::FileSum>,
    platform: Vec<crate::store::FileSum>,
    buckets: u32,
    channel_rows: u64,
    platform_rows: u64,
}

/// Writes the day's records: the JSON lines, `normalized/` and `platform/`.
async fn write_day(job: &Job<'_>, channel: &str, day: NaiveDate, state: &State) -> Result<Written> {
    // Count first: the bucket count comes from the day's size.
    let mut count = 0u64;
    let mut after = 0i64;
    loop {
        let chunk = state.day_records(channel, day, after, CHUNK).await?;
        let Some(last) = chunk.last() else { break };
        after = last.id;
        count += chunk.len() as u64;
    }
    let buckets = crate::buckets::count_for(count, job.config.bucket_rows());
    let on = job.channel.match_on();
    let fetch_dir = job.store.staging("fetch", job.name(), day)?;
    let norm_dir = job.store.staging("normalize", job.name(), day)?;
    let plat_dir = job.store.staging("collect", job.name(), day)?;
    let bill = format!("stream-{channel}-{day}.jsonl");
    let bill_path = fetch_dir.join(&bill);
    let mut lines = std::io::BufWriter::new(std::fs::File::create(&bill_path).at(&bill_path)?);
    let mut normalized = BucketWriter::create(
        &norm_dir.join("part-0.parquet"),
        on,
        buckets,
        schema::BILL.clone(),
        crate::parquet_io::writer_props(),
    )?;
    let mut platform = BucketWriter::create(
        &plat_dir.join("part-0.parquet"),
        on,
        buckets,
        schema::PLATFORM.clone(),
        crate::parquet_io::writer_props(),
    )?;
    let (mut channel_rows, mut platform_rows) = (0u64, 0u64);
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut after = 0i64;
    loop {
        let chunk = state.day_records(channel, day, after, CHUNK).await?;
        let Some(last) = chunk.last() else { break };
        after = last.id;
        let mut c = Vec::new();
        let mut p = Vec::new();
        for prior in &chunk {
            let mut line = serde_json::to_vec(&serde_json::json!({
                "side": prior.side.as_str(),
                "partition": prior.position.partition,
                "position": prior.position.offset,
                "record": prior.record,
            }))?;
            line.push(b'\n');
            lines.write_all(&line).at(&bill_path)?;
            hash.update(&line);
            size += line.len() as u64;
            match prior.side {
                Side::Channel => c.push((&*prior.record, &prior.position)),
                Side::Platform => p.push((&*prior.record, &prior.position)),
            }
        }
        if !c.is_empty() {
            normalized.write(&super::tables::bill(&c, day)?)?;
        }
        if !p.is_empty() {
            platform.write(&super::tables::platform(&p)?)?;
        }
        channel_rows += c.len() as u64;
        platform_rows += p.len() as u64;
    }
    lines
        .into_inner()
        .map_err(|e| Error::io(&bill_path, e.into_error()))?
        .sync_all()
        .at(&bill_path)?;
    normalized.finish()?;
    platform.finish()?;
    let sha = hex::encode(hash.finalize());
    let raw = job
        .store
        .publish_bill(&fetch_dir, job.name(), day, &bill, &sha)
        .await?;
    job.store.settle_uploads().await?;
    let normalized = job.publish_input(&norm_dir, "normalized").await?;
    let platform = job.publish_input(&plat_dir, "platform").await?;
    Ok(Written {
        bill,
        bill_sha256: sha,
        bill_size: size,
        raw,
        normalized,
        platform,
        buckets,
        channel_rows,
        platform_rows,
    })
}
