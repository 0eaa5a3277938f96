//! The decisions in force on a channel's differences, as an input of the day's reconcile:
//! written to `inputs/…/decisions.parquet` when the day is reconciled (so a replay sees the
//! same), shipped to the buckets by match key, and applied by the ageing
//! ([`crate::stages::ageing::Decided`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Decimal128Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::Decimal128Type;
use rust_decimal::Decimal;

use super::{decision, Decision, Desk, Status, DECISION_COLUMNS};
use crate::error::{Error, Result};
use crate::schema;
use crate::stages::ageing::{column, Decided};

impl Desk {
    /// The decisions in force on `channel`'s differences (the last decision of each, effective
    /// and closing), in ageing-key order.
    pub async fn in_force(&self, channel: &str) -> Result<Vec<Decision>> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM desk_decisions
             WHERE channel = $1 AND status = $2 AND id IN
                 (SELECT decision_id FROM desk_state WHERE channel = $1)
             ORDER BY ageing_key"
        );
        let rows = (self.select(&sql, &[channel.into(), Status::Effective.name().into()])).await?;
        let mut out = Vec::new();
        for r in rows {
            let d = decision(&r)?;
            if d.action.closes() {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// An amount as the ledger keeps it (cents).
fn cents(d: Option<Decimal>) -> Result<Option<i128>> {
    d.map(|d| {
        let mut d = d;
        d.rescale(2);
        if d.scale() == 2 {
            Ok(d.mantissa())
        } else {
            Err(Error::Other(format!(
                "a decided amount {d} is not in cents"
            )))
        }
    })
    .transpose()
}

/// `decisions` as a batch of [`schema::DECISIONS`].
pub fn batch(decisions: &[Decision]) -> Result<RecordBatch> {
    let mut s: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut m: Vec<Decimal128Builder> = (0..2)
        .map(|_| Decimal128Builder::new().with_data_type(schema::MONEY))
        .collect();
    for d in decisions {
        s[0].append_value(&d.ageing_key);
        s[1].append_option(d.match_key.as_deref());
        s[2].append_value(d.action.name());
        s[3].append_value(&d.decided_by);
        s[4].append_value(&d.decided_at);
        s[5].append_value(&d.category);
        m[0].append_option(cents(d.channel_amount)?);
        m[1].append_option(cents(d.platform_amount)?);
    }
    let cols: Vec<ArrayRef> = (s.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef))
        .chain(m.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef))
        .collect();
    Ok(RecordBatch::try_new(schema::DECISIONS.clone(), cols)?)
}

/// The decisions of `batches` (rows of [`schema::DECISIONS`] read from `what`), by ageing key.
pub fn read(batches: &[RecordBatch], what: &str) -> Result<HashMap<String, Decided>> {
    let mut out = HashMap::new();
    for b in batches {
        let text = |name: &str| {
            column(b, name, what)?
                .as_string_opt::<i32>()
                .ok_or_else(|| Error::Other(format!("{what}: column {name:?} is not text")))
        };
        let money = |name: &str| {
            column(b, name, what)?
                .as_primitive_opt::<Decimal128Type>()
                .ok_or_else(|| Error::Other(format!("{what}: column {name:?} is not money")))
        };
        let (key, action, by, at, category) = (
            text("ageing_key")?,
            text("action")?,
            text("decided_by")?,
            text("decided_at")?,
            text("category")?,
        );
        let (ca, pa) = (money("channel_amount")?, money("platform_amount")?);
        for i in 0..b.num_rows() {
            let amount = |a: &datafusion::arrow::array::Decimal128Array| {
                use datafusion::arrow::array::Array;
                a.is_valid(i).then(|| a.value(i))
            };
            out.insert(
                key.value(i).to_string(),
                Decided {
                    action: action.value(i).to_string(),
                    decided_by: by.value(i).to_string(),
                    decided_at: at.value(i).to_string(),
                    category: category.value(i).to_string(),
                    channel_amount: amount(ca),
                    platform_amount: amount(pa),
                },
            );
        }
    }
    Ok(out)
}
