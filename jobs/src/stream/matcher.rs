//! Classifying the pairs a micro-batch found with the batch job's own rules: the channel's
//! `reconcile.sql` (the built-in one, or the analyst's in `sql_dir`) runs over the pairs as its
//! `bill` and `platform` tables, with the channel's parameters, on an embedded session. One
//! definition of the rules: a tolerance, a fee rate or an edited category in the SQL applies
//! to the stream as it does to the day's batch.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionConfig;

use super::record::{Position, Record};
use crate::config::Channel;
use crate::contracts;
use crate::error::{Error, Result};

/// A pair's category and the sentence that explains it (`None` for MATCHED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub category: String,
    pub reason: Option<String>,
}

/// `reconcile.sql`, read once.
#[derive(Debug, Clone)]
pub struct Matcher {
    text: String,
    origin: String,
}

/// A side of a pair: the record and where it came from.
pub type Sided<'a> = (&'a Record, &'a Position);

impl Matcher {
    /// The SQL the config's `sql_dir` holds (or the built-in one).
    pub fn new(sql: &crate::sql::SqlDir) -> Result<Matcher> {
        let (text, origin) = sql.read(contracts::reconcile::FILE)?;
        Ok(Matcher { text, origin })
    }

    /// The verdict of each pair (channel side, platform side) of `channel` on `day`, by match
    /// key.
    pub async fn classify(
        &self,
        channel: &Channel,
        day: NaiveDate,
        pairs: &[(Sided<'_>, Sided<'_>)],
    ) -> Result<HashMap<String, Verdict>> {
        if pairs.is_empty() {
            return Ok(HashMap::new());
        }
        let ctx = crate::engine::analyst_context(
            SessionConfig::new()
                .with_target_partitions(1)
                .with_batch_size(8192),
        );
        let channel_rows: Vec<Sided> = pairs.iter().map(|(c, _)| *c).collect();
        let platform_rows: Vec<Sided> = pairs.iter().map(|(_, p)| *p).collect();
        for (name, batch) in [
            ("bill", super::tables::bill(&channel_rows, day)?),
            ("platform", super::tables::platform(&platform_rows)?),
        ] {
            let schema = batch.schema();
            ctx.register_table(
                name,
                Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
            )?;
        }
        let carry = crate::schema::CARRY.clone();
        ctx.register_table(
            "carry_in",
            Arc::new(MemTable::try_new(carry, vec![vec![]])?),
        )?;
        let params: ParamValues = contracts::reconcile::params(channel, day).into();
        let df = crate::sql::plan(&ctx, &self.text, &self.origin, params).await?;
        let mut out = HashMap::with_capacity(pairs.len());
        for b in df.collect().await? {
            let col = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>().cloned())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{}: the output has no text column {name}",
                            self.origin
                        ))
                    })
            };
            let (keys, categories, reasons) = (col("match_key")?, col("category")?, col("reason")?);
            for i in 0..b.num_rows() {
                if keys.is_null(i) || categories.is_null(i) {
                    continue;
                }
                out.insert(
                    keys.value(i).to_string(),
                    Verdict {
                        category: categories.value(i).to_string(),
                        reason: (!reasons.is_null(i)).then(|| reasons.value(i).to_string()),
                    },
                );
            }
        }
        Ok(out)
    }
}
