//! The day's differences aged against the day before's ledger and written with the ledger.

use std::path::Path;

use chrono::Duration;
use datafusion::arrow::array::RecordBatch;

use super::route::{sorted, Router};
use crate::error::Result;
use crate::parquet_io::write_file;
use crate::records::{AgeingDetail, FetchDetail, LedgerIn, ReconcileDetail};
use crate::schema;
use crate::stages::ageing;
use crate::stages::Job;
use crate::store::{Manifest, Record};

/// Ages the day's differences against the day before's ledger and an earlier run of this day,
/// and writes `diffs.parquet` (sorted by `diff_id`, so the same inputs give the same file) and
/// `ledger.parquet`. Returns the rows written, the detail for the manifest and the hash of the
/// day before's ledger (an input of the run).
pub(super) async fn age_and_write(
    job: &Job<'_>,
    (manifest, fetched): (&Manifest, &FetchDetail),
    router: &Router,
    (diffs_path, ledger_path): (&Path, &Path),
    origin: &str,
) -> Result<(u64, AgeingDetail)> {
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
    let earlier_ledger = earlier.and_then(|r: &Record<ReconcileDetail>| {
        r.files.iter().find(|f| f.ends_with("/ledger.parquet"))
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
    Ok((
        diffs.num_rows() as u64,
        AgeingDetail {
            before: before_detail,
            stats,
        },
    ))
}
