//! Messages a plan queues that are due now can go straight to this daemon's
//! delivery worker instead of waiting in the outbox for its next claim.
//!
//! A queued message is claimed later in a write of its own (`queued` →
//! `sending`, with a lease): on PostgreSQL that update rewrites the row and
//! three of its index entries, about a fifth of the server's work per
//! message end to end. When the worker has room on the message's channel and
//! its last claim of that channel caught up with the outbox (see
//! `channels::delivery::handoff`), the plan's transaction writes the message
//! already `sending`, leased to the worker, and once that transaction
//! commits the worker gets the rows as if it had claimed them.
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
    /// When the first of them was leased (ms): their leases run from then,
    /// not from the commit.
    first_lease: Option<i64>,
}

impl Handed {
    pub(super) fn new(to: Arc<dyn Handoff>) -> Handed {
        Handed {
            to,
            rows: Vec::new(),
            first_lease: None,
        }
    }

    /// Which of `msgs` (due at or before `now`) go to the worker: a slot
    /// each, taken now; and the lease they are written with.
    pub(super) fn offer(
        &mut self,
        msgs: &[NewMessage<'_>],
        now: i64,
    ) -> (Vec<bool>, outbox::Lease<'_>) {
        let leased: Vec<bool> = msgs
            .iter()
            .map(|m| m.not_before <= now && self.to.take(m.channel))
            .collect();
        if leased.contains(&true) {
            self.first_lease.get_or_insert(now);
        }
        let lease = outbox::Lease {
            owner: self.to.owner(),
            until: now.saturating_add(self.lease_ms()),
        };
        (leased, lease)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.to.lease().as_millis()).unwrap_or(i64::MAX)
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
        if self.rows.is_empty() {
            return;
        }
        self.confirm_if_late(store).await;
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

    /// A commit that came more than a tenth of a lease after the rows were
    /// leased (a long transaction, a stalled process) may find their leases
    /// expired, and another daemon may have reclaimed them meanwhile: their
    /// leases are renewed, and only the rows still this worker's are
    /// delivered (the others' slots are given back). Rows leased less than a
    /// tenth of a lease ago keep nine tenths of it, more than a claimed
    /// message has left at the worker's next renewal (every third of a lease).
    async fn confirm_if_late(&mut self, store: &Store) {
        let now = super::to_ms(chrono::Utc::now());
        let lease_ms = self.lease_ms();
        let Some(first) = self.first_lease else {
            return;
        };
        if now.saturating_sub(first) <= lease_ms / 10 {
            return;
        }
        let ids: Vec<&str> = self.rows.iter().map(|r| r.id.as_str()).collect();
        let renewed =
            outbox::renew_ids(store, self.to.owner(), &ids, now.saturating_add(lease_ms)).await;
        let failed = renewed.is_err();
        let ours = match renewed {
            Ok(ours) => ours,
            Err(e) => {
                // Not delivered: the worker does not renew what it does not
                // hold, so they expire and are reclaimed.
                tracing::warn!(error = %e, messages = ids.len(), "renewing the leases of handed messages failed; they return to the pool when their lease expires");
                Default::default()
            }
        };
        let (keep, gone): (Vec<Claimed>, Vec<Claimed>) = std::mem::take(&mut self.rows)
            .into_iter()
            .partition(|r| ours.contains(&r.id));
        self.rows = keep;
        if !gone.is_empty() && !failed {
            tracing::warn!(
                messages = gone.len(),
                waited_ms = now.saturating_sub(first),
                "a plan's commit came after its messages' lease ran out and they were reclaimed; whoever reclaimed them sends them"
            );
        }
        // Slots of rows no longer ours are given back.
        drop(Handed {
            to: self.to.clone(),
            rows: gone,
            first_lease: None,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A handoff that records what it is given back and delivered.
    #[derive(Default)]
    struct Recorder {
        untaken: Mutex<Vec<(String, usize)>>,
        delivered: Mutex<Vec<String>>,
        /// Refuses deliveries, as a stopping worker does.
        stopping: bool,
    }

    impl Handoff for Recorder {
        fn owner(&self) -> &str {
            "w"
        }
        fn lease(&self) -> Duration {
            Duration::from_secs(60)
        }
        fn take(&self, _: &str) -> bool {
            true
        }
        fn untake(&self, channel: &str, n: usize) {
            self.untaken.lock().unwrap().push((channel.to_string(), n));
        }
        fn deliver(&self, rows: Vec<Claimed>) -> Result<(), Vec<Claimed>> {
            if self.stopping {
                return Err(rows);
            }
            let mut d = self.delivered.lock().unwrap();
            d.extend(rows.into_iter().map(|r| r.id));
            Ok(())
        }
    }

    fn message(id: &str) -> Claimed {
        claimed(&NewMessage {
            id,
            workflow: "welcome",
            contact_id: "c1",
            enrollment_id: 1,
            step_id: "1",
            channel: "hook",
            recipient: "c1@example.com",
            subject: None,
            body: "Hello",
            payload: "{}".into(),
            not_before: 0,
            created_at: 0,
        })
    }

    async fn leased(store: &Store, id: &str, owner: &str, until: i64) {
        leased_in_doubt(store, id, owner, until, 0).await
    }

    async fn leased_in_doubt(store: &Store, id: &str, owner: &str, until: i64, in_doubt: i64) {
        sqlx::query(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                 status, attempts, not_before, next_attempt_at, created_at, lease_owner, lease_until, in_doubt)
             VALUES ($1, 'welcome', 'c1', 1, '1', 'hook', 'c1@example.com', 'Hello', 'sending', 0, 0, 0, 0, $2, $3, $4)",
        )
        .bind(id)
        .bind(owner)
        .bind(until)
        .bind(in_doubt)
        .execute(store.db())
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_late_commit_delivers_only_the_rows_still_leased_to_the_worker_with_fresh_leases() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let now = crate::store::to_ms(chrono::Utc::now());
        // Leased 30 s ago with a 60 s lease: `a` is still the worker's,
        // `b` was reclaimed by another daemon meanwhile, `c` by this
        // worker's own claim (a reclaimed row is `in_doubt`): it is sent
        // from that claim, not twice.
        leased(&store, "a", "w", now + 30_000).await;
        leased(&store, "b", "other", now + 60_000).await;
        leased_in_doubt(&store, "c", "w", now + 60_000, 1).await;
        let rec = Arc::new(Recorder::default());
        let handed = Handed {
            to: rec.clone(),
            rows: vec![message("a"), message("b"), message("c")],
            first_lease: Some(now - 30_000),
        };
        handed.deliver(&store).await;
        assert_eq!(*rec.delivered.lock().unwrap(), ["a"]);
        assert_eq!(*rec.untaken.lock().unwrap(), [("hook".to_string(), 2)]);
        let until: i64 = sqlx::query_scalar("SELECT lease_until FROM outbox WHERE id = 'a'")
            .fetch_one(store.db())
            .await
            .unwrap();
        assert!(until >= now + 60_000, "the lease is renewed: {until}");
        let other: String = sqlx::query_scalar("SELECT lease_owner FROM outbox WHERE id = 'b'")
            .fetch_one(store.db())
            .await
            .unwrap();
        assert_eq!(other, "other");
    }

    #[tokio::test]
    async fn a_prompt_commit_delivers_without_touching_the_leases() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let now = crate::store::to_ms(chrono::Utc::now());
        leased(&store, "a", "w", now + 60_000).await;
        let rec = Arc::new(Recorder::default());
        let handed = Handed {
            to: rec.clone(),
            // Even a row no longer ours: a prompt commit does not look (its
            // lease cannot have run out).
            rows: vec![message("a"), message("gone")],
            first_lease: Some(now),
        };
        handed.deliver(&store).await;
        assert_eq!(*rec.delivered.lock().unwrap(), ["a", "gone"]);
        assert!(rec.untaken.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stopping_worker_refuses_and_the_rows_go_back_to_the_pool_with_their_slots() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let now = crate::store::to_ms(chrono::Utc::now());
        leased(&store, "a", "w", now + 60_000).await;
        // Another worker's row of the same id list is left alone.
        leased(&store, "b", "other", now + 60_000).await;
        let rec = Arc::new(Recorder {
            stopping: true,
            ..Recorder::default()
        });
        let handed = Handed {
            to: rec.clone(),
            rows: vec![message("a"), message("b")],
            first_lease: Some(now),
        };
        handed.deliver(&store).await;
        assert!(rec.delivered.lock().unwrap().is_empty());
        assert_eq!(*rec.untaken.lock().unwrap(), [("hook".to_string(), 2)]);
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, lease_owner FROM outbox ORDER BY id")
                .fetch_all(store.db())
                .await
                .unwrap();
        assert_eq!(
            rows,
            [
                ("a".to_string(), "queued".to_string(), None),
                (
                    "b".to_string(),
                    "sending".to_string(),
                    Some("other".to_string())
                ),
            ]
        );
    }
}
