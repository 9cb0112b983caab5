//! The read-only web console (`/console/`) and the JSON read API it uses
//! (`GET /v1/workflows`, `/v1/workflows/{name}/graph`, `/v1/report/...`,
//! `/v1/dry-run`, `/v1/contacts/...`).
//!
//! - Served by `nurture run` beside the write API, and by `nurture console`
//!   alone against a store.
//! - The page, its script and stylesheet are compiled into the binary
//!   (`assets/`): no CDN, no build step.
//! - Sign-in: `POST /console/login` with the API token or the read-only
//!   console token (`console_token_env`) sets an HttpOnly, SameSite=Strict
//!   cookie holding an expiry and an HMAC of it keyed by that token (the
//!   token itself never goes into the cookie; changing the token signs
//!   everyone out). Every read route takes that cookie or
//!   `Authorization: Bearer TOKEN` with either token. The write routes
//!   (`POST /v1/...`) still want the API token as a bearer token: the
//!   cookie authorises reads only.
//! - Every answer here carries a CSP without inline script, `frame-ancestors
//!   'none'` and `X-Frame-Options: DENY`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use hmac::{KeyInit, Mac};
use serde_json::json;
use tokio::sync::watch;

use crate::project::Project;
use crate::store::Store;
use crate::web::ApiError;

pub mod data;
pub mod experiments;
pub mod graph;

/// What the console's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub store: Store,
    /// The workflows as they run (the daemon's hot reloads apply).
    pub project: watch::Receiver<Arc<Project>>,
    /// The API token (full access; the console only reads).
    pub api_token: Option<String>,
    /// The read-only console token (`console_token_env`).
    pub console_token: Option<String>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("store", &self.store.url())
            .finish_non_exhaustive()
    }
}

impl ConsoleState {
    /// The tokens from the variables the settings name.
    pub fn new(store: Store, project: watch::Receiver<Arc<Project>>) -> ConsoleState {
        let settings = project.borrow().settings.clone();
        let var = |name: &str| std::env::var(name).ok().filter(|t| !t.is_empty());
        ConsoleState {
            api_token: var(&settings.api_token_env),
            console_token: settings.console_token_env.as_deref().and_then(var),
            store,
            project,
        }
    }

    fn project(&self) -> Arc<Project> {
        self.project.borrow().clone()
    }
}

/// Name of the session cookie.
pub const COOKIE: &str = "nurture_console";
/// How long a sign-in lasts.
const SESSION_SECS: i64 = 12 * 3600;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The console's routes: the page under `/console/` and the read API under
/// `/v1`, each with its state applied (merge into any router).
pub fn router<S: Clone + Send + Sync + 'static>(state: ConsoleState) -> Router<S> {
    let reads = Router::new()
        .route("/v1/workflows", get(data::workflows))
        .route("/v1/workflows/{name}/graph", get(data::workflow_graph))
        .route("/v1/report/workflows", get(data::report_workflows))
        .route(
            "/v1/report/workflows/{name}",
            get(experiments::report_workflow),
        )
        .route("/v1/report/channels", get(data::report_channels))
        .route("/v1/dry-run", get(data::dry_run))
        .route("/v1/contacts/search", get(data::search_contacts))
        .route("/v1/contacts/{id}", get(data::contact))
        .route("/v1/contacts/{id}/history", get(data::history))
        .route("/v1/contacts/{id}/explain", get(data::explain))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_reader,
        ));
    let page = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/app.js", get(app_js))
        .route("/console/style.css", get(style_css))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/session", get(session));
    reads
        .merge(page)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}
async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}
async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// Who is signed in: `api` (the API token) or `console` (the console token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Console,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Console => "console",
        }
    }
}

fn token_for(st: &ConsoleState, role: Role) -> Option<&str> {
    match role {
        Role::Api => st.api_token.as_deref(),
        Role::Console => st.console_token.as_deref(),
    }
}

/// The role whose token `given` is.
fn check_token(st: &ConsoleState, given: &str) -> Option<Role> {
    [Role::Api, Role::Console].into_iter().find(|r| {
        token_for(st, *r)
            .is_some_and(|t| crate::web::constant_time_eq(given.as_bytes(), t.as_bytes()))
    })
}

fn mac(token: &str, role: Role, expires: i64) -> String {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes any key length");
    m.update(format!("nurture-console\n{}\n{expires}", role.name()).as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The cookie's value for `role`, valid until `expires` (Unix seconds).
fn cookie_value(st: &ConsoleState, role: Role, expires: i64) -> Option<String> {
    let token = token_for(st, role)?;
    Some(format!(
        "{expires}.{}.{}",
        role.name(),
        mac(token, role, expires)
    ))
}

fn role_of_cookie(st: &ConsoleState, value: &str) -> Option<Role> {
    let mut parts = value.splitn(3, '.');
    let expires: i64 = parts.next()?.parse().ok()?;
    let role = match parts.next()? {
        "api" => Role::Api,
        "console" => Role::Console,
        _ => return None,
    };
    let given = parts.next()?;
    if expires < Utc::now().timestamp() {
        return None;
    }
    let want = mac(token_for(st, role)?, role, expires);
    crate::web::constant_time_eq(given.as_bytes(), want.as_bytes()).then_some(role)
}

fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The reader's role: a bearer token, or the session cookie.
fn reader(st: &ConsoleState, headers: &HeaderMap) -> Result<Role, String> {
    if st.api_token.is_none() && st.console_token.is_none() {
        return Err(
            "the console is closed: no token is configured (set the environment \
                    variable that api_token_env or console_token_env names in nurture.yaml)"
                .into(),
        );
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    if let Some(t) = bearer {
        return check_token(st, t).ok_or_else(|| "wrong bearer token".to_string());
    }
    match cookie_of(headers) {
        Some(c) => role_of_cookie(st, c)
            .ok_or_else(|| "the session has expired or its token changed: sign in again".into()),
        None => {
            Err("sign in first (POST /console/login) or send Authorization: Bearer TOKEN".into())
        }
    }
}

fn unauthorized(message: String) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn require_reader(State(st): State<ConsoleState>, req: Request, next: Next) -> Response {
    match reader(&st, req.headers()) {
        Ok(_) => next.run(req).await,
        Err(m) => unauthorized(m),
    }
}

fn secure(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if https { "; Secure" } else { "" }
}

async fn login(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_string));
    let Some(token) = token else {
        return ApiError::bad_request("send {\"token\": \"...\"}".to_string()).into_response();
    };
    let Some(role) = check_token(&st, token.trim()) else {
        tracing::info!("console sign-in refused");
        return unauthorized("wrong token".into());
    };
    let expires = Utc::now().timestamp() + SESSION_SECS;
    let Some(value) = cookie_value(&st, role, expires) else {
        return unauthorized("wrong token".into());
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
        secure(&headers)
    );
    let mut r = axum::Json(json!({"role": role.name()})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(headers: HeaderMap) -> Response {
    let cookie = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(&headers)
    );
    let mut r = axum::Json(json!({"signed_out": true})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn session(State(st): State<ConsoleState>, headers: HeaderMap) -> Response {
    match reader(&st, &headers) {
        Ok(role) => axum::Json(json!({"role": role.name()})).into_response(),
        Err(m) => unauthorized(m),
    }
}

/// `nurture console`: the console alone on `listen`, until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ConsoleState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app: Router = router(state).fallback(|req: Request| async move {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route {} {}", req.method(), req.uri().path()),
        )
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cookies_are_signed_by_the_token() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let dir = tempfile_dir();
        let project = Project {
            settings: crate::settings::Settings::defaults(dir),
            workflows: Vec::new(),
            templates: Default::default(),
            contact_ways: Vec::new(),
        };
        let (_tx, rx) = watch::channel(Arc::new(project));
        let st = ConsoleState {
            store,
            project: rx,
            api_token: Some("api".into()),
            console_token: Some("ro".into()),
        };
        let future = Utc::now().timestamp() + 60;
        let v = cookie_value(&st, Role::Console, future).unwrap();
        assert_eq!(role_of_cookie(&st, &v), Some(Role::Console));
        assert_eq!(role_of_cookie(&st, &v.replace("console", "api")), None);
        let past = cookie_value(&st, Role::Api, Utc::now().timestamp() - 1).unwrap();
        assert_eq!(role_of_cookie(&st, &past), None);
        let other = ConsoleState {
            console_token: Some("rotated".into()),
            ..st.clone()
        };
        assert_eq!(role_of_cookie(&other, &v), None);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir()
    }
}
