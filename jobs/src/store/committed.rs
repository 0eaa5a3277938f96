//! The committed pointer, `runs/channel=C/dt=D/committed.json`: what it holds, how it is
//! written (the commit) and read, and the crash points of the commit protocol (`mod.rs`).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{Expect, FileSum, Manifest, Store, Version};
use crate::error::{Error, Result};

/// `runs/channel=C/dt=D/committed.json`: the day as committed, the pointer readers follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed {
    /// The channel.
    pub channel: String,
    /// The bill date.
    pub bill_date: String,
    /// The committed run.
    pub run_id: Option<String>,
    /// When it was committed (UTC, RFC 3339).
    pub committed_at: String,
    /// The reckon version that committed it.
    pub reckon_version: String,
    /// Every file of the committed day, relative to the storage root, with its SHA-256 and
    /// size: what an external engine reads.
    pub files: Vec<FileSum>,
    /// The SHA-256 of each input of the day: `raw_bill`, `template`, `platform.sql`,
    /// `reconcile.sql`, `rules`, `platform_snapshot`, `carry_in`, `ledger_before` (`none`
    /// when the day had none).
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, String>,
    /// The manifest as it was at the commit: each stage's record.
    pub manifest: Manifest,
    /// The Ed25519 signature over the rest, with `[signing]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::Signature>,
}

impl Committed {
    /// The committed file of `area` whose name is `name` (`diffs.parquet`), if any.
    pub fn file(&self, area: &str, name: &str) -> Option<&FileSum> {
        self.files.iter().find(|f| {
            f.path.starts_with(&format!("{area}/")) && f.path.rsplit('/').next() == Some(name)
        })
    }

    /// The SHA-256 of each input of the day, from its records and the recipe files it
    /// commits under `inputs/`.
    fn recorded_inputs(&self) -> std::collections::BTreeMap<String, String> {
        let m = &self.manifest;
        let recipe = |name: &str| self.file("inputs", name).map(|f| f.sha256.as_str());
        let reconciled = m.stages.reconcile.as_ref().and_then(|r| r.facts());
        [
            ("raw_bill", m.fetched().map(|f| f.sha256.as_str())),
            ("template", recipe("template.toml")),
            ("platform.sql", recipe("platform.sql")),
            ("reconcile.sql", recipe("reconcile.sql")),
            ("rules", recipe("rules.json")),
            (
                "platform_snapshot",
                m.collected().map(|c| c.sha256.as_str()),
            ),
            ("carry_in", reconciled.map(|r| r.carry_in.sha256.as_str())),
            (
                "ledger_before",
                reconciled.map(|r| r.ageing.before.sha256.as_str()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.unwrap_or("none").to_string()))
        .collect()
    }

    /// The committed files of `area`.
    pub fn area<'a>(&'a self, area: &'a str) -> impl Iterator<Item = &'a FileSum> + 'a {
        self.files
            .iter()
            .filter(move |f| f.path.starts_with(&format!("{area}/")))
    }
}

/// Puts of the day's pointer before a transport failure fails the commit (exit 75).
const POINTER_ATTEMPTS: usize = 5;

/// The named points of the commit protocol where `RECKON_CRASH_AT=<stage>:<point>` makes the
/// process abort, as a crash would (for the crash-safety tests; never set it in production):
/// every stage has `published` and `recorded`; the report `published`, `committed`,
/// `recorded`, `cleaned`, in that order.
pub const CRASH_POINTS: [&str; 4] = ["published", "committed", "recorded", "cleaned"];

/// Aborts the process when `RECKON_CRASH_AT` names `stage:point`.
pub fn crash_point(stage: &str, point: &str) {
    if let Ok(at) = std::env::var("RECKON_CRASH_AT") {
        if at == format!("{stage}:{point}") {
            eprintln!("RECKON_CRASH_AT={at}: aborting here, as a crash would");
            std::process::abort();
        }
    }
}

impl Store {
    /// The committed day with the pointer's version, if the day was ever committed.
    pub async fn committed_at(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> Result<Option<(Committed, Version)>> {
        let rel = self.committed_path(channel, date);
        match self.root.get(&rel).await? {
            Some((bytes, v)) => serde_json::from_slice(&bytes)
                .map(|c| Some((c, v)))
                .map_err(|e| {
                    Error::Other(format!("{}: unreadable pointer: {e}", self.root.url(&rel)))
                }),
            None => Ok(None),
        }
    }

    /// The committed day, if it was ever committed. A day reconciled before committed pointers
    /// existed (its manifest reconciled, its records without checksums) reads as committed
    /// from its manifest, its files where they were written then; their `sha256` is empty
    /// until [`Store::sha256_of`] reads it.
    pub async fn committed(&self, channel: &str, date: NaiveDate) -> Result<Option<Committed>> {
        if let Some((c, _)) = self.committed_at(channel, date).await? {
            return Ok(Some(c));
        }
        let m = self.manifest(channel, date).await?;
        let legacy = m.status == crate::records::DayStatus::Reconciled
            && m.stages.files().iter().all(|(_, sums)| sums.is_empty());
        if !legacy || m.stages.report.is_none() {
            return Ok(None);
        }
        let files = m
            .stages
            .files()
            .into_iter()
            .flat_map(|(names, _)| names.iter())
            .map(|n| FileSum {
                path: n.clone(),
                sha256: String::new(),
                size: 0,
            })
            .collect();
        Ok(Some(Committed {
            channel: m.channel.clone(),
            bill_date: m.bill_date.clone(),
            run_id: m.run_id.clone(),
            committed_at: String::new(),
            reckon_version: String::new(),
            files,
            inputs: Default::default(),
            manifest: m,
            signature: None,
        }))
    }

    /// A committed file's SHA-256: the pointer's, or (a day from before pointers) read.
    pub async fn sha256_of(&self, f: &FileSum) -> Result<String> {
        if !f.sha256.is_empty() {
            return Ok(f.sha256.clone());
        }
        Ok(self.checksum(&f.path).await?.sha256)
    }

    /// Commits the day `m` describes: writes the pointer naming every file of its records,
    /// replacing the committed version `previous` read before (or creating it). Another writer
    /// having replaced it meanwhile is "not ready" (exit 75): nothing is overwritten.
    pub async fn commit(
        &self,
        m: &Manifest,
        date: NaiveDate,
        previous: Option<&Version>,
    ) -> Result<Committed> {
        let committed = self.pointer_for(m).await?;
        self.write_pointer(&committed, date, previous).await?;
        Ok(committed)
    }

    /// The pointer that commits the day `m` describes: every file of its records with its
    /// checksum, the run id, the manifest.
    pub async fn pointer_for(&self, m: &Manifest) -> Result<Committed> {
        let mut files = Vec::new();
        for (names, sums) in m.stages.files() {
            for n in names {
                match sums.iter().find(|s| &s.path == n) {
                    Some(s) => files.push(s.clone()),
                    None if self.root.exists(n).await? => files.push(self.checksum(n).await?),
                    // A file of a manifest from before #18 that is gone (a superseded bill).
                    None => {}
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        let mut committed = Committed {
            channel: m.channel.clone(),
            bill_date: m.bill_date.clone(),
            run_id: m.run_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            reckon_version: env!("CARGO_PKG_VERSION").to_string(),
            inputs: Default::default(),
            files,
            manifest: m.clone(),
            signature: None,
        };
        committed.inputs = committed.recorded_inputs();
        if let Some(s) = &self.signer {
            let body = crate::signing::canonical(&serde_json::to_value(&committed)?)?;
            committed.signature = Some(s.sign(&body));
        }
        Ok(committed)
    }

    /// Writes `committed` as the day's pointer, replacing the version `previous` (or creating
    /// it); another writer having replaced it meanwhile is "not ready" (exit 75).
    pub async fn write_pointer(
        &self,
        committed: &Committed,
        date: NaiveDate,
        previous: Option<&Version>,
    ) -> Result<()> {
        let rel = self.committed_path(&committed.channel, date);
        let expect = match previous {
            Some(v) => Expect::At(v.clone()),
            None => Expect::Absent,
        };
        let bytes = serde_json::to_vec_pretty(committed)?;
        // A put whose answer was lost (a timeout, a reset) may have been carried out: the
        // pointer then holds these very bytes, and the commit is done. One that never arrived
        // is put again (object_store does not repeat a conditional put itself): the condition
        // still guards against a commit made meanwhile.
        let ours = |got: Option<(bytes::Bytes, Version)>| got.is_some_and(|(b, _)| b == bytes);
        let attempt = || async {
            match self.root.put_if(&rel, bytes.clone(), expect.clone()).await {
                Err(e) if e.is_transient() && ours(self.root.get(&rel).await?) => Ok(Some(())),
                Ok(put) => Ok(put.map(|_| ())),
                Err(e) => Err(e),
            }
        };
        use backon::Retryable;
        let put = attempt
            .retry(
                backon::ExponentialBuilder::default()
                    .with_min_delay(std::time::Duration::from_millis(200))
                    .with_max_times(POINTER_ATTEMPTS - 1)
                    .with_jitter(),
            )
            .when(Error::is_transient)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "commit put failed; putting again"))
            .await;
        match put {
            Ok(Some(())) => Ok(()),
            Err(e) => Err(e),
            Ok(None) => Err(Error::NotReady(format!(
                "{}: another run committed {} {} meanwhile; nothing was overwritten, run it again",
                self.root.url(&rel),
                committed.channel,
                date
            ))),
        }
    }
}
