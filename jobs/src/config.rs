//! `reckon.toml`: the storage root, the warehouse, the engine and one table per channel.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where every output goes: a `file://` URL or a path (relative to the config file).
    pub storage_root: String,
    /// `local` (default), `standalone`, or `df://HOST:PORT`.
    #[serde(default = "default_engine")]
    pub engine: String,
    /// Partitions for the join; more partitions spread the hash table (default 16).
    #[serde(default = "default_partitions")]
    pub target_partitions: usize,
    /// The engine's memory pool in MiB: aggregates and sorts spill to disk beyond it (the hash
    /// join does not). Absent: no limit.
    pub memory_limit_mb: Option<usize>,
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
    #[serde(rename = "channel", default)]
    pub channels: Vec<Channel>,
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

/// One payment channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The channel's name, as written in output paths (`channel=NAME`).
    pub name: String,
    /// Bill format: a template name under `formats/` or a path to a template file.
    pub format: String,
    /// The bill's time zone: bill dates are days in it.
    #[serde(default = "default_tz")]
    pub time_zone: String,
    /// The key both sides share: `merchant_order_id` (default) or `channel_txn_id`.
    #[serde(default = "default_key")]
    pub match_key: String,
    /// One-sided records this close to midnight wait for the next day (seconds, default 300).
    #[serde(default = "default_window")]
    pub cut_window_secs: i64,
    /// Days a carried record may wait before it becomes missing (default 1).
    #[serde(default = "default_grace")]
    pub grace_days: i64,
    /// Largest accepted amount difference (decimal string, default exact: "0").
    #[serde(default)]
    pub amount_tolerance: Option<String>,
    /// Largest accepted amount difference as a fraction of the platform's amount ("0.001" is
    /// 0.1%, rounded to the cent); the larger of the two tolerances applies.
    #[serde(default)]
    pub amount_tolerance_rate: Option<String>,
    /// Contracted fee rate (decimal string, "0.006" is 0.6%); absent skips the fee check.
    #[serde(default)]
    pub fee_rate: Option<String>,
    /// How the channel rounds its fee to the cent: `half_up` (default), `half_even`, `down`
    /// or `up`.
    #[serde(default = "default_fee_rounding")]
    pub fee_rounding: String,
    /// Which of the bill's amounts is compared with the platform's: `order` (the order
    /// amount, default) or `received` (what the merchant received; the template must fill
    /// the canonical `received` column).
    #[serde(default = "default_compare_amount")]
    pub compare_amount: String,
    /// More rejected rows than this fails the bill (exit 3). Default 1000.
    #[serde(default = "default_max_rejected")]
    pub max_rejected_rows: u64,
    /// Per category, the count and amount past which a day is flagged in its summary
    /// (`thresholds.MISSING_IN_PLATFORM = { count = 10, amount = "500.00" }`).
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<String, Threshold>,
    /// The time of day (HH:MM, in the channel's zone, on the day after the bill date) by
    /// which the bill is due: a fetch that still finds none after it sends an alert.
    #[serde(default)]
    pub bill_deadline: Option<String>,
    /// Where the bill comes from.
    pub source: Source,
}

/// A category's limits for one day: more rows than `count`, or a larger amount than
/// `amount` (the larger of the category's channel and platform sums), passes the threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Rows of the category.
    pub count: Option<u64>,
    /// Decimal string.
    pub amount: Option<String>,
}

/// A checked threshold: the category and its limits (the amount as a scale-2 mantissa).
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The category's name.
    pub category: String,
    /// See `Threshold::count`.
    pub count: Option<u64>,
    /// See `Threshold::amount`.
    pub amount: Option<i128>,
}

/// Where a channel's bill is fetched from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A local folder the channel's files are dropped into.
    DropFolder {
        /// The folder.
        path: String,
        /// The file name, with `{yyyymmdd}` / `{date}` for the bill date and `*` for anything.
        pattern: String,
    },
    /// A prefix in an object store (`s3://bucket/prefix/`, or `file://` / a path): the one
    /// object directly under it whose name matches `pattern`.
    ObjectStore {
        /// The prefix (`{yyyymmdd}` / `{date}` expand here too).
        url: String,
        /// As for `drop_folder`.
        pattern: String,
    },
    /// A file behind an HTTP(S) URL, with credentials from the environment.
    Https {
        /// The URL; `{yyyymmdd}` / `{date}` expand.
        url: String,
        /// `none`, `bearer` (the token in `token_env`) or `basic` (`user_env`, `password_env`).
        #[serde(default)]
        auth: HttpAuth,
        /// The variable holding the bearer token.
        token_env: Option<String>,
        /// The variable holding the basic-auth user.
        user_env: Option<String>,
        /// The variable holding the basic-auth password.
        password_env: Option<String>,
        /// HTTP statuses that mean "not published yet" (exit 75).
        #[serde(default = "default_not_ready_statuses")]
        not_ready_status: Vec<u16>,
        /// The raw file's name; default: the server's `Content-Disposition`, else the URL's
        /// last segment.
        file_name: Option<String>,
        /// Seconds for the whole download.
        #[serde(default = "default_fetch_timeout")]
        timeout_secs: u64,
    },
    /// Alipay OpenAPI: `alipay.data.dataservice.bill.downloadurl.query`, RSA2-signed (public-key
    /// mode).
    Alipay {
        /// The gateway.
        #[serde(default = "default_alipay_gateway")]
        gateway: String,
        /// The application's id.
        app_id: String,
        /// `trade` or `signcustomer`.
        #[serde(default = "default_alipay_bill_type")]
        bill_type: String,
        /// The application's private key (PEM, or the bare base64 Alipay's key tool gives):
        /// the name of a variable holding it ...
        private_key_env: Option<String>,
        /// ... or of a file holding it.
        private_key_file: Option<String>,
        /// Alipay's public key (PEM or bare base64), from a variable ...
        alipay_public_key_env: Option<String>,
        /// ... or a file.
        alipay_public_key_file: Option<String>,
        /// Seconds for each call and the download.
        #[serde(default = "default_fetch_timeout")]
        timeout_secs: u64,
    },
    /// WeChat Pay API v3: `GET /v3/bill/tradebill`, signed `WECHATPAY2-SHA256-RSA2048`.
    WechatpayV3 {
        /// The API's base URL.
        #[serde(default = "default_wechat_base_url")]
        base_url: String,
        /// The merchant id (mchid).
        mchid: String,
        /// The serial number of the merchant's API certificate.
        serial_no: String,
        /// The merchant's API private key (`apiclient_key.pem`), from a variable ...
        private_key_env: Option<String>,
        /// ... or a file.
        private_key_file: Option<String>,
        /// WeChat Pay's platform certificate or public key (PEM), from a variable ...
        platform_key_env: Option<String>,
        /// ... or a file.
        platform_key_file: Option<String>,
        /// The `Wechatpay-Serial` answers must carry (the platform certificate's serial or the
        /// public key's id); unchecked when unset.
        platform_serial: Option<String>,
        /// `ALL`, `SUCCESS` or `REFUND`.
        #[serde(default = "default_wechat_bill_type")]
        bill_type: String,
        /// Seconds for each call and the download.
        #[serde(default = "default_fetch_timeout")]
        timeout_secs: u64,
    },
}

/// Credentials for the HTTPS fetcher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token_env>`.
    Bearer,
    /// `Authorization: Basic` from `user_env` and `password_env`.
    Basic,
}

fn default_not_ready_statuses() -> Vec<u16> {
    vec![404]
}
fn default_fetch_timeout() -> u64 {
    300
}
fn default_alipay_gateway() -> String {
    "https://openapi.alipay.com/gateway.do".into()
}
fn default_alipay_bill_type() -> String {
    "trade".into()
}
fn default_wechat_base_url() -> String {
    "https://api.mch.weixin.qq.com".into()
}
fn default_wechat_bill_type() -> String {
    "ALL".into()
}

fn default_engine() -> String {
    "local".into()
}
fn default_partitions() -> usize {
    16
}
fn default_tz() -> String {
    "Asia/Shanghai".into()
}
fn default_key() -> String {
    "merchant_order_id".into()
}
fn default_window() -> i64 {
    300
}
fn default_grace() -> i64 {
    1
}
fn default_fee_rounding() -> String {
    "half_up".into()
}
fn default_compare_amount() -> String {
    "order".into()
}
fn default_max_rejected() -> u64 {
    1000
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
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.channels.is_empty() {
            return Err("no [[channel]] tables".into());
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
        self.storage_path()?;
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

    /// The storage root as a local directory.
    pub fn storage_path(&self) -> std::result::Result<PathBuf, String> {
        self.resolve("storage_root", &self.storage_root)
    }

    /// Resolves a `file://` URL or a path against the config's directory.
    pub fn resolve(&self, what: &str, value: &str) -> std::result::Result<PathBuf, String> {
        resolve_location(&self.base_dir, what, value)
    }
}

/// A location setting as a local path: `file:///abs`, an absolute path, or a path relative to
/// `base`. Object-store URLs are named in the error: they arrive with issue #4.
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
            "{what} = {value:?}: the {scheme}:// scheme is not supported yet (only file:// and paths)"
        ));
    }
    let p = PathBuf::from(value);
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

impl Channel {
    /// The bill's time zone.
    pub fn tz(&self) -> std::result::Result<Tz, String> {
        self.time_zone
            .parse()
            .map_err(|_| format!("time_zone {:?} is not an IANA zone name", self.time_zone))
    }

    /// The amount tolerance, exact decimal at scale 2.
    pub fn tolerance(&self) -> std::result::Result<Decimal, String> {
        match &self.amount_tolerance {
            None => Ok(Decimal::ZERO),
            Some(s) => {
                let d: Decimal = s
                    .parse()
                    .map_err(|_| format!("amount_tolerance {s:?} is not a decimal"))?;
                if d.is_sign_negative() || d.scale() > 2 {
                    return Err(format!(
                        "amount_tolerance {s:?} must be non-negative with at most 2 decimals"
                    ));
                }
                Ok(d)
            }
        }
    }

    /// The contracted fee rate, exact decimal at scale ≤ 6.
    /// A channel named `name` with `rules` (TOML lines of a `[[channel]]` table) and every
    /// other rule at its default; for planning SQL outside a run.
    pub fn with_rules(name: &str, rules: &str) -> std::result::Result<Channel, String> {
        let c: Channel = toml::from_str(&format!(
            "name = {name:?}\nformat = {name:?}\n\
             source = {{ kind = \"drop_folder\", path = \".\", pattern = \"*\" }}\n{rules}\n"
        ))
        .map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    /// When the bill of `date` is due (see `bill_deadline`), as an instant.
    pub fn bill_due(
        &self,
        date: chrono::NaiveDate,
    ) -> std::result::Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        use chrono::TimeZone;
        let Some(text) = &self.bill_deadline else {
            return Ok(None);
        };
        let time = chrono::NaiveTime::parse_from_str(text, "%H:%M")
            .map_err(|_| format!("channel {}: bill_deadline {text:?} is not HH:MM", self.name))?;
        let local = (date + chrono::Duration::days(1)).and_time(time);
        let zone = self.tz()?;
        Ok(zone
            .from_local_datetime(&local)
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc)))
    }

    /// Checks the channel's rules; the error names the channel and the setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.bill_due(chrono::NaiveDate::default())?;
        self.tz()
            .map_err(|e| format!("channel {}: {e}", self.name))?;
        self.tolerance()
            .map_err(|e| format!("channel {}: {e}", self.name))?;
        self.fee_rate()
            .map_err(|e| format!("channel {}: {e}", self.name))?;
        self.tolerance_rate()
            .map_err(|e| format!("channel {}: {e}", self.name))?;
        self.limits()
            .map_err(|e| format!("channel {}: {e}", self.name))?;
        if !["merchant_order_id", "channel_txn_id"].contains(&self.match_key.as_str()) {
            return Err(format!(
                "channel {}: match_key {:?} must be merchant_order_id or channel_txn_id",
                self.name, self.match_key
            ));
        }
        if reckon_udfs::FeeRounding::parse(&self.fee_rounding).is_none() {
            return Err(format!(
                "channel {}: fee_rounding {:?} must be one of {}",
                self.name,
                self.fee_rounding,
                reckon_udfs::FeeRounding::NAMES.join(", ")
            ));
        }
        if !["order", "received"].contains(&self.compare_amount.as_str()) {
            return Err(format!(
                "channel {}: compare_amount {:?} must be order or received",
                self.name, self.compare_amount
            ));
        }
        if self.cut_window_secs < 0 || self.cut_window_secs > 86_400 {
            return Err(format!(
                "channel {}: cut_window_secs {} must be between 0 and 86400",
                self.name, self.cut_window_secs
            ));
        }
        if self.grace_days < 0 {
            return Err(format!(
                "channel {}: grace_days must not be negative",
                self.name
            ));
        }
        Ok(())
    }

    /// The relative amount tolerance, checked.
    pub fn tolerance_rate(&self) -> std::result::Result<Option<Decimal>, String> {
        rate(
            "amount_tolerance_rate",
            self.amount_tolerance_rate.as_deref(),
        )
    }

    /// The thresholds, checked: known categories, at least one limit each, amounts exact.
    pub fn limits(&self) -> std::result::Result<Vec<Limit>, String> {
        let mut out = Vec::new();
        for (category, t) in &self.thresholds {
            if category.parse::<reckon_udfs::Category>().is_err()
                || category == reckon_udfs::Category::Matched.as_str()
            {
                return Err(format!(
                    "thresholds.{category}: not a difference category (one of {})",
                    reckon_udfs::Category::ALL
                        .iter()
                        .filter(|c| **c != reckon_udfs::Category::Matched)
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if t.count.is_none() && t.amount.is_none() {
                return Err(format!("thresholds.{category}: give count, amount or both"));
            }
            let amount = match &t.amount {
                None => None,
                Some(a) => {
                    let mut d: Decimal = a.parse().map_err(|_| {
                        format!("thresholds.{category}.amount {a:?} is not a decimal")
                    })?;
                    if d.is_sign_negative() || d.scale() > 2 {
                        return Err(format!(
                            "thresholds.{category}.amount {a:?} must be non-negative with at most 2 decimals"
                        ));
                    }
                    d.rescale(2);
                    Some(d.mantissa())
                }
            };
            out.push(Limit {
                category: category.clone(),
                count: t.count,
                amount,
            });
        }
        Ok(out)
    }

    /// The contracted fee rate, checked.
    pub fn fee_rate(&self) -> std::result::Result<Option<Decimal>, String> {
        rate("fee_rate", self.fee_rate.as_deref())
    }
}

/// A rate setting (`name`): a decimal in [0, 1) with at most 6 decimals.
fn rate(name: &str, value: Option<&str>) -> std::result::Result<Option<Decimal>, String> {
    let Some(s) = value else {
        return Ok(None);
    };
    let d: Decimal = s
        .parse()
        .map_err(|_| format!("{name} {s:?} is not a decimal"))?;
    if d.is_sign_negative() || d.scale() > 6 || d >= Decimal::ONE {
        return Err(format!(
            "{name} {s:?} must be in [0, 1) with at most 6 decimals"
        ));
    }
    Ok(Some(d))
}

/// Parses a bill date `YYYY-MM-DD`, or a configuration error naming the bad value.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| Error::Config(format!("bad date {s:?}: expected YYYY-MM-DD")))
}
