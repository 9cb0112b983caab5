//! What `nurture status` and `nurture history` read, and the one thing the
//! daemon writes for them: the loaded-or-broken state of each file
//! (`file_states`, migrations 0002 and 0011).
//!
//! Reads only, apart from [`record_file_states`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{AnyPool, Row as _};

use super::states::MessageKind;
use super::{from_ms, to_ms};

// ---------------------------------------------------------------------------
// Counts per workflow.

/// Counts of one workflow's enrollments and messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkflowCounts {
    pub workflow: String,
    /// Every enrollment, whatever its status.
    pub enrolled: i64,
    /// Enrollments still running (including `waiting` ones).
    pub active: i64,
    /// Active enrollments whose next step is due later than `now`.
    pub waiting: i64,
    /// Enrollments that ran to the end.
    pub done: i64,
    /// Enrollments that left early (audience, goal, ...).
    pub exited: i64,
    /// Messages to contacts the provider accepted (notices to salespeople
    /// are counted apart, in `notices`).
    pub sent: i64,
    /// Assignment notices to salespeople the provider accepted.
    pub notices: i64,
    /// Messages to contacts held by quiet hours (not yet due).
    pub deferred: i64,
    /// When the first and the last of them may go out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_from: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<DateTime<Utc>>,
    /// Messages dead-lettered (retries exhausted or a permanent error).
    pub failed: i64,
    /// Messages waiting to be delivered (queued, also for a retry, or sending).
    pub queued: i64,
    /// Messages cancelled before delivery.
    pub cancelled: i64,
    /// Steps skipped at run time, by reason code (`template_error`,
    /// `no_address`, `frequency_cap`, `unsubscribed`, `team_full`, ...).
    pub skipped: BTreeMap<String, i64>,
    /// Messages cancelled before delivery, by reason (`unsubscribed`,
    /// `contact_deleted`).
    pub cancelled_by_reason: BTreeMap<String, i64>,
    /// Messages dead-lettered, by reason (`permanent_error`,
    /// `retries_exhausted`, `opted_out`); `history` has each one's error.
    pub failed_by_reason: BTreeMap<String, i64>,
}

/// Counts for every workflow that has enrollments or messages, by name.
pub async fn workflow_counts(
    pool: &AnyPool,
    now: DateTime<Utc>,
) -> sqlx::Result<BTreeMap<String, WorkflowCounts>> {
    let mut out: BTreeMap<String, WorkflowCounts> = BTreeMap::new();
    let rows = sqlx::query(
        "SELECT workflow, count(*), \
                count(*) FILTER (WHERE status = 'active'), \
                count(*) FILTER (WHERE status = 'active' AND next_run_at > $1), \
                count(*) FILTER (WHERE status = 'done'), \
                count(*) FILTER (WHERE status = 'exited') \
           FROM enrollments GROUP BY workflow",
    )
    .bind(to_ms(now))
    .fetch_all(pool)
    .await?;
    for r in rows {
        let name: String = r.try_get(0)?;
        let c = out.entry(name.clone()).or_insert_with(|| WorkflowCounts {
            workflow: name,
            ..Default::default()
        });
        c.enrolled = r.try_get(1)?;
        c.active = r.try_get(2)?;
        c.waiting = r.try_get(3)?;
        c.done = r.try_get(4)?;
        c.exited = r.try_get(5)?;
    }
    let rows = sqlx::query(
        "SELECT workflow, \
                count(*) FILTER (WHERE status = 'sent' AND kind <> 'notice'), \
                count(*) FILTER (WHERE status = 'dead'), \
                count(*) FILTER (WHERE status IN ('queued', 'sending')), \
                count(*) FILTER (WHERE status = 'cancelled'), \
                count(*) FILTER (WHERE status = 'sent' AND kind = 'notice'), \
                count(*) FILTER (WHERE status = 'queued' AND attempts = 0 AND not_before > $1 \
                                   AND not_before > created_at), \
                min(CASE WHEN status = 'queued' AND attempts = 0 AND not_before > $1 \
                          AND not_before > created_at THEN not_before END), \
                max(CASE WHEN status = 'queued' AND attempts = 0 AND not_before > $1 \
                          AND not_before > created_at THEN not_before END) \
           FROM outbox GROUP BY workflow",
    )
    .bind(to_ms(now))
    .fetch_all(pool)
    .await?;
    for r in rows {
        let name: String = r.try_get(0)?;
        let c = out.entry(name.clone()).or_insert_with(|| WorkflowCounts {
            workflow: name,
            ..Default::default()
        });
        c.sent = r.try_get(1)?;
        c.failed = r.try_get(2)?;
        c.queued = r.try_get(3)?;
        c.cancelled = r.try_get(4)?;
        c.notices = r.try_get(5)?;
        c.deferred = r.try_get(6)?;
        c.deferred_from = r.try_get::<Option<i64>, _>(7)?.map(from_ms);
        c.deferred_until = r.try_get::<Option<i64>, _>(8)?.map(from_ms);
    }
    fn entry(out: &mut BTreeMap<String, WorkflowCounts>, name: String) -> &mut WorkflowCounts {
        out.entry(name.clone()).or_insert_with(|| WorkflowCounts {
            workflow: name,
            ..Default::default()
        })
    }
    // Skips: the reason's code is the detail up to its first colon
    // (`template_error: missing variable ...`).
    let rows = sqlx::query(
        "SELECT e.workflow, s.detail, count(*) \
           FROM enrollment_steps s JOIN enrollments e ON e.id = s.enrollment_id \
          WHERE s.action = 'skip' GROUP BY e.workflow, s.detail",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        let name: String = r.try_get(0)?;
        let detail: Option<String> = r.try_get(1)?;
        let n: i64 = r.try_get(2)?;
        let code = skip_code(detail.as_deref()).to_string();
        *entry(&mut out, name).skipped.entry(code).or_insert(0) += n;
    }
    let rows = sqlx::query(
        "SELECT workflow, status, last_error, count(*) FROM outbox \
          WHERE status IN ('dead', 'cancelled') GROUP BY workflow, status, last_error",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        let name: String = r.try_get(0)?;
        let status: String = r.try_get(1)?;
        let error: Option<String> = r.try_get(2)?;
        let n: i64 = r.try_get(3)?;
        let error = error.unwrap_or_default();
        let c = entry(&mut out, name);
        if status == "dead" {
            *c.failed_by_reason
                .entry(super::outbox::dead_reason(&error).to_string())
                .or_insert(0) += n;
        } else {
            let reason = cancel_reason(Some(&error)).to_string();
            *c.cancelled_by_reason.entry(reason).or_insert(0) += n;
        }
    }
    // What `nurture prune` deleted still counts.
    super::prune::add_pruned(pool, &mut out).await?;
    Ok(out)
}

/// A skip's reason code: its detail up to the first colon
/// (`template_error: missing variable ...`), `unknown` without one.
pub(crate) fn skip_code(detail: Option<&str>) -> &str {
    detail
        .and_then(|d| d.split(':').next())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown")
}

/// A cancelled message's reason: its last error (`unsubscribed`,
/// `contact_deleted`), `unknown` without one.
pub(crate) fn cancel_reason(error: Option<&str>) -> &str {
    error.filter(|e| !e.is_empty()).unwrap_or("unknown")
}

/// Messages waiting in the outbox, all workflows together (the
/// `nurture_outbox_queue_depth` gauge).
pub async fn outbox_queue_depth(pool: &AnyPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')")
        .fetch_one(pool)
        .await
}

// ---------------------------------------------------------------------------
// File states.

/// The state of one file as the daemon last loaded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileState {
    pub file: String,
    /// `loaded` (the file on disk is the version running) or `broken` (the
    /// daemon rejected the file's latest edit and keeps running its last
    /// valid version, if it ever had one).
    pub state: String,
    /// The rejected edit's problems, one `FILE:LINE:COLUMN: message` per
    /// line; empty when loaded.
    pub diagnostics: String,
    pub updated_at: DateTime<Utc>,
    /// The version running: the first 12 hex digits of the SHA-256 of the
    /// file's bytes. `None` when no version of the file ever loaded.
    pub running_hash: Option<String>,
    /// When the daemon loaded the running version.
    pub loaded_at: Option<DateTime<Utc>>,
    /// The rejected newer edit (same hash), when there is one.
    pub rejected_hash: Option<String>,
    /// When the daemon first saw the rejected edit.
    pub rejected_at: Option<DateTime<Utc>>,
}

impl FileState {
    /// A file as recorded now: `loaded` unless an edit was rejected.
    pub fn new(file: impl Into<String>) -> FileState {
        FileState {
            file: file.into(),
            state: "loaded".into(),
            diagnostics: String::new(),
            updated_at: Utc::now(),
            running_hash: None,
            loaded_at: None,
            rejected_hash: None,
            rejected_at: None,
        }
    }
}

/// Replaces the recorded file states with `files` (their `updated_at` is
/// ignored: now is written). The daemon calls this after every (re)load with
/// every settings, workflow and template file it looked at; files not in the
/// list are forgotten.
pub async fn record_file_states(
    pool: &AnyPool,
    dialect: super::Dialect,
    files: &[FileState],
) -> sqlx::Result<()> {
    let now = to_ms(Utc::now());
    let mut tx = super::begin(pool, dialect).await?;
    sqlx::query("DELETE FROM file_states")
        .execute(&mut *tx)
        .await?;
    for f in files {
        sqlx::query(
            "INSERT INTO file_states (file, state, diagnostics, updated_at, running_hash, loaded_at, \
                                      rejected_hash, rejected_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (file) DO UPDATE SET state = excluded.state, \
             diagnostics = excluded.diagnostics, updated_at = excluded.updated_at, \
             running_hash = excluded.running_hash, loaded_at = excluded.loaded_at, \
             rejected_hash = excluded.rejected_hash, rejected_at = excluded.rejected_at",
        )
        .bind(&f.file)
        .bind(&f.state)
        .bind(&f.diagnostics)
        .bind(now)
        .bind(f.running_hash.as_deref())
        .bind(f.loaded_at.map(to_ms))
        .bind(f.rejected_hash.as_deref())
        .bind(f.rejected_at.map(to_ms))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Every recorded file state, by file name.
pub async fn file_states(pool: &AnyPool) -> sqlx::Result<Vec<FileState>> {
    let rows = sqlx::query(
        "SELECT file, state, diagnostics, updated_at, running_hash, loaded_at, rejected_hash, \
                rejected_at \
           FROM file_states ORDER BY file",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(FileState {
                file: r.try_get(0)?,
                state: r.try_get(1)?,
                diagnostics: r.try_get(2)?,
                updated_at: from_ms(r.try_get(3)?),
                running_hash: r.try_get(4)?,
                loaded_at: r.try_get::<Option<i64>, _>(5)?.map(from_ms),
                rejected_hash: r.try_get(6)?,
                rejected_at: r.try_get::<Option<i64>, _>(7)?.map(from_ms),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// One contact's history.

/// One thing that happened to a contact. `kind` is one of
/// `contact_created`, `tag_added`, `tag_removed`, `event`,
/// `enrollment_started`, `enrollment_ended`, `step`, `message_queued`,
/// `message_sent`, `message_dead`, `message_cancelled`, `unsubscribed`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    #[serde(skip)]
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<i64>,
    /// The tag, the event's name, or the step id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An event's properties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
    /// A step's action (`send`, `assign`, `tag`, `wait`, `exit`, `skip`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// A step's detail, an enrollment's end reason, a message's last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// An enrollment's status when it ended (`done`, `exited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// A notice to a salesperson (not a message to the contact).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub notice: bool,
    /// A WeCom transfer an `assign` queued (not a message to the contact).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
    /// A message held by quiet hours: when it may go out.
    #[serde(skip)]
    pub deferred_until: Option<DateTime<Utc>>,
    /// Tie-break within one millisecond: the order things happen in.
    #[serde(skip)]
    order: (u8, i64),
}

impl HistoryEntry {
    fn new(at: i64, kind: &'static str, rank: u8, seq: i64) -> HistoryEntry {
        HistoryEntry {
            at: from_ms(at),
            kind,
            workflow: None,
            enrollment_id: None,
            name: None,
            properties: None,
            action: None,
            detail: None,
            status: None,
            message_id: None,
            channel: None,
            to: None,
            subject: None,
            body: None,
            provider_id: None,
            attempts: None,
            notice: false,
            transfer: false,
            deferred_until: None,
            order: (rank, seq),
        }
    }
}

/// Everything recorded about contact `id`, oldest first: the event log
/// (created, tags, events), enrollments started and ended, steps run, and
/// messages queued, sent, dead-lettered or cancelled. Messages that ended
/// without being sent have no time of their own in the outbox: they are put
/// at their last attempt time (`next_attempt_at`).
pub async fn contact_history(pool: &AnyPool, id: &str) -> sqlx::Result<Vec<HistoryEntry>> {
    let mut out = Vec::new();

    let rows = sqlx::query(
        "SELECT l.seq, l.kind, l.name, l.at, e.properties, e.at \
           FROM event_log l LEFT JOIN events e ON e.id = l.event_id \
          WHERE l.contact_id = $1 ORDER BY l.seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let seq: i64 = r.try_get(0)?;
        let kind: String = r.try_get(1)?;
        let at: i64 = r
            .try_get::<Option<i64>, _>(5)?
            .unwrap_or(r.try_get::<i64, _>(3)?);
        let (kind, rank) = match kind.as_str() {
            "contact_created" => ("contact_created", 0),
            "tag_added" => ("tag_added", 1),
            "tag_removed" => ("tag_removed", 1),
            "event" => ("event", 2),
            _ => ("log", 2),
        };
        let mut e = HistoryEntry::new(at, kind, rank, seq);
        e.name = r.try_get(2)?;
        if kind == "event" {
            let props: Option<String> = r.try_get(4)?;
            e.properties = props
                .and_then(|p| serde_json::from_str(&p).ok())
                .filter(|v: &serde_json::Value| v.as_object().is_some_and(|m| !m.is_empty()));
        }
        out.push(e);
    }

    let rows = sqlx::query(
        "SELECT id, workflow, entry_key, status, started_at, ended_at, end_reason \
           FROM enrollments WHERE contact_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let eid: i64 = r.try_get(0)?;
        let workflow: String = r.try_get(1)?;
        let mut s = HistoryEntry::new(r.try_get(4)?, "enrollment_started", 3, eid);
        s.workflow = Some(workflow.clone());
        s.enrollment_id = Some(eid);
        s.detail = Some(format!("entry {}", r.try_get::<String, _>(2)?));
        out.push(s);
        if let Some(ended) = r.try_get::<Option<i64>, _>(5)? {
            let mut e = HistoryEntry::new(ended, "enrollment_ended", 7, eid);
            e.workflow = Some(workflow);
            e.enrollment_id = Some(eid);
            e.status = Some(r.try_get(3)?);
            e.detail = r.try_get(6)?;
            out.push(e);
        }
    }

    let rows = sqlx::query(
        "SELECT s.enrollment_id, e.workflow, s.step_id, s.ran_at, s.action, s.detail \
           FROM enrollment_steps s JOIN enrollments e ON e.id = s.enrollment_id \
          WHERE e.contact_id = $1 ORDER BY s.ran_at, s.rowid",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for (i, r) in rows.into_iter().enumerate() {
        let mut e = HistoryEntry::new(r.try_get(3)?, "step", 4, i as i64);
        e.enrollment_id = Some(r.try_get(0)?);
        e.workflow = Some(r.try_get(1)?);
        e.name = Some(r.try_get(2)?);
        e.action = Some(r.try_get(4)?);
        e.detail = r.try_get(5)?;
        out.push(e);
    }

    let rows = sqlx::query(
        "SELECT id, workflow, enrollment_id, step_id, channel, recipient, subject, body, status, \
                attempts, next_attempt_at, created_at, sent_at, provider_id, \
                -- A WeCom task still waiting for its outcome: who sent it and
                -- why (a mass message from a follow-user who is not the owner).
                coalesce(last_error, (SELECT t.detail FROM wecom_tasks t \
                                       WHERE t.message_id = outbox.id AND t.status = 'pending')), \
                rowid, not_before, kind \
           FROM outbox WHERE contact_id = $1 ORDER BY created_at, rowid",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let rowid: i64 = r.try_get(15)?;
        let status: String = r.try_get(8)?;
        let created: i64 = r.try_get(11)?;
        let not_before: i64 = r.try_get(16)?;
        let message_kind = r.try_get::<MessageKind, _>(17)?;
        let notice = message_kind == MessageKind::Notice;
        let transfer = message_kind == MessageKind::Transfer;
        let base = |at: i64, kind: &'static str, rank: u8| -> sqlx::Result<HistoryEntry> {
            let mut e = HistoryEntry::new(at, kind, rank, rowid);
            e.message_id = Some(r.try_get(0)?);
            e.workflow = Some(r.try_get(1)?);
            e.enrollment_id = r.try_get(2)?;
            e.name = Some(r.try_get(3)?);
            e.channel = Some(r.try_get(4)?);
            e.to = Some(r.try_get(5)?);
            e.notice = notice;
            e.transfer = transfer;
            Ok(e)
        };
        let mut q = base(r.try_get(11)?, "message_queued", 5)?;
        q.subject = r.try_get(6)?;
        q.body = Some(r.try_get(7)?);
        if not_before > created {
            q.deferred_until = Some(from_ms(not_before));
        }
        out.push(q);
        let attempts: i64 = r.try_get(9)?;
        let last_at: i64 = r.try_get(10)?;
        let sent_at: Option<i64> = r.try_get(12)?;
        match status.as_str() {
            "sent" => {
                let mut e = base(sent_at.unwrap_or(last_at), "message_sent", 6)?;
                e.provider_id = r.try_get(13)?;
                e.attempts = Some(attempts);
                // A provider's later word on a sent message (WeCom: whether
                // the customer got the mass message, how a transfer ended).
                e.detail = r.try_get(14)?;
                out.push(e);
            }
            "dead" => {
                let mut e = base(sent_at.unwrap_or(last_at), "message_dead", 6)?;
                e.detail = r.try_get(14)?;
                e.attempts = Some(attempts);
                out.push(e);
            }
            "cancelled" => {
                // Never before its queued line (clocks of two machines, or
                // a message created ahead of the cancelling command's now).
                let at = sent_at.unwrap_or(last_at).max(created);
                let mut e = base(at, "message_cancelled", 6)?;
                e.detail = r.try_get(14)?;
                out.push(e);
            }
            _ => {
                // Still on its way: say so on the queued line.
                if let Some(last) = out.last_mut() {
                    last.status = Some(status.clone());
                    last.attempts = Some(attempts);
                    last.detail = r.try_get(14)?;
                }
            }
        }
    }

    // Unsubscribes: from one channel (contact_opt_outs), or from every
    // channel (contacts.unsubscribed_at; unknown when an import set it).
    let rows = sqlx::query("SELECT channel, at FROM contact_opt_outs WHERE contact_id = $1")
        .bind(id)
        .fetch_all(pool)
        .await?;
    for (i, r) in rows.into_iter().enumerate() {
        let mut e = HistoryEntry::new(r.try_get(1)?, "unsubscribed", 2, i as i64);
        e.channel = Some(r.try_get(0)?);
        out.push(e);
    }
    let row =
        sqlx::query("SELECT unsubscribed, unsubscribed_at, updated_at FROM contacts WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    if let Some(r) = row
        && r.try_get::<i64, _>(0)? != 0
    {
        let at: Option<i64> = r.try_get(1)?;
        let mut e = HistoryEntry::new(
            at.unwrap_or(r.try_get::<i64, _>(2)?),
            "unsubscribed",
            2,
            i64::MAX,
        );
        if at.is_none() {
            e.detail = Some("time not recorded: set by an import or an upsert; shown at the contact's last change".into());
        }
        out.push(e);
    }

    out.sort_by_key(|a| (a.at, a.order));
    Ok(out)
}

/// Whether contact `id` exists.
pub async fn contact_exists(pool: &AnyPool, id: &str) -> sqlx::Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

#[cfg(test)]
mod tests;
