//! The `twilio` channel: one `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`
//! per message (reference/channel-apis.md §2).
//!
//! The body is form-encoded `To`, `From` (or `MessagingServiceSid`) and `Body`,
//! with HTTP Basic auth `AccountSid:AuthToken`.
//!
//! Answers: 2xx with a JSON `sid` is delivered (the sid is the provider id);
//! a 2xx without one (an HTML page from a proxy) is retried. Otherwise the
//! JSON error body's `code` decides:
//! - 20429, HTTP 429 and HTTP 5xx are retried, honouring `Retry-After`;
//! - 21611 (the `From` queue is full) is retried after the quota window;
//! - 21610 (the recipient replied STOP) is permanent with a reason starting
//!   `opted_out:` so the delivery layer can mark the contact opted out;
//! - 21211, 21614 and every other 4xx are permanent.
//!
//! Twilio's REST API has no idempotency key: a timeout or a 5xx after Twilio
//! accepted the message may send it twice when retried.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use super::http::{excerpt, form_encode, http_client, read_answer, with_excerpt};
use super::{Channel, Delivery, Exchange, OutMessage};

/// The default API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// How much of an error answer's body goes into a reason.
/// How much of an answer's body is read at all.
/// How long a 21611 (`From` queue full) waits when Twilio gives no `Retry-After`.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(60);

/// Who the message is from.
#[derive(Clone, PartialEq, Eq)]
pub enum Sender {
    /// A phone number or alphanumeric sender id (`From`).
    From(String),
    /// A messaging service (`MessagingServiceSid`).
    MessagingService(String),
}

/// Options of a Twilio channel, taken from its settings.
#[derive(Clone)]
pub struct TwilioConfig {
    /// `https://api.twilio.com` unless overridden (tests point it at a loopback fake).
    pub base_url: reqwest::Url,
    pub account_sid: String,
    pub auth_token: String,
    pub sender: Sender,
    pub timeout: Duration,
    /// Connections kept open (the channel's concurrency).
    pub max_idle: usize,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("base_url", &self.base_url.as_str())
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"..")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct TwilioChannel {
    client: reqwest::Client,
    config: TwilioConfig,
    /// `{base}/2010-04-01/Accounts/{sid}/Messages.json`.
    endpoint: String,
}

impl TwilioChannel {
    pub fn new(config: TwilioConfig) -> Result<TwilioChannel, String> {
        if config.account_sid.is_empty()
            || !config
                .account_sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        {
            return Err("the account SID must be letters and digits (AC...)".into());
        }
        let client = http_client(config.timeout, config.max_idle)?;
        let endpoint = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            config.base_url.as_str().trim_end_matches('/'),
            config.account_sid
        );
        Ok(TwilioChannel {
            client,
            config,
            endpoint,
        })
    }

    async fn deliver(&self, msg: &OutMessage) -> Exchange {
        let sender = match &self.config.sender {
            Sender::From(f) => ("From", f.as_str()),
            Sender::MessagingService(s) => ("MessagingServiceSid", s.as_str()),
        };
        let body = form_encode(&[("To", msg.to.as_str()), sender, ("Body", msg.body.as_str())]);
        let now = SystemTime::now();
        let req = self
            .client
            .post(&self.endpoint)
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        match read_answer(req, now).await {
            Ok((status, retry_after, answer)) => {
                Exchange::http(classify(status, retry_after, &answer), status, &answer)
            }
            Err(d) => d.into(),
        }
    }
}

impl Channel for TwilioChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        Box::pin(self.deliver(msg))
    }
}

/// Maps a Twilio answer to a [`Delivery`].
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Delivery {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    if status.is_success() {
        let sid = json
            .as_ref()
            .and_then(|v| v.get("sid"))
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty());
        return match sid {
            Some(sid) => Delivery::Delivered {
                provider_id: Some(sid.to_string()),
            },
            // Twilio always answers a created message with its JSON and a
            // `sid`. A 2xx without one (an HTML page from a proxy, a captive
            // portal, a wrong base_url) is not proof the message was sent:
            // retry it (and dead-letter it after the retry window).
            None => Delivery::Retry {
                after: retry_after,
                reason: with_excerpt(
                    format!(
                        "HTTP {} without a Twilio message sid (not Twilio's answer? check base_url)",
                        status.as_u16()
                    ),
                    body,
                ),
            },
        };
    }
    let code = json
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
    let message = json
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| excerpt(m.as_bytes()));
    let http = status.as_u16();
    let what = match (code, &message) {
        (Some(c), Some(m)) => format!("twilio {c}: {m} (HTTP {http})"),
        (Some(c), None) => format!("twilio {c} (HTTP {http})"),
        (None, _) => with_excerpt(format!("HTTP {http}"), body),
    };
    match (code, http) {
        (Some(21610), _) => Delivery::Permanent {
            reason: format!("{} {what}", crate::channels::delivery::OPTED_OUT),
        },
        (Some(20429), _) | (_, 429) | (_, 500..=599) => Delivery::Retry {
            after: retry_after,
            reason: what,
        },
        (Some(21611), _) => Delivery::Retry {
            after: Some(retry_after.unwrap_or(QUEUE_FULL_WAIT)),
            reason: what,
        },
        (_, 300..=399) => Delivery::Permanent {
            reason: format!("{what}: redirects are not followed; check base_url"),
        },
        _ => Delivery::Permanent { reason: what },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_forms() {
        assert_eq!(
            form_encode(&[("To", "+8613800000000"), ("Body", "hi there*~ 你")]),
            "To=%2B8613800000000&Body=hi%20there%2A~%20%E4%BD%A0"
        );
    }

    #[test]
    fn answers_map_to_deliveries() {
        assert_eq!(
            classify(
                StatusCode::CREATED,
                None,
                br#"{"sid":"SM1","status":"queued"}"#
            ),
            Delivery::Delivered {
                provider_id: Some("SM1".into())
            }
        );
        // A 200 with an HTML page (a proxy, a captive portal) is not a send.
        for body in [
            &b"<html><body>Welcome to the hotel wifi</body></html>"[..],
            br#"{"status":"queued"}"#,
            b"",
        ] {
            assert!(matches!(
                classify(StatusCode::OK, None, body),
                Delivery::Retry { reason, .. } if reason.starts_with("HTTP 200 without a Twilio message sid")
            ));
        }
        let d = Some(Duration::from_secs(7));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, d, br#"{"code":20429,"message":"Too many"}"#),
            Delivery::Retry { after: Some(a), reason } if a == Duration::from_secs(7) && reason.starts_with("twilio 20429")
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, d, b"down"),
            Delivery::Retry { after: Some(_), reason } if reason == "HTTP 503: down"
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, br#"{"code":21610,"message":"unsubscribed"}"#),
            Delivery::Permanent { reason } if reason.starts_with("opted_out: twilio 21610")
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, br#"{"code":21611,"message":"queue full"}"#),
            Delivery::Retry { after: Some(a), .. } if a == QUEUE_FULL_WAIT
        ));
        for code in [21211, 21614, 21408, 20003] {
            let body = format!(r#"{{"code":{code},"message":"no"}}"#);
            assert!(matches!(
                classify(StatusCode::BAD_REQUEST, None, body.as_bytes()),
                Delivery::Permanent { reason } if reason.starts_with(&format!("twilio {code}"))
            ));
        }
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, None, b""),
            Delivery::Permanent { reason } if reason == "HTTP 403"
        ));
    }
}
