//! Fetchers: how a channel's bill for a date is brought in. One trait, one implementation per
//! way a channel publishes (a drop folder, an object store, an HTTPS URL, the Alipay OpenAPI,
//! WeChat Pay API v3), chosen by the channel's `source.kind`. A fetcher only downloads into the
//! stage's staging folder and says where from; the fetch stage (`stages/fetch.rs`) hashes the
//! file, skips content it already has, records re-issued bills and commits to `raw/`.
//!
//! Errors follow the exit codes: "not published yet" is [`Error::NotReady`] (75); a network
//! failure or a 5xx is [`Error::Unavailable`] (retried inside the stage); a refusal by the
//! channel (4xx) is [`Error::Config`] with the channel's own code and message (2); a file that
//! fails its published hash is [`Error::BadInput`] (3). Secrets are read from the variables or
//! files the configuration names, never logged, and never written into `fetch.json`.
//!
//! Adding a channel: see `jobs/FETCHERS.md`.

mod alipay;
pub(crate) mod http;
mod https;
pub mod keys;
mod store;
mod wechat;

use std::path::Path;

use chrono::NaiveDate;

use crate::config::{Channel, Locator, Source};
use crate::error::Result;

pub use keys::Secret;

/// What a fetcher is asked for.
pub struct Request<'a> {
    /// The channel's name (for messages).
    pub channel: &'a str,
    /// The bill date.
    pub date: NaiveDate,
    /// The staging folder to download into; the fetch stage commits it.
    pub dir: &'a Path,
}

/// What a fetcher brought.
#[derive(Debug)]
pub struct Fetched {
    /// The file's name inside the staging folder.
    pub file: String,
    /// Where it came from, with no credential or signed query in it.
    pub source: String,
    /// Fetcher-specific facts for `fetch.json` (the channel's published hash, bill type, ...).
    pub detail: serde_json::Value,
}

/// One way of bringing in a channel's bill.
#[async_trait::async_trait]
pub trait Fetcher: Send + Sync {
    /// The `source.kind` it implements.
    fn kind(&self) -> &'static str;
    /// Downloads the bill of `req.date` into `req.dir`.
    async fn fetch(&self, req: &Request<'_>) -> Result<Fetched>;
}

/// The fetcher a channel's configuration asks for, with its secrets loaded and keys parsed (a
/// missing variable or a key that does not parse is a configuration error naming the setting).
/// `locator` resolves its paths and object-store URLs; it needs nothing else of the config.
pub fn for_channel(locator: &Locator, channel: &Channel) -> Result<Box<dyn Fetcher>> {
    let what = |field: &str| format!("channel {} source.{field}", channel.name);
    Ok(match &channel.source {
        Source::DropFolder { path, pattern } => Box::new(store::Listing::drop_folder(
            locator,
            &what("path"),
            path,
            pattern,
        )?),
        Source::ObjectStore { url, pattern } => Box::new(store::Listing::object_store(
            locator,
            &what("url"),
            url,
            pattern,
        )?),
        Source::Https {
            url,
            auth,
            token_env,
            user_env,
            password_env,
            not_ready_status,
            file_name,
            timeout_secs,
        } => Box::new(https::Https::new(https::Settings {
            what: what("url"),
            url: url.clone(),
            auth: *auth,
            token_env: token_env.clone(),
            user_env: user_env.clone(),
            password_env: password_env.clone(),
            not_ready: not_ready_status.clone(),
            file_name: file_name.clone(),
            timeout_secs: *timeout_secs,
            channel: channel.name.clone(),
        })?),
        Source::Alipay {
            gateway,
            app_id,
            bill_type,
            private_key_env,
            private_key_file,
            alipay_public_key_env,
            alipay_public_key_file,
            timeout_secs,
        } => Box::new(alipay::Alipay::new(alipay::Settings {
            gateway: gateway.clone(),
            app_id: app_id.clone(),
            bill_type: bill_type.clone(),
            private_key: keys::PrivateKey::load(
                locator,
                &what("private_key"),
                private_key_env,
                private_key_file,
            )?,
            alipay_key: keys::PublicKey::load(
                locator,
                &what("alipay_public_key"),
                alipay_public_key_env,
                alipay_public_key_file,
            )?,
            timeout_secs: *timeout_secs,
        })?),
        Source::WechatpayV3 {
            base_url,
            mchid,
            serial_no,
            private_key_env,
            private_key_file,
            platform_key_env,
            platform_key_file,
            platform_serial,
            bill_type,
            timeout_secs,
        } => Box::new(wechat::WechatPay::new(wechat::Settings {
            base_url: base_url.clone(),
            mchid: mchid.clone(),
            serial_no: serial_no.clone(),
            private_key: keys::PrivateKey::load(
                locator,
                &what("private_key"),
                private_key_env,
                private_key_file,
            )?,
            platform_key: keys::PublicKey::load(
                locator,
                &what("platform_key"),
                platform_key_env,
                platform_key_file,
            )?,
            platform_serial: platform_serial.clone(),
            bill_type: bill_type.clone(),
            timeout_secs: *timeout_secs,
        })?),
    })
}

/// Expands `{yyyymmdd}` and `{date}` in a file-name pattern or URL.
pub fn expand(pattern: &str, date: NaiveDate) -> String {
    pattern
        .replace("{yyyymmdd}", &date.format("%Y%m%d").to_string())
        .replace("{date}", &date.to_string())
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len()
        || !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The one name of `names` matching `wanted`, or why not: none is "not published yet", several
/// is bad input (which one is the bill cannot be guessed).
pub(crate) fn only_match(names: Vec<String>, wanted: &str, place: &str) -> Result<String> {
    use crate::error::Error;
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|n| glob_match(wanted, n))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.swap_remove(0)),
        0 => Err(Error::NotReady(format!(
            "nothing in {place} matches {wanted:?} yet"
        ))),
        n => Err(Error::BadInput(format!(
            "{n} files in {place} match {wanted:?}, expected one: {}",
            found.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_dated_file_only() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        let p = expand("*_{yyyymmdd}.csv.zip", d);
        assert!(glob_match(&p, "2088_20261120.csv.zip"));
        assert!(!glob_match(&p, "2088_20261121.csv.zip"));
        assert!(!glob_match(&p, "2088_20261120.csv.zip.part"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXc"));
        // The prefix and suffix may not overlap.
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn one_match_is_the_bill_none_is_not_ready_two_is_bad_input() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            only_match(names(&["x_1.zip", "y.txt"]), "*.zip", "here").ok(),
            Some("x_1.zip".to_string())
        );
        let none = only_match(names(&["y.txt"]), "*.zip", "here").expect_err("none");
        assert_eq!(none.exit_code(), 75);
        let two = only_match(names(&["a.zip", "b.zip"]), "*.zip", "here").expect_err("two");
        assert_eq!(two.exit_code(), 3);
        assert!(two.to_string().contains("a.zip, b.zip"), "{two}");
    }
}
