//! The reconciliation SQL pinned by sqllogictest files: every `sql/tests/*.slt` runs against
//! the repository's `sql/reconcile.sql` and reckon's UDFs, on tables the file fills itself.
//!
//! A file writes rows into `bill`, `platform` and `carry_in` (the canonical schemas, every
//! column nullable, so an INSERT names only the columns it needs), sets the channel's rules
//! with a `PARAMS` statement, and queries `reconciled`: the output of `reconcile.sql` for those
//! rows and rules. `RECKON_SLT_COMPLETE=1` rewrites the expected results of every file from
//! what the SQL gives now (read the diff before committing it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use reckon::config::Channel;
use reckon::sql::SqlDir;
use sqllogictest::{DBOutput, DefaultColumnType};

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql")
}

/// A nullable copy of `s`, so a test row names only the columns it needs.
fn nullable(s: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        s.fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

struct Harness {
    ctx: SessionContext,
    /// The channel's rules (TOML of a `[[channel]]` table) and the bill date.
    rules: Vec<String>,
    bill_date: NaiveDate,
}

impl Harness {
    fn new() -> Result<Self, SltError> {
        let ctx = reckon::engine::analyst_context(datafusion::prelude::SessionConfig::new());
        // The tables reconcile.sql reads, as its contract declares them.
        for (name, schema) in reckon::contracts::reconcile::tables() {
            let table = MemTable::try_new(nullable(&schema), vec![vec![]])
                .map_err(|e| SltError(e.to_string()))?;
            ctx.register_table(name, Arc::new(table))
                .map_err(|e| SltError(e.to_string()))?;
        }
        Ok(Harness {
            ctx,
            rules: Vec::new(),
            bill_date: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default(),
        })
    }

    fn channel(&self) -> Result<Channel, SltError> {
        Channel::with_rules("test", &self.rules.join("\n"))
            .map_err(|e| SltError(format!("PARAMS: {e}")))
    }

    /// `PARAMS bill_date = 2026-11-20, cut_window_secs = 60, time_zone = "UTC"`: the bill
    /// date, and the channel's rules as `reckon.toml` writes them.
    fn set_params(&mut self, text: &str) -> Result<(), SltError> {
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| SltError(format!("PARAMS: {part:?} is not key = value")))?;
            let (key, value) = (key.trim(), value.trim());
            if key == "bill_date" {
                self.bill_date = value
                    .trim_matches('"')
                    .parse()
                    .map_err(|e| SltError(format!("PARAMS bill_date: {e}")))?;
            } else {
                self.rules.retain(|r| !r.starts_with(&format!("{key} =")));
                self.rules.push(format!("{key} = {value}"));
            }
        }
        self.channel().map(|_| ())
    }

    /// Registers `reconciled`: reconcile.sql over the tables as they are now.
    async fn reconcile(&self) -> Result<(), SltError> {
        let params: Vec<(&str, ScalarValue)> =
            reckon::contracts::reconcile::params(&self.channel()?, self.bill_date);
        let dir = SqlDir {
            dir: Some(sql_dir()),
        };
        let (text, origin) = dir
            .read(reckon::contracts::reconcile::FILE)
            .map_err(|e| SltError(e.to_string()))?;
        let df = reckon::sql::plan(&self.ctx, &text, &origin, params.into())
            .await
            .map_err(|e| SltError(e.to_string()))?;
        self.ctx
            .deregister_table("reconciled")
            .map_err(|e| SltError(e.to_string()))?;
        self.ctx
            .register_table("reconciled", df.into_view())
            .map_err(|e| SltError(e.to_string()))?;
        Ok(())
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SltError(e.to_string()))?;
        for row in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let v = f.value(row).to_string();
                        if v.is_empty() {
                            "(empty)".to_string()
                        } else {
                            v
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Harness {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let trimmed = sql.trim();
        if let Some(rest) = trimmed
            .strip_prefix("PARAMS")
            .or_else(|| trimmed.strip_prefix("params"))
        {
            self.set_params(rest)?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if sql.contains("reconciled") {
            self.reconcile().await?;
        }
        let df = self
            .ctx
            .sql(sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let width = df.schema().fields().len();
        let batches = df.collect().await.map_err(|e| SltError(e.to_string()))?;
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "reckon"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(sql_dir().join("tests"))
        .expect("sql/tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_reconciliation_sql_is_pinned_by_its_slt_files() {
    let files = slt_files();
    assert!(!files.is_empty(), "no sql/tests/*.slt");
    let complete = std::env::var("RECKON_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let mut failed = Vec::new();
    for file in &files {
        let mut runner = sqllogictest::Runner::new(|| async { Harness::new() });
        let result = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(false).to_string())
        };
        if let Err(e) = result {
            failed.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Every output column of `reconcile.sql` is described in `sql/README.md`'s table, and every
/// column the README describes is in the output: an analyst reading one reads the other.
#[tokio::test]
async fn every_output_column_is_described_in_the_sql_readme() {
    let h = Harness::new().expect("harness");
    h.reconcile().await.expect("plan");
    let df = h.ctx.table("reconciled").await.expect("reconciled");
    let columns: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let readme = std::fs::read_to_string(sql_dir().join("README.md")).expect("README");
    let section = readme
        .split("## `reconcile.sql`")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the reconcile.sql section");
    // The first cell of each table row names one or more columns: `a`, `b`.
    let described: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let undescribed: Vec<&String> = columns.iter().filter(|c| !described.contains(c)).collect();
    let gone: Vec<&String> = described.iter().filter(|d| !columns.contains(d)).collect();
    assert!(
        undescribed.is_empty() && gone.is_empty(),
        "sql/README.md: output columns not described: {undescribed:?}; described but not in \
         the output: {gone:?}"
    );
}
