//! The bucketed layout of a day's two sides: normalize and collect write their rows in `n`
//! hash buckets of the match key (`reckon_udfs::record_hash`), one file per bucket, and
//! reconcile joins one bucket at a time, so its memory is a bucket's, not the day's.
//!
//! A side of one bucket keeps its one file `part-0.parquet`, as before buckets; a side of `n`
//! buckets has `bucket-00000.parquet` … `bucket-<n-1>.parquet`, and its record says `n`.
//! Counts are powers of two: reconcile may join in fewer buckets than a side wrote (bucket `b`
//! of `m` is the side's files `b`, `b + m`, …) or in more (the side's file `b mod n`, filtered
//! on `reckon_bucket`).

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use reckon_udfs::{bucket_of, record_hash, MatchOn};

use crate::error::{Error, IoContext, Result};
use crate::store::FileSum;

/// The most buckets a side is written in.
pub const MAX_BUCKETS: u32 = 4096;

/// Encoded rows a writer of many buckets holds per bucket before it flushes the largest row
/// group: about 1 MiB a bucket keeps the row groups of tens of thousands of rows, and what is
/// held grows with the bucket count, never with the day.
const BUFFERED_PER_BUCKET: usize = 1 << 20;

/// The bucket count for `rows` at `per_bucket` rows a bucket: a power of two.
pub fn count_for(rows: u64, per_bucket: u64) -> u32 {
    let want = rows.div_ceil(per_bucket.max(1)).max(1);
    want.checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .min(u64::from(MAX_BUCKETS)) as u32
}

/// The file name of bucket `b` of `n`.
pub fn file_name(b: u32, n: u32) -> String {
    if n <= 1 {
        "part-0.parquet".into()
    } else {
        format!("bucket-{b:05}.parquet")
    }
}

/// The bucket a file of a side of `n` buckets holds, by its name.
pub fn of_file(path: &str, n: u32) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    if n <= 1 {
        return (name == "part-0.parquet").then_some(0);
    }
    let b: u32 = name
        .strip_prefix("bucket-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()?;
    (b < n).then_some(b)
}

/// The SHA-256 that stands for a side's committed files of `n` buckets (an input of the run
/// id): the file's own for one file, else the SHA-256 of their SHA-256s in bucket order, one
/// hex digest and a newline each. Files of other names are not the side's and are left out.
pub fn digest(files: &[FileSum], n: u32) -> String {
    use sha2::{Digest, Sha256};
    let mut parts: Vec<(u32, &str)> = (files.iter())
        .filter_map(|f| Some((of_file(&f.path, n)?, f.sha256.as_str())))
        .collect();
    parts.sort_unstable();
    if let [(_, one)] = parts.as_slice() {
        return one.to_string();
    }
    let mut h = Sha256::new();
    for (_, s) in parts {
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The match key parts of a canonical bill, platform or carry-over batch, by column name.
fn key_columns(b: &RecordBatch) -> Result<[Option<&StringArray>; 4]> {
    let mut out = [None; 4];
    for (slot, name) in out.iter_mut().zip([
        "txn_type",
        "merchant_order_id",
        "refund_id",
        "channel_txn_id",
    ]) {
        let c = b
            .column_by_name(name)
            .ok_or_else(|| Error::Other(format!("bucketing: no column {name}")))?;
        *slot = Some(c.as_string_opt::<i32>().ok_or_else(|| {
            Error::Other(format!("bucketing: column {name} is {}", c.data_type()))
        })?);
    }
    Ok(out)
}

/// The bucket of every row of `b` among `n`.
pub fn of_rows(b: &RecordBatch, on: MatchOn, n: u32) -> Result<Vec<u32>> {
    let cols = key_columns(b)?;
    let get = |i: usize, row: usize| {
        cols[i]
            .and_then(|a| (!datafusion::arrow::array::Array::is_null(a, row)).then(|| a.value(row)))
    };
    Ok((0..b.num_rows())
        .map(|row| {
            let h = record_hash(on, get(0, row), get(1, row), get(2, row), get(3, row));
            bucket_of(h, n)
        })
        .collect())
}

/// `b`'s rows of each bucket among `n`, in their order (empty buckets left out).
pub fn split(b: &RecordBatch, on: MatchOn, n: u32) -> Result<Vec<(u32, RecordBatch)>> {
    if n <= 1 {
        return Ok(vec![(0, b.clone())]);
    }
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    for (row, bucket) in of_rows(b, on, n)?.into_iter().enumerate() {
        rows[bucket as usize].push(row as u32);
    }
    rows.into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, r)| Ok((i as u32, take_record_batch(b, &UInt32Array::from(r))?)))
        .collect()
}

/// Writes a side in `n` buckets of its match key: one Parquet file per bucket in one folder,
/// every file written even when its bucket is empty.
pub struct BucketWriter {
    on: MatchOn,
    writers: Vec<ArrowWriter<File>>,
    paths: Vec<PathBuf>,
}

impl BucketWriter {
    /// The file `path` for one bucket; for `n` buckets, their files in `path`'s folder.
    pub fn create(
        path: &Path,
        on: MatchOn,
        n: u32,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).at(dir)?;
        let mut writers = Vec::new();
        let mut paths = Vec::new();
        for b in 0..n.max(1) {
            let p = if n <= 1 {
                path.to_path_buf()
            } else {
                dir.join(file_name(b, n))
            };
            let f = File::create(&p).at(&p)?;
            writers.push(ArrowWriter::try_new(
                f,
                schema.clone(),
                Some(props.clone()),
            )?);
            paths.push(p);
        }
        Ok(Self { on, writers, paths })
    }

    /// The bucket count.
    pub fn buckets(&self) -> u32 {
        self.writers.len() as u32
    }

    /// Writes `batch`'s rows into their buckets.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writers.len() == 1 {
            self.writers[0].write(batch)?;
            return Ok(());
        }
        for (b, rows) in split(batch, self.on, self.buckets())? {
            self.writers[b as usize].write(&rows)?;
        }
        // Many open row groups: flush the largest until what is held fits again.
        let mut held: usize = self.writers.iter().map(|w| w.in_progress_size()).sum();
        while held > BUFFERED_PER_BUCKET * self.writers.len() {
            let Some(w) = self.writers.iter_mut().max_by_key(|w| w.in_progress_size()) else {
                break;
            };
            held -= w.in_progress_size();
            w.flush()?;
        }
        Ok(())
    }

    /// Closes every file; returns their paths in bucket order.
    pub fn finish(self) -> Result<Vec<PathBuf>> {
        for w in self.writers {
            w.close()?;
        }
        Ok(self.paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_powers_of_two_and_names_read_back() {
        assert_eq!(count_for(0, 1000), 1);
        assert_eq!(count_for(1000, 1000), 1);
        assert_eq!(count_for(1001, 1000), 2);
        assert_eq!(count_for(10_000_000, 2_000_000), 8);
        assert_eq!(count_for(u64::MAX, 1), MAX_BUCKETS);
        assert_eq!(of_file("normalized/x/part-0.parquet", 1), Some(0));
        assert_eq!(of_file(&format!("a/{}", file_name(7, 16)), 16), Some(7));
        assert_eq!(of_file(&format!("a/{}", file_name(7, 16)), 4), None);
        assert_eq!(of_file("a/part-0.parquet", 16), None);
    }
}
