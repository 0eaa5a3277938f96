//! The stream's state: every record it has taken in (open, provisional, decided), the
//! rejected messages, the history of provisional differences, the source positions and
//! watermarks, the days closed, and the lease of the one consumer that may write. One micro-
//! batch is one transaction ([`State::commit`]): on a restart the consumer resumes from the
//! positions that transaction wrote, so a record is taken in exactly once even when the broker
//! delivers it again.
//!
//! SQLite in a file by default, PostgreSQL when `[stream] database` is a `postgres://` URL
//! (the same statements; rows go in many to a statement, so PostgreSQL sees few round trips).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;

use super::pool::{Key, Open};
use super::record::{Position, Record, Side};
use crate::db::{Db, Schema, Tx, Value};
use crate::error::{Error, Result};

/// The stream's tables.
const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS stream_positions (
        side TEXT NOT NULL,
        partition TEXT NOT NULL,
        next_position BIGINT NOT NULL,
        max_event BIGINT NOT NULL,
        PRIMARY KEY (side, partition))",
    "CREATE TABLE IF NOT EXISTS stream_records (
        id BIGINT PRIMARY KEY,
        channel TEXT NOT NULL,
        day TEXT NOT NULL,
        side TEXT NOT NULL,
        match_key TEXT,
        fingerprint TEXT NOT NULL,
        body TEXT NOT NULL,
        cents BIGINT NOT NULL,
        partition TEXT NOT NULL,
        position BIGINT NOT NULL,
        arrived BIGINT NOT NULL,
        deadline BIGINT NOT NULL,
        state TEXT NOT NULL,
        category TEXT,
        reason TEXT,
        pair_id BIGINT,
        decided_at BIGINT,
        latency_us BIGINT)",
    // A record is taken in once: a second insert of the same content under its key fails.
    // Its leading columns find a key's records.
    "CREATE UNIQUE INDEX IF NOT EXISTS stream_records_by_key ON stream_records (channel, match_key, side, fingerprint)",
    "CREATE INDEX IF NOT EXISTS stream_records_day ON stream_records (channel, day)",
    // Only the open records (what a restart puts back in the pool): a decided record is
    // never in it, so taking one in costs this index nothing.
    "CREATE INDEX IF NOT EXISTS stream_records_open ON stream_records (id) WHERE state = 'open'",
    // Indexes of earlier versions, replaced by the two above.
    "DROP INDEX IF EXISTS stream_records_key",
    "DROP INDEX IF EXISTS stream_records_once",
    "DROP INDEX IF EXISTS stream_records_state",
    "CREATE TABLE IF NOT EXISTS stream_rejected (
        side TEXT NOT NULL,
        partition TEXT NOT NULL,
        position BIGINT NOT NULL,
        reason TEXT NOT NULL,
        raw TEXT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (side, partition, position))",
    "CREATE TABLE IF NOT EXISTS stream_events (
        id BIGINT PRIMARY KEY,
        record_id BIGINT NOT NULL,
        at BIGINT NOT NULL,
        event TEXT NOT NULL,
        category TEXT,
        detail TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS stream_events_record ON stream_events (record_id)",
    "CREATE TABLE IF NOT EXISTS stream_days (
        channel TEXT NOT NULL,
        day TEXT NOT NULL,
        closed_at BIGINT NOT NULL,
        run_id TEXT,
        PRIMARY KEY (channel, day))",
    "CREATE TABLE IF NOT EXISTS stream_counters (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS stream_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires BIGINT NOT NULL,
        epoch BIGINT NOT NULL)",
];

/// The stream's database.
pub const STREAM: Schema = Schema {
    name: "stream",
    tables: TABLES,
    writer_lock: 0x7374_7265_616d, // "stream"
};

/// Rows a multi-row insert carries at most on PostgreSQL (well inside its parameter limit at 18
/// columns; SQLite takes one prepared statement a row).
const ROWS_PER_STATEMENT: usize = 400;

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// Waiting in the pool for its other side.
    Open,
    /// Its deadline passed with no other side: a provisional difference (missing on the other
    /// side) until a late counterpart clears it.
    Provisional,
    /// Paired and classified.
    Decided,
    /// A second record of a key on the same side: decided as a duplicate.
    Duplicate,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Open => "open",
            RecordState::Provisional => "provisional",
            RecordState::Decided => "decided",
            RecordState::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<RecordState> {
        Some(match s {
            "open" => RecordState::Open,
            "provisional" => RecordState::Provisional,
            "decided" => RecordState::Decided,
            "duplicate" => RecordState::Duplicate,
            _ => return None,
        })
    }
}

/// A record taken in, as the state holds it.
#[derive(Debug, Clone)]
pub struct Taken {
    pub id: i64,
    pub day: NaiveDate,
    pub match_key: Option<String>,
    pub open: Open,
    /// The record as JSON (`Record::canonical`).
    pub body: String,
    pub outcome: Outcome,
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: RecordState,
    pub category: Option<String>,
    pub reason: Option<String>,
    /// The record it was paired with.
    pub pair_id: Option<i64>,
    /// When it was decided (microseconds, wall clock).
    pub decided_at: Option<i64>,
    /// From the arrival of the pair's second record to its decision.
    pub latency_us: Option<i64>,
}

impl Outcome {
    /// Still waiting.
    pub fn open() -> Outcome {
        Outcome {
            state: RecordState::Open,
            category: None,
            reason: None,
            pair_id: None,
            decided_at: None,
            latency_us: None,
        }
    }
}

/// An entry of a record's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub record_id: i64,
    pub at: i64,
    /// `provisional`, `cleared` or `late`.
    pub event: &'static str,
    pub category: Option<String>,
    pub detail: String,
}

/// What an earlier record of a key is, for a new one of the same key.
#[derive(Debug, Clone)]
pub struct Prior {
    pub id: i64,
    pub side: Side,
    pub fingerprint: String,
    pub state: RecordState,
    pub record: std::sync::Arc<Record>,
    pub position: Position,
    pub arrived: i64,
    pub deadline: i64,
}

/// Everything one micro-batch changes, committed at once.
#[derive(Debug, Default)]
pub struct Commit {
    /// Records taken in.
    pub records: Vec<Taken>,
    /// Records taken in earlier whose outcome changed (paired, provisional, cleared).
    pub changed: Vec<(i64, Outcome)>,
    pub events: Vec<Event>,
    /// Messages that did not parse: (side, position, reason, raw).
    pub rejected: Vec<(Side, Position, String, String)>,
    /// The next position of each partition, and its latest event time.
    pub positions: BTreeMap<(Side, String), (u64, i64)>,
    /// Messages recognised as ones already taken in (redelivered or republished).
    pub redelivered: i64,
    /// The wall clock at the commit (microseconds).
    pub now: i64,
}

/// What a starting consumer resumes from.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The next position of each partition.
    pub positions: BTreeMap<(Side, String), u64>,
    /// The latest event time of each partition.
    pub marks: Vec<(Side, String, i64)>,
    /// The records still waiting.
    pub open: Vec<(Key, Open)>,
    /// The next record id.
    pub next_id: i64,
    /// The last day closed, per channel.
    pub closed: BTreeMap<String, NaiveDate>,
}

/// The stream's state database.
#[derive(Debug, Clone)]
pub struct State {
    db: Db,
}

fn corrupt(what: &str) -> Error {
    Error::Other(format!("stream state: {what}"))
}

fn int(v: &Value, what: &str) -> Result<i64> {
    v.int()
        .ok_or_else(|| corrupt(&format!("{what} is not an integer")))
}

fn text(v: &Value, what: &str) -> Result<String> {
    v.text()
        .map(str::to_string)
        .ok_or_else(|| corrupt(&format!("{what} is not text")))
}

fn side(v: &Value) -> Result<Side> {
    Side::parse(&text(v, "side")?).ok_or_else(|| corrupt("an unknown side"))
}

fn u64_of(v: &Value, what: &str) -> Result<u64> {
    u64::try_from(int(v, what)?).map_err(|_| corrupt(&format!("{what} is negative")))
}

fn i64_of(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The columns of `stream_records` in the order [`record_values`] gives them.
const RECORD_COLUMNS: &str = "id, channel, day, side, match_key, fingerprint, body, cents, \
     partition, position, arrived, deadline, state, category, reason, pair_id, decided_at, latency_us";

/// The columns of `stream_records` read back as a [`Prior`] (or an open record).
const PRIOR_COLUMNS: &str =
    "id, side, fingerprint, state, body, partition, position, arrived, deadline";

fn record_values(t: &Taken) -> Result<Vec<Value>> {
    let o = &t.outcome;
    Ok(vec![
        t.id.into(),
        t.open.record.channel.as_str().into(),
        t.day.to_string().into(),
        t.open.record.side.as_str().into(),
        t.match_key.clone().into(),
        t.open.fingerprint.as_str().into(),
        t.body.as_str().into(),
        cents(t.open.record.amount).into(),
        t.open.position.partition.as_str().into(),
        i64_of(t.open.position.offset),
        t.open.arrived.into(),
        t.open.deadline.into(),
        o.state.as_str().into(),
        o.category.clone().into(),
        o.reason.clone().into(),
        o.pair_id.into(),
        o.decided_at.into(),
        o.latency_us.into(),
    ])
}

/// An amount in cents (its scale-2 mantissa).
fn cents(d: rust_decimal::Decimal) -> i64 {
    let mut d = d;
    d.rescale(2);
    i64::try_from(d.mantissa()).unwrap_or(i64::MAX)
}

fn prior_of(row: &[Value]) -> Result<Prior> {
    let [id, s, fp, state, body, partition, position, arrived, deadline] = row else {
        return Err(corrupt("a record row of the wrong width"));
    };
    let record: Record = serde_json::from_str(&text(body, "body")?)
        .map_err(|e| corrupt(&format!("a record's body: {e}")))?;
    Ok(Prior {
        id: int(id, "id")?,
        side: side(s)?,
        fingerprint: text(fp, "fingerprint")?,
        state: RecordState::parse(&text(state, "state")?)
            .ok_or_else(|| corrupt("an unknown record state"))?,
        record: record.into(),
        position: Position {
            partition: text(partition, "partition")?,
            offset: u64_of(position, "position")?,
        },
        arrived: int(arrived, "arrived")?,
        deadline: int(deadline, "deadline")?,
    })
}

/// `rows` into `table` (`columns`), many to a statement.
impl State {
    /// Opens the state `database` names (a `postgres://` URL, else a SQLite file relative to
    /// `base_dir`), creating its tables the first time.
    pub async fn open(database: &str, base_dir: &Path) -> Result<State> {
        Ok(State {
            db: Db::open(database, base_dir, 10, STREAM).await?,
        })
    }

    /// Takes (or renews) the lease of the consumer that may write, for `holder` until
    /// `expires`: refused while another holder's lease runs. Its epoch, which grows with
    /// each new holder.
    pub async fn lease(&self, holder: &str, now: i64, expires: i64) -> Result<Option<i64>> {
        let mut tx = self.db.write().await?;
        let rows = tx
            .query(
                "SELECT holder, expires, epoch FROM stream_lease WHERE name = $1",
                &["stream".into()],
            )
            .await?;
        let epoch = match rows.first() {
            None => {
                tx.insert_rows(
                    "stream_lease",
                    "name, holder, expires, epoch",
                    vec![vec![
                        "stream".into(),
                        holder.into(),
                        expires.into(),
                        1.into(),
                    ]],
                    ROWS_PER_STATEMENT,
                )
                .await?;
                1
            }
            Some(r) => {
                let (h, until, epoch) = (
                    text(&r[0], "holder")?,
                    int(&r[1], "expires")?,
                    int(&r[2], "epoch")?,
                );
                if h != holder && until > now {
                    return Ok(None);
                }
                let epoch = if h == holder { epoch } else { epoch + 1 };
                tx.exec(
                    "UPDATE stream_lease SET holder = $1, expires = $2, epoch = $3 WHERE name = $4",
                    &[holder.into(), expires.into(), epoch.into(), "stream".into()],
                )
                .await?;
                epoch
            }
        };
        tx.commit().await?;
        Ok(Some(epoch))
    }

    /// Gives the lease up (a clean stop: a standby takes over at once).
    pub async fn release(&self, holder: &str) -> Result<()> {
        let mut tx = self.db.write().await?;
        tx.exec(
            "UPDATE stream_lease SET expires = 0 WHERE name = $1 AND holder = $2",
            &["stream".into(), holder.into()],
        )
        .await?;
        tx.commit().await
    }

    /// What a starting consumer resumes from.
    pub async fn resume(&self) -> Result<Resumed> {
        let mut tx = self.db.read().await?;
        let mut out = Resumed::default();
        for r in tx
            .query(
                "SELECT side, partition, next_position, max_event FROM stream_positions",
                &[],
            )
            .await?
        {
            let (s, p) = (side(&r[0])?, text(&r[1], "partition")?);
            out.positions
                .insert((s, p.clone()), u64_of(&r[2], "next_position")?);
            out.marks.push((s, p, int(&r[3], "max_event")?));
        }
        let sql = format!(
            "SELECT {PRIOR_COLUMNS}, channel, match_key FROM stream_records WHERE state = 'open'"
        );
        for r in tx.query(&sql, &[]).await? {
            let p = prior_of(&r[..9])?;
            let key = (text(&r[9], "channel")?, text(&r[10], "match_key")?);
            out.open.push((
                key,
                Open {
                    id: p.id,
                    record: p.record,
                    fingerprint: p.fingerprint,
                    position: p.position,
                    arrived: p.arrived,
                    deadline: p.deadline,
                },
            ));
        }
        let max = |table: &str| format!("SELECT COALESCE(MAX(id), 0) FROM {table}");
        out.next_id = int(&tx.query(&max("stream_records"), &[]).await?[0][0], "id")? + 1;
        for r in tx
            .query(
                "SELECT channel, MAX(day) FROM stream_days GROUP BY channel",
                &[],
            )
            .await?
        {
            let day = text(&r[1], "day")?;
            let day = day
                .parse()
                .map_err(|_| corrupt(&format!("a closed day {day:?}")))?;
            out.closed.insert(text(&r[0], "channel")?, day);
        }
        tx.rollback().await;
        Ok(out)
    }

    /// Every record taken in earlier under one of `keys`.
    pub async fn priors(&self, keys: &[Key]) -> Result<Vec<(Key, Prior)>> {
        let mut by_channel: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (c, k) in keys {
            by_channel.entry(c).or_default().push(k);
        }
        let mut tx = self.db.read().await?;
        let mut out = Vec::new();
        for (channel, keys) in by_channel {
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                let sql = format!(
                    "SELECT {PRIOR_COLUMNS}, match_key FROM stream_records WHERE channel = $1 AND match_key IN ({})",
                    marks.join(", ")
                );
                let mut params: Vec<Value> = vec![channel.into()];
                params.extend(chunk.iter().map(|k| Value::from(*k)));
                for r in tx.query(&sql, &params).await? {
                    let p = prior_of(&r[..9])?;
                    out.push(((channel.to_string(), text(&r[9], "match_key")?), p));
                }
            }
        }
        tx.rollback().await;
        Ok(out)
    }

    /// Commits one micro-batch, if `holder` still holds the lease at `epoch`; refused
    /// (nothing written) when another consumer took over.
    pub async fn commit(&self, c: Commit, holder: &str, epoch: i64, expires: i64) -> Result<()> {
        let mut tx = self.db.write().await?;
        let held = tx
            .exec(
                "UPDATE stream_lease SET expires = $1 WHERE name = $2 AND holder = $3 AND epoch = $4",
                &[expires.into(), "stream".into(), holder.into(), epoch.into()],
            )
            .await?;
        if held == 0 {
            return Err(Error::Unavailable(format!(
                "stream: another consumer took the lease from {holder}; this one stops without writing"
            )));
        }
        let rows = c.records.iter().map(record_values).collect::<Result<_>>()?;
        tx.insert_rows("stream_records", RECORD_COLUMNS, rows, ROWS_PER_STATEMENT)
            .await?;
        for (id, o) in &c.changed {
            tx.exec(
                "UPDATE stream_records SET state = $1, category = $2, reason = $3, pair_id = $4, \
                 decided_at = $5, latency_us = $6 WHERE id = $7",
                &[
                    o.state.as_str().into(),
                    o.category.clone().into(),
                    o.reason.clone().into(),
                    o.pair_id.into(),
                    o.decided_at.into(),
                    o.latency_us.into(),
                    (*id).into(),
                ],
            )
            .await?;
        }
        let events = c
            .events
            .iter()
            .map(|e| {
                vec![
                    Value::Int(0),
                    e.record_id.into(),
                    e.at.into(),
                    e.event.into(),
                    e.category.clone().into(),
                    e.detail.as_str().into(),
                ]
            })
            .collect::<Vec<_>>();
        if !events.is_empty() {
            let first = int(
                &tx.query("SELECT COALESCE(MAX(id), 0) FROM stream_events", &[])
                    .await?[0][0],
                "id",
            )? + 1;
            let events = events
                .into_iter()
                .enumerate()
                .map(|(i, mut e)| {
                    e[0] = Value::Int(first + i as i64);
                    e
                })
                .collect();
            tx.insert_rows(
                "stream_events",
                "id, record_id, at, event, category, detail",
                events,
                ROWS_PER_STATEMENT,
            )
            .await?;
        }
        let rejected = c
            .rejected
            .iter()
            .map(|(s, p, reason, raw)| {
                vec![
                    s.as_str().into(),
                    p.partition.as_str().into(),
                    i64_of(p.offset),
                    reason.as_str().into(),
                    raw.as_str().into(),
                    c.now.into(),
                ]
            })
            .collect();
        tx.insert_rows(
            "stream_rejected",
            "side, partition, position, reason, raw, at",
            rejected,
            ROWS_PER_STATEMENT,
        )
        .await?;
        for ((s, p), (next, max_event)) in &c.positions {
            let params = [
                s.as_str().into(),
                p.as_str().into(),
                i64_of(*next),
                (*max_event).into(),
            ];
            let n = tx
                .exec(
                    "UPDATE stream_positions SET next_position = $3, max_event = $4 WHERE side = $1 AND partition = $2",
                    &params,
                )
                .await?;
            if n == 0 {
                tx.exec(
                    "INSERT INTO stream_positions (side, partition, next_position, max_event) VALUES ($1, $2, $3, $4)",
                    &params,
                )
                .await?;
            }
        }
        if c.redelivered > 0 {
            self::count(&mut tx, "redelivered", c.redelivered).await?;
        }
        tx.commit().await
    }

    /// Records day `day` of `channel` closed (committed as run `run_id`).
    pub async fn closed(
        &self,
        channel: &str,
        day: NaiveDate,
        now: i64,
        run_id: &str,
    ) -> Result<()> {
        let mut tx = self.db.write().await?;
        tx.insert_rows(
            "stream_days",
            "channel, day, closed_at, run_id",
            vec![vec![
                channel.into(),
                day.to_string().into(),
                now.into(),
                run_id.into(),
            ]],
            ROWS_PER_STATEMENT,
        )
        .await?;
        tx.commit().await
    }

    /// The records of `channel` on `day`, in the order they were taken in, `limit` at a time
    /// after record id `after`.
    pub async fn day_records(
        &self,
        channel: &str,
        day: NaiveDate,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Prior>> {
        let mut tx = self.db.read().await?;
        let sql = format!(
            "SELECT {PRIOR_COLUMNS} FROM stream_records WHERE channel = $1 AND day = $2 AND id > $3 ORDER BY id LIMIT {limit}"
        );
        let rows = tx
            .query(
                &sql,
                &[channel.into(), day.to_string().into(), after.into()],
            )
            .await?;
        tx.rollback().await;
        rows.iter().map(|r| prior_of(r)).collect()
    }

    /// The counts the stream keeps: records by side and state, rejected messages, messages
    /// counted once, for `reckon stream status` and the tests' conservation checks.
    pub async fn counts(&self) -> Result<Counts> {
        let mut tx = self.db.read().await?;
        let mut out = Counts::default();
        for r in tx
            .query(
                "SELECT side, state, COUNT(*), CAST(COALESCE(SUM(cents), 0) AS BIGINT) FROM stream_records GROUP BY side, state",
                &[],
            )
            .await?
        {
            let side = text(&r[0], "side")?;
            out.records.insert(
                format!("{side}/{}", text(&r[1], "state")?),
                u64_of(&r[2], "count")?,
            );
            let sum = rust_decimal::Decimal::new(int(&r[3], "sum")?, 2);
            let total = out.amounts.entry(side).or_insert(rust_decimal::Decimal::ZERO);
            *total += sum;
        }
        out.rejected = u64_of(
            &tx.query("SELECT COUNT(*) FROM stream_rejected", &[])
                .await?[0][0],
            "count",
        )?;
        if let Some(r) = tx
            .query(
                "SELECT value FROM stream_counters WHERE name = $1",
                &["redelivered".into()],
            )
            .await?
            .first()
        {
            out.redelivered = u64_of(&r[0], "redelivered")?;
        }
        tx.rollback().await;
        Ok(out)
    }
}

/// Adds `by` to the counter `name`.
async fn count(tx: &mut Tx<'_>, name: &str, by: i64) -> Result<()> {
    let n = tx
        .exec(
            "UPDATE stream_counters SET value = value + $1 WHERE name = $2",
            &[by.into(), name.into()],
        )
        .await?;
    if n == 0 {
        tx.exec(
            "INSERT INTO stream_counters (name, value) VALUES ($1, $2)",
            &[name.into(), by.into()],
        )
        .await?;
    }
    Ok(())
}

/// The stream's counts.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Records by `side/state` (`channel/decided`, …).
    pub records: BTreeMap<String, u64>,
    /// The amounts of each side's records, each record once.
    #[serde(with = "decimal_map")]
    pub amounts: BTreeMap<String, rust_decimal::Decimal>,
    pub rejected: u64,
    pub redelivered: u64,
}

/// Amounts as exact decimal strings in JSON.
mod decimal_map {
    use std::collections::BTreeMap;

    pub fn serialize<S: serde::Serializer>(
        m: &BTreeMap<String, rust_decimal::Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.to_string())))
    }
}
