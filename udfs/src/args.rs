//! Typed access to UDF arguments: a wrong type is a planning bug, reported as an internal
//! error naming the function and argument rather than a panic.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::{exec_err, internal_datafusion_err, Result};

/// Money as the canonical schema has it.
pub const MONEY: DataType = DataType::Decimal128(18, 2);
/// Contracted fee rates: six decimal places (0.006000 is 0.6%).
pub const RATE: DataType = DataType::Decimal128(18, 6);
/// Instants, always UTC.
pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Checks the argument count of a function whose last `optional` arguments may be left out.
pub fn arity_optional(
    func: &str,
    arg_types: &[DataType],
    expected: &[DataType],
    optional: usize,
) -> Result<Vec<DataType>> {
    let least = expected.len() - optional;
    if arg_types.len() < least || arg_types.len() > expected.len() {
        return datafusion::common::plan_err!(
            "{func} takes {least} to {} arguments, got {}",
            expected.len(),
            arg_types.len()
        );
    }
    Ok(expected[..arg_types.len()].to_vec())
}

/// The fee rounding of each row from an optional text argument (absent or NULL: half up);
/// an unknown name is an execution error naming the valid ones.
pub fn fee_rounding<'a>(
    func: &'a str,
    i: usize,
    a: Option<&'a ArrayRef>,
) -> Result<impl Fn(usize) -> Result<crate::classify::FeeRounding> + 'a> {
    use crate::classify::FeeRounding;
    let a = a.map(|a| strings(func, i, a)).transpose()?;
    Ok(move |row: usize| match a {
        Some(a) if a.is_valid(row) => FeeRounding::parse(a.value(row)).ok_or_else(|| {
            datafusion::common::exec_datafusion_err!(
                "{func}: fee rounding {:?} is not one of {}",
                a.value(row),
                FeeRounding::NAMES.join(", ")
            )
        }),
        _ => Ok(FeeRounding::default()),
    })
}

/// Checks the argument count of a fixed-arity function.
pub fn arity(func: &str, arg_types: &[DataType], expected: &[DataType]) -> Result<Vec<DataType>> {
    if arg_types.len() != expected.len() {
        return datafusion::common::plan_err!(
            "{func} takes {} arguments, got {}",
            expected.len(),
            arg_types.len()
        );
    }
    Ok(expected.to_vec())
}

pub fn bools<'a>(func: &str, i: usize, a: &'a ArrayRef) -> Result<&'a BooleanArray> {
    a.as_boolean_opt()
        .ok_or_else(|| internal_datafusion_err!("{func}: argument {i} is not BOOLEAN"))
}

pub fn strings<'a>(func: &str, i: usize, a: &'a ArrayRef) -> Result<&'a StringArray> {
    a.as_string_opt::<i32>()
        .ok_or_else(|| internal_datafusion_err!("{func}: argument {i} is not UTF8"))
}

pub fn decimals<'a>(func: &str, i: usize, a: &'a ArrayRef) -> Result<&'a Decimal128Array> {
    a.as_primitive_opt::<Decimal128Type>()
        .ok_or_else(|| internal_datafusion_err!("{func}: argument {i} is not DECIMAL128"))
}

pub fn dates<'a>(func: &str, i: usize, a: &'a ArrayRef) -> Result<&'a Date32Array> {
    a.as_primitive_opt::<Date32Type>()
        .ok_or_else(|| internal_datafusion_err!("{func}: argument {i} is not DATE"))
}

pub fn ints<'a>(func: &str, i: usize, a: &'a ArrayRef) -> Result<&'a Int64Array> {
    a.as_primitive_opt::<Int64Type>()
        .ok_or_else(|| internal_datafusion_err!("{func}: argument {i} is not BIGINT"))
}

pub fn micros<'a>(func: &str, i: usize, a: &'a ArrayRef) -> Result<&'a TimestampMicrosecondArray> {
    a.as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| internal_datafusion_err!("{func}: argument {i} is not TIMESTAMP(us)"))
}

/// The value at `row`, or `None` when NULL.
pub fn opt<'a, A: Array, T>(a: &'a A, row: usize, get: impl Fn(&'a A, usize) -> T) -> Option<T> {
    if a.is_null(row) {
        None
    } else {
        Some(get(a, row))
    }
}

/// A boolean argument where NULL means false.
pub fn flag(a: &BooleanArray, row: usize) -> bool {
    !a.is_null(row) && a.value(row)
}

/// Formats a scale-2 decimal mantissa the way the outputs print money (`-12.30`).
pub fn money_text(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// Rejects a money value that is not at scale 2: coerce_types guarantees it, so a different
/// scale means the plan is broken.
pub fn require_scale(func: &str, a: &Decimal128Array, scale: i8) -> Result<()> {
    if a.scale() != scale {
        return exec_err!("{func}: expected scale {scale}, got {}", a.scale());
    }
    Ok(())
}
