//! What the relay's answer means for the message: delivered, retried (with
//! a reason, and a wait when our login is refused), or permanent (an
//! opt-out for a mailbox that does not exist). See the parent's "Answers".

use super::*;

/// The reply as the server sent it: `CODE text` per line.
fn reply_text(r: &Response) -> String {
    let code = r.code();
    let lines: Vec<String> = r.message().map(|l| format!("{code} {l}")).collect();
    if lines.is_empty() {
        code.to_string()
    } else {
        lines.join("\n")
    }
}

/// The text of an SMTP error without lettre's prefix, all causes joined.
fn error_text(e: &lettre::transport::smtp::Error) -> String {
    let mut parts = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        src = inner.source();
    }
    parts.join(": ")
}

/// Whether a rustls error is among the causes of `e` (lettre reports a
/// failed handshake as a connection error).
fn is_tls_error(e: &lettre::transport::smtp::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = src {
        if inner.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        src = inner.source();
    }
    false
}

/// How long messages wait when the relay refuses our login.
pub const AUTH_FAILURE_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// SMTP AUTH failures (RFC 4954): 530 authentication required, 534 mechanism
/// too weak, 535 credentials invalid, 538 encryption required.
fn is_auth_failure(code: &str) -> bool {
    matches!(code, "530" | "534" | "535" | "538")
}

/// The text of the deepest cause of `e`.
fn innermost(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        text = inner.to_string();
        src = inner.source();
    }
    text
}

/// Maps lettre's outcome to an [`Exchange`] (see the module docs).
pub fn classify(
    result: Result<Response, lettre::transport::smtp::Error>,
    message_id: &str,
    tls: TlsMode,
) -> Exchange {
    let e = match result {
        Ok(r) => {
            return Exchange {
                delivery: Delivery::Delivered {
                    provider_id: Some(message_id.to_string()),
                },
                answer: Some(reply_text(&r)),
            };
        }
        Err(e) => e,
    };
    let text = error_text(&e);
    if let Some(code) = e.status() {
        // A reply from the server: its code and text are the answer.
        let answer = format!("{code} {text}").trim_end().to_string();
        let reason = format!("smtp {answer}");
        let delivery = if e.is_transient() {
            Delivery::Retry {
                after: None,
                reason,
            }
        } else if is_auth_failure(&code.to_string()) {
            // Our credentials were refused: a settings problem, not the
            // recipient's. Every message would fail the same way, so none is
            // dead-lettered for it at once; they wait (and dead-letter only
            // after the attempt cap) while someone fixes the password.
            Delivery::Retry {
                after: Some(AUTH_FAILURE_WAIT),
                reason: format!(
                    "{reason} (the relay refused the login: check username_env and password_env)"
                ),
            }
        } else if text.split_whitespace().next() == Some("5.1.1") {
            Delivery::Permanent {
                reason: format!(
                    "{} {reason} (bad mailbox: the address is not mailed again on this channel)",
                    crate::channels::delivery::OPTED_OUT
                ),
            }
        } else {
            Delivery::Permanent { reason }
        };
        return Exchange {
            delivery,
            answer: Some(answer),
        };
    }
    let delivery = if e.is_client() && text.contains("STARTTLS") && tls == TlsMode::StartTls {
        Delivery::Retry {
            after: None,
            reason: format!(
                "smtp: the server does not offer STARTTLS, and tls: starttls refuses to \
                 authenticate or send without encryption ({text})"
            ),
        }
    } else if e.is_client() {
        // lettre refused the message itself (e.g. a non-ASCII address the
        // server cannot take): trying again changes nothing.
        Delivery::Permanent {
            reason: format!("smtp: {text}"),
        }
    } else {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_tls() || is_tls_error(&e) {
            "TLS failed"
        } else {
            "connection failed"
        };
        // The innermost cause is the specific one ("invalid peer
        // certificate: UnknownIssuer", "Connection refused").
        let cause = innermost(&e);
        Delivery::Retry {
            after: None,
            reason: format!("smtp: {what}: {cause}"),
        }
    };
    delivery.into()
}
