//! Tags go both ways (issue 9, point 11; migration 0024): the queue of corp
//! tag marks a workflow's `tag:` step asks for (`wecom_tag_marks`) and the
//! cache of corp tag ids by name (`wecom_corp_tags`). The worker that calls
//! WeCom is `channels::wecom::tag_marks`.
//!
//! The rows are also nurture's record of what it marked. WeCom raises no
//! callback for an API write, but a salesperson's later edit makes the tag
//! sync (`store::wecom::tags`) read the customer's tags back, and it may read
//! them before a queued mark reached WeCom. [`in_flight`] tells the sync
//! which tags nurture is changing (a pending mark, or one done after the
//! edit that asked for the read), so it neither adds back a tag nurture just
//! removed nor removes one nurture just added: reading its own marks back
//! never makes a tag event, and nothing loops.
//!
//! A mark that WeCom took also moves the tag in `wecom_contact_tags` (the
//! WeCom-sourced tags): after an add the tag is on both sides, so a
//! salesperson who later removes it in WeCom removes it in nurture too; after
//! a remove it is nurture's alone again.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use super::{Store, StoreError, to_ms};

/// The event a mark that was given up logs on its contact.
pub const MARK_FAILED_EVENT: &str = "wecom_tag_mark_failed";

/// What a mark does to the corp tag, and a mark row's state (typed
/// states, with the others; migration 0035 holds the columns to them).
pub use super::states::{MarkAction, MarkState};

/// One queued mark, as claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRequest {
    pub channel: String,
    pub contact_id: String,
    pub tag: String,
    pub action: MarkAction,
    /// The row's generation when claimed: a newer intent bumps it, and the
    /// outcome of this one is then not written.
    pub generation: i64,
    pub attempts: i64,
    /// Relationships (staff userids) this intent was already marked on: a
    /// mark queued again for a relationship added later
    /// ([`requeue_for_relationship`]) marks only the others.
    pub already: Vec<String>,
}

/// How a mark ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOutcome {
    /// WeCom took it on these relationships (staff userids); empty when the
    /// customer has no standing relationship (nothing to mark).
    Done { marked: Vec<String> },
    /// WeCom refused it for good, or it failed too often.
    Failed { reason: String },
}

/// One corp tag (get_corp_tag_list / add_corp_tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpTag {
    pub tag_id: String,
    pub name: String,
    pub group_id: String,
    pub group_name: String,
}

/// The state of a contact's marks, for `history`-like views and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRow {
    pub channel: String,
    pub tag: String,
    pub action: MarkAction,
    pub state: MarkState,
    pub attempts: i64,
    pub marked: Option<String>,
    pub last_error: Option<String>,
}

/// Queues marks for a tag step, in the plan's transaction: one row per
/// (channel, tag), only for a contact with a `wecom_external_userid`. The
/// latest intent replaces an earlier one (an add then a remove is a remove).
/// Gives the rows queued.
pub(crate) async fn queue(
    conn: &mut AnyConnection,
    channels: &[String],
    contact_id: &str,
    add: &[String],
    remove: &[String],
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut n = 0;
    let intents = add
        .iter()
        .map(|t| (t, MarkAction::Add))
        .chain(remove.iter().map(|t| (t, MarkAction::Remove)));
    for (tag, action) in intents {
        for channel in channels {
            n += sqlx::query(
                "INSERT INTO wecom_tag_marks (channel, contact_id, tag, action, state, generation, \
                 attempts, next_attempt_at, requested_at) \
                 SELECT $1, id, $2, $3, 'pending', 1, 0, $4, $4 FROM contacts \
                  WHERE id = $5 AND wecom_external_userid IS NOT NULL AND wecom_external_userid <> '' \
                 ON CONFLICT (channel, contact_id, tag) DO UPDATE SET action = excluded.action, \
                   state = 'pending', generation = wecom_tag_marks.generation + 1, attempts = 0, \
                   next_attempt_at = excluded.next_attempt_at, requested_at = excluded.requested_at, \
                   last_error = NULL, marked = NULL",
            )
            .bind(channel)
            .bind(tag)
            .bind(action.as_str())
            .bind(now_ms)
            .bind(contact_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        }
    }
    Ok(n)
}

/// A relationship of `external_userid` with `userid` was added (or stands
/// again) after nurture marked corp tags on the customer: WeCom's tags are
/// per relationship, so the new one lacks them. Every add mark of the
/// customer's contact that is done or pending, for a tag the contact still
/// has, is queued again (a new generation, due now): the worker marks the
/// relationships not yet marked ([`MarkRequest::already`]), which now
/// include `userid`. Nothing loops: a pending add is what the tag sync
/// already treats as nurture's own (see [`in_flight`]), and mark_tag raises
/// no callback. Gives the marks queued again.
pub(crate) async fn requeue_for_relationship(
    conn: &mut AnyConnection,
    external_userid: &str,
    userid: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT m.channel, m.contact_id, m.tag, m.marked FROM wecom_tag_marks m \
           JOIN contacts c ON c.id = m.contact_id \
           JOIN contact_tags t ON t.contact_id = m.contact_id AND t.tag = m.tag \
          WHERE c.wecom_external_userid = $1 AND m.action = 'add' \
            AND m.state IN ('done', 'pending')",
    )
    .bind(external_userid)
    .fetch_all(&mut *conn)
    .await?;
    let mut n = 0;
    for (channel, contact_id, tag, marked) in rows {
        // A relationship that ended and stands again is a new one in WeCom:
        // its old marks went with it.
        let kept: Vec<String> = split_marked(marked.as_deref())
            .into_iter()
            .filter(|u| u != userid)
            .collect();
        n += sqlx::query(
            "UPDATE wecom_tag_marks SET state = 'pending', generation = generation + 1, \
             attempts = 0, next_attempt_at = $1, requested_at = $1, last_error = NULL, \
             marked = $2 WHERE channel = $3 AND contact_id = $4 AND tag = $5",
        )
        .bind(now_ms)
        .bind((!kept.is_empty()).then(|| kept.join(",")))
        .bind(&channel)
        .bind(&contact_id)
        .bind(&tag)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(n)
}

/// The tags of `contact_id` nurture is changing in WeCom as of a read asked
/// for at `since_ms`: (being added, being removed). A mark counts while it is
/// pending, and once done if it was done at or after `since_ms` (the read may
/// have come before it). A failed mark does not count: WeCom kept the tag
/// as it was.
pub(crate) async fn in_flight(
    conn: &mut AnyConnection,
    contact_id: &str,
    since_ms: i64,
) -> Result<(HashSet<String>, HashSet<String>), StoreError> {
    let rows: Vec<(String, MarkAction)> = sqlx::query_as(
        "SELECT tag, action FROM wecom_tag_marks WHERE contact_id = $1 \
         AND (state = 'pending' OR (state = 'done' AND done_at >= $2))",
    )
    .bind(contact_id)
    .bind(since_ms)
    .fetch_all(&mut *conn)
    .await?;
    let (mut adding, mut removing) = (HashSet::new(), HashSet::new());
    for (tag, action) in rows {
        match action {
            MarkAction::Add => adding.insert(tag),
            MarkAction::Remove => removing.insert(tag),
        };
    }
    Ok((adding, removing))
}

type MarkTuple = (
    String,
    String,
    MarkAction,
    MarkState,
    i64,
    Option<String>,
    Option<String>,
);
type ClaimRow = (
    String,
    String,
    String,
    MarkAction,
    i64,
    i64,
    i64,
    Option<String>,
);

fn split_marked(marked: Option<&str>) -> Vec<String> {
    marked
        .unwrap_or("")
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

impl Store {
    /// Claims up to `limit` pending marks due at `now`, oldest first, by
    /// pushing their `next_attempt_at` to `lease_until` (the statement of
    /// every claim loop, `store::claim`: another daemon skips them; a daemon
    /// that dies leaves them to come due when the lease ends).
    pub async fn claim_wecom_tag_marks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<MarkRequest>, StoreError> {
        let sql = super::claim::Claim {
            table: "wecom_tag_marks",
            key: "channel, contact_id, tag",
            lease: "next_attempt_at = $1",
            due: "state = 'pending' AND next_attempt_at <= $2",
            order: "next_attempt_at, requested_at",
            limit: "$3",
            returning: "channel, contact_id, tag, action, generation, attempts, requested_at, marked",
        }
        .sql(self.dialect());
        let mut rows: Vec<ClaimRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(to_ms(lease_until))
            .bind(to_ms(now))
            .bind(limit)
            .fetch_all(self.db())
            .await?;
        rows.sort_by_key(|r| r.6);
        Ok(rows
            .into_iter()
            .map(
                |(channel, contact_id, tag, action, generation, attempts, _, marked)| MarkRequest {
                    channel,
                    contact_id,
                    tag,
                    action,
                    generation,
                    attempts,
                    already: split_marked(marked.as_deref()),
                },
            )
            .collect())
    }

    /// Moves the claims still held until `from` to `to`: a renewed lease, or
    /// (`to` = now) claims a stopping worker did not get to.
    pub async fn move_wecom_tag_marks(
        &self,
        reqs: &[MarkRequest],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let keys: Vec<Vec<&str>> = reqs
            .iter()
            .map(|r| vec![r.channel.as_str(), &r.contact_id, &r.tag])
            .collect();
        super::claim::Held {
            table: "wecom_tag_marks",
            key: &["channel", "contact_id", "tag"],
            due: "next_attempt_at",
        }
        .moved(self.db(), &keys, to_ms(from), to_ms(to))
        .await?;
        Ok(())
    }

    /// When the earliest pending mark is due (ms), if any.
    pub async fn next_wecom_tag_mark_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM wecom_tag_marks WHERE state = 'pending'",
        )
        .fetch_one(self.db())
        .await?)
    }

    /// A failed try: again at `next_at`. `counts` is false for a quota
    /// window (waiting is not a failure). Only for the claimed generation.
    pub async fn postpone_wecom_tag_mark(
        &self,
        r: &MarkRequest,
        next_at: DateTime<Utc>,
        error: &str,
        counts: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE wecom_tag_marks SET attempts = attempts + $1, next_attempt_at = $2, \
             last_error = $3 WHERE channel = $4 AND contact_id = $5 AND tag = $6 \
             AND generation = $7",
        )
        .bind(i64::from(counts))
        .bind(to_ms(next_at))
        .bind(error)
        .bind(&r.channel)
        .bind(&r.contact_id)
        .bind(&r.tag)
        .bind(r.generation)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Writes a mark's outcome, unless a newer intent arrived meanwhile (it
    /// stays pending and is worked next). A done mark with relationships
    /// marked moves the tag in `wecom_contact_tags` (see the module docs).
    /// Gives whether the outcome was written.
    pub async fn finish_wecom_tag_mark(
        &self,
        r: &MarkRequest,
        outcome: &MarkOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let (state, marked, error) = match outcome {
            MarkOutcome::Done { marked } => (MarkState::Done, Some(marked.join(",")), None),
            MarkOutcome::Failed { reason } => (MarkState::Failed, None, Some(reason.as_str())),
        };
        let n = sqlx::query(
            "UPDATE wecom_tag_marks SET state = $1, done_at = $2, marked = $3, last_error = $4 \
             WHERE channel = $5 AND contact_id = $6 AND tag = $7 AND generation = $8 \
             AND state = 'pending'",
        )
        .bind(state)
        .bind(to_ms(now))
        .bind(&marked)
        .bind(error)
        .bind(&r.channel)
        .bind(&r.contact_id)
        .bind(&r.tag)
        .bind(r.generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1
            && let MarkOutcome::Failed { reason } = outcome
        {
            // Shown by `nurture history --contact` (and a workflow can
            // trigger on it): the tag is in nurture but not in WeCom.
            let props = serde_json::json!({
                "channel": r.channel,
                "tag": r.tag,
                "action": r.action.as_str(),
                "attempts": r.attempts + 1,
                "reason": reason,
            });
            super::wecom::log_quiet_event(
                &mut tx,
                self.dialect(),
                &r.contact_id,
                MARK_FAILED_EVENT,
                to_ms(now),
                &props,
            )
            .await?;
        }
        if n == 1
            && let MarkOutcome::Done { marked } = outcome
            && !marked.is_empty()
        {
            match r.action {
                MarkAction::Add => {
                    // Only while nurture still has the tag.
                    sqlx::query(
                        "INSERT INTO wecom_contact_tags (contact_id, tag, added_at) \
                         SELECT contact_id, tag, $3 FROM contact_tags \
                          WHERE contact_id = $1 AND tag = $2 \
                         ON CONFLICT (contact_id, tag) DO NOTHING",
                    )
                    .bind(&r.contact_id)
                    .bind(&r.tag)
                    .bind(to_ms(now))
                    .execute(&mut *tx)
                    .await?;
                }
                MarkAction::Remove => {
                    sqlx::query(
                        "DELETE FROM wecom_contact_tags WHERE contact_id = $1 AND tag = $2",
                    )
                    .bind(&r.contact_id)
                    .bind(&r.tag)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// The contact's `wecom_external_userid`, if it still exists and has one.
    pub async fn wecom_external_userid_of(
        &self,
        contact_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let v: Option<Option<String>> =
            sqlx::query_scalar("SELECT wecom_external_userid FROM contacts WHERE id = $1")
                .bind(contact_id)
                .fetch_optional(self.db())
                .await?;
        Ok(v.flatten().filter(|s| !s.is_empty()))
    }

    /// The contact's marks (every channel), by tag.
    pub async fn wecom_tag_marks_of(&self, contact_id: &str) -> Result<Vec<MarkRow>, StoreError> {
        let rows: Vec<MarkTuple> = sqlx::query_as(
            "SELECT channel, tag, action, state, attempts, marked, last_error \
             FROM wecom_tag_marks WHERE contact_id = $1 ORDER BY tag, channel",
        )
        .bind(contact_id)
        .fetch_all(self.db())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(channel, tag, action, state, attempts, marked, last_error)| MarkRow {
                    channel,
                    tag,
                    action,
                    state,
                    attempts,
                    marked,
                    last_error,
                },
            )
            .collect())
    }

    /// The cached corp tags named `name` on `channel`.
    pub async fn wecom_corp_tags_named(
        &self,
        channel: &str,
        name: &str,
    ) -> Result<Vec<CorpTag>, StoreError> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT tag_id, name, group_id, group_name FROM wecom_corp_tags \
             WHERE channel = $1 AND name = $2 ORDER BY group_name, tag_id",
        )
        .bind(channel)
        .bind(name)
        .fetch_all(self.db())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(tag_id, name, group_id, group_name)| CorpTag {
                tag_id,
                name,
                group_id,
                group_name,
            })
            .collect())
    }

    /// The id of the cached group named `group_name`, if nurture has seen one.
    pub async fn wecom_corp_tag_group(
        &self,
        channel: &str,
        group_name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT min(group_id) FROM wecom_corp_tags WHERE channel = $1 AND group_name = $2",
        )
        .bind(channel)
        .bind(group_name)
        .fetch_one(self.db())
        .await?)
    }

    /// Replaces the channel's cache with a full `get_corp_tag_list`.
    pub async fn replace_wecom_corp_tags(
        &self,
        channel: &str,
        tags: &[CorpTag],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM wecom_corp_tags WHERE channel = $1")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        for t in tags {
            insert_corp_tag(&mut tx, channel, t, to_ms(now)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds tags `add_corp_tag` created to the cache.
    pub async fn add_wecom_corp_tags(
        &self,
        channel: &str,
        tags: &[CorpTag],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for t in tags {
            insert_corp_tag(&mut tx, channel, t, to_ms(now)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a tag id WeCom no longer knows (40068).
    pub async fn forget_wecom_corp_tag(
        &self,
        channel: &str,
        tag_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM wecom_corp_tags WHERE channel = $1 AND tag_id = $2")
            .bind(channel)
            .bind(tag_id)
            .execute(self.db())
            .await?;
        Ok(())
    }
}

async fn insert_corp_tag(
    conn: &mut AnyConnection,
    channel: &str,
    t: &CorpTag,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO wecom_corp_tags (channel, tag_id, name, group_id, group_name, fetched_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel, tag_id) DO UPDATE SET \
         name = excluded.name, group_id = excluded.group_id, group_name = excluded.group_name, \
         fetched_at = excluded.fetched_at",
    )
    .bind(channel)
    .bind(&t.tag_id)
    .bind(&t.name)
    .bind(&t.group_id)
    .bind(&t.group_name)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
