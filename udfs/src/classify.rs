//! `reckon_classify`: the category of one reconciled row.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{self, bools, decimals, flag, opt, strings, MONEY, RATE};
use crate::category::Category;

const NAME: &str = "reckon_classify";

/// Classifies one row of the full outer join of the channel side and the platform side.
///
/// ```sql
/// SELECT reckon_classify(
///     c.match_key IS NOT NULL, p.match_key IS NOT NULL,  -- which sides are present
///     c_dup, p_dup,                                      -- an extra occurrence of a key
///     c.amount, p.amount, c.status, p.status,
///     c.fee, CAST($fee_rate AS DECIMAL(18,6)),           -- fee check; NULL skips it
///     CAST($tolerance AS DECIMAL(18,2)),                 -- amount tolerance
///     pending_ok,                                        -- may a one-sided row wait a day
///     carried)                                           -- a side came from the carry-over
/// -- 'MATCHED', 'AMOUNT_MISMATCH', ...
/// ```
///
/// A row with neither side present is an execution error: the join never makes one.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ClassifyFunc {
    signature: Signature,
}

impl Default for ClassifyFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl ClassifyFunc {
    /// The function with its user-defined signature (arguments coerced to the canonical types).
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The facts about one joined row that decide its category. Money is a scale-2 mantissa.
#[derive(Debug, Clone, Default)]
pub struct RowFacts<'a> {
    pub channel_present: bool,
    pub platform_present: bool,
    pub channel_duplicate: bool,
    pub platform_duplicate: bool,
    pub channel_amount: Option<i128>,
    pub platform_amount: Option<i128>,
    pub channel_status: Option<&'a str>,
    pub platform_status: Option<&'a str>,
    /// The channel's fee (scale 2); `None` skips the fee check.
    pub channel_fee: Option<i128>,
    /// The contracted rate (scale 6); `None` skips the fee check.
    pub fee_rate: Option<i128>,
    /// Largest accepted |channel − platform| (scale 2).
    pub tolerance: i128,
    /// A one-sided row may wait for the next day (inside the cut window, or grace left).
    pub pending_ok: bool,
    /// One side of the row was carried in from an earlier day.
    pub carried: bool,
}

/// The contracted fee of `amount` (scale 2) at `rate` (scale 6), rounded half away from zero
/// to the cent.
pub fn expected_fee(amount: i128, rate: i128) -> Option<i128> {
    let raw = amount.checked_mul(rate)?; // scale 8
    let unit = 1_000_000i128;
    let q = raw / unit;
    let r = raw % unit;
    Some(if r.abs() * 2 >= unit {
        q + raw.signum()
    } else {
        q
    })
}

/// The category of one row; `Err` names the impossible input.
pub fn classify(f: &RowFacts<'_>) -> std::result::Result<Category, &'static str> {
    if f.channel_duplicate {
        return Ok(Category::DuplicateInChannel);
    }
    if f.platform_duplicate {
        return Ok(Category::DuplicateInPlatform);
    }
    match (f.channel_present, f.platform_present) {
        (true, true) => {
            let amounts_agree = match (f.channel_amount, f.platform_amount) {
                (Some(c), Some(p)) => (c - p).abs() <= f.tolerance,
                _ => false,
            };
            if !amounts_agree {
                return Ok(Category::AmountMismatch);
            }
            if f.channel_status != f.platform_status {
                return Ok(Category::StatusMismatch);
            }
            if let (Some(fee), Some(rate), Some(amount)) =
                (f.channel_fee, f.fee_rate, f.channel_amount)
            {
                if expected_fee(amount, rate) != Some(fee) {
                    return Ok(Category::FeeMismatch);
                }
            }
            Ok(if f.carried {
                Category::CrossDayMatched
            } else {
                Category::Matched
            })
        }
        (true, false) if f.pending_ok => Ok(Category::CrossDayPending),
        (true, false) => Ok(Category::MissingInPlatform),
        (false, true) if f.pending_ok => Ok(Category::CrossDayPending),
        (false, true) => Ok(Category::MissingInChannel),
        (false, false) => Err("a row with neither a channel nor a platform record"),
    }
}

impl ScalarUDFImpl for ClassifyFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        use DataType::{Boolean, Utf8};
        args::arity(
            NAME,
            arg_types,
            &[
                Boolean, Boolean, Boolean, Boolean, MONEY, MONEY, Utf8, Utf8, MONEY, RATE, MONEY,
                Boolean, Boolean,
            ],
        )
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let [cp, pp, cd, pd, ca, pa, cs, ps, cf, rate, tol, pending, carried] = arrays.as_slice()
        else {
            return exec_err!("{NAME} takes 13 arguments, got {}", arrays.len());
        };
        let (cp, pp, cd, pd) = (
            bools(NAME, 0, cp)?,
            bools(NAME, 1, pp)?,
            bools(NAME, 2, cd)?,
            bools(NAME, 3, pd)?,
        );
        let (ca, pa) = (decimals(NAME, 4, ca)?, decimals(NAME, 5, pa)?);
        let (cs, ps) = (strings(NAME, 6, cs)?, strings(NAME, 7, ps)?);
        let (cf, rate, tol) = (
            decimals(NAME, 8, cf)?,
            decimals(NAME, 9, rate)?,
            decimals(NAME, 10, tol)?,
        );
        let (pending, carried) = (bools(NAME, 11, pending)?, bools(NAME, 12, carried)?);
        for (a, s) in [(ca, 2), (pa, 2), (cf, 2), (rate, 6), (tol, 2)] {
            args::require_scale(NAME, a, s)?;
        }

        let n = args.number_rows;
        let mut out = StringBuilder::with_capacity(n, n * 8);
        for row in 0..n {
            let facts = RowFacts {
                channel_present: flag(cp, row),
                platform_present: flag(pp, row),
                channel_duplicate: flag(cd, row),
                platform_duplicate: flag(pd, row),
                channel_amount: opt(ca, row, |a, i| a.value(i)),
                platform_amount: opt(pa, row, |a, i| a.value(i)),
                channel_status: opt(cs, row, |a, i| a.value(i)),
                platform_status: opt(ps, row, |a, i| a.value(i)),
                channel_fee: opt(cf, row, |a, i| a.value(i)),
                fee_rate: opt(rate, row, |a, i| a.value(i)),
                tolerance: opt(tol, row, |a, i| a.value(i)).unwrap_or(0),
                pending_ok: flag(pending, row),
                carried: flag(carried, row),
            };
            match classify(&facts) {
                Ok(c) => out.append_value(c.as_str()),
                Err(why) => return exec_err!("{NAME}: row {row}: {why}"),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(c: i128, p: i128) -> RowFacts<'static> {
        RowFacts {
            channel_present: true,
            platform_present: true,
            channel_amount: Some(c),
            platform_amount: Some(p),
            channel_status: Some("SUCCESS"),
            platform_status: Some("SUCCESS"),
            ..Default::default()
        }
    }

    #[test]
    fn equal_amounts_and_statuses_match() {
        assert_eq!(classify(&both(1000, 1000)), Ok(Category::Matched));
    }

    #[test]
    fn one_cent_off_is_a_mismatch_unless_tolerated() {
        assert_eq!(classify(&both(1001, 1000)), Ok(Category::AmountMismatch));
        let f = RowFacts {
            tolerance: 1,
            ..both(1001, 1000)
        };
        assert_eq!(classify(&f), Ok(Category::Matched));
    }

    #[test]
    fn amount_mismatch_outranks_status_mismatch() {
        let f = RowFacts {
            platform_status: Some("REFUNDED"),
            ..both(1, 2)
        };
        assert_eq!(classify(&f), Ok(Category::AmountMismatch));
        let f = RowFacts {
            platform_status: Some("REFUNDED"),
            ..both(2, 2)
        };
        assert_eq!(classify(&f), Ok(Category::StatusMismatch));
    }

    #[test]
    fn fee_is_checked_only_when_rate_and_fee_are_known() {
        // 100.00 at 0.6% is 0.60.
        let ok = RowFacts {
            channel_fee: Some(60),
            fee_rate: Some(6_000),
            ..both(10_000, 10_000)
        };
        assert_eq!(classify(&ok), Ok(Category::Matched));
        let bad = RowFacts {
            channel_fee: Some(61),
            ..ok.clone()
        };
        assert_eq!(classify(&bad), Ok(Category::FeeMismatch));
        let unknown = RowFacts {
            fee_rate: None,
            ..bad
        };
        assert_eq!(classify(&unknown), Ok(Category::Matched));
    }

    #[test]
    fn expected_fee_rounds_half_away_from_zero() {
        // 0.75 * 0.006 = 0.0045 -> 0.00; 2.50 * 0.006 = 0.015 -> 0.02
        assert_eq!(expected_fee(75, 6_000), Some(0));
        assert_eq!(expected_fee(250, 6_000), Some(2));
        assert_eq!(expected_fee(-250, 6_000), Some(-2));
    }

    #[test]
    fn one_sided_rows_wait_only_inside_the_window() {
        let ch = RowFacts {
            channel_present: true,
            channel_amount: Some(1),
            ..Default::default()
        };
        assert_eq!(classify(&ch), Ok(Category::MissingInPlatform));
        let ch_wait = RowFacts {
            pending_ok: true,
            ..ch.clone()
        };
        assert_eq!(classify(&ch_wait), Ok(Category::CrossDayPending));
        let pf = RowFacts {
            platform_present: true,
            ..Default::default()
        };
        assert_eq!(classify(&pf), Ok(Category::MissingInChannel));
    }

    #[test]
    fn a_carried_record_that_matches_is_cross_day_matched() {
        let f = RowFacts {
            carried: true,
            ..both(5, 5)
        };
        assert_eq!(classify(&f), Ok(Category::CrossDayMatched));
    }

    #[test]
    fn duplicates_win_and_empty_rows_are_errors() {
        let f = RowFacts {
            channel_duplicate: true,
            ..both(1, 2)
        };
        assert_eq!(classify(&f), Ok(Category::DuplicateInChannel));
        assert!(classify(&RowFacts::default()).is_err());
    }
}
