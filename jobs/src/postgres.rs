//! PostgreSQL as the platform's source: the day's rows of a table read in chunks from one
//! read-only transaction, at a limited rate and with timeouts, into a Parquet snapshot. The
//! reconciliation then reads the snapshot, never the database.

use std::fs::File;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use governor::{Quota, RateLimiter};
use rust_decimal::Decimal;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use crate::config::PostgresSource;
use crate::error::{Error, IoContext, Result};
use crate::parquet_io::writer_props;
use crate::schema::utc_ts;

/// NUMERIC columns become DECIMAL(38, 6), exactly; a value with more decimals is refused.
const NUMERIC_SCALE: u32 = 6;

/// What one table's snapshot read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Rows written.
    pub rows: u64,
    /// Chunks fetched.
    pub chunks: u64,
}

/// A quoted identifier (`schema.table` → `"schema"."table"`); only letters, digits and `_`.
fn ident(name: &str) -> Result<String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(Error::Config(format!(
            "warehouse.postgres: {name:?} is not a table or column name (letters, digits, '_', one '.')"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

fn db_error(what: &str, e: tokio_postgres::Error) -> Error {
    if unreachable(&e) {
        Error::Unavailable(format!("postgres: {what}: {e}"))
    } else {
        Error::Other(format!("postgres: {what}: {e}"))
    }
}

/// Whether `e` says the database could not be reached or went away (worth a retry later),
/// by its kind and never by its text: a closed connection, an I/O error underneath (refused,
/// reset, timed out), or the server's own SQLSTATE for it (class 08 connection exception,
/// 53300 too many connections, 57P01-57P03 shutting down or not yet accepting). A bad query,
/// a missing table or a permission error is not.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03");
    }
    e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// Connects to `url` within `timeout_secs` (no TLS: a database on the same network).
pub async fn connect(url: &str, timeout_secs: u64) -> Result<tokio_postgres::Client> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Config(format!("postgres url: {e}")))?;
    cfg.connect_timeout(Duration::from_secs(timeout_secs))
        .application_name("reckon");
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(timeout_secs + 1), cfg.connect(NoTls))
            .await
            .map_err(|_| Error::Unavailable("postgres: connect timed out".into()))?
            .map_err(|e| db_error("connect", e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

/// Snapshots the rows of `table` whose `time_column` is in `[start, end)` (and, with
/// `channel`, whose column equals the value) into `out`.
pub async fn snapshot(
    src: &PostgresSource,
    table: &str,
    time_column: &str,
    channel: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    out: &Path,
) -> Result<Snapshot> {
    let mut client = connect(&src.url, src.connect_timeout_secs).await?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(|e| db_error("begin", e))?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
        src.statement_timeout_secs * 1000,
        src.statement_timeout_secs * 1000
    ))
    .await
    .map_err(|e| db_error("set timeouts", e))?;
    let mut sql = format!(
        "SELECT * FROM {} WHERE {t} >= $1 AND {t} < $2",
        ident(table)?,
        t = ident(time_column)?
    );
    if let (Some(col), Some(_)) = (&src.channel_column, channel) {
        sql.push_str(&format!(" AND {} = $3", ident(col)?));
    }
    let stmt = tx
        .prepare(&sql)
        .await
        .map_err(|e| db_error(&format!("prepare {sql:?}"), e))?;
    let naive = stmt.params().first() == Some(&Type::TIMESTAMP);
    let (ns, ne) = (start.naive_utc(), end.naive_utc());
    let mut params: Vec<&(dyn ToSql + Sync)> = if naive {
        vec![&ns, &ne]
    } else {
        vec![&start, &end]
    };
    let chan = channel.map(str::to_string);
    if src.channel_column.is_some() {
        if let Some(c) = &chan {
            params.push(c);
        }
    }
    let schema = arrow_schema(stmt.columns(), table)?;
    let portal = tx
        .bind(&stmt, &params)
        .await
        .map_err(|e| db_error("bind", e))?;
    let rate = NonZeroU32::new(src.chunks_per_second).unwrap_or(NonZeroU32::MIN);
    let limiter = RateLimiter::direct(Quota::per_second(rate));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let mut writer = ArrowWriter::try_new(
        File::create(out).at(out)?,
        schema.clone(),
        Some(writer_props()),
    )?;
    let mut snap = Snapshot::default();
    let chunk = i32::try_from(src.chunk_rows.max(1)).unwrap_or(i32::MAX);
    loop {
        limiter.until_ready().await;
        let rows = tokio::time::timeout(
            Duration::from_secs(src.statement_timeout_secs),
            tx.query_portal(&portal, chunk),
        )
        .await
        .map_err(|_| {
            Error::Other(format!(
                "postgres: a chunk of {table} took over {} s",
                src.statement_timeout_secs
            ))
        })?
        .map_err(|e| db_error(&format!("fetch {table}"), e))?;
        if rows.is_empty() {
            break;
        }
        snap.chunks += 1;
        snap.rows += rows.len() as u64;
        writer.write(&to_batch(&rows, &schema, table)?)?;
        if rows.len() < chunk as usize {
            break;
        }
    }
    writer.close()?;
    tx.rollback().await.map_err(|e| db_error("end", e))?;
    tracing::info!(
        table,
        rows = snap.rows,
        chunks = snap.chunks,
        "postgres snapshot"
    );
    Ok(snap)
}

fn arrow_type(t: &Type) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 | Type::INT4 | Type::INT8 => DataType::Int64,
        Type::FLOAT4 | Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => DataType::Decimal128(38, NUMERIC_SCALE as i8),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::TIMESTAMPTZ | Type::TIMESTAMP => utc_ts(),
        Type::DATE => DataType::Date32,
        _ => return None,
    })
}

fn arrow_schema(cols: &[tokio_postgres::Column], table: &str) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for c in cols {
        let t = arrow_type(c.type_()).ok_or_else(|| {
            Error::Config(format!(
                "postgres: {table}.{} has type {} that reckon does not snapshot (cast it in a view)",
                c.name(),
                c.type_()
            ))
        })?;
        fields.push(Field::new(c.name(), t, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
    table: &str,
) -> Result<Option<T>> {
    row.try_get::<_, Option<T>>(i).map_err(|e| {
        Error::Other(format!(
            "postgres: {table}.{}: {e}",
            row.columns()[i].name()
        ))
    })
}

fn to_batch(rows: &[Row], schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let n = rows.len();
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let pg = rows[0].columns()[i].type_().clone();
        let col: ArrayRef = match f.data_type() {
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                for r in rows {
                    b.append_option(get::<bool>(r, i, table)?);
                }
                Arc::new(b.finish())
            }
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(n);
                for r in rows {
                    let v = match pg {
                        Type::INT2 => get::<i16>(r, i, table)?.map(i64::from),
                        Type::INT4 => get::<i32>(r, i, table)?.map(i64::from),
                        _ => get::<i64>(r, i, table)?,
                    };
                    b.append_option(v);
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(n);
                for r in rows {
                    let v = match pg {
                        Type::FLOAT4 => get::<f32>(r, i, table)?.map(f64::from),
                        _ => get::<f64>(r, i, table)?,
                    };
                    b.append_option(v);
                }
                Arc::new(b.finish())
            }
            DataType::Decimal128(p, s) => {
                let mut b = Decimal128Builder::with_capacity(n)
                    .with_data_type(DataType::Decimal128(*p, *s));
                for r in rows {
                    match get::<Decimal>(r, i, table)? {
                        None => b.append_null(),
                        Some(d) => {
                            let mut e = d;
                            e.rescale(NUMERIC_SCALE);
                            if e != d {
                                return Err(Error::Other(format!(
                                    "postgres: {table}.{} = {d} has more than {NUMERIC_SCALE} decimals",
                                    f.name()
                                )));
                            }
                            b.append_value(e.mantissa());
                        }
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Utf8 => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                for r in rows {
                    b.append_option(get::<&str>(r, i, table)?);
                }
                Arc::new(b.finish())
            }
            DataType::Date32 => {
                let mut b = Date32Builder::with_capacity(n);
                for r in rows {
                    b.append_option(
                        get::<NaiveDate>(r, i, table)?.map(|d| (d - epoch).num_days() as i32),
                    );
                }
                Arc::new(b.finish())
            }
            _ => {
                // Timestamps: with a zone as they are; without one, taken as UTC.
                let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                for r in rows {
                    let v = match pg {
                        Type::TIMESTAMP => get::<NaiveDateTime>(r, i, table)?
                            .map(|t| t.and_utc().timestamp_micros()),
                        _ => get::<DateTime<Utc>>(r, i, table)?.map(|t| t.timestamp_micros()),
                    };
                    b.append_option(v);
                }
                Arc::new(b.finish())
            }
        };
        debug_assert_eq!(col.len(), n);
        cols.push(col);
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// The second look's connections to the operational database: a pool of at most
/// `pool_size` connections (made within the timeout, replaced when broken) and one rate limit
/// shared by every query.
pub struct Lookups {
    pool: deadpool_postgres::Pool,
    limiter: governor::DefaultDirectRateLimiter,
    cfg: crate::config::SecondLook,
    queries: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
}

impl Lookups {
    /// The pool for `cfg`; no connection is made until the first query.
    pub fn new(cfg: &crate::config::SecondLook) -> Result<Lookups> {
        use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
        let mut pg: tokio_postgres::Config = cfg
            .url
            .parse()
            .map_err(|e| Error::Config(format!("second_look.url: {e}")))?;
        let timeout = Duration::from_secs(cfg.timeout_secs);
        pg.connect_timeout(timeout).application_name("reckon");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Config(format!("second_look: {e}")))?;
        let rate = NonZeroU32::new(cfg.queries_per_second).unwrap_or(NonZeroU32::MIN);
        Ok(Lookups {
            pool,
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            cfg: cfg.clone(),
            queries: Default::default(),
            retries: Default::default(),
        })
    }

    /// Queries sent so far, retries included.
    pub fn queries(&self) -> u64 {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queries sent again after a connection error or a timeout.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections the pool holds (opened and not discarded).
    pub fn connections(&self) -> usize {
        self.pool.status().size
    }

    /// Which of `keys` are in `table.column`. Keys go in batches of `batch`, up to
    /// `pool_size` queries at once and at most `queries_per_second`; each query runs under the
    /// timeout and is retried with a backoff on connection errors and timeouts.
    pub async fn find(
        &self,
        table: &str,
        column: &str,
        keys: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        use futures::{StreamExt, TryStreamExt};
        let sql = format!(
            "SELECT {c}::text FROM {t} WHERE {c}::text = ANY($1)",
            c = ident(column)?,
            t = ident(table)?
        );
        let found: Vec<Vec<String>> = futures::stream::iter(keys.chunks(self.cfg.batch.max(1)))
            .map(|b| self.batch(&sql, table, b))
            .buffer_unordered(self.cfg.pool_size.max(1))
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn batch(&self, sql: &str, table: &str, keys: &[String]) -> Result<Vec<String>> {
        let attempts = self.cfg.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.limiter.until_ready().await;
            self.queries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.query(sql, table, keys).await {
                Ok(rows) => {
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        if let Some(k) = get::<String>(r, 0, table)? {
                            out.push(k);
                        }
                    }
                    return Ok(out);
                }
                Err(Error::Unavailable(why)) if attempt < attempts => {
                    // Full jitter, so that parallel batches do not retry in step.
                    let cap = 200u64 * 2u64.pow(attempt);
                    let wait = rand::Rng::gen_range(&mut rand::thread_rng(), cap / 2..=cap);
                    tracing::warn!(attempt, wait_ms = wait, "{why}; retrying");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    self.retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn query(&self, sql: &str, table: &str, keys: &[String]) -> Result<Vec<Row>> {
        use deadpool_postgres::PoolError;
        let client = self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => db_error("second look: connect", e),
            PoolError::Timeout(_) => Error::Unavailable(format!(
                "postgres: second look: no connection within {} s",
                self.cfg.timeout_secs
            )),
            other => Error::Other(format!("postgres: second look: {other}")),
        })?;
        let batch: Vec<&str> = keys.iter().map(String::as_str).collect();
        let timeout = Duration::from_secs(self.cfg.timeout_secs);
        let result = match tokio::time::timeout(timeout, client.query(sql, &[&batch])).await {
            Ok(r) => r.map_err(|e| db_error(&format!("second look on {table}"), e)),
            Err(_) => Err(Error::Unavailable(format!(
                "postgres: second look on {table} timed out after {} s",
                self.cfg.timeout_secs
            ))),
        };
        if result.is_err() {
            // A connection that failed or is still busy with the abandoned query is not
            // handed out again.
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }
}
