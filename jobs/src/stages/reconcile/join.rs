//! The join of a day, bucket by bucket: each lane (a session of one partition, with tables of
//! its own) takes every `lanes`-th bucket and runs the query on it, routed by the engine
//! ([`RouteExec`]), which ages the bucket's differences and writes its parts: the client
//! receives each bucket's report (statistics, the ageing's counts and the parts written). The
//! buckets are the parallelism, so no bucket's rows are shuffled again: in this process a lane
//! per core, on a cluster a job per bucket, several at once.
//!
//! [`RouteExec`]: super::exec::RouteExec

use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use reckon_udfs::MatchOn;

use super::exec::{Reports, RouteNode, RouteSpec};
use super::inputs::{self, Side};
use super::plain_strings;
use super::route::Router;
use crate::error::{Error, Result};

/// What every lane needs to join its buckets.
pub(super) struct Work {
    pub text: String,
    pub origin: String,
    pub params: Vec<(&'static str, ScalarValue)>,
    pub sides: Vec<Side>,
    pub carry_url: String,
    pub on: MatchOn,
    pub buckets: u32,
    pub date: NaiveDate,
    pub grace_days: i64,
    pub zone: Tz,
    /// The folder (a URL ending in `/`) the engine writes the routed parts to.
    pub parts: String,
    pub channel: String,
    /// The ageing's history: the day before's ledger and an earlier run's (URLs), and
    /// whether the bill changed since that run.
    pub ledger: Option<String>,
    pub earlier: Option<String>,
    pub bill_changed: bool,
    /// The review desk's decisions in force (a URL), if any.
    pub decisions: Option<String>,
}

/// Joins every bucket of `work` on `lanes` (sessions of one partition, each taking every
/// n-th bucket; in this process or on a cluster), the engine routing the rows and writing
/// the parts. Returns the router holding the day's statistics, the reports (the parts and
/// the ageing's counts) and the rows routed.
pub(super) async fn join(lanes: Vec<SessionContext>, work: Work) -> Result<(Router, Reports, u64)> {
    let work = Arc::new(work);
    let started = std::time::Instant::now();
    let mut reports = Reports::default();
    let mut output = None;
    let count = lanes.len() as u32;
    let mut tasks = Vec::new();
    for (i, ctx) in lanes.into_iter().enumerate() {
        let work = work.clone();
        let lane = async move { run_lane(&ctx, &work, i as u32, count, started).await };
        // Each lane a task of its own, so lanes run on threads of their own: a
        // one-partition plan runs in the task that polls it.
        tasks.push(tokio::spawn(lane));
    }
    for t in tasks {
        let (r, schema) = t
            .await
            .map_err(|e| Error::Other(format!("a lane of the join stopped: {e}")))??;
        reports.merge(r);
        output = output.or(schema);
    }
    let output = output.ok_or_else(|| Error::Other("no bucket was joined".into()))?;
    let mut router = Router::new(work.date, work.grace_days, work.zone, output);
    let rows = router.absorb(&reports);
    Ok((router, reports, rows))
}

/// Buckets `first`, `first + step`, … of `work` on `ctx`: their reports, and the query's
/// output columns (strings plain).
async fn run_lane(
    ctx: &SessionContext,
    work: &Work,
    first: u32,
    step: u32,
    started: std::time::Instant,
) -> Result<(Reports, Option<SchemaRef>)> {
    let n = work.buckets;
    let mut reports = Reports::default();
    let mut output = None;
    for bucket in (first..n).step_by(step.max(1) as usize) {
        let (plan, schema) = plan_bucket(ctx, work, bucket).await?;
        output = output.or(Some(schema));
        let routed = DataFrame::new(ctx.state(), plan);
        if bucket == first && tracing::enabled!(tracing::Level::DEBUG) {
            // The plan the engine runs for a bucket, for whoever tunes the SQL
            // (`RECKON_LOG=reckon=debug`).
            let physical = routed.clone().create_physical_plan().await?;
            let shown = datafusion::physical_plan::displayable(physical.as_ref()).indent(true);
            tracing::debug!(bucket, "the bucket's physical plan:\n{shown}");
        }
        for b in routed.collect().await.map_err(reckon_error)? {
            reports.add(&b)?;
        }
        if n > 1 {
            tracing::info!(
                bucket,
                of = n,
                seconds = started.elapsed().as_secs_f64(),
                "bucket reconciled"
            );
        }
    }
    Ok((reports, output))
}

/// Bucket `bucket` of `work` planned on `ctx` (its tables registered there) under the routing
/// node, and the query's output columns (strings plain).
async fn plan_bucket(
    ctx: &SessionContext,
    work: &Work,
    bucket: u32,
) -> Result<(datafusion::logical_expr::LogicalPlan, SchemaRef)> {
    let n = work.buckets;
    for side in &work.sides {
        inputs::register_side(ctx, side, (bucket, n, work.on)).await?;
    }
    inputs::register_carry(ctx, &work.carry_url, (bucket, n, work.on)).await?;
    let df = crate::sql::plan(ctx, &work.text, &work.origin, work.params.clone().into()).await?;
    // The query's own columns, known from its plan: an empty day's diffs have them.
    let schema = Arc::new(df.schema().as_arrow().clone());
    let output = plain_strings(&RecordBatch::new_empty(schema))?.schema();
    let spec = RouteSpec {
        date: work.date.to_string(),
        grace_days: work.grace_days,
        zone: work.zone.name().to_string(),
        origin: work.origin.clone(),
        bucket: (n > 1).then_some((bucket, n)),
        out: work.parts.clone(),
        tag: format!("b{bucket:05}"),
        channel: work.channel.clone(),
        ledger: work.ledger.clone(),
        earlier: work.earlier.clone(),
        bill_changed: work.bill_changed,
        decisions: work.decisions.clone(),
    };
    let (_, plan) = df.into_parts();
    Ok((RouteNode::plan(plan, spec)?, output))
}

/// The error the router raised inside the plan, as it was raised (a wrong query is a
/// configuration error, exit 2), else the engine's.
pub(super) fn reckon_error(e: datafusion::error::DataFusionError) -> Error {
    use datafusion::error::DataFusionError as D;
    let mut cur = &e;
    loop {
        match cur {
            D::External(inner) => {
                if let Some(Error::Config(m)) = inner.downcast_ref::<Error>() {
                    return Error::Config(m.clone());
                }
                break;
            }
            D::Context(_, inner) => cur = inner,
            D::Shared(inner) => cur = inner,
            _ => break,
        }
    }
    Error::Engine(e)
}
