//! The state databases of the review desk and of the stream: SQLite in a file by default,
//! PostgreSQL when configured. Their logic is written once against [`Tx`]: statements with
//! `$1`, `$2` … parameters, values that are integers, text or NULL, every write in a
//! transaction that holds the database's one writer lock (SQLite's `BEGIN IMMEDIATE`, a
//! PostgreSQL advisory lock of its own), so the desk's audit chain grows one entry at a time
//! and the stream's micro-batches commit one after another.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

/// What a database holds: its name (in errors), its tables and the key of its PostgreSQL
/// writer lock.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub name: &'static str,
    /// `CREATE … IF NOT EXISTS` statements, in the SQL both databases read.
    pub tables: &'static [&'static str],
    /// The key of the advisory lock every PostgreSQL write transaction takes.
    pub writer_lock: i64,
}

/// The review desk's database.
pub const DESK: Schema = Schema {
    name: "desk",
    tables: DESK_TABLES,
    writer_lock: 0x7265_636b_6f6e, // "reckon"
};

/// The desk's tables.
const DESK_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS desk_state (
        channel TEXT NOT NULL,
        ageing_key TEXT NOT NULL,
        version BIGINT NOT NULL,
        decision_id BIGINT,
        assignee TEXT,
        audit_seq BIGINT NOT NULL,
        PRIMARY KEY (channel, ageing_key))",
    "CREATE TABLE IF NOT EXISTS desk_decisions (
        id BIGINT PRIMARY KEY,
        channel TEXT NOT NULL,
        ageing_key TEXT NOT NULL,
        action TEXT NOT NULL,
        comment TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        status TEXT NOT NULL,
        reviewed_by TEXT,
        reviewed_at TEXT,
        category TEXT NOT NULL,
        match_key TEXT,
        channel_amount TEXT,
        platform_amount TEXT,
        audit_seq BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS desk_decisions_key ON desk_decisions (channel, ageing_key)",
    "CREATE TABLE IF NOT EXISTS desk_comments (
        id BIGINT PRIMARY KEY,
        channel TEXT NOT NULL,
        ageing_key TEXT NOT NULL,
        author TEXT NOT NULL,
        at TEXT NOT NULL,
        text TEXT NOT NULL,
        audit_seq BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS desk_comments_key ON desk_comments (channel, ageing_key)",
    "CREATE TABLE IF NOT EXISTS desk_audit (
        seq BIGINT PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)",
];

/// A value going into or coming out of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A row: its columns in the statement's order.
pub type Row = Vec<Value>;

/// Where a state lives.
#[derive(Clone)]
pub enum Db {
    /// One connection to a SQLite file (the desk's writes are few, and reads of the
    /// differences themselves go to the committed Parquet; the stream writes from one task).
    Sqlite(Arc<Mutex<rusqlite::Connection>>, Schema),
    /// A PostgreSQL database (the password from `PGPASSWORD`).
    Postgres(Arc<Mutex<PgConn>>, Schema),
}

/// A PostgreSQL connection, and whether a transaction was dropped on it unfinished
/// (rolled back before the next one begins: a drop cannot wait for the server).
pub struct PgConn {
    client: tokio_postgres::Client,
    unfinished: bool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Sqlite(_, s) => write!(f, "Db::Sqlite({})", s.name),
            Db::Postgres(_, s) => write!(f, "Db::Postgres({})", s.name),
        }
    }
}

fn sqlite_error(db: &str, what: &str, e: rusqlite::Error) -> Error {
    Error::Other(format!("{db} database (SQLite): {what}: {e}"))
}

fn pg_error(db: &str, what: &str, e: tokio_postgres::Error) -> Error {
    Error::Unavailable(format!("{db} database (PostgreSQL): {what}: {e}"))
}

impl Db {
    /// Opens (and creates, the first time) the SQLite file at `path` holding `schema`.
    pub fn sqlite(path: &Path, schema: Schema) -> Result<Db> {
        let db = schema.name;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| sqlite_error(db, &path.display().to_string(), e))?;
        // Write-ahead logging: readers never wait for the writer; a busy file is waited for.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sqlite_error(db, "journal_mode", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| sqlite_error(db, "synchronous", e))?;
        // A page cache of up to 64 MiB (SQLite's default is 2 MiB): a large state's indexes
        // stay in memory. And a checkpoint each 64 MiB of log, not each 4 MiB: pages written
        // again and again between two checkpoints are copied into the file once.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(|e| sqlite_error(db, "cache_size", e))?;
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)
            .map_err(|e| sqlite_error(db, "wal_autocheckpoint", e))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| sqlite_error(db, "busy_timeout", e))?;
        for s in schema.tables {
            conn.execute(s, [])
                .map_err(|e| sqlite_error(db, "create tables", e))?;
        }
        Ok(Db::Sqlite(Arc::new(Mutex::new(conn)), schema))
    }

    /// Connects to PostgreSQL at `url` and creates `schema`'s tables if they are not there.
    pub async fn postgres(url: &str, timeout_secs: u64, schema: Schema) -> Result<Db> {
        let client = crate::postgres::connect(url, timeout_secs).await?;
        for s in schema.tables {
            client
                .batch_execute(s)
                .await
                .map_err(|e| pg_error(schema.name, "create tables", e))?;
        }
        Ok(Db::Postgres(
            Arc::new(Mutex::new(PgConn {
                client,
                unfinished: false,
            })),
            schema,
        ))
    }

    /// Opens the database `database` names: a `postgres://` URL, else a SQLite file
    /// (`sqlite://` optional) relative to `base_dir`.
    pub async fn open(
        database: &str,
        base_dir: &Path,
        timeout_secs: u64,
        schema: Schema,
    ) -> Result<Db> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            Db::postgres(database, timeout_secs, schema).await
        } else {
            let path = database.strip_prefix("sqlite://").unwrap_or(database);
            Db::sqlite(&base_dir.join(path), schema)
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(..))
    }

    /// Starts a transaction that writes (it holds the desk's writer lock until it ends).
    pub async fn write(&self) -> Result<Tx<'_>> {
        self.begin(true).await
    }

    /// Starts a transaction that only reads.
    pub async fn read(&self) -> Result<Tx<'_>> {
        self.begin(false).await
    }

    async fn begin(&self, write: bool) -> Result<Tx<'_>> {
        let conn = match self {
            Db::Sqlite(c, schema) => {
                let c = c.lock().await;
                let begin = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
                c.execute_batch(begin)
                    .map_err(|e| sqlite_error(schema.name, "begin", e))?;
                Conn::Sqlite(c)
            }
            Db::Postgres(c, schema) => {
                let mut c = c.lock().await;
                let begin = if c.unfinished {
                    "ROLLBACK; BEGIN"
                } else {
                    "BEGIN"
                };
                c.client
                    .batch_execute(begin)
                    .await
                    .map_err(|e| pg_error(schema.name, "begin", e))?;
                c.unfinished = false;
                if write {
                    if let Err(e) = c
                        .client
                        .execute("SELECT pg_advisory_xact_lock($1)", &[&schema.writer_lock])
                        .await
                    {
                        let _ = c.client.batch_execute("ROLLBACK").await;
                        return Err(pg_error(schema.name, "writer lock", e));
                    }
                }
                Conn::Postgres(c)
            }
        };
        let db = match self {
            Db::Sqlite(_, s) | Db::Postgres(_, s) => s.name,
        };
        Ok(Tx {
            conn,
            open: true,
            db,
        })
    }
}

enum Conn<'a> {
    Sqlite(MutexGuard<'a, rusqlite::Connection>),
    Postgres(MutexGuard<'a, PgConn>),
}

/// A transaction. [`Tx::commit`] ends it; dropped without, it rolls back.
pub struct Tx<'a> {
    conn: Conn<'a>,
    open: bool,
    /// The database's name, for errors.
    db: &'static str,
}

/// `$1`, `$2` … as SQLite's numbered parameters `?1`, `?2` … (the statements here hold no
/// `$` anywhere else).
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Bound to SQLite as it is (a text is not copied).
impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// A NULL of whatever type the statement has in its place (a BIGINT column as well as a TEXT).
#[derive(Debug)]
struct Null;

impl tokio_postgres::types::ToSql for Null {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        _: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        Ok(tokio_postgres::types::IsNull::Yes)
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Parameters for tokio-postgres: BIGINT, TEXT and NULL.
fn pg_params(params: &[Value]) -> Vec<PgParam> {
    params
        .iter()
        .map(|v| -> PgParam {
            match v {
                Value::Null => Box::new(Null),
                Value::Int(i) => Box::new(*i),
                Value::Text(s) => Box::new(s.clone()),
            }
        })
        .collect()
}

type PgParam = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

fn pg_refs(boxed: &[PgParam]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    boxed
        .iter()
        .map(|b| b.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn pg_row(db: &str, row: &tokio_postgres::Row) -> Result<Row> {
    use tokio_postgres::types::Type;
    let mut out = Vec::with_capacity(row.len());
    for (i, c) in row.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 | Type::INT4 => {
                let v: Option<i64> = if *c.type_() == Type::INT4 {
                    row.try_get::<_, Option<i32>>(i)
                        .map(|v| v.map(i64::from))
                        .map_err(|e| pg_error(db, "read", e))?
                } else {
                    row.try_get(i).map_err(|e| pg_error(db, "read", e))?
                };
                v.map_or(Value::Null, Value::Int)
            }
            _ => row
                .try_get::<_, Option<String>>(i)
                .map_err(|e| pg_error(db, "read", e))?
                .map_or(Value::Null, Value::Text),
        };
        out.push(v);
    }
    Ok(out)
}

impl Tx<'_> {
    /// Runs a statement that returns no rows; the rows it changed.
    pub async fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        match &mut self.conn {
            Conn::Sqlite(c) => c
                .prepare_cached(&sqlite_sql(sql))
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(params)))
                .map(|n| n as u64)
                .map_err(|e| sqlite_error(self.db, sql, e)),
            Conn::Postgres(c) => {
                let boxed = pg_params(params);
                let refs = pg_refs(&boxed);
                c.client
                    .execute(sql, &refs)
                    .await
                    .map_err(|e| pg_error(self.db, sql, e))
            }
        }
    }

    /// Inserts `rows` of `columns` (comma-separated) into `table`: on SQLite one prepared
    /// statement run for each row, on PostgreSQL statements of up to `per_statement` rows
    /// (one round trip each).
    pub async fn insert_rows(
        &mut self,
        table: &str,
        columns: &str,
        rows: Vec<Vec<Value>>,
        per_statement: usize,
    ) -> Result<()> {
        let width = columns.split(',').count();
        if let Some(row) = rows.iter().find(|r| r.len() != width) {
            return Err(Error::Other(format!(
                "{} database: a {table} row of {} values for {width} columns",
                self.db,
                row.len()
            )));
        }
        let marks = |first: usize| {
            (first..first + width)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let sql = format!("INSERT INTO {table} ({columns}) VALUES ({})", marks(1));
                let mut st = c
                    .prepare_cached(&sqlite_sql(&sql))
                    .map_err(|e| sqlite_error(self.db, &sql, e))?;
                for row in &rows {
                    st.execute(rusqlite::params_from_iter(row))
                        .map_err(|e| sqlite_error(self.db, &sql, e))?;
                }
                Ok(())
            }
            Conn::Postgres(_) => {
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    let chunk: Vec<Vec<Value>> = rows.by_ref().take(per_statement.max(1)).collect();
                    let values = (0..chunk.len())
                        .map(|i| format!("({})", marks(i * width + 1)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = format!("INSERT INTO {table} ({columns}) VALUES {values}");
                    let params: Vec<Value> = chunk.into_iter().flatten().collect();
                    self.exec(&sql, &params).await?;
                }
                Ok(())
            }
        }
    }

    /// Runs a query; its rows.
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let mut stmt = c
                    .prepare_cached(&sqlite_sql(sql))
                    .map_err(|e| sqlite_error(self.db, sql, e))?;
                let n = stmt.column_count();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params), |r| {
                        let mut out = Vec::with_capacity(n);
                        for i in 0..n {
                            out.push(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => Value::Null,
                                rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Value::Text(String::from_utf8_lossy(t).into_owned())
                                }
                                rusqlite::types::ValueRef::Real(f) => Value::Text(f.to_string()),
                                rusqlite::types::ValueRef::Blob(b) => {
                                    Value::Text(String::from_utf8_lossy(b).into_owned())
                                }
                            });
                        }
                        Ok(out)
                    })
                    .map_err(|e| sqlite_error(self.db, sql, e))?;
                rows.collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| sqlite_error(self.db, sql, e))
            }
            Conn::Postgres(c) => {
                let boxed = pg_params(params);
                let refs = pg_refs(&boxed);
                let rows =
                    (c.client.query(sql, &refs).await).map_err(|e| pg_error(self.db, sql, e))?;
                rows.iter().map(|r| pg_row(self.db, r)).collect()
            }
        }
    }

    /// Commits.
    pub async fn commit(mut self) -> Result<()> {
        self.open = false;
        match &mut self.conn {
            Conn::Sqlite(c) => c
                .execute_batch("COMMIT")
                .map_err(|e| sqlite_error(self.db, "commit", e)),
            Conn::Postgres(c) => c
                .client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| pg_error(self.db, "commit", e)),
        }
    }

    /// Rolls back (what dropping does too, later).
    pub async fn rollback(mut self) {
        self.open = false;
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let _ = c.execute_batch("ROLLBACK");
            }
            Conn::Postgres(c) => {
                if c.client.batch_execute("ROLLBACK").await.is_err() {
                    c.unfinished = true;
                }
            }
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        match &mut self.conn {
            Conn::Sqlite(c) => {
                let _ = c.execute_batch("ROLLBACK");
            }
            Conn::Postgres(c) => c.unfinished = true,
        }
    }
}
