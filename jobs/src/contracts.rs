//! The contract of each analyst SQL file, declared once: the tables it reads, the parameters
//! the job binds, the columns its output must have. The stages, `reckon sql check` and the
//! sqllogictest harness (`sql/tests/*.slt`) all take them from here.

use chrono::NaiveDate;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;

use crate::config::Channel;
use crate::schema::{self, date32};

/// `sql/platform.sql`: the warehouse's `orders` and `refunds` (your own tables) to the
/// canonical platform rows of one channel and day.
pub mod platform {
    use super::*;

    /// The file.
    pub const FILE: &str = "platform.sql";

    /// The tables it reads (registered by the collect stage from the warehouse).
    pub const TABLES: [&str; 2] = ["orders", "refunds"];

    /// Its output: the canonical platform schema (`snapshot_row` is the job's).
    pub fn output() -> &'static SchemaRef {
        &schema::PLATFORM
    }

    /// Output columns an older `platform.sql` may leave out.
    pub const OPTIONAL: &[&str] = schema::PLATFORM_OPTIONAL;

    /// The parameters `platform.sql` gets: the channel, and the day as `[day_start, day_end)` in
    /// microseconds since the epoch.
    pub fn params(channel: &str, start: i64, end: i64) -> Vec<(&'static str, ScalarValue)> {
        let ts = |v| ScalarValue::TimestampMicrosecond(Some(v), Some("UTC".into()));
        vec![
            ("channel", ScalarValue::Utf8(Some(channel.to_string()))),
            ("day_start", ts(start)),
            ("day_end", ts(end)),
        ]
    }
}

/// `sql/reconcile.sql`: the bill against the platform and the carry-in, every row classified.
pub mod reconcile {
    use super::*;

    /// The file.
    pub const FILE: &str = "reconcile.sql";

    /// The tables it reads, with their schemas.
    pub fn tables() -> Vec<(&'static str, SchemaRef)> {
        vec![
            ("bill", schema::BILL.clone()),
            ("platform", schema::PLATFORM.clone()),
            ("carry_in", schema::CARRY.clone()),
        ]
    }

    fn decimal_param(mantissa: Option<i128>, scale: i8) -> ScalarValue {
        ScalarValue::Decimal128(mantissa, 18, scale)
    }

    /// The output columns of `reconcile.sql` the job reads (every other column is written to the
    /// differences as it is).
    pub const OUTPUT_COLUMNS: &[&str] = &[
        "diff_id",
        "category",
        "reason",
        "txn_type",
        "merchant_order_id",
        "refund_id",
        "channel_amount",
        "platform_amount",
        "in_channel",
        "in_platform",
        "channel_carried",
        "platform_carried",
        "carried_from",
        "grace_until",
        "source_line",
    ];

    /// The parameters `reconcile.sql` gets for channel `ch` on bill date `date`.
    pub fn params(ch: &Channel, date: NaiveDate) -> Vec<(&'static str, ScalarValue)> {
        let r = &ch.rules;
        let (tolerance, fee_rate, tolerance_rate) = (r.tolerance, r.fee_rate, r.tolerance_rate);
        let scaled = |d: rust_decimal::Decimal, s: u32| {
            let mut d = d;
            d.rescale(s);
            d.mantissa()
        };
        vec![
            ("channel", ScalarValue::Utf8(Some(ch.name.clone()))),
            ("bill_date", ScalarValue::Date32(Some(date32(date)))),
            ("time_zone", ScalarValue::Utf8(Some(ch.time_zone.clone()))),
            (
                "cut_window_secs",
                ScalarValue::Int64(Some(ch.cut_window_secs)),
            ),
            ("grace_days", ScalarValue::Int64(Some(ch.grace_days))),
            ("tolerance", decimal_param(Some(scaled(tolerance, 2)), 2)),
            (
                "tolerance_rate",
                decimal_param(tolerance_rate.map(|r| scaled(r, 6)), 6),
            ),
            ("fee_rate", decimal_param(fee_rate.map(|r| scaled(r, 6)), 6)),
            ("match_on", ScalarValue::Utf8(Some(ch.match_key.clone()))),
            (
                "fee_rounding",
                ScalarValue::Utf8(Some(ch.fee_rounding.clone())),
            ),
            (
                "compare_amount",
                ScalarValue::Utf8(Some(ch.compare_amount.clone())),
            ),
        ]
    }
}
