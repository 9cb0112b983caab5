//! Per-contact WeCom tags in the store (migration 0006): the queue of tag
//! syncs the callback asks for (`wecom_tag_sync`) and applying what WeCom
//! said (`contact_tags`, with the WeCom-sourced ones in
//! `wecom_contact_tags`). The worker that calls WeCom is
//! `channels::wecom::contact_tags`; the decisions are documented in
//! `api::wecom_callback`.
//!
//! The rule of a sync, for one contact and the salesperson who edited:
//! - a tag of that salesperson's relationship that the contact lacks is added
//!   (`tag_added` is logged by the `contact_tags` trigger) and recorded as
//!   WeCom-sourced; a tag the contact already has stays as it is (if nurture
//!   set it, it stays nurture's);
//! - a WeCom-sourced tag that no relationship of the contact has any more
//!   (every `follow_user` entry is looked at, so one salesperson removing a
//!   tag another still has removes nothing) is removed (`tag_removed`);
//! - tags set by workflows, the CLI or the API are never removed, unless
//!   nurture marked them in WeCom (a workflow's `tag:` step, see
//!   `store::wecom_marks`): then they are on both sides and a removal in
//!   WeCom removes them here too;
//! - a tag nurture is marking in WeCom (a pending mark, or one done after
//!   the edit) is left alone: reading its own mark back is no tag event.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use crate::store::{Store, StoreError, to_ms};

/// One queued sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSyncRequest {
    pub channel: String,
    pub contact_id: String,
    pub staff_userid: String,
    pub external_userid: String,
    /// The row's generation when it was read: an edit arriving meanwhile
    /// bumps it, and the row then stays for another pass.
    pub generation: i64,
    /// Failed fetches so far.
    pub attempts: i64,
    /// ms, the latest edit's arrival: WeCom is read after it, so a tag mark
    /// nurture made before it is in the read (see `store::wecom_marks`).
    pub requested_at: i64,
}

/// What WeCom says the contact's tags are (nurture tag names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WecomTags {
    /// The tags of the editing salesperson's relationship (empty when WeCom
    /// lists no relationship with them any more).
    pub editor: BTreeSet<String>,
    /// The tags of every relationship, when all of them were read; `None`
    /// (an incomplete list) means nothing is removed this time.
    pub all: Option<BTreeSet<String>>,
    /// Every relationship (`follow_user` entry), when all were read: they
    /// replace the customer's rows in `wecom_relationships`.
    pub relationships: Option<Vec<super::relationships::FollowUser>>,
}

/// What applying a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagSyncDone {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The contact no longer exists: nothing was applied.
    pub contact_gone: bool,
    /// An edit arrived during the fetch: the row stays, due now.
    pub requeued: bool,
}

/// Queues a sync in the callback's transaction. A row already queued for the
/// same (channel, contact, salesperson) is reused: its generation is bumped
/// (so a fetch in flight does not retire it) and its schedule kept (a row
/// backing off after failures keeps backing off).
pub(crate) async fn queue(
    conn: &mut AnyConnection,
    channel: &str,
    contact_id: &str,
    staff_userid: &str,
    external_userid: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO wecom_tag_sync (channel, contact_id, staff_userid, external_userid, \
         requested_at, generation, attempts, next_attempt_at, last_error) \
         VALUES ($1, $2, $3, $4, $5, 1, 0, $5, NULL) \
         ON CONFLICT (channel, contact_id, staff_userid) DO UPDATE SET \
         external_userid = excluded.external_userid, requested_at = excluded.requested_at, \
         generation = wecom_tag_sync.generation + 1",
    )
    .bind(channel)
    .bind(contact_id)
    .bind(staff_userid)
    .bind(external_userid)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    fn tag_pool(&self) -> Result<&sqlx::AnyPool, StoreError> {
        Ok(self.db())
    }

    /// Queued syncs due at `now`, oldest first.
    pub async fn due_wecom_tag_syncs(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TagSyncRequest>, StoreError> {
        let rows: Vec<(String, String, String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT channel, contact_id, staff_userid, external_userid, generation, attempts, \
             requested_at FROM wecom_tag_sync WHERE next_attempt_at <= $1 \
             ORDER BY next_attempt_at, requested_at LIMIT $2",
        )
        .bind(to_ms(now))
        .bind(limit)
        .fetch_all(self.tag_pool()?)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    channel,
                    contact_id,
                    staff_userid,
                    external_userid,
                    generation,
                    attempts,
                    requested_at,
                )| {
                    TagSyncRequest {
                        channel,
                        contact_id,
                        staff_userid,
                        external_userid,
                        generation,
                        attempts,
                        requested_at,
                    }
                },
            )
            .collect())
    }

    /// Claims up to `limit` queued syncs due at `now`, oldest first, by
    /// pushing their `next_attempt_at` to `lease_until`. Several daemons may
    /// share one store: a claimed row is no longer due for the others, so only
    /// one of them asks WeCom (on PostgreSQL, `SKIP LOCKED` also passes over
    /// rows another daemon is claiming right now; SQLite has one writer). The
    /// outcome write (apply, postpone, drop) then retires the row or sets its
    /// real next attempt; a daemon that dies leaves its claims to come due
    /// again when the lease ends. One statement: one short transaction.
    pub async fn claim_wecom_tag_syncs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TagSyncRequest>, StoreError> {
        let sql = crate::store::claim::Claim {
            table: "wecom_tag_sync",
            key: "channel, contact_id, staff_userid",
            lease: "next_attempt_at = $1",
            due: "next_attempt_at <= $2",
            order: "next_attempt_at, requested_at",
            limit: "$3",
            returning: "channel, contact_id, staff_userid, external_userid, generation, \
                        attempts, requested_at",
        }
        .sql(self.dialect());
        let mut rows: Vec<(String, String, String, String, i64, i64, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(to_ms(lease_until))
                .bind(to_ms(now))
                .bind(limit)
                .fetch_all(self.tag_pool()?)
                .await?;
        // RETURNING gives no order (and the old `next_attempt_at` is gone):
        // the oldest request first is close enough.
        rows.sort_by_key(|r| r.6);
        Ok(rows
            .into_iter()
            .map(
                |(
                    channel,
                    contact_id,
                    staff_userid,
                    external_userid,
                    generation,
                    attempts,
                    requested_at,
                )| {
                    TagSyncRequest {
                        channel,
                        contact_id,
                        staff_userid,
                        external_userid,
                        generation,
                        attempts,
                        requested_at,
                    }
                },
            )
            .collect())
    }

    /// Moves the claims still held until `from` to `to`: a renewed lease,
    /// or (`to` = now) claims a stopping worker did not get to, given back so
    /// the next start (or another daemon) need not wait for the lease. A row
    /// whose outcome was written meanwhile no longer holds `from` and is left
    /// alone.
    pub async fn move_wecom_tag_syncs(
        &self,
        reqs: &[TagSyncRequest],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let keys: Vec<Vec<&str>> = reqs
            .iter()
            .map(|r| vec![r.channel.as_str(), &r.contact_id, &r.staff_userid])
            .collect();
        crate::store::claim::Held {
            table: "wecom_tag_sync",
            key: &["channel", "contact_id", "staff_userid"],
            due: "next_attempt_at",
        }
        .moved(self.tag_pool()?, &keys, to_ms(from), to_ms(to))
        .await?;
        Ok(())
    }

    /// When the earliest queued sync is due (ms), if any.
    pub async fn next_wecom_tag_sync_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT min(next_attempt_at) FROM wecom_tag_sync")
                .fetch_one(self.tag_pool()?)
                .await?,
        )
    }

    /// A failed fetch: tried again at `next_at`, with the reason kept.
    pub async fn postpone_wecom_tag_sync(
        &self,
        req: &TagSyncRequest,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE wecom_tag_sync SET attempts = attempts + 1, next_attempt_at = $1, \
             last_error = $2 WHERE channel = $3 AND contact_id = $4 AND staff_userid = $5",
        )
        .bind(to_ms(next_at))
        .bind(error)
        .bind(&req.channel)
        .bind(&req.contact_id)
        .bind(&req.staff_userid)
        .execute(self.tag_pool()?)
        .await?;
        Ok(())
    }

    /// Gives up on a sync (a permanent error, or too many failures), unless
    /// an edit arrived since it was read: that one gets its own try. Gives
    /// whether the row was deleted.
    pub async fn drop_wecom_tag_sync(&self, req: &TagSyncRequest) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "DELETE FROM wecom_tag_sync WHERE channel = $1 AND contact_id = $2 \
             AND staff_userid = $3 AND generation = $4",
        )
        .bind(&req.channel)
        .bind(&req.contact_id)
        .bind(&req.staff_userid)
        .bind(req.generation)
        .execute(self.tag_pool()?)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Applies what WeCom said to the contact's tags and retires the queued
    /// row, in one transaction (see the module docs for the rule).
    pub async fn apply_wecom_tags(
        &self,
        req: &TagSyncRequest,
        wecom: &WecomTags,
        now: DateTime<Utc>,
    ) -> Result<TagSyncDone, StoreError> {
        let mut tx = self.begin().await?;
        let mut done = TagSyncDone::default();
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = $1")
            .bind(&req.contact_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            // The queued row went with the contact (ON DELETE CASCADE).
            tx.commit().await?;
            done.contact_gone = true;
            return Ok(done);
        }
        let current: HashSet<String> =
            sqlx::query_scalar("SELECT tag FROM contact_tags WHERE contact_id = $1")
                .bind(&req.contact_id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let sourced: Vec<String> =
            sqlx::query_scalar("SELECT tag FROM wecom_contact_tags WHERE contact_id = $1")
                .bind(&req.contact_id)
                .fetch_all(&mut *tx)
                .await?;
        // Tags nurture itself is marking in WeCom: reading them back is not
        // news (see `store::wecom_marks`).
        let (adding, removing) =
            crate::store::wecom_marks::in_flight(&mut tx, &req.contact_id, req.requested_at)
                .await?;

        for tag in &wecom.editor {
            if current.contains(tag) || removing.contains(tag) {
                continue;
            }
            sqlx::query(
                "INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&req.contact_id)
            .bind(tag)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO wecom_contact_tags (contact_id, tag, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (contact_id, tag) DO UPDATE SET added_at = excluded.added_at",
            )
            .bind(&req.contact_id)
            .bind(tag)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await?;
            done.added.push(tag.clone());
        }

        if let Some(all) = &wecom.all {
            for tag in sourced
                .iter()
                .filter(|t| !all.contains(*t) && !adding.contains(*t))
            {
                let n = sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1 AND tag = $2")
                    .bind(&req.contact_id)
                    .bind(tag)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM wecom_contact_tags WHERE contact_id = $1 AND tag = $2")
                    .bind(&req.contact_id)
                    .bind(tag)
                    .execute(&mut *tx)
                    .await?;
                // Already removed by nurture (a workflow, the CLI): nothing to log.
                if n > 0 {
                    done.removed.push(tag.clone());
                }
            }
        }

        if let Some(list) = &wecom.relationships {
            let dialect = self.dialect();
            super::relationships::replace_all(
                &mut tx,
                &req.external_userid,
                list,
                "get",
                to_ms(now),
            )
            .await?;
            super::relationships::refresh_reachability(
                &mut tx,
                dialect,
                &req.external_userid,
                to_ms(now),
            )
            .await?;
        }

        let retired = sqlx::query(
            "DELETE FROM wecom_tag_sync WHERE channel = $1 AND contact_id = $2 \
             AND staff_userid = $3 AND generation = $4",
        )
        .bind(&req.channel)
        .bind(&req.contact_id)
        .bind(&req.staff_userid)
        .bind(req.generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if retired == 0 {
            // An edit arrived while WeCom was asked: read again, now (its
            // failures so far belong to the older request).
            sqlx::query(
                "UPDATE wecom_tag_sync SET attempts = 0, next_attempt_at = $1, last_error = NULL \
                 WHERE channel = $2 AND contact_id = $3 AND staff_userid = $4",
            )
            .bind(to_ms(now))
            .bind(&req.channel)
            .bind(&req.contact_id)
            .bind(&req.staff_userid)
            .execute(&mut *tx)
            .await?;
            done.requeued = true;
        }
        tx.commit().await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
