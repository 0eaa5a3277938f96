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

/// Encoded rows a writer of many buckets holds per bucket before it flushes the bucket's row
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
///
/// The caller splits batches into buckets; the Parquet encoding runs on threads of their own
/// (one per core at most, each owning a fixed set of buckets), so a stage's producer (a sort's
/// merge, a bill's parser) does not wait for zstd and the dictionaries. A bucket's rows reach
/// its file in the order they were written, and each bucket flushes its row group by what it
/// alone holds, so the bytes do not depend on the threads' timing.
pub struct BucketWriter {
    on: MatchOn,
    n: u32,
    lanes: Vec<Lane>,
    paths: Vec<PathBuf>,
}

/// A thread that encodes the buckets `b` with `b % lanes == its index`.
struct Lane {
    to: Option<std::sync::mpsc::SyncSender<(u32, RecordBatch)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

/// Batches a lane may have waiting: enough to keep it busy while the producer makes the next.
const LANE_QUEUE: usize = 8;

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
        let n = n.max(1);
        let lanes_n = std::thread::available_parallelism()
            .map_or(1, |c| c.get())
            .min(n as usize);
        let mut owned: Vec<Vec<(u32, ArrowWriter<File>)>> =
            (0..lanes_n).map(|_| Vec::new()).collect();
        let mut paths = Vec::new();
        for b in 0..n {
            let p = if n <= 1 {
                path.to_path_buf()
            } else {
                dir.join(file_name(b, n))
            };
            let f = File::create(&p).at(&p)?;
            let w = ArrowWriter::try_new(f, schema.clone(), Some(props.clone()))?;
            owned[b as usize % lanes_n].push((b, w));
            paths.push(p);
        }
        let mut lanes = Vec::new();
        for (i, writers) in owned.into_iter().enumerate() {
            let (to, from) = std::sync::mpsc::sync_channel(LANE_QUEUE);
            let thread = std::thread::Builder::new()
                .name(format!("reckon-bucket-writer-{i}"))
                .spawn(move || encode(writers, lanes_n, n > 1, from))
                .map_err(|e| Error::Other(format!("starting a bucket writer: {e}")))?;
            lanes.push(Lane {
                to: Some(to),
                thread: Some(thread),
            });
        }
        Ok(Self {
            on,
            n,
            lanes,
            paths,
        })
    }

    /// The bucket count.
    pub fn buckets(&self) -> u32 {
        self.n
    }

    /// Writes `batch`'s rows into their buckets.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        for (b, rows) in split(batch, self.on, self.n)? {
            let i = b as usize % self.lanes.len();
            let sent = match &self.lanes[i].to {
                Some(to) => to.send((b, rows)).is_ok(),
                None => false,
            };
            if !sent {
                // The lane stopped on an error: that error, not a closed channel.
                return Err(self.lanes[i]
                    .stop()
                    .err()
                    .unwrap_or_else(|| Error::Other("a bucket writer stopped early".into())));
            }
        }
        Ok(())
    }

    /// Closes every file; returns their paths in bucket order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        for lane in &mut self.lanes {
            lane.to = None;
        }
        for lane in &mut self.lanes {
            lane.stop()?;
        }
        Ok(std::mem::take(&mut self.paths))
    }
}

impl Lane {
    /// Closes the lane's queue and waits for its thread: what it ended with.
    fn stop(&mut self) -> Result<()> {
        self.to = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::Other("a bucket writer panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for BucketWriter {
    /// A writer dropped on an error path still ends its threads (the files are left to the
    /// staging folder's cleanup).
    fn drop(&mut self) {
        for lane in &mut self.lanes {
            let _ = lane.stop();
        }
    }
}

/// A lane's loop: encodes what arrives, flushing a bucket's row group once it holds
/// [`BUFFERED_PER_BUCKET`] (or the writer's own row limit); closes the files at the end.
/// A lane holds buckets `i`, `i + lanes`, `i + 2 * lanes`, …: bucket `b` is its `b / lanes`th.
/// One bucket alone flushes only by the writer's row limit, as one file always has.
fn encode(
    mut writers: Vec<(u32, ArrowWriter<File>)>,
    lanes: usize,
    many: bool,
    from: std::sync::mpsc::Receiver<(u32, RecordBatch)>,
) -> Result<()> {
    while let Ok((b, rows)) = from.recv() {
        let Some((_, w)) = writers
            .get_mut(b as usize / lanes)
            .filter(|(own, _)| *own == b)
        else {
            return Err(Error::Other(format!("bucket {b} sent to the wrong writer")));
        };
        w.write(&rows)?;
        if many && w.in_progress_size() > BUFFERED_PER_BUCKET {
            w.flush()?;
        }
    }
    for (_, w) in writers {
        w.close()?;
    }
    Ok(())
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

    /// A day's side of `rows` records in batches of 1,000, written in `n` buckets to `dir`:
    /// each file's bytes.
    fn write_side(dir: &Path, n: u32, rows: usize) -> Vec<Vec<u8>> {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("txn_type", DataType::Utf8, true),
            Field::new("merchant_order_id", DataType::Utf8, true),
            Field::new("refund_id", DataType::Utf8, true),
            Field::new("channel_txn_id", DataType::Utf8, true),
            Field::new("row", DataType::Int64, false),
        ]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(4_000))
            .build();
        let mut w = BucketWriter::create(
            &dir.join("part-0.parquet"),
            MatchOn::MerchantOrderId,
            n,
            schema.clone(),
            props,
        )
        .expect("create");
        for start in (0..rows).step_by(1_000) {
            let ids: Vec<usize> = (start..(start + 1_000).min(rows)).collect();
            let text = |f: &dyn Fn(usize) -> Option<String>| {
                Arc::new(StringArray::from(
                    ids.iter().map(|&i| f(i)).collect::<Vec<_>>(),
                ))
            };
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    text(&|_| Some("PAY".into())),
                    text(&|i| Some(format!("M{i:08}"))),
                    text(&|_| None),
                    text(&|i| (i % 7 != 0).then(|| format!("T{i}"))),
                    Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64))),
                ],
            )
            .expect("batch");
            w.write(&batch).expect("write");
        }
        let paths = w.finish().expect("finish");
        assert_eq!(paths.len(), n as usize);
        paths
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect()
    }

    #[test]
    fn buckets_hold_their_rows_in_order_and_the_same_bytes_every_time() {
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let tmp = tempfile::tempdir().expect("tmp");
        for n in [1u32, 2, 8] {
            let first = write_side(&tmp.path().join(format!("a{n}")), n, 25_500);
            let again = write_side(&tmp.path().join(format!("b{n}")), n, 25_500);
            assert_eq!(first, again, "{n} buckets: the same bytes");
            let mut seen = 0;
            for (b, bytes) in first.into_iter().enumerate() {
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                    .expect("parquet")
                    .build()
                    .expect("reader");
                let mut last = -1;
                for batch in reader {
                    let batch = batch.expect("batch");
                    let buckets = of_rows(&batch, MatchOn::MerchantOrderId, n).expect("buckets");
                    assert!(buckets.iter().all(|&x| x == b as u32), "rows of bucket {b}");
                    let rows = batch
                        .column(4)
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                    for r in rows.values() {
                        assert!(*r > last, "bucket {b} keeps the written order");
                        last = *r;
                        seen += 1;
                    }
                }
            }
            assert_eq!(seen, 25_500, "{n} buckets: every row once");
        }
    }

    #[test]
    fn an_encoding_thread_that_fails_says_why() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let tmp = tempfile::tempdir().expect("tmp");
        let keys = [
            "txn_type",
            "merchant_order_id",
            "refund_id",
            "channel_txn_id",
        ];
        let schema = |last: DataType| {
            let mut fields: Vec<Field> = (keys.iter())
                .map(|k| Field::new(*k, DataType::Utf8, true))
                .collect();
            fields.push(Field::new("amount", last, true));
            Arc::new(Schema::new(fields))
        };
        let mut w = BucketWriter::create(
            &tmp.path().join("part-0.parquet"),
            MatchOn::MerchantOrderId,
            2,
            schema(DataType::Int64),
            WriterProperties::default(),
        )
        .expect("create");
        // A text amount where the files were opened with a number: the lane's writer refuses.
        let col = || Arc::new(StringArray::from(vec![Some("PAY"), Some("x")])) as _;
        let batch = RecordBatch::try_new(schema(DataType::Utf8), (0..5).map(|_| col()).collect())
            .expect("batch");
        let failed = (0..64).map(|_| w.write(&batch)).find(|r| r.is_err());
        let err = match failed {
            Some(Err(e)) => e,
            _ => w.finish().expect_err("the lane's error at the end"),
        };
        assert!(err.to_string().contains("Incompatible type"), "{err}");
    }
}
