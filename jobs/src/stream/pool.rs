//! The pool: every record still waiting for its other side, by channel and match key, with
//! the deadline past which it becomes a provisional difference. It holds the open records
//! only (a decided or provisional record lives in the state database alone), so its memory
//! is bounded by what is open, never by the day's volume.

use std::collections::{BTreeSet, HashMap};

use super::record::{Position, Record, Side};

/// A record waiting in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Its id in the state.
    pub id: i64,
    pub record: std::sync::Arc<Record>,
    pub fingerprint: String,
    pub position: Position,
    /// When it reached the broker (microseconds).
    pub arrived: i64,
    /// The event time past which the other side's watermark makes it a provisional
    /// difference (its event time plus the channel's window and grace).
    pub deadline: i64,
}

/// A pool key: the channel and the match key.
pub type Key = (String, String);

/// A waiting record and what else the state holds under its key.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub open: Open,
    /// (side, fingerprint) of every other record taken in under the key: duplicates, and
    /// records taken in before it waited. The stream does not ask the state about a key the
    /// pool holds, so a copy of one of these is recognised here.
    pub others: Vec<(Side, String)>,
}

/// The open records.
#[derive(Debug, Default)]
pub struct Pool {
    by_key: HashMap<Key, Waiting>,
    /// (deadline, the side that waits, key): the records in the order they expire.
    expiry: BTreeSet<(i64, Side, Key)>,
}

impl Pool {
    /// How many records wait.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The record waiting under `key`.
    pub fn get(&self, key: &Key) -> Option<&Open> {
        self.by_key.get(key).map(|w| &w.open)
    }

    /// The other records taken in under `key` while it has a waiting one.
    pub fn others(&self, key: &Key) -> &[(Side, String)] {
        self.by_key
            .get(key)
            .map(|w| w.others.as_slice())
            .unwrap_or(&[])
    }

    /// Puts `open` under `key` (replacing nothing: a key holds one waiting record), with the
    /// (side, fingerprint) of the key's other records.
    pub fn insert(&mut self, key: Key, open: Open, others: Vec<(Side, String)>) {
        self.expiry
            .insert((open.deadline, open.record.side, key.clone()));
        if let Some(old) = self.by_key.insert(key.clone(), Waiting { open, others }) {
            // Not expected: the stream decides a second record of a key before it waits.
            self.expiry
                .remove(&(old.open.deadline, old.open.record.side, key));
        }
    }

    /// Notes another record taken in under `key` beside its waiting one (a duplicate).
    pub fn note(&mut self, key: &Key, side: Side, fingerprint: String) {
        if let Some(w) = self.by_key.get_mut(key) {
            w.others.push((side, fingerprint));
        }
    }

    /// Takes the record waiting under `key`.
    pub fn take(&mut self, key: &Key) -> Option<Waiting> {
        let w = self.by_key.remove(key)?;
        self.expiry
            .remove(&(w.open.deadline, w.open.record.side, key.clone()));
        Some(w)
    }

    /// Takes every record of a side whose deadline the other side's watermark has passed:
    /// `watermark(side)` is the watermark of the side the record waits for (`None`: unknown,
    /// nothing expires).
    pub fn expire(&mut self, watermark: impl Fn(Side) -> Option<i64>) -> Vec<Open> {
        let marks = [Side::Platform, Side::Channel].map(|s| (s, watermark(s.other())));
        let due: Vec<(i64, Side, Key)> = self
            .expiry
            .iter()
            .take_while(|(deadline, _, _)| {
                // The expiry set is in deadline order: nothing after a deadline no side has
                // passed can be due.
                marks.iter().any(|(_, m)| m.is_some_and(|m| m > *deadline))
            })
            .filter(|(deadline, side, _)| {
                marks
                    .iter()
                    .any(|(s, m)| s == side && m.is_some_and(|m| m > *deadline))
            })
            .cloned()
            .collect();
        due.into_iter()
            .filter_map(|(_, _, key)| self.take(&key))
            .map(|w| w.open)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::record::{parse, Side};

    fn open(id: i64, side: Side, order: &str, deadline: i64) -> (Key, Open) {
        let text = format!(
            r#"{{"channel":"wechat","txn_type":"PAY","merchant_order_id":"{order}","amount":"1.00","status":"SUCCESS","event_time":"2026-11-21T10:00:00Z"}}"#
        );
        let record = parse(side, text.as_bytes()).expect("record");
        let key = ("wechat".to_string(), format!("PAY:{order}"));
        let fingerprint = record.fingerprint();
        let o = Open {
            id,
            record: record.into(),
            fingerprint,
            position: Position {
                partition: "p".into(),
                offset: id as u64,
            },
            arrived: 0,
            deadline,
        };
        (key, o)
    }

    #[test]
    fn records_expire_when_the_side_they_wait_for_passes_their_deadline() {
        let mut pool = Pool::default();
        for (id, side, order, deadline) in [
            (1, Side::Platform, "A", 100),
            (2, Side::Channel, "B", 150),
            (3, Side::Platform, "C", 300),
        ] {
            let (k, o) = open(id, side, order, deadline);
            pool.insert(k, o, Vec::new());
        }
        // The channel's watermark (what platform records wait for) at 200, the platform's
        // unknown: only A expires.
        let gone = pool.expire(|s| (s == Side::Channel).then_some(200));
        assert_eq!(gone.iter().map(|o| o.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(pool.len(), 2);
        // A counterpart takes B before it expires.
        assert!(pool
            .take(&("wechat".to_string(), "PAY:B".to_string()))
            .is_some());
        let gone = pool.expire(|_| Some(1_000));
        assert_eq!(gone.iter().map(|o| o.id).collect::<Vec<_>>(), vec![3]);
        assert!(pool.is_empty());
    }
}
