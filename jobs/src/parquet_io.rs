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

/// Rows per row group of a part file of a routed partition: a merge of many parts holds a
/// row group of each at once, so they are kept small.
pub const PART_ROW_GROUP_ROWS: usize = 8_192;

/// `writer_props` for the part files a merge reads back ([`PART_ROW_GROUP_ROWS`]).
pub fn part_props() -> WriterProperties {
    props_builder()
        .set_max_row_group_row_count(Some(PART_ROW_GROUP_ROWS))
        .build()
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

/// `batch` as the bytes of a Parquet file written with `props` (a small file, whole).
pub fn to_bytes(batch: &RecordBatch, props: WriterProperties) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut w = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(bytes)
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

/// Writes a Parquet file as [`ArrowWriter`] writes one batch of all its rows, to the byte,
/// while holding one column of one row group at a time: a row group's columns are given one
/// by one, each whole (so every column is encoded in the chunks and pages one batch gives).
/// The file of a day's differences is written so without the day's rows in memory.
pub struct ColumnWise<W: std::io::Write + Send> {
    file: datafusion::parquet::file::writer::SerializedFileWriter<W>,
    columns: datafusion::parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory,
    arrow: SchemaRef,
    group_rows: usize,
}

impl<W: std::io::Write + Send> ColumnWise<W> {
    /// The writer `ArrowWriter` would be, with its file's metadata (the Arrow schema).
    pub fn try_new(w: W, arrow: SchemaRef, props: WriterProperties) -> Result<Self> {
        let group_rows = props.max_row_group_row_count().unwrap_or(usize::MAX);
        let (file, columns) =
            ArrowWriter::try_new(w, arrow.clone(), Some(props))?.into_serialized_writer()?;
        Ok(Self {
            file,
            columns,
            arrow,
            group_rows,
        })
    }

    /// The most rows of a row group.
    pub fn group_rows(&self) -> usize {
        self.group_rows
    }

    /// Writes a row group; `column(i)` gives all its values of column `i`, in order.
    pub fn write_group(
        &mut self,
        mut column: impl FnMut(usize) -> Result<datafusion::arrow::array::ArrayRef>,
    ) -> Result<()> {
        let mut group = self.group()?;
        for i in 0..self.arrow.fields().len() {
            group.column(&column(i)?)?;
        }
        self.append(group)
    }

    /// A row group's encoder: give it each column in turn, then [`ColumnWise::append`] it.
    pub fn group(&self) -> Result<GroupEncoder> {
        let index = self.file.flushed_row_groups().len();
        let writers = self.columns.create_column_writers(index)?;
        Ok(GroupEncoder {
            arrow: self.arrow.clone(),
            writers: writers.into_iter().collect(),
            chunks: Vec::new(),
        })
    }

    /// Appends an encoded row group (every column given).
    pub fn append(&mut self, group: GroupEncoder) -> Result<()> {
        if group.chunks.len() != self.file.schema_descr().num_columns() {
            return Err(crate::error::Error::Other(format!(
                "a row group of {} columns, not {}",
                group.chunks.len(),
                self.file.schema_descr().num_columns()
            )));
        }
        let mut out = self.file.next_row_group()?;
        for chunk in group.chunks {
            chunk.append_to_row_group(&mut out)?;
        }
        out.close()?;
        self.file
            .flush()
            .map_err(|e| crate::error::Error::Other(e.to_string()))?;
        Ok(())
    }

    /// What was written so far (for a writer that hands its bytes on as they come).
    pub fn inner_mut(&mut self) -> &mut W {
        self.file.inner_mut()
    }

    /// Writes the footer; returns the writer.
    pub fn finish(self) -> Result<W> {
        Ok(self.file.into_inner()?)
    }
}

/// The columns of one row group, encoded one at a time ([`ColumnWise::group`]).
pub struct GroupEncoder {
    arrow: SchemaRef,
    writers:
        std::collections::VecDeque<datafusion::parquet::arrow::arrow_writer::ArrowColumnWriter>,
    chunks: Vec<datafusion::parquet::arrow::arrow_writer::ArrowColumnChunk>,
}

impl GroupEncoder {
    /// Encodes the next column, whole.
    pub fn column(&mut self, values: &datafusion::arrow::array::ArrayRef) -> Result<()> {
        use datafusion::parquet::arrow::arrow_writer::compute_leaves;
        let i = self.chunks.len();
        let field = self.arrow.fields().get(i).ok_or_else(|| {
            crate::error::Error::Other(format!("a row group has {i} columns, no more"))
        })?;
        for leaf in compute_leaves(field, values)? {
            let mut w = self.writers.pop_front().ok_or_else(|| {
                crate::error::Error::Other(format!("no column writer for {}", field.name()))
            })?;
            w.write(&leaf)?;
            self.chunks.push(w.close()?);
        }
        Ok(())
    }

    /// The place of the next column.
    pub fn next_column(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// Rows with NULLs in one column, none in another, long and repeated strings.
    fn rows(n: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("sparse", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let id: ArrayRef =
            Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            })));
        let sparse: ArrayRef =
            Arc::new(StringArray::from_iter((0..n).map(|i| {
                (i % 7 == 0).then(|| format!("reason {} {}", i % 13, "x".repeat(i % 50)))
            })));
        let num: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n).map(|i| i as i64 * 3)));
        RecordBatch::try_new(schema, vec![id, sparse, num]).expect("test")
    }

    #[test]
    fn column_wise_writes_the_bytes_of_one_batch() {
        let all = rows(70_001);
        for props in [
            writer_props(),
            props_builder()
                .set_max_row_group_row_count(Some(30_000))
                .build(),
        ] {
            let mut one = Vec::new();
            let mut w =
                ArrowWriter::try_new(&mut one, all.schema(), Some(props.clone())).expect("test");
            w.write(&all).expect("test");
            w.close().expect("test");

            let mut cw = ColumnWise::try_new(Vec::new(), all.schema(), props).expect("test");
            let per = cw.group_rows();
            let mut start = 0;
            while start < all.num_rows() {
                let len = per.min(all.num_rows() - start);
                let group = all.slice(start, len);
                cw.write_group(|i| Ok(group.column(i).clone()))
                    .expect("test");
                start += len;
            }
            let bytes = cw.finish().expect("test");
            assert_eq!(bytes.len(), one.len());
            assert!(bytes == one, "the bytes differ");
        }
    }
}
