//! reconcile: the full outer join and classification of `sql/reconcile.sql`, run once; its
//! output is routed in one pass to the differences (`results/…/diffs.parquet`), the carry-over
//! for the next day (`carryover/`) and the statistics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Date32Builder, Decimal128Array, Decimal128Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::kernels::cmp::neq;
use datafusion::arrow::compute::{
    concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn,
};
use datafusion::arrow::datatypes::{
    Date32Type, Decimal128Type, Int64Type, SchemaRef, TimestampMicrosecondType,
};
use datafusion::common::ScalarValue;
use futures::StreamExt;
use reckon_udfs::Category;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ageing;
use super::collect::register_dirs;
use super::{Job, Outcome, Stage};
use crate::config::Channel;
use crate::error::{Error, Result};
use crate::parquet_io::write_file;
use crate::records::{
    AgeingDetail, CarryIn, CategoryStats, Counts, FetchDetail, LedgerIn, Output, ReconcileDetail,
    Rules, SecondLookDetail,
};
use crate::schema;
use crate::store::sha256_file;
use crate::store::{Manifest, Record};

/// The hour of the day of a UTC instant in one zone. Zone offsets (since 1970) are whole
/// quarter hours and change on quarter hours, so the offset is looked up once per UTC quarter
/// hour and remembered.
struct LocalHours {
    zone: Tz,
    offsets: HashMap<i64, i64>,
}

impl LocalHours {
    const QUARTER_US: i64 = 900_000_000;

    fn new(zone: Tz) -> Self {
        Self {
            zone,
            offsets: HashMap::new(),
        }
    }

    /// The local hour (0–23) of `micros` since the epoch, UTC.
    fn hour(&mut self, micros: i64) -> u32 {
        use chrono::{Offset, TimeZone};
        let q = micros.div_euclid(Self::QUARTER_US);
        let zone = self.zone;
        let off = *self.offsets.entry(q).or_insert_with(|| {
            chrono::DateTime::from_timestamp_micros(q * Self::QUARTER_US)
                .map(|t| {
                    i64::from(
                        zone.offset_from_utc_datetime(&t.naive_utc())
                            .fix()
                            .local_minus_utc(),
                    )
                })
                .unwrap_or(0)
        });
        let local_secs = micros.div_euclid(1_000_000) + off;
        (local_secs.rem_euclid(86_400) / 3_600) as u32
    }
}

/// The Date32 epoch.
pub(crate) fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// `d` as a Date32 value (days since the epoch).
pub(crate) fn date32(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}

/// Where the carry-in comes from: the day before's carry-over, if that day was reconciled.
fn carry_in(job: &Job<'_>, staged: &Path) -> Result<(PathBuf, CarryIn)> {
    let prev = job.date - Duration::days(1);
    let m = job.store.manifest(job.name(), prev)?;
    if let Some(r) = m.reconciled() {
        if let Some(f) = r.files.iter().find(|f| f.starts_with("carryover/")) {
            let p = job.path(f);
            let sha = sha256_file(&p)?;
            let rows = crate::parquet_io::row_count(&p)?;
            return Ok((
                p,
                CarryIn {
                    from: Some(prev.to_string()),
                    file: Some(f.clone()),
                    rows,
                    sha256: sha,
                    note: None,
                },
            ));
        }
    }
    let why = if m.stages.is_empty() {
        format!("{prev} was never run")
    } else {
        format!("{prev} is not reconciled ({})", m.status)
    };
    tracing::warn!("no carry-in: {why}");
    let p = staged.join("carry_in_empty").join("part-0.parquet");
    write_file(&p, schema::CARRY.clone(), &[])?;
    Ok((
        p,
        CarryIn {
            from: None,
            file: None,
            rows: 0,
            sha256: "none".into(),
            note: Some(why),
        },
    ))
}

/// The engine may hand out strings as views; outputs always hold plain UTF-8.
fn plain_strings(b: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    if !b
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::LargeUtf8))
    {
        return Ok(b.clone());
    }
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if matches!(f.data_type(), DataType::Utf8View | DataType::LargeUtf8) {
            fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
            cols.push(datafusion::arrow::compute::cast(c, &DataType::Utf8)?);
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

fn decimal_param(mantissa: Option<i128>, scale: i8) -> ScalarValue {
    ScalarValue::Decimal128(mantissa, 18, scale)
}

/// The output columns of `reconcile.sql` the job reads (every other column is written to the
/// differences as it is).
pub const OUTPUT_COLUMNS: &[&str] = &[
    "diff_id",
    "category",
    "reason",
    "txn_type",
    "merchant_order_id",
    "refund_id",
    "channel_amount",
    "platform_amount",
    "in_channel",
    "in_platform",
    "channel_carried",
    "platform_carried",
    "carried_from",
    "grace_until",
    "source_line",
];

/// The parameters `reconcile.sql` gets for channel `ch` on bill date `date`.
pub fn params(ch: &Channel, date: NaiveDate) -> Result<Vec<(&'static str, ScalarValue)>> {
    let tolerance = ch.tolerance().map_err(Error::Config)?;
    let fee_rate = ch.fee_rate().map_err(Error::Config)?;
    let tolerance_rate = ch.tolerance_rate().map_err(Error::Config)?;
    let scaled = |d: rust_decimal::Decimal, s: u32| {
        let mut d = d;
        d.rescale(s);
        d.mantissa()
    };
    Ok(vec![
        ("channel", ScalarValue::Utf8(Some(ch.name.clone()))),
        ("bill_date", ScalarValue::Date32(Some(date32(date)))),
        ("time_zone", ScalarValue::Utf8(Some(ch.time_zone.clone()))),
        (
            "cut_window_secs",
            ScalarValue::Int64(Some(ch.cut_window_secs)),
        ),
        ("grace_days", ScalarValue::Int64(Some(ch.grace_days))),
        ("tolerance", decimal_param(Some(scaled(tolerance, 2)), 2)),
        (
            "tolerance_rate",
            decimal_param(tolerance_rate.map(|r| scaled(r, 6)), 6),
        ),
        ("fee_rate", decimal_param(fee_rate.map(|r| scaled(r, 6)), 6)),
        ("match_on", ScalarValue::Utf8(Some(ch.match_key.clone()))),
        (
            "fee_rounding",
            ScalarValue::Utf8(Some(ch.fee_rounding.clone())),
        ),
        (
            "compare_amount",
            ScalarValue::Utf8(Some(ch.compare_amount.clone())),
        ),
    ])
}

/// Runs the stage.
pub async fn run(job: &Job<'_>) -> Result<Outcome> {
    let manifest = job.manifest()?;
    let fetched = job.require(&manifest, Stage::Fetch, Stage::Reconcile, |m| m.fetched())?;
    let normalized = job.require(&manifest, Stage::Normalize, Stage::Reconcile, |m| {
        m.normalized().and_then(|r| r.facts())
    })?;
    let collected = job.require(&manifest, Stage::Collect, Stage::Reconcile, |m| {
        m.collected()
    })?;
    let staged = job.store.staging("reconcile", job.name(), job.date)?;
    let (carry_path, carry_detail) = carry_in(job, &staged)?;

    let bill = job.store.area("normalized", job.name(), job.date);
    let platform = job.store.area("platform", job.name(), job.date);
    let ctx = &job.engines.join;
    let url = |p: &Path| crate::objstore::dir_url(p);
    register_dirs(ctx, "bill", &[url(&bill)]).await?;
    register_dirs(ctx, "platform", &[url(&platform)]).await?;
    register_dirs(ctx, "carry_in", &[url(&carry_path)]).await?;

    let ch = job.channel;
    let params = params(ch, job.date)?;
    let (text, origin) = job.sql.read("reconcile.sql")?;
    let df = crate::sql::plan(ctx, &text, &origin, params.into()).await?;
    let mut stream = df.execute_stream().await?;
    // The query's own columns, known from its plan: an empty day's diffs have them too.
    let output = plain_strings(&RecordBatch::new_empty(stream.schema()))?.schema();

    let mut router = Router::new(
        job.date,
        ch.grace_days,
        ch.tz().map_err(Error::Config)?,
        output,
    );
    while let Some(batch) = stream.next().await {
        router.route(&plain_strings(&batch?)?, &origin)?;
    }
    let looked = match &job.config.second_look {
        Some(cfg) => Some(second_look(cfg, &mut router, &origin).await?),
        None => None,
    };
    let diffs_path = staged.join("results").join("diffs.parquet");
    let carry_out = staged.join("carryover").join("part-0.parquet");
    let ledger_path = staged.join("results").join("ledger.parquet");
    let (diff_rows, ageing) = age_and_write(
        job,
        (&manifest, fetched),
        &router,
        (&diffs_path, &ledger_path),
        &origin,
    )?;
    let carry_rows = router.finish_carry(&carry_out)?;
    let stats_rows = router.write_stats(job.name(), &staged.join("stats"))?;

    let text = |r: std::result::Result<Option<rust_decimal::Decimal>, String>| {
        r.map(|d| d.map(|d| d.to_string())).map_err(Error::Config)
    };
    let rules = Rules {
        time_zone: ch.time_zone.clone(),
        cut_window_secs: ch.cut_window_secs,
        grace_days: ch.grace_days,
        tolerance: ch.tolerance().map_err(Error::Config)?.to_string(),
        tolerance_rate: text(ch.tolerance_rate())?,
        fee_rate: text(ch.fee_rate())?,
        match_key: ch.match_key.clone(),
        fee_rounding: ch.fee_rounding.clone(),
        compare_amount: ch.compare_amount.clone(),
    };
    // The run id's inputs, each as the JSON text it has always been hashed as (a hash as a
    // quoted string, the rules as an object with sorted keys), so run ids stay stable.
    let quoted = |v: &str| serde_json::Value::from(v).to_string();
    let mut h = Sha256::new();
    for part in [
        job.name().to_string(),
        job.date.to_string(),
        quoted(&fetched.sha256),
        quoted(&normalized.sha256),
        quoted(&collected.sha256),
        quoted(&carry_detail.sha256),
        quoted(&ageing.before.sha256),
        job.sql.hash("reconcile.sql")?,
        serde_json::to_value(&rules)?.to_string(),
        // What the operational database answered is an input too (not how it was asked).
        match &looked {
            None => serde_json::Value::Null.to_string(),
            Some(l) => json!([l.looked_up, l.found_in_database]).to_string(),
        },
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let run_id = hex::encode(&h.finalize()[..8]);

    let mut files = Vec::new();
    for (dir, area, exclusive) in [
        ("results", "results", false),
        ("carryover", "carryover", true),
        ("stats", "stats", true),
    ] {
        let dest = job.store.area(area, job.name(), job.date);
        for p in job.store.publish(&staged.join(dir), &dest, exclusive)? {
            files.push(job.store.relative(&p));
        }
    }
    Ok((
        files,
        Output::Reconcile(Box::new(ReconcileDetail {
            run_id,
            target_partitions: ctx.state().config().target_partitions(),
            carry_in: carry_detail,
            bill_sha256: fetched.sha256.clone(),
            ageing,
            diff_rows,
            carry_out_rows: carry_rows,
            stats_rows,
            second_look: looked,
            counts: router.counts(),
            rules,
            sql: origin,
        })),
    ))
}

/// Routes the classified rows: statistics for all, differences and carry-over for some.
struct Router {
    date: NaiveDate,
    grace_days: i64,
    /// The categories seen, in order of first sight; `hourly` refers to them by place.
    names: Vec<String>,
    /// Statistics per category and hour of the day in the channel's zone.
    hourly: HashMap<(usize, Option<u32>), CategoryStats>,
    /// Statistics per category and merchant (NULL merchant apart, so no row allocates).
    by_merchant: HashMap<usize, (CategoryStats, HashMap<String, CategoryStats>)>,
    hours: LocalHours,
    diffs: Vec<RecordBatch>,
    carry: Vec<RecordBatch>,
    /// The query's output columns (strings plain).
    output: SchemaRef,
}

fn col<'a>(b: &'a RecordBatch, name: &str, origin: &str) -> Result<&'a Arc<dyn Array>> {
    b.column_by_name(name).ok_or_else(|| {
        Error::Config(format!(
            "{origin}: the query has no output column {name:?}, which the job needs"
        ))
    })
}

macro_rules! typed {
    ($b:expr, $name:expr, $origin:expr, $as:ident $(::<$t:ty>)?) => {{
        let c = col($b, $name, $origin)?;
        c.$as$(::<$t>)?().ok_or_else(|| {
            Error::Config(format!("{}: output column {:?} has type {}", $origin, $name, c.data_type()))
        })?
    }};
}

/// The second look: the keys of MISSING_IN_PLATFORM rows are looked up in the platform's own
/// database; a row whose key is there keeps its category (the warehouse snapshot has not got
/// it) and gets a reason that says where it is.
async fn second_look(
    cfg: &crate::config::SecondLook,
    router: &mut Router,
    origin: &str,
) -> Result<SecondLookDetail> {
    let missing = Category::MissingInPlatform.as_str();
    let (mut orders, mut refunds) = (Vec::new(), Vec::new());
    for b in &router.diffs {
        let cat = typed!(b, "category", origin, as_string_opt::<i32>);
        let tt = typed!(b, "txn_type", origin, as_string_opt::<i32>);
        let mo = typed!(b, "merchant_order_id", origin, as_string_opt::<i32>);
        let rf = typed!(b, "refund_id", origin, as_string_opt::<i32>);
        for row in 0..b.num_rows() {
            if cat.is_null(row) || cat.value(row) != missing {
                continue;
            }
            let refund = !tt.is_null(row) && tt.value(row) == "REFUND";
            let (keys, col) = if refund {
                (&mut refunds, rf)
            } else {
                (&mut orders, mo)
            };
            if !col.is_null(row) {
                keys.push(col.value(row).to_string());
            }
        }
    }
    orders.sort();
    orders.dedup();
    refunds.sort();
    refunds.dedup();
    let lookups = crate::postgres::Lookups::new(cfg)?;
    let started = std::time::Instant::now();
    let found_orders = lookups
        .find(&cfg.orders_table, &cfg.order_key, &orders)
        .await?;
    let found_refunds = lookups
        .find(&cfg.refunds_table, &cfg.refund_key, &refunds)
        .await?;
    let mut rewritten = 0u64;
    for b in router.diffs.iter_mut() {
        let cat = typed!(b, "category", origin, as_string_opt::<i32>);
        let tt = typed!(b, "txn_type", origin, as_string_opt::<i32>);
        let mo = typed!(b, "merchant_order_id", origin, as_string_opt::<i32>);
        let rf = typed!(b, "refund_id", origin, as_string_opt::<i32>);
        let reason = typed!(b, "reason", origin, as_string_opt::<i32>);
        let mut out = StringBuilder::with_capacity(b.num_rows(), b.num_rows() * 64);
        for row in 0..b.num_rows() {
            let refund = !tt.is_null(row) && tt.value(row) == "REFUND";
            let (col, found, table) = if refund {
                (rf, &found_refunds, &cfg.refunds_table)
            } else {
                (mo, &found_orders, &cfg.orders_table)
            };
            let hit = !cat.is_null(row)
                && cat.value(row) == missing
                && !col.is_null(row)
                && found.contains(col.value(row));
            if hit {
                rewritten += 1;
                out.append_value(format!(
                    "the platform's database has it ({table} {}), but the warehouse snapshot does not: \
                     it was loaded into the warehouse late; rerun collect and reconcile once it is there",
                    col.value(row)
                ));
            } else if reason.is_null(row) {
                out.append_null();
            } else {
                out.append_value(reason.value(row));
            }
        }
        let idx = b
            .schema()
            .index_of("reason")
            .map_err(|e| Error::Other(format!("{origin}: {e}")))?;
        let mut cols = b.columns().to_vec();
        cols[idx] = Arc::new(out.finish());
        *b = RecordBatch::try_new(b.schema(), cols)?;
    }
    tracing::info!(
        looked_up = orders.len() + refunds.len(),
        found = rewritten,
        "second look"
    );
    Ok(SecondLookDetail {
        looked_up: (orders.len() + refunds.len()) as u64,
        found_in_database: rewritten,
        connections: lookups.connections(),
        queries: lookups.queries(),
        retries: lookups.retries(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// A money column of the query's output.
fn money<'a>(b: &'a RecordBatch, name: &str, origin: &str) -> Result<&'a Decimal128Array> {
    Ok(typed!(b, name, origin, as_primitive_opt::<Decimal128Type>))
}

impl Router {
    fn new(date: NaiveDate, grace_days: i64, zone: Tz, output: SchemaRef) -> Self {
        Self {
            date,
            grace_days,
            output,
            names: Vec::new(),
            hourly: HashMap::new(),
            by_merchant: HashMap::new(),
            hours: LocalHours::new(zone),
            diffs: Vec::new(),
            carry: Vec::new(),
        }
    }

    fn route(&mut self, b: &RecordBatch, origin: &str) -> Result<()> {
        if b.num_rows() == 0 {
            return Ok(());
        }
        let category = typed!(b, "category", origin, as_string_opt::<i32>);
        let in_ch = typed!(b, "in_channel", origin, as_boolean_opt);
        let in_pf = typed!(b, "in_platform", origin, as_boolean_opt);
        let ch_carried = typed!(b, "channel_carried", origin, as_boolean_opt);
        let pf_carried = typed!(b, "platform_carried", origin, as_boolean_opt);
        let (ch_amount, pf_amount) = (
            money(b, "channel_amount", origin)?,
            money(b, "platform_amount", origin)?,
        );
        // Optional: SQL from before the refund check has no such column.
        let explained = b
            .column_by_name("refund_explained")
            .and_then(|c| c.as_boolean_opt())
            .cloned();
        let time = |name| -> Result<_> {
            Ok(typed!(
                b,
                name,
                origin,
                as_primitive_opt::<TimestampMicrosecondType>
            ))
        };
        let (ch_time, pf_time) = (time("channel_time")?, time("platform_time")?);
        // Optional: SQL from before merchants has no such column (all rows: no merchant).
        let merchant = b
            .column_by_name("merchant_id")
            .and_then(|c| c.as_string_opt::<i32>());
        for row in 0..b.num_rows() {
            if category.is_null(row) {
                return Err(Error::Other(format!("{origin}: a row without a category")));
            }
            let (c, p) = (in_ch.value(row), in_pf.value(row));
            let (cc, pc) = (ch_carried.value(row), pf_carried.value(row));
            let one = CategoryStats {
                rows: 1,
                channel_records: u64::from(c && !cc),
                platform_records: u64::from(p && !pc),
                carried_records: u64::from(c && cc) + u64::from(p && pc),
                channel_amount: if ch_amount.is_null(row) {
                    0
                } else {
                    ch_amount.value(row)
                },
                platform_amount: if pf_amount.is_null(row) {
                    0
                } else {
                    pf_amount.value(row)
                },
                refund_explained: u64::from(
                    explained
                        .as_ref()
                        .is_some_and(|e| e.is_valid(row) && e.value(row)),
                ),
            };
            let cat = category.value(row);
            let t = [ch_time, pf_time]
                .into_iter()
                .find(|t| t.is_valid(row))
                .map(|t| t.value(row));
            let hour = t.map(|t| self.hours.hour(t));
            let ci = match self.names.iter().position(|n| n == cat) {
                Some(i) => i,
                None => {
                    self.names.push(cat.to_string());
                    self.names.len() - 1
                }
            };
            self.hourly.entry((ci, hour)).or_default().add(&one);
            let (none, known) = self.by_merchant.entry(ci).or_default();
            match merchant.and_then(|m| m.is_valid(row).then(|| m.value(row))) {
                None => none.add(&one),
                Some(m) => match known.get_mut(m) {
                    Some(s) => s.add(&one),
                    None => {
                        known.insert(m.to_string(), one);
                    }
                },
            }
        }
        let not_matched = neq(
            category,
            &datafusion::arrow::array::Scalar::new(datafusion::arrow::array::StringArray::from(
                vec![Category::Matched.as_str()],
            )),
        )?;
        let diffs = filter_record_batch(b, &not_matched)?;
        if diffs.num_rows() > 0 {
            let pending: BooleanArray = typed!(&diffs, "category", origin, as_string_opt::<i32>)
                .iter()
                .map(|c| Some(c == Some(Category::CrossDayPending.as_str())))
                .collect();
            let p = filter_record_batch(&diffs, &pending)?;
            if p.num_rows() > 0 {
                self.carry.push(self.carry_rows(&p, origin)?);
            }
            self.diffs.push(diffs);
        }
        Ok(())
    }

    /// The carry-over records of CROSS_DAY_PENDING rows: each keeps its own side's values.
    fn carry_rows(&self, b: &RecordBatch, origin: &str) -> Result<RecordBatch> {
        let n = b.num_rows();
        let s = |name| -> Result<_> { Ok(typed!(b, name, origin, as_string_opt::<i32>)) };
        let in_ch = typed!(b, "in_channel", origin, as_boolean_opt);
        let (ch_amount, pf_amount) = (
            money(b, "channel_amount", origin)?,
            money(b, "platform_amount", origin)?,
        );
        let fee = money(b, "channel_fee", origin)?;
        let ch_time = typed!(
            b,
            "channel_time",
            origin,
            as_primitive_opt::<TimestampMicrosecondType>
        );
        let pf_time = typed!(
            b,
            "platform_time",
            origin,
            as_primitive_opt::<TimestampMicrosecondType>
        );
        let line = typed!(b, "source_line", origin, as_primitive_opt::<Int64Type>);
        let from = typed!(b, "carried_from", origin, as_primitive_opt::<Date32Type>);
        let until = typed!(b, "grace_until", origin, as_primitive_opt::<Date32Type>);
        let (txn_type, ch_id, mo, refund, po, ch_status, pf_status, file) = (
            s("txn_type")?,
            s("channel_txn_id")?,
            s("merchant_order_id")?,
            s("refund_id")?,
            s("platform_order_id")?,
            s("channel_status")?,
            s("platform_status")?,
            s("source_file")?,
        );
        let today = date32(self.date);
        let grace_end = date32(self.date + Duration::days(self.grace_days));
        let mut side = StringBuilder::new();
        let (mut cf, mut gu) = (Date32Builder::new(), Date32Builder::new());
        let mut strs: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
        // Optional: SQL from before merchants has no such column.
        let merchant = b
            .column_by_name("merchant_id")
            .and_then(|c| c.as_string_opt::<i32>());
        let mut amount = Decimal128Builder::new().with_data_type(schema::MONEY);
        let mut fees = Decimal128Builder::new().with_data_type(schema::MONEY);
        let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut lines = Int64Builder::new();
        let get = |a: &datafusion::arrow::array::StringArray, i: usize| {
            (!a.is_null(i)).then(|| a.value(i).to_string())
        };
        for i in 0..n {
            let channel_side = in_ch.value(i);
            side.append_value(if channel_side { "CHANNEL" } else { "PLATFORM" });
            cf.append_value(if from.is_null(i) {
                today
            } else {
                from.value(i)
            });
            gu.append_value(if until.is_null(i) {
                grace_end
            } else {
                until.value(i)
            });
            strs[0].append_option(get(txn_type, i));
            strs[1].append_option(get(ch_id, i));
            strs[2].append_option(get(mo, i));
            strs[3].append_option(get(refund, i));
            strs[4].append_option(get(po, i));
            strs[5].append_option(if channel_side {
                get(ch_status, i)
            } else {
                get(pf_status, i)
            });
            strs[6].append_option(get(file, i));
            strs[7].append_option(merchant.and_then(|m| get(m, i)));
            let (a, t) = if channel_side {
                (ch_amount, ch_time)
            } else {
                (pf_amount, pf_time)
            };
            amount.append_option((!a.is_null(i)).then(|| a.value(i)));
            time.append_option((!t.is_null(i)).then(|| t.value(i)));
            fees.append_option((!fee.is_null(i)).then(|| fee.value(i)));
            lines.append_option((!line.is_null(i)).then(|| line.value(i)));
        }
        let mut it = strs
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as Arc<dyn Array>);
        let mut next = || {
            it.next()
                .ok_or_else(|| Error::Other("carry columns".into()))
        };
        let cols: Vec<Arc<dyn Array>> = vec![
            Arc::new(side.finish()),
            Arc::new(cf.finish()),
            Arc::new(gu.finish()),
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            Arc::new(amount.finish()),
            Arc::new(fees.finish()),
            next()?,
            Arc::new(time.finish()),
            next()?,
            Arc::new(lines.finish()),
            next()?,
        ];
        Ok(RecordBatch::try_new(schema::CARRY.clone(), cols)?)
    }

    /// Counts and sums per category, over the hours.
    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for ((ci, _), s) in &self.hourly {
            counts
                .by_category
                .entry(self.names[*ci].clone())
                .or_default()
                .add(s);
        }
        counts
    }

    /// The day's statistics in `dir`: `by_hour.parquet` (one row per category and hour of the
    /// day in the channel's zone, NULL when the row has no time) and `by_merchant.parquet` (one
    /// row per category and merchant, NULL when neither side names one); sorted, sums at
    /// DECIMAL(38,2). Returns the rows written.
    fn write_stats(&self, channel: &str, dir: &Path) -> Result<u64> {
        use datafusion::arrow::array::{Int32Array, StringArray};
        let mut hours: Vec<(&str, Option<u32>, &CategoryStats)> = self
            .hourly
            .iter()
            .map(|((ci, h), s)| (self.names[*ci].as_str(), *h, s))
            .collect();
        hours.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut merchants: Vec<(&str, Option<&str>, &CategoryStats)> = Vec::new();
        for (ci, (none, known)) in &self.by_merchant {
            let name = self.names[*ci].as_str();
            if none.rows > 0 {
                merchants.push((name, None, none));
            }
            merchants.extend(known.iter().map(|(m, s)| (name, Some(m.as_str()), s)));
        }
        merchants.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let date = date32(self.date);
        let by_hour = stats_batch(
            &schema::BY_HOUR,
            channel,
            date,
            hours.iter().map(|(c, _, s)| (*c, *s)),
            Arc::new(Int32Array::from_iter(
                hours.iter().map(|h| h.1.map(|v| v as i32)),
            )),
        )?;
        let by_merchant = stats_batch(
            &schema::BY_MERCHANT,
            channel,
            date,
            merchants.iter().map(|(c, _, s)| (*c, *s)),
            Arc::new(StringArray::from_iter(merchants.iter().map(|m| m.1))),
        )?;
        write_file(
            &dir.join("by_hour.parquet"),
            schema::BY_HOUR.clone(),
            &[by_hour],
        )?;
        write_file(
            &dir.join("by_merchant.parquet"),
            schema::BY_MERCHANT.clone(),
            &[by_merchant],
        )?;
        Ok((hours.len() + merchants.len()) as u64)
    }

    /// Writes the carry-over sorted by side and id, so the same inputs give the same file
    /// whatever order the engine produced.
    fn finish_carry(&self, carry_path: &Path) -> Result<u64> {
        let carry = sorted(
            &self.carry,
            &["side", "merchant_order_id", "refund_id", "source_line"],
        )?;
        let carry_rows = carry.as_ref().map(|b| b.num_rows() as u64).unwrap_or(0);
        write_file(
            carry_path,
            schema::CARRY.clone(),
            &carry.into_iter().collect::<Vec<_>>(),
        )?;
        Ok(carry_rows)
    }
}

/// Ages the day's differences against the day before's ledger and an earlier run of this day,
/// and writes `diffs.parquet` (sorted by `diff_id`, so the same inputs give the same file) and
/// `ledger.parquet`. Returns the rows written, the detail for the manifest and the hash of the
/// day before's ledger (an input of the run).
fn age_and_write(
    job: &Job<'_>,
    (manifest, fetched): (&Manifest, &FetchDetail),
    router: &Router,
    (diffs_path, ledger_path): (&Path, &Path),
    origin: &str,
) -> Result<(u64, AgeingDetail)> {
    let diffs = match sorted(&router.diffs, &["diff_id"])? {
        Some(b) => b,
        None => RecordBatch::new_empty(router.output.clone()),
    };
    let ledger_of = |r: &Record<ReconcileDetail>| {
        r.files
            .iter()
            .find(|f| f.ends_with("/ledger.parquet"))
            .map(|f| job.path(f))
            .filter(|p| p.exists())
    };
    let prev = job.date - Duration::days(1);
    let prev_manifest = job.store.manifest(job.name(), prev)?;
    let (before, before_detail) = match prev_manifest.reconciled().and_then(ledger_of) {
        Some(p) => (
            ageing::read(&p)?,
            LedgerIn {
                from: Some(prev.to_string()),
                file: Some(job.store.relative(&p)),
                sha256: sha256_file(&p)?,
                note: None,
            },
        ),
        None => (
            Vec::new(),
            LedgerIn {
                from: None,
                file: None,
                sha256: "none".into(),
                note: Some(format!(
                    "{prev} has no ledger: ageing starts on {}",
                    job.date
                )),
            },
        ),
    };
    // An earlier run of this day (done, or stale since), whose differences this run may
    // resolve.
    let earlier = manifest.stages.reconcile.as_ref();
    let earlier_run = match earlier.and_then(ledger_of) {
        Some(p) => ageing::read(&p)?,
        None => Vec::new(),
    };
    let bill_changed = earlier
        .map(|r| r.last_facts().map(|d| d.bill_sha256.as_str()) != Some(fetched.sha256.as_str()))
        .unwrap_or(false);
    let history = ageing::History {
        before: &before,
        earlier_run: &earlier_run,
        bill_changed,
    };
    let (diffs, ledger, stats) = ageing::age(&diffs, job.name(), job.date, &history)?;
    let diffs = schema::conform(
        &diffs,
        &schema::DIFFS,
        schema::DIFFS_OPTIONAL,
        schema::Extra::Keep,
        origin,
    )?;
    write_file(diffs_path, diffs.schema(), std::slice::from_ref(&diffs))?;
    ageing::write(ledger_path, &ledger)?;
    Ok((
        diffs.num_rows() as u64,
        AgeingDetail {
            before: before_detail,
            stats,
        },
    ))
}

fn sorted(batches: &[RecordBatch], keys: &[&str]) -> Result<Option<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let all = concat_batches(&first.schema(), batches)?;
    let cols = keys
        .iter()
        .map(|k| {
            all.column_by_name(k)
                .map(|c| SortColumn {
                    values: c.clone(),
                    options: None,
                })
                .ok_or_else(|| Error::Other(format!("no column {k} to sort by")))
        })
        .collect::<Result<Vec<_>>>()?;
    let idx = lexsort_to_indices(&cols, None)?;
    Ok(Some(take_record_batch(&all, &idx)?))
}

/// A statistics table of the declared `schema` ([`schema::BY_HOUR`], [`schema::BY_MERCHANT`]):
/// `channel`, `bill_date`, `category`, the grain's column, then the counts and sums of each
/// row of `stats`.
fn stats_batch<'a>(
    schema: &SchemaRef,
    channel: &str,
    date: i32,
    stats: impl Iterator<Item = (&'a str, &'a CategoryStats)>,
    grain: Arc<dyn Array>,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Date32Array, StringArray, UInt64Array};
    let stats: Vec<_> = stats.collect();
    let n = stats.len();
    let count = |f: fn(&CategoryStats) -> u64| -> Arc<dyn Array> {
        Arc::new(UInt64Array::from_iter_values(
            stats.iter().map(|(_, s)| f(s)),
        ))
    };
    let sum = |f: fn(&CategoryStats) -> i128| -> Arc<dyn Array> {
        Arc::new(
            Decimal128Array::from_iter_values(stats.iter().map(|(_, s)| f(s)))
                .with_data_type(schema::MONEY_SUM),
        )
    };
    let cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            channel, n,
        ))),
        Arc::new(Date32Array::from_iter_values(std::iter::repeat_n(date, n))),
        Arc::new(StringArray::from_iter_values(stats.iter().map(|(c, _)| *c))),
        grain,
        count(|s| s.rows),
        count(|s| s.channel_records),
        count(|s| s.platform_records),
        count(|s| s.carried_records),
        sum(|s| s.channel_amount),
        sum(|s| s.platform_amount),
        count(|s| s.refund_explained),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
