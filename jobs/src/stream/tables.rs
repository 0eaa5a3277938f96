//! Stream records as the batch job's canonical tables: the channel side in the schema of
//! `normalized/` ([`crate::schema::BILL`]), the platform side in the schema of `platform/`
//! ([`crate::schema::PLATFORM`]). The pairs of a micro-batch are classified by running
//! `reconcile.sql` over these, and a closed day is reconciled from them.
//!
//! A channel record's `source_file` is the partition it came from and its `source_line` its
//! position there: the difference points at the message as a batch difference points at the
//! bill's line.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use rust_decimal::Decimal;

use super::record::{Position, Record};
use crate::error::Result;
use crate::schema::{BILL, PLATFORM};

fn money(values: impl Iterator<Item = Option<Decimal>>) -> Result<ArrayRef> {
    let mut b = Decimal128Builder::new();
    for v in values {
        b.append_option(v.map(|mut d| {
            d.rescale(2);
            d.mantissa()
        }));
    }
    Ok(Arc::new(b.with_precision_and_scale(18, 2)?.finish()))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn times(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = Int64Builder::new();
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

fn position(p: &Position) -> i64 {
    i64::try_from(p.offset).unwrap_or(i64::MAX)
}

/// Channel records as rows of `normalized/` for `day`.
pub fn bill(rows: &[(&Record, &Position)], day: NaiveDate) -> Result<RecordBatch> {
    let date = crate::schema::date32(day);
    let mut dates = Date32Builder::new();
    for _ in rows {
        dates.append_value(date);
    }
    let r = || rows.iter().map(|(r, _)| *r);
    let columns: Vec<ArrayRef> = vec![
        strings(r().map(|r| Some(r.channel.as_str()))),
        Arc::new(dates.finish()),
        strings(r().map(|r| Some(r.txn_type.as_str()))),
        strings(r().map(|r| r.channel_txn_id.as_deref())),
        strings(r().map(|r| r.merchant_order_id.as_deref())),
        strings(r().map(|r| r.refund_id.as_deref())),
        money(r().map(|r| Some(r.amount)))?,
        money(r().map(|r| r.fee))?,
        money(r().map(|r| r.received))?,
        strings(r().map(|r| r.merchant_id.as_deref())),
        strings(r().map(|r| Some(r.status.as_str()))),
        times(r().map(Record::event_micros)),
        strings(rows.iter().map(|(_, p)| Some(p.partition.as_str()))),
        ints(rows.iter().map(|(_, p)| position(p))),
    ];
    Ok(RecordBatch::try_new(BILL.clone(), columns)?)
}

/// Platform records as rows of `platform/`.
pub fn platform(rows: &[(&Record, &Position)]) -> Result<RecordBatch> {
    let r = || rows.iter().map(|(r, _)| *r);
    let columns: Vec<ArrayRef> = vec![
        strings(r().map(|r| Some(r.channel.as_str()))),
        strings(r().map(|r| Some(r.txn_type.as_str()))),
        strings(r().map(|r| r.platform_order_id.as_deref())),
        strings(r().map(|r| r.merchant_order_id.as_deref())),
        strings(r().map(|r| r.refund_id.as_deref())),
        strings(r().map(|r| r.channel_txn_id.as_deref())),
        money(r().map(|r| Some(r.amount)))?,
        strings(r().map(|r| Some(r.status.as_str()))),
        times(r().map(Record::event_micros)),
        money(r().map(|r| r.refunded_amount))?,
        strings(r().map(|r| r.merchant_id.as_deref())),
        ints(rows.iter().map(|(_, p)| position(p))),
    ];
    Ok(RecordBatch::try_new(PLATFORM.clone(), columns)?)
}
