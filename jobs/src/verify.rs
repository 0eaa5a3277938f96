//! `reckon verify`: is a committed day what it says it is?
//!
//! - [`check_day`]: the pointer's signature against the configured key (`[signing]`), and
//!   every file it names, read again and hashed (the outputs, and the inputs kept on the root:
//!   the raw bill, the platform snapshot, the template, both SQL files, the rules), and the
//!   recorded input hashes against those files.
//! - [`replay_day`]: the day reconciled again into a scratch root from its recorded inputs only
//!   (the raw bill, the platform snapshot, the recorded template, SQL and rules, the day
//!   before's committed carry-over and ledger, an earlier run's ledger), then every output
//!   compared with the committed one, byte for byte.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::config::Config;
use crate::engine::Engines;
use crate::error::{Error, IoContext, Result};
use crate::records::{Output, Stage};
use crate::signing::{canonical, Verifier};
use crate::sql::SqlDir;
use crate::stages::{run_stage, Job};
use crate::store::{Committed, Manifest, Store};

/// What a check of one committed day found.
#[derive(Debug, Clone, Serialize)]
pub struct DayCheck {
    /// `channel date`.
    pub day: String,
    /// `checked`, `unsigned` (no signature, no key to require one), `not checked` (signed,
    /// but no key configured), or `failed`.
    pub signature: String,
    /// Files hashed again.
    pub files: usize,
    /// What is wrong; empty when the day is whole.
    pub problems: Vec<String>,
}

/// Checks the committed day: signature, every file, the recorded inputs. `None` when the day
/// was never committed.
pub async fn check_day(
    store: &Store,
    verifier: Option<&Verifier>,
    channel: &str,
    date: NaiveDate,
) -> Result<Option<DayCheck>> {
    let rel = store.committed_path(channel, date);
    let Some((bytes, _)) = store.root().get(&rel).await? else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: not JSON: {e}", store.url(&rel))))?;
    let c: Committed = serde_json::from_value(value.clone())
        .map_err(|e| Error::Other(format!("{}: not a committed pointer: {e}", store.url(&rel))))?;
    let signature = match (verifier, &c.signature) {
        (Some(v), Some(sig)) => match v.check(&canonical(&value)?, sig) {
            Ok(()) => "checked".to_string(),
            Err(why) => {
                problems.push(format!("{rel}: {why}"));
                "failed".to_string()
            }
        },
        (Some(_), None) => {
            problems.push(format!(
                "{rel}: not signed, and [signing] asks for signed days"
            ));
            "failed".to_string()
        }
        (None, Some(_)) => "not checked".to_string(),
        (None, None) => "unsigned".to_string(),
    };
    for f in &c.files {
        match store.root().size(&f.path).await? {
            None => problems.push(format!("{}: missing", f.path)),
            Some(_) => {
                let (sha, size) = store.root().sha256(&f.path).await?;
                if sha != f.sha256 || size != f.size {
                    problems.push(format!(
                        "{}: sha256 {sha} ({size} bytes), committed {} ({} bytes)",
                        f.path, f.sha256, f.size
                    ));
                }
            }
        }
    }
    // The recorded input hashes name files the pointer commits.
    let raw = c
        .manifest
        .fetched()
        .map(|f| f.file.clone())
        .unwrap_or_default();
    let file = |area: &str, name: &str| c.file(area, name).map(|f| f.sha256.clone());
    // The snapshot's one file, or the digest of its buckets' files.
    let platform: Vec<_> = c.area("platform").cloned().collect();
    let snapshot = (!platform.is_empty()).then(|| {
        let n = c.manifest.collected().map_or(1, |r| r.buckets);
        crate::buckets::digest(&platform, n)
    });
    for (input, file) in [
        ("raw_bill", file("raw", &raw)),
        ("template", file("inputs", "template.toml")),
        ("platform.sql", file("inputs", "platform.sql")),
        ("reconcile.sql", file("inputs", "reconcile.sql")),
        ("rules", file("inputs", "rules.json")),
        ("platform_snapshot", snapshot),
    ] {
        let recorded = c.inputs.get(input);
        if recorded.is_some() && recorded != file.as_ref() {
            problems.push(format!(
                "input {input}: recorded {}, the committed file has {}",
                recorded.map(String::as_str).unwrap_or("-"),
                file.as_deref().unwrap_or("none")
            ));
        }
    }
    Ok(Some(DayCheck {
        day: format!("{channel} {date}"),
        signature,
        files: c.files.len(),
        problems,
    }))
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// `channel date`.
    pub day: String,
    /// The committed run, and the run the replay gave.
    pub run_id: (Option<String>, Option<String>),
    /// Outputs compared.
    pub compared: usize,
    /// Outputs that differ, or why the day could not be replayed; empty when identical.
    pub problems: Vec<String>,
}

/// The recorded input `name` of `c` (a file under `inputs/`), read.
async fn recorded(store: &Store, c: &Committed, name: &str) -> Result<Option<Vec<u8>>> {
    match c.file("inputs", name) {
        Some(f) => Ok(store.root().get(&f.path).await?.map(|(b, _)| b.to_vec())),
        None => Ok(None),
    }
}

/// Reconciles the committed day again into a scratch root from its recorded inputs and
/// compares every output with the committed one. Nothing on the storage root changes.
pub async fn replay_day(
    config: &Config,
    channel: &str,
    date: NaiveDate,
    engines: &Engines,
) -> Result<Option<Replay>> {
    let store = crate::pipeline::store(config)?;
    let Some(c) = store.committed(channel, date).await? else {
        return Ok(None);
    };
    let day = format!("{channel} {date}");
    let mut problems = Vec::new();
    let reconciled = c.manifest.reconciled().and_then(|r| r.facts()).cloned();
    let Some(facts) = reconciled else {
        return Err(Error::Other(format!(
            "{day}: the committed manifest has no reconcile record"
        )));
    };
    if facts.second_look.is_some() {
        problems.push("the day asked the operational database (second look), whose answers are not recorded: it cannot be replayed".into());
    }
    let mut missing = Vec::new();
    let mut read = BTreeMap::new();
    for name in [
        "template.toml",
        "platform.sql",
        "reconcile.sql",
        "rules.json",
    ] {
        match recorded(&store, &c, name).await? {
            Some(b) => {
                read.insert(name, b);
            }
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        problems.push(format!(
            "the day has no recorded {} (committed before reckon kept its inputs): it cannot be replayed",
            missing.join(", ")
        ));
    }
    if !problems.is_empty() {
        return Ok(Some(Replay {
            day,
            run_id: (c.run_id.clone(), None),
            compared: 0,
            problems,
        }));
    }

    // The scratch root: the recorded inputs, nothing else.
    let dir = store.scratch_folder("replay", &format!("{channel}-{date}"))?;
    let scratch = Store::local(dir.join("root"))?;
    let recipe = dir.join("recipe");
    std::fs::create_dir_all(&recipe).at(&recipe)?;
    for (name, bytes) in &read {
        crate::store::write_atomic(&recipe.join(name), bytes)?;
    }
    // The day's fetched bill and the day before's committed carry-over and ledger.
    crate::preview::seed(&store, &scratch, channel, date).await?;
    // The recorded template, SQL and rules; nothing else of today's config decides.
    let rules: crate::records::Rules = serde_json::from_slice(&read["rules.json"])?;
    let mut ch = config
        .channel(channel)?
        .replaying(&rules)
        .map_err(Error::Config)?;
    ch.format = recipe.join("template.toml").display().to_string();
    let mut cfg = config.clone();
    // The bill in as many buckets as it was committed in, whatever bucket_rows says now.
    cfg.pinned_buckets = c.manifest.normalized().map(|n| n.buckets);
    cfg.second_look = None;
    cfg.replica = None;
    cfg.signing = None;
    // The review desk's decisions as the day applied them, not the desk's of today.
    cfg.decisions =
        crate::desk::Source::Recorded(match recorded(&store, &c, "decisions.parquet").await? {
            Some(bytes) => {
                let p = recipe.join("decisions.parquet");
                crate::store::write_atomic(&p, &bytes)?;
                Some(p)
            }
            None => None,
        });
    let sql = SqlDir {
        dir: Some(recipe.clone()),
    };
    let engines = engines.for_job()?;
    scratch.register(&engines.local);
    let job = Job {
        config: &cfg,
        channel: &ch,
        date,
        store: scratch.clone(),
        sql: &sql,
        engines: &engines,
    };
    for stage in [Stage::Normalize, Stage::Reconcile, Stage::Report] {
        if stage == Stage::Reconcile {
            seed_collect_and_earlier_run(&store, &scratch, &c, &facts).await?;
        }
        if let Err(e) = run_stage(&job, stage).await {
            problems.push(format!("the replay's {stage} failed: {e}"));
            break;
        }
    }
    let again = scratch.committed(channel, date).await?;
    let mut compared = 0;
    if let Some(again) = &again {
        let outputs = |x: &Committed| -> BTreeMap<String, String> {
            x.files
                .iter()
                .filter(|f| {
                    [
                        "normalized/",
                        "rejected/",
                        "results/",
                        "carryover/",
                        "stats/",
                    ]
                    .iter()
                    .any(|a| f.path.starts_with(a))
                })
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect()
        };
        let (want, got) = (outputs(&c), outputs(again));
        compared = want.len();
        for (path, sha) in &want {
            match got.get(path) {
                Some(s) if s == sha => {}
                Some(s) => problems.push(format!(
                    "{path}: the replay wrote sha256 {s}, committed {sha}"
                )),
                None => problems.push(format!("{path}: the replay did not write it")),
            }
        }
        for path in got.keys().filter(|p| !want.contains_key(*p)) {
            problems.push(format!(
                "{path}: the replay wrote it, the committed day has no such file"
            ));
        }
    } else if problems.is_empty() {
        problems.push("the replay committed nothing".into());
    }
    Ok(Some(Replay {
        day,
        run_id: (c.run_id.clone(), again.and_then(|a| a.run_id)),
        compared,
        problems,
    }))
}

/// After the replay's normalize: the platform snapshot as committed (the warehouse is not read
/// again), and the earlier run of the day the ageing saw, from its recorded ledger.
async fn seed_collect_and_earlier_run(
    store: &Store,
    scratch: &Store,
    c: &Committed,
    facts: &crate::records::ReconcileDetail,
) -> Result<()> {
    let date: NaiveDate = c
        .bill_date
        .parse()
        .map_err(|_| Error::Other(format!("a pointer with a bad date {:?}", c.bill_date)))?;
    let mut seeded: Manifest = scratch.manifest(&c.channel, date).await?;
    if let Some(r) = &c.manifest.stages.collect {
        for f in &r.files {
            crate::preview::copy_into(store, scratch, f).await?;
        }
        seeded.stages.collect = Some(r.clone());
    }
    let ledger = c.file("inputs", "earlier_ledger.parquet");
    if let (Some(_), Some(f)) = (&facts.ageing.earlier_run, ledger) {
        // Its entries are resolved already: they enter the ledger as they are.
        crate::preview::copy_into(store, scratch, &f.path).await?;
        let d = facts.clone();
        let mut m = Manifest::new(&c.channel, &c.bill_date);
        m.record_done(
            Stage::Reconcile,
            &crate::store::Ran {
                finished_at: String::new(),
                duration_ms: 0,
                attempts: 1,
            },
            vec![f.clone()],
            Output::Reconcile(Box::new(d)),
        );
        seeded.stages.reconcile = m.stages.reconcile;
    }
    scratch.save_manifest(&seeded, date).await
}
