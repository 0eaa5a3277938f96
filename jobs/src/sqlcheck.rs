//! `reckon sql check`: every SQL file parsed, refused if it is anything but one query, and
//! planned against the tables the job gives it, without data. Each problem names the file,
//! the line and the column.

use std::fmt;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use regex::Regex;

use crate::config::{Channel, Config, WarehouseFormat};
use crate::contracts;
use crate::error::{Error, Result};
use crate::objstore::Location;
use crate::sql::{plan_query, PlanError, SqlDir, FILES};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The file, as `SqlDir::read` names it.
    pub file: String,
    /// 1-based; 0 when the problem is the file's as a whole.
    pub line: u64,
    /// 1-based; 0 when unknown.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file, self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
        }
    }
}

/// What was checked in one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file.
    pub file: String,
    /// How far the check got: "planned against …" or why it was only parsed.
    pub checked: String,
    /// The problems; empty when the file is fine.
    pub findings: Vec<Finding>,
}

/// Checks every SQL file of `dir`. With `config`, `platform.sql` is planned against the
/// warehouse's own tables (their schemas only: a partition's Parquet footer or a Delta log).
pub async fn check(dir: &SqlDir, config: Option<&Config>) -> Result<Vec<FileReport>> {
    let mut out = Vec::new();
    for (name, _) in FILES {
        let (text, origin) = dir.read(name)?;
        let ctx = context();
        let mut findings = statements(&text, &origin);
        let checked = if !findings.is_empty() {
            "parsed".to_string()
        } else {
            let Inputs {
                tables,
                params,
                wanted,
                note,
            } = match *name {
                "reconcile.sql" => reconcile_inputs(config)?,
                _ => platform_inputs(&ctx, config).await?,
            };
            match tables {
                None => note,
                Some(tables) => {
                    for (t, s) in &tables {
                        let empty = MemTable::try_new(s.clone(), vec![vec![]])?;
                        ctx.register_table(*t, Arc::new(empty))?;
                    }
                    findings.extend(plan(&ctx, &text, &origin, params, &wanted).await);
                    format!(
                        "planned against {}",
                        tables
                            .iter()
                            .map(|(t, _)| *t)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
        };
        out.push(FileReport {
            file: origin,
            checked,
            findings,
        });
    }
    Ok(out)
}

/// A session with reckon's UDFs whose planner keeps the source spans of names.
fn context() -> SessionContext {
    crate::engine::analyst_context(
        SessionConfig::new().set_bool("datafusion.sql_parser.collect_spans", true),
    )
}

/// The columns a file's output must have, each with the type it must cast to (`None`: any).
type Wanted = Vec<(String, Option<datafusion::arrow::datatypes::DataType>)>;

/// What a file is planned against.
struct Inputs {
    /// The tables it reads and their schemas; `None`: not plannable here (see `note`).
    tables: Option<Vec<(&'static str, SchemaRef)>>,
    params: ParamValues,
    wanted: Wanted,
    note: String,
}

/// The tables `reconcile.sql` reads (the canonical schemas), its parameters as the job binds
/// them, and the output columns the job reads.
fn reconcile_inputs(config: Option<&Config>) -> Result<Inputs> {
    let channel = match config.and_then(|c| c.channels.first()) {
        Some(c) => c.clone(),
        None => sample_channel()?,
    };
    let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
    let params = contracts::reconcile::params(&channel, day);
    let wanted = contracts::reconcile::OUTPUT_COLUMNS
        .iter()
        .map(|c| (c.to_string(), None))
        .collect();
    Ok(Inputs {
        tables: Some(contracts::reconcile::tables()),
        params: params.into(),
        wanted,
        note: String::new(),
    })
}

fn sample_channel() -> Result<Channel> {
    Channel::with_rules("check", "").map_err(|e| Error::Other(format!("sample channel: {e}")))
}

/// The tables `platform.sql` reads are the user's own: with a config, their schemas are read
/// from the warehouse (a partition's footer, a Delta log); without one it is only parsed.
async fn platform_inputs(ctx: &SessionContext, config: Option<&Config>) -> Result<Inputs> {
    let wanted: Wanted = contracts::platform::output()
        .fields()
        .iter()
        .filter(|f| f.name() != "snapshot_row")
        .filter(|f| !contracts::platform::OPTIONAL.contains(&f.name().as_str()))
        .map(|f| (f.name().clone(), Some(f.data_type().clone())))
        .collect();
    let params = contracts::platform::params("check", 0, 86_400_000_000).into();
    let unplanned = |params, wanted, note: &str| {
        Ok(Inputs {
            tables: None,
            params,
            wanted,
            note: format!("parsed; not planned: {note}"),
        })
    };
    let Some(config) = config else {
        return unplanned(
            params,
            wanted,
            "its tables are your warehouse's (give --config to plan it against them)",
        );
    };
    let wh = &config.warehouse;
    if wh.postgres.is_some() {
        return unplanned(
            params,
            wanted,
            "the warehouse is PostgreSQL (`reckon stage collect` plans it on the day's snapshot)",
        );
    }
    let mut tables = Vec::new();
    for (name, location) in [("orders", &wh.orders), ("refunds", &wh.refunds)] {
        let what = format!("warehouse.{name}");
        let table = Location::parse(&config.locator(), &what, location)?;
        table.register(ctx);
        let schema = match wh.format {
            WarehouseFormat::Delta => {
                let t = crate::delta::open(&what, &table).await?;
                let provider = t.table_provider().await?;
                provider.schema()
            }
            WarehouseFormat::Parquet => {
                let newest = table.partitions(&wh.partition_column).await?.pop();
                let Some(part) = newest else {
                    return Err(Error::NotReady(format!(
                        "{what} ({}) has no partition {}=… to read a schema from",
                        table.display(),
                        wh.partition_column
                    )));
                };
                crate::engine::register_dirs(ctx, "__schema", &[part]).await?;
                let s = ctx.table("__schema").await?.schema().inner().clone();
                ctx.deregister_table("__schema")?;
                s
            }
        };
        tables.push((name, schema));
    }
    Ok(Inputs {
        tables: Some(tables),
        params,
        wanted,
        note: String::new(),
    })
}

/// One query per file, and nothing but a query.
fn statements(text: &str, origin: &str) -> Vec<Finding> {
    let at = |line, column, message: String| Finding {
        file: origin.to_string(),
        line,
        column,
        message,
    };
    let parsed = match DFParser::parse_sql(text) {
        Ok(s) => s,
        Err(e) => {
            let m = e.to_string();
            // A query cut short is reported at its end.
            let end = || {
                m.contains("found: EOF")
                    .then(|| (text.lines().count() as u64, 0))
            };
            let (l, c) = position_in(&m).or_else(end).unwrap_or((0, 0));
            return vec![at(l, c, format!("syntax: {e}"))];
        }
    };
    let mut out = Vec::new();
    for (i, stmt) in parsed.iter().enumerate() {
        let kind = match stmt {
            DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => None,
            DfStatement::Statement(s) => Some(statement_kind(&s.to_string())),
            DfStatement::CopyTo(_) => Some("COPY".to_string()),
            DfStatement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE".to_string()),
            other => Some(statement_kind(&other.to_string())),
        };
        let (l, c) = keyword_position(text, i);
        if let Some(kind) = kind {
            out.push(at(
                l,
                c,
                format!(
                    "{kind} is not allowed: a reckon SQL file is one query (SELECT or WITH); \
                     DDL, DML, COPY and SET are refused"
                ),
            ));
        } else if i > 0 {
            out.push(at(
                l,
                c,
                "a second statement: a reckon SQL file is one query".to_string(),
            ));
        }
    }
    if parsed.is_empty() {
        out.push(at(0, 0, "no query in the file".into()));
    }
    out
}

/// The statement's leading keywords (`CREATE TABLE`, `INSERT`, `SET`).
fn statement_kind(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second, ..]
            if first.eq_ignore_ascii_case("CREATE") || first.eq_ignore_ascii_case("DROP") =>
        {
            format!("{} {}", first.to_uppercase(), second.to_uppercase())
        }
        [first, ..] => first.to_uppercase(),
        [] => "an empty statement".into(),
    }
}

/// Where statement `index` starts: the first word after `index` semicolons, outside comments.
fn keyword_position(text: &str, index: usize) -> (u64, u64) {
    let mut seen = 0;
    for (n, line) in text.lines().enumerate() {
        let code = line.split("--").next().unwrap_or("");
        let mut from = 0;
        if seen < index {
            for (pos, ch) in code.char_indices() {
                if ch == ';' {
                    seen += 1;
                    from = pos + 1;
                    if seen == index {
                        break;
                    }
                }
            }
            if seen < index {
                continue;
            }
        }
        if let Some(off) = code[from..].find(|c: char| !c.is_whitespace() && c != ';') {
            return (
                n as u64 + 1,
                (code[..from + off].chars().count() + 1) as u64,
            );
        }
    }
    (0, 0)
}

/// `Line: 3, Column: 14` in a parser's message.
fn position_in(message: &str) -> Option<(u64, u64)> {
    let re = Regex::new(r"[Ll]ine: (\d+), [Cc]olumn:? (\d+)").ok()?;
    let c = re.captures(message)?;
    Some((c[1].parse().ok()?, c[2].parse().ok()?))
}

/// Plans `text` with `params` and checks its output columns.
async fn plan(
    ctx: &SessionContext,
    text: &str,
    origin: &str,
    params: ParamValues,
    wanted: &Wanted,
) -> Vec<Finding> {
    let located = |e: &DataFusionError| -> Finding {
        let (line, column) = e
            .iter()
            .find_map(|e| e.diagnostic().and_then(|d| d.span))
            .map(|s| (s.start.line, s.start.column))
            .or_else(|| position_in(&e.to_string()))
            .or_else(|| name_position(text, &e.to_string()))
            .unwrap_or((0, 0));
        Finding {
            file: origin.to_string(),
            line,
            column,
            message: first_line(&e.to_string()),
        }
    };
    let df = match plan_query(ctx, text, params).await {
        Ok(df) => df,
        Err(PlanError::Query(e)) => return vec![located(&e)],
        Err(PlanError::Params(e)) => {
            let mut f = located(&e);
            f.message = format!("binding parameters: {}", f.message);
            return vec![f];
        }
    };
    let schema = df.schema();
    let mut out = Vec::new();
    for (name, to) in wanted {
        match schema.field_with_unqualified_name(name) {
            Err(_) => out.push(Finding {
                file: origin.to_string(),
                line: 0,
                column: 0,
                message: format!("the query's output has no column {name:?}, which the job reads"),
            }),
            Ok(f) => {
                if let Some(to) = to {
                    if !can_cast_types(f.data_type(), to) {
                        out.push(Finding {
                            file: origin.to_string(),
                            line: 0,
                            column: 0,
                            message: format!(
                                "output column {name:?} is {} and cannot become {to}",
                                f.data_type()
                            ),
                        });
                    }
                }
            }
        }
    }
    out
}

/// DataFusion's messages can run to a plan dump; the first line says what is wrong.
fn first_line(m: &str) -> String {
    m.lines().next().unwrap_or(m).to_string()
}

/// Where the name an error message quotes (`No field named foo`) first occurs in the text,
/// outside comments.
fn name_position(text: &str, message: &str) -> Option<(u64, u64)> {
    let re = Regex::new(r#"(?:field named|table|function|column) ['"`]?([A-Za-z_][A-Za-z0-9_.]*)"#)
        .ok()?;
    let name = re.captures(message)?.get(1)?.as_str();
    let name = name.rsplit('.').next().unwrap_or(name);
    let word = Regex::new(&format!(r"\b{}\b", regex::escape(name))).ok()?;
    for (n, line) in text.lines().enumerate() {
        let code = line.split("--").next().unwrap_or("");
        if let Some(m) = word.find(code) {
            return Some((n as u64 + 1, (code[..m.start()].chars().count() + 1) as u64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_other_than_one_query_are_refused_where_they_are() {
        assert!(statements("-- a comment\nSELECT 1", "f.sql").is_empty());
        let f = statements("-- rules\n\n  CREATE TABLE t AS SELECT 1", "f.sql");
        assert_eq!((f[0].line, f[0].column), (3, 3), "{f:?}");
        assert!(
            f[0].message.starts_with("CREATE TABLE is not allowed"),
            "{f:?}"
        );
        let f = statements(
            "SELECT 1;\nSET datafusion.execution.batch_size = 1",
            "f.sql",
        );
        assert_eq!(f[0].line, 2, "{f:?}");
        assert!(f[0].message.starts_with("SET"), "{f:?}");
        let f = statements("SELECT 1;\nSELECT 2", "f.sql");
        assert!(f[0].message.contains("second statement"), "{f:?}");
        let f = statements("COPY (SELECT 1) TO 'x.csv'", "f.sql");
        assert!(f[0].message.starts_with("COPY"), "{f:?}");
        let f = statements("INSERT INTO t VALUES (1)", "f.sql");
        assert!(f[0].message.starts_with("INSERT"), "{f:?}");
        let f = statements("SELECT (1", "f.sql");
        assert!(
            f[0].message.starts_with("syntax") && f[0].line == 1,
            "{f:?}"
        );
        let f = statements("SELECT a\nFROM t WHERE )", "f.sql");
        assert_eq!((f[0].line, f[0].column), (2, 14), "{f:?}");
    }
}
