//! `reckon_diff_id`: a difference's id, stable across reruns of the same inputs.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use sha2::{Digest, Sha256};

use crate::args::strings;

const NAME: &str = "reckon_diff_id";

/// The first 128 bits of the SHA-256 of its arguments, as 32 hex characters. NULL and the
/// empty string hash differently; so do `('ab','c')` and `('a','bc')`.
///
/// ```sql
/// SELECT reckon_diff_id($channel, CAST($bill_date AS VARCHAR), match_key, 'CHANNEL')
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DiffIdFunc {
    signature: Signature,
}

impl Default for DiffIdFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl DiffIdFunc {
    /// The function with its user-defined (variadic, coerced to text) signature.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The id of `parts`.
pub fn diff_id<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        match p {
            // A length prefix keeps the encoding unambiguous.
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    hex::encode(&h.finalize()[..16])
}

impl ScalarUDFImpl for DiffIdFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() {
            return datafusion::common::plan_err!("{NAME} needs at least one argument");
        }
        Ok(vec![DataType::Utf8; arg_types.len()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        if arrays.is_empty() {
            return exec_err!("{NAME} needs at least one argument");
        }
        let cols: Vec<&StringArray> = arrays
            .iter()
            .enumerate()
            .map(|(i, a)| strings(NAME, i, a))
            .collect::<Result<_>>()?;
        let n = args.number_rows;
        let mut out = StringBuilder::with_capacity(n, n * 32);
        for row in 0..n {
            let parts = cols.iter().map(|c| {
                if datafusion::arrow::array::Array::is_null(*c, row) {
                    None
                } else {
                    Some(c.value(row))
                }
            });
            out.append_value(diff_id(parts));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_unambiguous() {
        let a = diff_id([Some("ab"), Some("c")]);
        assert_eq!(a, diff_id([Some("ab"), Some("c")]));
        assert_ne!(a, diff_id([Some("a"), Some("bc")]));
        assert_ne!(diff_id([None]), diff_id([Some("")]));
        assert_eq!(a.len(), 32);
    }
}
