//! What the planner reads from the store besides contacts: the event log,
//! enrollments, recent messages and assignment counters. Reads only: the
//! dry-run uses all of these and must change nothing.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use sqlx::{AnyPool, Row};

use crate::assign::AssignState;
use crate::contact::EventFact;
use crate::store::placeholders::push_list;

/// The daemon's event-log consumer; the dry-run reads its position.
pub const DAEMON_CURSOR: &str = "daemon";

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

/// A stored properties object (`'{}'` is the common case and costs no parse).
pub fn parse_props(s: Option<&str>) -> serde_json::Map<String, serde_json::Value> {
    match s {
        None | Some("{}") | Some("") => serde_json::Map::new(),
        Some(s) => serde_json::from_str(s).unwrap_or_default(),
    }
}

/// An entry of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: i64,
    pub kind: String,
    pub contact_id: String,
    pub name: Option<String>,
    pub at: DateTime<Utc>,
    /// `Some("import")` for rows a CSV import wrote.
    pub origin: Option<String>,
    /// The event's properties, for `kind = event`.
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl LogEntry {
    /// The entry as the event that starts an enrollment.
    pub fn trigger_event(&self) -> crate::contact::TriggerEvent {
        let mut properties = self.properties.clone();
        let name = match self.kind.as_str() {
            "event" => self.name.clone().unwrap_or_default(),
            "tag_added" | "tag_removed" => {
                if let Some(t) = &self.name {
                    properties.insert("tag".into(), serde_json::Value::String(t.clone()));
                }
                self.kind.clone()
            }
            other => other.to_string(),
        };
        crate::contact::TriggerEvent {
            name,
            at: self.at,
            properties,
        }
    }
}

/// An enrollment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentRow {
    pub id: i64,
    pub workflow: String,
    pub contact_id: String,
    pub entry_key: String,
    pub status: crate::store::states::EnrollmentStatus,
    pub step_id: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    /// The event that started it, when one did.
    pub trigger: Option<crate::contact::TriggerEvent>,
    /// Waiting at a `wait_until` step since then.
    pub wait_since: Option<DateTime<Utc>>,
}

pub(in crate::store) async fn cursor<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    name: &str,
) -> sqlx::Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT position FROM cursors WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(v.unwrap_or(0))
}

/// Log entries after `after`, oldest first, at most `limit`.
pub(in crate::store) async fn pending_log<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<LogEntry>> {
    let rows = sqlx::query(
        "SELECT l.seq, l.kind, l.contact_id, l.name, l.at, l.origin, ev.properties \
         FROM event_log l LEFT JOIN events ev ON ev.id = l.event_id \
         WHERE l.seq > $1 ORDER BY l.seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LogEntry {
            seq: r.get(0),
            kind: r.get(1),
            contact_id: r.get(2),
            name: r.get(3),
            at: from_ms(r.get(4)),
            origin: r.get(5),
            properties: parse_props(r.get::<Option<String>, _>(6).as_deref()),
        })
        .collect())
}

fn enrollment(r: sqlx::any::AnyRow) -> EnrollmentRow {
    EnrollmentRow {
        id: r.get(0),
        workflow: r.get(1),
        contact_id: r.get(2),
        entry_key: r.get(3),
        status: r.get(4),
        step_id: r.get(5),
        next_run_at: r.get::<Option<i64>, _>(6).map(from_ms),
        started_at: from_ms(r.get(7)),
        trigger: r
            .get::<Option<String>, _>(8)
            .as_deref()
            .and_then(crate::contact::TriggerEvent::from_json),
        wait_since: r.get::<Option<i64>, _>(9).map(from_ms),
    }
}

const ENROLLMENT_COLS: &str = "id, workflow, contact_id, entry_key, status, step_id, next_run_at, started_at, trigger_event, wait_since";

/// Active enrollments whose next step is due at `at`, oldest due first.
pub(in crate::store) async fn due_enrollments(
    pool: &AnyPool,
    at: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<EnrollmentRow>> {
    let sql = format!(
        "SELECT {ENROLLMENT_COLS} FROM enrollments WHERE status = 'active' AND next_run_at <= $1 ORDER BY next_run_at, id LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(ms(at))
        .bind(limit)
        .fetch(pool)
        .map_ok(enrollment)
        .try_collect()
        .await?;
    Ok(rows)
}

/// Claims up to `limit` due active enrollments for `worker` until
/// `lease_until`, skipping rows another worker holds an unexpired lease on
/// (and, on PostgreSQL, rows another daemon is claiming right now: `SKIP
/// LOCKED`). Applying a plan clears the lease; a daemon that dies leaves
/// its claims to the others when the lease expires. Oldest due first.
pub(in crate::store) async fn claim_due_enrollments(
    pool: &AnyPool,
    dialect: crate::store::Dialect,
    worker: &str,
    at: DateTime<Utc>,
    lease_until: i64,
    limit: i64,
) -> sqlx::Result<Vec<EnrollmentRow>> {
    let sql = crate::store::claim::Claim {
        table: "enrollments",
        key: "id",
        lease: "lease_owner = $1, lease_until = $2",
        due: "status = 'active' AND next_run_at <= $3 AND (lease_until IS NULL OR lease_until < $3)",
        order: "next_run_at, id",
        limit: "$4",
        returning: ENROLLMENT_COLS,
    }
    .sql(dialect);
    let mut rows: Vec<EnrollmentRow> = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(worker)
        .bind(lease_until)
        .bind(ms(at))
        .bind(limit)
        .fetch(pool)
        .map_ok(enrollment)
        .try_collect()
        .await?;
    // RETURNING gives no order.
    rows.sort_by_key(|e| (e.next_run_at, e.id));
    Ok(rows)
}

/// Per throttled workflow, when its latest message (of a send step) is due
/// to go out: where the planner's spacing continues from. A cancelled
/// message (its contact unsubscribed while it waited) goes out never, so
/// it is not the workflow's last: when the latest one is cancelled, the
/// next message takes its slot; and pruning it (`nurture prune` deletes
/// cancelled messages) changes nothing.
pub(in crate::store) async fn throttle_state(
    pool: &AnyPool,
    workflows: &[&crate::workflow::Workflow],
) -> sqlx::Result<HashMap<String, DateTime<Utc>>> {
    let mut out = HashMap::new();
    for wf in workflows.iter().filter(|w| w.throttle.is_some()) {
        let sends: Vec<String> = wf
            .all_steps()
            .iter()
            .filter(|s| matches!(s.action, crate::workflow::StepAction::Send(_)))
            .map(|s| s.id.clone())
            .collect();
        if sends.is_empty() {
            continue;
        }
        let mut sql = String::from(
            "SELECT max(not_before) FROM outbox WHERE workflow = $1 AND status <> 'cancelled' AND id NOT LIKE '%:notify' AND id NOT LIKE '%:transfer' AND step_id IN (",
        );
        push_list(&mut sql, 2, sends.len());
        sql.push(')');
        let mut q = sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(sql)).bind(&wf.name);
        for s in &sends {
            q = q.bind(s);
        }
        if let Some(t) = q.fetch_one(pool).await? {
            out.insert(wf.name.clone(), from_ms(t));
        }
    }
    Ok(out)
}

/// Every enrollment of a contact (all workflows), oldest first.
pub(in crate::store) async fn enrollments_of(
    pool: &AnyPool,
    contact_id: &str,
) -> sqlx::Result<Vec<EnrollmentRow>> {
    let sql = format!(
        "SELECT {ENROLLMENT_COLS} FROM enrollments WHERE contact_id = $1 ORDER BY started_at, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(contact_id)
        .fetch(pool)
        .map_ok(enrollment)
        .try_collect()
        .await?;
    Ok(rows)
}

/// Every enrollment of each of the given contacts, by contact.
pub(in crate::store) async fn enrollments_of_many(
    pool: &AnyPool,
    contact_ids: &[String],
) -> sqlx::Result<HashMap<String, Vec<EnrollmentRow>>> {
    let mut out: HashMap<String, Vec<EnrollmentRow>> = HashMap::new();
    for chunk in contact_ids.chunks(500) {
        let mut sql = format!("SELECT {ENROLLMENT_COLS} FROM enrollments WHERE contact_id IN (");
        push_list(&mut sql, 1, chunk.len());
        sql.push_str(") ORDER BY started_at, id");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(pool).await? {
            let e = enrollment(r);
            out.entry(e.contact_id.clone()).or_default().push(e);
        }
    }
    Ok(out)
}

/// Events named `names` of the given contacts, grouped by contact.
pub(in crate::store) async fn events_of(
    pool: &AnyPool,
    contact_ids: &[String],
    names: &[String],
) -> sqlx::Result<HashMap<String, Vec<EventFact>>> {
    let mut out: HashMap<String, Vec<EventFact>> = HashMap::new();
    if contact_ids.is_empty() || names.is_empty() {
        return Ok(out);
    }
    // Chunks keep us well below SQLite's limit on bound variables.
    for chunk in contact_ids.chunks(500) {
        let mut sql = String::from(
            "SELECT contact_id, name, at, properties FROM events WHERE contact_id IN (",
        );
        push_list(&mut sql, 1, chunk.len());
        sql.push_str(") AND name IN (");
        push_list(&mut sql, chunk.len() + 1, names.len());
        sql.push(')');
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for id in chunk {
            q = q.bind(id);
        }
        for n in names {
            q = q.bind(n);
        }
        let rows = q.fetch_all(pool).await?;
        for r in rows {
            let id: String = r.get(0);
            let props: Option<String> = r.get(3);
            out.entry(id).or_default().push(EventFact {
                name: r.get(1),
                at: from_ms(r.get(2)),
                properties: parse_props(props.as_deref()),
            });
        }
    }
    Ok(out)
}

/// Messages queued or sent to each contact since `since` (for the frequency cap).
/// Notices to salespeople and WeCom transfers (outbox `payload` kinds) are
/// not messages to the contact and do not count.
pub(in crate::store) async fn recent_messages(
    pool: &AnyPool,
    contact_ids: &[String],
    since: DateTime<Utc>,
) -> sqlx::Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    for chunk in contact_ids.chunks(500) {
        let mut sql = String::from("SELECT contact_id, count(*) FROM outbox WHERE contact_id IN (");
        push_list(&mut sql, 1, chunk.len());
        sql.push_str(&format!(
            ") AND created_at > ${} AND status NOT IN ('cancelled', 'dead') \
             AND kind = 'message' \
             GROUP BY contact_id",
            chunk.len() + 1
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for id in chunk {
            q = q.bind(id);
        }
        let rows = q.bind(ms(since)).fetch_all(pool).await?;
        for r in rows {
            let n: i64 = r.get(1);
            out.insert(r.get::<String, _>(0), u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    Ok(out)
}

/// Round-robin positions and open contacts per salesperson.
pub(in crate::store) async fn assign_state(pool: &AnyPool) -> sqlx::Result<AssignState> {
    let mut st = AssignState::default();
    for r in sqlx::query("SELECT team, next_index FROM team_cursors")
        .fetch_all(pool)
        .await?
    {
        st.team_cursor.insert(r.get(0), r.get(1));
    }
    for r in sqlx::query("SELECT salesperson_id, open_contacts FROM salesperson_load")
        .fetch_all(pool)
        .await?
    {
        st.load.insert(r.get(0), r.get(1));
    }
    Ok(st)
}

/// What the store says about one customer, for a transfer decision (read
/// in batches by [`transfer_facts`]; decided on by `engine::transfer`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransferFacts {
    /// Its WeCom relationships (who can hand it over, who already stands).
    pub relationships: Vec<crate::store::wecom::relationships::Relationship>,
    /// Its transfers in the last 90 days: (started ms, still waiting for
    /// the takeover), oldest first. A transfer queued and not yet started
    /// counts from its `not_before`, waiting.
    pub started: Vec<(i64, bool)>,
    /// The member who left it, if any.
    pub resigned: Option<crate::store::wecom::resigned::Resigned>,
}

/// What the planner needs to decide WeCom transfers of these customers
/// (`engine::transfer`): their relationships, their transfers since
/// `since_ms` (started by WeCom, either kind, or queued in the outbox and not
/// started yet, counted from their `not_before` as waiting), and the member
/// who left each, if any. A few queries per 500 customers.
pub(in crate::store) async fn transfer_facts(
    pool: &AnyPool,
    external_userids: &[String],
    since_ms: i64,
) -> Result<HashMap<String, TransferFacts>, crate::store::StoreError> {
    let mut out: HashMap<String, TransferFacts> = HashMap::new();
    if external_userids.is_empty() {
        return Ok(out);
    }
    for (ext, rels) in
        crate::store::wecom::relationships::of_customers(pool, external_userids).await?
    {
        out.entry(ext).or_default().relationships = rels;
    }
    for chunk in external_userids.chunks(500) {
        let n = chunk.len();
        let mut ids = String::new();
        push_list(&mut ids, 1, n);
        // Started by WeCom: `wecom_tasks`; a transfer WeCom has no record
        // of does not count. Queued: the outbox rows whose task is not
        // recorded yet (a row being delivered is counted once).
        let sql = format!(
            "SELECT external_userid, created_at, CAST(CASE WHEN status = 'pending' THEN 1 ELSE 0 END AS BIGINT) FROM wecom_tasks
              WHERE external_userid IN ({ids}) AND kind IN ('transfer', 'resigned')
                AND status <> 'no_record' AND created_at > ${}
             UNION ALL
             SELECT o.recipient, o.not_before, CAST(1 AS BIGINT) FROM outbox o
              WHERE o.recipient IN ({ids}) AND o.kind = 'transfer'
                AND o.status IN ('queued', 'sending')
                AND NOT EXISTS (SELECT 1 FROM wecom_tasks t WHERE t.message_id = o.id)",
            n + 1
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(e);
        }
        for r in q.bind(since_ms).fetch_all(pool).await? {
            let waiting: i64 = r.try_get(2)?;
            out.entry(r.try_get(0)?)
                .or_default()
                .started
                .push((r.try_get(1)?, waiting == 1));
        }
        let sql = format!(
            "SELECT external_userid, handover_userid, dimission_time FROM wecom_unassigned
              WHERE external_userid IN ({ids})
              ORDER BY external_userid, coalesce(dimission_time, 0) DESC, handover_userid"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(e);
        }
        for r in q.fetch_all(pool).await? {
            let f = out.entry(r.try_get(0)?).or_default();
            // The most recent leaver, as `resigned_handover` reads it.
            if f.resigned.is_none() {
                f.resigned = Some(crate::store::wecom::resigned::Resigned {
                    handover_userid: r.try_get(1)?,
                    dimission_ms: r.try_get(2)?,
                });
            }
        }
    }
    for f in out.values_mut() {
        f.started.sort();
    }
    Ok(out)
}
