//! Tags go both ways (issue 9, point 11): the worker of the `wecom_tag_marks`
//! queue that a workflow's `tag:` step fills (`engine::apply`, in the plan's
//! transaction) for a contact mirrored from WeCom.
//!
//! For each queued (channel, contact, tag, add|remove) it:
//! 1. finds the corp tag's id by name: the cache (`wecom_corp_tags`), else
//!    `POST externalcontact/get_corp_tag_list` (all groups; at most once a
//!    minute per channel), else — for an add — creates it with
//!    `POST externalcontact/add_corp_tag` in the channel's `tag_group`
//!    (`nurture` unless the channel says). A name already in another group
//!    is that tag (names map as the tag sync maps them: no group prefix);
//!    a remove removes every corp tag of that name, and a name WeCom does
//!    not have is nothing to remove;
//! 2. marks it with `POST externalcontact/mark_tag` (`userid`,
//!    `external_userid`, `add_tag` | `remove_tag`) on every standing
//!    relationship nurture knows of the customer (`wecom_relationships`):
//!    tags are per relationship in WeCom.
//!
//! Errors: 84061 (the member is not, or no longer, a follow-user) skips that
//! relationship; 40068 (the tag id is unknown: an admin deleted the tag)
//! forgets the cached id, reads the list again and tries once more; 40071
//! from add_corp_tag (the name exists: another daemon created it) reads the
//! list again. Retry / wait classes postpone the row (a quota window does
//! not count as a failure), after [`MAX_ATTEMPTS`] failures it is `failed`;
//! other errcodes fail it at once, with WeCom's reason kept in the row.
//!
//! WeCom raises no callback for these writes; when a salesperson's edit
//! makes the tag sync read the customer back, the rows tell it what nurture
//! marked (see `store::wecom_marks`), so nothing loops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::WecomConfig;
use super::api::WecomApi;
use super::token::TokenCaches;
use crate::channels::{Delivery, Exchange};
use crate::project::Project;
use crate::settings::{ChannelSettings, Settings};
use crate::store::wecom_marks::{CorpTag, MarkAction, MarkOutcome, MarkRequest};
use crate::store::{Store, StoreError};
use crate::wecom::tag_marks::{NAME_MAX, marks_tags, tag_group};
// Which channels mark tags and the marks worker's wake-up are WeCom's rules
// (the planner uses them too); re-exported for the layers above channels
// (the callback), which may reach them here.
pub use crate::wecom::tag_marks::{MarksQueued, marking_channels};

pub const GET_CORP_TAG_LIST: &str = "/cgi-bin/externalcontact/get_corp_tag_list";
pub const ADD_CORP_TAG: &str = "/cgi-bin/externalcontact/add_corp_tag";
pub const MARK_TAG: &str = "/cgi-bin/externalcontact/mark_tag";

/// Failed tries after which a mark is given up (about a day of backoff).
pub const MAX_ATTEMPTS: i64 = 30;
const IDLE: Duration = Duration::from_secs(30);
/// The tag list is read at most this often per channel when a name is not
/// in the cache (a remove of a tag WeCom never had must not read it each time).
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Marks tags through one channel.
pub struct Marker {
    channel: String,
    group: String,
    timeout: Duration,
    api: WecomApi,
    refreshed: Mutex<Option<Instant>>,
}

impl Marker {
    pub fn new(config: &WecomConfig, group: String) -> Result<Marker, String> {
        Ok(Marker {
            channel: config.name.clone(),
            group,
            timeout: config.timeout,
            api: config.api()?,
            refreshed: Mutex::new(None),
        })
    }

    /// Every marking wecom channel of `settings` that can be built.
    pub fn all(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
        tokens: &TokenCaches,
    ) -> HashMap<String, Marker> {
        let mut out = HashMap::new();
        for (name, cs) in &settings.channels {
            if !marks_tags(cs) {
                continue;
            }
            let built = crate::channels::build::wecom_config(cs, settings, env, tokens)
                .and_then(|c| Marker::new(&c, tag_group(cs)));
            match built {
                Ok(m) => {
                    out.insert(name.clone(), m);
                }
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, "wecom channel cannot mark tags")
                }
            }
        }
        out
    }

    /// Reads every corp tag into the cache, unless that was done in the
    /// last minute and `force` is false.
    async fn refresh(&self, store: &Store, force: bool) -> Result<(), Delivery> {
        {
            let last = self.refreshed.lock().expect("not poisoned");
            if !force && last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return Ok(());
            }
        }
        let answer = self
            .api
            .post(GET_CORP_TAG_LIST, &json!({}))
            .await
            .map_err(|e| e.delivery)?;
        let tags = corp_tags(&answer.json);
        store
            .replace_wecom_corp_tags(&self.channel, &tags, Utc::now())
            .await
            .map_err(store_retry)?;
        *self.refreshed.lock().expect("not poisoned") = Some(Instant::now());
        Ok(())
    }

    /// The corp tag ids a mark of `tag` uses: for an add one (the group's
    /// own first, else any of that name, else a new one in the group); for
    /// a remove every one of that name (none: nothing to remove).
    async fn tag_ids(
        &self,
        store: &Store,
        tag: &str,
        action: MarkAction,
        force: bool,
    ) -> Result<Vec<String>, Delivery> {
        let named = |store: &Store| {
            let channel = self.channel.clone();
            let tag = tag.to_string();
            let store = store.clone();
            async move {
                store
                    .wecom_corp_tags_named(&channel, &tag)
                    .await
                    .map_err(store_retry)
            }
        };
        let mut known = if force {
            Vec::new()
        } else {
            named(store).await?
        };
        if known.is_empty() {
            self.refresh(store, force).await?;
            known = named(store).await?;
        }
        if action == MarkAction::Remove {
            return Ok(known.into_iter().map(|t| t.tag_id).collect());
        }
        if let Some(t) = known
            .iter()
            .find(|t| t.group_name == self.group)
            .or(known.first())
        {
            return Ok(vec![t.tag_id.clone()]);
        }
        let group_id = store
            .wecom_corp_tag_group(&self.channel, &self.group)
            .await
            .map_err(store_retry)?;
        // add_corp_tag: with group_id the tag goes in that group; with
        // group_name a group of that name is used, or created.
        let body = match &group_id {
            Some(g) => json!({"group_id": g, "tag": [{"name": tag}]}),
            None => json!({"group_name": self.group, "tag": [{"name": tag}]}),
        };
        match self.api.post(ADD_CORP_TAG, &body).await {
            Ok(a) => {
                let made = corp_tags(&json!({"tag_group": [a.json["tag_group"].clone()]}));
                store
                    .add_wecom_corp_tags(&self.channel, &made, Utc::now())
                    .await
                    .map_err(store_retry)?;
                match made.into_iter().find(|t| t.name == tag) {
                    Some(t) => {
                        tracing::info!(channel = %self.channel, %tag, group = %self.group, "wecom corp tag created");
                        Ok(vec![t.tag_id])
                    }
                    // WeCom said ok but named no such tag: nothing to mark
                    // with. Tried again (the retry reads the list first, and
                    // a tag WeCom did make is found there, or refused as a
                    // duplicate, 40071); given up after MAX_ATTEMPTS.
                    None => Err(Delivery::Retry {
                        after: None,
                        reason: format!(
                            "wecom {ADD_CORP_TAG}: answered ok but its answer has no tag named {tag:?} in group {:?}; the tag is not marked yet",
                            self.group
                        ),
                    }),
                }
            }
            // The name exists (made meanwhile, or the group id went stale):
            // read the list again and take it from there.
            Err(e) if has_errcode(&e, 40071) || has_errcode(&e, 40068) => {
                self.refresh(store, true).await?;
                let known = named(store).await?;
                match known.first() {
                    Some(t) => Ok(vec![t.tag_id.clone()]),
                    None => Err(e.delivery),
                }
            }
            Err(e) => Err(e.delivery),
        }
    }

    /// Marks one queued tag; the staff userids whose relationship took it.
    pub async fn mark(&self, store: &Store, req: &MarkRequest) -> Result<Vec<String>, Delivery> {
        let Some(ext) = store
            .wecom_external_userid_of(&req.contact_id)
            .await
            .map_err(store_retry)?
        else {
            return Ok(Vec::new());
        };
        let all: Vec<String> = store
            .wecom()
            .relationships_of(&ext)
            .await
            .map_err(store_retry)?
            .into_iter()
            .filter(|r| r.standing)
            .map(|r| r.userid)
            .collect();
        // Queued again for a relationship added later: the ones this intent
        // already marked keep their mark.
        let mut marked: Vec<String> = all
            .iter()
            .filter(|u| req.already.contains(u))
            .cloned()
            .collect();
        let standing: Vec<String> = all
            .into_iter()
            .filter(|u| !req.already.contains(u))
            .collect();
        if standing.is_empty() {
            return Ok(marked);
        }
        if req.tag.chars().count() > NAME_MAX {
            return Err(Delivery::Permanent {
                reason: format!(
                    "wecom: tag {:?} is longer than WeCom's {NAME_MAX} characters for a corp tag",
                    req.tag
                ),
            });
        }
        let mut ids = self.tag_ids(store, &req.tag, req.action, false).await?;
        let mut retried = false;
        for userid in standing {
            loop {
                if ids.is_empty() {
                    // Nothing of that name in WeCom: nothing to remove.
                    return Ok(marked);
                }
                let key = match req.action {
                    MarkAction::Add => "add_tag",
                    MarkAction::Remove => "remove_tag",
                };
                let body = json!({"userid": userid, "external_userid": ext, key: ids});
                match self.api.post(MARK_TAG, &body).await {
                    Ok(_) => {
                        marked.push(userid.clone());
                        break;
                    }
                    Err(e) if has_errcode(&e, 84061) => {
                        tracing::info!(channel = %self.channel, contact = %req.contact_id, %userid,
                            "wecom mark_tag: not a follow-user of the customer (84061); relationship skipped");
                        break;
                    }
                    Err(e) if has_errcode(&e, 40068) && !retried => {
                        retried = true;
                        for id in &ids {
                            store
                                .forget_wecom_corp_tag(&self.channel, id)
                                .await
                                .map_err(store_retry)?;
                        }
                        ids = self.tag_ids(store, &req.tag, req.action, true).await?;
                    }
                    Err(e) => return Err(e.delivery),
                }
            }
        }
        Ok(marked)
    }
}

/// For `channels test`: what tag steps will do on this channel, read from
/// WeCom's tag library (`get_corp_tag_list`, read-only). `Err` is WeCom's
/// refusal (a missing customer-contact permission shows here first).
pub async fn describe(config: &WecomConfig, cs: &ChannelSettings) -> Result<String, String> {
    if !marks_tags(cs) {
        return Ok("tag steps do not mark corp tags on this channel (mark_tags: false)".into());
    }
    let group = tag_group(cs);
    let api = config.api()?;
    let answer = api
        .post(GET_CORP_TAG_LIST, &json!({}))
        .await
        .map_err(|e| match e.delivery {
            Delivery::Permanent { reason }
            | Delivery::Retry { reason, .. }
            | Delivery::Wait { reason, .. } => reason,
            Delivery::Delivered { .. } => "no answer".into(),
        })?;
    let tags = corp_tags(&answer.json);
    let mine = tags.iter().filter(|t| t.group_name == group).count();
    let groups: std::collections::BTreeSet<&str> =
        tags.iter().map(|t| t.group_name.as_str()).collect();
    Ok(if groups.contains(group.as_str()) {
        format!(
            "tag steps mark corp tags: {} corp tags in {} groups; group \"{group}\" has {mine} (new tags are created there)",
            tags.len(),
            groups.len()
        )
    } else {
        format!(
            "tag steps mark corp tags: {} corp tags in {} groups; group \"{group}\" does not exist yet (made with the first new tag)",
            tags.len(),
            groups.len()
        )
    })
}

/// The corp tags of a `get_corp_tag_list` answer (`tag_group[].tag[]`),
/// without deleted ones.
pub fn corp_tags(answer: &Value) -> Vec<CorpTag> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = Vec::new();
    for g in answer
        .get("tag_group")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if g.get("deleted").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        for t in g
            .get("tag")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if t.get("deleted").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let (id, name) = (s(t, "id"), s(t, "name"));
            if id.is_empty() || name.is_empty() {
                continue;
            }
            out.push(CorpTag {
                tag_id: id,
                name,
                group_id: s(g, "group_id"),
                group_name: s(g, "group_name"),
            });
        }
    }
    out
}

fn has_errcode(e: &Exchange, code: i64) -> bool {
    match &e.delivery {
        Delivery::Permanent { reason }
        | Delivery::Retry { reason, .. }
        | Delivery::Wait { reason, .. } => reason.contains(&format!(" errcode {code} ")),
        Delivery::Delivered { .. } => false,
    }
}

fn store_retry(e: StoreError) -> Delivery {
    Delivery::Retry {
        after: None,
        reason: format!("the store failed: {e}"),
    }
}

/// What one round did (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub done: usize,
    pub postponed: usize,
    pub failed: usize,
}

/// Works off the marks due now with the channels of `settings`.
pub async fn mark_due(
    store: &Store,
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    tokens: &TokenCaches,
) -> Result<Round, StoreError> {
    let q = Marks {
        markers: Marker::all(settings, env, tokens),
    };
    let mut out = Round::default();
    super::queue::round(store, &q, &mut Default::default(), &mut out).await?;
    Ok(out)
}

/// The `wecom_tag_marks` queue, worked by [`super::queue`] with the
/// markers of the current settings.
struct Marks {
    markers: HashMap<String, Marker>,
}

impl super::queue::Queue for Marks {
    type Row = MarkRequest;
    type Stats = Round;
    const NAME: &'static str = "wecom tag marks";

    fn row_time(&self) -> Duration {
        // A mark may take a few calls (list, create, one per relationship).
        self.markers
            .values()
            .map(|m| m.timeout)
            .max()
            .unwrap_or_default()
            * 4
    }

    async fn claim(
        &self,
        store: &Store,
        now: chrono::DateTime<Utc>,
        lease_until: chrono::DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<MarkRequest>, StoreError> {
        store.claim_wecom_tag_marks(now, lease_until, limit).await
    }

    async fn work(
        &self,
        store: &Store,
        row: &MarkRequest,
        stats: &mut Round,
    ) -> Result<(), StoreError> {
        one(store, &self.markers, row, stats).await
    }

    async fn moved(
        &self,
        store: &Store,
        rows: &[MarkRequest],
        from: chrono::DateTime<Utc>,
        to: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        store.move_wecom_tag_marks(rows, from, to).await
    }

    async fn next_due(&self, store: &Store) -> Result<Option<i64>, StoreError> {
        store.next_wecom_tag_mark_at().await
    }
}

async fn one(
    store: &Store,
    markers: &HashMap<String, Marker>,
    req: &MarkRequest,
    out: &mut Round,
) -> Result<(), StoreError> {
    let result = match markers.get(&req.channel) {
        Some(m) => m.mark(store, req).await,
        None => Err(Delivery::Retry {
            after: None,
            reason: format!(
                "channel {:?} is not a usable wecom channel that marks tags in the current settings",
                req.channel
            ),
        }),
    };
    let fail = |reason: String| MarkOutcome::Failed { reason };
    match result {
        Ok(marked) => {
            out.done += 1;
            tracing::info!(channel = %req.channel, contact = %req.contact_id, tag = %req.tag,
                action = req.action.as_str(), ?marked, "wecom corp tag marked");
            store
                .finish_wecom_tag_mark(req, &MarkOutcome::Done { marked }, Utc::now())
                .await?;
        }
        Err(Delivery::Wait { after, reason }) => {
            out.postponed += 1;
            let next = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
            store
                .postpone_wecom_tag_mark(req, next, &reason, false)
                .await?;
        }
        Err(Delivery::Retry { after, reason }) => {
            if req.attempts + 1 >= MAX_ATTEMPTS {
                out.failed += 1;
                tracing::warn!(channel = %req.channel, contact = %req.contact_id, tag = %req.tag, %reason,
                    "wecom tag mark given up after repeated failures");
                store
                    .finish_wecom_tag_mark(req, &fail(reason), Utc::now())
                    .await?;
                return Ok(());
            }
            out.postponed += 1;
            let wait =
                super::contact_tags::retry_delay(req.attempts).max(after.unwrap_or_default());
            let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            tracing::info!(channel = %req.channel, contact = %req.contact_id, tag = %req.tag, %reason,
                retry_in_s = wait.as_secs(), "wecom tag mark failed; it is tried again");
            store
                .postpone_wecom_tag_mark(req, next, &reason, true)
                .await?;
        }
        Err(Delivery::Permanent { reason }) => {
            out.failed += 1;
            tracing::warn!(channel = %req.channel, contact = %req.contact_id, tag = %req.tag, %reason,
                "wecom tag mark refused by WeCom");
            store
                .finish_wecom_tag_mark(req, &fail(reason), Utc::now())
                .await?;
        }
        Err(Delivery::Delivered { .. }) => {
            store
                .postpone_wecom_tag_mark(req, Utc::now(), "no answer", true)
                .await?;
        }
    }
    Ok(())
}

/// Runs until `shutdown`: works the queue with the channels of the current
/// settings.
pub async fn run(
    store: Store,
    project: watch::Receiver<Arc<Project>>,
    tokens: TokenCaches,
    queued: MarksQueued,
    shutdown: CancellationToken,
) {
    super::queue::run(
        store,
        project,
        queued.into_notify(),
        IDLE,
        move |settings: &Settings| Marks {
            markers: Marker::all(settings, &|name| std::env::var(name).ok(), &tokens),
        },
        |_: &Round| {},
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_corp_tag_lists_without_deleted_entries() {
        let a = json!({"errcode": 0, "tag_group": [
            {"group_id": "g1", "group_name": "Level", "tag": [
                {"id": "t1", "name": "vip"}, {"id": "t2", "name": "old", "deleted": true}]},
            {"group_id": "g2", "group_name": "Gone", "deleted": true, "tag": [{"id": "t3", "name": "x"}]},
            {"group_id": "g3", "group_name": "nurture", "tag": [{"id": "", "name": "bad"}]}
        ]});
        let tags = corp_tags(&a);
        assert_eq!(tags.len(), 1);
        assert_eq!(
            (tags[0].tag_id.as_str(), tags[0].group_name.as_str()),
            ("t1", "Level")
        );
        assert!(corp_tags(&json!({"errcode": 0})).is_empty());
    }
}
