//! reckon's scalar UDFs: the classification of reconciliation differences.
//!
//! Every UDF is stateless (parameters arrive as literal arguments), so it travels to Ballista
//! executors by name. [`register_all`] is the one place that registers them; the client, the
//! scheduler and the executors all call it.

mod args;
mod bucket;
mod category;
mod classify;
mod cut_window;
mod diff_id;
mod reason;

use std::sync::Arc;

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ScalarUDF;

pub use args::money_text;
pub use bucket::{bucket_of, key_hash, record_hash, BucketFunc, MatchOn};
pub use category::Category;
pub use classify::ClassifyFunc;
pub use classify::{expected_fee, FeeRounding};
pub use cut_window::{end_of_day_micros, InCutWindowFunc};
pub use diff_id::DiffIdFunc;
pub use reason::{reason, ReasonFacts, ReasonFunc};

/// Every reckon UDF, ready to register.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(ClassifyFunc::new())),
        Arc::new(ScalarUDF::from(ReasonFunc::new())),
        Arc::new(ScalarUDF::from(InCutWindowFunc::new())),
        Arc::new(ScalarUDF::from(DiffIdFunc::new())),
        Arc::new(ScalarUDF::from(BucketFunc::new())),
    ]
}

/// Registers every reckon UDF in `registry` (a `SessionContext`, a `SessionState`, or a
/// Ballista executor's function registry), replacing any function of the same name.
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    for udf in functions() {
        registry.register_udf(udf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[test]
    fn every_udf_resolves_by_name_after_register_all() {
        let ctx = SessionContext::new();
        let mut state = ctx.state();
        register_all(&mut state).expect("register");
        for name in [
            "reckon_classify",
            "reckon_reason",
            "reckon_in_cut_window",
            "reckon_diff_id",
            "reckon_bucket",
        ] {
            assert!(
                state.scalar_functions().contains_key(name),
                "{name} missing"
            );
        }
        // The built-ins are kept beside ours.
        assert!(state.scalar_functions().contains_key("coalesce"));
    }
}
