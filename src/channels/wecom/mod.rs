//! The `wecom` channel (企业微信, reference/channel-apis.md §1).
//!
//! One outbox message is one WeCom call, chosen by the message's payload:
//! - **to a contact** (no `kind`): if the callback stored a welcome code for
//!   the contact less than 20 s ago and nobody used it, `send_welcome_msg`
//!   with the code (taken atomically: used once). Otherwise an
//!   `add_msg_template` task (`chat_type: single`, the contact's
//!   `external_userid`, `sender` = the `wecom_userid` of the contact's
//!   salesperson in the settings' teams; while a transfer of the contact to
//!   that salesperson is not done, the handover member's: see [`crate::wecom::sender`]).
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

use super::{Channel, Delivery, Exchange, OutMessage};
use crate::store::Store;

pub mod api;
pub mod contact_tags;
pub mod contact_way;
pub mod errcode;
pub mod follow_sync;
pub mod media;
mod notice;
pub mod pacing;
pub mod poll;
pub mod queue;
pub mod resigned;
pub mod tag_marks;
pub mod tasks;
mod to_contact;
pub mod token;
mod transfer;
mod welcome;

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
mod tests;
