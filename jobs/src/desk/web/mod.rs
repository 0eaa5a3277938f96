//! `reckon serve`: the review desk in a browser. Server-rendered HTML (askama templates,
//! escaped by default) with a little JavaScript, every asset embedded in the binary, so the
//! desk works with no network beyond its own address. The pages call the desk's parts:
//! [`super::query`] for the list, [`super::overview`], [`super::detail`], [`super::runs`], and
//! [`super::Desk`] for every change.

pub mod auth;
pub mod decisions;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use datafusion::prelude::SessionContext;

use super::access::Access;
use super::Desk;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;

/// What every request shares.
pub struct App {
    pub store: Store,
    /// One engine session for every request's queries (each reads its own tables).
    pub ctx: SessionContext,
    pub channels: Vec<String>,
    pub desk: Desk,
    pub access: Arc<Access>,
    pub sessions: auth::Sessions,
}

/// The app as handlers get it.
pub type Shared = Arc<App>;

/// The default address: loopback only; a reverse proxy faces the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl App {
    /// The desk of `config`: its store, database and users.
    pub async fn open(config: &Config) -> Result<App> {
        let store = crate::pipeline::store(config)?;
        let access = config.desk.access(&config.base_dir)?;
        if access.is_empty() {
            return Err(Error::Config(format!(
                "the desk has no users in {} (and no tokens): add one with `reckon desk user add --config <this config> --name NAME --role ROLE`",
                config.desk.users_file(&config.base_dir).display()
            )));
        }
        let hours = config.desk.session_hours.unwrap_or(12);
        // With the real-time mode, each channel's stream days too (`NAME.stream`).
        let mut channels = config.channel_names(&[])?;
        if config.stream.is_some() {
            let streamed: Vec<String> = (channels.iter())
                .map(|c| crate::stream::committed_name(c))
                .collect();
            channels.extend(streamed);
        }
        Ok(App {
            store,
            ctx: SessionContext::new(),
            channels,
            desk: Desk::open(&config.desk, &config.base_dir).await?,
            access: Arc::new(access),
            sessions: auth::Sessions::new(Duration::from_secs(hours * 3600)),
        })
    }
}

/// Every route of the desk.
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/", get(pages::overview))
        .route("/differences", get(pages::differences))
        .route("/api/differences", get(pages::differences_json))
        .route("/differences/bulk", post(decisions::bulk))
        .route("/differences/{file}", get(decisions::export))
        .route(
            "/differences/import",
            get(decisions::import_form)
                .post(decisions::import_preview)
                .layer(axum::extract::DefaultBodyLimit::max(auth::FORM_LIMIT)),
        )
        .route("/differences/import/apply", post(decisions::import_apply))
        .route("/difference/{channel}/{date}/{diff_id}", get(pages::detail))
        .route(
            "/difference/{channel}/{date}/{diff_id}/{change}",
            post(pages::change),
        )
        .route("/decisions/{id}/review", post(pages::review))
        .route("/runs", get(pages::runs))
        .route("/runs/{channel}/{date}", get(pages::run))
        .route("/assets/desk.css", get(css))
        .route("/assets/desk.js", get(js))
        .with_state(app)
}

async fn css() -> Response {
    asset("text/css", include_str!("../../../assets/desk.css"))
}

async fn js() -> Response {
    asset("text/javascript", include_str!("../../../assets/desk.js"))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A rendered page (a template error is the server's fault: 500, and logged).
pub fn html(t: impl Template) -> Response {
    match t.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render\n",
            )
                .into_response()
        }
    }
}

/// Why a request failed, as the person sees it.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub message: String,
    /// Where to go back to.
    pub back: Option<String>,
}

impl WebError {
    pub fn bad(message: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            back: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            back: None,
        }
    }
}

impl From<Error> for WebError {
    fn from(e: Error) -> WebError {
        tracing::error!(error = %e, "a desk request failed");
        WebError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
            back: None,
        }
    }
}

impl From<datafusion::error::DataFusionError> for WebError {
    fn from(e: datafusion::error::DataFusionError) -> WebError {
        WebError::from(Error::from(e))
    }
}

#[derive(Template)]
#[template(
    source = "<!doctype html><title>{{ status }}</title><h1>{{ status }}</h1><p class=\"refused\" id=\"refusal\">{{ message }}</p>{% if let Some(b) = back %}<p><a href=\"{{ b }}\">Back</a></p>{% endif %}",
    ext = "html"
)]
struct ErrorPage<'a> {
    status: String,
    message: &'a str,
    back: &'a Option<String>,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut r = html(ErrorPage {
            status: self.status.to_string(),
            message: &self.message,
            back: &self.back,
        });
        *r.status_mut() = self.status;
        r
    }
}

/// Serves the desk on `listen` until Ctrl-C or SIGTERM.
pub async fn serve(app: App, listen: &str) -> Result<()> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| Error::Config(format!("[desk] listen {listen:?}: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Other(format!("listening on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Other(format!("listening on {addr}: {e}")))?;
    tracing::info!(address = %local, "the review desk is serving");
    println!("reckon desk on http://{local}/");
    let app = router(Arc::new(app));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} },
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        tracing::info!("the review desk is stopping");
    })
    .await
    .map_err(|e| Error::Other(format!("serving the desk: {e}")))
}
