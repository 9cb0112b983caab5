//! Messages a plan queues that are due now can go straight to this daemon's
//! delivery worker instead of waiting in the outbox for its next claim.
//!
//! A queued message is claimed later in a write of its own (`queued` →
//! `sending`, with a lease): on PostgreSQL that update rewrites the row and
//! three of its index entries, about a fifth of the server's work per
//! message end to end. When the worker has room on the message's channel and
//! nothing of that channel is waiting in the outbox, the plan's transaction
//! writes the message already `sending`, leased to the worker, and once that
//! transaction commits the worker gets the rows as if it had claimed them.
//!
//! Nothing about a message's fate changes: it is in the outbox, durably,
//! from the same commit as before; it is leased exactly as a claimed message
//! is (renewed while the worker lives, reclaimed `in_doubt` after its lease
//! if the process dies), and the worker checks consent and quiet hours and
//! calls the provider as for any claim. The plan, and so the dry-run, is the
//! same: only who moves the row to `sending` differs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Store;
use super::outbox::{self, Claimed, NewMessage};

/// Who takes messages straight from a plan's transaction: the delivery
/// worker of this process (`channels::delivery::handoff`).
pub trait Handoff: Send + Sync {
    /// Written into `outbox.lease_owner`: the worker's id.
    fn owner(&self) -> &str;
    /// How long a handed message's lease lasts (the worker renews it).
    fn lease(&self) -> Duration;
    /// Takes a slot on `channel` for one message: `false` when the worker
    /// has no room there, does not know the channel, still has messages of
    /// it waiting in the outbox, or is stopping.
    fn take(&self, channel: &str) -> bool;
    /// Gives back `n` slots taken on `channel` whose messages were not
    /// handed (the insert or the commit failed, or the id existed).
    fn untake(&self, channel: &str, n: usize);
    /// Gives the worker the messages of a committed transaction, their
    /// slots with them; hands them back when the worker is stopping.
    fn deliver(&self, rows: Vec<Claimed>) -> Result<(), Vec<Claimed>>;
}

/// The messages a transaction leased to the worker: their slots are given
/// back if it is dropped before they are delivered (a rollback).
pub(super) struct Handed {
    to: Arc<dyn Handoff>,
    rows: Vec<Claimed>,
}

impl Handed {
    pub(super) fn new(to: Arc<dyn Handoff>) -> Handed {
        Handed {
            to,
            rows: Vec::new(),
        }
    }

    /// Which of `msgs` (due at or before `now`) go to the worker: a slot
    /// each, taken now; and the lease they are written with.
    pub(super) fn offer(
        &self,
        msgs: &[NewMessage<'_>],
        now: i64,
    ) -> (Vec<bool>, outbox::Lease<'_>) {
        let leased = msgs
            .iter()
            .map(|m| m.not_before <= now && self.to.take(m.channel))
            .collect();
        let lease_ms = i64::try_from(self.to.lease().as_millis()).unwrap_or(i64::MAX);
        let lease = outbox::Lease {
            owner: self.to.owner(),
            until: now.saturating_add(lease_ms),
        };
        (leased, lease)
    }

    /// Keeps the offered messages that were written (`written` holds their
    /// ids) for delivery after the commit, and gives back the slots of the
    /// others (an id that existed, or an insert that failed: `None`).
    pub(super) fn settle(
        &mut self,
        msgs: &[NewMessage<'_>],
        leased: &[bool],
        written: Option<&std::collections::HashSet<String>>,
    ) {
        let mut unused: HashMap<&str, usize> = HashMap::new();
        for (m, _) in msgs.iter().zip(leased).filter(|(_, l)| **l) {
            if written.is_some_and(|w| w.contains(m.id)) {
                self.rows.push(claimed(m));
            } else {
                *unused.entry(m.channel).or_insert(0) += 1;
            }
        }
        for (channel, n) in unused {
            self.to.untake(channel, n);
        }
    }

    /// After the commit: the worker gets the rows. A worker that is stopping
    /// refuses them; they are put back in the pool (`queued`) here, or, if
    /// that fails too, come back when their lease expires.
    pub(super) async fn deliver(mut self, store: &Store) {
        let rows = std::mem::take(&mut self.rows);
        if rows.is_empty() {
            return;
        }
        let Err(refused) = self.to.deliver(rows) else {
            return;
        };
        let ids: Vec<&str> = refused.iter().map(|r| r.id.as_str()).collect();
        if let Err(e) = outbox::hand_back_ids(store, self.to.owner(), &ids).await {
            tracing::warn!(error = %e, messages = ids.len(), "handing messages back failed; they return to the pool when their lease expires");
        }
        self.rows = refused;
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        let mut per_channel: HashMap<&str, usize> = HashMap::new();
        for r in &self.rows {
            *per_channel.entry(r.channel.as_str()).or_insert(0) += 1;
        }
        for (channel, n) in per_channel {
            self.to.untake(channel, n);
        }
    }
}

/// A handed message as the worker's claim would have read it back.
fn claimed(m: &NewMessage<'_>) -> Claimed {
    Claimed {
        id: m.id.to_string(),
        workflow: m.workflow.to_string(),
        contact_id: m.contact_id.to_string(),
        step_id: m.step_id.to_string(),
        channel: m.channel.to_string(),
        recipient: m.recipient.to_string(),
        subject: m.subject.map(str::to_string),
        body: m.body.to_string(),
        attempts: 0,
        created_at: m.created_at,
        due_at: m.not_before,
        payload: m.payload.clone(),
        first_failed_at: None,
        in_doubt: false,
    }
}
