//! The day's differences aged against the day before's ledger and written with the ledger.

use std::path::Path;

use chrono::Duration;
use datafusion::arrow::array::RecordBatch;

use super::route::{sorted, Router};
use crate::error::Result;
use crate::parquet_io::write_file;
use crate::records::{AgeingDetail, EarlierRun, FetchDetail, LedgerIn, ReconcileDetail};
use crate::schema;
use crate::stages::ageing;
use crate::stages::Job;
use crate::store::{Manifest, Record};

/// Ages the day's differences against the day before's ledger and an earlier run of this day,
/// and writes `diffs.parquet` (sorted by `diff_id`, so the same inputs give the same file) and
/// `ledger.parquet`. Returns the rows written, the detail for the manifest, and the file of
/// the entries an earlier run of the day contributed, when it did (kept among the inputs).
pub(super) async fn age_and_write(
    job: &Job<'_>,
    (manifest, fetched): (&Manifest, &FetchDetail),
    router: &Router,
    (diffs_path, ledger_path): (&Path, &Path),
    origin: &str,
) -> Result<(u64, AgeingDetail, Option<std::path::PathBuf>)> {
    let diffs = match sorted(&router.diffs, &["diff_id"])? {
        Some(b) => b,
        None => RecordBatch::new_empty(router.output.clone()),
    };
    let prev = job.date - Duration::days(1);
    let prev_day = job.store.committed(job.name(), prev).await?;
    let (before, before_detail) = match prev_day
        .as_ref()
        .and_then(|c| c.file("results", "ledger.parquet"))
    {
        Some(f) => (
            ageing::read(job.store.local_copy(&f.path).await?.path())?,
            LedgerIn {
                from: Some(prev.to_string()),
                file: Some(f.path.clone()),
                sha256: job.store.sha256_of(f).await?,
                note: None,
            },
        ),
        None => (
            Vec::new(),
            LedgerIn {
                from: None,
                file: None,
                sha256: "none".into(),
                note: Some(format!(
                    "{prev} has no ledger: ageing starts on {}",
                    job.date
                )),
            },
        ),
    };
    // An earlier run of this day (done, or stale since), whose differences this run may
    // resolve.
    let earlier = manifest.stages.reconcile.as_ref();
    // Its ledger (a replay finds the entries that run contributed among its inputs instead).
    let earlier_ledger = earlier.and_then(|r: &Record<ReconcileDetail>| {
        r.files
            .iter()
            .find(|f| f.starts_with("results/") && f.ends_with("/ledger.parquet"))
            .or_else(|| {
                r.files
                    .iter()
                    .find(|f| f.ends_with("/earlier_ledger.parquet"))
            })
    });
    let earlier_run = match earlier_ledger {
        Some(rel) if job.store.root().exists(rel).await? => {
            ageing::read(job.store.local_copy(rel).await?.path())?
        }
        _ => Vec::new(),
    };
    let bill_changed = earlier
        .map(|r| r.last_facts().map(|d| d.bill_sha256.as_str()) != Some(fetched.sha256.as_str()))
        .unwrap_or(false);
    let history = ageing::History {
        before: &before,
        earlier_run: &earlier_run,
        bill_changed,
    };
    let (diffs, ledger, stats) = ageing::age(&diffs, job.name(), job.date, &history)?;
    let diffs = schema::conform(
        &diffs,
        &schema::DIFFS,
        schema::DIFFS_OPTIONAL,
        schema::Extra::Keep,
        origin,
    )?;
    write_file(diffs_path, diffs.schema(), std::slice::from_ref(&diffs))?;
    ageing::write(ledger_path, &ledger)?;
    // What the earlier run contributed (differences it found that this run resolves): kept
    // among the run's inputs, so a replay gives the same ledger. None, no file: a rerun that
    // finds what the last one found records nothing new.
    let contributed: Vec<ageing::Entry> = ledger
        .iter()
        .filter(|e| {
            e.resolved_on == Some(job.date)
                && matches!(
                    e.resolved_by.as_deref(),
                    Some(ageing::BY_RERUN) | Some(ageing::BY_REISSUED_BILL)
                )
        })
        .cloned()
        .collect();
    let earlier = if contributed.is_empty() {
        None
    } else {
        let path = diffs_path
            .parent()
            .and_then(|d| d.parent())
            .map(|d| d.join("earlier").join("earlier_ledger.parquet"))
            .ok_or_else(|| crate::error::Error::Other("no staging folder".into()))?;
        ageing::write(&path, &contributed)?;
        Some((
            EarlierRun {
                entries: contributed.len() as u64,
                ledger_sha256: crate::store::sha256_file(&path)?,
            },
            path,
        ))
    };
    Ok((
        diffs.num_rows() as u64,
        AgeingDetail {
            before: before_detail,
            stats,
            earlier_run: earlier.as_ref().map(|(e, _)| e.clone()),
        },
        earlier.map(|(_, p)| p),
    ))
}
