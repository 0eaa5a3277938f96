//! The router: every classified row counted into the statistics (per category and local hour,
//! per category and merchant), the differences and the carry-over kept, in one pass.

use std::collections::HashMap;
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
use reckon_udfs::Category;

use crate::error::{Error, Result};
use crate::records::{CategoryStats, Counts};
use crate::schema;
use crate::schema::date32;

/// The hour of the day of a UTC instant in one zone. Zone offsets (since 1970) are whole
/// quarter hours and change on quarter hours, so the offset is looked up once per UTC quarter
/// hour and remembered.
pub(super) struct LocalHours {
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

/// Routes the classified rows: statistics for all, differences and carry-over for some.
pub(super) struct Router {
    pub(super) date: NaiveDate,
    pub(super) grace_days: i64,
    /// The categories seen, in order of first sight; `hourly` refers to them by place.
    pub(super) names: Vec<String>,
    /// Statistics per category and hour of the day in the channel's zone.
    pub(super) hourly: HashMap<(usize, Option<u32>), CategoryStats>,
    /// Statistics per category and merchant (NULL merchant apart, so no row allocates).
    pub(super) by_merchant: HashMap<usize, (CategoryStats, HashMap<String, CategoryStats>)>,
    pub(super) hours: LocalHours,
    pub(super) diffs: Vec<RecordBatch>,
    pub(super) carry: Vec<RecordBatch>,
    /// The query's output columns (strings plain).
    pub(super) output: SchemaRef,
    /// The bucket being joined and the bucket count, when more than one.
    pub(super) bucket: Option<(u32, u32)>,
}

pub(super) fn col<'a>(b: &'a RecordBatch, name: &str, origin: &str) -> Result<&'a Arc<dyn Array>> {
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
pub(super) use typed;

/// A money column of the query's output.
fn money<'a>(b: &'a RecordBatch, name: &str, origin: &str) -> Result<&'a Decimal128Array> {
    Ok(typed!(b, name, origin, as_primitive_opt::<Decimal128Type>))
}

impl Router {
    pub(super) fn new(date: NaiveDate, grace_days: i64, zone: Tz, output: SchemaRef) -> Self {
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
            bucket: None,
        }
    }

    pub(super) fn route(&mut self, b: &RecordBatch, origin: &str) -> Result<()> {
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
        if let Some(bucket) = self.bucket {
            check_bucket(&diffs, bucket, origin)?;
        }
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

    /// Adds the statistics the engine's routing partitions reported; returns the rows they
    /// routed.
    pub(super) fn absorb(&mut self, reports: &super::exec::Reports) -> u64 {
        let mut place = |name: &str| match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        };
        let mut rows = 0;
        let hourly: Vec<_> = (reports.hourly.iter())
            .map(|(c, h, s)| (place(c), *h, s))
            .collect();
        for (ci, hour, s) in hourly {
            rows += s.rows;
            self.hourly.entry((ci, hour)).or_default().add(s);
        }
        rows
    }

    /// The carry-over records of CROSS_DAY_PENDING rows: each keeps its own side's values.
    pub(super) fn carry_rows(&self, b: &RecordBatch, origin: &str) -> Result<RecordBatch> {
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
    pub(super) fn counts(&self) -> Counts {
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
    /// The statistics tables of what this router counted: `by_hour` (one row per category
    /// and hour of the day in the channel's zone, NULL when the row has no time) and
    /// `by_merchant` (one row per category and merchant, NULL when neither side names one);
    /// sorted, sums at DECIMAL(38,2).
    pub(super) fn stats_tables(&self, channel: &str) -> Result<(RecordBatch, RecordBatch)> {
        let hours: Vec<(&str, Option<u32>, &CategoryStats)> = (self.hourly.iter())
            .map(|((ci, h), s)| (self.names[*ci].as_str(), *h, s))
            .collect();
        let mut merchants: Vec<(&str, Option<&str>, &CategoryStats)> = Vec::new();
        for (ci, (none, known)) in &self.by_merchant {
            let name = self.names[*ci].as_str();
            if none.rows > 0 {
                merchants.push((name, None, none));
            }
            merchants.extend(known.iter().map(|(m, s)| (name, Some(m.as_str()), s)));
        }
        stats_tables(channel, self.date, hours, merchants)
    }
}

/// The statistics tables of `hours` and `merchants` cells (category, grain, counts), each
/// sorted by category and grain.
pub(super) fn stats_tables(
    channel: &str,
    date: NaiveDate,
    mut hours: Vec<(&str, Option<u32>, &CategoryStats)>,
    mut merchants: Vec<(&str, Option<&str>, &CategoryStats)>,
) -> Result<(RecordBatch, RecordBatch)> {
    use datafusion::arrow::array::{Int32Array, StringArray};
    hours.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    merchants.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let date = date32(date);
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
    Ok((by_hour, by_merchant))
}

/// The counts of row `r` of `b`, whose seven columns from `first` on are [`stats_columns`]'.
pub(super) fn stats_at(b: &RecordBatch, first: usize, r: usize) -> Result<CategoryStats> {
    use datafusion::arrow::datatypes::UInt64Type;
    let n = |i: usize| -> Result<u64> {
        let c = b.column(first + i);
        (c.as_primitive_opt::<UInt64Type>())
            .map(|a| a.value(r))
            .ok_or_else(|| Error::Other(format!("statistics column {i} is {}", c.data_type())))
    };
    let d = |i: usize| -> Result<i128> {
        let c = b.column(first + i);
        (c.as_primitive_opt::<Decimal128Type>())
            .map(|a| a.value(r))
            .ok_or_else(|| Error::Other(format!("statistics column {i} is {}", c.data_type())))
    };
    Ok(CategoryStats {
        rows: n(0)?,
        channel_records: n(1)?,
        platform_records: n(2)?,
        carried_records: n(3)?,
        channel_amount: d(4)?,
        platform_amount: d(5)?,
        refund_explained: n(6)?,
    })
}

/// Every difference of a bucket has a match key of that bucket: two records the query pairs
/// on another key could sit in two buckets and never meet, and the only trace is a one-sided
/// difference whose key hashes elsewhere.
fn check_bucket(diffs: &RecordBatch, (bucket, n): (u32, u32), origin: &str) -> Result<()> {
    let keys = typed!(diffs, "match_key", origin, as_string_opt::<i32>);
    for key in keys.iter().flatten() {
        let b = reckon_udfs::bucket_of(Some(reckon_udfs::key_hash(key)), n);
        if b != bucket {
            return Err(Error::Config(format!(
                "{origin}: the difference of match_key {key:?} came out of bucket {bucket} of {n}, \
                 but that key belongs in bucket {b}: the query's match_key must be built as the \
                 channel's match_key builds it (sql/README.md), which the day's sides are \
                 bucketed on; to join a day whole instead, set bucket_rows above its record count"
            )));
        }
    }
    Ok(())
}

pub(super) fn sorted(batches: &[RecordBatch], keys: &[&str]) -> Result<Option<RecordBatch>> {
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
pub(super) fn stats_batch<'a>(
    schema: &SchemaRef,
    channel: &str,
    date: i32,
    stats: impl Iterator<Item = (&'a str, &'a CategoryStats)>,
    grain: Arc<dyn Array>,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Date32Array, StringArray};
    let stats: Vec<_> = stats.collect();
    let n = stats.len();
    let mut cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            channel, n,
        ))),
        Arc::new(Date32Array::from_iter_values(std::iter::repeat_n(date, n))),
        Arc::new(StringArray::from_iter_values(stats.iter().map(|(c, _)| *c))),
        grain,
    ];
    cols.extend(stats_columns(stats.iter().map(|(_, s)| *s)));
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// The seven columns of counts and sums of `stats`, in the order every statistics table and
/// the routing report hold them: rows, channel, platform and carried records, the channel's
/// and the platform's amounts (DECIMAL(38,2)), the refunds that explained a status.
pub(super) fn stats_columns<'a>(
    stats: impl Iterator<Item = &'a CategoryStats> + Clone,
) -> Vec<Arc<dyn Array>> {
    use datafusion::arrow::array::UInt64Array;
    let count = |f: fn(&CategoryStats) -> u64| -> Arc<dyn Array> {
        Arc::new(UInt64Array::from_iter_values(stats.clone().map(f)))
    };
    let sum = |f: fn(&CategoryStats) -> i128| -> Arc<dyn Array> {
        Arc::new(
            Decimal128Array::from_iter_values(stats.clone().map(f))
                .with_data_type(schema::MONEY_SUM),
        )
    };
    vec![
        count(|s| s.rows),
        count(|s| s.channel_records),
        count(|s| s.platform_records),
        count(|s| s.carried_records),
        sum(|s| s.channel_amount),
        sum(|s| s.platform_amount),
        count(|s| s.refund_explained),
    ]
}
