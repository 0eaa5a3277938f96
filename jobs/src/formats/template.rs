//! A bill template: the declarative description of one channel's file format and version.
//! `formats/README.md` is the user's guide to every setting here.
//!
//! Over 600 lines: the TOML model is one declaration per setting, each with the doc comment
//! the README mirrors, and the checks name the template line of each mistake; splitting the
//! model from its checks would part each setting from what it may hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Templates shipped with reckon, built into the binary so it runs from anywhere.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "alipay_trade_v1",
        include_str!("../../../formats/alipay_trade_v1.toml"),
    ),
    (
        "alipay_fund_v1",
        include_str!("../../../formats/alipay_fund_v1.toml"),
    ),
    (
        "wechat_trade_v3",
        include_str!("../../../formats/wechat_trade_v3.toml"),
    ),
    (
        "wechat_trade_v2",
        include_str!("../../../formats/wechat_trade_v2.toml"),
    ),
    (
        "stripe_balance_v1",
        include_str!("../../../formats/stripe_balance_v1.toml"),
    ),
    (
        "generic_acquirer_v1",
        include_str!("../../../formats/generic_acquirer_v1.toml"),
    ),
    (
        "camt053_v1",
        include_str!("../../../formats/camt053_v1.toml"),
    ),
];

/// One template file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// `channel_kind_vN`.
    pub name: String,
    /// What the format is, for people.
    #[serde(default)]
    pub description: String,
    /// The file around the text.
    pub container: Container,
    /// Where the records are.
    pub body: Body,
    /// Rows that are not transactions to reconcile (payouts, fees): counted, not written.
    #[serde(default)]
    pub skip: Vec<Condition>,
    /// Canonical column → how to fill it.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// The bill's own totals, checked against what was parsed.
    pub totals: Option<Totals>,
    /// Where the template came from (file or built-in name), for error messages.
    #[serde(skip)]
    pub origin: String,
    /// The template's text, to point errors at its lines.
    #[serde(skip)]
    pub text: String,
}

/// The container and text encoding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// `plain`, `zip` or `gzip`.
    pub kind: ContainerKind,
    /// For `zip`: a regex the wanted member's name matches (exactly one member must).
    pub member: Option<String>,
    /// `utf-8`, `gbk` or `gb18030`.
    #[serde(default = "utf8")]
    pub encoding: String,
    /// A UTF-8 byte order mark: `optional` (default), `required` or `forbidden`.
    #[serde(default)]
    pub bom: Bom,
    /// `any` (default: LF or CRLF), `crlf` or `lf`; a file that breaks it fails.
    #[serde(default)]
    pub line_ending: LineEnding,
}

fn utf8() -> String {
    "utf-8".into()
}

/// How the bill is packed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ContainerKind {
    /// The text file itself.
    Plain,
    /// A zip archive holding the text file.
    Zip,
    /// A gzip-compressed text file.
    Gzip,
}

/// What a UTF-8 byte order mark may do.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Bom {
    /// Stripped when present.
    #[default]
    Optional,
    /// Must be present.
    Required,
    /// Must not be present.
    Forbidden,
}

/// The declared line ending.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineEnding {
    /// LF or CRLF.
    #[default]
    Any,
    /// CRLF only.
    Crlf,
    /// LF only.
    Lf,
}

/// The body: delimited text with a header row, or XML records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// `delimited` (default) or `xml`.
    #[serde(default)]
    pub kind: BodyKind,
    /// Delimited: lines before the header row, counted (an alternative to `start`).
    #[serde(default)]
    pub head_lines: usize,
    /// Delimited: a regex for the line just before the header row.
    pub start: Option<String>,
    /// Delimited: a regex for the line that ends the data rows. When set, a bill without it is
    /// truncated and fails; when absent, the rows run to the end of the file.
    pub end: Option<String>,
    /// Delimited: lines in the body starting with one of these are comments, not rows.
    #[serde(default)]
    pub comment: Vec<String>,
    /// Field separator (one character).
    #[serde(default = "comma")]
    pub delimiter: String,
    /// The quote character (one character), or `""` for none.
    #[serde(default = "double_quote")]
    pub quote: String,
    /// Cleanups applied to every field, in order: `trim`, `strip_trailing_tab`,
    /// `strip_backtick`.
    #[serde(default)]
    pub cleanup: Vec<Cleanup>,
    /// XML: the path of the record element, from the root (`Document/BkToCstmrStmt/Stmt/Ntry`).
    pub record: Option<String>,
}

fn comma() -> String {
    ",".into()
}

fn double_quote() -> String {
    "\"".into()
}

/// The body's kind.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// Lines of delimited fields under a header row.
    #[default]
    Delimited,
    /// XML: one record per element at `record`; columns are paths below it.
    Xml,
}

/// A per-field cleanup step.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Remove surrounding whitespace (spaces, tabs).
    Trim,
    /// Remove trailing tabs (Alipay pads fields with one so spreadsheets keep long numbers).
    StripTrailingTab,
    /// Remove one leading backtick (WeChat Pay marks every field with one).
    StripBacktick,
}

/// One name or a list of alternatives (the first present in the header wins).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Names {
    /// One name.
    One(String),
    /// Alternatives, in order.
    Any(Vec<String>),
}

impl Names {
    /// The names, in order.
    pub fn list(&self) -> Vec<&str> {
        match self {
            Names::One(n) => vec![n.as_str()],
            Names::Any(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// How a decimal's sign is made.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// As written.
    #[default]
    Keep,
    /// The absolute value (the direction lives in `txn_type`).
    Abs,
    /// Negated.
    Negate,
}

/// How one canonical column is filled.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The source column (a header name, or an XML path below the record; `Amt@Ccy` reads an
    /// attribute). A list gives alternatives: the first the bill has is used.
    pub source: Option<Names>,
    /// The source column on refund rows, when it differs.
    pub refund_source: Option<Names>,
    /// The bill may lack the source column: the value is then NULL (optional columns only).
    #[serde(default)]
    pub optional: bool,
    /// A constant instead of a source column.
    pub value: Option<String>,
    /// A constant on refund rows.
    pub refund_value: Option<String>,
    /// Value mappings (`交易` → `PAY`); values not listed pass through unchanged.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Decimals: `keep`, `abs` or `negate`.
    #[serde(default)]
    pub sign: Sign,
    /// Decimals: the sign on refund rows, when it differs.
    pub refund_sign: Option<Sign>,
    /// Decimals: the text is in minor units (cents), not major.
    #[serde(default)]
    pub minor_units: bool,
    /// Decimals: a thousands separator to drop (`","` in `1,234.50`).
    pub thousands: Option<String>,
    /// Decimals: the decimal separator when it is not `.` (`","` in `1234,50`).
    pub decimal_point: Option<String>,
    /// Decimals: how a value with a fraction of a cent becomes DECIMAL(18,2): `half_up`
    /// rounds it (half away from zero). Without it such a value rejects its row. Totals are
    /// summed from the exact values either way.
    pub round: Option<Rounding>,
    /// Timestamps: chrono formats of the text, tried in order; `rfc3339`, `unix` (seconds)
    /// and `unix_ms` are also accepted. A date-only format gives midnight.
    pub format: Option<Names>,
    /// Timestamps: the zone the text is in, when it carries no offset.
    pub time_zone: Option<String>,
}

/// How a money value with more than two decimals becomes cents.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// To the nearest cent, a half cent away from zero.
    HalfUp,
}

/// A condition on one source column of a row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The source column (or alternatives, like `source`).
    pub column: Names,
    /// The value equals one of these.
    #[serde(default, rename = "in")]
    pub one_of: Vec<String>,
    /// The value is a decimal other than zero.
    #[serde(default)]
    pub nonzero: bool,
}

/// Where the bill's totals are and what they must equal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Regexes over the lines outside the body (head and tail); named captures become values.
    /// With `lines`, every line after the body's end marker must match one of them or one of
    /// `ignore_lines`: a totals line whose wording changed is an error naming it, never a
    /// check quietly left undone.
    #[serde(default)]
    pub lines: Vec<String>,
    /// Regexes for lines after the body that carry no totals (`^#导出时间：`).
    #[serde(default)]
    pub ignore_lines: Vec<String>,
    /// The end marker line is the header of a one-row totals table that follows it.
    #[serde(default)]
    pub table_after_end: bool,
    /// A summary file next to the bill (a zip member) holding a totals table.
    pub summary: Option<Summary>,
    /// XML: value name → path from the root (`Document/BkToCstmrStmt/Stmt/TxsSummry/…`).
    #[serde(default)]
    pub paths: BTreeMap<String, String>,
    /// The checks.
    #[serde(rename = "check", default)]
    pub checks: Vec<TotalsCheck>,
}

/// A totals table in another zip member: a header row after `start`, and the row matching
/// `row`; each header name becomes a value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// A regex for the member's name.
    pub member: String,
    /// A regex for the line before the header row; absent: the first line not starting with
    /// `#` is the header.
    pub start: Option<String>,
    /// A regex the totals row matches (`^合计`).
    pub row: String,
}

/// One total: a named value of the bill against a count or sum of what was parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsCheck {
    /// The value's name (a regex capture, a totals-table column or an XML path's name).
    pub value: String,
    /// `count` for a row count, or `sum` of `column`.
    pub aggregate: Aggregate,
    /// The source column summed (for `sum`).
    pub column: Option<String>,
    /// Sum absolute values.
    #[serde(default)]
    pub abs: bool,
    /// A bill without this value (or, for `sum`, without the column) skips the check instead
    /// of failing; the skip is recorded with its reason in the totals results.
    #[serde(default)]
    pub optional: bool,
    /// Only rows meeting this condition.
    pub when: Option<Condition>,
}

/// A totals aggregate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Number of rows.
    Count,
    /// Sum of a decimal column, as written (signs kept unless `abs`).
    Sum,
}

/// What a canonical column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text.
    Text,
    /// Money, DECIMAL(18,2).
    Money,
    /// An instant.
    Time,
}

/// The canonical columns a template may fill: name, required, kind.
pub const CANONICAL: &[(&str, bool, Kind)] = &[
    ("txn_type", true, Kind::Text),
    ("channel_txn_id", false, Kind::Text),
    ("merchant_order_id", false, Kind::Text),
    ("refund_id", false, Kind::Text),
    ("amount", true, Kind::Money),
    ("fee", false, Kind::Money),
    ("status", true, Kind::Text),
    ("txn_time", true, Kind::Time),
    ("received", false, Kind::Money),
    ("merchant_id", false, Kind::Text),
];

impl Template {
    /// A built-in template by name, a template in `search_dir` by name, or a file by path.
    pub fn load(name_or_path: &str, search_dir: Option<&Path>) -> Result<Template> {
        let (origin, text) = Template::source(name_or_path, search_dir)?;
        Template::parse(&text, &origin)
    }

    /// Where [`Template::load`] finds a template, and its text.
    pub fn source(name_or_path: &str, search_dir: Option<&Path>) -> Result<(String, String)> {
        let as_path = PathBuf::from(name_or_path);
        let (origin, text) = if name_or_path.ends_with(".toml") || as_path.is_file() {
            let text = std::fs::read_to_string(&as_path).map_err(|e| {
                Error::Config(format!("cannot read template {}: {e}", as_path.display()))
            })?;
            (as_path.display().to_string(), text)
        } else if let Some(p) = search_dir
            .map(|d| d.join(format!("{name_or_path}.toml")))
            .filter(|p| p.is_file())
        {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Error::Config(format!("cannot read template {}: {e}", p.display())))?;
            (p.display().to_string(), text)
        } else if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            (format!("formats/{name_or_path}.toml"), (*text).to_string())
        } else {
            let known: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            return Err(Error::Config(format!(
                "unknown bill format {name_or_path:?}: not a template file, and the built-in ones are {}",
                known.join(", ")
            )));
        };
        Ok((origin, text))
    }

    /// Parses template text; errors name `origin` and the line.
    pub fn parse(text: &str, origin: &str) -> Result<Template> {
        let mut t: Template = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            match line {
                Some(l) => Error::Config(format!("template {origin}, line {l}: {}", e.message())),
                None => Error::Config(format!("template {origin}: {e}")),
            }
        })?;
        t.origin = origin.to_string();
        t.text = text.to_string();
        t.check()?;
        Ok(t)
    }

    /// `template F, line N` for the first line of the template containing `needle`.
    pub fn at(&self, needle: &str) -> String {
        match self
            .text
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
        {
            Some(n) => format!("template {}, line {n}", self.origin),
            None => format!("template {}", self.origin),
        }
    }

    /// `template F, line N` for a canonical column's table.
    pub fn at_column(&self, name: &str) -> String {
        self.at(&format!("[columns.{name}]"))
    }

    fn check(&self) -> Result<()> {
        let bad = |at: String, what: String| Error::Config(format!("{at}: {what}"));
        for (name, required, kind) in CANONICAL {
            match self.columns.get(*name) {
                None if *required => {
                    return Err(bad(
                        format!("template {}", self.origin),
                        format!("[columns.{name}] is required"),
                    ));
                }
                Some(c) if c.source.is_none() && c.value.is_none() => {
                    return Err(bad(
                        self.at_column(name),
                        format!("[columns.{name}] needs `source` or `value`"),
                    ));
                }
                Some(c) => {
                    if *kind == Kind::Time && c.format.is_none() && c.value.is_none() {
                        return Err(bad(
                            self.at_column(name),
                            format!("[columns.{name}] needs `format`"),
                        ));
                    }
                    if let Some(z) = &c.time_zone {
                        if z.parse::<chrono_tz::Tz>().is_err() {
                            return Err(bad(
                                self.at(&format!("\"{z}\"")),
                                format!(
                                    "unknown time zone {z:?} (an IANA name such as Asia/Shanghai)"
                                ),
                            ));
                        }
                    }
                    for (what, v) in [
                        ("thousands", &c.thousands),
                        ("decimal_point", &c.decimal_point),
                    ] {
                        if v.as_ref().is_some_and(|s| s.len() != 1 || !s.is_ascii()) {
                            return Err(bad(
                                self.at_column(name),
                                format!("[columns.{name}] {what} must be one ASCII character"),
                            ));
                        }
                    }
                }
                None => {}
            }
        }
        if let Some(extra) = self
            .columns
            .keys()
            .find(|k| !CANONICAL.iter().any(|(n, _, _)| n == k))
        {
            return Err(bad(
                self.at_column(extra),
                format!(
                    "[columns.{extra}] is not a canonical column (known: {})",
                    CANONICAL
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let one_char = |what: &str, v: &str, empty_ok: bool| -> Result<()> {
            let n = v.chars().count();
            if n == 1 && v.is_ascii() || (empty_ok && n == 0) {
                Ok(())
            } else {
                Err(bad(
                    self.at(&format!("{what} =")),
                    format!(
                        "body.{what} must be one ASCII character{}",
                        if empty_ok { " or empty" } else { "" }
                    ),
                ))
            }
        };
        one_char("delimiter", &self.body.delimiter, false)?;
        one_char("quote", &self.body.quote, true)?;
        if self.container.kind == ContainerKind::Zip && self.container.member.is_none() {
            return Err(bad(
                self.at("[container]"),
                "a zip container needs `member`".into(),
            ));
        }
        self.encoding()?;
        match self.body.kind {
            BodyKind::Xml => {
                if self.body.record.is_none() {
                    return Err(bad(self.at("[body]"), "an xml body needs `record`".into()));
                }
                if self.encoding()? != encoding_rs::UTF_8 {
                    return Err(bad(
                        self.at("encoding"),
                        "an xml body is read as UTF-8".into(),
                    ));
                }
            }
            BodyKind::Delimited => {
                if self.body.start.is_some() && self.body.head_lines > 0 {
                    return Err(bad(
                        self.at("head_lines"),
                        "body.start and body.head_lines exclude each other".into(),
                    ));
                }
            }
        }
        let mut regexes: Vec<&String> = [
            self.body.end.as_ref(),
            self.body.start.as_ref(),
            self.container.member.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(t) = &self.totals {
            regexes.extend(t.lines.iter());
            if let Some(s) = &t.summary {
                regexes.push(&s.member);
                regexes.push(&s.row);
                regexes.extend(s.start.iter());
            }
            if t.table_after_end && self.body.end.is_none() {
                return Err(bad(
                    self.at("table_after_end"),
                    "table_after_end needs body.end".into(),
                ));
            }
            for c in &t.checks {
                let at = self.at(&format!("\"{}\"", c.value));
                if c.aggregate == Aggregate::Sum && c.column.is_none() {
                    return Err(bad(
                        at,
                        format!("totals check {:?}: `sum` needs `column`", c.value),
                    ));
                }
            }
        }
        for r in regexes {
            Regex::new(r).map_err(|e| bad(self.at(r), format!("bad regex {r:?}: {e}")))?;
        }
        Ok(())
    }

    /// The text encoding.
    pub fn encoding(&self) -> Result<&'static encoding_rs::Encoding> {
        match self.container.encoding.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(encoding_rs::UTF_8),
            "gbk" => Ok(encoding_rs::GBK),
            "gb18030" => Ok(encoding_rs::GB18030),
            other => Err(Error::Config(format!(
                "{}: encoding {other:?} is not one of utf-8, gbk, gb18030",
                self.at("encoding")
            ))),
        }
    }

    /// A regex the template declared (already checked by `parse`).
    pub fn regex(&self, r: &str) -> Result<Regex> {
        Regex::new(r).map_err(|e| Error::Config(format!("{}: {e}", self.at(r))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_parse() {
        for (name, _) in BUILT_IN {
            Template::load(name, None).expect(name);
        }
    }

    #[test]
    fn a_template_error_names_the_file_and_line() {
        let text = "name = \"x\"\n[container]\nkind = \"tarball\"\n";
        let e = Template::parse(text, "formats/x.toml").expect_err("bad kind");
        let msg = e.to_string();
        assert!(
            msg.contains("formats/x.toml") && msg.contains("line 3"),
            "{msg}"
        );
    }

    #[test]
    fn a_semantic_error_names_the_line_of_the_setting() {
        let text = "name = \"x\"\n[container]\nkind = \"plain\"\n[body]\n\n[columns.txn_type]\nvalue = \"PAY\"\n[columns.amount]\nsource = \"a\"\n[columns.status]\nvalue = \"S\"\n[columns.txn_time]\nsource = \"t\"\ntime_zone = \"Mars/Olympus\"\nformat = \"%Y\"\n";
        let msg = Template::parse(text, "x.toml")
            .expect_err("bad zone")
            .to_string();
        assert!(
            msg.contains("line 14") && msg.contains("Mars/Olympus"),
            "{msg}"
        );
    }
}
