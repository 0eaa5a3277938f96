//! The stream's messages: one JSON object per record, on the platform's subject (orders paid,
//! refunds made) or the channel's (the payment and refund notifications the platform's
//! gateway received). README.md ("Real-time reconciliation") documents the schema; a message
//! that does not fit it is kept as a rejection with its position and reason, never dropped.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Which side a record is on: the subject (or topic) it came from says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The platform's own records.
    Platform,
    /// The channel's notifications.
    Channel,
}

impl Side {
    /// Both sides.
    pub const BOTH: [Side; 2] = [Side::Platform, Side::Channel];

    /// As the state and the outputs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Platform => "platform",
            Side::Channel => "channel",
        }
    }

    /// `s` as a side.
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "platform" => Some(Side::Platform),
            "channel" => Some(Side::Channel),
            _ => None,
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Platform => Side::Channel,
            Side::Channel => Side::Platform,
        }
    }
}

/// A payment or a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnType {
    #[serde(rename = "PAY")]
    Pay,
    #[serde(rename = "REFUND")]
    Refund,
}

impl TxnType {
    /// As the canonical tables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnType::Pay => "PAY",
            TxnType::Refund => "REFUND",
        }
    }
}

/// One message as published: the documented schema, or a channel's own notification as the
/// gateway received it (after checking its signature and decrypting it) under the channel's
/// name. Unknown fields are refused (a typo in a producer is found on its first message, not
/// after a day of NULL columns).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    channel: String,
    #[serde(default)]
    txn_type: Option<TxnType>,
    #[serde(default)]
    merchant_order_id: Option<String>,
    #[serde(default)]
    channel_txn_id: Option<String>,
    #[serde(default)]
    refund_id: Option<String>,
    #[serde(default)]
    platform_order_id: Option<String>,
    #[serde(default)]
    amount: Option<String>,
    #[serde(default)]
    fee: Option<String>,
    #[serde(default)]
    received: Option<String>,
    #[serde(default)]
    refunded_amount: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    event_time: Option<String>,
    #[serde(default)]
    merchant_id: Option<String>,
    /// WeChat Pay API v3's payment or refund notification, its `resource` decrypted.
    #[serde(default)]
    wechat_pay_v3: Option<super::notify::WechatV3>,
    /// Alipay's asynchronous notification (`trade_status_sync`), its form parameters as a JSON
    /// object of strings.
    #[serde(default)]
    alipay_notify: Option<super::notify::AlipayNotify>,
}

impl Wire {
    /// The documented schema's fields that are present (none may be beside a notification).
    fn flat_fields(&self) -> Vec<&'static str> {
        let present = [
            ("txn_type", self.txn_type.is_some()),
            ("merchant_order_id", self.merchant_order_id.is_some()),
            ("channel_txn_id", self.channel_txn_id.is_some()),
            ("refund_id", self.refund_id.is_some()),
            ("platform_order_id", self.platform_order_id.is_some()),
            ("amount", self.amount.is_some()),
            ("fee", self.fee.is_some()),
            ("received", self.received.is_some()),
            ("refunded_amount", self.refunded_amount.is_some()),
            ("status", self.status.is_some()),
            ("event_time", self.event_time.is_some()),
            ("merchant_id", self.merchant_id.is_some()),
        ];
        present
            .iter()
            .filter(|(_, p)| *p)
            .map(|(f, _)| *f)
            .collect()
    }
}

/// A record the stream reconciles, in the canonical columns of the batch job's tables
/// (`normalized/` for the channel side, `platform/` for the platform side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub side: Side,
    pub channel: String,
    pub txn_type: TxnType,
    pub merchant_order_id: Option<String>,
    pub channel_txn_id: Option<String>,
    pub refund_id: Option<String>,
    pub platform_order_id: Option<String>,
    /// Exact, scale 2.
    pub amount: Decimal,
    pub fee: Option<Decimal>,
    pub received: Option<Decimal>,
    pub refunded_amount: Option<Decimal>,
    pub status: String,
    /// When it happened (event time), UTC.
    pub event_time: DateTime<Utc>,
    pub merchant_id: Option<String>,
}

/// Where a message came from: its partition (a NATS subject, a Kafka topic-partition) and its
/// position in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub partition: String,
    pub offset: u64,
}

/// A message that does not fit the schema: kept with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub side: Side,
    pub position: Position,
    pub reason: String,
    pub raw: String,
}

/// Money as the canonical tables hold it: exact, at most two decimals.
pub(super) fn money(field: &str, s: &str) -> Result<Decimal, String> {
    let d: Decimal = s
        .trim()
        .parse()
        .map_err(|_| format!("{field} {s:?} is not a decimal number"))?;
    if d.scale() > 2 && d.normalize().scale() > 2 {
        return Err(format!("{field} {s:?} has more than two decimals"));
    }
    let mut d = d;
    d.rescale(2);
    Ok(d)
}

fn opt_money(field: &str, s: &Option<String>) -> Result<Option<Decimal>, String> {
    s.as_deref().map(|s| money(field, s)).transpose()
}

/// A present, non-blank identifier.
pub(super) fn id(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Parses one message from `side`: the record, or why not.
pub fn parse(side: Side, payload: &[u8]) -> Result<Record, String> {
    let w: Wire = serde_json::from_slice(payload).map_err(|e| format!("not a record: {e}"))?;
    let channel = w.channel.trim().to_string();
    if channel.is_empty() {
        return Err("channel is empty".into());
    }
    if w.wechat_pay_v3.is_some() || w.alipay_notify.is_some() {
        if side == Side::Platform {
            return Err("a channel's notification on the platform's subject".into());
        }
        let flat = w.flat_fields();
        if !flat.is_empty() {
            return Err(format!(
                "{} beside the channel's notification (the notification says them)",
                flat.join(", ")
            ));
        }
        let r = match (&w.wechat_pay_v3, &w.alipay_notify) {
            (Some(n), None) => n.record(side, channel)?,
            (None, Some(n)) => n.record(side, channel)?,
            _ => return Err("both wechat_pay_v3 and alipay_notify in one message".into()),
        };
        return checked(r);
    }
    let required = |field: &str, v: Option<String>| v.ok_or(format!("missing field `{field}`"));
    let txn_type = w.txn_type.ok_or("missing field `txn_type`")?;
    let amount = required("amount", w.amount)?;
    let status = required("status", w.status)?;
    let event_time = required("event_time", w.event_time)?;
    let event_time = DateTime::parse_from_rfc3339(event_time.trim())
        .map_err(|e| {
            format!("event_time {event_time:?} is not an RFC 3339 time with its offset: {e}")
        })?
        .with_timezone(&Utc);
    checked(Record {
        side,
        channel,
        txn_type,
        merchant_order_id: id(w.merchant_order_id),
        channel_txn_id: id(w.channel_txn_id),
        refund_id: id(w.refund_id),
        platform_order_id: id(w.platform_order_id),
        amount: money("amount", &amount)?,
        fee: opt_money("fee", &w.fee)?,
        received: opt_money("received", &w.received)?,
        refunded_amount: opt_money("refunded_amount", &w.refunded_amount)?,
        status: status.trim().to_string(),
        event_time,
        merchant_id: id(w.merchant_id),
    })
}

/// `r` if it can be reconciled: the ids its key needs, a status.
fn checked(r: Record) -> Result<Record, String> {
    if r.status.is_empty() {
        return Err("status is empty".into());
    }
    match r.txn_type {
        TxnType::Refund if r.refund_id.is_none() => Err("a REFUND without refund_id".into()),
        TxnType::Pay if r.merchant_order_id.is_none() && r.channel_txn_id.is_none() => {
            Err("a PAY with neither merchant_order_id nor channel_txn_id".into())
        }
        _ => Ok(r),
    }
}

impl Record {
    /// The key both sides share, built as `sql/reconcile.sql` builds its `match_key` (the
    /// stream finds pairs by it; the SQL, run on every pair, decides their category).
    pub fn match_key(&self, match_on: &str) -> Option<String> {
        let part = |p: &Option<String>| p.as_deref().map(str::to_string);
        if match_on == "channel_txn_id" {
            return part(&self.channel_txn_id).map(|id| format!("{}:{id}", self.txn_type.as_str()));
        }
        match self.txn_type {
            TxnType::Refund => part(&self.refund_id).map(|id| format!("REFUND:{id}")),
            TxnType::Pay => part(&self.merchant_order_id).map(|id| format!("PAY:{id}")),
        }
    }

    /// The day it belongs to: its event time's date in the channel's time zone.
    pub fn day(&self, tz: Tz) -> NaiveDate {
        self.event_time.with_timezone(&tz).date_naive()
    }

    /// The record's content, hashed: a redelivered or republished message hashes the same,
    /// and is counted once.
    pub fn fingerprint(&self) -> String {
        self.canonical().1
    }

    /// The record as the state keeps it (JSON, its fields in a fixed order) and its
    /// fingerprint, the hash of that text.
    pub fn canonical(&self) -> (String, String) {
        let text = serde_json::to_string(self).unwrap_or_default();
        let fingerprint = hex::encode(&Sha256::digest(text.as_bytes())[..16]);
        (text, fingerprint)
    }

    /// Its event time in microseconds since the epoch.
    pub fn event_micros(&self) -> i64 {
        self.event_time.timestamp_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAY: &str = r#"{"channel":"wechat","txn_type":"PAY","merchant_order_id":"M1",
        "channel_txn_id":"420000","amount":"12.30","fee":"0.07","status":"SUCCESS",
        "event_time":"2026-11-21T23:59:59.500+08:00"}"#;

    #[test]
    fn a_message_parses_to_the_canonical_record_with_its_key_and_day() {
        let r = parse(Side::Channel, PAY.as_bytes()).expect("parses");
        assert_eq!(r.amount.to_string(), "12.30");
        assert_eq!(r.match_key("merchant_order_id").as_deref(), Some("PAY:M1"));
        assert_eq!(r.match_key("channel_txn_id").as_deref(), Some("PAY:420000"));
        let tz: Tz = "Asia/Shanghai".parse().expect("zone");
        assert_eq!(r.day(tz).to_string(), "2026-11-21");
        assert_eq!(r.day(chrono_tz::UTC).to_string(), "2026-11-21");
        // The same content hashes the same; another amount does not.
        let again = parse(Side::Channel, PAY.as_bytes()).expect("parses");
        assert_eq!(r.fingerprint(), again.fingerprint());
        let other = parse(Side::Channel, PAY.replace("12.30", "12.31").as_bytes()).expect("ok");
        assert_ne!(r.fingerprint(), other.fingerprint());
    }

    #[test]
    fn a_message_that_does_not_fit_says_why() {
        let cases = [
            ("{", "not a record"),
            (&PAY.replace("12.30", "12.305"), "more than two decimals"),
            (&PAY.replace("12.30", "twelve"), "not a decimal"),
            (&PAY.replace("+08:00", ""), "RFC 3339"),
            (&PAY.replace("\"fee\"", "\"fees\""), "unknown field `fees`"),
            (&PAY.replace("\"PAY\"", "\"REFUND\""), "without refund_id"),
        ];
        for (text, why) in cases {
            let e = parse(Side::Channel, text.as_bytes()).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
