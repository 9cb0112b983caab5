//! The worker's side of [`crate::store::handoff`]: which channels take
//! messages straight from the planner's transaction, and the inbox they
//! arrive in.
//!
//! A channel takes a handed message only while
//! - its lane has room (the slot is counted in the lane's `pending`, as a
//!   claimed message is, and freed by the same outcome write), and
//! - its last claim, less than [`CAUGHT_UP_FOR`] ago, found fewer messages
//!   than it asked for, and no message of it was queued since for want of
//!   room: messages already waiting in the outbox (a backlog after an
//!   outage, retries come due) go first, in due order, and handing off
//!   resumes once a claim has caught up. The time limit makes the worker
//!   claim again now and then even when plans keep its lane busy, so a
//!   retry that came due is never held back for long.
//!
//! When the worker stops it closes the handoff first, under the same lock
//! [`Handoff::deliver`] takes: rows delivered before that are handed back
//! with the worker's final hand-back; rows refused after it are handed back
//! by the transaction that wrote them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::lanes::Lane;
use crate::store::handoff::Handoff;
use crate::store::outbox::Claimed;

/// How long a claim that caught up lets the channel take handed messages.
pub const CAUGHT_UP_FOR: Duration = Duration::from_secs(1);

/// Where handed messages arrive, one committed transaction's at a time.
pub type Inbox = mpsc::UnboundedReceiver<Vec<Claimed>>;

/// The delivery worker's [`Handoff`].
pub struct DeliveryHandoff {
    owner: String,
    lease: Duration,
    state: Mutex<State>,
}

struct State {
    open: bool,
    rooms: HashMap<String, Room>,
    inbox: mpsc::UnboundedSender<Vec<Claimed>>,
}

/// A lane as the handoff sees it (kept when the channel is removed: slots
/// taken before are given back to its count).
struct Room {
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    /// The channel is in the settings.
    configured: bool,
    /// When the channel's last claim found fewer than it asked for.
    caught_up_at: Option<Instant>,
}

impl DeliveryHandoff {
    /// A handoff to the worker `owner` whose leases last `lease`, and its inbox.
    pub fn new(owner: String, lease: Duration) -> (Arc<DeliveryHandoff>, Inbox) {
        let (inbox, rx) = mpsc::unbounded_channel();
        let handoff = DeliveryHandoff {
            owner,
            lease,
            state: Mutex::new(State {
                open: true,
                rooms: HashMap::new(),
                inbox,
            }),
        };
        (Arc::new(handoff), rx)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows the worker's lanes (after a settings reload): a new lane
    /// takes nothing until its first claim has caught up; a removed one
    /// takes nothing.
    pub(super) fn sync(&self, lanes: &HashMap<String, Lane>) {
        let mut st = self.state();
        for (name, room) in st.rooms.iter_mut() {
            if !lanes.contains_key(name) {
                room.configured = false;
                room.caught_up_at = None;
            }
        }
        for (name, lane) in lanes {
            let caught_up_at = st.rooms.get(name).and_then(|r| r.caught_up_at);
            st.rooms.insert(
                name.clone(),
                Room {
                    pending: lane.pending.clone(),
                    max_pending: lane.max_pending,
                    configured: true,
                    caught_up_at,
                },
            );
        }
    }

    /// What the last claim of `channel` found: everything due
    /// (`caught_up`), or as many as it asked for.
    pub(super) fn claimed(&self, channel: &str, caught_up: bool) {
        if let Some(room) = self.state().rooms.get_mut(channel) {
            room.caught_up_at = caught_up.then(Instant::now);
        }
    }

    /// When the last claim of `channel` caught up, if it did: the handoff
    /// takes its messages for [`CAUGHT_UP_FOR`] after that. Tests wait for
    /// a fresh one before they hand messages off, instead of hoping the
    /// warm-up's is still recent on a loaded machine.
    pub fn caught_up_at(&self, channel: &str) -> Option<Instant> {
        self.state().rooms.get(channel).and_then(|r| r.caught_up_at)
    }

    /// Takes no more messages (the worker is stopping).
    pub(super) fn close(&self) {
        self.state().open = false;
    }
}

impl Handoff for DeliveryHandoff {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn take(&self, channel: &str) -> bool {
        let mut st = self.state();
        if !st.open {
            return false;
        }
        let Some(room) = st.rooms.get_mut(channel).filter(|r| {
            r.configured && r.caught_up_at.is_some_and(|t| t.elapsed() < CAUGHT_UP_FOR)
        }) else {
            return false;
        };
        // The writer frees slots concurrently: compare and swap.
        let taken = room
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < room.max_pending).then_some(p + 1)
            })
            .is_ok();
        if !taken {
            // This message waits in the outbox now: the ones after it wait
            // behind it until a claim has caught up.
            room.caught_up_at = None;
        }
        taken
    }

    fn untake(&self, channel: &str, n: usize) {
        if let Some(room) = self.state().rooms.get(channel) {
            // The channel's count, kept across reloads; saturating all the same.
            let _ = room
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                    Some(p.saturating_sub(n))
                });
        }
    }

    fn deliver(&self, rows: Vec<Claimed>) -> Result<(), Vec<Claimed>> {
        let st = self.state();
        if !st.open {
            return Err(rows);
        }
        st.inbox.send(rows).map_err(|e| e.0)
    }
}
