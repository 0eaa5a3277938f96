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
///     carried,                                           -- a side came from the carry-over
///     $fee_rounding)                                     -- optional: 'half_up' (default),
///                                                        -- 'half_even', 'down' or 'up'
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
    /// How the channel rounds its fee.
    pub fee_rounding: FeeRounding,
    /// Largest accepted |channel − platform| (scale 2).
    pub tolerance: i128,
    /// A one-sided row may wait for the next day (inside the cut window, or grace left).
    pub pending_ok: bool,
    /// One side of the row was carried in from an earlier day.
    pub carried: bool,
}

/// How a channel rounds a computed fee to the cent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeeRounding {
    /// Half away from zero (四舍五入): 0.005 → 0.01. The default.
    #[default]
    HalfUp,
    /// Half to even (banker's rounding): 0.005 → 0.00, 0.015 → 0.02.
    HalfEven,
    /// Toward zero (truncation): 0.009 → 0.00.
    Down,
    /// Away from zero: 0.001 → 0.01.
    Up,
}

impl FeeRounding {
    /// Every mode's name, as the config and SQL spell it.
    pub const NAMES: [&'static str; 4] = ["half_up", "half_even", "down", "up"];

    /// The mode named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "half_up" => Self::HalfUp,
            "half_even" => Self::HalfEven,
            "down" => Self::Down,
            "up" => Self::Up,
            _ => return None,
        })
    }
}

/// The contracted fee of `amount` (scale 2) at `rate` (scale 6), rounded to the cent as
/// `rounding` says; `None` on overflow.
pub fn expected_fee(amount: i128, rate: i128, rounding: FeeRounding) -> Option<i128> {
    let raw = amount.checked_mul(rate)?; // scale 8
    let unit = 1_000_000i128;
    let q = raw / unit; // toward zero
    let r = (raw % unit).abs();
    let away = q + raw.signum();
    Some(match rounding {
        FeeRounding::Down => q,
        FeeRounding::Up if r > 0 => away,
        FeeRounding::Up => q,
        FeeRounding::HalfUp if r * 2 >= unit => away,
        FeeRounding::HalfUp => q,
        FeeRounding::HalfEven if r * 2 > unit || (r * 2 == unit && q % 2 != 0) => away,
        FeeRounding::HalfEven => q,
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
                if expected_fee(amount, rate, f.fee_rounding) != Some(fee) {
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
        args::arity_optional(
            NAME,
            arg_types,
            &[
                Boolean, Boolean, Boolean, Boolean, MONEY, MONEY, Utf8, Utf8, MONEY, RATE, MONEY,
                Boolean, Boolean, Utf8,
            ],
            1,
        )
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let (fixed, rounding) = arrays.split_at(arrays.len().min(13));
        let [cp, pp, cd, pd, ca, pa, cs, ps, cf, rate, tol, pending, carried] = fixed else {
            return exec_err!("{NAME} takes 13 or 14 arguments, got {}", arrays.len());
        };
        let rounding = args::fee_rounding(NAME, 13, rounding.first())?;
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
                fee_rounding: rounding(row)?,
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
    fn expected_fee_rounds_half_away_from_zero_by_default() {
        let f = |a, r| expected_fee(a, r, FeeRounding::default());
        // 0.75 * 0.006 = 0.0045 -> 0.00; 2.50 * 0.006 = 0.015 -> 0.02
        assert_eq!(f(75, 6_000), Some(0));
        assert_eq!(f(250, 6_000), Some(2));
        assert_eq!(f(-250, 6_000), Some(-2));
    }

    #[test]
    fn each_fee_rounding_mode_at_its_edges() {
        use FeeRounding::*;
        // amount × 0.006: 2.50 → 0.015 (a half, odd cent below), 4.17 → 0.02502, 1.50 → 0.009
        // (under a cent), 5.00 → 0.03 (exact), 416.67 → 2.50002 (just above a cent)
        let cases: [(i128, [i128; 4]); 5] = [
            (250, [2, 2, 1, 2]),
            (417, [3, 3, 2, 3]),
            (150, [1, 1, 0, 1]),
            (500, [3, 3, 3, 3]),
            (41_667, [250, 250, 250, 251]),
        ];
        for (amount, want) in cases {
            for (mode, w) in [HalfUp, HalfEven, Down, Up].into_iter().zip(want) {
                assert_eq!(
                    expected_fee(amount, 6_000, mode),
                    Some(w),
                    "{amount} {mode:?}"
                );
                assert_eq!(
                    expected_fee(-amount, 6_000, mode),
                    Some(-w),
                    "-{amount} {mode:?}"
                );
            }
        }
        // A half with an even cent below: 2.50 × 0.01 = 0.025 → half_even 0.02, half_up 0.03.
        assert_eq!(expected_fee(250, 10_000, HalfEven), Some(2));
        assert_eq!(expected_fee(250, 10_000, HalfUp), Some(3));
        assert_eq!(expected_fee(250, 10_000, Down), Some(2));
        assert_eq!(expected_fee(250, 10_000, Up), Some(3));
        for n in FeeRounding::NAMES {
            assert!(FeeRounding::parse(n).is_some(), "{n}");
        }
        assert_eq!(FeeRounding::parse("HALF_UP"), None);
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
