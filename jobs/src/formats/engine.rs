//! The streaming template engine's entry points: opens the container (plain, zip, gzip) and
//! hands the bill to its body's reader (`delimited`, `xml`), record by record, never whole;
//! what a normalized file amounted to; rejected rows and encoding hints shared by the readers.
//! The line split is in `split`, the delimited body in `delimited`, the totals in `totals`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use chrono::NaiveDate;
use serde::Serialize;

use super::delimited::delimited;
use super::template::{BodyKind, ContainerKind, Template};
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

/// The first bytes of every gzip file.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether the file at `path` is gzip-compressed (a plain bill may arrive so: WeChat Pay's
/// `tar_type=GZIP`).
pub fn is_gzip(path: &Path) -> Result<bool> {
    let mut head = [0u8; 2];
    let n = File::open(path).at(path)?.read(&mut head).at(path)?;
    Ok(n == 2 && head == GZIP_MAGIC)
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
            if head.starts_with(&GZIP_MAGIC) {
                // The same text gzip-compressed, as WeChat Pay delivers a bill downloaded
                // with `tar_type=GZIP`: no text file starts with these bytes.
                let gz = flate2::read::MultiGzDecoder::new(f);
                return run(
                    template,
                    BufReader::with_capacity(READ_AHEAD, gz),
                    &source,
                    target,
                    None,
                );
            }
            if head.starts_with(b"PK\x03\x04") {
                return Err(Error::BadInput(format!(
                    "{}: the file is zip-compressed, but {} declares a plain file",
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
            if head != GZIP_MAGIC {
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

pub(super) fn not_encoded(
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
pub(super) fn encoding_hint(enc: &'static encoding_rs::Encoding, bytes: &[u8]) -> String {
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
