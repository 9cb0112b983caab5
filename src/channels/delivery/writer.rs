//! Recording outcomes: one writer that commits what finished in groups, so a
//! send's concurrency slot comes back once its outcome is durable.
//!
//! On a SQLite file the writer is a thread of its own holding the delivery's
//! connection (`OutboxConn`): every outcome waits for the commit that makes
//! it durable while holding its call's concurrency slot, so the commit path
//! is delivery's pace. A task handing each commit to a blocking thread paid
//! two thread wake-ups per commit, 170 µs on a busy 2-CPU machine against
//! 200 µs for the commit itself; on its own thread, delivery alone went from
//! 31,600-32,500 to 32,900-34,500 webhooks/s (BENCHMARKS.md, 2026-12-03).
//! On PostgreSQL and in-memory stores the writer is a task on the pool.

use super::*;

/// Most outcomes in one commit.
const MAX_BATCH: usize = 1_024;

/// Writes outcomes: everything that accumulated while the previous commit ran
/// goes into the next transaction.
pub(super) async fn writer(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Outcome>,
    shutdown: CancellationToken,
) {
    if let Some(conn) = shared.conn.clone() {
        let handle = tokio::runtime::Handle::current();
        // A blocking-pool thread for the worker's life: its JoinHandle is
        // what the worker watches, as it watched the task.
        let thread = tokio::task::spawn_blocking(move || {
            writer_thread(&shared, &conn, rx, &shutdown, &handle)
        });
        // A panic on the thread is the writer's panic (the worker stops).
        if let Err(e) = thread.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        return;
    }
    writer_task(shared, rx, shutdown).await
}

/// The writer on the pool (PostgreSQL, an in-memory SQLite store).
async fn writer_task(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Outcome>,
    shutdown: CancellationToken,
) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut buf, MAX_BATCH).await == 0 {
            break;
        }
        let mut tries = 0u32;
        loop {
            // The turn first (SQLite: behind the scheduler's commit, often),
            // then what finished while waiting for it joins this commit: the
            // calls' concurrency slots are released a commit sooner.
            let turn = shared.store.write_turn().await;
            drain_into(&mut rx, &mut buf);
            let written = write_outcomes(&shared, &buf).await;
            drop(turn);
            match written {
                Ok(()) => break,
                Err(e) => match retry_after(&e, &mut tries, buf.len(), &shutdown) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => break,
                },
            }
        }
        written_back(&shared, &mut buf);
    }
}

/// The writer on its own thread, through the delivery's connection (see the
/// module docs). Ends when every sender is gone.
fn writer_thread(
    shared: &Shared,
    conn: &OutboxConn,
    mut rx: mpsc::Receiver<Outcome>,
    shutdown: &CancellationToken,
    handle: &tokio::runtime::Handle,
) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        buf.push(first);
        drain_into(&mut rx, &mut buf);
        let mut tries = 0u32;
        loop {
            // As in `writer_task`: the turn, then what finished meanwhile.
            let turn = handle.block_on(shared.store.write_turn());
            drain_into(&mut rx, &mut buf);
            let recorded: Vec<Recorded<'_>> = buf.iter().map(Outcome::recorded).collect();
            let written = conn.record_outcomes_here(&shared.opts.worker_id, now_ms(), &recorded);
            drop(recorded);
            drop(turn);
            match written {
                Ok(()) => break,
                Err(e) => match retry_after(&e, &mut tries, buf.len(), shutdown) {
                    Some(wait) => std::thread::sleep(wait),
                    None => break,
                },
            }
        }
        written_back(shared, &mut buf);
    }
}

/// What finished meanwhile joins `buf`, up to [`MAX_BATCH`].
fn drain_into(rx: &mut mpsc::Receiver<Outcome>, buf: &mut Vec<Outcome>) {
    while buf.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(o) => buf.push(o),
            Err(_) => break,
        }
    }
}

/// How long to wait before trying a failed commit again; `None` once
/// shutting down and tried enough (the messages' leases then expire and
/// they return to the pool).
fn retry_after(
    e: &sqlx::Error,
    tries: &mut u32,
    messages: usize,
    shutdown: &CancellationToken,
) -> Option<Duration> {
    *tries += 1;
    if shutdown.is_cancelled() && *tries >= 20 {
        tracing::error!(
            error = %e,
            messages,
            "could not record delivery outcomes; the messages return to the pool when their lease expires"
        );
        return None;
    }
    tracing::warn!(error = %e, "recording delivery outcomes failed; retrying");
    Some(Duration::from_millis(100 * u64::from((*tries).min(20))))
}

/// After the commit of `buf` (or giving up on it): the messages leave the
/// in-flight set, their metrics are counted, and their concurrency slots
/// and pending counts are given back (dropping each outcome drops its slot).
fn written_back(shared: &Shared, buf: &mut Vec<Outcome>) {
    let m = metrics::global();
    let now = now_ms();
    {
        let mut inflight = shared
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for o in buf.iter() {
            inflight.remove(&o.id);
        }
    }
    for o in buf.drain(..) {
        match &o.fate {
            Fate::Sent { .. } => {
                m.send(&o.channel, "sent");
                m.delivered_after(&o.channel, (now - o.created_at).max(0) as f64 / 1000.0);
            }
            Fate::Retry { .. } => m.send(&o.channel, "retry"),
            Fate::Dead { error } => {
                m.send(&o.channel, "dead");
                metrics::dead_letter(&o.workflow, &o.contact_id, &o.step_id, &o.channel, error);
            }
            Fate::Cancelled { reason } => {
                m.send(&o.channel, "cancelled");
                metrics::cancelled(&o.workflow, &o.contact_id, &o.step_id, &o.channel, reason);
            }
            Fate::Release { .. } => {}
        }
        let left = o.pending.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if left <= o.room_at {
            shared.room.notify_one();
        }
    }
}

impl Outcome {
    /// What the store writes for this outcome.
    fn recorded(&self) -> Recorded<'_> {
        Recorded {
            id: &self.id,
            contact_id: &self.contact_id,
            channel: &self.channel,
            fate: &self.fate,
            opted_out: matches!(&self.fate, Fate::Dead { error } if error.starts_with(OPTED_OUT)),
        }
    }
}

/// Writes `outcomes` through the store's pool (PostgreSQL, an in-memory
/// SQLite store).
pub(super) async fn write_outcomes(
    shared: &Shared,
    outcomes: &[Outcome],
) -> Result<(), sqlx::Error> {
    let recorded: Vec<Recorded<'_>> = outcomes.iter().map(Outcome::recorded).collect();
    outbox::record_outcomes_in_turn(&shared.store, &shared.opts.worker_id, now_ms(), &recorded)
        .await
}
