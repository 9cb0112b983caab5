//! The `wecom` channel (企业微信, reference/channel-apis.md §1).
//!
//! One outbox message is one WeCom call, chosen by the message's payload:
//! - **to a contact** (no `kind`): if the callback stored a welcome code for
//!   the contact less than 20 s ago and nobody used it, `send_welcome_msg`
//!   with the code (taken atomically: used once). Otherwise an
//!   `add_msg_template` task (`chat_type: single`, the contact's
//!   `external_userid`, `sender` = the `wecom_userid` of the contact's
//!   salesperson in the settings' teams; while a transfer of the contact to
//!   that salesperson is not done, the handover member's: see [`sender`]).
//!   WeCom only creates a task: the
//!   salesperson confirms it in the client, so the outbox row is `sent` with
//!   the task's `msgid`, and the poller ([`poll`]) later records whether the
//!   customer got it (sent / not a friend / over the cap).
//! - **a notice** (`{"kind":"notice"}`) to a salesperson's `wecom_userid`:
//!   `message/send` from the app `agent_id`, with WeCom's duplicate check on
//!   (an identical notice within 30 min is not shown twice).
//! - **a transfer** (`{"kind":"transfer","handover_userid","takeover_userid"}`,
//!   queued by an `assign` step): `transfer_customer`; per-customer errcode 0
//!   means the handover started, and the poller records `transfer_result`.
//!
//! Tokens, errcodes: see [`token`], [`errcode`] and [`api`]. Like every
//! adapter this one never retries or sleeps itself, except the one retry with
//! a new token that WeCom's protocol calls for.
//!
//! Not idempotent on WeCom's side: `add_msg_template` and `transfer_customer`
//! have no idempotency key, so a crash between WeCom's answer and the outbox
//! write (a lease that expires) can create a second task for the salesperson
//! to confirm. `message/send` is protected by its duplicate check.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Channel, Delivery, Exchange, OutMessage};
use crate::store::Store;

pub mod api;
pub mod contact_tags;
pub mod errcode;
pub mod poll;
pub mod sender;
pub mod tasks;
pub mod token;

use api::WecomApi;

/// WeCom's API host.
pub const DEFAULT_BASE_URL: &str = "https://qyapi.weixin.qq.com";
/// How often pending tasks are looked at, unless `poll_interval` says.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);

pub const ADD_MSG_TEMPLATE: &str = "/cgi-bin/externalcontact/add_msg_template";
pub const SEND_WELCOME: &str = "/cgi-bin/externalcontact/send_welcome_msg";
pub const MESSAGE_SEND: &str = "/cgi-bin/message/send";
pub const TRANSFER_CUSTOMER: &str = "/cgi-bin/externalcontact/transfer_customer";
pub const SEND_RESULT: &str = "/cgi-bin/externalcontact/get_groupmsg_send_result";
pub const TRANSFER_RESULT: &str = "/cgi-bin/externalcontact/transfer_result";

/// Text limits (bytes): customer messages and welcome messages 4,000, app
/// messages 2,048 (reference §1.2–§1.4). Longer text is refused before the
/// call rather than cut: a cut message would say something else.
const CUSTOMER_TEXT_MAX: usize = 4_000;
const NOTICE_TEXT_MAX: usize = 2_048;

/// A channel's options, from its settings.
#[derive(Clone)]
pub struct WecomConfig {
    /// The channel's name (tasks are recorded under it).
    pub name: String,
    pub base_url: reqwest::Url,
    pub corp_id: String,
    pub secret: String,
    /// The app that sends notices to salespeople.
    pub agent_id: i64,
    /// The per-customer mass-message cap the corp's admin chose (`month`,
    /// `week`, `day`, ...): only used in reasons and notes.
    pub mass_message_cap: Option<String>,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub max_idle: usize,
    /// Salesperson id → `wecom_userid`, from the settings' teams.
    pub senders: HashMap<String, String>,
}

impl std::fmt::Debug for WecomConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("corp_id", &self.corp_id)
            .field("secret", &"..")
            .field("agent_id", &self.agent_id)
            .finish()
    }
}

impl WecomConfig {
    pub fn api(&self) -> Result<WecomApi, String> {
        WecomApi::new(
            &self.base_url,
            self.corp_id.clone(),
            self.secret.clone(),
            self.timeout,
            self.max_idle,
        )
    }
}

pub struct WecomChannel {
    config: WecomConfig,
    api: WecomApi,
    /// Welcome codes and task records. Without a store (e.g. `validate`
    /// building channels only to check them) every contact send is a mass
    /// task and its outcome is not polled.
    store: Option<Store>,
}

impl WecomChannel {
    pub fn new(config: WecomConfig, store: Option<Store>) -> Result<WecomChannel, String> {
        Ok(WecomChannel {
            api: config.api()?,
            config,
            store,
        })
    }

    /// The API client (tests look at its token cache).
    pub fn api(&self) -> &WecomApi {
        &self.api
    }

    async fn deliver(&self, msg: &OutMessage) -> Exchange {
        match msg.payload.get("kind").and_then(Value::as_str) {
            None => self.to_contact(msg).await,
            Some("notice") => self.notice(msg).await,
            Some("transfer") => self.transfer(msg).await,
            Some(other) => Delivery::Permanent {
                reason: format!("wecom: unknown payload kind {other:?}"),
            }
            .into(),
        }
    }

    async fn to_contact(&self, msg: &OutMessage) -> Exchange {
        if msg.to.trim().is_empty() {
            return permanent("wecom: the contact has no wecom_external_userid");
        }
        if msg.body.len() > CUSTOMER_TEXT_MAX {
            return permanent(&format!(
                "wecom: the text is {} bytes; WeCom takes at most {CUSTOMER_TEXT_MAX}",
                msg.body.len()
            ));
        }
        let pool = self.store.as_ref().map(Store::db);
        if let Some(pool) = pool {
            match tasks::take_welcome_code(pool, &msg.contact_id, now_ms()).await {
                Ok(Some(code)) => return self.welcome(pool, msg, &code).await,
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
        self.mass_task(msg).await
    }

    /// `send_welcome_msg` with a code taken for this message.
    async fn welcome(&self, pool: &sqlx::AnyPool, msg: &OutMessage, code: &str) -> Exchange {
        let release = || async {
            if let Err(err) = tasks::release_welcome_code(pool, &msg.contact_id, code).await {
                tracing::warn!(error = %err, "cannot give a welcome code back");
            }
        };
        // No token, no call: the code was not used and a retry may still be
        // inside its 20 s.
        if let Err(e) = self.api.ensure_token().await {
            release().await;
            return e;
        }
        let body = json!({ "welcome_code": code, "text": { "content": msg.body } });
        match self.api.post(SEND_WELCOME, &body).await {
            Ok(a) => a.exchange(Delivery::Delivered { provider_id: None }),
            Err(e) => {
                // WeCom answered "busy": the code was not used, and a retry
                // may still be inside its 20 s. (After a timeout nobody knows,
                // so the code stays used and the retry becomes a mass task.)
                if matches!(e.delivery, Delivery::Retry { .. }) && e.answer.is_some() {
                    release().await;
                }
                e
            }
        }
    }

    /// `add_msg_template` for one customer, from their salesperson (or,
    /// during a transfer, from the member the customer is still a friend of).
    async fn mass_task(&self, msg: &OutMessage) -> Exchange {
        let owner = match self.sender_of(msg) {
            Ok(s) => s,
            Err(reason) => return permanent(&reason),
        };
        let sender::Sender {
            userid: sender,
            note,
        } = match self.choose_sender(msg, &owner).await {
            Ok(s) => s,
            Err(e) => return e,
        };
        let body = json!({
            "chat_type": "single",
            "external_userid": [msg.to],
            "sender": sender,
            "text": { "content": msg.body },
        });
        let answer = match self.api.post(ADD_MSG_TEMPLATE, &body).await {
            Ok(a) => a,
            Err(e) => return e,
        };
        let failed = answer
            .json
            .get("fail_list")
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(msg.to.as_str())));
        if failed {
            return answer.exchange(Delivery::Permanent {
                reason: format!(
                    "wecom: {} is in add_msg_template's fail_list: not a friend of {sender} (or over the mass-message cap{}){}",
                    msg.to,
                    self.cap_note(),
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
        let task = tasks::Task {
            message_id: msg.id.clone(),
            channel: self.config.name.clone(),
            kind: "mass".into(),
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

    /// The `wecom_userid` of the contact's salesperson.
    fn sender_of(&self, msg: &OutMessage) -> Result<String, String> {
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

    /// The owner, unless the contact's latest transfer to them is not done
    /// yet (or was refused): then the handover member, with a note saying
    /// why. Without a store there is nothing to look at and the owner sends.
    async fn choose_sender(
        &self,
        msg: &OutMessage,
        owner: &str,
    ) -> Result<sender::Sender, Exchange> {
        let Some(pool) = self.store.as_ref().map(Store::db) else {
            return Ok(sender::choose(owner, None));
        };
        match tasks::latest_transfer(pool, &self.config.name, &msg.contact_id).await {
            Ok(latest) => Ok(sender::choose(owner, latest.as_ref())),
            // A task from the wrong member is lost ("not a friend"): wait
            // rather than guess.
            Err(e) => Err(Delivery::Retry {
                after: None,
                reason: format!("wecom: cannot read the contact's transfers: {e}"),
            }
            .into()),
        }
    }

    fn cap_note(&self) -> String {
        match &self.config.mass_message_cap {
            Some(c) => format!("; cap per {c}"),
            None => String::new(),
        }
    }

    /// `message/send` to a salesperson.
    async fn notice(&self, msg: &OutMessage) -> Exchange {
        if msg.to.trim().is_empty() {
            return permanent("wecom: the salesperson has no wecom_userid");
        }
        if msg.body.len() > NOTICE_TEXT_MAX {
            return permanent(&format!(
                "wecom: the notice is {} bytes; app messages take at most {NOTICE_TEXT_MAX}",
                msg.body.len()
            ));
        }
        let body = json!({
            "touser": msg.to,
            "msgtype": "text",
            "agentid": self.config.agent_id,
            "text": { "content": msg.body },
            "safe": 0,
            "enable_duplicate_check": 1,
            "duplicate_check_interval": 1800,
        });
        let answer = match self.api.post(MESSAGE_SEND, &body).await {
            Ok(a) => a,
            Err(e) => return e,
        };
        let invalid = answer
            .json
            .get("invaliduser")
            .and_then(Value::as_str)
            .unwrap_or("");
        if invalid.split('|').any(|u| u == msg.to) {
            return answer.exchange(Delivery::Permanent {
                reason: format!(
                    "wecom: {} is not a member the app {} can reach (invaliduser)",
                    msg.to, self.config.agent_id
                ),
            });
        }
        let provider_id = answer
            .json
            .get("msgid")
            .and_then(Value::as_str)
            .map(str::to_string);
        answer.exchange(Delivery::Delivered { provider_id })
    }

    /// `transfer_customer` of one customer.
    async fn transfer(&self, msg: &OutMessage) -> Exchange {
        let field = |k: &str| {
            msg.payload
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let (Some(handover), Some(takeover)) = (field("handover_userid"), field("takeover_userid"))
        else {
            return permanent("wecom: a transfer needs handover_userid and takeover_userid");
        };
        if msg.to.trim().is_empty() {
            return permanent("wecom: the contact has no wecom_external_userid to transfer");
        }
        let body = json!({
            "handover_userid": handover,
            "takeover_userid": takeover,
            "external_userid": [msg.to],
        });
        let answer = match self.api.post(TRANSFER_CUSTOMER, &body).await {
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
                    kind: "transfer".into(),
                    contact_id: msg.contact_id.clone(),
                    external_userid: msg.to.clone(),
                    userid: handover,
                    takeover_userid: Some(takeover),
                    msgid: None,
                    note: None,
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
                reason: format!(
                    "wecom: transfer_customer's answer does not mention {}",
                    msg.to
                ),
            }),
        }
    }

    /// Records a task for the poller. WeCom already accepted the call, so a
    /// failure here is logged, not turned into a retry (which would create a
    /// second task).
    async fn record(&self, task: &tasks::Task) {
        let Some(pool) = self.store.as_ref().map(Store::db) else {
            return;
        };
        let first = now_ms() + poll::millis(self.config.poll_interval);
        if let Err(e) = tasks::record(pool, task, first).await {
            tracing::warn!(message = %task.message_id, error = %e,
                "wecom accepted the call but its task could not be recorded; its outcome will not be polled");
        }
    }
}

impl Channel for WecomChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        Box::pin(self.deliver(msg))
    }
}

fn permanent(reason: &str) -> Exchange {
    Delivery::Permanent {
        reason: reason.to_string(),
    }
    .into()
}

pub(crate) fn now_ms() -> i64 {
    crate::store::to_ms(chrono::Utc::now())
}
