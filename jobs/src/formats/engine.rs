//! The streaming template engine: reads a bill line by line, never whole, writes canonical
//! rows and rejected rows as Parquet, and checks the bill's own totals.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::parquet::arrow::ArrowWriter;
use regex::Regex;
use rust_decimal::Decimal;
use serde::Serialize;

use super::template::{Aggregate, Cleanup, ColumnSpec, ContainerKind, Template};
use crate::error::{Error, IoContext, Result};
use crate::parquet_io::writer_props;
use crate::schema;

const BATCH_ROWS: usize = 64 * 1024;

/// What one normalized file amounted to.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct NormalizeStats {
    /// Data rows read from the body.
    pub rows_read: u64,
    /// Canonical rows written.
    pub rows_written: u64,
    /// Rows sent to `rejected/`.
    pub rows_rejected: u64,
    /// Each totals check.
    pub totals: Vec<TotalsResult>,
}

/// One totals check: the bill's value against the parsed one.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TotalsResult {
    /// The value's name in the template.
    pub value: String,
    /// What the bill says.
    pub expected: String,
    /// What was parsed (accepted plus rejected rows).
    pub parsed: String,
    /// Whether they are equal.
    pub ok: bool,
}

/// The facts about the file being read, for rows and errors.
pub struct Target<'a> {
    /// Channel name written into every row.
    pub channel: &'a str,
    /// The bill date written into every row.
    pub bill_date: NaiveDate,
    /// The file name written as `source_file`.
    pub source_name: &'a str,
    /// Where canonical rows go.
    pub normalized: &'a Path,
    /// Where rejected rows go.
    pub rejected: &'a Path,
    /// More rejected rows than this fails the file.
    pub max_rejected: u64,
}

/// Normalizes `input` with `template`. Malformed rows go to `rejected`; the file fails
/// (`Error::BadInput`) when the container or encoding is wrong, the end marker is missing, the
/// totals disagree, or too many rows are rejected.
pub fn normalize_file(
    template: &Template,
    input: &Path,
    target: &Target<'_>,
) -> Result<NormalizeStats> {
    let file = File::open(input).at(input)?;
    match template.container.kind {
        ContainerKind::Plain => {
            let source = target.source_name.to_string();
            run(
                template,
                BufReader::with_capacity(1 << 20, file),
                &source,
                target,
            )
        }
        ContainerKind::Zip => {
            let mut archive = zip::ZipArchive::new(file).map_err(|e| {
                Error::BadInput(format!(
                    "{}: not a zip archive as template {} declares: {e}",
                    input.display(),
                    template.origin
                ))
            })?;
            let pattern = Regex::new(template.container.member.as_deref().unwrap_or(""))
                .map_err(|e| Error::Config(format!("template {}: {e}", template.origin)))?;
            let enc = template.encoding()?;
            let mut found = Vec::new();
            for i in 0..archive.len() {
                let f = archive.by_index_raw(i).map_err(|e| {
                    Error::BadInput(format!("{}: zip entry {i}: {e}", input.display()))
                })?;
                // Names in Chinese bills are GBK bytes without the UTF-8 flag.
                let raw = f.name_raw();
                let name = match std::str::from_utf8(raw) {
                    Ok(s) => s.to_string(),
                    Err(_) => enc.decode_without_bom_handling(raw).0.into_owned(),
                };
                if pattern.is_match(&name) {
                    found.push((i, name));
                }
            }
            let (index, member) = match found.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Error::BadInput(format!(
                        "{}: no zip member matches {:?} (template {})",
                        input.display(),
                        pattern.as_str(),
                        template.origin
                    )))
                }
                many => {
                    return Err(Error::BadInput(format!(
                        "{}: {} zip members match {:?} (template {}): {}",
                        input.display(),
                        many.len(),
                        pattern.as_str(),
                        template.origin,
                        many.iter()
                            .map(|(_, n)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            };
            let entry = archive.by_index(index).map_err(|e| {
                Error::BadInput(format!("{}: zip member {member}: {e}", input.display()))
            })?;
            let source = format!("{}!{member}", target.source_name);
            run(
                template,
                BufReader::with_capacity(1 << 20, entry),
                &source,
                target,
            )
        }
    }
}

#[derive(PartialEq)]
enum Section {
    Head,
    Header,
    Body,
    Tail,
}

/// Resolved column positions for one canonical column.
struct Col {
    source: Option<usize>,
    refund_source: Option<usize>,
    spec: ColumnSpec,
}

fn run<R: Read>(
    t: &Template,
    mut reader: BufReader<R>,
    source: &str,
    target: &Target<'_>,
) -> Result<NormalizeStats> {
    let enc = t.encoding()?;
    let cfg_err = |m: String| Error::Config(format!("template {}: {m}", t.origin));
    let start = t
        .body
        .start
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| cfg_err(e.to_string()))?;
    let end = Regex::new(&t.body.end).map_err(|e| cfg_err(e.to_string()))?;
    let delimiter = t.body.delimiter.as_bytes().first().copied().unwrap_or(b',');
    let mut section = if start.is_some() {
        Section::Head
    } else {
        Section::Header
    };

    let mut out = RowWriter::new(target, source)?;
    let mut stats = NormalizeStats::default();
    let mut header: Vec<String> = Vec::new();
    let mut cols: HashMap<&str, Col> = HashMap::new();
    let mut checks: Vec<CheckAcc> = Vec::new();
    let mut tail: Vec<String> = Vec::new();
    let mut end_line: Option<String> = None;

    let mut buf = Vec::with_capacity(4096);
    let mut fields: Vec<String> = Vec::new();
    let mut line_no: i64 = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| {
            Error::BadInput(format!("{source}: read failed after line {line_no}: {e}"))
        })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let mut bytes: &[u8] = &buf;
        if line_no == 1 && bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
            bytes = &bytes[3..];
        }
        let decoded = enc.decode_without_bom_handling_and_without_replacement(bytes);
        let Some(text) = decoded else {
            if section == Section::Body {
                let lossy = enc.decode_without_bom_handling(bytes).0;
                out.reject(
                    line_no,
                    &format!("invalid {} byte sequence", enc.name()),
                    &lossy,
                )?;
                stats.rows_read += 1;
                stats.rows_rejected += 1;
                check_reject_limit(&stats, target, source)?;
                continue;
            }
            if section == Section::Header {
                return Err(Error::BadInput(format!(
                    "{source}, line {line_no}: the header row is not valid {} (template {} declares it)",
                    enc.name(),
                    t.origin
                )));
            }
            continue;
        };
        let text: &str = &text;
        match section {
            Section::Head => {
                if start.as_ref().is_some_and(|r| r.is_match(text)) {
                    section = Section::Header;
                }
            }
            Section::Header => {
                if text.trim().is_empty() {
                    continue;
                }
                split(text, delimiter, &t.body.cleanup, &mut fields);
                header = fields.clone();
                cols = resolve_columns(t, &header, source, line_no)?;
                checks = resolve_checks(t, &header, source)?;
                section = Section::Body;
            }
            Section::Body => {
                if end.is_match(text) {
                    end_line = Some(text.to_string());
                    section = Section::Tail;
                    continue;
                }
                if text.trim().is_empty() {
                    continue;
                }
                stats.rows_read += 1;
                split(text, delimiter, &t.body.cleanup, &mut fields);
                for c in &mut checks {
                    c.add(&fields);
                }
                if fields.len() != header.len() {
                    let why = format!("expected {} fields, found {}", header.len(), fields.len());
                    out.reject(line_no, &why, text)?;
                    stats.rows_rejected += 1;
                    check_reject_limit(&stats, target, source)?;
                    continue;
                }
                match canonical_row(&cols, &fields, &header) {
                    Ok(row) => {
                        out.push(&row, line_no)?;
                        stats.rows_written += 1;
                    }
                    Err(why) => {
                        out.reject(line_no, &why, text)?;
                        stats.rows_rejected += 1;
                        check_reject_limit(&stats, target, source)?;
                    }
                }
            }
            Section::Tail => tail.push(text.to_string()),
        }
    }
    if section != Section::Tail {
        let what = match section {
            Section::Head => "the body start marker was never found",
            Section::Header => "the header row was never found",
            _ => "the end marker is missing: the bill is truncated",
        };
        return Err(Error::BadInput(format!(
            "{source}: {what} (template {}, after line {line_no})",
            t.origin
        )));
    }
    out.finish()?;
    stats.totals = check_totals(t, end_line.as_deref(), &tail, &checks, delimiter, source)?;
    if let Some(bad) = stats.totals.iter().find(|c| !c.ok) {
        return Err(Error::BadInput(format!(
            "{source}: totals check failed: the bill says {} = {}, parsed {} (template {})",
            bad.value, bad.expected, bad.parsed, t.origin
        )));
    }
    Ok(stats)
}

fn check_reject_limit(stats: &NormalizeStats, target: &Target<'_>, source: &str) -> Result<()> {
    if stats.rows_rejected > target.max_rejected {
        return Err(Error::BadInput(format!(
            "{source}: more than {} rows rejected (max_rejected_rows)",
            target.max_rejected
        )));
    }
    Ok(())
}

/// Splits one line into cleaned fields, reusing `out`'s allocations. Quotes follow RFC 4180.
fn split(line: &str, delimiter: u8, cleanup: &[Cleanup], out: &mut Vec<String>) {
    let mut n = 0;
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    let d = delimiter as char;
    let push = |field: &mut String, out: &mut Vec<String>, n: &mut usize| {
        let mut s: &str = field;
        for c in cleanup {
            s = match c {
                Cleanup::Trim => s.trim(),
                Cleanup::StripBacktick => s.strip_prefix('`').unwrap_or(s),
            };
        }
        if *n < out.len() {
            out[*n].clear();
            out[*n].push_str(s);
        } else {
            out.push(s.to_string());
        }
        *n += 1;
        field.clear();
    };
    if !line.contains('"') {
        // The common case: no quoting, so fields are plain slices between delimiters.
        for part in line.split(d) {
            field.push_str(part);
            push(&mut field, out, &mut n);
        }
        out.truncate(n);
        return;
    }
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
        } else if c == '"' && field.trim().is_empty() {
            field.clear();
            in_quotes = true;
        } else if c == d {
            push(&mut field, out, &mut n);
        } else {
            field.push(c);
        }
    }
    push(&mut field, out, &mut n);
    out.truncate(n);
}

fn resolve_columns<'t>(
    t: &'t Template,
    header: &[String],
    source: &str,
    line: i64,
) -> Result<HashMap<&'t str, Col>> {
    let find = |name: &str| -> Result<usize> {
        header.iter().position(|h| h == name).ok_or_else(|| {
            Error::BadInput(format!(
                "{source}, line {line}: the header has no column {name:?} that template {} maps (header: {})",
                t.origin,
                header.join(", ")
            ))
        })
    };
    let mut cols = HashMap::new();
    for (name, spec) in &t.columns {
        let col = Col {
            source: spec.source.as_deref().map(find).transpose()?,
            refund_source: spec.refund_source.as_deref().map(find).transpose()?,
            spec: spec.clone(),
        };
        cols.insert(name.as_str(), col);
    }
    Ok(cols)
}

/// One canonical row before it is written.
struct Row {
    txn_type: String,
    channel_txn_id: Option<String>,
    merchant_order_id: Option<String>,
    refund_id: Option<String>,
    amount: i128,
    fee: Option<i128>,
    status: String,
    txn_time: i64,
}

fn canonical_row(
    cols: &HashMap<&str, Col>,
    fields: &[String],
    header: &[String],
) -> std::result::Result<Row, String> {
    let txn_type =
        text(cols, "txn_type", fields, false, header)?.ok_or("empty transaction type")?;
    if txn_type != "PAY" && txn_type != "REFUND" {
        return Err(format!(
            "transaction type {txn_type:?} is neither PAY nor REFUND after mapping"
        ));
    }
    let refund = txn_type == "REFUND";
    let amount = money(cols, "amount", fields, refund, header)?.ok_or("empty amount")?;
    let fee = money(cols, "fee", fields, refund, header)?;
    let status = text(cols, "status", fields, refund, header)?.ok_or("empty status")?;
    let txn_time = timestamp(cols, "txn_time", fields, refund, header)?;
    Ok(Row {
        channel_txn_id: text(cols, "channel_txn_id", fields, refund, header)?,
        merchant_order_id: text(cols, "merchant_order_id", fields, refund, header)?,
        refund_id: if refund {
            text(cols, "refund_id", fields, refund, header)?
        } else {
            None
        },
        txn_type,
        amount,
        fee,
        status,
        txn_time,
    })
}

/// The raw text for canonical column `name` (the constant, or the mapped source field).
fn raw<'a>(
    cols: &'a HashMap<&str, Col>,
    name: &str,
    fields: &'a [String],
    refund: bool,
) -> Option<(&'a str, Option<usize>, &'a ColumnSpec)> {
    let col = cols.get(name)?;
    let spec = &col.spec;
    if refund {
        if let Some(v) = &spec.refund_value {
            return Some((v.as_str(), None, spec));
        }
        if let Some(i) = col.refund_source {
            return Some((fields[i].as_str(), Some(i), spec));
        }
    }
    if let Some(i) = col.source {
        return Some((fields[i].as_str(), Some(i), spec));
    }
    spec.value.as_deref().map(|v| (v, None, spec))
}

fn text(
    cols: &HashMap<&str, Col>,
    name: &str,
    fields: &[String],
    refund: bool,
    _h: &[String],
) -> std::result::Result<Option<String>, String> {
    let Some((v, _, spec)) = raw(cols, name, fields, refund) else {
        return Ok(None);
    };
    let v = spec.map.get(v).map(String::as_str).unwrap_or(v);
    Ok(if v.is_empty() {
        None
    } else {
        Some(v.to_string())
    })
}

fn money(
    cols: &HashMap<&str, Col>,
    name: &str,
    fields: &[String],
    refund: bool,
    header: &[String],
) -> std::result::Result<Option<i128>, String> {
    let Some((v, idx, spec)) = raw(cols, name, fields, refund) else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    let column = idx.map(|i| header[i].as_str()).unwrap_or(name);
    let d = parse_money(v).map_err(|e| format!("column {column:?}: {e}"))?;
    Ok(Some(if spec.abs { d.abs() } else { d }))
}

/// A decimal amount with at most two decimals, as a scale-2 mantissa.
pub fn parse_money(v: &str) -> std::result::Result<i128, String> {
    let mut d: Decimal = v
        .parse()
        .map_err(|_| format!("{v:?} is not a decimal amount"))?;
    if d.scale() > 2 {
        let r = d.round_dp(2);
        if r != d {
            return Err(format!("{v:?} has more than two decimals"));
        }
        d = r;
    }
    d.rescale(2);
    let m = d.mantissa();
    if m.abs() >= 10i128.pow(18) {
        return Err(format!("{v:?} does not fit DECIMAL(18,2)"));
    }
    Ok(m)
}

fn timestamp(
    cols: &HashMap<&str, Col>,
    name: &str,
    fields: &[String],
    refund: bool,
    header: &[String],
) -> std::result::Result<i64, String> {
    let (v, idx, spec) = raw(cols, name, fields, refund).ok_or("no time column")?;
    let column = idx.map(|i| header[i].as_str()).unwrap_or(name);
    let format = spec.format.as_deref().unwrap_or("%Y-%m-%d %H:%M:%S");
    let local = NaiveDateTime::parse_from_str(v, format)
        .map_err(|_| format!("column {column:?}: {v:?} is not a time in the format {format:?}"))?;
    let zone: Tz = spec
        .time_zone
        .as_deref()
        .unwrap_or("UTC")
        .parse()
        .map_err(|_| format!("column {column:?}: unknown time zone"))?;
    let at = zone
        .from_local_datetime(&local)
        .earliest()
        .ok_or_else(|| format!("column {column:?}: {v:?} does not exist in {zone}"))?;
    Ok(at.timestamp_micros())
}

/// A totals aggregate being accumulated over every body row (accepted or rejected).
struct CheckAcc {
    value: String,
    sum_col: Option<usize>,
    when: Option<(usize, String)>,
    count: u64,
    sum: Decimal,
    unknown: u64,
}

impl CheckAcc {
    fn add(&mut self, fields: &[String]) {
        if let Some((i, want)) = &self.when {
            if fields.get(*i) != Some(want) {
                return;
            }
        }
        self.count += 1;
        if let Some(i) = self.sum_col {
            match fields.get(i).and_then(|v| v.parse::<Decimal>().ok()) {
                Some(d) => self.sum += d,
                None => self.unknown += 1,
            }
        }
    }
}

fn resolve_checks(t: &Template, header: &[String], source: &str) -> Result<Vec<CheckAcc>> {
    let Some(totals) = &t.totals else {
        return Ok(Vec::new());
    };
    let find = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            Error::BadInput(format!(
                "{source}: the header has no column {name:?} used by a totals check of template {}",
                t.origin
            ))
        })
    };
    totals
        .checks
        .iter()
        .map(|c| {
            Ok(CheckAcc {
                value: c.value.clone(),
                sum_col: match c.aggregate {
                    Aggregate::Sum => c.column.as_deref().map(find).transpose()?,
                    Aggregate::Count => None,
                },
                when: match (&c.when_column, &c.when_equals) {
                    (Some(col), Some(v)) => Some((find(col)?, v.clone())),
                    _ => None,
                },
                count: 0,
                sum: Decimal::ZERO,
                unknown: 0,
            })
        })
        .collect()
}

fn check_totals(
    t: &Template,
    end_line: Option<&str>,
    tail: &[String],
    checks: &[CheckAcc],
    delimiter: u8,
    source: &str,
) -> Result<Vec<TotalsResult>> {
    let Some(totals) = &t.totals else {
        return Ok(Vec::new());
    };
    let mut values: HashMap<String, String> = HashMap::new();
    for r in &totals.lines {
        let re = Regex::new(r).map_err(|e| Error::Config(format!("template {}: {e}", t.origin)))?;
        for line in tail {
            if let Some(caps) = re.captures(line.trim()) {
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        values.insert(name.to_string(), m.as_str().to_string());
                    }
                }
            }
        }
    }
    if totals.table_after_end {
        let mut names = Vec::new();
        let mut vals = Vec::new();
        split(
            end_line.unwrap_or(""),
            delimiter,
            &t.body.cleanup,
            &mut names,
        );
        let row = tail
            .iter()
            .find(|l| !l.trim().is_empty())
            .map(String::as_str)
            .unwrap_or("");
        split(row, delimiter, &t.body.cleanup, &mut vals);
        for (n, v) in names.into_iter().zip(vals) {
            values.insert(n, v);
        }
    }
    let mut out = Vec::new();
    for c in checks {
        let Some(expected) = values.get(&c.value) else {
            return Err(Error::BadInput(format!(
                "{source}: the bill's totals have no value {:?} (template {}): the tail is missing or changed",
                c.value, t.origin
            )));
        };
        let (parsed, ok) = if c.sum_col.is_some() {
            let want: std::result::Result<Decimal, _> = expected.parse();
            let ok = c.unknown == 0 && want.as_ref().is_ok_and(|w| *w == c.sum);
            let parsed = if c.unknown > 0 {
                format!("{} (+{} rows with unreadable amounts)", c.sum, c.unknown)
            } else {
                c.sum.to_string()
            };
            (parsed, ok)
        } else {
            (
                c.count.to_string(),
                expected.parse::<u64>().is_ok_and(|w| w == c.count),
            )
        };
        out.push(TotalsResult {
            value: c.value.clone(),
            expected: expected.clone(),
            parsed,
            ok,
        });
    }
    Ok(out)
}

/// Buffers canonical and rejected rows into Arrow batches and streams them to Parquet.
struct RowWriter<'a> {
    target: &'a Target<'a>,
    source: String,
    bill_date: i32,
    normalized: ArrowWriter<File>,
    rejected: ArrowWriter<File>,
    txn_type: StringBuilder,
    channel_txn_id: StringBuilder,
    merchant_order_id: StringBuilder,
    refund_id: StringBuilder,
    amount: Decimal128Builder,
    fee: Decimal128Builder,
    status: StringBuilder,
    txn_time: TimestampMicrosecondBuilder,
    line: Int64Builder,
    rows: usize,
    rej_line: Int64Builder,
    rej_reason: StringBuilder,
    rej_raw: StringBuilder,
    rej_rows: usize,
}

fn money_builder() -> Decimal128Builder {
    Decimal128Builder::new().with_data_type(schema::MONEY)
}

impl<'a> RowWriter<'a> {
    fn new(target: &'a Target<'a>, source: &str) -> Result<Self> {
        let open = |p: &Path, s| -> Result<ArrowWriter<File>> {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).at(dir)?;
            }
            let f = File::create(p).at(p)?;
            Ok(ArrowWriter::try_new(f, s, Some(writer_props()))?)
        };
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        Ok(Self {
            target,
            source: source.to_string(),
            bill_date: (target.bill_date - epoch).num_days() as i32,
            normalized: open(target.normalized, schema::BILL.clone())?,
            rejected: open(target.rejected, schema::REJECTED.clone())?,
            txn_type: StringBuilder::new(),
            channel_txn_id: StringBuilder::new(),
            merchant_order_id: StringBuilder::new(),
            refund_id: StringBuilder::new(),
            amount: money_builder(),
            fee: money_builder(),
            status: StringBuilder::new(),
            txn_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            line: Int64Builder::new(),
            rows: 0,
            rej_line: Int64Builder::new(),
            rej_reason: StringBuilder::new(),
            rej_raw: StringBuilder::new(),
            rej_rows: 0,
        })
    }

    fn push(&mut self, r: &Row, line: i64) -> Result<()> {
        self.txn_type.append_value(&r.txn_type);
        self.channel_txn_id
            .append_option(r.channel_txn_id.as_deref());
        self.merchant_order_id
            .append_option(r.merchant_order_id.as_deref());
        self.refund_id.append_option(r.refund_id.as_deref());
        self.amount.append_value(r.amount);
        self.fee.append_option(r.fee);
        self.status.append_value(&r.status);
        self.txn_time.append_value(r.txn_time);
        self.line.append_value(line);
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush_rows()?;
        }
        Ok(())
    }

    fn reject(&mut self, line: i64, reason: &str, raw: &str) -> Result<()> {
        self.rej_line.append_value(line);
        self.rej_reason.append_value(reason);
        self.rej_raw.append_value(raw);
        self.rej_rows += 1;
        if self.rej_rows >= BATCH_ROWS {
            self.flush_rejects()?;
        }
        Ok(())
    }

    fn constant_columns(&self, n: usize) -> (ArrayRef, ArrayRef, ArrayRef) {
        let mut ch = StringBuilder::with_capacity(n, n * self.target.channel.len());
        let mut day = Date32Builder::with_capacity(n);
        let mut src = StringBuilder::with_capacity(n, n * self.source.len());
        for _ in 0..n {
            ch.append_value(self.target.channel);
            day.append_value(self.bill_date);
            src.append_value(&self.source);
        }
        (
            Arc::new(ch.finish()),
            Arc::new(day.finish()),
            Arc::new(src.finish()),
        )
    }

    fn flush_rows(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let (ch, day, src) = self.constant_columns(self.rows);
        let batch = RecordBatch::try_new(
            schema::BILL.clone(),
            vec![
                ch,
                day,
                Arc::new(self.txn_type.finish()),
                Arc::new(self.channel_txn_id.finish()),
                Arc::new(self.merchant_order_id.finish()),
                Arc::new(self.refund_id.finish()),
                Arc::new(self.amount.finish()),
                Arc::new(self.fee.finish()),
                Arc::new(self.status.finish()),
                Arc::new(self.txn_time.finish()),
                src,
                Arc::new(self.line.finish()),
            ],
        )?;
        self.normalized.write(&batch)?;
        self.rows = 0;
        Ok(())
    }

    fn flush_rejects(&mut self) -> Result<()> {
        if self.rej_rows == 0 {
            return Ok(());
        }
        let (ch, day, src) = self.constant_columns(self.rej_rows);
        let batch = RecordBatch::try_new(
            schema::REJECTED.clone(),
            vec![
                ch,
                day,
                src,
                Arc::new(self.rej_line.finish()),
                Arc::new(self.rej_reason.finish()),
                Arc::new(self.rej_raw.finish()),
            ],
        )?;
        self.rejected.write(&batch)?;
        self.rej_rows = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush_rows()?;
        self.flush_rejects()?;
        self.normalized.close()?;
        self.rejected.close()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cleans_backticks_and_quotes() {
        let mut out = Vec::new();
        split(
            "`a, \"b,c\" ,`d\t",
            b',',
            &[Cleanup::Trim, Cleanup::StripBacktick],
            &mut out,
        );
        assert_eq!(out, vec!["a", "b,c", "d"]);
    }

    #[test]
    fn money_keeps_cents_exact_and_refuses_fractions_of_a_cent() {
        assert_eq!(parse_money("12.30"), Ok(1230));
        assert_eq!(parse_money("-0.01"), Ok(-1));
        assert_eq!(parse_money("7"), Ok(700));
        assert_eq!(parse_money("1.000"), Ok(100));
        assert!(parse_money("1.005").is_err());
        assert!(parse_money("12.3.4").is_err());
    }
}
