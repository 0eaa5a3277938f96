//! `reckon generate`: a labelled synthetic data set: two channels' bills in their real
//! formats, the platform's warehouse tables, the expected category of every record, and a
//! ready `reckon.toml`. The same seed gives byte-identical files.

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

use crate::error::{Error, IoContext, Result};
use crate::parquet_io::write_file;
use crate::schema::{utc_ts, MONEY};

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
    fn bill_file(self, day: NaiveDate) -> String {
        let d = day.format("%Y%m%d");
        match self {
            Kind::Alipay => format!("{ALIPAY_ACCOUNT}_{d}.csv.zip"),
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
    category: String,
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

/// Generates the data set.
pub fn generate(opts: &GenerateOptions) -> Result<Generated> {
    if opts.days == 0 || opts.rows == 0 {
        return Err(Error::Config("--days and --rows must be at least 1".into()));
    }
    std::fs::create_dir_all(&opts.out).at(&opts.out)?;
    let mut out = Generated::default();
    let mut labels: Vec<Label> = Vec::new();
    let mut warehouse: Vec<PlatformRow> = Vec::new();
    let last = opts.from + Duration::days(i64::from(opts.days) - 1);

    for c in &opts.channels {
        if c != "alipay" && c != "wechat" {
            return Err(Error::Config(format!(
                "unknown channel {c:?}: generate knows alipay and wechat"
            )));
        }
    }
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
            let mut bill: Vec<BillRow> = std::mem::take(&mut next_day_rows);
            day_records(
                kind,
                day,
                opts.rows,
                &mut rng,
                &mut bill,
                &mut next_day_rows,
                &mut warehouse,
            );
            bill.sort_by(|a, b| a.time.cmp(&b.time).then(a.order_no.cmp(&b.order_no)));
            let file = kind.bill_file(day);
            let path = opts.out.join("bills").join(kind.name()).join(&file);
            let first_line = write_bill(kind, day, &bill, &path)?;
            out.bill_rows += bill.len() as u64;
            for (i, row) in bill.iter().enumerate() {
                let record_id = format!("{file}:{}", first_line + i as i64);
                if row.rejected {
                    labels.push(Label {
                        bill_date: day,
                        channel: kind.name(),
                        side: "CHANNEL",
                        record_id: record_id.clone(),
                        category: "REJECTED".into(),
                    });
                }
                for (d, c) in &row.labels {
                    if *d <= last {
                        labels.push(Label {
                            bill_date: *d,
                            channel: kind.name(),
                            side: "CHANNEL",
                            record_id: record_id.clone(),
                            category: c.as_str().into(),
                        });
                    }
                }
            }
        }
    }
    for p in &warehouse {
        let channel = if p.order_no.starts_with('A') {
            "alipay"
        } else {
            "wechat"
        };
        for (d, c) in &p.labels {
            if *d <= last {
                labels.push(Label {
                    bill_date: *d,
                    channel,
                    side: "PLATFORM",
                    record_id: if p.refund {
                        format!("REFUND:{}", p.refund_no)
                    } else {
                        format!("PAY:{}", p.order_no)
                    },
                    category: c.as_str().into(),
                });
            }
        }
    }
    out.warehouse_rows = write_warehouse(&opts.out, &warehouse)?;
    labels.sort_by(|a, b| {
        (a.bill_date, a.channel, a.side, &a.record_id, &a.category).cmp(&(
            b.bill_date,
            b.channel,
            b.side,
            &b.record_id,
            &b.category,
        ))
    });
    out.labels = labels.len() as u64;
    write_labels(&opts.out.join("labels.parquet"), &labels)?;
    crate::sql::write_builtin(&opts.out.join("sql"))?;
    out.config = opts.out.join("reckon.toml");
    std::fs::write(&out.config, CONFIG).at(&out.config)?;
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
    bill: &mut Vec<BillRow>,
    next_bill: &mut Vec<BillRow>,
    warehouse: &mut Vec<PlatformRow>,
) {
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
            warehouse.push(p);
            continue;
        } else if u < 0.016 {
            b.labels = vec![(day, Category::MissingInPlatform)];
            bill.push(b);
            continue;
        } else if u < 0.018 {
            let mut dup = b.clone();
            dup.labels = vec![(day, Category::DuplicateInChannel)];
            // The copy sorts after the original: same time, and the bill keeps file order.
            bill.push(b);
            bill.push(dup);
            warehouse.push(p);
            continue;
        } else if u < 0.020 {
            // The platform loaded the order twice: again into the next partition.
            p.dt = utc_date(p.at);
            let mut dup = p.clone();
            dup.dt = p.dt + Duration::days(1);
            dup.labels = vec![(day, Category::DuplicateInPlatform)];
            warehouse.push(p);
            warehouse.push(dup);
            bill.push(b);
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
            warehouse.push(p);
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
            warehouse.push(p);
            bill.push(b);
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
            warehouse.push(p);
            continue;
        } else if u < 0.028 {
            // A channel row without the merchant order number cannot be matched.
            b.order_no = String::new();
            b.labels = vec![(day, Category::MissingInPlatform)];
            p.labels = vec![(day, Category::MissingInChannel)];
            bill.push(b);
            warehouse.push(p);
            continue;
        } else if corrupt_left > 0 && u < 0.5 {
            // A row the normalizer must reject; its platform record is then missing in channel.
            corrupt_left -= 1;
            b.corrupt_time = true;
            b.rejected = true;
            b.labels = Vec::new();
            p.labels = vec![(day, Category::MissingInChannel)];
            bill.push(b);
            warehouse.push(p);
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
                bill.push(rb);
                bill.push(b);
                warehouse.push(p);
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
            bill.push(rb);
            warehouse.push(rp);
        }
        bill.push(b);
        warehouse.push(p);
    }
}

/// Writes one bill in its channel's format; returns the line number of the first data row.
fn write_bill(kind: Kind, day: NaiveDate, rows: &[BillRow], path: &Path) -> Result<i64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    match kind {
        Kind::Alipay => write_alipay(day, rows, path),
        Kind::Wechat => write_wechat(rows, path),
    }
}

const ALIPAY_HEADER: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";

fn fmt_time(t: NaiveDateTime, corrupt: bool) -> String {
    if corrupt {
        t.format("%Y-%m-%d 25:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

fn write_alipay(day: NaiveDate, rows: &[BillRow], path: &Path) -> Result<i64> {
    let next = day + Duration::days(1);
    let mut text = String::with_capacity(rows.len() * 220 + 1024);
    let head = [
        "#支付宝业务明细查询".to_string(),
        format!("#账号：[{ALIPAY_ACCOUNT}]"),
        format!(
            "#起始日期：[{}]   终止日期：[{}]",
            day.format("%Y年%m月%d日 00:00:00"),
            next.format("%Y年%m月%d日 00:00:00")
        ),
        "#-----------------------------------------业务明细列表----------------------------------------".into(),
        ALIPAY_HEADER.into(),
    ];
    for l in &head {
        text.push_str(l);
        text.push_str("\r\n");
    }
    let first_line = head.len() as i64 + 1;
    let (mut pay_n, mut pay_sum, mut ref_n, mut ref_sum) = (0u64, 0i128, 0u64, 0i128);
    let (mut order_sum, mut fee_sum) = (0i128, 0i128);
    for r in rows {
        let (kind, received, fee, refund_no) = if r.refund {
            ref_n += 1;
            ref_sum -= r.amount;
            ("退款", -r.amount, r.fee, r.refund_no.as_str())
        } else {
            pay_n += 1;
            pay_sum += r.amount;
            ("交易", r.amount, -r.fee, "")
        };
        if !r.refund {
            order_sum += r.amount;
        }
        fee_sum += fee;
        let created = r.time - Duration::seconds(3);
        let line = format!(
            "{}\t,{}\t,{kind},商品{},{},{},,,,,ab***@example.com,{},{},0.00,0.00,0.00,0.00,0.00,,0.00,0.00,{}\t,{},0.00,\r\n",
            r.channel_txn_id,
            r.order_no,
            r.order_no.len() % 7,
            fmt_time(created, false),
            fmt_time(r.time, r.corrupt_time),
            money(r.amount),
            money(received),
            refund_no,
            money(fee),
        );
        text.push_str(&line);
    }
    text.push_str("#-----------------------------------------业务明细列表结束------------------------------------\r\n");
    // The tail as Alipay writes it; the bill's 商家优惠 column is all 0.00 here.
    text.push_str(&format!(
        "#交易合计：{pay_n}笔，商家实收共{}元，商家优惠共0.00元\r\n",
        money(pay_sum)
    ));
    text.push_str(&format!(
        "#退款合计：{ref_n}笔，商家实收退款共{}元，商家优惠退款共0.00元\r\n",
        money(ref_sum)
    ));
    text.push_str(&format!(
        "#导出时间：[{} 09:00:00]\r\n",
        next.format("%Y年%m月%d日")
    ));
    // The summary member, as Alipay writes it: one row per store, then the 合计 row.
    let summary = format!(
        "#支付宝业务汇总查询\r\n#账号：[{ALIPAY_ACCOUNT}]\r\n#起始日期：[{}]   终止日期：[{}]\r\n\
         #-----------------------------------------业务汇总列表----------------------------------------\r\n\
         门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）\r\n\
         ,,{pay_n},{ref_n},{order},{received},0.00,0.00,0.00,{fee},0.00,{net}\r\n\
         合计,,{pay_n},{ref_n},{order},{received},0.00,0.00,0.00,{fee},0.00,{net}\r\n\
         #-----------------------------------------业务汇总列表结束------------------------------------\r\n\
         #导出时间：[{} 09:00:00]\r\n",
        day.format("%Y年%m月%d日 00:00:00"),
        next.format("%Y年%m月%d日 00:00:00"),
        next.format("%Y年%m月%d日"),
        order = money(order_sum),
        received = money(pay_sum + ref_sum),
        fee = money(fee_sum),
        net = money(pay_sum + ref_sum + fee_sum),
    );
    let gbk = |s: &str| encoding_rs::GBK.encode(s).0.into_owned();
    let stem = format!("{ALIPAY_ACCOUNT}_{}", day.format("%Y%m%d"));
    let f = std::fs::File::create(path).at(path)?;
    let mut zip = zip::ZipWriter::new(f);
    let stamp = zip::DateTime::from_date_and_time(2026, 1, 1, 0, 0, 0)
        .map_err(|_| Error::Other("zip timestamp".into()))?;
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(stamp);
    let zerr = |e: zip::result::ZipError| Error::Other(format!("{}: {e}", path.display()));
    zip.start_file(format!("{stem}_业务明细.csv"), opts)
        .map_err(zerr)?;
    zip.write_all(&gbk(&text)).at(path)?;
    zip.start_file(format!("{stem}_业务明细(汇总).csv"), opts)
        .map_err(zerr)?;
    zip.write_all(&gbk(&summary)).at(path)?;
    zip.finish().map_err(zerr)?;
    Ok(first_line)
}

const WECHAT_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

fn write_wechat(rows: &[BillRow], path: &Path) -> Result<i64> {
    let mut text = String::with_capacity(rows.len() * 260 + 1024);
    text.push_str(WECHAT_HEADER);
    text.push_str("\r\n");
    let (mut settle, mut refunds, mut fees, mut orders) = (0i128, 0i128, 0i128, 0i128);
    for r in rows {
        let t = fmt_time(r.time, r.corrupt_time);
        let fee = wechat_fee(r.amount, r.fee);
        let line = if r.refund {
            refunds += r.amount;
            fees -= fee;
            format!(
                "`{t},`wx2421b1c4370ec43b,`1900000109,`0,`,`{},`{},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`{},`{},`{},`0.00,`ORIGINAL,`{},`商品,`,`{},`0.60%,`0.00,`{},`\r\n",
                r.channel_txn_id, r.order_no, r.channel_refund_id, r.refund_no, money(r.amount),
                r.refund_status, fine5(-fee), money(r.amount)
            )
        } else {
            settle += r.amount;
            orders += r.amount;
            fees += fee;
            format!(
                "`{t},`wx2421b1c4370ec43b,`1900000109,`0,`,`{},`{},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`{},`0.00,`0,`0,`0.00,`0.00,`,`,`商品,`,`{},`0.60%,`{},`0.00,`\r\n",
                r.channel_txn_id, r.order_no, money(r.amount), fine5(fee), money(r.amount)
            )
        };
        text.push_str(&line);
    }
    text.push_str("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n");
    text.push_str(&format!(
        "`{},`{},`{},`0.00,`{},`{},`{}\r\n",
        rows.len(),
        money(settle),
        money(refunds),
        fine5(fees),
        money(orders),
        money(refunds)
    ));
    std::fs::write(path, text).at(path)?;
    Ok(2)
}

/// The platform merchant an order belongs to: one of seven, fixed by the order number.
fn merchant_of(order_no: &str) -> String {
    let n: u64 = order_no.bytes().map(u64::from).sum();
    format!("M{:03}", n % 7 + 1)
}

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_no", DataType::Utf8, false),
        Field::new("pay_channel", DataType::Utf8, false),
        Field::new("channel_trade_no", DataType::Utf8, true),
        Field::new("amount", MONEY, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("paid_at", utc_ts(), false),
        Field::new("merchant_id", DataType::Utf8, false),
    ]))
}

fn refunds_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("refund_no", DataType::Utf8, false),
        Field::new("order_no", DataType::Utf8, false),
        Field::new("pay_channel", DataType::Utf8, false),
        Field::new("channel_refund_no", DataType::Utf8, true),
        Field::new("amount", MONEY, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("refunded_at", utc_ts(), false),
        Field::new("merchant_id", DataType::Utf8, false),
    ]))
}

/// Writes `warehouse/{orders,refunds}/dt=D/part-0.parquet`; returns the rows written.
fn write_warehouse(out: &Path, rows: &[PlatformRow]) -> Result<u64> {
    let mut parts: BTreeMap<(bool, NaiveDate), Vec<&PlatformRow>> = BTreeMap::new();
    for r in rows {
        parts.entry((r.refund, r.dt)).or_default().push(r);
    }
    for ((refund, dt), rows) in &parts {
        let table = if *refund { "refunds" } else { "orders" };
        let path = out
            .join("warehouse")
            .join(table)
            .join(format!("dt={dt}"))
            .join("part-0.parquet");
        let n = rows.len();
        let mut amount = Decimal128Builder::with_capacity(n).with_data_type(MONEY);
        let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut s: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
        for r in rows {
            let channel = if r.order_no.starts_with('A') {
                "alipay"
            } else {
                "wechat"
            };
            amount.append_value(r.amount);
            at.append_value(r.at);
            if *refund {
                s[0].append_value(&r.refund_no);
                s[1].append_value(&r.order_no);
                s[2].append_value(channel);
                s[3].append_value(&r.channel_id);
            } else {
                s[0].append_value(&r.order_no);
                s[1].append_value(channel);
                s[2].append_value(&r.channel_id);
            }
            s[4].append_value(r.status);
            s[5].append_value(merchant_of(&r.order_no));
        }
        let mut cols: Vec<datafusion::arrow::array::ArrayRef> = Vec::new();
        let used = if *refund { 4 } else { 3 };
        for b in s.iter_mut().take(used) {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(amount.finish()));
        cols.push(Arc::new(s[4].finish()));
        cols.push(Arc::new(at.finish()));
        cols.push(Arc::new(s[5].finish()));
        let schema = if *refund {
            refunds_schema()
        } else {
            orders_schema()
        };
        let batch = RecordBatch::try_new(schema.clone(), cols)?;
        write_file(&path, schema, &[batch])?;
    }
    Ok(rows.len() as u64)
}

/// The schema of `labels.parquet`.
pub fn labels_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("bill_date", DataType::Date32, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("side", DataType::Utf8, false),
        Field::new("record_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
    ]))
}

fn write_labels(path: &Path, labels: &[Label]) -> Result<()> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let mut d = Date32Builder::new();
    let mut c = StringBuilder::new();
    let mut s = StringBuilder::new();
    let mut r = StringBuilder::new();
    let mut k = StringBuilder::new();
    for l in labels {
        d.append_value((l.bill_date - epoch).num_days() as i32);
        c.append_value(l.channel);
        s.append_value(l.side);
        r.append_value(&l.record_id);
        k.append_value(&l.category);
    }
    let schema = labels_schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(d.finish()),
            Arc::new(c.finish()),
            Arc::new(s.finish()),
            Arc::new(r.finish()),
            Arc::new(k.finish()),
        ],
    )?;
    write_file(path, schema, &[batch])
}

/// Turns the generated warehouse tables into Delta tables in place (each keeps its Parquet
/// files and gains a `_delta_log`) and says so in `OUT/reckon.toml`.
pub async fn warehouse_to_delta(out: &Path) -> Result<()> {
    for table in ["orders", "refunds"] {
        crate::delta::convert_local(&out.join("warehouse").join(table), "dt").await?;
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
    let config = crate::config::Config::load(&config_path)?;
    let dest = crate::objstore::Location::parse(&config, "--warehouse-url", url)?;
    let local = out.join("warehouse");
    let src = crate::objstore::Location::Local(local.clone());
    let files = src.files().await?;
    for f in &files {
        let p = local.join(f);
        dest.put(f, std::fs::read(&p).at(&p)?).await?;
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
        let dir = crate::objstore::Location::Local(local.join(table));
        let parts: Vec<PathBuf> = dir
            .files()
            .await?
            .iter()
            .map(|f| local.join(table).join(f))
            .collect();
        files += parts.len();
        crate::postgres::load_table(url, table, &parts).await?;
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
