//! WeCom relationships (table `wecom_relationships`, migration 0009): one row
//! per customer (`external_userid`) × staff member who added them (a
//! follow-user), with when it was added, the contact-way `state`, the
//! member's remark, and whether it still stands.
//!
//! WeCom has no single owner (reference §1.5): a customer can be a friend of
//! several members, and only a member the customer is a friend of can send
//! them a mass message (else result status 2, or errcode 41048) or hand them
//! over in a transfer (else per-customer 40131). nurture's `owner` is its
//! own field and need not be one of them, so the WeCom channel picks the
//! sender and the handover member from these rows (see
//! `channels::wecom::sender`).
//!
//! Writers:
//! - the callback: `add_external_contact` / `add_half_external_contact`
//!   (standing, added at the event's `CreateTime`, its `State`);
//!   `del_external_contact` (the member deleted the customer: ended by
//!   `staff`, or by `transfer` when `Source=DELETE_BY_TRANSFER`);
//!   `del_follow_user` (the customer deleted the member: ended by
//!   `customer`);
//! - a full read of `externalcontact/get` (the tag sync and the channel's
//!   look-up): every listed `follow_user` stands (with its `createtime`,
//!   `state`, `remark`); a standing row no longer listed ended (`sync`);
//! - `batch/get_by_user` (`nurture wecom sync`): the listed relationships of
//!   the members asked about stand;
//! - the transfer poller: a transfer WeCom reports done (status 1) makes the
//!   takeover member a follow-user and ends the handover member's row
//!   (`transfer`).
//!
//! Reachability: after every write the contact with that
//! `wecom_external_userid` gets the attribute `wecom_deleted_by` (who ended
//! the latest relationship: `staff` or `customer`) when it has rows and none
//! stands, and loses it otherwise; the plan skips WeCom sends to such a
//! contact as `no_address`. A customer nurture has no row for at all (an
//! import, before any callback or sync) is not marked: nothing says the
//! relationship ended, and the channel looks it up before the first send.
//! An ended-by-transfer relationship does not mark the contact either (the
//! takeover member's row comes with the transfer's result).

use serde_json::{Map, Value};
use sqlx::{AnyConnection, AnyPool, Row};

use super::{ATTR_DELETED_BY, Dialect, StoreError};

/// One relationship as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    pub external_userid: String,
    pub userid: String,
    /// ms.
    pub added_at: Option<i64>,
    pub state: Option<String>,
    pub remark: Option<String>,
    pub standing: bool,
    /// `staff`, `customer`, `transfer` or `sync`.
    pub ended_by: Option<String>,
    pub ended_at: Option<i64>,
}

/// One `follow_user` entry as WeCom lists it (externalcontact/get) or one
/// `follow_info` (batch/get_by_user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUser {
    pub userid: String,
    /// ms (WeCom's `createtime` is in seconds).
    pub added_at: Option<i64>,
    pub state: Option<String>,
    pub remark: Option<String>,
}

impl FollowUser {
    /// From a `follow_user` / `follow_info` JSON object; `None` without a
    /// `userid`.
    pub fn from_json(v: &Value) -> Option<FollowUser> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Some(FollowUser {
            userid: s("userid")?,
            added_at: v
                .get("createtime")
                .and_then(Value::as_i64)
                .filter(|t| *t > 0)
                .map(|t| t * 1000),
            state: s("state"),
            remark: s("remark"),
        })
    }
}

/// Who ended a relationship (`ended_by`).
pub const ENDED_BY_STAFF: &str = "staff";
pub const ENDED_BY_CUSTOMER: &str = "customer";
pub const ENDED_BY_TRANSFER: &str = "transfer";
pub const ENDED_BY_SYNC: &str = "sync";

/// Records that `userid` is (again) a follow-user of `external_userid`.
/// `added_at`, `state` and `remark` replace the stored ones when given.
/// A relationship that did not stand before gets the corp tags nurture
/// marked on the customer (`wecom_marks::requeue_for_relationship`). Gives
/// whether it is new (or stands again).
pub async fn stands(
    conn: &mut AnyConnection,
    external_userid: &str,
    f: &FollowUser,
    source: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let before: Option<i64> = sqlx::query_scalar(
        "SELECT standing FROM wecom_relationships WHERE external_userid = $1 AND userid = $2",
    )
    .bind(external_userid)
    .bind(&f.userid)
    .fetch_optional(&mut *conn)
    .await?;
    let added = before != Some(1);
    sqlx::query(
        "INSERT INTO wecom_relationships (external_userid, userid, added_at, state, remark, \
         standing, ended_by, ended_at, source, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 1, NULL, NULL, $6, $7) \
         ON CONFLICT (external_userid, userid) DO UPDATE SET \
           added_at = coalesce(excluded.added_at, wecom_relationships.added_at), \
           state = coalesce(excluded.state, wecom_relationships.state), \
           remark = coalesce(excluded.remark, wecom_relationships.remark), \
           standing = 1, ended_by = NULL, ended_at = NULL, \
           source = excluded.source, updated_at = excluded.updated_at",
    )
    .bind(external_userid)
    .bind(&f.userid)
    .bind(f.added_at)
    .bind(&f.state)
    .bind(&f.remark)
    .bind(source)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if added {
        crate::store::wecom_marks::requeue_for_relationship(conn, external_userid, &f.userid, now)
            .await?;
    }
    Ok(added)
}

/// [`stands`] for many relationships at once, set-based (a sync reads
/// thousands): per 500, one SELECT of those that stood, one upsert, and the
/// corp-tag requeue only for new relationships of customers with marks.
/// A pair listed twice counts once, with its last listing. Gives how many
/// are new (or stand again).
pub async fn stand_many(
    conn: &mut AnyConnection,
    entries: &[(String, FollowUser)],
    source: &str,
    now: i64,
) -> Result<usize, StoreError> {
    use crate::store::placeholders::push_list;
    use std::collections::{HashMap, HashSet};
    // The last listing of each pair (PostgreSQL's upsert may not touch a
    // row twice in one statement).
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, (ext, f)) in entries.iter().enumerate() {
        last.insert((ext.as_str(), f.userid.as_str()), i);
    }
    let mut unique: Vec<usize> = last.into_values().collect();
    unique.sort_unstable();
    let mut added_total = 0;
    for chunk in unique.chunks(500) {
        let rows: Vec<&(String, FollowUser)> = chunk.iter().map(|i| &entries[*i]).collect();
        let mut exts: Vec<&str> = rows.iter().map(|(e, _)| e.as_str()).collect();
        exts.sort_unstable();
        exts.dedup();
        let mut sql = String::from(
            "SELECT external_userid, userid FROM wecom_relationships WHERE standing = 1 AND external_userid IN (",
        );
        push_list(&mut sql, 1, exts.len());
        sql.push(')');
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
        for e in &exts {
            q = q.bind(*e);
        }
        let stood: HashSet<(String, String)> = q.fetch_all(&mut *conn).await?.into_iter().collect();
        let mut sql = String::from(
            "INSERT INTO wecom_relationships (external_userid, userid, added_at, state, remark, \
             standing, ended_by, ended_at, source, updated_at) VALUES ",
        );
        for i in 0..rows.len() {
            let b = i * 7;
            sql.push_str(&format!(
                "{}(${}, ${}, ${}, ${}, ${}, 1, NULL, NULL, ${}, ${})",
                if i == 0 { "" } else { ", " },
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            ));
        }
        sql.push_str(
            " ON CONFLICT (external_userid, userid) DO UPDATE SET \
               added_at = coalesce(excluded.added_at, wecom_relationships.added_at), \
               state = coalesce(excluded.state, wecom_relationships.state), \
               remark = coalesce(excluded.remark, wecom_relationships.remark), \
               standing = 1, ended_by = NULL, ended_at = NULL, \
               source = excluded.source, updated_at = excluded.updated_at",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (ext, f) in &rows {
            q = q
                .bind(ext.as_str())
                .bind(f.userid.as_str())
                .bind(f.added_at)
                .bind(f.state.as_deref())
                .bind(f.remark.as_deref())
                .bind(source)
                .bind(now);
        }
        q.execute(&mut *conn).await?;
        let added: Vec<&(String, FollowUser)> = rows
            .into_iter()
            .filter(|(e, f)| !stood.contains(&(e.clone(), f.userid.clone())))
            .collect();
        added_total += added.len();
        if added.is_empty() {
            continue;
        }
        // Only customers with corp tags nurture marked have anything to
        // requeue: find them in one query, then requeue per relationship.
        let mut exts: Vec<&str> = added.iter().map(|(e, _)| e.as_str()).collect();
        exts.sort_unstable();
        exts.dedup();
        let mut sql = String::from(
            "SELECT DISTINCT c.wecom_external_userid FROM wecom_tag_marks m \
               JOIN contacts c ON c.id = m.contact_id \
              WHERE m.action = 'add' AND m.state IN ('done', 'pending') \
                AND c.wecom_external_userid IN (",
        );
        push_list(&mut sql, 1, exts.len());
        sql.push(')');
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for e in &exts {
            q = q.bind(*e);
        }
        let marked: HashSet<String> = q.fetch_all(&mut *conn).await?.into_iter().collect();
        for (ext, f) in added.into_iter().filter(|(e, _)| marked.contains(e)) {
            crate::store::wecom_marks::requeue_for_relationship(conn, ext, &f.userid, now).await?;
        }
    }
    Ok(added_total)
}

/// Records that the relationship of `userid` with `external_userid` ended
/// (`ended_by`, at `at` ms). A relationship nurture had no row for is
/// recorded as ended too: it existed.
pub async fn ended(
    conn: &mut AnyConnection,
    external_userid: &str,
    userid: &str,
    ended_by: &str,
    at: i64,
    source: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO wecom_relationships (external_userid, userid, standing, ended_by, ended_at, \
         source, updated_at) VALUES ($1, $2, 0, $3, $4, $5, $6) \
         ON CONFLICT (external_userid, userid) DO UPDATE SET standing = 0, \
           ended_by = excluded.ended_by, ended_at = excluded.ended_at, \
           source = excluded.source, updated_at = excluded.updated_at",
    )
    .bind(external_userid)
    .bind(userid)
    .bind(ended_by)
    .bind(at)
    .bind(source)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A complete `follow_user` list of `external_userid` (every page of
/// externalcontact/get): the listed relationships stand, and every other
/// standing one ended (`sync`).
pub async fn replace_all(
    conn: &mut AnyConnection,
    external_userid: &str,
    list: &[FollowUser],
    source: &str,
    now: i64,
) -> Result<(), StoreError> {
    for f in list {
        stands(conn, external_userid, f, source, now).await?;
    }
    let standing: Vec<String> = sqlx::query_scalar(
        "SELECT userid FROM wecom_relationships WHERE external_userid = $1 AND standing = 1",
    )
    .bind(external_userid)
    .fetch_all(&mut *conn)
    .await?;
    for userid in standing {
        if !list.iter().any(|f| f.userid == userid) {
            ended(
                conn,
                external_userid,
                &userid,
                ENDED_BY_SYNC,
                now,
                source,
                now,
            )
            .await?;
        }
    }
    Ok(())
}

fn from_row(r: &sqlx::any::AnyRow) -> sqlx::Result<Relationship> {
    Ok(Relationship {
        external_userid: r.try_get(0)?,
        userid: r.try_get(1)?,
        added_at: r.try_get(2)?,
        state: r.try_get(3)?,
        remark: r.try_get(4)?,
        standing: r.try_get::<i64, _>(5)? != 0,
        ended_by: r.try_get(6)?,
        ended_at: r.try_get(7)?,
    })
}

const COLUMNS: &str =
    "external_userid, userid, added_at, state, remark, standing, ended_by, ended_at";

/// Every relationship nurture knows of `external_userid`, standing ones
/// first, then the most recently added (or ended) first.
pub async fn of_customer(
    pool: &AnyPool,
    external_userid: &str,
) -> Result<Vec<Relationship>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM wecom_relationships WHERE external_userid = $1 \
         ORDER BY standing DESC, coalesce(ended_at, added_at, 0) DESC, userid"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(external_userid)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(from_row).collect::<sqlx::Result<_>>()?)
}

/// The relationships of each of `external_userids`, as [`of_customer`]
/// orders them, in chunks of 500 (the planner's batched read).
pub async fn of_customers(
    pool: &AnyPool,
    external_userids: &[String],
) -> Result<std::collections::HashMap<String, Vec<Relationship>>, StoreError> {
    let mut out: std::collections::HashMap<String, Vec<Relationship>> = Default::default();
    for chunk in external_userids.chunks(500) {
        let mut sql =
            format!("SELECT {COLUMNS} FROM wecom_relationships WHERE external_userid IN (");
        crate::store::placeholders::push_list(&mut sql, 1, chunk.len());
        sql.push_str(") ORDER BY external_userid, standing DESC, coalesce(ended_at, added_at, 0) DESC, userid");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(e);
        }
        for r in q.fetch_all(pool).await? {
            let rel = from_row(&r)?;
            out.entry(rel.external_userid.clone())
                .or_default()
                .push(rel);
        }
    }
    Ok(out)
}

/// Sets or clears `wecom_deleted_by` on the contacts of `external_userid`
/// from its rows (see the module's "Reachability").
pub async fn refresh_reachability(
    conn: &mut AnyConnection,
    dialect: Dialect,
    external_userid: &str,
    now: i64,
) -> Result<(), StoreError> {
    let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT standing, ended_by FROM wecom_relationships WHERE external_userid = $1 \
         ORDER BY standing DESC, coalesce(ended_at, 0) DESC, userid",
    )
    .bind(external_userid)
    .fetch_all(&mut *conn)
    .await?;
    let mark: Option<String> = match rows.first() {
        // No row: unknown, not ended. One standing: reachable.
        None | Some((1, _)) => None,
        Some((_, by)) => match by.as_deref() {
            Some(ENDED_BY_TRANSFER) | None => None,
            Some(ENDED_BY_SYNC) => Some(ENDED_BY_SYNC.to_string()),
            Some(other) => Some(other.to_string()),
        },
    };
    let contacts: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, attrs FROM contacts WHERE wecom_external_userid = $1{}",
        dialect.for_update()
    )))
    .bind(external_userid)
    .fetch_all(&mut *conn)
    .await?;
    for (id, attrs) in contacts {
        let mut m = serde_json::from_str::<Map<String, Value>>(&attrs).unwrap_or_default();
        let before = m.get(ATTR_DELETED_BY).cloned();
        match &mark {
            Some(by) => m.insert(ATTR_DELETED_BY.into(), Value::from(by.as_str())),
            None => m.remove(ATTR_DELETED_BY),
        };
        if m.get(ATTR_DELETED_BY) == before.as_ref() {
            continue;
        }
        sqlx::query("UPDATE contacts SET attrs = $1, updated_at = $2 WHERE id = $3")
            .bind(Value::Object(m).to_string())
            .bind(now)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Clears `wecom_deleted_by` on the contacts of `external_userids`, each of
/// which has a standing relationship (what [`refresh_reachability`] does for
/// such a customer): one locking SELECT per 500, an UPDATE per contact that
/// carried the mark.
async fn reachable_many(
    conn: &mut AnyConnection,
    dialect: Dialect,
    external_userids: &[&str],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in external_userids.chunks(500) {
        let mut sql =
            String::from("SELECT id, attrs FROM contacts WHERE wecom_external_userid IN (");
        crate::store::placeholders::push_list(&mut sql, 1, chunk.len());
        sql.push(')');
        sql.push_str(dialect.for_update());
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(*e);
        }
        for (id, attrs) in q.fetch_all(&mut *conn).await? {
            let mut m = serde_json::from_str::<Map<String, Value>>(&attrs).unwrap_or_default();
            if m.remove(ATTR_DELETED_BY).is_none() {
                continue;
            }
            sqlx::query("UPDATE contacts SET attrs = $1, updated_at = $2 WHERE id = $3")
                .bind(Value::Object(m).to_string())
                .bind(now)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A complete list read from WeCom (externalcontact/get) for
/// `external_userid`, in one transaction with the reachability mark.
pub async fn record_list(
    store: &super::Store,
    external_userid: &str,
    list: &[FollowUser],
    source: &str,
    now: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    replace_all(&mut tx, external_userid, list, source, now).await?;
    refresh_reachability(&mut tx, store.dialect(), external_userid, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Relationships listed by `batch/get_by_user` for the members asked about:
/// each listed one stands. (The answer lists only the members asked about,
/// so nothing else is ended.)
pub async fn record_batch(
    store: &super::Store,
    entries: &[(String, FollowUser)],
    now: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    stand_many(&mut tx, entries, "batch", now).await?;
    let mut seen: Vec<&str> = entries.iter().map(|(e, _)| e.as_str()).collect();
    seen.sort_unstable();
    seen.dedup();
    // Each listed customer now has a standing relationship: reachable, so
    // `refresh_reachability` would only clear the mark. Done set-based.
    reachable_many(&mut tx, store.dialect(), &seen, now).await?;
    tx.commit().await?;
    Ok(())
}

/// WeCom reported a transfer done (`transfer_result` status 1): the
/// takeover member is a follow-user from `at` (ms), the handover member's
/// relationship ended by the transfer.
pub async fn transfer_done(
    pool: &AnyPool,
    dialect: Dialect,
    external_userid: &str,
    handover: &str,
    takeover: &str,
    at: i64,
    now: i64,
) -> Result<(), StoreError> {
    let mut tx = crate::store::begin(pool, dialect).await?;
    ended(
        &mut tx,
        external_userid,
        handover,
        ENDED_BY_TRANSFER,
        at,
        "transfer",
        now,
    )
    .await?;
    let f = FollowUser {
        userid: takeover.to_string(),
        added_at: Some(at),
        state: None,
        remark: None,
    };
    stands(&mut tx, external_userid, &f, "transfer", now).await?;
    refresh_reachability(&mut tx, dialect, external_userid, now).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests;
