//! A transfer (`kind: transfer`, queued by an `assign` step):
//! `transfer_customer` from a member who is a follow-user of the customer,
//! or the resigned transfer, within WeCom's limits.

use std::time::Duration;

use serde_json::{Value, json};

use super::{TRANSFER_CUSTOMER, WecomChannel, api, now_ms, permanent, resigned, tasks};
use crate::channels::{Delivery, Exchange, OutMessage};
use crate::store::states::WecomTaskKind;
use crate::wecom::sender;

impl WecomChannel {
    /// `transfer_customer` of one customer. The handover member must be a
    /// follow-user of the customer (else WeCom answers 40131): the payload's
    /// `handover_userid` (the previous owner) when it is one, else the
    /// follow-user who added the customer most recently ([`sender::handover`]).
    /// A takeover member who already is a follow-user needs no transfer.
    pub(super) async fn transfer(&self, msg: &OutMessage) -> Exchange {
        let field = |k: &str| {
            msg.payload
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let Some(takeover) = field("takeover_userid") else {
            return permanent("wecom: a transfer needs takeover_userid");
        };
        if msg.to.trim().is_empty() {
            return permanent("wecom: the contact has no wecom_external_userid to transfer");
        }
        let wanted = field("handover_userid");
        if let Some(store) = self.store.as_ref() {
            let retry = |e: sqlx::Error| -> Exchange {
                Delivery::Retry {
                    after: None,
                    reason: format!("wecom: cannot read the customer's transfers: {e}"),
                }
                .into()
            };
            let left = match store.wecom().resigned_handover(&msg.to).await {
                Ok(l) => l.filter(|r| r.handover_userid != takeover),
                Err(e) => return retry(e),
            };
            let since = now_ms() - resigned::TRANSFER_WINDOW_MS;
            let started = match store.wecom().transfers_started(&msg.to, since).await {
                Ok(s) => s,
                Err(e) => return retry(e),
            };
            match resigned::held_by_limits(&started, left.as_ref(), now_ms()) {
                // Waiting for a takeover is no failure of this transfer.
                Some(resigned::Held {
                    limit: resigned::Limit::TakeoverPending,
                    frees_at: Some(at),
                    reason,
                }) => {
                    let wait = u64::try_from(at - now_ms()).unwrap_or(0);
                    return Delivery::Wait {
                        after: Duration::from_millis(wait.max(1_000)),
                        reason: format!("wecom: {}: {reason}", msg.to),
                    }
                    .into();
                }
                Some(h) => return permanent(&format!("wecom: {}: {}", msg.to, h.reason)),
                None => {}
            }
            // A member who left still holds the customer: only the resigned
            // transfer moves it (the member cannot hand over any more).
            if let Some(r) = left {
                let note = Some(format!(
                    "handed over from {} (left the company) with the resigned transfer",
                    r.handover_userid
                ));
                return self
                    .start_transfer(
                        msg,
                        resigned::RESIGNED_TRANSFER_CUSTOMER,
                        WecomTaskKind::Resigned,
                        r.handover_userid,
                        takeover,
                        note,
                    )
                    .await;
            }
        }
        let (handover, note) = match self.store.as_ref() {
            Some(store) => {
                let rels = match self.relationships(store, &msg.to).await {
                    Ok(r) => r,
                    Err(e) => return e,
                };
                match sender::handover(wanted.as_deref(), &takeover, &rels) {
                    Ok(Some(s)) => (s.userid, s.note),
                    Ok(None) => {
                        tracing::info!(message = %msg.id, customer = %msg.to, %takeover,
                            "wecom transfer not needed: the takeover member already is a follow-user");
                        return Delivery::Delivered { provider_id: None }.into();
                    }
                    Err(reason) => return permanent(&format!("wecom: {reason}")),
                }
            }
            None => match wanted {
                Some(w) => (w, None),
                None => return permanent("wecom: a transfer needs handover_userid"),
            },
        };
        if let Some(n) = &note {
            tracing::info!(message = %msg.id, %n, "wecom transfer not from the previous owner");
        }
        self.start_transfer(
            msg,
            TRANSFER_CUSTOMER,
            WecomTaskKind::Transfer,
            handover,
            takeover,
            note,
        )
        .await
    }

    /// `transfer_customer` or `resigned/transfer_customer` (`path`) of the
    /// message's customer; per-customer errcode 0 records a task of `kind`.
    pub(super) async fn start_transfer(
        &self,
        msg: &OutMessage,
        path: &str,
        kind: WecomTaskKind,
        handover: String,
        takeover: String,
        note: Option<String>,
    ) -> Exchange {
        let body = json!({
            "handover_userid": handover,
            "takeover_userid": takeover,
            "external_userid": [msg.to],
        });
        let answer = match self.api.post(path, &body).await {
            Ok(a) => a,
            Err(e) => return e,
        };
        let code = answer
            .json
            .get("customer")
            .and_then(Value::as_array)
            .and_then(|l| {
                l.iter()
                    .find(|c| c.get("external_userid").and_then(Value::as_str) == Some(&msg.to))
            })
            .and_then(|c| c.get("errcode").and_then(Value::as_i64));
        match code {
            Some(0) => {
                let task = tasks::Task {
                    message_id: msg.id.clone(),
                    channel: self.config.name.clone(),
                    kind,
                    contact_id: msg.contact_id.clone(),
                    external_userid: msg.to.clone(),
                    userid: handover,
                    takeover_userid: Some(takeover),
                    msgid: None,
                    note,
                    created_at: now_ms(),
                    checks: 0,
                };
                self.record(&task).await;
                answer.exchange(Delivery::Delivered { provider_id: None })
            }
            Some(c) => {
                let d = api::errcode_delivery(TRANSFER_CUSTOMER, c, &json!({"errcode": c}));
                answer.exchange(d)
            }
            None => answer.exchange(Delivery::Permanent {
                reason: format!("wecom: {path}'s answer does not mention {}", msg.to),
            }),
        }
    }
}
