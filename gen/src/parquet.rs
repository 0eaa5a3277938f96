//! Parquet as the generated warehouse and labels are written.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{IoContext, Result};

/// Money: exact, two decimals (reckon's canonical money type).
pub const MONEY: DataType = DataType::Decimal128(18, 2);

/// An instant, UTC, microseconds.
pub fn utc_ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A writer of a new Parquet file at `path` (zstd, no writer timestamps: the same rows give
/// the same bytes).
pub fn open_writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_created_by("reckon".into())
        .build();
    Ok(ArrowWriter::try_new(
        File::create(path).at(path)?,
        schema,
        Some(props),
    )?)
}
