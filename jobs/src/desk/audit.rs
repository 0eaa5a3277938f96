//! The desk's audit: every change of the desk's state is an entry, appended in the same
//! transaction as the change, never updated or deleted. Each entry carries the hash of the one
//! before it, so an edited entry no longer hashes to what it says, and a deleted one breaks
//! the sequence or the chain. The state's rows name the entry that made them (`audit_seq`), so
//! an entry deleted from the end, which the chain alone could not tell, is missed too.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::{Tx, Value};
use crate::error::{Error, Result};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub actor: String,
    /// What was done (`decide`, `approve`, `comment` …).
    pub action: String,
    /// What it was done to (`channel/ageing key`, or `desk`).
    pub subject: String,
    /// The change itself, as JSON.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry's fields and the hash before it (each field length-prefixed, so no
/// two different entries hash alike by moving text from one field to the next).
pub fn hash(
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
    prev: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(seq.to_le_bytes());
    for part in [at, actor, action, subject, detail, prev] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends an entry made at `at` (the change's own time) in `tx` (a write transaction: the
/// writer lock orders appends); its seq.
pub async fn append(
    tx: &mut Tx<'_>,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<i64> {
    let last = tx
        .query(
            "SELECT seq, hash FROM desk_audit ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await?;
    let (seq, prev) = match last.first() {
        Some(r) => (
            r[0].int().unwrap_or(0) + 1,
            r[1].text().unwrap_or(GENESIS).to_string(),
        ),
        None => (1, GENESIS.to_string()),
    };
    let detail = serde_json::to_string(detail)?;
    let h = hash(seq, at, actor, action, subject, &detail, &prev);
    tx.exec(
        "INSERT INTO desk_audit (seq, at, actor, action, subject, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            seq.into(),
            at.into(),
            actor.into(),
            action.into(),
            subject.into(),
            detail.into(),
            prev.into(),
            h.into(),
        ],
    )
    .await?;
    Ok(seq)
}

/// Every entry, in order.
pub async fn entries(tx: &mut Tx<'_>) -> Result<Vec<Entry>> {
    let rows = tx
        .query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash
             FROM desk_audit ORDER BY seq",
            &[],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            let text = |i: usize| -> Result<String> {
                r[i].text().map(str::to_string).ok_or_else(|| {
                    Error::Other(format!("desk_audit: column {i} of an entry is not text"))
                })
            };
            Ok(Entry {
                seq: r[0]
                    .int()
                    .ok_or_else(|| Error::Other("desk_audit: an entry without seq".into()))?,
                at: text(1)?,
                actor: text(2)?,
                action: text(3)?,
                subject: text(4)?,
                detail: text(5)?,
                prev_hash: text(6)?,
                hash: text(7)?,
            })
        })
        .collect()
}

/// What `reckon audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Entries read.
    pub entries: i64,
    /// The hash of the last entry (what an operator may note down elsewhere to compare later).
    pub head: String,
    /// Every problem found, each naming the entry (empty: the audit is intact).
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the chain: the entries numbered 1, 2, … with no gap, each hashing to its `hash`,
/// each naming the one before's; and every state row's entry present with its subject.
pub async fn verify(tx: &mut Tx<'_>) -> Result<Verdict> {
    let all = entries(tx).await?;
    let mut problems = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expected = 1;
    for e in &all {
        if e.seq != expected {
            problems.push(format!(
                "entry {}: expected entry {expected} here: entries {expected}..{} are missing",
                e.seq,
                e.seq - 1
            ));
        }
        if e.prev_hash != prev {
            problems.push(format!(
                "entry {}: its prev_hash does not name the entry before it (an entry before it was edited or deleted)",
                e.seq
            ));
        }
        let h = hash(
            e.seq,
            &e.at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.detail,
            &e.prev_hash,
        );
        if h != e.hash {
            problems.push(format!(
                "entry {} ({} by {} at {}): its fields do not hash to its hash (it was edited)",
                e.seq, e.action, e.actor, e.at
            ));
        }
        prev = e.hash.clone();
        expected = e.seq + 1;
    }
    // The state's rows and the entries that made them (each difference's row names its last
    // change, so an entry deleted from the end is missed too).
    let by_seq: std::collections::HashMap<i64, &Entry> = all.iter().map(|e| (e.seq, e)).collect();
    type Name = fn(i64, &str) -> String;
    let made: [(&str, Name); 3] = [
        (
            "SELECT id, channel, ageing_key, audit_seq FROM desk_decisions ORDER BY id",
            |n, s| format!("decision {n} of {s}"),
        ),
        (
            "SELECT id, channel, ageing_key, audit_seq FROM desk_comments ORDER BY id",
            |n, s| format!("comment {n} of {s}"),
        ),
        (
            "SELECT version, channel, ageing_key, audit_seq FROM desk_state ORDER BY channel, ageing_key",
            |n, s| format!("the last change (version {n}) of {s}"),
        ),
    ];
    for (sql, name) in made {
        for r in tx.query(sql, &[]).await? {
            let subject = super::subject(
                r[1].text().unwrap_or_default(),
                r[2].text().unwrap_or_default(),
            );
            let name = name(r[0].int().unwrap_or_default(), &subject);
            let seq = r[3].int().unwrap_or_default();
            match by_seq.get(&seq) {
                None => problems.push(format!(
                    "{name}: its audit entry {seq} is missing (deleted)"
                )),
                Some(e) if e.subject != subject => problems.push(format!(
                    "{name}: its audit entry {seq} is about {}",
                    e.subject
                )),
                Some(_) => {}
            }
        }
    }
    Ok(Verdict {
        entries: all.len() as i64,
        head: all
            .last()
            .map_or_else(|| GENESIS.to_string(), |e| e.hash.clone()),
        problems,
    })
}

/// A JSON value's text, for the audit's detail.
pub fn detail(pairs: &[(&str, Value)]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        m.insert(
            (*k).to_string(),
            match v {
                Value::Null => serde_json::Value::Null,
                Value::Int(i) => serde_json::json!(i),
                Value::Text(s) => serde_json::json!(s),
            },
        );
    }
    serde_json::Value::Object(m)
}
