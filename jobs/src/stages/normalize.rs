//! normalize: the raw bill to canonical rows (`normalized/`) and rejected rows (`rejected/`),
//! through the channel's template, with the bill's own totals checked.

use super::{Job, Outcome, Stage};
use crate::error::{Error, Result};
use crate::formats::{is_gzip, normalize_file, ContainerKind, Target, Template};

/// Bytes of bill text per record the bucket count assumes (real bills have 150 to 300).
const BILL_BYTES_PER_ROW: u64 = 128;
/// How much larger than a zip or gzip bill its text is assumed to be.
const COMPRESSION: u64 = 8;
use crate::records::{NormalizeDetail, Output};

/// Runs the stage.
pub async fn run(job: &Job<'_>) -> Result<Outcome> {
    let manifest = job.manifest().await?;
    let fetched = job.require(&manifest, Stage::Fetch, Stage::Normalize, |m| m.fetched())?;
    let file = fetched.file.clone();
    let raw_rel = job.committed_file(&manifest, Stage::Fetch, &file)?;
    let (origin, template_text) = Template::source(
        &job.channel.format,
        Some(&job.config.base_dir.join("formats")),
    )?;
    let template = Template::parse(&template_text, &origin)?;
    if job.channel.compare_amount == "received" && !template.columns.contains_key("received") {
        return Err(Error::Config(format!(
            "channel {}: compare_amount = \"received\" needs the bill's received amount, but template {} fills no `received` column: add [columns.received] to it, or compare the order amount",
            job.name(),
            template.name
        )));
    }
    let staged = job.store.staging("normalize", job.name(), job.date)?;
    let (norm_dir, rej_dir) = (staged.join("normalized"), staged.join("rejected"));
    let (norm_file, rej_file) = (
        norm_dir.join("part-0.parquet"),
        rej_dir.join("part-0.parquet"),
    );
    // The bill in buckets of its match key, as many as its size suggests: estimated from
    // its bytes (a canonical row is rarely under BILL_BYTES_PER_ROW bytes of text), so a
    // guess too high only makes smaller buckets, which reconcile joins several at a time.
    // The bill this host fetched (still in the scratch cache), else a copy from the root.
    let raw = match job.store.cached(&fetched.sha256, fetched.size) {
        Some(copy) => {
            tracing::info!("reading the bill this host fetched, not downloading it again");
            copy
        }
        None => job.store.local_copy(&raw_rel).await?,
    };
    let text_bytes = match template.container.kind {
        ContainerKind::Plain if !is_gzip(raw.path())? => fetched.size,
        _ => fetched.size.saturating_mul(COMPRESSION),
    };
    let buckets = job.config.pinned_buckets.unwrap_or_else(|| {
        crate::buckets::count_for(text_bytes / BILL_BYTES_PER_ROW, job.config.bucket_rows())
    });
    // Parsed on a blocking thread: the task's worker stays free for collect, which `reckon
    // run` runs beside this stage.
    let (channel, date, match_on) = (job.name().to_string(), job.date, job.channel.match_on());
    let max_rejected = job.channel.max_rejected_rows;
    let (parsed, bill) = (template.clone(), raw.path().to_path_buf());
    let (source_name, normalized, rejected) = (file.clone(), norm_file.clone(), rej_file.clone());
    let stats = crate::store::off_task(move || {
        let target = Target {
            channel: &channel,
            bill_date: Some(date),
            source_name: &source_name,
            normalized: &normalized,
            buckets: Some((match_on, buckets)),
            rejected: &rejected,
            max_rejected,
        };
        normalize_file(&parsed, &bill, &target)
    })
    .await?;
    drop(raw);
    if let Some(why) = &stats.refused {
        // Refused by its own totals: the rejected rows say which lines broke them, so they are
        // committed all the same; nothing is normalized.
        let published = job
            .store
            .publish(&rej_dir, "rejected", job.name(), job.date)
            .await?;
        let shown = published
            .first()
            .map(|p| job.store.url(&p.path))
            .unwrap_or_default();
        return Err(Error::BadInput(format!(
            "{why}; its {} rejected rows are in {shown}",
            stats.rows_rejected
        )));
    }
    let mut files = job.publish_input(&norm_dir, "normalized").await?;
    // The checksums publishing computed: the bucket files are not read again.
    let normalized_sha = crate::buckets::digest(&files, buckets);
    files.extend(
        (job.store)
            .publish(&rej_dir, "rejected", job.name(), job.date)
            .await?,
    );
    files.extend(
        job.recipe(&[("template.toml", template_text.as_bytes())])
            .await?,
    );
    crate::store::crash_point("normalize", "published");
    tracing::info!(
        read = stats.rows_read,
        written = stats.rows_written,
        rejected = stats.rows_rejected,
        skipped = stats.rows_skipped,
        "normalized"
    );
    Ok((
        files,
        Output::Normalize(NormalizeDetail {
            template: template.name.clone(),
            raw_file: file,
            rows_read: stats.rows_read,
            rows_written: stats.rows_written,
            rows_rejected: stats.rows_rejected,
            rows_skipped: stats.rows_skipped,
            sha256: normalized_sha,
            buckets,
            totals: stats.totals,
        }),
    ))
}
