//! One line split into fields, 16 bytes at a time (SSE2 through `safe_arch` on x86-64, eight
//! with SWAR elsewhere), quoted fields unescaped, blocks of fields nobody reads only counted;
//! the template's cleanups applied when a field is read.
//!
//! Over 600 lines because of its property tests (the last 135), which hold the SSE2 and SWAR
//! splits and the partial reads to a plain split: they belong beside the code they pin.

use super::rows::Record;
use super::template::Cleanup;

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
pub(super) struct LineRecord<'a> {
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
    pub(super) fn record<'a>(
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
    pub(super) fn split_into<'a>(
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
pub(super) struct Slots {
    pub(super) field_of: Vec<usize>,
    slot_of: Vec<u32>,
    /// For each field index `k`, the first field at or after `k` that is read (`NO_SLOT`:
    /// none), so that the split steps over runs of unread fields without visiting them.
    next_read: Vec<u32>,
}

impl Slots {
    pub(super) fn new(field_of: Vec<usize>, fields: usize) -> Self {
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
pub(super) fn effective_cleanup(cleanup: &[Cleanup]) -> Vec<Cleanup> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
