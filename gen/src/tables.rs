//! The platform's warehouse tables (Hive-partitioned Parquet) and `labels.parquet`.

use datafusion::parquet::arrow::ArrowWriter;

use super::*;
use crate::parquet::open_writer;

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

/// Rows buffered per file before they are written as one batch (a multiple of the writer's
/// 1,024-row mini-batches, so the bytes do not depend on it).
const BATCH: usize = 65_536;

/// Writes `warehouse/{orders,refunds}/dt=D/part-0.parquet` as rows come, each partition's rows
/// in the order they were pushed.
pub(crate) struct WarehouseWriter {
    out: PathBuf,
    parts: BTreeMap<(bool, NaiveDate), (Vec<PlatformRow>, ArrowWriter<std::fs::File>)>,
    rows: u64,
}

impl WarehouseWriter {
    pub(crate) fn new(out: &Path) -> Self {
        Self {
            out: out.to_path_buf(),
            parts: BTreeMap::new(),
            rows: 0,
        }
    }

    pub(crate) fn push(&mut self, row: PlatformRow) -> Result<()> {
        let key = (row.refund, row.dt);
        if !self.parts.contains_key(&key) {
            let table = if row.refund { "refunds" } else { "orders" };
            let path = self
                .out
                .join("warehouse")
                .join(table)
                .join(format!("dt={}", row.dt))
                .join("part-0.parquet");
            let w = open_writer(&path, schema_of(row.refund))?;
            self.parts.insert(key, (Vec::new(), w));
        }
        self.rows += 1;
        if let Some((rows, w)) = self.parts.get_mut(&key) {
            rows.push(row);
            if rows.len() >= BATCH {
                w.write(&platform_batch(key.0, &std::mem::take(rows))?)?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered and closes every file; returns the rows written.
    pub(crate) fn finish(self) -> Result<u64> {
        for ((refund, _), (rows, mut w)) in self.parts {
            if !rows.is_empty() {
                w.write(&platform_batch(refund, &rows)?)?;
            }
            w.close()?;
        }
        Ok(self.rows)
    }
}

fn schema_of(refund: bool) -> SchemaRef {
    if refund {
        refunds_schema()
    } else {
        orders_schema()
    }
}

fn platform_batch(refund: bool, rows: &[PlatformRow]) -> Result<RecordBatch> {
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
        if refund {
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
    let used = if refund { 4 } else { 3 };
    for b in s.iter_mut().take(used) {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(amount.finish()));
    cols.push(Arc::new(s[4].finish()));
    cols.push(Arc::new(at.finish()));
    cols.push(Arc::new(s[5].finish()));
    Ok(RecordBatch::try_new(schema_of(refund), cols)?)
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

/// Writes `labels.parquet` as labels come, in the order they come (the order the generator
/// makes them: the same seed gives the same file).
pub(crate) struct LabelWriter {
    buf: Vec<Label>,
    w: ArrowWriter<std::fs::File>,
    n: u64,
}

impl LabelWriter {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        Ok(Self {
            buf: Vec::new(),
            w: open_writer(path, labels_schema())?,
            n: 0,
        })
    }

    pub(crate) fn push(&mut self, label: Label) -> Result<()> {
        self.buf.push(label);
        self.n += 1;
        if self.buf.len() >= BATCH {
            self.w
                .write(&label_batch(&std::mem::take(&mut self.buf))?)?;
        }
        Ok(())
    }

    /// Writes what is buffered and closes the file; returns the labels written.
    pub(crate) fn finish(mut self) -> Result<u64> {
        if !self.buf.is_empty() {
            self.w.write(&label_batch(&self.buf)?)?;
        }
        self.w.close()?;
        Ok(self.n)
    }
}

fn label_batch(labels: &[Label]) -> Result<RecordBatch> {
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
        k.append_value(l.category);
    }
    Ok(RecordBatch::try_new(
        labels_schema(),
        vec![
            Arc::new(d.finish()),
            Arc::new(c.finish()),
            Arc::new(s.finish()),
            Arc::new(r.finish()),
            Arc::new(k.finish()),
        ],
    )?)
}
