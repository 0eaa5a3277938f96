//! The canonical schemas every stage agrees on. `sql/README.md` describes each column.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

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

/// Statistics of a reconciled channel-day (`stats/`): one row per category and grain (an
/// hour, a merchant); the grain's column comes fourth, after `category`.
pub static STATS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let count = |n: &str| Field::new(n, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        Field::new("channel", DataType::Utf8, false),
        Field::new("bill_date", DataType::Date32, false),
        Field::new("category", DataType::Utf8, false),
        count("rows"),
        count("channel_records"),
        count("platform_records"),
        count("carried_records"),
        Field::new("channel_amount", MONEY_SUM, false),
        Field::new("platform_amount", MONEY_SUM, false),
        count("refund_explained"),
    ]))
});
