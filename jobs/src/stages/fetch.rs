//! fetch: brings the channel's bill for the date into `raw/`, with its SHA-256. Here from a
//! local drop folder; the other fetchers (object stores, HTTPS, channel APIs) are issue #8.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Job, Outcome};
use crate::config::Source;
use crate::error::{Error, IoContext, Result};
use crate::store::{sha256_file, write_atomic};

/// Expands `{yyyymmdd}` and `{date}` in a file-name pattern.
pub fn expand(pattern: &str, date: chrono::NaiveDate) -> String {
    pattern
        .replace("{yyyymmdd}", &date.format("%Y%m%d").to_string())
        .replace("{date}", &date.to_string())
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn find_in_drop_folder(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Config(format!(
                "drop folder {} does not exist",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().at(e.path())?.is_file() && glob_match(pattern, &name) {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Runs the stage.
pub fn run(job: &Job<'_>) -> Result<Outcome> {
    let Source::DropFolder { path, pattern } = &job.channel.source;
    let dir = job
        .config
        .resolve(&format!("channel {} source.path", job.name()), path)
        .map_err(Error::Config)?;
    let wanted = expand(pattern, job.date);
    let found = find_in_drop_folder(&dir, &wanted)?;
    let src = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::NotReady(format!(
                "no bill for {} {} yet: nothing in {} matches {wanted:?}",
                job.name(),
                job.date,
                dir.display()
            )))
        }
        many => {
            return Err(Error::BadInput(format!(
                "{} files in {} match {wanted:?}, expected one: {}",
                many.len(),
                dir.display(),
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let sha = sha256_file(&src)?;
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bill".into());
    let dest = job.store.area("raw", job.name(), job.date);
    let manifest = job.manifest()?;
    let previous = manifest
        .stages
        .get("fetch")
        .and_then(|r| r.detail["sha256"].as_str().map(String::from));
    if previous.as_deref() == Some(sha.as_str()) && dest.join(&name).is_file() {
        let rec = manifest.stages.get("fetch").cloned().unwrap_or_default();
        let mut detail = rec.detail;
        detail["unchanged"] = json!(true);
        return Ok((rec.files, detail));
    }
    let size = std::fs::metadata(&src).at(&src)?.len();
    let staged = job.store.staging("fetch", job.name(), job.date)?;
    std::fs::copy(&src, staged.join(&name)).at(&src)?;
    let meta = json!({
        "file": name,
        "sha256": sha,
        "size": size,
        "source": src.display().to_string(),
        "fetcher": "drop_folder",
    });
    write_atomic(
        &staged.join("fetch.json"),
        serde_json::to_vec_pretty(&meta)?.as_slice(),
    )?;
    let files = job.store.publish(&staged, &dest, true)?;
    let files = files.iter().map(|p| job.store.relative(p)).collect();
    let mut detail = meta;
    if let Some(prev) = previous {
        // A different file for a date fetched before: the channel re-issued its bill.
        detail["reissued_from_sha256"] = json!(prev);
        tracing::warn!("the bill changed since the last fetch: a re-issued bill");
    }
    Ok((files, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_dated_file_only() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let p = expand("*_{yyyymmdd}.csv.zip", d);
        assert!(glob_match(&p, "2088_20261120.csv.zip"));
        assert!(!glob_match(&p, "2088_20261121.csv.zip"));
        assert!(!glob_match(&p, "2088_20261120.csv.zip.part"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXc"));
    }
}
