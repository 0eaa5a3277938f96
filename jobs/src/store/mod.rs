//! The storage root: where each area lives, how outputs are committed so a reader never sees
//! a half-written file, and the per channel-and-date run manifest.

mod manifest;

pub use manifest::*;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The storage root on the local file system.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `AREA/channel=C/dt=D`.
    pub fn area(&self, area: &str, channel: &str, date: NaiveDate) -> PathBuf {
        self.root
            .join(area)
            .join(format!("channel={channel}"))
            .join(format!("dt={date}"))
    }

    /// A fresh staging directory for one attempt of one stage; nothing outside reckon reads it,
    /// and it is removed when the attempt ends, however it ends (a kill is cleaned up by
    /// [`Store::clear_stale_staging`] at the next run).
    pub fn staging(&self, stage: &str, channel: &str, date: NaiveDate) -> Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = self.root.join("_staging").join(format!(
            "{channel}-{date}-{stage}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).at(&dir)?;
        Ok(Staging(dir))
    }

    /// A work directory for engine spill and shuffle files.
    pub fn work_dir(&self) -> Result<PathBuf> {
        let dir = self
            .root
            .join("_work")
            .join(format!("{}", std::process::id()));
        std::fs::create_dir_all(&dir).at(&dir)?;
        Ok(dir)
    }

    /// Removes the scratch folders when nothing is left in them (a concurrent run may still
    /// be using them, so only empty ones go).
    pub fn tidy(&self) {
        for d in ["_staging", "_work"] {
            let _ = std::fs::remove_dir(self.root.join(d));
        }
    }

    /// Path relative to the root, as written in manifests.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// The manifest path of a channel and date.
    pub fn manifest_path(&self, channel: &str, date: NaiveDate) -> PathBuf {
        self.area("runs", channel, date).join("manifest.json")
    }

    /// The manifest, or a fresh one when the date never ran.
    pub fn manifest(&self, channel: &str, date: NaiveDate) -> Result<Manifest> {
        let path = self.manifest_path(channel, date);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Other(format!("{}: unreadable manifest: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Manifest::new(channel, &date.to_string()))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes the manifest atomically (write aside, then rename).
    pub fn save_manifest(&self, m: &Manifest, date: NaiveDate) -> Result<()> {
        let path = self.manifest_path(&m.channel, date);
        let bytes = serde_json::to_vec_pretty(m)?;
        write_atomic(&path, &bytes)
    }

    /// Moves every file of `staged` into `dest` (each rename is atomic), then, when `exclusive`
    /// (the stage owns the whole folder), removes files in `dest` that the new set does not
    /// have; then removes the staging directory. Returns the committed paths.
    pub fn publish(&self, staged: &Path, dest: &Path, exclusive: bool) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dest).at(dest)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(staged).at(staged)? {
            let entry = entry.at(staged)?;
            if entry.file_type().at(entry.path())?.is_file() {
                names.push(entry.file_name());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for n in &names {
            let to = dest.join(n);
            std::fs::rename(staged.join(n), &to).at(&to)?;
            out.push(to);
        }
        for entry in std::fs::read_dir(dest).at(dest)? {
            let entry = entry.at(dest)?;
            let name = entry.file_name();
            if exclusive && entry.file_type().at(entry.path())?.is_file() && !names.contains(&name)
            {
                std::fs::remove_file(entry.path()).at(entry.path())?;
            }
        }
        std::fs::remove_dir_all(staged).at(staged)?;
        Ok(out)
    }

    /// Removes staging directories left by attempts that were killed, for this channel and date.
    pub fn clear_stale_staging(&self, channel: &str, date: NaiveDate) -> Result<()> {
        let dir = self.root.join("_staging");
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
}

/// A staging directory, removed on drop: what a failed attempt wrote aside never lingers.
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

/// Writes `bytes` to `path` by writing a sibling and renaming it over.
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

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).expect("date")
    }

    #[test]
    fn publish_moves_the_new_set_in_and_an_owned_folder_keeps_only_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::new(tmp.path());
        let dest = store.area("carryover", "alipay", date());
        std::fs::create_dir_all(&dest).expect("dest");
        std::fs::write(dest.join("part-0.parquet"), b"old").expect("old");
        std::fs::write(dest.join("part-9.parquet"), b"stale").expect("stale");
        let staged = store
            .staging("reconcile", "alipay", date())
            .expect("staging");
        std::fs::write(staged.join("part-0.parquet"), b"new").expect("new");
        let out = store.publish(&staged, &dest, true).expect("publish");
        assert_eq!(out, vec![dest.join("part-0.parquet")]);
        assert_eq!(
            std::fs::read(dest.join("part-0.parquet")).expect("read"),
            b"new"
        );
        assert!(
            !dest.join("part-9.parquet").exists(),
            "an owned folder drops the rest"
        );
        assert!(!staged.exists(), "the staging folder is gone");
        assert_eq!(
            store.relative(&out[0]),
            "carryover/channel=alipay/dt=2026-11-20/part-0.parquet"
        );

        // A shared folder (results/) keeps the files the new set does not have.
        let results = store.area("results", "alipay", date());
        std::fs::create_dir_all(&results).expect("results");
        std::fs::write(results.join("summary.json"), b"{}").expect("summary");
        let staged = store
            .staging("reconcile", "alipay", date())
            .expect("staging");
        std::fs::write(staged.join("diffs.parquet"), b"d").expect("diffs");
        store.publish(&staged, &results, false).expect("publish");
        assert!(results.join("summary.json").exists() && results.join("diffs.parquet").exists());
    }

    #[test]
    fn staging_goes_when_dropped_and_a_killed_attempts_at_the_next_run() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::new(tmp.path());
        let path = {
            let s = store.staging("fetch", "wechat", date()).expect("staging");
            std::fs::write(s.join("x"), b"x").expect("write");
            s.to_path_buf()
        };
        assert!(!path.exists(), "a failed attempt leaves nothing");
        // What a SIGKILL leaves: a folder no guard removed.
        let left = tmp.path().join("_staging/wechat-2026-11-20-collect-1-2");
        let other = tmp.path().join("_staging/alipay-2026-11-20-collect-1-2");
        std::fs::create_dir_all(&left).expect("left");
        std::fs::create_dir_all(&other).expect("other");
        store.clear_stale_staging("wechat", date()).expect("clear");
        assert!(!left.exists());
        assert!(other.exists(), "another channel's attempt is not touched");
    }

    #[test]
    fn a_manifest_is_saved_whole_and_read_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::new(tmp.path());
        let fresh = store.manifest("alipay", date()).expect("fresh");
        assert_eq!(fresh.status, crate::records::DayStatus::NeverRun);
        let mut m = fresh;
        m.run_id = Some("abc".into());
        m.status = crate::records::DayStatus::Reconciled;
        store.save_manifest(&m, date()).expect("save");
        let back = store.manifest("alipay", date()).expect("read");
        assert_eq!(back.run_id.as_deref(), Some("abc"));
        assert_eq!(back.status, crate::records::DayStatus::Reconciled);
        let dir = store.manifest_path("alipay", date());
        let names: Vec<String> = std::fs::read_dir(dir.parent().expect("dir"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["manifest.json"], "no temporary file left");
    }
}
