//! Attachments of WeCom messages (issue 9, point 8; see
//! [`crate::attachments`]): the `attachments` array of `send_welcome_msg`
//! and `add_msg_template` (reference §1.2–§1.3), with local files uploaded
//! once through `media/upload` and their `media_id` cached in the store
//! (`store::wecom_media`) for 2.5 of WeCom's 3 days.
//!
//! Errors: a file that is gone or unreadable is permanent (the template
//! names a file the project lacks: `validate` says so too); an upload WeCom
//! refuses takes its errcode's class. A send WeCom refuses with 40007 (a
//! media id it no longer knows) forgets the ids used, and the retry uploads
//! again.

use std::path::Path;

use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::api::WecomApi;
use crate::attachments::{Attachment, MAX};
use crate::channels::{Delivery, Exchange};
use crate::store::Store;
use crate::store::wecom_media::MediaKey;

/// WeCom's errcode for a media id it does not know (invalid or expired).
pub const INVALID_MEDIA_ID: i64 = 40007;

/// The `attachments` array of a message, and the media ids it uses.
#[derive(Debug, Default)]
pub struct Built {
    pub json: Vec<Value>,
    pub media_ids: Vec<String>,
}

/// The attachments of an outbox payload (`{"attachments": [...]}`).
pub fn of_payload(payload: &Value) -> Result<Vec<Attachment>, String> {
    match payload.get("attachments") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("wecom: the message's attachments cannot be read: {e}")),
    }
}

/// Builds WeCom's `attachments` for `list`, uploading files as needed.
pub async fn build(
    api: &WecomApi,
    store: Option<&Store>,
    channel: &str,
    root: &Path,
    list: &[Attachment],
) -> Result<Built, Exchange> {
    if list.len() > MAX {
        return Err(permanent(format!(
            "wecom: {} attachments; WeCom sends at most {MAX}",
            list.len()
        )));
    }
    let mut out = Built::default();
    for a in list {
        let media = match a.upload() {
            Some((path, ty)) => {
                let id = media_id(api, store, channel, root, path, ty.as_str()).await?;
                out.media_ids.push(id.clone());
                Some(id)
            }
            None => None,
        };
        let media = media.unwrap_or_default();
        out.json.push(match a {
            Attachment::Image { .. } => json!({"msgtype": "image", "image": {"media_id": media}}),
            Attachment::File { .. } => json!({"msgtype": "file", "file": {"media_id": media}}),
            Attachment::Link {
                title,
                desc,
                picurl,
                url,
            } => {
                let mut link = json!({"title": title, "url": url});
                if let Some(d) = desc {
                    link["desc"] = json!(d);
                }
                if let Some(p) = picurl {
                    link["picurl"] = json!(p);
                }
                json!({"msgtype": "link", "link": link})
            }
            Attachment::Miniprogram {
                title, appid, page, ..
            } => json!({"msgtype": "miniprogram", "miniprogram": {
                "title": title, "pic_media_id": media, "appid": appid, "page": page}}),
        });
    }
    Ok(out)
}

/// The media id of one local file: cached, or uploaded now.
async fn media_id(
    api: &WecomApi,
    store: Option<&Store>,
    channel: &str,
    root: &Path,
    path: &str,
    media_type: &str,
) -> Result<String, Exchange> {
    let full = root.join(path);
    let bytes = tokio::fs::read(&full).await.map_err(|e| {
        permanent(format!(
            "wecom: attachment file {path:?} cannot be read ({}): {e}",
            full.display()
        ))
    })?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let key = MediaKey {
        channel,
        path,
        sha256: &sha,
        media_type,
    };
    if let Some(store) = store {
        match store.wecom_media_id(&key, Utc::now()).await {
            Ok(Some(id)) => return Ok(id),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "wecom media cache unreadable; uploading"),
        }
    }
    let filename = full
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("attachment");
    let answer = api.upload(media_type, filename, &bytes).await?;
    let Some(id) = answer
        .json
        .get("media_id")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return Err(answer.exchange(Delivery::Retry {
            after: None,
            reason: "wecom media/upload answered without a media_id".into(),
        }));
    };
    tracing::info!(channel, path, media_type, "wecom attachment uploaded");
    if let Some(store) = store
        && let Err(e) = store.record_wecom_media(&key, id, Utc::now()).await
    {
        tracing::warn!(error = %e, "wecom media id not cached; the file is uploaded again next time");
    }
    Ok(id.to_string())
}

/// After WeCom refused a send with 40007: forget the ids it used.
pub async fn forget(store: Option<&Store>, channel: &str, built: &Built) {
    if let Some(store) = store
        && let Err(e) = store.forget_wecom_media(channel, &built.media_ids).await
    {
        tracing::warn!(error = %e, "wecom media ids not forgotten");
    }
}

fn permanent(reason: String) -> Exchange {
    Delivery::Permanent { reason }.into()
}
