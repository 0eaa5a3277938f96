//! `reckon_reason`: the sentence a person reads next to a difference.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{self, decimals, money_text, opt, strings, MONEY, RATE};
use crate::category::Category;
use crate::classify::expected_fee;

const NAME: &str = "reckon_reason";

/// Explains a category in a sentence someone can act on.
///
/// ```sql
/// SELECT reckon_reason(category, match_key, c.amount, p.amount, c.status, p.status,
///                      c.fee, CAST($fee_rate AS DECIMAL(18,6)))
/// -- 'channel amount 10.00 differs from platform amount 9.00 by 1.00: ...'
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ReasonFunc {
    signature: Signature,
}

impl Default for ReasonFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl ReasonFunc {
    /// The function with its user-defined signature.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// What the sentence is built from. Money is a scale-2 mantissa, the rate scale 6.
#[derive(Debug, Default)]
pub struct ReasonFacts<'a> {
    pub match_key: Option<&'a str>,
    pub channel_amount: Option<i128>,
    pub platform_amount: Option<i128>,
    pub channel_status: Option<&'a str>,
    pub platform_status: Option<&'a str>,
    pub channel_fee: Option<i128>,
    pub fee_rate: Option<i128>,
    pub fee_rounding: crate::classify::FeeRounding,
}

fn money(v: Option<i128>) -> String {
    v.map(money_text).unwrap_or_else(|| "(none)".into())
}

/// The sentence for `category`.
pub fn reason(category: Category, f: &ReasonFacts<'_>) -> String {
    let key = f.match_key.unwrap_or("(no key)");
    match category {
        Category::Matched => "both sides agree".into(),
        Category::AmountMismatch => {
            let delta = match (f.channel_amount, f.platform_amount) {
                (Some(c), Some(p)) => money_text(c - p),
                _ => "(unknown)".into(),
            };
            format!(
                "channel amount {} differs from platform amount {} by {delta}: check for a partial capture or an edited order",
                money(f.channel_amount),
                money(f.platform_amount)
            )
        }
        Category::StatusMismatch => format!(
            "channel status {} but platform status {}, and the platform's refund table does not explain it: check whether the platform missed a callback or a refund",
            f.channel_status.unwrap_or("(none)"),
            f.platform_status.unwrap_or("(none)")
        ),
        Category::FeeMismatch => {
            let want = match (f.channel_amount, f.fee_rate) {
                (Some(a), Some(r)) => money(expected_fee(a, r, f.fee_rounding)),
                _ => "(unknown)".into(),
            };
            format!(
                "channel fee {} differs from the contracted fee {want}: check the channel's rate for this merchant",
                money(f.channel_fee)
            )
        }
        Category::MissingInChannel if f.match_key.is_none() => {
            "platform record has no matching key, so no channel record can match it: fix the platform record's id".into()
        }
        Category::MissingInChannel => format!(
            "platform record {key} is not in the channel's bill and no daily cut explains it: check whether the channel captured the payment"
        ),
        Category::MissingInPlatform if f.match_key.is_none() => {
            "channel record has no matching key (empty merchant order number), so it cannot match a platform record".into()
        }
        Category::MissingInPlatform => format!(
            "channel record {key} is not in the platform's records and no daily cut explains it: check for a lost order or callback"
        ),
        Category::CrossDayPending => format!(
            "{key} is one-sided within the daily-cut window of midnight: carried to the next day's reconciliation"
        ),
        Category::CrossDayMatched => {
            format!("{key} was carried over from an earlier day and matched today")
        }
        Category::DuplicateInChannel => format!(
            "{key} appears more than once in the channel's bill: this is an extra occurrence, the first one is reconciled"
        ),
        Category::DuplicateInPlatform => format!(
            "{key} appears more than once in the platform's records: this is an extra occurrence, the first one is reconciled"
        ),
    }
}

impl ScalarUDFImpl for ReasonFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        use DataType::Utf8;
        args::arity_optional(
            NAME,
            arg_types,
            &[Utf8, Utf8, MONEY, MONEY, Utf8, Utf8, MONEY, RATE, Utf8],
            1,
        )
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let (fixed, rounding) = arrays.split_at(arrays.len().min(8));
        let [cat, key, ca, pa, cs, ps, cf, rate] = fixed else {
            return exec_err!("{NAME} takes 8 or 9 arguments, got {}", arrays.len());
        };
        let rounding = args::fee_rounding(NAME, 8, rounding.first())?;
        let (cat, key) = (strings(NAME, 0, cat)?, strings(NAME, 1, key)?);
        let (ca, pa) = (decimals(NAME, 2, ca)?, decimals(NAME, 3, pa)?);
        let (cs, ps) = (strings(NAME, 4, cs)?, strings(NAME, 5, ps)?);
        let (cf, rate) = (decimals(NAME, 6, cf)?, decimals(NAME, 7, rate)?);

        let n = args.number_rows;
        let mut out = StringBuilder::with_capacity(n, n * 64);
        for row in 0..n {
            let Some(category) = opt(cat, row, |a, i| a.value(i)) else {
                out.append_null();
                continue;
            };
            let category: Category = match category.parse() {
                Ok(c) => c,
                Err(e) => return exec_err!("{NAME}: row {row}: {e}"),
            };
            let facts = ReasonFacts {
                match_key: opt(key, row, |a, i| a.value(i)),
                channel_amount: opt(ca, row, |a, i| a.value(i)),
                platform_amount: opt(pa, row, |a, i| a.value(i)),
                channel_status: opt(cs, row, |a, i| a.value(i)),
                platform_status: opt(ps, row, |a, i| a.value(i)),
                channel_fee: opt(cf, row, |a, i| a.value(i)),
                fee_rate: opt(rate, row, |a, i| a.value(i)),
                fee_rounding: rounding(row)?,
            };
            out.append_value(reason(category, &facts));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_mismatch_names_both_amounts_and_the_delta() {
        let r = reason(
            Category::AmountMismatch,
            &ReasonFacts {
                channel_amount: Some(1000),
                platform_amount: Some(1250),
                ..Default::default()
            },
        );
        assert!(
            r.contains("10.00") && r.contains("12.50") && r.contains("-2.50"),
            "{r}"
        );
    }

    #[test]
    fn fee_mismatch_names_the_contracted_fee() {
        let r = reason(
            Category::FeeMismatch,
            &ReasonFacts {
                channel_amount: Some(10_000),
                channel_fee: Some(70),
                fee_rate: Some(6_000),
                ..Default::default()
            },
        );
        assert!(r.contains("0.70") && r.contains("0.60"), "{r}");
    }

    #[test]
    fn a_missing_key_is_explained_as_such() {
        let r = reason(Category::MissingInPlatform, &ReasonFacts::default());
        assert!(r.contains("no matching key"), "{r}");
    }
}
