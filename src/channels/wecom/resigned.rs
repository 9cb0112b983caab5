//! Succession (issue 9, point 10): customers of staff members who left.
//!
//! `POST /cgi-bin/externalcontact/get_unassigned_list` (`cursor`,
//! `page_size` up to 1,000) → `info[{handover_userid, external_userid,
//! dimission_time}]` (seconds), `is_last`, `next_cursor` (request and answer
//! shapes as in WxJava's `WxCpExternalContactService.listUnassignedList` and
//! easywechat's `getUnassigned`). Every entry is kept in `wecom_unassigned`
//! (migration 0014); one seen for the first time logs the event
//! [`EVENT_STAFF_LEFT`] on its contact, which the `staff_left` trigger fires
//! on, so a workflow can `assign` the customer to someone else (the channel
//! then uses the resigned transfer, see [`resigned_handover`]) and notify
//! the new owner. `nurture wecom resigned` runs it; the daemon runs it once a
//! day per wecom channel.
//!
//! WeCom's limits, respected before any call (so a refusal is a clear dead
//! letter rather than a surprise): a customer can be transferred at most
//! twice in 90 days (both kinds count, [`transfers_in_window`]), and a
//! resigned member's customers only within a year of the member leaving
//! ([`RESIGNED_WITHIN`]).

use serde_json::{Value, json};

use super::api::WecomApi;
use crate::channels::Exchange;
use crate::store::{Store, StoreError};

pub const GET_UNASSIGNED_LIST: &str = "/cgi-bin/externalcontact/get_unassigned_list";
pub const RESIGNED_TRANSFER_CUSTOMER: &str = "/cgi-bin/externalcontact/resigned/transfer_customer";
pub const RESIGNED_TRANSFER_RESULT: &str = "/cgi-bin/externalcontact/resigned/transfer_result";
/// The event logged on a contact whose follow-user left.
pub const EVENT_STAFF_LEFT: &str = crate::workflow::STAFF_LEFT_EVENT;
pub const PAGE_SIZE: i64 = 1_000;
const MAX_PAGES: usize = 1_000;
// WeCom's transfer limits and their verdict are pure and shared with the
// planner (which decides transfers, issue 9): one function, in the engine.
use crate::engine::transfer::when;
pub use crate::engine::transfer::{
    Held, Limit, RESIGNED_WITHIN, RESIGNED_WITHIN_MS, TAKEOVER_AFTER_MS, TRANSFER_WINDOW_MS,
    TRANSFERS_PER_WINDOW, held_by_limits,
};

/// What a look at the unassigned list found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Entries listed.
    pub listed: usize,
    /// Entries not seen before.
    pub new: usize,
    /// `wecom_staff_left` events logged (new entries of known contacts).
    pub events: usize,
    pub calls: usize,
}

/// Reads the whole unassigned list and records it. Stops at the first
/// failed call (what was read before is recorded).
pub async fn sync(api: &WecomApi, store: &Store, now_ms: i64) -> Result<Found, (Found, Exchange)> {
    let mut out = Found::default();
    let mut cursor = String::new();
    for _ in 0..MAX_PAGES {
        out.calls += 1;
        let body = json!({ "cursor": cursor, "page_size": PAGE_SIZE });
        let answer = match api.post(GET_UNASSIGNED_LIST, &body).await {
            Ok(a) => a,
            Err(e) => return Err((out, e)),
        };
        let entries = answer
            .json
            .get("info")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for e in &entries {
            let (Some(ext), Some(handover)) = (
                e.get("external_userid").and_then(Value::as_str),
                e.get("handover_userid").and_then(Value::as_str),
            ) else {
                continue;
            };
            let left = e
                .get("dimission_time")
                .and_then(Value::as_i64)
                .map(|s| s * 1000);
            out.listed += 1;
            match record(store, ext, handover, left, now_ms).await {
                Ok((new, logged)) => {
                    out.new += usize::from(new);
                    out.events += usize::from(logged);
                }
                Err(err) => {
                    return Err((
                        out,
                        crate::channels::Delivery::Retry {
                            after: None,
                            reason: format!("wecom: cannot record the unassigned list: {err}"),
                        }
                        .into(),
                    ));
                }
            }
        }
        let last = answer.json.get("is_last").and_then(Value::as_bool) == Some(true);
        match answer.json.get("next_cursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() && !last => cursor = c.to_string(),
            _ => return Ok(out),
        }
    }
    Ok(out)
}

pub use crate::store::wecom::resigned::{Resigned, assigned, resigned_handover};

/// Records one entry; a new one logs [`EVENT_STAFF_LEFT`] on its contact in
/// the same transaction. Returns (new, event logged).
async fn record(
    store: &Store,
    ext: &str,
    handover: &str,
    dimission_ms: Option<i64>,
    now_ms: i64,
) -> Result<(bool, bool), StoreError> {
    crate::store::wecom::resigned::record(
        store,
        ext,
        handover,
        dimission_ms,
        now_ms,
        EVENT_STAFF_LEFT,
    )
    .await
}

/// Transfers of the customer WeCom started (either kind) in the 90 days
/// before `now_ms`; a transfer WeCom has no record of does not count.
pub async fn transfers_in_window(store: &Store, ext: &str, now_ms: i64) -> sqlx::Result<i64> {
    store
        .wecom()
        .transfers_since(ext, now_ms - TRANSFER_WINDOW_MS)
        .await
}

/// The transfers of the customer in the 90 days before `now_ms`: (started
/// ms, still waiting for the takeover), oldest first.
pub async fn transfers_started(
    store: &Store,
    ext: &str,
    now_ms: i64,
) -> sqlx::Result<Vec<(i64, bool)>> {
    store
        .wecom()
        .transfers_started(ext, now_ms - TRANSFER_WINDOW_MS)
        .await
}

/// For `dry-run --explain`: WeCom's transfer limits on the customer
/// `ext` at `now_ms`, from the same reads and verdict the channel uses
/// before a transfer ([`held_by_limits`]). `None` when no transfer in the
/// last 90 days and no member who left holds the customer.
pub async fn explain_limits(store: &Store, ext: &str, now_ms: i64) -> sqlx::Result<Option<String>> {
    let started = transfers_started(store, ext, now_ms).await?;
    let left = store.wecom().resigned_handover(ext).await?;
    if started.is_empty() && left.is_none() {
        return Ok(None);
    }
    let mut out = format!(
        "WeCom transfers of {ext}: {} in the last 90 days (at most {TRANSFERS_PER_WINDOW})",
        started.len()
    );
    if let Some(r) = &left {
        out.push_str(&format!(
            "; held by {} who left{}",
            r.handover_userid,
            r.dimission_ms
                .map(|t| format!(" at {}", when(t)))
                .unwrap_or_default()
        ));
    }
    out.push('\n');
    match held_by_limits(&started, left.as_ref(), now_ms) {
        Some(h) => out.push_str(&format!(
            "  a transfer now is held by limit {}{}: {}\n",
            h.limit.as_str(),
            h.frees_at
                .map(|t| format!(" (frees up {})", when(t)))
                .unwrap_or_else(|| " (never frees up)".into()),
            h.reason
        )),
        None => out.push_str("  a transfer now is within WeCom's limits\n"),
    }
    Ok(Some(out))
}

/// Why a transfer of the customer would be refused by WeCom's limits now,
/// if it would: `recent` transfers in 90 days, and for a resigned handover
/// the time since the member left.
pub fn refused_by_limits(recent: i64, resigned: Option<&Resigned>, now_ms: i64) -> Option<String> {
    // `recent` transfers, all long taken over, at the window's start.
    let started: Vec<(i64, bool)> = (0..recent)
        .map(|_| (now_ms - TRANSFER_WINDOW_MS + 1, false))
        .collect();
    held_by_limits(&started, resigned, now_ms).map(|h| h.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    const DAY_MS: i64 = 24 * 3600 * 1000;

    #[test]
    fn limits() {
        let now = 1_000 * DAY_MS;
        assert!(refused_by_limits(2, None, now).unwrap().contains("40128"));
        assert_eq!(refused_by_limits(1, None, now), None);
        let r = |days: i64| Resigned {
            handover_userid: "lisi".into(),
            dimission_ms: Some(now - days * DAY_MS),
        };
        assert_eq!(refused_by_limits(0, Some(&r(364)), now), None);
        assert!(
            refused_by_limits(0, Some(&r(366)), now)
                .unwrap()
                .contains("lisi left more than a year ago")
        );
    }
}
