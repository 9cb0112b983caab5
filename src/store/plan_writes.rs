//! What applying a plan changes on the contact besides its enrollments and
//! messages: tags, attributes, the owner and the team counters an assignment
//! moves. `engine::apply` decides; these run in its transaction.

use sqlx::AnyConnection;

use super::Dialect;

/// The transaction-scoped advisory lock every writer of the event log takes
/// on PostgreSQL (see migrations/postgres/0001_init.sql): log rows become
/// visible in sequence order. The scheduler takes it first in transactions
/// that will both write the log (tags) and lock assignment rows, so all
/// daemons take locks in one order (log, then team) and cannot deadlock.
pub const EVENT_LOG_WRITE: i64 = 4_711_001;

/// Takes [`EVENT_LOG_WRITE`] for the rest of the transaction (PostgreSQL;
/// SQLite's write lock already serialises writers).
pub(in crate::store) async fn lock_event_log(
    tx: &mut AnyConnection,
    dialect: Dialect,
) -> sqlx::Result<()> {
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENT_LOG_WRITE)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

pub(in crate::store) async fn add_tag(
    tx: &mut AnyConnection,
    contact_id: &str,
    tag: &str,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(contact_id)
        .bind(tag)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub(in crate::store) async fn remove_tag(
    tx: &mut AnyConnection,
    contact_id: &str,
    tag: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM contact_tags WHERE contact_id = $1 AND tag = $2")
        .bind(contact_id)
        .bind(tag)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Merges a JSON merge patch (null removes the attribute) into a contact's
/// attributes (PostgreSQL has a `json_patch` of the same meaning): the
/// patch, the time, the contact.
pub(in crate::store) const PATCH_ATTRS_SQL: &str =
    "UPDATE contacts SET attrs = json_patch(attrs, $1), updated_at = $2 WHERE id = $3";

/// Merges `patch` (a JSON merge patch: null removes the attribute) into the
/// contact's attributes.
pub(in crate::store) async fn patch_attrs(
    tx: &mut AnyConnection,
    contact_id: &str,
    patch: &str,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query(PATCH_ATTRS_SQL)
        .bind(patch)
        .bind(at)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The contact's WeCom external userid: `None` for no contact, `Some(None)`
/// for a contact without one.
pub(in crate::store) async fn wecom_external_userid(
    tx: &mut AnyConnection,
    contact_id: &str,
) -> sqlx::Result<Option<Option<String>>> {
    sqlx::query_scalar("SELECT wecom_external_userid FROM contacts WHERE id = $1")
        .bind(contact_id)
        .fetch_optional(&mut *tx)
        .await
}

pub(in crate::store) async fn set_owner(
    tx: &mut AnyConnection,
    contact_id: &str,
    owner: &str,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE contacts SET owner = $1, updated_at = $2 WHERE id = $3")
        .bind(owner)
        .bind(at)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The team's round-robin cursor, its row created if needed and locked for
/// the rest of the transaction (an upsert that updates takes the row lock on
/// PostgreSQL), in one statement.
pub(in crate::store) async fn lock_team_cursor(
    tx: &mut AnyConnection,
    team: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO team_cursors (team, next_index) VALUES ($1, 0)
         ON CONFLICT (team) DO UPDATE SET next_index = team_cursors.next_index
         RETURNING next_index",
    )
    .bind(team)
    .fetch_one(&mut *tx)
    .await
}

pub(in crate::store) async fn set_team_cursor(
    tx: &mut AnyConnection,
    team: &str,
    next: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE team_cursors SET next_index = $1 WHERE team = $2")
        .bind(next)
        .bind(team)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Open contacts per salesperson.
pub(in crate::store) async fn salesperson_loads(
    tx: &mut AnyConnection,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT salesperson_id, open_contacts FROM salesperson_load")
        .fetch_all(&mut *tx)
        .await
}
