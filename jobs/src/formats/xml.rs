//! The XML body (ISO 20022 camt.053 and the like): one record per element at the template's
//! `record` path, read as a stream of events; columns are paths below the record
//! (`NtryDtls/TxDtls/Refs/EndToEndId`, `Amt@Ccy` for an attribute). Namespaces are ignored: paths
//! use local names.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use quick_xml::events::Event;
use rust_decimal::Decimal;

use super::engine::{reject, template_zone, NormalizeStats};
use super::rows::{Outcome, Plan, Record};
use super::template::Template;
use super::totals::finish_totals;
use super::writer::{RowWriter, Target};
use crate::error::{Error, Result};

/// Counts the lines of everything consumed, so records and errors can name their line.
struct LineCounter<R> {
    inner: R,
    newlines: u64,
}

impl<R: BufRead> Read for LineCounter<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.newlines += out[..n].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCounter<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let n = amt.min(buf.len());
            self.newlines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
        self.inner.consume(amt);
    }
}

/// A record's values by resolved path index.
struct XmlRecord<'a> {
    values: &'a [String],
}

impl Record for XmlRecord<'_> {
    fn field(&self, i: usize) -> &str {
        self.values.get(i).map(|s| s.trim()).unwrap_or("")
    }
}

/// Raw text of a record kept for `rejected/`; longer records are cut.
const RAW_LIMIT: usize = 8192;

pub(crate) fn run<R: Read>(
    t: &Template,
    reader: BufReader<R>,
    source: &str,
    target: &Target<'_>,
) -> Result<NormalizeStats> {
    let record_path: Vec<String> = t
        .body
        .record
        .as_deref()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    // Every path the template reads, relative to the record; index = field index.
    let mut paths: Vec<String> = Vec::new();
    let mut lookup = |name: &str| -> Option<usize> {
        Some(match paths.iter().position(|p| p == name) {
            Some(i) => i,
            None => {
                paths.push(name.to_string());
                paths.len() - 1
            }
        })
    };
    let missing = |name: &str, at: &str| Error::Config(format!("{at}: no path {name:?}"));
    let mut plan = Plan::resolve(t, &mut lookup, &missing)?;
    // Element path (below the record) → (field index, attribute or None for text).
    let mut wanted: HashMap<String, Vec<(usize, Option<String>)>> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        let (elem, attr) = match p.split_once('@') {
            Some((e, a)) => (e.to_string(), Some(a.to_string())),
            None => (p.clone(), None),
        };
        wanted.entry(elem).or_default().push((i, attr));
    }
    let totals_paths: HashMap<String, String> = t
        .totals
        .as_ref()
        .map(|x| {
            x.paths
                .iter()
                .map(|(k, v)| (v.trim_matches('/').to_string(), k.clone()))
                .collect()
        })
        .unwrap_or_default();

    let zone = template_zone(t);
    let mut out = RowWriter::new(target, source, zone)?;
    out.fix_columns(&plan);
    let mut stats = NormalizeStats::default();
    let mut xml = quick_xml::Reader::from_reader(LineCounter {
        inner: reader,
        newlines: 0,
    });
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut in_record = false;
    let mut record_line: i64 = 0;
    let mut values: Vec<String> = vec![String::new(); paths.len()];
    let mut raw = String::new();
    let mut text = String::new();
    let mut totals: HashMap<String, String> = HashMap::new();
    let mut ending: Option<Option<String>> = None;
    let line_of =
        |x: &quick_xml::Reader<LineCounter<BufReader<R>>>| x.get_ref().newlines as i64 + 1;
    loop {
        buf.clear();
        let ev = xml.read_event_into(&mut buf).map_err(|e| {
            Error::BadInput(format!(
                "{source}, line {}: not well-formed XML: {e} ({})",
                line_of(&xml),
                t.at("kind = \"xml\"")
            ))
        })?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                stack.push(name);
                text.clear();
                if !in_record && stack == record_path {
                    in_record = true;
                    record_line = line_of(&xml);
                    values.iter_mut().for_each(String::clear);
                    raw.clear();
                }
                if in_record {
                    if raw.len() < RAW_LIMIT {
                        raw.push('<');
                        raw.push_str(&String::from_utf8_lossy(e));
                        raw.push_str(if empty { "/>" } else { ">" });
                    }
                    let rel = stack[record_path.len()..].join("/");
                    if let Some(ws) = wanted.get(&rel) {
                        for (i, attr) in ws {
                            if let Some(a) = attr {
                                for at in e.attributes().flatten() {
                                    if at.key.local_name().as_ref() == a.as_bytes()
                                        && values[*i].is_empty()
                                    {
                                        values[*i] = at
                                            .unescape_value()
                                            .map(|v| v.into_owned())
                                            .unwrap_or_default();
                                    }
                                }
                            }
                        }
                    }
                }
                if empty {
                    ending = Some(None);
                }
            }
            Event::Text(e) => {
                let s = e.decode().map_err(|e| {
                    Error::BadInput(format!("{source}, line {}: {e}", line_of(&xml)))
                })?;
                text.push_str(&s);
                if in_record && raw.len() < RAW_LIMIT {
                    raw.push_str(&s);
                }
            }
            Event::CData(e) => {
                let s = String::from_utf8_lossy(&e).into_owned();
                text.push_str(&s);
                if in_record && raw.len() < RAW_LIMIT {
                    raw.push_str(&s);
                }
            }
            Event::GeneralRef(e) => {
                let name = String::from_utf8_lossy(&e).into_owned();
                let resolved = match e.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&name)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            Error::BadInput(format!(
                                "{source}, line {}: unknown entity &{name};",
                                line_of(&xml)
                            ))
                        })?,
                };
                text.push_str(&resolved);
                if in_record && raw.len() < RAW_LIMIT {
                    raw.push('&');
                    raw.push_str(&name);
                    raw.push(';');
                }
            }
            Event::End(ref e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if stack.last() != Some(&name) {
                    return Err(Error::BadInput(format!(
                        "{source}, line {}: </{name}> closes <{}>",
                        line_of(&xml),
                        stack.last().map(String::as_str).unwrap_or("")
                    )));
                }
                ending = Some(Some(name));
            }
            Event::Eof => break,
            _ => {}
        }
        // An element ends (`</x>`, or `<x/>` with `None`): its text goes where a path wants
        // it, and a record that ends is a row.
        if let Some(name) = ending.take() {
            let was_record = in_record && stack == record_path;
            close(
                &mut stack,
                &record_path,
                &mut in_record,
                &mut raw,
                name.as_deref(),
                &wanted,
                &mut values,
                &text,
                &totals_paths,
                &mut totals,
            );
            text.clear();
            if was_record {
                emit(
                    &mut plan,
                    &values,
                    &raw,
                    record_line,
                    &mut out,
                    &mut stats,
                    target,
                    source,
                )?;
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(Error::BadInput(format!(
            "{source}: the XML ends inside <{open}> after line {}: the file is truncated",
            line_of(&xml)
        )));
    }
    if stats.rows_read == 0 && totals.is_empty() {
        return Err(Error::BadInput(format!(
            "{source}: no <{}> record and no totals: not the format {} describes",
            record_path.join("/"),
            t.at("record")
        )));
    }
    stats.bill_date = out.finish()?;
    let checks = std::mem::take(&mut plan.checks);
    let checked = finish_totals(t, &checks, &totals, source, &mut stats);
    stats.refuse_on_bad_input(checked)?;
    Ok(stats)
}

/// Leaves the current element: stores its text where a path wants it, and keeps totals.
#[allow(clippy::too_many_arguments)]
fn close(
    stack: &mut Vec<String>,
    record_path: &[String],
    in_record: &mut bool,
    raw: &mut String,
    name: Option<&str>,
    wanted: &HashMap<String, Vec<(usize, Option<String>)>>,
    values: &mut [String],
    text: &str,
    totals_paths: &HashMap<String, String>,
    totals: &mut HashMap<String, String>,
) {
    if *in_record {
        if let Some(n) = name {
            if raw.len() < RAW_LIMIT {
                raw.push_str("</");
                raw.push_str(n);
                raw.push('>');
            }
        }
        let rel = stack[record_path.len().min(stack.len())..].join("/");
        if let Some(ws) = wanted.get(&rel) {
            for (i, attr) in ws {
                if attr.is_none() && values[*i].is_empty() {
                    values[*i] = text.to_string();
                }
            }
        }
    } else if !totals_paths.is_empty() {
        let abs = stack.join("/");
        if let Some(name) = totals_paths.get(&abs) {
            // A path that occurs more than once (one statement per account) adds up.
            let v = text.trim().to_string();
            match totals.get_mut(name) {
                Some(prev) => {
                    if let (Ok(a), Ok(b)) = (prev.parse::<Decimal>(), v.parse::<Decimal>()) {
                        *prev = (a + b).to_string();
                    }
                }
                None => {
                    totals.insert(name.clone(), v);
                }
            }
        }
    }
    if *in_record && stack.len() == record_path.len() {
        *in_record = false;
    }
    stack.pop();
}

#[allow(clippy::too_many_arguments)]
fn emit(
    plan: &mut Plan,
    values: &[String],
    raw: &str,
    line: i64,
    out: &mut RowWriter,
    stats: &mut NormalizeStats,
    target: &Target<'_>,
    source: &str,
) -> Result<()> {
    stats.rows_read += 1;
    let rec = XmlRecord { values };
    match plan.row(&rec) {
        Outcome::Row(row) => {
            out.push(&row, line)?;
            stats.rows_written += 1;
        }
        Outcome::Skipped => stats.rows_skipped += 1,
        Outcome::Rejected(why) => reject(out, stats, target, source, line, &why, raw)?,
    }
    Ok(())
}
