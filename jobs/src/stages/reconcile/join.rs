//! The join of a day, bucket by bucket: each lane (a session with tables of its own) takes
//! every `lanes`-th bucket, runs the query on it and routes its rows into a router of its own;
//! the lanes' routers are merged at the end. In this process, a lane per core, each bucket on
//! one partition: the buckets are the parallelism, so no bucket's rows are shuffled again.

use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use reckon_udfs::MatchOn;

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
}

/// Joins every bucket of `work` on `lanes` (one session each); the merged router and the rows
/// routed.
pub(super) async fn join(lanes: Vec<SessionContext>, work: Work) -> Result<(Router, u64)> {
    let work = Arc::new(work);
    let count = lanes.len() as u32;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, ctx) in lanes.into_iter().enumerate() {
        let work = work.clone();
        let lane = async move { run_lane(&ctx, &work, i as u32, count, started).await };
        // Each lane a task of its own, so lanes run on threads of their own: a one-partition
        // plan runs in the task that polls it.
        tasks.push(tokio::spawn(lane));
    }
    let mut merged: Option<Router> = None;
    let mut rows = 0;
    for t in tasks {
        let (router, n) = t
            .await
            .map_err(|e| Error::Other(format!("a lane of the join stopped: {e}")))??;
        rows += n;
        match (&mut merged, router) {
            (Some(m), Some(r)) => m.merge(r),
            (None, r) => merged = r,
            (Some(_), None) => {}
        }
    }
    let router = merged.ok_or_else(|| Error::Other("no bucket was joined".into()))?;
    Ok((router, rows))
}

/// Buckets `first`, `first + step`, … of `work` on `ctx`.
async fn run_lane(
    ctx: &SessionContext,
    work: &Work,
    first: u32,
    step: u32,
    started: std::time::Instant,
) -> Result<(Option<Router>, u64)> {
    let n = work.buckets;
    let mut router: Option<Router> = None;
    let mut rows = 0u64;
    for bucket in (first..n).step_by(step.max(1) as usize) {
        for side in &work.sides {
            inputs::register_side(ctx, side, (bucket, n, work.on)).await?;
        }
        inputs::register_carry(ctx, &work.carry_url, (bucket, n, work.on)).await?;
        let df =
            crate::sql::plan(ctx, &work.text, &work.origin, work.params.clone().into()).await?;
        let mut stream = df.execute_stream().await?;
        let router = match &mut router {
            Some(r) => r,
            None => {
                // The query's own columns, known from its plan: an empty day's diffs have
                // them too.
                let output = plain_strings(&RecordBatch::new_empty(stream.schema()))?.schema();
                router.insert(Router::new(work.date, work.grace_days, work.zone, output))
            }
        };
        router.bucket = (n > 1).then_some((bucket, n));
        while let Some(batch) = stream.next().await {
            let batch = plain_strings(&batch?)?;
            rows += batch.num_rows() as u64;
            router.route(&batch, &work.origin)?;
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
    Ok((router, rows))
}
