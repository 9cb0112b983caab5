//! The one worker loop of the WeCom queues whose lease is the row's due time
//! (the tag sync, `contact_tags`, and the tag marks, `tag_marks`; issue 12,
//! item 3): claim a batch with the store's claim statement
//! (`store::claim::Claim`), work it oldest first, renew the lease when it
//! runs short, and hand back what was not worked when the round stops
//! (shutdown, a store error), so the next start need not wait it out.
//!
//! A row leaves the held list only once its outcome is written: what is
//! still in the list when a round stops is exactly what must be handed back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::project::Project;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// Rows claimed per batch, and batches per round. Batches are small because
/// a claim's lease must cover the whole batch's calls.
pub const BATCH: i64 = 10;
pub const BATCHES_PER_ROUND: usize = 50;

/// One queue: how its rows are claimed, worked, and moved.
pub trait Queue: Send + Sync {
    type Row: Clone + Send + Sync;
    /// What a round did, for tests and logs.
    type Stats: Default + Send;

    /// The name in logs.
    const NAME: &'static str;

    /// The longest one row's work takes (its calls' timeouts): a batch's
    /// lease is sized from it, and the lease is renewed when less is left.
    fn row_time(&self) -> Duration;

    /// Claims up to `limit` due rows, pushing their due time to `lease_until`.
    fn claim(
        &self,
        store: &Store,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// Works one claimed row and writes its outcome.
    fn work(
        &self,
        store: &Store,
        row: &Self::Row,
        stats: &mut Self::Stats,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the rows still held until `from` to `to`: a renewal (a later
    /// lease end) or a hand-back (now). One statement shape for both
    /// (`store::claim::Held`).
    fn moved(
        &self,
        store: &Store,
        rows: &[Self::Row],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// When the earliest row is due (ms), if any.
    fn next_due(
        &self,
        store: &Store,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
}

/// The rows a round has claimed and not yet written an outcome for, with
/// their lease (worked from the end: oldest first).
pub struct Claimed<R> {
    pub rows: Vec<R>,
    pub lease_until: DateTime<Utc>,
}

impl<R> Default for Claimed<R> {
    fn default() -> Self {
        Claimed {
            rows: Vec::new(),
            lease_until: DateTime::<Utc>::MIN_UTC,
        }
    }
}

/// A batch's lease: a minute plus twice each row's time (see `poll::lease`).
fn lease<Q: Queue>(q: &Q, rows: i64) -> chrono::Duration {
    chrono::Duration::from_std(super::poll::lease(q.row_time(), rows))
        .unwrap_or(chrono::Duration::hours(1))
}

/// Works off the rows due now: up to [`BATCHES_PER_ROUND`] batches.
pub async fn round<Q: Queue>(
    store: &Store,
    q: &Q,
    claimed: &mut Claimed<Q::Row>,
    stats: &mut Q::Stats,
) -> Result<(), StoreError> {
    for _ in 0..BATCHES_PER_ROUND {
        let now = Utc::now();
        claimed.lease_until = now + lease(q, BATCH);
        claimed.rows = q.claim(store, now, claimed.lease_until, BATCH).await?;
        claimed.rows.reverse();
        let n = claimed.rows.len();
        while let Some(row) = claimed.rows.last().cloned() {
            renew_if_short(store, q, claimed).await?;
            q.work(store, &row, stats).await?;
            claimed.rows.pop();
        }
        // Each row worked is retired or postponed, so the next batch holds
        // other rows.
        if n < BATCH as usize {
            break;
        }
    }
    Ok(())
}

/// Renews the lease of the rows still held when less than one row's worth
/// of it is left (slow answers, a long quota wait of an earlier row), so
/// another daemon does not claim them while this one is still at them.
async fn renew_if_short<Q: Queue>(
    store: &Store,
    q: &Q,
    claimed: &mut Claimed<Q::Row>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let left = claimed.lease_until - now;
    let one = chrono::Duration::from_std(q.row_time() * 2).unwrap_or_default();
    if left > one {
        return Ok(());
    }
    let until = now + lease(q, claimed.rows.len() as i64);
    q.moved(store, &claimed.rows, claimed.lease_until, until)
        .await?;
    claimed.lease_until = until;
    Ok(())
}

/// Hands back what a stopped round held: due now again.
pub async fn hand_back<Q: Queue>(store: &Store, q: &Q, claimed: &Claimed<Q::Row>) {
    if claimed.rows.is_empty() {
        return;
    }
    if let Err(e) = q
        .moved(store, &claimed.rows, claimed.lease_until, Utc::now())
        .await
    {
        tracing::warn!(queue = Q::NAME, error = %e, "claims not given back; they wait for their lease");
    }
}

/// Runs a queue until `shutdown`: rebuilds it when the settings change
/// (`build`), works rounds, calls `after` with each round's stats, and
/// sleeps until the next row is due (at most `idle`), `requested` is
/// notified, or the settings change. A shutdown does not wait for WeCom: the
/// row cut short stays queued and the round's claims are given back.
pub async fn run<Q, B, A>(
    store: Store,
    mut project: watch::Receiver<Arc<Project>>,
    requested: Arc<Notify>,
    idle: Duration,
    build: B,
    after: A,
    shutdown: CancellationToken,
) where
    Q: Queue,
    B: Fn(&Settings) -> Q,
    A: Fn(&Q::Stats),
{
    let mut queue: Option<Q> = None;
    let mut built_for: Option<Arc<Project>> = None;
    loop {
        let current = project.borrow_and_update().clone();
        if built_for.as_ref().is_none_or(|b| !Arc::ptr_eq(b, &current)) {
            queue = Some(build(&current.settings));
            built_for = Some(current);
        }
        let q = queue.as_ref().expect("built above");
        let mut claimed = Claimed::default();
        let mut stats = Q::Stats::default();
        let done = tokio::select! {
            _ = shutdown.cancelled() => {
                hand_back(&store, q, &claimed).await;
                return;
            }
            r = round(&store, q, &mut claimed, &mut stats) => r,
        };
        match done {
            Ok(()) => after(&stats),
            Err(e) => {
                tracing::warn!(queue = Q::NAME, error = %e, "round failed");
                // The rows it had not got to are tried again next round
                // rather than after their lease (best effort: the store
                // just failed).
                hand_back(&store, q, &claimed).await;
            }
        }
        let sleep = match q.next_due(&store).await {
            Ok(Some(at)) => {
                let ms = at - crate::store::to_ms(Utc::now());
                Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(idle)
            }
            Ok(None) => idle,
            Err(e) => {
                tracing::warn!(queue = Q::NAME, error = %e, "cannot read the queue");
                idle
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep.max(Duration::from_millis(50))) => {}
            _ = requested.notified() => {}
            r = project.changed() => if r.is_err() {
                shutdown.cancelled().await;
                return;
            },
        }
    }
}
