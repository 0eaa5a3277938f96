//! `reckon_bucket`: which of `n` hash buckets a record's match key falls in.
//!
//! normalize and collect write each side of a day in buckets of its match key, and reconcile
//! joins one bucket at a time: every record of one key, on both sides, is in the same bucket.
//! The hash is XXH64 (seed 0) of the key's UTF-8 bytes exactly as `sql/reconcile.sql` builds
//! the key (`PAY:` and the merchant order id, `REFUND:` and the refund id, or the type, `:` and
//! the channel's transaction id), so the same key lands in the same bucket on every host,
//! in every version, whether the key arrives as one string or as its parts. A record without
//! a key (a NULL part) is in bucket 0. Bucket counts are powers of two, so bucket `b` of `n`
//! is the union of buckets `b`, `b + n`, `b + 2n` … of any larger count.

use std::hash::Hasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use twox_hash::XxHash64;

use crate::args::{arity, ints, strings};

const NAME: &str = "reckon_bucket";

/// What a side's records are matched on (the channel's `match_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOn {
    /// `PAY:<merchant_order_id>` for payments, `REFUND:<refund_id>` for refunds.
    MerchantOrderId,
    /// `<txn_type>:<channel_txn_id>`.
    ChannelTxnId,
}

impl MatchOn {
    /// The setting's value (`merchant_order_id` or `channel_txn_id`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "merchant_order_id" => Some(Self::MerchantOrderId),
            "channel_txn_id" => Some(Self::ChannelTxnId),
            _ => None,
        }
    }
}

/// The hash of a match key given as one string.
pub fn key_hash(key: &str) -> u64 {
    XxHash64::oneshot(0, key.as_bytes())
}

/// The hash of the match key of a record given by its parts (no key: `None`), without
/// building the key: the same value as [`key_hash`] of the key `sql/reconcile.sql` builds.
pub fn record_hash(
    on: MatchOn,
    txn_type: Option<&str>,
    merchant_order_id: Option<&str>,
    refund_id: Option<&str>,
    channel_txn_id: Option<&str>,
) -> Option<u64> {
    let mut h = XxHash64::with_seed(0);
    match on {
        MatchOn::ChannelTxnId => {
            h.write(txn_type?.as_bytes());
            h.write(b":");
            h.write(channel_txn_id?.as_bytes());
        }
        // `txn_type = 'REFUND'` is not true for a NULL type: such a record is a payment.
        MatchOn::MerchantOrderId if txn_type == Some("REFUND") => {
            h.write(b"REFUND:");
            h.write(refund_id?.as_bytes());
        }
        MatchOn::MerchantOrderId => {
            h.write(b"PAY:");
            h.write(merchant_order_id?.as_bytes());
        }
    }
    Some(h.finish())
}

/// The bucket of a hash among `n` (a power of two); no key: bucket 0.
pub fn bucket_of(hash: Option<u64>, n: u32) -> u32 {
    match hash {
        Some(h) if n > 1 => (h & u64::from(n - 1)) as u32,
        _ => 0,
    }
}

/// `reckon_bucket(buckets, match_on, txn_type, merchant_order_id, refund_id, channel_txn_id)`:
/// the bucket (0 ..= buckets - 1) of each record's match key.
///
/// ```sql
/// SELECT * FROM carry_in
/// WHERE reckon_bucket(16, 'merchant_order_id', txn_type, merchant_order_id, refund_id,
///                     channel_txn_id) = 3
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BucketFunc {
    signature: Signature,
}

impl Default for BucketFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl BucketFunc {
    /// The function with its fixed signature.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for BucketFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let mut expected = vec![DataType::Int64];
        expected.extend(std::iter::repeat_n(DataType::Utf8, 5));
        arity(NAME, arg_types, &expected)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let n = ints(NAME, 0, &arrays[0])?;
        let on = strings(NAME, 1, &arrays[1])?;
        let parts: Vec<&StringArray> = (2..6)
            .map(|i| strings(NAME, i, &arrays[i]))
            .collect::<Result<_>>()?;
        fn get(a: &StringArray, row: usize) -> Option<&str> {
            (!a.is_null(row)).then(|| a.value(row))
        }
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let buckets = match (!n.is_null(row)).then(|| n.value(row)) {
                Some(b) if b >= 1 && (b as u64).is_power_of_two() && b <= i64::from(u32::MAX) => {
                    b as u32
                }
                other => return exec_err!("{NAME}: {other:?} buckets is not a power of two"),
            };
            let Some(match_on) = get(on, row).and_then(MatchOn::parse) else {
                return exec_err!(
                    "{NAME}: match_on {:?} is neither merchant_order_id nor channel_txn_id",
                    get(on, row)
                );
            };
            let hash = record_hash(
                match_on,
                get(parts[0], row),
                get(parts[1], row),
                get(parts[2], row),
                get(parts[3], row),
            );
            out.push(i64::from(bucket_of(hash, buckets)));
        }
        Ok(ColumnarValue::Array(Arc::new(Int64Array::from(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_hashes_as_the_key_the_sql_builds() {
        let on = MatchOn::MerchantOrderId;
        let pay = record_hash(on, Some("PAY"), Some("M1"), None, Some("T9"));
        assert_eq!(pay, Some(key_hash("PAY:M1")));
        // Any type but REFUND (a NULL one too) is matched as a payment.
        assert_eq!(record_hash(on, None, Some("M1"), None, None), pay);
        let refund = record_hash(on, Some("REFUND"), Some("M1"), Some("R1"), None);
        assert_eq!(refund, Some(key_hash("REFUND:R1")));
        assert_eq!(
            record_hash(on, Some("REFUND"), Some("M1"), None, None),
            None
        );
        let on = MatchOn::ChannelTxnId;
        assert_eq!(
            record_hash(on, Some("PAY"), Some("M1"), None, Some("T9")),
            Some(key_hash("PAY:T9"))
        );
        assert_eq!(record_hash(on, None, Some("M1"), None, Some("T9")), None);
    }

    #[test]
    fn buckets_nest_and_keyless_records_go_to_bucket_zero() {
        for key in [
            "PAY:1",
            "PAY:2",
            "REFUND:x",
            "PAY:4200000001202611270000001",
        ] {
            let h = Some(key_hash(key));
            for n in [1u32, 2, 4, 8, 64] {
                // Bucket b of n is the union of the buckets of 2n that are b modulo n.
                assert_eq!(bucket_of(h, 2 * n) % n, bucket_of(h, n));
            }
        }
        assert_eq!(bucket_of(None, 16), 0);
        // The hash is XXH64 with seed 0, fixed for every version: a known value.
        assert_eq!(key_hash(""), 0xef46db3751d8e999);
    }
}
