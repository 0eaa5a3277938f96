//! A channel-day's bill rows in bill order, in bounded memory.
//!
//! A bill is sorted by (time, merchant order number), ties in the order the rows were made.
//! A small day is sorted in memory. A large one is cut into time ranges of about
//! [`CHUNK`] rows: rows are spilled to one Arrow IPC file per range as they are made, then each
//! range is read back, sorted and handed out in turn. The ranges are in time order, so the
//! result is the same order as sorting the whole day.

use std::fs::File;
use std::io::{BufReader, BufWriter};

use datafusion::arrow::array::{
    Array, AsArray, BooleanBuilder, Date32Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::datatypes::{Date32Type, Int64Type};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::arrow::ipc::CompressionType;

use super::*;

/// Rows held in memory at once (about 300 MiB of bill rows).
pub(crate) const CHUNK: usize = 1 << 20;
const DAY_SECS: i64 = 86_400;
/// The most labels a bill row carries (today's, and the next day's for a cross-day row).
const LABELS: usize = 2;

/// Collects one channel-day's bill rows and gives them back in bill order.
pub(crate) struct BillSorter {
    midnight: NaiveDateTime,
    /// Rows held before they are spilled.
    chunk: usize,
    dir: PathBuf,
    rows: Vec<BillRow>,
    /// Rows pushed.
    pushed: u64,
    /// One spill file per time range; empty when the day is sorted in memory.
    ranges: Vec<Option<(PathBuf, FileWriter<BufWriter<File>>)>>,
}

impl BillSorter {
    /// A sorter for `day`'s bill of about `expected` rows; spill files go under `dir`.
    pub(crate) fn new(day: NaiveDate, expected: u64, dir: &Path) -> Self {
        Self::with_chunk(day, expected, dir, CHUNK)
    }

    fn with_chunk(day: NaiveDate, expected: u64, dir: &Path, chunk: usize) -> Self {
        let ranges = expected.div_ceil(chunk as u64).max(1);
        let ranges = if ranges == 1 { 0 } else { ranges as usize };
        Self {
            midnight: day.and_hms_opt(0, 0, 0).unwrap_or_default(),
            chunk,
            dir: dir.to_path_buf(),
            rows: Vec::new(),
            pushed: 0,
            ranges: (0..ranges).map(|_| None).collect(),
        }
    }

    pub(crate) fn push(&mut self, row: BillRow) -> Result<()> {
        self.rows.push(row);
        self.pushed += 1;
        if !self.ranges.is_empty() && self.rows.len() >= self.chunk {
            self.spill()?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    pub(crate) fn len(&self) -> u64 {
        self.pushed
    }

    /// The time range a row falls in; rows outside the day go to the first or the last.
    fn range_of(&self, row: &BillRow) -> usize {
        let n = self.ranges.len() as i64;
        let secs = (row.time - self.midnight)
            .num_seconds()
            .clamp(0, DAY_SECS - 1);
        (secs * n / DAY_SECS) as usize
    }

    /// Appends the rows held to their ranges' spill files, keeping their order.
    fn spill(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let mut by_range: Vec<Vec<BillRow>> = (0..self.ranges.len()).map(|_| Vec::new()).collect();
        for r in rows {
            let i = self.range_of(&r);
            by_range[i].push(r);
        }
        for (i, rows) in by_range.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let batch = to_batch(&rows)?;
            if self.ranges[i].is_none() {
                std::fs::create_dir_all(&self.dir).at(&self.dir)?;
                let path = self.dir.join(format!("range-{i:05}.arrow"));
                let opts = IpcWriteOptions::default()
                    .try_with_compression(Some(CompressionType::LZ4_FRAME))?;
                let f = BufWriter::new(File::create(&path).at(&path)?);
                let w = FileWriter::try_new_with_options(f, &spill_schema(), opts)?;
                self.ranges[i] = Some((path, w));
            }
            if let Some((_, w)) = &mut self.ranges[i] {
                w.write(&batch)?;
            }
        }
        Ok(())
    }

    /// Hands every row to `each` in bill order, and removes the spill files.
    pub(crate) fn finish(mut self, mut each: impl FnMut(&BillRow) -> Result<()>) -> Result<()> {
        let by_time =
            |a: &BillRow, b: &BillRow| a.time.cmp(&b.time).then(a.order_no.cmp(&b.order_no));
        if self.ranges.is_empty() {
            self.rows.sort_by(by_time);
            return self.rows.iter().try_for_each(each);
        }
        self.spill()?;
        for range in std::mem::take(&mut self.ranges).into_iter().flatten() {
            let (path, mut w) = range;
            w.finish()?;
            drop(w);
            let mut rows = Vec::new();
            let reader = FileReader::try_new(BufReader::new(File::open(&path).at(&path)?), None)?;
            for batch in reader {
                from_batch(&batch?, &mut rows)?;
            }
            std::fs::remove_file(&path).at(&path)?;
            rows.sort_by(by_time);
            rows.iter().try_for_each(&mut each)?;
        }
        Ok(())
    }
}

fn spill_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let b = |n: &str| Field::new(n, DataType::Boolean, false);
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let mut fields = vec![
        b("refund"),
        s("channel_txn_id"),
        s("channel_refund_id"),
        s("order_no"),
        s("refund_no"),
        i("amount"),
        i("fee"),
        i("time"),
        s("refund_status"),
        b("corrupt_time"),
        b("rejected"),
    ];
    for k in 0..LABELS {
        fields.push(Field::new(format!("label{k}_date"), DataType::Date32, true));
        fields.push(Field::new(
            format!("label{k}_category"),
            DataType::Utf8,
            true,
        ));
    }
    Arc::new(Schema::new(fields))
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

fn cents(v: i128) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Other(format!("amount {v} out of range")))
}

fn to_batch(rows: &[BillRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut flags: Vec<BooleanBuilder> = (0..3).map(|_| BooleanBuilder::with_capacity(n)).collect();
    let mut text: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    let mut nums: Vec<Int64Builder> = (0..3).map(|_| Int64Builder::with_capacity(n)).collect();
    let mut dates: Vec<Date32Builder> = (0..LABELS).map(|_| Date32Builder::new()).collect();
    let mut cats: Vec<StringBuilder> = (0..LABELS).map(|_| StringBuilder::new()).collect();
    for r in rows {
        if r.labels.len() > LABELS {
            return Err(Error::Other(format!(
                "a bill row with {} labels (at most {LABELS})",
                r.labels.len()
            )));
        }
        flags[0].append_value(r.refund);
        flags[1].append_value(r.corrupt_time);
        flags[2].append_value(r.rejected);
        text[0].append_value(&r.channel_txn_id);
        text[1].append_value(&r.channel_refund_id);
        text[2].append_value(&r.order_no);
        text[3].append_value(&r.refund_no);
        text[4].append_value(r.refund_status);
        nums[0].append_value(cents(r.amount)?);
        nums[1].append_value(cents(r.fee)?);
        nums[2].append_value(r.time.and_utc().timestamp());
        for k in 0..LABELS {
            match r.labels.get(k) {
                Some((d, c)) => {
                    dates[k].append_value((*d - epoch()).num_days() as i32);
                    cats[k].append_value(c.as_str());
                }
                None => {
                    dates[k].append_null();
                    cats[k].append_null();
                }
            }
        }
    }
    let mut cols: Vec<datafusion::arrow::array::ArrayRef> = vec![Arc::new(flags[0].finish())];
    for t in text.iter_mut().take(4) {
        cols.push(Arc::new(t.finish()));
    }
    for v in &mut nums {
        cols.push(Arc::new(v.finish()));
    }
    cols.push(Arc::new(text[4].finish()));
    cols.push(Arc::new(flags[1].finish()));
    cols.push(Arc::new(flags[2].finish()));
    for k in 0..LABELS {
        cols.push(Arc::new(dates[k].finish()));
        cols.push(Arc::new(cats[k].finish()));
    }
    Ok(RecordBatch::try_new(spill_schema(), cols)?)
}

/// The refund states the generator writes, as the `&'static str` a [`BillRow`] holds.
fn refund_status(s: &str) -> Result<&'static str> {
    match s {
        "SUCCESS" => Ok("SUCCESS"),
        "PROCESSING" => Ok("PROCESSING"),
        other => Err(Error::Other(format!("spilled refund status {other:?}"))),
    }
}

fn from_batch(batch: &RecordBatch, out: &mut Vec<BillRow>) -> Result<()> {
    let c = |i: usize| batch.column(i);
    let flag = |i: usize| c(i).as_boolean();
    let text = |i: usize| c(i).as_string::<i32>();
    let num = |i: usize| c(i).as_primitive::<Int64Type>();
    let date = |i: usize| c(i).as_primitive::<Date32Type>();
    for r in 0..batch.num_rows() {
        let mut labels = Vec::new();
        for k in 0..LABELS {
            let (d, cat) = (date(11 + 2 * k), text(12 + 2 * k));
            if d.is_valid(r) {
                let category: Category = cat
                    .value(r)
                    .parse()
                    .map_err(|_| Error::Other(format!("spilled category {:?}", cat.value(r))))?;
                labels.push((epoch() + Duration::days(i64::from(d.value(r))), category));
            }
        }
        let time = chrono::DateTime::from_timestamp(num(7).value(r), 0)
            .ok_or_else(|| Error::Other("spilled time out of range".into()))?
            .naive_utc();
        out.push(BillRow {
            refund: flag(0).value(r),
            channel_txn_id: text(1).value(r).to_string(),
            channel_refund_id: text(2).value(r).to_string(),
            order_no: text(3).value(r).to_string(),
            refund_no: text(4).value(r).to_string(),
            amount: i128::from(num(5).value(r)),
            fee: i128::from(num(6).value(r)),
            time,
            refund_status: refund_status(text(8).value(r))?,
            corrupt_time: flag(9).value(r),
            rejected: flag(10).value(r),
            labels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_time_ranges_give_the_order_of_one_stable_sort() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default();
        let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("reckon-gen-spill-{}", std::process::id()));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let cats = [
            Category::Matched,
            Category::CrossDayPending,
            Category::DuplicateInChannel,
        ];
        let rows: Vec<BillRow> = (0..5_000)
            .map(|i| BillRow {
                refund: i % 5 == 0,
                channel_txn_id: format!("4200{i:012}"),
                channel_refund_id: if i % 5 == 0 {
                    format!("5030{i}")
                } else {
                    String::new()
                },
                // Few order numbers and a coarse clock: many ties, kept in push order.
                order_no: format!("W{}", rng.gen_range(0..40)),
                refund_no: format!("R{i}"),
                amount: rng.gen_range(1..2_000_000),
                fee: rng.gen_range(0..12_000),
                // Some rows before midnight and after the day, as the cut moves them.
                time: midnight + Duration::seconds(rng.gen_range(-30..86_430) / 600 * 600),
                refund_status: if i % 7 == 0 { "PROCESSING" } else { "SUCCESS" },
                corrupt_time: i == 17,
                rejected: i == 17,
                labels: (0..i % 3)
                    .map(|k| (day + Duration::days(k as i64), cats[(i + k) % 3]))
                    .collect(),
            })
            .collect();
        let mut expected = rows.clone();
        expected.sort_by(|a, b| a.time.cmp(&b.time).then(a.order_no.cmp(&b.order_no)));

        let mut sorter = BillSorter::with_chunk(day, rows.len() as u64, &dir, 300);
        assert_eq!(sorter.ranges.len(), 17);
        for r in rows {
            sorter.push(r).expect("push");
        }
        let mut got = Vec::new();
        sorter
            .finish(|r| {
                got.push(format!("{r:?}"));
                Ok(())
            })
            .expect("finish");
        let expected: Vec<String> = expected.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(got, expected);
        let left = std::fs::read_dir(&dir)
            .map(|d| d.count())
            .unwrap_or_default();
        assert_eq!(left, 0, "spill files are removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
