//! Buffers canonical and rejected rows into Arrow batches and streams them to Parquet.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    new_null_array, ArrayRef, AsArray, Date32Array, Decimal128Builder, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Encoding;

use super::rows::{Plan, Row};
use crate::buckets::BucketWriter;
use crate::error::{IoContext, Result};
use crate::parquet_io::{writer_props_tuned, ColumnTuning};
use crate::schema;
use reckon_udfs::MatchOn;

/// Rows buffered in the Arrow builders before they go to the Parquet writer. 8 Ki rows keep
/// the builders' buffers in the cache and the peak lower than 64 Ki (118 MB against 157 MB on
/// the 2M bill) at the same speed; the row groups are the writer's.
const BATCH_ROWS: usize = 8 * 1024;

/// The facts about the file being read, for rows and errors.
pub struct Target<'a> {
    /// Channel name written into every row.
    pub channel: &'a str,
    /// The bill date written into every row; `None`: the local date (in the template's zone)
    /// of the first row's time.
    pub bill_date: Option<NaiveDate>,
    /// The file name written as `source_file`.
    pub source_name: &'a str,
    /// Where canonical rows go: this file, or with `buckets` one file per bucket in its
    /// folder ([`crate::buckets`]).
    pub normalized: &'a Path,
    /// The match key and bucket count to write the canonical rows in; `None`: one file.
    pub buckets: Option<(MatchOn, u32)>,
    /// Where rejected rows go.
    pub rejected: &'a Path,
    /// More rejected rows than this fails the file.
    pub max_rejected: u64,
}

pub(crate) struct RowWriter {
    channel: TextColumn,
    source_file: TextColumn,
    zone: Tz,
    bill_date: Option<i32>,
    normalized: BucketWriter,
    rejected: ArrowWriter<File>,
    txn_type: StringBuilder,
    channel_txn_id: TextColumn,
    merchant_order_id: TextColumn,
    refund_id: TextColumn,
    amount: Decimal128Builder,
    fee: Decimal128Builder,
    received: Decimal128Builder,
    merchant_id: TextColumn,
    status: TextColumn,
    txn_time: TimestampMicrosecondBuilder,
    line: Int64Builder,
    rows: usize,
    rej_line: Int64Builder,
    rej_reason: StringBuilder,
    rej_raw: StringBuilder,
    rej_rows: usize,
    /// The bill date column of a full batch.
    day: Option<ArrayRef>,
}

fn money_builder() -> Decimal128Builder {
    Decimal128Builder::with_capacity(BATCH_ROWS).with_data_type(schema::MONEY)
}

fn times() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC")
}

/// A string builder sized for a batch whose last one held `bytes` bytes (a builder's `finish`
/// gives its buffers away, and regrowing them by doubling costs copies and page faults).
fn strings(bytes: usize) -> StringBuilder {
    StringBuilder::with_capacity(BATCH_ROWS, bytes.max(BATCH_ROWS * 8))
}

fn take_strings(b: &mut StringBuilder) -> ArrayRef {
    let bytes = b.values_slice().len();
    Arc::new(std::mem::replace(b, strings(bytes)).finish())
}

/// A text column of the bill: built row by row, or one the template fixes for every row (a
/// constant, or null), made once for a full batch and sliced.
enum TextColumn {
    Built(StringBuilder),
    Fixed(Option<String>, Option<ArrayRef>),
}

impl Default for TextColumn {
    fn default() -> Self {
        Self::Built(strings(0))
    }
}

impl TextColumn {
    /// The template's value for every row, or `None` to build the column row by row.
    fn fixed(value: Option<Option<&str>>) -> Self {
        match value {
            Some(v) => Self::Fixed(v.map(str::to_string), None),
            None => Self::default(),
        }
    }

    #[inline]
    fn append(&mut self, v: Option<&str>) {
        if let Self::Built(b) = self {
            b.append_option(v);
        }
    }

    /// The column of the batch's `n` rows.
    fn take(&mut self, n: usize) -> ArrayRef {
        match self {
            Self::Built(b) => take_strings(b),
            Self::Fixed(v, full) => repeated(full, n, |len| match v {
                Some(v) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    v.as_str(),
                    len,
                ))),
                None => new_null_array(&DataType::Utf8, len),
            }),
        }
    }
}

/// `n` rows of a column one value fills, sliced from `full`; `make` makes it (at least a
/// batch long) when it is absent or too short.
fn repeated(
    full: &mut Option<ArrayRef>,
    n: usize,
    make: impl FnOnce(usize) -> ArrayRef,
) -> ArrayRef {
    if let Some(a) = full.as_ref().filter(|a| a.len() >= n) {
        return a.slice(0, n);
    }
    let a = make(n.max(BATCH_ROWS));
    *full = Some(a.clone());
    a.slice(0, n)
}

fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

impl RowWriter {
    pub(crate) fn new(target: &Target<'_>, source: &str, zone: Tz) -> Result<Self> {
        // One bucket: one file, whatever the key.
        let (on, buckets) = target.buckets.unwrap_or((MatchOn::MerchantOrderId, 1));
        let open = |p: &Path, s, tuning: ColumnTuning<'_>| -> Result<ArrowWriter<File>> {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).at(dir)?;
            }
            let f = File::create(p).at(p)?;
            Ok(ArrowWriter::try_new(
                f,
                s,
                Some(writer_props_tuned(&tuning)),
            )?)
        };
        Ok(Self {
            channel: TextColumn::fixed(Some(Some(target.channel))),
            source_file: TextColumn::fixed(Some(Some(source))),
            zone,
            bill_date: target.bill_date.map(days),
            normalized: BucketWriter::create(
                target.normalized,
                on,
                buckets,
                schema::BILL.clone(),
                writer_props_tuned(&ColumnTuning {
                    unique: &[
                        "channel_txn_id",
                        "merchant_order_id",
                        "refund_id",
                        "txn_time",
                        "source_line",
                    ],
                    // Random ids cannot prune; channel and source_file are one value per file
                    // (the channel is also the partition), and every page of a bill holds
                    // both transaction types and its few statuses: their statistics cost two
                    // string comparisons per row for nothing.
                    opaque: &[
                        "channel_txn_id",
                        "merchant_order_id",
                        "refund_id",
                        "channel",
                        "source_file",
                        "txn_type",
                        "status",
                    ],
                    encodings: &[
                        // Line numbers and times rise through a bill: deltas are small, and
                        // zstd has far fewer bytes to work through.
                        ("source_line", Encoding::DELTA_BINARY_PACKED),
                        ("txn_time", Encoding::DELTA_BINARY_PACKED),
                        // The bill date is one value: copying it costs less than hashing it
                        // into a dictionary or packing its zero deltas, and zstd makes its
                        // pages a few bytes.
                        ("bill_date", Encoding::PLAIN),
                        // Amounts are random, but small: packed to the bits their deltas need
                        // (about 27 for an amount), smaller than zstd makes 8-byte plain
                        // values. Fees too: a dictionary of them is nearly as large.
                        ("amount", Encoding::DELTA_BINARY_PACKED),
                        ("received", Encoding::DELTA_BINARY_PACKED),
                        ("fee", Encoding::DELTA_BINARY_PACKED),
                        ("channel_txn_id", Encoding::DELTA_BYTE_ARRAY),
                        ("merchant_order_id", Encoding::DELTA_BYTE_ARRAY),
                        ("channel", Encoding::PLAIN),
                        ("source_file", Encoding::PLAIN),
                        // Two or three short values: copying them costs less than hashing
                        // them into a dictionary, and zstd makes up the size (+0.4%).
                        ("txn_type", Encoding::PLAIN),
                        ("status", Encoding::PLAIN),
                    ],
                    // zstd finds nothing in packed random amounts, and spent more
                    // instructions on them than on every other column together.
                    uncompressed: &["amount", "received", "fee"],
                }),
            )?,
            rejected: open(
                target.rejected,
                schema::REJECTED.clone(),
                ColumnTuning {
                    unique: &["source_line", "raw"],
                    opaque: &["raw"],
                    ..ColumnTuning::default()
                },
            )?,
            txn_type: strings(0),
            channel_txn_id: TextColumn::default(),
            merchant_order_id: TextColumn::default(),
            refund_id: TextColumn::default(),
            amount: money_builder(),
            fee: money_builder(),
            received: money_builder(),
            merchant_id: TextColumn::default(),
            status: TextColumn::default(),
            txn_time: times(),
            line: Int64Builder::with_capacity(BATCH_ROWS),
            rows: 0,
            rej_line: Int64Builder::new(),
            rej_reason: StringBuilder::new(),
            rej_raw: StringBuilder::new(),
            rej_rows: 0,
            day: None,
        })
    }

    /// Takes the text columns `plan` fixes for every row from the plan instead of each row
    /// (before the first row).
    pub(crate) fn fix_columns(&mut self, plan: &Plan) {
        self.channel_txn_id = TextColumn::fixed(plan.fixed_text("channel_txn_id"));
        self.merchant_order_id = TextColumn::fixed(plan.fixed_text("merchant_order_id"));
        self.refund_id = TextColumn::fixed(plan.fixed_text("refund_id"));
        self.merchant_id = TextColumn::fixed(plan.fixed_text("merchant_id"));
        self.status = TextColumn::fixed(plan.fixed_text("status"));
    }

    /// The bill date written, once known.
    pub(crate) fn bill_date(&self) -> Option<NaiveDate> {
        self.bill_date.map(|d| {
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
                + chrono::Duration::days(d.into())
        })
    }

    #[inline]
    pub(crate) fn push(&mut self, r: &Row<'_>, line: i64) -> Result<()> {
        if self.bill_date.is_none() {
            let local = DateTime::from_timestamp_micros(r.txn_time)
                .map(|t| t.with_timezone(&self.zone).date_naive());
            self.bill_date = local.map(days);
        }
        self.txn_type.append_value(r.txn_type);
        self.channel_txn_id.append(r.channel_txn_id);
        self.merchant_order_id.append(r.merchant_order_id);
        self.refund_id.append(r.refund_id);
        self.amount.append_value(r.amount);
        self.fee.append_option(r.fee);
        self.received.append_option(r.received);
        self.merchant_id.append(r.merchant_id);
        self.status.append(Some(r.status));
        self.txn_time.append_value(r.txn_time);
        self.line.append_value(line);
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush_rows()?;
        }
        Ok(())
    }

    pub(crate) fn reject(&mut self, line: i64, reason: &str, raw: &str) -> Result<()> {
        self.rej_line.append_value(line);
        self.rej_reason.append_value(reason);
        self.rej_raw.append_value(raw);
        self.rej_rows += 1;
        if self.rej_rows >= BATCH_ROWS {
            self.flush_rejects()?;
        }
        Ok(())
    }

    /// The channel, bill date and source file columns of `n` rows: one value each for the
    /// whole file.
    fn constant_columns(&mut self, n: usize) -> (ArrayRef, ArrayRef, ArrayRef) {
        // A file with no good row at all: its rejected rows take the epoch unless a date was given.
        let d = self.bill_date.unwrap_or(0);
        // The date is known from the first good row on: a column made before holds the epoch.
        if let Some(a) = &self.day {
            if a.as_primitive::<Date32Type>().values().first() != Some(&d) {
                self.day = None;
            }
        }
        let day = repeated(&mut self.day, n, |len| {
            Arc::new(Date32Array::from_value(d, len))
        });
        (self.channel.take(n), day, self.source_file.take(n))
    }

    fn flush_rows(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let (ch, day, src) = self.constant_columns(self.rows);
        let batch = RecordBatch::try_new(
            schema::BILL.clone(),
            vec![
                ch,
                day,
                take_strings(&mut self.txn_type),
                self.channel_txn_id.take(self.rows),
                self.merchant_order_id.take(self.rows),
                self.refund_id.take(self.rows),
                Arc::new(std::mem::replace(&mut self.amount, money_builder()).finish()),
                Arc::new(std::mem::replace(&mut self.fee, money_builder()).finish()),
                Arc::new(std::mem::replace(&mut self.received, money_builder()).finish()),
                self.merchant_id.take(self.rows),
                self.status.take(self.rows),
                Arc::new(std::mem::replace(&mut self.txn_time, times()).finish()),
                src,
                Arc::new(
                    std::mem::replace(&mut self.line, Int64Builder::with_capacity(BATCH_ROWS))
                        .finish(),
                ),
            ],
        )?;
        self.normalized.write(&batch)?;
        self.rows = 0;
        Ok(())
    }

    fn flush_rejects(&mut self) -> Result<()> {
        if self.rej_rows == 0 {
            return Ok(());
        }
        let (ch, day, src) = self.constant_columns(self.rej_rows);
        let batch = RecordBatch::try_new(
            schema::REJECTED.clone(),
            vec![
                ch,
                day,
                src,
                Arc::new(self.rej_line.finish()),
                Arc::new(self.rej_reason.finish()),
                Arc::new(self.rej_raw.finish()),
            ],
        )?;
        self.rejected.write(&batch)?;
        self.rej_rows = 0;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Option<NaiveDate>> {
        self.flush_rows()?;
        self.flush_rejects()?;
        let date = self.bill_date();
        self.normalized.finish()?;
        self.rejected.close()?;
        Ok(date)
    }
}
