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

mod background;
mod committed;
mod manifest;
mod root;

pub use committed::*;
pub use manifest::*;
pub use root::{s3_location, s3_store, Expect, Root, Version};

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
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
    /// Uploads still running (the fetched bill), awaited before a commit.
    uploads: background::Background,
    /// The most the scratch cache may hold, in bytes.
    cache_budget: u64,
    /// Held while a stage of this process reads, changes and saves a working manifest, so
    /// stages run side by side (collect beside fetch and normalize) never lose a record.
    manifest_writes: std::sync::Arc<tokio::sync::Mutex<()>>,
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
        Ok(Store::with_scratch(root, scratch))
    }

    /// The store of `root` with its scratch folder `scratch`: unsigned, the default cache
    /// budget, nothing uploading.
    fn with_scratch(root: Root, scratch: PathBuf) -> Store {
        Store {
            root,
            scratch,
            signer: None,
            uploads: background::Background::default(),
            cache_budget: crate::config::DEFAULT_SCRATCH_CACHE_MB << 20,
            manifest_writes: Default::default(),
        }
    }

    /// The store, signing the days it commits with `signer`.
    pub fn signed_by(mut self, signer: Option<crate::signing::Signer>) -> Store {
        self.signer = signer.map(std::sync::Arc::new);
        self
    }

    /// Held while a working manifest is read, changed and saved (see `manifest_writes`).
    pub async fn manifest_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.manifest_writes.lock().await
    }

    /// The store, keeping at most `bytes` in its scratch cache ([`Store::cache`]).
    pub fn cache_budget(mut self, bytes: u64) -> Store {
        self.cache_budget = bytes;
        self
    }

    /// A store rooted at the local folder `dir`.
    pub fn local(dir: impl AsRef<Path>) -> Result<Store> {
        let root = Root::local(dir.as_ref())?;
        let scratch = root
            .local_dir()
            .map(|d| d.join("_scratch"))
            .unwrap_or_default();
        Ok(Store::with_scratch(root, scratch))
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

    /// Makes the root readable by `ctx` (an object store is registered by its bucket).
    pub fn register(&self, ctx: &datafusion::prelude::SessionContext) {
        if let Some((url, store)) = self.root.registration() {
            ctx.register_object_store(url, store);
        }
    }

    /// A fresh local staging folder for one attempt of one stage; removed when the attempt
    /// ends, however it ends (a kill is cleaned up by [`Store::clear_stale_staging`]).
    pub fn staging(&self, stage: &str, channel: &str, date: NaiveDate) -> Result<Staging> {
        self.scratch_folder("staging", &format!("{channel}-{date}-{stage}"))
    }

    /// A fresh folder `<scratch>/<kind>/<tag>-<pid>-<nanos>`, removed when dropped (with
    /// `<kind>/` once it is empty).
    pub fn scratch_folder(&self, kind: &str, tag: &str) -> Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = (self.scratch.join(kind)).join(format!("{tag}-{}-{nanos}", std::process::id()));
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
        self.publish_with(staged, area, (channel, date), Publish::default())
            .await
    }

    /// [`Store::publish`], keeping a hard link of every file in the scratch cache for a later
    /// stage of this host (reconcile reading what normalize and collect wrote), see
    /// [`Store::take_cached`].
    pub async fn publish_cached(
        &self,
        staged: &Path,
        area: &str,
        channel: &str,
        date: NaiveDate,
    ) -> Result<Vec<FileSum>> {
        let how = Publish {
            cache: true,
            ..Publish::default()
        };
        self.publish_with(staged, area, (channel, date), how).await
    }

    /// Publishes a fetched bill `bill` (whose SHA-256 the fetch has just computed) and the
    /// fetch's other files into `raw/`'s folder `_v=<the bill's hash>`: its `fetch.json`,
    /// which records when it was fetched, does not make it another version. On an object-store
    /// root the bill uploads in the background ([`Store::settle_uploads`]).
    pub async fn publish_bill(
        &self,
        staged: &Path,
        channel: &str,
        date: NaiveDate,
        bill: &str,
        sha256: &str,
    ) -> Result<Vec<FileSum>> {
        let how = Publish {
            version: Some(&sha256[..sha256.len().min(16)]),
            known: &[(bill, sha256)],
            cache: false,
            background: Some(bill),
        };
        self.publish_with(staged, "raw", (channel, date), how).await
    }

    async fn publish_with(
        &self,
        staged: &Path,
        area: &str,
        (channel, date): (&str, NaiveDate),
        how: Publish<'_>,
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
        for n in &names {
            let p = staged.join(n);
            let sha = match how.known.iter().find(|(name, _)| name == n) {
                Some((_, sha)) => sha.to_string(),
                None => sha256_file(&p)?,
            };
            let size = std::fs::metadata(&p).at(&p)?.len();
            sums.push((n.clone(), sha, size));
        }
        let dir = match how.version {
            Some(v) => format!("{}/_v={v}", self.area(area, channel, date)),
            None => self.version_dir(area, channel, date, sums.iter().map(|(n, s, _)| (n, s))),
        };
        let mut out = Vec::new();
        for (n, sha256, size) in sums {
            let rel = format!("{dir}/{n}");
            let from = staged.join(&n);
            if how.cache {
                self.cache(&from, &sha256);
            }
            if how.background == Some(n.as_str()) && self.root.local_dir().is_none() {
                // Opened now: the staging folder may go before the upload ends.
                let file = tokio::fs::File::open(&from).await.at(&from)?;
                let (root, to) = (self.root.clone(), rel.clone());
                let upload = async move { root.upload_file(file, &from, &to).await };
                self.uploads.spawn(rel.clone(), upload);
            } else {
                self.root.upload(&from, &rel).await?;
            }
            out.push(FileSum {
                path: rel,
                sha256,
                size,
            });
        }
        let _ = std::fs::remove_dir_all(staged);
        Ok(out)
    }

    /// [`Store::publish`] of files whose SHA-256 the caller has just computed while writing
    /// them (`known`: name and hash): they are not read again.
    pub async fn publish_known(
        &self,
        staged: &Path,
        area: &str,
        (channel, date): (&str, NaiveDate),
        known: &[(&str, &str)],
    ) -> Result<Vec<FileSum>> {
        let how = Publish {
            known,
            ..Publish::default()
        };
        self.publish_with(staged, area, (channel, date), how).await
    }

    /// The version folder of `area` for the channel-day that holds files of these names and
    /// SHA-256s: a hash of them in name order, so the same files always land in one folder.
    fn version_dir<'f>(
        &self,
        area: &str,
        channel: &str,
        date: NaiveDate,
        files: impl Iterator<Item = (&'f String, &'f String)>,
    ) -> String {
        let mut named: Vec<_> = files.collect();
        named.sort();
        let mut key = Sha256::new();
        for (n, sha) in named {
            key.update(format!("{n}\0{sha}\n").as_bytes());
        }
        format!(
            "{}/_v={}",
            self.area(area, channel, date),
            hex::encode(&key.finalize()[..8])
        )
    }

    /// Publishes files an engine wrote on the storage root (`files`: each file's name in the
    /// area and where it is, its SHA-256 and size) into `area`'s folder for the channel-day,
    /// as [`Store::publish`] publishes staged files (the same version folder for the same
    /// names and bytes), by a copy in the store: the bytes never pass through this process.
    pub async fn publish_on_root(
        &self,
        files: &[(String, FileSum)],
        area: &str,
        channel: &str,
        date: NaiveDate,
    ) -> Result<Vec<FileSum>> {
        let dir = self.version_dir(
            area,
            channel,
            date,
            files.iter().map(|(n, f)| (n, &f.sha256)),
        );
        let mut files: Vec<&(String, FileSum)> = files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (n, f) in files {
            let rel = format!("{dir}/{n}");
            self.root.copy(&f.path, &rel).await?;
            out.push(FileSum {
                path: rel,
                sha256: f.sha256.clone(),
                size: f.size,
            });
        }
        Ok(out)
    }

    /// Waits for the uploads still running in the background; the first failure.
    pub async fn settle_uploads(&self) -> Result<()> {
        self.uploads.settle().await
    }

    /// Keeps the local file `file` (whose SHA-256 is `sha256`) in the scratch folder's cache,
    /// for a stage on this host that would otherwise download it again from an object-store
    /// root (normalize reading the bill fetch just uploaded). A hard link: no copy. Nothing on
    /// a local root, and nothing that would take the cache past its budget (`scratch_cache_mb`):
    /// that file's stage reads it from the root.
    pub fn cache(&self, file: &Path, sha256: &str) {
        if self.root.local_dir().is_some() {
            return;
        }
        let dir = self.scratch.join("cache");
        let to = dir.join(sha256);
        if to.exists() {
            return;
        }
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(u64::MAX);
        let held = folder_bytes(&dir);
        if held.saturating_add(size) > self.cache_budget {
            tracing::info!(
                file = %file.display(),
                size,
                held,
                budget = self.cache_budget,
                "not kept in the scratch cache: it would go past scratch_cache_mb"
            );
            return;
        }
        if std::fs::create_dir_all(&dir).is_ok() {
            if let Err(e) = std::fs::hard_link(file, &to) {
                tracing::debug!(error = %e, "not cached");
            }
        }
    }

    /// A copy of `rel` from the cache when its SHA-256 and size are those recorded: taken out
    /// of the cache (removed when dropped).
    pub fn cached(&self, sha256: &str, size: u64) -> Option<LocalCopy> {
        let p = self.scratch.join("cache").join(sha256);
        let len = std::fs::metadata(&p).ok()?.len();
        if len != size {
            let _ = std::fs::remove_file(&p);
            return None;
        }
        let dir = self.scratch.join("inputs").join(format!(
            "{}-cached-{}",
            std::process::id(),
            &sha256[..sha256.len().min(16)]
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let to = dir.join("file");
        std::fs::rename(&p, &to).ok()?;
        Some(LocalCopy {
            path: to,
            own: true,
        })
    }

    /// Moves the cached copies of `files` (found by SHA-256 and size) into the local folder
    /// `dir`, each under its own name, and returns `dir`, when every one of them is cached;
    /// else leaves the cache alone and returns `None` (the caller reads them from the root).
    pub fn take_cached(&self, files: &[FileSum], dir: &Path) -> Option<PathBuf> {
        if files.is_empty() || self.root.local_dir().is_some() {
            return None;
        }
        let cache = self.scratch.join("cache");
        let all = files
            .iter()
            .all(|f| std::fs::metadata(cache.join(&f.sha256)).is_ok_and(|m| m.len() == f.size));
        if !all || std::fs::create_dir_all(dir).is_err() {
            return None;
        }
        for f in files {
            let name = f.path.rsplit('/').next().unwrap_or(&f.path);
            if let Err(e) = std::fs::rename(cache.join(&f.sha256), dir.join(name)) {
                tracing::debug!(error = %e, file = %f.path, "not taken from the cache");
                let _ = std::fs::remove_dir_all(dir);
                return None;
            }
        }
        Some(dir.to_path_buf())
    }

    /// Removes cached files older than a day (their stage never came, or ran elsewhere).
    pub fn prune_cache(&self) {
        let Ok(entries) = std::fs::read_dir(self.scratch.join("cache")) else {
            return;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(86_400));
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
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
        // The pointer only: a day from before pointers has no version folders to keep.
        let committed = self.committed_at(channel, date).await?.map(|(c, _)| c);
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

/// The bytes of the files directly in `dir` (none when it does not exist).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
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
        if let Some(parent) = self.0.parent() {
            // Only when empty: other folders of its kind may be in use.
            let _ = std::fs::remove_dir(parent);
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

/// How [`Store::publish_with`] publishes.
#[derive(Default)]
struct Publish<'a> {
    /// The version folder's name (else a hash of the files).
    version: Option<&'a str>,
    /// Files whose SHA-256 the caller knows: (name, hash).
    known: &'a [(&'a str, &'a str)],
    /// Keep a hard link of each file in the scratch cache.
    cache: bool,
    /// The file to upload in the background (on an object-store root).
    background: Option<&'a str>,
}

/// Runs blocking work (a copy, a hash, a parse) on tokio's blocking threads, so the task that
/// awaits it leaves its worker to other futures (collect, run beside fetch and normalize).
/// Its log lines keep the caller's span (the channel, date and stage).
pub async fn off_task<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| Error::Other(format!("a blocking task ended without its result: {e}")))?
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
mod tests;
