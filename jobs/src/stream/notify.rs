//! The channels' own notifications, as the platform's gateway receives them: after it has
//! checked the signature (and, for WeChat Pay, decrypted the `resource`), the gateway may
//! publish the notification itself under the channel's name instead of rewriting it into the
//! documented schema, and the stream reads it into the same canonical record as the channel's
//! bill row would be (the columns of `formats/wechat_trade_v3.toml` and
//! `formats/alipay_trade_v1.toml`).
//!
//! Sources:
//! - WeChat Pay API v3, 支付通知 (`TRANSACTION.SUCCESS`; the decrypted resource: `mchid` or
//!   `sp_mchid`/`sub_mchid`, `out_trade_no`, `transaction_id`, `trade_state`, `success_time`,
//!   `amount.total` in fen, `promotion_detail[].type` `CASH`/`NOCASH`) and 退款结果通知
//!   (`REFUND.SUCCESS`/`.ABNORMAL`/`.CLOSED`: `out_refund_no`, `refund_id`, `refund_status`,
//!   `success_time` only on success, `amount.refund` in fen); the resource samples in the
//!   public unit tests of SKIT.FlurlHttpClient.Wechat (TenpayV3).
//! - Alipay Open Platform, 异步通知 (`notify_type` `trade_status_sync`: `out_trade_no`,
//!   `trade_no`, `trade_status`, `total_amount` and `receipt_amount` in yuan as text,
//!   `gmt_payment` as `yyyy-MM-dd HH:mm:ss` Beijing time; a refund's notification carries
//!   `out_biz_no`, `gmt_refund` and `refund_fee`, the trade's refunds so far).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::record::{id, money, Record, Side, TxnType};

/// WeChat Pay API v3's payment or refund notification (its decrypted `resource`). Fields the
/// channel adds later are ignored; those read are checked.
#[derive(Debug, Clone, Deserialize)]
pub struct WechatV3 {
    #[serde(default)]
    mchid: Option<String>,
    #[serde(default)]
    sp_mchid: Option<String>,
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    transaction_id: Option<String>,
    #[serde(default)]
    trade_state: Option<String>,
    #[serde(default)]
    out_refund_no: Option<String>,
    #[serde(default)]
    refund_id: Option<String>,
    #[serde(default)]
    refund_status: Option<String>,
    #[serde(default)]
    success_time: Option<String>,
    amount: WechatAmount,
    #[serde(default)]
    promotion_detail: Vec<WechatPromotion>,
}

/// Amounts in fen (the currency's hundredths), as integers.
#[derive(Debug, Clone, Deserialize)]
struct WechatAmount {
    #[serde(default)]
    total: Option<i64>,
    #[serde(default)]
    refund: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct WechatPromotion {
    #[serde(default)]
    amount: i64,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// Fen as yuan.
fn fen(field: &str, v: i64) -> Result<Decimal, String> {
    if v < 0 {
        return Err(format!("wechat_pay_v3: {field} {v} is negative"));
    }
    Ok(Decimal::new(v, 2))
}

impl WechatV3 {
    /// The canonical record: a payment (`trade_state`) or a refund (`refund_status`).
    pub fn record(&self, side: Side, channel: String) -> Result<Record, String> {
        let time = |what: &str, state: &str| -> Result<DateTime<Utc>, String> {
            let t = self.success_time.as_deref().ok_or_else(|| {
                format!(
                    "wechat_pay_v3: a {what} notification in state {state} without success_time \
                     (nothing happened to reconcile)"
                )
            })?;
            DateTime::parse_from_rfc3339(t.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("wechat_pay_v3: success_time {t:?}: {e}"))
        };
        let merchant_id = id(self.mchid.clone()).or_else(|| id(self.sp_mchid.clone()));
        if let Some(state) = &self.refund_status {
            let refund = (self.amount.refund)
                .ok_or("wechat_pay_v3: a refund notification without amount.refund")?;
            let amount = fen("amount.refund", refund)?;
            return Ok(Record {
                side,
                channel,
                txn_type: TxnType::Refund,
                merchant_order_id: id(self.out_trade_no.clone()),
                // As the bill's refund rows: 微信退款单号 and 商户退款单号.
                channel_txn_id: id(self.refund_id.clone()),
                refund_id: id(self.out_refund_no.clone()),
                platform_order_id: None,
                amount,
                fee: None,
                received: Some(amount),
                refunded_amount: None,
                status: state.trim().to_string(),
                event_time: time("refund", state)?,
                merchant_id,
            });
        }
        let state = self
            .trade_state
            .as_deref()
            .ok_or("wechat_pay_v3: neither trade_state (a payment) nor refund_status (a refund)")?;
        let total = (self.amount.total)
            .ok_or("wechat_pay_v3: a payment notification without amount.total")?;
        // 应结订单金额: the order less the no-cash coupons (免充值券) the merchant funds.
        let no_cash: i64 = (self.promotion_detail.iter())
            .filter(|p| p.kind.as_deref() == Some("NOCASH"))
            .map(|p| p.amount)
            .sum();
        Ok(Record {
            side,
            channel,
            txn_type: TxnType::Pay,
            merchant_order_id: id(self.out_trade_no.clone()),
            channel_txn_id: id(self.transaction_id.clone()),
            refund_id: None,
            platform_order_id: None,
            amount: fen("amount.total", total)?,
            fee: None,
            received: Some(fen("amount.total less NOCASH coupons", total - no_cash)?),
            refunded_amount: None,
            status: state.trim().to_string(),
            event_time: time("payment", state)?,
            merchant_id,
        })
    }
}

/// Alipay's asynchronous notification: its form parameters, as text. Parameters read are
/// checked; the rest (the signature, the buyer, the fund bills) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct AlipayNotify {
    #[serde(default)]
    notify_type: Option<String>,
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    trade_no: Option<String>,
    #[serde(default)]
    trade_status: Option<String>,
    #[serde(default)]
    total_amount: Option<String>,
    #[serde(default)]
    receipt_amount: Option<String>,
    #[serde(default)]
    gmt_payment: Option<String>,
    #[serde(default)]
    gmt_refund: Option<String>,
    #[serde(default)]
    out_biz_no: Option<String>,
}

impl AlipayNotify {
    /// The canonical record of a paid trade. A refund's notification is refused with its
    /// reason: it carries the trade's refunds so far (`refund_fee`), not this refund's amount.
    pub fn record(&self, side: Side, channel: String) -> Result<Record, String> {
        if let Some(t) = self
            .notify_type
            .as_deref()
            .filter(|t| *t != "trade_status_sync")
        {
            return Err(format!(
                "alipay_notify: notify_type {t:?} is not trade_status_sync"
            ));
        }
        if self.gmt_refund.is_some() || self.out_biz_no.is_some() {
            return Err(
                "alipay_notify: a refund's notification says the trade's refunds so far \
                        (refund_fee), not this refund's amount: publish refunds in the \
                        documented schema (txn_type REFUND) from the refund's response"
                    .into(),
            );
        }
        let status = self.trade_status.as_deref().unwrap_or_default();
        if !matches!(status, "TRADE_SUCCESS" | "TRADE_FINISHED") {
            return Err(format!(
                "alipay_notify: trade_status {status:?} is not a payment (the bill lists paid \
                 trades: TRADE_SUCCESS, TRADE_FINISHED)"
            ));
        }
        let total = (self.total_amount.as_deref())
            .ok_or("alipay_notify: a payment without total_amount")?;
        let paid =
            (self.gmt_payment.as_deref()).ok_or("alipay_notify: a payment without gmt_payment")?;
        let local =
            NaiveDateTime::parse_from_str(paid.trim(), "%Y-%m-%d %H:%M:%S").map_err(|e| {
                format!("alipay_notify: gmt_payment {paid:?} (yyyy-MM-dd HH:mm:ss): {e}")
            })?;
        let event_time = chrono_tz::Asia::Shanghai
            .from_local_datetime(&local)
            .single()
            .ok_or_else(|| format!("alipay_notify: gmt_payment {paid:?} is not a Beijing time"))?
            .with_timezone(&Utc);
        Ok(Record {
            side,
            channel,
            txn_type: TxnType::Pay,
            merchant_order_id: id(self.out_trade_no.clone()),
            channel_txn_id: id(self.trade_no.clone()),
            refund_id: None,
            platform_order_id: None,
            amount: money("total_amount", total)?,
            fee: None,
            received: (self.receipt_amount.as_deref())
                .map(|r| money("receipt_amount", r))
                .transpose()?,
            refunded_amount: None,
            // The bill lists paid trades as SUCCESS; TRADE_FINISHED (no refunds possible any
            // more) is the same payment told again, and is counted once.
            status: "SUCCESS".into(),
            event_time,
            merchant_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::parse;
    use super::*;

    /// A payment notification's decrypted resource, shaped as WeChat Pay documents it.
    const WECHAT_PAY: &str = r#"{"channel": "wechat", "wechat_pay_v3": {
        "transaction_id": "4200000123202611210000000001", "mchid": "1230000109",
        "appid": "wxd678efh567hg6787", "out_trade_no": "M000123", "trade_type": "JSAPI",
        "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "CMC",
        "success_time": "2026-11-21T23:59:58+08:00", "payer": {"openid": "oUpF8uMuAJO"},
        "amount": {"total": 10000, "payer_total": 9000, "currency": "CNY", "payer_currency": "CNY"},
        "promotion_detail": [
            {"coupon_id": "109519", "type": "NOCASH", "amount": 700, "scope": "GLOBAL"},
            {"coupon_id": "109520", "type": "CASH", "amount": 300, "scope": "GLOBAL"}
        ]}}"#;

    const WECHAT_REFUND: &str = r#"{"channel": "wechat", "wechat_pay_v3": {
        "mchid": "1230000109", "transaction_id": "4200000123202611210000000001",
        "out_trade_no": "M000123", "refund_id": "50000000382026112200000000001",
        "out_refund_no": "R000123", "refund_status": "SUCCESS",
        "success_time": "2026-11-22T09:00:01+08:00", "user_received_account": "支付用户零钱",
        "amount": {"total": 10000, "refund": 2550, "payer_total": 9000, "payer_refund": 2295}}}"#;

    const ALIPAY_PAY: &str = r#"{"channel": "alipay", "alipay_notify": {
        "notify_time": "2026-11-21 10:00:05", "notify_type": "trade_status_sync",
        "notify_id": "ac05099524730693a8b330c5ecf72da9786", "app_id": "2014072300007148",
        "charset": "utf-8", "version": "1.0", "sign_type": "RSA2", "sign": "601510b7970e52cc63db0f4497cf70e",
        "trade_no": "2026112122001404330000121536", "out_trade_no": "A000042",
        "buyer_id": "2088102122524333", "seller_id": "2088101106499364",
        "trade_status": "TRADE_SUCCESS", "total_amount": "20.00", "receipt_amount": "19.80",
        "gmt_create": "2026-11-21 09:59:58", "gmt_payment": "2026-11-21 10:00:04"}}"#;

    #[test]
    fn a_wechat_pay_v3_payment_and_refund_read_as_the_bills_rows() {
        let p = parse(Side::Channel, WECHAT_PAY.as_bytes()).expect("payment");
        assert_eq!(p.txn_type, TxnType::Pay);
        assert_eq!(p.amount.to_string(), "100.00");
        // The no-cash coupon is not settled to the merchant; the cash one is.
        assert_eq!(p.received.map(|r| r.to_string()).as_deref(), Some("93.00"));
        assert_eq!(
            p.match_key("merchant_order_id").as_deref(),
            Some("PAY:M000123")
        );
        assert_eq!(
            p.day("Asia/Shanghai".parse().expect("zone")).to_string(),
            "2026-11-21"
        );
        assert_eq!(p.merchant_id.as_deref(), Some("1230000109"));
        let r = parse(Side::Channel, WECHAT_REFUND.as_bytes()).expect("refund");
        assert_eq!(r.txn_type, TxnType::Refund);
        assert_eq!(r.amount.to_string(), "25.50");
        assert_eq!(
            r.match_key("merchant_order_id").as_deref(),
            Some("REFUND:R000123")
        );
        assert_eq!(
            r.channel_txn_id.as_deref(),
            Some("50000000382026112200000000001")
        );
        assert_eq!(r.status, "SUCCESS");
    }

    #[test]
    fn an_alipay_payment_reads_as_the_bills_row_and_its_finish_is_the_same_record() {
        let p = parse(Side::Channel, ALIPAY_PAY.as_bytes()).expect("payment");
        assert_eq!(p.amount.to_string(), "20.00");
        assert_eq!(p.received.map(|r| r.to_string()).as_deref(), Some("19.80"));
        assert_eq!(
            p.channel_txn_id.as_deref(),
            Some("2026112122001404330000121536")
        );
        assert_eq!(p.event_time.to_rfc3339(), "2026-11-21T02:00:04+00:00");
        let finished = ALIPAY_PAY
            .replace("TRADE_SUCCESS", "TRADE_FINISHED")
            .replace("2026-11-21 10:00:05", "2026-12-21 10:00:05");
        let f = parse(Side::Channel, finished.as_bytes()).expect("finished");
        assert_eq!(p.fingerprint(), f.fingerprint(), "counted once");
    }

    #[test]
    fn a_notification_that_cannot_be_reconciled_says_why() {
        let refund = ALIPAY_PAY.replace(
            r#""gmt_payment""#,
            r#""out_biz_no": "R1", "refund_fee": "5.00", "gmt_refund": "2026-11-21 11:00:00.000", "x""#,
        );
        let cases = [
            (refund, Side::Channel, "refunds so far"),
            (
                ALIPAY_PAY.replace("TRADE_SUCCESS", "TRADE_CLOSED"),
                Side::Channel,
                "not a payment",
            ),
            (
                ALIPAY_PAY.replace("2026-11-21 10:00:04", "2026/11/21 10:00"),
                Side::Channel,
                "gmt_payment",
            ),
            (
                ALIPAY_PAY.replace(r#""total_amount": "20.00""#, r#""total_amount": "20.005""#),
                Side::Channel,
                "more than two decimals",
            ),
            (
                WECHAT_REFUND
                    .replace(r#""SUCCESS""#, r#""ABNORMAL""#)
                    .replace(r#""success_time": "2026-11-22T09:00:01+08:00", "#, ""),
                Side::Channel,
                "without success_time",
            ),
            (
                WECHAT_PAY.replace(r#""trade_state": "SUCCESS","#, ""),
                Side::Channel,
                "neither trade_state",
            ),
            (WECHAT_PAY.to_string(), Side::Platform, "platform's subject"),
            (
                WECHAT_PAY.replace(
                    r#""channel": "wechat","#,
                    r#""channel": "wechat", "amount": "1.00","#,
                ),
                Side::Channel,
                "amount beside",
            ),
        ];
        for (text, side, why) in cases {
            let e = parse(side, text.as_bytes()).expect_err(&text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
