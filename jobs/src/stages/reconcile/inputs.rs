//! The two sides of a day, bucket by bucket: which files (or part of a file) the engine reads
//! as `bill`, `platform` and `carry_in` for one bucket of the join.

use datafusion::logical_expr::{col, lit, Expr};
use datafusion::prelude::SessionContext;
use reckon_udfs::{BucketFunc, MatchOn};

use crate::buckets;
use crate::engine::register_dirs;
use crate::error::{Error, Result};

/// One side's files, each with its bucket among the side's `buckets`.
pub(super) struct Side {
    /// The table the SQL reads (`bill`, `platform`).
    pub table: &'static str,
    pub buckets: u32,
    /// (bucket, URL or local path), in bucket order.
    pub files: Vec<(u32, String)>,
}

impl Side {
    /// `files` (URLs or paths, named as [`buckets::file_name`] names them) of a side written
    /// in `n` buckets; a file of another name is an error that names it.
    pub fn new(table: &'static str, n: u32, files: Vec<String>) -> Result<Self> {
        let mut out = Vec::new();
        for f in files {
            let b = buckets::of_file(&f, n).ok_or_else(|| {
                Error::Other(format!(
                    "{table}: {f} is not a file of a side written in {n} buckets"
                ))
            })?;
            out.push((b, f));
        }
        out.sort();
        if out.len() != n as usize || out.iter().enumerate().any(|(i, (b, _))| *b != i as u32) {
            return Err(Error::Other(format!(
                "{table}: the side was written in {n} buckets, but its record names {} files",
                out.len()
            )));
        }
        Ok(Self {
            table,
            buckets: n,
            files: out,
        })
    }
}

/// `reckon_bucket(n, match_on, …)` of a canonical table's key columns.
fn bucket_expr(n: u32, on: MatchOn) -> Expr {
    let on = match on {
        MatchOn::MerchantOrderId => "merchant_order_id",
        MatchOn::ChannelTxnId => "channel_txn_id",
    };
    datafusion::logical_expr::ScalarUDF::from(BucketFunc::new()).call(vec![
        lit(i64::from(n)),
        lit(on),
        col("txn_type"),
        col("merchant_order_id"),
        col("refund_id"),
        col("channel_txn_id"),
    ])
}

/// Registers `name` as the rows read from `files`: all of them, or `only` those of bucket `b`
/// among `n` (a filtered view).
async fn register_part(
    ctx: &SessionContext,
    name: &str,
    files: &[String],
    only: Option<(u32, u32, MatchOn)>,
) -> Result<()> {
    let Some((bucket, n, on)) = only else {
        return register_dirs(ctx, name, files).await;
    };
    let whole = format!("{name}_unbucketed");
    register_dirs(ctx, &whole, files).await?;
    let part = ctx
        .table(&whole)
        .await?
        .filter(bucket_expr(n, on).eq(lit(i64::from(bucket))))?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, part.into_view())?;
    Ok(())
}

/// Registers `side`'s rows of `bucket` among `n` as its table.
pub(super) async fn register_side(
    ctx: &SessionContext,
    side: &Side,
    (bucket, n, on): (u32, u32, MatchOn),
) -> Result<()> {
    if side.buckets >= n {
        // Bucket b of n is the side's buckets b, b + n, b + 2n …: whole files.
        let files: Vec<String> = (side.files.iter())
            .filter(|(b, _)| b & (n - 1) == bucket)
            .map(|(_, f)| f.clone())
            .collect();
        register_part(ctx, side.table, &files, None).await
    } else {
        // The side has fewer buckets: its file b mod n holds bucket b and others.
        let f = side.files[(bucket & (side.buckets - 1)) as usize].1.clone();
        register_part(ctx, side.table, &[f], Some((bucket, n, on))).await
    }
}

/// Registers `carry_in` as the carry-over's rows of `bucket` among `n`.
pub(super) async fn register_carry(
    ctx: &SessionContext,
    url: &str,
    (bucket, n, on): (u32, u32, MatchOn),
) -> Result<()> {
    let only = (n > 1).then_some((bucket, n, on));
    register_part(ctx, "carry_in", &[url.to_string()], only).await
}
