//! Reading every relationship of the corp's salespeople from WeCom:
//! `POST /cgi-bin/externalcontact/batch/get_by_user` (`userid_list` of up to
//! 100 members, `cursor`, `limit` up to 100) → `external_contact_list[]` of
//! `{external_contact: {external_userid, ...}, follow_info: {userid, remark,
//! createtime, state, tag_id, ...}}` and `next_cursor` (checked against
//! wechatpy's / WxJava's request shapes). Each listed relationship is
//! recorded as standing in `wecom_relationships`
//! ([`crate::store::wecom::relationships::record_batch`]); the answer names
//! only the members asked about, so nothing is ended from it (the callback
//! and `externalcontact/get` end relationships).
//!
//! `nurture wecom sync-relationships` runs it for the `wecom_userid`s of the
//! settings' teams: after an import of contacts with WeCom ids, or to catch
//! up on callbacks missed while the daemon was down.

use serde_json::{Value, json};

use super::api::WecomApi;
use crate::channels::{Delivery, Exchange};
use crate::store::Store;
use crate::store::wecom::relationships::{FollowUser, record_batch};

pub const BATCH_GET_BY_USER: &str = "/cgi-bin/externalcontact/batch/get_by_user";
/// Members per call and relationships per page (WeCom's maxima).
pub const USERS_PER_CALL: usize = 100;
pub const PAGE_LIMIT: i64 = 100;
/// Pages read per call at most (100,000 relationships of 100 members).
const MAX_PAGES: usize = 1_000;

/// What a sync read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    pub relationships: usize,
    pub customers: usize,
    pub calls: usize,
}

/// Reads the relationships of `userids` and records them. Stops at the
/// first failed call (what was read before is recorded) and returns it.
pub async fn sync_by_user(
    api: &WecomApi,
    store: &Store,
    userids: &[String],
) -> Result<Synced, (Synced, Exchange)> {
    let mut out = Synced::default();
    let mut customers = std::collections::BTreeSet::new();
    for chunk in userids.chunks(USERS_PER_CALL) {
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let body = json!({ "userid_list": chunk, "cursor": cursor, "limit": PAGE_LIMIT });
            out.calls += 1;
            let answer = match api.post(BATCH_GET_BY_USER, &body).await {
                Ok(a) => a,
                Err(e) => return Err((out, e)),
            };
            let entries = page_entries(&answer.json);
            for (ext, _) in &entries {
                customers.insert(ext.clone());
            }
            out.relationships += entries.len();
            if let Err(e) = record_batch(store, &entries, super::now_ms()).await {
                let d = Delivery::Retry {
                    after: None,
                    reason: format!("cannot record the relationships: {e}"),
                };
                return Err((out, d.into()));
            }
            match answer.json.get("next_cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() && c != cursor => cursor = c.to_string(),
                _ => break,
            }
        }
    }
    out.customers = customers.len();
    Ok(out)
}

/// The (external_userid, relationship) pairs of one answer.
pub fn page_entries(answer: &Value) -> Vec<(String, FollowUser)> {
    answer
        .get("external_contact_list")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let ext = e
                .get("external_contact")?
                .get("external_userid")?
                .as_str()?
                .trim();
            if ext.is_empty() {
                return None;
            }
            let f = FollowUser::from_json(e.get("follow_info")?)?;
            Some((ext.to_string(), f))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_info_entries() {
        let page = json!({"errcode": 0, "external_contact_list": [
            {"external_contact": {"external_userid": "wm1", "name": "A"},
             "follow_info": {"userid": "lilei", "remark": "VIP", "createtime": 1700000000,
                             "state": "douyin", "tag_id": ["et1"]}},
            {"external_contact": {"external_userid": "wm2"}, "follow_info": {"remark": "no userid"}},
            {"follow_info": {"userid": "x"}}
        ], "next_cursor": ""});
        let e = page_entries(&page);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "wm1");
        assert_eq!(
            e[0].1,
            FollowUser {
                userid: "lilei".into(),
                added_at: Some(1_700_000_000_000),
                state: Some("douyin".into()),
                remark: Some("VIP".into()),
            }
        );
    }
}
