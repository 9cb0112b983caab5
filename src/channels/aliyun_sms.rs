//! The `aliyun_sms` channel: one RPC-style `SendSms` call (Version
//! 2017-05-25) per message (reference/channel-apis.md §3).
//!
//! The call is a form-encoded `POST {base}/` carrying the common parameters
//! (`AccessKeyId`, `Action`, `Format=JSON`, `RegionId`, `SignatureMethod=HMAC-SHA1`,
//! `SignatureNonce`, `SignatureVersion=1.0`, `Timestamp`, `Version`), the
//! `SendSms` parameters (`PhoneNumbers`, `SignName`, `TemplateCode`,
//! `TemplateParam`, `OutId` = the message id, echoed in receipts) and
//! `Signature` = base64(HMAC-SHA1(secret + "&", StringToSign)) with
//! StringToSign = `POST&%2F&` + percentEncode(canonicalized query), the query
//! being the sorted parameters, each key and value POP-percent-encoded.
//!
//! `TemplateParam` is the JSON string of the approved template's variables.
//! Aliyun sends only reviewed, fixed template text with short variables (no
//! links), so a template maps named values into them in its front matter
//! (`params: { name: "{{contact.name}}" }`); it renders to their JSON object,
//! which is sent as it is ([`template_param`]). `validate` checks each for
//! the sample contact. A rendered text that is not such an object goes as
//! `{"content": text}` (for `channels test` without a template).
//!
//! Answers, by `Code`: `OK` is delivered (the provider id is `BizId`);
//! `isv.BUSINESS_LIMIT_CONTROL` (per number: a minute, an hour or a day, as
//! its Message says), `isv.DAY_LIMIT_CONTROL` / `isv.MONTH_LIMIT_CONTROL`
//! and `Throttling*` are flow control: the message waits for the window
//! ([`Delivery::Wait`], not an attempt); `isp.*` (but `isp.RAM_PERMISSION_DENY`) is a server error, retried;
//! every other `isv.*` and other code is permanent. Without a `Code`, HTTP 429
//! and 5xx are retried and the rest is permanent. Timeouts and connection
//! errors are retried.
//!
//! **Aliyun has no idempotency key.** A timeout (or a 5xx, or a daemon killed
//! mid-call) leaves a send uncertain: the SMS may have gone out. So every
//! attempt after the first, and a first attempt reclaimed after its worker
//! died mid-call (`in_doubt`), starts by asking `QuerySendDetails`
//! (`PhoneNumber`, `SendDate` = today and yesterday in China time, 50 per
//! page) whether a record with our `OutId` (the message id, set on every
//! `SendSms`) exists. Found: the earlier attempt reached Aliyun, nothing is
//! sent again (status 1 waiting for the receipt or 3 delivered → delivered;
//! 2 failed → permanent with Aliyun's `ErrCode`). Not found: the SMS is sent.
//! If the query itself fails, nothing is sent and the attempt is retried
//! later: a message may wait, or dead-letter after the cap, but is never sent
//! twice because of a timeout. The first attempt's failure reason says the
//! send is uncertain so the outbox records it. That `QuerySendDetails` lists
//! `OutId` is from Aliyun's documentation, not the reference (unverified).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use super::http::{excerpt, form_encode, http_client, percent_encode, read_answer, with_excerpt};
use super::{Channel, Delivery, Exchange, OutMessage};

/// The default API base URL.
pub const DEFAULT_BASE_URL: &str = "https://dysmsapi.aliyuncs.com";
/// The API version of `SendSms`.
pub const VERSION: &str = "2017-05-25";
/// How long `isv.BUSINESS_LIMIT_CONTROL` (per-number minute, hour and day
/// limits) waits when its Message names no window, and `Throttling*` when
/// the answer has no `Retry-After`.
const FLOW_CONTROL_WAIT: Duration = Duration::from_secs(60);
/// How long the account's day and month quotas wait before asking again.
const QUOTA_WAIT: Duration = Duration::from_secs(86_400);

/// Options of an Aliyun SMS channel, taken from its settings.
#[derive(Clone)]
pub struct AliyunSmsConfig {
    pub base_url: reqwest::Url,
    pub access_key_id: String,
    pub access_key_secret: String,
    pub sign_name: String,
    pub template_code: String,
    /// `cn-hangzhou` unless overridden (option `region_id`).
    pub region_id: String,
    pub timeout: Duration,
    pub max_idle: usize,
}

impl std::fmt::Debug for AliyunSmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunSmsConfig")
            .field("base_url", &self.base_url.as_str())
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"..")
            .field("sign_name", &self.sign_name)
            .field("template_code", &self.template_code)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct AliyunSmsChannel {
    client: reqwest::Client,
    config: AliyunSmsConfig,
}

impl AliyunSmsChannel {
    pub fn new(config: AliyunSmsConfig) -> Result<AliyunSmsChannel, String> {
        let client = http_client(config.timeout, config.max_idle)?;
        Ok(AliyunSmsChannel { client, config })
    }

    /// Every parameter of one `SendSms` call, `Signature` last.
    pub fn signed_params(
        &self,
        msg: &OutMessage,
        timestamp: &str,
        nonce: &str,
    ) -> Vec<(String, String)> {
        let template_param = template_param(&msg.body);
        let mut params: Vec<(String, String)> = [
            ("AccessKeyId", self.config.access_key_id.as_str()),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("OutId", msg.id.as_str()),
            ("PhoneNumbers", msg.to.as_str()),
            ("RegionId", self.config.region_id.as_str()),
            ("SignName", self.config.sign_name.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", nonce),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", self.config.template_code.as_str()),
            ("TemplateParam", template_param.as_str()),
            ("Timestamp", timestamp),
            ("Version", VERSION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = signature("POST", &params, &self.config.access_key_secret);
        params.push(("Signature".into(), sig));
        params
    }

    async fn deliver(&self, msg: &OutMessage) -> Exchange {
        if msg.attempt > 1 || msg.in_doubt {
            match self.earlier_send(msg).await {
                Earlier::NotFound => {}
                Earlier::Found(exchange) | Earlier::Unknown(exchange) => return exchange,
            }
        }
        let now = SystemTime::now();
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let params = self.signed_params(msg, &timestamp, &nonce(msg, now));
        let req = self.post_form(&params);
        match read_answer(req, now).await {
            Ok((status, retry_after, answer)) => {
                Exchange::http(classify(status, retry_after, &answer), status, &answer)
            }
            // A timeout here is uncertain (see the module comment).
            Err(Delivery::Retry { after, reason }) => Delivery::Retry {
                after,
                reason: format!(
                    "{reason} (uncertain: the SMS may have gone out; the next attempt asks QuerySendDetails before sending)"
                ),
            }
            .into(),
            Err(d) => d.into(),
        }
    }

    /// A form-encoded `POST` of signed RPC parameters to the API.
    fn post_form(&self, params: &[(String, String)]) -> reqwest::RequestBuilder {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.client
            .post(self.config.base_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_encode(&pairs))
    }

    /// Whether an earlier attempt of `msg` reached Aliyun: its `OutId` in
    /// `QuerySendDetails` for today or yesterday (China time).
    async fn earlier_send(&self, msg: &OutMessage) -> Earlier {
        let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
        let today = chrono::Utc::now().with_timezone(&china).date_naive();
        let mut answers = Vec::new();
        for day in [today, today - chrono::Days::new(1)] {
            let date = day.format("%Y%m%d").to_string();
            for page in 1..=MAX_QUERY_PAGES {
                let (status, body) = match self.query_page(msg, &date, page).await {
                    Ok(answer) => answer,
                    Err(reason) => {
                        return Earlier::Unknown(
                            Delivery::Retry {
                                after: None,
                                reason: format!(
                                    "cannot tell whether an earlier attempt was sent (QuerySendDetails: {reason}); not sending until it can"
                                ),
                            }
                            .into(),
                        );
                    }
                };
                answers.push(format!("HTTP {status}\n{}", String::from_utf8_lossy(&body)));
                match find_out_id(status, &body, &msg.id) {
                    Lookup::Found(delivery) => {
                        return Earlier::Found(Exchange {
                            delivery,
                            answer: Some(answers.join("\n")),
                        });
                    }
                    Lookup::Error(reason) => {
                        return Earlier::Unknown(Exchange {
                            delivery: Delivery::Retry {
                                after: None,
                                reason: format!(
                                    "cannot tell whether an earlier attempt was sent (QuerySendDetails: {reason}); not sending until it can"
                                ),
                            },
                            answer: Some(answers.join("\n")),
                        });
                    }
                    Lookup::LastPage => break,
                    Lookup::MorePages => {}
                }
            }
        }
        Earlier::NotFound
    }

    async fn query_page(
        &self,
        msg: &OutMessage,
        date: &str,
        page: u32,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let now = SystemTime::now();
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let page = page.to_string();
        let page_size = QUERY_PAGE_SIZE.to_string();
        let nonce = nonce(msg, now);
        let phone = query_phone_number(&msg.to);
        let mut params: Vec<(String, String)> = [
            ("AccessKeyId", self.config.access_key_id.as_str()),
            ("Action", "QuerySendDetails"),
            ("CurrentPage", page.as_str()),
            ("Format", "JSON"),
            ("PageSize", page_size.as_str()),
            ("PhoneNumber", phone.as_str()),
            ("RegionId", self.config.region_id.as_str()),
            ("SendDate", date),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", nonce.as_str()),
            ("SignatureVersion", "1.0"),
            ("Timestamp", timestamp.as_str()),
            ("Version", VERSION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = signature("POST", &params, &self.config.access_key_secret);
        params.push(("Signature".into(), sig));
        let req = self.post_form(&params);
        match read_answer(req, now).await {
            Ok((status, _, body)) => Ok((status, body)),
            Err(
                Delivery::Retry { reason, .. }
                | Delivery::Permanent { reason }
                | Delivery::Wait { reason, .. },
            ) => Err(reason),
            Err(Delivery::Delivered { .. }) => Err("unexpected answer".into()),
        }
    }
}

/// `QuerySendDetails`' `PhoneNumber`: unlike `SendSms` (which takes
/// `+86`/`86`/`0086` in front of a mainland number), it wants the 11 digits
/// of a mainland number alone, and for other countries the country code and
/// number without `+` or `00` (reference §3; Aliyun's API reference for
/// QuerySendDetails). Spaces and dashes are dropped.
pub fn query_phone_number(to: &str) -> String {
    let digits: String = to
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = digits.strip_prefix('+').unwrap_or(&digits);
    let digits = digits.strip_prefix("00").unwrap_or(digits);
    let mainland =
        |d: &str| d.len() == 11 && d.starts_with('1') && d.bytes().all(|b| b.is_ascii_digit());
    match digits.strip_prefix("86") {
        Some(rest) if mainland(rest) => rest.to_string(),
        _ => digits.to_string(),
    }
}

/// `TemplateParam`: a template with `params:` renders to their JSON object
/// (`{"name":"王芳","date":"11月1日"}`), which goes as it is; any other text
/// goes as `{"content": text}` (a template with one `${content}` variable).
pub fn template_param(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) if !m.is_empty() && m.values().all(|v| v.is_string()) => {
            serde_json::Value::Object(m).to_string()
        }
        _ => serde_json::json!({ "content": body }).to_string(),
    }
}

/// Records asked of `QuerySendDetails` per page (its maximum).
const QUERY_PAGE_SIZE: u32 = 50;
/// Pages read per day: a number rarely gets more than a few SMS a day.
const MAX_QUERY_PAGES: u32 = 4;

/// What `QuerySendDetails` says of an earlier attempt.
enum Earlier {
    /// No record with our `OutId`: send.
    NotFound,
    /// An earlier attempt reached Aliyun: this is its outcome.
    Found(Exchange),
    /// The query failed: do not send now.
    Unknown(Exchange),
}

/// What one page of `QuerySendDetails` says.
#[derive(Debug, PartialEq)]
enum Lookup {
    Found(Delivery),
    LastPage,
    MorePages,
    Error(String),
}

/// Looks for `out_id` in one `QuerySendDetails` answer
/// (`SmsSendDetailDTOs.SmsSendDetailDTO[]` with `OutId`, `SendStatus`
/// 1 waiting for the receipt | 2 failed | 3 delivered, `ErrCode`).
fn find_out_id(status: StatusCode, body: &[u8], out_id: &str) -> Lookup {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Lookup::Error(with_excerpt(format!("HTTP {}", status.as_u16()), body));
    };
    let code = json.get("Code").and_then(|c| c.as_str()).unwrap_or("");
    if !status.is_success() || code != "OK" {
        return Lookup::Error(format!(
            "{} (HTTP {})",
            if code.is_empty() { "no Code" } else { code },
            status.as_u16()
        ));
    }
    let records = json
        .pointer("/SmsSendDetailDTOs/SmsSendDetailDTO")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for r in records {
        if r.get("OutId").and_then(|o| o.as_str()) != Some(out_id) {
            continue;
        }
        let send_status = r.get("SendStatus").and_then(|s| {
            s.as_i64()
                .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
        });
        let err = r.get("ErrCode").and_then(|e| e.as_str()).unwrap_or("");
        return Lookup::Found(match send_status {
            Some(2) => Delivery::Permanent {
                reason: format!(
                    "aliyun: an earlier attempt reached Aliyun and failed to deliver ({err}); not sent again"
                ),
            },
            _ => Delivery::Delivered { provider_id: None },
        });
    }
    if records.len() < QUERY_PAGE_SIZE as usize {
        Lookup::LastPage
    } else {
        Lookup::MorePages
    }
}

impl Channel for AliyunSmsChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        Box::pin(self.deliver(msg))
    }
}

/// A `SignatureNonce` unique per request: the message, the attempt, the time
/// and a process counter.
fn nonce(msg: &OutMessage, now: SystemTime) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let digest = hmac_sha1(
        msg.id.as_bytes(),
        format!("{}:{nanos}:{n}", msg.attempt).as_bytes(),
    );
    hex::encode(digest)
}

/// The canonicalized query: parameters sorted by key, `key=value` with both
/// sides POP-percent-encoded, joined by `&`. `Signature` itself is left out.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> =
        params.iter().filter(|(k, _)| k != "Signature").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD&%2F&percentEncode(canonicalQuery)`.
pub fn string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// `base64(HMAC-SHA1(secret + "&", StringToSign))`.
pub fn signature(method: &str, params: &[(String, String)], secret: &str) -> String {
    let key = format!("{secret}&");
    BASE64.encode(hmac_sha1(
        key.as_bytes(),
        string_to_sign(method, params).as_bytes(),
    ))
}

/// Maps a `SendSms` answer to a [`Delivery`].
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Delivery {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v.get(name))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    };
    let http = status.as_u16();
    let Some(code) = field("Code") else {
        let what = with_excerpt(format!("HTTP {http}"), body);
        return match http {
            429 | 500..=599 => Delivery::Retry {
                after: retry_after,
                reason: what,
            },
            _ => Delivery::Permanent {
                reason: if status.is_success() {
                    format!("{what} (no Code in the answer)")
                } else {
                    what
                },
            },
        };
    };
    if code == "OK" && status.is_success() {
        return Delivery::Delivered {
            provider_id: field("BizId"),
        };
    }
    let what = match field("Message") {
        Some(m) => format!("aliyun {code}: {} (HTTP {http})", excerpt(m.as_bytes())),
        None => format!("aliyun {code} (HTTP {http})"),
    };
    match code.as_str() {
        // Per-number limits per minute, hour and day: the Message names the
        // window ("触发分钟级流控Permits:1", "触发小时级流控Permits:5",
        // "触发天级流控Permits:10"), and the message waits it out without
        // using up an attempt.
        "isv.BUSINESS_LIMIT_CONTROL" => Delivery::Wait {
            after: retry_after
                .or_else(|| field("Message").and_then(|m| super::wecom::errcode::window_in(&m)))
                .unwrap_or(FLOW_CONTROL_WAIT),
            reason: what,
        },
        "isv.DAY_LIMIT_CONTROL" | "isv.MONTH_LIMIT_CONTROL" => Delivery::Wait {
            after: retry_after.unwrap_or(QUOTA_WAIT),
            reason: what,
        },
        c if c.starts_with("Throttling") => Delivery::Wait {
            after: retry_after.unwrap_or(FLOW_CONTROL_WAIT),
            reason: what,
        },
        "isp.RAM_PERMISSION_DENY" => Delivery::Permanent { reason: what },
        c if c.starts_with("isp.") => Delivery::Retry {
            after: retry_after,
            reason: what,
        },
        c if c.starts_with("isv.") => Delivery::Permanent { reason: what },
        _ if http == 429 || status.is_server_error() => Delivery::Retry {
            after: retry_after,
            reason: what,
        },
        _ => Delivery::Permanent { reason: what },
    }
}

/// HMAC-SHA1 (RFC 2104), the signature method of RPC-style AccessKey signing.
fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests;
