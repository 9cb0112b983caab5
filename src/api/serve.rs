//! The API's connection handling: how many connections, for how long, and
//! how often one address may call the routes that need no token.
//!
//! `axum::serve` keeps a connection open as long as the client wants: idle
//! and half-sent connections stayed open for minutes, and 20,000 of them
//! exhausted the process's file descriptors. This accept loop serves
//! HTTP/1.1 with hyper directly and adds:
//! - a header-read timeout ([`ServeLimits::header_read_timeout`]): a client
//!   that has not sent a whole request head by then (a new connection, or an
//!   idle keep-alive one between requests) is disconnected;
//! - a request timeout ([`ServeLimits::request_timeout`]) around each request
//!   (a body sent byte by byte), answered 408;
//! - a connection limit ([`ServeLimits::max_connections`]): connections over
//!   it are closed as soon as they are accepted;
//! - a per-IP rate limit ([`ServeLimits::per_ip`]) on the routes that take
//!   no bearer token (`/v1/unsubscribe/...`, `/v1/wecom/callback`), answered
//!   429 with `Retry-After`. It keys on the peer address: behind a reverse
//!   proxy every client shares the proxy's address, so limit there instead.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::ApiError;

/// Limits on the API's connections (README, "Limits").
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Requests per second and burst per client address on the open routes.
    pub per_ip: Option<(NonZeroU32, NonZeroU32)>,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            // Longer than the store's busy timeout: a write waiting for the
            // store's lock is not a slow client.
            request_timeout: Duration::from_secs(90),
            max_connections: 512,
            // Generous: WeCom sends every callback of a corp from a handful
            // of addresses, and a burst of new customers must get through.
            per_ip: Some((nz(50), nz(500))),
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The routes that need no bearer token, and so face the internet.
fn is_open_route(path: &str) -> bool {
    path.starts_with("/v1/unsubscribe/") || path == "/v1/wecom/callback"
}

/// Per-IP limiter state for [`limit_open_routes`].
#[derive(Clone)]
pub(super) struct PerIp(Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>);

impl PerIp {
    pub(super) fn new(limits: &ServeLimits) -> PerIp {
        PerIp(limits.per_ip.map(|(per_second, burst)| {
            Arc::new(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ))
        }))
    }
}

/// 429 for a client address over its rate on the open routes.
pub(super) async fn limit_open_routes(
    axum::extract::State(per_ip): axum::extract::State<PerIp>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = &per_ip.0
        && is_open_route(req.uri().path())
        && let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        // Forget quiet addresses now and then, so the map stays small.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        if let Err(not_until) = limiter.check_key(&peer.ip()) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address; try again later",
            )
            .into_response();
            let secs = wait.as_secs() + 1;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    next.run(req).await
}

/// 408 for a request (body included) that takes longer than the limit.
pub(super) async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Accepts connections on `listener` and serves `router` on each, within
/// `limits`, until `shutdown`; then lets requests in flight finish.
pub(super) async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like: wait a
                    // little instead of spinning on the error.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                limit = limits.max_connections,
                "connection limit reached; closing the new connection"
            );
            drop(stream);
            continue;
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        let header_timeout = limits.header_read_timeout;
        tracker.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                tower_service::Service::call(&mut router, req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}
