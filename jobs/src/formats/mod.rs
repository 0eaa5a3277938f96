//! Bill formats: declarative templates (`formats/*.toml`) and the streaming engine that
//! turns a bill into canonical rows.
//!
//! - `template`: the template model, loading and checks (errors name the template's line);
//! - `engine`: containers (plain, zip, gzip), encodings, the delimited body, totals;
//! - `xml`: the XML body (camt.053);
//! - `rows`: a record's fields to a canonical row (mappings, signs, skips, totals sums);
//! - `values`: exact money and instants;
//! - `writer`: canonical and rejected rows to Parquet.

mod delimited;
mod engine;
mod lines;
mod rows;
mod split;
mod template;
mod totals;
mod values;
mod writer;
mod xml;

pub use engine::{is_gzip, normalize_bytes, normalize_file, NormalizeStats, TotalsResult};
pub use template::{ContainerKind, Template, BUILT_IN};
pub use writer::Target;

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::error::{IoContext, Result};

/// What `reckon normalize` wrote.
#[derive(Debug)]
pub struct Normalized {
    /// The counts and totals.
    pub stats: NormalizeStats,
    /// `OUT/normalized.parquet`.
    pub normalized: PathBuf,
    /// `OUT/rejected.parquet`.
    pub rejected: PathBuf,
    /// The template's name.
    pub template: String,
}

/// Normalizes one bill file into `out` (`normalized.parquet`, `rejected.parquet`), for
/// analysts and onboarding. Both files appear together when the bill passed; a bill its own
/// totals refuse leaves `rejected.parquet` alone, to show which lines broke them.
pub fn normalize_to_dir(
    format: &str,
    input: &Path,
    out: &Path,
    bill_date: Option<NaiveDate>,
    channel: Option<&str>,
    max_rejected: u64,
) -> Result<Normalized> {
    let template = Template::load(format, None)?;
    std::fs::create_dir_all(out).at(out)?;
    let (norm, rej) = (out.join("normalized.parquet"), out.join("rejected.parquet"));
    let (norm_tmp, rej_tmp) = (
        out.join(".normalized.parquet.partial"),
        out.join(".rejected.parquet.partial"),
    );
    let default_channel = template
        .name
        .split('_')
        .next()
        .unwrap_or("channel")
        .to_string();
    let source_name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.display().to_string());
    let target = Target {
        channel: channel.unwrap_or(&default_channel),
        bill_date,
        source_name: &source_name,
        normalized: &norm_tmp,
        buckets: None,
        rejected: &rej_tmp,
        max_rejected,
    };
    let result = normalize_file(&template, input, &target);
    match result {
        Ok(NormalizeStats {
            refused: Some(why), ..
        }) => {
            // The rows that broke the totals are in the rejected file: keep it, and only it.
            let _ = std::fs::remove_file(&norm_tmp);
            let _ = std::fs::remove_file(&norm);
            std::fs::rename(&rej_tmp, &rej).at(&rej)?;
            Err(crate::error::Error::BadInput(format!(
                "{why}; the rejected rows are in {}",
                rej.display()
            )))
        }
        Ok(stats) => {
            std::fs::rename(&norm_tmp, &norm).at(&norm)?;
            std::fs::rename(&rej_tmp, &rej).at(&rej)?;
            Ok(Normalized {
                stats,
                normalized: norm,
                rejected: rej,
                template: template.name.clone(),
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&norm_tmp);
            let _ = std::fs::remove_file(&rej_tmp);
            Err(e)
        }
    }
}
