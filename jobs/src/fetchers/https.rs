//! The HTTPS fetcher: one GET of a dated URL, with a bearer token or basic credentials from
//! the environment. The worked example of `jobs/FETCHERS.md`.

use serde_json::json;

use super::http::{self, client, disposition_name, retryable, save, send, shown};
use super::{expand, Fetched, Fetcher, Request, Secret};
use crate::config::HttpAuth;
use crate::error::{Error, Result};

pub(crate) struct Settings {
    pub what: String,
    pub url: String,
    pub auth: HttpAuth,
    pub token_env: Option<String>,
    pub user_env: Option<String>,
    pub password_env: Option<String>,
    pub not_ready: Vec<u16>,
    pub file_name: Option<String>,
    pub timeout_secs: u64,
    pub channel: String,
}

enum Credentials {
    None,
    Bearer(Secret),
    Basic(Secret, Secret),
}

pub(crate) struct Https {
    s: Settings,
    credentials: Credentials,
    client: reqwest::Client,
}

impl Https {
    pub(crate) fn new(s: Settings) -> Result<Self> {
        let need = |field: &str, v: &Option<String>| -> Result<Secret> {
            let var = v.as_deref().ok_or_else(|| {
                Error::Config(format!(
                    "channel {} source.{field}: auth = {:?} needs it (the variable holding the secret)",
                    s.channel,
                    format!("{:?}", s.auth).to_lowercase()
                ))
            })?;
            Secret::from_env(&format!("channel {} source.{field}", s.channel), var)
        };
        let credentials = match s.auth {
            HttpAuth::None => Credentials::None,
            HttpAuth::Bearer => Credentials::Bearer(need("token_env", &s.token_env)?),
            HttpAuth::Basic => Credentials::Basic(
                need("user_env", &s.user_env)?,
                need("password_env", &s.password_env)?,
            ),
        };
        if !(s.url.starts_with("https://") || s.url.starts_with("http://")) {
            return Err(Error::Config(format!(
                "{} = {:?}: not an http(s) URL",
                s.what, s.url
            )));
        }
        let client = client(s.timeout_secs)?;
        Ok(Self {
            s,
            credentials,
            client,
        })
    }
}

#[async_trait::async_trait]
impl Fetcher for Https {
    fn kind(&self) -> &'static str {
        "https"
    }

    async fn fetch(&self, req: &Request<'_>) -> Result<Fetched> {
        let url = expand(&self.s.url, req.date);
        let what = format!("GET {}", shown(&url));
        let mut get = self.client.get(&url);
        // reqwest marks these headers sensitive: they are never printed.
        get = match &self.credentials {
            Credentials::None => get,
            Credentials::Bearer(t) => get.bearer_auth(t.expose()),
            Credentials::Basic(u, p) => get.basic_auth(u.expose(), Some(p.expose())),
        };
        let resp = send(get, &what).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = http::error_text(resp).await;
            let msg = format!("{what}: HTTP {status}: {body}");
            return Err(if self.s.not_ready.contains(&status.as_u16()) {
                Error::NotReady(format!(
                    "no bill for {} {} yet: {msg}",
                    req.channel, req.date
                ))
            } else if retryable(status) {
                Error::Unavailable(msg)
            } else {
                Error::Config(format!("the server refused the request: {msg}"))
            });
        }
        let name = self
            .s
            .file_name
            .as_deref()
            .map(|n| expand(n, req.date))
            .and_then(|n| http::safe_name(&n))
            .or_else(|| disposition_name(&resp))
            .or_else(|| {
                url::Url::parse(&url)
                    .ok()
                    .and_then(|u| u.path_segments()?.next_back().and_then(http::safe_name))
            })
            .unwrap_or_else(|| format!("bill_{}", req.date.format("%Y%m%d")));
        let got = save(resp, req.dir, &name, &what).await?;
        Ok(Fetched {
            file: got.name,
            source: shown(&url),
            detail: json!({ "http_status": status.as_u16() }),
        })
    }
}
