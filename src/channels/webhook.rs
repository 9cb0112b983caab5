//! The `webhook` channel: one signed JSON POST per message.
//!
//! Body (SPEC §4.2): `{"message_id","workflow","contact_id","to","subject","body","contact"}`.
//! Headers: `Idempotency-Key` (the message id, stable across retries) and
//! Standard Webhooks v1: `webhook-id` (the message id), `webhook-timestamp`
//! (Unix seconds of this attempt) and, when a secret is configured,
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
//! The body is serialized once and those exact bytes are both signed and sent.
//!
//! Answers: 2xx is delivered (the provider id is a JSON `id` in the answer, if
//! any); 429, 5xx, timeouts and connection errors are retried (429 and 503
//! with their `Retry-After`); 410 means the endpoint is gone; 3xx (never
//! followed) and every other 4xx are permanent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::http::with_excerpt;
use super::{Channel, Delivery, Exchange, OutMessage};

mod transport;
use transport::Transport;
pub use transport::{PROXY_VARS, proxy_configured};

/// The default request timeout (connect, send and read the answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A signing secret. `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret as written in the env var: `whsec_<base64>` is decoded (the
    /// Standard Webhooks form); anything else is used as raw bytes.
    pub fn parse(text: &str) -> Result<Secret, String> {
        match text.strip_prefix("whsec_") {
            Some(b64) => BASE64
                .decode(b64.trim())
                .map(Secret)
                .map_err(|_| "the secret starts with whsec_ but the rest is not base64".into()),
            None if text.is_empty() => Err("the secret is empty".into()),
            None => Ok(Secret(text.as_bytes().to_vec())),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `v1,<base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))>`.
pub fn signature(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.bytes())
        .expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The JSON body of one request.
#[derive(Serialize)]
struct Payload<'a> {
    message_id: &'a str,
    workflow: &'a str,
    contact_id: &'a str,
    to: &'a str,
    subject: Option<&'a str>,
    body: &'a str,
    contact: &'a serde_json::Value,
}

/// Options of a webhook channel, taken from its settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The full URL messages are POSTed to.
    pub url: reqwest::Url,
    pub secret: Option<Secret>,
    pub timeout: Duration,
    /// Connections kept open to the endpoint (the channel's concurrency).
    pub max_idle: usize,
    /// The environment names a proxy ([`proxy_configured`]): calls go
    /// through reqwest, which applies it (see `transport`).
    pub proxied: bool,
}

#[derive(Debug, Clone)]
pub struct WebhookChannel {
    transport: Transport,
    config: WebhookConfig,
}

impl WebhookChannel {
    pub fn new(config: WebhookConfig) -> Result<WebhookChannel, String> {
        let transport =
            Transport::new(&config.url, config.timeout, config.max_idle, config.proxied)?;
        Ok(WebhookChannel { transport, config })
    }

    async fn deliver(&self, msg: &OutMessage) -> Exchange {
        // A workflow's `webhook:` step posts its own JSON body; a message
        // posts the envelope.
        let own = (msg.payload.get("kind").and_then(|k| k.as_str()) == Some("webhook"))
            .then(|| msg.payload.get("body").cloned().unwrap_or_default());
        let encoded = match &own {
            Some(b) => serde_json::to_vec(b),
            None => serde_json::to_vec(&Payload {
                message_id: &msg.id,
                workflow: &msg.workflow,
                contact_id: &msg.contact_id,
                to: &msg.to,
                subject: msg.subject.as_deref(),
                body: &msg.body,
                contact: &msg.contact,
            }),
        };
        let body = match encoded {
            Ok(b) => b,
            Err(e) => {
                return Delivery::Permanent {
                    reason: format!("cannot serialize the message: {e}"),
                }
                .into();
            }
        };
        let now = SystemTime::now();
        let ts = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let Ok(id_header) = HeaderValue::from_str(&msg.id) else {
            return Delivery::Permanent {
                reason: "the message id is not a valid header value".into(),
            }
            .into();
        };
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(IDEMPOTENCY_KEY, id_header.clone());
        headers.insert(WEBHOOK_ID, id_header);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(ts));
        if let Some(secret) = &self.config.secret {
            let signed = signature(secret, &msg.id, ts, &body);
            // Base64 and "v1,": always a valid header value.
            if let Ok(v) = HeaderValue::from_str(&signed) {
                headers.insert(WEBHOOK_SIGNATURE, v);
            }
        }
        let (status, retry_after, answer) = match self.transport.post(headers, body, now).await {
            Ok(a) => a,
            Err(d) => return d.into(),
        };
        Exchange::http(classify(status, retry_after, &answer), status, &answer)
    }
}

impl Channel for WebhookChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        Box::pin(self.deliver(msg))
    }
}

/// Maps an HTTP answer to a [`Delivery`].
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Delivery {
    let code = status.as_u16();
    if status.is_success() {
        let provider_id = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| match v.get("id") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            });
        return Delivery::Delivered { provider_id };
    }
    let label = format!(
        "HTTP {code}{}",
        status
            .canonical_reason()
            .map(|r| format!(" {r}"))
            .unwrap_or_default()
    );
    match code {
        429 | 503 => Delivery::Retry {
            after: retry_after,
            reason: with_excerpt(label, body),
        },
        500..=599 => Delivery::Retry {
            after: None,
            reason: with_excerpt(label, body),
        },
        410 => Delivery::Permanent {
            reason: with_excerpt(format!("{label} (endpoint gone)"), body),
        },
        300..=399 => Delivery::Permanent {
            reason: format!(
                "{label}: redirects are not followed; set the channel's url to the final address"
            ),
        },
        _ => Delivery::Permanent {
            reason: with_excerpt(label, body),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse() {
        assert_eq!(Secret::parse("abc").unwrap().bytes(), b"abc");
        assert_eq!(
            Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .bytes()
                .len(),
            24
        );
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("").is_err());
        assert_eq!(format!("{:?}", Secret::parse("abc").unwrap()), "Secret(..)");
    }

    #[test]
    fn standard_webhooks_example_signature() {
        // The example from the Standard Webhooks specification.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn answers_map_to_deliveries() {
        let ok = classify(StatusCode::OK, None, br#"{"id":"evt_1"}"#);
        assert_eq!(
            ok,
            Delivery::Delivered {
                provider_id: Some("evt_1".into())
            }
        );
        assert_eq!(
            classify(StatusCode::NO_CONTENT, None, b""),
            Delivery::Delivered { provider_id: None }
        );
        let d = Some(Duration::from_secs(3));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, d, b""),
            Delivery::Retry { after: Some(a), .. } if a == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, d, b""),
            Delivery::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, None, b"boom"),
            Delivery::Retry { reason, .. } if reason == "HTTP 500 Internal Server Error: boom"
        ));
        assert!(matches!(
            classify(StatusCode::GONE, None, b""),
            Delivery::Permanent { reason } if reason.contains("endpoint gone")
        ));
        assert!(matches!(
            classify(StatusCode::FOUND, None, b""),
            Delivery::Permanent { reason } if reason.starts_with("HTTP 302")
        ));
        assert!(matches!(
            classify(StatusCode::UNPROCESSABLE_ENTITY, None, "x".repeat(500).as_bytes()),
            Delivery::Permanent { reason } if reason.starts_with("HTTP 422") && reason.len() < 260
        ));
    }
}
