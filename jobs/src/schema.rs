//! The canonical schemas every stage agrees on. `sql/README.md` describes each column.

use std::sync::{Arc, LazyLock};

use chrono::NaiveDate;

use datafusion::arrow::array::{new_null_array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// Money: exact, two decimals.
pub const MONEY: DataType = DataType::Decimal128(18, 2);

/// A sum of money over many rows: exact, two decimals, room for any day.
pub const MONEY_SUM: DataType = DataType::Decimal128(38, 2);

/// An instant, always UTC, microseconds.
pub fn utc_ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A normalized channel bill row (`normalized/`).
pub static BILL: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("channel", DataType::Utf8, false),
        Field::new("bill_date", DataType::Date32, false),
        Field::new("txn_type", DataType::Utf8, false),
        Field::new("channel_txn_id", DataType::Utf8, true),
        Field::new("merchant_order_id", DataType::Utf8, true),
        Field::new("refund_id", DataType::Utf8, true),
        Field::new("amount", MONEY, false),
        Field::new("fee", MONEY, true),
        Field::new("received", MONEY, true),
        Field::new("merchant_id", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("txn_time", utc_ts(), false),
        Field::new("source_file", DataType::Utf8, false),
        Field::new("source_line", DataType::Int64, false),
    ]))
});

/// A bill row that failed parsing (`rejected/`).
pub static REJECTED: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("channel", DataType::Utf8, false),
        Field::new("bill_date", DataType::Date32, false),
        Field::new("source_file", DataType::Utf8, false),
        Field::new("source_line", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]))
});

/// A platform record of the day (`platform/`), produced by `sql/platform.sql`.
pub static PLATFORM: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("channel", DataType::Utf8, true),
        Field::new("txn_type", DataType::Utf8, true),
        Field::new("platform_order_id", DataType::Utf8, true),
        Field::new("merchant_order_id", DataType::Utf8, true),
        Field::new("refund_id", DataType::Utf8, true),
        Field::new("channel_txn_id", DataType::Utf8, true),
        Field::new("amount", MONEY, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("txn_time", utc_ts(), true),
        Field::new("refunded_amount", MONEY, true),
        Field::new("merchant_id", DataType::Utf8, true),
        Field::new("snapshot_row", DataType::Int64, true),
    ]))
});

/// Columns of the canonical platform schema a `platform.sql` may leave out (NULL then): SQL
/// written before they existed keeps working.
pub const PLATFORM_OPTIONAL: &[&str] = &["merchant_id"];

/// A one-sided record carried to the next day (`carryover/`).
pub static CARRY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("side", DataType::Utf8, false),
        Field::new("carried_from", DataType::Date32, false),
        Field::new("grace_until", DataType::Date32, false),
        Field::new("txn_type", DataType::Utf8, true),
        Field::new("channel_txn_id", DataType::Utf8, true),
        Field::new("merchant_order_id", DataType::Utf8, true),
        Field::new("refund_id", DataType::Utf8, true),
        Field::new("platform_order_id", DataType::Utf8, true),
        Field::new("amount", MONEY, true),
        Field::new("fee", MONEY, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("txn_time", utc_ts(), true),
        Field::new("source_file", DataType::Utf8, true),
        Field::new("source_line", DataType::Int64, true),
        Field::new("merchant_id", DataType::Utf8, true),
    ]))
});

/// Statistics of a reconciled channel-day (`stats/`): one row per category and grain; the
/// grain's column (`hour`, `merchant_id`) comes fourth, after `category`.
fn stats(grain: Field) -> SchemaRef {
    let count = |n: &str| Field::new(n, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        Field::new("channel", DataType::Utf8, false),
        Field::new("bill_date", DataType::Date32, false),
        Field::new("category", DataType::Utf8, false),
        grain,
        count("rows"),
        count("channel_records"),
        count("platform_records"),
        count("carried_records"),
        Field::new("channel_amount", MONEY_SUM, false),
        Field::new("platform_amount", MONEY_SUM, false),
        count("refund_explained"),
    ]))
}

/// `stats/…/by_hour.parquet`: per category and hour of the day (0–23) in the channel's zone.
pub static BY_HOUR: LazyLock<SchemaRef> =
    LazyLock::new(|| stats(Field::new("hour", DataType::Int32, true)));

/// `stats/…/by_merchant.parquet`: per category and merchant (NULL when neither side names one).
pub static BY_MERCHANT: LazyLock<SchemaRef> =
    LazyLock::new(|| stats(Field::new("merchant_id", DataType::Utf8, true)));

/// `results/…/diffs.parquet`: every column the contract promises, in this order, whatever
/// `reconcile.sql` returns and whether the day has differences or none; columns an analyst's
/// SQL adds follow them (see [`conform`]).
pub static DIFFS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let m = |n: &str| Field::new(n, MONEY, true);
    let t = |n: &str| Field::new(n, utc_ts(), true);
    let b = |n: &str| Field::new(n, DataType::Boolean, true);
    let d = |n: &str| Field::new(n, DataType::Date32, true);
    Arc::new(Schema::new(vec![
        s("diff_id"),
        s("channel"),
        d("bill_date"),
        s("category"),
        s("reason"),
        s("match_key"),
        s("txn_type"),
        s("platform_order_id"),
        s("channel_txn_id"),
        s("merchant_order_id"),
        s("refund_id"),
        s("merchant_id"),
        m("platform_amount"),
        m("channel_amount"),
        m("amount_delta"),
        m("channel_fee"),
        s("platform_status"),
        s("channel_status"),
        t("platform_time"),
        t("channel_time"),
        s("source_file"),
        Field::new("source_line", DataType::Int64, true),
        b("in_channel"),
        b("in_platform"),
        b("channel_carried"),
        b("platform_carried"),
        d("carried_from"),
        d("grace_until"),
        b("refund_explained"),
        d("first_seen"),
        s("state"),
    ]))
});

/// Columns of [`DIFFS`] a `reconcile.sql` may leave out (NULL then): SQL written before they
/// existed keeps working.
pub const DIFFS_OPTIONAL: &[&str] = &["merchant_id", "refund_explained"];

/// `results/…/ledger.parquet`: the day's open differences and those resolved on the day.
pub static LEDGER: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let d = |n: &str| Field::new(n, DataType::Date32, true);
    Arc::new(Schema::new(vec![
        Field::new("ageing_key", DataType::Utf8, false),
        s("diff_id"),
        Field::new("category", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("first_seen", DataType::Date32, false),
        Field::new("last_seen", DataType::Date32, false),
        d("resolved_on"),
        s("resolved_by"),
        s("match_key"),
        s("txn_type"),
        Field::new("channel_amount", MONEY, true),
        Field::new("platform_amount", MONEY, true),
        s("reason"),
        // The review desk's decision on it: the action, who took it and when, and `changed`
        // when the difference is no longer the one decided (the decision waits for review).
        s("decision"),
        s("decided_by"),
        s("decided_at"),
        s("decision_review"),
    ]))
});

/// The decisions in force on a channel's differences when a day was reconciled (the review
/// desk's, `inputs/…/decisions.parquet`), by ageing key, with the difference as decided.
pub static DECISIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("ageing_key"),
        Field::new("match_key", DataType::Utf8, true),
        s("action"),
        s("decided_by"),
        s("decided_at"),
        s("category"),
        Field::new("channel_amount", MONEY, true),
        Field::new("platform_amount", MONEY, true),
    ]))
});

/// What [`conform`] does with the columns a query adds to a declared schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// Written after the declared ones, in the query's order (an analyst's added columns).
    Keep,
    /// Left out: the output is exactly the declared schema.
    Drop,
}

/// `batch` in the shape of `declared`: each declared column taken by name and cast to its
/// declared type (a column in `optional` may be absent: NULL), then, with [`Extra::Keep`],
/// every other column of `batch` in its own order. The empty and the full day go through it
/// alike, so their files have one schema. `origin` names the query in errors.
pub fn conform(
    batch: &RecordBatch,
    declared: &SchemaRef,
    optional: &[&str],
    extra: Extra,
    origin: &str,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut cols = Vec::with_capacity(batch.num_columns());
    for f in declared.fields() {
        let col = match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => c.clone(),
            Some(c) => datafusion::arrow::compute::cast(c, f.data_type()).map_err(|e| {
                Error::Config(format!(
                    "{origin}: output column {:?} is {}, and does not convert to {} ({e})",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ))
            })?,
            None if optional.contains(&f.name().as_str()) => {
                new_null_array(f.data_type(), batch.num_rows())
            }
            None => {
                let has: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(Error::Config(format!(
                    "{origin}: the query has no output column {:?}, which its contract needs (it has: {})",
                    f.name(),
                    has.join(", ")
                )));
            }
        };
        fields.push(f.as_ref().clone());
        cols.push(col);
    }
    if extra == Extra::Drop {
        return Ok(RecordBatch::try_new(declared.clone(), cols)?);
    }
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if declared.field_with_name(f.name()).is_err() {
            fields.push(f.as_ref().clone().with_nullable(true));
            cols.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The Date32 epoch.
pub fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// `d` as a Date32 value (days since the epoch).
pub fn date32(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}
