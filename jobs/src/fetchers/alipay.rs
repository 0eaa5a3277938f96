//! Alipay OpenAPI: `alipay.data.dataservice.bill.downloadurl.query` signed RSA2
//! (SHA256withRSA over the sorted `key=value&...` parameters, public-key mode), the answer's
//! `..._response` object verified with Alipay's public key over its exact bytes, then the
//! short-lived `bill_download_url` downloaded. `isp.bill_not_exist` is "not yet" (exit 75).

use chrono::Utc;
use serde_json::{json, Value};

use super::http::{self, client, disposition_name, retryable, save, send, shown};
use super::keys::{PrivateKey, PublicKey};
use super::{Fetched, Fetcher, Request};
use crate::error::{Error, Result};

const METHOD: &str = "alipay.data.dataservice.bill.downloadurl.query";
const RESPONSE_KEY: &str = "alipay_data_dataservice_bill_downloadurl_query_response";

pub(crate) struct Settings {
    pub gateway: String,
    pub app_id: String,
    pub bill_type: String,
    pub private_key: PrivateKey,
    pub alipay_key: PublicKey,
    pub timeout_secs: u64,
}

pub(crate) struct Alipay {
    s: Settings,
    client: reqwest::Client,
}

impl Alipay {
    pub(crate) fn new(s: Settings) -> Result<Self> {
        if !matches!(s.bill_type.as_str(), "trade" | "signcustomer") {
            return Err(Error::Config(format!(
                "source.bill_type = {:?}: Alipay's bill types are \"trade\" and \"signcustomer\"",
                s.bill_type
            )));
        }
        let client = client(s.timeout_secs)?;
        Ok(Self { s, client })
    }

    /// The request's parameters, signed.
    fn signed_params(&self, date: chrono::NaiveDate) -> Result<Vec<(String, String)>> {
        let now = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
        let biz = json!({ "bill_type": self.s.bill_type, "bill_date": date.to_string() });
        let mut params: Vec<(String, String)> = vec![
            ("app_id".into(), self.s.app_id.clone()),
            ("method".into(), METHOD.into()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), "RSA2".into()),
            (
                "timestamp".into(),
                now.format("%Y-%m-%d %H:%M:%S").to_string(),
            ),
            ("version".into(), "1.0".into()),
            ("biz_content".into(), biz.to_string()),
        ];
        let sign = self
            .s
            .private_key
            .sign(signing_content(&params).as_bytes())?;
        params.push(("sign".into(), sign));
        Ok(params)
    }
}

/// What Alipay signs: every parameter but `sign` with a value, sorted by name, `k=v` joined
/// by `&`, unencoded.
pub(crate) fn signing_content(params: &[(String, String)]) -> String {
    let mut p: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| k != "sign" && !v.is_empty())
        .collect();
    p.sort_by(|a, b| a.0.cmp(&b.0));
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The exact text of the top-level member `key`'s object value in `body` (Alipay signs those
/// bytes, so they cannot be re-serialized).
pub(crate) fn raw_member<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    let at = body.find(&quoted)? + quoted.len();
    let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let start = body.len() - rest.len();
    let bytes = rest.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return body.get(start..start + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[async_trait::async_trait]
impl Fetcher for Alipay {
    fn kind(&self) -> &'static str {
        "alipay"
    }

    async fn fetch(&self, req: &Request<'_>) -> Result<Fetched> {
        let what = format!("Alipay {METHOD} ({})", shown(&self.s.gateway));
        let params = self.signed_params(req.date)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let resp = send(
            self.client
                .post(&self.s.gateway)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded;charset=utf-8",
                )
                .body(body),
            &what,
        )
        .await?;
        let status = resp.status();
        if !status.is_success() {
            let text = http::error_text(resp).await;
            let msg = format!("{what}: HTTP {status}: {text}");
            return Err(if retryable(status) {
                Error::Unavailable(msg)
            } else {
                Error::Config(format!("Alipay refused the request: {msg}"))
            });
        }
        let text = resp.text().await.map_err(|e| http::transport(&what, e))?;
        let (key, raw) = [RESPONSE_KEY, "error_response"]
            .iter()
            .find_map(|k| raw_member(&text, k).map(|r| (*k, r)))
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "{what}: the answer has no {RESPONSE_KEY}: {}",
                    http::shorten(&text)
                ))
            })?;
        let whole: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Unavailable(format!("{what}: the answer is not JSON: {e}")))?;
        let inner: Value = serde_json::from_str(raw)
            .map_err(|e| Error::Unavailable(format!("{what}: {key} is not JSON: {e}")))?;
        let field = |k: &str| inner[k].as_str().unwrap_or("").to_string();
        let (code, sub_code) = (field("code"), field("sub_code"));
        let signed = match whole["sign"].as_str() {
            Some(sig) => {
                if !self.s.alipay_key.verifies(raw.as_bytes(), sig) {
                    return Err(Error::Config(format!(
                        "{what}: the answer's signature does not verify with source.alipay_public_key \
                         (a wrong key in the configuration, or an answer not from Alipay)"
                    )));
                }
                true
            }
            None => false,
        };
        if code != "10000" {
            let msg = format!(
                "{what}: Alipay answered code {code} {} sub_code {sub_code} {}",
                field("msg"),
                field("sub_msg")
            );
            return Err(match (code.as_str(), sub_code.as_str()) {
                (_, "isp.bill_not_exist") => Error::NotReady(format!(
                    "no bill for {} {} yet: {msg}",
                    req.channel, req.date
                )),
                ("20000", _) => Error::Unavailable(msg),
                (_, s) if s.starts_with("isp.unknow") || s.starts_with("isp.unknown") => {
                    Error::Unavailable(msg)
                }
                _ => Error::Config(format!("Alipay refused the request: {msg}")),
            });
        }
        if !signed {
            return Err(Error::Config(format!(
                "{what}: a successful answer without a signature: refused"
            )));
        }
        let url = field("bill_download_url");
        if url.is_empty() {
            return Err(Error::Unavailable(format!(
                "{what}: no bill_download_url in the answer"
            )));
        }
        // The link lives about 30 seconds: download at once.
        let dl_what = format!("download of the Alipay bill ({})", shown(&url));
        let resp = send(self.client.get(&url), &dl_what).await?;
        let status = resp.status();
        if !status.is_success() {
            let text = http::error_text(resp).await;
            let msg = format!("{dl_what}: HTTP {status}: {text}");
            // An expired link is fixed by asking for a new one: retry the whole fetch.
            return Err(Error::Unavailable(msg));
        }
        let name = disposition_name(&resp).unwrap_or_else(|| {
            format!(
                "{}_{}_{}.csv.zip",
                self.s.app_id,
                self.s.bill_type,
                req.date.format("%Y%m%d")
            )
        });
        let got = save(resp, req.dir, &name, &dl_what).await?;
        Ok(Fetched {
            file: got.name,
            source: shown(&url),
            detail: json!({
                "bill_type": self.s.bill_type,
                "app_id": self.s.app_id,
                "gateway": shown(&self.s.gateway),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_content_is_sorted_and_skips_sign_and_empty_values() {
        let p = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            signing_content(&p(&[
                ("method", "m"),
                ("sign", "x"),
                ("app_id", "1"),
                ("empty", ""),
                ("biz_content", "{\"a\":1}")
            ])),
            "app_id=1&biz_content={\"a\":1}&method=m"
        );
    }

    #[test]
    fn the_signed_member_is_taken_byte_for_byte() {
        let body = r#"{"x_response":{"code":"10000","msg":"a}\"{b","n":{"k":1}},"sign":"S"}"#;
        assert_eq!(
            raw_member(body, "x_response"),
            Some(r#"{"code":"10000","msg":"a}\"{b","n":{"k":1}}"#)
        );
        assert_eq!(raw_member(body, "missing"), None);
        assert_eq!(raw_member(r#"{"x_response":{"open"#, "x_response"), None);
    }
}
