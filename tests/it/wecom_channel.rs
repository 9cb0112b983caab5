//! The `wecom` channel against a loopback fake of WeCom's API
//! (`support/wecom_fake.rs`): the token cache, errcodes in HTTP 200, the
//! welcome / mass-task choice, notices, transfers and the poller.

use crate::support;

use crate::support::wecom_fake;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nurture::channels::build::{Handles, build_registry_full};
use nurture::channels::wecom::poll;
use nurture::channels::{Channel, Delivery, Exchange, OutMessage};
use nurture::settings::Settings;
use nurture::store::Store;
use serde_json::json;
use wecom_fake::{
    ADD_MSG_TEMPLATE, Answer, CORP_ID, GETTOKEN, MESSAGE_SEND, SECRET, SEND_RESULT, SEND_WELCOME,
    TRANSFER_CUSTOMER, TRANSFER_RESULT, WecomFake, WecomHandle,
};

fn env(name: &str) -> Option<String> {
    match name {
        "WECOM_CORP" => Some(CORP_ID.into()),
        "WECOM_SECRET" => Some(SECRET.into()),
        "WRONG_SECRET" => Some("not-the-secret".into()),
        _ => None,
    }
}

fn settings(base_url: &str, extra: &str) -> Settings {
    let text = format!(
        "teams:
  east:
    - {{ id: s01, name: Wang Fang, wecom_userid: wangfang }}
    - {{ id: s02, name: Li Lei, wecom_userid: lilei }}
    - {{ id: s03, name: No WeCom }}
    - {{ id: s04, name: Chen Jie, wecom_userid: chenjie }}
channels:
  wecom:
    kind: wecom
    corp_id_env: WECOM_CORP
    secret_env: WECOM_SECRET
    agent_id: 1000002
    base_url: {base_url}
    mass_message_cap: month
    poll_interval: 10ms
{extra}"
    );
    Settings::parse_str(Path::new("nurture.yaml"), &text)
        .unwrap_or_else(|d| panic!("settings: {d:?}"))
}

struct Setup {
    fake: WecomHandle,
    channel: Arc<dyn Channel>,
    store: Store,
    settings: Settings,
    handles: Handles,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (base, fake) = WecomFake::start().await;
    setup_with(base, fake, "").await
}

async fn setup_with(base: String, fake: WecomHandle, extra: &str) -> Setup {
    setup_at(base, fake, extra, None).await
}

/// As [`setup_with`], on the store `url` (default: a SQLite file in a
/// fresh folder).
async fn setup_at(base: String, fake: WecomHandle, extra: &str, pg: Option<()>) -> Setup {
    // The test customers wmEXT0..wmEXT60 were added by wangfang (salesperson
    // s01, the owner `to_contact` gives them): WeCom delivers mass messages
    // only from a member the customer is a friend of.
    for n in 0..=60 {
        fake.befriend(&format!("wmEXT{n}"), "wangfang");
    }
    let dir = tempfile::tempdir().unwrap();
    let url = match pg {
        Some(()) => support::db::url_for(dir.path()),
        None => format!("sqlite://{}", dir.path().join("n.db").display()),
    };
    let store = Store::open(&url).await.unwrap();
    // ... and nurture knows it (as the callback recorded it), so sends need
    // no look-up first.
    for n in 0..=60 {
        relationship(&store, &format!("wmEXT{n}"), "wangfang", true).await;
    }
    let settings = settings(&base, extra);
    // This test's own handles (a daemon's): its token caches start empty,
    // whatever fake an earlier test started on the same port.
    let handles = Handles::with_store(&store);
    let reg = build_registry_full(&settings, &env, &handles).unwrap_or_else(|e| panic!("{e:?}"));
    let channel = reg.get("wecom").expect("the channel").1.clone();
    Setup {
        fake,
        channel,
        store,
        settings,
        handles,
        _dir: dir,
    }
}

/// A row of `wecom_relationships`, as the callback or a sync writes it.
async fn relationship(store: &Store, ext: &str, userid: &str, standing: bool) {
    let now = Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO wecom_relationships (external_userid, userid, added_at, standing, ended_by, source, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'callback', $3)
         ON CONFLICT (external_userid, userid) DO UPDATE SET standing = excluded.standing,
             ended_by = excluded.ended_by, added_at = excluded.added_at",
    )
    .bind(ext)
    .bind(userid)
    .bind(now)
    .bind(i64::from(standing))
    .bind((!standing).then_some("customer"))
    .execute(store.db())
    .await
    .unwrap();
}

/// Makes `ext` a friend of exactly `users`, in the fake (WeCom's truth) and
/// in the store (what nurture recorded).
async fn only_friends(s: &Setup, ext: &str, users: &[&str]) {
    for u in s.fake.friends_of(ext) {
        s.fake.unfriend(ext, &u);
    }
    sqlx::query("DELETE FROM wecom_relationships WHERE external_userid = $1")
        .bind(ext)
        .execute(s.store.db())
        .await
        .unwrap();
    for u in users {
        s.fake.befriend(ext, u);
        relationship(&s.store, ext, u, true).await;
    }
}

fn msg(id: &str, contact: &str, to: &str, owner: Option<&str>, body: &str) -> OutMessage {
    let mut c = json!({ "id": contact, "wecom_external_userid": to });
    if let Some(o) = owner {
        c["owner"] = json!(o);
    }
    OutMessage {
        id: id.into(),
        workflow: "greet".into(),
        contact_id: contact.into(),
        step_id: "0".into(),
        channel: "wecom".into(),
        to: to.into(),
        subject: None,
        body: body.into(),
        contact: c,
        attempt: 1,
        payload: json!({}),
        in_doubt: false,
    }
}

fn to_contact(n: usize) -> OutMessage {
    msg(
        &format!("greet:c{n}:1:0"),
        &format!("c{n}"),
        &format!("wmEXT{n}"),
        Some("s01"),
        "Hello from nurture",
    )
}

fn notice(to: &str) -> OutMessage {
    let mut m = msg(
        "greet:c1:1:0:notify",
        "c1",
        to,
        None,
        "New contact assigned to you: c1",
    );
    m.payload = json!({ "kind": "notice" });
    m
}

fn transfer(ext: &str, from: &str, to: &str) -> OutMessage {
    let mut m = msg("greet:c1:1:0:transfer", "c1", ext, Some("s02"), "transfer");
    m.payload = json!({ "kind": "transfer", "handover_userid": from, "takeover_userid": to });
    m
}

async fn send(ch: &Arc<dyn Channel>, m: &OutMessage) -> Delivery {
    ch.send(m).await
}

fn is_retry(d: &Delivery) -> bool {
    matches!(d, Delivery::Retry { .. })
}

fn reason(d: &Delivery) -> &str {
    match d {
        Delivery::Retry { reason, .. }
        | Delivery::Permanent { reason }
        | Delivery::Wait { reason, .. } => reason,
        Delivery::Delivered { .. } => "",
    }
}

async fn rows(store: &Store, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    let pool = store.sqlite_pool().unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<Option<String>, _>(i)
                        .or_else(|_| {
                            r.try_get::<Option<i64>, _>(i)
                                .map(|v| v.map(|v| v.to_string()))
                        })
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(store.db())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A welcome code received `age_ms` ago for contact `c1`.
async fn welcome_code(store: &Store, code: &str, age_ms: i64) {
    let at = Utc::now().timestamp_millis() - age_ms;
    exec(
        store,
        &format!(
            "INSERT INTO wecom_welcome_codes (contact_id, external_userid, staff_userid, welcome_code, received_at)
             VALUES ('c1', 'wmEXT1', 'wangfang', '{code}', {at})
             ON CONFLICT (contact_id) DO UPDATE SET welcome_code = excluded.welcome_code,
                 received_at = excluded.received_at, used_at = NULL"
        ),
    )
    .await;
}

// ---- mass messages, tokens ----

#[tokio::test]
async fn a_send_creates_a_mass_task_from_the_salesperson() {
    let s = setup().await;
    let d = send(&s.channel, &to_contact(1)).await;
    let Delivery::Delivered {
        provider_id: Some(msgid),
    } = &d
    else {
        panic!("{d:?}");
    };
    let calls = s.fake.calls(ADD_MSG_TEMPLATE);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].token(), Some("tok-1"));
    assert_eq!(
        calls[0].body,
        json!({
            "chat_type": "single",
            "external_userid": ["wmEXT1"],
            "sender": "wangfang",
            "text": { "content": "Hello from nurture" },
        })
    );
    assert_eq!(s.fake.tasks()[msgid].0, "wangfang");
    let t = rows(
        &s.store,
        "SELECT kind, contact_id, external_userid, userid, msgid, status FROM wecom_tasks",
    )
    .await;
    assert_eq!(
        t,
        vec![
            [
                "mass",
                "c1",
                "wmEXT1",
                "wangfang",
                msgid.as_str(),
                "pending"
            ]
            .map(|v| Some(v.to_string()))
            .to_vec()
        ]
    );
}

#[tokio::test]
async fn the_token_is_cached_across_sends() {
    let s = setup().await;
    for n in 1..=3 {
        let d = send(&s.channel, &to_contact(n)).await;
        assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    }
    assert_eq!(s.fake.count(GETTOKEN), 1);
    let q = &s.fake.requests(GETTOKEN)[0];
    assert_eq!(q["corpid"], CORP_ID);
    assert_eq!(q["corpsecret"], SECRET);
    assert!(
        s.fake
            .calls(ADD_MSG_TEMPLATE)
            .iter()
            .all(|c| c.token() == Some("tok-1"))
    );
}

/// Issue 12 item 6: the token cache is a handle the daemon owns, not a
/// process global. The channel and the poller built with the same handles
/// share one gettoken; another owner's handles fetch their own; a reload
/// whose settings carry a rotated secret fetches a token with the new
/// secret and its workers share that one.
#[tokio::test]
async fn workers_share_the_daemons_token_and_a_rotated_secret_takes_effect() {
    let s = setup().await;
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert!(s.fake.count(SEND_RESULT) >= 1, "the poller called WeCom");
    assert_eq!(
        s.fake.count(GETTOKEN),
        1,
        "the poller used the channel's token"
    );

    // Another owner (a second daemon in this process) has its own cache.
    // The task is due for its next check again (its poll interval, 10 ms,
    // passes on the WeCom code's clock).
    let_time_pass(Duration::from_millis(30)).await;
    let other = nurture::channels::wecom::token::TokenCaches::default();
    poll::poll_once(&s.store, &s.settings, &env, &other)
        .await
        .unwrap();
    assert_eq!(s.fake.count(GETTOKEN), 2);

    // The admin resets the secret; the reload reads the new one.
    const ROTATED: &str = "rotated-app-secret";
    s.fake.set_secret(ROTATED);
    let rotated = |name: &str| match name {
        "WECOM_SECRET" => Some(ROTATED.to_string()),
        n => env(n),
    };
    let reg = build_registry_full(&s.settings, &rotated, &s.handles).unwrap();
    let channel = reg.get("wecom").unwrap().1.clone();
    let d = send(&channel, &to_contact(2)).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    let fetched = s.fake.requests(GETTOKEN);
    assert_eq!(fetched.len(), 3);
    assert_eq!(fetched[2]["corpsecret"], ROTATED);
    let_time_pass(Duration::from_millis(30)).await;
    let polled = s.fake.count(SEND_RESULT);
    poll::poll_once(&s.store, &s.settings, &rotated, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert!(
        s.fake.count(SEND_RESULT) > polled,
        "the poller called WeCom"
    );
    assert_eq!(
        s.fake.count(GETTOKEN),
        3,
        "the reloaded poller shares the new token"
    );
}

#[tokio::test]
async fn an_expired_token_is_fetched_again_and_the_call_retried_once() {
    let s = setup().await;
    assert!(matches!(
        send(&s.channel, &to_contact(1)).await,
        Delivery::Delivered { .. }
    ));
    s.fake.expire_tokens();
    let d = send(&s.channel, &to_contact(2)).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    assert_eq!(s.fake.count(GETTOKEN), 2);
    let calls = s.fake.calls(ADD_MSG_TEMPLATE);
    let tokens: Vec<_> = calls
        .iter()
        .map(|c| c.token().unwrap().to_string())
        .collect();
    assert_eq!(
        tokens,
        ["tok-1", "tok-1", "tok-2"],
        "refused once, then retried with the new token"
    );

    // A token refused again after the refetch: no loop, a retry later.
    s.fake.script(
        ADD_MSG_TEMPLATE,
        Answer::errcode(40014, "invalid access_token"),
    );
    s.fake.script(
        ADD_MSG_TEMPLATE,
        Answer::errcode(42001, "access_token expired"),
    );
    let d = send(&s.channel, &to_contact(3)).await;
    assert!(is_retry(&d), "{d:?}");
    assert!(reason(&d).contains("42001"), "{d:?}");
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 5);
    assert_eq!(s.fake.count(GETTOKEN), 3);
}

#[tokio::test]
async fn fifty_concurrent_sends_with_a_refused_token_fetch_it_once() {
    let s = setup().await;
    assert!(matches!(
        send(&s.channel, &to_contact(0)).await,
        Delivery::Delivered { .. }
    ));
    s.fake.expire_tokens();
    let mut tasks = Vec::new();
    for n in 1..=50 {
        let ch = s.channel.clone();
        tasks.push(tokio::spawn(async move { ch.send(&to_contact(n)).await }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    }
    assert_eq!(
        s.fake.count(GETTOKEN),
        2,
        "one fetch before, exactly one refresh"
    );
    // Every send ends with the new token.
    assert_eq!(s.fake.tasks().len(), 51);
}

#[tokio::test]
async fn fifty_concurrent_sends_after_the_token_expired_fetch_it_once() {
    let (base, fake) = WecomFake::start().await;
    // expires_in 2 s: nurture uses such a short-lived token for half its life.
    fake.set_expires_in(2);
    let s = setup_with(base, fake, "").await;
    assert!(matches!(
        send(&s.channel, &to_contact(0)).await,
        Delivery::Delivered { .. }
    ));
    let_time_pass(Duration::from_millis(1_500)).await;
    s.fake.set_expires_in(7200);
    let mut tasks = Vec::new();
    for n in 1..=50 {
        let ch = s.channel.clone();
        tasks.push(tokio::spawn(async move { ch.send(&to_contact(n)).await }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    }
    assert_eq!(
        s.fake.count(GETTOKEN),
        2,
        "one fetch before, exactly one refresh"
    );
}

#[tokio::test]
async fn gettoken_errors() {
    // A wrong secret: permanent, naming the setting to check.
    let (base, fake) = WecomFake::start().await;
    let s = setup_with(base.clone(), fake.clone(), "").await;
    let mut settings = settings(&base, "");
    let wc = settings.channels.get_mut("wecom").unwrap();
    wc.options.get_mut("secret_env").unwrap().value = "WRONG_SECRET".into();
    let reg = build_registry_full(&settings, &env, &s.handles).unwrap();
    let bad = reg.get("wecom").unwrap().1.clone();
    let ex = bad.exchange(&to_contact(1)).await;
    let answer = ex.answer.clone().unwrap_or_default();
    assert!(
        answer.starts_with("HTTP 200") && answer.contains("40001"),
        "WeCom's answer is kept: {ex:?}"
    );
    let d = ex.delivery;
    assert!(matches!(d, Delivery::Permanent { .. }), "{d:?}");
    assert!(
        reason(&d).contains("40001") && reason(&d).contains("secret_env"),
        "{d:?}"
    );
    assert!(
        !reason(&d).contains("not-the-secret"),
        "no secret in reasons: {d:?}"
    );
    assert_eq!(fake.count(ADD_MSG_TEMPLATE), 0);

    // A wrong corp id.
    let (base2, _fake2) = WecomFake::start_with("another-corp", SECRET).await;
    let s2 = setup_with(base2, _fake2, "").await;
    let d = send(&s2.channel, &to_contact(1)).await;
    assert!(matches!(d, Delivery::Permanent { .. }), "{d:?}");
    assert!(
        reason(&d).contains("40013") && reason(&d).contains("corp_id_env"),
        "{d:?}"
    );

    // Busy (-1) and a transport error: retried, nothing cached.
    fake.script(GETTOKEN, Answer::errcode(-1, "system busy"));
    fake.script(GETTOKEN, Answer::Status(502));
    assert!(is_retry(&send(&s.channel, &to_contact(1)).await));
    assert!(is_retry(&send(&s.channel, &to_contact(1)).await));
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
}

/// Errcodes in an HTTP 200 land in their class (the full table is a unit
/// test in `src/channels/wecom/errcode.rs`).
#[tokio::test]
async fn errcodes_through_http() {
    let s = setup().await;
    let cases: &[(Answer, &str)] = &[
        (Answer::errcode(-1, "system busy"), "retry"),
        (Answer::errcode(45033, "too many concurrent"), "retry"),
        (Answer::errcode(45009, "api freq out of limit"), "wait60"),
        (
            Answer::errcode(45009, "api freq out of limit, per hour"),
            "wait3600",
        ),
        // Not the cap (that is result status 3): nobody in the task can be
        // sent to.
        (Answer::errcode(41048, "no sendable customer"), "permanent"),
        (Answer::errcode(84061, "no relationship"), "permanent"),
        (
            Answer::errcode(60020, "not allow to access from your ip"),
            "permanent",
        ),
        (Answer::errcode(48002, "api forbidden"), "permanent"),
        (
            Answer::errcode(45002, "content size out of limit"),
            "permanent",
        ),
        (Answer::errcode(41001, "access_token missing"), "permanent"),
        (Answer::errcode(77777, "something new"), "permanent"),
        (Answer::Status(502), "retry"),
        (Answer::Status(404), "retry"),
        (Answer::Json(json!("not an object")), "retry"),
    ];
    for (answer, class) in cases {
        s.fake.script(ADD_MSG_TEMPLATE, answer.clone());
        let ex: Exchange = s.channel.exchange(&to_contact(1)).await;
        let d = &ex.delivery;
        match *class {
            "retry" => assert!(is_retry(d), "{answer:?}: {d:?}"),
            "wait60" => assert!(
                matches!(d, Delivery::Wait { after, .. } if *after == Duration::from_secs(60)),
                "{answer:?}: {d:?}"
            ),
            "wait3600" => assert!(
                matches!(d, Delivery::Wait { after, .. } if *after == Duration::from_secs(3_600)),
                "{answer:?}: {d:?}"
            ),
            _ => assert!(matches!(d, Delivery::Permanent { .. }), "{answer:?}: {d:?}"),
        }
        if let Answer::Json(v) = answer
            && let Some(code) = v.get("errcode")
        {
            assert!(reason(d).contains(&code.to_string()), "{d:?}");
            assert!(
                ex.answer.as_deref().unwrap().starts_with("HTTP 200"),
                "{ex:?}"
            );
        }
    }
    let d = s.channel.send(&to_contact(1)).await;
    assert!(reason(&d).is_empty(), "{d:?}");
    let unknown = {
        s.fake
            .script(ADD_MSG_TEMPLATE, Answer::errcode(77777, "something new"));
        s.channel.send(&to_contact(1)).await
    };
    assert!(reason(&unknown).contains("77777") && reason(&unknown).contains("something new"));
}

#[tokio::test]
async fn a_frequency_limit_waits_at_least_a_minute() {
    let s = setup().await;
    s.fake.script(
        SEND_WELCOME,
        Answer::errcode(45009, "api freq out of limit"),
    );
    welcome_code(&s.store, "WC-1", 0).await;
    let d = send(&s.channel, &to_contact(1)).await;
    match d {
        Delivery::Wait { after, ref reason } => {
            assert!(after >= Duration::from_secs(60));
            assert!(reason.contains("45009"));
        }
        other => panic!("{other:?}"),
    }
    // WeCom said no to the call: the code is given back for the retry.
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    assert_eq!(s.fake.count(SEND_WELCOME), 2);
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 0);
}

#[tokio::test]
async fn fail_list_is_permanent() {
    let s = setup().await;
    s.fake.script(
        ADD_MSG_TEMPLATE,
        Answer::Json(json!({"errcode": 0, "errmsg": "ok", "fail_list": ["wmEXT1"], "msgid": "m1"})),
    );
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(matches!(d, Delivery::Permanent { .. }), "{d:?}");
    assert!(
        reason(&d).contains("fail_list") && reason(&d).contains("not a friend"),
        "{d:?}"
    );
    // 40096 with a fail_list: permanent too.
    s.fake.script(
        ADD_MSG_TEMPLATE,
        Answer::Json(
            json!({"errcode": 40096, "errmsg": "invalid external userid", "fail_list": ["wmEXT1"]}),
        ),
    );
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("40096"),
        "{d:?}"
    );
    assert_eq!(rows(&s.store, "SELECT 1 FROM wecom_tasks").await.len(), 0);
}

/// WeCom delivers a mass message only from a member the customer is a
/// friend of: the owner when they are one, else a follow-user, with the
/// reason on the task (and so in `history`).
#[tokio::test]
async fn the_owner_sends_when_a_follow_user_else_a_follow_user_says_why() {
    let s = setup().await;
    // wmEXT1 is a friend of wangfang (s01) and, since later, of lilei (s02).
    only_friends(&s, "wmEXT1", &["wangfang"]).await;
    relationship(&s.store, "wmEXT1", "lilei", true).await;
    s.fake.befriend("wmEXT1", "lilei");
    // The owner is a follow-user: the owner sends, no note.
    let mut m = to_c1("m-owner");
    assert!(matches!(
        send(&s.channel, &m).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(mass_sender(&s, "m-owner").await, ("wangfang".into(), None));
    // Owner chenjie is not a friend: the follow-user who added the customer
    // last sends, and the task says why.
    s.fake.add_member("chenjie");
    m.id = "m-other".into();
    m.contact["owner"] = json!("s04");
    assert!(matches!(
        send(&s.channel, &m).await,
        Delivery::Delivered { .. }
    ));
    let (sender, note) = mass_sender(&s, "m-other").await;
    assert_eq!(sender, "lilei");
    let note = note.unwrap();
    assert!(
        note.starts_with(
            "sent from lilei: chenjie (the owner) is not a WeCom friend of the customer"
        ),
        "{note}"
    );
    // No owner, or one without a wecom_userid: a follow-user still sends.
    for (id, owner) in [("m-none", None), ("m-s03", Some("s03"))] {
        let mut m = to_c1(id);
        match owner {
            Some(o) => m.contact["owner"] = json!(o),
            None => {
                m.contact.as_object_mut().unwrap().remove("owner");
            }
        }
        assert!(matches!(
            send(&s.channel, &m).await,
            Delivery::Delivered { .. }
        ));
        let (sender, note) = mass_sender(&s, id).await;
        assert_eq!(sender, "lilei");
        assert!(note.unwrap().contains("owner has no wecom_userid"));
    }
    // Every task went to a friend: WeCom marks none of them "not a friend".
    for b in s.fake.requests(ADD_MSG_TEMPLATE) {
        let sender = b["sender"].as_str().unwrap().to_string();
        assert!(s.fake.friends_of("wmEXT1").contains(&sender), "{b}");
    }
}

/// Against the strict fake, the owner's task from a member who is not a
/// friend is refused (41048), which today's code (sending from the owner
/// regardless) ran into; a customer nobody is a friend of any more is not
/// sent to at all.
#[tokio::test]
async fn a_non_friend_sender_is_refused_and_no_standing_relationship_is_permanent() {
    let s = setup().await;
    // nurture's rows are stale: they say lilei, WeCom says wangfang. A task
    // from lilei is refused by WeCom with 41048 (no sendable customer):
    // permanent, not the cap, not retried.
    only_friends(&s, "wmEXT5", &["wangfang"]).await;
    sqlx::query("UPDATE wecom_relationships SET userid = 'lilei' WHERE external_userid = 'wmEXT5'")
        .execute(s.store.db())
        .await
        .unwrap();
    let d = send(&s.channel, &to_contact(5)).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("41048"),
        "{d:?}"
    );
    assert!(reason(&d).contains("sent from lilei"), "{d:?}");
    // Every relationship ended: nothing is sent, permanently, with the reason.
    only_friends(&s, "wmEXT6", &[]).await;
    relationship(&s.store, "wmEXT6", "wangfang", false).await;
    let before = s.fake.count(ADD_MSG_TEMPLATE);
    let d = send(&s.channel, &to_contact(6)).await;
    assert!(
        matches!(d, Delivery::Permanent { .. })
            && reason(&d).contains("no WeCom relationship of the customer stands"),
        "{d:?}"
    );
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), before);
}

/// A customer nurture has no relationship row for (an import) is looked up
/// with externalcontact/get before the first send, and the rows recorded.
#[tokio::test]
async fn unknown_relationships_are_read_from_wecom_first() {
    let s = setup().await;
    only_friends(&s, "wmEXT7", &[]).await;
    sqlx::query("DELETE FROM wecom_relationships WHERE external_userid = 'wmEXT7'")
        .execute(s.store.db())
        .await
        .unwrap();
    s.fake.befriend("wmEXT7", "lilei");
    let d = send(&s.channel, &to_contact(7)).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    assert_eq!(s.fake.count(wecom_fake::EXTERNALCONTACT_GET), 1);
    assert_eq!(s.fake.requests(ADD_MSG_TEMPLATE)[0]["sender"], "lilei");
    let r = rows(
        &s.store,
        "SELECT userid, standing, source FROM wecom_relationships WHERE external_userid = 'wmEXT7'",
    )
    .await;
    assert_eq!(
        r,
        vec![vec![
            Some("lilei".into()),
            Some("1".into()),
            Some("get".into())
        ]]
    );
    // Known now: the next send asks WeCom nothing more.
    let mut m = to_contact(7);
    m.id = "again".into();
    assert!(matches!(
        send(&s.channel, &m).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(s.fake.count(wecom_fake::EXTERNALCONTACT_GET), 1);
    // A customer WeCom knows no relationship of (84061): permanent.
    only_friends(&s, "wmEXT8", &[]).await;
    let d = send(&s.channel, &to_contact(8)).await;
    assert!(
        matches!(d, Delivery::Permanent { .. })
            && reason(&d).contains("not a WeCom friend of any staff member"),
        "{d:?}"
    );
}

// ---- welcome messages ----

#[tokio::test]
async fn a_fresh_welcome_code_sends_a_welcome_message_once() {
    let s = setup().await;
    welcome_code(&s.store, "WC-fresh", 1_000).await;
    let d = send(&s.channel, &to_contact(1)).await;
    assert_eq!(d, Delivery::Delivered { provider_id: None });
    let w = s.fake.requests(SEND_WELCOME);
    assert_eq!(
        w,
        vec![json!({"welcome_code": "WC-fresh", "text": {"content": "Hello from nurture"}})]
    );
    assert_eq!(s.fake.calls(SEND_WELCOME)[0].token(), Some("tok-1"));
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 0);
    let used = rows(
        &s.store,
        "SELECT used_at IS NOT NULL FROM wecom_welcome_codes",
    )
    .await;
    assert_eq!(used, vec![vec![Some("1".to_string())]]);

    // The code is used: the next send is a mass task.
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(
        matches!(
            d,
            Delivery::Delivered {
                provider_id: Some(_)
            }
        ),
        "{d:?}"
    );
    assert_eq!(s.fake.count(SEND_WELCOME), 1);
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 1);
}

#[tokio::test]
async fn an_old_welcome_code_is_not_used() {
    let s = setup().await;
    welcome_code(&s.store, "WC-old", 25_000).await;
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(
        matches!(
            d,
            Delivery::Delivered {
                provider_id: Some(_)
            }
        ),
        "{d:?}"
    );
    assert_eq!(s.fake.count(SEND_WELCOME), 0);
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 1);
}

#[tokio::test]
async fn concurrent_sends_use_a_welcome_code_once() {
    let s = setup().await;
    welcome_code(&s.store, "WC-race", 0).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let ch = s.channel.clone();
        tasks.push(tokio::spawn(async move { ch.send(&to_contact(1)).await }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    }
    let calls: Vec<String> = s
        .fake
        .all_calls()
        .iter()
        .map(|c| format!("{} token={:?}", c.path, c.token()))
        .collect();
    assert_eq!(s.fake.count(SEND_WELCOME), 1, "{calls:#?}");
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 4, "{calls:#?}");
}

#[tokio::test]
async fn a_welcome_code_survives_a_failed_token_fetch_and_a_busy_answer() {
    let s = setup().await;
    welcome_code(&s.store, "WC-keep", 0).await;
    s.fake.script(GETTOKEN, Answer::Status(503));
    assert!(is_retry(&send(&s.channel, &to_contact(1)).await));
    s.fake
        .script(SEND_WELCOME, Answer::errcode(-1, "system busy"));
    assert!(is_retry(&send(&s.channel, &to_contact(1)).await));
    let d = send(&s.channel, &to_contact(1)).await;
    assert_eq!(d, Delivery::Delivered { provider_id: None });
    let codes: Vec<_> = s
        .fake
        .requests(SEND_WELCOME)
        .iter()
        .map(|b| b["welcome_code"].clone())
        .collect();
    assert_eq!(codes, [json!("WC-keep"), json!("WC-keep")]);
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 0);
}

#[tokio::test]
async fn a_used_welcome_code_is_permanent() {
    let s = setup().await;
    welcome_code(&s.store, "WC-x", 0).await;
    s.fake
        .script(SEND_WELCOME, Answer::errcode(41051, "welcome code used"));
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("41051"),
        "{d:?}"
    );
}

// ---- notices ----

#[tokio::test]
async fn a_notice_goes_through_message_send_with_the_duplicate_check() {
    let s = setup().await;
    let d = send(&s.channel, &notice("wangfang")).await;
    assert!(
        matches!(
            d,
            Delivery::Delivered {
                provider_id: Some(_)
            }
        ),
        "{d:?}"
    );
    assert_eq!(
        s.fake.requests(MESSAGE_SEND),
        vec![json!({
            "touser": "wangfang",
            "msgtype": "text",
            "agentid": 1000002,
            "text": { "content": "New contact assigned to you: c1" },
            "safe": 0,
            "enable_duplicate_check": 1,
            "duplicate_check_interval": 1800,
        })]
    );
    // The recipient is invalid for the app.
    s.fake.script(
        MESSAGE_SEND,
        Answer::Json(json!({"errcode": 0, "errmsg": "ok", "invaliduser": "nobody", "msgid": "x"})),
    );
    let d = send(&s.channel, &notice("nobody")).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("invaliduser"),
        "{d:?}"
    );
    s.fake.script(
        MESSAGE_SEND,
        Answer::errcode(81013, "user & party & tag all invalid"),
    );
    let d = send(&s.channel, &notice("nobody")).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("81013"),
        "{d:?}"
    );
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 0);
}

// ---- transfers and the poller ----

#[tokio::test]
async fn a_transfer_is_started_and_its_result_recorded() {
    let s = setup().await;
    only_friends(&s, "wmEXT1", &["lilei"]).await;
    let d = send(&s.channel, &transfer("wmEXT1", "lilei", "wangfang")).await;
    assert_eq!(d, Delivery::Delivered { provider_id: None });
    assert_eq!(
        s.fake.requests(TRANSFER_CUSTOMER),
        vec![
            json!({"handover_userid": "lilei", "takeover_userid": "wangfang", "external_userid": ["wmEXT1"]})
        ]
    );
    let pending = "SELECT status, provider_status FROM wecom_tasks WHERE kind = 'transfer'";
    // Waiting (status 2): still pending after a poll.
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert_eq!(s.fake.count(TRANSFER_RESULT), 1);
    assert_eq!(
        s.fake.requests(TRANSFER_RESULT)[0],
        json!({"handover_userid": "lilei", "takeover_userid": "wangfang", "cursor": ""})
    );
    assert_eq!(
        rows(&s.store, pending).await,
        vec![vec![Some("pending".into()), None]]
    );
    // Done.
    s.fake.set_transfer_status("wmEXT1", 1);
    let_time_pass(Duration::from_millis(60)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert_eq!(
        rows(&s.store, pending).await,
        vec![vec![Some("done".into()), Some("1".into())]]
    );
    // The relationship moved: wangfang is the follow-user now, lilei's ended
    // by the transfer (as in WeCom).
    assert_eq!(s.fake.friends_of("wmEXT1"), ["wangfang"]);
    assert_eq!(
        rows(
            &s.store,
            "SELECT userid, standing, ended_by FROM wecom_relationships
              WHERE external_userid = 'wmEXT1' ORDER BY userid"
        )
        .await,
        vec![
            vec![
                Some("lilei".into()),
                Some("0".into()),
                Some("transfer".into())
            ],
            vec![Some("wangfang".into()), Some("1".into()), None],
        ]
    );

    // A per-customer errcode: its class (84061: no relationship, permanent).
    only_friends(&s, "wmEXT2", &["lilei"]).await;
    s.fake.script(
        TRANSFER_CUSTOMER,
        Answer::Json(json!({"errcode": 0, "errmsg": "ok",
                            "customer": [{"external_userid": "wmEXT2", "errcode": 84061}]})),
    );
    let d = send(&s.channel, &transfer("wmEXT2", "lilei", "wangfang")).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("84061"),
        "{d:?}"
    );
}

/// The handover member must be a follow-user of the customer (WeCom:
/// 40131): when the previous owner is not one, a real follow-user hands the
/// customer over; WeCom's own refusals (40131 on stale rows, 40130, 40129,
/// 40128) are permanent with their meaning.
#[tokio::test]
async fn a_transfer_is_handed_over_by_a_real_follow_user() {
    let s = setup().await;
    // The previous owner lilei never added wmEXT3; chenjie did.
    only_friends(&s, "wmEXT3", &["chenjie"]).await;
    let mut m = transfer("wmEXT3", "lilei", "wangfang");
    m.id = "t3".into();
    assert_eq!(
        send(&s.channel, &m).await,
        Delivery::Delivered { provider_id: None }
    );
    assert_eq!(
        s.fake.requests(TRANSFER_CUSTOMER)[0],
        json!({"handover_userid": "chenjie", "takeover_userid": "wangfang", "external_userid": ["wmEXT3"]})
    );
    let r = rows(
        &s.store,
        "SELECT userid, detail FROM wecom_tasks WHERE message_id = 't3'",
    )
    .await;
    assert_eq!(r[0][0].as_deref(), Some("chenjie"));
    assert!(
        r[0][1]
            .as_deref()
            .unwrap()
            .contains("lilei is not a WeCom friend"),
        "{r:?}"
    );
    // A second transfer while the first waits (WeCom would say 40129): it
    // waits for the takeover, without asking.
    let mut again = transfer("wmEXT3", "chenjie", "lilei");
    again.id = "t3b".into();
    let before = s.fake.count(TRANSFER_CUSTOMER);
    let d = send(&s.channel, &again).await;
    assert!(
        matches!(d, Delivery::Wait { .. }) && reason(&d).contains("40129"),
        "{d:?}"
    );
    assert_eq!(s.fake.count(TRANSFER_CUSTOMER), before);
    // The takeover member already is a follow-user: nothing to transfer.
    only_friends(&s, "wmEXT4", &["lilei", "wangfang"]).await;
    let before = s.fake.count(TRANSFER_CUSTOMER);
    let mut m = transfer("wmEXT4", "lilei", "wangfang");
    m.id = "t4".into();
    assert_eq!(
        send(&s.channel, &m).await,
        Delivery::Delivered { provider_id: None }
    );
    assert_eq!(s.fake.count(TRANSFER_CUSTOMER), before);
    // nurture's rows are stale (they say lilei; WeCom says chenjie): WeCom
    // refuses the handover with 40131, permanent, with its meaning.
    only_friends(&s, "wmEXT9", &["chenjie"]).await;
    sqlx::query("UPDATE wecom_relationships SET userid = 'lilei' WHERE external_userid = 'wmEXT9'")
        .execute(s.store.db())
        .await
        .unwrap();
    let mut m = transfer("wmEXT9", "lilei", "wangfang");
    m.id = "t9".into();
    let d = send(&s.channel, &m).await;
    assert!(
        matches!(d, Delivery::Permanent { .. })
            && reason(&d).contains("40131")
            && reason(&d).contains("not a follow-user"),
        "{d:?}"
    );
    // No relationship stands: nobody can hand the customer over.
    only_friends(&s, "wmEXT10", &[]).await;
    relationship(&s.store, "wmEXT10", "lilei", false).await;
    let mut m = transfer("wmEXT10", "lilei", "wangfang");
    m.id = "t10".into();
    let d = send(&s.channel, &m).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("nobody can hand them over"),
        "{d:?}"
    );
}

#[tokio::test]
async fn transfer_refusals_and_limits_are_recorded() {
    let s = setup().await;
    for (ext, status) in [("wmA", 3), ("wmB", 4), ("wmC", 5)] {
        only_friends(&s, ext, &["lilei"]).await;
        let mut m = transfer(ext, "lilei", "wangfang");
        m.id = format!("t:{ext}");
        assert!(matches!(
            send(&s.channel, &m).await,
            Delivery::Delivered { .. }
        ));
        s.fake.set_transfer_status(ext, status);
    }
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    let got = rows(
        &s.store,
        "SELECT external_userid, status FROM wecom_tasks ORDER BY external_userid",
    )
    .await;
    let want: Vec<Vec<Option<String>>> = [
        ("wmA", "refused"),
        ("wmB", "takeover_limit"),
        ("wmC", "no_record"),
    ]
    .iter()
    .map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())])
    .collect();
    assert_eq!(got, want);
}

/// The outbox row of an `assign`'s transfer of `c1` from lilei to wangfang,
/// as apply.rs queues it (the channel reads it to pick a mass sender).
async fn transfer_row(store: &Store, id: &str, status: &str, created_at: i64) {
    exec(
        store,
        &format!(
            r#"INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                  payload, status, attempts, not_before, next_attempt_at, created_at)
               VALUES ('{id}', 'greet', 'c1', 1, '0', 'wecom', 'wmEXT1', 'transfer',
                       '{{"kind":"transfer","handover_userid":"lilei","takeover_userid":"wangfang"}}',
                       '{status}', 0, 0, 0, {created_at})"#
        ),
    )
    .await;
}

/// How a task's note starts when c1's owner wangfang is not lilei's fellow
/// follow-user.
const NOT_FRIEND: &str =
    "sent from lilei: wangfang (the owner) is not a WeCom friend of the customer";

/// A message to c1 (owner s01 = wangfang) with its own id.
fn to_c1(id: &str) -> OutMessage {
    let mut m = to_contact(1);
    m.id = id.into();
    m
}

/// The sender and the task's detail of the mass task for outbox row `id`.
async fn mass_sender(s: &Setup, id: &str) -> (String, Option<String>) {
    let r = rows(
        &s.store,
        &format!("SELECT userid, detail FROM wecom_tasks WHERE message_id = '{id}'"),
    )
    .await;
    (r[0][0].clone().unwrap(), r[0][1].clone())
}

/// After an `assign`, the customer is a friend of the new salesperson only
/// once WeCom completed the takeover: until then (and if it is refused) the
/// handover member sends, and the task row and outcome note say why.
#[tokio::test]
async fn during_a_transfer_the_handover_member_sends_until_it_is_done() {
    let s = setup().await;
    only_friends(&s, "wmEXT1", &["lilei"]).await;
    let t0 = Utc::now().timestamp_millis();
    let tid = "greet:c1:1:0:transfer";
    // Queued, transfer_customer not called yet.
    transfer_row(&s.store, tid, "queued", t0).await;
    assert!(matches!(
        send(&s.channel, &to_c1("m1")).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(
        mass_sender(&s, "m1").await,
        (
            "lilei".into(),
            Some(format!(
                "{NOT_FRIEND}; transfer to wangfang not started yet"
            ))
        )
    );
    // Started (WeCom says 2, waiting): still the handover member.
    assert_eq!(
        send(&s.channel, &transfer("wmEXT1", "lilei", "wangfang")).await,
        Delivery::Delivered { provider_id: None }
    );
    exec(
        &s.store,
        &format!("UPDATE outbox SET status = 'sent' WHERE id = '{tid}'"),
    )
    .await;
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert!(matches!(
        send(&s.channel, &to_c1("m2")).await,
        Delivery::Delivered { .. }
    ));
    let note = format!("{NOT_FRIEND}; transfer to wangfang pending");
    assert_eq!(
        mass_sender(&s, "m2").await,
        ("lilei".into(), Some(note.clone()))
    );
    let senders: Vec<_> = s
        .fake
        .requests(ADD_MSG_TEMPLATE)
        .iter()
        .map(|b| b["sender"].clone())
        .collect();
    assert_eq!(senders, [json!("lilei"), json!("lilei")]);

    // The customer gets m2 from lilei; its outcome note says who sent it and
    // why, on the outbox row too. (The poller asks WeCom with lilei's id.)
    exec(
        &s.store,
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                             status, attempts, not_before, next_attempt_at, created_at, sent_at)
         VALUES ('m2', 'greet', 'c1', 1, '1', 'wecom', 'wmEXT1', 'hi', 'sent', 1, 0, 0, 0, 0)",
    )
    .await;
    s.fake.set_send_status("wmEXT1", 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = format!("wecom: delivered to the customer (status 1); {note}");
    loop {
        poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
            .await
            .unwrap();
        let r = rows(
            &s.store,
            "SELECT status, detail FROM wecom_tasks WHERE message_id = 'm2'",
        )
        .await;
        if r[0][0].as_deref() == Some("sent") {
            assert_eq!(r[0][1].as_deref(), Some(want.as_str()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "m2 never recorded: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let o = rows(
        &s.store,
        "SELECT status, last_error FROM outbox WHERE id = 'm2'",
    )
    .await;
    assert_eq!(o, vec![vec![Some("sent".into()), Some(want.clone())]]);
    assert!(
        s.fake
            .requests(SEND_RESULT)
            .iter()
            .all(|b| b["userid"] == "lilei")
    );

    // Done (status 1): the new salesperson sends, with no note.
    s.fake.set_transfer_status("wmEXT1", 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
            .await
            .unwrap();
        let r = rows(
            &s.store,
            &format!("SELECT status FROM wecom_tasks WHERE message_id = '{tid}'"),
        )
        .await;
        if r[0][0].as_deref() == Some("done") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer never finished: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        send(&s.channel, &to_c1("m3")).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(mass_sender(&s, "m3").await, ("wangfang".into(), None));
    assert_eq!(s.fake.requests(ADD_MSG_TEMPLATE)[2]["sender"], "wangfang");
}

#[tokio::test]
async fn after_a_refused_or_failed_transfer_the_handover_member_keeps_sending() {
    let s = setup().await;
    only_friends(&s, "wmEXT1", &["lilei"]).await;
    let t0 = Utc::now().timestamp_millis();
    // Refused by the customer (status 3).
    let tid = "greet:c1:1:0:transfer";
    transfer_row(&s.store, tid, "sent", t0).await;
    assert!(matches!(
        send(&s.channel, &transfer("wmEXT1", "lilei", "wangfang")).await,
        Delivery::Delivered { .. }
    ));
    s.fake.set_transfer_status("wmEXT1", 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
            .await
            .unwrap();
        let r = rows(
            &s.store,
            &format!("SELECT status FROM wecom_tasks WHERE message_id = '{tid}'"),
        )
        .await;
        if r[0][0].as_deref() == Some("refused") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal never recorded: {r:?}"
        );
    }
    assert!(matches!(
        send(&s.channel, &to_c1("m1")).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(
        mass_sender(&s, "m1").await,
        (
            "lilei".into(),
            Some(format!(
                "{NOT_FRIEND}; transfer to wangfang refused by the customer (status 3)"
            ))
        )
    );

    // A later transfer that transfer_customer refused outright (dead): the
    // relationship never moved either. The latest transfer is the one that counts.
    transfer_row(&s.store, "greet:c1:2:0:transfer", "dead", t0 + 1).await;
    assert!(matches!(
        send(&s.channel, &to_c1("m2")).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(
        mass_sender(&s, "m2").await,
        (
            "lilei".into(),
            Some(format!(
                "{NOT_FRIEND}; transfer to wangfang not started (dead)"
            ))
        )
    );

    // The owner changed since by other means (not to the transfer's takeover
    // member): the transfer says nothing about them, and the owner sends.
    let mut m = to_c1("m3");
    m.contact["owner"] = json!("s02");
    assert!(matches!(
        send(&s.channel, &m).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(mass_sender(&s, "m3").await, ("lilei".into(), None));
    let mut m = to_c1("m4");
    exec(&s.store, "UPDATE outbox SET payload = '{\"kind\":\"transfer\",\"handover_userid\":\"wangfang\",\"takeover_userid\":\"chenjie\"}' WHERE id = 'greet:c1:2:0:transfer'").await;
    m.contact["owner"] = json!("s01");
    assert!(matches!(
        send(&s.channel, &m).await,
        Delivery::Delivered { .. }
    ));
    // wangfang is still not a friend: the follow-user sends, saying why.
    assert_eq!(
        mass_sender(&s, "m4").await,
        (
            "lilei".into(),
            Some(format!(
                "{NOT_FRIEND}; lilei is the follow-user who added them most recently"
            ))
        )
    );

    // Other contacts are not affected by c1's transfers.
    assert!(matches!(
        send(&s.channel, &to_contact(2)).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(
        mass_sender(&s, "greet:c2:1:0").await,
        ("wangfang".into(), None)
    );
}

#[tokio::test]
async fn the_poller_records_sent_not_a_friend_and_over_the_cap() {
    let s = setup().await;
    for n in 1..=4 {
        assert!(matches!(
            send(&s.channel, &to_contact(n)).await,
            Delivery::Delivered { .. }
        ));
    }
    // The outbox row of c2, as the delivery worker leaves it.
    exec(
        &s.store,
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                             status, attempts, not_before, next_attempt_at, created_at, sent_at)
         VALUES ('greet:c2:1:0', 'greet', 'c2', 1, '0', 'wecom', 'wmEXT2', 'hi', 'sent', 1, 0, 0, 0, 0)",
    )
    .await;
    s.fake.set_send_status("wmEXT1", 1);
    s.fake.set_send_status("wmEXT2", 2);
    s.fake.set_send_status("wmEXT3", 3);
    // wmEXT4: 0, the salesperson has not confirmed yet.
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    let bodies = s.fake.requests(SEND_RESULT);
    assert_eq!(bodies.len(), 4);
    assert!(
        bodies
            .iter()
            .all(|b| b["userid"] == "wangfang" && b["msgid"].is_string())
    );
    let got = rows(
        &s.store,
        "SELECT contact_id, status, provider_status, detail FROM wecom_tasks ORDER BY contact_id",
    )
    .await;
    let status: Vec<_> = got.iter().map(|r| r[1].clone().unwrap()).collect();
    assert_eq!(status, ["sent", "not_friend", "over_cap", "pending"]);
    assert_eq!(got[1][2].as_deref(), Some("2"));
    assert!(
        got[1][3]
            .as_deref()
            .unwrap()
            .contains("not a friend of wangfang")
    );
    assert!(got[2][3].as_deref().unwrap().contains("cap (per month)"));
    // The outbox row carries the outcome; it stays sent.
    let o = rows(&s.store, "SELECT status, last_error FROM outbox").await;
    assert_eq!(o[0][0].as_deref(), Some("sent"));
    assert_eq!(
        o[0][1].as_deref(),
        Some("wecom: not a friend of wangfang (status 2)")
    );

    // The pending one is looked at again later, and recorded once decided.
    s.fake.set_send_status("wmEXT4", 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
            .await
            .unwrap();
        let st = rows(
            &s.store,
            "SELECT status FROM wecom_tasks WHERE contact_id = 'c4'",
        )
        .await;
        if st[0][0].as_deref() == Some("sent") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "c4 never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_task_not_yet_sent_by_the_worker_is_not_polled() {
    let s = setup().await;
    assert!(matches!(
        send(&s.channel, &to_contact(1)).await,
        Delivery::Delivered { .. }
    ));
    exec(
        &s.store,
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                             status, attempts, not_before, next_attempt_at, created_at)
         VALUES ('greet:c1:1:0', 'greet', 'c1', 1, '0', 'wecom', 'wmEXT1', 'hi', 'sending', 0, 0, 0, 0)",
    )
    .await;
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert_eq!(s.fake.count(SEND_RESULT), 0);
}

#[tokio::test]
async fn settings_are_checked() {
    let (base, _fake) = WecomFake::start().await;
    let check = |extra_opts: &str, drop: &[&str]| {
        let base_text = format!(
            "channels:\n  wecom:\n    kind: wecom\n    corp_id_env: WECOM_CORP\n    secret_env: WECOM_SECRET\n    agent_id: 1000002\n    base_url: {base}\n"
        );
        let mut text: String = base_text
            .lines()
            .filter(|l| !drop.iter().any(|d| l.trim_start().starts_with(d)))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(extra_opts);
        let settings = Settings::parse_str(Path::new("nurture.yaml"), &text).unwrap();
        match build_registry_full(&settings, &env, &Handles::default()) {
            Ok(_) => String::new(),
            Err(e) => e
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    };
    let ok = check("", &[]);
    assert_eq!(ok, "", "{ok}");
    assert!(check("", &["agent_id"]).contains("needs \"agent_id\""));
    assert!(check("", &["secret_env"]).contains("secret_env"));
    assert!(check("", &["corp_id_env"]).contains("corp_id_env"));
    assert!(check("    poll_interval: soon\n", &[]).contains("poll_interval"));
    assert!(check("    remind_after: soon\n", &[]).contains("remind_after"));
    assert_eq!(check("    remind_after: 4h\n", &[]), "");
    let e = check("    agent_id: abc\n", &["agent_id"]);
    assert!(e.contains("must be an integer"), "{e}");
    let e = check("    base_url: ftp://x\n", &["base_url"]);
    assert!(e.contains("base_url"), "{e}");
    let e = check("    secret_env: NOT_SET\n", &["secret_env"]);
    assert!(e.contains("NOT_SET") && e.contains("not set"), "{e}");
}

/// An unsubscribe cancels the contact's queued messages, but not a notice to
/// its salesperson nor a WeCom transfer; neither counts toward the cap.
#[tokio::test]
async fn notices_and_transfers_are_not_messages_to_the_contact() {
    let s = setup().await;
    let now = Utc::now();
    s.store
        .upsert_contact(
            &nurture::store::ContactInput {
                id: "c1".into(),
                ..Default::default()
            },
            now,
        )
        .await
        .unwrap();
    for (id, payload) in [
        ("m:send", "{}"),
        ("m:notify", r#"{"kind":"notice"}"#),
        (
            "m:transfer",
            r#"{"kind":"transfer","handover_userid":"a","takeover_userid":"b"}"#,
        ),
    ] {
        exec(
            &s.store,
            &format!(
                "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                     payload, status, attempts, not_before, next_attempt_at, created_at)
                 VALUES ('{id}', 'greet', 'c1', 1, '0', 'wecom', 'x', 'hi', '{payload}', 'queued', 0, 0, 0, {})",
                now.timestamp_millis()
            ),
        )
        .await;
    }
    let recent = s
        .store
        .recent_messages(&["c1".to_string()], now - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(recent.get("c1"), Some(&1), "only the send counts");
    s.store.unsubscribe("c1", None, now).await.unwrap();
    let st = rows(&s.store, "SELECT id, status FROM outbox ORDER BY id").await;
    let st: Vec<_> = st
        .iter()
        .map(|r| format!("{}={}", r[0].as_deref().unwrap(), r[1].as_deref().unwrap()))
        .collect();
    assert_eq!(
        st,
        ["m:notify=queued", "m:send=cancelled", "m:transfer=queued"]
    );
}

// ---- end to end: the real daemon ----

/// A contact with an owner and a WeCom id enters a workflow that assigns it
/// to another team and sends on a `wecom` channel pointed at the fake: the
/// relationship is transferred from the old salesperson, the new one gets a
/// notice, the message becomes a mass task from the OLD salesperson (the
/// customer is not the new one's friend until WeCom completes the takeover,
/// 24 h later), and the poller records both outcomes where `history` shows
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sends_transfers_and_records_outcomes() {
    use support::daemon::{Daemon, HOOK_SECRET, Project, TOKEN};
    // The test daemon's environment already holds these two variables; the
    // fake takes them as the corp id and the secret.
    let (base, fake) = WecomFake::start_with(TOKEN, HOOK_SECRET).await;
    // wangfang added the customer (nurture learns it from externalcontact/get
    // before the first send).
    fake.befriend("wmE2E", "wangfang");
    let p = Project::new(&format!(
        r#"
timezone: Asia/Shanghai
channels:
  wecom:
    kind: wecom
    corp_id_env: NURTURE_API_TOKEN
    secret_env: HOOK_SECRET
    agent_id: 1000002
    base_url: "{base}"
    poll_interval: 200ms
teams:
  east:
    - {{ id: s1, name: Wang Fang, wecom_userid: wangfang }}
  west:
    - {{ id: s3, name: Chen Jie, wecom_userid: chenjie }}
"#
    ));
    p.write(
        "workflows/greet.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: west, strategy: round_robin, notify: wecom }\n  - send: { channel: wecom, template: hi }\n",
    )
    .write("templates/hi.hbs", "Hi {{contact.name}}, this is {{owner.name}}.\n");
    let d = Daemon::start(&p, &[]);
    let (status, v) = d
        .post(
            "/v1/contacts",
            json!({"id": "c1", "name": "Ada", "owner": "s1", "wecom_external_userid": "wmE2E"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let wait = Duration::from_secs(20);
    let tasks = fake.wait_for(ADD_MSG_TEMPLATE, 1, wait).await;
    assert_eq!(
        tasks[0],
        json!({"chat_type": "single", "external_userid": ["wmE2E"], "sender": "wangfang",
               "text": {"content": "Hi Ada, this is Chen Jie."}})
    );
    let transfers = fake.wait_for(TRANSFER_CUSTOMER, 1, wait).await;
    assert_eq!(
        transfers[0],
        json!({"handover_userid": "wangfang", "takeover_userid": "chenjie", "external_userid": ["wmE2E"]})
    );
    let notices = fake.wait_for(MESSAGE_SEND, 1, wait).await;
    assert_eq!(notices[0]["touser"], "chenjie");
    assert_eq!(notices[0]["enable_duplicate_check"], 1);
    assert_eq!(fake.count(GETTOKEN), 1, "one token for the three calls");

    // The outbox rows are sent; the tasks wait for their outcome.
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent' AND channel = 'wecom'",
        3,
        wait,
    )
    .await;
    let msgid = fake.tasks().keys().next().unwrap().clone();
    let rows = p
        .rows("SELECT id, provider_id, payload FROM outbox ORDER BY id")
        .await;
    let ids: Vec<_> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(
        ids[0].ends_with(":0:notify") && ids[1].ends_with(":0:transfer") && ids[2].ends_with(":1"),
        "{ids:?}"
    );
    assert_eq!(rows[2]["provider_id"], json!(msgid));
    p.wait_count(
        "SELECT count(*) FROM wecom_tasks WHERE status = 'pending'",
        2,
        wait,
    )
    .await;

    // Before WeCom's outcome, history already says who sent the mass
    // message and why.
    let h = p.ok(&["history", "--contact", "c1"]);
    assert!(
        h.contains("sent from wangfang: chenjie (the owner) is not a WeCom friend of the customer"),
        "{h}"
    );

    // WeCom decides: wangfang's task reached the customer, and the transfer
    // completes.
    fake.set_send_status("wmE2E", 1);
    fake.set_transfer_status("wmE2E", 1);
    p.wait_count(
        "SELECT count(*) FROM wecom_tasks WHERE (kind = 'mass' AND status = 'sent' AND provider_status = 1
                                                  AND userid = 'wangfang')
            OR (kind = 'transfer' AND status = 'done' AND provider_status = 1)",
        2,
        wait,
    )
    .await;
    let sent = p
        .rows("SELECT status, last_error FROM outbox WHERE payload = '{}'")
        .await;
    assert_eq!(sent[0]["status"], "sent");
    // The delivery worker may send the message before or after the transfer
    // (both are due at once): not started yet, or pending.
    let note = sent[0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let prefix = "wecom: delivered to the customer (status 1); sent from wangfang: \
                  chenjie (the owner) is not a WeCom friend of the customer; transfer to chenjie ";
    assert!(
        note == format!("{prefix}pending") || note == format!("{prefix}not started yet"),
        "{note}"
    );
    let h = p.ok(&["history", "--contact", "c1"]);
    assert!(h.contains(&note), "{h}");
    assert!(h.contains("transfer done (status 1)"), "{h}");

    let (status, _) = d.terminate(Duration::from_secs(15));
    assert!(status.success(), "log:\n{}", p.log());
}

// ---- several daemons on one store ----

/// Two daemons polling the same store claim disjoint sets of due tasks: a
/// claimed task is leased (its `next_check_at` pushed forward), so nobody
/// else asks WeCom about it until the lease ends (a daemon that died).
/// Runs on PostgreSQL too under `.ci/with-postgres.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_due_tasks_are_disjoint_until_the_lease_ends() {
    use nurture::channels::wecom::tasks;
    use std::collections::BTreeSet;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&support::db::url_for(dir.path()))
        .await
        .unwrap();
    let db = store.db();
    for i in 0..40 {
        sqlx::query(
            "INSERT INTO wecom_tasks (message_id, channel, kind, contact_id, external_userid, userid,
                                      msgid, status, created_at, checks, next_check_at)
             VALUES ($1, 'wecom', 'mass', 'c1', 'wmEXT1', 'wangfang', 'msg', 'pending', $2, 0, $2)",
        )
        .bind(format!("m{i:02}"))
        .bind(1_000 + i as i64)
        .execute(db)
        .await
        .unwrap();
    }
    // One more whose outbox row is still being sent: not claimable yet.
    sqlx::query(
        "INSERT INTO wecom_tasks (message_id, channel, kind, contact_id, external_userid, userid,
                                  msgid, status, created_at, checks, next_check_at)
         VALUES ('busy', 'wecom', 'mass', 'c1', 'wmEXT1', 'wangfang', 'msg', 'pending', 1, 0, 1)",
    )
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (id, workflow, contact_id, step_id, channel, recipient, body, status,
                             not_before, next_attempt_at, created_at)
         VALUES ('busy', 'w', 'c1', 's', 'wecom', 'wmEXT1', 'hi', 'sending', 1, 1, 1)",
    )
    .execute(db)
    .await
    .unwrap();

    let (now, lease_until) = (10_000, 20_000);
    let d = store.dialect();
    let (a, b) = tokio::join!(
        tasks::claim(db, d, "wecom", now, lease_until, 30),
        tasks::claim(db, d, "wecom", now, lease_until, 30),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids_a: BTreeSet<String> = a.iter().map(|t| t.message_id.clone()).collect();
    let ids_b: BTreeSet<String> = b.iter().map(|t| t.message_id.clone()).collect();
    assert!(
        ids_a.is_disjoint(&ids_b),
        "claimed twice: {:?}",
        ids_a.intersection(&ids_b)
    );
    let claimed: BTreeSet<String> = ids_a.union(&ids_b).cloned().collect();
    assert!(
        !claimed.contains("busy"),
        "claimed before its outbox row was sent"
    );
    assert_eq!(claimed.len(), 40);
    // The claim carries what the poller needs.
    let t = a.iter().chain(&b).find(|t| t.message_id == "m07").unwrap();
    assert_eq!(
        (t.kind.as_str(), t.userid.as_str(), t.msgid.as_deref()),
        ("mass", "wangfang", Some("msg"))
    );

    // Leased: nobody else gets them before the lease ends...
    let c = tasks::claim(db, d, "wecom", now + 1, lease_until, 500)
        .await
        .unwrap();
    assert!(c.is_empty(), "claimed while leased: {c:?}");
    // ...the outcome write sets the real next check...
    tasks::postpone(db, "m00", now + 5, None).await.unwrap();
    let c = tasks::claim(db, d, "wecom", now + 5, lease_until + 1, 500)
        .await
        .unwrap();
    assert_eq!(
        c.iter().map(|t| t.message_id.as_str()).collect::<Vec<_>>(),
        vec!["m00"]
    );
    assert_eq!(c[0].checks, 1);
    // ...and a daemon that died leaves the rest to the others after it.
    let c = tasks::claim(db, d, "wecom", lease_until, lease_until + 30_000, 500)
        .await
        .unwrap();
    assert_eq!(c.len(), 39);
}

// ---- errcodes: waits, dispatching, welcome fallback ----

/// 45009 blocks the caller for the window that was exceeded; the message
/// waits that long and the wait is not an attempt: with `max_attempts: 1` a
/// retry would have dead-lettered it at once. Once the window has passed
/// (moved forward in the row, not slept through) it goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frequency_limit_waits_its_window_without_using_up_attempts() {
    use nurture::channels::delivery::{self, DeliveryOptions};
    let s = setup().await;
    exec(
        &s.store,
        "INSERT INTO contacts (id, name, owner, wecom_external_userid, created_at, updated_at)
         VALUES ('c1', 'Ada', 's01', 'wmEXT1', 0, 0)",
    )
    .await;
    let now = Utc::now().timestamp_millis();
    exec(
        &s.store,
        &format!(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                 status, attempts, not_before, next_attempt_at, created_at)
             VALUES ('m1', 'greet', 'c1', 1, '0', 'wecom', 'wmEXT1', 'Hi', 'queued', 0, {now}, {now}, {now})"
        ),
    )
    .await;
    s.fake.script(
        ADD_MSG_TEMPLATE,
        Answer::errcode(45009, "api freq out of limit, per hour"),
    );
    let reg = build_registry_full(&s.settings, &env, &s.handles).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(reg));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let opts = DeliveryOptions {
        worker_id: "w".into(),
        max_attempts: 1,
        max_idle: Duration::from_millis(50),
        ..DeliveryOptions::default()
    };
    let task = tokio::spawn(delivery::run(
        s.store.clone(),
        rx,
        opts,
        wake.clone(),
        shutdown.clone(),
    ));
    let row = "SELECT status, attempts, next_attempt_at, last_error FROM outbox WHERE id = 'm1'";
    s.fake
        .wait_for(ADD_MSG_TEMPLATE, 1, Duration::from_secs(10))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = rows(&s.store, row).await;
        if r[0][0].as_deref() == Some("queued") && r[0][3].is_some() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        r[0][1].as_deref(),
        Some("0"),
        "the wait is not an attempt: {r:?}"
    );
    let next: i64 = r[0][2].as_deref().unwrap().parse().unwrap();
    assert!(next >= now + 3_600_000, "waits the hour: {r:?}");
    assert!(r[0][3].as_deref().unwrap().contains("45009"), "{r:?}");
    // The hour has passed.
    exec(
        &s.store,
        "UPDATE outbox SET next_attempt_at = 0 WHERE id = 'm1'",
    )
    .await;
    wake.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = rows(&s.store, row).await;
        if r[0][0].as_deref() == Some("sent") {
            assert_eq!(r[0][1].as_deref(), Some("1"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 2);
}

/// 41063 from the result API means "still being dispatched": asked again,
/// never recorded as an outcome, then the real status.
#[tokio::test]
async fn the_poller_asks_again_while_wecom_is_still_dispatching() {
    let s = setup().await;
    s.fake.set_dispatching(2);
    assert!(matches!(
        send(&s.channel, &to_contact(1)).await,
        Delivery::Delivered { .. }
    ));
    exec(
        &s.store,
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                             status, attempts, not_before, next_attempt_at, created_at, sent_at)
         VALUES ('greet:c1:1:0', 'greet', 'c1', 1, '0', 'wecom', 'wmEXT1', 'hi', 'sent', 1, 0, 0, 0, 0)",
    )
    .await;
    s.fake.set_send_status("wmEXT1", 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
            .await
            .unwrap();
        let r = rows(&s.store, "SELECT status, detail FROM wecom_tasks").await;
        match r[0][0].as_deref() {
            Some("pending") => {}
            Some("sent") => break,
            other => panic!("41063 is not an outcome: {other:?} {r:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.fake.count(SEND_RESULT) >= 3, "two 41063, then the answer");
}

/// 41050: the welcome code is invalid, expired or used; the welcome still
/// reaches the customer, as a mass task.
#[tokio::test]
async fn an_invalid_welcome_code_falls_back_to_a_mass_task() {
    let s = setup().await;
    s.fake
        .script(SEND_WELCOME, Answer::errcode(41050, "invalid welcome code"));
    welcome_code(&s.store, "WC-bad", 0).await;
    let d = send(&s.channel, &to_contact(1)).await;
    assert!(
        matches!(
            d,
            Delivery::Delivered {
                provider_id: Some(_)
            }
        ),
        "{d:?}"
    );
    assert_eq!(s.fake.count(SEND_WELCOME), 1);
    assert_eq!(s.fake.requests(ADD_MSG_TEMPLATE)[0]["sender"], "wangfang");
}

// ---- notices: invaliduser, unlicenseduser, pacing ----

/// WeCom userids are case-insensitive and `invaliduser` comes back
/// lower-cased; `unlicenseduser` members did not get the notice.
#[tokio::test]
async fn notices_read_invaliduser_case_insensitively_and_unlicensed_as_undelivered() {
    let s = setup().await;
    // Several recipients where one is invalid: errcode 0, the invalid one
    // listed lower-cased (what WeCom answers for "ZhaoLiu").
    s.fake.script(
        MESSAGE_SEND,
        Answer::Json(
            json!({"errcode": 0, "errmsg": "ok", "invaliduser": "zhaoliu", "msgid": "n1"}),
        ),
    );
    let d = send(&s.channel, &notice("ZhaoLiu")).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("invaliduser"),
        "{d:?}"
    );
    // A member written in another case is the member.
    let d = send(&s.channel, &notice("WangFang")).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    assert_eq!(s.fake.notices_delivered("wangfang"), 1);
    // No licence: not delivered, permanent.
    s.fake.set_unlicensed("lisi");
    let d = send(&s.channel, &notice("lisi")).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("unlicenseduser"),
        "{d:?}"
    );
    assert_eq!(s.fake.notices_delivered("lisi"), 0);
    // Nobody valid: 81013.
    let d = send(&s.channel, &notice("nobody-here")).await;
    assert!(
        matches!(d, Delivery::Permanent { .. }) && reason(&d).contains("81013"),
        "{d:?}"
    );
}

/// WeCom shows a member at most 30 app messages a minute and drops the
/// rest silently: nurture holds the 31st back (a wait, not an attempt), so
/// nothing is dropped.
#[tokio::test]
async fn notices_are_paced_to_thirty_a_minute_per_salesperson() {
    let s = setup().await;
    let mut delivered = 0;
    let mut waits = Vec::new();
    for i in 0..35 {
        let mut m = notice(if i % 2 == 0 { "wangfang" } else { "WANGFANG" });
        m.id = format!("n{i}");
        m.body = format!("New contact {i}");
        match send(&s.channel, &m).await {
            Delivery::Delivered { .. } => delivered += 1,
            Delivery::Wait { after, reason } => {
                assert!(reason.contains("30 a minute"), "{reason}");
                waits.push(after);
            }
            d => panic!("{d:?}"),
        }
    }
    assert_eq!(delivered, 30);
    assert_eq!(waits.len(), 5);
    assert!(
        waits
            .iter()
            .all(|w| *w <= Duration::from_secs(60) && !w.is_zero())
    );
    assert_eq!(s.fake.notices_delivered("wangfang"), 30);
    assert_eq!(
        s.fake.notices_dropped("wangfang"),
        0,
        "nothing silently lost"
    );
    assert_eq!(s.fake.count(MESSAGE_SEND), 30);
    // Another salesperson has their own budget.
    let mut m = notice("lilei");
    m.id = "other".into();
    assert!(matches!(
        send(&s.channel, &m).await,
        Delivery::Delivered { .. }
    ));
}

// ---- relationships from batch/get_by_user ----

/// `nurture wecom sync-relationships` reads every relationship of the
/// settings' salespeople (paged) into the store; a later send picks its
/// sender from them without asking WeCom again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_relationships_reads_every_salespersons_customers() {
    use support::daemon::{HOOK_SECRET, Project, TOKEN};
    let (base, fake) = WecomFake::start_with(TOKEN, HOOK_SECRET).await;
    for n in 0..120 {
        fake.befriend(
            &format!("wmS{n:03}"),
            if n % 2 == 0 { "wangfang" } else { "lilei" },
        );
    }
    fake.befriend("wmS000", "lilei");
    fake.befriend("wmOTHER", "someone-else");
    let p = Project::new(&format!(
        r#"
channels:
  wecom:
    kind: wecom
    corp_id_env: NURTURE_API_TOKEN
    secret_env: HOOK_SECRET
    agent_id: 1000002
    base_url: "{base}"
teams:
  east:
    - {{ id: s1, name: Wang Fang, wecom_userid: wangfang }}
    - {{ id: s2, name: Li Lei, wecom_userid: lilei }}
    - {{ id: s3, name: No WeCom }}
"#
    ));
    let out = p.ok(&["wecom", "sync-relationships"]);
    assert!(out.contains("121 relationships of 120 customers"), "{out}");
    let calls = fake.requests(wecom_fake::BATCH_GET_BY_USER);
    assert_eq!(calls.len(), 2, "121 relationships, 100 a page");
    assert_eq!(calls[0]["userid_list"], json!(["lilei", "wangfang"]));
    assert_eq!(calls[1]["cursor"], "b100");
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_relationships WHERE standing = 1 AND source = 'batch'")
            .await,
        121
    );
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_relationships WHERE external_userid = 'wmOTHER'")
            .await,
        0,
        "only the salespeople's relationships"
    );
    // No wecom channel named so: exit 1.
    let bad = p
        .command()
        .args(["wecom", "sync-relationships", "--channel", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
}

/// A customer added in WeCom by a member nurture has no owner for (no
/// `owner`) is still handed to the salesperson an `assign` picks: the
/// transfer goes out from the real follow-user, the one who added them.
// Two worker threads: `terminate` waits synchronously, and the fake must go
// on answering the daemon's calls meanwhile (on one thread a call in flight
// at SIGTERM waited out the 15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_without_a_previous_owner_transfers_from_the_follow_user() {
    use support::daemon::{Daemon, HOOK_SECRET, Project, TOKEN};
    let (base, fake) = WecomFake::start_with(TOKEN, HOOK_SECRET).await;
    fake.befriend("wmNoOwner", "zhaomin");
    let p = Project::new(&format!(
        r#"
timezone: Asia/Shanghai
channels:
  wecom:
    kind: wecom
    corp_id_env: NURTURE_API_TOKEN
    secret_env: HOOK_SECRET
    agent_id: 1000002
    base_url: "{base}"
    poll_interval: 200ms
teams:
  west:
    - {{ id: s3, name: Chen Jie, wecom_userid: chenjie }}
"#
    ));
    p.write(
        "workflows/greet.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: west, strategy: round_robin }\n",
    );
    let d = Daemon::start(&p, &[]);
    let (status, v) = d
        .post(
            "/v1/contacts",
            json!({"id": "c1", "name": "Ada", "wecom_external_userid": "wmNoOwner"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let transfers = fake
        .wait_for(TRANSFER_CUSTOMER, 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        transfers[0],
        json!({"handover_userid": "zhaomin", "takeover_userid": "chenjie", "external_userid": ["wmNoOwner"]})
    );
    d.terminate(Duration::from_secs(15));
}

// ---- task outcomes as events, reminders (issue 9, point 9) ----

/// Contacts c1..=n as the store knows them, quiet since 2026-01-01.
async fn contacts(store: &Store, n: usize) {
    use chrono::TimeZone;
    for i in 1..=n {
        let input = nurture::store::contacts::ContactInput {
            id: format!("c{i}"),
            wecom_external_userid: Some(format!("wmEXT{i}")),
            owner: Some("s01".into()),
            last_active_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            ..Default::default()
        };
        store.upsert_contact(&input, Utc::now()).await.unwrap();
    }
}

async fn sent_row(store: &Store, n: usize) {
    exec(
        store,
        &format!(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                 status, attempts, not_before, next_attempt_at, created_at, sent_at)
             VALUES ('greet:c{n}:1:0', 'greet', 'c{n}', 1, 'hello', 'wecom', 'wmEXT{n}', 'hi', 'sent', 1, 0, 0, 0, 0)"
        ),
    )
    .await;
}

#[tokio::test]
async fn task_outcomes_are_events_on_the_contact() {
    let s = setup().await;
    contacts(&s.store, 4).await;
    for n in 1..=4 {
        assert!(matches!(
            send(&s.channel, &to_contact(n)).await,
            Delivery::Delivered { .. }
        ));
        sent_row(&s.store, n).await;
    }
    s.fake.set_send_status("wmEXT1", 1);
    s.fake.set_send_status("wmEXT2", 2);
    s.fake.set_send_status("wmEXT3", 3);
    // c4's salesperson never confirms: after 3 days nurture stops asking.
    exec(
        &s.store,
        "UPDATE wecom_tasks SET created_at = created_at - 4 * 86400000 WHERE contact_id = 'c4'",
    )
    .await;
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    // Asked again: nothing is logged twice.
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    let got = rows(
        &s.store,
        "SELECT e.contact_id, e.name, json_extract(e.properties, '$.workflow'),
                json_extract(e.properties, '$.step'), json_extract(e.properties, '$.sender'),
                json_extract(e.properties, '$.provider_status')
           FROM events e ORDER BY e.contact_id",
    )
    .await;
    let names: Vec<_> = got
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("c1".to_string(), "wecom_task_sent".to_string()),
            ("c2".into(), "wecom_task_not_friend".into()),
            ("c3".into(), "wecom_task_over_cap".into()),
            ("c4".into(), "wecom_task_expired".into()),
        ]
    );
    assert_eq!(got[0][2].as_deref(), Some("greet"));
    assert_eq!(got[0][3].as_deref(), Some("hello"));
    assert_eq!(got[0][4].as_deref(), Some("wangfang"));
    assert_eq!(got[1][5].as_deref(), Some("2"));
    // Each is in the event log (workflows trigger on it) ...
    let logged = rows(
        &s.store,
        "SELECT count(*) FROM event_log WHERE kind = 'event' AND name LIKE 'wecom_task_%'",
    )
    .await;
    assert_eq!(logged[0][0].as_deref(), Some("4"));
    // ... but a salesperson's send is not the customer's activity.
    let quiet = rows(
        &s.store,
        "SELECT count(*) FROM contacts WHERE last_active_at = 1767225600000",
    )
    .await;
    assert_eq!(quiet[0][0].as_deref(), Some("4"));
}

#[tokio::test]
async fn an_unconfirmed_task_is_reminded_at_most_three_times_a_day() {
    let (base, fake) = WecomFake::start().await;
    let s = setup_with(base, fake, "    remind_after: 10ms\n").await;
    contacts(&s.store, 1).await;
    assert!(matches!(
        send(&s.channel, &to_contact(1)).await,
        Delivery::Delivered { .. }
    ));
    sent_row(&s.store, 1).await;
    let msgid = rows(&s.store, "SELECT msgid FROM wecom_tasks").await[0][0]
        .clone()
        .unwrap();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
            .await
            .unwrap();
    }
    // WeCom's 3 a day, and nurture never asked for a fourth.
    assert_eq!(s.fake.reminders(&msgid), 3);
    assert_eq!(s.fake.count(wecom_fake::REMIND_GROUPMSG_SEND), 3);
    let r = rows(
        &s.store,
        "SELECT count(*), min(errcode), max(errcode) FROM wecom_reminders",
    )
    .await;
    assert_eq!(r[0], [Some("3".into()), Some("0".into()), Some("0".into())]);
    // Once sent, no more reminders.
    s.fake.set_send_status("wmEXT1", 1);
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert_eq!(s.fake.count(wecom_fake::REMIND_GROUPMSG_SEND), 3);
}

#[tokio::test]
async fn the_fake_refuses_a_fourth_reminder_and_an_unknown_msgid() {
    let s = setup().await;
    assert!(matches!(
        send(&s.channel, &to_contact(1)).await,
        Delivery::Delivered { .. }
    ));
    let msgid = rows(&s.store, "SELECT msgid FROM wecom_tasks").await[0][0]
        .clone()
        .unwrap();
    let api = nurture::channels::build::wecom_config(
        s.settings.channels.get("wecom").unwrap(),
        &s.settings,
        &env,
        &s.handles.wecom_tokens,
    )
    .unwrap()
    .api()
    .unwrap();
    let path = nurture::channels::wecom::REMIND_GROUPMSG_SEND;
    for _ in 0..3 {
        api.post(path, &json!({ "msgid": msgid })).await.unwrap();
    }
    let fourth = api
        .post(path, &json!({ "msgid": msgid }))
        .await
        .unwrap_err();
    assert!(
        reason(&fourth.delivery).contains("45009"),
        "{:?}",
        fourth.delivery
    );
    let unknown = api
        .post(path, &json!({ "msgid": "nope" }))
        .await
        .unwrap_err();
    assert!(reason(&unknown.delivery).contains("40058"));
}

// ---- succession: staff who left, resigned transfers, WeCom's limits (point 10) ----

fn api_of(s: &Setup) -> nurture::channels::wecom::api::WecomApi {
    nurture::channels::build::wecom_config(
        s.settings.channels.get("wecom").unwrap(),
        &s.settings,
        &env,
        &s.handles.wecom_tokens,
    )
    .unwrap()
    .api()
    .unwrap()
}

#[tokio::test]
async fn resigned_finds_customers_of_staff_who_left_and_logs_each_once() {
    use nurture::channels::wecom::resigned;
    let s = setup().await;
    contacts(&s.store, 2).await;
    s.fake.resign("lisi", "wmEXT1", 10);
    s.fake.resign("lisi", "wmEXT2", 400);
    s.fake.resign("lisi", "wmNOBODY", 1);
    s.fake.set_unassigned_page(2);
    let now = Utc::now().timestamp_millis();
    let f = resigned::sync(&api_of(&s), &s.store, now).await.unwrap();
    assert_eq!((f.listed, f.new, f.events, f.calls), (3, 3, 2, 2));
    let bodies = s.fake.requests(wecom_fake::GET_UNASSIGNED_LIST);
    assert_eq!(bodies[0]["page_size"], 1000);
    assert_eq!(bodies[1]["cursor"], "u2");
    let again = resigned::sync(&api_of(&s), &s.store, now + 1)
        .await
        .unwrap();
    assert_eq!((again.listed, again.new, again.events), (3, 0, 0));
    let ev = rows(
        &s.store,
        "SELECT contact_id, json_extract(properties, '$.handover_userid') FROM events
          WHERE name = 'wecom_staff_left' ORDER BY contact_id",
    )
    .await;
    assert_eq!(
        ev,
        [
            [Some("c1".into()), Some("lisi".into())],
            [Some("c2".into()), Some("lisi".into())]
        ]
    );
    // page_size over 1,000 is refused by WeCom (the fake too).
    let e = api_of(&s)
        .post(resigned::GET_UNASSIGNED_LIST, &json!({ "page_size": 1001 }))
        .await
        .unwrap_err();
    assert!(reason(&e.delivery).contains("40058"));
}

#[tokio::test]
async fn a_customer_of_staff_who_left_moves_with_the_resigned_transfer() {
    use nurture::channels::wecom::resigned;
    let s = setup().await;
    contacts(&s.store, 2).await;
    s.fake.resign("lisi", "wmEXT1", 10);
    s.fake.resign("lisi", "wmEXT2", 400);
    resigned::sync(&api_of(&s), &s.store, Utc::now().timestamp_millis())
        .await
        .unwrap();
    // The workflow assigns c1 to chenjie: the member who left hands over.
    let mut m = transfer("wmEXT1", "wangfang", "chenjie");
    m.id = "greet:c1:1:0:transfer".into();
    assert!(matches!(
        send(&s.channel, &m).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(s.fake.count(TRANSFER_CUSTOMER), 0);
    let req = s.fake.requests(wecom_fake::RESIGNED_TRANSFER_CUSTOMER);
    assert_eq!(req.len(), 1);
    assert_eq!(req[0]["handover_userid"], "lisi");
    assert_eq!(req[0]["takeover_userid"], "chenjie");
    exec(
        &s.store,
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                             status, attempts, not_before, next_attempt_at, created_at, sent_at)
         VALUES ('greet:c1:1:0:transfer', 'greet', 'c1', 1, 'reassign', 'wecom', 'wmEXT1', 'transfer',
                 'sent', 1, 0, 0, 0, 0)",
    )
    .await;
    s.fake.set_transfer_status("wmEXT1", 1);
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    assert_eq!(s.fake.count(wecom_fake::RESIGNED_TRANSFER_RESULT), 1);
    let t = rows(&s.store, "SELECT kind, status, userid FROM wecom_tasks").await;
    assert_eq!(
        t[0],
        [
            Some("resigned".into()),
            Some("done".into()),
            Some("lisi".into())
        ]
    );
    // No longer unassigned; chenjie is a follow-user; the outcome is an event.
    let left = rows(
        &s.store,
        "SELECT count(*) FROM wecom_unassigned WHERE external_userid = 'wmEXT1'",
    )
    .await;
    assert_eq!(left[0][0].as_deref(), Some("0"));
    let rel = rows(
        &s.store,
        "SELECT standing FROM wecom_relationships WHERE external_userid = 'wmEXT1' AND userid = 'chenjie'",
    )
    .await;
    assert_eq!(rel[0][0].as_deref(), Some("1"));
    let ev = rows(
        &s.store,
        "SELECT json_extract(properties, '$.resigned'), json_extract(properties, '$.takeover_userid')
           FROM events WHERE contact_id = 'c1' AND name = 'wecom_transfer_done'",
    )
    .await;
    assert_eq!(ev[0], [Some("1".into()), Some("chenjie".into())]);

    // lisi left over a year ago: WeCom would refuse; nurture does not ask.
    let mut m2 = transfer("wmEXT2", "wangfang", "chenjie");
    m2.contact_id = "c2".into();
    let d = send(&s.channel, &m2).await;
    assert!(
        reason(&d).contains("lisi left more than a year ago"),
        "{d:?}"
    );
    assert_eq!(s.fake.count(wecom_fake::RESIGNED_TRANSFER_CUSTOMER), 1);
}

#[tokio::test]
async fn the_fake_refuses_resigned_transfers_wecom_would_refuse() {
    use nurture::channels::wecom::resigned;
    let s = setup().await;
    s.fake.resign("lisi", "wmEXT1", 10);
    s.fake.resign("lisi", "wmEXT2", 400);
    let api = api_of(&s);
    let code = |v: serde_json::Value| v["customer"][0]["errcode"].as_i64().unwrap();
    let call = |ext: &str, from: &str, to: &str| json!({ "handover_userid": from, "takeover_userid": to, "external_userid": [ext] });
    let post = |b: serde_json::Value| {
        let api = &api;
        async move {
            api.post(resigned::RESIGNED_TRANSFER_CUSTOMER, &b)
                .await
                .unwrap()
                .json
        }
    };
    assert_eq!(
        code(post(call("wmEXT1", "wangfang", "chenjie")).await),
        40097
    );
    assert_eq!(code(post(call("wmEXT2", "lisi", "chenjie")).await), 40097);
    assert_eq!(code(post(call("wmEXT1", "lisi", "lisi")).await), 40130);
    assert_eq!(code(post(call("wmEXT1", "lisi", "chenjie")).await), 0);
    assert_eq!(code(post(call("wmEXT1", "lisi", "wangfang")).await), 40129);
}

#[tokio::test]
async fn a_third_transfer_in_ninety_days_is_not_asked_for() {
    let s = setup().await;
    let now = Utc::now().timestamp_millis();
    for (i, days) in [(1, 80), (2, 10)] {
        exec(
            &s.store,
            &format!(
                "INSERT INTO wecom_tasks (message_id, channel, kind, contact_id, external_userid, userid,
                                          takeover_userid, status, created_at, checks, next_check_at)
                 VALUES ('old{i}', 'wecom', 'transfer', 'c3', 'wmEXT3', 'wangfang', 'lilei', 'done', {}, 1, 0)",
                now - days * 86_400_000
            ),
        )
        .await;
    }
    let d = send(&s.channel, &transfer("wmEXT3", "wangfang", "chenjie")).await;
    assert!(matches!(d, Delivery::Permanent { .. }));
    assert!(reason(&d).contains("40128"), "{d:?}");
    assert_eq!(s.fake.count(TRANSFER_CUSTOMER), 0);
    // One of them 100 days ago: the window has room again.
    exec(
        &s.store,
        &format!(
            "UPDATE wecom_tasks SET created_at = {} WHERE message_id = 'old1'",
            now - 100 * 86_400_000
        ),
    )
    .await;
    let d = send(&s.channel, &transfer("wmEXT3", "wangfang", "chenjie")).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
}

/// Outcome events, reminders and the unassigned list on either store.
/// Runs on PostgreSQL too under `.ci/with-postgres.sh`.
#[tokio::test]
async fn outcomes_reminders_and_staff_left_on_either_store() {
    use nurture::channels::wecom::resigned;
    let (base, fake) = WecomFake::start().await;
    let s = setup_at(base, fake, "    remind_after: 10ms\n", Some(())).await;
    contacts(&s.store, 2).await;
    let db = s.store.db();
    for n in 1..=2 {
        assert!(matches!(
            send(&s.channel, &to_contact(n)).await,
            Delivery::Delivered { .. }
        ));
        sqlx::query(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                 status, attempts, not_before, next_attempt_at, created_at, sent_at)
             VALUES ($1, 'greet', $2, 1, 'hello', 'wecom', $3, 'hi', 'sent', 1, 0, 0, 0, 0)",
        )
        .bind(format!("greet:c{n}:1:0"))
        .bind(format!("c{n}"))
        .bind(format!("wmEXT{n}"))
        .execute(db)
        .await
        .unwrap();
    }
    s.fake.set_send_status("wmEXT1", 1);
    let_time_pass(Duration::from_millis(30)).await;
    poll::poll_once(&s.store, &s.settings, &env, &s.handles.wecom_tokens)
        .await
        .unwrap();
    let names: Vec<(String, String)> =
        sqlx::query_as("SELECT contact_id, name FROM events ORDER BY contact_id")
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(names, [("c1".to_string(), "wecom_task_sent".to_string())]);
    let reminded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wecom_reminders WHERE errcode = 0")
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(reminded, 1);
    s.fake.resign("lisi", "wmEXT2", 3);
    let f = resigned::sync(&api_of(&s), &s.store, Utc::now().timestamp_millis())
        .await
        .unwrap();
    assert_eq!((f.listed, f.events), (1, 1));
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE contact_id = 'c2' AND name = 'wecom_staff_left'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(left, 1);
    let quiet: i64 =
        sqlx::query_scalar("SELECT count(*) FROM contacts WHERE last_active_at = 1767225600000")
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(quiet, 2);
}

/// Moves the clocks of the WeCom code (token lifetimes, task schedules) by
/// `d` without waiting: tokio's clock is paused, advanced and resumed (see
/// `nurture::channels::wecom::now_ms`). Only for current-thread tests.
async fn let_time_pass(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

/// Issue 12 item 10: a message reclaimed after its worker died mid-call
/// (`in_doubt`) is looked up before WeCom is called again: its recorded task
/// means WeCom already has it, so no second task is created for the
/// salesperson; one without a record is sent.
#[tokio::test]
async fn a_reclaimed_message_whose_task_is_recorded_is_not_sent_again() {
    let s = setup().await;
    let first = send(&s.channel, &to_contact(1)).await;
    let Delivery::Delivered {
        provider_id: Some(msgid),
    } = first
    else {
        panic!("{first:?}");
    };
    let mut again = to_contact(1);
    again.in_doubt = true;
    assert_eq!(
        send(&s.channel, &again).await,
        Delivery::Delivered {
            provider_id: Some(msgid)
        },
        "the recorded task answers for it"
    );
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 1, "no second task");
    // In doubt, but never accepted (the crash came before WeCom's answer): sent.
    let mut other = to_contact(2);
    other.in_doubt = true;
    assert!(matches!(
        send(&s.channel, &other).await,
        Delivery::Delivered { .. }
    ));
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 2);
    // A store that cannot tell: not sent now.
    exec(&s.store, "DROP TABLE wecom_tasks").await;
    let mut unknown = to_contact(3);
    unknown.in_doubt = true;
    let d = send(&s.channel, &unknown).await;
    assert!(
        matches!(&d, Delivery::Retry { reason, .. } if reason.contains("cannot tell")),
        "{d:?}"
    );
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 2);
}

/// A welcome whose worker died after taking the code (the message is
/// reclaimed `in_doubt`), or whose call got no answer (a retry), may have
/// reached the customer: WeCom cannot be asked, so it is not sent again as
/// a mass task. A code WeCom refused (41050) leaves no doubt: the mass task
/// that replaces the welcome is retried until WeCom takes it. Both stores.
#[tokio::test]
async fn a_welcome_in_doubt_is_not_sent_again_as_a_mass_task() {
    let (base, fake) = WecomFake::start().await;
    let s = setup_at(base, fake, "", Some(())).await;
    welcome_code(&s.store, "WC-doubt", 0).await;
    let d = send(&s.channel, &to_contact(1)).await;
    assert_eq!(d, Delivery::Delivered { provider_id: None });
    // The outcome was lost: the reclaimed message comes back in doubt.
    let mut again = to_contact(1);
    again.in_doubt = true;
    let d = send(&s.channel, &again).await;
    assert_eq!(d, Delivery::Delivered { provider_id: None });
    assert_eq!(s.fake.count(SEND_WELCOME), 1);
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 0, "no second greeting");
    // Another message to the contact is no welcome in doubt: a mass task.
    let mut other = to_contact(1);
    other.id = "other:c1:1:0".into();
    other.attempt = 2;
    let d = send(&s.channel, &other).await;
    assert!(
        matches!(
            d,
            Delivery::Delivered {
                provider_id: Some(_)
            }
        ),
        "{d:?}"
    );
    assert_eq!(s.fake.count(ADD_MSG_TEMPLATE), 1);

    // 41050, then the mass task meets a busy WeCom: the retry sends it.
    welcome_code(&s.store, "WC-refused", 0).await;
    s.fake
        .script(SEND_WELCOME, Answer::errcode(41050, "invalid welcome code"));
    s.fake
        .script(ADD_MSG_TEMPLATE, Answer::errcode(-1, "system busy"));
    let mut m = to_contact(1);
    m.id = "refused:c1:1:0".into();
    assert!(is_retry(&send(&s.channel, &m).await));
    m.attempt = 2;
    m.in_doubt = true;
    let d = send(&s.channel, &m).await;
    assert!(
        matches!(
            d,
            Delivery::Delivered {
                provider_id: Some(_)
            }
        ),
        "{d:?}"
    );
    assert_eq!(s.fake.count(SEND_WELCOME), 2);
    assert_eq!(
        s.fake.tasks().len(),
        2,
        "the refused welcome went out as a task"
    );
}

/// WeCom takes a customer over 24 h after a transfer started and refuses
/// another transfer before then (40129): the channel defers the second one
/// until the takeover (a wait, which uses up no attempt) instead of asking,
/// and a refusal by the 90-day limit says when a transfer is possible again.
/// Both stores.
#[tokio::test]
async fn a_transfer_waits_for_the_takeover_of_the_previous_one() {
    let (base, fake) = WecomFake::start().await;
    let s = setup_at(base, fake, "", Some(())).await;
    let first = send(&s.channel, &transfer("wmEXT4", "wangfang", "lilei")).await;
    assert!(matches!(first, Delivery::Delivered { .. }), "{first:?}");
    let mut second = transfer("wmEXT4", "wangfang", "chenjie");
    second.id = "second:c4:1:0:transfer".into();
    let d = send(&s.channel, &second).await;
    let Delivery::Wait { after, reason: why } = &d else {
        panic!("{d:?}");
    };
    assert!(
        *after > Duration::from_secs(23 * 3600) && *after <= Duration::from_secs(24 * 3600),
        "{after:?}"
    );
    assert!(why.contains("WeCom takes over only after 24 h"), "{why}");
    assert!(why.contains("deferred until"), "{why}");
    assert_eq!(
        s.fake.count(TRANSFER_CUSTOMER),
        1,
        "the second is not asked for"
    );
    // Taken over: the limit counts two transfers in 90 days now, and says
    // when the window has room again.
    exec(
        &s.store,
        "UPDATE wecom_tasks SET status = 'done' WHERE external_userid = 'wmEXT4'",
    )
    .await;
    s.fake.set_transfer_status("wmEXT4", 1);
    relationship(&s.store, "wmEXT4", "wangfang", false).await;
    relationship(&s.store, "wmEXT4", "lilei", true).await;
    let mut second = transfer("wmEXT4", "lilei", "chenjie");
    second.id = "second:c4:1:0:transfer".into();
    let d = send(&s.channel, &second).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    let mut third = transfer("wmEXT4", "lilei", "wangfang");
    third.id = "third:c4:1:0:transfer".into();
    exec(
        &s.store,
        "UPDATE wecom_tasks SET status = 'done' WHERE external_userid = 'wmEXT4'",
    )
    .await;
    let d = send(&s.channel, &third).await;
    assert!(matches!(d, Delivery::Permanent { .. }), "{d:?}");
    assert!(
        reason(&d).contains("40128") && reason(&d).contains("possible again from"),
        "{d:?}"
    );
    assert_eq!(s.fake.count(TRANSFER_CUSTOMER), 2);
}

/// `dry-run --explain` shows WeCom's transfer limits on a customer with the
/// channel's own verdict: which limit holds a transfer now and when it
/// frees up. Both stores.
#[test]
fn explain_shows_which_transfer_limit_holds_and_when_it_frees_up() {
    use crate::wecom_callback::{env, settings};
    let p = crate::support::daemon::Project::new(&settings("http://127.0.0.1:9", true));
    p.write(
        "contacts.csv",
        "id,name,wecom_external_userid\nw1,Wang,wmLim\nw2,Li,wmFree\n",
    );
    let run = |args: &[&str]| {
        let mut cmd = p.command();
        for (k, v) in env() {
            cmd.env(k, v);
        }
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["contacts", "import", "contacts.csv"]);
    let now = Utc::now().timestamp_millis();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (i, days) in [(1, 80), (2, 10)] {
            p.exec(&format!(
                "INSERT INTO wecom_tasks (message_id, channel, kind, contact_id, external_userid, userid,
                                          takeover_userid, status, created_at, checks, next_check_at)
                 VALUES ('lim{i}', 'wecom', 'transfer', 'w1', 'wmLim', 'wangfang', 'lilei', 'done', {}, 1, 0)",
                now - days * 86_400_000
            ))
            .await;
        }
    });
    let out = run(&["dry-run", "--explain", "w1"]);
    assert!(
        out.contains("WeCom transfers of wmLim: 2 in the last 90 days (at most 2)"),
        "{out}"
    );
    assert!(
        out.contains("a transfer now is held by limit 2_per_90_days (frees up "),
        "{out}"
    );
    assert!(out.contains("errcode 40128"), "{out}");
    // No transfers, nobody who left: nothing to say.
    let out = run(&["dry-run", "--explain", "w2"]);
    assert!(!out.contains("WeCom transfers"), "{out}");
}
