//! Classifying the pairs a micro-batch found with the batch job's own rules: the channel's
//! `reconcile.sql` (the built-in one, or the analyst's in `sql_dir`) runs over the pairs as its
//! `bill` and `platform` tables, with the channel's parameters, on an embedded session. One
//! definition of the rules: a tolerance, a fee rate or an edited category in the SQL applies
//! to the stream as it does to the day's batch.
//!
//! A micro-batch classifies a few thousand pairs: planning the SQL would cost more than running
//! it. So the SQL is planned once for each channel and day, over tables that read whatever pairs
//! the batch put in them when the plan runs, and the plan runs again for every batch (its
//! operators' state reset in between, as DataFusion's recursive queries do).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};

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

/// `reconcile.sql`, read once, and its plans.
pub struct Matcher {
    text: String,
    origin: String,
    /// By channel and day (the SQL's parameters).
    plans: HashMap<(String, NaiveDate), Prepared>,
}

/// Plans kept at most (a stream has one or two days of each channel open).
const PLANS_KEPT: usize = 16;

/// `reconcile.sql` planned for one channel and day, over a `bill` and a `platform` table that
/// read what their slots hold when the plan runs.
struct Prepared {
    ctx: SessionContext,
    plan: Arc<dyn ExecutionPlan>,
    bill: Slot,
    platform: Slot,
}

/// A table's rows for the next run of a plan.
#[derive(Debug, Clone)]
struct Slot {
    schema: SchemaRef,
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl Slot {
    fn new(schema: SchemaRef) -> Slot {
        Slot {
            schema,
            batches: Arc::default(),
        }
    }

    fn fill(&self, batch: RecordBatch) {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        b.clear();
        b.push(batch);
    }

    fn clear(&self) {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl PartitionStream for Slot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self
            .batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}

/// A side of a pair: the record and where it came from.
pub type Sided<'a> = (&'a Record, &'a Position);

impl Matcher {
    /// The SQL the config's `sql_dir` holds (or the built-in one).
    pub fn new(sql: &crate::sql::SqlDir) -> Result<Matcher> {
        let (text, origin) = sql.read(contracts::reconcile::FILE)?;
        Ok(Matcher {
            text,
            origin,
            plans: HashMap::new(),
        })
    }

    /// `reconcile.sql` planned for `channel` on `day`, over tables of these schemas.
    async fn prepare(
        &self,
        channel: &Channel,
        day: NaiveDate,
        bill: SchemaRef,
        platform: SchemaRef,
    ) -> Result<Prepared> {
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(8192);
        // Filters a join derives from the rows it read: a plan run again must not keep them.
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        optimizer.enable_topk_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        let ctx = crate::engine::analyst_context(config);
        let (bill, platform) = (Slot::new(bill), Slot::new(platform));
        for (name, slot) in [("bill", &bill), ("platform", &platform)] {
            let table = StreamingTable::try_new(slot.schema.clone(), vec![Arc::new(slot.clone())])?;
            ctx.register_table(name, Arc::new(table))?;
        }
        let carry = crate::schema::CARRY.clone();
        ctx.register_table(
            "carry_in",
            Arc::new(MemTable::try_new(carry, vec![vec![]])?),
        )?;
        let params: ParamValues = contracts::reconcile::params(channel, day).into();
        let df = crate::sql::plan(&ctx, &self.text, &self.origin, params).await?;
        let plan = df.create_physical_plan().await?;
        Ok(Prepared {
            ctx,
            plan,
            bill,
            platform,
        })
    }

    /// The verdict of each pair (channel side, platform side) of `channel` on `day`, by match
    /// key.
    pub async fn classify(
        &mut self,
        channel: &Channel,
        day: NaiveDate,
        pairs: &[(Sided<'_>, Sided<'_>)],
    ) -> Result<HashMap<String, Verdict>> {
        if pairs.is_empty() {
            return Ok(HashMap::new());
        }
        let channel_rows: Vec<Sided> = pairs.iter().map(|(c, _)| *c).collect();
        let platform_rows: Vec<Sided> = pairs.iter().map(|(_, p)| *p).collect();
        let bill = super::tables::bill(&channel_rows, day)?;
        let platform = super::tables::platform(&platform_rows)?;
        let key = (channel.name.clone(), day);
        let fits = self.plans.get(&key).is_some_and(|p| {
            p.bill.schema == bill.schema() && p.platform.schema == platform.schema()
        });
        if !fits {
            let prepared = self
                .prepare(channel, day, bill.schema(), platform.schema())
                .await?;
            if self.plans.len() >= PLANS_KEPT {
                self.plans.clear();
            }
            self.plans.insert(key.clone(), prepared);
        }
        let prepared = self
            .plans
            .get(&key)
            .ok_or_else(|| Error::Other("stream: a prepared plan vanished".into()))?;
        prepared.bill.fill(bill);
        prepared.platform.fill(platform);
        let plan = reset_plan_states(prepared.plan.clone())?;
        let ran = datafusion::physical_plan::collect(plan, prepared.ctx.task_ctx()).await;
        prepared.bill.clear();
        prepared.platform.clear();
        let mut out = HashMap::with_capacity(pairs.len());
        for b in ran? {
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
