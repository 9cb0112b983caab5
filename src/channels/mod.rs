//! Channels: one small adapter per provider. An adapter turns a rendered
//! message into one provider call and maps the answer to a [`Delivery`].
//! Retries, backoff, rate limits, concurrency and dead-lettering live once, in
//! `delivery`, for every channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::settings::{ChannelKind, ChannelSettings};

pub mod address;
pub mod aliyun_sms;
pub mod build;
pub mod delivery;
pub mod http;
pub mod log;
pub mod retry;
pub mod smtp;
pub mod twilio;
pub mod webhook;
pub mod wecom;

pub use build::build_registry;

/// A message taken from the outbox, as an adapter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMessage {
    /// The idempotency key: (workflow, contact, enrollment, step). Stable across retries.
    pub id: String,
    pub workflow: String,
    pub contact_id: String,
    pub step_id: String,
    pub channel: String,
    /// The address: phone, email, WeCom id, or the contact id for webhook/log.
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    /// The contact as templates see it (`Contact::template_value`), for webhooks.
    pub contact: serde_json::Value,
    /// 1 for the first try.
    pub attempt: u32,
    /// The outbox row's `payload`: what a channel needs beyond the text, set
    /// when the message was queued (e.g. `{"kind": "notice"}` for a notice to
    /// a salesperson rather than a message to the contact). `{}` when nothing.
    pub payload: serde_json::Value,
    /// An earlier call may have reached the provider without its outcome
    /// being recorded (the message was reclaimed after a worker died
    /// mid-call). An adapter that can ask its provider whether the message
    /// already went out asks before sending it again.
    pub in_doubt: bool,
}

impl OutMessage {
    /// Whom the message is for, from its payload's `kind` (none: the
    /// contact). An unknown kind comes back as its text, for the error.
    pub fn kind(&self) -> Result<crate::store::states::MessageKind, String> {
        use crate::store::states::MessageKind;
        match self.payload.get("kind").and_then(serde_json::Value::as_str) {
            None => Ok(MessageKind::Message),
            Some(k) => MessageKind::parse(k).map_err(|_| k.to_string()),
        }
    }
}

/// What a provider said about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Accepted; `provider_id` is the provider's own id when it gives one.
    Delivered { provider_id: Option<String> },
    /// Try again: a timeout, a 5xx, a 429 (with its `Retry-After` in `after`).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Do not try again (4xx other than 429, or a provider code that says so).
    Permanent { reason: String },
    /// A quota window was exceeded (WeCom 45009, Aliyun
    /// `isv.BUSINESS_LIMIT_CONTROL`): try again once it has passed. Not a
    /// failure of the message: the wait does not count towards its attempts
    /// (a day-long window would otherwise use them all up in minutes).
    Wait { after: Duration, reason: String },
}

/// One call to a provider: what it means for the message, and the provider's
/// answer as it came back (status line and body), which `nurture channels
/// test` prints so users can check credentials before a launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub delivery: Delivery,
    /// `None` when no answer came back (a timeout, a refused connection, a
    /// message refused before any call).
    pub answer: Option<String>,
}

impl From<Delivery> for Exchange {
    fn from(delivery: Delivery) -> Exchange {
        Exchange {
            delivery,
            answer: None,
        }
    }
}

impl Exchange {
    /// An HTTP answer: `HTTP 200 OK` and the body as text.
    pub fn http(delivery: Delivery, status: reqwest::StatusCode, body: &[u8]) -> Exchange {
        Exchange {
            delivery,
            answer: Some(format!("HTTP {status}\n{}", String::from_utf8_lossy(body))),
        }
    }
}

/// A provider adapter. Adapters are stateless towards the outbox: they never
/// retry or sleep themselves.
pub trait Channel: Send + Sync {
    /// Makes the provider call for `msg`.
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange>;

    /// What the delivery layer needs of [`Channel::exchange`].
    fn send<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Delivery> {
        Box::pin(async move { self.exchange(msg).await.delivery })
    }
}

/// An error in a channel's settings, found when the daemon builds its channels.
#[derive(Debug, thiserror::Error)]
#[error("channel \"{channel}\": {message}")]
pub struct ChannelError {
    pub channel: String,
    pub message: String,
}

/// The channels of the current settings, with their adapters.
#[derive(Clone, Default)]
pub struct Registry {
    pub channels: HashMap<String, (ChannelSettings, Arc<dyn Channel>)>,
    /// The policies delivery applies again on every attempt.
    pub policy: DeliveryPolicy,
    /// The unsubscribe keys of its smtp channels, by channel name (the
    /// daemon adds them to the API's [`smtp::token::UnsubscribeKeys`]).
    pub unsubscribe_keys: Vec<(String, smtp::UnsubscribeKey)>,
}

/// What the delivery worker needs of the settings' policies: a retry, a
/// provider's wait, a released or reclaimed message goes out only when the
/// contact's quiet hours allow, exactly like a first send.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryPolicy {
    pub quiet_hours: Option<crate::settings::QuietHours>,
    /// For contacts without a valid timezone of their own.
    pub timezone: chrono_tz::Tz,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            quiet_hours: None,
            timezone: chrono_tz::UTC,
        }
    }
}

impl DeliveryPolicy {
    pub fn of(settings: &crate::settings::Settings) -> DeliveryPolicy {
        DeliveryPolicy {
            quiet_hours: settings.policies.quiet_hours,
            timezone: settings.timezone,
        }
    }
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<&(ChannelSettings, Arc<dyn Channel>)> {
        self.channels.get(name)
    }
}

/// `kind` names for messages that don't belong to the decision path.
pub fn kind_name(k: ChannelKind) -> &'static str {
    k.name()
}
