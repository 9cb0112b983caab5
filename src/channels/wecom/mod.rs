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
//! have no idempotency key. A task WeCom accepted is recorded right away, so
//! a message reclaimed after a crash (`in_doubt`) whose task is recorded is
//! not sent again; only a crash between WeCom's answer and that record can
//! create a second task for the salesperson to confirm. `message/send` is
//! protected by its duplicate check. `send_welcome_msg` can be neither
//! recorded first nor asked about: a message that took a welcome code and
//! then lost its outcome (reclaimed, or no answer) is delivered at most
//! once: it is not sent again as a mass task (`welcome_in_doubt`).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Channel, Delivery, Exchange, OutMessage};
use crate::store::Store;
use crate::store::states::WecomTaskKind;
use crate::store::wecom::relationships::{self, Relationship};
use crate::wecom::sender;

pub mod api;
pub mod contact_tags;
pub mod contact_way;
pub mod errcode;
pub mod follow_sync;
pub mod media;
pub mod pacing;
pub mod poll;
pub mod queue;
pub mod resigned;
pub mod tag_marks;
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
pub const REMIND_GROUPMSG_SEND: &str = "/cgi-bin/externalcontact/remind_groupmsg_send";

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
    /// Remind a salesperson who has not confirmed a mass task this long
    /// after it was created, and again after as long (at most 3 a day,
    /// WeCom's limit); `None`: no reminders.
    pub remind_after: Option<Duration>,
    pub timeout: Duration,
    pub max_idle: usize,
    /// Salesperson id → `wecom_userid`, from the settings' teams.
    pub senders: HashMap<String, String>,
    /// The project folder: attachment files' paths are taken from it.
    pub root: std::path::PathBuf,
    /// The daemon's token caches: every API client built from this config
    /// shares the app's token with the others the daemon built.
    pub tokens: token::TokenCaches,
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
            &self.tokens,
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
    /// Reads a customer's relationships (`externalcontact/get`) when the
    /// store has none (with the same token cache as `api`).
    reader: Option<contact_tags::TagReader>,
    /// Notices per salesperson, held to WeCom's per-member limits.
    pacing: pacing::Pacing,
    /// The marks worker's wake-up (relationships read here may take marks).
    marks_queued: crate::wecom::tag_marks::MarksQueued,
}

impl WecomChannel {
    pub fn new(
        config: WecomConfig,
        store: Option<Store>,
        marks_queued: crate::wecom::tag_marks::MarksQueued,
    ) -> Result<WecomChannel, String> {
        Ok(WecomChannel {
            marks_queued,
            api: config.api()?,
            reader: match store {
                Some(_) => Some(contact_tags::TagReader::new(&config)?),
                None => None,
            },
            config,
            store,
            pacing: pacing::Pacing::default(),
        })
    }

    /// The API client (tests look at its token cache).
    pub fn api(&self) -> &WecomApi {
        &self.api
    }

    async fn deliver(&self, msg: &OutMessage) -> Exchange {
        use crate::store::states::MessageKind;
        let kind = match msg.kind() {
            Ok(k) => k,
            Err(other) => {
                return Delivery::Permanent {
                    reason: format!("wecom: unknown payload kind {other:?}"),
                }
                .into();
            }
        };
        if msg.in_doubt
            && matches!(kind, MessageKind::Message | MessageKind::Transfer)
            && let Some(e) = self.already_accepted(msg).await
        {
            return e;
        }
        if (msg.in_doubt || msg.attempt > 1)
            && kind == MessageKind::Message
            && let Some(e) = self.welcome_in_doubt(msg).await
        {
            return e;
        }
        match kind {
            MessageKind::Message => self.to_contact(msg).await,
            MessageKind::Notice => self.notice(msg).await,
            MessageKind::Transfer => self.transfer(msg).await,
            // A webhook step's call is queued on its own webhook channel.
            MessageKind::Webhook => Delivery::Permanent {
                reason: "wecom: a webhook call cannot go out on a wecom channel".into(),
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
    async fn media_refused(&self, built: &media::Built, e: Exchange) -> Exchange {
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

    /// Asks before sending a message again that an earlier call, cut short
    /// by a crash, may have handed to WeCom: a task recorded for it means
    /// WeCom accepted it (delivered, with the recorded `msgid`); a store
    /// that cannot tell means not sending now. `None`: send.
    async fn already_accepted(&self, msg: &OutMessage) -> Option<Exchange> {
        let store = self.store.as_ref()?;
        match store.wecom().task_of_message(&msg.id).await {
            Ok(Some(task)) => {
                tracing::info!(message = %msg.id, kind = %task.kind,
                    "wecom already accepted this message before the worker stopped (task recorded); not sent again");
                Some(
                    Delivery::Delivered {
                        provider_id: task.msgid,
                    }
                    .into(),
                )
            }
            Ok(None) => None,
            Err(e) => Some(
                Delivery::Retry {
                    after: None,
                    reason: format!(
                        "wecom: cannot tell whether an earlier call was accepted (reading its task: {e}); not sending until it can"
                    ),
                }
                .into(),
            ),
        }
    }

    /// A message tried before (reclaimed after its worker died, or retried
    /// after a call that got no answer) that had taken its contact's welcome
    /// code and not given it back: its `send_welcome_msg` may have reached
    /// WeCom, and WeCom cannot be asked whether a welcome went out (no id,
    /// no look-up). Sending it again as a mass task could greet the customer
    /// twice, so it is recorded as delivered, at most once, with the doubt
    /// in the log. A code WeCom refused (41050) is no longer this message's
    /// ([`tasks::welcome_code_refused`]): that message goes on as a mass
    /// task, whose record [`Self::already_accepted`] finds once WeCom took
    /// it. `None`: this message holds no code; send.
    async fn welcome_in_doubt(&self, msg: &OutMessage) -> Option<Exchange> {
        let store = self.store.as_ref()?;
        match store.wecom().welcome_taken_by(&msg.contact_id, &msg.id).await {
            Ok(true) => {
                tracing::warn!(message = %msg.id, contact = %msg.contact_id,
                    "wecom welcome in doubt: the worker stopped during send_welcome_msg, which WeCom cannot be asked about; not sent again as a mass task");
                Some(Delivery::Delivered { provider_id: None }.into())
            }
            Ok(false) => None,
            Err(e) => Some(
                Delivery::Retry {
                    after: None,
                    reason: format!(
                        "wecom: cannot tell whether an earlier welcome was sent (reading its code: {e}); not sending until it can"
                    ),
                }
                .into(),
            ),
        }
    }

    /// `send_welcome_msg` with a code taken for this message.
    async fn welcome(
        &self,
        store: &Store,
        msg: &OutMessage,
        code: &str,
        built: &media::Built,
    ) -> Exchange {
        let release = || async {
            if let Err(err) = store
                .wecom()
                .release_welcome_code(&msg.contact_id, code)
                .await
            {
                tracing::warn!(error = %err, "cannot give a welcome code back");
            }
        };
        // No token, no call: the code was not used and a retry may still be
        // inside its 20 s.
        if let Err(e) = self.api.ensure_token().await {
            release().await;
            return e;
        }
        let mut body = json!({ "welcome_code": code, "text": { "content": msg.body } });
        if !built.json.is_empty() {
            body["attachments"] = json!(built.json);
        }
        match self.api.post(SEND_WELCOME, &body).await {
            Ok(a) => a.exchange(Delivery::Delivered { provider_id: None }),
            // The code was not used: the retry may still be inside its 20 s.
            Err(e) if is_errcode(&e, media::INVALID_MEDIA_ID) => {
                release().await;
                self.media_refused(built, e).await
            }
            // 41050: the code is invalid, expired or used (an admin's console
            // welcome, a chat already started): the message still goes out,
            // as a mass task the salesperson confirms.
            Err(e) if is_errcode(&e, 41050) => {
                if let Err(err) = store
                    .wecom()
                    .welcome_code_refused(&msg.contact_id, code)
                    .await
                {
                    // Then a retry of the mass task below would take the
                    // welcome as in doubt: not sending is the safe side.
                    tracing::warn!(error = %err, "cannot record a refused welcome code");
                }
                tracing::info!(message = %msg.id, "wecom welcome code refused (41050); sending a mass task instead");
                self.mass_task(msg, built).await
            }
            Err(e) => {
                // WeCom answered "busy": the code was not used, and a retry
                // may still be inside its 20 s. (After a timeout nobody knows,
                // so the code stays this message's and the retry does not
                // send again: see `welcome_in_doubt`.)
                if matches!(e.delivery, Delivery::Retry { .. } | Delivery::Wait { .. })
                    && e.answer.is_some()
                {
                    release().await;
                }
                e
            }
        }
    }

    /// `add_msg_template` for one customer, from a member the customer is a
    /// friend of (see [`sender`]).
    async fn mass_task(&self, msg: &OutMessage, built: &media::Built) -> Exchange {
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
    fn owner_userid(&self, msg: &OutMessage) -> Option<String> {
        let owner = msg
            .contact
            .get("owner")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())?;
        self.config.senders.get(owner).cloned()
    }

    /// The owner's `wecom_userid`, or the reason a mass message cannot be
    /// sent without one (no store: no relationships to pick from).
    fn owner_required(&self, msg: &OutMessage) -> Result<String, String> {
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
    async fn relationships(
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

    /// The member a mass message goes out from (see [`sender`]). Without a
    /// store there is nothing to look at and the owner sends.
    async fn choose_sender(&self, msg: &OutMessage) -> Result<sender::Sender, Exchange> {
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

    /// `message/send` to a salesperson, paced to WeCom's per-member limits
    /// (see [`pacing`]).
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
        if let Err(wait) = self
            .pacing
            .reserve(self.store.as_ref(), &self.config.name, &msg.to)
            .await
        {
            return wait.into();
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
        // WeCom userids are case-insensitive and `invaliduser` comes back
        // lower-cased; `unlicenseduser` members did not get it either.
        let listed = |key: &str| {
            answer
                .json
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .split('|')
                .any(|u| u.trim().eq_ignore_ascii_case(msg.to.trim()))
        };
        if listed("invaliduser") {
            return answer.exchange(Delivery::Permanent {
                reason: format!(
                    "wecom: {} is not a member the app {} can reach (invaliduser)",
                    msg.to, self.config.agent_id
                ),
            });
        }
        if listed("unlicenseduser") {
            return answer.exchange(Delivery::Permanent {
                reason: format!(
                    "wecom: {} has no WeCom account licence: the notice was not delivered (unlicenseduser)",
                    msg.to
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

    /// `transfer_customer` of one customer. The handover member must be a
    /// follow-user of the customer (else WeCom answers 40131): the payload's
    /// `handover_userid` (the previous owner) when it is one, else the
    /// follow-user who added the customer most recently ([`sender::handover`]).
    /// A takeover member who already is a follow-user needs no transfer.
    async fn transfer(&self, msg: &OutMessage) -> Exchange {
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
    async fn start_transfer(
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

    /// Records a task for the poller. WeCom already accepted the call, so a
    /// failure here is logged, not turned into a retry (which would create a
    /// second task).
    async fn record(&self, task: &tasks::Task) {
        let Some(store) = self.store.as_ref() else {
            return;
        };
        let first = now_ms() + poll::millis(self.config.poll_interval);
        if let Err(e) = store.wecom().record_task(task, first).await {
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

/// Whether WeCom refused a call with `code` (the reason names it, see
/// [`api::errcode_reason`]).
fn is_errcode(e: &Exchange, code: i64) -> bool {
    match &e.delivery {
        Delivery::Permanent { reason }
        | Delivery::Retry { reason, .. }
        | Delivery::Wait { reason, .. } => reason.contains(&format!(" errcode {code} ")),
        Delivery::Delivered { .. } => false,
    }
}

fn permanent(reason: &str) -> Exchange {
    Delivery::Permanent {
        reason: reason.to_string(),
    }
    .into()
}

/// The WeCom code's clock (task times, poll schedules): the system time,
/// shifted by however far tokio's clock is from the real one. In the daemon
/// the shift is zero; a test that pauses tokio's clock
/// (`tokio::time::pause`) freezes this one too, and `tokio::time::advance`
/// moves it, so tests of the poller let an hour pass without waiting for it.
pub(crate) fn now_ms() -> i64 {
    let tokio_now = tokio::time::Instant::now().into_std();
    let real_now = std::time::Instant::now();
    let wall = crate::store::to_ms(chrono::Utc::now());
    let shift = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match tokio_now.checked_duration_since(real_now) {
        Some(ahead) => wall.saturating_add(shift(ahead)),
        None => wall.saturating_sub(shift(real_now.duration_since(tokio_now))),
    }
}

#[cfg(test)]
mod clock_tests {
    #[tokio::test]
    async fn the_wecom_clock_follows_a_paused_tokio_clock() {
        let before = super::now_ms();
        assert!((before - crate::store::to_ms(chrono::Utc::now())).abs() < 1_000);
        tokio::time::pause();
        let paused = super::now_ms();
        tokio::time::advance(std::time::Duration::from_secs(3_600)).await;
        let later = super::now_ms();
        assert!(
            (later - paused - 3_600_000).abs() < 1_000,
            "{paused} → {later}"
        );
        tokio::time::resume();
        // Running again, still an hour ahead of the system time.
        assert!(super::now_ms() - crate::store::to_ms(chrono::Utc::now()) >= 3_599_000);
    }
}
