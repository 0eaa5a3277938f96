//! collect: the platform's records of the channel-day, from the warehouse's partitions
//! D-1, D and D+1 (by explicit path, or by a Delta table's log; a record's time decides its
//! day), or from a PostgreSQL snapshot, through
//! `sql/platform.sql`, snapshotted to `platform/`.

use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::prelude::ident;
use futures::StreamExt;

use super::{Job, Outcome};
use crate::buckets::BucketWriter;
use crate::config::{PostgresSource, WarehouseFormat};
use crate::contracts;
use crate::engine::register_dirs;
use crate::error::{Error, Result};
use crate::objstore::Location;
use crate::parquet_io::writer_props_unique;
use crate::records::{CollectDetail, Output};
use crate::schema;

/// `batch` with `name` added (or replaced).
fn with_column(batch: &RecordBatch, name: &str, col: ArrayRef) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if f.name() != name {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    fields.push(Field::new(name, col.data_type().clone(), true));
    cols.push(col);
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The partitions a bill date reads: the day before, the day, the day after.
fn days(date: NaiveDate) -> [NaiveDate; 3] {
    [date - Duration::days(1), date, date + Duration::days(1)]
}

/// Snapshots the day's rows of both PostgreSQL tables to `platform_source/` and registers
/// the snapshot; returns what was read.
async fn snapshot_postgres(
    job: &Job<'_>,
    pg: &PostgresSource,
    start: i64,
    end: i64,
    source_files: &mut Vec<crate::store::FileSum>,
) -> Result<Vec<String>> {
    let wh = &job.config.warehouse;
    let staged = job.store.staging("collect-source", job.name(), job.date)?;
    let (from, to) = (
        chrono::DateTime::from_timestamp_micros(start).unwrap_or_default(),
        chrono::DateTime::from_timestamp_micros(end).unwrap_or_default(),
    );
    let mut read = Vec::new();
    for (name, table, time) in [
        ("orders", &wh.orders, &pg.orders_time),
        ("refunds", &wh.refunds, &pg.refunds_time),
    ] {
        let out = staged.join(format!("{name}.parquet"));
        let snap =
            crate::postgres::snapshot(pg, table, time, Some(job.name()), from, to, &out).await?;
        read.push(format!(
            "postgres {table}: {} rows in {} chunks",
            snap.rows, snap.chunks
        ));
    }
    let published = job
        .store
        .publish(&staged, "platform_source", job.name(), job.date)
        .await?;
    for name in ["orders", "refunds"] {
        let file = published
            .iter()
            .find(|f| f.path.ends_with(&format!("/{name}.parquet")))
            .map(|f| job.store.url(&f.path))
            .ok_or_else(|| Error::Other(format!("the {name} snapshot was not published")))?;
        register_dirs(&job.engines.local, name, &[file]).await?;
    }
    source_files.extend(published);
    Ok(read)
}

/// Registers the Delta table `name` restricted to the day's partitions, as its log lists
/// them; returns what was read.
async fn register_delta(
    job: &Job<'_>,
    what: &str,
    name: &str,
    table: &Location,
) -> Result<Vec<String>> {
    let column = &job.config.warehouse.partition_column;
    let days = days(job.date);
    let got = crate::delta::register(
        &job.engines.local,
        what,
        name,
        table,
        column,
        &days,
        job.date,
    )
    .await?;
    if got.files_of_day == 0 && name == "orders" {
        return Err(Error::NotReady(format!(
            "the Delta table {} (version {}) has no files in {column}={} yet",
            table.display(),
            got.version,
            job.date
        )));
    }
    Ok(vec![format!(
        "delta {} version {}: {} files in {column}={}..{}",
        table.display(),
        got.version,
        got.files,
        days[0],
        days[2]
    )])
}

/// Registers the Hive table `name` over the day's partition directories, found by their
/// explicit paths; returns them.
async fn register_parquet(job: &Job<'_>, name: &str, table: &Location) -> Result<Vec<String>> {
    let column = &job.config.warehouse.partition_column;
    let days = days(job.date);
    let mut parts = Vec::new();
    let mut has_day = false;
    for d in days {
        if let Some(url) = table.partition(&format!("{column}={d}")).await? {
            has_day |= d == job.date;
            parts.push(url);
        }
    }
    if !has_day && name == "orders" {
        return Err(Error::NotReady(format!(
            "the warehouse has no partition {column}={} in {} yet",
            job.date,
            table.display()
        )));
    }
    if parts.is_empty() {
        return Err(Error::NotReady(format!(
            "the warehouse table {name} ({}) has no partition among {column}={}..{}",
            table.display(),
            days[0],
            days[2]
        )));
    }
    register_dirs(&job.engines.local, name, &parts).await?;
    Ok(parts)
}

/// Runs the stage.
pub async fn run(job: &Job<'_>) -> Result<Outcome> {
    let wh = &job.config.warehouse;
    let tz = job.channel.rules.tz;
    let start = reckon_udfs::end_of_day_micros(job.date - Duration::days(1), tz);
    let end = reckon_udfs::end_of_day_micros(job.date, tz);
    let (Some(start), Some(end)) = (start, end) else {
        return Err(Error::Config(format!("date {} is out of range", job.date)));
    };
    let mut source_files = Vec::new();
    let read = match &wh.postgres {
        Some(pg) => snapshot_postgres(job, pg, start, end, &mut source_files).await?,
        None => {
            let mut read = Vec::new();
            for (name, location) in [("orders", &wh.orders), ("refunds", &wh.refunds)] {
                let what = format!("warehouse.{name}");
                let table = Location::parse(&job.config.locator(), &what, location)?;
                table.register(&job.engines.local);
                read.extend(match wh.format {
                    WarehouseFormat::Delta => register_delta(job, &what, name, &table).await?,
                    WarehouseFormat::Parquet => register_parquet(job, name, &table).await?,
                });
            }
            read
        }
    };

    let params = contracts::platform::params(job.name(), start, end);
    let (text, origin) = job.sql.read(contracts::platform::FILE)?;
    let df = crate::sql::plan(&job.engines.local, &text, &origin, params.into()).await?;
    // Sorted on every column, so the same warehouse rows give the same snapshot bytes (and
    // run id) however the engine scheduled the scan.
    let present = df.schema().clone();
    // The snapshot in buckets of its match key, as many as its records need (counted first:
    // a scan of the columns the query filters on).
    let counting = std::time::Instant::now();
    let counted = df.clone().count().await? as u64;
    let buckets = crate::buckets::count_for(counted, job.config.bucket_rows());
    tracing::info!(
        records = counted,
        buckets,
        seconds = counting.elapsed().as_secs_f64(),
        "counted the day's records"
    );
    let order = contracts::platform::output()
        .fields()
        .iter()
        .filter(|f| f.name() != "snapshot_row")
        .filter(|f| {
            !contracts::platform::OPTIONAL.contains(&f.name().as_str())
                || present.field_with_unqualified_name(f.name()).is_ok()
        })
        .map(|f| ident(f.name()).sort(true, true))
        .collect::<Vec<_>>();
    let df = df
        .sort(order)
        .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
    let plan = df.create_physical_plan().await?;
    let mut stream =
        datafusion::physical_plan::execute_stream(plan.clone(), job.engines.local.task_ctx())?;

    let staged = job.store.staging("collect", job.name(), job.date)?;
    let part = staged.join("part-0.parquet");
    let mut writer = BucketWriter::create(
        &part,
        job.channel.match_on(),
        buckets,
        schema::PLATFORM.clone(),
        writer_props_unique(&[
            "platform_order_id",
            "merchant_order_id",
            "refund_id",
            "channel_txn_id",
        ]),
    )?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // The row's place in the sorted snapshot: the tie-breaker between identical records.
        let seq: Int64Array = (rows as i64 + 1..=rows as i64 + batch.num_rows() as i64).collect();
        let batch = with_column(&batch, "snapshot_row", Arc::new(seq))?;
        let batch = schema::conform(
            &batch,
            &schema::PLATFORM,
            contracts::platform::OPTIONAL,
            schema::Extra::Drop,
            &origin,
        )?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    let files = job.publish_input(&staged, "platform").await?;
    let sha = crate::buckets::digest(&files, buckets);
    source_files.extend(
        job.recipe(&[(contracts::platform::FILE, text.as_bytes())])
            .await?,
    );
    crate::store::crash_point("collect", "published");
    let spilled = crate::engine::Spills::of(&plan);
    tracing::info!(
        rows,
        spill_files = spilled.count,
        spilled_bytes = spilled.bytes,
        "collected"
    );
    source_files.extend(files);
    Ok((
        source_files,
        Output::Collect(CollectDetail {
            rows,
            partitions_read: read,
            sha256: sha,
            buckets,
            sql: origin,
            spilled,
        }),
    ))
}
