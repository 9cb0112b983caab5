//! The daemon's HTTP API (SPEC §4.1).
//!
//! - `/v1/...` writes contacts, tags, events and opt-outs, each the twin of a
//!   `nurture contacts` command. Every `/v1` route needs
//!   `Authorization: Bearer TOKEN`, the token being the value of the
//!   environment variable that `api_token_env` names. When that variable is
//!   unset (or empty) the API does not run open: every `/v1` request gets 401
//!   saying so.
//! - `/healthz` and `/metrics` are open (probes and Prometheus do not carry
//!   tokens) and show nothing about contacts.
//! - `/v1/unsubscribe/{token}` (one-click unsubscribe from the `smtp`
//!   channel's `List-Unsubscribe` links) is open too, the signed token being
//!   the authorisation, and answers small HTML pages, since people open it in
//!   a browser ([`unsubscribe`]).
//! - `GET, POST /v1/wecom/callback` (WeCom's customer-contact callback) is
//!   open as well: WeCom cannot send a bearer token; the `msg_signature` over
//!   the app's Token and the corp id inside the ciphertext authenticate it,
//!   and it answers in plain text ([`wecom_callback`]).
//!
//! Every error is JSON, `{"error": "..."}`, naming the problem: the body
//! extractors in [`error`] replace axum's plain-text rejections. Bodies are
//! limited to [`BODY_LIMIT`] bytes (413). After every write that changed
//! something, `wake` is notified so the scheduler reacts at once instead of
//! at its next poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;
use crate::store::Store;
pub use serve::ServeLimits;

pub mod contacts;
pub use crate::web::error;
mod serve;
pub mod unsubscribe;
pub mod wecom_callback;
pub mod wecom_crypto;

pub use error::{ApiError, BODY_LIMIT};

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// The bearer token (the value of the variable `api_token_env` names);
    /// `None` or empty closes `/v1` (401 for everyone).
    pub token: Option<String>,
    /// Notified after every write that changed something.
    pub wake: Arc<Notify>,
    /// The project as it runs (hot reloads apply): an unsubscribe names one
    /// of its channels. `None`: any channel name is taken.
    pub project: Option<tokio::sync::watch::Receiver<Arc<crate::project::Project>>>,
    /// The channel names of the current settings (hot reload included),
    /// which a request's `channel` must be one of; `None` checks nothing.
    pub channel_names: Option<ChannelNames>,
    /// The keys one-click unsubscribe links are verified with (the daemon
    /// adds those of every registry it builds, so reloads apply).
    pub unsubscribe_keys: crate::channels::smtp::token::UnsubscribeKeys,
    /// When this API last read the funnel gauges from the store (at most
    /// once a minute): the API's own, so two in one process do not share it.
    pub funnel_read: FunnelRead,
}

/// When the funnel gauges were last read (see [`ApiState::funnel_read`]).
#[derive(Clone, Debug, Default)]
pub struct FunnelRead(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

/// Gives the channel names of the settings in force.
pub type ChannelNames = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

impl std::fmt::Debug for ApiState {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("store", &self.store.url())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ApiState {
    /// The state the daemon serves: the token read from the environment
    /// variable `settings.api_token_env` names.
    pub fn from_settings(store: Store, settings: &Settings, wake: Arc<Notify>) -> ApiState {
        let token = std::env::var(&settings.api_token_env)
            .ok()
            .filter(|t| !t.is_empty());
        let names: Vec<String> = settings.channels.keys().cloned().collect();
        ApiState {
            store,
            token,
            wake,
            project: None,
            channel_names: Some(Arc::new(move || names.clone())),
            unsubscribe_keys: Default::default(),
            funnel_read: Default::default(),
        }
    }
}

/// Every route of the API.
///
/// The bearer check is a `route_layer` on the `/v1` routes listed here.
/// `/v1/wecom/callback` (WeCom signs its requests instead of sending a
/// token) must be added to the outer router, not to `v1`, or WeCom would get
/// 401.
pub fn router(state: ApiState) -> Router {
    router_with_wecom(state, None)
}

/// [`router`] plus, when given, `GET, POST /v1/wecom/callback` (outside the
/// bearer check: see [`wecom_callback`]).
pub fn router_with_wecom(state: ApiState, wecom: Option<wecom_callback::CallbackState>) -> Router {
    let v1 = Router::new()
        .route("/contacts", post(contacts::upsert))
        .route("/contacts/{id}/tags", post(contacts::tags))
        .route("/contacts/{id}/unsubscribe", post(contacts::unsubscribe))
        .route("/events", post(contacts::event))
        .route_layer(middleware::from_fn_with_state(state.clone(), write_queue))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let mut outer = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // Public: the signed token is the authorisation (RFC 8058 one-click).
        .route(
            "/v1/unsubscribe/{token}",
            get(unsubscribe::page).post(unsubscribe::one_click),
        )
        .nest("/v1", v1);
    if let Some(cb) = wecom {
        outer = outer.merge(wecom_callback::router(cb));
    }
    outer
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_wecom(listener, state, None, shutdown).await
}

/// [`serve`] with the WeCom callback (the daemon's API).
pub async fn serve_with_wecom(
    listener: tokio::net::TcpListener,
    state: ApiState,
    wecom: Option<wecom_callback::CallbackState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_all(listener, state, wecom, None, shutdown).await
}

/// [`serve_with_wecom`] plus, when given, the web console (`/console/` and
/// the read routes of `/v1`: see [`crate::console`]).
pub async fn serve_all(
    listener: tokio::net::TcpListener,
    state: ApiState,
    wecom: Option<wecom_callback::CallbackState>,
    console: Option<crate::console::ConsoleState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_limits(
        listener,
        state,
        wecom,
        console,
        ServeLimits::default(),
        shutdown,
    )
    .await
}

/// [`serve_all`] with chosen connection limits (tests use small ones).
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    state: ApiState,
    wecom: Option<wecom_callback::CallbackState>,
    console: Option<crate::console::ConsoleState>,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // The caller (`run`, `console`) says where it listens, once.
    let mut app = router_with_wecom(state, wecom);
    if let Some(c) = console {
        app = app.merge(crate::console::router(c));
    }
    let router = app
        .layer(middleware::from_fn_with_state(
            serve::PerIp::new(&limits),
            serve::limit_open_routes,
        ))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            serve::request_timeout,
        ));
    serve::serve_router(listener, router, limits, shutdown).await
}

pub use crate::web::constant_time_eq;

fn unauthorized(message: String) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn require_token(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(expected) = st.token.as_ref().filter(|t| !t.is_empty()) else {
        return unauthorized(
            "the API is closed: no bearer token is configured (set the environment variable \
             that api_token_env names in nurture.yaml, NURTURE_API_TOKEN by default, then \
             restart the daemon)"
                .into(),
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        None => {
            unauthorized("missing bearer token: send the header Authorization: Bearer TOKEN".into())
        }
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => next.run(req).await,
        Some(_) => unauthorized("wrong bearer token".into()),
    }
}

async fn log_request(req: Request, next: Next) -> Response {
    // Method and path only: never headers (the token) or bodies (contacts).
    let method = req.method().clone();
    let path = loggable_path(req.uri().path());
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16();
    // Milliseconds to a tenth: a log line reads `ms=1.9`, not `ms=1.9512589999999999`.
    let ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    if path == "/healthz" || path == "/metrics" {
        tracing::debug!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, "request");
    }
    res
}

/// The path as logs may show it: an unsubscribe link's token is a
/// capability (whoever holds it can unsubscribe that contact), so it is
/// replaced by `…`.
fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/v1/unsubscribe/") {
        Some(_) => "/v1/unsubscribe/…".to_string(),
        None => path.to_string(),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// `GET /healthz`: 200 when `SELECT 1` on the store answers within 2 s.
/// Runs each `/v1` write in its turn (SQLite: one at a time, in arrival
/// order; see [`Store::write_turn`](crate::store::Store::write_turn)). After
/// the token check, so that unauthenticated requests never wait in it.
async fn write_queue(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let _turn = st.store.write_turn().await;
    next.run(req).await
}

async fn healthz(State(st): State<ApiState>) -> Response {
    // A write probe, not a read: a read-only, full, deleted or replaced store
    // still answers reads while every write fails or is lost.
    let probe = st.store.check_writable(chrono::Utc::now());
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response(),
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(_) => unavailable("the store did not answer within 2 s".into()),
    }
}

fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "unavailable", "error": message})),
    )
        .into_response()
}

/// The funnel and conversion gauges: `nurture report`'s numbers for every
/// enabled workflow, read from the store on a scrape, at most once a minute
/// (a report counts every enrollment of its workflow; Prometheus scrapes
/// every 15 s by default). Scrapes in between show the last numbers.
async fn funnel(st: &ApiState) {
    use std::time::{Duration, Instant};
    const EVERY: Duration = Duration::from_secs(60);
    let Some(project) = st.project.as_ref().map(|p| p.borrow().clone()) else {
        return;
    };
    {
        let mut last = st.funnel_read.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    let mut reports = Vec::new();
    for wf in project.enabled_workflows() {
        match crate::report::build(&st.store, wf, None).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                tracing::warn!(workflow = %wf.name, error = %e, "cannot read the funnel for /metrics");
                return;
            }
        }
    }
    crate::metrics::global().set_reports(&reports);
}

/// `GET /metrics`: the Prometheus text format; the outbox queue depth is
/// counted on each scrape.
async fn metrics(State(st): State<ApiState>) -> Response {
    match st.store.outbox_queue_depth().await {
        Ok(n) => {
            crate::metrics::global().queue_depth.set(n);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the outbox for /metrics"),
    }
    funnel(&st).await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret-and-more", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"sec", b"secret"));
    }

    #[test]
    fn unsubscribe_tokens_stay_out_of_the_logs() {
        assert_eq!(
            loggable_path("/v1/unsubscribe/Y29uc29sZQpjMQ.c2lnbmF0dXJl"),
            "/v1/unsubscribe/…"
        );
        assert_eq!(
            loggable_path("/v1/contacts/c1/tags"),
            "/v1/contacts/c1/tags"
        );
    }
}
