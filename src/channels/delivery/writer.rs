//! Recording outcomes: one writer task that commits what finished in groups,
//! so a send's concurrency slot comes back once its outcome is durable.

use super::*;

/// Writes outcomes: everything that accumulated while the previous commit ran
/// goes into the next transaction.
pub(super) async fn writer(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Outcome>,
    shutdown: CancellationToken,
) {
    let mut buf = Vec::with_capacity(1_024);
    loop {
        if rx.recv_many(&mut buf, 1_024).await == 0 {
            break;
        }
        let mut tries = 0u32;
        loop {
            // The turn first (SQLite: behind the scheduler's commit, often),
            // then what finished while waiting for it joins this commit: the
            // calls' concurrency slots are released a commit sooner.
            let turn = shared.store.write_turn().await;
            while buf.len() < 1_024 {
                match rx.try_recv() {
                    Ok(o) => buf.push(o),
                    Err(_) => break,
                }
            }
            let written = match &shared.conn {
                Some(conn) => {
                    let (back, written) = conn
                        .record_outcomes(
                            shared.opts.worker_id.clone(),
                            now_ms(),
                            std::mem::take(&mut buf),
                            Outcome::recorded,
                        )
                        .await;
                    buf = back;
                    written
                }
                None => write_outcomes(&shared, &buf).await,
            };
            drop(turn);
            match written {
                Ok(()) => break,
                Err(e) => {
                    tries += 1;
                    if shutdown.is_cancelled() && tries >= 20 {
                        tracing::error!(
                            error = %e,
                            messages = buf.len(),
                            "could not record delivery outcomes; the messages return to the pool when their lease expires"
                        );
                        break;
                    }
                    tracing::warn!(error = %e, "recording delivery outcomes failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(tries.min(20)))).await;
                }
            }
        }
        let m = metrics::global();
        let now = now_ms();
        {
            let mut inflight = shared
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for o in &buf {
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
