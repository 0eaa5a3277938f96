//! Bill formats: declarative templates (`formats/*.toml`) and the streaming engine that
//! turns a bill into canonical rows.

mod engine;
mod template;

pub use engine::{normalize_file, NormalizeStats, Target, TotalsResult};

pub use template::Template;
