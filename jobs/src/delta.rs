//! Delta Lake tables as the warehouse. The table's transaction log says which Parquet files
//! are live and which partition each is in, so the day's partitions D-1, D and D+1 are found
//! without listing a directory; the scan reads only those files.

use std::sync::{Arc, Once};

use chrono::NaiveDate;
use datafusion::prelude::{col, lit, SessionContext};

use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, FilterOp, FilterValue};
use url::Url;

use crate::error::{Error, Result};
use crate::objstore::Location;

/// What was read of one Delta table, for the manifest.
#[derive(Debug, Clone)]
pub struct DeltaRead {
    /// The table version read (a rerun reads the latest; this says which one it was).
    pub version: u64,
    /// Live files in the partitions read.
    pub files: usize,
    /// Live files in the bill date's own partition.
    pub files_of_day: usize,
}

/// The table's URL: `file:///abs/path/` or `s3://bucket/prefix/`.
fn table_url(location: &Location) -> Result<Url> {
    match location {
        Location::Local(p) => {
            let abs = std::fs::canonicalize(p)
                .map_err(|e| Error::Config(format!("no Delta table at {}: {e}", p.display())))?;
            Url::from_directory_path(&abs)
                .map_err(|_| Error::Config(format!("{} is not a directory path", abs.display())))
        }
        Location::Remote { root, prefix, .. } => Url::parse(&format!("{root}{prefix}/"))
            .map_err(|e| Error::Config(format!("{}: {e}", location.display()))),
    }
}

fn delta_error(what: &str, location: &Location, e: DeltaTableError) -> Error {
    match e {
        DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_) => {
            Error::Config(format!(
                "{what} = {:?}: not a Delta table (no _delta_log): {e}",
                location.display()
            ))
        }
        DeltaTableError::ObjectStore { .. } => {
            // The store could not be read: worth a retry.
            Error::Unavailable(format!("{what} ({}): {e}", location.display()))
        }
        other => Error::Other(format!("{what} ({}): {other}", location.display())),
    }
}

/// Reads the transaction log of a table on S3 through the store reckon built (no AWS SDK, no
/// locking table: reckon only reads Delta tables there).
struct S3LogStores;

impl deltalake::logstore::LogStoreFactory for S3LogStores {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(scheme) = Url::parse("s3://") {
            deltalake::logstore::logstore_factories().insert(scheme, Arc::new(S3LogStores));
        }
    });
}

/// Opens the Delta table at `location` (its latest version).
pub async fn open(what: &str, location: &Location) -> Result<DeltaTable> {
    let url = table_url(location)?;
    let mut builder =
        DeltaTableBuilder::from_url(url.clone()).map_err(|e| delta_error(what, location, e))?;
    if let Location::Remote { store, .. } = location {
        register_s3();
        // The same S3 client (endpoint, region, credentials) as every other s3:// location.
        builder = builder.with_storage_backend(store.clone(), url);
    }
    builder
        .load()
        .await
        .map_err(|e| delta_error(what, location, e))
}

/// Registers `name` in `ctx` as the Delta table at `location`, restricted to the partitions
/// `partition_column` = each of `days`.
pub async fn register(
    ctx: &SessionContext,
    what: &str,
    name: &str,
    location: &Location,
    partition_column: &str,
    days: &[NaiveDate],
    day: NaiveDate,
) -> Result<DeltaRead> {
    let table = open(what, location).await?;
    let version = table.version().unwrap_or_default();
    let has_column = table
        .snapshot()
        .map_err(|e| delta_error(what, location, e))?
        .schema()
        .fields()
        .any(|f| f.name() == partition_column);
    if !has_column {
        return Err(Error::Config(format!(
            "{what} = {:?}: the Delta table has no column {partition_column:?} \
             (warehouse.partition_column)",
            location.display()
        )));
    }
    let texts: Vec<String> = days.iter().map(|d| d.to_string()).collect();
    let mut files = 0;
    let mut files_of_day = 0;
    for (d, text) in days.iter().zip(&texts) {
        let filter = (
            partition_column,
            FilterOp::Eq,
            FilterValue::Scalar(text.as_str()),
        );
        let n = table
            .get_file_uris_by_partitions(&[filter])
            .await
            .map_err(|e| delta_error(what, location, e))?
            .len();
        files += n;
        if *d == day {
            files_of_day = n;
        }
    }
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| delta_error(what, location, e))?;
    let provider = table.table_provider().await?;
    let inner = format!("{name}__delta");
    ctx.deregister_table(&inner)?;
    ctx.register_table(&inner, provider)?;
    // The filter on the partition column reaches the Delta scan, which keeps only the files
    // whose partition values match: the other days are never opened.
    let view = ctx
        .table(&inner)
        .await?
        .filter(
            col(partition_column).in_list(texts.iter().map(|t| lit(t.as_str())).collect(), false),
        )?
        .into_view();
    ctx.deregister_table(name)?;
    ctx.register_table(name, view)?;
    Ok(DeltaRead {
        version,
        files,
        files_of_day,
    })
}
