//! The delimited body: head lines, the header row (columns by name), data rows to canonical or
//! rejected rows, the end marker and the lines after it, then the bill's totals.

use std::collections::HashMap;
use std::io::{BufReader, Read};

use regex::Regex;

use super::engine::{encoding_hint, not_encoded, reject, template_zone, NormalizeStats};
use super::lines::{LineError, Lines, MAX_LINE};
use super::rows::{Outcome, Plan};
use super::split::{effective_cleanup, Fields, Slots};
use super::template::{Bom, LineEnding, Template};
use super::totals::{capture, finish_totals, summary_values};
use super::writer::{RowWriter, Target};
use crate::error::{Error, Result};

/// Whether a line holds only whitespace; its first byte settles nearly every line.
fn blank(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(&c) if c > b' ' && c.is_ascii() => false,
        _ => text.trim().is_empty(),
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Section {
    Head,
    Header,
    Body,
    Tail,
}

/// Lines kept from the head and the tail for the totals; more are ignored.
const KEPT_LINES: usize = 1000;

pub(super) fn delimited<R: Read>(
    t: &Template,
    reader: BufReader<R>,
    source: &str,
    target: &Target<'_>,
    summary: Option<(String, String)>,
) -> Result<NormalizeStats> {
    let enc = t.encoding()?;
    let start = t.body.start.as_deref().map(|r| t.regex(r)).transpose()?;
    let end = t
        .body
        .end
        .as_deref()
        .map(|r| t.regex(r))
        .transpose()?
        .map(Marker::new);
    let delim = t.body.delimiter.as_bytes().first().copied().unwrap_or(b',');
    let quote = t.body.quote.as_bytes().first().copied();
    let cleanup = &effective_cleanup(&t.body.cleanup);
    let mut section = if start.is_some() || t.body.head_lines > 0 {
        Section::Head
    } else {
        Section::Header
    };
    let zone = template_zone(t);
    let mut out = RowWriter::new(target, source, zone)?;
    let mut stats = NormalizeStats::default();
    let mut header: Vec<String> = Vec::new();
    let mut plan: Option<Plan> = None;
    let mut slots = Slots::default();
    let mut outside: Vec<String> = Vec::new();
    let mut end_line: Option<String> = None;
    // The lines after the end marker, with their numbers.
    let mut tail: Vec<(i64, String)> = Vec::new();

    let mut lines = Lines::new(reader);
    let mut decoded = String::new();
    let mut fields = Fields::default();
    let mut spans = Vec::new();
    let mut line_no: i64 = 0;
    let mut undecodable = false;
    let mut looks_other = String::new();
    loop {
        let mut bytes = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(LineError::Io(e)) => {
                return Err(Error::BadInput(format!(
                    "{source}: read failed after line {line_no}: {e}"
                )))
            }
            Err(LineError::TooLong) => {
                return Err(Error::BadInput(format!(
                    "{source}, line {}: the line is longer than {} MiB: not a bill of lines ({})",
                    line_no + 1,
                    MAX_LINE >> 20,
                    t.at("[body]")
                )))
            }
        };
        line_no += 1;
        let had_lf = bytes.last() == Some(&b'\n');
        if had_lf {
            bytes = &bytes[..bytes.len() - 1];
        }
        let had_cr = bytes.last() == Some(&b'\r');
        if had_cr {
            bytes = &bytes[..bytes.len() - 1];
        }
        if had_lf {
            let bad = match t.container.line_ending {
                LineEnding::Crlf => !had_cr,
                LineEnding::Lf => had_cr,
                LineEnding::Any => false,
            };
            if bad {
                return Err(Error::BadInput(format!(
                    "{source}, line {line_no}: the line ends in {}, but {} declares {:?} line endings",
                    if had_cr { "CRLF" } else { "LF" },
                    t.at("line_ending"),
                    t.container.line_ending
                )));
            }
        }
        if line_no == 1 {
            let has_bom = bytes.starts_with(&[0xEF, 0xBB, 0xBF]);
            match (t.container.bom, has_bom) {
                (Bom::Required, false) | (Bom::Forbidden, true) => {
                    return Err(Error::BadInput(format!(
                        "{source}: the file {} a byte order mark, but {} says {:?}",
                        if has_bom { "starts with" } else { "has no" },
                        t.at("bom"),
                        t.container.bom
                    )));
                }
                _ => {}
            }
            if has_bom {
                bytes = &bytes[3..];
            }
        }
        let text: &str = if enc == encoding_rs::UTF_8 {
            match simdutf8::basic::from_utf8(bytes) {
                Ok(s) => s,
                Err(_) => {
                    decoded.clear();
                    decoded.push_str(&String::from_utf8_lossy(bytes));
                    undecodable = true;
                    &decoded
                }
            }
        } else {
            decoded.clear();
            let mut decoder = enc.new_decoder_without_bom_handling();
            decoded.reserve(
                decoder
                    .max_utf8_buffer_length(bytes.len())
                    .unwrap_or(bytes.len() * 3),
            );
            let (res, _) = decoder.decode_to_string_without_replacement(bytes, &mut decoded, true);
            if !matches!(res, encoding_rs::DecoderResult::InputEmpty) {
                decoded.clear();
                decoded.push_str(&enc.decode_without_bom_handling(bytes).0);
                undecodable = true;
            }
            &decoded
        };
        if undecodable {
            undecodable = false;
            if looks_other.is_empty() {
                looks_other = encoding_hint(enc, bytes);
            }
            match section {
                Section::Header => return Err(not_encoded(t, source, line_no, enc, bytes)),
                Section::Body if !end.as_ref().is_some_and(|r| r.is_match(text)) => {
                    // Rejected, and still counted into the totals with what could be read.
                    stats.rows_read += 1;
                    fields.split(text, delim, quote, cleanup);
                    if let Some(plan) = plan.as_mut() {
                        let rec = fields.record(text, &slots.field_of, &mut spans);
                        let _ = plan.row(&rec);
                    }
                    let why = format!("invalid {} byte sequence", enc.name());
                    reject(&mut out, &mut stats, target, source, line_no, &why, text)?;
                    continue;
                }
                _ => {}
            }
        }
        match section {
            Section::Head => {
                if outside.len() < KEPT_LINES {
                    outside.push(text.to_string());
                }
                let done = match &start {
                    Some(r) => r.is_match(text),
                    None => line_no as usize >= t.body.head_lines,
                };
                if done {
                    section = Section::Header;
                }
            }
            Section::Header => {
                if text.trim().is_empty() {
                    continue;
                }
                fields.split(text, delim, quote, cleanup);
                header = fields.to_vec(text);
                let mut names: Vec<usize> = Vec::new();
                let header_ref = &header;
                // Each field once, however many columns and checks read it.
                let mut lookup = |name: &str| -> Option<usize> {
                    let pos = header_ref.iter().position(|h| h == name)?;
                    Some(names.iter().position(|&p| p == pos).unwrap_or_else(|| {
                        names.push(pos);
                        names.len() - 1
                    }))
                };
                let missing = |name: &str, at: &str| {
                    Error::BadInput(format!(
                        "{source}, line {line_no}: the header has no column \"{name}\" ({at}); the header is: {}{}",
                        header_ref.join(", "),
                        encoding_hint(enc, bytes)
                    ))
                };
                let p = Plan::resolve(t, &mut lookup, &missing)?;
                out.fix_columns(&p);
                slots = Slots::new(names, header.len());
                plan = Some(p);
                section = Section::Body;
            }
            Section::Body => {
                if end.as_ref().is_some_and(|r| r.is_match(text)) {
                    end_line = Some(text.to_string());
                    outside.push(text.to_string());
                    section = Section::Tail;
                    continue;
                }
                if blank(text) || t.body.comment.iter().any(|c| text.starts_with(c.as_str())) {
                    continue;
                }
                stats.rows_read += 1;
                let Some(plan) = plan.as_mut() else {
                    continue;
                };
                let (n, rec) = fields.split_into(text, delim, quote, cleanup, &slots, &mut spans);
                if n != header.len() {
                    let why = format!("expected {} fields, found {n}", header.len());
                    // The totals still see the record's fields where they are.
                    let _ = plan.row(&rec);
                    reject(&mut out, &mut stats, target, source, line_no, &why, text)?;
                    continue;
                }
                match plan.row(&rec) {
                    Outcome::Row(row) => {
                        out.push(&row, line_no)?;
                        stats.rows_written += 1;
                    }
                    Outcome::Skipped => stats.rows_skipped += 1,
                    Outcome::Rejected(why) => {
                        reject(&mut out, &mut stats, target, source, line_no, &why, text)?;
                    }
                }
            }
            Section::Tail => {
                if tail.len() >= KEPT_LINES {
                    return Err(Error::BadInput(format!(
                        "{source}, line {line_no}: more than {KEPT_LINES} lines after the body's end marker ({})",
                        t.at("[body]")
                    )));
                }
                tail.push((line_no, text.to_string()));
            }
        }
    }
    let what = match section {
        Section::Head if start.is_some() => Some("the body start marker was never found"),
        Section::Head => Some("the file ends before the header row"),
        Section::Header => Some("the header row was never found"),
        Section::Body if end.is_some() => Some("the end marker is missing: the bill is truncated"),
        _ => None,
    };
    if let Some(what) = what {
        return Err(Error::BadInput(format!(
            "{source}: {what} ({}, after line {line_no}){looks_other}",
            t.at("[body]")
        )));
    }
    stats.bill_date = out.finish()?;
    let checks = plan.map(|p| p.checks).unwrap_or_default();
    let checked = (|| -> Result<()> {
        let mut values = HashMap::new();
        if let Some(totals) = &t.totals {
            let patterns = totals
                .lines
                .iter()
                .map(|r| t.regex(r))
                .collect::<Result<Vec<_>>>()?;
            let ignored = totals
                .ignore_lines
                .iter()
                .map(|r| t.regex(r))
                .collect::<Result<Vec<_>>>()?;
            let outside_lines = outside.iter().map(String::as_str);
            for line in outside_lines.chain(tail.iter().map(|(_, l)| l.as_str())) {
                for re in &patterns {
                    capture(re, line.trim(), &mut values);
                }
            }
            // The values row of a totals table, which no pattern need match.
            let table_row = totals
                .table_after_end
                .then(|| tail.iter().find(|(_, l)| !l.trim().is_empty()))
                .flatten();
            if !patterns.is_empty() || totals.table_after_end {
                for (n, line) in &tail {
                    let l = line.trim();
                    let known = l.is_empty()
                        || table_row.is_some_and(|(row, _)| row == n)
                        || patterns.iter().chain(&ignored).any(|re| re.is_match(l));
                    if !known {
                        return Err(Error::BadInput(format!(
                            "{source}, line {n}: {l:?} after the body matches none of the template's totals patterns nor ignore_lines ({}): the tail changed, and a check it holds would go undone",
                            t.at("[totals]")
                        )));
                    }
                }
            }
            if totals.table_after_end {
                let mut names = Fields::default();
                let mut vals = Fields::default();
                let head = end_line.as_deref().unwrap_or("");
                names.split(head, delim, quote, cleanup);
                let row = table_row.map(|(_, l)| l.as_str()).unwrap_or("");
                vals.split(row, delim, quote, cleanup);
                for (n, v) in names.to_vec(head).into_iter().zip(vals.to_vec(row)) {
                    values.insert(n, v);
                }
            }
            if let (Some(s), Some((member, text))) = (&totals.summary, &summary) {
                summary_values(t, s, member, text, delim, quote, cleanup, &mut values)?;
            }
        }
        finish_totals(t, &checks, &values, source, &mut stats)
    })();
    stats.refuse_on_bad_input(checked)?;
    Ok(stats)
}

/// A line marker: its regex, and when the regex is anchored at the line's start, the literal
/// prefixes every match begins with. The body's end marker is tried on every body line, and a
/// byte comparison turns away nearly all of them without a regex search.
pub(crate) struct Marker {
    re: Regex,
    prefixes: Option<Vec<Vec<u8>>>,
}

impl Marker {
    pub(crate) fn new(re: Regex) -> Self {
        let prefixes = anchored_prefixes(re.as_str());
        Self { re, prefixes }
    }

    #[inline]
    pub(crate) fn is_match(&self, line: &str) -> bool {
        if let Some(p) = &self.prefixes {
            if !p.iter().any(|p| line.as_bytes().starts_with(p)) {
                return false;
            }
        }
        self.re.is_match(line)
    }
}

/// The literals every match of `pattern` starts with, when it can only match at the start of
/// the text and they are finitely many and none is empty; else `None` (always search).
fn anchored_prefixes(pattern: &str) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::{literal::Extractor, Look};
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let seq = Extractor::new().extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_skip_the_regex_only_when_no_match_is_possible() {
        let m = |p: &str| Marker::new(Regex::new(p).expect("regex"));
        let alipay = m("^#-+业务明细列表结束-+$");
        assert!(alipay.prefixes.is_some());
        assert!(alipay.is_match("#-----业务明细列表结束-----"));
        assert!(!alipay.is_match("2088,#-----业务明细列表结束-----"));
        assert!(!alipay.is_match("#-----业务明细列表-----"));
        // Unanchored, alternatives, case-insensitive: the same answers as the regex.
        for (p, yes, no) in [
            ("总交易单数,", "`x,总交易单数,", "总交易单"),
            ("^(?:Total|TOTAL):", "TOTAL: 3", "total: 3"),
            ("(?i)^total", "ToTaL 3", "sum 3"),
            ("^\\s*end", "   end", "x end"),
        ] {
            let mk = m(p);
            assert!(mk.is_match(yes), "{p} {yes}");
            assert!(!mk.is_match(no), "{p} {no}");
        }
        assert!(m("总交易单数,").prefixes.is_none());
    }
}
