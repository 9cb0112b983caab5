//! A loopback HTTP receiver for channel tests: binds 127.0.0.1:0, records
//! every request (method, path, headers, body, arrival time) and answers as a
//! script says, e.g. "the first two requests get 500, then 200", "429 with
//! Retry-After: 1", "200 after a 300 ms pause". It also counts how many
//! requests were being handled at once (for concurrency caps).
//!
//! ```ignore
//! let rx = Receiver::start(script::fail_first(2, 500)).await;
//! // point a channel at rx.url("/hook") ...
//! rx.wait_for(3, Duration::from_secs(10)).await;
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// 0 for the first request.
    pub index: usize,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request arrived (headers and body read).
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a slow endpoint, or a timeout).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn ok() -> Reply {
        Reply::status(200)
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// Decides the reply to a request (which carries its index).
pub type Script = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Ready-made scripts.
pub mod script {
    use super::*;

    /// Always `reply`.
    pub fn always(reply: Reply) -> Script {
        Arc::new(move |_| reply.clone())
    }
    /// The first `n` requests get `status`, the rest 200.
    pub fn fail_first(n: usize, status: u16) -> Script {
        Arc::new(move |r| {
            if r.index < n {
                Reply::status(status).body("try later")
            } else {
                Reply::ok()
            }
        })
    }
    /// The first `n` requests get `first`, the rest `then`.
    pub fn first_then(n: usize, first: Reply, then: Reply) -> Script {
        Arc::new(move |r| {
            if r.index < n {
                first.clone()
            } else {
                then.clone()
            }
        })
    }
}

struct State {
    script: Script,
    requests: Mutex<Vec<Request>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrived: tokio::sync::Notify,
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_in = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now_in, Ordering::SeqCst);
    let req = {
        let mut all = state.requests.lock().unwrap();
        let req = Request {
            index: all.len(),
            method,
            path: uri.path().to_string(),
            headers,
            body,
            at: Instant::now(),
        };
        all.push(req.clone());
        req
    };
    state.arrived.notify_waiters();
    let reply = (state.script)(&req);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut resp = (
        StatusCode::from_u16(reply.status).expect("a valid status"),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    resp
}

impl Receiver {
    pub async fn start(script: Script) -> Receiver {
        let state = Arc::new(State {
            script,
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            arrived: tokio::sync::Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// The most requests that were being handled at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            if self.count() >= n {
                return self.requests();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "expected {n} requests within {timeout:?}, got {}",
                    self.count()
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}
