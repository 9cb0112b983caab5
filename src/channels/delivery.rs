//! The delivery worker: takes due messages from the outbox and hands them to
//! their channel's adapter, once, for every channel.
//!
//! How a message moves (SPEC §4):
//!
//! 1. **Claim.** In one write transaction (`BEGIN IMMEDIATE` on SQLite; on
//!    PostgreSQL the inner SELECT is `FOR UPDATE SKIP LOCKED`, so daemons
//!    sharing the store claim disjoint rows without waiting) the worker marks due
//!    `queued` rows `sending` with its `lease_owner` and a `lease_until`
//!    (`UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …`). Rows whose lease
//!    expired (a worker killed mid-send) are put back in the pool first, with a
//!    note in `last_error`: that is the one case where a message may be sent
//!    twice, and its id, sent as the idempotency key, lets the receiver dedupe.
//!    A live worker renews its leases every `lease / 3`, so a message waiting
//!    for its channel's rate limit is never taken by another worker.
//!    Messages this daemon's scheduler plans for now skip the claim: the plan's
//!    commit writes them already leased to the worker, which gets them through
//!    [`handoff`] while it has room on their channel and has caught up with
//!    what waits in the outbox.
//! 2. **Consent.** The contacts of a claimed batch are read in one query. An
//!    unsubscribed or opted-out contact's message is `cancelled` (last_error
//!    `unsubscribed`), a deleted contact's too (`contact_deleted`). A message
//!    that then waits more than `consent_recheck_after` for its channel is
//!    checked again right before the call.
//! 3. **Send.** Per channel: a semaphore holds in-flight calls to
//!    `concurrency` and a GCRA limiter (governor) holds calls to `rate_limit`.
//!    Each channel claims at most a bounded number of messages ahead, so a slow
//!    channel never holds back the others.
//! 4. **Outcome.** Delivered → `sent`. Retry → `queued` again after
//!    `max(Retry-After, backoff with full jitter, capped)`, or `dead` with
//!    the provider's reason once `retry_for` (24 h) has passed since the
//!    message first failed: retries span an outage by time, not by count
//!    (`max_attempts` is an optional count limit on top). Permanent →
//!    `dead`. Outcomes are written by one writer task that commits whatever
//!    has accumulated in one transaction (batched under load, one row when
//!    idle); every write checks that this worker still holds the lease.
//!    A call keeps its channel's concurrency slot until its outcome is
//!    committed: calls in flight plus outcomes not yet durable never exceed
//!    `concurrency`, so that is the most a `kill -9` can make go out twice.
//!    A message reclaimed after its lease expired is marked `in_doubt`: an
//!    adapter that can ask its provider whether it already got the message
//!    (Aliyun `QuerySendDetails`, WeCom's recorded task) asks before sending.
//!
//! Shutdown: stop claiming, let calls already in progress finish (at most
//! `shutdown_grace`), write their outcomes, then hand every message still
//! leased to this worker back to the pool (`queued`, lease cleared, attempts
//! unchanged) and return.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::RngExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::retry::next_delay;
use super::{Channel, Delivery, DeliveryPolicy, OutMessage, Registry};
use crate::contact::Contact;
use crate::metrics;
use crate::settings::QuietHours;
use crate::store::outbox::{self, ClaimTimes, Claimed, Fate, Recorded};
use crate::store::outbox_conn::OutboxConn;
use crate::store::states::MessageKind;
use crate::store::{Bind, Store};
use chrono_tz::Tz;

pub mod handoff;
mod lanes;
mod send;
mod writer;

pub use lanes::quota;
use lanes::*;
use send::*;
use writer::*;

/// The longest a [`Delivery::Wait`] waits (a provider's daily window).
pub const WAIT_MAX: Duration = Duration::from_secs(86_400);
/// How long retries go on by default: a provider outage of a day does not
/// dead-letter anything.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two tries by default: once a provider is back,
/// every waiting message is tried within this.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// How the worker runs. `Default` is what the daemon uses.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Written into `outbox.lease_owner`; unique per process.
    pub worker_id: String,
    /// Most messages claimed per channel in one claim.
    pub batch: usize,
    /// How long a claim holds before another worker may take the message.
    pub lease: Duration,
    /// Tries in all (the first included) before a message is dead-lettered;
    /// unlimited (`u32::MAX`) by default: `retry_for` ends retries.
    pub max_attempts: u32,
    /// How long after its first retryable failure a message keeps being
    /// retried (timeouts, connection errors, 5xx, 429) before it is
    /// dead-lettered.
    pub retry_for: Duration,
    /// Backoff of the first retry (before jitter); doubles each retry.
    pub backoff_base: Duration,
    /// The backoff's ceiling.
    pub backoff_max: Duration,
    /// How long shutdown waits for calls in progress.
    pub shutdown_grace: Duration,
    /// When a message's channel is not in the settings, it stays queued and
    /// is looked at again after this long.
    pub unknown_channel_delay: Duration,
    /// A message that waited longer than this for its channel has its
    /// contact's consent checked again right before the call.
    pub consent_recheck_after: Duration,
    /// The longest the worker sleeps without looking at the outbox.
    pub max_idle: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            worker_id: default_worker_id(),
            batch: 256,
            lease: Duration::from_secs(60),
            max_attempts: u32::MAX,
            retry_for: DEFAULT_RETRY_FOR,
            backoff_base: Duration::from_secs(1),
            backoff_max: DEFAULT_BACKOFF_MAX,
            shutdown_grace: Duration::from_secs(10),
            unknown_channel_delay: Duration::from_secs(30),
            consent_recheck_after: Duration::from_secs(1),
            max_idle: Duration::from_secs(1),
        }
    }
}

/// `HOST-PID-RANDOM`: distinct for every process, even on one host.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "nurture".into());
    let nonce: u32 = rand::rng().random();
    format!("{host}-{}-{nonce:08x}", std::process::id())
}

struct Outcome {
    id: String,
    workflow: String,
    contact_id: String,
    step_id: String,
    channel: String,
    created_at: i64,
    fate: Fate,
    pending: Arc<AtomicUsize>,
    /// Wake the claim loop when `pending` falls to this.
    room_at: usize,
    /// The channel's concurrency slot the call held: released only once the
    /// outcome is committed, so the calls in flight plus the outcomes not yet
    /// durable never exceed `concurrency` — the most a `kill -9` can cause
    /// to be sent twice.
    _permit: Option<OwnedSemaphorePermit>,
}

struct Shared {
    store: Store,
    /// The delivery's own connection on a SQLite file (`None`: the pool).
    conn: Option<OutboxConn>,
    opts: DeliveryOptions,
    /// Ids claimed by this worker and not yet written back: a reclaim of one of
    /// them (after a stall longer than the lease) must not start a second call.
    inflight: Mutex<HashSet<String>>,
    /// Notified when a channel's pending count falls low enough to claim more.
    room: Notify,
}

fn now_ms() -> i64 {
    crate::store::to_ms(chrono::Utc::now())
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the delivery worker until `shutdown` is cancelled (see the module
/// docs). `registry` carries the current channels (the daemon sends a new one
/// on a settings reload); `wake` is notified by the scheduler after it queued
/// messages.
pub async fn run(
    store: Store,
    registry: watch::Receiver<Arc<Registry>>,
    opts: DeliveryOptions,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(store, registry, opts, wake, None, shutdown).await
}

/// [`run`], also taking the messages the scheduler hands straight over
/// (`handoff`: see [`handoff`]).
pub async fn run_with(
    store: Store,
    mut registry: watch::Receiver<Arc<Registry>>,
    opts: DeliveryOptions,
    wake: Arc<Notify>,
    handoff: Option<(Arc<handoff::DeliveryHandoff>, handoff::Inbox)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (handoff, mut inbox) = handoff.unzip();
    let conn = match OutboxConn::open(&store).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not open the delivery's own store connection; outcomes go through the pool");
            None
        }
    };
    let shared = Arc::new(Shared {
        store,
        conn,
        opts,
        inflight: Mutex::new(HashSet::new()),
        room: Notify::new(),
    });
    let opts = &shared.opts;
    let tracker = TaskTracker::new();
    // Cancelled when the grace period is over: calls still running are dropped.
    let hard_stop = CancellationToken::new();
    let (out_tx, out_rx) = mpsc::channel::<Outcome>(8_192);
    let mut writer = tokio::spawn(writer(shared.clone(), out_rx, shutdown.clone()));
    // Set when the writer ended before shutdown (a panic): nothing would
    // record outcomes any more, so the worker stops and the daemon with it.
    let mut writer_died: Option<anyhow::Error> = None;

    let mut lanes: HashMap<String, Lane> = HashMap::new();
    // Each channel's pending count, kept when its lane is rebuilt or removed
    // (a handed message's slot is given back to the count it was taken from).
    let mut counters: HashMap<String, Arc<AtomicUsize>> = HashMap::new();
    let mut registry_open = true;
    let mut last_renew = Instant::now();
    // Expired leases are looked for at the first claim, then on this timer.
    let reap_every = (opts.lease / 4).min(Duration::from_secs(1));
    let mut last_reap: Option<Instant> = None;
    let mut last_unknown_sweep: Option<Instant> = None;
    let mut last_depth: Option<Instant> = None;
    tracing::info!(worker = %opts.worker_id, "delivery worker started");

    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if writer.is_finished() {
            writer_died = Some(writer_end((&mut writer).await));
            break;
        }
        let reg = registry.borrow_and_update().clone();
        sync_lanes(
            &mut lanes,
            &mut counters,
            &reg,
            opts.batch,
            &tracker,
            &shutdown,
        );
        if let Some(h) = &handoff {
            h.sync(&lanes);
        }
        // Messages handed over since the last turn.
        while let Some(rows) = inbox.as_mut().and_then(|i| i.try_recv().ok()) {
            dispatch_handed(&shared, &lanes, &counters, &reg, rows, &out_tx, &hard_stop).await;
        }

        if last_renew.elapsed() >= opts.lease / 3 {
            if let Err(e) = renew_leases(&shared).await {
                tracing::warn!(error = %e, "renewing outbox leases failed");
            }
            last_renew = Instant::now();
        }
        if last_depth.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            if let Ok(n) = outbox::queue_depth(&shared.store).await {
                metrics::global().queue_depth.set(n);
            }
            last_depth = Some(Instant::now());
        }

        // How many each channel may claim now: counted in its lane before
        // the claim (the planner's handoff takes slots meanwhile), the
        // unused part given back after it.
        let mut wants: Vec<(String, usize)> = Vec::new();
        let mut blocked = false;
        for (name, lane) in &lanes {
            match reserve(lane, opts.batch) {
                Some(n) => wants.push((name.clone(), n)),
                None => blocked = true,
            }
        }
        let sweep = last_unknown_sweep.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        let reap = last_reap.is_none_or(|t| t.elapsed() >= reap_every);
        // Every lane waits for room and nothing else is due: no transaction.
        let claimed = if wants.is_empty() && !sweep && !reap {
            Vec::new()
        } else {
            match claim(
                &shared,
                &wants,
                sweep.then(|| reg.channels.keys().cloned().collect()),
                reap,
            )
            .await
            {
                Ok(c) => {
                    if sweep {
                        last_unknown_sweep = Some(Instant::now());
                    }
                    if reap {
                        last_reap = Some(Instant::now());
                    }
                    c
                }
                Err(e) => {
                    for (name, n) in &wants {
                        if let Some(lane) = lanes.get(name) {
                            lane.pending.fetch_sub(*n, Ordering::AcqRel);
                        }
                    }
                    tracing::warn!(error = %e, "claiming outbox messages failed; trying again shortly");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            }
        };
        let mut more = false;
        for ((name, want), rows) in wants.iter().zip(claimed) {
            if rows.len() >= *want {
                more = true;
            }
            if let Some(h) = &handoff {
                h.claimed(name, rows.len() < *want);
            }
            if let Some(lane) = lanes.get(name) {
                lane.pending
                    .fetch_sub(want - rows.len().min(*want), Ordering::AcqRel);
            }
            if rows.is_empty() {
                continue;
            }
            let (Some(lane), Some((_, adapter))) = (lanes.get(name), reg.get(name)) else {
                continue;
            };
            dispatch(
                &shared,
                lane,
                adapter.clone(),
                &reg.policy,
                rows,
                &out_tx,
                &hard_stop,
            )
            .await;
        }
        if more {
            tokio::task::yield_now().await;
            continue;
        }

        // Sleep until something may be due, woken early by the scheduler, by
        // a full channel freeing room, or by new settings.
        // (Every lane full: the writer's notice of room is what to wait for.)
        let due = if wants.is_empty() && blocked {
            Ok(None)
        } else {
            outbox::next_due(&shared.store).await
        };
        let idle = match due {
            Ok(Some(at)) => {
                let d = at - now_ms();
                if d > 0 {
                    Duration::from_millis(d as u64).min(opts.max_idle)
                } else {
                    // Due but not claimable (its channel is full or unknown):
                    // wait for room, at most max_idle.
                    opts.max_idle
                }
            }
            _ => opts.max_idle,
        }
        .min(opts.lease / 3) // wake in time to renew the leases
        .max(Duration::from_millis(1));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = shared.room.notified(), if blocked => {}
            Some(rows) = async { inbox.as_mut()?.recv().await }, if inbox.is_some() => {
                dispatch_handed(&shared, &lanes, &counters, &reg, rows, &out_tx, &hard_stop).await;
            }
            r = registry.changed(), if registry_open => {
                if r.is_err() {
                    registry_open = false;
                }
            }
            w = &mut writer => {
                writer_died = Some(writer_end(w));
                break;
            }
            _ = tokio::time::sleep(idle) => {}
        }
    }

    // Shutdown: calls in progress finish (bounded), the rest is handed back
    // (with what was handed over and not started: it is leased to us).
    tracing::info!(worker = %opts.worker_id, "delivery worker stopping");
    if let Some(h) = &handoff {
        h.close();
    }
    drop(inbox);
    tracker.close();
    if tokio::time::timeout(opts.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "provider calls still running after {:?}; their messages are handed back and may be sent again (same idempotency key)",
            opts.shutdown_grace
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    drop(out_tx);
    if writer_died.is_none()
        && let Err(e) = writer.await
    {
        writer_died = Some(anyhow::anyhow!("the outbox writer failed: {e}"));
    }
    match hand_back(&shared).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(messages = n, "handed claimed messages back to the outbox"),
        Err(e) => tracing::error!(
            error = %e,
            "handing messages back failed; they return to the pool when their lease expires"
        ),
    }
    tracing::info!(worker = %opts.worker_id, "delivery worker stopped");
    writer_died.map_or(Ok(()), Err)
}

/// Why the writer ended while the worker still ran.
fn writer_end(joined: Result<(), tokio::task::JoinError>) -> anyhow::Error {
    let why = match joined {
        Ok(()) => "it ended".to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(error = %why, "the outbox writer stopped; the delivery worker stops too");
    anyhow::anyhow!("the outbox writer stopped: {why}")
}

/// Whether a message that first failed at `first_failed_at` has been
/// retried for `retry_for` by `now` (never on its first failure).
fn retries_over(first_failed_at: Option<i64>, now: i64, retry_for: Duration) -> bool {
    first_failed_at.is_some_and(|t| now.saturating_sub(t) >= dur_ms(retry_for))
}

/// Claims up to `n` due messages of each channel in `wants` (see
/// [`outbox::claim`]); when `known` is given, the due messages of channels not
/// in it are pushed back.
async fn claim(
    shared: &Shared,
    wants: &[(String, usize)],
    known: Option<Vec<String>>,
    reap: bool,
) -> Result<Vec<Vec<Claimed>>, sqlx::Error> {
    let now = now_ms();
    let times = ClaimTimes {
        now,
        lease_until: now + dur_ms(shared.opts.lease),
        unknown_until: now + dur_ms(shared.opts.unknown_channel_delay),
    };
    match &shared.conn {
        Some(conn) => {
            conn.claim(
                &shared.store,
                shared.opts.worker_id.clone(),
                times,
                wants.to_vec(),
                known,
                reap,
            )
            .await
        }
        None => {
            outbox::claim_with(
                &shared.store,
                &shared.opts.worker_id,
                times,
                wants,
                known,
                reap,
            )
            .await
        }
    }
}

/// Renews the leases of the messages this worker holds (claimed or handed
/// over, and not yet written back). A row leased to this worker that it does
/// not hold (a handed message whose commit reported an error, or whose
/// delivery to the worker failed) is left to expire and be reclaimed.
async fn renew_leases(shared: &Shared) -> Result<u64, sqlx::Error> {
    let until = now_ms() + dur_ms(shared.opts.lease);
    let held: Vec<String> = shared
        .inflight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    if held.is_empty() {
        return Ok(0);
    }
    outbox::renew_leases(&shared.store, &shared.opts.worker_id, &held, until).await
}

async fn hand_back(shared: &Shared) -> Result<u64, sqlx::Error> {
    outbox::hand_back(&shared.store, &shared.opts.worker_id).await
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    shared: &Arc<Shared>,
    lane: &Lane,
    adapter: Arc<dyn Channel>,
    policy: &DeliveryPolicy,
    rows: Vec<Claimed>,
    out: &mpsc::Sender<Outcome>,
    hard_stop: &CancellationToken,
) {
    // The rows arrive counted in the lane's pending (reserved before the
    // claim, or taken by the handoff). Not ours to start again: still
    // running from an earlier claim; its slot is given back.
    let given = rows.len();
    let rows: Vec<Claimed> = {
        let mut inflight = shared
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rows.into_iter()
            .filter(|r| inflight.insert(r.id.clone()))
            .collect()
    };
    lane.pending.fetch_sub(given - rows.len(), Ordering::AcqRel);
    if rows.is_empty() {
        return;
    }
    let room_at = lane.max_pending / 2;
    let checked_at = Instant::now();
    let ids: Vec<&str> = rows.iter().map(|r| r.contact_id.as_str()).collect();
    let contacts = match load_contacts(&shared.store, &ids).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "reading contacts for delivery failed; the messages wait");
            None
        }
    };
    for row in rows {
        let outcome = |fate| Outcome {
            id: row.id.clone(),
            workflow: row.workflow.clone(),
            contact_id: row.contact_id.clone(),
            step_id: row.step_id.clone(),
            channel: row.channel.clone(),
            created_at: row.created_at,
            fate,
            pending: lane.pending.clone(),
            room_at,
            _permit: None,
        };
        let Some(contacts) = &contacts else {
            let fate = Fate::Release {
                next_at: now_ms() + 1_000,
                error: "could not read the contact; trying again".into(),
            };
            let _ = out.send(outcome(fate)).await;
            continue;
        };
        let contact = contacts.get(&row.contact_id);
        let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
        if let Some(reason) = consent_for(contact, &row.channel, &payload) {
            let _ = out
                .send(outcome(Fate::Cancelled {
                    reason: reason.into(),
                }))
                .await;
            continue;
        }
        // Quiet hours hold on every attempt, not only the first: a retry, a
        // provider's wait, a released or a reclaimed message (whose lease
        // expired) is due only when the contact's window allows.
        let quiet = match (policy.quiet_hours, contact) {
            (Some(q), Some(c)) if to_the_contact(&payload) => {
                Some((q, crate::policy::contact_tz_or(c, policy.timezone)))
            }
            _ => None,
        };
        let now = now_ms();
        let allowed = in_window(quiet, now);
        if allowed > now {
            let fate = Fate::Release {
                next_at: allowed,
                error: quiet_note(allowed, quiet),
            };
            let _ = out.send(outcome(fate)).await;
            continue;
        }
        let contact_value = contact.map(Contact::template_value).unwrap_or_default();
        let msg = OutMessage {
            id: row.id.clone(),
            workflow: row.workflow.clone(),
            contact_id: row.contact_id.clone(),
            step_id: row.step_id.clone(),
            channel: row.channel.clone(),
            to: row.recipient.clone(),
            subject: row.subject.clone(),
            body: row.body.clone(),
            contact: contact_value,
            attempt: row.attempts + 1,
            payload,
            in_doubt: row.in_doubt,
        };
        let task = SendTask {
            shared: shared.clone(),
            adapter: adapter.clone(),
            out: out.clone(),
            hard_stop: hard_stop.clone(),
            checked_at,
            pending: lane.pending.clone(),
            room_at,
            created_at: row.created_at,
            attempts: row.attempts,
            first_failed_at: row.first_failed_at,
            quiet,
            permit: None,
        };
        // The pump ends only on shutdown; the row is then handed back.
        let _ = lane.queue.send((task, msg));
    }
}

/// Counts up to `batch` claims ahead in `lane`'s pending, when it has at
/// least [`claim_room`] free; gives how many.
fn reserve(lane: &Lane, batch: usize) -> Option<usize> {
    let mut n = 0;
    lane.pending
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
            let room = lane.max_pending.saturating_sub(p);
            n = room.min(batch);
            (n > 0 && room >= claim_room(lane.max_pending)).then_some(p + n)
        })
        .ok()
        .map(|_| n)
}

/// Starts the messages handed over in one committed transaction, per
/// channel. A channel gone from the settings meanwhile gets its messages
/// back in the pool (queued), where the unknown-channel sweep finds them.
async fn dispatch_handed(
    shared: &Arc<Shared>,
    lanes: &HashMap<String, Lane>,
    counters: &HashMap<String, Arc<AtomicUsize>>,
    reg: &Registry,
    rows: Vec<Claimed>,
    out: &mpsc::Sender<Outcome>,
    hard_stop: &CancellationToken,
) {
    let mut by_channel: HashMap<String, Vec<Claimed>> = HashMap::new();
    for r in rows {
        by_channel.entry(r.channel.clone()).or_default().push(r);
    }
    for (name, mut rows) in by_channel {
        match (lanes.get(&name), reg.get(&name)) {
            (Some(lane), Some((_, adapter))) => {
                rows.sort_by_key(|r| r.due_at);
                dispatch(
                    shared,
                    lane,
                    adapter.clone(),
                    &reg.policy,
                    rows,
                    out,
                    hard_stop,
                )
                .await;
            }
            _ => {
                if let Some(pending) = counters.get(&name) {
                    pending.fetch_sub(rows.len(), Ordering::AcqRel);
                }
                let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                let back = {
                    let _turn = shared.store.write_turn().await;
                    outbox::hand_back_ids(&shared.store, &shared.opts.worker_id, &ids).await
                };
                if let Err(e) = back {
                    tracing::warn!(error = %e, channel = %name, "handing back messages of a channel no longer configured failed; they return to the pool when their lease expires");
                }
            }
        }
    }
}

/// How an adapter's permanent reason starts when the provider reports that
/// the recipient opted out of the channel (the outbox keeps the text).
pub use crate::store::outbox::OPTED_OUT;

#[cfg(test)]
mod tests;
