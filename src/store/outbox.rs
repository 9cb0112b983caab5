//! The outbox: the delivery worker's claims, leases and outcomes, the
//! messages a plan queues, and operator actions.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Row};

use super::{Dialect, Store, StoreError, to_ms};

/// How an adapter's permanent reason starts when the provider reports that
/// the recipient opted out of the channel (kept in `outbox.last_error`).
pub const OPTED_OUT: &str = "opted_out:";

/// The class of a dead letter's stored error, for metrics labels and
/// `status`: `opted_out` (the provider says the recipient opted out),
/// `retries_exhausted`, or `permanent_error`.
pub fn dead_reason(error: &str) -> &'static str {
    if error.starts_with(OPTED_OUT) {
        "opted_out"
    } else if error.starts_with("gave up after ") {
        "retries_exhausted"
    } else {
        "permanent_error"
    }
}

/// Which dead letters to bring back.
#[derive(Debug, Clone, Default)]
pub struct RequeueFilter {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only messages dead-lettered at or after this time (messages dead
    /// before this version of nurture recorded it count from their creation).
    pub since: Option<DateTime<Utc>>,
}

impl Store {
    /// Puts dead-lettered messages back in the queue, due `now`, with their
    /// attempts and retry clock reset: after a provider outage or a fixed
    /// credential. The same message id (idempotency key) is sent. Consent is
    /// checked again before each send, so an opted-out contact is not
    /// messaged. Returns how many were requeued.
    pub async fn requeue_dead(
        &self,
        filter: &RequeueFilter,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut sql = String::from(
            "UPDATE outbox SET status = 'queued', attempts = 0, first_failed_at = NULL,
                    dead_at = NULL, next_attempt_at = $1,
                    last_error = 'requeued after: ' || coalesce(last_error, '')
              WHERE status = 'dead'",
        );
        let mut n = 1;
        if filter.channel.is_some() {
            n += 1;
            sql.push_str(&format!(" AND channel = ${n}"));
        }
        if filter.since.is_some() {
            n += 1;
            sql.push_str(&format!(" AND coalesce(dead_at, created_at) >= ${n}"));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(to_ms(now));
        if let Some(c) = &filter.channel {
            q = q.bind(c.as_str());
        }
        if let Some(t) = filter.since {
            q = q.bind(to_ms(t));
        }
        Ok(q.execute(self.db()).await?.rows_affected())
    }
}

// ---------------------------------------------------------------------------
// The delivery worker's queries (channels/delivery.rs decides; these write).

/// A claimed outbox row.
#[derive(Debug)]
pub struct Claimed {
    pub id: String,
    pub workflow: String,
    pub contact_id: String,
    pub step_id: String,
    pub channel: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub attempts: u32,
    pub created_at: i64,
    /// When it was due (its `next_attempt_at`).
    pub due_at: i64,
    /// The outbox `payload` column, JSON text.
    pub payload: String,
    /// When the message first failed with an error worth retrying.
    pub first_failed_at: Option<i64>,
    /// Reclaimed after a lease expired: an earlier call may have reached the provider.
    pub in_doubt: bool,
}

/// What becomes of one claimed message.
#[derive(Debug)]
pub enum Fate {
    Sent {
        provider_id: Option<String>,
        /// A webhook step's `store:`: the attributes its answer sets.
        store: serde_json::Map<String, serde_json::Value>,
    },
    Retry {
        next_at: i64,
        error: String,
    },
    Dead {
        error: String,
    },
    Cancelled {
        reason: String,
    },
    /// Back to the pool without counting a try.
    Release {
        next_at: i64,
        error: String,
    },
}

/// One outcome to record.
#[derive(Debug)]
pub struct Recorded<'a> {
    pub id: &'a str,
    pub contact_id: &'a str,
    pub channel: &'a str,
    pub fate: &'a Fate,
    /// The provider says the recipient opted out of the channel (a dead
    /// message whose reason says so): recorded as an opt-out in the same
    /// transaction.
    pub opted_out: bool,
}

/// How a claim runs.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTimes {
    pub now: i64,
    pub lease_until: i64,
    /// When messages of channels not in the settings are looked at again.
    pub unknown_until: i64,
}

// The claim's statements, shared by the pool's path below and the delivery
// connection's (`outbox_conn.rs`); parameters appear in order.

/// The columns a claim returns, in [`Claimed`]'s order.
const CLAIMED_COLS: &str = "id, workflow, contact_id, step_id, channel, recipient, subject, body, attempts, created_at, next_attempt_at, payload, first_failed_at, in_doubt";

/// Claims up to `$5` due messages of channel `$4` at `$3` for owner `$1`,
/// leased until `$2`.
pub(super) fn claim_sql(dialect: Dialect) -> String {
    super::claim::Claim {
        table: "outbox",
        // SQLite finds a row by its rowid in one b-tree descent, by `id`
        // in two (the key's index, then the table): 12 µs per claimed row
        // instead of 14.5 (256-row claims on 100,000 queued messages).
        // PostgreSQL's `rowid` column is not indexed; `id` is its key.
        key: match dialect {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "id",
        },
        lease: "status = 'sending', lease_owner = $1, lease_until = $2",
        due: "status = 'queued' AND next_attempt_at <= $3 AND channel = $4",
        order: "next_attempt_at",
        limit: "$5",
        returning: CLAIMED_COLS,
    }
    .sql(dialect)
}

/// Pushes the messages due at `$2` of channels not in `$3` (a JSON list of
/// names) back to `$1`.
pub(super) fn park_unknown_sql(dialect: Dialect) -> String {
    format!(
        "UPDATE outbox SET next_attempt_at = $1,
                last_error = 'channel \"' || channel || '\" is not in the settings; the message waits until it is'
          WHERE status = 'queued' AND next_attempt_at <= $2
            AND channel NOT IN {}",
        dialect.json_strings(3)
    )
}

/// The channel names of the settings as [`park_unknown_sql`] takes them.
pub(super) fn channel_names(known: &[String]) -> String {
    serde_json::to_string(known).unwrap_or_else(|_| "[]".into())
}

pub(super) fn parked_unknown(parked: u64) {
    if parked > 0 {
        tracing::warn!(
            messages = parked,
            "messages for channels that are not in the settings stay queued"
        );
    }
}

/// Puts the messages whose lease expired before `$1` back in the pool.
pub(super) const REAP_SQL: &str = "UPDATE outbox SET status = 'queued', lease_owner = NULL, lease_until = NULL, in_doubt = 1,
        last_error = 'lease expired: the worker stopped during the send; sending again with the same idempotency key'
  WHERE status = 'sending' AND lease_until < $1";

pub(super) fn reaped_expired(reaped: u64) {
    if reaped > 0 {
        tracing::warn!(messages = reaped, "reclaimed messages whose lease expired");
    }
}

/// RETURNING gives no order (PostgreSQL's differs from SQLite's): calls
/// start in due order.
pub(super) fn in_due_order(mut claimed: Vec<Claimed>) -> Vec<Claimed> {
    claimed.sort_by_key(|c| c.due_at);
    claimed
}

/// Claims up to `n` due messages of each channel in `wants` for `owner`, in
/// one write transaction. Also puts expired leases back in the pool and,
/// when `known` is given, pushes back the due messages of channels not in
/// it.
pub async fn claim(
    store: &Store,
    owner: &str,
    times: ClaimTimes,
    wants: &[(String, usize)],
    known: Option<Vec<String>>,
) -> Result<Vec<Vec<Claimed>>, sqlx::Error> {
    claim_with(store, owner, times, wants, known, true).await
}

/// [`claim`], putting expired leases back in the pool only when `reap` is
/// set: the delivery worker reaps on a timer (a lease expires only when a
/// worker died), not in every claim, where the extra statement read every
/// `sending` row again, a few hundred rows per claim under load.
pub async fn claim_with(
    store: &Store,
    owner: &str,
    times: ClaimTimes,
    wants: &[(String, usize)],
    known: Option<Vec<String>>,
    reap: bool,
) -> Result<Vec<Vec<Claimed>>, sqlx::Error> {
    let now = times.now;
    // In turn with this process's other writers (SQLite has one): waiting
    // for SQLite's lock instead spins in its busy handler, which sleeps
    // 1–100 ms a try while the scheduler commits.
    let _turn = store.write_turn().await;
    let mut tx = store.begin().await?;
    if reap {
        reap_expired(&mut tx, now).await?;
    }
    if let Some(known) = known {
        let parked = sqlx::query(sqlx::AssertSqlSafe(park_unknown_sql(store.dialect())))
            .bind(times.unknown_until)
            .bind(now)
            .bind(channel_names(&known))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        parked_unknown(parked);
    }
    let sql = claim_sql(store.dialect());
    let mut out = Vec::with_capacity(wants.len());
    for (channel, n) in wants {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(owner)
            .bind(times.lease_until)
            .bind(now)
            .bind(channel)
            .bind(*n as i64)
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            claimed.push(Claimed {
                id: r.try_get(0)?,
                workflow: r.try_get(1)?,
                contact_id: r.try_get(2)?,
                step_id: r.try_get(3)?,
                channel: r.try_get(4)?,
                recipient: r.try_get(5)?,
                subject: r.try_get(6)?,
                body: r.try_get(7)?,
                attempts: u32::try_from(r.try_get::<i64, _>(8)?).unwrap_or(0),
                created_at: r.try_get(9)?,
                due_at: r.try_get(10)?,
                payload: r.try_get(11)?,
                first_failed_at: r.try_get(12)?,
                in_doubt: r.try_get::<i64, _>(13)? != 0,
            });
        }
        out.push(in_due_order(claimed));
    }
    tx.commit().await?;
    Ok(out)
}

/// Puts the messages whose lease expired (their worker stopped mid-send)
/// back in the pool, marked `in_doubt`.
async fn reap_expired(tx: &mut AnyConnection, now: i64) -> Result<(), sqlx::Error> {
    let reaped = sqlx::query(REAP_SQL)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    reaped_expired(reaped);
    Ok(())
}

/// `ids` as the JSON array text [`super::Dialect::json_strings`] reads.
fn id_list<S: serde::Serialize>(ids: &[S]) -> Result<String, sqlx::Error> {
    serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Extends the leases of the messages `ids` that `owner` holds to `until`
/// (the worker names what it holds: a row leased to it that it lost track
/// of expires and is reclaimed, rather than being renewed forever).
///
/// On PostgreSQL the rows are taken in id order and those locked right now
/// are skipped: they are the ones this daemon's outcome writer is finishing
/// (it clears their lease), and waiting for them while holding others
/// deadlocked against that writer under load (10M contacts, three daemons:
/// `deadlock detected`). A skipped row whose outcome write fails is renewed
/// on the next round, well inside its lease. SQLite has one writer at a time:
/// nothing to order.
pub async fn renew_leases(
    store: &Store,
    owner: &str,
    ids: &[String],
    until: i64,
) -> Result<u64, sqlx::Error> {
    let json = id_list(ids)?;
    let held = store.dialect().json_strings(3);
    let sql = match store.dialect() {
        Dialect::Sqlite => format!(
            "UPDATE outbox SET lease_until = $1 WHERE status = 'sending' AND lease_owner = $2 AND id IN {held}"
        ),
        Dialect::Postgres => format!(
            "UPDATE outbox SET lease_until = $1 WHERE id IN (
                SELECT id FROM outbox WHERE status = 'sending' AND lease_owner = $2 AND id IN {held}
                 ORDER BY id FOR UPDATE SKIP LOCKED)"
        ),
    };
    let _turn = store.write_turn().await;
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(until)
        .bind(owner)
        .bind(json)
        .execute(store.db())
        .await?
        .rows_affected())
}

/// Puts every message `owner` holds back in the pool (attempts unchanged).
pub async fn hand_back(store: &Store, owner: &str) -> Result<u64, sqlx::Error> {
    let _turn = store.write_turn().await;
    Ok(sqlx::query(
        "UPDATE outbox SET status = 'queued', lease_owner = NULL, lease_until = NULL
          WHERE status = 'sending' AND lease_owner = $1",
    )
    .bind(owner)
    .execute(store.db())
    .await?
    .rows_affected())
}

/// When the next queued message is due.
pub async fn next_due(store: &Store) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'queued'")
        .fetch_one(store.db())
        .await
}

/// Messages queued or being sent.
pub async fn queue_depth(store: &Store) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')")
        .fetch_one(store.db())
        .await
}

// The outcome statements, shared by the pool's path below and the delivery
// connection's (`outbox_conn.rs`). Every parameter appears once, in
// order, so `$N` binds by position on both drivers; each ends with the
// message's id and the lease owner: an outcome is written only while this
// worker still holds the lease.

/// A retry: queued again at `next_at`, one more attempt counted.
pub(super) const RETRY_SQL: &str = "UPDATE outbox SET status = 'queued', next_attempt_at = $1, last_error = $2, attempts = attempts + 1,
        lease_owner = NULL, lease_until = NULL,
        first_failed_at = coalesce(first_failed_at, $3)
  WHERE id = $4 AND status = 'sending' AND lease_owner = $5";

/// A dead letter (permanent error or retries over).
pub(super) const DEAD_SQL: &str =
    "UPDATE outbox SET status = 'dead', last_error = $1, attempts = attempts + 1,
        lease_owner = NULL, lease_until = NULL, dead_at = $2
  WHERE id = $3 AND status = 'sending' AND lease_owner = $4";

/// Not sent: consent withdrawn since the plan.
pub(super) const CANCELLED_SQL: &str = "UPDATE outbox SET status = 'cancelled', last_error = $1, lease_owner = NULL, lease_until = NULL
  WHERE id = $2 AND status = 'sending' AND lease_owner = $3";

/// Back to the pool without counting a try (quiet hours, a provider's wait).
pub(super) const RELEASE_SQL: &str =
    "UPDATE outbox SET status = 'queued', next_attempt_at = $1, last_error = $2,
        lease_owner = NULL, lease_until = NULL
  WHERE id = $3 AND status = 'sending' AND lease_owner = $4";

/// Sent, one message (the delivery connection's statement; the pool's path
/// writes a chunk per statement, see [`sent_sql`]).
pub(super) const SENT_ONE_SQL: &str =
    "UPDATE outbox SET status = 'sent', sent_at = $1, provider_id = $2,
        attempts = attempts + 1, last_error = NULL, lease_owner = NULL, lease_until = NULL
  WHERE id = $3 AND status = 'sending' AND lease_owner = $4";

/// The provider says the recipient opted out (Twilio 21610, "STOP"): recorded
/// with the dead letter, so no workflow plans another message on this channel.
pub(super) const OPT_OUT_SQL: &str = "INSERT INTO contact_opt_outs (contact_id, channel, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

impl Recorded<'_> {
    /// Whether this outcome also records an opt-out.
    pub(super) fn records_opt_out(&self) -> bool {
        self.opted_out && matches!(self.fate, Fate::Dead { .. })
    }
}

/// An outcome the lease no longer allows writing.
pub(super) fn lease_lost(id: &str) {
    tracing::warn!(id = %id, "outcome not recorded: the message's lease was taken by another worker");
}

/// Sent outcomes per statement (two parameters each).
const SENT_CHUNK: usize = 500;

/// Records the outcomes of `owner`'s sends in one transaction; an outcome
/// whose lease another worker took is not written (and logged).
pub async fn record_outcomes(
    store: &Store,
    owner: &str,
    now: i64,
    outcomes: &[Recorded<'_>],
) -> Result<(), sqlx::Error> {
    let _turn = store.write_turn().await;
    record_outcomes_in_turn(store, owner, now, outcomes).await
}

/// [`record_outcomes`] for a caller that holds the store's write turn
/// ([`Store::write_turn`]) already.
pub async fn record_outcomes_in_turn(
    store: &Store,
    owner: &str,
    now: i64,
    outcomes: &[Recorded<'_>],
) -> Result<(), sqlx::Error> {
    // Sent, the common fate, is written a chunk of messages per statement:
    // on PostgreSQL every statement is a round trip to the server.
    let sent: Vec<(&str, Option<&str>)> = outcomes
        .iter()
        .filter_map(|o| match o.fate {
            Fate::Sent { provider_id, .. } => Some((o.id, provider_id.as_deref())),
            _ => None,
        })
        .collect();
    // Only sent messages without answers to store, in one statement: that
    // statement is its own transaction, without the two round trips of
    // BEGIN and COMMIT (the usual group under load).
    let one_statement = sent.len() == outcomes.len()
        && sent.len() <= SENT_CHUNK
        && outcomes
            .iter()
            .all(|o| matches!(o.fate, Fate::Sent { store, .. } if store.is_empty()));
    if one_statement {
        write_sent(store, store.db(), owner, now, &sent).await?;
        return Ok(());
    }
    let mut tx = store.begin().await?;
    let mut recorded: HashSet<String> = HashSet::new();
    for chunk in sent.chunks(SENT_CHUNK) {
        recorded.extend(write_sent(store, &mut *tx, owner, now, chunk).await?);
    }
    // What webhook steps' answers set, in the transaction that records them sent.
    for o in outcomes {
        if let Fate::Sent { store, .. } = o.fate
            && !store.is_empty()
            && recorded.contains(o.id)
        {
            let when = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
            super::answers::store_answer(&mut tx, o.contact_id, store, when).await?;
        }
    }
    for o in outcomes {
        let q = match o.fate {
            Fate::Sent { .. } => continue,
            Fate::Retry { next_at, error } => sqlx::query(RETRY_SQL)
                .bind(*next_at)
                .bind(error.as_str())
                .bind(now),
            Fate::Dead { error } => sqlx::query(DEAD_SQL).bind(error.as_str()).bind(now),
            Fate::Cancelled { reason } => sqlx::query(CANCELLED_SQL).bind(reason.as_str()),
            Fate::Release { next_at, error } => {
                sqlx::query(RELEASE_SQL).bind(*next_at).bind(error.as_str())
            }
        };
        let done = q.bind(o.id).bind(owner).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            lease_lost(o.id);
        }
        if o.records_opt_out() {
            sqlx::query(OPT_OUT_SQL)
                .bind(o.contact_id)
                .bind(o.channel)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await
}

/// Marks `chunk` (at most [`SENT_CHUNK`] messages, with their provider ids)
/// sent in one statement; gives the ids written (a message whose lease
/// another worker took is not, and is logged).
async fn write_sent<'e, E>(
    store: &Store,
    on: E,
    owner: &str,
    now: i64,
    chunk: &[(&str, Option<&str>)],
) -> Result<HashSet<String>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    // Guarded by the lease alone (a lease is held only while sending: the
    // outbox_lease_check guard). With `status = 'sending'` in this join,
    // PostgreSQL chose the outbox_due index on a fresh store, and that
    // index keeps an entry for every dead 'sending' row version until a
    // vacuum: each group visited all of them (94 µs per message by the end
    // of a 100,000-message run, against 30 µs by the primary key).
    //
    // Anonymous `?` on SQLite: sqlx binds a named `$N` by looking its
    // name up in the statement's parameter list, once per parameter.
    let ph = |n: usize| store.dialect().placeholder(n);
    let mut values = String::new();
    for i in 0..chunk.len() {
        let k = 1 + 2 * i;
        values.push_str(&format!(
            "{}({}, {})",
            if i == 0 { "" } else { "," },
            ph(k),
            ph(k + 1)
        ));
    }
    let sql = format!(
        "WITH v(id, provider_id) AS (VALUES {values})
         UPDATE outbox SET status = 'sent', sent_at = {}, provider_id = v.provider_id,
                attempts = outbox.attempts + 1, last_error = NULL, lease_owner = NULL, lease_until = NULL
           FROM v WHERE outbox.id = v.id AND outbox.lease_owner = {}
         RETURNING {}",
        // The values come first in the text, so they are bound first.
        ph(2 * chunk.len() + 1),
        ph(2 * chunk.len() + 2),
        match store.dialect() {
            Dialect::Sqlite => "id",
            Dialect::Postgres => "outbox.id",
        }
    );
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for (id, provider) in chunk {
        q = q.bind(*id).bind(*provider);
    }
    let written: HashSet<String> = q
        .bind(now)
        .bind(owner)
        .fetch_all(on)
        .await?
        .into_iter()
        .collect();
    for (id, _) in chunk {
        if !written.contains(*id) {
            lease_lost(id);
        }
    }
    Ok(written)
}

/// A message on its way into the outbox (written by `engine::apply` in the
/// plan's transaction).
#[derive(Debug)]
pub struct NewMessage<'a> {
    /// The idempotency key.
    pub id: &'a str,
    pub workflow: &'a str,
    pub contact_id: &'a str,
    pub enrollment_id: i64,
    pub step_id: &'a str,
    pub channel: &'a str,
    pub recipient: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    /// What the channel needs beyond the text, JSON.
    pub payload: String,
    /// Not before (quiet hours), ms.
    pub not_before: i64,
    pub created_at: i64,
}

/// The lease a message is written with when it goes straight to this
/// daemon's delivery worker ([`super::handoff`]).
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub owner: &'a str,
    pub until: i64,
}

/// What [`insert_many`] wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub rows: u64,
    /// The ids written, when some message was to be leased (to know which
    /// of those were written: an id that existed is skipped).
    pub ids: Option<HashSet<String>>,
}

/// Queues `msgs` with multi-row statements, skipping ids that exist. The
/// messages marked in `leased` are written `sending` with `lease` (they go
/// straight to that worker, [`super::handoff`]); the others `queued`.
pub async fn insert_many(
    tx: &mut AnyConnection,
    dialect: Dialect,
    msgs: &[NewMessage<'_>],
    lease: Option<Lease<'_>>,
    leased: &[bool],
) -> Result<Written, sqlx::Error> {
    use sqlx::Arguments as _;
    let any_leased = lease.is_some() && leased.iter().any(|l| *l);
    let mut out = Written {
        rows: 0,
        ids: any_leased.then(HashSet::new),
    };
    const PER_ROW: usize = 16;
    for (c, chunk) in msgs
        .chunks(super::enrollments::ROWS_PER_STATEMENT)
        .enumerate()
    {
        let mut sql = String::from(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, subject, body,
                                 payload, status, attempts, not_before, next_attempt_at, created_at,
                                 lease_owner, lease_until) VALUES ",
        );
        let mut args = sqlx::any::AnyArguments::default();
        for (i, m) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let b = i * PER_ROW;
            let p: Vec<String> = (1..=PER_ROW).map(|k| dialect.placeholder(b + k)).collect();
            sql.push_str(&format!("({},0,{})", p[..11].join(","), p[11..].join(",")));
            let to_worker = lease.filter(|_| {
                leased
                    .get(c * super::enrollments::ROWS_PER_STATEMENT + i)
                    .copied()
                    .unwrap_or(false)
            });
            args.add(m.id).map_err(sqlx::Error::Encode)?;
            args.add(m.workflow).map_err(sqlx::Error::Encode)?;
            args.add(m.contact_id).map_err(sqlx::Error::Encode)?;
            args.add(m.enrollment_id).map_err(sqlx::Error::Encode)?;
            args.add(m.step_id).map_err(sqlx::Error::Encode)?;
            args.add(m.channel).map_err(sqlx::Error::Encode)?;
            args.add(m.recipient).map_err(sqlx::Error::Encode)?;
            args.add(m.subject).map_err(sqlx::Error::Encode)?;
            args.add(m.body).map_err(sqlx::Error::Encode)?;
            args.add(m.payload.as_str()).map_err(sqlx::Error::Encode)?;
            args.add(if to_worker.is_some() {
                "sending"
            } else {
                "queued"
            })
            .map_err(sqlx::Error::Encode)?;
            args.add(m.not_before).map_err(sqlx::Error::Encode)?;
            // next_attempt_at: not before.
            args.add(m.not_before).map_err(sqlx::Error::Encode)?;
            args.add(m.created_at).map_err(sqlx::Error::Encode)?;
            args.add(to_worker.map(|l| l.owner))
                .map_err(sqlx::Error::Encode)?;
            args.add(to_worker.map(|l| l.until))
                .map_err(sqlx::Error::Encode)?;
        }
        sql.push_str(" ON CONFLICT (id) DO NOTHING");
        match &mut out.ids {
            None => {
                out.rows += sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            Some(ids) => {
                sql.push_str(" RETURNING id");
                let written: Vec<String> = sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), args)
                    .fetch_all(&mut *tx)
                    .await?;
                out.rows += written.len() as u64;
                ids.extend(written);
            }
        }
    }
    Ok(out)
}

/// Extends the leases of the messages `ids` that are still `owner`'s to
/// `until`; gives those ids. Not in a write turn (as [`hand_back_ids`]).
pub async fn renew_ids(
    store: &Store,
    owner: &str,
    ids: &[&str],
    until: i64,
) -> Result<HashSet<String>, sqlx::Error> {
    let json = id_list(ids)?;
    let sql = format!(
        "UPDATE outbox SET lease_until = $1
          WHERE status = 'sending' AND lease_owner = $2 AND in_doubt = 0 AND id IN {}
         RETURNING id",
        store.dialect().json_strings(3)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(until)
        .bind(owner)
        .bind(json)
        .fetch_all(store.db())
        .await?
        .into_iter()
        .collect())
}

/// Puts the messages `ids` leased to `owner` back in the pool (attempts
/// unchanged): handed messages the worker refused because it was stopping.
/// Not in a write turn: it runs right after the plan's commit, whose turn
/// is still held.
pub async fn hand_back_ids(store: &Store, owner: &str, ids: &[&str]) -> Result<u64, sqlx::Error> {
    let json = id_list(ids)?;
    let sql = format!(
        "UPDATE outbox SET status = 'queued', lease_owner = NULL, lease_until = NULL
          WHERE status = 'sending' AND lease_owner = $1 AND id IN {}",
        store.dialect().json_strings(2)
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(json)
        .execute(store.db())
        .await?
        .rows_affected())
}
