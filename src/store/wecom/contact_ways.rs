//! The contact-way codes pushed to WeCom (table `wecom_contact_ways`,
//! migration 0023): `channels::wecom::contact_way` decides what to push;
//! these record what was pushed.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use crate::store::{Store, to_ms};

/// A code as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub name: String,
    pub channel: String,
    pub config_id: String,
    pub qr_code: Option<String>,
    pub pushed: Value,
    pub delete_listed_at: Option<i64>,
}

pub async fn stored(store: &Store) -> sqlx::Result<Vec<Stored>> {
    let rows = sqlx::query(
        "SELECT name, channel, config_id, qr_code, pushed, delete_listed_at \
         FROM wecom_contact_ways ORDER BY name",
    )
    .fetch_all(store.db())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Stored {
            name: r.get(0),
            channel: r.get(1),
            config_id: r.get(2),
            qr_code: r.get(3),
            pushed: serde_json::from_str(&r.get::<String, _>(4)).unwrap_or(Value::Null),
            delete_listed_at: r.get(5),
        })
        .collect())
}

/// Adds through code `name` since `since` (ms), per WeCom member userid:
/// relationships whose `state` is the code's.
pub async fn adds_since(store: &Store, name: &str, since: i64) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT userid, count(*) FROM wecom_relationships WHERE state = $1 AND added_at >= $2 \
         GROUP BY userid",
    )
    .bind(name)
    .bind(since)
    .fetch_all(store.db())
    .await
}

/// A dry-run listed code `name` as to be deleted (the next real sync deletes it).
pub async fn delete_listed(store: &Store, name: &str, at: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE wecom_contact_ways SET delete_listed_at = $1 WHERE name = $2")
        .bind(at)
        .bind(name)
        .execute(store.db())
        .await
        .map(|_| ())
}

pub async fn forget(store: &Store, name: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM wecom_contact_ways WHERE name = $1")
        .bind(name)
        .execute(store.db())
        .await
        .map(|_| ())
}

pub async fn pushed(
    store: &Store,
    name: &str,
    body: &Value,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE wecom_contact_ways SET pushed = $1, updated_at = $2 WHERE name = $3")
        .bind(body.to_string())
        .bind(to_ms(now))
        .bind(name)
        .execute(store.db())
        .await
        .map(|_| ())
}

pub async fn created(
    store: &Store,
    name: &str,
    channel: &str,
    config_id: &str,
    qr: Option<&str>,
    body: &Value,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO wecom_contact_ways (name, channel, config_id, qr_code, pushed, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (name) DO UPDATE SET channel = excluded.channel, \
         config_id = excluded.config_id, qr_code = excluded.qr_code, pushed = excluded.pushed, \
         updated_at = excluded.updated_at, delete_listed_at = NULL",
    )
    .bind(name)
    .bind(channel)
    .bind(config_id)
    .bind(qr)
    .bind(body.to_string())
    .bind(to_ms(now))
    .execute(store.db())
    .await
    .map(|_| ())
}
