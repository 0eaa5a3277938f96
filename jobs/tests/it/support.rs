//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Date32Type, Int64Type};
use reckon::parquet_io::read_file;

/// The binary under test.
pub fn reckon() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reckon"));
    c.env("RECKON_LOG", "warn");
    c
}

/// Runs reckon with `args`; returns the output.
pub fn run(args: &[&str]) -> Output {
    reckon().args(args).output().expect("reckon runs")
}

/// Generates a data set into `dir`.
pub fn generate(dir: &Path, from: &str, days: u32, rows: u64, seed: u64) -> PathBuf {
    generate_with(dir, from, days, rows, seed, &[])
}

/// [`generate`] with more flags (`--channel alipay`, …).
pub fn generate_with(
    dir: &Path,
    from: &str,
    days: u32,
    rows: u64,
    seed: u64,
    extra: &[&str],
) -> PathBuf {
    let (days, rows, seed) = (days.to_string(), rows.to_string(), seed.to_string());
    let mut args = vec![
        "generate",
        "--out",
        dir.to_str().expect("utf8"),
        "--from",
        from,
        "--days",
        &days,
        "--rows",
        &rows,
        "--seed",
        &seed,
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("reckon.toml")
}

/// `reckon run` for one date; returns (exit code, last stdout line as JSON, stderr).
pub fn run_day(config: &Path, date: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    run_day_env(config, date, extra, &[])
}

/// [`run_day`] with these environment variables set.
pub fn run_day_env(
    config: &Path,
    date: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "run",
        "--config",
        config.to_str().expect("utf8"),
        "--date",
        date,
    ];
    args.extend_from_slice(extra);
    let out = reckon()
        .envs(env.iter().copied())
        .args(&args)
        .output()
        .expect("reckon runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stdout.lines().last().unwrap_or("").to_string();
    let json = serde_json::from_str(&last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last:?}\nstderr: {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// The output folder of an area.
pub fn area(root: &Path, area: &str, channel: &str, date: &str) -> PathBuf {
    root.join(area)
        .join(format!("channel={channel}"))
        .join(format!("dt={date}"))
}

/// All rows of a Parquet file.
pub fn read(path: &Path) -> Vec<RecordBatch> {
    read_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A string column's value (None for NULL).
pub fn s(b: &RecordBatch, name: &str, i: usize) -> Option<String> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let a = c
        .as_string_opt::<i32>()
        .unwrap_or_else(|| panic!("{name} is {}", c.data_type()));
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

/// A boolean column's value.
pub fn b(b: &RecordBatch, name: &str, i: usize) -> bool {
    b.column_by_name(name).expect(name).as_boolean().value(i)
}

/// An i64 column's value.
pub fn i64v(b: &RecordBatch, name: &str, i: usize) -> Option<i64> {
    let a = b
        .column_by_name(name)
        .expect(name)
        .as_primitive::<Int64Type>();
    (!a.is_null(i)).then(|| a.value(i))
}

/// A date column's value as YYYY-MM-DD.
pub fn date(b: &RecordBatch, name: &str, i: usize) -> String {
    let v = b
        .column_by_name(name)
        .expect(name)
        .as_primitive::<Date32Type>()
        .value(i);
    (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(v.into()))
        .to_string()
}

/// Every file under `dir`, relative, with its bytes, but for paths containing one of `skip`.
pub fn snapshot(dir: &Path, skip: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                if !skip.iter().any(|s| rel.contains(s)) {
                    out.insert(rel, std::fs::read(&p).expect("read"));
                }
            }
        }
    }
    out
}

/// Adds `line` to channel `channel`'s table in the config at `cfg`.
pub fn channel_line(cfg: &Path, channel: &str, line: &str) {
    let text = std::fs::read_to_string(cfg).expect("config");
    let text = text.replacen(
        &format!("name = \"{channel}\"\n"),
        &format!("name = \"{channel}\"\n{line}\n"),
        1,
    );
    std::fs::write(cfg, text).expect("config");
}

/// The file `name` of `area` for a channel-day, where reckon put it: the one the day's
/// working manifest's records name, else the one its committed pointer names. Panics naming what it looked for when neither names it.
pub fn file_of(root: &Path, area: &str, channel: &str, date: &str, name: &str) -> PathBuf {
    found(root, area, channel, date, name).unwrap_or_else(|| {
        panic!(
            "no {area}/…/{name} for {channel} {date} in {}",
            root.display()
        )
    })
}

/// The working manifest of a channel-day under the storage root `root`.
pub fn manifest(root: &Path, channel: &str, date: &str) -> serde_json::Value {
    let path = area(root, "runs", channel, date).join("manifest.json");
    serde_json::from_slice(&std::fs::read(&path).expect("manifest.json")).expect("json")
}

/// [`file_of`], or `None` when no manifest names such a file.
pub fn found(root: &Path, area: &str, channel: &str, date: &str, name: &str) -> Option<PathBuf> {
    let runs = self::area(root, "runs", channel, date);
    let wanted = |p: &str| p.starts_with(&format!("{area}/")) && p.rsplit('/').next() == Some(name);
    let hit = |p: &str| wanted(p).then(|| root.join(p));
    if let Ok(bytes) = std::fs::read(runs.join("manifest.json")) {
        let m: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest.json");
        for (_, r) in m["stages"].as_object().into_iter().flatten() {
            for f in r["files"].as_array().into_iter().flatten() {
                if let Some(p) = hit(f.as_str().unwrap_or_default()) {
                    return Some(p);
                }
            }
        }
    }
    let bytes = std::fs::read(runs.join("committed.json")).ok()?;
    let c: serde_json::Value = serde_json::from_slice(&bytes).expect("committed.json");
    c["files"]
        .as_array()?
        .iter()
        .find_map(|f| hit(f["path"].as_str().unwrap_or_default()))
}

/// The files of a channel-day's areas that neither its working manifest nor its committed
/// pointer names (what a crash left, until the next run cleans it).
pub fn stray_files(root: &Path, channel: &str, date: &str) -> Vec<String> {
    let runs = area(root, "runs", channel, date);
    let mut named = std::collections::BTreeSet::new();
    if let Ok(bytes) = std::fs::read(runs.join("manifest.json")) {
        let m: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest.json");
        for (_, r) in m["stages"].as_object().into_iter().flatten() {
            for f in r["files"].as_array().into_iter().flatten() {
                named.insert(f.as_str().unwrap_or_default().to_string());
            }
        }
        for f in m["stages"]["fetch"]["detail"]["superseded"]
            .as_array()
            .into_iter()
            .flatten()
        {
            named.insert(f.as_str().unwrap_or_default().to_string());
        }
    }
    if let Ok(bytes) = std::fs::read(runs.join("committed.json")) {
        let c: serde_json::Value = serde_json::from_slice(&bytes).expect("committed.json");
        for f in c["files"].as_array().into_iter().flatten() {
            named.insert(f["path"].as_str().unwrap_or_default().to_string());
        }
    }
    let mut out = Vec::new();
    for ar in reckon::store::AREAS.iter().filter(|a| **a != "runs") {
        let dir = area(root, ar, channel, date);
        if !dir.exists() {
            continue;
        }
        for (rel, _) in snapshot(&dir, &[]) {
            let full = format!("{ar}/channel={channel}/dt={date}/{rel}");
            if !named.contains(&full) {
                out.push(full);
            }
        }
    }
    out
}
