//! WeChat Pay API v3: `GET /v3/bill/tradebill?bill_date=…&bill_type=…` with the merchant's
//! `WECHATPAY2-SHA256-RSA2048` Authorization header (over `METHOD\nPATH?QUERY\nTIMESTAMP\n
//! NONCE\nBODY\n`); the answer verified with the platform certificate or public key over
//! `TIMESTAMP\nNONCE\nBODY\n`; `download_url` fetched with the same kind of header, and the file
//! checked against the published SHA1 `hash_value`. "No statement yet" is exit 75.

use rand::Rng;
use serde_json::{json, Value};

use super::http::{self, client, retryable, save, send, shown};
use super::keys::{PrivateKey, PublicKey};
use super::{Fetched, Fetcher, Request};
use crate::error::{Error, Result};

/// The error codes that mean the day's statement is not there yet.
const NOT_YET: [&str; 2] = ["NO_STATEMENT_EXIST", "STATEMENT_CREATING"];

pub(crate) struct Settings {
    pub base_url: String,
    pub mchid: String,
    pub serial_no: String,
    pub private_key: PrivateKey,
    pub platform_key: PublicKey,
    pub platform_serial: Option<String>,
    pub bill_type: String,
    pub timeout_secs: u64,
}

pub(crate) struct WechatPay {
    s: Settings,
    client: reqwest::Client,
}

impl WechatPay {
    pub(crate) fn new(s: Settings) -> Result<Self> {
        if !matches!(s.bill_type.as_str(), "ALL" | "SUCCESS" | "REFUND") {
            return Err(Error::Config(format!(
                "source.bill_type = {:?}: WeChat Pay's bill types are ALL, SUCCESS and REFUND",
                s.bill_type
            )));
        }
        let client = client(s.timeout_secs)?;
        Ok(Self { s, client })
    }

    /// The Authorization header for `GET url` (no body).
    fn authorization(&self, url: &url::Url) -> Result<String> {
        let mut target = url.path().to_string();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let timestamp = chrono::Utc::now().timestamp();
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let message = format!("GET\n{target}\n{timestamp}\n{nonce}\n\n");
        let signature = self.s.private_key.sign(message.as_bytes())?;
        Ok(format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{}\"",
            self.s.mchid, self.s.serial_no
        ))
    }

    async fn get(&self, url: &str, what: &str) -> Result<reqwest::Response> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Config(format!("{what}: {url:?} is not a URL: {e}")))?;
        let mut auth = reqwest::header::HeaderValue::from_str(&self.authorization(&parsed)?)
            .map_err(|e| Error::Other(format!("{what}: Authorization header: {e}")))?;
        auth.set_sensitive(true);
        send(
            self.client
                .get(parsed)
                .header(reqwest::header::AUTHORIZATION, auth)
                .header(reqwest::header::ACCEPT, "application/json"),
            what,
        )
        .await
    }

    /// Checks an API answer's signature headers against the platform key.
    fn verify(&self, headers: &reqwest::header::HeaderMap, body: &str, what: &str) -> Result<()> {
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (ts, nonce, sig, serial) = (
            h("Wechatpay-Timestamp"),
            h("Wechatpay-Nonce"),
            h("Wechatpay-Signature"),
            h("Wechatpay-Serial"),
        );
        let refuse = |why: String| {
            Error::Config(format!(
                "{what}: {why} (a wrong source.platform_key, or an answer not from WeChat Pay)"
            ))
        };
        if sig.is_empty() || ts.is_empty() || nonce.is_empty() {
            return Err(refuse("the answer is not signed".into()));
        }
        if let Some(want) = &self.s.platform_serial {
            if !serial.eq_ignore_ascii_case(want) {
                return Err(refuse(format!(
                    "the answer is signed by {serial:?}, not source.platform_serial {want:?}"
                )));
            }
        }
        // WeChat rejects answers older than five minutes to stop replays; so does reckon.
        let age = ts
            .parse::<i64>()
            .map(|t| (chrono::Utc::now().timestamp() - t).abs())
            .unwrap_or(i64::MAX);
        if age > 300 {
            return Err(refuse(format!(
                "the answer's Wechatpay-Timestamp {ts:?} is not within five minutes of now"
            )));
        }
        let message = format!("{ts}\n{nonce}\n{body}\n");
        if !self.s.platform_key.verifies(message.as_bytes(), &sig) {
            return Err(refuse(
                "the answer's signature does not verify with source.platform_key".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Fetcher for WechatPay {
    fn kind(&self) -> &'static str {
        "wechatpay_v3"
    }

    async fn fetch(&self, req: &Request<'_>) -> Result<Fetched> {
        let url = format!(
            "{}/v3/bill/tradebill?bill_date={}&bill_type={}",
            self.s.base_url.trim_end_matches('/'),
            req.date,
            self.s.bill_type
        );
        let what = format!("WeChat Pay GET {}", shown(&url));
        let resp = self.get(&url, &what).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(|e| http::transport(&what, e))?;
        if retryable(status) {
            return Err(Error::Unavailable(format!(
                "{what}: HTTP {status}: {}",
                http::shorten(&body)
            )));
        }
        // Error answers are signed as well: "not yet" is believed only once verified.
        let verified = self.verify(&headers, &body, &what);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
        if !status.is_success() {
            let (code, message) = (field("code"), field("message"));
            let msg = format!("{what}: HTTP {status}: {code} {message}");
            return Err(match verified {
                Ok(()) if NOT_YET.contains(&code.as_str()) => Error::NotReady(format!(
                    "no bill for {} {} yet: {msg}",
                    req.channel, req.date
                )),
                Ok(()) => Error::Config(format!("WeChat Pay refused the request: {msg}")),
                Err(e) => Error::Config(format!(
                    "WeChat Pay refused the request: {msg}; and the answer is not trusted: {e}"
                )),
            });
        }
        verified?;
        let (download_url, hash_type, hash_value) = (
            field("download_url"),
            field("hash_type"),
            field("hash_value"),
        );
        if download_url.is_empty() || !hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(Error::Unavailable(format!(
                "{what}: expected download_url and a SHA1 hash_value, got {body}"
            )));
        }
        let dl_what = format!("download of the WeChat Pay bill ({})", shown(&download_url));
        let resp = self.get(&download_url, &dl_what).await?;
        let status = resp.status();
        if !status.is_success() {
            let text = http::error_text(resp).await;
            let msg = format!("{dl_what}: HTTP {status}: {text}");
            // The link is short-lived: asking again gives a new one.
            return Err(Error::Unavailable(msg));
        }
        let name = format!("tradebill_{}.csv", req.date.format("%Y%m%d"));
        let got = save(resp, req.dir, &name, &dl_what).await?;
        if !got.sha1.eq_ignore_ascii_case(&hash_value) {
            return Err(Error::BadInput(format!(
                "{dl_what}: the file's SHA1 is {}, but WeChat Pay published hash_value {hash_value}: \
                 the download is not the bill",
                got.sha1
            )));
        }
        Ok(Fetched {
            file: got.name,
            source: shown(&download_url),
            detail: json!({
                "bill_type": self.s.bill_type,
                "mchid": self.s.mchid,
                "hash_type": "SHA1",
                "hash_value": hash_value.to_lowercase(),
            }),
        })
    }
}
