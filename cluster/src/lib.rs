//! What reckon adds to the stock Ballista scheduler and executor: its UDFs (they travel in
//! plans by name, so every process must know them) and object stores (`file://` is built in;
//! `s3://` stores are made on first use of each bucket, with credentials and endpoint from the
//! `AWS_*` environment variables, so no bucket needs naming in advance). The `reckon` package
//! builds the two binaries, `reckon-scheduler` and `reckon-executor`, from [`scheduler_main`]
//! and [`executor_main`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::FunctionRegistry;
use object_store::ObjectStore;
use url::Url;

use std::net::SocketAddr;

use ballista_core::error::BallistaError;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_executor::health::spawn_health_server;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use clap::Parser;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

/// What the reckon package adds to plans (its routing operator): the planner that plans it on
/// the scheduler and the codecs that carry it to the executors.
#[derive(Clone)]
pub struct Extensions {
    /// Plans reckon's logical nodes (the scheduler's sessions).
    pub query_planner: Arc<dyn datafusion::execution::context::QueryPlanner + Send + Sync>,
    /// Ballista's logical codec plus reckon's nodes.
    pub logical_codec: Arc<dyn datafusion_proto::logical_plan::LogicalExtensionCodec>,
    /// Ballista's physical codec plus reckon's operators.
    pub physical_codec: Arc<dyn datafusion_proto::physical_plan::PhysicalExtensionCodec>,
}

/// Ballista's built-in functions plus reckon's UDFs, for the executors.
pub fn function_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for udf in reckon_udfs::functions() {
        registry
            .scalar_functions
            .insert(udf.name().to_string(), udf);
    }
    registry
}

/// Object stores by URL: the defaults (`file://`), and an S3 store per bucket made from the
/// environment on first use.
#[derive(Debug, Default)]
pub struct EnvObjectStores {
    inner: DefaultObjectStoreRegistry,
    s3: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl EnvObjectStores {
    /// A registry with the default stores.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ObjectStoreRegistry for EnvObjectStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(s) = self.inner.get_store(url) {
            return Ok(s);
        }
        if url.scheme() != "s3" {
            return Err(DataFusionError::Configuration(format!(
                "no object store for {url}: reckon's cluster knows file:// and s3://"
            )));
        }
        let bucket = url.host_str().unwrap_or_default().to_string();
        let mut made = self
            .s3
            .lock()
            .map_err(|_| DataFusionError::Internal("object store registry lock".into()))?;
        if let Some(s) = made.get(&bucket) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&bucket)
                .build()
                .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?,
        );
        made.insert(bucket, store.clone());
        Ok(store)
    }
}

/// Registers reckon's UDFs in a session state (the scheduler's session builder).
pub fn register_udfs(state: &mut datafusion::execution::SessionState) -> Result<()> {
    reckon_udfs::register_all(state as &mut dyn FunctionRegistry)
}

/// The log filter: `RUST_LOG` when set, else `level`.
pub fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV)
        .map(tracing_subscriber::EnvFilter::new)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
}

/// `reckon-scheduler`: the Ballista 55 scheduler, with the stock flags, whose sessions know
/// reckon's UDFs and object stores.
pub fn scheduler_main(ext: Extensions) -> std::process::ExitCode {
    exit(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_stack_size(32 * 1024 * 1024)
            .build()
            .map_err(|e| BallistaError::General(format!("runtime: {e}")))
            .and_then(|rt| rt.block_on(run_scheduler(ext))),
    )
}

fn exit(r: ballista_core::error::Result<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_scheduler(ext: Extensions) -> ballista_core::error::Result<()> {
    let opt = ballista_scheduler::config::Config::parse();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(crate::log_filter(&opt.log_level_setting))
        .init();
    let addr = format!("{}:{}", opt.bind_host, opt.bind_port)
        .parse()
        .map_err(|e: std::net::AddrParseError| BallistaError::Configuration(e.to_string()))?;
    let mut config: SchedulerConfig = opt.try_into()?;
    config.override_logical_codec = Some(ext.logical_codec.clone());
    config.override_physical_codec = Some(ext.physical_codec.clone());
    let planner = ext.query_planner.clone();
    let config = config.with_override_session_builder(Arc::new(move |config: SessionConfig| {
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(crate::EnvObjectStores::new()))
            .build_arc()?;
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(planner.clone())
            .build();
        crate::register_udfs(&mut state)?;
        Ok(state)
    }));
    let cluster = BallistaCluster::new_from_config(&config).await?;
    tracing::info!(%addr, "reckon-scheduler listening");
    start_server(cluster, addr, Arc::new(config)).await
}

/// `reckon-executor`: the Ballista 55 executor, with the stock flags (memory pool, work
/// directory, ports, …), that runs reckon's UDFs and reads its object stores.
pub fn executor_main(ext: Extensions) -> std::process::ExitCode {
    exit(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| BallistaError::General(format!("runtime: {e}")))
            .and_then(|rt| rt.block_on(run_executor(ext))),
    )
}

async fn run_executor(ext: Extensions) -> ballista_core::error::Result<()> {
    let opt = ballista_executor::config::Config::parse();
    let health_addr: SocketAddr = format!("{}:{}", opt.bind_host, opt.bind_health_port)
        .parse()
        .map_err(|e| BallistaError::General(format!("invalid --bind-health-port: {e}")))?;
    let work_dir = opt.work_dir.clone();
    let mut config: ExecutorProcessConfig = opt.try_into()?;
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(crate::log_filter(&config.special_mod_log_level))
        .init();
    config.override_function_registry = Some(Arc::new(crate::function_registry()));
    config.override_logical_codec = Some(ext.logical_codec);
    config.override_physical_codec = Some(ext.physical_codec);
    // Spill and shuffle files go to the executor's work directory (Ballista's default is a
    // fresh temporary one); the memory pool flags apply on top of this runtime.
    config.override_runtime_producer = Some(Arc::new(move |_| {
        let mut b = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(crate::EnvObjectStores::new()));
        if let Some(dir) = &work_dir {
            b = b.with_temp_file_path(dir);
        }
        b.build_arc()
    }));
    let health = config.health.clone();
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel();
    let health_task = spawn_health_server(health_addr, health, health_stopped);
    let result = start_executor_process(Arc::new(config)).await;
    let _ = stop_health.send(());
    let _ = health_task.await;
    result
}
