//! A lane per channel: its limits (concurrency, rate), how much it may hold
//! claimed, and the pump that starts its calls in claim order under those
//! limits.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::SendTask;
use crate::channels::build::DEFAULT_CONCURRENCY;
use crate::channels::{OutMessage, Registry};
use crate::settings::RateLimit;

/// The rate limiter quota for `rate`: never more than `rate.count` calls in
/// any window of length `rate.per` (half-open).
///
/// A small burst (`count × 10 ms / per`, at least 1) keeps high rates from
/// being throttled by timer granularity; the emission interval is stretched
/// so that burst plus refill still fit in `count` per window. The long-run
/// rate is therefore `(count - burst + 1) / per`, at most 1 % under the limit.
pub fn quota(rate: RateLimit) -> Quota {
    let per = Duration::from_secs(rate.per.secs().max(1) as u64);
    let count = rate.count.max(1);
    let burst =
        (u128::from(count) * 10_000_000 / per.as_nanos()).clamp(1, u128::from(count)) as u32;
    let slots = u128::from(count - burst + 1);
    // Round the interval up: rounding down would let one extra call in.
    let period_ns = per.as_nanos().div_ceil(slots);
    let period = Duration::from_nanos(u64::try_from(period_ns).unwrap_or(u64::MAX));
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst).expect("burst >= 1"))
}

/// Messages a channel may hold claimed (in flight or waiting for a permit or
/// its rate limit): enough to keep its concurrency busy, at most about five
/// seconds of its rate.
pub(super) fn max_pending(concurrency: u32, rate: Option<RateLimit>, batch: usize) -> usize {
    // Eight calls' worth: a lane claims again once half of it is written back
    // (see `claim_room`), so each claim takes four calls' worth at once.
    let by_concurrency = (concurrency as usize).saturating_mul(8).max(1);
    let by_rate = rate.map_or(usize::MAX, |r| {
        let per = r.per.secs().max(1) as u128;
        ((u128::from(r.count) * 5 / per) as usize).max(1)
    });
    by_concurrency.min(by_rate).min(batch.max(1) * 4)
}

/// The room a lane needs before it claims again: half of what it may hold.
/// Claiming whenever any room opened took a few rows per claim under load,
/// each claim a write transaction of its own (1,758 claims for 100,000
/// messages, 57 rows each); waiting for half keeps claims big and the
/// calls fed (the other half is still queued or in flight).
pub(super) fn claim_room(max_pending: usize) -> usize {
    max_pending - max_pending / 2
}

/// One channel's limits, rebuilt when its settings change.
pub(super) struct Lane {
    pub(super) limits: (Option<RateLimit>, u32),
    /// To the lane's pump, which starts the calls in claim order.
    pub(super) queue: mpsc::UnboundedSender<(SendTask, OutMessage)>,
    pub(super) max_pending: usize,
    /// Claimed and not yet written back (shared with the writer).
    pub(super) pending: Arc<AtomicUsize>,
}

/// One lane per channel of `reg`. A lane whose limits changed gets a new pump;
/// the old one finishes what it was given (under the old limits) and ends.
pub(super) fn sync_lanes(
    lanes: &mut HashMap<String, Lane>,
    counters: &mut HashMap<String, Arc<AtomicUsize>>,
    reg: &Registry,
    batch: usize,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    lanes.retain(|name, _| reg.channels.contains_key(name));
    for (name, (cs, _)) in &reg.channels {
        let concurrency = cs.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
        let limits = (cs.rate_limit, concurrency);
        if lanes.get(name).is_some_and(|l| l.limits == limits) {
            continue;
        }
        // New or changed: fresh limits; the channel's pending count carries
        // over (also across a removal and a re-adding).
        let pending = counters.entry(name.clone()).or_default().clone();
        let (queue, rx) = mpsc::unbounded_channel();
        tracker.spawn(pump(
            rx,
            Arc::new(Semaphore::new(concurrency as usize)),
            cs.rate_limit
                .map(|r| DefaultDirectRateLimiter::direct(quota(r))),
            tracker.clone(),
            shutdown.clone(),
        ));
        lanes.insert(
            name.clone(),
            Lane {
                limits,
                queue,
                max_pending: max_pending(concurrency, cs.rate_limit, batch),
                pending,
            },
        );
    }
}

/// Starts a lane's calls in the order they were claimed: each waits for a
/// concurrency permit, then for the rate limit, then runs in its own task
/// (holding the permit until its call is done). On shutdown, what is still
/// queued here is left for the final hand-back.
async fn pump(
    mut rx: mpsc::UnboundedReceiver<(SendTask, OutMessage)>,
    semaphore: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (task, msg) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            t = rx.recv() => match t {
                Some(t) => t,
                None => return,
            },
        };
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            p = semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        if let Some(limiter) = &limiter {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = limiter.until_ready() => {}
            }
        }
        tracker.spawn(task.run_caught(msg, permit));
    }
}
