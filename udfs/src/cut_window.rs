//! `reckon_in_cut_window`: is an instant within the daily-cut window of the bill day's end.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use datafusion::arrow::array::{ArrayRef, BooleanBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{self, dates, ints, micros, opt, strings};

const NAME: &str = "reckon_in_cut_window";

/// True when `ts` lies within `window_secs` seconds of the midnight that ends `bill_date` in
/// the time zone `tz` (either side of it): such a one-sided record may show up in the other
/// side's next day.
///
/// ```sql
/// SELECT reckon_in_cut_window(TIMESTAMP '2026-11-20T15:59:58Z', DATE '2026-11-20',
///                             'Asia/Shanghai', 300)   -- true: 23:59:58 in Shanghai
/// ```
///
/// An unknown time zone is an execution error naming it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct InCutWindowFunc {
    signature: Signature,
}

impl Default for InCutWindowFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl InCutWindowFunc {
    /// The function with its user-defined signature.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The instant (UTC microseconds) of the midnight that ends `day` in `tz`.
pub fn end_of_day_micros(day: NaiveDate, tz: Tz) -> Option<i64> {
    let next = day.checked_add_signed(Duration::days(1))?;
    let local = next.and_hms_opt(0, 0, 0)?;
    // A zone that skips midnight (a DST jump) starts the day at the first valid instant.
    let instant = tz.from_local_datetime(&local).earliest().or_else(|| {
        tz.from_local_datetime(&(local + Duration::hours(1)))
            .earliest()
    })?;
    Some(instant.timestamp_micros())
}

fn day_from_date32(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(Duration::days(days.into()))
}

impl ScalarUDFImpl for InCutWindowFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        args::arity(
            NAME,
            arg_types,
            &[
                args::utc_micros(),
                DataType::Date32,
                DataType::Utf8,
                DataType::Int64,
            ],
        )
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let [ts, day, tz, secs] = arrays.as_slice() else {
            return exec_err!("{NAME} takes 4 arguments, got {}", arrays.len());
        };
        let (ts, day, tz, secs) = (
            micros(NAME, 0, ts)?,
            dates(NAME, 1, day)?,
            strings(NAME, 2, tz)?,
            ints(NAME, 3, secs)?,
        );
        // Usually one bill date and one zone per call: cache the day's end per pair.
        let mut ends: HashMap<(i32, &str), i64> = HashMap::new();
        let n = args.number_rows;
        let mut out = BooleanBuilder::with_capacity(n);
        for row in 0..n {
            let (Some(t), Some(d), Some(z), Some(w)) = (
                opt(ts, row, |a, i| a.value(i)),
                opt(day, row, |a, i| a.value(i)),
                opt(tz, row, |a, i| a.value(i)),
                opt(secs, row, |a, i| a.value(i)),
            ) else {
                out.append_null();
                continue;
            };
            let end = match ends.get(&(d, z)) {
                Some(e) => *e,
                None => {
                    let zone: Tz = match z.parse() {
                        Ok(zone) => zone,
                        Err(_) => return exec_err!("{NAME}: unknown time zone {z:?}"),
                    };
                    let Some(e) = day_from_date32(d).and_then(|day| end_of_day_micros(day, zone))
                    else {
                        return exec_err!("{NAME}: date {d} is out of range");
                    };
                    ends.insert((d, z), e);
                    e
                }
            };
            let window = w.saturating_mul(1_000_000);
            out.append_value(t.saturating_sub(end).saturating_abs() <= window);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_day_ends_at_16_utc() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let end = end_of_day_micros(day, chrono_tz::Asia::Shanghai).expect("end");
        let want = chrono::Utc
            .with_ymd_and_hms(2026, 11, 20, 16, 0, 0)
            .single()
            .expect("utc")
            .timestamp_micros();
        assert_eq!(end, want);
    }

    #[test]
    fn a_zone_that_skips_midnight_ends_the_day_at_the_first_valid_instant() {
        // Santiago skips from 00:00 to 01:00 on 2026-09-06.
        let day = NaiveDate::from_ymd_opt(2026, 9, 5).expect("date");
        assert!(end_of_day_micros(day, chrono_tz::America::Santiago).is_some());
    }
}
