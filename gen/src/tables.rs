//! The platform's warehouse tables (Hive-partitioned Parquet) and `labels.parquet`.

use super::*;

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
pub(crate) fn write_warehouse(out: &Path, rows: &[PlatformRow]) -> Result<u64> {
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

pub(crate) fn write_labels(path: &Path, labels: &[Label]) -> Result<()> {
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
