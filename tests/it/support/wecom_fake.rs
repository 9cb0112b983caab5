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
//! - **friendships** (reference §1.2, §1.5): a customer is a friend of the
//!   members set with [`WecomHandle::befriend`] / [`WecomHandle::set_follow_user`].
//!   `add_msg_template` from a sender who is a friend of none of the task's
//!   customers is refused with 41048 ("no sendable customer"); a customer in
//!   a task who is not the sender's friend gets status 2 in
//!   `get_groupmsg_send_result`. `transfer_customer` refuses per customer:
//!   40131 when the handover member is not a follow-user, 40130 when handover
//!   and takeover are the same member, 40129 while an earlier transfer of the
//!   customer waits, 40128 after 2 transfers in 90 days. A transfer reported
//!   done ([`WecomHandle::set_transfer_status`] 1) moves the friendship from
//!   the handover to the takeover member.
//! - result APIs: `get_groupmsg_send_result` answers 41063 ("still being
//!   dispatched") for the first [`WecomHandle::set_dispatching`] asks about a
//!   new task, and 40058 for a msgid it never issued.
//! - `batch/get_by_user` (`userid_list` of 1–100 members, `limit` ≤ 100,
//!   paged with `next_cursor`): every relationship of those members.
//! - `remind_groupmsg_send` (`msgid` of one of its tasks, else 40058): at
//!   most 3 reminders per task in 24 hours; a fourth gets 45009 (WeCom's
//!   code for it is not documented).
//! - `get_unassigned_list` (`page_size` ≤ 1,000, `cursor`): the customers
//!   of members who left ([`WecomHandle::resign`]), `is_last`/`next_cursor`.
//!   `resigned/transfer_customer` refuses per customer: 40130 same member,
//!   40097 when the handover member has not left this customer or left over
//!   a year ago (code not confirmed), 40129 while a transfer waits, 40128
//!   after 2 transfers in 90 days (shared with `transfer_customer`);
//!   `resigned/transfer_result` lists only resigned transfers.
//! - `message/send`: the recipients must be members of the fake's directory
//!   ([`WecomHandle::add_member`]; WeCom userids are case-insensitive), else
//!   they come back in `invaliduser` **lower-cased**; members without a
//!   licence ([`WecomHandle::set_unlicensed`]) in `unlicenseduser`; 81013 when
//!   no recipient is valid. Per member, at most 30 notices a minute and 1,000
//!   an hour are delivered: the excess is **silently dropped** (errcode 0),
//!   as WeCom does; [`WecomHandle::notices_delivered`] /
//!   [`WecomHandle::notices_dropped`] tell them apart.
//! - `GET /cgi-bin/externalcontact/get?external_userid=[&cursor=]` (a GET,
//!   token checked the same way): the customer's `follow_user` entries as set
//!   with [`WecomHandle::set_follow_user`] (84061 for a customer without
//!   any), paged with `next_cursor` when [`WecomHandle::set_follow_user_page`]
//!   says so.
//!
//! - corp tags (reference §1.6; WxJava `WxCpExternalContactService`,
//!   WeCom's errcode list): `get_corp_tag_list` (`tag_id` / `group_id`
//!   filters) lists the library; `add_corp_tag` puts tags in the group
//!   `group_id` names (40068 for an unknown one) or the group named
//!   `group_name` (created when missing), refusing a duplicate name in the
//!   group (40071) and an empty or over-30-character name (40072);
//!   `mark_tag` needs `userid` and `external_userid` and one of
//!   `add_tag` / `remove_tag` (40063), refuses a tag id not in the library
//!   (40068 "invalid tagid") and a member who is not a follow-user of the
//!   customer (84061, 不存在外部联系人的关系), and changes that relationship's
//!   tags as `externalcontact/get` then lists them (type 1). Like WeCom it
//!   raises no callback for the change. [`WecomHandle::omit_new_tags`] makes
//!   `add_corp_tag` answer ok with a group that lists none of the new tags
//!   (an answer nurture must not take as the tag made).
//!
//! - `media/upload?type=image|file` (multipart, one field `media` with a
//!   `filename`): 40005 for another `type`, 44001 for an empty file, 40006
//!   for one of 5 bytes or less or over 20 MB (40009 for an image over
//!   10 MB), 40004 for an image that is not a JPG or PNG; otherwise a new
//!   `media_id`, valid for [`MEDIA_LIFE`] ([`WecomHandle::age_media`]).
//!   `send_welcome_msg` and `add_msg_template` check `attachments`: at most
//!   9 (40058; WeCom's exact code for more is not documented in the SDKs
//!   read), each `msgtype` one of image, link, miniprogram, video, file with
//!   its object (40063), a link's `title` and `url`, a mini-program's
//!   `title`, `appid`, `page` (40063), and every `media_id` /
//!   `pic_media_id` one it issued, of the right type and not expired (40007
//!   "invalid media_id").
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
pub const BATCH_GET_BY_USER: &str = "/cgi-bin/externalcontact/batch/get_by_user";
pub const REMIND_GROUPMSG_SEND: &str = "/cgi-bin/externalcontact/remind_groupmsg_send";
pub const GET_UNASSIGNED_LIST: &str = "/cgi-bin/externalcontact/get_unassigned_list";
pub const RESIGNED_TRANSFER_CUSTOMER: &str = "/cgi-bin/externalcontact/resigned/transfer_customer";
pub const RESIGNED_TRANSFER_RESULT: &str = "/cgi-bin/externalcontact/resigned/transfer_result";
pub const ADD_CONTACT_WAY: &str = "/cgi-bin/externalcontact/add_contact_way";
pub const UPDATE_CONTACT_WAY: &str = "/cgi-bin/externalcontact/update_contact_way";
pub const DEL_CONTACT_WAY: &str = "/cgi-bin/externalcontact/del_contact_way";
pub const GET_CORP_TAG_LIST: &str = "/cgi-bin/externalcontact/get_corp_tag_list";
pub const ADD_CORP_TAG: &str = "/cgi-bin/externalcontact/add_corp_tag";
pub const MARK_TAG: &str = "/cgi-bin/externalcontact/mark_tag";
pub const MEDIA_UPLOAD: &str = "/cgi-bin/media/upload";
/// WeCom keeps an uploaded temporary file this long.
pub const MEDIA_LIFE: Duration = Duration::from_secs(3 * 86_400);

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    /// The decoded query string.
    pub query: HashMap<String, String>,
    /// The JSON body (`Null` for a GET or a body that is not JSON).
    pub body: Value,
    /// The raw body and its content type (media uploads are multipart).
    pub raw: Vec<u8>,
    pub content_type: String,
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
    /// (msgid, external_userid) of task customers who were not the sender's
    /// friend when the task was created (status 2).
    not_friends: HashSet<(String, String)>,
    /// get_groupmsg_send_result status per external_userid (default 0).
    send_status: HashMap<String, i64>,
    /// Welcome codes already used.
    used_codes: HashSet<String>,
    /// transfer_customer calls accepted: (handover, takeover,
    /// external_userid, when).
    transfers: Vec<(String, String, String, Instant)>,
    /// transfer_result status per external_userid (default 2 waiting).
    transfer_status: HashMap<String, i64>,
    /// externalcontact/get: external_userid → follow_user entries.
    follow_users: HashMap<String, Vec<Value>>,
    /// follow_user entries per page of externalcontact/get (0: one page).
    follow_user_page: usize,
    /// How long externalcontact/get takes to answer.
    get_delay: Option<Duration>,
    /// `createtime` of the next relationship set up (grows, so the latest
    /// friend is the one added last).
    next_createtime: i64,
    /// get_groupmsg_send_result answers 41063 this many times per new task.
    dispatching: u32,
    /// msgid → asks answered 41063 so far.
    dispatch_asks: HashMap<String, u32>,
    /// message/send: members (lower-cased) and those without a licence.
    members: HashSet<String>,
    unlicensed: HashSet<String>,
    /// message/send: per member (lower-cased), when a notice was delivered /
    /// how many were dropped by the pacing.
    notices: HashMap<String, Vec<Instant>>,
    dropped: HashMap<String, usize>,
    /// remind_groupmsg_send: msgid → when each accepted reminder came.
    reminders: HashMap<String, Vec<Instant>>,
    /// get_unassigned_list: (handover_userid, external_userid, dimission_time s).
    unassigned: Vec<(String, String, i64)>,
    /// get_unassigned_list entries per page (0: page_size).
    unassigned_page: usize,
    /// transfers (from, to, external_userid) made with the resigned API.
    resigned_transfers: HashSet<(String, String, String)>,
    /// add_contact_way codes: config_id → the code (type, scene, user, state, ...).
    contact_ways: HashMap<String, Value>,
    /// The corp tag library: groups with their tags.
    corp_groups: Vec<CorpGroup>,
    /// add_corp_tag answers left that list none of the new tags, and
    /// whether those calls still make the tags.
    omit_new_tags: usize,
    omitted_still_made: bool,
    /// media/upload: media_id → (type, file name, size, when issued, and
    /// how much older than that it counts: [`WecomHandle::age_media`]).
    media: HashMap<String, (String, String, usize, Instant, Duration)>,
}

/// One corp tag group of the fake's library.
#[derive(Debug, Clone, Default)]
struct CorpGroup {
    id: String,
    name: String,
    /// (tag id, tag name).
    tags: Vec<(String, String)>,
}

/// Staff members the fake's directory has from the start.
pub const MEMBERS: &[&str] = &["wangfang", "lilei", "chenjie", "zhangsan", "lisi", "wangwu"];
/// WeCom's per-member app message limits (reference §1.4).
pub const NOTICES_PER_MINUTE: usize = 30;
pub const NOTICES_PER_HOUR: usize = 1_000;

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
            next_createtime: 1_700_000_000,
            members: MEMBERS.iter().map(|m| m.to_string()).collect(),
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

    /// The admin reset the app's secret: gettoken accepts only `secret`
    /// from now on (40001 for the old one) and issues a new token.
    pub fn set_secret(&self, secret: &str) {
        let mut st = self.state.lock().unwrap();
        st.secret = secret.into();
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
    /// Status 1 also moves the customer's friendship from the handover
    /// member of its latest transfer to the takeover member.
    pub fn set_transfer_status(&self, external_userid: &str, status: i64) {
        let moved = {
            let mut st = self.state.lock().unwrap();
            st.transfer_status.insert(external_userid.into(), status);
            st.transfers
                .iter()
                .rev()
                .find(|(_, _, e, _)| e == external_userid)
                .map(|(f, t, _, _)| (f.clone(), t.clone()))
        };
        if let (1, Some((from, to))) = (status, moved) {
            self.state
                .lock()
                .unwrap()
                .unassigned
                .retain(|(h, e, _)| !(h == &from && e == external_userid));
            self.unfriend(external_userid, &from);
            self.befriend(external_userid, &to);
        }
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
        let mut st = self.state.lock().unwrap();
        st.next_createtime += 1;
        let entry = json!({"userid": userid, "remark": "", "description": "",
                           "createtime": st.next_createtime, "tags": tags, "add_way": 1});
        let list = st.follow_users.entry(external_userid.into()).or_default();
        list.retain(|e| e["userid"] != userid);
        list.push(entry);
    }

    /// Makes `external_userid` a friend of staff member `userid` (a
    /// relationship without tags; one already there is kept as it is).
    pub fn befriend(&self, external_userid: &str, userid: &str) {
        let known = {
            let st = self.state.lock().unwrap();
            st.follow_users
                .get(external_userid)
                .is_some_and(|l| l.iter().any(|e| e["userid"] == userid))
        };
        if !known {
            self.set_follow_user(external_userid, userid, &[]);
        }
    }

    /// Ends the relationship of `userid` with `external_userid`.
    pub fn unfriend(&self, external_userid: &str, userid: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(l) = st.follow_users.get_mut(external_userid) {
            l.retain(|e| e["userid"] != userid);
        }
    }

    /// The members `external_userid` is a friend of.
    pub fn friends_of(&self, external_userid: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        friends(&st, external_userid)
    }

    /// get_groupmsg_send_result answers 41063 ("still dispatching") the first
    /// `n` times it is asked about each new task.
    pub fn set_dispatching(&self, n: u32) {
        self.state.lock().unwrap().dispatching = n;
    }

    /// Adds a member to the directory message/send delivers to.
    pub fn add_member(&self, userid: &str) {
        let mut st = self.state.lock().unwrap();
        st.members.insert(userid.to_lowercase());
    }

    /// A member without an account licence: message/send lists them in
    /// `unlicenseduser` and does not deliver.
    pub fn set_unlicensed(&self, userid: &str) {
        let mut st = self.state.lock().unwrap();
        st.unlicensed.insert(userid.to_lowercase());
    }

    /// Notices message/send delivered to `userid`.
    pub fn notices_delivered(&self, userid: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.notices.get(&userid.to_lowercase()).map_or(0, Vec::len)
    }

    /// Notices to `userid` that message/send accepted but dropped (over 30 a
    /// minute or 1,000 an hour).
    pub fn notices_dropped(&self, userid: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.dropped.get(&userid.to_lowercase()).copied().unwrap_or(0)
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
    /// Reminders WeCom accepted for a mass task.
    pub fn reminders(&self, msgid: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.reminders.get(msgid).map_or(0, Vec::len)
    }

    /// `userid` left the company `days_ago` days ago, leaving `external_userid`
    /// unassigned (listed by get_unassigned_list until a resigned transfer of
    /// it is done).
    pub fn resign(&self, userid: &str, external_userid: &str, days_ago: i64) {
        let mut st = self.state.lock().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        st.unassigned.push((
            userid.into(),
            external_userid.into(),
            now - days_ago * 86_400,
        ));
    }

    /// get_unassigned_list entries per page (0: as many as page_size).
    pub fn set_unassigned_page(&self, n: usize) {
        self.state.lock().unwrap().unassigned_page = n;
    }

    /// The contact-way codes that exist, by config_id.
    pub fn contact_ways(&self) -> HashMap<String, Value> {
        self.state.lock().unwrap().contact_ways.clone()
    }

    /// The corp tag library: (group name, tag name, tag id), in order.
    pub fn corp_tags(&self) -> Vec<(String, String, String)> {
        let st = self.state.lock().unwrap();
        st.corp_groups
            .iter()
            .flat_map(|g| {
                g.tags
                    .iter()
                    .map(|(id, name)| (g.name.clone(), name.clone(), id.clone()))
            })
            .collect()
    }

    /// The next `n` add_corp_tag answers are `errcode 0` with the group but
    /// none of the new tags in it; `made`: the tags are made all the same.
    pub fn omit_new_tags(&self, n: usize, made: bool) {
        let mut st = self.state.lock().unwrap();
        st.omit_new_tags = n;
        st.omitted_still_made = made;
    }

    /// An admin adds a corp tag in the console (its group made if needed);
    /// gives its id.
    pub fn create_corp_tag(&self, group: &str, name: &str) -> String {
        let mut st = self.state.lock().unwrap();
        new_corp_tag(&mut st, group, name)
    }

    /// An admin deletes a corp tag: it leaves the library and every
    /// relationship (mark_tag then refuses its id with 40068).
    pub fn delete_corp_tag(&self, tag_id: &str) {
        let mut st = self.state.lock().unwrap();
        for g in &mut st.corp_groups {
            g.tags.retain(|(id, _)| id != tag_id);
        }
        for list in st.follow_users.values_mut() {
            for e in list.iter_mut() {
                if let Some(tags) = e["tags"].as_array_mut() {
                    tags.retain(|t| t["tag_id"] != tag_id);
                }
            }
        }
    }

    /// The tag names on the relationship of `userid` with `external_userid`.
    pub fn relationship_tags(&self, external_userid: &str, userid: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<String> = st
            .follow_users
            .get(external_userid)
            .and_then(|l| l.iter().find(|e| e["userid"] == userid))
            .and_then(|e| e["tags"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["tag_name"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Media ids issued so far: media_id → (type, file name, size).
    pub fn media(&self) -> HashMap<String, (String, String, usize)> {
        let st = self.state.lock().unwrap();
        st.media
            .iter()
            .map(|(id, (t, n, len, _, _))| (id.clone(), (t.clone(), n.clone(), *len)))
            .collect()
    }

    /// Makes every media id issued so far `by` older: past [`MEDIA_LIFE`]
    /// they are refused with 40007.
    pub fn age_media(&self, by: Duration) {
        for m in self.state.lock().unwrap().media.values_mut() {
            m.4 += by;
        }
    }

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
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        method: method.clone(),
        path: uri.path().to_string(),
        query: parse_query(&uri),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
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
        BATCH_GET_BY_USER,
        REMIND_GROUPMSG_SEND,
        GET_UNASSIGNED_LIST,
        RESIGNED_TRANSFER_CUSTOMER,
        RESIGNED_TRANSFER_RESULT,
        ADD_CONTACT_WAY,
        UPDATE_CONTACT_WAY,
        DEL_CONTACT_WAY,
        GET_CORP_TAG_LIST,
        ADD_CORP_TAG,
        MARK_TAG,
        MEDIA_UPLOAD,
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
        ADD_CONTACT_WAY | UPDATE_CONTACT_WAY | DEL_CONTACT_WAY => contact_way(st, call),
        GET_CORP_TAG_LIST | ADD_CORP_TAG | MARK_TAG => corp_tags(st, call),
        MEDIA_UPLOAD => media_upload(st, call),
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
            if let Some(a) = check_attachments(st, b) {
                return a;
            }
            // Only a member the customer is a friend of can send to them;
            // a task in which nobody can be sent to is refused.
            if !ids
                .iter()
                .any(|e| friends(st, e).iter().any(|f| f == sender))
            {
                return Answer::errcode(41048, "no sendable customer");
            }
            st.next_id += 1;
            let msgid = format!("msg{}", st.next_id);
            for e in &ids {
                if !friends(st, e).iter().any(|f| f == sender) {
                    st.not_friends.insert((msgid.clone(), e.clone()));
                }
            }
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
            let Some((sender, ids)) = st.tasks.get(msgid).cloned() else {
                return Answer::errcode(40058, "invalid msgid");
            };
            let asked = st.dispatch_asks.entry(msgid.to_string()).or_insert(0);
            if *asked < st.dispatching {
                *asked += 1;
                return Answer::errcode(41063, "群发消息正在被派发中，请稍后再试");
            }
            if sender != userid {
                return Answer::Json(json!({"errcode": 0, "errmsg": "ok", "send_list": []}));
            }
            let list: Vec<Value> = ids
                .iter()
                .map(|e| {
                    let status = if st.not_friends.contains(&(msgid.to_string(), e.clone())) {
                        2
                    } else {
                        st.send_status.get(e).copied().unwrap_or(0)
                    };
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
            if let Some(a) = check_attachments(st, b) {
                return a;
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
            // Userids are case-insensitive; WeCom answers the invalid ones
            // lower-cased.
            let mut invalid = Vec::new();
            let mut unlicensed = Vec::new();
            let mut valid = Vec::new();
            for u in to.split('|').filter(|u| !u.is_empty()) {
                let lower = u.to_lowercase();
                if !st.members.contains(&lower) {
                    invalid.push(lower);
                } else if st.unlicensed.contains(&lower) {
                    unlicensed.push(lower);
                } else {
                    valid.push(lower);
                }
            }
            if valid.is_empty() && unlicensed.is_empty() {
                return Answer::errcode(81013, "user & party & tag all invalid");
            }
            let now = Instant::now();
            for u in valid {
                // Over 30 a minute or 1,000 an hour: accepted, never shown.
                let sent = st.notices.entry(u.clone()).or_default();
                let minute = sent
                    .iter()
                    .filter(|t| now.duration_since(**t) < Duration::from_secs(60))
                    .count();
                let hour = sent
                    .iter()
                    .filter(|t| now.duration_since(**t) < Duration::from_secs(3_600))
                    .count();
                if minute >= NOTICES_PER_MINUTE || hour >= NOTICES_PER_HOUR {
                    *st.dropped.entry(u).or_default() += 1;
                } else {
                    sent.push(now);
                }
            }
            st.next_id += 1;
            Answer::Json(json!({"errcode": 0, "errmsg": "ok",
                                "invaliduser": invalid.join("|"),
                                "unlicenseduser": unlicensed.join("|"),
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
            let now = Instant::now();
            for id in ids.iter().filter_map(Value::as_str) {
                let earlier: Vec<&(String, String, String, Instant)> =
                    st.transfers.iter().filter(|t| t.2 == id).collect();
                let waiting = earlier
                    .last()
                    .is_some_and(|_| st.transfer_status.get(id).copied().unwrap_or(2) == 2);
                let recent = earlier
                    .iter()
                    .filter(|t| now.duration_since(t.3) < Duration::from_secs(90 * 86_400))
                    .count();
                let code = if from == to {
                    40130
                } else if !friends(st, id).iter().any(|f| f == from) {
                    40131
                } else if waiting {
                    40129
                } else if recent >= 2 {
                    40128
                } else {
                    0
                };
                if code == 0 {
                    st.transfers.push((from.into(), to.into(), id.into(), now));
                    st.transfer_status.remove(id);
                }
                customers.push(json!({"external_userid": id, "errcode": code}));
            }
            Answer::Json(json!({"errcode": 0, "errmsg": "ok", "customer": customers}))
        }
        BATCH_GET_BY_USER => {
            // userid_list: 1..=100 members; limit: at most 100 (default 50);
            // the cursor is the one it handed out.
            let Some(users) = b["userid_list"].as_array().filter(|l| !l.is_empty()) else {
                return missing("userid_list");
            };
            if users.len() > 100 {
                return Answer::errcode(40058, "userid_list exceeds 100");
            }
            let users: Vec<&str> = users.iter().filter_map(Value::as_str).collect();
            let limit = match b.get("limit").and_then(Value::as_u64) {
                None => 50,
                Some(l) if (1..=100).contains(&l) => l as usize,
                Some(_) => return Answer::errcode(40058, "invalid limit"),
            };
            let start: usize = match b["cursor"].as_str().filter(|c| !c.is_empty()) {
                None => 0,
                Some(c) => match c.strip_prefix("b").and_then(|n| n.parse().ok()) {
                    Some(n) => n,
                    None => return missing("cursor"),
                },
            };
            let mut all: Vec<Value> = Vec::new();
            let mut exts: Vec<&String> = st.follow_users.keys().collect();
            exts.sort();
            for ext in exts {
                for f in &st.follow_users[ext] {
                    if users.iter().any(|u| f["userid"] == *u) {
                        all.push(json!({
                            "external_contact": {"external_userid": ext, "name": "Customer", "type": 1},
                            "follow_info": {"userid": f["userid"], "remark": f["remark"],
                                            "createtime": f["createtime"], "state": f.get("state").cloned().unwrap_or(json!("")),
                                            "tag_id": []},
                        }));
                    }
                }
            }
            let end = (start + limit).min(all.len());
            let next = if end < all.len() {
                format!("b{end}")
            } else {
                String::new()
            };
            Answer::Json(json!({"errcode": 0, "errmsg": "ok",
                                "external_contact_list": all.get(start..end).unwrap_or_default(),
                                "next_cursor": next}))
        }
        REMIND_GROUPMSG_SEND => {
            // `msgid` of a task of this corp; at most 3 reminders per task in
            // 24 hours ("24小时内每个群发最多触发三次提醒"). WeCom's errcode for a
            // fourth is not documented: the fake answers 45009.
            let Some(msgid) = b["msgid"].as_str().filter(|m| !m.is_empty()) else {
                return missing("msgid");
            };
            if !st.tasks.contains_key(msgid) {
                return Answer::errcode(40058, "invalid msgid");
            }
            let now = Instant::now();
            let sent = st.reminders.entry(msgid.to_string()).or_default();
            let in_day = sent
                .iter()
                .filter(|t| now.duration_since(**t) < Duration::from_secs(86_400))
                .count();
            if in_day >= 3 {
                return Answer::errcode(45009, "remind limit: 3 per 24 hours");
            }
            sent.push(now);
            Answer::errcode(0, "ok")
        }
        GET_UNASSIGNED_LIST => {
            // page_size at most 1,000 (default 1,000); cursor as handed out.
            let size = match b.get("page_size").and_then(Value::as_u64) {
                None => 1_000,
                Some(n) if (1..=1_000).contains(&n) => n as usize,
                Some(_) => return Answer::errcode(40058, "invalid page_size"),
            };
            let size = if st.unassigned_page == 0 {
                size
            } else {
                size.min(st.unassigned_page)
            };
            let start: usize = match b["cursor"].as_str().filter(|c| !c.is_empty()) {
                None => 0,
                Some(c) => match c.strip_prefix("u").and_then(|n| n.parse().ok()) {
                    Some(n) => n,
                    None => return missing("cursor"),
                },
            };
            let all = &st.unassigned;
            let end = (start + size).min(all.len());
            let info: Vec<Value> = all
                .get(start..end)
                .unwrap_or_default()
                .iter()
                .map(|(h, e, t)| json!({"handover_userid": h, "external_userid": e, "dimission_time": t}))
                .collect();
            let last = end >= all.len();
            Answer::Json(
                json!({"errcode": 0, "errmsg": "ok", "info": info, "is_last": last,
                                "next_cursor": if last { String::new() } else { format!("u{end}") }}),
            )
        }
        RESIGNED_TRANSFER_CUSTOMER => {
            let (Some(from), Some(to)) =
                (b["handover_userid"].as_str(), b["takeover_userid"].as_str())
            else {
                return missing("handover_userid/takeover_userid");
            };
            let Some(ids) = b["external_userid"].as_array().filter(|a| !a.is_empty()) else {
                return missing("external_userid");
            };
            if ids.len() > 100 {
                return Answer::errcode(40058, "external_userid exceeds 100");
            }
            let now = Instant::now();
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let mut customers = Vec::new();
            for id in ids.iter().filter_map(Value::as_str) {
                let left = st
                    .unassigned
                    .iter()
                    .find(|(h, e, _)| h == from && e == id)
                    .map(|(_, _, t)| *t);
                let earlier: Vec<&(String, String, String, Instant)> =
                    st.transfers.iter().filter(|t| t.2 == id).collect();
                let waiting = earlier
                    .last()
                    .is_some_and(|_| st.transfer_status.get(id).copied().unwrap_or(2) == 2);
                let recent = earlier
                    .iter()
                    .filter(|t| now.duration_since(t.3) < Duration::from_secs(90 * 86_400))
                    .count();
                // WeCom's code for "the handover member has not left / this is
                // not their customer" and for "left over a year ago" is not
                // documented in the SDKs read: the fake answers 40097.
                let code = if from == to {
                    40130
                } else if left.is_none_or(|t| now_s - t > 365 * 86_400) {
                    40097
                } else if waiting {
                    40129
                } else if recent >= 2 {
                    40128
                } else {
                    0
                };
                if code == 0 {
                    st.transfers.push((from.into(), to.into(), id.into(), now));
                    st.resigned_transfers
                        .insert((from.into(), to.into(), id.into()));
                    st.transfer_status.remove(id);
                }
                customers.push(json!({"external_userid": id, "errcode": code}));
            }
            Answer::Json(json!({"errcode": 0, "errmsg": "ok", "customer": customers}))
        }
        TRANSFER_RESULT | RESIGNED_TRANSFER_RESULT => {
            let resigned = call.path == RESIGNED_TRANSFER_RESULT;
            let (Some(from), Some(to)) =
                (b["handover_userid"].as_str(), b["takeover_userid"].as_str())
            else {
                return missing("handover_userid/takeover_userid");
            };
            let customers: Vec<Value> = st
                .transfers
                .iter()
                .filter(|(f, t, _, _)| f == from && t == to)
                .filter(|(f, t, id, _)| {
                    st.resigned_transfers
                        .contains(&(f.clone(), t.clone(), id.clone()))
                        == resigned
                })
                .map(|(_, _, id, _)| {
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

/// The members `external_userid` is a friend of.
fn friends(st: &State, external_userid: &str) -> Vec<String> {
    st.follow_users
        .get(external_userid)
        .map(|l| {
            l.iter()
                .filter_map(|e| e["userid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
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

/// `add_contact_way`, `update_contact_way`, `del_contact_way` (WeCom doc
/// 92228; WxJava `WxCpContactWayInfo`): `type` 1 (one member) or 2,
/// `scene` 1 (mini-program) or 2 (QR code: `qr_code` in the answer),
/// `state` and `remark` at most 30 characters, a type-1 code exactly one
/// `user`, a type-2 code 1–100 members, every member in the directory
/// (40003 otherwise). Unknown `config_id`: 40058 (WeCom's exact code for it
/// is not documented). `type` and `scene` cannot be changed by an update.
fn contact_way(st: &mut State, call: &Call) -> Answer {
    let b = &call.body;
    let chars = |k: &str| b[k].as_str().map_or(0, |s| s.chars().count());
    if chars("state") > 30 {
        return Answer::errcode(40058, "state exceeds 30 characters");
    }
    if chars("remark") > 30 {
        return Answer::errcode(40058, "remark exceeds 30 characters");
    }
    let users = |b: &Value| -> Result<Option<Vec<String>>, Answer> {
        match b.get("user") {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(
                a.iter()
                    .map(|u| {
                        u.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| missing("user"))
                    })
                    .collect::<Result<_, _>>()?,
            )),
            Some(_) => Err(missing("user")),
        }
    };
    let check_users = |st: &State, ty: i64, users: &[String]| -> Option<Answer> {
        if ty == 1 && users.len() != 1 {
            return Some(Answer::errcode(
                40058,
                "a type 1 contact way takes exactly one user",
            ));
        }
        if users.is_empty() || users.len() > 100 {
            return Some(Answer::errcode(40058, "user must list 1 to 100 members"));
        }
        if let Some(u) = users
            .iter()
            .find(|u| !st.members.contains(&u.to_lowercase()))
        {
            return Some(Answer::errcode(40003, &format!("invalid userid {u}")));
        }
        None
    };
    match call.path.as_str() {
        ADD_CONTACT_WAY => {
            let ty = match b["type"].as_i64() {
                Some(t @ (1 | 2)) => t,
                _ => return missing("type"),
            };
            let scene = match b["scene"].as_i64() {
                Some(s @ (1 | 2)) => s,
                _ => return missing("scene"),
            };
            let us = match users(b) {
                Ok(u) => u.unwrap_or_default(),
                Err(a) => return a,
            };
            if let Some(a) = check_users(st, ty, &us) {
                return a;
            }
            st.next_id += 1;
            let config_id = format!("cw{}", st.next_id);
            let mut code = b.clone();
            code["config_id"] = json!(config_id);
            let mut answer = json!({"errcode": 0, "errmsg": "ok", "config_id": config_id});
            if scene == 2 {
                let qr = format!("https://wework.qpic.cn/wwpic/fake/{config_id}");
                code["qr_code"] = json!(qr);
                answer["qr_code"] = json!(qr);
            }
            st.contact_ways.insert(config_id, code);
            Answer::Json(answer)
        }
        UPDATE_CONTACT_WAY => {
            let Some(id) = b["config_id"].as_str() else {
                return missing("config_id");
            };
            let Some(code) = st.contact_ways.get(id).cloned() else {
                return Answer::errcode(40058, "invalid config_id");
            };
            let ty = code["type"].as_i64().unwrap_or(2);
            let us = match users(b) {
                Ok(u) => u,
                Err(a) => return a,
            };
            if let Some(us) = &us
                && let Some(a) = check_users(st, ty, us)
            {
                return a;
            }
            let mut code = code;
            for k in ["remark", "skip_verify", "state", "style", "user", "party"] {
                if let Some(v) = b.get(k) {
                    code[k] = v.clone();
                }
            }
            st.contact_ways.insert(id.to_string(), code);
            Answer::errcode(0, "ok")
        }
        _ => {
            let Some(id) = b["config_id"].as_str() else {
                return missing("config_id");
            };
            if st.contact_ways.remove(id).is_none() {
                return Answer::errcode(40058, "invalid config_id");
            }
            Answer::errcode(0, "ok")
        }
    }
}

/// Adds a tag to the group named `group` (made if missing); gives its id.
fn new_corp_tag(st: &mut State, group: &str, name: &str) -> String {
    st.next_id += 1;
    let id = format!("et-corp-{}", st.next_id);
    let gi = match st.corp_groups.iter().position(|g| g.name == group) {
        Some(i) => i,
        None => {
            st.next_id += 1;
            st.corp_groups.push(CorpGroup {
                id: format!("eg{}", st.next_id),
                name: group.into(),
                tags: Vec::new(),
            });
            st.corp_groups.len() - 1
        }
    };
    st.corp_groups[gi].tags.push((id.clone(), name.into()));
    id
}

fn group_json(g: &CorpGroup, only: Option<&[String]>) -> Value {
    let tags: Vec<Value> = g
        .tags
        .iter()
        .filter(|(id, _)| only.is_none_or(|o| o.contains(id)))
        .map(|(id, name)| json!({"id": id, "name": name, "create_time": 1_700_000_000, "order": 0, "deleted": false}))
        .collect();
    json!({"group_id": g.id, "group_name": g.name, "create_time": 1_700_000_000, "order": 0,
           "deleted": false, "tag": tags})
}

/// `get_corp_tag_list`, `add_corp_tag`, `mark_tag` (see the module docs).
fn corp_tags(st: &mut State, call: &Call) -> Answer {
    let b = &call.body;
    let strings = |k: &str| -> Vec<String> {
        b[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    match call.path.as_str() {
        GET_CORP_TAG_LIST => {
            let (tag_ids, group_ids) = (strings("tag_id"), strings("group_id"));
            let groups: Vec<Value> = st
                .corp_groups
                .iter()
                .filter(|g| group_ids.is_empty() || group_ids.contains(&g.id))
                .filter(|g| tag_ids.is_empty() || g.tags.iter().any(|(id, _)| tag_ids.contains(id)))
                .map(|g| group_json(g, (!tag_ids.is_empty()).then_some(tag_ids.as_slice())))
                .collect();
            Answer::Json(json!({"errcode": 0, "errmsg": "ok", "tag_group": groups}))
        }
        ADD_CORP_TAG => {
            let names: Vec<String> = match b["tag"].as_array() {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|t| t["name"].as_str().unwrap_or("").to_string())
                    .collect(),
                _ => return missing("tag"),
            };
            let group = match b["group_id"].as_str().filter(|g| !g.is_empty()) {
                Some(gid) => match st.corp_groups.iter().find(|g| g.id == gid) {
                    Some(g) => g.name.clone(),
                    None => return Answer::errcode(40068, "invalid group id"),
                },
                None => match b["group_name"].as_str().filter(|g| !g.is_empty()) {
                    Some(n) if n.chars().count() <= 30 => n.to_string(),
                    Some(_) => return Answer::errcode(40072, "invalid group name length"),
                    None => return missing("group_id/group_name"),
                },
            };
            let existing: Vec<String> = st
                .corp_groups
                .iter()
                .find(|g| g.name == group)
                .map(|g| g.tags.iter().map(|(_, n)| n.clone()).collect())
                .unwrap_or_default();
            for (i, n) in names.iter().enumerate() {
                if n.trim().is_empty() || n.chars().count() > 30 {
                    return Answer::errcode(40072, "invalid tag name length");
                }
                if existing.contains(n) || names[..i].contains(n) {
                    return Answer::errcode(40071, "tag name exists");
                }
            }
            if st.omit_new_tags > 0 {
                st.omit_new_tags -= 1;
                if st.omitted_still_made {
                    for n in &names {
                        new_corp_tag(st, &group, n);
                    }
                }
                let gid = st
                    .corp_groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.id.clone())
                    .unwrap_or_else(|| "etGroupOmitted".into());
                return Answer::Json(json!({"errcode": 0, "errmsg": "ok", "tag_group": {
                    "group_id": gid, "group_name": group, "create_time": 1_700_000_000,
                    "order": 0, "tag": []}}));
            }
            let ids: Vec<String> = names.iter().map(|n| new_corp_tag(st, &group, n)).collect();
            let g = st
                .corp_groups
                .iter()
                .find(|g| g.name == group)
                .expect("made above");
            Answer::Json(
                json!({"errcode": 0, "errmsg": "ok", "tag_group": group_json(g, Some(&ids))}),
            )
        }
        _ => {
            let Some(userid) = b["userid"].as_str().filter(|u| !u.is_empty()) else {
                return missing("userid");
            };
            let Some(ext) = b["external_userid"].as_str().filter(|e| !e.is_empty()) else {
                return missing("external_userid");
            };
            let (add, remove) = (strings("add_tag"), strings("remove_tag"));
            if add.is_empty() && remove.is_empty() {
                return missing("add_tag/remove_tag");
            }
            let lookup = |id: &String| {
                st.corp_groups.iter().find_map(|g| {
                    g.tags
                        .iter()
                        .find(|(t, _)| t == id)
                        .map(|(_, n)| (g.name.clone(), n.clone()))
                })
            };
            let mut named = Vec::new();
            for id in &add {
                match lookup(id) {
                    Some((g, n)) => named.push((id.clone(), g, n)),
                    None => return Answer::errcode(40068, "invalid tagid"),
                }
            }
            if remove.iter().any(|id| lookup(id).is_none()) {
                return Answer::errcode(40068, "invalid tagid");
            }
            let Some(entry) = st
                .follow_users
                .get_mut(ext)
                .and_then(|l| l.iter_mut().find(|e| e["userid"] == userid))
            else {
                return Answer::errcode(84061, "not external contact");
            };
            if !entry["tags"].is_array() {
                entry["tags"] = json!([]);
            }
            let tags = entry["tags"].as_array_mut().expect("an array");
            tags.retain(|t| {
                !t["tag_id"]
                    .as_str()
                    .is_some_and(|id| remove.iter().any(|r| r == id))
            });
            for (id, g, n) in named {
                if !tags.iter().any(|t| t["tag_id"] == id.as_str()) {
                    tags.push(json!({"group_name": g, "tag_name": n, "tag_id": id, "type": 1}));
                }
            }
            Answer::errcode(0, "ok")
        }
    }
}

/// The file of a multipart body's field `media`: (file name, bytes).
fn multipart_media(content_type: &str, raw: &[u8]) -> Option<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    if !content_type.trim_start().starts_with("multipart/form-data") {
        return None;
    }
    let delim = format!("--{boundary}");
    let text_pos = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let mut at = text_pos(raw, delim.as_bytes(), 0)?;
    loop {
        let head_start = at + delim.len();
        if raw.get(head_start..head_start + 2) == Some(b"--") {
            return None;
        }
        let head_end = text_pos(raw, b"\r\n\r\n", head_start)?;
        let head = String::from_utf8_lossy(&raw[head_start..head_end]).to_string();
        let next = text_pos(raw, format!("\r\n{delim}").as_bytes(), head_end + 4)?;
        if head.contains("name=\"media\"") {
            let name = head
                .split("filename=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            return Some((name, raw[head_end + 4..next].to_vec()));
        }
        at = next + 2;
    }
}

/// `media/upload` (see the module docs).
fn media_upload(st: &mut State, call: &Call) -> Answer {
    let ty = call.query.get("type").map(String::as_str).unwrap_or("");
    if !["image", "voice", "video", "file"].contains(&ty) {
        return Answer::errcode(40005, "invalid media type");
    }
    let Some((name, bytes)) = multipart_media(&call.content_type, &call.raw) else {
        return Answer::errcode(44001, "empty media data");
    };
    if bytes.is_empty() {
        return Answer::errcode(44001, "empty media data");
    }
    if bytes.len() <= 5 || bytes.len() > 20 * 1024 * 1024 {
        return Answer::errcode(40006, "invalid file size");
    }
    if ty == "image" {
        if bytes.len() > 10 * 1024 * 1024 {
            return Answer::errcode(40009, "invalid image size");
        }
        let png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
        let jpg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
        if !png && !jpg {
            return Answer::errcode(40004, "invalid media file type");
        }
    }
    st.next_id += 1;
    let id = format!("media-{}-{}", ty, st.next_id);
    st.media.insert(
        id.clone(),
        (
            ty.to_string(),
            name,
            bytes.len(),
            Instant::now(),
            Duration::ZERO,
        ),
    );
    Answer::Json(
        json!({"errcode": 0, "errmsg": "ok", "type": ty, "media_id": id,
                        "created_at": "1700000000"}),
    )
}

/// Checks a message's `attachments` (see the module docs); the refusal, if
/// any.
fn check_attachments(st: &State, b: &Value) -> Option<Answer> {
    let list = match b.get("attachments") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(a)) => a,
        Some(_) => return Some(missing("attachments")),
    };
    if list.len() > 9 {
        return Some(Answer::errcode(40058, "attachments exceed 9"));
    }
    let valid = |id: &Value, ty: &str| {
        id.as_str()
            .and_then(|id| st.media.get(id))
            .is_some_and(|(t, _, _, at, older)| t == ty && at.elapsed() + *older < MEDIA_LIFE)
    };
    for a in list {
        let kind = a["msgtype"].as_str().unwrap_or("");
        let o = &a[kind];
        if !o.is_object() {
            return Some(missing("attachments.msgtype"));
        }
        let has = |k: &str| o[k].as_str().is_some_and(|v| !v.is_empty());
        let refusal = match kind {
            "image" if has("pic_url") => None,
            "image" if !valid(&o["media_id"], "image") => Some(40007),
            "file" if !valid(&o["media_id"], "file") => Some(40007),
            "video" if !valid(&o["media_id"], "video") => Some(40007),
            "link" if !has("title") || !has("url") => Some(40063),
            "miniprogram" if !has("title") || !has("appid") || !has("page") => Some(40063),
            "miniprogram" if !valid(&o["pic_media_id"], "image") => Some(40007),
            "image" | "file" | "video" | "link" | "miniprogram" => None,
            _ => Some(40063),
        };
        match refusal {
            Some(40007) => return Some(Answer::errcode(40007, "invalid media_id")),
            Some(c) => return Some(Answer::errcode(c, "missing or bad attachment field")),
            None => {}
        }
    }
    None
}
