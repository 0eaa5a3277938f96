//! A bill template: the declarative description of one channel's file format and version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Templates shipped with reckon, built into the binary so it runs from anywhere.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "alipay_trade_v1",
        include_str!("../../../formats/alipay_trade_v1.toml"),
    ),
    (
        "wechat_trade_v3",
        include_str!("../../../formats/wechat_trade_v3.toml"),
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
    /// Where the rows are.
    pub body: Body,
    /// Canonical column → how to fill it.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// The bill's own totals, checked against what was parsed.
    pub totals: Option<Totals>,
    /// Where the template came from (file or built-in name), for error messages.
    #[serde(skip)]
    pub origin: String,
}

/// The container and text encoding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// `plain` or `zip`.
    pub kind: ContainerKind,
    /// For `zip`: a regex the wanted member's name matches (exactly one member must).
    pub member: Option<String>,
    /// `utf-8`, `gbk` or `gb18030`.
    #[serde(default = "utf8")]
    pub encoding: String,
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
}

/// The body: the header row, the data rows and the markers around them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// A regex for the line just before the header row; absent: the first line is the header.
    pub start: Option<String>,
    /// A regex for the line that ends the data rows. Required: a bill without it is truncated.
    pub end: String,
    /// Field separator (one character).
    #[serde(default = "comma")]
    pub delimiter: String,
    /// Cleanups applied to every field, in order: `trim`, `strip_backtick`.
    #[serde(default)]
    pub cleanup: Vec<Cleanup>,
}

fn comma() -> String {
    ",".into()
}

/// A per-field cleanup step.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Remove surrounding whitespace (spaces, tabs).
    Trim,
    /// Remove one leading backtick (WeChat Pay marks every field with one).
    StripBacktick,
}

/// How one canonical column is filled.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The source column (matched by header name).
    pub source: Option<String>,
    /// The source column on refund rows, when it differs.
    pub refund_source: Option<String>,
    /// A constant instead of a source column.
    pub value: Option<String>,
    /// A constant on refund rows.
    pub refund_value: Option<String>,
    /// Value mappings (`交易` → `PAY`); values not listed pass through unchanged.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Decimals: take the absolute value (the sign lives in `txn_type`).
    #[serde(default)]
    pub abs: bool,
    /// Timestamps: the chrono format of the text.
    pub format: Option<String>,
    /// Timestamps: the zone the text is in.
    pub time_zone: Option<String>,
}

/// Where the bill's totals are and what they must equal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Regexes over the tail lines; their named captures become values.
    #[serde(default)]
    pub lines: Vec<String>,
    /// The end marker line is the header of a one-row totals table that follows it.
    #[serde(default)]
    pub table_after_end: bool,
    /// The checks.
    #[serde(rename = "check", default)]
    pub checks: Vec<TotalsCheck>,
}

/// One total: a named value of the bill against a count or sum of what was parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsCheck {
    /// The value's name (a regex capture or a totals-table column).
    pub value: String,
    /// `count` for a row count, or `sum` of `column`.
    pub aggregate: Aggregate,
    /// The source column summed (for `sum`).
    pub column: Option<String>,
    /// Only rows whose source `when_column` equals `when_equals`.
    pub when_column: Option<String>,
    /// See `when_column`.
    pub when_equals: Option<String>,
}

/// A totals aggregate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Number of rows.
    Count,
    /// Sum of a decimal column, as written (signs kept).
    Sum,
}

/// The canonical columns a template may fill, and which must be filled.
pub const CANONICAL: &[(&str, bool)] = &[
    ("txn_type", true),
    ("channel_txn_id", false),
    ("merchant_order_id", false),
    ("refund_id", false),
    ("amount", true),
    ("fee", false),
    ("status", true),
    ("txn_time", true),
];

impl Template {
    /// A built-in template by name, or a template file by path.
    pub fn load(name_or_path: &str, search_dir: Option<&Path>) -> Result<Template> {
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
        Template::parse(&text, &origin)
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
        t.check()?;
        Ok(t)
    }

    fn check(&self) -> Result<()> {
        let bad = |what: String| Error::Config(format!("template {}: {what}", self.origin));
        for (name, required) in CANONICAL {
            match self.columns.get(*name) {
                None if *required => {
                    return Err(bad(format!("[columns.{name}] is required")));
                }
                Some(c) if c.source.is_none() && c.value.is_none() => {
                    return Err(bad(format!("[columns.{name}] needs `source` or `value`")));
                }
                _ => {}
            }
        }
        if let Some(extra) = self
            .columns
            .keys()
            .find(|k| !CANONICAL.iter().any(|(n, _)| n == k))
        {
            return Err(bad(format!(
                "[columns.{extra}] is not a canonical column (known: {})",
                CANONICAL
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(c) = self.columns.get("txn_time") {
            if c.format.is_none() {
                return Err(bad("[columns.txn_time] needs `format`".into()));
            }
        }
        if self.body.delimiter.chars().count() != 1 {
            return Err(bad("body.delimiter must be one character".into()));
        }
        if self.container.kind == ContainerKind::Zip && self.container.member.is_none() {
            return Err(bad("a zip container needs `member`".into()));
        }
        self.encoding()?;
        for r in [
            Some(&self.body.end),
            self.body.start.as_ref(),
            self.container.member.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            Regex::new(r).map_err(|e| bad(format!("bad regex {r:?}: {e}")))?;
        }
        if let Some(t) = &self.totals {
            for r in &t.lines {
                Regex::new(r).map_err(|e| bad(format!("bad regex {r:?}: {e}")))?;
            }
            for c in &t.checks {
                if c.aggregate == Aggregate::Sum && c.column.is_none() {
                    return Err(bad(format!(
                        "totals check {:?}: `sum` needs `column`",
                        c.value
                    )));
                }
                if c.when_column.is_some() != c.when_equals.is_some() {
                    return Err(bad(format!(
                        "totals check {:?}: when_column and when_equals go together",
                        c.value
                    )));
                }
            }
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
                "template {}: encoding {other:?} is not one of utf-8, gbk, gb18030",
                self.origin
            ))),
        }
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
}
