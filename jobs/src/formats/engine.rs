//! The streaming template engine: opens the container, reads the bill record by record (never
//! whole), writes canonical and rejected rows, and checks the bill's own totals.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use chrono::NaiveDate;
use regex::Regex;
use serde::Serialize;

use super::lines::{LineError, Lines, MAX_LINE};
use super::rows::{CheckAcc, Outcome, Plan, Record};
use super::template::{BodyKind, Bom, Cleanup, ContainerKind, LineEnding, Template};
use super::writer::{RowWriter, Target};
use crate::error::{Error, IoContext, Result};

/// The reader's own buffer: smaller than the line reader's block, so that block reads go
/// straight through it.
const READ_AHEAD: usize = 64 << 10;

/// What one normalized file amounted to.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct NormalizeStats {
    /// Data records read from the body.
    pub rows_read: u64,
    /// Canonical rows written.
    pub rows_written: u64,
    /// Records sent to `rejected/`.
    pub rows_rejected: u64,
    /// Records that are not transactions to reconcile (the template's `skip`).
    #[serde(default)]
    pub rows_skipped: u64,
    /// Each totals check.
    pub totals: Vec<TotalsResult>,
    /// The bill date written into the rows.
    #[serde(skip)]
    pub bill_date: Option<NaiveDate>,
    /// Why the bill is refused although every row was read and written: its own totals
    /// disagree, or its tail or summary is not what the template knows. The canonical and
    /// rejected files are complete (the rejected rows show which lines broke the totals); the
    /// bill must not be reconciled.
    #[serde(skip)]
    pub refused: Option<String>,
}

impl NormalizeStats {
    /// The stats of an accepted bill, or the refusal as `Error::BadInput`.
    pub fn accepted(self) -> Result<Self> {
        match self.refused {
            Some(why) => Err(Error::BadInput(why)),
            None => Ok(self),
        }
    }

    /// Records a refusal (a bad-input error found after every row was written) instead of
    /// failing; any other error passes through.
    pub(crate) fn refuse_on_bad_input(&mut self, checked: Result<()>) -> Result<()> {
        match checked {
            Err(Error::BadInput(why)) => {
                self.refused = Some(why);
                Ok(())
            }
            other => other,
        }
    }
}

/// One totals check: the bill's value against the parsed one.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TotalsResult {
    /// The value's name in the template.
    pub value: String,
    /// What the bill says.
    pub expected: String,
    /// What was parsed (every body record: written, rejected and skipped).
    pub parsed: String,
    /// Whether they are equal (a skipped check is ok).
    pub ok: bool,
    /// Why the check was not made: an `optional` check whose value or column the bill lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Normalizes `input` with `template`. Malformed records go to `rejected`; the file fails
/// (`Error::BadInput`) when the container or encoding is wrong, the end marker is missing, the
/// totals disagree, or too many records are rejected.
pub fn normalize_file(
    template: &Template,
    input: &Path,
    target: &Target<'_>,
) -> Result<NormalizeStats> {
    let file = File::open(input).at(input)?;
    let source = target.source_name.to_string();
    match template.container.kind {
        ContainerKind::Plain => {
            let mut f = BufReader::with_capacity(READ_AHEAD, file);
            let head = f.fill_buf().at(input)?;
            let packed = if head.starts_with(&[0x1f, 0x8b]) {
                Some("gzip")
            } else if head.starts_with(b"PK\x03\x04") {
                Some("zip")
            } else {
                None
            };
            if let Some(kind) = packed {
                return Err(Error::BadInput(format!(
                    "{}: the file is {kind}-compressed, but {} declares a plain file",
                    input.display(),
                    template.at("kind")
                )));
            }
            run(template, f, &source, target, None)
        }
        ContainerKind::Gzip => {
            let mut head = [0u8; 2];
            let mut f = BufReader::new(file);
            let peek = f.fill_buf().at(input)?;
            head.iter_mut().zip(peek).for_each(|(h, p)| *h = *p);
            if head != [0x1f, 0x8b] {
                return Err(Error::BadInput(format!(
                    "{}: not a gzip file as {} declares",
                    input.display(),
                    template.at("kind")
                )));
            }
            let gz = flate2::read::MultiGzDecoder::new(f);
            run(
                template,
                BufReader::with_capacity(READ_AHEAD, gz),
                &source,
                target,
                None,
            )
        }
        ContainerKind::Zip => {
            let mut archive = zip::ZipArchive::new(file).map_err(|e| {
                Error::BadInput(format!(
                    "{}: not a zip archive as {} declares: {e}",
                    input.display(),
                    template.at("kind")
                ))
            })?;
            let member_re = template.container.member.as_deref().unwrap_or("");
            let (index, member) = find_member(template, &mut archive, member_re, input)?;
            let summary = match template.totals.as_ref().and_then(|t| t.summary.as_ref()) {
                Some(s) => {
                    let (i, name) = find_member(template, &mut archive, &s.member, input)?;
                    let mut bytes = Vec::new();
                    archive
                        .by_index(i)
                        .and_then(|mut e| Ok(e.read_to_end(&mut bytes)?))
                        .map_err(|e| {
                            Error::BadInput(format!("{}: zip member {name}: {e}", input.display()))
                        })?;
                    let text = template
                        .encoding()?
                        .decode_without_bom_handling(strip_bom(&bytes))
                        .0
                        .into_owned();
                    Some((name, text))
                }
                None => None,
            };
            let entry = archive.by_index(index).map_err(|e| {
                Error::BadInput(format!("{}: zip member {member}: {e}", input.display()))
            })?;
            let source = format!("{}!{member}", target.source_name);
            run(
                template,
                BufReader::with_capacity(READ_AHEAD, entry),
                &source,
                target,
                summary,
            )
        }
    }
}

/// Normalizes a bill already in memory (plain container): for tests and fuzzing.
pub fn normalize_bytes(
    template: &Template,
    bytes: &[u8],
    target: &Target<'_>,
) -> Result<NormalizeStats> {
    run(
        template,
        BufReader::new(bytes),
        target.source_name,
        target,
        None,
    )
}

fn find_member(
    t: &Template,
    archive: &mut zip::ZipArchive<File>,
    pattern: &str,
    input: &Path,
) -> Result<(usize, String)> {
    let re = t.regex(pattern)?;
    let enc = t.encoding()?;
    let mut found = Vec::new();
    for i in 0..archive.len() {
        let f = archive
            .by_index_raw(i)
            .map_err(|e| Error::BadInput(format!("{}: zip entry {i}: {e}", input.display())))?;
        // Names in Chinese bills are GBK bytes without the UTF-8 flag.
        let raw = f.name_raw();
        let name = match std::str::from_utf8(raw) {
            Ok(s) => s.to_string(),
            Err(_) => enc.decode_without_bom_handling(raw).0.into_owned(),
        };
        if re.is_match(&name) {
            found.push((i, name));
        }
    }
    match found.len() {
        1 => Ok(found.swap_remove(0)),
        0 => Err(Error::BadInput(format!(
            "{}: no zip member matches {pattern:?} ({})",
            input.display(),
            t.at(pattern)
        ))),
        n => Err(Error::BadInput(format!(
            "{}: {n} zip members match {pattern:?} ({}): {}",
            input.display(),
            t.at(pattern),
            found
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether a line holds only whitespace; its first byte settles nearly every line.
fn blank(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(&c) if c > b' ' && c.is_ascii() => false,
        _ => text.trim().is_empty(),
    }
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(b)
}

/// Runs the template's body over `reader`.
fn run<R: Read>(
    t: &Template,
    reader: BufReader<R>,
    source: &str,
    target: &Target<'_>,
    summary: Option<(String, String)>,
) -> Result<NormalizeStats> {
    match t.body.kind {
        BodyKind::Delimited => delimited(t, reader, source, target, summary),
        BodyKind::Xml => super::xml::run(t, reader, source, target),
    }
}

/// One line split into fields: ranges into the line, or into `owned` for quoted fields that
/// needed unescaping. Cleanups are applied when a field is read, so fields nobody reads cost
/// only their delimiter.
#[derive(Default)]
pub(crate) struct Fields {
    spans: Vec<(u32, u32, bool)>,
    owned: String,
    cleanup: Vec<Cleanup>,
}

/// A split line as a record: the cleaned span of each field the plan reads.
struct LineRecord<'a> {
    line: &'a str,
    owned: &'a str,
    /// By resolved column index: (start, end, in `owned`).
    spans: &'a [(u32, u32, bool)],
}

impl Record for LineRecord<'_> {
    #[inline]
    fn field(&self, i: usize) -> &str {
        match self.spans.get(i) {
            Some(&(s, e, owned)) => {
                let text = if owned { self.owned } else { self.line };
                text.get(s as usize..e as usize).unwrap_or("")
            }
            None => "",
        }
    }
}

impl Fields {
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Field `i`, cleaned.
    pub(crate) fn get<'a>(&'a self, line: &'a str, i: usize) -> &'a str {
        match self.spans.get(i) {
            Some(&(s, e, owned)) => {
                let text = if owned { self.owned.as_str() } else { line };
                let (s, e) = clean(text, s as usize, e as usize, &self.cleanup);
                text.get(s..e).unwrap_or("")
            }
            None => "",
        }
    }

    /// The record of `line` as the plan reads it: the cleaned span of field `wanted[i]` at
    /// `spans[i]` (empty when the line is short of it).
    fn record<'a>(
        &'a self,
        line: &'a str,
        wanted: &[usize],
        spans: &'a mut Vec<(u32, u32, bool)>,
    ) -> LineRecord<'a> {
        spans.clear();
        spans.extend(wanted.iter().map(|&f| match self.spans.get(f) {
            Some(&(s, e, owned)) => {
                let text = if owned { self.owned.as_str() } else { line };
                let (s, e) = clean(text, s as usize, e as usize, &self.cleanup);
                (s as u32, e as u32, owned)
            }
            None => (0, 0, false),
        }));
        LineRecord {
            line,
            owned: &self.owned,
            spans,
        }
    }

    /// Splits `line` and fills `spans` (one per slot) with the cleaned span of each field
    /// `slot_of` gives a slot (`NO_SLOT`: not read), in one pass when the line has no quote;
    /// returns the line's number of fields. Slots the line is too short for stay empty.
    fn split_into<'a>(
        &'a mut self,
        line: &'a str,
        delim: u8,
        quote: Option<u8>,
        cleanup: &[Cleanup],
        slots: &Slots,
        spans: &'a mut Vec<(u32, u32, bool)>,
    ) -> (usize, LineRecord<'a>) {
        spans.clear();
        spans.resize(slots.field_of.len(), (0, 0, false));
        let next = Some(slots.next_read.as_slice());
        let walked = walk_unquoted(line.as_bytes(), delim, quote, next, |k, s, e| {
            if let Some(&slot) = slots.slot_of.get(k) {
                if let Some(out) = spans.get_mut(slot as usize) {
                    let (s, e) = clean(line, s, e, cleanup);
                    *out = (s as u32, e as u32, false);
                }
            }
        });
        let n = match walked {
            Some(n) => {
                self.owned.clear();
                n
            }
            None => {
                // A quote: the careful split, then the wanted fields gathered.
                self.split(line, delim, quote, cleanup);
                self.record(line, &slots.field_of, spans);
                self.len()
            }
        };
        (
            n,
            LineRecord {
                line,
                owned: &self.owned,
                spans,
            },
        )
    }

    pub(crate) fn to_vec(&self, line: &str) -> Vec<String> {
        (0..self.len())
            .map(|i| self.get(line, i).to_string())
            .collect()
    }

    /// Splits `line` at `delim`, honouring `quote` (RFC 4180: a quoted field may hold the
    /// delimiter, and `""` inside it is one quote); `cleanup` applies when fields are read.
    pub(crate) fn split(&mut self, line: &str, delim: u8, quote: Option<u8>, cleanup: &[Cleanup]) {
        self.spans.clear();
        self.owned.clear();
        if self.cleanup != cleanup {
            self.cleanup = cleanup.to_vec();
        }
        let b = line.as_bytes();
        if self.split_unquoted(b, delim, quote) {
            return;
        }
        self.spans.clear();
        let mut i = 0;
        loop {
            // Skip leading blanks only to find an opening quote; otherwise the field starts at i.
            let mut q = i;
            while q < b.len() && (b[q] == b' ' || b[q] == b'\t') {
                q += 1;
            }
            if quote.is_some_and(|qc| q < b.len() && b[q] == qc) {
                let qc = quote.unwrap_or(b'"');
                let start = self.owned.len();
                let mut j = q + 1;
                let mut seg = j;
                loop {
                    match memchr::memchr(qc, &b[j..]) {
                        Some(p) => {
                            let at = j + p;
                            if b.get(at + 1) == Some(&qc) {
                                self.owned.push_str(&line[seg..=at]);
                                j = at + 2;
                                seg = j;
                            } else {
                                self.owned.push_str(&line[seg..at]);
                                j = at + 1;
                                break;
                            }
                        }
                        None => {
                            // An unterminated quote: the rest of the line is the field.
                            self.owned.push_str(&line[seg..]);
                            j = b.len();
                            break;
                        }
                    }
                }
                // Text between the closing quote and the delimiter is kept (lenient).
                let next = memchr::memchr(delim, &b[j..]).map(|p| j + p);
                let end_txt = next.unwrap_or(b.len());
                self.owned.push_str(&line[j..end_txt]);
                self.spans
                    .push((start as u32, self.owned.len() as u32, true));
                match next {
                    Some(n) => i = n + 1,
                    None => return,
                }
            } else {
                let next = memchr::memchr(delim, &b[i..]).map(|p| i + p);
                let end = next.unwrap_or(b.len());
                self.spans.push((i as u32, end as u32, false));
                match next {
                    Some(n) => i = n + 1,
                    None => return,
                }
            }
        }
    }
}

/// A field index no slot reads.
const NO_SLOT: u32 = u32::MAX;

/// Which fields of a line the plan reads, and where it finds them: slot `i` holds field
/// `field_of[i]`; `slot_of[f]` is field `f`'s slot or `NO_SLOT`.
#[derive(Default)]
struct Slots {
    field_of: Vec<usize>,
    slot_of: Vec<u32>,
    /// For each field index `k`, the first field at or after `k` that is read (`NO_SLOT`:
    /// none), so that the split steps over runs of unread fields without visiting them.
    next_read: Vec<u32>,
}

impl Slots {
    fn new(field_of: Vec<usize>, fields: usize) -> Self {
        let mut slot_of = vec![NO_SLOT; fields];
        for (slot, &f) in field_of.iter().enumerate() {
            if let Some(s) = slot_of.get_mut(f) {
                *s = slot as u32;
            }
        }
        let mut next_read = vec![NO_SLOT; fields];
        let mut next = NO_SLOT;
        for k in (0..fields).rev() {
            if slot_of[k] != NO_SLOT {
                next = k as u32;
            }
            next_read[k] = next;
        }
        Self {
            field_of,
            slot_of,
            next_read,
        }
    }
}

/// Walks the fields of a line without quotes, a block of bytes at a time: `field(k, start,
/// end)` for each, in order; returns the number of fields, or `None` as soon as a quote shows
/// (the fields seen so far are then to be thrown away). With `next_read` (see [`Slots`]),
/// `field` may be skipped for fields no slot reads: a block whose delimiters all end unread
/// fields is only counted.
#[inline]
fn walk_unquoted(
    b: &[u8],
    delim: u8,
    quote: Option<u8>,
    next_read: Option<&[u32]>,
    mut field: impl FnMut(usize, usize, usize),
) -> Option<usize> {
    let (mut start, mut k) = (0usize, 0usize);
    let (blocks, tail) = b.as_chunks::<{ block::LEN }>();
    let finder = block::Finder::new(delim, quote);
    for (w, c) in blocks.iter().enumerate() {
        let (m, quotes) = finder.masks(c);
        if quotes != 0 {
            return None;
        }
        block_fields(m, w * block::LEN, next_read, &mut k, &mut start, &mut field);
    }
    // The last bytes, padded to a block with a byte that is neither delimiter nor quote.
    if !tail.is_empty() {
        let pad = (0u8..3)
            .find(|&p| p != delim && Some(p) != quote)
            .unwrap_or(0);
        let mut last = [pad; block::LEN];
        last[..tail.len()].copy_from_slice(tail);
        let (m, quotes) = finder.masks(&last);
        if quotes != 0 {
            return None;
        }
        block_fields(
            m,
            b.len() - tail.len(),
            next_read,
            &mut k,
            &mut start,
            &mut field,
        );
    }
    field(k, start, b.len());
    Some(k + 1)
}

/// The fields that end in one block (`m`: its delimiters, the block starting at byte `base`),
/// `k` and `start` carried from block to block; see [`walk_unquoted`].
#[inline(always)]
fn block_fields(
    mut m: u32,
    base: usize,
    next_read: Option<&[u32]>,
    k: &mut usize,
    start: &mut usize,
    field: &mut impl FnMut(usize, usize, usize),
) {
    if m == 0 {
        return;
    }
    if let Some(next) = next_read {
        let count = block::count(m);
        let read = next.get(*k).map_or(usize::MAX, |&n| n as usize);
        if read >= *k + count {
            *k += count;
            *start = base + (31 - m.leading_zeros() as usize) + 1;
            return;
        }
    }
    while m != 0 {
        let at = base + m.trailing_zeros() as usize;
        field(*k, *start, at);
        *k += 1;
        *start = at + 1;
        m &= m - 1;
    }
}

/// Finds a line's delimiters and quotes a block at a time: bit `i` of a mask is byte `i`.
/// SSE2 (part of every x86-64) compares 16 bytes at once.
#[cfg(target_arch = "x86_64")]
mod block {
    use safe_arch::{cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i, move_mask_i8_m128i};

    pub(super) const LEN: usize = 16;

    /// Set bits in a block's mask, by table: baseline x86-64 has no `popcnt`.
    #[inline(always)]
    pub(super) fn count(m: u32) -> usize {
        const ONES: [u8; 256] = {
            let mut t = [0u8; 256];
            let mut i = 0;
            while i < 256 {
                t[i] = (i as u32).count_ones() as u8;
                i += 1;
            }
            t
        };
        usize::from(ONES[(m & 0xff) as usize]) + usize::from(ONES[((m >> 8) & 0xff) as usize])
    }

    pub(super) struct Finder {
        delim: m128i,
        quote: Option<m128i>,
    }

    impl Finder {
        pub(super) fn new(delim: u8, quote: Option<u8>) -> Self {
            let splat = |c: u8| safe_arch::set_splat_i8_m128i(i8::from_ne_bytes([c]));
            Self {
                delim: splat(delim),
                quote: quote.map(splat),
            }
        }

        /// (delimiters, quotes) in `b`.
        #[inline(always)]
        pub(super) fn masks(&self, b: &[u8; LEN]) -> (u32, u32) {
            let v = load_unaligned_m128i(b);
            let mask = |c: m128i| move_mask_i8_m128i(cmp_eq_mask_i8_m128i(v, c)) as u32;
            (mask(self.delim), self.quote.map_or(0, mask))
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
use swar as block;

/// Elsewhere, eight bytes in a `u64` (SWAR); on x86-64 built only to be tested against SSE2.
#[cfg(any(test, not(target_arch = "x86_64")))]
mod swar {
    pub(super) const LEN: usize = 8;

    #[inline(always)]
    pub(super) fn count(m: u32) -> usize {
        m.count_ones() as usize
    }

    pub(super) struct Finder {
        delim: u8,
        quote: Option<u8>,
    }

    impl Finder {
        pub(super) fn new(delim: u8, quote: Option<u8>) -> Self {
            Self { delim, quote }
        }

        /// (delimiters, quotes) in `b`.
        #[inline(always)]
        pub(super) fn masks(&self, b: &[u8; LEN]) -> (u32, u32) {
            let x = u64::from_le_bytes(*b);
            (
                bits(eq_mask(x, self.delim)),
                self.quote.map_or(0, |q| bits(eq_mask(x, q))),
            )
        }
    }

    /// Bytes equal to `c` in `w`: the high bit of each such byte is set, exactly (no borrow
    /// crosses bytes).
    #[inline(always)]
    fn eq_mask(w: u64, c: u8) -> u64 {
        const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
        let x = w ^ (0x0101_0101_0101_0101 * u64::from(c));
        !(((x & LOW7) + LOW7) | x | LOW7)
    }

    /// The high bit of byte `i` moved to bit `i`: each byte's bit lands in the top byte of the
    /// product, at its own place, with no carries.
    #[inline(always)]
    fn bits(m: u64) -> u32 {
        ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    }
}

impl Fields {
    /// The common case, a line without quotes: fields lie between delimiters. Returns false,
    /// having split nothing for sure, when a quote is present.
    fn split_unquoted(&mut self, b: &[u8], delim: u8, quote: Option<u8>) -> bool {
        let spans = &mut self.spans;
        walk_unquoted(b, delim, quote, None, |_, s, e| {
            spans.push((s as u32, e as u32, false))
        })
        .is_some()
    }
}

/// The cleanups that change anything: trimming removes trailing tabs wherever it stands in
/// the list (a leading backtick is the only other edit, and it is at the other end), so
/// `strip_trailing_tab` beside `trim` only walks the field's end a second time.
fn effective_cleanup(cleanup: &[Cleanup]) -> Vec<Cleanup> {
    let trims = cleanup.contains(&Cleanup::Trim);
    cleanup
        .iter()
        .copied()
        .filter(|c| !(trims && *c == Cleanup::StripTrailingTab))
        .collect()
}

/// Narrows `text[s..e]` by the cleanups; returns the new bounds.
#[inline(always)]
fn clean(text: &str, s: usize, e: usize, cleanup: &[Cleanup]) -> (usize, usize) {
    let b = text.as_bytes();
    // Most fields need nothing: every cleanup only removes blanks (all at or below b' ') or
    // a leading backtick.
    if let (Some(&f), Some(&l)) = (b.get(s), b.get(e.wrapping_sub(1))) {
        if s < e && f > b' ' && f != b'`' && l > b' ' {
            return (s, e);
        }
    }
    if cleanup.is_empty() {
        return (s, e);
    }
    clean_edges(b, s, e, cleanup)
}

/// The cleanups of a field with a blank or a backtick at an edge, or an empty one.
#[inline(never)]
fn clean_edges(b: &[u8], mut s: usize, mut e: usize, cleanup: &[Cleanup]) -> (usize, usize) {
    for c in cleanup {
        match c {
            Cleanup::Trim => {
                while s < e && b[s].is_ascii_whitespace() {
                    s += 1;
                }
                while e > s && b[e - 1].is_ascii_whitespace() {
                    e -= 1;
                }
            }
            Cleanup::StripTrailingTab => {
                while e > s && b[e - 1] == b'\t' {
                    e -= 1;
                }
            }
            Cleanup::StripBacktick => {
                if s < e && b[s] == b'`' {
                    s += 1;
                }
            }
        }
    }
    (s, e)
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

fn delimited<R: Read>(
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

pub(crate) fn template_zone(t: &Template) -> chrono_tz::Tz {
    t.columns
        .get("txn_time")
        .and_then(|c| c.time_zone.as_deref())
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

pub(crate) fn reject(
    out: &mut RowWriter,
    stats: &mut NormalizeStats,
    target: &Target<'_>,
    source: &str,
    line: i64,
    why: &str,
    raw: &str,
) -> Result<()> {
    out.reject(line, why, raw)?;
    stats.rows_rejected += 1;
    if stats.rows_rejected > target.max_rejected {
        return Err(Error::BadInput(format!(
            "{source}: more than {} rows rejected (max_rejected_rows); the last, line {line}: {why}",
            target.max_rejected
        )));
    }
    Ok(())
}

fn not_encoded(
    t: &Template,
    source: &str,
    line: i64,
    enc: &'static encoding_rs::Encoding,
    bytes: &[u8],
) -> Error {
    Error::BadInput(format!(
        "{source}, line {line}: the header row is not valid {} ({} declares it){}",
        enc.name(),
        t.at("encoding"),
        encoding_hint(enc, bytes)
    ))
}

/// A hint when the bytes look like another encoding than the declared one.
fn encoding_hint(enc: &'static encoding_rs::Encoding, bytes: &[u8]) -> String {
    let ascii = bytes.is_ascii();
    if enc != encoding_rs::UTF_8 && !ascii && std::str::from_utf8(bytes).is_ok() {
        "; the file looks like UTF-8".into()
    } else if enc == encoding_rs::UTF_8
        && !ascii
        && std::str::from_utf8(bytes).is_err()
        && encoding_rs::GB18030
            .decode_without_bom_handling_and_without_replacement(bytes)
            .is_some()
    {
        "; the file looks like GBK/GB18030".into()
    } else {
        String::new()
    }
}

fn capture(re: &Regex, line: &str, values: &mut HashMap<String, String>) {
    if let Some(caps) = re.captures(line) {
        for name in re.capture_names().flatten() {
            if let Some(m) = caps.name(name) {
                values.insert(name.to_string(), m.as_str().to_string());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn summary_values(
    t: &Template,
    s: &super::template::Summary,
    member: &str,
    text: &str,
    delim: u8,
    quote: Option<u8>,
    cleanup: &[Cleanup],
    values: &mut HashMap<String, String>,
) -> Result<()> {
    let start = s.start.as_deref().map(|r| t.regex(r)).transpose()?;
    let row = t.regex(&s.row)?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    if let Some(start) = &start {
        if !lines.by_ref().any(|l| start.is_match(l)) {
            return Err(Error::BadInput(format!(
                "summary {member}: no line matches {:?} ({})",
                start.as_str(),
                t.at("[totals.summary]")
            )));
        }
    }
    let header = lines
        .by_ref()
        .find(|l| !l.trim().is_empty() && (start.is_some() || !l.starts_with('#')))
        .unwrap_or("");
    let Some(total) = lines.find(|l| row.is_match(l)) else {
        return Err(Error::BadInput(format!(
            "summary {member}: no totals row matches {:?} ({})",
            row.as_str(),
            t.at("[totals.summary]")
        )));
    };
    let (mut h, mut v) = (Fields::default(), Fields::default());
    h.split(header, delim, quote, cleanup);
    v.split(total, delim, quote, cleanup);
    for (n, x) in h.to_vec(header).into_iter().zip(v.to_vec(total)) {
        values.entry(n).or_insert(x);
    }
    Ok(())
}

/// Compares each check with the bill's value; a missing value or a difference fails the file.
pub(crate) fn finish_totals(
    t: &Template,
    checks: &[CheckAcc],
    values: &HashMap<String, String>,
    source: &str,
    stats: &mut NormalizeStats,
) -> Result<()> {
    for c in checks {
        let skip = |why: String| TotalsResult {
            value: c.value.clone(),
            expected: String::new(),
            parsed: String::new(),
            ok: true,
            skipped: Some(why),
        };
        if let Some(col) = &c.absent_column {
            stats
                .totals
                .push(skip(format!("the body has no column {col:?}")));
            continue;
        }
        let Some(expected) = values.get(&c.value) else {
            if c.optional {
                stats
                    .totals
                    .push(skip("the bill states no such total".into()));
                continue;
            }
            return Err(Error::BadInput(format!(
                "{source}: the bill's totals have no value {:?} ({}): the tail or summary is missing or changed",
                c.value,
                t.at(&format!("\"{}\"", c.value))
            )));
        };
        let (parsed, ok) = if c.is_sum() {
            let sum = c.sum_text();
            // The bill's total is written the way its amounts are.
            let ok = c.unknown == 0 && c.parse_total(expected.trim()).is_ok_and(|w| w == c.sum);
            let parsed = if c.unknown > 0 {
                format!("{sum} (+{} rows with unreadable amounts)", c.unknown)
            } else {
                sum
            };
            (parsed, ok)
        } else {
            let want: String = expected.chars().filter(char::is_ascii_digit).collect();
            let ok = !want.is_empty()
                && expected
                    .trim()
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '.' || ch == ' ')
                && want.parse::<u64>().is_ok_and(|w| w == c.count);
            (c.count.to_string(), ok)
        };
        stats.totals.push(TotalsResult {
            value: c.value.clone(),
            expected: expected.clone(),
            parsed,
            ok,
            skipped: None,
        });
    }
    if let Some(bad) = stats.totals.iter().find(|c| !c.ok) {
        return Err(Error::BadInput(format!(
            "{source}: totals check failed: the bill says {} = {}, parsed {} ({})",
            bad.value,
            bad.expected,
            bad.parsed,
            t.at(&format!("\"{}\"", bad.value))
        )));
    }
    Ok(())
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

    fn split(line: &str, cleanup: &[Cleanup]) -> Vec<String> {
        let mut f = Fields::default();
        f.split(line, b',', Some(b'"'), cleanup);
        f.to_vec(line)
    }

    #[test]
    fn split_cleans_backticks_quotes_and_tabs() {
        assert_eq!(
            split(
                "`a, \"b,c\" ,`d\t",
                &[Cleanup::Trim, Cleanup::StripBacktick]
            ),
            vec!["a", "b,c", "d"]
        );
        assert_eq!(
            split("x\t,\"he said \"\"hi\"\"\",", &[Cleanup::StripTrailingTab]),
            vec!["x", "he said \"hi\"", ""]
        );
        assert_eq!(split("\"open,end", &[]), vec!["open,end"]);
        assert_eq!(split("", &[]), vec![""]);
    }

    #[test]
    fn the_word_at_a_time_split_agrees_with_a_plain_split() {
        // Delimiters at every offset of an 8-byte word, runs of them, multibyte text, and a
        // quote found only in the last word or in the bytes after it.
        let mut lines: Vec<String> = (0..40)
            .map(|n| {
                (0..n)
                    .map(|i| {
                        if i % 3 == 0 {
                            ","
                        } else if i % 5 == 0 {
                            "交易"
                        } else {
                            "x"
                        }
                    })
                    .collect()
            })
            .collect();
        lines.push(",,,,,,,,,,,,,,,,,".into());
        lines.push("2088,交易,,12.30\t,`abc".into());
        for line in &lines {
            let want: Vec<&str> = line.split(',').collect();
            assert_eq!(split(line, &[]), want, "{line:?}");
        }
        assert_eq!(
            split("aaaaaaaaaaaaaaa,\"b,c\"", &[]),
            vec!["aaaaaaaaaaaaaaa", "b,c"]
        );
        assert_eq!(split("aaaaaaaa,\"b,c\"", &[]), vec!["aaaaaaaa", "b,c"]);
    }

    #[cfg(target_arch = "x86_64")]
    proptest::proptest! {
        /// The portable finder marks the same bytes as the SSE2 one, and both count them alike.
        #[test]
        fn swar_and_sse2_find_the_same_bytes(
            bytes in proptest::array::uniform16(proptest::prop_oneof![
                proptest::prelude::Just(b','), proptest::prelude::Just(b'"'), 0u8..=255u8,
            ]),
            delim in proptest::prop_oneof![proptest::prelude::Just(b','), 0u8..=255u8],
            quote in proptest::option::of(proptest::prop_oneof![proptest::prelude::Just(b'"'), 0u8..=255u8]),
        ) {
            let sse2 = block::Finder::new(delim, quote).masks(&bytes);
            let swar = swar::Finder::new(delim, quote);
            let (lo, hi) = bytes.split_at(8);
            let (mut d, mut q) = (0u32, 0u32);
            for (half, shift) in [(lo, 0), (hi, 8)] {
                let mut word = [0u8; 8];
                word.copy_from_slice(half);
                let (hd, hq) = swar.masks(&word);
                d |= hd << shift;
                q |= hq << shift;
            }
            let want = |c: Option<u8>| {
                bytes.iter().enumerate().fold(0u32, |m, (i, &b)| m | (u32::from(Some(b) == c) << i))
            };
            proptest::prop_assert_eq!((d, q), (want(Some(delim)), want(quote)));
            proptest::prop_assert_eq!(sse2, (d, q));
            proptest::prop_assert_eq!(block::count(sse2.0), swar::count(d));
        }
    }

    proptest::proptest! {
        /// Dropping `strip_trailing_tab` beside `trim` changes no field, in any order of the
        /// cleanups.
        #[test]
        fn the_effective_cleanup_cleans_as_the_template_says(
            field in "[ \t`x]{0,8}",
            steps in proptest::collection::vec(proptest::sample::select(vec![
                Cleanup::Trim, Cleanup::StripTrailingTab, Cleanup::StripBacktick,
            ]), 0..5),
        ) {
            let kept = effective_cleanup(&steps);
            let (s, e) = clean(&field, 0, field.len(), &steps);
            let (ks, ke) = clean(&field, 0, field.len(), &kept);
            proptest::prop_assert_eq!(&field[s..e], &field[ks..ke], "{:?} → {:?}", steps, kept);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// The split that reads only some fields (stepping over words of unread ones) gives
        /// each read field as the full split does, and the same field count.
        #[test]
        fn reading_some_fields_agrees_with_the_full_split(
            line in "[,x交 \t\"]{0,90}",
            read in proptest::collection::vec(0usize..16, 0..6),
            header in 1usize..16,
        ) {
            let cleanup = [Cleanup::StripTrailingTab, Cleanup::Trim];
            let mut field_of: Vec<usize> = Vec::new();
            for f in read {
                if f < header && !field_of.contains(&f) {
                    field_of.push(f);
                }
            }
            let slots = Slots::new(field_of.clone(), header);
            let mut full = Fields::default();
            full.split(&line, b',', Some(b'"'), &cleanup);
            let want: Vec<String> = field_of.iter().map(|&f| full.get(&line, f).to_string()).collect();
            let mut fields = Fields::default();
            let mut spans = Vec::new();
            let (n, rec) = fields.split_into(&line, b',', Some(b'"'), &cleanup, &slots, &mut spans);
            let got: Vec<String> = (0..field_of.len()).map(|i| rec.field(i).to_string()).collect();
            proptest::prop_assert_eq!(n, full.len());
            proptest::prop_assert_eq!(got, want);
        }
    }
}
