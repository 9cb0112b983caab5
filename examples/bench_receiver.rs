//! A fast loopback webhook receiver for `bench/delivery.sh`.
//!
//! Every request other than the routes below is answered 200 at once and
//! recorded: its arrival time (Unix microseconds, this machine's clock, so a
//! load generator on the same machine can match it), the `contact_id` and
//! `message_id` of its JSON body.
//!
//! - `GET /stats`: `{"count", "unique", "first_us", "last_us"}` — requests,
//!   distinct message ids, first and last arrival.
//! - `GET /arrivals`: one line per request, `contact_id<TAB>arrival_us`.
//! - `POST /reset`: forget everything.
//!
//! ```sh
//! cargo run --release --example bench_receiver -- 127.0.0.1:0   # prints "listening on ADDR"
//! ```
//! `--threads N` sets the runtime's worker threads (default 1, so the
//! receiver leaves the other core to the daemon on a 2-core machine).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

#[derive(Default)]
struct Seen {
    /// (contact_id, arrival_us)
    arrivals: Vec<(String, u64)>,
    ids: HashSet<String>,
}

struct Stats {
    count: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    seen: Mutex<Seen>,
}

#[derive(serde::Deserialize)]
struct Message {
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    contact_id: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn hook(State(st): State<&'static Stats>, body: Bytes) -> StatusCode {
    let at = now_us();
    st.count.fetch_add(1, Ordering::Relaxed);
    st.first_us.fetch_min(at, Ordering::Relaxed);
    st.last_us.fetch_max(at, Ordering::Relaxed);
    let msg: Message = serde_json::from_slice(&body).unwrap_or(Message {
        message_id: String::new(),
        contact_id: String::new(),
    });
    let mut seen = st.seen.lock().expect("lock");
    seen.ids.insert(msg.message_id);
    seen.arrivals.push((msg.contact_id, at));
    StatusCode::OK
}

async fn stats(State(st): State<&'static Stats>) -> String {
    let unique = st.seen.lock().expect("lock").ids.len();
    let count = st.count.load(Ordering::Relaxed);
    let first = st.first_us.load(Ordering::Relaxed);
    serde_json::json!({
        "count": count,
        "unique": unique,
        "first_us": if count == 0 { 0 } else { first },
        "last_us": st.last_us.load(Ordering::Relaxed),
    })
    .to_string()
}

async fn arrivals(State(st): State<&'static Stats>) -> String {
    let seen = st.seen.lock().expect("lock");
    let mut out = String::with_capacity(seen.arrivals.len() * 24);
    for (c, at) in &seen.arrivals {
        out.push_str(c);
        out.push('\t');
        out.push_str(&at.to_string());
        out.push('\n');
    }
    out
}

async fn reset(State(st): State<&'static Stats>) -> StatusCode {
    let mut seen = st.seen.lock().expect("lock");
    *seen = Seen::default();
    st.count.store(0, Ordering::Relaxed);
    st.first_us.store(u64::MAX, Ordering::Relaxed);
    st.last_us.store(0, Ordering::Relaxed);
    StatusCode::OK
}

fn main() {
    let mut addr = "127.0.0.1:0".to_string();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("--threads N")
            }
            other => addr = other.to_string(),
        }
    }
    let state: &'static Stats = Box::leak(Box::new(Stats {
        count: AtomicU64::new(0),
        first_us: AtomicU64::new(u64::MAX),
        last_us: AtomicU64::new(0),
        seen: Mutex::new(Seen::default()),
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let app = Router::new()
            .route("/stats", get(stats))
            .route("/arrivals", get(arrivals))
            .route("/reset", post(reset))
            .fallback(hook)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .expect("bind the receiver's address");
        println!("listening on {}", listener.local_addr().expect("address"));
        axum::serve(listener, app).await.expect("serve");
    });
}
