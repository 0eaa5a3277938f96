//! The day's files: the ageing's history handed to the engine, and the engine's sorted parts
//! merged by the engine into `diffs.parquet`, `ledger.parquet` and the carry-over, then
//! published. The client handles file names, counts and hashes, never the rows.

use std::path::{Path, PathBuf};

use chrono::Duration;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use super::exec::{PartKind, Reports};
use super::merge::{MergeNode, MergeSpec, Merged};
use crate::error::{Error, Result};
use crate::parquet_io::write_file;
use crate::records::{EarlierRun, FetchDetail, LedgerIn, ReconcileDetail};
use crate::schema;
use crate::stages::ageing;
use crate::stages::Job;
use crate::store::{FileSum, Manifest, Record};

/// What the day's ageing starts from, as the engine reads it.
pub(super) struct History {
    /// The day before's ledger (a URL), and what the manifest says of it.
    pub before: Option<String>,
    pub before_detail: LedgerIn,
    /// The ledger an earlier run of this day wrote (a URL): done, or stale since. A replay
    /// finds the entries that run contributed among its inputs instead.
    pub earlier: Option<String>,
    /// Whether the bill changed since that earlier run (a re-issued bill).
    pub bill_changed: bool,
}

/// The day before's ledger and an earlier run's, for the ageing.
pub(super) async fn history(
    job: &Job<'_>,
    (manifest, fetched): (&Manifest, &FetchDetail),
) -> Result<History> {
    let prev = job.date - Duration::days(1);
    let prev_day = job.store.committed(job.name(), prev).await?;
    let (before, before_detail) = match prev_day
        .as_ref()
        .and_then(|c| c.file("results", "ledger.parquet"))
    {
        Some(f) => (
            Some(job.store.url(&f.path)),
            LedgerIn {
                from: Some(prev.to_string()),
                file: Some(f.path.clone()),
                sha256: job.store.sha256_of(f).await?,
                note: None,
            },
        ),
        None => (
            None,
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
    let earlier = manifest.stages.reconcile.as_ref();
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
    let earlier_url = match earlier_ledger {
        Some(rel) if job.store.root().exists(rel).await? => Some(job.store.url(rel)),
        _ => None,
    };
    let bill_changed = earlier
        .map(|r| r.last_facts().map(|d| d.bill_sha256.as_str()) != Some(fetched.sha256.as_str()))
        .unwrap_or(false);
    Ok(History {
        before: before.map(|u| engine_url(&u)).transpose()?,
        before_detail,
        earlier: earlier_url.map(|u| engine_url(&u)).transpose()?,
        bill_changed,
    })
}

/// `location` (a URL, or a local path) as a URL an operator opens through its object stores.
pub(super) fn engine_url(location: &str) -> Result<String> {
    if url::Url::parse(location).is_ok_and(|u| u.scheme().len() > 1) {
        return Ok(location.to_string());
    }
    let p = std::path::absolute(location).map_err(|e| Error::io(Path::new(location), e))?;
    url::Url::from_file_path(&p)
        .map(|u| u.to_string())
        .map_err(|_| Error::Other(format!("{}: not an absolute path", p.display())))
}

/// Where the day's files are written.
pub(super) enum Place {
    /// In the staging folder (an engine in this process), published from there.
    Staged(PathBuf),
    /// On the storage root below this folder (a cluster's executors write there), published by
    /// a copy in the store.
    Root(String),
}

impl Place {
    /// Where `out` is written: a local path, or a path on the storage root.
    fn path(&self, out: &Out) -> String {
        match self {
            Place::Staged(dir) => dir.join(out.area).join(out.name).display().to_string(),
            Place::Root(rel) => format!("{rel}/{}/{}", out.area, out.name),
        }
    }

    /// `out`'s URL, for the engine.
    fn url(&self, job: &Job<'_>, out: &Out) -> Result<String> {
        match self {
            Place::Staged(_) => engine_url(&self.path(out)),
            Place::Root(_) => root_url(job, &self.path(out)),
        }
    }
}

/// One of the day's files.
struct Out {
    /// Its area (`results`, `carryover`, `earlier`) and name.
    area: &'static str,
    name: &'static str,
    kind: PartKind,
}

const OUTS: [Out; 6] = [
    Out {
        area: "results",
        name: "diffs.parquet",
        kind: PartKind::Diffs,
    },
    Out {
        area: "results",
        name: "ledger.parquet",
        kind: PartKind::Ledger,
    },
    Out {
        area: "carryover",
        name: "part-0.parquet",
        kind: PartKind::Carry,
    },
    Out {
        area: "earlier",
        name: "earlier_ledger.parquet",
        kind: PartKind::Earlier,
    },
    Out {
        area: "stats",
        name: "by_hour.parquet",
        kind: PartKind::Hours,
    },
    Out {
        area: "stats",
        name: "by_merchant.parquet",
        kind: PartKind::Merchants,
    },
];

/// The day's files, written and published.
pub(super) struct Day {
    /// The published `results/`, `carryover/` and `stats/` files.
    pub files: Vec<FileSum>,
    pub diff_rows: u64,
    pub carry_rows: u64,
    /// Rows of the statistics tables.
    pub stats_rows: u64,
    /// What an earlier run contributed (differences this run resolves) and that file's bytes,
    /// kept among the run's inputs; none when it contributed nothing.
    pub earlier: Option<(EarlierRun, Vec<u8>)>,
}

/// Merges the parts `reports` names into the day's files at `place` on `ctx` (the engine
/// that joined), the second look's `reasons` given to the open differences of those ids, and
/// publishes them. `output` is the query's columns (an empty day's differences have them);
/// `staged` is the stage's scratch folder.
pub(super) async fn write_day(
    job: &Job<'_>,
    ctx: &SessionContext,
    reports: &Reports,
    output: &SchemaRef,
    reasons: Vec<(String, String)>,
    (place, staged): (&Place, &Path),
) -> Result<Day> {
    let mut merges = Vec::new();
    let mut empty = Vec::new();
    for out in &OUTS {
        let parts = reports.parts_of(out.kind);
        if parts.is_empty() {
            empty.push(out);
            continue;
        }
        if let Place::Staged(dir) = place {
            let d = dir.join(out.area);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let spec = MergeSpec {
            parts,
            by: out.kind.order(),
            out: place.url(job, out)?,
            reasons: match out.kind {
                PartKind::Diffs | PartKind::Ledger => reasons.clone(),
                _ => Vec::new(),
            },
            sum: out.kind.summed(),
        };
        merges.push(async move { Ok::<_, Error>((out, merge(ctx, spec).await?)) });
    }
    let merged: Vec<(&Out, Merged)> = futures::future::try_join_all(merges).await?;
    let stats_rows = (merged.iter())
        .filter(|(o, _)| o.kind.summed())
        .map(|(_, m)| m.rows)
        .sum();
    let mut written: Vec<(&Out, FileSum)> = Vec::new();
    for (out, m) in merged {
        let sum = FileSum {
            path: place.path(out),
            sha256: m.sha256,
            size: m.bytes,
        };
        written.push((out, sum));
    }
    // The kinds no bucket wrote a row of: their empty files, written here (no rows pass).
    for out in empty {
        if out.kind == PartKind::Earlier {
            continue;
        }
        let dir = match place {
            Place::Staged(dir) => dir.clone(),
            Place::Root(_) => staged.join("empty"),
        };
        let p = dir.join(out.area).join(out.name);
        write_empty(out.kind, &p, output, job)?;
        let sum = FileSum {
            path: p.display().to_string(),
            sha256: crate::store::sha256_file(&p)?,
            size: std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len(),
        };
        let sum = match place {
            Place::Staged(_) => sum,
            Place::Root(_) => {
                let to = place.path(out);
                job.store.root().upload(&p, &to).await?;
                FileSum { path: to, ..sum }
            }
        };
        written.push((out, sum));
    }

    let earlier = match written.iter().find(|(o, _)| o.kind == PartKind::Earlier) {
        Some((_, f)) => {
            let bytes = match place {
                Place::Staged(_) => {
                    std::fs::read(&f.path).map_err(|e| Error::io(Path::new(&f.path), e))?
                }
                Place::Root(_) => match job.store.root().get(&f.path).await? {
                    Some((b, _)) => b.to_vec(),
                    None => return Err(Error::Other(format!("{}: not written", f.path))),
                },
            };
            Some((
                EarlierRun {
                    entries: reports.rows_of(PartKind::Earlier),
                    ledger_sha256: f.sha256.clone(),
                },
                bytes,
            ))
        }
        None => None,
    };
    let mut files = Vec::new();
    for area in ["results", "carryover", "stats"] {
        let of_area = written.iter().filter(|(o, _)| o.area == area);
        files.extend(match place {
            Place::Staged(dir) => {
                // The merges hashed what they wrote: their files are not read again.
                let known: Vec<(&str, &str)> =
                    of_area.map(|(o, f)| (o.name, f.sha256.as_str())).collect();
                job.store
                    .publish_known(&dir.join(area), area, (job.name(), job.date), &known)
                    .await?
            }
            Place::Root(_) => {
                let named: Vec<(String, FileSum)> = of_area
                    .map(|(o, f)| (o.name.to_string(), f.clone()))
                    .collect();
                job.store
                    .publish_on_root(&named, area, job.name(), job.date)
                    .await?
            }
        });
    }
    Ok(Day {
        files,
        diff_rows: reports.rows_of(PartKind::Diffs),
        carry_rows: reports.rows_of(PartKind::Carry),
        stats_rows,
        earlier,
    })
}

/// The URL of `rel` on the storage root, for the engine.
pub(super) fn root_url(job: &Job<'_>, rel: &str) -> Result<String> {
    match job.store.root().local_path(rel) {
        Some(p) => engine_url(&p.display().to_string()),
        None => Ok(job.store.url(rel)),
    }
}

/// Runs one merge on `ctx`.
async fn merge(ctx: &SessionContext, spec: MergeSpec) -> Result<Merged> {
    let plan = MergeNode::plan(spec)?;
    let batches = DataFrame::new(ctx.state(), plan)
        .collect()
        .await
        .map_err(super::join::reckon_error)?;
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(b) => Merged::from_batch(b),
        None => Err(Error::Other("a merge returned no report".into())),
    }
}

/// The file of `kind` for a day without rows of it, as the day's file of no rows has always
/// been written.
fn write_empty(kind: PartKind, path: &Path, output: &SchemaRef, job: &Job<'_>) -> Result<()> {
    match kind {
        PartKind::Diffs => {
            let no_decisions = std::collections::HashMap::new();
            let none = ageing::History {
                before: &[],
                earlier_run: &[],
                bill_changed: false,
                decisions: &no_decisions,
            };
            let (diffs, _, _) = ageing::age(
                &RecordBatch::new_empty(output.clone()),
                job.name(),
                job.date,
                &none,
            )?;
            let diffs = schema::conform(
                &diffs,
                &schema::DIFFS,
                schema::DIFFS_OPTIONAL,
                schema::Extra::Keep,
                "the differences",
            )?;
            write_file(path, diffs.schema(), std::slice::from_ref(&diffs))
        }
        PartKind::Ledger => ageing::write(path, &[]),
        PartKind::Carry => write_file(path, schema::CARRY.clone(), &[]),
        PartKind::Hours => write_file(path, schema::BY_HOUR.clone(), &[]),
        PartKind::Merchants => write_file(path, schema::BY_MERCHANT.clone(), &[]),
        PartKind::Earlier => Ok(()),
    }
}
