//! `reckon.toml`: the storage root, the warehouse, the engine and one table per channel.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Deserialize;

use crate::error::{Error, Result};

mod channel;

pub use channel::*;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where everything reckon keeps goes: `s3://bucket/prefix`, a `file://` URL or a path
    /// (relative to the config file).
    pub storage_root: String,
    /// A local folder for scratch files (staged outputs before upload, downloaded inputs,
    /// spill files). Default: `_scratch/` under a local storage root, else a folder in the
    /// system's temporary directory named after the root.
    pub scratch_dir: Option<String>,
    /// The most the scratch folder's cache may hold, in MiB (default 8192; 0 turns it off):
    /// files a stage uploaded that a later stage of this host would otherwise download again.
    /// A file that would take the cache past it is not kept; its stage reads it from the root.
    pub scratch_cache_mb: Option<u64>,
    /// `local` (default), `standalone`, or `df://HOST:PORT`.
    #[serde(default = "default_engine")]
    pub engine: String,
    /// Partitions for the join; more partitions spread the hash table (default 16).
    #[serde(default = "default_partitions")]
    pub target_partitions: usize,
    /// The engine's memory pool in MiB: aggregates and sorts spill to disk beyond it (the hash
    /// join does not). Absent: no limit.
    pub memory_limit_mb: Option<usize>,
    /// Records of the larger side per reconcile bucket: normalize and collect write each side
    /// in hash buckets of the match key, and reconcile joins one bucket at a time. Default:
    /// from `memory_limit_mb` ([`Config::bucket_rows`]).
    pub bucket_rows: Option<u64>,
    /// Buckets a Ballista cluster joins at once, a job each (default 8): about the executors'
    /// task slots, or more to hide each job's fixed cost behind another's work.
    pub cluster_jobs: Option<u32>,
    /// Where the reconciliation SQL lives (default: `sql/` beside the config, else the
    /// directory named by `RECKON_SQL_DIR`, else the copy built into the binary).
    pub sql_dir: Option<String>,
    /// The platform's warehouse tables.
    pub warehouse: Warehouse,
    /// Settings for `s3://` locations; anything left out comes from the `AWS_*` environment.
    #[serde(default)]
    pub object_store: ObjectStoreConfig,
    /// The second look: channel-only records looked up in the platform's own database before
    /// they are reported missing.
    pub second_look: Option<SecondLook>,
    /// The channels, each reconciled on its own.
    /// Leases and retries.
    #[serde(default)]
    pub orchestration: Orchestration,
    /// Where alerts go; none when absent.
    #[serde(default)]
    pub alerts: Option<crate::alerts::AlertsConfig>,
    /// A second storage root that holds every committed day too (another bucket or region).
    pub replica: Option<ReplicaConfig>,
    /// Ed25519 keys that sign committed days and check them.
    pub signing: Option<SigningConfig>,
    /// The review desk (`reckon serve`, `reckon audit`): its database and its four-eyes rule.
    #[serde(default)]
    pub desk: crate::desk::DeskConfig,
    /// The real-time mode (`reckon stream`): its broker, subjects and state.
    pub stream: Option<crate::stream::StreamOptions>,
    /// Where reconcile takes the desk's decisions from: the desk, or (a replay) what the day
    /// recorded.
    #[serde(skip)]
    pub decisions: crate::desk::Source,
    #[serde(rename = "channel", default)]
    pub channels: Vec<Channel>,
    /// The bucket count normalize must write the bill in (a replay of a committed day), not
    /// one from the bill's size.
    #[serde(skip)]
    pub pinned_buckets: Option<u32>,
    /// The directory the config was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The second look at the platform's operational PostgreSQL database: a channel-only record
/// whose key is there (written after the warehouse was loaded) gets a reason that says so.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondLook {
    /// `postgres://user@host:port/db` (a read-only user; the password from `PGPASSWORD`).
    pub url: String,
    /// The orders table and its key column (the channel's merchant order id).
    #[serde(default = "default_orders_table")]
    pub orders_table: String,
    /// See `orders_table`.
    #[serde(default = "default_order_key")]
    pub order_key: String,
    /// The refunds table and its key column (the channel's refund request id).
    #[serde(default = "default_refunds_table")]
    pub refunds_table: String,
    /// See `refunds_table`.
    #[serde(default = "default_refund_key")]
    pub refund_key: String,
    /// Keys per query.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Queries per second at most (over all connections).
    #[serde(default = "default_lookups_per_second")]
    pub queries_per_second: u32,
    /// Connections in the pool: queries at once.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Per-query and connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub timeout_secs: u64,
    /// Attempts per query before the stage fails (with a backoff between them).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_orders_table() -> String {
    "orders".into()
}
fn default_order_key() -> String {
    "order_no".into()
}
fn default_refunds_table() -> String {
    "refunds".into()
}
fn default_refund_key() -> String {
    "refund_no".into()
}
fn default_batch() -> usize {
    500
}
fn default_lookups_per_second() -> u32 {
    10
}
fn default_pool_size() -> usize {
    4
}
fn default_attempts() -> u32 {
    3
}

/// How to reach `s3://` locations. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or the instance's role),
/// never from this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); default: AWS.
    pub endpoint: Option<String>,
    /// The region (default: `AWS_REGION`, else us-east-1).
    pub region: Option<String>,
    /// Allow plain HTTP (for a local S3-compatible server).
    #[serde(default)]
    pub allow_http: bool,
    /// How often a failed request (5xx, 429, a timeout, a reset connection) is retried, with
    /// exponential backoff (default 10).
    pub max_retries: Option<usize>,
    /// How long a request keeps being retried at most, in seconds (default 180).
    pub retry_timeout_secs: Option<u64>,
    /// How long one request may take before it counts as timed out, in seconds (default 30).
    pub timeout_secs: Option<u64>,
    /// Send uploads with `UNSIGNED-PAYLOAD` instead of signing each body's SHA-256. Default: as
    /// the AWS SDKs do, unsigned over HTTPS (TLS keeps the body intact) and signed over plain
    /// HTTP. reckon records and verifies the SHA-256 of every file it commits either way.
    pub unsigned_payload: Option<bool>,
    /// The part size of a multipart upload, in MiB (default 8; S3's least is 5).
    pub upload_part_mib: Option<usize>,
    /// Parts of one upload in flight at once (default 2). An upload holds about
    /// `upload_part_mib x (upload_concurrency + 1)` in memory; raise it on a slow, distant link.
    pub upload_concurrency: Option<usize>,
}

/// `[signing]`: the Ed25519 key that signs each committed day (a private key, from a variable
/// or a file) and the one `reckon verify` checks with (its public half, or a public key alone
/// where only checking happens).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The variable holding the PKCS#8 private key.
    pub private_key_env: Option<String>,
    /// The file holding it (relative to this file).
    pub private_key_file: Option<String>,
    /// The variable holding the SPKI public key (to check only).
    pub public_key_env: Option<String>,
    /// The file holding it.
    pub public_key_file: Option<String>,
}

/// `[replica]`: a second storage root, and how it keeps up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `s3://bucket/prefix` (or a path / `file://`, for a second disk).
    pub storage_root: String,
    /// `strong`: a day commits only when both roots hold it; `eventual`: the primary commits
    /// and a backlog on it is drained to the replica.
    pub mode: ReplicaMode,
    /// How to reach the replica's store when it differs from `[object_store]` (another
    /// endpoint or region); the `AWS_*` environment applies to both.
    pub object_store: Option<ObjectStoreConfig>,
}

/// How a replica keeps up with the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaMode {
    /// A day commits only when both roots hold it, checked by checksums.
    Strong,
    /// The primary commits; the replica follows from a durable backlog.
    Eventual,
}

/// Records a reconcile bucket holds (of the larger side) when nothing bounds memory.
pub const DEFAULT_BUCKET_ROWS: u64 = 2_000_000;
/// The scratch cache's budget when `scratch_cache_mb` is absent: a 10M-record day's bill,
/// normalized bill and snapshot (2.8 GB) fit.
pub const DEFAULT_SCRATCH_CACHE_MB: u64 = 8192;
/// Records of a bucket per MiB of `memory_limit_mb` (the join of a bucket, both sides and
/// what it keeps, needs about 0.5 KiB per record of the larger side).
const BUCKET_ROWS_PER_MIB: u64 = 1_000;

impl Config {
    /// Records of the larger side per reconcile bucket: `bucket_rows`, else what
    /// `memory_limit_mb` holds, at most [`DEFAULT_BUCKET_ROWS`].
    pub fn bucket_rows(&self) -> u64 {
        self.bucket_rows
            .unwrap_or_else(|| match self.memory_limit_mb {
                Some(mb) => (mb as u64 * BUCKET_ROWS_PER_MIB).clamp(10_000, DEFAULT_BUCKET_ROWS),
                None => DEFAULT_BUCKET_ROWS,
            })
    }

    /// The scratch cache's budget in bytes: `scratch_cache_mb`, else [`DEFAULT_SCRATCH_CACHE_MB`].
    pub fn scratch_cache_bytes(&self) -> u64 {
        self.scratch_cache_mb
            .unwrap_or(DEFAULT_SCRATCH_CACHE_MB)
            .saturating_mul(1024 * 1024)
    }

    /// The replica's locator: the config's folder and the replica's own `[object_store]`.
    pub fn replica_locator(&self) -> Option<Locator> {
        self.replica.as_ref().map(|r| Locator {
            base_dir: self.base_dir.clone(),
            object_store: r
                .object_store
                .clone()
                .unwrap_or_else(|| self.object_store.clone()),
        })
    }
}

/// The platform's tables: Hive-partitioned (`dt=YYYY-MM-DD`) Parquet, Delta Lake tables, or
/// PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warehouse {
    /// Orders table location (`s3://bucket/prefix`, a `file://` URL or a path).
    pub orders: String,
    /// Refunds table location.
    pub refunds: String,
    /// How the tables at `orders` and `refunds` are stored.
    #[serde(default)]
    pub format: WarehouseFormat,
    /// The column the tables are partitioned by day on (`dt=2026-11-20`).
    #[serde(default = "default_partition_column")]
    pub partition_column: String,
    /// Read the tables from PostgreSQL instead: `orders` and `refunds` are then table names.
    pub postgres: Option<PostgresSource>,
}

/// How warehouse tables are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarehouseFormat {
    /// Parquet files in Hive partition directories.
    #[default]
    Parquet,
    /// Delta Lake tables (partitioned by `partition_column`).
    Delta,
}

fn default_partition_column() -> String {
    "dt".into()
}

/// PostgreSQL as the warehouse: each day's rows are read in chunks from a read-only
/// transaction and snapshotted to Parquet (`platform_source/`) before any SQL runs on them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// `postgres://user@host:port/db` (the password from `PGPASSWORD` or the URL).
    pub url: String,
    /// The orders table's time column (`timestamptz`, or `timestamp` in UTC).
    #[serde(default = "default_orders_time")]
    pub orders_time: String,
    /// The refunds table's time column.
    #[serde(default = "default_refunds_time")]
    pub refunds_time: String,
    /// A column holding the channel's name, to read only that channel's rows.
    pub channel_column: Option<String>,
    /// Rows per fetch.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// Fetches per second at most (the rate limit on the database).
    #[serde(default = "default_chunks_per_second")]
    pub chunks_per_second: u32,
    /// Statement and per-fetch timeout.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_secs: u64,
    /// Connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

fn default_orders_time() -> String {
    "paid_at".into()
}
fn default_refunds_time() -> String {
    "refunded_at".into()
}
fn default_chunk_rows() -> usize {
    50_000
}
fn default_chunks_per_second() -> u32 {
    20
}
fn default_statement_timeout() -> u64 {
    600
}
fn default_connect_timeout() -> u64 {
    10
}

/// How runs of a channel-date coordinate and recover (`[orchestration]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orchestration {
    /// A run's lease on its channel-date lasts this long unless renewed (it is renewed every
    /// third of it while the run works); a crashed holder blocks others at most this long.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// How long a run waits for another run of the same channel-date to finish before it
    /// exits 75 naming the holder (`--lease-wait` overrides).
    #[serde(default)]
    pub lease_wait_secs: u64,
    /// Attempts of a stage that fails on a service it cannot reach (a database, an object
    /// store, the network), including the first; then it fails with exit 75.
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// The first wait between attempts; each later one doubles, plus up to as much again at
    /// random.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
}

impl Default for Orchestration {
    fn default() -> Self {
        Self {
            lease_ttl_secs: default_lease_ttl(),
            lease_wait_secs: 0,
            retry_attempts: default_retry_attempts(),
            retry_base_ms: default_retry_base_ms(),
        }
    }
}

fn default_lease_ttl() -> u64 {
    600
}
fn default_retry_attempts() -> u32 {
    3
}
fn default_retry_base_ms() -> u64 {
    2000
}

fn default_engine() -> String {
    "local".into()
}
fn default_partitions() -> usize {
    16
}
impl Config {
    /// Reads and checks `path`; every problem is a configuration error (exit 2) naming it.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let mut cfg: Config = toml::from_str(&text)
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
        cfg.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.validate()
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
        for c in &mut cfg.channels {
            c.rules = c
                .parse_rules()
                .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
        }
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.channels.is_empty() {
            return Err("no [[channel]] tables".into());
        }
        if self.bucket_rows == Some(0) {
            return Err("bucket_rows must be at least 1".into());
        }
        if self.cluster_jobs == Some(0) {
            return Err("cluster_jobs must be at least 1".into());
        }
        if self.target_partitions == 0 {
            return Err("target_partitions must be at least 1".into());
        }
        for (i, c) in self.channels.iter().enumerate() {
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(format!(
                    "channel #{}: name {:?} must be letters, digits, '_' or '-'",
                    i + 1,
                    c.name
                ));
            }
            if self.channels[..i].iter().any(|o| o.name == c.name) {
                return Err(format!("channel {:?} is configured twice", c.name));
            }
            c.validate()?;
        }
        if let Some(a) = &self.alerts {
            a.validate()?;
        }
        crate::engine::EngineKind::parse(&self.engine)?;
        if !self.storage_root.starts_with("s3://") {
            self.resolve("storage_root", &self.storage_root)?;
        }
        Ok(())
    }

    /// The channels a command names (`only`, each checked), or all of them when it names none.
    pub fn channel_names(&self, only: &[String]) -> Result<Vec<String>> {
        if only.is_empty() {
            return Ok(self.channels.iter().map(|c| c.name.clone()).collect());
        }
        for c in only {
            self.channel(c)?;
        }
        Ok(only.to_vec())
    }

    /// The channel named `name`, or a configuration error listing the known ones.
    pub fn channel(&self, name: &str) -> Result<&Channel> {
        self.channels
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.channels.iter().map(|c| c.name.as_str()).collect();
                Error::Config(format!(
                    "unknown channel {name:?}; the config has: {}",
                    known.join(", ")
                ))
            })
    }

    /// Resolves a `file://` URL or a path against the config's directory.
    pub fn resolve(&self, what: &str, value: &str) -> std::result::Result<PathBuf, String> {
        resolve_location(&self.base_dir, what, value)
    }

    /// What resolving a location setting needs, for the parts (fetchers, keys, tables) that
    /// need nothing else of the configuration.
    pub fn locator(&self) -> Locator {
        Locator {
            base_dir: self.base_dir.clone(),
            object_store: self.object_store.clone(),
        }
    }
}

/// Resolves location settings: paths and `file://` URLs against the config's folder,
/// `s3://` URLs with the `[object_store]` settings.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    /// The folder relative paths resolve against.
    pub base_dir: PathBuf,
    /// Settings for `s3://` locations.
    pub object_store: ObjectStoreConfig,
}

impl Locator {
    /// Resolves a `file://` URL or a path against the config's directory.
    pub fn resolve(&self, what: &str, value: &str) -> std::result::Result<PathBuf, String> {
        resolve_location(&self.base_dir, what, value)
    }
}

/// A location setting as a local path: `file:///abs`, an absolute path, or a path relative to
/// `base`. Other schemes are named in the error (`s3://` is taken before this, where it is
/// supported).
pub fn resolve_location(
    base: &Path,
    what: &str,
    value: &str,
) -> std::result::Result<PathBuf, String> {
    if let Some(rest) = value.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if let Some((scheme, _)) = value.split_once("://") {
        return Err(format!(
            "{what} = {value:?}: the {scheme}:// scheme is not supported (s3://, file:// and paths are, where a setting takes an object store)"
        ));
    }
    let p = PathBuf::from(value);
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

/// Parses a bill date `YYYY-MM-DD`, or a configuration error naming the bad value.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| Error::Config(format!("bad date {s:?}: expected YYYY-MM-DD")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    const BASE: &str = r#"
storage_root = "out"
[warehouse]
orders = "w/orders"
refunds = "w/refunds"
[[channel]]
name = "alipay"
format = "alipay_trade_v1"
time_zone = "Asia/Shanghai"
amount_tolerance = "0.05"
fee_rate = "0.006"
bill_deadline = "10:30"
thresholds.MISSING_IN_PLATFORM = { count = 10, amount = "500.00" }
source = { kind = "drop_folder", path = "bills", pattern = "*_{yyyymmdd}.csv.zip" }
"#;

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("reckon.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
    }

    #[test]
    fn a_config_is_parsed_once_into_typed_rules() {
        let c = load(BASE).expect("loads");
        let ch = c.channel("alipay").expect("channel");
        assert_eq!(ch.rules.tz, chrono_tz::Asia::Shanghai);
        assert_eq!(ch.rules.tolerance, "0.05".parse::<Decimal>().expect("dec"));
        assert_eq!(ch.rules.fee_rate, Some("0.006".parse().expect("dec")));
        assert_eq!(ch.rules.tolerance_rate, None);
        assert_eq!(
            ch.rules.limits,
            vec![Limit {
                category: "MISSING_IN_PLATFORM".into(),
                count: Some(10),
                amount: Some(50_000),
            }]
        );
        // Due at 10:30 Shanghai on the day after the bill date: 02:30 UTC.
        let due = ch
            .bill_due(NaiveDate::from_ymd_opt(2026, 11, 20).expect("date"))
            .expect("a deadline");
        assert_eq!(due.to_rfc3339(), "2026-11-21T02:30:00+00:00");
        assert!(c
            .resolve("storage_root", &c.storage_root)
            .expect("root")
            .ends_with("out"));
    }

    #[test]
    fn a_bad_rule_is_a_configuration_error_naming_the_channel_and_setting() {
        for (from, to, says) in [
            (
                "amount_tolerance = \"0.05\"",
                "amount_tolerance = \"0.001\"",
                "amount_tolerance",
            ),
            (
                "amount_tolerance = \"0.05\"",
                "amount_tolerance = \"-1\"",
                "amount_tolerance",
            ),
            (
                "time_zone = \"Asia/Shanghai\"",
                "time_zone = \"Mars/Base\"",
                "time_zone",
            ),
            ("fee_rate = \"0.006\"", "fee_rate = \"1.5\"", "fee_rate"),
            (
                "bill_deadline = \"10:30\"",
                "bill_deadline = \"half past ten\"",
                "bill_deadline",
            ),
            (
                "MISSING_IN_PLATFORM",
                "MATCHED",
                "not a difference category",
            ),
            (
                "storage_root = \"out\"",
                "storage_root = \"gs://b/x\"",
                "gs://",
            ),
        ] {
            let e = load(&BASE.replace(from, to)).expect_err(to);
            assert_eq!(e.exit_code(), 2, "{e}");
            let text = e.to_string();
            assert!(text.contains(says), "{to}: {text}");
            if says != "gs://" {
                assert!(text.contains("channel alipay"), "{to}: {text}");
            }
        }
        let twice = format!(
            "{BASE}{}",
            &BASE[BASE.find("[[channel]]").expect("channel")..]
        );
        let e = load(&twice).expect_err("twice");
        assert!(e.to_string().contains("configured twice"), "{e}");
        let e = load(&BASE.replace("format =", "colour = \"red\"\nformat =")).expect_err("field");
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn a_channel_with_rules_alone_has_every_default() {
        let c = Channel::with_rules("x", "amount_tolerance_rate = \"0.001\"").expect("channel");
        assert_eq!(c.rules.tz, chrono_tz::Asia::Shanghai);
        assert_eq!(c.rules.tolerance, Decimal::ZERO);
        assert_eq!(c.rules.tolerance_rate, Some("0.001".parse().expect("dec")));
        assert_eq!(c.bill_due(NaiveDate::default()), None);
        assert!(Channel::with_rules("x", "grace_days = -1").is_err());
    }
}
