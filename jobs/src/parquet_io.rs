//! Parquet reading and writing helpers shared by the stages.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{IoContext, Result};

/// One set of writer properties for every file reckon writes: zstd, and no creation time so
/// the same rows give the same bytes.
pub fn writer_props() -> WriterProperties {
    props_builder().build()
}

/// `writer_props` with `unique` columns (ids: every value distinct) written plain: a
/// dictionary of them is abandoned at its size limit after hashing every value into it.
pub fn writer_props_unique(unique: &[&str]) -> WriterProperties {
    use datafusion::parquet::schema::types::ColumnPath;
    unique
        .iter()
        .fold(props_builder(), |b, c| {
            b.set_column_dictionary_enabled(ColumnPath::from(*c), false)
                .set_column_encoding(ColumnPath::from(*c), Encoding::PLAIN)
        })
        .build()
}

fn props_builder() -> datafusion::parquet::file::properties::WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_created_by("reckon".into())
}

/// How a file's columns depart from `writer_props`, for a file written row by row at speed
/// (a normalized bill).
#[derive(Default)]
pub struct ColumnTuning<'a> {
    /// Columns of (nearly) distinct values, written plain: ids and times gain nothing from a
    /// dictionary and cost its hashing.
    pub unique: &'a [&'a str],
    /// Columns without min/max statistics: no filter prunes on a random id, and comparing
    /// every value costs as much as compressing it.
    pub opaque: &'a [&'a str],
    /// A column's encoding (no dictionary either): delta encodings for ordered numbers and
    /// shared prefixes.
    pub encodings: &'a [(&'a str, Encoding)],
    /// Columns written without compression: numbers delta-packed to their few bits, which
    /// zstd cannot make smaller and would spend most of its time on.
    pub uncompressed: &'a [&'a str],
}

/// Rows in a row group of a tuned file. A version 2 page keeps a buffer the size of its
/// uncompressed values until its row group is written, so a row group costs about its
/// uncompressed size in memory: 256 Ki rows of a bill hold about 25 MB, where the default
/// 1 Mi rows held 50 MB more at the peak than version 1 pages did.
const TUNED_ROW_GROUP_ROWS: usize = 256 * 1024;

/// `writer_props` with `t`'s changes, in version 2 data pages: those compress the values
/// straight into the page buffer, where version 1 pages copy them into a buffer first and
/// grow the compressed one (a copy of the whole page, under mimalloc); about 160
/// instructions a row of a bill. Version 2 also changes the encoding a column without a
/// dictionary falls back to: `unique` columns keep plain.
pub fn writer_props_tuned(t: &ColumnTuning<'_>) -> WriterProperties {
    use datafusion::parquet::file::properties::{EnabledStatistics, WriterVersion};
    use datafusion::parquet::schema::types::ColumnPath;
    let col = |c: &str| ColumnPath::from(c);
    let b = props_builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_max_row_group_row_count(Some(TUNED_ROW_GROUP_ROWS));
    let b = t.unique.iter().fold(b, |b, c| {
        b.set_column_dictionary_enabled(col(c), false)
            .set_column_encoding(col(c), Encoding::PLAIN)
    });
    let b = t.encodings.iter().fold(b, |b, (c, e)| {
        b.set_column_dictionary_enabled(col(c), false)
            .set_column_encoding(col(c), *e)
    });
    let b = t.opaque.iter().fold(b, |b, c| {
        b.set_column_statistics_enabled(col(c), EnabledStatistics::None)
    });
    t.uncompressed
        .iter()
        .fold(b, |b, c| {
            b.set_column_compression(col(c), Compression::UNCOMPRESSED)
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
