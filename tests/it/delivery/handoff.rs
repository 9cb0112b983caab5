//! Messages due now go from the planner's transaction straight to the
//! delivery worker (`store::handoff`): written `sending` and leased to the
//! worker in the plan's commit, started without a claim; a rollback gives
//! their slots back; a backlog in the outbox goes first; a worker that is
//! stopping refuses them and they go back to the pool.

use super::*;
use nurture::channels::delivery::handoff::DeliveryHandoff;
use nurture::store::handoff::Handoff as _;
use nurture::store::outbox::NewMessage;

/// A worker that takes handed messages and otherwise sleeps long: only the
/// handoff (or an explicit wake) makes it look at the outbox again.
struct Handing {
    worker: Worker,
    handoff: Arc<DeliveryHandoff>,
}

fn sleepy_options() -> DeliveryOptions {
    DeliveryOptions {
        max_idle: Duration::from_secs(15),
        ..fast_options()
    }
}

fn start(env: &Env, registry: Registry, opts: DeliveryOptions) -> Handing {
    let (handoff, inbox) = DeliveryHandoff::new(opts.worker_id.clone(), opts.lease);
    let (tx, rx) = watch::channel(Arc::new(registry));
    let shutdown = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let task = tokio::spawn(delivery::run_with(
        env.store.clone(),
        rx,
        opts,
        wake.clone(),
        Some((handoff.clone(), inbox)),
        shutdown.clone(),
    ));
    Handing {
        worker: Worker {
            shutdown,
            wake,
            task,
            _registry: tx,
        },
        handoff,
    }
}

/// A receiver answering after `delay`, a sleepy worker on `hook` (with
/// `extra` settings) that has taken a first message through the outbox: its
/// claim has caught up, so the channel takes handed messages.
async fn warmed(env: &Env, delay: Duration, extra: &str) -> (Receiver, Handing) {
    let rx = Receiver::start(script::always(Reply::ok().delay(delay))).await;
    env.queue("warm", "c1", "hook").await;
    let h = start(
        env,
        registry(&hook(&rx.url("/hook"), extra)),
        sleepy_options(),
    );
    env.wait_status("warm", "sent", Duration::from_secs(10))
        .await;
    (rx, h)
}

/// The idempotency keys the receiver got, in order.
fn keys(rx: &Receiver) -> Vec<String> {
    rx.requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or("").to_string())
        .collect()
}

/// Wakes the worker and waits for its claim of `hook` to catch up afresh:
/// the handoff takes messages for `CAUGHT_UP_FOR` (1 s) after such a
/// claim, and on a loaded machine the warm-up's could be older than that
/// by the time a test plans (the suite failed so once: 0 of 8 leased).
async fn caught_up(h: &Handing) {
    let since = std::time::Instant::now();
    let deadline = since + Duration::from_secs(10);
    loop {
        if h.handoff.caught_up_at("hook").is_some_and(|t| t >= since) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker's claim did not catch up"
        );
        h.worker.wake.notify_one();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Queues messages `ids` for `contact` on `hook`, due at `at`, in one plan
/// transaction handed off to `h`; commits unless `rollback`.
async fn plan(env: &Env, h: &Handing, ids: &[&str], contact: &str, at: i64, rollback: bool) {
    let mut tx = env.store.transaction().await.unwrap();
    tx.hand_off_to(h.handoff.clone());
    let msgs: Vec<NewMessage<'_>> = ids
        .iter()
        .map(|id| NewMessage {
            id,
            workflow: "welcome",
            contact_id: contact,
            enrollment_id: 1,
            step_id: "1",
            channel: "hook",
            recipient: contact,
            subject: None,
            body: "Welcome",
            payload: "{}".into(),
            not_before: at,
            created_at: now_ms(),
        })
        .collect();
    assert_eq!(tx.queue_messages(&msgs).await.unwrap(), ids.len() as u64);
    if !rollback {
        tx.commit().await.unwrap();
    }
}

async fn count(env: &Env, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(env.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_message_due_now_is_leased_in_the_plans_commit_and_sent_without_a_claim() {
    let env = env().await;
    env.contact("c1").await;
    let (rx, h) = warmed(&env, Duration::from_millis(300), "").await;

    caught_up(&h).await;
    plan(&env, &h, &["now"], "c1", now_ms(), false).await;
    plan(&env, &h, &["later"], "c1", now_ms() + 3_600_000, false).await;
    // Right after the commit, before any claim: leased to the worker.
    let row = env.row("now").await;
    assert!(
        row.status == "sent"
            || (row.status == "sending" && row.lease_owner.as_deref() == Some("test-worker")),
        "{row:?}"
    );
    // The worker sleeps 15 s between looks at the outbox and nobody woke
    // it: the handoff alone starts the call.
    let sent = env.wait_status("now", "sent", Duration::from_secs(5)).await;
    assert_eq!(sent.attempts, 1);
    assert_eq!(sent.lease_owner, None);
    // Not due yet: queued in the outbox, not leased.
    let later = env.row("later").await;
    assert_eq!((later.status.as_str(), later.lease_owner), ("queued", None));
    let keys = keys(&rx);
    assert_eq!(keys, ["warm", "now"]);
    h.worker.stop().await;
}

#[tokio::test]
async fn a_rolled_back_plan_gives_its_slots_back_and_a_full_channel_leaves_messages_queued() {
    let env = env().await;
    env.contact("c1").await;
    // One call at a time: the channel holds at most 8 messages.
    let (rx, h) = warmed(&env, Duration::from_millis(500), "    concurrency: 1\n").await;

    let ids: Vec<String> = (0..8).map(|i| format!("rolled-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    caught_up(&h).await;
    plan(&env, &h, &refs, "c1", now_ms(), true).await;
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM outbox WHERE id LIKE 'rolled-%'").await,
        0
    );

    // The rolled-back plan's 8 slots are free again: 8 of these 9 are
    // leased in the commit, the ninth waits in the outbox.
    let ids: Vec<String> = (0..9).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    caught_up(&h).await;
    plan(&env, &h, &refs, "c1", now_ms(), false).await;
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM outbox WHERE id LIKE 'm%' AND status <> 'queued'"
        )
        .await,
        8
    );
    assert_eq!(count(&env, "SELECT COUNT(*) FROM outbox WHERE id = 'm8' AND status = 'queued' AND lease_owner IS NULL").await, 1);
    // The ninth is claimed once there is room; each is sent once.
    h.worker.wake.notify_one();
    env.wait_status("m8", "sent", Duration::from_secs(20)).await;
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await,
        10
    );
    assert_eq!(rx.count(), 10);
    h.worker.stop().await;
}

#[tokio::test]
async fn a_backlog_in_the_outbox_goes_before_newly_planned_messages() {
    let env = env().await;
    env.contact("c1").await;
    let rx = Receiver::start(script::always(
        Reply::ok().delay(Duration::from_millis(200)),
    ))
    .await;
    let t0 = now_ms() - 60_000;
    for i in 0..30 {
        env.queue_at(&format!("old{i:02}"), "c1", "hook", t0 + i)
            .await;
    }
    let h = start(
        &env,
        registry(&hook(&rx.url("/hook"), "    concurrency: 1\n")),
        fast_options(),
    );
    // The worker's first claim took 8 of the 30 (one call at a time, 8
    // held); once the first is sent its lane has room, but the outbox still
    // holds 22 due messages: the plan's message waits behind them.
    env.wait_status("old00", "sent", Duration::from_secs(10))
        .await;
    plan(&env, &h, &["new"], "c1", now_ms(), false).await;
    let row = env.row("new").await;
    assert_eq!((row.status.as_str(), row.lease_owner), ("queued", None));

    env.wait_status("new", "sent", Duration::from_secs(30))
        .await;
    let keys = keys(&rx);
    assert_eq!(keys.len(), 31);
    assert_eq!(keys.last().map(String::as_str), Some("new"), "{keys:?}");
    h.worker.stop().await;
}

#[tokio::test]
async fn a_stopping_worker_refuses_handed_messages_and_they_go_back_to_the_pool() {
    let env = env().await;
    env.contact("c1").await;
    let (rx, h) = warmed(&env, Duration::ZERO, "").await;

    // The plan takes its slot while the worker runs; the worker stops
    // before the plan commits.
    let mut tx = env.store.transaction().await.unwrap();
    tx.hand_off_to(h.handoff.clone());
    tx.queue_message(NewMessage {
        id: "late",
        workflow: "welcome",
        contact_id: "c1",
        enrollment_id: 1,
        step_id: "1",
        channel: "hook",
        recipient: "c1",
        subject: None,
        body: "Welcome",
        payload: "{}".into(),
        not_before: now_ms(),
        created_at: now_ms(),
    })
    .await
    .unwrap();
    // The worker stops; its first act is to close the handoff (on SQLite
    // its final hand-back then waits for this transaction's lock).
    h.worker.shutdown.cancel();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.handoff.take("hook") {
        h.handoff.untake("hook", 1);
        assert!(Instant::now() < deadline, "the handoff stays open");
        tokio::task::yield_now().await;
    }
    tx.commit().await.unwrap();
    h.worker.stop().await;

    let row = env.row("late").await;
    assert_eq!((row.status.as_str(), row.lease_owner), ("queued", None));
    assert_eq!(row.attempts, 0);
    assert_eq!(rx.count(), 1);
}

#[tokio::test]
async fn a_row_leased_to_the_worker_that_it_does_not_hold_expires_and_is_sent_once() {
    // A handed message whose commit reported an error (but happened), or
    // whose delivery to the worker failed, is leased to the worker without
    // the worker knowing: its lease is not renewed, it expires and is
    // reclaimed like a dead worker's.
    let env = env().await;
    env.contact("c1").await;
    // `busy` keeps the worker holding a message (renewing its lease) while
    // the orphan's lease runs out.
    let rx = Receiver::start(Arc::new(|r: &support::receiver::Request| {
        if r.header("idempotency-key") == Some("busy") {
            Reply::ok().delay(Duration::from_secs(6))
        } else {
            Reply::ok()
        }
    }))
    .await;
    env.queue("busy", "c1", "hook").await;
    env.queue("orphan", "c1", "hook").await;
    sqlx::query(
        "UPDATE outbox SET status = 'sending', lease_owner = 'test-worker', lease_until = $1 WHERE id = 'orphan'",
    )
    .bind(now_ms() + 900)
    .execute(env.pool())
    .await
    .unwrap();
    let opts = DeliveryOptions {
        lease: Duration::from_millis(900),
        ..fast_options()
    };
    let h = start(&env, registry(&hook(&rx.url("/hook"), "")), opts);
    let row = env
        .wait_status("orphan", "sent", Duration::from_secs(4))
        .await;
    assert_eq!(row.attempts, 1);
    assert_eq!(env.row("busy").await.status, "sending");
    env.wait_status("busy", "sent", Duration::from_secs(10))
        .await;
    assert_eq!(rx.count(), 2);
    h.worker.stop().await;
}
