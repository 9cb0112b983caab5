//! `GET, POST /v1/wecom/callback`: WeCom's customer-contact callback
//! (SPEC §4.1, reference channel-apis.md §1.7 and §1.3).
//!
//! Not behind the API's bearer token (WeCom cannot send one): the
//! `msg_signature` over the app's Token is the authentication, and the
//! decrypted receiveid must be the configured corp id. Settings: see
//! [`settings`]. When no `kind: wecom` channel has `token_env` and
//! `aes_key_env`, the route answers 404 as if it did not exist (it stays
//! mounted so that a settings reload can turn it on).
//!
//! Answers (plain text, never a secret):
//! - URL check (`GET ?msg_signature&timestamp&nonce&echostr`): 200 with the
//!   decrypted `echostr` alone; nothing is read from the store, so it is
//!   answered in well under WeCom's 1 s.
//! - Events (`POST`, XML `<xml><ToUserName/><AgentID/><Encrypt/></xml>`):
//!   200 with an empty body once the event is stored, or recognised as a
//!   redelivery, or known to need nothing (unknown kinds: an info log). The
//!   store write is one short transaction bounded by [`STORE_DEADLINE`], so
//!   WeCom (5 s) gets its answer in time; if the store cannot take it, 503,
//!   and WeCom's redelivery is handled normally.
//! - 400 for a malformed request (missing parameters, no `<Encrypt>`, bad
//!   base64 / padding), 401 for a signature that matches no configured
//!   Token, 403 for a receiveid that is not the corp id (both logged at
//!   warn, without the request's values), 404 when not configured, 503 when
//!   misconfigured (the daemon log and `nurture validate` say why).
//!
//! What each event does (decisions):
//! - `change_external_contact` / `add_external_contact` and
//!   `add_half_external_contact`: the contact is the one whose
//!   `wecom_external_userid` is `ExternalUserID` (else the one whose id it
//!   is); a new one gets the `ExternalUserID` as its id. Its owner becomes
//!   the salesperson of `teams` whose `wecom_userid` is `UserID` — the latest
//!   WeCom relationship decides, as in WeCom's own client; when no
//!   salesperson matches, the owner is left as it was. `UserID` is always
//!   kept in the attribute `wecom_staff_userid`, `State` (when sent) in
//!   `wecom_state`, and `wecom_deleted_by` is cleared. A `contact_created`
//!   event-log entry is written — by the contacts INSERT trigger for a new
//!   contact, here for an existing one, so `trigger: contact_created`
//!   workflows see every add and their entry policy decides whether it
//!   enters again. The relationship (`UserID` × `ExternalUserID`, the
//!   event's time, `State`) is recorded as standing in
//!   `wecom_relationships`. `WelcomeCode` goes into `wecom_welcome_codes` (the
//!   contact's row replaced: received now, unused) in the same transaction,
//!   and the scheduler is woken, so the welcome message goes out through
//!   `send_welcome_msg` inside WeCom's 20 s.
//! - `del_external_contact` (the staff member deleted the customer;
//!   `Source=DELETE_BY_TRANSFER` when a transfer moved the customer to
//!   another member) and `del_follow_user` (the customer deleted the staff
//!   member): an event `wecom_contact_deleted` `{user_id, source}` /
//!   `wecom_follow_user_deleted` `{user_id}` on the contact, so `trigger:
//!   event` workflows and event conditions can react. It is not the
//!   customer's engagement, so `last_active_at` is left where it was. The
//!   relationship's row in `wecom_relationships` ends (by `staff`,
//!   `transfer` or `customer`); once no relationship of the customer stands,
//!   the attribute `wecom_deleted_by` (`staff` | `customer`) marks the
//!   contact as no longer reachable on WeCom (see
//!   `store::wecom::relationships`). Unknown contacts are only recorded
//!   (and their relationship row).
//! - `edit_external_contact`: touches the contact (`updated_at`) and, when
//!   `UserID` is present, queues a tag sync. WeCom sends the event when a
//!   staff member edits a customer's remark, phone or tags, but without the
//!   tags (only `UserID` and `ExternalUserID`), and reading them takes an
//!   access token and a call to `externalcontact/get` that may be slow or
//!   fail. So the callback does not call WeCom: it writes a row
//!   `wecom_tag_sync (channel, contact, UserID, ExternalUserID)` in the same
//!   transaction as the event's key (a crash after the 200 loses nothing; a
//!   redelivery queues nothing more; several edits before the sync share one
//!   row) and wakes the daemon's tag-sync worker
//!   (`channels::wecom::contact_tags`), which reads the tags with the
//!   channel's token after WeCom has its answer. The tags of the editing
//!   staff member's relationship are mapped by `tag_name` as is (corp and
//!   rule-group tags; personal tags are not mirrored); a missing one is
//!   added (the `contact_tags` trigger logs `tag_added`, so `tag_added`
//!   workflows run) and recorded in `wecom_contact_tags`; a tag recorded
//!   there that no relationship of the customer has any more is removed
//!   (`tag_removed`). Tags set by workflows, the CLI or the API are never
//!   removed by a sync. Failures (no token, WeCom busy, transport) are
//!   retried with backoff; permanent errcodes (84061, 40096, ...) drop the
//!   sync with a warning. The rule: `store::wecom::tags`. Unknown contacts
//!   are not synced (nothing is created).
//! - `change_external_tag` (`Id`, `TagType`, `ChangeType`): a change of the
//!   corp's tag library, not of a contact: logged at info and recorded.
//! - `transfer_fail` and anything else: logged at info and recorded.
//!
//! Every authenticated event is recorded in `wecom_callback_events` (kept 30
//! days), keyed on `(Event, ChangeType, UserID, ExternalUserID, tag Id,
//! CreateTime)`: the key is claimed in the same transaction as the effect,
//! so a redelivered event changes nothing and still gets 200.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use tokio::sync::{Notify, watch};

use crate::api::wecom_crypto::{CryptoError, extract_encrypt};
use crate::channels::wecom::tag_marks::MarksQueued;
use crate::contact_ways::ContactWay;
use crate::project::Project;
use crate::settings::Settings;
use crate::store::wecom::ContactChange;
use crate::store::{Store, StoreError};

mod event;
pub mod settings;

pub use event::InnerEvent;

use settings::CallbackConfig;

/// The route, relative to the server root.
pub const PATH: &str = "/v1/wecom/callback";

/// How long an event may take to store before WeCom is answered 503 (it
/// gives up at 5 s and redelivers).
pub const STORE_DEADLINE: Duration = Duration::from_secs(4);

/// Where the callback reads the settings from on each request.
#[derive(Clone)]
pub enum SettingsSource {
    Fixed(Arc<Settings>),
    /// The daemon's current project (hot reload).
    Project(watch::Receiver<Arc<Project>>),
}

impl SettingsSource {
    /// Runs `f` on the current settings. Synchronous on purpose: the watch
    /// borrow must not be held across an await.
    fn with<R>(&self, f: impl FnOnce(&Settings) -> R) -> R {
        match self {
            SettingsSource::Fixed(s) => f(s),
            SettingsSource::Project(rx) => f(&rx.borrow().settings),
        }
    }

    /// The project's contact-way codes (none with fixed settings).
    fn contact_ways(&self) -> Vec<ContactWay> {
        match self {
            SettingsSource::Fixed(_) => Vec::new(),
            SettingsSource::Project(rx) => rx.borrow().contact_ways.clone(),
        }
    }
}

/// Looks up an environment variable (the process environment in the
/// daemon; a map in tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the callback's handlers share.
#[derive(Clone)]
pub struct CallbackState {
    pub store: Store,
    /// The scheduler's wake-up (the one `POST /v1/contacts` notifies).
    pub wake: Arc<Notify>,
    /// The WeCom tag sync's wake-up: notified when an event queued a sync
    /// (the daemon's tag-sync task waits on the same handle).
    pub tag_sync: Arc<Notify>,
    /// The WeCom tag marks worker's wake-up: a new relationship takes the
    /// marks nurture made on the customer.
    pub marks_queued: MarksQueued,
    pub settings: SettingsSource,
    pub env: EnvLookup,
}

impl std::fmt::Debug for CallbackState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackState")
            .field("store", &self.store.url())
            .finish()
    }
}

impl CallbackState {
    /// The daemon's callback: settings follow the reloaded project.
    pub fn from_project(
        store: Store,
        wake: Arc<Notify>,
        tag_sync: Arc<Notify>,
        marks_queued: MarksQueued,
        project: watch::Receiver<Arc<Project>>,
    ) -> CallbackState {
        let st = CallbackState {
            store,
            wake,
            tag_sync,
            marks_queued,
            settings: SettingsSource::Project(project),
            env: Arc::new(|name| std::env::var(name).ok()),
        };
        // Say at start-up whether WeCom can reach nurture (problems are
        // logged again on each request, and `nurture validate` names them).
        let (ok, errors) = st.settings.with(|s| settings::resolve(s, &*st.env));
        for c in &ok {
            tracing::info!(channel = %c.channel, path = PATH, "WeCom callback enabled");
        }
        for e in &errors {
            tracing::error!(error = %e, "WeCom callback: the channel's callback settings are unusable");
        }
        st
    }
}

/// The callback's route, to merge into the API's router (outside `/v1`'s
/// bearer check).
pub fn router<S>(state: CallbackState) -> Router<S> {
    Router::new()
        .route(PATH, get(url_check).post(event))
        .with_state(state)
}

/// A refusal: a status and a short plain-text reason.
struct Reject(StatusCode, String);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        text(self.0, self.1)
    }
}

fn reject(status: StatusCode, message: impl Into<String>) -> Reject {
    Reject(status, message.into())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}

/// The usable callbacks of the current settings, or the answer to give.
fn configs(st: &CallbackState) -> Result<Vec<CallbackConfig>, Reject> {
    let (ok, errors) = st.settings.with(|s| settings::resolve(s, &*st.env));
    for e in &errors {
        tracing::error!(error = %e, "WeCom callback: the channel's callback settings are unusable");
    }
    if ok.is_empty() {
        return Err(if errors.is_empty() {
            reject(
                StatusCode::NOT_FOUND,
                "the WeCom callback is not configured (no wecom channel has token_env and aes_key_env)",
            )
        } else {
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "the WeCom callback is misconfigured (see the daemon log or nurture validate)",
            )
        });
    }
    Ok(ok)
}

/// The signed query parameters.
struct Signed {
    msg_signature: String,
    timestamp: String,
    nonce: String,
}

fn signed(q: &HashMap<String, String>) -> Result<Signed, Reject> {
    let get = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                reject(
                    StatusCode::BAD_REQUEST,
                    format!("missing query parameter {k}"),
                )
            })
    };
    Ok(Signed {
        msg_signature: get("msg_signature")?,
        timestamp: get("timestamp")?,
        nonce: get("nonce")?,
    })
}

/// Verifies against each configured callback (the one whose Token signed
/// the request) and decrypts. Gives the channel and the plaintext.
fn open(
    configs: &[CallbackConfig],
    s: &Signed,
    encrypted: &str,
    what: &str,
) -> Result<(String, String), Reject> {
    let mut wrong_corp = false;
    let mut malformed: Option<CryptoError> = None;
    for c in configs {
        match c
            .crypto
            .decrypt_message(&s.msg_signature, &s.timestamp, &s.nonce, encrypted)
        {
            Ok(plain) => return Ok((c.channel.clone(), plain)),
            Err(CryptoError::BadSignature) => {}
            Err(CryptoError::WrongCorpId) => wrong_corp = true,
            Err(e) => malformed = Some(e),
        }
    }
    if wrong_corp {
        tracing::warn!(
            what,
            "WeCom callback rejected: the receiveid is not the configured corp id"
        );
        return Err(reject(StatusCode::FORBIDDEN, "wrong corp id"));
    }
    if let Some(e) = malformed {
        tracing::warn!(what, error = %e, "WeCom callback rejected: the ciphertext does not decrypt");
        return Err(reject(
            StatusCode::BAD_REQUEST,
            format!("cannot decrypt: {e}"),
        ));
    }
    tracing::warn!(
        what,
        "WeCom callback rejected: msg_signature matches no configured Token"
    );
    Err(reject(StatusCode::UNAUTHORIZED, "bad msg_signature"))
}

/// How far an event's signed `timestamp` may be from the clock. A captured
/// request replayed later is refused on top of the event dedupe (which only
/// knows events it has stored); WeCom signs each delivery afresh.
pub const TIMESTAMP_WINDOW_SECS: i64 = 600;

/// Refuses an event whose signed timestamp is outside the window (403).
fn fresh(timestamp: &str, now: chrono::DateTime<Utc>) -> Result<(), Reject> {
    let ok = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (now.timestamp() - t).abs() <= TIMESTAMP_WINDOW_SECS);
    if ok {
        return Ok(());
    }
    tracing::warn!(
        timestamp,
        "WeCom callback rejected: the signed timestamp is more than 10 minutes from the clock"
    );
    Err(reject(
        StatusCode::FORBIDDEN,
        "stale or invalid timestamp (more than 10 minutes from the server's clock)",
    ))
}

/// `GET`: the URL check. Replies with the decrypted `echostr` only.
async fn url_check(
    State(st): State<CallbackState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let configs = match configs(&st) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let s = match signed(&q) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    // Base64 has no spaces: a `+` sent unencoded was decoded as a space by
    // the form decoding of the query; put it back.
    let Some(echostr) = q
        .get("echostr")
        .map(|e| e.trim().replace(' ', "+"))
        .filter(|e| !e.is_empty())
    else {
        return text(StatusCode::BAD_REQUEST, "missing query parameter echostr");
    };
    match open(&configs, &s, &echostr, "url check") {
        Ok((channel, plain)) => {
            tracing::info!(%channel, "WeCom callback URL check answered");
            text(StatusCode::OK, plain)
        }
        Err(r) => r.into_response(),
    }
}

/// `POST`: an encrypted event.
async fn event(
    State(st): State<CallbackState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let configs = match configs(&st) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let s = match signed(&q) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "the body is not UTF-8 XML");
    };
    let encrypted = match extract_encrypt(body) {
        Ok(e) => e,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (channel, xml) = match open(&configs, &s, &encrypted, "event") {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = fresh(&s.timestamp, Utc::now()) {
        return r.into_response();
    }
    let ev = InnerEvent::parse(&xml);
    let ways = st.settings.contact_ways();
    let change = st.settings.with(|s| ev.change(s, &ways, &channel));
    if change == ContactChange::Record {
        match ev.event.as_str() {
            "change_external_tag" => tracing::info!(
                %channel, tag_id = %ev.tag_id, tag_type = ev.tag_type.as_deref().unwrap_or(""),
                change_type = %ev.change_type,
                "WeCom callback: the corp's tag library changed (recorded; no contact changes)"
            ),
            _ => tracing::info!(
                %channel, event = %ev.event, change_type = %ev.change_type,
                "WeCom callback: an event nurture does not act on (recorded)"
            ),
        }
    }
    let now = Utc::now();
    let (key, detail) = (ev.key(), ev.detail());
    let write = st
        .store
        .apply_wecom_callback(&key, &detail, &change, ev.at(now), now);
    match tokio::time::timeout(STORE_DEADLINE, write).await {
        Ok(Ok(done)) => {
            if done.wake {
                st.wake.notify_one();
            }
            if done.tag_sync {
                // A permit is kept if the sync is busy, so a request made
                // during a round is not missed.
                st.tag_sync.notify_one();
            }
            // A code's tags may have queued corp tag marks, and a new
            // relationship takes the marks nurture made on the customer.
            if let ContactChange::Added { .. } = &change {
                st.marks_queued.notify();
            }
            tracing::info!(
                %channel,
                event = %ev.event,
                change_type = %ev.change_type,
                contact = done.contact_id.as_deref().unwrap_or(""),
                outcome = %done.outcome,
                welcome_code = ev.welcome_code.is_some(),
                "WeCom callback event"
            );
            text(StatusCode::OK, "")
        }
        Ok(Err(StoreError::Invalid(message))) => {
            // A value the store cannot take (an id with control characters):
            // redelivery would fail the same way, so WeCom gets its 200.
            tracing::warn!(%channel, event = %ev.event, change_type = %ev.change_type, %message,
                "WeCom callback event dropped: the store refused it");
            text(StatusCode::OK, "")
        }
        Ok(Err(e)) => {
            tracing::error!(%channel, error = %e, "WeCom callback event not stored; WeCom will redeliver it");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the event")
        }
        Err(_) => {
            tracing::error!(%channel, "WeCom callback event not stored within 4 s (is the store busy?); WeCom will redeliver it");
            text(StatusCode::SERVICE_UNAVAILABLE, "the store is busy")
        }
    }
}

#[cfg(test)]
mod tests;
