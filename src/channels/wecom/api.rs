//! Calling WeCom's server API (reference §1.0–§1.1): JSON bodies, the token
//! in `?access_token=`, errors as `errcode` in an HTTP 200.
//!
//! [`WecomApi::post`] gets a token from the app's cache (shared through
//! the daemon's [`TokenCaches`]), makes the call and,
//! when WeCom says the token is bad or expired (40014, 42001, 40001), drops
//! it, fetches a new one and makes the call once more. Anything else that is
//! not errcode 0 comes back as an [`Exchange`] with the class of its errcode.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;

use super::errcode::{Class, classify, meaning};
use super::token::{Fetched, TokenCache, TokenCaches};
use crate::channels::http::{excerpt, http_client, read_answer};
use crate::channels::{Delivery, Exchange};

const GETTOKEN: &str = "/cgi-bin/gettoken";

/// One app's credentials and endpoint.
pub struct WecomApi {
    client: reqwest::Client,
    /// Without a trailing slash.
    base: String,
    corp_id: String,
    secret: String,
    tokens: Arc<TokenCache>,
}

impl std::fmt::Debug for WecomApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomApi")
            .field("base", &self.base)
            .field("corp_id", &self.corp_id)
            .field("secret", &"..")
            .finish()
    }
}

/// A successful answer (errcode 0).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub json: Value,
    pub raw: Vec<u8>,
}

impl Answer {
    /// The exchange of this answer with `delivery`.
    pub fn exchange(&self, delivery: Delivery) -> Exchange {
        Exchange::http(delivery, self.status, &self.raw)
    }
}

/// `errcode` of an answer (a missing one is 0, as WeCom omits it on some
/// successes); `None` when it is there but not an integer.
fn errcode_of(v: &Value) -> Option<i64> {
    if !v.is_object() {
        return None;
    }
    match v.get("errcode") {
        None | Some(Value::Null) => Some(0),
        Some(c) => c.as_i64().or_else(|| c.as_str()?.trim().parse().ok()),
    }
}

/// The reason for a non-zero errcode: `wecom PATH errcode N (meaning): errmsg`.
pub fn errcode_reason(path: &str, code: i64, v: &Value) -> String {
    let msg = v.get("errmsg").and_then(Value::as_str).unwrap_or("");
    let what = match meaning(code) {
        Some(m) => format!("wecom {path} errcode {code} ({m})"),
        None => format!("wecom {path} errcode {code} (not a code nurture knows: not retried)"),
    };
    if msg.is_empty() {
        what
    } else {
        format!("{what}: {}", excerpt(msg.as_bytes()))
    }
}

/// The delivery for a non-zero errcode, by its class (a token error here is
/// one that persisted after a refetch: retried later).
pub fn errcode_delivery(path: &str, code: i64, v: &Value) -> Delivery {
    let reason = errcode_reason(path, code, v);
    match classify(code) {
        Class::Ok => Delivery::Delivered { provider_id: None },
        Class::Retry { after } => Delivery::Retry { after, reason },
        Class::Wait(d) => Delivery::Wait {
            after: if code == 45009 {
                super::errcode::frequency_wait(
                    v.get("errmsg").and_then(Value::as_str).unwrap_or(""),
                )
            } else {
                d
            },
            reason,
        },
        Class::RefreshToken => Delivery::Retry {
            after: None,
            reason: format!("{reason} (again after fetching a new token)"),
        },
        Class::Permanent => Delivery::Permanent { reason },
    }
}

pub const MEDIA_UPLOAD: &str = "/cgi-bin/media/upload";

/// What a call sends.
enum Payload<'a> {
    Json(&'a Value),
    Upload {
        media_type: &'a str,
        filename: &'a str,
        bytes: &'a [u8],
    },
}

/// A `multipart/form-data` body with one file field `media`, as WeCom's
/// upload documents it (`filename` and `filelength` in the disposition):
/// (content type, body). The boundary is a fixed string checked against
/// the bytes, lengthened until the file does not contain it.
fn multipart(filename: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let mut boundary = String::from("nurture-media-boundary-7c1f");
    while bytes
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    // A quote or line break would end the header value early.
    let name: String = filename
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"{name}\"; filelength={}\r\nContent-Type: application/octet-stream\r\n\r\n",
            bytes.len()
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

enum Call {
    Done(Answer),
    /// The token was refused: refetch and try again (once).
    BadToken(Exchange),
    Failed(Exchange),
}

impl WecomApi {
    pub fn new(
        base_url: &reqwest::Url,
        corp_id: String,
        secret: String,
        timeout: Duration,
        max_idle: usize,
        tokens: &TokenCaches,
    ) -> Result<WecomApi, String> {
        let base = base_url.as_str().trim_end_matches('/').to_string();
        Ok(WecomApi {
            client: http_client(timeout, max_idle)?,
            tokens: tokens.app(&base, &corp_id, &secret),
            base,
            corp_id,
            secret,
        })
    }

    /// The app's token cache (tests count its fetches).
    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, Delivery> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            Delivery::Permanent {
                reason: format!("wecom: bad URL for {path}: {e}"),
            }
        })?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }

    /// `GET /cgi-bin/gettoken`. 40013 (corp id) and 40001 (secret) are
    /// permanent here: the settings are wrong, and retrying will not fix them.
    /// A failure carries WeCom's answer (`channels test` prints it).
    async fn fetch_token(&self) -> Result<Fetched, Exchange> {
        let (status, raw) = self.gettoken_answer().await.map_err(Exchange::from)?;
        self.read_token(status, &raw)
            .map_err(|d| Exchange::http(d, status, &raw))
    }

    async fn gettoken_answer(&self) -> Result<(StatusCode, Vec<u8>), Delivery> {
        let url = self.url(
            GETTOKEN,
            &[("corpid", &self.corp_id), ("corpsecret", &self.secret)],
        )?;
        let (status, _, raw) = read_answer(self.client.get(url), SystemTime::now()).await?;
        Ok((status, raw))
    }

    fn read_token(&self, status: StatusCode, raw: &[u8]) -> Result<Fetched, Delivery> {
        const PATH: &str = GETTOKEN;
        let json = json_answer(PATH, status, raw)?;
        match errcode_of(&json) {
            Some(0) => {}
            Some(40013) => {
                return Err(Delivery::Permanent {
                    reason: format!(
                        "{}: check the corp id (corp_id_env)",
                        errcode_reason(PATH, 40013, &json)
                    ),
                });
            }
            Some(40001) => {
                return Err(Delivery::Permanent {
                    reason: format!(
                        "{}: check the app secret (secret_env)",
                        errcode_reason(PATH, 40001, &json)
                    ),
                });
            }
            Some(code) => return Err(errcode_delivery(PATH, code, &json)),
            None => return Err(bad_answer(PATH, raw)),
        }
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad_answer(PATH, raw))?;
        let expires_in = json
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(7200);
        Ok(Fetched {
            access_token: token.to_string(),
            expires_in: Duration::from_secs(expires_in),
        })
    }

    async fn token(&self) -> Result<String, Exchange> {
        self.tokens.get(|| self.fetch_token()).await
    }

    /// Makes sure a token is at hand before a call that must not be wasted
    /// (a welcome code is good for one call): a token failure then happens
    /// before the call, not in it.
    pub async fn ensure_token(&self) -> Result<(), Exchange> {
        self.token().await.map(|_| ())
    }

    async fn call_once_with(&self, path: &str, token: &str, payload: &Payload<'_>) -> Call {
        let mut query = vec![("access_token", token)];
        if let Payload::Upload { media_type, .. } = payload {
            query.push(("type", media_type));
        }
        let url = match self.url(path, &query) {
            Ok(u) => u,
            Err(d) => return Call::Failed(d.into()),
        };
        let req = match payload {
            Payload::Json(body) => self.client.post(url).json(body),
            Payload::Upload {
                filename, bytes, ..
            } => {
                let (content_type, body) = multipart(filename, bytes);
                self.client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
            }
        };
        let (status, _, raw) = match read_answer(req, SystemTime::now()).await {
            Ok(a) => a,
            Err(d) => return Call::Failed(d.into()),
        };
        let json = match json_answer(path, status, &raw) {
            Ok(j) => j,
            Err(d) => return Call::Failed(Exchange::http(d, status, &raw)),
        };
        match errcode_of(&json) {
            Some(0) => Call::Done(Answer { status, json, raw }),
            Some(code) if classify(code) == Class::RefreshToken => Call::BadToken(Exchange::http(
                errcode_delivery(path, code, &json),
                status,
                &raw,
            )),
            Some(code) => Call::Failed(Exchange::http(
                errcode_delivery(path, code, &json),
                status,
                &raw,
            )),
            None => Call::Failed(Exchange::http(bad_answer(path, &raw), status, &raw)),
        }
    }

    /// POSTs `body` to `path` with a token; `Ok` for errcode 0, else the
    /// exchange to report.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, Exchange> {
        self.send(path, &Payload::Json(body)).await
    }

    /// `POST /cgi-bin/media/upload?type=image|file` with the file as the
    /// multipart field `media` (WeCom's temporary media, kept 3 days).
    pub async fn upload(
        &self,
        media_type: &str,
        filename: &str,
        bytes: &[u8],
    ) -> Result<Answer, Exchange> {
        self.send(
            MEDIA_UPLOAD,
            &Payload::Upload {
                media_type,
                filename,
                bytes,
            },
        )
        .await
    }

    async fn send(&self, path: &str, payload: &Payload<'_>) -> Result<Answer, Exchange> {
        let token = self.token().await?;
        match self.call_once_with(path, &token, payload).await {
            Call::Done(a) => Ok(a),
            Call::Failed(e) => Err(e),
            Call::BadToken(_) => {
                tracing::info!(path, "wecom refused the access token; fetching a new one");
                self.tokens.invalidate(&token);
                let token = self.token().await?;
                match self.call_once_with(path, &token, payload).await {
                    Call::Done(a) => Ok(a),
                    Call::Failed(e) | Call::BadToken(e) => Err(e),
                }
            }
        }
    }
}

/// The JSON of an HTTP 200; any other status is a transport error (R).
fn json_answer(path: &str, status: StatusCode, raw: &[u8]) -> Result<Value, Delivery> {
    if status != StatusCode::OK {
        return Err(Delivery::Retry {
            after: None,
            reason: format!(
                "wecom {path}: HTTP {} (a transport error){}",
                status.as_u16(),
                match excerpt(raw) {
                    e if e.is_empty() => String::new(),
                    e => format!(": {e}"),
                }
            ),
        });
    }
    serde_json::from_slice(raw).map_err(|_| bad_answer(path, raw))
}

/// An HTTP 200 that is not WeCom's JSON (a proxy's page, a cut answer):
/// retried, since WeCom did not say no.
fn bad_answer(path: &str, raw: &[u8]) -> Delivery {
    Delivery::Retry {
        after: None,
        reason: format!(
            "wecom {path}: the answer is not the expected JSON: {}",
            excerpt(raw)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errcodes_are_read_as_numbers_or_strings() {
        assert_eq!(errcode_of(&json!({"errmsg": "ok"})), Some(0));
        assert_eq!(errcode_of(&json!({"errcode": 45009})), Some(45009));
        assert_eq!(errcode_of(&json!({"errcode": "-1"})), Some(-1));
        assert_eq!(errcode_of(&json!({"errcode": [1]})), None);
        assert_eq!(errcode_of(&json!("text")), None);
    }

    #[test]
    fn reasons_name_the_code_and_message() {
        let d = errcode_delivery(
            "/x",
            45009,
            &json!({"errcode": 45009, "errmsg": "api freq out of limit"}),
        );
        match d {
            Delivery::Wait { after, reason } => {
                assert!(after >= Duration::from_secs(60));
                assert!(reason.contains("45009") && reason.contains("api freq out of limit"));
            }
            other => panic!("{other:?}"),
        }
        let d = errcode_delivery("/x", 12345, &json!({"errcode": 12345, "errmsg": "new"}));
        assert!(matches!(d, Delivery::Permanent { ref reason }
            if reason.contains("12345") && reason.contains("new") && reason.contains("not a code nurture knows")));
        assert!(matches!(
            json_answer("/x", StatusCode::BAD_GATEWAY, b"oops"),
            Err(Delivery::Retry { .. })
        ));
    }
}
