//! The analysts' SQL files, read at run time so an edit needs no rebuild, and run with named
//! parameters bound by the job (never spliced into the text).

use std::path::{Path, PathBuf};

use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};

/// The SQL files a job runs, and the built-in copies the binary carries.
pub const FILES: &[(&str, &str)] = &[
    ("platform.sql", include_str!("../../sql/platform.sql")),
    ("reconcile.sql", include_str!("../../sql/reconcile.sql")),
];

/// Where the SQL comes from.
#[derive(Debug, Clone)]
pub struct SqlDir {
    /// The folder, or `None` for the built-in copies.
    pub dir: Option<PathBuf>,
}

impl SqlDir {
    /// `sql_dir` from the config, else `sql/` beside the config file, else the built-in copies.
    pub fn for_config(config: &Config) -> Result<SqlDir> {
        if let Some(d) = &config.sql_dir {
            let dir = config.resolve("sql_dir", d).map_err(Error::Config)?;
            if !dir.is_dir() {
                return Err(Error::Config(format!(
                    "sql_dir {} is not a directory",
                    dir.display()
                )));
            }
            return Ok(SqlDir { dir: Some(dir) });
        }
        let beside = config.base_dir.join("sql");
        if beside.join("reconcile.sql").is_file() {
            return Ok(SqlDir { dir: Some(beside) });
        }
        tracing::warn!("no sql/ beside the config and no sql_dir: using the SQL built into reckon");
        Ok(SqlDir { dir: None })
    }

    /// The text of `name`, and where it came from.
    pub fn read(&self, name: &str) -> Result<(String, String)> {
        match &self.dir {
            Some(d) => {
                let p = d.join(name);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    Error::Config(format!("cannot read SQL file {}: {e}", p.display()))
                })?;
                Ok((text, p.display().to_string()))
            }
            None => FILES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| ((*t).to_string(), format!("built-in sql/{name}")))
                .ok_or_else(|| Error::Config(format!("no SQL file {name}"))),
        }
    }

    /// SHA-256 of the text of `name`.
    pub fn hash(&self, name: &str) -> Result<String> {
        let (text, _) = self.read(name)?;
        Ok(hex::encode(Sha256::digest(text.as_bytes())))
    }
}

/// Writes the built-in SQL files into `dir` (for a generated data set's own copy).
pub fn write_builtin(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, text) in FILES {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// The options analyst SQL runs under: queries only; DDL, DML, COPY and SET are refused.
pub fn analyst_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Which step of planning failed, with DataFusion's error (its diagnostic spans intact).
pub enum PlanError {
    /// Parsing or planning the query.
    Query(DataFusionError),
    /// Binding the parameters.
    Params(DataFusionError),
}

/// Plans `text` under the analyst options with `params` bound.
pub async fn plan_query(
    ctx: &SessionContext,
    text: &str,
    params: ParamValues,
) -> std::result::Result<DataFrame, PlanError> {
    let df = ctx
        .sql_with_options(text, analyst_options())
        .await
        .map_err(PlanError::Query)?;
    df.with_param_values(params).map_err(PlanError::Params)
}

/// Plans `text` (from `origin`) with `params` bound; errors name the file.
pub async fn plan(
    ctx: &SessionContext,
    text: &str,
    origin: &str,
    params: ParamValues,
) -> Result<DataFrame> {
    plan_query(ctx, text, params).await.map_err(|e| match e {
        PlanError::Query(e) => Error::Config(format!("{origin}: {e}")),
        PlanError::Params(e) => Error::Config(format!("{origin}: binding parameters: {e}")),
    })
}
