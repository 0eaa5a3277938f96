//! The router as an operator of the plan (`RouteExec`), so the engine routes the joined rows
//! where they are made (an executor, on a cluster) and the client receives small results only.
//!
//! Each partition of the reconciliation's output is routed by its own [`Router`]: its
//! differences (sorted by `diff_id`) and its carry-over rows are written as Parquet parts under
//! the folder the spec names (the scratch folder in this process, the storage root for a
//! cluster), and the partition returns one small batch, the [`REPORT`]: its statistics per
//! category and hour and per category and merchant, and the parts it wrote. The client merges
//! the reports and reads the parts.
//!
//! The plan reaches a Ballista scheduler as a logical plan: [`RouteNode`] is the logical node,
//! [`RoutePlanner`] plans it as [`RouteExec`], and the codecs carry both (as the spec's JSON)
//! beside Ballista's own nodes. The scheduler and executor binaries install them
//! ([`crate::engine`]'s sessions do the same for this process and Ballista standalone).

use std::cmp::Ordering;
use std::fmt;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::merge::{self, MergeExec, MergeNode};
use super::plain_strings;
use super::route::{sorted, stats_at, stats_columns, Router};
use crate::error::{Error, Result};
use crate::records::{AgeingStats, CategoryStats};
use crate::schema;
use crate::stages::ageing;

/// What visits an operator's expressions (reckon's operators have none).
pub(super) type Visit<'a> = dyn FnMut(
        &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    ) -> datafusion::common::Result<Recursion>
    + 'a;
pub(super) use datafusion::common::tree_node::TreeNodeRecursion as Recursion;

/// The properties of an operator of one partition that returns a small report of `schema`.
pub(super) fn report_props(schema: SchemaRef) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        datafusion::physical_plan::Partitioning::UnknownPartitioning(1),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The one input of a routing node or operator.
fn only_input<T: Clone>(inputs: &[T]) -> datafusion::common::Result<T> {
    match inputs {
        [one] => Ok(one.clone()),
        _ => Err(DataFusionError::Internal(format!(
            "ReckonRoute has one input, not {}",
            inputs.len()
        ))),
    }
}

/// What a part file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartKind {
    /// Differences, aged, sorted by `diff_id`.
    Diffs,
    /// Carry-over rows ([`schema::CARRY`]), sorted by [`CARRY_ORDER`].
    Carry,
    /// Ledger entries ([`schema::LEDGER`]), sorted by `ageing_key`.
    Ledger,
    /// The entries an earlier run of the day contributed (differences this run resolves),
    /// sorted by `ageing_key`.
    Earlier,
    /// Statistics cells per category and hour ([`schema::BY_HOUR`]), summed over the parts.
    Hours,
    /// Statistics cells per category and merchant ([`schema::BY_MERCHANT`]), summed.
    Merchants,
}

/// The order of the carry-over's rows: the same inputs give the same file whatever order
/// the engine produced.
pub const CARRY_ORDER: [&str; 4] = ["side", "merchant_order_id", "refund_id", "source_line"];

impl PartKind {
    pub const ALL: [PartKind; 6] = [
        PartKind::Diffs,
        PartKind::Carry,
        PartKind::Ledger,
        PartKind::Earlier,
        PartKind::Hours,
        PartKind::Merchants,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PartKind::Diffs => "diffs",
            PartKind::Carry => "carry",
            PartKind::Ledger => "ledger",
            PartKind::Earlier => "earlier",
            PartKind::Hours => "hours",
            PartKind::Merchants => "merchants",
        }
    }

    /// Whether its parts are cells summed into the day's file (else rows merged in order).
    pub fn summed(self) -> bool {
        matches!(self, PartKind::Hours | PartKind::Merchants)
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The columns its parts and its day's file are sorted by.
    pub fn order(self) -> Vec<String> {
        let cols: &[&str] = match self {
            PartKind::Diffs => &["diff_id"],
            PartKind::Carry => &CARRY_ORDER,
            PartKind::Ledger | PartKind::Earlier => &["ageing_key"],
            PartKind::Hours => &["category", "hour"],
            PartKind::Merchants => &["category", "merchant_id"],
        };
        cols.iter().map(|c| c.to_string()).collect()
    }
}

/// What a routing partition needs besides its rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The bill date, `YYYY-MM-DD`.
    pub date: String,
    pub grace_days: i64,
    /// The channel's time zone (IANA name), for the hour of each row.
    pub zone: String,
    /// Where the SQL came from, for errors.
    pub origin: String,
    /// The bucket joined and the bucket count, when more than one.
    pub bucket: Option<(u32, u32)>,
    /// The folder (a URL ending in `/`) the parts are written to.
    pub out: String,
    /// The parts' name prefix, unique per bucket (`b00003`).
    pub tag: String,
    /// The channel (its differences' ageing keys start from it).
    pub channel: String,
    /// The ledger of the day before (a URL), whose open differences carry forward.
    pub ledger: Option<String>,
    /// The ledger an earlier run of this day wrote (a URL), whose differences this run may
    /// resolve.
    pub earlier: Option<String>,
    /// Whether the bill changed since that earlier run (a re-issued bill).
    pub bill_changed: bool,
    /// The review desk's decisions in force when the day was reconciled (a URL), by ageing key.
    pub decisions: Option<String>,
}

/// The `aged` row of the open differences whose decision no longer fits them.
const FLAGGED: &str = "flagged";

/// What a routing partition returns: one row per statistics cell of category and hour (`kind`
/// `hour`: the day's counts), one per count of the ageing (`kind` `aged`: the state, or
/// `resolved:` and what resolved them, in `category`; the first day of the oldest open
/// difference in `merchant`), and one per part file written (its [`PartKind`], its rows in
/// `rows`).
pub static REPORT: LazyLock<SchemaRef> = LazyLock::new(|| {
    let count = |n: &str| Field::new(n, DataType::UInt64, false);
    let sum = |n: &str| Field::new(n, schema::MONEY_SUM, false);
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, true),
        Field::new("hour", DataType::Int32, true),
        Field::new("merchant", DataType::Utf8, true),
        count("rows"),
        count("channel_records"),
        count("platform_records"),
        count("carried_records"),
        sum("channel_amount"),
        sum("platform_amount"),
        count("refund_explained"),
        Field::new("file", DataType::Utf8, true),
    ]))
});

/// The routing of a plan's output, as a logical node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteNode {
    input: LogicalPlan,
    spec: RouteSpec,
    schema: DFSchemaRef,
}

impl RouteNode {
    /// `input` (the reconciliation's plan) routed as `spec` says.
    pub fn plan(input: LogicalPlan, spec: RouteSpec) -> Result<LogicalPlan> {
        let schema = Arc::new(DFSchema::try_from(REPORT.as_ref().clone())?);
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(RouteNode {
                input,
                spec,
                schema,
            }),
        }))
    }
}

impl PartialOrd for RouteNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.spec.partial_cmp(&other.spec) {
            Some(Ordering::Equal) => self.input.partial_cmp(&other.input),
            o => o,
        }
    }
}

impl UserDefinedLogicalNodeCore for RouteNode {
    fn name(&self) -> &str {
        "ReckonRoute"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ReckonRoute: to {}{}", self.spec.out, self.spec.tag)
    }
    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        inputs: Vec<LogicalPlan>,
    ) -> datafusion::common::Result<Self> {
        Ok(Self {
            input: only_input(&inputs)?,
            spec: self.spec.clone(),
            schema: self.schema.clone(),
        })
    }
}

/// The routing of a plan's output: a bucket whole in one partition (its differences' ageing
/// keys number a key's duplicates, and the day before's entries of the bucket meet them).
#[derive(Debug)]
pub struct RouteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: RouteSpec,
    props: Arc<PlanProperties>,
}

impl RouteExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: RouteSpec) -> Self {
        Self {
            input,
            spec,
            props: report_props(REPORT.clone()),
        }
    }
}

impl DisplayAs for RouteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ReckonRouteExec: to {}{}", self.spec.out, self.spec.tag)
    }
}

impl ExecutionPlan for RouteExec {
    fn name(&self) -> &str {
        "ReckonRouteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(&self, _f: &mut Visit<'_>) -> datafusion::common::Result<Recursion> {
        Ok(Recursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(RouteExec::new(
            only_input(&children)?,
            self.spec.clone(),
        )))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn required_input_distribution(&self) -> Vec<datafusion::physical_plan::Distribution> {
        vec![datafusion::physical_plan::Distribution::SinglePartition]
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, ctx.clone())?;
        let spec = self.spec.clone();
        let routed = async move {
            route_partition(input, &spec, partition, &ctx)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            REPORT.clone(),
            futures::stream::once(routed),
        )))
    }
}

/// Routes one partition's rows (a bucket), ages its differences against the bucket's
/// entries of the day before's ledger and of an earlier run's, writes its parts and returns
/// its report.
async fn route_partition(
    mut input: SendableRecordBatchStream,
    spec: &RouteSpec,
    partition: usize,
    ctx: &TaskContext,
) -> Result<RecordBatch> {
    let date = crate::config::parse_date(&spec.date)?;
    let zone: chrono_tz::Tz = spec
        .zone
        .parse()
        .map_err(|e| Error::Config(format!("time zone {:?}: {e}", spec.zone)))?;
    let output = plain_strings(&RecordBatch::new_empty(input.schema()))?.schema();
    let mut router = Router::new(date, spec.grace_days, zone, output.clone());
    router.bucket = spec.bucket;
    while let Some(batch) = input.next().await {
        router.route(&plain_strings(&batch?)?, &spec.origin)?;
    }
    let bucket = spec.bucket.unwrap_or((0, 1));
    let mut before = Vec::new();
    if let Some(url) = &spec.ledger {
        before = merge::ledger_bucket(ctx, url, bucket).await?;
    }
    let mut earlier_run = Vec::new();
    if let Some(url) = &spec.earlier {
        earlier_run = merge::ledger_bucket(ctx, url, bucket).await?;
    }
    let mut decisions = std::collections::HashMap::new();
    if let Some(url) = &spec.decisions {
        let batches = merge::bucket_rows(ctx, url, bucket).await?;
        decisions = crate::desk::snapshot::read(&batches, url)?;
    }
    let history = ageing::History {
        before: &before,
        earlier_run: &earlier_run,
        bill_changed: spec.bill_changed,
        decisions: &decisions,
    };
    let diffs = sorted(&router.diffs, &["diff_id"])?
        .unwrap_or_else(|| RecordBatch::new_empty(output.clone()));
    router.diffs.clear();
    let (diffs, ledger, stats) = ageing::age(&diffs, &spec.channel, date, &history)?;
    let diffs = schema::conform(
        &diffs,
        &schema::DIFFS,
        schema::DIFFS_OPTIONAL,
        schema::Extra::Keep,
        &spec.origin,
    )?;
    let contributed = ageing::contributed(&ledger, date);
    // A name no other task gives: a cluster's tasks may all run their stage's partition 0.
    let unique = format!(
        "{}-p{partition:03}-{:016x}",
        spec.tag,
        rand::random::<u64>()
    );
    let carry = match router.carry.is_empty() {
        true => None,
        false => sorted(&router.carry, &CARRY_ORDER)?,
    };
    let (hours, merchants) = router.stats_tables(&spec.channel)?;
    let mut files = Vec::new();
    for (kind, batch) in [
        (PartKind::Diffs, Some(diffs)),
        (PartKind::Carry, carry),
        (PartKind::Ledger, Some(ageing::batch(&ledger)?)),
        (PartKind::Earlier, Some(ageing::batch(&contributed)?)),
        (PartKind::Hours, Some(hours)),
        (PartKind::Merchants, Some(merchants)),
    ] {
        let Some(batch) = batch.filter(|b| b.num_rows() > 0) else {
            continue;
        };
        let name = format!("{unique}-{}.parquet", kind.as_str());
        files.push((kind, merge::put_part(ctx, &spec.out, &name, &batch).await?));
    }
    report(&router, &stats, &files)
}

fn report(
    router: &Router,
    ageing: &AgeingStats,
    files: &[(PartKind, (String, u64))],
) -> Result<RecordBatch> {
    let mut kind = Vec::new();
    let mut category: Vec<Option<&str>> = Vec::new();
    let mut hour: Vec<Option<i32>> = Vec::new();
    // The oldest open difference's first day, on the first `aged` row.
    let mut merchant: Vec<Option<&str>> = Vec::new();
    let mut stats: Vec<CategoryStats> = Vec::new();
    let mut file: Vec<Option<&str>> = Vec::new();
    for ((ci, h), s) in &router.hourly {
        kind.push("hour");
        category.push(Some(router.names[*ci].as_str()));
        hour.push(h.map(|h| h as i32));
        merchant.push(None);
        stats.push(s.clone());
        file.push(None);
    }
    let aged = [
        (ageing::NEW.to_string(), ageing.new),
        (ageing::PERSISTING.to_string(), ageing.persisting),
        (FLAGGED.to_string(), ageing.flagged),
    ]
    .into_iter()
    .chain((ageing.resolved.iter()).map(|(by, n)| (format!("resolved:{by}"), *n)));
    let aged: Vec<(String, u64)> = aged.collect();
    for (i, (state, n)) in aged.iter().enumerate() {
        kind.push("aged");
        category.push(Some(state.as_str()));
        hour.push(None);
        // The oldest open difference's first day, once.
        merchant.push((i == 0).then_some(ageing.oldest_open.as_deref()).flatten());
        stats.push(CategoryStats {
            rows: *n,
            ..CategoryStats::default()
        });
        file.push(None);
    }
    for (k, (url, rows)) in files {
        kind.push(k.as_str());
        category.push(None);
        hour.push(None);
        merchant.push(None);
        stats.push(CategoryStats {
            rows: *rows,
            ..CategoryStats::default()
        });
        file.push(Some(url.as_str()));
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(kind)),
        Arc::new(StringArray::from(category)),
        Arc::new(Int32Array::from(hour)),
        Arc::new(StringArray::from(merchant)),
    ];
    cols.extend(stats_columns(stats.iter()));
    cols.push(Arc::new(StringArray::from(file)));
    Ok(RecordBatch::try_new(REPORT.clone(), cols)?)
}

/// What the reports of every partition add up to.
#[derive(Default)]
pub(super) struct Reports {
    /// (category, hour) cells.
    pub hourly: Vec<(String, Option<u32>, CategoryStats)>,
    /// The parts: (kind, URL, rows).
    pub parts: Vec<(PartKind, String, u64)>,
    /// The ageing's counts, over the partitions.
    pub ageing: AgeingStats,
}

impl Reports {
    /// Adds the reports of another lane.
    pub fn merge(&mut self, other: Reports) {
        self.hourly.extend(other.hourly);
        self.parts.extend(other.parts);
        self.ageing.add(&other.ageing);
    }

    /// The parts of `kind` with rows, in bucket order (their names start with the bucket).
    pub fn parts_of(&self, kind: PartKind) -> Vec<String> {
        let mut urls: Vec<String> = (self.parts.iter())
            .filter(|(k, _, n)| *k == kind && *n > 0)
            .map(|(_, url, _)| url.clone())
            .collect();
        urls.sort();
        urls
    }

    /// Rows in the parts of `kind`.
    pub fn rows_of(&self, kind: PartKind) -> u64 {
        (self.parts.iter())
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Adds a report batch.
    pub fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let s = |i: usize| b.column(i).as_string::<i32>();
        let hour = b.column(2).as_primitive::<Int32Type>();
        let opt = |a: &StringArray, r: usize| a.is_valid(r).then(|| a.value(r).to_string());
        for r in 0..b.num_rows() {
            let stats = stats_at(b, 4, r)?;
            let category = opt(s(1), r).unwrap_or_default();
            match s(0).value(r) {
                "hour" => self.hourly.push((
                    category,
                    hour.is_valid(r).then(|| hour.value(r) as u32),
                    stats,
                )),
                "aged" => {
                    let mut one = AgeingStats {
                        oldest_open: opt(s(3), r),
                        ..AgeingStats::default()
                    };
                    match category.as_str() {
                        ageing::NEW => one.new = stats.rows,
                        ageing::PERSISTING => one.persisting = stats.rows,
                        FLAGGED => one.flagged = stats.rows,
                        other => {
                            let by = other.strip_prefix("resolved:").unwrap_or(other);
                            one.resolved.insert(by.to_string(), stats.rows);
                        }
                    }
                    self.ageing.add(&one);
                }
                kind => {
                    let kind = PartKind::parse(kind).ok_or_else(|| {
                        Error::Other(format!("a routing report of kind {kind:?}"))
                    })?;
                    self.parts
                        .push((kind, opt(s(11), r).unwrap_or_default(), stats.rows));
                }
            }
        }
        Ok(())
    }
}

/// Plans [`RouteNode`] as [`RouteExec`] and [`MergeNode`] as [`MergeExec`].
#[derive(Debug, Default)]
pub struct RoutePlanner;

#[async_trait::async_trait]
impl ExtensionPlanner for RoutePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> datafusion::common::Result<Option<Arc<dyn ExecutionPlan>>> {
        if let Some(merge) = node.as_any().downcast_ref::<MergeNode>() {
            return Ok(Some(Arc::new(MergeExec::new(merge.spec.clone()))));
        }
        let Some(route) = node.as_any().downcast_ref::<RouteNode>() else {
            return Ok(None);
        };
        Ok(Some(Arc::new(RouteExec::new(
            only_input(physical_inputs)?,
            route.spec.clone(),
        ))))
    }
}

/// DataFusion's planner with [`RoutePlanner`]: every session that may plan a reconciliation
/// (this process, a Ballista scheduler) uses it.
#[derive(Debug, Default)]
pub struct ReckonQueryPlanner;

#[async_trait::async_trait]
impl QueryPlanner for ReckonQueryPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(RoutePlanner)])
            .create_physical_plan(plan, session)
            .await
    }
}

/// The first bytes of an encoded route node and merge node; Ballista's own nodes never
/// start so.
const MAGIC: &[u8] = b"reckon-route/1:";
const MERGE_MAGIC: &[u8] = b"reckon-merge/1:";

/// One of reckon's nodes, as its codecs carry it.
enum Node {
    Route(RouteSpec),
    Merge(merge::MergeSpec),
}

fn encode(node: &Node, buf: &mut Vec<u8>) -> datafusion::common::Result<()> {
    let json = match node {
        Node::Route(spec) => {
            buf.extend_from_slice(MAGIC);
            serde_json::to_writer(buf, spec)
        }
        Node::Merge(spec) => {
            buf.extend_from_slice(MERGE_MAGIC);
            serde_json::to_writer(buf, spec)
        }
    };
    json.map_err(|e| DataFusionError::External(Box::new(e)))
}

fn decode(buf: &[u8]) -> Option<datafusion::common::Result<Node>> {
    let json = |e: serde_json::Error| DataFusionError::External(Box::new(e));
    if let Some(spec) = buf.strip_prefix(MAGIC) {
        return Some(serde_json::from_slice(spec).map(Node::Route).map_err(json));
    }
    buf.strip_prefix(MERGE_MAGIC)
        .map(|spec| serde_json::from_slice(spec).map(Node::Merge).map_err(json))
}

fn extension(plan: Result<LogicalPlan>) -> datafusion::common::Result<Extension> {
    match plan {
        Ok(LogicalPlan::Extension(e)) => Ok(e),
        Ok(_) => Err(DataFusionError::Internal("a reckon node".into())),
        Err(e) => Err(DataFusionError::External(Box::new(e))),
    }
}

/// Ballista's logical codec, and [`RouteNode`].
#[derive(Debug)]
pub struct LogicalCodec(Arc<dyn LogicalExtensionCodec>);

impl Default for LogicalCodec {
    fn default() -> Self {
        Self(Arc::new(
            ballista_core::serde::BallistaLogicalExtensionCodec::default(),
        ))
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> datafusion::common::Result<Extension> {
        match decode(buf).transpose()? {
            Some(Node::Route(spec)) => extension(RouteNode::plan(only_input(inputs)?, spec)),
            Some(Node::Merge(spec)) => extension(MergeNode::plan(spec)),
            None => self.0.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> datafusion::common::Result<()> {
        let any = node.node.as_any();
        if let Some(route) = any.downcast_ref::<RouteNode>() {
            return encode(&Node::Route(route.spec.clone()), buf);
        }
        match any.downcast_ref::<MergeNode>() {
            Some(merge) => encode(&Node::Merge(merge.spec.clone()), buf),
            None => self.0.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &datafusion::common::TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> datafusion::common::Result<Arc<dyn datafusion::catalog::TableProvider>> {
        self.0
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &datafusion::common::TableReference,
        node: Arc<dyn datafusion::catalog::TableProvider>,
        buf: &mut Vec<u8>,
    ) -> datafusion::common::Result<()> {
        self.0.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> datafusion::common::Result<Arc<dyn datafusion::datasource::file_format::FileFormatFactory>>
    {
        self.0.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn datafusion::datasource::file_format::FileFormatFactory>,
    ) -> datafusion::common::Result<()> {
        self.0.try_encode_file_format(buf, node)
    }
}

/// Ballista's physical codec, and [`RouteExec`].
#[derive(Debug)]
pub struct PhysicalCodec(Arc<dyn PhysicalExtensionCodec>);

impl Default for PhysicalCodec {
    fn default() -> Self {
        Self(Arc::new(
            ballista_core::serde::BallistaPhysicalExtensionCodec::default(),
        ))
    }
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn datafusion_proto::physical_plan::PhysicalProtoConverterExtension,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        match decode(buf).transpose()? {
            Some(Node::Route(spec)) => Ok(Arc::new(RouteExec::new(only_input(inputs)?, spec))),
            Some(Node::Merge(spec)) => Ok(Arc::new(MergeExec::new(spec))),
            None => self.0.try_decode(buf, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn datafusion_proto::physical_plan::PhysicalProtoConverterExtension,
    ) -> datafusion::common::Result<()> {
        if let Some(route) = node.downcast_ref::<RouteExec>() {
            return encode(&Node::Route(route.spec.clone()), buf);
        }
        match node.downcast_ref::<MergeExec>() {
            Some(merge) => encode(&Node::Merge(merge.spec.clone()), buf),
            None => self.0.try_encode(node, buf, converter),
        }
    }
}
