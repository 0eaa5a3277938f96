//! reconcile: the full outer join and classification of `sql/reconcile.sql`, run once; its
//! output is routed in one pass to the differences (`results/…/diffs.parquet`), the carry-over
//! for the next day (`carryover/`) and the statistics.

pub mod exec;
mod inputs;
mod join;
mod look;
mod merge;
mod route;
mod write;

use std::path::Path;
use std::sync::Arc;

use chrono::Duration;
use datafusion::arrow::array::RecordBatch;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Job, Outcome, Stage};
use crate::contracts;
use crate::error::{Error, Result};
use crate::parquet_io::write_file;
use crate::records::{CarryIn, Output, ReconcileDetail, Rules};
use crate::schema;

/// Buckets a cluster joins at once by default (a job each): enough to keep a few executors
/// busy and to hide each job's fixed cost behind another's work.
const CLUSTER_JOBS: u32 = 8;

/// Where the carry-in comes from: the day before's committed carry-over, if that day was
/// committed (as a URL the engine reads, or a local path).
async fn carry_in(job: &Job<'_>, staged: &Path) -> Result<(String, CarryIn)> {
    let prev = job.date - Duration::days(1);
    let committed = job.store.committed(job.name(), prev).await?;
    if let Some(f) = committed.as_ref().and_then(|c| c.area("carryover").next()) {
        let copy = job.store.local_copy(&f.path).await?;
        let rows = crate::parquet_io::row_count(copy.path())?;
        return Ok((
            job.store.url(&f.path),
            CarryIn {
                from: Some(prev.to_string()),
                file: Some(f.path.clone()),
                rows,
                sha256: job.store.sha256_of(f).await?,
                note: None,
            },
        ));
    }
    let m = job.store.manifest(job.name(), prev).await?;
    let why = if m.stages.is_empty() {
        format!("{prev} was never run")
    } else {
        format!("{prev} is not committed ({})", m.status)
    };
    tracing::warn!("no carry-in: {why}");
    // An empty table of the carry-over's schema, on the storage root (an executor on another
    // host reads it there); its bytes never change, so every run may write it.
    let p = staged.join("carry_in_empty").join("part-0.parquet");
    write_file(&p, schema::CARRY.clone(), &[])?;
    let rel = format!(
        "carryover/_empty/{}/part-0.parquet",
        &crate::store::sha256_file(&p)?[..16]
    );
    if !job.store.root().exists(&rel).await? {
        job.store.root().upload(&p, &rel).await?;
    }
    Ok((
        job.store.url(&rel),
        CarryIn {
            from: None,
            file: None,
            rows: 0,
            sha256: "none".into(),
            note: Some(why),
        },
    ))
}

/// Where the engine writes the routed parts of this attempt (a URL ending in `/`), and the
/// folder on the storage root to remove afterwards. An engine in this process writes to the
/// local staging folder; a cluster's executors write below `_parts/` on the storage root,
/// where a killed attempt's parts are removed by the next attempt.
async fn parts_folder(job: &Job<'_>, staged: &Path) -> Result<(String, Option<String>)> {
    let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(|e| Error::io(d, e));
    if job.engines.in_process() {
        let d = staged.join("parts");
        mkdir(&d)?;
        return Ok((
            format!("{}/", write::engine_url(&d.display().to_string())?),
            None,
        ));
    }
    let day = format!("_parts/channel={}/dt={}", job.name(), job.date);
    clear_parts(job, &day).await?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let rel = format!("{day}/{}-{nanos}", std::process::id());
    if let Some(p) = job.store.root().local_path(&rel) {
        mkdir(&p)?;
    }
    Ok((format!("{}/", write::root_url(job, &rel)?), Some(rel)))
}

/// Removes the parts below `rel` on the storage root.
async fn clear_parts(job: &Job<'_>, rel: &str) -> Result<()> {
    for f in job.store.root().list(rel).await? {
        job.store.root().delete(&f).await?;
    }
    if let Some(d) = job.store.root().local_path(rel) {
        // Empty folders a local root keeps.
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// The engine may hand out strings as views; outputs always hold plain UTF-8.
pub(super) fn plain_strings(b: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    if !b
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::LargeUtf8))
    {
        return Ok(b.clone());
    }
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if matches!(f.data_type(), DataType::Utf8View | DataType::LargeUtf8) {
            fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
            cols.push(datafusion::arrow::compute::cast(c, &DataType::Utf8)?);
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The review desk's decisions in force on the channel's differences, published among the
/// day's inputs (`inputs/…/decisions.parquet`, so a replay applies the same ones); none when
/// the config has no desk or the desk has no decision in force.
async fn decisions(job: &Job<'_>) -> Result<Option<crate::store::FileSum>> {
    use crate::desk::{snapshot, Desk, Source};
    let bytes = match &job.config.decisions {
        Source::Recorded(None) => return Ok(None),
        Source::Recorded(Some(p)) => std::fs::read(p).map_err(|e| Error::io(p, e))?,
        Source::Desk => {
            let Some(desk) = Desk::existing(&job.config.desk, &job.config.base_dir).await? else {
                return Ok(None);
            };
            let in_force = desk.in_force(job.name()).await?;
            if in_force.is_empty() {
                return Ok(None);
            }
            tracing::info!(
                decisions = in_force.len(),
                "the review desk's decisions in force"
            );
            let batch = snapshot::batch(&in_force)?;
            crate::parquet_io::to_bytes(&batch, crate::parquet_io::writer_props())?
        }
    };
    let files = job
        .recipe(&[("decisions.parquet", bytes.as_slice())])
        .await?;
    let f = files
        .into_iter()
        .next()
        .ok_or_else(|| Error::Other("the decisions in force were not published".into()))?;
    Ok(Some(f))
}

/// Runs the stage.
pub async fn run(job: &Job<'_>) -> Result<Outcome> {
    let manifest = job.manifest().await?;
    let fetched = job.require(&manifest, Stage::Fetch, Stage::Reconcile, |m| m.fetched())?;
    let normalized = job.require(&manifest, Stage::Normalize, Stage::Reconcile, |m| {
        m.normalized()
    })?;
    let collected = job.require(&manifest, Stage::Collect, Stage::Reconcile, |m| {
        m.collected()
    })?;
    let staged = job.store.staging("reconcile", job.name(), job.date)?;
    let (carry_url, carry_detail) = carry_in(job, &staged).await?;

    let ctx = &job.engines.join;
    let mut sides = Vec::new();
    for (table, stage, area, buckets) in [
        ("bill", Stage::Normalize, "normalized", normalized.buckets),
        ("platform", Stage::Collect, "platform", collected.buckets),
    ] {
        let files = job.committed_in(&manifest, stage, area);
        if files.is_empty() {
            return Err(Error::NotReady(format!(
                "{} {}: stage {stage} recorded no {area} files; run it again",
                job.name(),
                job.date
            )));
        }
        // An engine in this process reads the copies its host's earlier stage left in the
        // scratch cache (the same bytes, by SHA-256) rather than the object store's.
        let sums: Vec<_> = (manifest.stages.checksums(stage).iter())
            .filter(|f| files.contains(&f.path))
            .cloned()
            .collect();
        let cached = (job.engines.in_process() && sums.len() == files.len())
            .then(|| {
                job.store
                    .take_cached(&sums, &staged.join("inputs").join(table))
            })
            .flatten();
        let located: Vec<String> = match cached {
            Some(local) => {
                tracing::info!(table, "read from the scratch cache");
                (files.iter())
                    .map(|f| {
                        let name = f.rsplit('/').next().unwrap_or(f);
                        local.join(name).display().to_string()
                    })
                    .collect()
            }
            None => files.iter().map(|f| job.store.url(f)).collect(),
        };
        sides.push(inputs::Side::new(table, buckets, located)?);
    }

    // Bucket by bucket: as many as the larger side needs at `bucket_rows` records a bucket.
    let larger = normalized.rows_written.max(collected.rows);
    let n = crate::buckets::count_for(larger, job.config.bucket_rows());
    let ch = job.channel;
    let (text, origin) = job.sql.read(contracts::reconcile::FILE)?;
    // Lanes of one partition, each taking every n-th bucket: in this process a lane per core,
    // on a cluster `cluster_jobs` jobs at once.
    let lane_count = match std::thread::available_parallelism() {
        _ if !job.engines.in_process() => job.config.cluster_jobs.unwrap_or(CLUSTER_JOBS),
        Ok(cores) => cores.get() as u32,
        Err(_) => 1,
    }
    .min(n)
    .max(1);
    // One lane in this process (a day of one bucket) joins on the engine's partitions, the
    // routing taking the bucket whole after them.
    let partitions = match lane_count {
        1 if job.engines.in_process() => ctx.state().config().target_partitions(),
        _ => 1,
    };
    let lanes = (0..lane_count)
        .map(|_| crate::engine::lane(ctx, partitions))
        .collect::<Result<Vec<_>>>()?;
    let (parts_url, parts_rel) = parts_folder(job, &staged).await?;
    let history = write::history(job, (&manifest, fetched)).await?;
    let decided = decisions(job).await?;
    let started = std::time::Instant::now();
    let work = join::Work {
        text: text.clone(),
        origin: origin.clone(),
        params: contracts::reconcile::params(ch, job.date),
        sides,
        carry_url,
        on: ch.match_on(),
        buckets: n,
        date: job.date,
        grace_days: ch.grace_days,
        zone: ch.rules.tz,
        parts: parts_url,
        channel: job.name().to_string(),
        ledger: history.before.clone(),
        earlier: history.earlier.clone(),
        bill_changed: history.bill_changed,
        decisions: decided
            .as_ref()
            .map(|f| write::engine_url(&job.store.url(&f.path)))
            .transpose()?,
    };
    let place = match &parts_rel {
        None => write::Place::Staged(staged.to_path_buf()),
        Some(rel) => write::Place::Root(format!("{rel}/day")),
    };
    let written = async {
        let (router, reports, rows) = join::join(lanes, work).await?;
        tracing::info!(
            rows,
            buckets = n,
            lanes = lane_count,
            seconds = started.elapsed().as_secs_f64(),
            "reconciled rows classified, counted and aged"
        );
        let (looked, reasons) = match &job.config.second_look {
            Some(cfg) => {
                let diffs = reports.parts_of(exec::PartKind::Diffs);
                let missing = look::missing_in(&job.engines.local, diffs, &origin).await?;
                let (detail, reasons) = look::second_look(cfg, &missing).await?;
                (Some(detail), reasons)
            }
            None => (None, Vec::new()),
        };
        let day = write::write_day(
            job,
            ctx,
            &reports,
            &router.output,
            reasons,
            (&place, &staged),
        )
        .await?;
        Ok::<_, Error>((router, reports, looked, day))
    };
    let written = written.await;
    if let Some(rel) = &parts_rel {
        clear_parts(job, rel).await?;
    }
    let (router, reports, looked, day) = written?;
    tracing::info!(
        diff_rows = day.diff_rows,
        seconds = started.elapsed().as_secs_f64(),
        "differences aged and written"
    );
    let ageing = crate::records::AgeingDetail {
        before: history.before_detail,
        stats: reports.ageing.clone(),
        earlier_run: day.earlier.as_ref().map(|(e, _)| e.clone()),
    };

    let rules = Rules {
        time_zone: ch.time_zone.clone(),
        cut_window_secs: ch.cut_window_secs,
        grace_days: ch.grace_days,
        tolerance: ch.rules.tolerance.to_string(),
        tolerance_rate: ch.rules.tolerance_rate.map(|d| d.to_string()),
        fee_rate: ch.rules.fee_rate.map(|d| d.to_string()),
        match_key: ch.match_key.clone(),
        fee_rounding: ch.fee_rounding.clone(),
        compare_amount: ch.compare_amount.clone(),
    };
    // The run id's inputs, each as the JSON text it has always been hashed as (a hash as a
    // quoted string, the rules as an object with sorted keys), so run ids stay stable.
    let quoted = |v: &str| serde_json::Value::from(v).to_string();
    let mut h = Sha256::new();
    for part in [
        job.name().to_string(),
        job.date.to_string(),
        quoted(&fetched.sha256),
        quoted(&normalized.sha256),
        quoted(&collected.sha256),
        quoted(&carry_detail.sha256),
        quoted(&ageing.before.sha256),
        job.sql.hash(contracts::reconcile::FILE)?,
        serde_json::to_value(&rules)?.to_string(),
        // What the operational database answered is an input too (not how it was asked).
        match &looked {
            None => serde_json::Value::Null.to_string(),
            Some(l) => json!([l.looked_up, l.found_in_database]).to_string(),
        },
    ]
    .into_iter()
    // The desk's decisions, when there are any (a day without keeps its run id).
    .chain(decided.as_ref().map(|f| quoted(&f.sha256)))
    {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let run_id = hex::encode(&h.finalize()[..8]);

    let mut files = day.files;
    files.extend(decided);
    let rules_json = serde_json::to_vec_pretty(&rules)?;
    let mut recipe = vec![
        (contracts::reconcile::FILE, text.as_bytes()),
        ("rules.json", rules_json.as_slice()),
    ];
    if let Some((_, bytes)) = &day.earlier {
        recipe.push(("earlier_ledger.parquet", bytes.as_slice()));
    }
    files.extend(job.recipe(&recipe).await?);
    crate::store::crash_point("reconcile", "published");
    Ok((
        files,
        Output::Reconcile(Box::new(ReconcileDetail {
            run_id,
            target_partitions: ctx.state().config().target_partitions(),
            buckets: n,
            carry_in: carry_detail,
            bill_sha256: fetched.sha256.clone(),
            ageing,
            diff_rows: day.diff_rows,
            carry_out_rows: day.carry_rows,
            stats_rows: day.stats_rows,
            second_look: looked,
            counts: router.counts(),
            rules,
            sql: origin,
        })),
    ))
}
