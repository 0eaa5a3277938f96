//! The day's files as the engine writes them: each routed partition writes its sorted parts
//! ([`put_part`]), and a merge ([`MergeExec`]) streams the parts of one kind into the day's
//! one sorted file, where the engine runs (an executor, on a cluster), through the task's
//! object stores. The client receives the file's row count, size and SHA-256 only.
//!
//! A merge holds a row group of each part at a time (parts are written in row groups of
//! [`crate::parquet_io::PART_ROW_GROUP_ROWS`] rows), never a day's rows.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, StringBuilder, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, UInt32Type};
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError};
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, RowSelection, RowSelector};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::physical_expr::expressions::col;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use reckon_udfs::Category;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::exec::{report_props, Recursion, Visit};
use crate::error::{Error, Result};
use crate::records::CategoryStats;
use crate::stages::ageing;

/// The object store and path of `url`, as the task's runtime knows them.
pub(super) fn locate(
    ctx: &TaskContext,
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path)> {
    let parsed = url::Url::parse(url).map_err(|e| Error::Other(format!("{url}: {e}")))?;
    let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
        &parsed[..url::Position::BeforePath],
    )?;
    let store = ctx.runtime_env().object_store(store_url)?;
    let path = object_store::path::Path::from_url_path(parsed.path())
        .map_err(|e| Error::Other(format!("{url}: {e}")))?;
    Ok((store, path))
}

/// Writes `batch` as `out` + `name` (a part, in small row groups) through the task's object
/// stores; returns the URL and rows.
pub(super) async fn put_part(
    ctx: &TaskContext,
    out: &str,
    name: &str,
    batch: &RecordBatch,
) -> Result<(String, u64)> {
    let url = format!("{out}{name}");
    let (store, path) = locate(ctx, &url)?;
    let bytes = crate::parquet_io::to_bytes(batch, crate::parquet_io::part_props())?;
    object_store::ObjectStoreExt::put(store.as_ref(), &path, bytes.into())
        .await
        .map_err(|e| Error::Other(format!("writing {url}: {e}")))?;
    Ok((url, batch.num_rows() as u64))
}

/// The entries of the ledger at `url` that belong in bucket `bucket` of `n` (every entry when
/// `n` is 1): only the `match_key` column is decoded for the others.
pub(super) async fn ledger_bucket(
    ctx: &TaskContext,
    url: &str,
    bucket: (u32, u32),
) -> Result<Vec<ageing::Entry>> {
    let batches = bucket_rows(ctx, url, bucket).await?;
    ageing::entries(&batches, &format!("ledger {url}"))
}

/// The rows of the file at `url` (a ledger, the desk's decisions: files with a `match_key`)
/// whose match key falls in `bucket` of `n`.
pub(super) async fn bucket_rows(
    ctx: &TaskContext,
    url: &str,
    (bucket, n): (u32, u32),
) -> Result<Vec<RecordBatch>> {
    let mut builder = Part::open(ctx, url).await?.builder()?;
    if n > 1 {
        let idx = (builder.schema().index_of("match_key"))
            .map_err(|_| Error::Other(format!("{url} has no column match_key")))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let keep = ArrowPredicateFn::new(mask, move |b: RecordBatch| {
            let keys = b.column(0).as_string_opt::<i32>().ok_or_else(|| {
                datafusion::arrow::error::ArrowError::SchemaError(
                    "its match_key is not a string".into(),
                )
            })?;
            Ok(BooleanArray::from_iter((0..keys.len()).map(|i| {
                let key = keys.is_valid(i).then(|| keys.value(i));
                Some(ageing::bucket_of(key, n) == bucket)
            })))
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(keep)]));
    }
    let batches: Vec<RecordBatch> = builder
        .build()
        .map_err(|e| Error::Other(format!("reading {url}: {e}")))?
        .try_collect()
        .await
        .map_err(|e| Error::Other(format!("reading {url}: {e}")))?;
    Ok(batches)
}

/// One merge: the sorted `parts` streamed into one file at `out`, sorted by `by`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct MergeSpec {
    /// The parts (URLs), each sorted by `by`; ties keep this order.
    pub parts: Vec<String>,
    /// The sort columns (ascending, NULLs first).
    pub by: Vec<String>,
    /// The file written (a URL).
    pub out: String,
    /// Reasons the second look gave, by `diff_id`: they replace the reason of an open
    /// MISSING_IN_PLATFORM row of that id (a difference, or its ledger entry).
    pub reasons: Vec<(String, String)>,
    /// The parts are statistics cells (a statistics table's columns): the cells of one
    /// category and grain (`by`) are summed into one row.
    pub sum: bool,
}

/// What a merge returns: one row, the file written.
pub static MERGED: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("sha256", DataType::Utf8, false),
    ]))
});

/// A file a merge wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub url: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl Merged {
    /// The merge's report batch, read.
    pub fn from_batch(b: &RecordBatch) -> Result<Self> {
        let bad = || Error::Other("a merge's report is not of its schema".into());
        let s = |i: usize| b.column(i).as_string_opt::<i32>().ok_or_else(bad);
        let n = |i: usize| {
            (b.column(i))
                .as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>()
                .ok_or_else(bad)
        };
        if b.num_rows() != 1 {
            return Err(bad());
        }
        Ok(Self {
            url: s(0)?.value(0).to_string(),
            rows: n(1)?.value(0),
            bytes: n(2)?.value(0),
            sha256: s(3)?.value(0).to_string(),
        })
    }
}

/// A merge, as a logical node (a leaf: it reads its parts itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MergeNode {
    pub(super) spec: MergeSpec,
    schema: DFSchemaRef,
}

impl MergeNode {
    pub fn plan(spec: MergeSpec) -> Result<LogicalPlan> {
        let schema = Arc::new(DFSchema::try_from(MERGED.as_ref().clone())?);
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(MergeNode { spec, schema }),
        }))
    }
}

impl PartialOrd for MergeNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.spec.partial_cmp(&other.spec)
    }
}

impl UserDefinedLogicalNodeCore for MergeNode {
    fn name(&self) -> &str {
        "ReckonMerge"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        Vec::new()
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ReckonMerge: {} parts to {}",
            self.spec.parts.len(),
            self.spec.out
        )
    }
    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        _inputs: Vec<LogicalPlan>,
    ) -> datafusion::common::Result<Self> {
        Ok(self.clone())
    }
}

/// A merge: one partition, which writes the file and returns its [`MERGED`] row.
#[derive(Debug)]
pub struct MergeExec {
    pub(super) spec: MergeSpec,
    props: Arc<PlanProperties>,
}

impl MergeExec {
    pub fn new(spec: MergeSpec) -> Self {
        Self {
            spec,
            props: report_props(MERGED.clone()),
        }
    }
}

impl DisplayAs for MergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ReckonMergeExec: {} parts to {}",
            self.spec.parts.len(),
            self.spec.out
        )
    }
}

impl ExecutionPlan for MergeExec {
    fn name(&self) -> &str {
        "ReckonMergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(&self, _f: &mut Visit<'_>) -> datafusion::common::Result<Recursion> {
        Ok(Recursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        ctx: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let spec = self.spec.clone();
        let merged = async move {
            merge(&spec, &ctx)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            MERGED.clone(),
            futures::stream::once(merged),
        )))
    }
}

/// One part of a merge: where it is and its footer, read once.
struct Part {
    url: String,
    store: Arc<dyn ObjectStore>,
    file: datafusion::datasource::listing::PartitionedFile,
    meta: ArrowReaderMetadata,
}

impl Part {
    async fn open(ctx: &TaskContext, url: &str) -> Result<Self> {
        let (store, path) = locate(ctx, url)?;
        let head = object_store::ObjectStoreExt::head(store.as_ref(), &path)
            .await
            .map_err(|e| Error::Other(format!("reading {url}: {e}")))?;
        let file = datafusion::datasource::listing::PartitionedFile::from(head);
        let mut read = Self::reader(&store, &file)?;
        let meta = ArrowReaderMetadata::load_async(&mut read, Default::default())
            .await
            .map_err(|e| Error::Other(format!("reading {url}: {e}")))?;
        Ok(Self {
            url: url.to_string(),
            store,
            file,
            meta,
        })
    }

    /// A reader of the file (the engine's own).
    fn reader(
        store: &Arc<dyn ObjectStore>,
        file: &datafusion::datasource::listing::PartitionedFile,
    ) -> Result<Box<dyn AsyncFileReader>> {
        let metrics = ExecutionPlanMetricsSet::new();
        Ok(
            DefaultParquetFileReaderFactory::new(store.clone()).create_reader(
                0,
                file.clone(),
                None,
                &metrics,
            )?,
        )
    }

    /// A reader of its rows, its footer already read.
    fn builder(&self) -> Result<ParquetRecordBatchStreamBuilder<Box<dyn AsyncFileReader>>> {
        Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(
            Self::reader(&self.store, &self.file)?,
            self.meta.clone(),
        ))
    }

    /// Its rows of `columns` (by place), `rows` only when given, in batches of `batch`.
    fn read(
        &self,
        columns: &[usize],
        rows: Option<(usize, usize)>,
        batch: usize,
    ) -> Result<SendableRecordBatchStream> {
        let mut b = self.builder()?;
        let mask = ProjectionMask::roots(b.parquet_schema(), columns.iter().copied());
        b = b.with_projection(mask).with_batch_size(batch);
        if let Some((from, len)) = rows {
            b = b.with_row_selection(RowSelection::from(vec![
                RowSelector::skip(from),
                RowSelector::select(len),
            ]));
        }
        let url = self.url.clone();
        let stream = (b.build())
            .map_err(|e| Error::Other(format!("reading {url}: {e}")))?
            .map_err(move |e| DataFusionError::External(format!("reading {url}: {e}").into()));
        let schema = Arc::new(self.meta.schema().project(columns)?);
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    /// Its values of column `column` at rows `from .. from + len`, one array.
    async fn column(&self, column: usize, (from, len): (usize, usize)) -> Result<ArrayRef> {
        let batches: Vec<RecordBatch> = self
            .read(&[column], Some((from, len)), len.max(1))?
            .try_collect()
            .await?;
        let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(0).as_ref()).collect();
        let schema = self.meta.schema();
        match arrays.as_slice() {
            [] => Ok(datafusion::arrow::array::new_empty_array(
                schema.field(column).data_type(),
            )),
            [one] => Ok(datafusion::arrow::array::make_array(one.to_data())),
            many => Ok(datafusion::arrow::compute::concat(many)?),
        }
    }
}

/// The merged order of the parts' rows, as (part, row) pairs: their sort columns merged by
/// the engine's streaming merge, each batch tagged with its part and rows.
fn merged_order(
    parts: &[Part],
    by: &[usize],
    batch: usize,
    ctx: &TaskContext,
) -> Result<SendableRecordBatchStream> {
    let keys = Arc::new(parts[0].meta.schema().project(by)?);
    let mut fields: Vec<Field> = keys.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("__part", DataType::UInt32, false));
    fields.push(Field::new("__row", DataType::UInt32, false));
    let tagged = Arc::new(Schema::new(fields));
    let mut streams = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let mut next_row = 0u32;
        let schema = tagged.clone();
        let stream = part.read(by, None, batch)?.map(move |b| {
            let b = b?;
            let n = b.num_rows() as u32;
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(UInt32Array::from(vec![p as u32; n as usize])));
            cols.push(Arc::new(UInt32Array::from_iter_values(
                next_row..next_row + n,
            )));
            next_row += n;
            Ok(RecordBatch::try_new(schema.clone(), cols)?)
        });
        streams.push(
            Box::pin(RecordBatchStreamAdapter::new(tagged.clone(), stream))
                as SendableRecordBatchStream,
        );
    }
    let sort = (0..by.len())
        .map(|i| {
            Ok(PhysicalSortExpr::new(
                col(tagged.field(i).name(), &tagged)?,
                SortOptions::default(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let ordering = LexOrdering::new(sort)
        .ok_or_else(|| Error::Other("a merge without sort columns".into()))?;
    let reservation = datafusion::execution::memory_pool::MemoryConsumer::new("ReckonMerge")
        .register(ctx.memory_pool());
    let metrics = ExecutionPlanMetricsSet::new();
    Ok(StreamingMergeBuilder::new()
        .with_streams(streams)
        .with_schema(tagged)
        .with_expressions(&ordering)
        .with_metrics(BaselineMetrics::new(&metrics, 0))
        .with_batch_size(batch)
        .with_reservation(reservation)
        .with_round_robin_tie_breaker(false)
        .build()?)
}

/// An upload of a file as it is written, hashed on the way.
struct Upload {
    sink: object_store::buffered::BufWriter,
    sha: Sha256,
    bytes: u64,
    url: String,
}

impl Upload {
    /// An upload to `url` through the task's object stores.
    fn to(ctx: &TaskContext, url: &str) -> Result<Self> {
        let (store, path) = locate(ctx, url)?;
        Ok(Self {
            sink: object_store::buffered::BufWriter::new(store, path),
            sha: Sha256::new(),
            bytes: 0,
            url: url.to_string(),
        })
    }

    /// Sends (and empties) the bytes a file writer has handed over so far.
    async fn send(&mut self, file: &mut Vec<u8>) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let chunk = std::mem::take(file);
        self.sha.update(&chunk);
        self.bytes += chunk.len() as u64;
        (self.sink.write_all(&chunk).await)
            .map_err(|e| Error::Other(format!("writing {}: {e}", self.url)))
    }

    /// Completes the upload; the merge's report of the file of `rows` rows.
    async fn finish(mut self, rows: u64) -> Result<RecordBatch> {
        use tokio::io::AsyncWriteExt;
        (self.sink.shutdown().await)
            .map_err(|e| Error::Other(format!("writing {}: {e}", self.url)))?;
        Ok(RecordBatch::try_new(
            MERGED.clone(),
            vec![
                Arc::new(StringArray::from(vec![self.url])),
                Arc::new(UInt64Array::from(vec![rows])),
                Arc::new(UInt64Array::from(vec![self.bytes])),
                Arc::new(StringArray::from(vec![hex::encode(self.sha.finalize())])),
            ],
        )?)
    }
}

/// Runs one merge: the parts' merged order first (their sort columns only), then each row
/// group of the file column by column, each column gathered from the parts' rows of that
/// group. The file has the bytes one batch of all its rows would give
/// ([`crate::parquet_io::ColumnWise`]); the merge holds one column of a row group at a time.
async fn merge(spec: &MergeSpec, ctx: &TaskContext) -> Result<RecordBatch> {
    let batch = ctx.session_config().batch_size();
    let mut parts = Vec::new();
    for url in &spec.parts {
        parts.push(Part::open(ctx, url).await?);
    }
    if spec.sum {
        return sum_cells(spec, &parts, ctx).await;
    }
    let first = parts
        .first()
        .ok_or_else(|| Error::Other(format!("no parts to merge into {}", spec.out)))?;
    let schema = first.meta.schema().clone();
    if let Some(odd) = parts
        .iter()
        .find(|p| p.meta.schema().fields() != schema.fields())
    {
        return Err(Error::Other(format!(
            "{}: its columns differ from the other parts' of {}",
            odd.url, spec.out
        )));
    }
    let by = (spec.by.iter())
        .map(|c| Ok(schema.index_of(c)?))
        .collect::<Result<Vec<usize>>>()?;
    let mut order = merged_order(&parts, &by, batch, ctx)?;

    let mut upload = Upload::to(ctx, &spec.out)?;
    let mut file = crate::parquet_io::ColumnWise::try_new(
        Vec::new(),
        schema.clone(),
        crate::parquet_io::writer_props(),
    )?;
    let group_rows = file.group_rows();
    let reasons: HashMap<&str, &str> = (spec.reasons.iter())
        .map(|(id, r)| (id.as_str(), r.as_str()))
        .collect();
    let mut pending: Vec<(u32, u32)> = Vec::new();
    let mut rows = 0u64;
    let mut done = false;
    while !done {
        match order.next().await {
            Some(b) => {
                let b = b?;
                let n = b.num_columns();
                let p = b.column(n - 2).as_primitive::<UInt32Type>();
                let r = b.column(n - 1).as_primitive::<UInt32Type>();
                pending.extend(p.values().iter().copied().zip(r.values().iter().copied()));
            }
            None => done = true,
        }
        while pending.len() >= group_rows || (done && !pending.is_empty()) {
            let take = pending.len().min(group_rows);
            let group: Vec<(u32, u32)> = pending.drain(..take).collect();
            write_group(&mut file, &parts, &group, &reasons).await?;
            rows += group.len() as u64;
            upload.send(file.inner_mut()).await?;
        }
    }
    let mut rest = file.finish()?;
    upload.send(&mut rest).await?;
    upload.finish(rows).await
}

/// A statistics cell's grain: an hour or a merchant (NULL first, as the tables sort).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Grain {
    Hour(Option<u32>),
    Merchant(Option<String>),
}

/// The statistics cells of `parts` summed per category and grain into one sorted table,
/// written at `spec.out` (cells are few: categories times hours or merchants).
async fn sum_cells(spec: &MergeSpec, parts: &[Part], ctx: &TaskContext) -> Result<RecordBatch> {
    use std::collections::BTreeMap;
    let mut cells: BTreeMap<(String, Grain), CategoryStats> = BTreeMap::new();
    let mut channel_date: Option<(String, i32)> = None;
    for part in parts {
        let all: Vec<usize> = (0..part.meta.schema().fields().len()).collect();
        let batches: Vec<RecordBatch> = part
            .read(&all, None, ctx.session_config().batch_size())?
            .try_collect()
            .await?;
        for b in &batches {
            let bad = || Error::Other(format!("{}: not a statistics table", part.url));
            let channel = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
            let date = (b.column(1))
                .as_primitive_opt::<datafusion::arrow::datatypes::Date32Type>()
                .ok_or_else(bad)?;
            let category = b.column(2).as_string_opt::<i32>().ok_or_else(bad)?;
            let grain = b.column(3);
            for r in 0..b.num_rows() {
                channel_date.get_or_insert((channel.value(r).to_string(), date.value(r)));
                let g = if let Some(h) = grain.as_primitive_opt::<Int32Type>() {
                    Grain::Hour(h.is_valid(r).then(|| h.value(r) as u32))
                } else {
                    let m = grain.as_string_opt::<i32>().ok_or_else(bad)?;
                    Grain::Merchant(m.is_valid(r).then(|| m.value(r).to_string()))
                };
                let key = (category.value(r).to_string(), g);
                cells
                    .entry(key)
                    .or_default()
                    .add(&super::route::stats_at(b, 4, r)?);
            }
        }
    }
    let (channel, date) = channel_date.unwrap_or_default();
    let schema = parts[0].meta.schema().clone();
    let grain: ArrayRef = match schema.field(3).data_type() {
        DataType::Int32 => Arc::new(datafusion::arrow::array::Int32Array::from_iter(
            cells.keys().map(|(_, g)| match g {
                Grain::Hour(h) => h.map(|h| h as i32),
                Grain::Merchant(_) => None,
            }),
        )),
        _ => Arc::new(StringArray::from_iter(cells.keys().map(|(_, g)| match g {
            Grain::Merchant(m) => m.clone(),
            Grain::Hour(_) => None,
        }))),
    };
    let table = super::route::stats_batch(
        &schema,
        &channel,
        date,
        cells.iter().map(|((c, _), s)| (c.as_str(), s)),
        grain,
    )?;
    let mut bytes = crate::parquet_io::to_bytes(&table, crate::parquet_io::writer_props())?;
    let mut upload = Upload::to(ctx, &spec.out)?;
    upload.send(&mut bytes).await?;
    upload.finish(table.num_rows() as u64).await
}

/// Writes the row group of the rows `group` names ((part, row) pairs, in order): each
/// column gathered from the rows of each part it takes (a run of consecutive rows of a part:
/// the merge takes each part in order).
async fn write_group(
    file: &mut crate::parquet_io::ColumnWise<Vec<u8>>,
    parts: &[Part],
    group: &[(u32, u32)],
    reasons: &HashMap<&str, &str>,
) -> Result<()> {
    // The rows of each part in the group: (part, first row, rows).
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut place = vec![usize::MAX; parts.len()];
    for &(p, r) in group {
        let p = p as usize;
        if place[p] == usize::MAX {
            place[p] = runs.len();
            runs.push((p, r as usize, 0));
        }
        runs[place[p]].2 += 1;
    }
    let at: Vec<(usize, usize)> = (group.iter())
        .map(|&(p, r)| {
            let run = place[p as usize];
            (run, r as usize - runs[run].1)
        })
        .collect();
    let gather = |column: usize| {
        let runs = &runs;
        let at = &at;
        async move {
            let mut arrays = Vec::with_capacity(runs.len());
            for &(p, from, len) in runs {
                arrays.push(parts[p].column(column, (from, len)).await?);
            }
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            Ok::<ArrayRef, Error>(datafusion::arrow::compute::interleave(&refs, at)?)
        }
    };
    let schema = parts[0].meta.schema().clone();
    let mut encoder = file.group()?;
    // The columns the second look's reasons depend on, kept from their own writing.
    const GIVEN_BY: [&str; 3] = ["diff_id", "category", "state"];
    let mut kept: HashMap<&str, ArrayRef> = HashMap::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let mut values = gather(i).await?;
        let name = field.name().as_str();
        if !reasons.is_empty() && GIVEN_BY.contains(&name) {
            kept.insert(name, values.clone());
        }
        if name == "reason" && !reasons.is_empty() {
            let mut by: [Option<ArrayRef>; 3] = [None, None, None];
            for (slot, n) in by.iter_mut().zip(GIVEN_BY) {
                *slot = match (kept.get(n), schema.index_of(n)) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Ok(j)) => Some(gather(j).await?),
                    (None, Err(_)) => None,
                };
            }
            let [Some(id), Some(cat), state] = by else {
                return Err(Error::Other(
                    "no diff_id or category to give reasons".into(),
                ));
            };
            values = with_reasons(&id, &cat, state.as_ref(), &values, reasons)?;
        }
        encoder.column(&values)?;
    }
    file.append(encoder)
}

/// The reasons the second look gave in place of those of the open MISSING_IN_PLATFORM rows
/// of their ids (columns of the same rows).
fn with_reasons(
    ids: &ArrayRef,
    category: &ArrayRef,
    state: Option<&ArrayRef>,
    reason: &ArrayRef,
    reasons: &HashMap<&str, &str>,
) -> Result<ArrayRef> {
    let strings = |a: &ArrayRef| -> Result<StringArray> {
        a.as_string_opt::<i32>().cloned().ok_or_else(|| {
            Error::Other(format!(
                "a {} column where reasons are strings",
                a.data_type()
            ))
        })
    };
    let (ids, category, reason) = (strings(ids)?, strings(category)?, strings(reason)?);
    let state = state.map(strings).transpose()?;
    let missing = Category::MissingInPlatform.as_str();
    let mut out = StringBuilder::with_capacity(reason.len(), reason.len() * 32);
    for i in 0..reason.len() {
        let open = state
            .as_ref()
            .is_none_or(|s| s.is_null(i) || s.value(i) != ageing::RESOLVED);
        let given = (open && category.is_valid(i) && category.value(i) == missing)
            .then(|| ids.is_valid(i).then(|| reasons.get(ids.value(i))))
            .flatten()
            .flatten();
        match given {
            Some(r) => out.append_value(r),
            None if reason.is_null(i) => out.append_null(),
            None => out.append_value(reason.value(i)),
        }
    }
    Ok(Arc::new(out.finish()))
}
