//! The storage root: where each area lives, how a stage's outputs are published, how a day
//! commits as a whole, and the per channel-and-date manifests. The root is a local folder or
//! an `s3://` prefix (`root.rs`); everything here works the same on both.
//!
//! The commit protocol (ARCHITECTURE.md has the whole of it):
//! 1. A stage writes its files into a local staging folder, then `publish` uploads them into a
//!    version folder of their own, `AREA/channel=C/dt=D/_v=<hash>/`, named by a hash of the
//!    files' names and contents: the same outputs land in the same folder with the same
//!    bytes, and different outputs never overwrite what a reader may be reading.
//! 2. The stage's record (its files with their SHA-256) goes into the working manifest,
//!    `runs/channel=C/dt=D/manifest.json`, which only reckon reads.
//! 3. The report stage commits the day: `runs/channel=C/dt=D/committed.json` names every file
//!    of the day, written with a conditional put on the version it replaces, before the
//!    working manifest records the report (so a day the manifest calls reconciled is always
//!    committed). Readers (`reckon report`, the next day's carry-in, external engines) read
//!    that pointer and the files it names: a whole committed day, never a mix of two runs.
//! 4. Version folders that neither manifest names are removed by the next run of the day
//!    (under its lease), never by a reader; the folders the day's previous pointer named stay
//!    until that next run, so a reader that read the old pointer can finish.

mod manifest;
mod root;

pub use manifest::*;
pub use root::{s3_location, s3_store, Expect, Root, Version};

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Locator;
use crate::error::{Error, IoContext, Result};

/// The areas of a channel-day, each `AREA/channel=C/dt=D/`.
pub const AREAS: [&str; 10] = [
    "raw",
    "inputs",
    "normalized",
    "rejected",
    "platform_source",
    "platform",
    "results",
    "carryover",
    "stats",
    "runs",
];

/// The storage root with its local scratch folder (and the key that signs its commits).
#[derive(Debug, Clone)]
pub struct Store {
    root: Root,
    scratch: PathBuf,
    signer: Option<std::sync::Arc<crate::signing::Signer>>,
}

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

    /// The committed files of `area`.
    pub fn area<'a>(&'a self, area: &'a str) -> impl Iterator<Item = &'a FileSum> + 'a {
        self.files
            .iter()
            .filter(move |f| f.path.starts_with(&format!("{area}/")))
    }
}

/// The SHA-256 of each input of the day, from its records and files.
fn inputs_of(m: &Manifest, files: &[FileSum]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        out.insert(k.to_string(), v.unwrap_or("none").to_string());
    };
    let recipe = |name: &str| {
        files
            .iter()
            .find(|f| f.path.starts_with("inputs/") && f.path.rsplit('/').next() == Some(name))
            .map(|f| f.sha256.as_str())
    };
    put("raw_bill", m.fetched().map(|f| f.sha256.as_str()));
    put("template", recipe("template.toml"));
    put("platform.sql", recipe("platform.sql"));
    put("reconcile.sql", recipe("reconcile.sql"));
    put("rules", recipe("rules.json"));
    put(
        "platform_snapshot",
        m.collected().map(|c| c.sha256.as_str()),
    );
    let reconciled = m.stages.reconcile.as_ref().and_then(|r| r.facts());
    put("carry_in", reconciled.map(|r| r.carry_in.sha256.as_str()));
    put(
        "ledger_before",
        reconciled.map(|r| r.ageing.before.sha256.as_str()),
    );
    out
}

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
    /// The storage root `storage_root` names, with `scratch_dir` (or the default) for local
    /// scratch files.
    /// `what` names the setting in errors.
    pub fn open(
        locator: &Locator,
        what: &str,
        storage_root: &str,
        scratch_dir: Option<&str>,
    ) -> Result<Store> {
        let root = Root::parse(locator, what, storage_root)?;
        let scratch = match (scratch_dir, root.local_dir()) {
            (Some(d), _) => locator.resolve("scratch_dir", d).map_err(Error::Config)?,
            // Beside the outputs, so publishing is a rename on the same file system.
            (None, Some(dir)) => dir.join("_scratch"),
            (None, None) => {
                let tag = hex::encode(&Sha256::digest(root.display().as_bytes())[..6]);
                std::env::temp_dir().join(format!("reckon-scratch-{tag}"))
            }
        };
        Ok(Store {
            root,
            scratch,
            signer: None,
        })
    }

    /// The store, signing the days it commits with `signer`.
    pub fn signed_by(mut self, signer: Option<crate::signing::Signer>) -> Store {
        self.signer = signer.map(std::sync::Arc::new);
        self
    }

    /// A store rooted at the local folder `dir`.
    pub fn local(dir: impl AsRef<Path>) -> Result<Store> {
        let root = Root::local(dir.as_ref())?;
        let scratch = root
            .local_dir()
            .map(|d| d.join("_scratch"))
            .unwrap_or_default();
        Ok(Store {
            root,
            scratch,
            signer: None,
        })
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The root as a user writes it.
    pub fn display(&self) -> String {
        self.root.display()
    }

    /// The local scratch folder.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// `AREA/channel=C/dt=D`, relative to the root.
    pub fn area(&self, area: &str, channel: &str, date: NaiveDate) -> String {
        format!("{area}/channel={channel}/dt={date}")
    }

    /// The URL (or local path) of `rel` for the engine.
    pub fn url(&self, rel: &str) -> String {
        self.root.url(rel)
    }

    /// The URL of the folder holding the files `files` (relative paths; they share one).
    pub fn dir_url(&self, files: &[&str]) -> Option<String> {
        let dir = files.first()?.rsplit_once('/')?.0;
        Some(format!("{}/", self.url(dir).trim_end_matches('/')))
    }

    /// Makes the root readable by `ctx` (an object store is registered by its bucket).
    pub fn register(&self, ctx: &datafusion::prelude::SessionContext) {
        if let Some((url, store)) = self.root.registration() {
            ctx.register_object_store(url, store);
        }
    }

    /// A fresh local staging folder for one attempt of one stage; removed when the attempt
    /// ends, however it ends (a kill is cleaned up by [`Store::clear_stale_staging`]).
    pub fn staging(&self, stage: &str, channel: &str, date: NaiveDate) -> Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = self.scratch.join("staging").join(format!(
            "{channel}-{date}-{stage}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).at(&dir)?;
        Ok(Staging(dir))
    }

    /// A work folder for engine spill and shuffle files.
    pub fn work_dir(&self) -> Result<PathBuf> {
        let dir = self
            .scratch
            .join("work")
            .join(format!("{}", std::process::id()));
        std::fs::create_dir_all(&dir).at(&dir)?;
        Ok(dir)
    }

    /// Removes staging folders left by killed attempts of this channel and date.
    pub fn clear_stale_staging(&self, channel: &str, date: NaiveDate) -> Result<()> {
        let dir = self.scratch.join("staging");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let prefix = format!("{channel}-{date}-");
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                std::fs::remove_dir_all(e.path()).at(e.path())?;
            }
        }
        Ok(())
    }

    /// The dates of `channel` that have a folder in `area`, in order.
    pub async fn dates(&self, area: &str, channel: &str) -> Result<Vec<NaiveDate>> {
        let names = self
            .root
            .folders(&format!("{area}/channel={channel}"))
            .await?;
        Ok(names
            .iter()
            .filter_map(|n| n.strip_prefix("dt=").and_then(|d| d.parse().ok()))
            .collect())
    }

    /// The working manifest's path, relative to the root.
    pub fn manifest_path(&self, channel: &str, date: NaiveDate) -> String {
        format!("{}/manifest.json", self.area("runs", channel, date))
    }

    /// The committed pointer's path, relative to the root.
    pub fn committed_path(&self, channel: &str, date: NaiveDate) -> String {
        format!("{}/committed.json", self.area("runs", channel, date))
    }

    /// The working manifest, or a fresh one when the date never ran.
    pub async fn manifest(&self, channel: &str, date: NaiveDate) -> Result<Manifest> {
        let rel = self.manifest_path(channel, date);
        match self.root.get(&rel).await? {
            Some((bytes, _)) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::Other(format!("{}: unreadable manifest: {e}", self.root.url(&rel)))
            }),
            None => Ok(Manifest::new(channel, &date.to_string())),
        }
    }

    /// Writes the working manifest whole (only the lease holder writes it).
    pub async fn save_manifest(&self, m: &Manifest, date: NaiveDate) -> Result<()> {
        let rel = self.manifest_path(&m.channel, date);
        self.root.put(&rel, serde_json::to_vec_pretty(m)?).await
    }

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
            inputs: inputs_of(m, &files),
            files,
            manifest: m.clone(),
            signature: None,
        };
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
        let put = self.root.put_if(&rel, bytes.clone(), expect).await;
        // A put whose answer was lost (a timeout, a reset) may have been carried out: the
        // pointer then holds these very bytes, and the commit is done.
        let ours = |got: Option<(bytes::Bytes, Version)>| got.is_some_and(|(b, _)| b == bytes);
        match put {
            Ok(Some(_)) => Ok(()),
            Err(e) if e.is_transient() && ours(self.root.get(&rel).await?) => Ok(()),
            Err(e) => Err(e),
            Ok(None) => Err(Error::NotReady(format!(
                "{}: another run committed {} {} meanwhile; nothing was overwritten, run it again",
                self.root.url(&rel),
                committed.channel,
                date
            ))),
        }
    }

    /// The files of record `r` with their checksums (read from the store where the record,
    /// written before checksums were, has none).
    pub async fn sums<D>(&self, r: &Record<D>) -> Result<Vec<FileSum>> {
        let mut out = Vec::new();
        for n in &r.files {
            match r.checksums.iter().find(|s| &s.path == n) {
                Some(s) => out.push(s.clone()),
                None => out.push(self.checksum(n).await?),
            }
        }
        Ok(out)
    }

    /// A file's checksum, read from the store (for records written before checksums were).
    async fn checksum(&self, rel: &str) -> Result<FileSum> {
        let copy = self.local_copy(rel).await?;
        Ok(FileSum {
            path: rel.to_string(),
            sha256: sha256_file(copy.path())?,
            size: std::fs::metadata(copy.path()).at(copy.path())?.len(),
        })
    }

    /// Uploads every file of the local folder `staged` into a version folder of `area` for the
    /// channel-day, named by a hash of the files' names and contents; returns the published
    /// files with their checksums, in name order. The folder is removed.
    pub async fn publish(
        &self,
        staged: &Path,
        area: &str,
        channel: &str,
        date: NaiveDate,
    ) -> Result<Vec<FileSum>> {
        self.publish_as(staged, area, channel, date, None).await
    }

    /// [`Store::publish`] into the version folder `_v=<version>` when `version` is given (a
    /// fetched bill's folder is named by the bill's hash alone: its `fetch.json`, which records
    /// when it was fetched, does not make it another version).
    pub async fn publish_as(
        &self,
        staged: &Path,
        area: &str,
        channel: &str,
        date: NaiveDate,
        version: Option<&str>,
    ) -> Result<Vec<FileSum>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(staged).at(staged)? {
            let entry = entry.at(staged)?;
            if entry.file_type().at(entry.path())?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        let mut sums = Vec::new();
        let mut key = Sha256::new();
        for n in &names {
            let p = staged.join(n);
            let sha = sha256_file(&p)?;
            let size = std::fs::metadata(&p).at(&p)?.len();
            key.update(format!("{n}\0{sha}\n").as_bytes());
            sums.push((n.clone(), sha, size));
        }
        let version = match version {
            Some(v) => v.to_string(),
            None => hex::encode(&key.finalize()[..8]),
        };
        let dir = format!("{}/_v={version}", self.area(area, channel, date));
        let mut out = Vec::new();
        for (n, sha256, size) in sums {
            let rel = format!("{dir}/{n}");
            self.root.upload(&staged.join(&n), &rel).await?;
            out.push(FileSum {
                path: rel,
                sha256,
                size,
            });
        }
        let _ = std::fs::remove_dir_all(staged);
        Ok(out)
    }

    /// A local copy of `rel` to read: the file itself on a local root, else a download into
    /// the scratch folder, removed when the copy is dropped.
    pub async fn local_copy(&self, rel: &str) -> Result<LocalCopy> {
        if let Some(p) = self.root.local_path(rel) {
            return Ok(LocalCopy {
                path: p,
                own: false,
            });
        }
        let name = rel.rsplit('/').next().unwrap_or("file");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = self
            .scratch
            .join("inputs")
            .join(format!("{}-{nanos}", std::process::id()))
            .join(name);
        let copy = LocalCopy { path, own: true };
        self.root.download(rel, &copy.path).await?;
        Ok(copy)
    }

    /// Removes the version folders of the channel-day that neither its working manifest, nor
    /// its committed pointer, nor `keep` (files a reader may still be reading), nor a
    /// re-issued bill's history names. Returns how many files went.
    pub async fn clean(&self, channel: &str, date: NaiveDate, keep: &[String]) -> Result<usize> {
        let working = self.manifest(channel, date).await?;
        let committed = self.committed(channel, date).await?;
        let mut kept: BTreeSet<String> = BTreeSet::new();
        let mut add = |path: &str| {
            if let Some((dir, _)) = path.rsplit_once('/') {
                kept.insert(dir.to_string());
            }
        };
        for (names, _) in working.stages.files() {
            names.iter().for_each(|n| add(n));
        }
        if let Some(c) = &committed {
            c.files.iter().for_each(|f| add(&f.path));
        }
        keep.iter().for_each(|k| add(k));
        for f in working
            .stages
            .fetch
            .as_ref()
            .and_then(|r| r.last_facts())
            .map(|f| f.superseded.clone())
            .unwrap_or_default()
        {
            add(&f);
        }
        let mut removed = 0;
        for area in AREAS {
            for rel in self.root.list(&self.area(area, channel, date)).await? {
                let Some((dir, _)) = rel.rsplit_once('/') else {
                    continue;
                };
                let versioned = dir.rsplit('/').next().is_some_and(|d| d.starts_with("_v="));
                if versioned && !kept.contains(dir) {
                    self.root.delete(&rel).await?;
                    removed += 1;
                    if let Some(p) = self.root.local_path(dir) {
                        let _ = std::fs::remove_dir(p);
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(channel, %date, files = removed, "removed files no manifest names");
        }
        Ok(removed)
    }
}

/// A local copy of a stored file; a downloaded one is removed when dropped.
#[derive(Debug)]
pub struct LocalCopy {
    path: PathBuf,
    own: bool,
}

impl LocalCopy {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        if self.own {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// A staging folder, removed on drop: what a failed attempt wrote aside never lingers.
#[derive(Debug)]
pub struct Staging(PathBuf);

impl std::ops::Deref for Staging {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Staging {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Writes `bytes` to the local file `path` by writing a sibling and renaming it over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)?;
    Ok(())
}

/// The hex SHA-256 of a file, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).at(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{DayStatus, Output, Stage};

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).expect("date")
    }

    fn staged_with(store: &Store, files: &[(&str, &str)]) -> Staging {
        let s = store
            .staging("reconcile", "alipay", date())
            .expect("staging");
        for (n, text) in files {
            std::fs::write(s.join(n), text).expect("write");
        }
        s
    }

    #[tokio::test]
    async fn publish_puts_the_same_outputs_in_the_same_version_folder_and_others_beside() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let a = staged_with(&store, &[("diffs.parquet", "d1"), ("ledger.parquet", "l1")]);
        let first = store
            .publish(&a, "results", "alipay", date())
            .await
            .expect("publish");
        assert_eq!(first.len(), 2);
        assert!(first[0]
            .path
            .starts_with("results/channel=alipay/dt=2026-11-20/_v="));
        assert_eq!(first[0].sha256, hex::encode(Sha256::digest(b"d1")));
        assert!(!a.exists(), "the staging folder is gone");
        let again = staged_with(&store, &[("diffs.parquet", "d1"), ("ledger.parquet", "l1")]);
        let second = store
            .publish(&again, "results", "alipay", date())
            .await
            .expect("again");
        assert_eq!(first, second, "the same outputs: the same folder and bytes");
        let other = staged_with(&store, &[("diffs.parquet", "d2"), ("ledger.parquet", "l1")]);
        let third = store
            .publish(&other, "results", "alipay", date())
            .await
            .expect("other");
        assert_ne!(third[0].path, first[0].path, "new outputs never overwrite");
        assert_eq!(
            std::fs::read(tmp.path().join(&first[0].path)).expect("old"),
            b"d1",
            "what a reader of the earlier folder reads is untouched"
        );
    }

    #[tokio::test]
    async fn a_commit_names_every_file_and_refuses_a_version_it_did_not_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let mut m = Manifest::new("alipay", "2026-11-20");
        let s = staged_with(&store, &[("part-0.parquet", "p")]);
        let files = store
            .publish(&s, "platform", "alipay", date())
            .await
            .expect("publish");
        let collect = Output::Collect(crate::records::CollectDetail {
            rows: 1,
            partitions_read: vec![],
            sha256: "x".into(),
            sql: "platform.sql".into(),
            spilled: Default::default(),
        });
        let ran = Ran {
            finished_at: "2026-11-21T00:00:00Z".into(),
            duration_ms: 1,
            attempts: 1,
        };
        m.record_done(Stage::Collect, &ran, files.clone(), collect);
        assert!(store
            .committed("alipay", date())
            .await
            .expect("read")
            .is_none());
        let c = store.commit(&m, date(), None).await.expect("first commit");
        assert_eq!(c.files, files);
        let (read, v) = store
            .committed_at("alipay", date())
            .await
            .expect("read")
            .expect("committed");
        assert_eq!(read.files, files);
        // A writer that read no pointer (or an older one) cannot replace it.
        let e = store.commit(&m, date(), None).await.expect_err("exists");
        assert_eq!(e.exit_code(), 75, "{e}");
        store
            .commit(&m, date(), Some(&v))
            .await
            .expect("at its version");
        let e = store
            .commit(&m, date(), Some(&v))
            .await
            .expect_err("stale version");
        assert!(e.to_string().contains("another run committed"), "{e}");
    }

    #[tokio::test]
    async fn clean_removes_only_folders_no_manifest_names() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let publish = |files: &'static [(&'static str, &'static str)]| {
            let s = staged_with(&store, files);
            let store = store.clone();
            async move {
                store
                    .publish(&s, "results", "alipay", date())
                    .await
                    .expect("publish")
            }
        };
        let committed = publish(&[("diffs.parquet", "committed")]).await;
        let working = publish(&[("diffs.parquet", "working")]).await;
        let reader = publish(&[("diffs.parquet", "being read")]).await;
        let orphan = publish(&[("diffs.parquet", "crashed before its record")]).await;
        let ran = Ran {
            finished_at: "t".into(),
            duration_ms: 0,
            attempts: 1,
        };
        let report = |files: Vec<FileSum>| {
            let mut m = Manifest::new("alipay", "2026-11-20");
            m.stages.report = Some(Record {
                state: crate::records::StageState::Done,
                finished_at: ran.finished_at.clone(),
                duration_ms: 0,
                files: files.iter().map(|f| f.path.clone()).collect(),
                checksums: files,
                detail: Detail::Failed { error: "-".into() },
                attempts: 1,
            });
            m.status = DayStatus::Reconciled;
            m
        };
        store
            .commit(&report(committed.clone()), date(), None)
            .await
            .expect("commit");
        store
            .save_manifest(&report(working.clone()), date())
            .await
            .expect("save");
        let gone = store
            .clean("alipay", date(), &[reader[0].path.clone()])
            .await
            .expect("clean");
        assert_eq!(gone, 1);
        for (f, there) in [
            (&committed, true),
            (&working, true),
            (&reader, true),
            (&orphan, false),
        ] {
            assert_eq!(tmp.path().join(&f[0].path).exists(), there, "{}", f[0].path);
        }
    }

    #[tokio::test]
    async fn a_day_reconciled_before_pointers_reads_as_committed_from_its_manifest() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let old = "carryover/channel=alipay/dt=2026-11-20/part-0.parquet";
        std::fs::create_dir_all(tmp.path().join(old).parent().expect("dir")).expect("dir");
        std::fs::write(tmp.path().join(old), b"carry").expect("write");
        // A manifest as reckon wrote it before #18: files at fixed paths, no checksums.
        let text = format!(
            r#"{{"channel":"alipay","bill_date":"2026-11-20","run_id":"r1","status":"reconciled",
            "error":null,"stages":{{
              "reconcile":{{"state":"done","finished_at":"t","duration_ms":1,"files":["{old}"],
                "detail":{{"error":"-"}}}},
              "report":{{"state":"done","finished_at":"t","duration_ms":1,
                "files":["results/channel=alipay/dt=2026-11-20/summary.json"],
                "detail":{{"error":"-"}}}}}}}}"#
        );
        let rel = store.manifest_path("alipay", date());
        store
            .root()
            .put(&rel, text.into_bytes())
            .await
            .expect("put");
        let c = store
            .committed("alipay", date())
            .await
            .expect("read")
            .expect("a reconciled day reads as committed");
        assert_eq!(c.run_id.as_deref(), Some("r1"));
        let carry = c.area("carryover").next().expect("its carry-over");
        assert_eq!(
            store.sha256_of(carry).await.expect("sha"),
            hex::encode(Sha256::digest(b"carry"))
        );
        // Once it has a pointer, the pointer decides.
        let other = tempfile::tempdir().expect("tmp");
        let fresh = Store::local(other.path()).expect("store");
        assert!(fresh
            .committed("alipay", date())
            .await
            .expect("read")
            .is_none());
    }

    #[tokio::test]
    async fn a_manifest_is_saved_whole_and_read_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let fresh = store.manifest("alipay", date()).await.expect("fresh");
        assert_eq!(fresh.status, DayStatus::NeverRun);
        let mut m = fresh;
        m.run_id = Some("abc".into());
        m.status = DayStatus::Reconciled;
        store.save_manifest(&m, date()).await.expect("save");
        let back = store.manifest("alipay", date()).await.expect("read");
        assert_eq!(back.run_id.as_deref(), Some("abc"));
        assert_eq!(back.status, DayStatus::Reconciled);
        let dir = tmp.path().join(store.area("runs", "alipay", date()));
        let names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["manifest.json"], "no temporary file left");
    }

    #[test]
    fn staging_goes_when_dropped_and_a_killed_attempts_at_the_next_run() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::local(tmp.path()).expect("store");
        let path = {
            let s = store.staging("fetch", "wechat", date()).expect("staging");
            std::fs::write(s.join("x"), b"x").expect("write");
            s.to_path_buf()
        };
        assert!(!path.exists(), "a failed attempt leaves nothing");
        // What a SIGKILL leaves: a folder no guard removed.
        let left = store
            .scratch()
            .join("staging/wechat-2026-11-20-collect-1-2");
        let other = store
            .scratch()
            .join("staging/alipay-2026-11-20-collect-1-2");
        std::fs::create_dir_all(&left).expect("left");
        std::fs::create_dir_all(&other).expect("other");
        store.clear_stale_staging("wechat", date()).expect("clear");
        assert!(!left.exists());
        assert!(other.exists(), "another channel's attempt is not touched");
    }
}
