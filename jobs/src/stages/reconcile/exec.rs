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
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Int32Type, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::plain_strings;
use super::route::{sorted, stats_columns, Router};
use crate::error::{Error, Result};
use crate::records::CategoryStats;
use crate::schema;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// Differences, sorted by `diff_id`.
    Diffs,
    /// Carry-over rows ([`schema::CARRY`]).
    Carry,
}

impl PartKind {
    fn as_str(self) -> &'static str {
        match self {
            PartKind::Diffs => "diffs",
            PartKind::Carry => "carry",
        }
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
}

/// What a routing partition returns: one row per statistics cell (`kind` `hour` or
/// `merchant`) and one per part file written (`diffs` or `carry`, its rows in `rows`).
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

/// The routing of a plan's output: each input partition routed on its own.
#[derive(Debug)]
pub struct RouteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: RouteSpec,
    props: Arc<PlanProperties>,
}

impl RouteExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: RouteSpec) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let props = PlanProperties::new(
            EquivalenceProperties::new(REPORT.clone()),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            spec,
            props: Arc::new(props),
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

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> datafusion::common::Result<
            datafusion::common::tree_node::TreeNodeRecursion,
        >,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
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

/// Routes one partition's rows, writes its parts and returns its report.
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
    // A name no other task gives: a cluster's tasks may all run their stage's partition 0.
    let unique = format!(
        "{}-p{partition:03}-{:016x}",
        spec.tag,
        rand::random::<u64>()
    );
    let mut files = Vec::new();
    if let Some(diffs) = sorted(&router.diffs, &["diff_id"])? {
        let name = format!("{unique}-diffs.parquet");
        files.push((
            PartKind::Diffs,
            put_part(ctx, &spec.out, &name, &diffs).await?,
        ));
    }
    if !router.carry.is_empty() {
        let carry =
            datafusion::arrow::compute::concat_batches(&schema::CARRY.clone(), &router.carry)?;
        let name = format!("{unique}-carry.parquet");
        files.push((
            PartKind::Carry,
            put_part(ctx, &spec.out, &name, &carry).await?,
        ));
    }
    report(&router, &files)
}

/// Writes `batch` as `out` + `name` through the task's object stores; returns the URL and
/// rows.
async fn put_part(
    ctx: &TaskContext,
    out: &str,
    name: &str,
    batch: &RecordBatch,
) -> Result<(String, u64)> {
    let url = format!("{out}{name}");
    let parsed = url::Url::parse(&url).map_err(|e| Error::Other(format!("{url}: {e}")))?;
    let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
        &parsed[..url::Position::BeforePath],
    )?;
    let store = ctx.runtime_env().object_store(store_url)?;
    let path = object_store::path::Path::from_url_path(parsed.path())
        .map_err(|e| Error::Other(format!("{url}: {e}")))?;
    let mut bytes = Vec::new();
    let mut w = ArrowWriter::try_new(
        &mut bytes,
        batch.schema(),
        Some(crate::parquet_io::writer_props()),
    )?;
    w.write(batch)?;
    w.close()?;
    object_store::ObjectStoreExt::put(store.as_ref(), &path, bytes.into())
        .await
        .map_err(|e| Error::Other(format!("writing {url}: {e}")))?;
    Ok((url, batch.num_rows() as u64))
}

fn report(router: &Router, files: &[(PartKind, (String, u64))]) -> Result<RecordBatch> {
    let mut kind = Vec::new();
    let mut category: Vec<Option<&str>> = Vec::new();
    let mut hour: Vec<Option<i32>> = Vec::new();
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
    for (ci, (none, known)) in &router.by_merchant {
        let cells = std::iter::once((None, none)).chain(known.iter().map(|(m, s)| (Some(m), s)));
        for (m, s) in cells {
            if m.is_none() && s.rows == 0 {
                continue;
            }
            kind.push("merchant");
            category.push(Some(router.names[*ci].as_str()));
            hour.push(None);
            merchant.push(m.map(|m| m.as_str()));
            stats.push(s.clone());
            file.push(None);
        }
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
    /// (category, hour) and (category, merchant) cells.
    pub hourly: Vec<(String, Option<u32>, CategoryStats)>,
    pub by_merchant: Vec<(String, Option<String>, CategoryStats)>,
    /// The parts: (kind, URL, rows).
    pub parts: Vec<(PartKind, String, u64)>,
}

impl Reports {
    /// Adds a report batch.
    pub fn add(&mut self, b: &RecordBatch) -> Result<()> {
        let s = |i: usize| b.column(i).as_string::<i32>();
        let n = |i: usize| {
            b.column(i)
                .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
        };
        let d = |i: usize| b.column(i).as_primitive::<Decimal128Type>();
        let hour = b.column(2).as_primitive::<Int32Type>();
        let opt = |a: &StringArray, r: usize| a.is_valid(r).then(|| a.value(r).to_string());
        for r in 0..b.num_rows() {
            let stats = CategoryStats {
                rows: n(4).value(r),
                channel_records: n(5).value(r),
                platform_records: n(6).value(r),
                carried_records: n(7).value(r),
                channel_amount: d(8).value(r),
                platform_amount: d(9).value(r),
                refund_explained: n(10).value(r),
            };
            let category = opt(s(1), r).unwrap_or_default();
            match s(0).value(r) {
                "hour" => self.hourly.push((
                    category,
                    hour.is_valid(r).then(|| hour.value(r) as u32),
                    stats,
                )),
                "merchant" => self.by_merchant.push((category, opt(s(3), r), stats)),
                kind => {
                    let kind = match kind {
                        "diffs" => PartKind::Diffs,
                        "carry" => PartKind::Carry,
                        other => {
                            return Err(Error::Other(format!("a routing report of kind {other:?}")))
                        }
                    };
                    self.parts
                        .push((kind, opt(s(11), r).unwrap_or_default(), stats.rows));
                }
            }
        }
        Ok(())
    }
}

/// Plans [`RouteNode`] as [`RouteExec`].
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

/// The first bytes of an encoded route node; Ballista's own nodes never start so.
const MAGIC: &[u8] = b"reckon-route/1:";

fn encode_spec(spec: &RouteSpec, buf: &mut Vec<u8>) -> datafusion::common::Result<()> {
    buf.extend_from_slice(MAGIC);
    serde_json::to_writer(buf, spec).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn decode_spec(buf: &[u8]) -> Option<datafusion::common::Result<RouteSpec>> {
    buf.strip_prefix(MAGIC).map(|json| {
        serde_json::from_slice(json).map_err(|e| DataFusionError::External(Box::new(e)))
    })
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
        match decode_spec(buf) {
            Some(spec) => match RouteNode::plan(only_input(inputs)?, spec?) {
                Ok(LogicalPlan::Extension(e)) => Ok(e),
                Ok(_) => Err(DataFusionError::Internal("ReckonRoute".into())),
                Err(e) => Err(DataFusionError::External(Box::new(e))),
            },
            None => self.0.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> datafusion::common::Result<()> {
        match node.node.as_any().downcast_ref::<RouteNode>() {
            Some(route) => encode_spec(&route.spec, buf),
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
        match decode_spec(buf) {
            Some(spec) => Ok(Arc::new(RouteExec::new(only_input(inputs)?, spec?))),
            None => self.0.try_decode(buf, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn datafusion_proto::physical_plan::PhysicalProtoConverterExtension,
    ) -> datafusion::common::Result<()> {
        match node.downcast_ref::<RouteExec>() {
            Some(route) => encode_spec(&route.spec, buf),
            None => self.0.try_encode(node, buf, converter),
        }
    }
}
