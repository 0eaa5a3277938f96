//! The generated warehouse elsewhere: as Delta Lake tables, on S3 (or another folder), or in
//! PostgreSQL; each also points the data set's `reckon.toml` at it.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::kernel::{DataType as DeltaType, StructField};

use crate::error::{Error, IoContext, Result};

/// Every file below `dir`, in order.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `f` relative to `base`, with `/` between parts.
fn rel(base: &Path, f: &Path) -> String {
    f.strip_prefix(base)
        .unwrap_or(f)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A whole Parquet file.
fn read_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let f = std::fs::File::open(path).at(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)?.build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Turns the Hive-partitioned Parquet table in the local directory `dir` into a Delta table
/// in place (the files stay; a `_delta_log` describing them is written). For `reckon
/// generate --warehouse-format delta`.
pub async fn convert_local(dir: &std::path::Path, partition_column: &str) -> Result<()> {
    deltalake::operations::convert_to_delta::ConvertToDeltaBuilder::new()
        .with_location(dir.display().to_string())
        .with_partition_schema([StructField::new(partition_column, DeltaType::STRING, true)])
        .await
        .map_err(|e| Error::Other(format!("converting {} to Delta: {e}", dir.display())))?;
    Ok(())
}

/// Turns the generated warehouse tables into Delta tables in place (each keeps its Parquet
/// files and gains a `_delta_log`) and says so in `OUT/reckon.toml`.
pub async fn warehouse_to_delta(out: &Path) -> Result<()> {
    for table in ["orders", "refunds"] {
        convert_local(&out.join("warehouse").join(table), "dt").await?;
    }
    let config_path = out.join("reckon.toml");
    let text = std::fs::read_to_string(&config_path).at(&config_path)?;
    let text = text.replacen(
        "refunds = \"warehouse/refunds\"\n",
        "refunds = \"warehouse/refunds\"\nformat = \"delta\"\n",
        1,
    );
    std::fs::write(&config_path, text).at(&config_path)
}

/// Moves the generated warehouse (`OUT/warehouse/{orders,refunds}`) to `url` (`s3://…` or a
/// path) and points `OUT/reckon.toml` at it. The endpoint of an S3-compatible server is taken
/// from `AWS_ENDPOINT` / `AWS_ALLOW_HTTP` and written into the config's `[object_store]`.
/// Returns the number of files written.
pub async fn move_warehouse(out: &Path, url: &str) -> Result<usize> {
    let config_path = out.join("reckon.toml");
    let mut text = std::fs::read_to_string(&config_path).at(&config_path)?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return warehouse_to_postgres(out, url, &config_path, text).await;
    }
    let url = url.trim_end_matches('/');
    if url.starts_with("s3://") && !text.contains("[object_store]") {
        let mut section = String::from("\n[object_store]\n");
        if let Ok(e) = std::env::var("AWS_ENDPOINT").or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        {
            section.push_str(&format!("endpoint = {e:?}\n"));
        }
        if std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1") {
            section.push_str("allow_http = true\n");
        }
        let at = text.find("\n[[channel]]").unwrap_or(text.len());
        text.insert_str(at, &section);
    }
    for table in ["orders", "refunds"] {
        text = text.replace(
            &format!("{table} = \"warehouse/{table}\""),
            &format!("{table} = \"{url}/{table}\""),
        );
    }
    std::fs::write(&config_path, &text).at(&config_path)?;
    let local = out.join("warehouse");
    let files = walk(&local);
    match url.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            for f in &files {
                let key = object_store::path::Path::from(
                    format!("{prefix}/{}", rel(&local, f)).trim_start_matches('/'),
                );
                let bytes = std::fs::read(f).at(f)?;
                object_store::ObjectStoreExt::put(&store, &key, bytes.into()).await?;
            }
        }
        None => {
            let dest = Path::new(url.strip_prefix("file://").unwrap_or(url));
            for f in &files {
                let to = dest.join(rel(&local, f));
                if let Some(d) = to.parent() {
                    std::fs::create_dir_all(d).at(d)?;
                }
                std::fs::copy(f, &to).at(&to)?;
            }
        }
    }
    std::fs::remove_dir_all(&local).at(&local)?;
    Ok(files.len())
}

/// The generated warehouse as two new PostgreSQL tables, `orders` and `refunds`.
async fn warehouse_to_postgres(
    out: &Path,
    url: &str,
    config_path: &Path,
    mut text: String,
) -> Result<usize> {
    let local = out.join("warehouse");
    let mut files = 0;
    for table in ["orders", "refunds"] {
        let parts = walk(&local.join(table));
        files += parts.len();
        load_table(url, table, &parts).await?;
        text = text.replace(
            &format!("{table} = \"warehouse/{table}\""),
            &format!("{table} = \"{table}\""),
        );
    }
    let at = text.find("\n[[channel]]").unwrap_or(text.len());
    text.insert_str(
        at,
        &format!("postgres = {{ url = {url:?}, channel_column = \"pay_channel\" }}\n"),
    );
    std::fs::write(config_path, &text).at(config_path)?;
    std::fs::remove_dir_all(&local).at(&local)?;
    Ok(files)
}

/// Loads Parquet files into a new PostgreSQL table `table` (for `reckon generate`): the table is
/// created from the files' schema and must not exist yet. Returns the rows copied.
pub async fn load_table(url: &str, table: &str, files: &[std::path::PathBuf]) -> Result<u64> {
    use futures::SinkExt;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let Some(first) = files.first() else {
        return Ok(0);
    };
    let batches = read_file(first)?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::Other(format!("{} is empty", first.display())))?;
    let cols: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8 => "text",
                DataType::Decimal128(_, _) => "numeric(18,2)",
                DataType::Timestamp(_, _) => "timestamptz",
                DataType::Date32 => "date",
                DataType::Int64 => "bigint",
                DataType::Boolean => "boolean",
                _ => "text",
            };
            Ok(format!("\"{}\" {t}", f.name()))
        })
        .collect::<Result<_>>()?;
    client
        .batch_execute(&format!("CREATE TABLE \"{table}\" ({})", cols.join(", ")))
        .await?;
    let sink = client
        .copy_in(&format!("COPY \"{table}\" FROM STDIN"))
        .await?;
    futures::pin_mut!(sink);
    let mut rows = 0u64;
    for f in files {
        for b in read_file(f)? {
            let text = copy_text(&b)?;
            rows += b.num_rows() as u64;
            sink.send(bytes::Bytes::from(text)).await?;
        }
    }
    sink.finish().await?;
    Ok(rows)
}

/// A batch in COPY's text format.
fn copy_text(b: &RecordBatch) -> Result<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null("\\N");
    let fmts = b
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = String::new();
    for r in 0..b.num_rows() {
        for (i, f) in fmts.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            let v = f.value(r).to_string();
            if b.column(i).is_null(r) {
                out.push_str("\\N");
            } else {
                out.push_str(
                    &v.replace('\\', "\\\\")
                        .replace('\t', "\\t")
                        .replace('\n', "\\n"),
                );
            }
        }
        out.push('\n');
    }
    Ok(out)
}
