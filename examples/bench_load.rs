//! The load generator of `bench/delivery.sh` (b): creates contacts through
//! the daemon's API at a steady rate and measures, per contact, the time from
//! just before its `POST /v1/contacts` to the moment `bench_receiver` saw its
//! welcome message (both read from this machine's wall clock, in Unix
//! microseconds).
//!
//! ```sh
//! cargo run --release --example bench_load -- \
//!     --api http://127.0.0.1:8080 --token T --receiver http://127.0.0.1:9000 \
//!     --rate 500 --seconds 20 [--prefix L]
//! ```
//! Prints a human summary on stderr and one JSON object on stdout.
//!
//! Requests are started on a fixed schedule (one every `1/rate` s) whatever
//! the answers do, each in its own task, so a slow answer does not slow the
//! offered load; the summary says how far the start times lagged behind the
//! schedule, so a generator that could not keep up is visible.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Args {
    api: String,
    token: String,
    receiver: String,
    rate: f64,
    seconds: f64,
    prefix: String,
}

fn args() -> Args {
    let mut a = Args {
        api: "http://127.0.0.1:8080".into(),
        token: String::new(),
        receiver: "http://127.0.0.1:9000".into(),
        rate: 500.0,
        seconds: 20.0,
        prefix: "L".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--api" => a.api = v,
            "--token" => a.token = v,
            "--receiver" => a.receiver = v,
            "--rate" => a.rate = v.parse().expect("--rate N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--prefix" => a.prefix = v,
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Sent {
    id: String,
    sent_us: u64,
    ack_us: u64,
    ok: bool,
}

fn main() {
    let a = args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let total = (a.rate * a.seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let url = format!("{}/v1/contacts", a.api);
    let start = tokio::time::Instant::now();
    let wall_start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut lag_max = Duration::ZERO;
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        lag_max = lag_max.max(tokio::time::Instant::now().saturating_duration_since(due));
        let id = format!("{}{i:07}", a.prefix);
        let body = format!(r#"{{"id":"{id}","name":"Load {i}","email":"{id}@example.com"}}"#);
        let req = client
            .post(&url)
            .bearer_auth(&a.token)
            .header("content-type", "application/json")
            .body(body);
        tasks.push(tokio::spawn(async move {
            let sent_us = now_us();
            let ok = matches!(req.send().await, Ok(r) if r.status().is_success());
            Sent {
                id,
                sent_us,
                ack_us: now_us(),
                ok,
            }
        }));
    }
    let offered_s = wall_start.elapsed().as_secs_f64();
    let mut sent = Vec::with_capacity(total);
    for t in tasks {
        sent.push(t.await.expect("task"));
    }
    let ok: Vec<&Sent> = sent.iter().filter(|s| s.ok).collect();
    eprintln!(
        "sent {} contacts in {offered_s:.2} s ({:.0}/s), {} accepted, start lag max {:.1} ms",
        total,
        total as f64 / offered_s,
        ok.len(),
        lag_max.as_secs_f64() * 1e3
    );

    // Wait for the welcome messages (up to 60 s without progress).
    let mut last = 0u64;
    let mut last_change = Instant::now();
    let stats_url = format!("{}/stats", a.receiver);
    loop {
        let stats: serde_json::Value = client
            .get(&stats_url)
            .send()
            .await
            .expect("receiver stats")
            .json()
            .await
            .expect("stats JSON");
        let count = stats["count"].as_u64().unwrap_or(0);
        if count >= ok.len() as u64 {
            break;
        }
        if count != last {
            last = count;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(60) {
            eprintln!("the receiver stopped at {count} messages");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = client
        .get(format!("{}/arrivals", a.receiver))
        .send()
        .await
        .expect("arrivals")
        .text()
        .await
        .expect("arrivals text");
    let mut arrived: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        if let Some((c, t)) = line.split_once('\t') {
            let t: u64 = t.parse().unwrap_or(u64::MAX);
            arrived
                .entry(c)
                .and_modify(|v| *v = (*v).min(t))
                .or_insert(t);
        }
    }
    let mut lat: Vec<f64> = Vec::with_capacity(ok.len());
    let mut ack: Vec<f64> = Vec::with_capacity(ok.len());
    let mut missing = 0usize;
    for s in &ok {
        ack.push((s.ack_us.saturating_sub(s.sent_us)) as f64 / 1e3);
        match arrived.get(s.id.as_str()) {
            Some(&t) => lat.push((t as i64 - s.sent_us as i64) as f64 / 1e3),
            None => missing += 1,
        }
    }
    lat.sort_by(|x, y| x.total_cmp(y));
    ack.sort_by(|x, y| x.total_cmp(y));
    let report = serde_json::json!({
        "offered": total,
        "offered_seconds": offered_s,
        "offered_rate": total as f64 / offered_s,
        "start_lag_max_ms": lag_max.as_secs_f64() * 1e3,
        "accepted": ok.len(),
        "received": lat.len(),
        "missing": missing,
        "p50_ms": pct(&lat, 50.0),
        "p90_ms": pct(&lat, 90.0),
        "p99_ms": pct(&lat, 99.0),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN),
        "api_p50_ms": pct(&ack, 50.0),
        "api_p99_ms": pct(&ack, 99.0),
    });
    eprintln!(
        "POST -> webhook: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} received, {missing} missing); API answer p50 {:.1} ms, p99 {:.1} ms",
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len(),
        pct(&ack, 50.0),
        pct(&ack, 99.0)
    );
    println!("{report}");
}
