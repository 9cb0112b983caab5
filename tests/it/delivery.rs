//! The delivery worker end to end: a real SQLite file, outbox rows and
//! contacts written with plain SQL, webhook channels built from real
//! settings text, and a loopback receiver that records what it got.

use crate::support;

mod handoff;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use nurture::channels::Registry;
use nurture::channels::build::build_registry_with_env;
use nurture::channels::delivery::{self, DeliveryOptions};
use nurture::settings::Settings;
use nurture::store::Store;
use sqlx::Row as _;
use support::receiver::{Receiver, Reply, script};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

const SECRET_BYTES: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Env {
    store: Store,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let url = support::db::url_for(dir.path());
    let store = Store::open(&url).await.unwrap();
    Env { store, _dir: dir }
}

impl Env {
    fn pool(&self) -> &sqlx::AnyPool {
        self.store.db()
    }

    async fn contact(&self, id: &str) {
        sqlx::query(
            "INSERT INTO contacts (id, name, email, created_at, updated_at, attrs) VALUES ($1, $2, $3, $4, $5, '{\"city\":\"Hangzhou\"}')",
        )
        .bind(id)
        .bind(format!("Name {id}"))
        .bind(format!("{id}@example.com"))
        .bind(now_ms())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .unwrap();
    }

    /// Queues a message due at `at` (ms).
    async fn queue_at(&self, id: &str, contact: &str, channel: &str, at: i64) {
        sqlx::query(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, subject, body,
                                 status, attempts, not_before, next_attempt_at, created_at)
             VALUES ($1, 'winback', $2, 1, '1', $3, $4, 'Hello', $5, 'queued', 0, $6, $7, $8)",
        )
        .bind(id)
        .bind(contact)
        .bind(channel)
        .bind(contact)
        .bind(format!("Hi {contact}"))
        .bind(at)
        .bind(at)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .unwrap();
    }

    async fn queue(&self, id: &str, contact: &str, channel: &str) {
        self.queue_at(id, contact, channel, now_ms()).await
    }

    async fn row(&self, id: &str) -> OutRow {
        let r = sqlx::query(
            "SELECT status, attempts, last_error, provider_id, sent_at, lease_owner, lease_until, next_attempt_at
               FROM outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_one(self.pool())
        .await
        .unwrap();
        OutRow {
            status: r.get(0),
            attempts: r.get(1),
            last_error: r.get(2),
            provider_id: r.get(3),
            sent_at: r.get(4),
            lease_owner: r.get(5),
            lease_until: r.get(6),
            next_attempt_at: r.get(7),
        }
    }

    /// Waits until message `id` has `status`; panics with the row after `timeout`.
    async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> OutRow {
        let deadline = Instant::now() + timeout;
        loop {
            let row = self.row(id).await;
            if row.status == status {
                return row;
            }
            if Instant::now() > deadline {
                panic!("message {id} did not become {status} within {timeout:?}: {row:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Debug)]
#[allow(dead_code)]
struct OutRow {
    status: String,
    attempts: i64,
    last_error: Option<String>,
    provider_id: Option<String>,
    sent_at: Option<i64>,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    next_attempt_at: i64,
}

/// Channels from settings text (the `channels:` block), with `HOOK_SECRET`
/// set to the test secret in `whsec_` form.
fn registry(channels_yaml: &str) -> Registry {
    let text = format!("channels:\n{channels_yaml}");
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text)
        .unwrap_or_else(|d| panic!("settings: {d:?}"));
    let secret = format!("whsec_{}", BASE64.encode(SECRET_BYTES));
    build_registry_with_env(&settings, &|name| {
        (name == "HOOK_SECRET").then(|| secret.clone())
    })
    .unwrap_or_else(|e| panic!("channels: {e:?}"))
}

fn hook(url: &str, extra: &str) -> String {
    format!("  hook:\n    kind: webhook\n    url: {url}\n    secret_env: HOOK_SECRET\n{extra}")
}

fn fast_options() -> DeliveryOptions {
    DeliveryOptions {
        worker_id: "test-worker".into(),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        max_idle: Duration::from_millis(100),
        ..DeliveryOptions::default()
    }
}

struct Worker {
    shutdown: CancellationToken,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _registry: watch::Sender<Arc<Registry>>,
}

impl Worker {
    fn start(env: &Env, registry: Registry, opts: DeliveryOptions) -> Worker {
        let (tx, rx) = watch::channel(Arc::new(registry));
        let shutdown = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(delivery::run(
            env.store.clone(),
            rx,
            opts,
            wake.clone(),
            shutdown.clone(),
        ));
        Worker {
            shutdown,
            wake,
            task,
            _registry: tx,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the worker stops")
            .unwrap()
            .expect("the worker ends without error");
    }
}

fn verify_signature(id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET_BYTES).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    header.split(' ').any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b| BASE64.decode(b).ok())
            .is_some_and(|got| got.as_slice() == expected.as_slice())
    })
}

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_on_200_with_idempotency_key_and_a_valid_signature() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok().body(r#"{"id":"prov-42"}"#))).await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), fast_options());
    let row = env.wait_status("m1", "sent", T).await;
    w.stop().await;

    assert_eq!(row.attempts, 1);
    assert_eq!(row.provider_id.as_deref(), Some("prov-42"));
    assert!(row.sent_at.is_some());
    assert_eq!(row.lease_owner, None);
    assert_eq!(row.last_error, None);

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("idempotency-key"), Some("m1"));
    assert_eq!(r.header("webhook-id"), Some("m1"));
    let ts = r.header("webhook-timestamp").unwrap();
    let ts_n: i64 = ts.parse().unwrap();
    assert!((ts_n - now_ms() / 1000).abs() <= 5, "timestamp {ts} is now");
    let sig = r.header("webhook-signature").unwrap();
    assert!(
        verify_signature("m1", ts, &r.body, sig),
        "signature {sig} verifies"
    );
    assert!(
        !verify_signature("m1", ts, b"{}", sig),
        "and only for this body"
    );

    let body = r.json();
    assert_eq!(body["message_id"], "m1");
    assert_eq!(body["workflow"], "winback");
    assert_eq!(body["contact_id"], "c1");
    assert_eq!(body["to"], "c1");
    assert_eq!(body["subject"], "Hello");
    assert_eq!(body["body"], "Hi c1");
    assert_eq!(body["contact"]["id"], "c1");
    assert_eq!(body["contact"]["name"], "Name c1");
    assert_eq!(body["contact"]["city"], "Hangzhou");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_5xx_with_the_same_key_then_delivers() {
    let env = env().await;
    let rx = Receiver::start(script::fail_first(2, 500)).await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), fast_options());
    let row = env.wait_status("m1", "sent", T).await;
    w.stop().await;
    assert_eq!(row.attempts, 3);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter()
            .all(|r| r.header("idempotency-key") == Some("m1"))
    );
    // The body is the same on every try; the timestamp is the attempt's.
    assert!(reqs.iter().all(|r| r.body == reqs[0].body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_retry_after_on_429() {
    let env = env().await;
    let rx = Receiver::start(script::first_then(
        1,
        Reply::status(429).header("Retry-After", "1"),
        Reply::ok(),
    ))
    .await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), fast_options());
    // Between the two tries the row says why it waits.
    let waiting = env.wait_status("m1", "queued", T).await;
    let row = env.wait_status("m1", "sent", T).await;
    w.stop().await;
    assert!(
        waiting.last_error.is_none() || waiting.last_error.as_deref().unwrap().contains("429"),
        "{waiting:?}"
    );
    assert_eq!(row.attempts, 2);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    // Times in the store are whole milliseconds: allow that rounding.
    assert!(
        gap >= Duration::from_millis(998),
        "second try after {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_max_attempts_with_the_providers_reason() {
    let env = env().await;
    let rx = Receiver::start(script::always(
        Reply::status(503).body("down for maintenance"),
    ))
    .await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let opts = DeliveryOptions {
        max_attempts: 3,
        ..fast_options()
    };
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), opts);
    let row = env.wait_status("m1", "dead", T).await;
    // Once stopped, the worker has nothing in flight: the count is final.
    w.stop().await;
    assert_eq!(row.attempts, 3);
    let err = row.last_error.unwrap();
    assert!(
        err.contains("503") && err.contains("down for maintenance"),
        "{err}"
    );
    assert_eq!(rx.count(), 3, "no try after the cap");
}

/// With the defaults, an outage is ridden out by time: twelve failures in a
/// row (more than the old limit of 8 attempts, which dead-lettered
/// everything about 68 s into an outage) and the message still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_outlast_an_outage_by_default() {
    let env = env().await;
    let rx = Receiver::start(script::fail_first(12, 503)).await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let defaults = DeliveryOptions::default();
    assert_eq!(defaults.retry_for, Duration::from_secs(24 * 3600));
    assert_eq!(defaults.max_attempts, u32::MAX);
    let opts = DeliveryOptions {
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..fast_options()
    };
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), opts);
    let row = env.wait_status("m1", "sent", T).await;
    w.stop().await;
    assert_eq!(row.attempts, 13);
    assert_eq!(rx.count(), 13);
}

/// Retries end when `retry_for` has passed since the first failure, however
/// many tries that took; the reason says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_end_by_time_not_by_count() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::status(503).body("down"))).await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let opts = DeliveryOptions {
        retry_for: Duration::from_millis(1_500),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..fast_options()
    };
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), opts);
    let row = env.wait_status("m1", "dead", T).await;
    w.stop().await;
    let reqs = rx.requests();
    let span = reqs[reqs.len() - 1].at.duration_since(reqs[0].at);
    assert!(
        span >= Duration::from_millis(1_500),
        "gave up after {span:?}"
    );
    assert!(row.attempts > 3, "{}", row.attempts);
    let err = row.last_error.unwrap();
    assert!(
        err.starts_with(&format!("gave up after {} tries over 1s", row.attempts))
            && err.contains("503"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_permanent_and_tried_once() {
    let env = env().await;
    let rx = Receiver::start(script::always(
        Reply::status(400).body(r#"{"error":"field to is invalid"}"#),
    ))
    .await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), fast_options());
    let row = env.wait_status("m1", "dead", T).await;
    w.stop().await;
    assert_eq!(row.attempts, 1);
    let err = row.last_error.unwrap();
    assert!(
        err.starts_with("HTTP 400") && err.contains("field to is invalid"),
        "{err}"
    );
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried() {
    let env = env().await;
    let rx = Receiver::start(script::first_then(
        1,
        Reply::ok().delay(Duration::from_secs(3)),
        Reply::ok(),
    ))
    .await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let reg = registry(&hook(&rx.url("/hook"), "    timeout: 300ms\n"));
    let w = Worker::start(&env, reg, fast_options());
    let row = env.wait_status("m1", "sent", T).await;
    w.stop().await;
    assert_eq!(row.attempts, 2);
    assert_eq!(rx.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_in_every_window() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let n = 60;
    for i in 0..n {
        env.contact(&format!("c{i}")).await;
        env.queue(&format!("m{i:02}"), &format!("c{i}"), "hook")
            .await;
    }
    let reg = registry(&hook(&rx.url("/hook"), "    rate_limit: 20/s\n"));
    let w = Worker::start(&env, reg, fast_options());
    let reqs = rx.wait_for(n, Duration::from_secs(20)).await;
    w.stop().await;
    let times: Vec<Instant> = reqs.iter().map(|r| r.at).collect();
    // The limiter lets at most 20 calls start in any 1 s window. Arrival times
    // carry a little network jitter, so the receiver checks windows of 950 ms.
    for (i, t0) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|t| **t - *t0 < Duration::from_millis(950))
            .count();
        assert!(
            in_window <= 20,
            "{in_window} requests within 950 ms of request {i}"
        );
    }
    let span = *times.last().unwrap() - times[0];
    assert!(
        span >= Duration::from_millis(1_900),
        "60 messages at 20/s took {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_cap_holds() {
    let env = env().await;
    let rx = Receiver::start(script::always(
        Reply::ok().delay(Duration::from_millis(150)),
    ))
    .await;
    for i in 0..12 {
        env.contact(&format!("c{i}")).await;
        env.queue(&format!("m{i:02}"), &format!("c{i}"), "hook")
            .await;
    }
    let reg = registry(&hook(&rx.url("/hook"), "    concurrency: 3\n"));
    let w = Worker::start(&env, reg, fast_options());
    rx.wait_for(12, T).await;
    w.stop().await;
    assert_eq!(rx.max_in_flight(), 3, "three at a time, never more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_checked_at_delivery_time() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    for c in ["c1", "c2", "c3", "c4"] {
        env.contact(c).await;
    }
    let due = now_ms() + 600;
    env.queue_at("m1", "c1", "hook", due).await;
    env.queue_at("m2", "c2", "hook", due).await;
    env.queue_at("m3", "c3", "hook", due).await;
    env.queue_at("m4", "c4", "hook", due).await;
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), fast_options());
    // While the messages wait: c1 unsubscribes from everything, c2 opts out
    // of this channel, c3 is deleted; c4 keeps its consent.
    sqlx::query("UPDATE contacts SET unsubscribed = 1 WHERE id = 'c1'")
        .execute(env.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO contact_opt_outs (contact_id, channel, at) VALUES ('c2', 'hook', 0)")
        .execute(env.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM contacts WHERE id = 'c3'")
        .execute(env.pool())
        .await
        .unwrap();
    env.wait_status("m4", "sent", T).await;
    let r1 = env.wait_status("m1", "cancelled", T).await;
    let r2 = env.wait_status("m2", "cancelled", T).await;
    let r3 = env.wait_status("m3", "cancelled", T).await;
    w.stop().await;
    assert_eq!(r1.last_error.as_deref(), Some("unsubscribed"));
    assert_eq!(r2.last_error.as_deref(), Some("unsubscribed"));
    assert_eq!(r3.last_error.as_deref(), Some("contact_deleted"));
    assert_eq!(r1.attempts, 0);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("idempotency-key"), Some("m4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_checked_again_after_waiting_for_the_rate_limit() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    for c in ["c1", "c2", "c3"] {
        env.contact(c).await;
    }
    let t = now_ms();
    env.queue_at("m1", "c1", "hook", t).await;
    env.queue_at("m2", "c2", "hook", t + 1).await;
    env.queue_at("m3", "c3", "hook", t + 2).await;
    // One call per second: m3 waits about two seconds after it was claimed.
    let reg = registry(&hook(
        &rx.url("/hook"),
        "    rate_limit: 1/s\n    concurrency: 1\n",
    ));
    let opts = DeliveryOptions {
        consent_recheck_after: Duration::from_millis(100),
        ..fast_options()
    };
    let w = Worker::start(&env, reg, opts);
    rx.wait_for(1, T).await;
    assert_eq!(
        env.row("m3").await.status,
        "sending",
        "m3 is claimed and waiting"
    );
    sqlx::query("UPDATE contacts SET unsubscribed = 1 WHERE id = 'c3'")
        .execute(env.pool())
        .await
        .unwrap();
    env.wait_status("m2", "sent", T).await;
    let r3 = env.wait_status("m3", "cancelled", T).await;
    w.stop().await;
    assert_eq!(r3.last_error.as_deref(), Some("unsubscribed"));
    assert_eq!(rx.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_reclaimed_and_a_live_one_is_not() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    env.contact("c1").await;
    env.contact("c2").await;
    env.queue("dead-worker-msg", "c1", "hook").await;
    env.queue("live-worker-msg", "c2", "hook").await;
    // A worker that died mid-send, and one that is still busy.
    sqlx::query(
        "UPDATE outbox SET status = 'sending', lease_owner = 'killed', lease_until = $1 WHERE id = 'dead-worker-msg'",
    )
    .bind(now_ms() - 1_000)
    .execute(env.pool())
    .await
    .unwrap();
    sqlx::query(
        "UPDATE outbox SET status = 'sending', lease_owner = 'alive', lease_until = $1 WHERE id = 'live-worker-msg'",
    )
    .bind(now_ms() + 60_000)
    .execute(env.pool())
    .await
    .unwrap();
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), fast_options());
    let row = env.wait_status("dead-worker-msg", "sent", T).await;
    // A message queued now is claimed by a later pass, whose reaper would
    // also have taken the live worker's message if it treated its lease as over.
    env.queue("probe", "c1", "hook").await;
    w.wake.notify_one();
    env.wait_status("probe", "sent", T).await;
    w.stop().await;
    assert_eq!(row.attempts, 1);
    // The reclaimed message is marked: its adapter may ask before sending.
    let doubt: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, in_doubt FROM outbox WHERE id IN ('dead-worker-msg', 'probe') ORDER BY id",
    )
    .fetch_all(env.pool())
    .await
    .unwrap();
    assert_eq!(
        doubt,
        [("dead-worker-msg".to_string(), 1), ("probe".to_string(), 0)]
    );
    let live = env.row("live-worker-msg").await;
    assert_eq!(live.status, "sending");
    assert_eq!(live.lease_owner.as_deref(), Some("alive"));
    let keys: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or("").to_string())
        .collect();
    assert_eq!(keys, ["dead-worker-msg", "probe"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_call_in_flight_and_hands_back_the_rest() {
    let env = env().await;
    let rx = Receiver::start(script::always(
        Reply::ok().delay(Duration::from_millis(400)),
    ))
    .await;
    for i in 0..5 {
        env.contact(&format!("c{i}")).await;
        env.queue_at(&format!("m{i}"), &format!("c{i}"), "hook", now_ms() + i)
            .await;
    }
    let reg = registry(&hook(&rx.url("/hook"), "    concurrency: 1\n"));
    let w = Worker::start(&env, reg, fast_options());
    rx.wait_for(1, T).await;
    // All five are claimed; one is being sent.
    let started = Instant::now();
    w.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        rx.requests()[0].header("webhook-id"),
        Some("m0"),
        "calls start in claim order"
    );
    let first = env.row("m0").await;
    assert_eq!(
        first.status,
        "sent",
        "the call in flight finished and was recorded: {first:?} {:?}",
        rx.requests()
            .iter()
            .map(|r| r.header("webhook-id").map(str::to_string))
            .collect::<Vec<_>>()
    );
    for i in 1..5 {
        let r = env.row(&format!("m{i}")).await;
        assert_eq!(r.status, "queued", "m{i} handed back: {r:?}");
        assert_eq!(r.lease_owner, None);
        assert_eq!(r.lease_until, None);
        assert_eq!(r.attempts, 0);
    }
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_past_the_grace_period() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok().delay(Duration::from_secs(10)))).await;
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let opts = DeliveryOptions {
        shutdown_grace: Duration::from_millis(200),
        ..fast_options()
    };
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), opts);
    rx.wait_for(1, T).await;
    let started = Instant::now();
    w.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        started.elapsed()
    );
    let r = env.row("m1").await;
    assert_eq!(
        r.status, "queued",
        "handed back, to be sent again with the same key"
    );
    assert_eq!(r.lease_owner, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_an_unknown_channel_waits() {
    let env = env().await;
    env.contact("c1").await;
    env.queue("m1", "c1", "removed").await;
    let before = now_ms();
    let w = Worker::start(
        &env,
        registry("  console:\n    kind: log\n"),
        fast_options(),
    );
    let deadline = Instant::now() + T;
    let row = loop {
        let r = env.row("m1").await;
        if r.last_error.is_some() || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    w.stop().await;
    assert_eq!(row.status, "queued");
    assert_eq!(row.attempts, 0);
    assert!(
        row.last_error
            .unwrap()
            .contains("\"removed\" is not in the settings")
    );
    assert!(
        row.next_attempt_at >= before + 29_000,
        "looked at again later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_channel_delivers_and_unsupported_kinds_dead_letter() {
    let env = env().await;
    env.contact("c1").await;
    env.queue("m-log", "c1", "console").await;
    env.queue("m-sms", "c1", "sms").await;
    let mut reg = registry("  console:\n    kind: log\n  sms:\n    kind: log\n");
    // Every kind has an adapter now: `Unsupported` stands for a kind that has none.
    reg.channels.get_mut("sms").unwrap().1 =
        std::sync::Arc::new(nurture::channels::build::Unsupported {
            kind: nurture::settings::ChannelKind::Wecom,
        });
    let w = Worker::start(&env, reg, fast_options());
    let log = env.wait_status("m-log", "sent", T).await;
    let sms = env.wait_status("m-sms", "dead", T).await;
    w.stop().await;
    assert_eq!(log.attempts, 1);
    assert_eq!(
        sms.last_error.as_deref(),
        Some("channel kind wecom is not supported yet")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_delivers_without_waiting_for_the_poll() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    env.contact("c1").await;
    let opts = DeliveryOptions {
        max_idle: Duration::from_secs(30),
        ..fast_options()
    };
    let w = Worker::start(&env, registry(&hook(&rx.url("/hook"), "")), opts);
    // Let the worker go idle: it has nothing more once m0 is recorded.
    env.queue("m0", "c1", "hook").await;
    w.wake.notify_one();
    env.wait_status("m0", "sent", T).await;
    env.queue("m1", "c1", "hook").await;
    let t = Instant::now();
    w.wake.notify_one();
    rx.wait_for(2, Duration::from_secs(2)).await;
    assert!(t.elapsed() < Duration::from_secs(1));
    w.stop().await;
}

/// Throughput through a fast loopback webhook (the receiver runs in this
/// process, on the same two cores). Run with
/// `cargo test --release --test delivery throughput -- --ignored --nocapture`;
/// `NURTURE_BENCH_N` sets the message count (default 20 000).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn throughput() {
    let n: usize = std::env::var("NURTURE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let now = now_ms();
    let mut tx = env.pool().begin().await.unwrap();
    for i in 0..n {
        sqlx::query(
            "INSERT INTO contacts (id, name, created_at, updated_at) VALUES ($1, 'x', $2, $3)",
        )
        .bind(format!("c{i:07}"))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO outbox (id, workflow, contact_id, step_id, channel, recipient, body, status, attempts,
                                 not_before, next_attempt_at, created_at)
             VALUES ($1, 'bench', $2, '0', 'hook', $3, 'Hello there', 'queued', 0, $4, $5, $6)",
        )
        .bind(format!("m{i:07}"))
        .bind(format!("c{i:07}"))
        .bind(format!("c{i:07}"))
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let started = Instant::now();
    let w = Worker::start(
        &env,
        registry(&hook(&rx.url("/hook"), "")),
        DeliveryOptions {
            worker_id: "bench".into(),
            ..DeliveryOptions::default()
        },
    );
    loop {
        let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'sent'")
            .fetch_one(env.pool())
            .await
            .unwrap();
        if sent as usize == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {sent} of {n} sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    w.stop().await;
    assert_eq!(rx.count(), n, "each message sent exactly once");
    println!(
        "delivered {n} messages in {:.2} s: {:.0} messages/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_retried_then_dead_lettered_with_the_reason() {
    let env = env().await;
    let slow = Receiver::start(script::always(Reply::ok().delay(Duration::from_secs(3)))).await;
    // A port nobody listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    env.contact("c1").await;
    env.queue("m-slow", "c1", "slow").await;
    env.queue("m-closed", "c1", "closed").await;
    let yaml = format!(
        "  slow:\n    kind: webhook\n    url: {}?token=abc\n    timeout: 200ms\n  closed:\n    kind: webhook\n    url: http://{closed}/hook?token=abc\n",
        slow.url("/hook")
    );
    let opts = DeliveryOptions {
        max_attempts: 2,
        ..fast_options()
    };
    let w = Worker::start(&env, registry(&yaml), opts);
    let s = env.wait_status("m-slow", "dead", T).await;
    let c = env.wait_status("m-closed", "dead", T).await;
    w.stop().await;
    let (s, c) = (s.last_error.unwrap(), c.last_error.unwrap());
    assert!(s.contains("gave up after 2 tries: timed out"), "{s}");
    assert!(
        c.contains("gave up after 2 tries: connection failed"),
        "{c}"
    );
    assert!(
        !s.contains("token=abc") && !c.contains("token=abc"),
        "no URL in the reason"
    );
    assert_eq!(slow.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_messages_wait_for_their_channel() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    for i in 0..5 {
        env.contact(&format!("c{i}")).await;
        env.queue(&format!("m{i}"), &format!("c{i}"), "hook").await;
    }
    // Five messages at 2/s wait up to two seconds, far longer than the lease.
    let reg = registry(&hook(&rx.url("/hook"), "    rate_limit: 2/s\n"));
    let opts = DeliveryOptions {
        lease: Duration::from_millis(300),
        ..fast_options()
    };
    let w = Worker::start(&env, reg, opts);
    rx.wait_for(1, T).await;
    // Past the first lease of m4 (which waits its turn at 2/s): still ours.
    let first = env.row("m4").await;
    let first_lease = first.lease_until.expect("m4 is leased");
    while now_ms() <= first_lease + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = env.row("m4").await;
    assert_eq!(waiting.status, "sending");
    assert_eq!(waiting.lease_owner.as_deref(), Some("test-worker"));
    assert!(
        waiting.lease_until.unwrap() > now_ms(),
        "lease renewed: {waiting:?}"
    );
    for i in 0..5 {
        let r = env.wait_status(&format!("m{i}"), "sent", T).await;
        assert_eq!(r.attempts, 1);
    }
    w.stop().await;
    let mut ids: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["m0", "m1", "m2", "m3", "m4"], "each sent once");
}

/// A provider's "this recipient opted out" (Twilio 21610) dead-letters the
/// message and records the opt-out, so no workflow plans another message on
/// that channel for the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_opt_out_is_recorded_for_the_contact() {
    let env = env().await;
    env.contact("c1").await;
    env.contact("c2").await;
    env.queue("m-stop", "c1", "sms").await;
    env.queue("m-ok", "c2", "sms").await;
    // The fake answers by recipient: c1 has opted out at the provider.
    let rx = Receiver::start(Arc::new(|r: &support::receiver::Request| {
        if String::from_utf8_lossy(&r.body).contains("To=c1") {
            Reply::status(400).body(r#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","status":400}"#)
        } else {
            Reply::status(201).body(r#"{"sid":"SM1","status":"queued"}"#)
        }
    }))
    .await;
    let text = format!(
        "channels:\n  sms:\n    kind: twilio\n    base_url: {}\n    account_sid_env: SID\n    auth_token_env: TOKEN\n    from: \"+15550001111\"\n",
        rx.url("")
    );
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text).unwrap();
    let reg = build_registry_with_env(&settings, &|name| match name {
        "SID" => Some("AC123".into()),
        "TOKEN" => Some("secret".into()),
        _ => None,
    })
    .unwrap();
    let w = Worker::start(&env, reg, fast_options());
    let dead = env.wait_status("m-stop", "dead", T).await;
    env.wait_status("m-ok", "sent", T).await;
    w.stop().await;
    assert!(
        dead.last_error
            .as_deref()
            .unwrap()
            .starts_with("opted_out: twilio 21610"),
        "{dead:?}"
    );
    let opted: Vec<(String, String)> =
        sqlx::query_as("SELECT contact_id, channel FROM contact_opt_outs")
            .fetch_all(env.pool())
            .await
            .unwrap();
    assert_eq!(opted, vec![("c1".to_string(), "sms".to_string())]);
}

/// Channels and quiet hours `start`–`end` (HH:MM, Asia/Shanghai) as the
/// daemon builds them from settings text.
fn registry_with_quiet_hours(channels_yaml: &str, start: &str, end: &str) -> Registry {
    let text = format!(
        "timezone: Asia/Shanghai\npolicies:\n  quiet_hours: {{ start: \"{start}\", end: \"{end}\" }}\nchannels:\n{channels_yaml}"
    );
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text)
        .unwrap_or_else(|d| panic!("settings: {d:?}"));
    let secret = format!("whsec_{}", BASE64.encode(SECRET_BYTES));
    build_registry_with_env(&settings, &|name| {
        (name == "HOOK_SECRET").then(|| secret.clone())
    })
    .unwrap_or_else(|e| panic!("channels: {e:?}"))
}

/// This minute (UTC, whole minutes) and `HH:MM` in Shanghai of an instant.
fn this_minute() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    chrono::Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap()
}

fn shanghai_hm(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%H:%M")
        .to_string()
}

/// Issue 12 item 9: a retry is deferred to the contact's window exactly like
/// a first send. The provider answers 429 with `Retry-After: 600`; quiet
/// hours start in two minutes and last three hours; the retry is due at the
/// end of the quiet hours, not ten minutes from now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_falls_in_quiet_hours_waits_for_their_end() {
    let env = env().await;
    let rx = Receiver::start(script::always(
        Reply::status(429).header("Retry-After", "600"),
    ))
    .await;
    let start = this_minute() + chrono::TimeDelta::minutes(2);
    let end = start + chrono::TimeDelta::hours(3);
    env.contact("c1").await;
    env.queue("m1", "c1", "hook").await;
    let reg = registry_with_quiet_hours(
        &hook(&rx.url("/hook"), ""),
        &shanghai_hm(start),
        &shanghai_hm(end),
    );
    let w = Worker::start(&env, reg, fast_options());
    rx.wait_for(1, T).await;
    let deadline = Instant::now() + T;
    let row = loop {
        let row = env.row("m1").await;
        if row.status == "queued" && row.attempts == 1 {
            break row;
        }
        assert!(Instant::now() < deadline, "{row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    w.stop().await;
    assert_eq!(
        row.next_attempt_at,
        end.timestamp_millis(),
        "the retry waits for the end of quiet hours: {row:?}"
    );
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("429"),
        "{row:?}"
    );
    assert_eq!(rx.count(), 1);
}

/// Issue 12 item 9: a message reclaimed after a crash (its lease expired)
/// during the contact's quiet hours is not sent then: it goes back to the
/// outbox until the window ends. A notice to a salesperson is not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_message_in_quiet_hours_waits_and_a_notice_does_not() {
    let env = env().await;
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let start = this_minute() - chrono::TimeDelta::hours(1);
    let end = this_minute() + chrono::TimeDelta::hours(1);
    env.contact("c1").await;
    let now = now_ms();
    sqlx::query(
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, subject, body,
                             status, attempts, not_before, next_attempt_at, created_at, lease_owner, lease_until)
         VALUES ('m1', 'winback', 'c1', 1, '1', 'hook', 'c1', NULL, 'Hi', 'sending', 0, $1, $1, $1, 'killed-worker', $2)",
    )
    .bind(now - 60_000)
    .bind(now - 1)
    .execute(env.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, subject, body,
                             payload, status, attempts, not_before, next_attempt_at, created_at)
         VALUES ('n1', 'winback', 'c1', 1, '1:notify', 'hook', 'sales-1', NULL, 'New lead', '{\"kind\":\"notice\"}', 'queued', 0, $1, $1, $1)",
    )
    .bind(now)
    .execute(env.pool())
    .await
    .unwrap();
    let reg = registry_with_quiet_hours(
        &hook(&rx.url("/hook"), ""),
        &shanghai_hm(start),
        &shanghai_hm(end),
    );
    let w = Worker::start(&env, reg, fast_options());
    env.wait_status("n1", "sent", T).await;
    let deadline = Instant::now() + T;
    let row = loop {
        let row = env.row("m1").await;
        if row.status == "queued" && row.next_attempt_at > now {
            break row;
        }
        assert!(Instant::now() < deadline, "{row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    w.stop().await;
    assert_eq!(row.next_attempt_at, end.timestamp_millis(), "{row:?}");
    assert_eq!(row.attempts, 0, "holding back is not an attempt: {row:?}");
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("quiet hours"),
        "{row:?}"
    );
    let ids: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or("").to_string())
        .collect();
    assert_eq!(ids, ["n1"], "only the notice went out");
}
