//! HTTP plumbing the fetchers share: one client, errors mapped to exit codes, streaming
//! downloads hashed on the way, and URLs shown without their query (download links carry
//! short-lived signed tokens).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ring::digest;

use crate::error::{Error, IoContext, Result};

/// A client with a connect timeout and `timeout_secs` for each whole exchange.
pub(crate) fn client(timeout_secs: u64) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(timeout_secs.max(1)))
        .user_agent(concat!("reckon/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Other(format!("HTTP client: {e}")))
}

/// `url` without its query and fragment, for messages and `fetch.json`.
pub(crate) fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or("").to_string(),
    }
}

/// Sends `req`; a failure to connect, a timeout or a broken exchange is `Unavailable` (the
/// stage retries it). The error never carries the URL's query.
pub(crate) async fn send(req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
    req.send().await.map_err(|e| transport(what, e))
}

/// What kind of failure a reqwest error is, in words that name no URL.
pub(crate) fn failure_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    }
}

pub(crate) fn transport(what: &str, e: reqwest::Error) -> Error {
    let kind = failure_kind(&e);
    let e = e.without_url();
    Error::Unavailable(format!("{what}: {kind}: {e}"))
}

/// A 5xx (or 408/429) is the channel's trouble, worth retrying; other statuses are for the
/// caller to read.
pub(crate) fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// The body of an error answer, cut short for a message.
pub(crate) async fn error_text(resp: reqwest::Response) -> String {
    shorten(&resp.text().await.unwrap_or_default())
}

/// `text` cut to 300 characters for a message.
pub(crate) fn shorten(text: &str) -> String {
    let mut t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    t
}

/// A file downloaded into the staging folder.
pub(crate) struct Downloaded {
    pub name: String,
    /// Hex SHA-1 (what WeChat Pay publishes; the stage computes the SHA-256 it keeps).
    pub sha1: String,
}

/// The file name a `Content-Disposition` header offers, reduced to a plain name.
pub(crate) fn disposition_name(resp: &reqwest::Response) -> Option<String> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)?
        .to_str()
        .ok()?;
    let raw = v.split(';').find_map(|p| {
        let p = p.trim();
        p.strip_prefix("filename=")
            .map(|n| n.trim_matches('"').to_string())
    })?;
    safe_name(&raw)
}

/// A name for a file in `raw/`: its last path segment, with nothing that could climb out.
pub(crate) fn safe_name(raw: &str) -> Option<String> {
    let name = raw.rsplit(['/', '\\']).next()?.trim();
    (!name.is_empty() && name != "." && name != ".." && !name.contains('\0'))
        .then(|| name.to_string())
}

/// Streams a successful answer's body to `dir/name`, hashing it on the way (memory stays
/// bounded whatever the bill's size).
pub(crate) async fn save(
    mut resp: reqwest::Response,
    dir: &Path,
    name: &str,
    what: &str,
) -> Result<Downloaded> {
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).at(&path)?);
    let mut sha1 = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(what, e))? {
        out.write_all(&chunk).at(&path)?;
        sha1.update(&chunk);
    }
    out.flush().at(&path)?;
    Ok(Downloaded {
        name: name.to_string(),
        sha1: hex::encode(sha1.finish().as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_tokens_or_credentials() {
        assert_eq!(
            shown("https://u:p@bills.example/d/2026.zip?token=abc&sig=x#f"),
            "https://bills.example/d/2026.zip"
        );
    }

    #[test]
    fn file_names_cannot_climb_out() {
        assert_eq!(safe_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(safe_name("a\\b.zip").as_deref(), Some("b.zip"));
        assert_eq!(safe_name(".."), None);
        assert_eq!(safe_name("dir/"), None);
    }
}
