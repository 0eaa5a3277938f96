//! reckon's labelled synthetic data set (`reckon generate`, `reckon demo`, the tests and the
//! benchmarks): two channels' bills in their real formats, the platform's warehouse tables,
//! the expected category of every record, and a ready `reckon.toml`. The same seed gives
//! byte-identical files. `warehouse` moves the warehouse to Delta Lake, S3 or PostgreSQL.

mod bills;
mod error;
mod parquet;
mod spill;
mod tables;
pub mod warehouse;

use bills::write_bill;
use spill::BillSorter;
pub use tables::labels_schema;
use tables::{LabelWriter, WarehouseWriter};

pub use error::{Error, Result};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use datafusion::arrow::array::{
    Date32Builder, Decimal128Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reckon_udfs::Category;

use error::IoContext;
use parquet::{utc_ts, MONEY};

/// The contracted fee rate of both generated channels, scale 6 (0.6%).
pub const FEE_RATE_MICROS: i128 = 6_000;
/// The daily-cut window the generated config uses.
pub const CUT_WINDOW_SECS: i64 = 300;
const ALIPAY_ACCOUNT: &str = "20881234567890120156";

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The output folder.
    pub out: PathBuf,
    /// The first bill date.
    pub from: NaiveDate,
    /// How many days.
    pub days: u32,
    /// Payments per channel per day (refunds and special cases come on top).
    pub rows: u64,
    /// The random seed.
    pub seed: u64,
    /// Only these channels (`alipay`, `wechat`); both when empty.
    pub channels: Vec<String>,
    /// Write WeChat Pay's bills gzip-compressed (`tradebill_D.csv.gz`), as its API delivers
    /// them with `tar_type=GZIP`.
    pub gzip: bool,
}

/// What was generated, for the caller to print.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Channel bill rows written, all days and channels.
    pub bill_rows: u64,
    /// Warehouse rows written (orders and refunds).
    pub warehouse_rows: u64,
    /// Labels written.
    pub labels: u64,
    /// The config file.
    pub config: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Alipay,
    Wechat,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Alipay => "alipay",
            Kind::Wechat => "wechat",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Kind::Alipay => "A",
            Kind::Wechat => "W",
        }
    }
    fn bill_file(self, day: NaiveDate, gzip: bool) -> String {
        let d = day.format("%Y%m%d");
        match self {
            Kind::Alipay => format!("{ALIPAY_ACCOUNT}_{d}.csv.zip"),
            Kind::Wechat if gzip => format!("tradebill_{d}.csv.gz"),
            Kind::Wechat => format!("tradebill_{d}.csv"),
        }
    }
}

/// One row of a channel's bill, before it is laid out in the channel's format.
#[derive(Clone, Debug)]
struct BillRow {
    refund: bool,
    channel_txn_id: String,
    channel_refund_id: String,
    order_no: String,
    refund_no: String,
    amount: i128,
    fee: i128,
    /// Local (Asia/Shanghai) time of the transaction.
    time: NaiveDateTime,
    /// WeChat refund status.
    refund_status: &'static str,
    /// Write an unparseable time (a row the normalizer must reject).
    corrupt_time: bool,
    /// The labels for this row, by the bill date they apply to.
    labels: Vec<(NaiveDate, Category)>,
    /// Whether the rejected-row label applies.
    rejected: bool,
}

/// One platform record for the warehouse.
#[derive(Clone, Debug)]
struct PlatformRow {
    refund: bool,
    order_no: String,
    refund_no: String,
    channel_id: String,
    amount: i128,
    status: &'static str,
    /// UTC instant.
    at: i64,
    /// The partition it is loaded into.
    dt: NaiveDate,
    labels: Vec<(NaiveDate, Category)>,
}

struct Label {
    bill_date: NaiveDate,
    channel: &'static str,
    side: &'static str,
    record_id: String,
    category: &'static str,
}

fn shanghai_to_utc_micros(t: NaiveDateTime) -> i64 {
    Shanghai
        .from_local_datetime(&t)
        .earliest()
        .map(|d| d.timestamp_micros())
        .unwrap_or_default()
}

fn utc_date(micros: i64) -> NaiveDate {
    chrono::DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|d| d.date_naive())
        .unwrap_or_default()
}

fn money(cents: i128) -> String {
    reckon_udfs::money_text(cents)
}

/// WeChat Pay writes its fee with five decimals: the exact amount × rate when the row's fee is
/// the contracted one (which, rounded half up, is `fee`), else the fee as charged. In units of
/// 10^-5 yuan.
fn wechat_fee(amount: i128, fee: i128) -> i128 {
    let scaled = amount * FEE_RATE_MICROS;
    let exact = scaled / 1000;
    if scaled % 1000 == 0 && fee == fee_of(amount) {
        exact
    } else {
        fee * 1000
    }
}

/// A value in units of 10^-5 as decimal text with five decimals (`0.52800`).
fn fine5(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:05}", a / 100_000, a % 100_000)
}

fn fee_of(amount: i128) -> i128 {
    reckon_udfs::expected_fee(amount, FEE_RATE_MICROS, reckon_udfs::FeeRounding::HalfUp)
        .unwrap_or_default()
}

/// Where a day's platform records go: the warehouse files and their labels.
struct Platform {
    warehouse: WarehouseWriter,
    labels: LabelWriter,
    /// The last bill date generated: later days' labels are not written.
    last: NaiveDate,
}

impl Platform {
    fn push(&mut self, p: PlatformRow) -> Result<()> {
        let channel = if p.order_no.starts_with('A') {
            "alipay"
        } else {
            "wechat"
        };
        for (d, c) in &p.labels {
            if *d <= self.last {
                self.labels.push(Label {
                    bill_date: *d,
                    channel,
                    side: "PLATFORM",
                    record_id: if p.refund {
                        format!("REFUND:{}", p.refund_no)
                    } else {
                        format!("PAY:{}", p.order_no)
                    },
                    category: c.as_str(),
                })?;
            }
        }
        self.warehouse.push(p)
    }
}

/// Generates the data set. Memory is bounded: each channel-day's bill is sorted in time ranges
/// spilled under `out/.spill`, and the warehouse and labels are written as they are made.
pub fn generate(opts: &GenerateOptions) -> Result<Generated> {
    if opts.days == 0 || opts.rows == 0 {
        return Err(Error::Config("--days and --rows must be at least 1".into()));
    }
    for c in &opts.channels {
        if c != "alipay" && c != "wechat" {
            return Err(Error::Config(format!(
                "unknown channel {c:?}: generate knows alipay and wechat"
            )));
        }
    }
    std::fs::create_dir_all(&opts.out).at(&opts.out)?;
    let spill_dir = opts.out.join(".spill");
    let mut out = Generated::default();
    let last = opts.from + Duration::days(i64::from(opts.days) - 1);
    let mut platform = Platform {
        warehouse: WarehouseWriter::new(&opts.out),
        labels: LabelWriter::create(&opts.out.join("labels.parquet"))?,
        last,
    };
    for (ci, kind) in [Kind::Alipay, Kind::Wechat].into_iter().enumerate() {
        if !opts.channels.is_empty() && !opts.channels.iter().any(|c| c == kind.name()) {
            continue;
        }
        // Rows that belong to the next day's bill (the daily cut), carried between days.
        let mut next_day_rows: Vec<BillRow> = Vec::new();
        for di in 0..opts.days {
            let day = opts.from + Duration::days(i64::from(di));
            let stream = opts.seed ^ ((ci as u64 + 1) << 40) ^ (u64::from(di) << 20);
            let mut rng = ChaCha8Rng::seed_from_u64(stream);
            // Refunds and special cases add about 4% to the payments.
            let mut bill = BillSorter::new(day, opts.rows + opts.rows / 16, &spill_dir);
            for r in std::mem::take(&mut next_day_rows) {
                bill.push(r)?;
            }
            day_records(
                kind,
                day,
                opts.rows,
                &mut rng,
                &mut bill,
                &mut next_day_rows,
                &mut platform,
            )?;
            let gzip = opts.gzip && kind == Kind::Wechat;
            let file = kind.bill_file(day, gzip);
            let path = opts.out.join("bills").join(kind.name()).join(&file);
            let labels = &mut platform.labels;
            out.bill_rows += write_bill(kind, day, bill, &path, gzip, |line, row| {
                let record_id = format!("{file}:{line}");
                if row.rejected {
                    labels.push(Label {
                        bill_date: day,
                        channel: kind.name(),
                        side: "CHANNEL",
                        record_id: record_id.clone(),
                        category: "REJECTED",
                    })?;
                }
                for (d, c) in &row.labels {
                    if *d <= last {
                        labels.push(Label {
                            bill_date: *d,
                            channel: kind.name(),
                            side: "CHANNEL",
                            record_id: record_id.clone(),
                            category: c.as_str(),
                        })?;
                    }
                }
                Ok(())
            })?;
        }
    }
    if spill_dir.exists() {
        std::fs::remove_dir_all(&spill_dir).at(&spill_dir)?;
    }
    out.warehouse_rows = platform.warehouse.finish()?;
    out.labels = platform.labels.finish()?;
    out.config = opts.out.join("reckon.toml");
    let config = if opts.gzip {
        CONFIG.replace(
            "tradebill_{yyyymmdd}.csv\"",
            "tradebill_{yyyymmdd}.csv.gz\"",
        )
    } else {
        CONFIG.to_string()
    };
    std::fs::write(&out.config, config).at(&out.config)?;
    Ok(out)
}

/// The config the data set ships with; paths are relative to it.
const CONFIG: &str = r#"# Generated by `reckon generate`: reconciles the generated bills against the generated warehouse.
storage_root = "output"
engine = "local"

[warehouse]
orders = "warehouse/orders"
refunds = "warehouse/refunds"

[[channel]]
name = "alipay"
format = "alipay_trade_v1"
time_zone = "Asia/Shanghai"
cut_window_secs = 300
grace_days = 1
fee_rate = "0.006"
source = { kind = "drop_folder", path = "bills/alipay", pattern = "*_{yyyymmdd}.csv.zip" }

[[channel]]
name = "wechat"
format = "wechat_trade_v3"
time_zone = "Asia/Shanghai"
cut_window_secs = 300
grace_days = 1
fee_rate = "0.006"
source = { kind = "drop_folder", path = "bills/wechat", pattern = "tradebill_{yyyymmdd}.csv" }
"#;

/// Makes one channel-day: bill rows for `bill` (and for the next day's bill), platform rows.
fn day_records(
    kind: Kind,
    day: NaiveDate,
    rows: u64,
    rng: &mut ChaCha8Rng,
    bill: &mut BillSorter,
    next_bill: &mut Vec<BillRow>,
    warehouse: &mut Platform,
) -> Result<()> {
    let next = day + Duration::days(1);
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    let end = midnight + Duration::days(1);
    let ymd = day.format("%Y%m%d").to_string();
    let mut corrupt_left = 1;
    for i in 0..rows {
        let order_no = format!("{}{ymd}{i:08}", kind.prefix());
        let channel_txn_id = match kind {
            Kind::Alipay => format!("{ymd}2200140{:013}", i + 1),
            Kind::Wechat => format!("4200{ymd}{:012}", i + 1),
        };
        let amount: i128 = match rng.gen_range(0..10) {
            0 => rng.gen_range(1..100),
            1..=6 => rng.gen_range(100..20_000),
            _ => rng.gen_range(20_000..2_000_000),
        };
        // Ordinary times stay clear of the cut window before midnight.
        let secs = rng.gen_range(0..(86_400 - 2 * CUT_WINDOW_SECS));
        let pf_time = midnight + Duration::seconds(secs);
        let ch_time = pf_time + Duration::seconds(rng.gen_range(0..3));
        let mut b = BillRow {
            refund: false,
            channel_txn_id: channel_txn_id.clone(),
            channel_refund_id: String::new(),
            order_no: order_no.clone(),
            refund_no: String::new(),
            amount,
            fee: fee_of(amount),
            time: ch_time,
            refund_status: "SUCCESS",
            corrupt_time: false,
            labels: vec![(day, Category::Matched)],
            rejected: false,
        };
        let pf_at = shanghai_to_utc_micros(pf_time);
        let late = rng.gen_bool(0.01);
        let mut p = PlatformRow {
            refund: false,
            order_no: order_no.clone(),
            refund_no: String::new(),
            channel_id: channel_txn_id.clone(),
            amount,
            status: "SUCCESS",
            at: pf_at,
            dt: utc_date(pf_at) + Duration::days(i64::from(late)),
            labels: vec![(day, Category::Matched)],
        };
        let u: f64 = rng.gen();
        let window_time =
            |rng: &mut ChaCha8Rng| end - Duration::seconds(rng.gen_range(2..CUT_WINDOW_SECS - 60));
        if u < 0.004 {
            let mut delta: i128 = rng.gen_range(1..500);
            if p.amount > delta && rng.gen_bool(0.5) {
                delta = -delta;
            }
            p.amount += delta;
            b.labels = vec![(day, Category::AmountMismatch)];
            p.labels = b.labels.clone();
        } else if u < 0.007 {
            p.status = "REFUNDED";
            b.labels = vec![(day, Category::StatusMismatch)];
            p.labels = b.labels.clone();
        } else if u < 0.010 {
            b.fee += 1;
            b.labels = vec![(day, Category::FeeMismatch)];
            p.labels = b.labels.clone();
        } else if u < 0.013 {
            p.labels = vec![(day, Category::MissingInChannel)];
            warehouse.push(p)?;
            continue;
        } else if u < 0.016 {
            b.labels = vec![(day, Category::MissingInPlatform)];
            bill.push(b)?;
            continue;
        } else if u < 0.018 {
            let mut dup = b.clone();
            dup.labels = vec![(day, Category::DuplicateInChannel)];
            // The copy sorts after the original: same time, and the bill keeps file order.
            bill.push(b)?;
            bill.push(dup)?;
            warehouse.push(p)?;
            continue;
        } else if u < 0.020 {
            // The platform loaded the order twice: again into the next partition.
            p.dt = utc_date(p.at);
            let mut dup = p.clone();
            dup.dt = p.dt + Duration::days(1);
            dup.labels = vec![(day, Category::DuplicateInPlatform)];
            warehouse.push(p)?;
            warehouse.push(dup)?;
            bill.push(b)?;
            continue;
        } else if u < 0.023 {
            // The platform saw it just before midnight; the channel books it the next day.
            let t = window_time(rng);
            p.at = shanghai_to_utc_micros(t);
            p.dt = utc_date(p.at);
            p.labels = vec![
                (day, Category::CrossDayPending),
                (next, Category::CrossDayMatched),
            ];
            b.time = end + Duration::seconds(rng.gen_range(1..30));
            b.labels = vec![(next, Category::CrossDayMatched)];
            warehouse.push(p)?;
            next_bill.push(b);
            continue;
        } else if u < 0.026 {
            // The channel booked it just before midnight; the platform's clock says next day.
            b.time = window_time(rng);
            b.labels = vec![
                (day, Category::CrossDayPending),
                (next, Category::CrossDayMatched),
            ];
            p.at = shanghai_to_utc_micros(end + Duration::seconds(rng.gen_range(1..30)));
            p.dt = utc_date(p.at);
            p.labels = vec![(next, Category::CrossDayMatched)];
            warehouse.push(p)?;
            bill.push(b)?;
            continue;
        } else if u < 0.027 {
            // Inside the window, but the channel never books it: missing once grace runs out.
            let t = window_time(rng);
            p.at = shanghai_to_utc_micros(t);
            p.dt = utc_date(p.at);
            p.labels = vec![
                (day, Category::CrossDayPending),
                (next, Category::MissingInChannel),
            ];
            warehouse.push(p)?;
            continue;
        } else if u < 0.028 {
            // A channel row without the merchant order number cannot be matched.
            b.order_no = String::new();
            b.labels = vec![(day, Category::MissingInPlatform)];
            p.labels = vec![(day, Category::MissingInChannel)];
            bill.push(b)?;
            warehouse.push(p)?;
            continue;
        } else if corrupt_left > 0 && u < 0.5 {
            // A row the normalizer must reject; its platform record is then missing in channel.
            corrupt_left -= 1;
            b.corrupt_time = true;
            b.rejected = true;
            b.labels = Vec::new();
            p.labels = vec![(day, Category::MissingInChannel)];
            bill.push(b)?;
            warehouse.push(p)?;
            continue;
        }
        // An order the platform already marked REFUNDED without a refund record stays a
        // status mismatch: it gets no refund here.
        let refund = p.status != "REFUNDED" && rng.gen_bool(0.03);
        if refund {
            let r_amount = rng.gen_range(1..=amount);
            let room = (end - Duration::seconds(2 * CUT_WINDOW_SECS) - ch_time).num_seconds();
            let r_time = ch_time + Duration::seconds(rng.gen_range(1..room.max(2)));
            let refund_no = format!("R{order_no}");
            let channel_refund_id = match kind {
                Kind::Alipay => channel_txn_id.clone(),
                Kind::Wechat => format!("5030{ymd}{:012}", i + 1),
            };
            let mut rb = BillRow {
                refund: true,
                channel_txn_id: channel_txn_id.clone(),
                channel_refund_id: channel_refund_id.clone(),
                order_no: order_no.clone(),
                refund_no: refund_no.clone(),
                amount: r_amount,
                fee: fee_of(r_amount),
                time: r_time,
                refund_status: "SUCCESS",
                corrupt_time: false,
                labels: vec![(day, Category::Matched)],
                rejected: false,
            };
            let r_at = shanghai_to_utc_micros(r_time);
            let mut rp = PlatformRow {
                refund: true,
                order_no: order_no.clone(),
                refund_no,
                channel_id: channel_refund_id,
                amount: r_amount,
                status: "SUCCESS",
                at: r_at,
                dt: utc_date(r_at),
                labels: vec![(day, Category::Matched)],
            };
            let v: f64 = rng.gen();
            if v < 0.05 {
                rp.amount = r_amount + 1;
                rb.labels = vec![(day, Category::AmountMismatch)];
                rp.labels = rb.labels.clone();
            } else if v < 0.10 {
                rb.labels = vec![(day, Category::MissingInPlatform)];
                bill.push(rb)?;
                bill.push(b)?;
                warehouse.push(p)?;
                continue;
            } else if v < 0.15 && kind == Kind::Wechat {
                rb.refund_status = "PROCESSING";
                rb.labels = vec![(day, Category::StatusMismatch)];
                rp.labels = rb.labels.clone();
            } else if v < 0.30 {
                // A full refund: the platform marks the order REFUNDED while the channel's
                // payment row still says SUCCESS; the refund table explains it (MATCHED).
                rb.amount = amount;
                rb.fee = fee_of(amount);
                rp.amount = amount;
                p.status = "REFUNDED";
            }
            bill.push(rb)?;
            warehouse.push(rp)?;
        }
        bill.push(b)?;
        warehouse.push(p)?;
    }
    Ok(())
}
