//! The second look: the keys of MISSING_IN_PLATFORM rows asked of the platform's own database.

use datafusion::arrow::array::{Array, AsArray};
use reckon_udfs::Category;

use super::route::{col, typed};
use crate::error::{Error, Result};
use crate::records::SecondLookDetail;

/// A MISSING_IN_PLATFORM difference the second look asks about.
pub(super) struct Missing {
    pub diff_id: String,
    /// A refund (its refund id asked for), else a payment (its merchant order id).
    pub refund: bool,
    pub key: String,
}

/// The MISSING_IN_PLATFORM differences of the engine's parts (`diffs`, URLs), read by
/// `reader` (a session in this process): four columns of those rows only.
pub(super) async fn missing_in(
    reader: &datafusion::prelude::SessionContext,
    diffs: Vec<String>,
    origin: &str,
) -> Result<Vec<Missing>> {
    use datafusion::logical_expr::lit;
    if diffs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = reader
        .read_parquet(diffs, Default::default())
        .await?
        .filter(
            datafusion::logical_expr::col("category").eq(lit(Category::MissingInPlatform.as_str())),
        )?
        .select_columns(&["diff_id", "txn_type", "merchant_order_id", "refund_id"])?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &rows {
        let b = super::plain_strings(b)?;
        let id = typed!(&b, "diff_id", origin, as_string_opt::<i32>);
        let tt = typed!(&b, "txn_type", origin, as_string_opt::<i32>);
        let mo = typed!(&b, "merchant_order_id", origin, as_string_opt::<i32>);
        let rf = typed!(&b, "refund_id", origin, as_string_opt::<i32>);
        for row in 0..b.num_rows() {
            let refund = !tt.is_null(row) && tt.value(row) == "REFUND";
            let key = if refund { rf } else { mo };
            if id.is_null(row) || key.is_null(row) {
                continue;
            }
            out.push(Missing {
                diff_id: id.value(row).to_string(),
                refund,
                key: key.value(row).to_string(),
            });
        }
    }
    Ok(out)
}

/// The second look: the keys of MISSING_IN_PLATFORM rows are looked up in the platform's own
/// database; a row whose key is there keeps its category (the warehouse snapshot has not got
/// it) and gets a reason that says where it is. Returns what was asked and found, and the
/// reasons by `diff_id`.
pub(super) async fn second_look(
    cfg: &crate::config::SecondLook,
    missing: &[Missing],
) -> Result<(SecondLookDetail, Vec<(String, String)>)> {
    let keys = |refund: bool| {
        let mut k: Vec<String> = (missing.iter())
            .filter(|m| m.refund == refund)
            .map(|m| m.key.clone())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let (orders, refunds) = (keys(false), keys(true));
    let lookups = crate::postgres::Lookups::new(cfg)?;
    let started = std::time::Instant::now();
    let found_orders = lookups
        .find(&cfg.orders_table, &cfg.order_key, &orders)
        .await?;
    let found_refunds = lookups
        .find(&cfg.refunds_table, &cfg.refund_key, &refunds)
        .await?;
    let mut reasons = Vec::new();
    for m in missing {
        let (found, table) = if m.refund {
            (&found_refunds, &cfg.refunds_table)
        } else {
            (&found_orders, &cfg.orders_table)
        };
        if found.contains(&m.key) {
            reasons.push((
                m.diff_id.clone(),
                format!(
                    "the platform's database has it ({table} {}), but the warehouse snapshot does not: \
                     it was loaded into the warehouse late; rerun collect and reconcile once it is there",
                    m.key
                ),
            ));
        }
    }
    tracing::info!(
        looked_up = orders.len() + refunds.len(),
        found = reasons.len(),
        "second look"
    );
    Ok((
        SecondLookDetail {
            looked_up: (orders.len() + refunds.len()) as u64,
            found_in_database: reasons.len() as u64,
            connections: lookups.connections(),
            queries: lookups.queries(),
            retries: lookups.retries(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
        reasons,
    ))
}
