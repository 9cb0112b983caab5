//! What every HTTP channel needs, once: a client that follows no redirect
//! and times out, a bounded read of the answer with its `Retry-After`, a
//! transport error as a retry (without the URL, which may carry a secret),
//! a one-line excerpt of an answer for reasons, and RFC 3986 form encoding.
//! Used by the Twilio, Aliyun, webhook and WeCom adapters.

use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::Delivery;
use super::retry::parse_retry_after;

/// Characters of an answer kept in a reason.
const EXCERPT_CHARS: usize = 200;
/// Bytes of an answer read at most.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `User-Agent` of every HTTP call.
pub(crate) const USER_AGENT_VALUE: &str = concat!("nurture/", env!("CARGO_PKG_VERSION"));

/// Makes sure rustls has its crypto provider (reqwest is built without one).
pub(crate) fn install_crypto_provider() {
    // Err means one is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for a provider API: no redirects, bounded timeouts.
pub(crate) fn http_client(timeout: Duration, max_idle: usize) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(max_idle.max(1))
        .tcp_nodelay(true)
        .user_agent(USER_AGENT_VALUE)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends `req` and reads a bounded prefix of the answer: the status, the
/// `Retry-After` delay and the body. A transport error is a `Retry` (but a
/// body that breaks after a success status is kept as far as it came).
pub(crate) async fn read_answer(
    req: reqwest::RequestBuilder,
    now: SystemTime,
) -> Result<(StatusCode, Option<Duration>, Vec<u8>), Delivery> {
    let mut resp = req.send().await.map_err(transport_error)?;
    let status = resp.status();
    let retry_after = retry_after(resp.headers(), now);
    let mut answer = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if keep_bounded(&mut answer, &chunk) {
                    break;
                }
            }
            Ok(None) => break,
            // The endpoint said yes; a broken answer body does not undo that
            // (the caller reads what arrived: a provider whose success needs
            // fields of the body does not find them, and retries).
            Err(e) if status.is_success() => {
                tracing::debug!(error = %e, "answer body unreadable after a success status");
                break;
            }
            Err(e) => return Err(transport_error(e)),
        }
    }
    Ok((status, retry_after, answer))
}

/// The delay an answer's `Retry-After` header asks for, if any.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// A failed request as a retry, with the causes but without the URL: it may
/// carry credentials in its query string.
pub(crate) fn transport_error(e: reqwest::Error) -> Delivery {
    let e = e.without_url();
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    failed(what, &e)
}

/// Appends what still fits of `chunk` to an answer (at most
/// [`MAX_BODY_BYTES`] in all); true once the answer is full.
pub(crate) fn keep_bounded(answer: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let room = MAX_BODY_BYTES.saturating_sub(answer.len());
    answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
    answer.len() >= MAX_BODY_BYTES
}

/// A failed exchange as a retry: `what` ("timed out", "connection failed",
/// "request failed"), then the error and its causes.
pub(crate) fn failed(what: &str, e: &dyn std::error::Error) -> Delivery {
    Delivery::Retry {
        after: None,
        reason: format!("{what}: {}", with_causes(e)),
    }
}

/// An error and its causes on one line, each said once.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// The first characters of an answer, on one line.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out.trim().to_string()
}

/// `prefix: excerpt`, or `prefix` when the answer is empty.
pub(crate) fn with_excerpt(prefix: String, body: &[u8]) -> String {
    let e = excerpt(body);
    if e.is_empty() {
        prefix
    } else {
        format!("{prefix}: {e}")
    }
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// RFC 3986 percent-encoding of everything but the unreserved characters,
/// upper-case hex, on UTF-8 bytes. This is also Aliyun's POP encoding
/// (`URLEncoder` then `+`→`%20`, `*`→`%2A`, `%7E`→`~`).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// `k=v&k=v`, each side percent-encoded (valid `application/x-www-form-urlencoded`).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_is_rfc3986() {
        assert_eq!(percent_encode("a b*c~d+e/"), "a%20b%2Ac~d%2Be%2F");
        assert_eq!(percent_encode("短信"), "%E7%9F%AD%E4%BF%A1");
        assert_eq!(
            form_encode(&[("To", "+86 1"), ("k", "v&w")]),
            "To=%2B86%201&k=v%26w"
        );
    }

    #[test]
    fn an_excerpt_is_one_short_line() {
        let long = "x".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt(b"a\nb\r\nc"), "a b  c");
        assert_eq!(with_excerpt("503".into(), b""), "503");
    }
}
