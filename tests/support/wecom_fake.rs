//! A loopback fake of WeCom's server API (reference/channel-apis.md §1), for
//! the `wecom` channel's tests and the callback end-to-end test.
//!
//! It speaks the protocol: every answer is HTTP 200 with `{"errcode":..}`
//! (API errors are never HTTP errors), the token goes in `?access_token=`,
//! bodies are JSON. It checks what WeCom checks:
//! - `GET /cgi-bin/gettoken?corpid=&corpsecret=`: 40013 for a wrong corp id,
//!   40001 for a wrong secret; otherwise a new token `tok-N` (`expires_in`
//!   7200 unless [`WecomHandle::set_expires_in`]).
//! - every other path: 41001 without a token, 40014 for a token it never
//!   issued, 42001 for one it expired ([`WecomHandle::expire_tokens`]);
//! - required body fields per path (40063 when one is missing) and welcome
//!   codes used once (41051 the second time).
//! - `GET /cgi-bin/externalcontact/get?external_userid=[&cursor=]` (a GET,
//!   token checked the same way): the customer's `follow_user` entries as set
//!   with [`WecomHandle::set_follow_user`] (84061 for a customer without
//!   any), paged with `next_cursor` when [`WecomHandle::set_follow_user_page`]
//!   says so.
//!
//! Answers can be scripted per path ([`WecomHandle::script`]): a queue, each
//! request on that path (after the token check) takes the next one; when the
//! queue is empty the fake answers like WeCom would on success.
//!
//! ```ignore
//! let (base_url, fake) = WecomFake::start().await;
//! fake.script(SEND_WELCOME, Answer::errcode(45009, "api freq out of limit"));
//! // point a `wecom` channel at base_url with corp id CORP_ID and secret SECRET ...
//! let bodies = fake.wait_for(SEND_WELCOME, 1, Duration::from_secs(10)).await;
//! assert_eq!(bodies[0]["text"]["content"], "Hi");
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The corp id and secret the fake accepts by default.
pub const CORP_ID: &str = "ww-fake-corp";
pub const SECRET: &str = "fake-app-secret";

pub const GETTOKEN: &str = "/cgi-bin/gettoken";
pub const ADD_MSG_TEMPLATE: &str = "/cgi-bin/externalcontact/add_msg_template";
pub const SEND_RESULT: &str = "/cgi-bin/externalcontact/get_groupmsg_send_result";
pub const SEND_WELCOME: &str = "/cgi-bin/externalcontact/send_welcome_msg";
pub const MESSAGE_SEND: &str = "/cgi-bin/message/send";
pub const TRANSFER_CUSTOMER: &str = "/cgi-bin/externalcontact/transfer_customer";
pub const TRANSFER_RESULT: &str = "/cgi-bin/externalcontact/transfer_result";
pub const EXTERNALCONTACT_GET: &str = "/cgi-bin/externalcontact/get";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    /// The decoded query string.
    pub query: HashMap<String, String>,
    /// The JSON body (`Null` for a GET or a body that is not JSON).
    pub body: Value,
    pub at: Instant,
}

impl Call {
    pub fn token(&self) -> Option<&str> {
        self.query.get("access_token").map(String::as_str)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// HTTP 200 with this JSON body.
    Json(Value),
    /// This HTTP status with a short text body (a transport-level failure).
    Status(u16),
    /// Wait, then answer the inner answer.
    Delayed(Duration, Box<Answer>),
}

impl Answer {
    /// `{"errcode": code, "errmsg": msg}` in an HTTP 200.
    pub fn errcode(code: i64, msg: &str) -> Answer {
        Answer::Json(json!({ "errcode": code, "errmsg": msg }))
    }
    pub fn delayed(self, d: Duration) -> Answer {
        Answer::Delayed(d, Box::new(self))
    }
}

#[derive(Default)]
struct State {
    corp_id: String,
    secret: String,
    calls: Vec<Call>,
    scripts: HashMap<String, VecDeque<Answer>>,
    /// Tokens currently valid, and every token ever issued.
    valid: HashSet<String>,
    issued: HashSet<String>,
    /// The token gettoken hands out while it stays valid (WeCom returns the
    /// same token inside its window).
    current: Option<String>,
    next_id: u64,
    tokens_issued: u64,
    expires_in: i64,
    /// add_msg_template tasks: msgid → (sender, external_userids).
    tasks: HashMap<String, (String, Vec<String>)>,
    /// get_groupmsg_send_result status per external_userid (default 0).
    send_status: HashMap<String, i64>,
    /// Welcome codes already used.
    used_codes: HashSet<String>,
    /// transfer_customer calls: (handover, takeover, external_userid).
    transfers: Vec<(String, String, String)>,
    /// transfer_result status per external_userid (default 2 waiting).
    transfer_status: HashMap<String, i64>,
    /// externalcontact/get: external_userid → follow_user entries.
    follow_users: HashMap<String, Vec<Value>>,
    /// follow_user entries per page of externalcontact/get (0: one page).
    follow_user_page: usize,
    /// How long externalcontact/get takes to answer.
    get_delay: Option<Duration>,
}

/// Starts fakes.
pub struct WecomFake;

impl WecomFake {
    /// A fake accepting [`CORP_ID`] and [`SECRET`]; returns its base URL
    /// (`http://127.0.0.1:PORT`) and a handle. It stops when the test's
    /// runtime ends.
    pub async fn start() -> (String, WecomHandle) {
        WecomFake::start_with(CORP_ID, SECRET).await
    }

    pub async fn start_with(corp_id: &str, secret: &str) -> (String, WecomHandle) {
        let state = Arc::new(Mutex::new(State {
            corp_id: corp_id.into(),
            secret: secret.into(),
            expires_in: 7200,
            ..State::default()
        }));
        let handle = WecomHandle {
            state: state.clone(),
            arrived: Arc::new(tokio::sync::Notify::new()),
        };
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(handle.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), handle)
    }
}

/// What a test uses to look at and steer the fake. Cheap to clone.
#[derive(Clone)]
pub struct WecomHandle {
    state: Arc<Mutex<State>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl WecomHandle {
    /// Every request on `path`, in arrival order (rejected ones included).
    pub fn calls(&self, path: &str) -> Vec<Call> {
        let st = self.state.lock().unwrap();
        st.calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// The JSON bodies received on `path` (for `gettoken`, the query as a
    /// JSON object).
    pub fn requests(&self, path: &str) -> Vec<Value> {
        self.calls(path)
            .into_iter()
            .map(|c| {
                if c.method == Method::GET {
                    json!(c.query)
                } else {
                    c.body
                }
            })
            .collect()
    }

    /// How many requests arrived on `path`.
    pub fn count(&self, path: &str) -> usize {
        self.calls(path).len()
    }

    /// Every request on every path.
    pub fn all_calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Waits until at least `n` requests arrived on `path` and returns their
    /// bodies; panics after `timeout`.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if self.count(path) >= n {
                return self.requests(path);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "expected {n} requests on {path} within {timeout:?}, got {}",
                    self.count(path)
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }

    /// Queues `answer` for the next request on `path` (after its token check).
    pub fn script(&self, path: &str, answer: Answer) {
        let mut st = self.state.lock().unwrap();
        st.scripts
            .entry(path.to_string())
            .or_default()
            .push_back(answer);
    }

    /// `expires_in` of the tokens issued from now on.
    pub fn set_expires_in(&self, secs: i64) {
        self.state.lock().unwrap().expires_in = secs;
    }

    /// Expires every token issued so far: calls with them get 42001 and the
    /// next gettoken issues a new token.
    pub fn expire_tokens(&self) {
        let mut st = self.state.lock().unwrap();
        st.valid.clear();
        st.current = None;
    }

    /// The token gettoken currently hands out, if any.
    pub fn current_token(&self) -> Option<String> {
        self.state.lock().unwrap().current.clone()
    }

    /// What `get_groupmsg_send_result` reports for `external_userid`
    /// (0 not sent yet, 1 sent, 2 not a friend, 3 over the cap).
    pub fn set_send_status(&self, external_userid: &str, status: i64) {
        let mut st = self.state.lock().unwrap();
        st.send_status.insert(external_userid.into(), status);
    }

    /// What `transfer_result` reports for `external_userid` (1 done,
    /// 2 waiting, 3 refused, 4 takeover at its limit, 5 no record).
    pub fn set_transfer_status(&self, external_userid: &str, status: i64) {
        let mut st = self.state.lock().unwrap();
        st.transfer_status.insert(external_userid.into(), status);
    }

    /// The relationship of staff member `userid` with `external_userid`, as
    /// externalcontact/get lists it, with these tags `(tag_name, type)`
    /// (type 1 corp, 2 personal, 3 rule group); replaces that member's entry.
    pub fn set_follow_user(&self, external_userid: &str, userid: &str, tags: &[(&str, i64)]) {
        let tags: Vec<Value> = tags
            .iter()
            .enumerate()
            .map(|(i, (name, kind))| {
                let mut t = json!({"group_name": "Group", "tag_name": name, "type": kind});
                // WeCom gives no tag_id for a personal tag.
                if *kind != 2 {
                    t["tag_id"] = json!(format!("et{userid}{i}"));
                }
                t
            })
            .collect();
        let entry = json!({"userid": userid, "remark": "", "description": "",
                           "createtime": 1_700_000_000, "tags": tags, "add_way": 1});
        let mut st = self.state.lock().unwrap();
        let list = st.follow_users.entry(external_userid.into()).or_default();
        list.retain(|e| e["userid"] != userid);
        list.push(entry);
    }

    /// Pages externalcontact/get's `follow_user` by `n` entries (0: no paging).
    pub fn set_follow_user_page(&self, n: usize) {
        self.state.lock().unwrap().follow_user_page = n;
    }

    /// Makes externalcontact/get answer only after `d`.
    pub fn set_get_delay(&self, d: Option<Duration>) {
        self.state.lock().unwrap().get_delay = d;
    }

    /// The add_msg_template tasks created so far: msgid → (sender, external_userids).
    pub fn tasks(&self) -> HashMap<String, (String, Vec<String>)> {
        self.state.lock().unwrap().tasks.clone()
    }
}

fn parse_query(uri: &Uri) -> HashMap<String, String> {
    let q = uri.query().unwrap_or("");
    reqwest::Url::parse(&format!("http://x/?{q}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

async fn serve(
    axum::extract::State(h): axum::extract::State<WecomHandle>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let call = Call {
        method: method.clone(),
        path: uri.path().to_string(),
        query: parse_query(&uri),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    let answer = {
        let mut st = h.state.lock().unwrap();
        st.calls.push(call.clone());
        decide(&mut st, &call)
    };
    h.arrived.notify_waiters();
    respond(answer).await
}

async fn respond(answer: Answer) -> Response {
    let mut a = answer;
    loop {
        match a {
            Answer::Delayed(d, inner) => {
                tokio::time::sleep(d).await;
                a = *inner;
            }
            Answer::Json(v) => {
                return (
                    StatusCode::OK,
                    [("content-type", "application/json; charset=UTF-8")],
                    v.to_string(),
                )
                    .into_response();
            }
            Answer::Status(s) => {
                return (
                    StatusCode::from_u16(s).expect("a valid status"),
                    "fake transport failure",
                )
                    .into_response();
            }
        }
    }
}

fn missing(field: &str) -> Answer {
    Answer::errcode(40063, &format!("missing or bad parameter {field}"))
}

/// The answer to one request, WeCom's way.
fn decide(st: &mut State, call: &Call) -> Answer {
    if call.path == GETTOKEN {
        if call.method != Method::GET {
            return Answer::Status(405);
        }
        if let Some(a) = st.scripts.get_mut(GETTOKEN).and_then(VecDeque::pop_front) {
            return a;
        }
        if call.query.get("corpid") != Some(&st.corp_id) {
            return Answer::errcode(40013, "invalid corpid");
        }
        if call.query.get("corpsecret") != Some(&st.secret) {
            return Answer::errcode(40001, "invalid credential");
        }
        let token = match &st.current {
            Some(t) => t.clone(),
            None => {
                st.tokens_issued += 1;
                let t = format!("tok-{}", st.tokens_issued);
                st.valid.insert(t.clone());
                st.issued.insert(t.clone());
                st.current = Some(t.clone());
                t
            }
        };
        return Answer::Json(json!({
            "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": st.expires_in
        }));
    }
    if call.path == EXTERNALCONTACT_GET {
        return external_contact_get(st, call);
    }
    const KNOWN: &[&str] = &[
        ADD_MSG_TEMPLATE,
        SEND_RESULT,
        SEND_WELCOME,
        MESSAGE_SEND,
        TRANSFER_CUSTOMER,
        TRANSFER_RESULT,
    ];
    if !KNOWN.contains(&call.path.as_str()) {
        return Answer::Status(404);
    }
    if call.method != Method::POST {
        return Answer::Status(405);
    }
    match call.token() {
        None => return Answer::errcode(41001, "access_token missing"),
        Some(t) if !st.issued.contains(t) => return Answer::errcode(40014, "invalid access_token"),
        Some(t) if !st.valid.contains(t) => {
            return Answer::errcode(42001, "access_token expired");
        }
        Some(_) => {}
    }
    if let Some(a) = st.scripts.get_mut(&call.path).and_then(VecDeque::pop_front) {
        return a;
    }
    let b = &call.body;
    let text = |b: &Value| b["text"]["content"].as_str().is_some_and(|c| !c.is_empty());
    match call.path.as_str() {
        ADD_MSG_TEMPLATE => {
            let Some(sender) = b["sender"].as_str().filter(|s| !s.is_empty()) else {
                return missing("sender");
            };
            let ids: Vec<String> = match b["external_userid"].as_array() {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => return missing("external_userid"),
            };
            if b.get("chat_type").is_some_and(|c| c != "single") {
                return missing("chat_type");
            }
            if !text(b) {
                return Answer::errcode(44004, "empty content");
            }
            st.next_id += 1;
            let msgid = format!("msg{}", st.next_id);
            st.tasks.insert(msgid.clone(), (sender.to_string(), ids));
            Answer::Json(json!({"errcode": 0, "errmsg": "ok", "fail_list": [], "msgid": msgid}))
        }
        SEND_RESULT => {
            let Some(msgid) = b["msgid"].as_str() else {
                return missing("msgid");
            };
            let Some(userid) = b["userid"].as_str() else {
                return missing("userid");
            };
            let Some((sender, ids)) = st.tasks.get(msgid) else {
                return Answer::errcode(41063, "msgid not found");
            };
            if sender != userid {
                return Answer::Json(json!({"errcode": 0, "errmsg": "ok", "send_list": []}));
            }
            let list: Vec<Value> = ids
                .iter()
                .map(|e| {
                    let status = st.send_status.get(e).copied().unwrap_or(0);
                    json!({"external_userid": e, "userid": userid, "status": status,
                           "send_time": if status == 1 { 1_700_000_000 } else { 0 }})
                })
                .collect();
            Answer::Json(
                json!({"errcode": 0, "errmsg": "ok", "send_list": list, "next_cursor": ""}),
            )
        }
        SEND_WELCOME => {
            let Some(code) = b["welcome_code"].as_str().filter(|c| !c.is_empty()) else {
                return missing("welcome_code");
            };
            if !text(b) {
                return Answer::errcode(44004, "empty content");
            }
            if !st.used_codes.insert(code.to_string()) {
                return Answer::errcode(41051, "welcome code used");
            }
            Answer::errcode(0, "ok")
        }
        MESSAGE_SEND => {
            let Some(to) = b["touser"].as_str().filter(|t| !t.is_empty()) else {
                return missing("touser");
            };
            if b["msgtype"] != "text" {
                return missing("msgtype");
            }
            if !b["agentid"].is_i64() {
                return missing("agentid");
            }
            if !text(b) {
                return Answer::errcode(44004, "empty content");
            }
            let _ = to;
            st.next_id += 1;
            Answer::Json(json!({"errcode": 0, "errmsg": "ok", "invaliduser": "",
                                "msgid": format!("notice{}", st.next_id)}))
        }
        TRANSFER_CUSTOMER => {
            let (Some(from), Some(to)) =
                (b["handover_userid"].as_str(), b["takeover_userid"].as_str())
            else {
                return missing("handover_userid/takeover_userid");
            };
            let Some(ids) = b["external_userid"].as_array().filter(|a| !a.is_empty()) else {
                return missing("external_userid");
            };
            let mut customers = Vec::new();
            for id in ids.iter().filter_map(Value::as_str) {
                st.transfers.push((from.into(), to.into(), id.into()));
                customers.push(json!({"external_userid": id, "errcode": 0}));
            }
            Answer::Json(json!({"errcode": 0, "errmsg": "ok", "customer": customers}))
        }
        TRANSFER_RESULT => {
            let (Some(from), Some(to)) =
                (b["handover_userid"].as_str(), b["takeover_userid"].as_str())
            else {
                return missing("handover_userid/takeover_userid");
            };
            let customers: Vec<Value> = st
                .transfers
                .iter()
                .filter(|(f, t, _)| f == from && t == to)
                .map(|(_, _, id)| {
                    let status = st.transfer_status.get(id).copied().unwrap_or(2);
                    json!({"external_userid": id, "status": status,
                           "takeover_time": if status == 1 { 1_700_000_000 } else { 0 }})
                })
                .collect();
            Answer::Json(
                json!({"errcode": 0, "errmsg": "ok", "customer": customers, "next_cursor": ""}),
            )
        }
        _ => Answer::Status(404),
    }
}

/// `GET externalcontact/get`: the customer and its relationships.
fn external_contact_get(st: &mut State, call: &Call) -> Answer {
    if call.method != Method::GET {
        return Answer::Status(405);
    }
    match call.token() {
        None => return Answer::errcode(41001, "access_token missing"),
        Some(t) if !st.issued.contains(t) => return Answer::errcode(40014, "invalid access_token"),
        Some(t) if !st.valid.contains(t) => {
            return Answer::errcode(42001, "access_token expired");
        }
        Some(_) => {}
    }
    if let Some(a) = st
        .scripts
        .get_mut(EXTERNALCONTACT_GET)
        .and_then(VecDeque::pop_front)
    {
        return a;
    }
    let Some(ext) = call.query.get("external_userid").filter(|e| !e.is_empty()) else {
        return missing("external_userid");
    };
    let Some(all) = st.follow_users.get(ext).filter(|l| !l.is_empty()) else {
        return Answer::errcode(84061, "not external contact");
    };
    let start: usize = match call.query.get("cursor").filter(|c| !c.is_empty()) {
        Some(c) => match c.strip_prefix("cur").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return missing("cursor"),
        },
        None => 0,
    };
    let size = if st.follow_user_page == 0 {
        all.len()
    } else {
        st.follow_user_page
    };
    let end = (start + size).min(all.len());
    let page: Vec<Value> = all.get(start..end).unwrap_or_default().to_vec();
    let next = if end < all.len() {
        format!("cur{end}")
    } else {
        String::new()
    };
    let answer = Answer::Json(json!({
        "errcode": 0, "errmsg": "ok",
        "external_contact": {"external_userid": ext, "name": "Customer", "type": 1, "gender": 0},
        "follow_user": page,
        "next_cursor": next,
    }));
    match st.get_delay {
        Some(d) => answer.delayed(d),
        None => answer,
    }
}
