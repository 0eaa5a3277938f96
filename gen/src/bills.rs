//! The channels' bills laid out in their real formats: Alipay's GBK zip with its 汇总 member and
//! tail, WeChat Pay's backticked CSV with its summary. Rows are written as the sorter hands
//! them out; nothing holds the whole bill.

use std::io::BufWriter;

use super::spill::BillSorter;
use super::*;

/// Writes one bill in its channel's format, calling `each` with every row's line number.
/// Returns the rows written.
pub(crate) fn write_bill(
    kind: Kind,
    day: NaiveDate,
    rows: BillSorter,
    path: &Path,
    gzip: bool,
    each: impl FnMut(i64, &BillRow) -> Result<()>,
) -> Result<u64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    match kind {
        Kind::Alipay => write_alipay(day, rows, path, each),
        Kind::Wechat => write_wechat(rows, path, gzip, each),
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

fn write_alipay(
    day: NaiveDate,
    rows: BillSorter,
    path: &Path,
    mut each: impl FnMut(i64, &BillRow) -> Result<()>,
) -> Result<u64> {
    let next = day + Duration::days(1);
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
    let stem = format!("{ALIPAY_ACCOUNT}_{}", day.format("%Y%m%d"));
    let f = BufWriter::new(std::fs::File::create(path).at(path)?);
    let mut zip = zip::ZipWriter::new(f);
    let stamp = zip::DateTime::from_date_and_time(2026, 1, 1, 0, 0, 0)
        .map_err(|_| Error::Other("zip timestamp".into()))?;
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(stamp)
        // Zip64 only for a member that may pass 4 GiB (about 250 bytes a row).
        .large_file(rows.len() > u64::from(u32::MAX) / 250);
    let zerr = |e: zip::result::ZipError| Error::Other(format!("{}: {e}", path.display()));
    zip.start_file(format!("{stem}_业务明细.csv"), opts)
        .map_err(zerr)?;
    let put = |zip: &mut zip::ZipWriter<_>, text: &str| {
        zip.write_all(&encoding_rs::GBK.encode(text).0).at(path)
    };
    for l in &head {
        put(&mut zip, &format!("{l}\r\n"))?;
    }
    let mut line_no = head.len() as i64 + 1;
    let (mut pay_n, mut pay_sum, mut ref_n, mut ref_sum) = (0u64, 0i128, 0u64, 0i128);
    let (mut order_sum, mut fee_sum) = (0i128, 0i128);
    rows.finish(|r| {
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
        put(&mut zip, &line)?;
        each(line_no, r)?;
        line_no += 1;
        Ok(())
    })?;
    let mut tail = String::new();
    tail.push_str("#-----------------------------------------业务明细列表结束------------------------------------\r\n");
    // The tail as Alipay writes it; the bill's 商家优惠 column is all 0.00 here.
    tail.push_str(&format!(
        "#交易合计：{pay_n}笔，商家实收共{}元，商家优惠共0.00元\r\n",
        money(pay_sum)
    ));
    tail.push_str(&format!(
        "#退款合计：{ref_n}笔，商家实收退款共{}元，商家优惠退款共0.00元\r\n",
        money(ref_sum)
    ));
    tail.push_str(&format!(
        "#导出时间：[{} 09:00:00]\r\n",
        next.format("%Y年%m月%d日")
    ));
    put(&mut zip, &tail)?;
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
    zip.start_file(format!("{stem}_业务明细(汇总).csv"), opts)
        .map_err(zerr)?;
    put(&mut zip, &summary)?;
    zip.finish().map_err(zerr)?.flush().at(path)?;
    Ok(pay_n + ref_n)
}

const WECHAT_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

fn write_wechat(
    rows: BillSorter,
    path: &Path,
    gzip: bool,
    each: impl FnMut(i64, &BillRow) -> Result<()>,
) -> Result<u64> {
    let mut file = BufWriter::new(std::fs::File::create(path).at(path)?);
    // WeChat Pay delivers the same text gzip-compressed when asked (`tar_type=GZIP`).
    let n = if gzip {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let n = wechat_text(rows, &mut gz, path, each)?;
        gz.finish().at(path)?.flush().at(path)?;
        n
    } else {
        let n = wechat_text(rows, &mut file, path, each)?;
        file.flush().at(path)?;
        n
    };
    Ok(n)
}

fn wechat_text(
    rows: BillSorter,
    out: &mut dyn Write,
    path: &Path,
    mut each: impl FnMut(i64, &BillRow) -> Result<()>,
) -> Result<u64> {
    out.write_all(WECHAT_HEADER.as_bytes()).at(path)?;
    out.write_all(b"\r\n").at(path)?;
    let (mut settle, mut refunds, mut fees, mut orders) = (0i128, 0i128, 0i128, 0i128);
    let mut n = 0u64;
    rows.finish(|r| {
        let t = fmt_time(r.time, r.corrupt_time);
        let fee = wechat_fee(r.amount, r.fee);
        if r.refund {
            refunds += r.amount;
            fees -= fee;
            write!(
                out,
                "`{t},`wx2421b1c4370ec43b,`1900000109,`0,`,`{},`{},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`{},`{},`{},`0.00,`ORIGINAL,`{},`商品,`,`{},`0.60%,`0.00,`{},`\r\n",
                r.channel_txn_id, r.order_no, r.channel_refund_id, r.refund_no, money(r.amount),
                r.refund_status, fine5(-fee), money(r.amount)
            )
        } else {
            settle += r.amount;
            orders += r.amount;
            fees += fee;
            write!(
                out,
                "`{t},`wx2421b1c4370ec43b,`1900000109,`0,`,`{},`{},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`{},`0.00,`0,`0,`0.00,`0.00,`,`,`商品,`,`{},`0.60%,`{},`0.00,`\r\n",
                r.channel_txn_id, r.order_no, money(r.amount), fine5(fee), money(r.amount)
            )
        }
        .at(path)?;
        n += 1;
        each(n as i64 + 1, r)
    })?;
    out.write_all("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n".as_bytes()).at(path)?;
    write!(
        out,
        "`{},`{},`{},`0.00,`{},`{},`{}\r\n",
        n,
        money(settle),
        money(refunds),
        fine5(fees),
        money(orders),
        money(refunds)
    )
    .at(path)?;
    Ok(n)
}
