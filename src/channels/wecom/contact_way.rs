//! Pushing `contact_ways/NAME.yaml` to WeCom ("联系我" / 渠道活码):
//! `add_contact_way`, `update_contact_way`, `del_contact_way`.
//!
//! Protocol (developer.work.weixin.qq.com/document/path/92228; WxJava
//! `WxCpContactWayInfo`, PowerWeChat `ResponseAddContactWay`): `type` 1
//! single member (`user` exactly one) or 2 multi-member; `scene` 2 QR code
//! (`qr_code` in the answer only then); `state` and `remark` at most 30
//! characters; `skip_verify` (default true); the answer's `config_id` is
//! the only handle on a code made through the API (it is not listed
//! anywhere), so it is stored in `wecom_contact_ways` before anything else.
//! `update_contact_way` takes `config_id` and the fields to change (not
//! `type` or `scene`); `del_contact_way` takes `config_id`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::api::WecomApi;
use crate::channels::Exchange;
use crate::contact_ways::{self, ContactWay};
use crate::project::Project;
use crate::store::{Store, to_ms};

pub const ADD_CONTACT_WAY: &str = "/cgi-bin/externalcontact/add_contact_way";
pub const UPDATE_CONTACT_WAY: &str = "/cgi-bin/externalcontact/update_contact_way";
pub const DEL_CONTACT_WAY: &str = "/cgi-bin/externalcontact/del_contact_way";

pub use crate::store::wecom::contact_ways::{Stored, stored};

/// Adds through `name` today per salesperson id: relationships whose
/// `state` is the code's, added since the start of the day.
pub async fn adds_today(
    store: &Store,
    project: &Project,
    name: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<HashMap<String, u32>> {
    let since = to_ms(contact_ways::day_start(&project.settings, now));
    let rows = crate::store::wecom::contact_ways::adds_since(store, name, since).await?;
    let mut out = HashMap::new();
    for (userid, n) in rows {
        if let Some(id) = contact_ways::salesperson_of_userid(&project.settings, &userid) {
            out.insert(id, n as u32);
        }
    }
    Ok(out)
}

/// What a code would be pushed as now: the body fields nurture sets, and
/// why those members.
pub async fn desired(
    store: &Store,
    project: &Project,
    way: &ContactWay,
    now: DateTime<Utc>,
) -> sqlx::Result<(Value, Vec<String>, String)> {
    let adds = adds_today(store, project, &way.name, now).await?;
    let (ids, why) = contact_ways::members_now(way, &project.settings, now, &adds);
    let users = contact_ways::userids(&project.settings, &ids);
    let mut body = json!({
        "type": contact_ways::wecom_type(way),
        "scene": 2,
        "skip_verify": way.auto_accept,
        "state": way.name,
        "user": users,
    });
    if let Some(r) = &way.remark {
        body["remark"] = json!(r);
    }
    Ok((body, ids, why))
}

/// One line of `nurture wecom sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    /// The type changes (one member ↔ several): WeCom cannot update it.
    Recreate,
    Unchanged,
    /// Its file is gone.
    Delete,
    /// Its file is gone, but no dry-run listed it yet.
    DeletePending,
    /// Nobody can be on the code now.
    NoMembers,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub action: Action,
    pub members: Vec<String>,
    pub why: String,
    pub qr_code: Option<String>,
    pub config_id: Option<String>,
}

fn err(e: sqlx::Error) -> String {
    format!("the store: {e}")
}

fn refusal(e: Exchange) -> String {
    match e.delivery {
        crate::channels::Delivery::Retry { reason, .. }
        | crate::channels::Delivery::Permanent { reason }
        | crate::channels::Delivery::Wait { reason, .. } => reason,
        crate::channels::Delivery::Delivered { .. } => "no answer".into(),
    }
}

/// `nurture wecom sync` for one wecom channel. `dry_run`: nothing is
/// called; codes whose file is gone are marked as listed. `only_update`:
/// the daemon's minute look (no creation, no deletion).
pub async fn sync(
    api: &WecomApi,
    store: &Store,
    project: &Project,
    channel: &str,
    dry_run: bool,
    only_update: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Line>, (Vec<Line>, String)> {
    let mut lines = Vec::new();
    let known = match stored(store).await {
        Ok(k) => k,
        Err(e) => return Err((lines, err(e))),
    };
    let ways: Vec<&ContactWay> = project
        .contact_ways
        .iter()
        .filter(|w| contact_ways::channel_of(w, &project.settings) == Some(channel))
        .collect();
    for way in &ways {
        let (body, members, why) = match desired(store, project, way, now).await {
            Ok(d) => d,
            Err(e) => return Err((lines, err(e))),
        };
        let old = known.iter().find(|k| k.name == way.name);
        let mut line = Line {
            name: way.name.clone(),
            action: Action::Unchanged,
            members,
            why,
            qr_code: old.and_then(|o| o.qr_code.clone()),
            config_id: old.map(|o| o.config_id.clone()),
        };
        if body["user"].as_array().is_none_or(|u| u.is_empty()) {
            line.action = Action::NoMembers;
            lines.push(line);
            continue;
        }
        line.action = match old {
            None => Action::Create,
            Some(o) if o.pushed.get("type") != body.get("type") => Action::Recreate,
            Some(o) if o.pushed != body => Action::Update,
            Some(_) => Action::Unchanged,
        };
        if dry_run || line.action == Action::Unchanged {
            lines.push(line);
            continue;
        }
        if only_update && line.action != Action::Update {
            continue;
        }
        if line.action == Action::Recreate
            && let Some(o) = old
        {
            if let Err(e) = api
                .post(DEL_CONTACT_WAY, &json!({ "config_id": o.config_id }))
                .await
            {
                return Err((lines, refusal(e)));
            }
            if let Err(e) = forget(store, &o.name).await {
                return Err((lines, err(e)));
            }
        }
        match (&line.action, old) {
            (Action::Update, Some(o)) => {
                let mut upd = body.clone();
                let m = upd.as_object_mut().expect("an object");
                m.remove("type");
                m.remove("scene");
                m.insert("config_id".into(), json!(o.config_id));
                if let Err(e) = api.post(UPDATE_CONTACT_WAY, &upd).await {
                    return Err((lines, refusal(e)));
                }
                if let Err(e) = pushed(store, &way.name, &body, now).await {
                    return Err((lines, err(e)));
                }
            }
            _ => {
                let answer = match api.post(ADD_CONTACT_WAY, &body).await {
                    Ok(a) => a,
                    Err(e) => return Err((lines, refusal(e))),
                };
                let Some(config_id) = answer.json.get("config_id").and_then(Value::as_str) else {
                    return Err((lines, "add_contact_way answered without a config_id".into()));
                };
                let qr = answer
                    .json
                    .get("qr_code")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Err(e) = created(
                    store,
                    &way.name,
                    channel,
                    config_id,
                    qr.as_deref(),
                    &body,
                    now,
                )
                .await
                {
                    return Err((lines, err(e)));
                }
                line.config_id = Some(config_id.to_string());
                line.qr_code = qr;
            }
        }
        lines.push(line);
    }
    if only_update {
        return Ok(lines);
    }
    for gone in known
        .iter()
        .filter(|k| k.channel == channel && !project.contact_ways.iter().any(|w| w.name == k.name))
    {
        let mut line = Line {
            name: gone.name.clone(),
            action: Action::Delete,
            members: Vec::new(),
            why: "its file is gone".into(),
            qr_code: gone.qr_code.clone(),
            config_id: Some(gone.config_id.clone()),
        };
        if dry_run {
            if let Err(e) =
                crate::store::wecom::contact_ways::delete_listed(store, &gone.name, to_ms(now))
                    .await
            {
                return Err((lines, err(e)));
            }
        } else if gone.delete_listed_at.is_none() {
            line.action = Action::DeletePending;
        } else {
            match api
                .post(DEL_CONTACT_WAY, &json!({ "config_id": gone.config_id }))
                .await
            {
                Ok(_) => {}
                // 41044-style "not found" answers are not distinguished: the
                // row stays and the next sync says so again.
                Err(e) => return Err((lines, refusal(e))),
            }
            if let Err(e) = forget(store, &gone.name).await {
                return Err((lines, err(e)));
            }
        }
        lines.push(line);
    }
    Ok(lines)
}

use crate::store::wecom::contact_ways::{created, forget, pushed};
