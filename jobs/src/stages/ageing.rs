//! Ageing: what became of each difference across days. A difference stays open from the day it
//! is first seen until something resolves it: a carry-over match, or a rerun of its day that no
//! longer finds it (a re-issued bill, or changed rules). Each day's `ledger.parquet` holds every
//! difference open after that day and every one resolved on it; `diffs.parquet` carries each
//! row's `first_seen` and `state`.
//!
//! A difference is followed by its ageing key, which unlike `diff_id` does not depend on the
//! day or on where the record sits in the bill: the channel, the match key, and which kind of
//! difference it is (the pair of a key, or the n-th duplicate of a key on one side). A record
//! carried to the next day keeps its key, so a `CROSS_DAY_PENDING` that turns into a match or
//! into a missing record is the same difference.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Int64Type, Schema,
};
use reckon_udfs::Category;

use crate::records::AgeingStats;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::parquet_io::{read_file, write_file};
use crate::schema;
use crate::schema::{date32 as days, epoch};

/// A difference's state on a day.
pub const NEW: &str = "new";
/// Open since an earlier day.
pub const PERSISTING: &str = "persisting";
/// Resolved on this day.
pub const RESOLVED: &str = "resolved";

/// What resolved a difference: its carried record matched on a later day.
pub const BY_CARRY_OVER: &str = "carry_over_match";
/// A rerun of its day with a different bill (the channel re-issued it) no longer found it.
pub const BY_REISSUED_BILL: &str = "reissued_bill";
/// A rerun of its day with the same bill (changed rules or SQL) no longer found it.
pub const BY_RERUN: &str = "rerun";
/// A person decided it on the review desk.
pub const BY_MANUAL: &str = "manual";
/// `decision_review` of a decision that no longer fits its difference.
pub const DECISION_CHANGED: &str = "changed";

/// A decision in force on the review desk, with the difference as it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub action: String,
    pub decided_by: String,
    pub decided_at: String,
    pub category: String,
    pub channel_amount: Option<i128>,
    pub platform_amount: Option<i128>,
}

/// A decision as the ledger shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manual {
    pub action: String,
    pub decided_by: String,
    pub decided_at: String,
    /// The difference changed since (another category or amount): the decision did not close
    /// it and waits for review.
    pub changed: bool,
}

/// One difference in the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub diff_id: Option<String>,
    pub category: String,
    pub state: String,
    pub first_seen: NaiveDate,
    pub last_seen: NaiveDate,
    pub resolved_on: Option<NaiveDate>,
    pub resolved_by: Option<String>,
    pub match_key: Option<String>,
    pub txn_type: Option<String>,
    pub channel_amount: Option<i128>,
    pub platform_amount: Option<i128>,
    pub reason: Option<String>,
    /// The review desk's decision on it, if any.
    pub decision: Option<Manual>,
}

impl Entry {
    fn open(&self) -> bool {
        self.state != RESOLVED
    }

    /// Applies a decision in force to an open entry: one that still fits the difference closes
    /// it (`manual`); one taken on another category or amount stays beside it, flagged.
    fn decide(&mut self, d: &Decided, date: NaiveDate) {
        if !self.open() {
            return;
        }
        let fits = d.category == self.category
            && d.channel_amount == self.channel_amount
            && d.platform_amount == self.platform_amount;
        self.decision = Some(Manual {
            action: d.action.clone(),
            decided_by: d.decided_by.clone(),
            decided_at: d.decided_at.clone(),
            changed: !fits,
        });
        if fits {
            self.state = RESOLVED.into();
            self.resolved_on = Some(date);
            self.resolved_by = Some(BY_MANUAL.into());
        }
    }
}

/// The bucket among `n` of a ledger entry whose match key is `match_key`: the bucket of the
/// records it comes from (a difference's key is theirs; none, bucket 0).
pub fn bucket_of(match_key: Option<&str>, n: u32) -> u32 {
    reckon_udfs::bucket_of(match_key.map(reckon_udfs::key_hash), n)
}

fn to_date(days: i32) -> NaiveDate {
    epoch() + chrono::Duration::days(i64::from(days))
}

/// Column `name` of `b` (`what` names the batch in the error when it has none).
pub(crate) fn column<'a>(b: &'a RecordBatch, name: &str, what: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| Error::Other(format!("{what} has no column {name:?}")))
}

fn strings<'a>(b: &'a RecordBatch, name: &str, what: &str) -> Result<&'a StringArray> {
    let c = column(b, name, what)?;
    c.as_string_opt::<i32>()
        .ok_or_else(|| Error::Other(format!("{what}: column {name:?} is {}", c.data_type())))
}

fn get(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

fn money(b: &RecordBatch, name: &str, what: &str) -> Result<Decimal128Array> {
    let c = column(b, name, what)?;
    c.as_primitive_opt::<Decimal128Type>()
        .cloned()
        .ok_or_else(|| Error::Other(format!("{what}: column {name:?} is {}", c.data_type())))
}

fn dates(b: &RecordBatch, name: &str, what: &str) -> Result<Date32Array> {
    let c = column(b, name, what)?;
    c.as_primitive_opt::<Date32Type>()
        .cloned()
        .ok_or_else(|| Error::Other(format!("{what}: column {name:?} is {}", c.data_type())))
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// The ageing key of each row of `diffs` (the job's output columns).
///
/// A key's pair (matched, mismatched, missing or pending) is one difference; a key's
/// duplicates on one side are one difference each, numbered in bill-line (channel) or
/// platform-order (platform) order, so a re-issued bill that moves lines keeps their keys. A
/// row without a match key is known by the channel's id, else the platform's, else its line.
pub fn keys(diffs: &RecordBatch, channel: &str) -> Result<Vec<String>> {
    let what = "the differences";
    let category = strings(diffs, "category", what)?;
    let match_key = strings(diffs, "match_key", what)?;
    let ch_id = strings(diffs, "channel_txn_id", what)?;
    let po = strings(diffs, "platform_order_id", what)?;
    let line = column(diffs, "source_line", what)?
        .as_primitive_opt::<Int64Type>()
        .cloned()
        .ok_or_else(|| Error::Other(format!("{what}: source_line is not BIGINT")))?;
    let n = diffs.num_rows();
    let mut ident = Vec::with_capacity(n);
    for i in 0..n {
        let family = match get(category, i) {
            Some(c) if c == Category::DuplicateInChannel.as_str() => "DUP_CHANNEL",
            Some(c) if c == Category::DuplicateInPlatform.as_str() => "DUP_PLATFORM",
            _ => "PAIR",
        };
        let id = match (get(match_key, i), get(ch_id, i), get(po, i)) {
            (Some(k), _, _) => format!("key:{k}"),
            (None, Some(c), _) => format!("channel:{c}"),
            (None, None, Some(p)) => format!("platform:{p}"),
            (None, None, None) => {
                format!("line:{}", if line.is_valid(i) { line.value(i) } else { -1 })
            }
        };
        ident.push((family, id));
    }
    // Number the duplicates of each key and side in a stable order.
    let mut groups: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, (family, id)) in ident.iter().enumerate() {
        if *family != "PAIR" {
            groups.entry((family, id.as_str())).or_default().push(i);
        }
    }
    let mut rank = vec![0usize; n];
    for ((family, _), mut rows) in groups {
        rows.sort_by(|&a, &b| {
            if family == "DUP_CHANNEL" {
                let l = |i: usize| line.is_valid(i).then(|| line.value(i));
                l(a).cmp(&l(b))
            } else {
                get(po, a).cmp(&get(po, b))
            }
            .then(a.cmp(&b))
        });
        for (r, i) in rows.into_iter().enumerate() {
            rank[i] = r;
        }
    }
    Ok(ident
        .iter()
        .zip(rank)
        .map(|((family, id), r)| hash(&[channel, family, id, &r.to_string()]))
        .collect())
}

/// Reads a ledger file.
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    entries(&read_file(path)?, &format!("ledger {}", path.display()))
}

/// The entries of ledger batches (`what` names them in errors).
pub fn entries(batches: &[RecordBatch], what: &str) -> Result<Vec<Entry>> {
    let what = what.to_string();
    let mut out = Vec::new();
    for b in batches {
        let key = strings(b, "ageing_key", &what)?;
        let diff_id = strings(b, "diff_id", &what)?;
        let category = strings(b, "category", &what)?;
        let state = strings(b, "state", &what)?;
        let first = dates(b, "first_seen", &what)?;
        let last = dates(b, "last_seen", &what)?;
        let on = dates(b, "resolved_on", &what)?;
        let by = strings(b, "resolved_by", &what)?;
        let mk = strings(b, "match_key", &what)?;
        let tt = strings(b, "txn_type", &what)?;
        let ca = money(b, "channel_amount", &what)?;
        let pa = money(b, "platform_amount", &what)?;
        let reason = strings(b, "reason", &what)?;
        // Ledgers written before the review desk have no decision columns.
        let optional = |name: &str| match b.column_by_name(name) {
            Some(_) => strings(b, name, &what).map(Some),
            None => Ok(None),
        };
        let (action, by_whom, at, review) = (
            optional("decision")?,
            optional("decided_by")?,
            optional("decided_at")?,
            optional("decision_review")?,
        );
        let opt = |a: &Decimal128Array, i: usize| a.is_valid(i).then(|| a.value(i));
        let owned = |a: &StringArray, i: usize| get(a, i).map(String::from);
        for i in 0..b.num_rows() {
            out.push(Entry {
                key: key.value(i).to_string(),
                diff_id: owned(diff_id, i),
                category: category.value(i).to_string(),
                state: state.value(i).to_string(),
                first_seen: to_date(first.value(i)),
                last_seen: to_date(last.value(i)),
                resolved_on: on.is_valid(i).then(|| to_date(on.value(i))),
                resolved_by: owned(by, i),
                match_key: owned(mk, i),
                txn_type: owned(tt, i),
                channel_amount: opt(&ca, i),
                platform_amount: opt(&pa, i),
                reason: owned(reason, i),
                decision: action.and_then(|a| get(a, i)).map(|a| Manual {
                    action: a.to_string(),
                    decided_by: by_whom
                        .and_then(|c| get(c, i))
                        .unwrap_or_default()
                        .to_string(),
                    decided_at: at.and_then(|c| get(c, i)).unwrap_or_default().to_string(),
                    changed: review.and_then(|c| get(c, i)) == Some(DECISION_CHANGED),
                }),
            });
        }
    }
    Ok(out)
}

/// Writes `entries` (sorted by key) to `path`.
pub fn write(path: &Path, entries: &[Entry]) -> Result<()> {
    write_file(path, schema::LEDGER.clone(), &[batch(entries)?])
}

/// `entries` as one batch of [`schema::LEDGER`].
pub fn batch(entries: &[Entry]) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Date32Builder, Decimal128Builder, StringBuilder};
    let mut s: Vec<StringBuilder> = (0..12).map(|_| StringBuilder::new()).collect();
    let mut d: Vec<Date32Builder> = (0..3).map(|_| Date32Builder::new()).collect();
    let mut m: Vec<Decimal128Builder> = (0..2)
        .map(|_| Decimal128Builder::new().with_data_type(schema::MONEY))
        .collect();
    for e in entries {
        s[0].append_value(&e.key);
        s[1].append_option(e.diff_id.as_deref());
        s[2].append_value(&e.category);
        s[3].append_value(&e.state);
        d[0].append_value(days(e.first_seen));
        d[1].append_value(days(e.last_seen));
        d[2].append_option(e.resolved_on.map(days));
        s[4].append_option(e.resolved_by.as_deref());
        s[5].append_option(e.match_key.as_deref());
        s[6].append_option(e.txn_type.as_deref());
        m[0].append_option(e.channel_amount);
        m[1].append_option(e.platform_amount);
        s[7].append_option(e.reason.as_deref());
        let d = e.decision.as_ref();
        s[8].append_option(d.map(|d| d.action.as_str()));
        s[9].append_option(d.map(|d| d.decided_by.as_str()));
        s[10].append_option(d.map(|d| d.decided_at.as_str()));
        s[11].append_option(d.filter(|d| d.changed).map(|_| DECISION_CHANGED));
    }
    let mut sc = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut dc = d.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut mc = m.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut cols = Vec::new();
    for kind in "ssssdddsssmmsssss".chars() {
        let next = match kind {
            's' => sc.next(),
            'd' => dc.next(),
            _ => mc.next(),
        };
        cols.push(next.ok_or_else(|| Error::Other("ledger columns".into()))?);
    }
    Ok(RecordBatch::try_new(schema::LEDGER.clone(), cols)?)
}

/// The entries of a day's `ledger` an earlier run of the day contributed: differences it
/// found that this run resolves. Kept among the run's inputs, so a replay gives the same
/// ledger.
pub fn contributed(ledger: &[Entry], date: NaiveDate) -> Vec<Entry> {
    (ledger.iter())
        .filter(|e| {
            e.resolved_on == Some(date)
                && matches!(
                    e.resolved_by.as_deref(),
                    Some(BY_RERUN) | Some(BY_REISSUED_BILL)
                )
        })
        .cloned()
        .collect()
}

/// What the day's ageing starts from.
pub struct History<'a> {
    /// The ledger of the day before (its open differences carry forward); empty when that
    /// day has none.
    pub before: &'a [Entry],
    /// The ledger an earlier run of this same day wrote, if any.
    pub earlier_run: &'a [Entry],
    /// Whether the bill changed since that earlier run (a re-issued bill).
    pub bill_changed: bool,
    /// The review desk's decisions in force, by ageing key.
    pub decisions: &'a HashMap<String, Decided>,
}

/// Ages the day's differences: returns `diffs` with `first_seen` and `state` added, the day's
/// ledger (sorted by key) and its numbers.
pub fn age(
    diffs: &RecordBatch,
    channel: &str,
    date: NaiveDate,
    history: &History<'_>,
) -> Result<(RecordBatch, Vec<Entry>, AgeingStats)> {
    let what = "the differences";
    let keys = keys(diffs, channel)?;
    let category = strings(diffs, "category", what)?;
    let diff_id = strings(diffs, "diff_id", what)?;
    let match_key = strings(diffs, "match_key", what)?;
    let txn_type = strings(diffs, "txn_type", what)?;
    let reason = strings(diffs, "reason", what)?;
    let ca = money(diffs, "channel_amount", what)?;
    let pa = money(diffs, "platform_amount", what)?;
    let carried_from = diffs
        .column_by_name("carried_from")
        .and_then(|c| c.as_primitive_opt::<Date32Type>().cloned());
    let before: HashMap<&str, &Entry> = history
        .before
        .iter()
        .filter(|e| e.open())
        .map(|e| (e.key.as_str(), e))
        .collect();

    // By key; sorted by key once at the end (a tree kept sorted on every insert cost more).
    let mut ledger: HashMap<String, Entry> = HashMap::with_capacity(keys.len());
    let mut first_col = Vec::with_capacity(keys.len());
    let mut state_col = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let cat = get(category, i).unwrap_or_default();
        let carried = carried_from
            .as_ref()
            .filter(|c| c.is_valid(i))
            .map(|c| to_date(c.value(i)));
        let first_seen = [before.get(key.as_str()).map(|e| e.first_seen), carried]
            .into_iter()
            .flatten()
            .chain([date])
            .min()
            .unwrap_or(date);
        let (state, resolved_by) = if cat == Category::CrossDayMatched.as_str() {
            (RESOLVED, Some(BY_CARRY_OVER))
        } else if first_seen < date {
            (PERSISTING, None)
        } else {
            (NEW, None)
        };
        let mut entry = Entry {
            key: key.clone(),
            diff_id: get(diff_id, i).map(String::from),
            category: cat.to_string(),
            state: state.to_string(),
            first_seen,
            last_seen: date,
            resolved_on: resolved_by.map(|_| date),
            resolved_by: resolved_by.map(String::from),
            match_key: get(match_key, i).map(String::from),
            txn_type: get(txn_type, i).map(String::from),
            channel_amount: ca.is_valid(i).then(|| ca.value(i)),
            platform_amount: pa.is_valid(i).then(|| pa.value(i)),
            reason: get(reason, i).map(String::from),
            decision: None,
        };
        if let Some(d) = history.decisions.get(key.as_str()) {
            entry.decide(d, date);
        }
        first_col.push(days(first_seen));
        state_col.push(match entry.state.as_str() {
            RESOLVED => RESOLVED,
            _ => state,
        });
        if ledger.insert(key.clone(), entry).is_some() {
            return Err(Error::Other(format!(
                "two differences of {channel} {date} share the ageing key {key} (match key {:?})",
                get(match_key, i)
            )));
        }
    }
    // Open before and not seen today: still open.
    for e in history.before.iter().filter(|e| e.open()) {
        ledger.entry(e.key.clone()).or_insert_with(|| {
            let mut carried = Entry {
                state: PERSISTING.into(),
                decision: None,
                ..e.clone()
            };
            if let Some(d) = history.decisions.get(e.key.as_str()) {
                carried.decide(d, date);
            }
            carried
        });
    }
    // What an earlier run of this day found and this one does not: resolved by the rerun.
    for e in history.earlier_run {
        if ledger.contains_key(&e.key) {
            continue;
        }
        // Open in that run because it was seen on this day (not merely carried forward).
        let resolved = if e.open() && e.last_seen == date {
            Entry {
                state: RESOLVED.into(),
                resolved_on: Some(date),
                resolved_by: Some(
                    if history.bill_changed {
                        BY_REISSUED_BILL
                    } else {
                        BY_RERUN
                    }
                    .into(),
                ),
                ..e.clone()
            }
        } else if !e.open()
            && e.resolved_on == Some(date)
            && e.resolved_by.as_deref() != Some(BY_CARRY_OVER)
        {
            e.clone()
        } else {
            continue;
        };
        ledger.insert(e.key.clone(), resolved);
    }

    let mut stats = AgeingStats::default();
    for e in ledger.values() {
        match e.state.as_str() {
            NEW => stats.new += 1,
            PERSISTING => stats.persisting += 1,
            _ => {
                *stats
                    .resolved
                    .entry(e.resolved_by.clone().unwrap_or_default())
                    .or_default() += 1
            }
        }
        if e.open() && e.decision.as_ref().is_some_and(|d| d.changed) {
            stats.flagged += 1;
        }
        if e.open() {
            let f = e.first_seen.to_string();
            if stats.oldest_open.as_ref().is_none_or(|o| f < *o) {
                stats.oldest_open = Some(f);
            }
        }
    }
    stats.open = stats.new + stats.persisting;

    let mut fields: Vec<Field> = diffs
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("first_seen", DataType::Date32, true));
    fields.push(Field::new("state", DataType::Utf8, true));
    let mut cols = diffs.columns().to_vec();
    cols.push(Arc::new(Date32Array::from(first_col)));
    cols.push(Arc::new(StringArray::from(state_col)));
    let aged = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
    let mut ledger: Vec<Entry> = ledger.into_values().collect();
    ledger.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok((aged, ledger, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("test")
    }

    /// Differences as the job outputs them (the columns ageing reads).
    /// (category, match key, source line, platform order id)
    type Row<'a> = (&'a str, Option<&'a str>, Option<i64>, Option<&'a str>);

    fn diffs(rows: &[Row<'_>]) -> RecordBatch {
        let s = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
        let n = rows.len();
        let schema = Schema::new(vec![
            Field::new("diff_id", DataType::Utf8, true),
            Field::new("category", DataType::Utf8, true),
            Field::new("reason", DataType::Utf8, true),
            Field::new("match_key", DataType::Utf8, true),
            Field::new("txn_type", DataType::Utf8, true),
            Field::new("platform_order_id", DataType::Utf8, true),
            Field::new("channel_txn_id", DataType::Utf8, true),
            Field::new("channel_amount", schema::MONEY, true),
            Field::new("platform_amount", schema::MONEY, true),
            Field::new("source_line", DataType::Int64, true),
            Field::new("carried_from", DataType::Date32, true),
        ]);
        let money = || {
            Arc::new(Decimal128Array::from(vec![Some(100i128); n]).with_data_type(schema::MONEY))
                as ArrayRef
        };
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                s((0..n)
                    .map(|i| Some(["a", "b", "c", "d", "e"][i % 5]))
                    .collect()),
                s(rows.iter().map(|r| Some(r.0)).collect()),
                s(vec![Some("why"); n]),
                s(rows.iter().map(|r| r.1).collect()),
                s(vec![Some("PAY"); n]),
                s(rows.iter().map(|r| r.3).collect()),
                s(vec![None; n]),
                money(),
                money(),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Date32Array::from(vec![None; n])),
            ],
        )
        .expect("test")
    }

    static NO_DECISIONS: std::sync::LazyLock<HashMap<String, Decided>> =
        std::sync::LazyLock::new(HashMap::new);

    fn no_history() -> History<'static> {
        History {
            before: &[],
            earlier_run: &[],
            bill_changed: false,
            decisions: &NO_DECISIONS,
        }
    }

    #[test]
    fn a_fitting_decision_resolves_by_hand_and_a_changed_one_is_flagged() {
        let day1 = diffs(&[
            ("AMOUNT_MISMATCH", Some("PAY:1"), Some(7), None),
            ("AMOUNT_MISMATCH", Some("PAY:2"), Some(8), None),
            ("MISSING_IN_PLATFORM", Some("PAY:3"), Some(9), None),
        ]);
        let (_, l1, _) = age(&day1, "alipay", d("2026-11-20"), &no_history()).expect("test");
        let key = |mk: &str| {
            (l1.iter().find(|e| e.match_key.as_deref() == Some(mk)))
                .expect("test")
                .key
                .clone()
        };
        let decided = |category: &str, amount: i128| Decided {
            action: "write_off".into(),
            decided_by: "ann".into(),
            decided_at: "2026-11-20T10:00:00Z".into(),
            category: category.into(),
            channel_amount: Some(amount),
            platform_amount: Some(100),
        };
        let decisions = HashMap::from([
            // As it is: closes it.
            (key("PAY:1"), decided("AMOUNT_MISMATCH", 100)),
            // Taken on another amount: flagged.
            (key("PAY:2"), decided("AMOUNT_MISMATCH", 150)),
            // Taken on another category: flagged.
            (key("PAY:3"), decided("AMOUNT_MISMATCH", 100)),
        ]);
        // Day 2 sees PAY:3 again; PAY:1 and PAY:2 are carried from day 1's ledger.
        let day2 = diffs(&[("MISSING_IN_PLATFORM", Some("PAY:3"), Some(4), None)]);
        let h = History {
            before: &l1,
            decisions: &decisions,
            ..no_history()
        };
        let (aged, l2, s2) = age(&day2, "alipay", d("2026-11-21"), &h).expect("test");
        let e = |mk: &str| {
            (l2.iter().find(|e| e.match_key.as_deref() == Some(mk)))
                .expect("test")
                .clone()
        };
        let one = e("PAY:1");
        assert_eq!(
            (
                one.state.as_str(),
                one.resolved_by.as_deref(),
                one.resolved_on
            ),
            (RESOLVED, Some(BY_MANUAL), Some(d("2026-11-21")))
        );
        assert!(!one.decision.expect("test").changed);
        for mk in ["PAY:2", "PAY:3"] {
            let e = e(mk);
            assert_eq!(e.state, PERSISTING, "{mk}");
            assert!(e.decision.expect("test").changed, "{mk}");
        }
        assert_eq!(s2.resolved.get(BY_MANUAL), Some(&1));
        assert_eq!((s2.flagged, s2.open), (2, 2));
        let states = aged
            .column_by_name("state")
            .expect("test")
            .as_string::<i32>();
        assert_eq!(states.value(0), PERSISTING);
        // The ledger keeps the decision through a write and a read.
        let again = entries(&[batch(&l2).expect("test")], "test").expect("test");
        assert_eq!(again, l2);
        // The next day carries only what is open.
        let h = History {
            before: &l2,
            ..no_history()
        };
        let (_, l3, _) = age(&diffs(&[]), "alipay", d("2026-11-22"), &h).expect("test");
        assert!(l3.iter().all(|e| e.match_key.as_deref() != Some("PAY:1")));
    }

    #[test]
    fn a_pending_record_persists_then_resolves_by_carry_over() {
        let day1 = diffs(&[
            ("CROSS_DAY_PENDING", Some("PAY:1"), Some(7), None),
            ("AMOUNT_MISMATCH", Some("PAY:2"), Some(8), None),
        ]);
        let (aged, l1, s1) = age(&day1, "alipay", d("2026-11-20"), &no_history()).expect("test");
        assert_eq!((s1.new, s1.persisting, s1.open), (2, 0, 2));
        let states = aged
            .column_by_name("state")
            .expect("test")
            .as_string::<i32>();
        assert_eq!(states.value(0), NEW);

        // Day 2: the pending record is still waiting, at another line of another bill.
        let day2 = diffs(&[("CROSS_DAY_PENDING", Some("PAY:1"), Some(99), None)]);
        let h = History {
            before: &l1,
            ..no_history()
        };
        let (aged, l2, s2) = age(&day2, "alipay", d("2026-11-21"), &h).expect("test");
        assert_eq!((s2.new, s2.persisting, s2.open), (0, 2, 2));
        assert_eq!(s2.oldest_open.as_deref(), Some("2026-11-20"));
        let first = aged
            .column_by_name("first_seen")
            .expect("test")
            .as_primitive::<Date32Type>();
        assert_eq!(to_date(first.value(0)), d("2026-11-20"));
        // The amount mismatch of day 1 is not in day 2's data and stays open.
        assert!(l2.iter().any(|e| e.match_key.as_deref() == Some("PAY:2")
            && e.state == PERSISTING
            && e.last_seen == d("2026-11-20")));

        // Day 3: it matches.
        let day3 = diffs(&[("CROSS_DAY_MATCHED", Some("PAY:1"), Some(3), None)]);
        let h = History {
            before: &l2,
            ..no_history()
        };
        let (_, l3, s3) = age(&day3, "alipay", d("2026-11-22"), &h).expect("test");
        assert_eq!(s3.resolved.get(BY_CARRY_OVER), Some(&1));
        assert_eq!((s3.persisting, s3.open), (1, 1));
        let e = l3
            .iter()
            .find(|e| e.match_key.as_deref() == Some("PAY:1"))
            .expect("test");
        assert_eq!(
            (e.state.as_str(), e.first_seen),
            (RESOLVED, d("2026-11-20"))
        );

        // Day 4: a resolved difference is not carried further.
        let h = History {
            before: &l3,
            ..no_history()
        };
        let (_, l4, _) = age(&diffs(&[]), "alipay", d("2026-11-23"), &h).expect("test");
        assert_eq!(l4.len(), 1);
        assert_eq!(l4[0].match_key.as_deref(), Some("PAY:2"));
    }

    #[test]
    fn a_reissued_bill_resolves_what_it_no_longer_shows_and_a_rerun_keeps_that() {
        let date = d("2026-11-20");
        let first = diffs(&[
            ("AMOUNT_MISMATCH", Some("PAY:1"), Some(7), None),
            ("MISSING_IN_PLATFORM", Some("PAY:2"), Some(8), None),
        ]);
        let (_, l1, _) = age(&first, "wechat", date, &no_history()).expect("test");
        let fixed = diffs(&[("MISSING_IN_PLATFORM", Some("PAY:2"), Some(5), None)]);
        let h = History {
            earlier_run: &l1,
            bill_changed: true,
            ..no_history()
        };
        let (_, l2, s2) = age(&fixed, "wechat", date, &h).expect("test");
        assert_eq!(s2.resolved.get(BY_REISSUED_BILL), Some(&1));
        assert_eq!((s2.new, s2.open), (1, 1));
        // The same inputs again: the same ledger, the resolution kept.
        let h = History {
            earlier_run: &l2,
            bill_changed: false,
            ..no_history()
        };
        let (_, l3, _) = age(&fixed, "wechat", date, &h).expect("test");
        assert_eq!(l3, l2);
    }

    #[test]
    fn duplicates_are_numbered_by_line_not_by_place() {
        let a = diffs(&[
            ("DUPLICATE_IN_CHANNEL", Some("PAY:1"), Some(10), None),
            ("DUPLICATE_IN_CHANNEL", Some("PAY:1"), Some(20), None),
            ("MISSING_IN_CHANNEL", None, None, Some("P9")),
        ]);
        let b = diffs(&[
            ("MISSING_IN_CHANNEL", None, None, Some("P9")),
            ("DUPLICATE_IN_CHANNEL", Some("PAY:1"), Some(31), None),
            ("DUPLICATE_IN_CHANNEL", Some("PAY:1"), Some(21), None),
        ]);
        let ka = keys(&a, "x").expect("test");
        let kb = keys(&b, "x").expect("test");
        assert_eq!(
            (ka[0].clone(), ka[1].clone(), ka[2].clone()),
            (kb[2].clone(), kb[1].clone(), kb[0].clone())
        );
        assert_ne!(ka[0], ka[1]);
        assert_ne!(keys(&a, "y").expect("test")[0], ka[0]);
    }
}
