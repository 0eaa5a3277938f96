//! The second look: the keys of MISSING_IN_PLATFORM rows asked of the platform's own database.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringBuilder};
use reckon_udfs::Category;

use super::route::{col, typed, Router};
use crate::error::{Error, Result};
use crate::records::SecondLookDetail;

/// The second look: the keys of MISSING_IN_PLATFORM rows are looked up in the platform's own
/// database; a row whose key is there keeps its category (the warehouse snapshot has not got
/// it) and gets a reason that says where it is.
pub(super) async fn second_look(
    cfg: &crate::config::SecondLook,
    router: &mut Router,
    origin: &str,
) -> Result<SecondLookDetail> {
    let missing = Category::MissingInPlatform.as_str();
    let (mut orders, mut refunds) = (Vec::new(), Vec::new());
    for b in &router.diffs {
        let cat = typed!(b, "category", origin, as_string_opt::<i32>);
        let tt = typed!(b, "txn_type", origin, as_string_opt::<i32>);
        let mo = typed!(b, "merchant_order_id", origin, as_string_opt::<i32>);
        let rf = typed!(b, "refund_id", origin, as_string_opt::<i32>);
        for row in 0..b.num_rows() {
            if cat.is_null(row) || cat.value(row) != missing {
                continue;
            }
            let refund = !tt.is_null(row) && tt.value(row) == "REFUND";
            let (keys, col) = if refund {
                (&mut refunds, rf)
            } else {
                (&mut orders, mo)
            };
            if !col.is_null(row) {
                keys.push(col.value(row).to_string());
            }
        }
    }
    orders.sort();
    orders.dedup();
    refunds.sort();
    refunds.dedup();
    let lookups = crate::postgres::Lookups::new(cfg)?;
    let started = std::time::Instant::now();
    let found_orders = lookups
        .find(&cfg.orders_table, &cfg.order_key, &orders)
        .await?;
    let found_refunds = lookups
        .find(&cfg.refunds_table, &cfg.refund_key, &refunds)
        .await?;
    let mut rewritten = 0u64;
    for b in router.diffs.iter_mut() {
        let cat = typed!(b, "category", origin, as_string_opt::<i32>);
        let tt = typed!(b, "txn_type", origin, as_string_opt::<i32>);
        let mo = typed!(b, "merchant_order_id", origin, as_string_opt::<i32>);
        let rf = typed!(b, "refund_id", origin, as_string_opt::<i32>);
        let reason = typed!(b, "reason", origin, as_string_opt::<i32>);
        let mut out = StringBuilder::with_capacity(b.num_rows(), b.num_rows() * 64);
        for row in 0..b.num_rows() {
            let refund = !tt.is_null(row) && tt.value(row) == "REFUND";
            let (col, found, table) = if refund {
                (rf, &found_refunds, &cfg.refunds_table)
            } else {
                (mo, &found_orders, &cfg.orders_table)
            };
            let hit = !cat.is_null(row)
                && cat.value(row) == missing
                && !col.is_null(row)
                && found.contains(col.value(row));
            if hit {
                rewritten += 1;
                out.append_value(format!(
                    "the platform's database has it ({table} {}), but the warehouse snapshot does not: \
                     it was loaded into the warehouse late; rerun collect and reconcile once it is there",
                    col.value(row)
                ));
            } else if reason.is_null(row) {
                out.append_null();
            } else {
                out.append_value(reason.value(row));
            }
        }
        let idx = b
            .schema()
            .index_of("reason")
            .map_err(|e| Error::Other(format!("{origin}: {e}")))?;
        let mut cols = b.columns().to_vec();
        cols[idx] = Arc::new(out.finish());
        *b = RecordBatch::try_new(b.schema(), cols)?;
    }
    tracing::info!(
        looked_up = orders.len() + refunds.len(),
        found = rewritten,
        "second look"
    );
    Ok(SecondLookDetail {
        looked_up: (orders.len() + refunds.len()) as u64,
        found_in_database: rewritten,
        connections: lookups.connections(),
        queries: lookups.queries(),
        retries: lookups.retries(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
