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
//! twice in 90 days (both kinds count), and a
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
// planner (which decides transfers, issue 9): one function, below both.
pub use crate::wecom::transfer::{
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
