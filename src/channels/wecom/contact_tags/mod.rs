//! Per-contact WeCom tags → nurture tags: the worker of the `wecom_tag_sync`
//! queue that the callback fills on `edit_external_contact` (the event
//! carries no tags, see `api::wecom_callback`).
//!
//! For each queued (channel, contact, salesperson) it reads
//! `GET /cgi-bin/externalcontact/get?access_token=&external_userid=[&cursor=]`
//! (reference §1.0, §1.5) with the channel's access token — the same
//! [`TokenCache`](super::token::TokenCache) as the adapter, so a sync never
//! causes a second gettoken — and hands the result to
//! [`Store::apply_wecom_tags`] (the add/remove rule is documented there).
//!
//! Mapping (decisions):
//! - A WeCom tag becomes the nurture tag named by its `tag_name`, as is (no
//!   group prefix: two groups' tags of the same name are one nurture tag).
//!   Corp tags (`type` 1) are what marketers use in workflows
//!   (`trigger: { tag_added: { tag: vip } }`); rule-group tags (`type` 3)
//!   come from the corp library too and are mapped the same way. A
//!   salesperson's personal tags (`type` 2) are private, free-text labels
//!   outside the corp library, so they are not mirrored. A name nurture
//!   cannot take (empty, control characters) is skipped.
//! - Adds come from the `follow_user` entry of the salesperson who edited
//!   (the event's `UserID`); removals look at every entry, so a tag another
//!   salesperson still has on the customer stays. All pages are read
//!   (`next_cursor`, up to [`MAX_PAGES`]); if they cannot all be read,
//!   nothing is removed this time.
//!
//! Errors: a token that WeCom refuses (40014, 42001, 40001) is refetched and
//! the call made once more. No token at all (gettoken failing, even with a
//! wrong secret: the settings may be fixed by a reload), a transport error,
//! a non-200, an answer that is not WeCom's JSON, or an errcode of class
//! retry / wait (`-1`, 45009, 45033) → the row stays and is tried again
//! after `5 s × 2^attempts` (at most an hour; at least the errcode's wait),
//! until [`MAX_ATTEMPTS`] failures. A permanent errcode (84061 no
//! relationship, 40096 invalid external userid, 60011, 48002, any code
//! nurture does not know, ...) drops the row with a warning.
//!
//! The worker runs in the daemon, reads the channels from the current
//! settings (reloads apply), wakes when the callback queues a row (it
//! notifies the tag-sync handle the daemon gave them both) or when a
//! postponed row is due, and wakes the scheduler when tags changed so
//! `tag_added` / `tag_removed` workflows run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::token::TokenCaches;
use crate::channels::Delivery;
use crate::project::Project;
use crate::settings::Settings;
use crate::store::wecom::tags::TagSyncRequest;
use crate::store::{Store, StoreError};
use crate::wecom::tag_marks::MarksQueued;

mod reader;

pub use reader::{PageTags, TagReader, tag_names};

pub const EXTERNALCONTACT_GET: &str = "/cgi-bin/externalcontact/get";

/// Pages of `follow_user` read for one customer (WeCom pages at 500
/// relationships; more than 10,000 is not a real customer).
pub const MAX_PAGES: usize = 20;
/// Failed fetches after which a sync is dropped (with the backoff below,
/// about a day).
pub const MAX_ATTEMPTS: i64 = 30;
/// The first retry's wait; it doubles with each failure.
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(3_600);
/// The longest the worker sleeps without looking at the queue.
const IDLE: Duration = Duration::from_secs(60);

/// WeCom tag `type` of a salesperson's personal tag (not mirrored).
const PERSONAL_TAG: i64 = 2;

/// How long a sync that failed `attempts` times (before this failure) waits.
pub fn retry_delay(attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 16);
    (RETRY_BASE * factor).min(RETRY_MAX)
}

/// What one round did (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Syncs applied (tags may or may not have changed).
    pub applied: usize,
    /// Syncs postponed after a failure.
    pub postponed: usize,
    /// Syncs given up (permanent error, too many failures, contact gone).
    pub dropped: usize,
    /// Some contact's tags changed: the scheduler has work.
    pub changed: bool,
    /// A read found relationships, which may take nurture's marks: the
    /// marks worker has work.
    pub marks_queued: bool,
}

/// Works off the syncs due now with the channels of `settings` (the daemon
/// does this in [`run`]; tests call it directly).
pub async fn sync_due(
    store: &Store,
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    tokens: &TokenCaches,
) -> Result<Round, StoreError> {
    let q = Syncs {
        readers: TagReader::all(settings, env, tokens),
    };
    let mut out = Round::default();
    super::queue::round(store, &q, &mut Default::default(), &mut out).await?;
    Ok(out)
}

/// The `wecom_tag_sync` queue, worked by [`super::queue`] with the readers
/// of the current settings.
struct Syncs {
    readers: HashMap<String, TagReader>,
}

impl super::queue::Queue for Syncs {
    type Row = TagSyncRequest;
    type Stats = Round;
    const NAME: &'static str = "wecom tag sync";

    fn row_time(&self) -> Duration {
        // One page call per row, at the slowest channel's timeout.
        self.readers
            .values()
            .map(|r| r.timeout)
            .max()
            .unwrap_or_default()
    }

    async fn claim(
        &self,
        store: &Store,
        now: chrono::DateTime<Utc>,
        lease_until: chrono::DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TagSyncRequest>, StoreError> {
        store.claim_wecom_tag_syncs(now, lease_until, limit).await
    }

    async fn work(
        &self,
        store: &Store,
        row: &TagSyncRequest,
        stats: &mut Round,
    ) -> Result<(), StoreError> {
        one(store, &self.readers, row, stats).await
    }

    async fn moved(
        &self,
        store: &Store,
        rows: &[TagSyncRequest],
        from: chrono::DateTime<Utc>,
        to: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        store.move_wecom_tag_syncs(rows, from, to).await
    }

    async fn next_due(&self, store: &Store) -> Result<Option<i64>, StoreError> {
        store.next_wecom_tag_sync_at().await
    }
}

async fn one(
    store: &Store,
    readers: &HashMap<String, TagReader>,
    req: &TagSyncRequest,
    out: &mut Round,
) -> Result<(), StoreError> {
    let read = match readers.get(&req.channel) {
        Some(r) => r.read(&req.external_userid, &req.staff_userid).await,
        None => Err(Delivery::Retry {
            after: None,
            reason: format!(
                "channel {:?} is not a usable wecom channel in the current settings",
                req.channel
            ),
        }),
    };
    match read {
        Ok(view) => {
            let done = store.apply_wecom_tags(req, &view, Utc::now()).await?;
            if done.contact_gone {
                out.dropped += 1;
                tracing::info!(contact = %req.contact_id, "wecom tag sync skipped: the contact was deleted");
                return Ok(());
            }
            out.applied += 1;
            // A relationship the read found new may take nurture's marks.
            out.marks_queued = true;
            out.changed |= !done.added.is_empty() || !done.removed.is_empty();
            tracing::info!(
                channel = %req.channel,
                contact = %req.contact_id,
                staff = %req.staff_userid,
                added = ?done.added,
                removed = ?done.removed,
                again = done.requeued,
                "wecom tags synced"
            );
        }
        Err(Delivery::Wait { after, reason }) => {
            // A quota window: not a failure of this sync.
            let next = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
            out.postponed += 1;
            tracing::info!(channel = %req.channel, contact = %req.contact_id, %reason,
                retry_in_s = after.as_secs(), "wecom tag sync waits for WeCom's quota window");
            store.postpone_wecom_tag_sync(req, next, &reason).await?;
        }
        Err(Delivery::Retry { after, reason }) => {
            if req.attempts + 1 >= MAX_ATTEMPTS {
                out.dropped += 1;
                tracing::warn!(channel = %req.channel, contact = %req.contact_id, %reason,
                    attempts = req.attempts + 1, "wecom tag sync given up after repeated failures");
                store.drop_wecom_tag_sync(req).await?;
                return Ok(());
            }
            let wait = retry_delay(req.attempts).max(after.unwrap_or_default());
            let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            out.postponed += 1;
            tracing::info!(channel = %req.channel, contact = %req.contact_id, %reason,
                retry_in_s = wait.as_secs(), "wecom tag sync failed; it is tried again");
            store.postpone_wecom_tag_sync(req, next, &reason).await?;
        }
        Err(Delivery::Permanent { reason }) => {
            out.dropped += 1;
            tracing::warn!(channel = %req.channel, contact = %req.contact_id,
                staff = %req.staff_userid, %reason, "wecom tag sync dropped: WeCom refused it");
            store.drop_wecom_tag_sync(req).await?;
        }
        Err(Delivery::Delivered { .. }) => {
            // Not produced by `read`; treated as a failure to be safe.
            store
                .postpone_wecom_tag_sync(
                    req,
                    Utc::now() + chrono::Duration::seconds(5),
                    "no answer",
                )
                .await?;
        }
    }
    Ok(())
}

/// Runs the tag sync until `shutdown`. `requested` is notified by the
/// callback when it queued a sync; `wake` is the scheduler's, notified when
/// a sync changed a contact's tags.
pub async fn run(
    store: Store,
    project: watch::Receiver<Arc<Project>>,
    requested: Arc<Notify>,
    wake: Arc<Notify>,
    tokens: TokenCaches,
    marks: MarksQueued,
    shutdown: CancellationToken,
) {
    super::queue::run(
        store,
        project,
        requested,
        IDLE,
        move |settings: &Settings| Syncs {
            readers: TagReader::all(settings, &|name| std::env::var(name).ok(), &tokens),
        },
        move |r: &Round| {
            if r.changed {
                wake.notify_one();
            }
            if r.marks_queued {
                marks.notify();
            }
        },
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests;
