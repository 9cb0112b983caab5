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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::api::{WecomApi, errcode_delivery};
use super::errcode::{Class, classify};
use super::token::TokenCaches;
use crate::channels::Delivery;
use crate::channels::http::{excerpt, http_client, read_answer};
use crate::project::Project;
use crate::settings::{ChannelKind, Settings};
use crate::store::contacts::check_tag;
use crate::store::wecom::relationships::FollowUser;
use crate::store::wecom::tags::{TagSyncRequest, WecomTags};
use crate::store::{Store, StoreError};
use crate::wecom::tag_marks::MarksQueued;

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

/// Reads one customer's tags with one channel's token.
pub struct TagReader {
    channel: String,
    /// One call's timeout: a claim's lease is sized from it.
    timeout: Duration,
    api: WecomApi,
    client: reqwest::Client,
    /// Without a trailing slash.
    base: String,
}

enum Call {
    Done(Value),
    /// WeCom refused the token (40014, 42001, 40001).
    BadToken(Delivery),
    Failed(Delivery),
}

impl TagReader {
    pub fn new(config: &super::WecomConfig) -> Result<TagReader, String> {
        Ok(TagReader {
            channel: config.name.clone(),
            timeout: config.timeout,
            api: config.api()?,
            client: http_client(config.timeout, config.max_idle)?,
            base: config.base_url.as_str().trim_end_matches('/').to_string(),
        })
    }

    /// Every channel of kind `wecom` in `settings` that can be built.
    pub fn all(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
        tokens: &TokenCaches,
    ) -> HashMap<String, TagReader> {
        let mut out = HashMap::new();
        for (name, cs) in &settings.channels {
            if cs.kind != ChannelKind::Wecom {
                continue;
            }
            let built = crate::channels::build::wecom_config(cs, settings, env, tokens)
                .and_then(|c| TagReader::new(&c));
            match built {
                Ok(r) => {
                    out.insert(name.clone(), r);
                }
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, "wecom channel cannot sync tags")
                }
            }
        }
        out
    }

    /// A token from the adapter's cache. `ensure_token` fetches one (with
    /// the adapter's gettoken handling) when needed; the cache then hands it
    /// out without another call.
    async fn token(&self) -> Result<String, Delivery> {
        let no_token = |reason: String| Delivery::Retry {
            after: None,
            reason: format!("wecom {}: no access token: {reason}", self.channel),
        };
        if let Err(e) = self.api.ensure_token().await {
            // Even a "permanent" gettoken error (a wrong secret) is retried:
            // the settings can be fixed and reloaded, and the edit is worth
            // mirroring then.
            let reason = match e.delivery {
                Delivery::Retry { reason, .. }
                | Delivery::Permanent { reason }
                | Delivery::Wait { reason, .. } => reason,
                Delivery::Delivered { .. } => "gettoken failed".into(),
            };
            return Err(no_token(reason));
        }
        self.api
            .tokens()
            .get(|| async { Err(no_token("it expired as it was fetched".into())) })
            .await
    }

    async fn call_once(&self, token: &str, external_userid: &str, cursor: &str) -> Call {
        let mut url = match reqwest::Url::parse(&format!("{}{EXTERNALCONTACT_GET}", self.base)) {
            Ok(u) => u,
            Err(e) => {
                return Call::Failed(Delivery::Permanent {
                    reason: format!("wecom: bad URL for {EXTERNALCONTACT_GET}: {e}"),
                });
            }
        };
        url.query_pairs_mut()
            .append_pair("access_token", token)
            .append_pair("external_userid", external_userid);
        if !cursor.is_empty() {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let (status, _, raw) = match read_answer(self.client.get(url), SystemTime::now()).await {
            Ok(a) => a,
            Err(d) => return Call::Failed(d),
        };
        match read_json(status, &raw) {
            Ok(json) => match errcode_of(&json) {
                Some(0) => Call::Done(json),
                Some(code) if classify(code) == Class::RefreshToken => {
                    Call::BadToken(errcode_delivery(EXTERNALCONTACT_GET, code, &json))
                }
                Some(code) => Call::Failed(errcode_delivery(EXTERNALCONTACT_GET, code, &json)),
                None => Call::Failed(not_json(&raw)),
            },
            Err(d) => Call::Failed(d),
        }
    }

    /// One page of `externalcontact/get`, with one retry on a refused token.
    async fn page(&self, external_userid: &str, cursor: &str) -> Result<Value, Delivery> {
        let token = self.token().await?;
        match self.call_once(&token, external_userid, cursor).await {
            Call::Done(v) => Ok(v),
            Call::Failed(d) => Err(d),
            Call::BadToken(_) => {
                tracing::info!(
                    path = EXTERNALCONTACT_GET,
                    "wecom refused the access token; fetching a new one"
                );
                self.api.tokens().invalidate(&token);
                let token = self.token().await?;
                match self.call_once(&token, external_userid, cursor).await {
                    Call::Done(v) => Ok(v),
                    Call::Failed(d) | Call::BadToken(d) => Err(d),
                }
            }
        }
    }

    /// The customer's tags as nurture sees them, from every page.
    pub async fn read(&self, external_userid: &str, staff: &str) -> Result<WecomTags, Delivery> {
        let mut tags = PageTags::default();
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let answer = self.page(external_userid, &cursor).await?;
            tags.add_page(&answer, staff);
            match answer.get("next_cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() && c != cursor => cursor = c.to_string(),
                _ => return Ok(tags.finish(true)),
            }
        }
        tracing::warn!(channel = %self.channel, pages = MAX_PAGES,
            "wecom: the customer has more relationships than nurture reads; no tag is removed this time");
        Ok(tags.finish(false))
    }

    /// Every relationship WeCom lists for the customer (all pages); an
    /// empty list when WeCom says there is none (84061). `None` when there
    /// are more pages than nurture reads.
    pub async fn follow_users(
        &self,
        external_userid: &str,
    ) -> Result<Option<Vec<FollowUser>>, Delivery> {
        let mut tags = PageTags::default();
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let answer = match self.page(external_userid, &cursor).await {
                Ok(a) => a,
                Err(Delivery::Permanent { reason }) if reason.contains("errcode 84061") => {
                    return Ok(Some(Vec::new()));
                }
                Err(e) => return Err(e),
            };
            tags.add_page(&answer, "");
            match answer.get("next_cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() && c != cursor => cursor = c.to_string(),
                _ => return Ok(tags.finish(true).relationships),
            }
        }
        Ok(None)
    }
}

/// `errcode` as a number or a numeric string; a missing one is 0.
fn errcode_of(v: &Value) -> Option<i64> {
    if !v.is_object() {
        return None;
    }
    match v.get("errcode") {
        None | Some(Value::Null) => Some(0),
        Some(c) => c.as_i64().or_else(|| c.as_str()?.trim().parse().ok()),
    }
}

fn not_json(raw: &[u8]) -> Delivery {
    Delivery::Retry {
        after: None,
        reason: format!(
            "wecom {EXTERNALCONTACT_GET}: the answer is not the expected JSON: {}",
            excerpt(raw)
        ),
    }
}

/// An HTTP 200's JSON; any other status is a transport error (retried).
fn read_json(status: StatusCode, raw: &[u8]) -> Result<Value, Delivery> {
    if status != StatusCode::OK {
        return Err(Delivery::Retry {
            after: None,
            reason: format!(
                "wecom {EXTERNALCONTACT_GET}: HTTP {} (a transport error): {}",
                status.as_u16(),
                excerpt(raw)
            ),
        });
    }
    serde_json::from_slice(raw).map_err(|_| not_json(raw))
}

/// Tags gathered over the pages of one answer.
#[derive(Debug, Default)]
pub struct PageTags {
    editor: BTreeSet<String>,
    all: BTreeSet<String>,
    follow: Vec<FollowUser>,
}

impl PageTags {
    /// Adds one page's `follow_user` entries: all of them to `all`, the
    /// entry whose `userid` is `staff` to `editor`.
    pub fn add_page(&mut self, answer: &Value, staff: &str) {
        let entries = answer
            .get("follow_user")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for entry in entries {
            if let Some(f) = FollowUser::from_json(entry) {
                self.follow.push(f);
            }
            let names = tag_names(entry);
            if entry.get("userid").and_then(Value::as_str) == Some(staff) {
                self.editor.extend(names.iter().cloned());
            }
            self.all.extend(names);
        }
    }

    pub fn finish(self, complete: bool) -> WecomTags {
        WecomTags {
            editor: self.editor,
            all: complete.then_some(self.all),
            relationships: complete.then_some(self.follow),
        }
    }
}

/// The nurture tag names of one `follow_user` entry's `tags`.
pub fn tag_names(entry: &Value) -> Vec<String> {
    let tags = entry
        .get("tags")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    tags.iter()
        .filter(|t| t.get("type").and_then(Value::as_i64) != Some(PERSONAL_TAG))
        .filter_map(|t| t.get("tag_name").and_then(Value::as_str))
        .filter_map(|name| check_tag(name).ok())
        .collect()
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
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_corp_and_rule_tags_of_the_editor_and_sees_every_relationship() {
        let page = json!({
            "errcode": 0,
            "follow_user": [
                {"userid": "zhangsan", "remark": "r", "tags": [
                    {"group_name": "Level", "tag_name": "vip", "tag_id": "et1", "type": 1},
                    {"group_name": "", "tag_name": "my note", "type": 2},
                    {"group_name": "Rules", "tag_name": " big-spender ", "tag_id": "et2", "type": 3},
                    {"group_name": "Bad", "tag_name": "a\u{1}b", "tag_id": "et3", "type": 1},
                    {"group_name": "Bad", "tag_name": "", "tag_id": "et4", "type": 1}
                ]},
                {"userid": "lisi", "tags": [{"tag_name": "lead", "tag_id": "et5", "type": 1}]},
                {"userid": "wangwu"}
            ]
        });
        let mut p = PageTags::default();
        p.add_page(&page, "zhangsan");
        let w = p.finish(true);
        assert_eq!(
            w.editor.iter().collect::<Vec<_>>(),
            ["big-spender", "vip"],
            "personal and invalid names are skipped"
        );
        assert_eq!(
            w.all.unwrap().iter().collect::<Vec<_>>(),
            ["big-spender", "lead", "vip"]
        );
        // Not every page read: no removal basis.
        let mut p = PageTags::default();
        p.add_page(&page, "nobody");
        let w = p.finish(false);
        assert!(w.editor.is_empty() && w.all.is_none());
    }

    #[test]
    fn answers_and_backoff() {
        assert_eq!(errcode_of(&json!({"errcode": "84061"})), Some(84061));
        assert_eq!(errcode_of(&json!({"follow_user": []})), Some(0));
        assert_eq!(errcode_of(&json!([1])), None);
        assert!(matches!(
            read_json(StatusCode::BAD_GATEWAY, b"x"),
            Err(Delivery::Retry { .. })
        ));
        assert!(matches!(
            read_json(StatusCode::OK, b"<html>"),
            Err(Delivery::Retry { .. })
        ));
        assert_eq!(retry_delay(0), Duration::from_secs(5));
        assert_eq!(retry_delay(3), Duration::from_secs(40));
        assert_eq!(retry_delay(40), RETRY_MAX);
        assert_eq!(retry_delay(-1), Duration::from_secs(5));
    }
}
