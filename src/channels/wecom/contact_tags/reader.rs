//! Reading one customer's tags and follow-users from WeCom
//! (`externalcontact/get`, every page), with one channel's token.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;

use super::super::api::{WecomApi, errcode_delivery};
use super::super::errcode::{Class, classify};
use super::super::token::TokenCaches;
use super::{EXTERNALCONTACT_GET, MAX_PAGES, PERSONAL_TAG};
use crate::channels::Delivery;
use crate::channels::http::{excerpt, http_client, read_answer};
use crate::settings::{ChannelKind, Settings};
use crate::store::contacts::check_tag;
use crate::store::wecom::relationships::FollowUser;
use crate::store::wecom::tags::WecomTags;

/// Reads one customer's tags with one channel's token.
pub struct TagReader {
    pub(super) channel: String,
    /// One call's timeout: a claim's lease is sized from it.
    pub(super) timeout: Duration,
    pub(super) api: WecomApi,
    pub(super) client: reqwest::Client,
    /// Without a trailing slash.
    pub(super) base: String,
}

enum Call {
    Done(Value),
    /// WeCom refused the token (40014, 42001, 40001).
    BadToken(Delivery),
    Failed(Delivery),
}

impl TagReader {
    pub fn new(config: &super::super::WecomConfig) -> Result<TagReader, String> {
        Ok(TagReader {
            channel: config.name.clone(),
            timeout: config.timeout,
            api: config.api()?,
            client: http_client(config.timeout, config.max_idle)?,
            base: config.base_url.as_str().trim_end_matches('/').to_string(),
        })
    }

    /// Every channel of kind `wecom` in `settings` that can be built.
    pub fn all(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
        tokens: &TokenCaches,
    ) -> HashMap<String, TagReader> {
        let mut out = HashMap::new();
        for (name, cs) in &settings.channels {
            if cs.kind != ChannelKind::Wecom {
                continue;
            }
            let built = crate::channels::build::wecom_config(cs, settings, env, tokens)
                .and_then(|c| TagReader::new(&c));
            match built {
                Ok(r) => {
                    out.insert(name.clone(), r);
                }
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, "wecom channel cannot sync tags")
                }
            }
        }
        out
    }

    /// A token from the adapter's cache. `ensure_token` fetches one (with
    /// the adapter's gettoken handling) when needed; the cache then hands it
    /// out without another call.
    async fn token(&self) -> Result<String, Delivery> {
        let no_token = |reason: String| Delivery::Retry {
            after: None,
            reason: format!("wecom {}: no access token: {reason}", self.channel),
        };
        if let Err(e) = self.api.ensure_token().await {
            // Even a "permanent" gettoken error (a wrong secret) is retried:
            // the settings can be fixed and reloaded, and the edit is worth
            // mirroring then.
            let reason = match e.delivery {
                Delivery::Retry { reason, .. }
                | Delivery::Permanent { reason }
                | Delivery::Wait { reason, .. } => reason,
                Delivery::Delivered { .. } => "gettoken failed".into(),
            };
            return Err(no_token(reason));
        }
        self.api
            .tokens()
            .get(|| async { Err(no_token("it expired as it was fetched".into())) })
            .await
    }

    async fn call_once(&self, token: &str, external_userid: &str, cursor: &str) -> Call {
        let mut url = match reqwest::Url::parse(&format!("{}{EXTERNALCONTACT_GET}", self.base)) {
            Ok(u) => u,
            Err(e) => {
                return Call::Failed(Delivery::Permanent {
                    reason: format!("wecom: bad URL for {EXTERNALCONTACT_GET}: {e}"),
                });
            }
        };
        url.query_pairs_mut()
            .append_pair("access_token", token)
            .append_pair("external_userid", external_userid);
        if !cursor.is_empty() {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let (status, _, raw) = match read_answer(self.client.get(url), SystemTime::now()).await {
            Ok(a) => a,
            Err(d) => return Call::Failed(d),
        };
        match read_json(status, &raw) {
            Ok(json) => match errcode_of(&json) {
                Some(0) => Call::Done(json),
                Some(code) if classify(code) == Class::RefreshToken => {
                    Call::BadToken(errcode_delivery(EXTERNALCONTACT_GET, code, &json))
                }
                Some(code) => Call::Failed(errcode_delivery(EXTERNALCONTACT_GET, code, &json)),
                None => Call::Failed(not_json(&raw)),
            },
            Err(d) => Call::Failed(d),
        }
    }

    /// One page of `externalcontact/get`, with one retry on a refused token.
    async fn page(&self, external_userid: &str, cursor: &str) -> Result<Value, Delivery> {
        let token = self.token().await?;
        match self.call_once(&token, external_userid, cursor).await {
            Call::Done(v) => Ok(v),
            Call::Failed(d) => Err(d),
            Call::BadToken(_) => {
                tracing::info!(
                    path = EXTERNALCONTACT_GET,
                    "wecom refused the access token; fetching a new one"
                );
                self.api.tokens().invalidate(&token);
                let token = self.token().await?;
                match self.call_once(&token, external_userid, cursor).await {
                    Call::Done(v) => Ok(v),
                    Call::Failed(d) | Call::BadToken(d) => Err(d),
                }
            }
        }
    }

    /// The customer's tags as nurture sees them, from every page.
    pub async fn read(&self, external_userid: &str, staff: &str) -> Result<WecomTags, Delivery> {
        let mut tags = PageTags::default();
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let answer = self.page(external_userid, &cursor).await?;
            tags.add_page(&answer, staff);
            match answer.get("next_cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() && c != cursor => cursor = c.to_string(),
                _ => return Ok(tags.finish(true)),
            }
        }
        tracing::warn!(channel = %self.channel, pages = MAX_PAGES,
            "wecom: the customer has more relationships than nurture reads; no tag is removed this time");
        Ok(tags.finish(false))
    }

    /// Every relationship WeCom lists for the customer (all pages); an
    /// empty list when WeCom says there is none (84061). `None` when there
    /// are more pages than nurture reads.
    pub async fn follow_users(
        &self,
        external_userid: &str,
    ) -> Result<Option<Vec<FollowUser>>, Delivery> {
        let mut tags = PageTags::default();
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let answer = match self.page(external_userid, &cursor).await {
                Ok(a) => a,
                Err(Delivery::Permanent { reason }) if reason.contains("errcode 84061") => {
                    return Ok(Some(Vec::new()));
                }
                Err(e) => return Err(e),
            };
            tags.add_page(&answer, "");
            match answer.get("next_cursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() && c != cursor => cursor = c.to_string(),
                _ => return Ok(tags.finish(true).relationships),
            }
        }
        Ok(None)
    }
}

/// `errcode` as a number or a numeric string; a missing one is 0.
pub(super) fn errcode_of(v: &Value) -> Option<i64> {
    if !v.is_object() {
        return None;
    }
    match v.get("errcode") {
        None | Some(Value::Null) => Some(0),
        Some(c) => c.as_i64().or_else(|| c.as_str()?.trim().parse().ok()),
    }
}

fn not_json(raw: &[u8]) -> Delivery {
    Delivery::Retry {
        after: None,
        reason: format!(
            "wecom {EXTERNALCONTACT_GET}: the answer is not the expected JSON: {}",
            excerpt(raw)
        ),
    }
}

/// An HTTP 200's JSON; any other status is a transport error (retried).
pub(super) fn read_json(status: StatusCode, raw: &[u8]) -> Result<Value, Delivery> {
    if status != StatusCode::OK {
        return Err(Delivery::Retry {
            after: None,
            reason: format!(
                "wecom {EXTERNALCONTACT_GET}: HTTP {} (a transport error): {}",
                status.as_u16(),
                excerpt(raw)
            ),
        });
    }
    serde_json::from_slice(raw).map_err(|_| not_json(raw))
}

/// Tags gathered over the pages of one answer.
#[derive(Debug, Default)]
pub struct PageTags {
    editor: BTreeSet<String>,
    all: BTreeSet<String>,
    follow: Vec<FollowUser>,
}

impl PageTags {
    /// Adds one page's `follow_user` entries: all of them to `all`, the
    /// entry whose `userid` is `staff` to `editor`.
    pub fn add_page(&mut self, answer: &Value, staff: &str) {
        let entries = answer
            .get("follow_user")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for entry in entries {
            if let Some(f) = FollowUser::from_json(entry) {
                self.follow.push(f);
            }
            let names = tag_names(entry);
            if entry.get("userid").and_then(Value::as_str) == Some(staff) {
                self.editor.extend(names.iter().cloned());
            }
            self.all.extend(names);
        }
    }

    pub fn finish(self, complete: bool) -> WecomTags {
        WecomTags {
            editor: self.editor,
            all: complete.then_some(self.all),
            relationships: complete.then_some(self.follow),
        }
    }
}

/// The nurture tag names of one `follow_user` entry's `tags`.
pub fn tag_names(entry: &Value) -> Vec<String> {
    let tags = entry
        .get("tags")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    tags.iter()
        .filter(|t| t.get("type").and_then(Value::as_i64) != Some(PERSONAL_TAG))
        .filter_map(|t| t.get("tag_name").and_then(Value::as_str))
        .filter_map(|name| check_tag(name).ok())
        .collect()
}
