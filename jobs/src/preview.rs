//! `reckon run --preview`: what an edit of the rules, `reconcile.sql` or `platform.sql` would
//! do to a committed day, before it touches it. The day is reconciled again into a scratch
//! root from its committed bill and the day before's committed carry-over and ledger; nothing
//! is committed, no lease is taken, nothing is marked stale, no alert is sent. The scratch root
//! is removed when the preview ends, however it ends.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use reckon_udfs::{money_text, Category};
use serde::Serialize;

use crate::config::Config;
use crate::engine::Engines;
use crate::error::{Error, Result};
use crate::records::{Counts, DayStatus, Stage};
use crate::sql::SqlDir;
use crate::stages::{ageing, run_stage, Job};
use crate::store::{Manifest, Store};

/// Counts and amounts of one category on one side of the comparison.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Figures {
    /// Rows of the category.
    pub rows: i64,
    /// Their channel amount, a scale-2 mantissa (shown as decimal text).
    #[serde(serialize_with = "money")]
    pub channel_amount: i128,
    /// Their platform amount.
    #[serde(serialize_with = "money")]
    pub platform_amount: i128,
}

fn money<S: serde::Serializer>(v: &i128, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&money_text(*v))
}

/// One category: committed, previewed, and the change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CategoryChange {
    /// The category.
    pub category: &'static str,
    /// What the committed day has.
    pub committed: Figures,
    /// What the edit gives.
    pub preview: Figures,
    /// Preview minus committed.
    pub change: Figures,
}

/// A difference whose category the edit changes, followed by its ageing key. `MATCHED` on a
/// side means the difference is not open there (matched, or resolved).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Moved {
    /// The ageing key (channel, match key, pair or n-th duplicate).
    pub ageing_key: String,
    /// The record's match key.
    pub match_key: Option<String>,
    /// `PAY` or `REFUND`.
    pub txn_type: Option<String>,
    /// Its category in the committed day.
    pub committed: String,
    /// Its category with the edit.
    pub preview: String,
}

/// The preview of one channel-day.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The committed run, `None` when the day has no committed results.
    pub committed_run_id: Option<String>,
    /// The run the edit gives (it is not committed).
    pub preview_run_id: Option<String>,
    /// The preview's own status (`reconciled`, or `failed` when conservation breaks).
    pub status: DayStatus,
    /// Every category.
    pub categories: Vec<CategoryChange>,
    /// The differences that changed category, by ageing key.
    pub moved: Vec<Moved>,
}

/// Copies the stored file `rel` from `from` to the same place in the local `to`.
pub(crate) async fn copy_into(from: &Store, to: &Store, rel: &str) -> Result<()> {
    let dest = to
        .root()
        .local_path(rel)
        .ok_or_else(|| Error::Other("the preview's scratch root is local".into()))?;
    from.root().download(rel, &dest).await?;
    Ok(())
}

/// Seeds `scratch` with what the day reads from earlier work: its fetched bill (the fetch
/// record and its files), and the day before's committed pointer with its carry-over and
/// ledger.
pub(crate) async fn seed(
    committed: &Store,
    scratch: &Store,
    channel: &str,
    date: NaiveDate,
) -> Result<()> {
    let day = committed.manifest(channel, date).await?;
    let fetched = day
        .stages
        .fetch
        .clone()
        .filter(|r| r.facts().is_some())
        .ok_or_else(|| {
            Error::NotReady(format!(
                "{channel} {date} has no fetched bill to preview: run its fetch stage first"
            ))
        })?;
    for f in &fetched.files {
        copy_into(committed, scratch, f).await?;
    }
    let mut seeded = Manifest::new(channel, &date.to_string());
    seeded.stages.fetch = Some(fetched);
    scratch.save_manifest(&seeded, date).await?;

    let prev = date - Duration::days(1);
    if let Some(before) = committed.committed(channel, prev).await? {
        for f in before
            .area("carryover")
            .chain(before.file("results", "ledger.parquet"))
        {
            copy_into(committed, scratch, &f.path).await?;
        }
        let rel = scratch.committed_path(channel, prev);
        scratch
            .root()
            .put(&rel, serde_json::to_vec_pretty(&before)?)
            .await?;
    }
    Ok(())
}

/// The categories' figures of a reconciliation's counts (none: every category empty).
fn figures(counts: Option<&Counts>) -> BTreeMap<&'static str, Figures> {
    Category::ALL
        .iter()
        .map(|c| {
            let s = counts
                .and_then(|n| n.by_category.get(c.as_str()))
                .cloned()
                .unwrap_or_default();
            let f = Figures {
                rows: s.rows as i64,
                channel_amount: s.channel_amount,
                platform_amount: s.platform_amount,
            };
            (c.as_str(), f)
        })
        .collect()
}

/// The open differences of a day's ledger by ageing key: (category, match key, type).
type Open = BTreeMap<String, (String, Option<String>, Option<String>)>;

async fn open_of(store: &Store, ledger: Option<&str>) -> Result<Open> {
    let Some(rel) = ledger else {
        return Ok(Open::new());
    };
    let copy = store.local_copy(rel).await?;
    Ok(ageing::read(copy.path())?
        .into_iter()
        .filter(|e| e.state != ageing::RESOLVED)
        .map(|e| (e.key, (e.category, e.match_key, e.txn_type)))
        .collect())
}

/// The differences whose category differs between the committed and the previewed ledger.
fn moved(committed: &Open, preview: &Open) -> Vec<Moved> {
    let matched = Category::Matched.as_str();
    let mut keys: Vec<&String> = committed.keys().chain(preview.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let a = committed.get(k);
            let b = preview.get(k);
            let cat = |e: Option<&(String, Option<String>, Option<String>)>| {
                e.map_or(matched.to_string(), |e| e.0.clone())
            };
            let (from, to) = (cat(a), cat(b));
            let facts = a.or(b)?;
            (from != to).then(|| Moved {
                ageing_key: k.clone(),
                match_key: facts.1.clone(),
                txn_type: facts.2.clone(),
                committed: from,
                preview: to,
            })
        })
        .collect()
}

/// Previews one channel-day with `config` and `sql` (the edited copies) against what is
/// committed under the storage root.
pub async fn preview_channel(
    config: &Config,
    channel: &str,
    date: NaiveDate,
    engines: &Engines,
    sql: &SqlDir,
) -> Result<Preview> {
    let committed = crate::pipeline::store(config)?;
    // Removed however the preview ends.
    let root = committed.scratch_folder("preview", &format!("{channel}-{date}"))?;
    let scratch = Store::local(&*root)?;
    seed(&committed, &scratch, channel, date).await?;

    let engines = engines.for_job()?;
    let job = Job {
        config,
        channel: config.channel(channel)?,
        date,
        store: scratch.clone(),
        sql,
        engines: &engines,
    };
    for stage in [
        Stage::Normalize,
        Stage::Collect,
        Stage::Reconcile,
        Stage::Report,
    ] {
        match run_stage(&job, stage).await {
            Ok(_) => {}
            // A preview whose conservation breaks is still worth showing: it says `failed`.
            Err(e) if stage == Stage::Report => {
                tracing::warn!(error = %e, "the preview fails its report (conservation)");
            }
            Err(e) => return Err(e),
        }
    }
    let before = committed.committed(channel, date).await?;
    let after = scratch.manifest(channel, date).await?;
    // The committed day: what its pointer names.
    let committed_counts = before
        .as_ref()
        .and_then(|c| c.manifest.reconciled())
        .and_then(|r| r.facts())
        .map(|r| &r.counts);
    let preview_counts = after
        .reconciled()
        .and_then(|r| r.facts())
        .map(|r| &r.counts);
    let (a, b) = (figures(committed_counts), figures(preview_counts));
    let categories = Category::ALL
        .iter()
        .map(|c| {
            let name = c.as_str();
            let (x, y) = (a[name].clone(), b[name].clone());
            CategoryChange {
                category: name,
                change: Figures {
                    rows: y.rows - x.rows,
                    channel_amount: y.channel_amount - x.channel_amount,
                    platform_amount: y.platform_amount - x.platform_amount,
                },
                committed: x,
                preview: y,
            }
        })
        .collect();
    let committed_ledger = before
        .as_ref()
        .and_then(|c| c.file("results", "ledger.parquet"))
        .map(|f| f.path.as_str());
    let committed_open = open_of(&committed, committed_ledger).await?;
    let preview_ledger = after
        .reconciled()
        .and_then(|r| r.files.iter().find(|f| f.ends_with("/ledger.parquet")))
        .map(String::as_str);
    let preview_open = open_of(&scratch, preview_ledger).await?;
    Ok(Preview {
        channel: channel.to_string(),
        bill_date: date.to_string(),
        committed_run_id: before.as_ref().and_then(|c| c.run_id.clone()),
        preview_run_id: after.run_id.clone(),
        // Reconciled, or failed when the report (conservation) or an earlier stage failed.
        status: if after.status == DayStatus::Reconciled {
            DayStatus::Reconciled
        } else {
            DayStatus::Failed
        },
        categories,
        moved: moved(&committed_open, &preview_open),
    })
}

/// The preview as a person reads it: a table of the categories that change, then the moved
/// differences (the first `limit`; the JSON line has them all).
pub fn render(p: &Preview, limit: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  preview of run {} against committed run {}  ({})",
        p.channel,
        p.bill_date,
        p.preview_run_id.as_deref().unwrap_or("-"),
        p.committed_run_id.as_deref().unwrap_or("none"),
        p.status
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>9} {:>8} {:>16} {:>16}",
        "category", "committed", "preview", "change", "channel change", "platform change"
    );
    for c in &p.categories {
        if c.change == Figures::default() && c.committed.rows == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>9} {:>+8} {:>16} {:>16}",
            c.category,
            c.committed.rows,
            c.preview.rows,
            c.change.rows,
            money_text(c.change.channel_amount),
            money_text(c.change.platform_amount)
        );
    }
    if p.moved.is_empty() {
        let _ = writeln!(out, "  no difference changes category");
    } else {
        let _ = writeln!(out, "  {} differences change category:", p.moved.len());
        for m in p.moved.iter().take(limit) {
            let _ = writeln!(
                out,
                "    {:<40} {:>22} -> {}",
                m.match_key.as_deref().unwrap_or(&m.ageing_key),
                m.committed,
                m.preview
            );
        }
        if p.moved.len() > limit {
            let _ = writeln!(
                out,
                "    … and {} more (all in the JSON line)",
                p.moved.len() - limit
            );
        }
    }
    out
}
