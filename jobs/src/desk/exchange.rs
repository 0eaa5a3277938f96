//! Decisions taken offline: the list's differences exported as CSV or an Excel workbook with
//! empty `action` and `comment` columns, filled in by a person, and imported back. The import
//! checks every line (an unknown difference, a stale version, an unknown action, a missing
//! comment: each reported with its line), shows what it would do, and applies in one
//! transaction. A line whose decision is already the difference's current one changes
//! nothing, so importing a file twice decides once.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;

use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::query::Row;
use super::{Action, Change, Desk, Difference, State, Status};
use crate::error::{Error, Result};
use crate::store::Store;

/// The columns of an export, in order; an import needs `diff_id`, `channel`, `bill_date`,
/// `version`, `action` and `comment` (found by name, in any order) and ignores the rest.
pub const COLUMNS: [&str; 12] = [
    "diff_id",
    "channel",
    "bill_date",
    "category",
    "state",
    "channel_amount",
    "platform_amount",
    "amount_delta",
    "ageing_key",
    "version",
    "action",
    "comment",
];

/// What an import reads.
const NEEDED: [&str; 6] = [
    "diff_id",
    "channel",
    "bill_date",
    "version",
    "action",
    "comment",
];

/// The most lines one export or import holds.
pub const MAX_ROWS: usize = 100_000;

/// The export's cells of one difference (its desk version from `states`).
fn cells(r: &Row, states: &HashMap<(String, String), State>) -> [String; 12] {
    let money = |d: Option<rust_decimal::Decimal>| d.map_or_else(String::new, |d| d.to_string());
    let key = r.ageing_key.clone().unwrap_or_default();
    let version = states
        .get(&(r.channel.clone(), key.clone()))
        .map_or(0, |s| s.version);
    [
        r.diff_id.clone(),
        r.channel.clone(),
        r.bill_date.to_string(),
        r.category.clone(),
        r.state.clone().unwrap_or_default(),
        money(r.channel_amount),
        money(r.platform_amount),
        money(r.amount_delta),
        key,
        version.to_string(),
        String::new(),
        String::new(),
    ]
}

/// The desk states of every channel of `rows`, by (channel, ageing key).
pub async fn states_of(desk: &Desk, rows: &[Row]) -> Result<HashMap<(String, String), State>> {
    let mut channels: Vec<&str> = rows.iter().map(|r| r.channel.as_str()).collect();
    channels.sort_unstable();
    channels.dedup();
    let mut out = HashMap::new();
    for ch in channels {
        for (k, s) in desk.states(ch).await? {
            out.insert((ch.to_string(), k), s);
        }
    }
    Ok(out)
}

/// The rows as CSV (UTF-8, a header line).
pub fn csv(rows: &[Row], states: &HashMap<(String, String), State>) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)
        .map_err(|e| Error::Other(format!("the export: {e}")))?;
    for r in rows {
        w.write_record(cells(r, states))
            .map_err(|e| Error::Other(format!("the export: {e}")))?;
    }
    w.into_inner()
        .map_err(|e| Error::Other(format!("the export: {e}")))
}

/// The rows as an Excel workbook (every cell text, so ids and amounts keep every digit).
pub fn xlsx(rows: &[Row], states: &HashMap<(String, String), State>) -> Result<Vec<u8>> {
    let bad = |e: rust_xlsxwriter::XlsxError| Error::Other(format!("the workbook: {e}"));
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("differences").map_err(bad)?;
    for (c, name) in COLUMNS.iter().enumerate() {
        sheet.write_string(0, c as u16, *name).map_err(bad)?;
    }
    for (i, r) in rows.iter().enumerate() {
        for (c, v) in cells(r, states).iter().enumerate() {
            sheet
                .write_string(i as u32 + 1, c as u16, v.as_str())
                .map_err(bad)?;
        }
    }
    book.save_to_buffer().map_err(bad)
}

/// One line of an imported file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Its line in the file (the header is line 1).
    pub line: usize,
    pub diff_id: String,
    pub channel: String,
    pub bill_date: String,
    pub version: String,
    pub action: String,
    pub comment: String,
}

/// The lines of a table whose first row names the columns.
fn lines(rows: Vec<Vec<String>>, what: &str) -> Result<Vec<Line>> {
    let mut rows = rows.into_iter();
    let header = rows
        .next()
        .ok_or_else(|| Error::BadInput(format!("{what}: empty")))?;
    let at = |name: &str| header.iter().position(|h| h.trim() == name);
    let mut index = BTreeMap::new();
    for name in NEEDED {
        let i = at(name).ok_or_else(|| {
            Error::BadInput(format!(
                "{what}: line 1 has no {name:?} column (it needs {})",
                NEEDED.join(", ")
            ))
        })?;
        index.insert(name, i);
    }
    // A file the preview carries names each line's place in the file first uploaded.
    let index_line = at("line");
    let mut out = Vec::new();
    for (n, row) in rows.enumerate() {
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        if out.len() == MAX_ROWS {
            return Err(Error::BadInput(format!(
                "{what}: more than {MAX_ROWS} lines; split it"
            )));
        }
        let get = |name: &str| {
            index
                .get(name)
                .and_then(|&i| row.get(i))
                .map_or_else(String::new, |v| v.trim().to_string())
        };
        let line = index_line
            .and_then(|i| row.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(n + 2);
        out.push(Line {
            line,
            diff_id: get("diff_id"),
            channel: get("channel"),
            bill_date: get("bill_date"),
            version: get("version"),
            action: get("action"),
            comment: get("comment"),
        });
    }
    Ok(out)
}

/// The lines of a CSV file (UTF-8, with or without a byte order mark).
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<Line>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut rows = Vec::new();
    for (n, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| Error::BadInput(format!("the CSV file, line {}: {e}", n + 1)))?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    lines(rows, "the CSV file")
}

/// The lines of the first sheet of an Excel workbook.
pub fn parse_xlsx(bytes: &[u8]) -> Result<Vec<Line>> {
    use calamine::Reader;
    let bad = |e: String| Error::BadInput(format!("the workbook: {e}"));
    let mut book =
        calamine::Xlsx::new(Cursor::new(bytes.to_vec())).map_err(|e| bad(e.to_string()))?;
    let sheet = book
        .worksheet_range_at(0)
        .ok_or_else(|| bad("no sheet".into()))?
        .map_err(|e| bad(e.to_string()))?;
    let rows = sheet
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    lines(rows, "the workbook")
}

/// The lines of an uploaded file: a workbook when it is one (a ZIP), else CSV.
pub fn parse(bytes: &[u8]) -> Result<Vec<Line>> {
    if bytes.starts_with(b"PK\x03\x04") {
        parse_xlsx(bytes)
    } else {
        parse_csv(bytes)
    }
}

/// The lines as CSV again (what the preview page carries to the apply step).
pub fn to_csv(lines: &[Line]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| Error::Other(format!("the import: {e}"));
    let header: Vec<&str> = std::iter::once("line").chain(NEEDED).collect();
    w.write_record(header).map_err(bad)?;
    for l in lines {
        w.write_record([
            &l.line.to_string(),
            &l.diff_id,
            &l.channel,
            &l.bill_date,
            &l.version,
            &l.action,
            &l.comment,
        ])
        .map_err(bad)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Other(format!("the import: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::Other(format!("the import: {e}")))
}

/// What an import does with a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Decides the difference.
    Decide { action: Action },
    /// The difference's current decision is already this one: nothing to do.
    Unchanged,
    /// No action given: the line is left alone.
    Blank,
    /// Why the line cannot be applied.
    Problem { why: String },
}

/// A line and what the import does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub line: Line,
    pub verdict: Verdict,
    /// The change, for a line that decides.
    #[serde(skip)]
    pub change: Option<Change>,
}

/// What an import does with each line: against the committed days (the difference exists)
/// and the desk (its version and current decision), now.
pub async fn check(
    store: &Store,
    ctx: &SessionContext,
    desk: &Desk,
    channels: &[String],
    lines: Vec<Line>,
) -> Result<Vec<Checked>> {
    // The differences, one ledger read per channel-day named.
    let mut wanted: BTreeMap<(String, NaiveDate), Vec<String>> = BTreeMap::new();
    for l in &lines {
        if let Ok(d) = l.bill_date.parse::<NaiveDate>() {
            if channels.contains(&l.channel) {
                wanted
                    .entry((l.channel.clone(), d))
                    .or_default()
                    .push(l.diff_id.clone());
            }
        }
    }
    let mut found: HashMap<(String, NaiveDate), HashMap<String, Difference>> = HashMap::new();
    let mut states: HashMap<String, HashMap<String, State>> = HashMap::new();
    for ((ch, d), ids) in wanted {
        let diffs = super::detail::differences_of(store, ctx, &ch, d, &ids).await?;
        if !states.contains_key(&ch) {
            states.insert(ch.clone(), desk.states(&ch).await?);
        }
        found.insert((ch, d), diffs);
    }
    let mut seen_at: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let (verdict, change) = verdict(&l, &found, &states, &mut seen_at);
        out.push(Checked {
            line: l,
            verdict,
            change,
        });
    }
    Ok(out)
}

fn verdict(
    l: &Line,
    found: &HashMap<(String, NaiveDate), HashMap<String, Difference>>,
    states: &HashMap<String, HashMap<String, State>>,
    seen_at: &mut HashMap<String, usize>,
) -> (Verdict, Option<Change>) {
    let problem = |why: String| (Verdict::Problem { why }, None);
    if l.action.is_empty() {
        return (Verdict::Blank, None);
    }
    let action: Action = match l.action.parse() {
        Ok(a) => a,
        Err(e) => return problem(e),
    };
    if l.comment.is_empty() {
        return problem("a comment is required".into());
    }
    let diff = l
        .bill_date
        .parse::<NaiveDate>()
        .ok()
        .and_then(|d| found.get(&(l.channel.clone(), d)))
        .and_then(|m| m.get(&l.diff_id));
    let Some(diff) = diff else {
        return problem(format!(
            "unknown difference {:?} (channel {:?}, bill date {:?}): not in that committed day",
            l.diff_id, l.channel, l.bill_date
        ));
    };
    if let Some(first) = seen_at.insert(diff.ageing_key.clone(), l.line) {
        return problem(format!("line {first} already decides this difference"));
    }
    let version: i64 = match l.version.parse() {
        Ok(v) => v,
        Err(_) => return problem(format!("version {:?} is not a number", l.version)),
    };
    let state = states
        .get(&l.channel)
        .and_then(|s| s.get(&diff.ageing_key))
        .cloned()
        .unwrap_or_default();
    if let Some(d) = &state.decision {
        let live = matches!(d.status, Status::Effective | Status::PendingApproval);
        if live && d.action == action && d.comment == l.comment {
            return (Verdict::Unchanged, None);
        }
    }
    if state.version != version {
        let by = state.decision.as_ref().map_or(String::new(), |d| {
            format!(": {} by {} ({})", d.action, d.decided_by, d.status.name())
        });
        return problem(format!(
            "stale: exported at version {version}, the difference is at version {} now{by}",
            state.version
        ));
    }
    let change = Change {
        diff: diff.clone(),
        seen: Some(version),
        action,
        comment: l.comment.clone(),
    };
    (Verdict::Decide { action }, Some(change))
}

/// How many lines of each verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub decide: usize,
    pub unchanged: usize,
    pub blank: usize,
    pub problems: usize,
}

impl Tally {
    pub fn of(checked: &[Checked]) -> Tally {
        let mut t = Tally::default();
        for c in checked {
            match c.verdict {
                Verdict::Decide { .. } => t.decide += 1,
                Verdict::Unchanged => t.unchanged += 1,
                Verdict::Blank => t.blank += 1,
                Verdict::Problem { .. } => t.problems += 1,
            }
        }
        t
    }
}
