//! A channel's table of `reckon.toml`: its bill, source and rules, and the rules parsed once.

use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;

/// One payment channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The channel's name, as written in output paths (`channel=NAME`).
    pub name: String,
    /// Bill format: a template name under `formats/` or a path to a template file.
    pub format: String,
    /// The bill's time zone: bill dates are days in it.
    #[serde(default = "default_tz")]
    pub time_zone: String,
    /// The key both sides share: `merchant_order_id` (default) or `channel_txn_id`.
    #[serde(default = "default_key")]
    pub match_key: String,
    /// One-sided records this close to midnight wait for the next day (seconds, default 300).
    #[serde(default = "default_window")]
    pub cut_window_secs: i64,
    /// Days a carried record may wait before it becomes missing (default 1).
    #[serde(default = "default_grace")]
    pub grace_days: i64,
    /// Largest accepted amount difference (decimal string, default exact: "0").
    #[serde(default)]
    pub amount_tolerance: Option<String>,
    /// Largest accepted amount difference as a fraction of the platform's amount ("0.001" is
    /// 0.1%, rounded to the cent); the larger of the two tolerances applies.
    #[serde(default)]
    pub amount_tolerance_rate: Option<String>,
    /// Contracted fee rate (decimal string, "0.006" is 0.6%); absent skips the fee check.
    #[serde(default)]
    pub fee_rate: Option<String>,
    /// How the channel rounds its fee to the cent: `half_up` (default), `half_even`, `down`
    /// or `up`.
    #[serde(default = "default_fee_rounding")]
    pub fee_rounding: String,
    /// Which of the bill's amounts is compared with the platform's: `order` (the order
    /// amount, default) or `received` (what the merchant received; the template must fill
    /// the canonical `received` column).
    #[serde(default = "default_compare_amount")]
    pub compare_amount: String,
    /// More rejected rows than this fails the bill (exit 3). Default 1000.
    #[serde(default = "default_max_rejected")]
    pub max_rejected_rows: u64,
    /// Per category, the count and amount past which a day is flagged in its summary
    /// (`thresholds.MISSING_IN_PLATFORM = { count = 10, amount = "500.00" }`).
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<String, Threshold>,
    /// The time of day (HH:MM, in the channel's zone, on the day after the bill date) by
    /// which the bill is due: a fetch that still finds none after it sends an alert.
    #[serde(default)]
    pub bill_deadline: Option<String>,
    /// Where the bill comes from.
    pub source: Source,
    /// How long the real-time mode (`reckon stream`) waits for a record's other side.
    #[serde(default)]
    pub stream: ChannelStream,
    /// The rules above, parsed once when the config is loaded (nothing parses them again).
    #[serde(skip)]
    pub rules: ChannelRules,
}

/// The real-time mode's waits for one channel (`[channel.stream]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelStream {
    /// How far apart (event time, seconds) the two sides of a record may be: a callback late
    /// after the payment, a platform write after the channel's (default 300).
    #[serde(default = "default_stream_window")]
    pub window_secs: u64,
    /// Added to the window before a one-sided record becomes a provisional difference, and
    /// after midnight before the day is closed (default 60).
    #[serde(default = "default_stream_grace")]
    pub grace_secs: u64,
}

fn default_stream_window() -> u64 {
    300
}

fn default_stream_grace() -> u64 {
    60
}

impl Default for ChannelStream {
    fn default() -> Self {
        ChannelStream {
            window_secs: default_stream_window(),
            grace_secs: default_stream_grace(),
        }
    }
}

/// A channel's rules as values: parsed and checked once, when the config is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRules {
    /// The bill's time zone.
    pub tz: Tz,
    /// The absolute amount tolerance (scale at most 2).
    pub tolerance: Decimal,
    /// The relative amount tolerance (scale at most 6).
    pub tolerance_rate: Option<Decimal>,
    /// The contracted fee rate (scale at most 6).
    pub fee_rate: Option<Decimal>,
    /// The thresholds.
    pub limits: Vec<Limit>,
    /// The time of day the bill is due, on the day after the bill date.
    pub deadline: Option<chrono::NaiveTime>,
}

impl Default for ChannelRules {
    fn default() -> Self {
        ChannelRules {
            tz: chrono_tz::UTC,
            tolerance: Decimal::ZERO,
            tolerance_rate: None,
            fee_rate: None,
            limits: Vec::new(),
            deadline: None,
        }
    }
}

/// A category's limits for one day: more rows than `count`, or a larger amount than
/// `amount` (the larger of the category's channel and platform sums), passes the threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Rows of the category.
    pub count: Option<u64>,
    /// Decimal string.
    pub amount: Option<String>,
}

/// A checked threshold: the category and its limits (the amount as a scale-2 mantissa).
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The category's name.
    pub category: String,
    /// See `Threshold::count`.
    pub count: Option<u64>,
    /// See `Threshold::amount`.
    pub amount: Option<i128>,
}

/// Where a channel's bill is fetched from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A local folder the channel's files are dropped into.
    DropFolder {
        /// The folder.
        path: String,
        /// The file name, with `{yyyymmdd}` / `{date}` for the bill date and `*` for anything.
        pattern: String,
    },
    /// A prefix in an object store (`s3://bucket/prefix/`, or `file://` / a path): the one
    /// object directly under it whose name matches `pattern`.
    ObjectStore {
        /// The prefix (`{yyyymmdd}` / `{date}` expand here too).
        url: String,
        /// As for `drop_folder`.
        pattern: String,
    },
    /// A file behind an HTTP(S) URL, with credentials from the environment.
    Https {
        /// The URL; `{yyyymmdd}` / `{date}` expand.
        url: String,
        /// `none`, `bearer` (the token in `token_env`) or `basic` (`user_env`, `password_env`).
        #[serde(default)]
        auth: HttpAuth,
        /// The variable holding the bearer token.
        token_env: Option<String>,
        /// The variable holding the basic-auth user.
        user_env: Option<String>,
        /// The variable holding the basic-auth password.
        password_env: Option<String>,
        /// HTTP statuses that mean "not published yet" (exit 75).
        #[serde(default = "default_not_ready_statuses")]
        not_ready_status: Vec<u16>,
        /// The raw file's name; default: the server's `Content-Disposition`, else the URL's
        /// last segment.
        file_name: Option<String>,
        /// Seconds for the whole download.
        #[serde(default = "default_fetch_timeout")]
        timeout_secs: u64,
    },
    /// Alipay OpenAPI: `alipay.data.dataservice.bill.downloadurl.query`, RSA2-signed (public-key
    /// mode).
    Alipay {
        /// The gateway.
        #[serde(default = "default_alipay_gateway")]
        gateway: String,
        /// The application's id.
        app_id: String,
        /// `trade` or `signcustomer`.
        #[serde(default = "default_alipay_bill_type")]
        bill_type: String,
        /// The application's private key (PEM, or the bare base64 Alipay's key tool gives):
        /// the name of a variable holding it ...
        private_key_env: Option<String>,
        /// ... or of a file holding it.
        private_key_file: Option<String>,
        /// Alipay's public key (PEM or bare base64), from a variable ...
        alipay_public_key_env: Option<String>,
        /// ... or a file.
        alipay_public_key_file: Option<String>,
        /// Seconds for each call and the download.
        #[serde(default = "default_fetch_timeout")]
        timeout_secs: u64,
    },
    /// WeChat Pay API v3: `GET /v3/bill/tradebill`, signed `WECHATPAY2-SHA256-RSA2048`.
    WechatpayV3 {
        /// The API's base URL.
        #[serde(default = "default_wechat_base_url")]
        base_url: String,
        /// The merchant id (mchid).
        mchid: String,
        /// The serial number of the merchant's API certificate.
        serial_no: String,
        /// The merchant's API private key (`apiclient_key.pem`), from a variable ...
        private_key_env: Option<String>,
        /// ... or a file.
        private_key_file: Option<String>,
        /// WeChat Pay's platform certificate or public key (PEM), from a variable ...
        platform_key_env: Option<String>,
        /// ... or a file.
        platform_key_file: Option<String>,
        /// The `Wechatpay-Serial` answers must carry (the platform certificate's serial or the
        /// public key's id); unchecked when unset.
        platform_serial: Option<String>,
        /// `ALL`, `SUCCESS` or `REFUND`.
        #[serde(default = "default_wechat_bill_type")]
        bill_type: String,
        /// Seconds for each call and the download.
        #[serde(default = "default_fetch_timeout")]
        timeout_secs: u64,
    },
}

/// Credentials for the HTTPS fetcher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token_env>`.
    Bearer,
    /// `Authorization: Basic` from `user_env` and `password_env`.
    Basic,
}

fn default_not_ready_statuses() -> Vec<u16> {
    vec![404]
}
fn default_fetch_timeout() -> u64 {
    300
}
fn default_alipay_gateway() -> String {
    "https://openapi.alipay.com/gateway.do".into()
}
fn default_alipay_bill_type() -> String {
    "trade".into()
}
fn default_wechat_base_url() -> String {
    "https://api.mch.weixin.qq.com".into()
}
fn default_wechat_bill_type() -> String {
    "ALL".into()
}

fn default_tz() -> String {
    "Asia/Shanghai".into()
}
fn default_key() -> String {
    "merchant_order_id".into()
}
fn default_window() -> i64 {
    300
}
fn default_grace() -> i64 {
    1
}
fn default_fee_rounding() -> String {
    "half_up".into()
}
fn default_compare_amount() -> String {
    "order".into()
}
fn default_max_rejected() -> u64 {
    1000
}

impl Channel {
    /// What the channel's records are matched (and bucketed) on.
    pub fn match_on(&self) -> reckon_udfs::MatchOn {
        reckon_udfs::MatchOn::parse(&self.match_key)
            .unwrap_or(reckon_udfs::MatchOn::MerchantOrderId)
    }

    /// A channel named `name` with `rules` (TOML lines of a `[[channel]]` table) and every
    /// other rule at its default; for planning SQL outside a run.
    pub fn with_rules(name: &str, rules: &str) -> std::result::Result<Channel, String> {
        let mut c: Channel = toml::from_str(&format!(
            "name = {name:?}\nformat = {name:?}\n\
             source = {{ kind = \"drop_folder\", path = \".\", pattern = \"*\" }}\n{rules}\n"
        ))
        .map_err(|e| e.to_string())?;
        c.validate()?;
        c.rules = c.parse_rules()?;
        Ok(c)
    }

    /// This channel with the rules a run recorded (for a replay of that run): zone, key, cut
    /// window, grace, tolerances, fee rate and rounding, the amount compared.
    pub fn replaying(&self, r: &crate::records::Rules) -> std::result::Result<Channel, String> {
        let mut c = self.clone();
        c.time_zone = r.time_zone.clone();
        c.match_key = r.match_key.clone();
        c.cut_window_secs = r.cut_window_secs;
        c.grace_days = r.grace_days;
        c.amount_tolerance = Some(r.tolerance.clone());
        c.amount_tolerance_rate = r.tolerance_rate.clone();
        c.fee_rate = r.fee_rate.clone();
        c.fee_rounding = r.fee_rounding.clone();
        c.compare_amount = r.compare_amount.clone();
        c.validate()?;
        c.rules = c.parse_rules()?;
        Ok(c)
    }

    /// When the bill of `date` is due (see `bill_deadline`), as an instant.
    pub fn bill_due(&self, date: chrono::NaiveDate) -> Option<chrono::DateTime<chrono::Utc>> {
        use chrono::TimeZone;
        let local = (date + chrono::Duration::days(1)).and_time(self.rules.deadline?);
        self.rules
            .tz
            .from_local_datetime(&local)
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// The rules as values; the error names the channel and the setting.
    pub(super) fn parse_rules(&self) -> std::result::Result<ChannelRules, String> {
        let named = |e: String| format!("channel {}: {e}", self.name);
        let tz = self.time_zone.parse().map_err(|_| {
            named(format!(
                "time_zone {:?} is not an IANA zone name",
                self.time_zone
            ))
        })?;
        let tolerance = match &self.amount_tolerance {
            None => Decimal::ZERO,
            Some(s) => {
                let d: Decimal = s
                    .parse()
                    .map_err(|_| named(format!("amount_tolerance {s:?} is not a decimal")))?;
                if d.is_sign_negative() || d.scale() > 2 {
                    return Err(named(format!(
                        "amount_tolerance {s:?} must be non-negative with at most 2 decimals"
                    )));
                }
                d
            }
        };
        let deadline = match &self.bill_deadline {
            None => None,
            Some(text) => Some(
                chrono::NaiveTime::parse_from_str(text, "%H:%M")
                    .map_err(|_| named(format!("bill_deadline {text:?} is not HH:MM")))?,
            ),
        };
        Ok(ChannelRules {
            tz,
            tolerance,
            tolerance_rate: rate(
                "amount_tolerance_rate",
                self.amount_tolerance_rate.as_deref(),
            )
            .map_err(named)?,
            fee_rate: rate("fee_rate", self.fee_rate.as_deref()).map_err(named)?,
            limits: self.limits().map_err(named)?,
            deadline,
        })
    }

    /// Checks the channel's rules; the error names the channel and the setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.parse_rules()?;
        if !["merchant_order_id", "channel_txn_id"].contains(&self.match_key.as_str()) {
            return Err(format!(
                "channel {}: match_key {:?} must be merchant_order_id or channel_txn_id",
                self.name, self.match_key
            ));
        }
        if reckon_udfs::FeeRounding::parse(&self.fee_rounding).is_none() {
            return Err(format!(
                "channel {}: fee_rounding {:?} must be one of {}",
                self.name,
                self.fee_rounding,
                reckon_udfs::FeeRounding::NAMES.join(", ")
            ));
        }
        if !["order", "received"].contains(&self.compare_amount.as_str()) {
            return Err(format!(
                "channel {}: compare_amount {:?} must be order or received",
                self.name, self.compare_amount
            ));
        }
        if self.cut_window_secs < 0 || self.cut_window_secs > 86_400 {
            return Err(format!(
                "channel {}: cut_window_secs {} must be between 0 and 86400",
                self.name, self.cut_window_secs
            ));
        }
        if self.grace_days < 0 {
            return Err(format!(
                "channel {}: grace_days must not be negative",
                self.name
            ));
        }
        Ok(())
    }

    /// The thresholds, checked: known categories, at least one limit each, amounts exact.
    fn limits(&self) -> std::result::Result<Vec<Limit>, String> {
        let mut out = Vec::new();
        for (category, t) in &self.thresholds {
            if category.parse::<reckon_udfs::Category>().is_err()
                || category == reckon_udfs::Category::Matched.as_str()
            {
                return Err(format!(
                    "thresholds.{category}: not a difference category (one of {})",
                    reckon_udfs::Category::ALL
                        .iter()
                        .filter(|c| **c != reckon_udfs::Category::Matched)
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if t.count.is_none() && t.amount.is_none() {
                return Err(format!("thresholds.{category}: give count, amount or both"));
            }
            let amount = match &t.amount {
                None => None,
                Some(a) => {
                    let mut d: Decimal = a.parse().map_err(|_| {
                        format!("thresholds.{category}.amount {a:?} is not a decimal")
                    })?;
                    if d.is_sign_negative() || d.scale() > 2 {
                        return Err(format!(
                            "thresholds.{category}.amount {a:?} must be non-negative with at most 2 decimals"
                        ));
                    }
                    d.rescale(2);
                    Some(d.mantissa())
                }
            };
            out.push(Limit {
                category: category.clone(),
                count: t.count,
                amount,
            });
        }
        Ok(out)
    }
}

/// A rate setting (`name`): a decimal in [0, 1) with at most 6 decimals.
fn rate(name: &str, value: Option<&str>) -> std::result::Result<Option<Decimal>, String> {
    let Some(s) = value else {
        return Ok(None);
    };
    let d: Decimal = s
        .parse()
        .map_err(|_| format!("{name} {s:?} is not a decimal"))?;
    if d.is_sign_negative() || d.scale() > 6 || d >= Decimal::ONE {
        return Err(format!(
            "{name} {s:?} must be in [0, 1) with at most 6 decimals"
        ));
    }
    Ok(Some(d))
}
