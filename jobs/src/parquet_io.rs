//! Parquet reading and writing helpers shared by the stages.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{IoContext, Result};

/// One set of writer properties for every file reckon writes: zstd, and no creation time so
/// the same rows give the same bytes.
pub fn writer_props() -> WriterProperties {
    props_builder().build()
}

fn props_builder() -> datafusion::parquet::file::properties::WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_created_by("reckon".into())
}

/// `writer_props` for a file whose `unique` columns hold (nearly) distinct values: ids and
/// times gain nothing from a dictionary and cost its hashing. `encodings` name a column's
/// encoding (no dictionary either): delta encodings for ordered numbers and shared prefixes. The `opaque` ones (random ids)
/// get no min/max statistics either: no filter can prune on them, and comparing every value
/// costs as much as compressing it.
pub fn writer_props_unique(
    unique: &[&str],
    opaque: &[&str],
    encodings: &[(&str, datafusion::parquet::basic::Encoding)],
) -> WriterProperties {
    use datafusion::parquet::basic::Encoding;
    use datafusion::parquet::file::properties::EnabledStatistics;
    use datafusion::parquet::file::properties::WriterVersion;
    use datafusion::parquet::schema::types::ColumnPath;
    // Version 2 data pages compress the values straight into the page buffer; version 1
    // pages copy them into a buffer first and grow the compressed one (a copy of the whole
    // page, under mimalloc), about 160 instructions a row of a bill. Version 2 also changes
    // the encoding a column without a dictionary falls back to: plain is kept.
    let b = unique
        .iter()
        .fold(props_builder(), |b, c| {
            b.set_column_dictionary_enabled(ColumnPath::from(*c), false)
                .set_column_encoding(ColumnPath::from(*c), Encoding::PLAIN)
        })
        .set_writer_version(WriterVersion::PARQUET_2_0);
    let b = encodings.iter().fold(b, |b, (c, e)| {
        b.set_column_dictionary_enabled(ColumnPath::from(*c), false)
            .set_column_encoding(ColumnPath::from(*c), *e)
    });
    opaque
        .iter()
        .fold(b, |b, c| {
            b.set_column_statistics_enabled(ColumnPath::from(*c), EnabledStatistics::None)
        })
        .build()
}

/// Writes `batches` to `path` (creating its folder) in one Parquet file.
pub fn write_file(path: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let f = File::create(path).at(path)?;
    let mut w = ArrowWriter::try_new(f, schema, Some(writer_props()))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(())
}

/// Reads a whole Parquet file; for small files (labels, carry-over, test checks).
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let f = File::open(path).at(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)?.build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Rows in a Parquet file, from its footer.
pub fn row_count(path: &Path) -> Result<u64> {
    let f = File::open(path).at(path)?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f)?;
    Ok(b.metadata().file_metadata().num_rows().max(0) as u64)
}
