#!/usr/bin/env python3
"""Writes the example bills in formats/examples/, each in its channel's real layout. The files
are committed; this script documents how they were made and remakes them byte for byte."""
import io, zipfile
from pathlib import Path

HERE = Path(__file__).parent

class GbkName(zipfile.ZipInfo):
    """A member whose name is written as GBK bytes without the UTF-8 flag, as Alipay does."""
    def _encodeFilenameFlags(self):
        return self.filename.encode("gbk"), self.flag_bits & ~0x800

def zip_gbk(path, members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members:
            info = GbkName(name, date_time=(2026, 11, 21, 9, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text.encode("gbk"))
    path.write_bytes(buf.getvalue())

# Alipay trade bill: 25 columns, trailing tabs on long numbers, CRLF.
ALIPAY_HEAD = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
rows = [
    ("2026112022001400001001", "ORD20261120000001", "交易", "会员月卡", "2026-11-20 08:01:10", "2026-11-20 08:01:15", "199.00", "199.00", "0.00", "", "-1.19", ""),
    ("2026112022001400001002", "ORD20261120000002", "交易", "咖啡,大杯", "2026-11-20 12:30:00", "2026-11-20 12:30:02", "32.50", "30.00", "2.50", "", "-0.20", "门店扫码"),
    ("2026112022001400001003", "ORD20261120000003", "交易", "年度会员", "2026-11-20 23:59:55", "2026-11-20 23:59:58", "1288.00", "1288.00", "0.00", "", "-7.73", ""),
    ("2026111922001400000990", "ORD20261119000990", "退款", "会员月卡", "2026-11-20 10:00:00", "2026-11-20 10:00:03", "-199.00", "-199.00", "0.00", "RF20261120000001", "1.19", "用户申请退款"),
]
lines = [
    "#支付宝业务明细查询", "#账号：[20881234567890120156]",
    "#起始日期：[2026年11月20日 00:00:00]   终止日期：[2026年11月21日 00:00:00]",
    "#-----------------------------------------业务明细列表----------------------------------------",
    ALIPAY_HEAD,
]
for (tid, oid, kind, item, created, done, amt, recv, disc, refund, fee, memo) in rows:
    q = lambda v: f'"{v}"' if "," in v else v
    lines.append(f"{tid}\t,{oid}\t,{kind},{q(item)},{created},{done},\t,\t,\t,\t,ab***@example.com\t,{q(amt)},{q(recv)},0.00,0.00,0.00,{disc},0.00,,0.00\t,0.00,{refund}\t,{fee},0.00,{memo}")
lines += [
    "#-----------------------------------------业务明细列表结束------------------------------------",
    "#交易合计：3笔，商家实收共1517.00元，商家优惠共2.50元",
    "#退款合计：1笔，商家实收退款共-199.00元，商家优惠退款共0.00元",
    "#导出时间：[2026年11月21日 09:00:00]",
]
summary = "\r\n".join([
    "#支付宝业务汇总查询", "#账号：[20881234567890120156]",
    "#起始日期：[2026年11月20日 00:00:00]   终止日期：[2026年11月21日 00:00:00]",
    "#-----------------------------------------业务汇总列表----------------------------------------",
    "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）",
    ",,3,1,1519.50,1318.00,0.00,2.50,0.00,-7.93,0.00,1310.07",
    "合计,,3,1,1519.50,1318.00,0.00,2.50,0.00,-7.93,0.00,1310.07",
    "#-----------------------------------------业务汇总列表结束------------------------------------",
    "#导出时间：[2026年11月21日 09:00:00]", ""])
zip_gbk(HERE / "20881234567890120156_20261120.csv.zip", [
    ("20881234567890120156_20261120_业务明细.csv", "\r\n".join(lines) + "\r\n"),
    ("20881234567890120156_20261120_业务明细(汇总).csv", summary),
])

# Alipay fund bill: 12 columns; fees and withdrawals are rows of their own.
FUND_HEAD = "账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注"
fund = [
    ("20261120100001", "2026112022001400001001", "ORD20261120000001", "会员月卡", "2026-11-20 08:01:15", "ab***@example.com", "199.00", "", "10199.00", "支付宝", "在线支付", ""),
    ("20261120100002", "2026112022001400001001", "ORD20261120000001", "服务费", "2026-11-20 08:01:15", "支付宝", "", "-1.19", "10197.81", "支付宝", "收费", "交易服务费"),
    ("20261120100003", "2026111922001400000990", "ORD20261119000990", "会员月卡", "2026-11-20 10:00:03", "ab***@example.com", "", "-199.00", "9998.81", "支付宝", "交易退款", "退款"),
    ("20261120100004", "2026112022001400001002", "ORD20261120000002", "咖啡", "2026-11-20 12:30:02", "cd***@example.com", "32.50", "", "10031.31", "支付宝", "交易付款", ""),
    ("20261120100005", "", "", "提现", "2026-11-20 18:00:00", "招商银行(1234)", "", "-5000.00", "5031.31", "支付宝", "提现", "日终提现"),
]
lines = ["#支付宝账务明细查询", "#账号：[20881234567890120156]",
         "#起始日期：[2026年11月20日 00:00:00]   终止日期：[2026年11月21日 00:00:00]",
         "#-----------------------------------------账务明细列表----------------------------------------", FUND_HEAD]
for r in fund:
    lines.append(",".join(f"{v}\t" if v.isdigit() and len(v) > 11 else v for v in r))
lines += ["#-----------------------------------------账务明细列表结束------------------------------------",
          "#支出合计：3笔，共-5200.19元", "#收入合计：2笔，共231.50元", "#导出时间：[2026年11月21日 09:00:00]"]
zip_gbk(HERE / "20881234567890120156_20261120_fund.csv.zip", [
    ("20881234567890120156_20261120_账务明细.csv", "\r\n".join(lines) + "\r\n"),
])

# WeChat Pay trade bill, 27 columns (v3), UTF-8, CRLF, backticks.
V3_HEAD = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
def bt(vals): return ",".join("`" + v for v in vals)
v3 = [
    ["2026-11-20 09:15:02", "wx8888888888888888", "1900000109", "0", "", "4200001234202611200000000001", "WX20261120000001", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "JSAPI", "SUCCESS", "CMB_DEBIT", "CNY", "88.00", "0.00", "0", "0", "0.00", "0.00", "", "", "午餐套餐", "", "0.52800", "0.60%", "88.00", "0.00", ""],
    ["2026-11-20 13:40:11", "wx8888888888888888", "1900000109", "0", "", "4200001234202611200000000002", "WX20261120000002", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6p", "NATIVE", "SUCCESS", "OTHERS", "CNY", "1200.00", "0.00", "0", "0", "0.00", "0.00", "", "", "年卡", "", "7.20000", "0.60%", "1200.00", "0.00", ""],
    ["2026-11-20 16:05:45", "wx8888888888888888", "1900000109", "0", "", "4200001234202611190000000099", "WX20261119000099", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6q", "JSAPI", "REFUND", "CMB_DEBIT", "CNY", "0.00", "0.00", "50300001022026112000000001", "WXR20261120000001", "45.00", "0.00", "ORIGINAL", "SUCCESS", "早餐", "", "-0.27000", "0.60%", "0.00", "45.00", ""],
]
text = V3_HEAD + "\r\n" + "".join(bt(r) + "\r\n" for r in v3)
text += "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n"
text += bt(["3", "1288.00", "45.00", "0.00", "7.45800", "1288.00", "45.00"]) + "\r\n"
(HERE / "tradebill_20261120.csv").write_bytes(text.encode("utf-8"))

# WeChat Pay trade bill, the older 24-column layout, 5-field summary.
V2_HEAD = "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率"
v2 = [
    ["2019-06-01 10:11:12", "wx2421b1c4370ec43b", "10000100", "0", "", "4200000300201906010000000001", "OLD20190601000001", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "JSAPI", "SUCCESS", "CFT", "CNY", "10.00", "0.00", "0", "0", "0.00", "0.00", "", "", "测试商品", "", "0.06000", "0.60%"],
    ["2019-06-01 11:00:00", "wx2421b1c4370ec43b", "10000100", "0", "", "4200000300201905310000000009", "OLD20190531000009", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "JSAPI", "REFUND", "CFT", "CNY", "0.00", "0.00", "50000000382019060100000001", "OLDR20190601000001", "20.00", "0.00", "ORIGINAL", "SUCCESS", "测试商品", "", "-0.12000", "0.60%"],
]
text = V2_HEAD + "\r\n" + "".join(bt(r) + "\r\n" for r in v2)
text += "总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额\r\n" + bt(["2", "10.00", "20.00", "0.00", "-0.06000"]) + "\r\n"
(HERE / "wechat_v2_20190601.csv").write_bytes(text.encode("utf-8"))

# Stripe balance transactions (Dashboard export header names).
stripe = '''"id","Type","Source","Amount","Fee","Net","Currency","Created (UTC)","Available On (UTC)","Description","Customer Facing Amount","Customer Facing Currency","Transfer","Transfer Date (UTC)","Transfer Group","order_id (metadata)"
"txn_3Q1aaa","charge","ch_3Q1aaa","49.99","1.75","48.24","usd","2026-11-20 14:02","2026-11-22 00:00","Order 1001","49.99","usd","","","","1001"
"txn_3Q1bbb","payment","py_3Q1bbb","1,250.00","36.55","1,213.45","usd","2026-11-20 15:30","2026-11-22 00:00","Order 1002","1250.00","usd","","","","1002"
"txn_3Q1ccc","refund","re_3Q1ccc","-19.99","0.00","-19.99","usd","2026-11-20 16:45","2026-11-22 00:00","REFUND FOR CHARGE (Order 0990)","-19.99","usd","","","","0990"
"txn_3Q1ddd","payout","po_3Q1ddd","-5,000.00","0.00","-5,000.00","usd","2026-11-20 18:00","2026-11-20 18:00","STRIPE PAYOUT","","","","","",""
"txn_3Q1eee","stripe_fee","","-2.00","0.00","-2.00","usd","2026-11-20 23:00","2026-11-22 00:00","Billing - Usage Fee","","","","","",""
'''
(HERE / "stripe_balance_2026-11-20.csv").write_text(stripe, encoding="utf-8")

# Acquirer settlement details (gross debit/credit columns).
acq = """Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),Gross Credit (GC),Exchange Rate,Net Currency,Net Debit (NC),Net Credit (NC),Commission (NC),Markup (NC),Scheme Fees (NC),Interchange (NC),Payment Method Variant,Modification Merchant Reference,Batch Number
ShopCo,ShopCoEU,8816178952346541,EU-20261120-0001,visa,2026-11-20 09:12:45,CET,Settled,8816178952346541,EUR,,120.00,1,EUR,,119.34,0.12,0.00,0.06,0.48,visadebit,,412
ShopCo,ShopCoEU,8816178952346542,EU-20261120-0002,mc,2026-11-20 10:30:00,CET,Settled,8816178952346542,EUR,,35.50,1,EUR,,35.30,0.04,0.00,0.02,0.14,mccredit,,412
ShopCo,ShopCoEU,8816178952346543,EU-20261118-0077,visa,2026-11-20 11:05:10,CET,Refunded,8826178952341111,EUR,60.00,,1,EUR,60.06,,0.06,0.00,0.00,0.00,visadebit,RF-EU-0077,412
ShopCo,ShopCoEU,,,,2026-11-20 23:00:00,CET,Fee,,EUR,,,1,EUR,2.50,,,,,,,,412
ShopCo,ShopCoEU,,,,2026-11-20 23:59:00,CET,MerchantPayout,,EUR,,,1,EUR,92.08,,,,,,,,412
"""
(HERE / "settlement_detail_report_batch_412.csv").write_text(acq, encoding="utf-8")

# camt.053.001.08 statement: two credits (one with an entity in its text) and one debit.
camt = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <BkToCstmrStmt>
    <GrpHdr>
      <MsgId>STMT-20261120-0001</MsgId>
      <CreDtTm>2026-11-21T06:00:00+01:00</CreDtTm>
    </GrpHdr>
    <Stmt>
      <Id>DE89370400440532013000-20261120</Id>
      <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct>
      <TxsSummry>
        <TtlNtries><NbOfNtries>3</NbOfNtries><Sum>1450.25</Sum></TtlNtries>
        <TtlCdtNtries><NbOfNtries>2</NbOfNtries><Sum>1350.25</Sum></TtlCdtNtries>
        <TtlDbtNtries><NbOfNtries>1</NbOfNtries><Sum>100.00</Sum></TtlDbtNtries>
      </TxsSummry>
      <Ntry>
        <Amt Ccy="EUR">1250.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><DtTm>2026-11-20T09:30:00+01:00</DtTm></BookgDt>
        <ValDt><Dt>2026-11-20</Dt></ValDt>
        <AcctSvcrRef>BANKREF-0001</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>
        <NtryDtls><TxDtls>
          <Refs><EndToEndId>INV-2026-1120-01</EndToEndId></Refs>
          <RmtInf><Ustrd>Invoice 01 Müller &amp; Söhne</Ustrd></RmtInf>
        </TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">100.25</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>2026-11-20</Dt></BookgDt>
        <AcctSvcrRef>BANKREF-0002</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>INV-2026-1120-02</EndToEndId></Refs></TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">100.00</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><DtTm>2026-11-20T15:00:00+01:00</DtTm></BookgDt>
        <AcctSvcrRef>BANKREF-0003</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>REFUND-2026-0990</EndToEndId></Refs></TxDtls></NtryDtls>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"""
(HERE / "camt053_20261120.xml").write_text(camt, encoding="utf-8")
