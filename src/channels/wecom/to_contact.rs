//! A message to a contact (no `kind`): its welcome code's `send_welcome_msg`
//! when the callback stored one for it, else an `add_msg_template` task from
//! a member the customer is a friend of (see [`crate::wecom::sender`]).

use serde_json::{Value, json};

use super::{
    ADD_MSG_TEMPLATE, CUSTOMER_TEXT_MAX, WecomChannel, is_errcode, media, now_ms, permanent, tasks,
};
use crate::channels::{Delivery, Exchange, OutMessage};
use crate::store::Store;
use crate::store::states::WecomTaskKind;
use crate::store::wecom::relationships::{self, Relationship};
use crate::wecom::sender;

impl WecomChannel {
    pub(super) async fn to_contact(&self, msg: &OutMessage) -> Exchange {
        if msg.to.trim().is_empty() {
            return permanent("wecom: the contact has no wecom_external_userid");
        }
        if msg.body.len() > CUSTOMER_TEXT_MAX {
            return permanent(&format!(
                "wecom: the text is {} bytes; WeCom takes at most {CUSTOMER_TEXT_MAX}",
                msg.body.len()
            ));
        }
        // Attachments first: an upload takes time, and a welcome code is
        // good for 20 s from the add.
        let attachments = match media::of_payload(&msg.payload) {
            Ok(a) => a,
            Err(reason) => return permanent(&reason),
        };
        let built = match media::build(
            &self.api,
            self.store.as_ref(),
            &self.config.name,
            &self.config.root,
            &attachments,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return e,
        };
        if let Some(store) = self.store.as_ref() {
            let taken = store
                .wecom()
                .take_welcome_code(&msg.contact_id, &msg.id, now_ms())
                .await;
            match taken {
                Ok(Some(code)) => return self.welcome(store, msg, &code, &built).await,
                Ok(None) => {}
                Err(e) => {
                    // Not knowing whether a code exists: a mass task now could
                    // duplicate the welcome the retry may still send.
                    return Delivery::Retry {
                        after: None,
                        reason: format!("wecom: cannot read welcome codes: {e}"),
                    }
                    .into();
                }
            }
        }
        self.mass_task(msg, &built).await
    }

    /// WeCom refused a media id of this message (40007): forget the ids so
    /// the retry uploads the files again.
    pub(super) async fn media_refused(&self, built: &media::Built, e: Exchange) -> Exchange {
        media::forget(self.store.as_ref(), &self.config.name, built).await;
        match e.delivery {
            Delivery::Permanent { reason } => Delivery::Retry {
                after: None,
                reason: format!("{reason} (the attachments are uploaded again)"),
            }
            .into(),
            _ => e,
        }
    }

    /// `add_msg_template` for one customer, from a member the customer is a
    /// friend of (see [`crate::wecom::sender`]).
    pub(super) async fn mass_task(&self, msg: &OutMessage, built: &media::Built) -> Exchange {
        let sender::Sender {
            userid: sender,
            note,
        } = match self.choose_sender(msg).await {
            Ok(s) => s,
            Err(e) => return e,
        };
        let mut body = json!({
            "chat_type": "single",
            "external_userid": [msg.to],
            "sender": sender,
            "text": { "content": msg.body },
        });
        if !built.json.is_empty() {
            body["attachments"] = json!(built.json);
        }
        let answer = match self.api.post(ADD_MSG_TEMPLATE, &body).await {
            Ok(a) => a,
            Err(e) if is_errcode(&e, media::INVALID_MEDIA_ID) => {
                return self.media_refused(built, e).await;
            }
            Err(mut e) => {
                // Say who sent it when WeCom refused the task (41048: nobody
                // in it can be sent to).
                if let (Some(n), Delivery::Permanent { reason }) = (&note, &mut e.delivery) {
                    reason.push_str(&format!("; {n}"));
                }
                return e;
            }
        };
        let failed = answer
            .json
            .get("fail_list")
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(msg.to.as_str())));
        if failed {
            return answer.exchange(Delivery::Permanent {
                reason: format!(
                    "wecom: {} is in add_msg_template's fail_list: WeCom cannot send to them from {sender} (not a friend, or an invalid id){}",
                    msg.to,
                    note.as_deref().map(|n| format!("; {n}")).unwrap_or_default()
                ),
            });
        }
        let Some(msgid) = answer
            .json
            .get("msgid")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
        else {
            // errcode 0 without a task id: WeCom created nothing we can follow.
            return answer.exchange(Delivery::Permanent {
                reason: "wecom: add_msg_template answered without a msgid".into(),
            });
        };
        if let Some(n) = &note {
            tracing::info!(message = %msg.id, %n, "wecom mass task not from the owner");
        }
        let task = tasks::Task {
            message_id: msg.id.clone(),
            channel: self.config.name.clone(),
            kind: WecomTaskKind::Mass,
            contact_id: msg.contact_id.clone(),
            external_userid: msg.to.clone(),
            userid: sender,
            takeover_userid: None,
            msgid: Some(msgid.clone()),
            note,
            created_at: now_ms(),
            checks: 0,
        };
        self.record(&task).await;
        answer.exchange(Delivery::Delivered {
            provider_id: Some(msgid),
        })
    }

    /// The `wecom_userid` of the contact's salesperson, if it has one.
    pub(super) fn owner_userid(&self, msg: &OutMessage) -> Option<String> {
        let owner = msg
            .contact
            .get("owner")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())?;
        self.config.senders.get(owner).cloned()
    }

    /// The owner's `wecom_userid`, or the reason a mass message cannot be
    /// sent without one (no store: no relationships to pick from).
    pub(super) fn owner_required(&self, msg: &OutMessage) -> Result<String, String> {
        let owner = msg
            .contact
            .get("owner")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())
            .ok_or_else(|| {
                format!(
                    "wecom: contact {} has no owner: a mass message needs the salesperson who sends it (assign one first)",
                    msg.contact_id
                )
            })?;
        self.config.senders.get(owner).cloned().ok_or_else(|| {
            format!(
                "wecom: salesperson {owner:?} (owner of contact {}) has no wecom_userid in the settings' teams",
                msg.contact_id
            )
        })
    }

    /// The customer's relationships as nurture knows them; when it knows
    /// none, read from WeCom (`externalcontact/get`) and recorded first.
    pub(super) async fn relationships(
        &self,
        store: &Store,
        external_userid: &str,
    ) -> Result<Vec<Relationship>, Exchange> {
        let retry = |what: &str, e: &dyn std::fmt::Display| -> Exchange {
            Delivery::Retry {
                after: None,
                reason: format!("wecom: cannot {what} the customer's relationships: {e}"),
            }
            .into()
        };
        let known = store
            .wecom()
            .relationships_of(external_userid)
            .await
            .map_err(|e| retry("read", &e))?;
        if !known.is_empty() {
            return Ok(known);
        }
        let Some(reader) = &self.reader else {
            return Ok(known);
        };
        match reader.follow_users(external_userid).await {
            Ok(Some(list)) => {
                relationships::record_list(store, external_userid, &list, "get", now_ms())
                    .await
                    .map_err(|e| retry("record", &e))?;
                self.marks_queued.notify();
                store
                    .wecom()
                    .relationships_of(external_userid)
                    .await
                    .map_err(|e| retry("read", &e))
            }
            Ok(None) => Ok(known),
            Err(d) => Err(d.into()),
        }
    }

    /// The member a mass message goes out from (see [`crate::wecom::sender`]). Without a
    /// store there is nothing to look at and the owner sends.
    pub(super) async fn choose_sender(&self, msg: &OutMessage) -> Result<sender::Sender, Exchange> {
        let Some(store) = self.store.as_ref() else {
            return match self.owner_required(msg) {
                Ok(userid) => Ok(sender::Sender { userid, note: None }),
                Err(reason) => Err(permanent(&reason)),
            };
        };
        let rels = self.relationships(store, &msg.to).await?;
        let latest = match store
            .wecom()
            .latest_transfer(&self.config.name, &msg.contact_id)
            .await
        {
            Ok(l) => l,
            // A task from the wrong member is lost ("not a friend"): wait
            // rather than guess.
            Err(e) => {
                return Err(Delivery::Retry {
                    after: None,
                    reason: format!("wecom: cannot read the contact's transfers: {e}"),
                }
                .into());
            }
        };
        let owner = self.owner_userid(msg);
        sender::choose(owner.as_deref(), &rels, latest.as_ref())
            .map_err(|reason| permanent(&format!("wecom: {} not sent: {reason}", msg.to)))
    }
}
