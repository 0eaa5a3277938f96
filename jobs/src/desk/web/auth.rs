//! Who is asking: an API token (`Authorization: Bearer`), a trusted proxy's header, or a
//! login session's cookie; the login and logout pages; and the CSRF check every form passes.
//!
//! A session is a random id in an `HttpOnly; Secure; SameSite=Strict` cookie, kept in memory
//! (a restart logs everyone out). A form's CSRF token is an HMAC of the session (or the proxy
//! user) under a key made at start: it is checked on every POST from a browser. Tokens are
//! for scripts, which send no cookies, so their requests need none. Nothing here logs a
//! password, a token, a cookie or a CSRF value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{html, Shared, WebError};
use crate::desk::access::{secret, Via};
use crate::desk::User;

/// The session cookie.
const SESSION: &str = "reckon_desk";
/// The login form's own cookie (CSRF for the login form, before there is a session).
const LOGIN: &str = "reckon_login";

struct Session {
    user: User,
    expires: Instant,
}

/// The live sessions and the key CSRF tokens are made with.
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    key: ring::hmac::Key,
    ttl: Duration,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        let key = secret();
        Sessions {
            live: Mutex::new(HashMap::new()),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes()),
            ttl,
        }
    }

    fn start(&self, user: User) -> String {
        let id = secret();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        live.insert(
            id.clone(),
            Session {
                user,
                expires: now + self.ttl,
            },
        );
        id
    }

    fn user(&self, id: &str) -> Option<User> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.user.clone())
    }

    fn end(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(id);
    }

    /// The CSRF token of `principal` (a session id, or a proxy user).
    fn csrf(&self, principal: &str) -> String {
        hex::encode(ring::hmac::sign(&self.key, principal.as_bytes()).as_ref())
    }

    fn csrf_ok(&self, principal: &str, given: &str) -> bool {
        let given = hex::decode(given.trim()).unwrap_or_default();
        ring::hmac::verify(&self.key, principal.as_bytes(), &given).is_ok()
    }
}

/// The user behind a request, how they proved it, and the CSRF token their forms carry.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub via: Via,
    /// What the CSRF token is made from (empty for tokens: no forms).
    principal: String,
    pub csrf: String,
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(|c| c.ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// A `Set-Cookie` value: HttpOnly, Secure, SameSite=Strict, the whole site.
fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> HeaderValue {
    let mut c = Cookie::build((name.to_string(), value.to_string()))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/");
    if let Some(age) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(
            i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
        ));
    }
    HeaderValue::from_str(&c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
}

impl Caller {
    /// Who `parts` comes from, if anyone (Err: a token that is not valid).
    fn identify(parts: &Parts, app: &Shared) -> Result<Option<Caller>, ()> {
        if let Some(auth) = parts.headers.get(AUTHORIZATION) {
            let token = auth.to_str().ok().and_then(|a| a.strip_prefix("Bearer "));
            return match token.and_then(|t| app.access.token(t)) {
                Some(user) => Ok(Some(Caller {
                    user,
                    via: Via::Token,
                    principal: String::new(),
                    csrf: String::new(),
                })),
                None => Err(()),
            };
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let header = parts
            .headers
            .get(app.access.proxy_header())
            .and_then(|v| v.to_str().ok());
        if let (Some(peer), Some(_)) = (peer, header) {
            match app.access.proxied(peer, header) {
                Some(user) => {
                    let principal = format!("proxy:{}", user.name);
                    return Ok(Some(Caller {
                        csrf: app.sessions.csrf(&principal),
                        user,
                        via: Via::Proxy,
                        principal,
                    }));
                }
                None => tracing::warn!(
                    %peer,
                    header = app.access.proxy_header(),
                    "ignored a user header: not from a trusted proxy, or not a known user"
                ),
            }
        }
        let Some(id) = cookie_value(&parts.headers, SESSION) else {
            return Ok(None);
        };
        Ok(app.sessions.user(&id).map(|user| Caller {
            csrf: app.sessions.csrf(&id),
            user,
            via: Via::Session,
            principal: id,
        }))
    }

    /// Whether a form's token is this caller's (tokens' requests carry no cookie: no CSRF).
    pub fn csrf_ok(&self, app: &Shared, given: &str) -> bool {
        let ok = self.via == Via::Token || app.sessions.csrf_ok(&self.principal, given);
        if !ok {
            tracing::warn!(user = %self.user.name, "refused a form without a valid CSRF token");
        }
        ok
    }
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Caller, Response> {
        match Caller::identify(parts, app) {
            Ok(Some(c)) => Ok(c),
            Err(()) => {
                Err((StatusCode::UNAUTHORIZED, "the API token is not valid\n").into_response())
            }
            Ok(None) if parts.uri.path().starts_with("/api/") => {
                Err((StatusCode::UNAUTHORIZED, "log in, or send an API token\n").into_response())
            }
            Ok(None) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/".to_string(), |p| p.to_string());
                let to = format!(
                    "/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Err(Redirect::to(&to).into_response())
            }
        }
    }
}

/// A form a caller posted, its CSRF token checked: `T` is the form without it.
pub struct Posted<T> {
    pub caller: Caller,
    pub form: T,
    /// Every field, in order (a repeated field, such as a selection, is here as often).
    pub pairs: Vec<(String, String)>,
}

/// The largest form the desk reads (an import's previewed lines travel in one).
pub const FORM_LIMIT: usize = 64 << 20;

/// The refusal of a form without this session's CSRF token.
pub fn stale_form() -> Response {
    WebError {
        status: StatusCode::FORBIDDEN,
        message: "the form is stale or was not sent by this desk (CSRF token): reload the page and try again".into(),
        back: None,
    }
    .into_response()
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned + Send> FromRequest<Shared> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Shared) -> Result<Posted<T>, Response> {
        let (mut parts, body) = req.into_parts();
        let caller = Caller::from_request_parts(&mut parts, app).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|e| {
            WebError::bad(format!("the form could not be read: {e}")).into_response()
        })?;
        let token: CsrfField = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| WebError::bad(format!("the form: {e}")).into_response())?;
        if !caller.csrf_ok(app, &token.csrf) {
            return Err(stale_form());
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| WebError::bad(format!("the form: {e}")).into_response())?;
        let pairs = url::form_urlencoded::parse(&bytes).into_owned().collect();
        Ok(Posted {
            caller,
            form,
            pairs,
        })
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only a path on this site: never an address elsewhere (an open redirect).
fn local(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

fn login_page(app: &Shared, next: String, error: Option<String>, status: StatusCode) -> Response {
    let nonce = secret();
    let csrf = app.sessions.csrf(&format!("login:{nonce}"));
    let mut r = html(LoginPage { csrf, next, error });
    *r.status_mut() = status;
    r.headers_mut()
        .append(SET_COOKIE, set_cookie(LOGIN, &nonce, None));
    r
}

/// `GET /login`.
pub async fn login_form(
    axum::extract::State(app): axum::extract::State<Shared>,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    login_page(&app, local(q.next.as_deref()), None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
    user: String,
    password: String,
}

/// `POST /login`.
pub async fn login(
    axum::extract::State(app): axum::extract::State<Shared>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let next = local(form.next.as_deref());
    let nonce = cookie_value(&headers, LOGIN).unwrap_or_default();
    if nonce.is_empty() || !app.sessions.csrf_ok(&format!("login:{nonce}"), &form.csrf) {
        return login_page(
            &app,
            next,
            Some("The login form expired: please try again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    let access = app.access.clone();
    let (name, password) = (form.user.trim().to_string(), form.password);
    let checked = tokio::task::spawn_blocking(move || access.login(&name, &password)).await;
    match checked {
        Ok(Some(user)) => {
            tracing::info!(user = %user.name, role = user.role.name(), "logged in");
            let id = app.sessions.start(user);
            let mut r = Redirect::to(&next).into_response();
            let h = r.headers_mut();
            h.append(SET_COOKIE, set_cookie(SESSION, &id, Some(app.sessions.ttl)));
            h.append(SET_COOKIE, set_cookie(LOGIN, "", Some(Duration::ZERO)));
            r
        }
        _ => {
            tracing::warn!(user = %form.user.trim(), "login refused");
            login_page(
                &app,
                next,
                Some("Unknown user or wrong password.".into()),
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

#[derive(Deserialize)]
pub struct Nothing {}

/// `POST /logout`.
pub async fn logout(
    axum::extract::State(app): axum::extract::State<Shared>,
    posted: Posted<Nothing>,
) -> Response {
    if posted.caller.via == Via::Session {
        app.sessions.end(&posted.caller.principal);
    }
    tracing::info!(user = %posted.caller.user.name, "logged out");
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .append(SET_COOKIE, set_cookie(SESSION, "", Some(Duration::ZERO)));
    r
}
