//! The engines a job runs on: embedded DataFusion, or Ballista (in-process standalone, or a
//! remote cluster), with reckon's UDFs registered wherever plans execute.

use std::path::Path;
use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};

/// Which engine runs the SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    /// Embedded DataFusion in this process (the default).
    Local,
    /// An in-process Ballista scheduler and executor.
    Standalone,
    /// A running Ballista cluster's scheduler, `df://HOST:PORT`.
    Remote(String),
}

impl EngineKind {
    /// Parses `local`, `standalone` or `df://HOST:PORT`.
    pub fn parse(s: &str) -> std::result::Result<EngineKind, String> {
        match s {
            "local" => Ok(EngineKind::Local),
            "standalone" => Ok(EngineKind::Standalone),
            url if url.starts_with("df://") && url.len() > "df://".len() => {
                Ok(EngineKind::Remote(url.to_string()))
            }
            other => Err(format!(
                "engine {other:?} must be local, standalone or df://HOST:PORT"
            )),
        }
    }

    /// The name written to manifests.
    pub fn label(&self) -> String {
        match self {
            EngineKind::Local => "local".into(),
            EngineKind::Standalone => "standalone".into(),
            EngineKind::Remote(u) => u.clone(),
        }
    }
}

fn session_config(kind: &EngineKind, sizing: &Sizing) -> SessionConfig {
    // Ballista's defaults prefer the sort-merge join (it spills, and distributes); embedded,
    // DataFusion's hash join is about twice as fast on a day that fits in memory.
    let config = match kind {
        EngineKind::Local => SessionConfig::new(),
        _ => SessionConfig::new_with_ballista(),
    };
    let mut config = config.with_target_partitions(sizing.target_partitions);
    let opts = config.options_mut();
    // Plain Utf8 halves the hash join's accounted memory against Utf8View (ENGINE-NOTES.md).
    opts.execution.parquet.schema_force_view_types = false;
    // Spill files LZ4-compressed: a 100M-record collect spilled about 16 GB uncompressed.
    opts.execution.spill_compression = datafusion::common::config::SpillCompression::Lz4Frame;
    if let Some(limit) = sizing.memory_limit {
        opts.execution.sort_spill_reservation_bytes =
            spill_reservation(limit, sizing.target_partitions);
    }
    analyst_sql(config)
}

/// What each sort keeps back for merging its spill files. DataFusion's default (10 MiB) is
/// taken by every partition's sort at once, so a pool under about partitions × 10 MiB failed
/// before it spilled anything; a quarter of each partition's share of the pool, between
/// 256 KiB and the default, lets a small pool spill instead.
fn spill_reservation(limit: usize, partitions: usize) -> usize {
    (limit / (4 * partitions.max(1))).clamp(256 * 1024, 10 * 1024 * 1024)
}

/// What a finished plan spilled to disk, summed over its operators (embedded plans; a
/// Ballista job's operators run on its executors and report nothing here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spills {
    /// Spill files written.
    pub count: usize,
    /// Bytes written to them.
    pub bytes: usize,
}

impl Spills {
    /// The spills of `plan` and everything below it, once it has run.
    pub fn of(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> Spills {
        let mut total = Spills::default();
        let mut stack = vec![plan.clone()];
        while let Some(p) = stack.pop() {
            if let Some(m) = p.metrics() {
                total.count += m.spill_count().unwrap_or(0);
                total.bytes += m.spilled_bytes().unwrap_or(0);
            }
            stack.extend(p.children().into_iter().cloned());
        }
        total
    }
}

/// How analyst SQL is read, wherever it is planned (the job, `reckon sql check`, the `.slt`
/// tests): a literal such as `0.01` is an exact decimal, never a float, so that money compared
/// or computed with it stays exact.
pub fn analyst_sql(mut config: SessionConfig) -> SessionConfig {
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    config
}

/// The sessions of one process: `join` on the chosen engine runs the reconciliation; `local`
/// (embedded DataFusion) runs the collect stage's filtered scan, which gains nothing from a
/// cluster and needs a deterministic sort that Ballista 55 cannot plan (see ARCHITECTURE.md).
#[derive(Clone)]
pub struct Engines {
    /// Runs `sql/reconcile.sql`.
    pub join: SessionContext,
    /// Runs `sql/platform.sql`.
    pub local: SessionContext,
}

/// How the sessions are sized.
#[derive(Debug, Clone)]
pub struct Sizing {
    /// Partitions for joins and aggregates.
    pub target_partitions: usize,
    /// The memory pool in bytes; `None` for no limit.
    pub memory_limit: Option<usize>,
}

impl Sizing {
    /// The sizing a config asks for.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            target_partitions: config.target_partitions,
            memory_limit: config.memory_limit_mb.map(|mb| mb * 1024 * 1024),
        }
    }
}

impl Engines {
    /// Whether the reconciliation runs in this process (the embedded engine), so it may read
    /// local files no other host has.
    pub fn in_process(&self) -> bool {
        Arc::ptr_eq(&self.local.state_ref(), &self.join.state_ref())
    }

    /// Sessions for one channel-day: the same engine, memory pool, spill space, object stores
    /// and functions, but tables of their own, so channels run at once never see each other's
    /// `bill`, `platform` or `orders`.
    pub fn for_job(&self) -> Result<Engines> {
        let local = fresh_tables(&self.local)?;
        let join = if self.in_process() {
            local.clone()
        } else {
            fresh_tables(&self.join)?
        };
        Ok(Engines { join, local })
    }
}

/// A session like `ctx` (its engine, memory pool, spill space, object stores and functions)
/// with tables of its own and `partitions` partitions: a lane of a bucketed join.
pub fn lane(ctx: &SessionContext, partitions: usize) -> Result<SessionContext> {
    let fresh = fresh_tables(ctx)?;
    let mut state = fresh.state();
    state.config_mut().options_mut().execution.target_partitions = partitions.max(1);
    Ok(SessionContext::new_with_state(state))
}

/// `ctx` with an empty catalog of its own.
fn fresh_tables(ctx: &SessionContext) -> Result<SessionContext> {
    use datafusion::catalog::{
        CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
        MemorySchemaProvider,
    };
    let state = ctx.state();
    let names = state.config().options().catalog.clone();
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(&names.default_schema, Arc::new(MemorySchemaProvider::new()))?;
    let catalogs = MemoryCatalogProviderList::new();
    catalogs.register_catalog(names.default_catalog.clone(), Arc::new(catalog));
    let state = SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(Arc::new(catalogs))
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// Opens the sessions for `kind`.
pub async fn open(kind: &EngineKind, sizing: &Sizing, spill_dir: &Path) -> Result<Engines> {
    let local = session(&EngineKind::Local, sizing, spill_dir).await?;
    let join = match kind {
        EngineKind::Local => local.clone(),
        other => session(other, sizing, spill_dir).await?,
    };
    Ok(Engines { join, local })
}

/// A session on `kind` with every reckon UDF registered; `spill_dir` holds spill files.
pub async fn session(
    kind: &EngineKind,
    sizing: &Sizing,
    spill_dir: &Path,
) -> Result<SessionContext> {
    let mut runtime = RuntimeEnvBuilder::new().with_temp_file_path(spill_dir);
    if let Some(limit) = sizing.memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    let runtime = runtime.build_arc()?;
    let mut config = session_config(kind, sizing);
    if *kind != EngineKind::Local {
        // The routing node travels to the scheduler and executors beside Ballista's own.
        use crate::stages::reconcile::exec::{LogicalCodec, PhysicalCodec};
        config = config
            .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
            .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()));
    }
    let builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_query_planner(Arc::new(crate::stages::reconcile::exec::ReckonQueryPlanner));
    let ctx = match kind {
        EngineKind::Local => SessionContext::new_with_state(builder.build()),
        EngineKind::Standalone => {
            // The executor takes its function registry from this state; the client's state is
            // rebuilt by Ballista, which drops UDFs: register in both (ENGINE-NOTES.md).
            let mut state = builder.build();
            reckon_udfs::register_all(&mut state)?;
            SessionContext::standalone_with_state(state).await?
        }
        EngineKind::Remote(url) => {
            // The Ballista client connects lazily, at the first query: check the scheduler
            // answers before any stage runs, so an unreachable one fails the run up front.
            let addr = url.trim_start_matches("df://").to_string();
            let reach = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::net::TcpStream::connect(addr.clone()),
            )
            .await;
            let why = match reach {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer within 10 s".to_string()),
            };
            if let Some(why) = why {
                return Err(Error::Other(format!(
                    "cannot reach the Ballista scheduler at {url}: {why}"
                )));
            }
            SessionContext::remote_with_state(url, builder.build())
                .await
                .map_err(|e| {
                    Error::Other(format!("cannot reach the Ballista scheduler at {url}: {e}"))
                })?
        }
    };
    register_udfs(&ctx);
    Ok(ctx)
}

fn register_udfs(ctx: &SessionContext) {
    for udf in reckon_udfs::functions() {
        ctx.register_udf(Arc::unwrap_or_clone(udf));
    }
}

/// An embedded session for analyst SQL outside a run (`reckon sql check`, the `.slt` tests):
/// `config` read as the job reads it (`analyst_sql`), with every reckon UDF.
pub fn analyst_context(config: SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(analyst_sql(config));
    register_udfs(&ctx);
    ctx
}

/// Registers `name` as a Parquet listing table over `dirs` (URLs or local paths, one per
/// directory; replacing any earlier table).
pub async fn register_dirs(ctx: &SessionContext, name: &str, dirs: &[String]) -> Result<()> {
    let table = listing(ctx, name, dirs).await?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, table)?;
    Ok(())
}

/// A Parquet listing table over `dirs` (URLs or local paths), with the session's Parquet
/// options; `name` names it in errors.
pub async fn listing(
    ctx: &SessionContext,
    name: &str,
    dirs: &[String],
) -> Result<Arc<ListingTable>> {
    let urls = dirs
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    // The session's Parquet options (plain Utf8 strings, not views: see engine.rs).
    let format = ParquetFormat::default().with_options(ctx.state().table_options().parquet.clone());
    let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    // A location with no Parquet file under it gives a table without columns, and the SQL
    // would then say a column is missing: say what is missing instead.
    if config
        .file_schema
        .as_ref()
        .is_none_or(|s| s.fields().is_empty())
    {
        return Err(Error::Other(format!(
            "table {name}: no Parquet file found at {}",
            dirs.join(", ")
        )));
    }
    Ok(Arc::new(ListingTable::try_new(config)?))
}
