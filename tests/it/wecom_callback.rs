//! The WeCom callback `GET, POST /v1/wecom/callback` (src/api/wecom_callback)
//! against the real `nurture run`: URL check, signatures, corp id, events in
//! the store, redeliveries, hostile input, and end to end: a new external
//! contact gets its welcome message through `send_welcome_msg` on a loopback
//! fake of WeCom. Events are encrypted with the crate's `WecomCrypto`, whose
//! output is checked against an independent AES-CBC and published SDK
//! vectors in tests/it/wecom_crypto.rs.
//!
//! Per-contact WeCom tags: an `edit_external_contact` queues a tag sync, the
//! daemon's worker reads `externalcontact/get` on the fake and the contact's
//! tags follow (a `tag_added` workflow sends); in process, the worker's
//! failure paths (retry, backoff, permanent errcodes, token refetch, pages).
//!
//! Plus, in-process, a proptest that random requests never panic the handler
//! and always get an answer.

use crate::support;

use crate::support::wecom_fake;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nurture::api::wecom_callback::{CallbackState, SettingsSource};
use nurture::api::wecom_crypto::WecomCrypto;
use nurture::api::{ApiState, serve_with_wecom};
use nurture::settings::Settings;
use nurture::store::Store;
use proptest::prelude::*;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use nurture::channels::wecom::contact_tags::{MAX_ATTEMPTS, Round, sync_due};
use nurture::store::wecom::{CallbackKey, ContactChange};
use support::daemon::Project;
use wecom_fake::{
    ADD_MSG_TEMPLATE, Answer, CORP_ID, EXTERNALCONTACT_GET, GETTOKEN, SECRET, SEND_WELCOME,
    WecomFake,
};

const SECS: Duration = Duration::from_secs(1);
/// The callback's Token and EncodingAESKey (any valid pair).
const CB_TOKEN: &str = "cbT0ken42";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const PATH: &str = "/v1/wecom/callback";

/// The env the daemon gets (besides the API token the support sets).
pub(crate) fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("WECOM_CORP_ID", CORP_ID),
        ("WECOM_SECRET", SECRET),
        ("WECOM_CB_TOKEN", CB_TOKEN),
        ("WECOM_CB_AES_KEY", AES_KEY),
    ]
}

/// A wecom channel on `base_url` with the callback, and a team whose
/// salesperson s1 is WeCom user `zhangsan`.
pub(crate) fn settings(base_url: &str, callback: bool) -> String {
    let cb = if callback {
        ", token_env: WECOM_CB_TOKEN, aes_key_env: WECOM_CB_AES_KEY"
    } else {
        ""
    };
    format!(
        r#"
timezone: Asia/Shanghai
channels:
  wecom: {{ kind: wecom, corp_id_env: WECOM_CORP_ID, secret_env: WECOM_SECRET, agent_id: "1000002", base_url: "{base_url}"{cb} }}
teams:
  east:
    - {{ id: s1, name: Wang Fang, wecom_userid: zhangsan }}
    - {{ id: s2, name: Li Lei, wecom_userid: lisi }}
"#
    )
}

pub(crate) fn crypto() -> WecomCrypto {
    WecomCrypto::new(CB_TOKEN, AES_KEY, CORP_ID).unwrap()
}

/// `nurture run` with the WeCom env vars (the support's `Daemon` takes no env).
pub(crate) struct Running {
    child: Child,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
}

impl Running {
    pub(crate) fn start(p: &Project, env: &[(&str, &str)]) -> Running {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.log_path())
            .unwrap();
        let mut cmd = p.command();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["run", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(20 * SECS) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not start; log:\n{}", p.log());
        };
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", p.log()))
            .trim()
            .parse()
            .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        Running {
            child,
            addr,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET with query pairs (percent-encoded); status, content type, body.
    async fn get(&self, query: &[(&str, &str)]) -> (u16, String, String) {
        let r = self
            .client
            .get(with_query(&self.url(PATH), query))
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    async fn post_raw(&self, query: &[(&str, &str)], body: Vec<u8>) -> (u16, String, String) {
        let r = self
            .client
            .post(with_query(&self.url(PATH), query))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    /// Encrypts and signs `inner` as WeCom would and POSTs it.
    pub(crate) async fn post_event(&self, c: &WecomCrypto, inner: &str, seed: u8) -> (u16, String) {
        let (query, body) = sealed(c, inner, seed);
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, text) = self.post_raw(&q, body.into_bytes()).await;
        (status, text)
    }

    /// Waits until the daemon activated `n` workflows: a trigger event from
    /// before a workflow's activation does not enroll. Gives a `CreateTime`
    /// (seconds) after the activations.
    pub(crate) async fn wait_active(&self, p: &Project, n: i64) -> i64 {
        p.wait_count("SELECT count(*) FROM workflow_states", n, 20 * SECS)
            .await;
        chrono::Utc::now().timestamp() + 1
    }

    /// POSTs JSON to the daemon's API with the test token; the status.
    pub(crate) async fn post_api(&self, path: &str, body: Value) -> u16 {
        self.client
            .post(self.url(path))
            .bearer_auth(support::daemon::TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub(crate) fn stop(mut self, p: &Project) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + 15 * SECS;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "the daemon exited with {s}; log:\n{}", p.log());
                break;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = p.log();
        assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
        // Secrets never reach the log.
        assert!(!log.contains(AES_KEY) && !log.contains(CB_TOKEN), "{log}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `url?k=v&...`, percent-encoded (reqwest is built without `query`).
fn with_query(url: &str, query: &[(&str, &str)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(url, query).unwrap()
}

async fn answer(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.text().await.unwrap())
}

/// The query and body of an event POST: `inner` encrypted (16 "random"
/// bytes from `seed`) and signed with a fresh timestamp and nonce.
fn sealed(c: &WecomCrypto, inner: &str, seed: u8) -> (Vec<(&'static str, String)>, String) {
    let enc = c.encrypt_with_random(inner, [seed; 16]);
    let ts = chrono::Utc::now().timestamp().to_string();
    let nonce = format!("n{seed}x{}", ts.len());
    let sig = c.signature(&ts, &nonce, &enc);
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
    );
    (
        vec![("msg_signature", sig), ("timestamp", ts), ("nonce", nonce)],
        body,
    )
}

/// A decrypted `change_external_contact` event.
pub(crate) fn contact_event(
    change: &str,
    user: &str,
    ext: &str,
    create_time: i64,
    extra: &str,
) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>\
         <UserID><![CDATA[{user}]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID>{extra}</xml>"
    )
}

/// The URL check: a real encrypted echostr comes back as its plaintext
/// alone; forgeries are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_check_echoes_the_plaintext_and_rejects_forgeries() {
    let p = Project::new(&settings("http://127.0.0.1:9", true));
    let d = Running::start(&p, &env());
    let c = crypto();
    // A plaintext as WeCom sends it (a decimal string), and one whose
    // ciphertext has '+' and '/' (the query must be decoded exactly).
    for (i, plain) in ["1616140317555161061", "echo-中文-ok"].iter().enumerate() {
        let mut seed = i as u8;
        let mut enc = c.encrypt_with_random(plain, [seed; 16]);
        while !(enc.contains('+') && enc.contains('/')) {
            seed = seed.wrapping_add(7);
            enc = c.encrypt_with_random(plain, [seed; 16]);
        }
        let sig = c.signature("1409659589", "263014780", &enc);
        let t0 = Instant::now();
        let (status, ct, body) = d
            .get(&[
                ("msg_signature", &sig),
                ("timestamp", "1409659589"),
                ("nonce", "263014780"),
                ("echostr", &enc),
            ])
            .await;
        let took = t0.elapsed();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body, *plain,
            "the plaintext only: no quotes, BOM or newline"
        );
        assert!(ct.starts_with("text/plain"), "{ct}");
        // WeCom allows 1 s; loopback takes milliseconds. Generous for a busy CI box.
        assert!(took < 2 * SECS, "the URL check took {took:?}");

        // The same echostr with its '+' left unencoded in the URL (decoded
        // as a space by form decoding) still verifies.
        let raw = format!(
            "{}?msg_signature={sig}&timestamp=1409659589&nonce=263014780&echostr={}",
            d.url(PATH),
            enc.replace('/', "%2F").replace('=', "%3D")
        );
        let r = d.client.get(raw).send().await.unwrap();
        let (status, _, body) = answer(r).await;
        assert_eq!((status, body.as_str()), (200, *plain));
    }

    let enc = c.encrypt_with_random("12345", [9; 16]);
    let sig = c.signature("1409659589", "263014780", &enc);
    // A bad signature, a changed nonce, another Token: 401.
    let mut bad = sig.clone();
    bad.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
    for (s, nonce) in [(bad.as_str(), "263014780"), (sig.as_str(), "263014781")] {
        let (status, _, body) = d
            .get(&[
                ("msg_signature", s),
                ("timestamp", "1409659589"),
                ("nonce", nonce),
                ("echostr", &enc),
            ])
            .await;
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("12345"));
    }
    let other = WecomCrypto::new("otherToken", AES_KEY, CORP_ID).unwrap();
    let enc2 = other.encrypt_with_random("12345", [1; 16]);
    let sig2 = other.signature("1", "2", &enc2);
    let (status, _, _) = d
        .get(&[
            ("msg_signature", &sig2),
            ("timestamp", "1"),
            ("nonce", "2"),
            ("echostr", &enc2),
        ])
        .await;
    assert_eq!(status, 401);
    // Signed with our Token, but encrypted for another corp: 403.
    let wrong_corp = WecomCrypto::new(CB_TOKEN, AES_KEY, "ww-another-corp").unwrap();
    let enc3 = wrong_corp.encrypt_with_random("12345", [2; 16]);
    let sig3 = c.signature("1", "2", &enc3);
    let (status, _, body) = d
        .get(&[
            ("msg_signature", &sig3),
            ("timestamp", "1"),
            ("nonce", "2"),
            ("echostr", &enc3),
        ])
        .await;
    assert_eq!(status, 403, "{body}");
    // Missing parameters: 400.
    let (status, _, body) = d
        .get(&[
            ("msg_signature", &sig),
            ("timestamp", "1409659589"),
            ("nonce", "263014780"),
        ])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("echostr"));
    let (status, _, _) = d.get(&[]).await;
    assert_eq!(status, 400);

    // The callback needs no bearer token, and the rest of /v1 still does.
    let r = d
        .client
        .post(d.url("/v1/contacts"))
        .json(&serde_json::json!({"id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let log = p.log();
    assert!(log.contains("WeCom callback enabled"), "{log}");
    assert!(
        log.contains("msg_signature matches no configured Token"),
        "{log}"
    );
    assert!(
        log.contains("receiveid is not the configured corp id"),
        "{log}"
    );
    d.stop(&p);
}

/// add / redelivery / second staff / edit / delete / tag library, in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_create_update_deduplicate_and_delete_contacts() {
    let p = Project::new(&settings("http://127.0.0.1:9", true));
    let d = Running::start(&p, &env());
    let c = crypto();
    let t = chrono::Utc::now().timestamp();

    let add = contact_event(
        "add_external_contact",
        "zhangsan",
        "wmAAA",
        t,
        "<State><![CDATA[qr-spring]]></State><WelcomeCode><![CDATA[WC-1]]></WelcomeCode>",
    );
    let (status, body) = d.post_event(&c, &add, 1).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let rows = p
        .rows("SELECT id, owner, wecom_external_userid, attrs FROM contacts")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "wmAAA");
    assert_eq!(rows[0]["owner"], "s1");
    assert_eq!(rows[0]["wecom_external_userid"], "wmAAA");
    let attrs: Value = serde_json::from_str(rows[0]["attrs"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["wecom_staff_userid"], "zhangsan");
    assert_eq!(attrs["wecom_state"], "qr-spring");
    let created =
        "SELECT count(*) FROM event_log WHERE kind = 'contact_created' AND contact_id = 'wmAAA'";
    assert_eq!(p.count(created).await, 1);
    let codes = p
        .rows("SELECT contact_id, external_userid, staff_userid, welcome_code, used_at FROM wecom_welcome_codes")
        .await;
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0]["welcome_code"], "WC-1");
    assert_eq!(codes[0]["staff_userid"], "zhangsan");
    assert_eq!(codes[0]["used_at"], Value::Null);

    // WeCom redelivers (re-encrypted, new signature): 200, nothing changes.
    for seed in [2, 3] {
        let (status, _) = d.post_event(&c, &add, seed).await;
        assert_eq!(status, 200);
    }
    assert_eq!(p.count(created).await, 1);
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_callback_events").await,
        1
    );
    assert_eq!(p.count("SELECT count(*) FROM contacts").await, 1);

    // The customer also adds lisi (salesperson s2): the latest relationship
    // decides the owner, and contact_created is logged again for the
    // existing contact with the new welcome code.
    let add2 = contact_event(
        "add_external_contact",
        "lisi",
        "wmAAA",
        t + 1,
        "<WelcomeCode><![CDATA[WC-2]]></WelcomeCode>",
    );
    assert_eq!(d.post_event(&c, &add2, 4).await.0, 200);
    assert_eq!(p.count(created).await, 2);
    let rows = p
        .rows("SELECT owner, attrs FROM contacts WHERE id = 'wmAAA'")
        .await;
    assert_eq!(rows[0]["owner"], "s2");
    let attrs: Value = serde_json::from_str(rows[0]["attrs"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["wecom_staff_userid"], "lisi");
    assert_eq!(
        attrs["wecom_state"], "qr-spring",
        "kept: this add had no State"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_welcome_codes WHERE welcome_code = 'WC-2' AND staff_userid = 'lisi'")
            .await,
        1
    );
    // A staff member who is no salesperson: the owner stays.
    let add3 = contact_event("add_half_external_contact", "stranger", "wmAAA", t + 2, "");
    assert_eq!(d.post_event(&c, &add3, 5).await.0, 200);
    let rows = p
        .rows("SELECT owner, attrs FROM contacts WHERE id = 'wmAAA'")
        .await;
    assert_eq!(rows[0]["owner"], "s2");
    assert!(rows[0]["attrs"].as_str().unwrap().contains("\"stranger\""));

    // A contact created through the API with this WeCom id is the one updated.
    p.exec("INSERT INTO contacts (id, name, wecom_external_userid, created_at, updated_at) VALUES ('crm-7', 'Ada', 'wmBBB', 1, 1)")
        .await;
    let add4 = contact_event("add_external_contact", "zhangsan", "wmBBB", t, "");
    assert_eq!(d.post_event(&c, &add4, 6).await.0, 200);
    assert_eq!(p.count("SELECT count(*) FROM contacts").await, 2);
    let rows = p
        .rows("SELECT owner FROM contacts WHERE id = 'crm-7'")
        .await;
    assert_eq!(rows[0]["owner"], "s1");
    assert_eq!(
        p.count(
            "SELECT count(*) FROM event_log WHERE kind = 'contact_created' AND contact_id = 'crm-7'"
        )
        .await,
        2,
        "the INSERT's, and this add's"
    );

    // edit_external_contact touches the contact.
    let before = p
        .count("SELECT updated_at FROM contacts WHERE id = 'crm-7'")
        .await;
    let edit = contact_event("edit_external_contact", "zhangsan", "wmBBB", t + 3, "");
    assert_eq!(d.post_event(&c, &edit, 7).await.0, 200);
    assert!(
        p.count("SELECT updated_at FROM contacts WHERE id = 'crm-7'")
            .await
            > before
    );

    // zhangsan deletes the customer (del_external_contact: the staff member
    // deleted the customer): an event with the Source, a mark (no other
    // relationship stands), last_active_at kept.
    let del = contact_event("del_external_contact", "zhangsan", "wmBBB", t + 4, "");
    assert_eq!(d.post_event(&c, &del, 8).await.0, 200);
    assert_eq!(d.post_event(&c, &del, 9).await.0, 200, "redelivered");
    let ev = p
        .rows("SELECT contact_id, properties FROM events WHERE name = 'wecom_contact_deleted'")
        .await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["contact_id"], "crm-7");
    let props: Value = serde_json::from_str(ev[0]["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props["user_id"], "zhangsan");
    let rows = p
        .rows("SELECT last_active_at, attrs FROM contacts WHERE id = 'crm-7'")
        .await;
    assert_eq!(rows[0]["last_active_at"], Value::Null);
    assert!(
        rows[0]["attrs"]
            .as_str()
            .unwrap()
            .contains("\"wecom_deleted_by\":\"staff\"")
    );
    assert_eq!(props["source"], Value::Null);
    assert_eq!(
        p.count(
            "SELECT count(*) FROM event_log WHERE kind = 'event' AND name = 'wecom_contact_deleted'"
        )
        .await,
        1
    );
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_relationships WHERE external_userid = 'wmBBB' AND userid = 'zhangsan' AND standing = 0 AND ended_by = 'staff'")
            .await,
        1
    );
    // The customer wmAAA deletes lisi (del_follow_user): recorded, not
    // marked, since zhangsan and "stranger" still stand.
    let del2 = contact_event("del_follow_user", "lisi", "wmAAA", t + 5, "");
    assert_eq!(d.post_event(&c, &del2, 10).await.0, 200);
    assert_eq!(
        p.count("SELECT count(*) FROM events WHERE name = 'wecom_follow_user_deleted' AND contact_id = 'wmAAA'")
            .await,
        1
    );
    assert!(
        !p.rows("SELECT attrs FROM contacts WHERE id = 'wmAAA'")
            .await[0]["attrs"]
            .as_str()
            .unwrap()
            .contains("wecom_deleted_by")
    );
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_relationships WHERE external_userid = 'wmAAA' AND standing = 1")
            .await,
        2
    );
    // Then the customer deletes the other two: no relationship stands, the
    // contact is marked deleted by the customer.
    for (i, who) in ["zhangsan", "stranger"].iter().enumerate() {
        let del = contact_event("del_follow_user", who, "wmAAA", t + 6 + i as i64, "");
        assert_eq!(d.post_event(&c, &del, 20 + i as u8).await.0, 200);
    }
    assert!(
        p.rows("SELECT attrs FROM contacts WHERE id = 'wmAAA'")
            .await[0]["attrs"]
            .as_str()
            .unwrap()
            .contains("\"wecom_deleted_by\":\"customer\"")
    );
    assert_eq!(
        p.count("SELECT count(*) FROM events WHERE name = 'wecom_follow_user_deleted' AND contact_id = 'wmAAA'")
            .await,
        3
    );
    // A deletion for a contact nurture never saw creates nothing.
    let del3 = contact_event("del_external_contact", "zhangsan", "wmNEW", t, "");
    assert_eq!(d.post_event(&c, &del3, 11).await.0, 200);
    assert_eq!(p.count("SELECT count(*) FROM contacts").await, 2);

    // The corp's tag library and unknown events: 200, recorded.
    let tag = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{t}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><Id><![CDATA[etTAG1]]></Id>\
         <TagType><![CDATA[tag]]></TagType><ChangeType><![CDATA[delete]]></ChangeType></xml>"
    );
    assert_eq!(d.post_event(&c, &tag, 12).await.0, 200);
    let unknown = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><CreateTime>{t}</CreateTime><MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>wrOg</ChatId><ChangeType>create</ChangeType></xml>"
    );
    assert_eq!(d.post_event(&c, &unknown, 13).await.0, 200);
    assert_eq!(d.post_event(&c, "not xml at all", 14).await.0, 200);
    let rec = p
        .rows("SELECT tag_id, outcome, detail FROM wecom_callback_events WHERE event = 'change_external_tag'")
        .await;
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0]["tag_id"], "etTAG1");
    assert_eq!(rec[0]["outcome"], "recorded");
    assert!(
        rec[0]["detail"]
            .as_str()
            .unwrap()
            .contains("\"tag_type\":\"tag\"")
    );
    assert_eq!(p.count("SELECT count(*) FROM contacts").await, 2);
    let log = p.log();
    assert!(log.contains("the corp's tag library changed"), "{log}");
    // The welcome codes are never logged.
    assert!(!log.contains("WC-1") && !log.contains("WC-2"), "{log}");
    d.stop(&p);

    // The plan skips WeCom sends to both contacts as no_address: no
    // relationship of theirs stands (the customer deleted every follow-user
    // of wmAAA; the only follow-user of crm-7 deleted them).
    p.write(
        "workflows/nudge.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: wecom, template: hi }\n",
    )
    .write("templates/hi.hbs", "Hi\n");
    let plan = p.ok(&["dry-run", "--all-contacts", "--format", "jsonl"]);
    for id in ["wmAAA", "crm-7"] {
        let row: Value = plan
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["contact_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in the plan:\n{plan}"));
        assert_eq!(row["action"], "skip", "{row}");
        assert_eq!(row["reason"], "no_address", "{row}");
    }
}

/// Hostile and malformed requests get a 4xx and the daemon keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_and_the_daemon_keeps_serving() {
    let p = Project::new(&settings("http://127.0.0.1:9", true));
    let d = Running::start(&p, &env());
    let c = crypto();
    let inner = contact_event("add_external_contact", "zhangsan", "wmZ", 1, "");
    let (query, body) = sealed(&c, &inner, 1);
    let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let enc = nurture::api::wecom_crypto::extract_encrypt(&body).unwrap();

    let sign = |e: &str| c.signature("1", "2", e);
    let signed = |e: &str| -> Vec<(&'static str, String)> {
        vec![
            ("msg_signature", sign(e)),
            ("timestamp", "1".into()),
            ("nonce", "2".into()),
        ]
    };
    // (query, body, expected status)
    type Case = (Vec<(&'static str, String)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        // No Encrypt element / empty / unterminated CDATA / not XML / not UTF-8.
        (
            signed("x"),
            b"<xml><ToUserName>x</ToUserName></xml>".to_vec(),
            400,
        ),
        (signed(""), b"<xml><Encrypt></Encrypt></xml>".to_vec(), 400),
        (
            signed("x"),
            b"<xml><Encrypt><![CDATA[abc</Encrypt></xml>".to_vec(),
            400,
        ),
        (signed("x"), b"".to_vec(), 400),
        (signed("x"), vec![0xff, 0xfe, 0x00, 0x3c], 400),
        (
            signed("x"),
            "<xml><Encrypt>&bogus;</Encrypt></xml>".into(),
            400,
        ),
        // A body that is not signed: 401.
        (
            query.clone(),
            body.replace("<Encrypt><![CDATA[", "<Encrypt><![CDATA[A")
                .into_bytes(),
            401,
        ),
        // Properly signed garbage ciphertexts: 400.
        (
            signed("!!!!"),
            b"<xml><Encrypt>!!!!</Encrypt></xml>".to_vec(),
            400,
        ),
        (
            signed("AAAA"),
            b"<xml><Encrypt>AAAA</Encrypt></xml>".to_vec(),
            400,
        ),
        (
            signed(&enc[..enc.len() - 24]),
            format!("<xml><Encrypt>{}</Encrypt></xml>", &enc[..enc.len() - 24]).into_bytes(),
            400,
        ),
        // Deeply nested / huge element names.
        (signed("x"), "<xml>".repeat(50_000).into_bytes(), 400),
    ];
    for (i, (query, body, want)) in cases.into_iter().enumerate() {
        let q2: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, text) = d.post_raw(&q2, body).await;
        assert_eq!(status, want, "case {i}: {text}");
    }
    // Missing query parameters.
    let (status, _, _) = d.post_raw(&q[..2], body.clone().into_bytes()).await;
    assert_eq!(status, 400);
    // Over the API's body limit: 413, answered from the Content-Length
    // while the body is still being sent (so the client may instead see the
    // connection closed under its upload).
    // (Its own client: the server closes that connection, which must not go
    // back to the shared pool.)
    let over = reqwest::Client::new()
        .post(with_query(&d.url(PATH), &q))
        .body(vec![b'a'; 3 << 20])
        .send()
        .await;
    if let Ok(r) = over {
        assert_eq!(r.status().as_u16(), 413);
    }
    // Still serving, and the genuine request works.
    let (status, _, _) = d.post_raw(&q, body.into_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(
        p.count("SELECT count(*) FROM contacts WHERE id = 'wmZ'")
            .await,
        1
    );
    d.stop(&p);
}

/// Without token_env / aes_key_env the route is 404; `validate` reports
/// half-configured callbacks and bad keys without printing values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_callback_settings_the_route_is_404_and_validate_reports_problems() {
    let p = Project::new(&settings("http://127.0.0.1:9", false));
    let d = Running::start(&p, &env());
    let (status, _, body) = d.get(&[("echostr", "x")]).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not configured"));
    let (status, _, _) = d.post_raw(&[], b"<xml/>".to_vec()).await;
    assert_eq!(status, 404);
    d.stop(&p);

    let half = settings("http://127.0.0.1:9", false)
        .replace("base_url:", "token_env: WECOM_CB_TOKEN, base_url:");
    let p = Project::new(&half);
    let mut cmd = p.command();
    for (k, v) in env() {
        cmd.env(k, v);
    }
    let out = cmd.arg("validate").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("token_env and aes_key_env go together"),
        "{err}"
    );

    let p = Project::new(&settings("http://127.0.0.1:9", true));
    let mut cmd = p.command();
    for (k, v) in env() {
        cmd.env(k, v);
    }
    cmd.env("WECOM_CB_AES_KEY", "not-a-real-key-but-secret-ish");
    let out = cmd.arg("validate").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("WECOM_CB_AES_KEY (aes_key_env) is not an EncodingAESKey"),
        "{err}"
    );
    assert!(!err.contains("not-a-real-key"), "{err}");

    // Fully configured: validate is happy with the callback.
    let mut cmd = p.command();
    for (k, v) in env() {
        cmd.env(k, v);
    }
    let out = cmd.arg("validate").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("aes_key_env") && !err.contains("token_env"),
        "{err}"
    );
}

/// The key test of the issue: a new external contact → `contact_created`
/// → the workflow's send on the wecom channel → `send_welcome_msg` with the
/// callback's welcome code and the rendered text, inside WeCom's 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_external_contact_gets_the_welcome_message() {
    let (base_url, fake) = WecomFake::start().await;
    let p = Project::new(&settings(&base_url, true));
    p.write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: wecom, template: welcome }\n",
    )
    .write("templates/welcome.hbs", "Hi, I am {{owner.name}}. Welcome!")
    .write(
        "workflows/nudge.yaml",
        "trigger: { event: { name: ping } }\nsteps:\n  - send: { channel: wecom, template: welcome }\n",
    );
    let d = Running::start(&p, &env());
    let c = crypto();

    let t0 = Instant::now();
    let add = contact_event(
        "add_external_contact",
        "zhangsan",
        "wmE2E",
        chrono::Utc::now().timestamp(),
        "<State><![CDATA[booth-12]]></State><WelcomeCode><![CDATA[WELCOMECODE-E2E]]></WelcomeCode>",
    );
    let (status, _) = d.post_event(&c, &add, 1).await;
    assert_eq!(status, 200);
    let sent = fake.wait_for(SEND_WELCOME, 1, 15 * SECS).await;
    let took = t0.elapsed();
    assert!(
        took < 20 * SECS,
        "the welcome took {took:?}: WeCom's code is good for 20 s"
    );
    assert_eq!(sent[0]["welcome_code"], "WELCOMECODE-E2E");
    assert_eq!(sent[0]["text"]["content"], "Hi, I am Wang Fang. Welcome!");
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE contact_id = 'wmE2E' AND channel = 'wecom' AND status = 'sent'",
        1,
        10 * SECS,
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_welcome_codes WHERE contact_id = 'wmE2E' AND used_at IS NOT NULL")
            .await,
        1,
        "the code is used once"
    );
    // A redelivery of the same event sends nothing more.
    assert_eq!(d.post_event(&c, &add, 2).await.0, 200);
    p.settled(10 * SECS).await;
    assert_eq!(fake.count(SEND_WELCOME), 1);
    assert_eq!(
        fake.count(ADD_MSG_TEMPLATE),
        0,
        "no mass-message task for a welcome"
    );

    // The customer deletes the salesperson; a later send on WeCom is
    // skipped (no_address) instead of creating a task that cannot arrive.
    let del = contact_event(
        "del_external_contact",
        "zhangsan",
        "wmE2E",
        chrono::Utc::now().timestamp() + 1,
        "",
    );
    assert_eq!(d.post_event(&c, &del, 3).await.0, 200);
    let r = d
        .client
        .post(d.url("/v1/events"))
        .bearer_auth(support::daemon::TOKEN)
        .json(&serde_json::json!({"contact_id": "wmE2E", "name": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    p.wait_count(
        "SELECT count(*) FROM enrollment_steps s JOIN enrollments e ON e.id = s.enrollment_id \
         WHERE e.workflow = 'nudge' AND e.contact_id = 'wmE2E' AND s.detail = 'no_address'",
        1,
        10 * SECS,
    )
    .await;
    assert_eq!(fake.count(ADD_MSG_TEMPLATE), 0);
    d.stop(&p);
}

// ---------------------------------------------------------------------------
// In process: random requests never panic the handler.

struct InProcess {
    base: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _shutdown: CancellationToken,
}

fn in_process() -> &'static InProcess {
    static SERVER: std::sync::OnceLock<InProcess> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::parse_str(
            &dir.path().join("nurture.yaml"),
            &settings("http://127.0.0.1:9", true),
        )
        .unwrap();
        let env: HashMap<String, String> = env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let shutdown = CancellationToken::new();
        let url = format!("sqlite://{}", dir.path().join("nurture.db").display());
        let base = rt.block_on(async {
            let store = Store::open(&url).await.unwrap();
            let wake = Arc::new(Notify::new());
            let api = ApiState {
                store: store.clone(),
                token: Some("t".into()),
                wake: wake.clone(),
                project: None,
                channel_names: None,
                unsubscribe_keys: Default::default(),
                funnel_read: Default::default(),
            };
            let cb = CallbackState {
                store,
                wake,
                tag_sync: Arc::new(Notify::new()),
                marks_queued: Default::default(),
                settings: SettingsSource::Fixed(Arc::new(settings)),
                env: Arc::new(move |name| env.get(name).cloned()),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(serve_with_wecom(listener, api, Some(cb), shutdown.clone()));
            base
        });
        InProcess {
            base,
            rt,
            client: reqwest::Client::new(),
            _dir: dir,
            _shutdown: shutdown,
        }
    })
}

impl InProcess {
    fn post(&self, query: &[(&str, &str)], body: Vec<u8>) -> u16 {
        self.rt.block_on(async {
            self.client
                .post(with_query(&format!("{}{PATH}", self.base), query))
                .body(body)
                .send()
                .await
                .expect("the server answers")
                .status()
                .as_u16()
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Arbitrary bodies, unsigned and signed; arbitrary inner XML, validly
    /// encrypted and signed: always an answer, never a 5xx (a panic would
    /// reset the connection or give 500).
    #[test]
    fn random_requests_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        text in "(<xml>|<Encrypt>|</Encrypt>|<!\\[CDATA\\[|\\]\\]>|[A-Za-z0-9+/=&;#<>]){0,60}",
        inner in "(<xml>|</xml>|<Event>change_external_contact</Event>|<ChangeType>(add_external_contact|del_external_contact|edit_external_contact|x)</ChangeType>|<UserID>[a-z]{0,3}</UserID>|<ExternalUserID>[a-z\\x00-\\x1f]{0,4}</ExternalUserID>|<CreateTime>[0-9]{0,12}</CreateTime>|<WelcomeCode>.{0,4}</WelcomeCode>|<!\\[CDATA\\[|\\]\\]>|&amp;|&#x0;|.){0,30}",
        seed in any::<u8>(),
    ) {
        let s = in_process();
        let c = crypto();
        // Unsigned random bytes.
        let st = s.post(&[("msg_signature", "00"), ("timestamp", "1"), ("nonce", "2")], body.clone());
        prop_assert!((400..500).contains(&st), "random body: {st}");
        // Signed random text as the Encrypt element.
        let sig = c.signature("1", "2", text.trim());
        let st = s.post(
            &[("msg_signature", &sig), ("timestamp", "1"), ("nonce", "2")],
            format!("<xml><Encrypt>{text}</Encrypt></xml>").into_bytes(),
        );
        prop_assert!(st < 500, "signed text: {st}");
        // Random inner XML, genuinely encrypted and signed: accepted (200).
        let (query, sealed_body) = sealed(&c, &inner, seed);
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let st = s.post(&q, sealed_body.into_bytes());
        prop_assert_eq!(st, 200, "inner {:?}", inner);
    }
}

/// A genuinely signed event whose timestamp is more than 10 minutes from
/// the clock (a captured request replayed later) is refused; within the
/// window it is accepted.
#[test]
fn events_with_a_stale_timestamp_are_refused() {
    let s = in_process();
    let c = crypto();
    let inner = "<xml><Event>change_external_tag</Event><ChangeType>create</ChangeType></xml>";
    let now = chrono::Utc::now().timestamp();
    for (age, want) in [
        (-11 * 60, 403),
        (11 * 60, 403),
        (5 * 60, 200),
        (-5 * 60, 200),
    ] {
        let enc = c.encrypt_with_random(inner, [age as u8; 16]);
        let ts = (now - age).to_string();
        let nonce = format!("stale{age}");
        let sig = c.signature(&ts, &nonce, &enc);
        let body = format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
        let st = s.post(
            &[
                ("msg_signature", &sig),
                ("timestamp", &ts),
                ("nonce", &nonce),
            ],
            body.into_bytes(),
        );
        assert_eq!(st, want, "timestamp {age} s old");
    }
    let enc = c.encrypt_with_random(inner, [1; 16]);
    let sig = c.signature("not-a-number", "n", &enc);
    let body = format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
    let st = s.post(
        &[
            ("msg_signature", &sig),
            ("timestamp", "not-a-number"),
            ("nonce", "n"),
        ],
        body.into_bytes(),
    );
    assert_eq!(st, 403);
}

/// An existing contact added again (by another salesperson, with a new
/// welcome code) is a `contact_created` for the workflows: with
/// `entry: every_time` it enters again and gets the new welcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_added_again_is_welcomed_again_when_the_entry_policy_allows() {
    let (base_url, fake) = WecomFake::start().await;
    let p = Project::new(&settings(&base_url, true));
    p.write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\nentry: every_time\nsteps:\n  - send: { channel: wecom, template: welcome }\n",
    )
    .write("templates/welcome.hbs", "Hello from {{owner.name}}");
    let d = Running::start(&p, &env());
    let c = crypto();
    let t = chrono::Utc::now().timestamp();
    let first = contact_event(
        "add_external_contact",
        "zhangsan",
        "wmTwice",
        t,
        "<WelcomeCode><![CDATA[CODE-A]]></WelcomeCode>",
    );
    assert_eq!(d.post_event(&c, &first, 1).await.0, 200);
    fake.wait_for(SEND_WELCOME, 1, 15 * SECS).await;
    let second = contact_event(
        "add_external_contact",
        "lisi",
        "wmTwice",
        t + 1,
        "<WelcomeCode><![CDATA[CODE-B]]></WelcomeCode>",
    );
    assert_eq!(d.post_event(&c, &second, 2).await.0, 200);
    let sent = fake.wait_for(SEND_WELCOME, 2, 15 * SECS).await;
    assert_eq!(sent[0]["welcome_code"], "CODE-A");
    assert_eq!(sent[0]["text"]["content"], "Hello from Wang Fang");
    assert_eq!(sent[1]["welcome_code"], "CODE-B");
    assert_eq!(sent[1]["text"]["content"], "Hello from Li Lei");
    assert_eq!(
        p.count("SELECT count(*) FROM enrollments WHERE contact_id = 'wmTwice'")
            .await,
        2
    );
    d.stop(&p);
}

// ---------------------------------------------------------------------------
// Per-contact WeCom tags.

/// The key test of the tag sync: a salesperson tags the customer `vip` in
/// WeCom → `edit_external_contact` (answered at once; WeCom is asked after)
/// → the contact gains `vip` → the `tag_added: vip` workflow sends. Removing
/// `vip` in WeCom removes it; a tag set in nurture is never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_tag_edits_become_nurture_tags_and_trigger_workflows() {
    let (base_url, fake) = WecomFake::start().await;
    let p = Project::new(&settings(&base_url, true));
    p.write(
        "workflows/vip.yaml",
        "trigger: { tag_added: { tag: vip } }\nsteps:\n  - send: { channel: wecom, template: vip }\n",
    )
    .write("templates/vip.hbs", "Welcome to VIP, from {{owner.name}}");
    let d = Running::start(&p, &env());
    let c = crypto();
    let t = chrono::Utc::now().timestamp();
    let tags_of = "SELECT count(*) FROM contact_tags WHERE contact_id = 'wmTag' AND tag = ";

    let add = contact_event("add_external_contact", "zhangsan", "wmTag", t, "");
    assert_eq!(d.post_event(&c, &add, 1).await.0, 200);
    // A tag nurture set (through the API).
    let r = d
        .client
        .post(d.url("/v1/contacts/wmTag/tags"))
        .bearer_auth(support::daemon::TOKEN)
        .json(&serde_json::json!({"add": ["manual"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    // zhangsan tags the customer vip (and a personal note); lisi has a tag too.
    fake.set_follow_user("wmTag", "zhangsan", &[("vip", 1), ("my note", 2)]);
    fake.set_follow_user("wmTag", "lisi", &[("lead", 1)]);
    // WeCom is slow: the callback's answer does not wait for it.
    fake.set_get_delay(Some(6 * SECS));
    let edit = contact_event("edit_external_contact", "zhangsan", "wmTag", t + 1, "");
    let t0 = Instant::now();
    assert_eq!(d.post_event(&c, &edit, 2).await.0, 200);
    assert!(
        t0.elapsed() < 5 * SECS,
        "the callback waited for WeCom: {:?}",
        t0.elapsed()
    );
    // The request is durable before anything is fetched.
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_tag_sync WHERE contact_id = 'wmTag' AND staff_userid = 'zhangsan' AND channel = 'wecom'")
            .await,
        1
    );
    p.wait_count(&format!("{tags_of} 'vip'"), 1, 30 * SECS)
        .await;
    // The tag_added workflow sends: a mass task from the contact's salesperson.
    let sent = fake.wait_for(ADD_MSG_TEMPLATE, 1, 20 * SECS).await;
    assert_eq!(sent[0]["text"]["content"], "Welcome to VIP, from Wang Fang");
    assert_eq!(sent[0]["sender"], "zhangsan");
    assert_eq!(sent[0]["external_userid"], serde_json::json!(["wmTag"]));
    let call = &fake.calls(EXTERNALCONTACT_GET)[0];
    assert_eq!(call.method, reqwest::Method::GET);
    assert_eq!(
        call.query.get("external_userid").map(String::as_str),
        Some("wmTag")
    );
    assert!(call.token().is_some_and(|t| t.starts_with("tok-")));
    // Personal tags and other salespeople's tags are not taken from this edit.
    assert_eq!(p.count(&format!("{tags_of} 'my note'")).await, 0);
    assert_eq!(p.count(&format!("{tags_of} 'lead'")).await, 0);
    assert_eq!(p.count(&format!("{tags_of} 'manual'")).await, 1);
    p.wait_count("SELECT count(*) FROM wecom_tag_sync", 0, 10 * SECS)
        .await;

    // zhangsan removes vip: the tag goes, nurture's tag stays.
    fake.set_get_delay(None);
    fake.set_follow_user("wmTag", "zhangsan", &[("my note", 2)]);
    let edit2 = contact_event("edit_external_contact", "zhangsan", "wmTag", t + 2, "");
    assert_eq!(d.post_event(&c, &edit2, 3).await.0, 200);
    p.wait_count(&format!("{tags_of} 'vip'"), 0, 30 * SECS)
        .await;
    assert_eq!(p.count(&format!("{tags_of} 'manual'")).await, 1);
    assert_eq!(
        p.count("SELECT count(*) FROM event_log WHERE kind = 'tag_removed' AND name = 'vip' AND contact_id = 'wmTag'")
            .await,
        1
    );

    // WeCom gets a tag of the name nurture set, then loses it: nurture's
    // tag is still nurture's and stays.
    fake.set_follow_user("wmTag", "zhangsan", &[("manual", 1)]);
    let edit3 = contact_event("edit_external_contact", "zhangsan", "wmTag", t + 3, "");
    assert_eq!(d.post_event(&c, &edit3, 4).await.0, 200);
    fake.wait_for(EXTERNALCONTACT_GET, 3, 20 * SECS).await;
    p.wait_count("SELECT count(*) FROM wecom_tag_sync", 0, 20 * SECS)
        .await;
    fake.set_follow_user("wmTag", "zhangsan", &[]);
    let edit4 = contact_event("edit_external_contact", "zhangsan", "wmTag", t + 4, "");
    assert_eq!(d.post_event(&c, &edit4, 5).await.0, 200);
    fake.wait_for(EXTERNALCONTACT_GET, 4, 20 * SECS).await;
    p.wait_count("SELECT count(*) FROM wecom_tag_sync", 0, 20 * SECS)
        .await;
    assert_eq!(p.count(&format!("{tags_of} 'manual'")).await, 1);
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_contact_tags").await,
        0,
        "nothing WeCom-sourced is left"
    );
    // The vip workflow ran once (entry: once), and the redelivered edit
    // changes nothing.
    assert_eq!(d.post_event(&c, &edit4, 6).await.0, 200);
    p.settled(10 * SECS).await;
    assert_eq!(fake.count(EXTERNALCONTACT_GET), 4);
    assert_eq!(fake.count(ADD_MSG_TEMPLATE), 1);
    let log = p.log();
    assert!(log.contains("wecom tags synced"), "{log}");
    d.stop(&p);
}

/// An in-process store with the test settings pointed at `base_url`.
struct SyncSetup {
    store: Store,
    settings: Settings,
    env: HashMap<String, String>,
    /// The rounds' token caches (the daemon's tag sync keeps one too).
    tokens: nurture::channels::wecom::token::TokenCaches,
    _dir: tempfile::TempDir,
}

impl SyncSetup {
    async fn new(base_url: &str) -> SyncSetup {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let settings =
            Settings::parse_str(&dir.path().join("nurture.yaml"), &settings(base_url, true))
                .unwrap();
        let url = format!("sqlite://{}", dir.path().join("nurture.db").display());
        SyncSetup {
            store: Store::open(&url).await.unwrap(),
            settings,
            env: env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tokens: Default::default(),
            _dir: dir,
        }
    }

    async fn apply(&self, change: &str, user: &str, ext: &str, ct: i64, c: ContactChange) {
        let key = CallbackKey {
            event: "change_external_contact".into(),
            change_type: change.into(),
            user_id: user.into(),
            external_userid: ext.into(),
            tag_id: String::new(),
            create_time: ct.to_string(),
        };
        let now = chrono::Utc::now();
        self.store
            .apply_wecom_callback(&key, &Value::Null, &c, now, now)
            .await
            .unwrap();
    }

    /// The customer `ext` added by `user`, then edited by `user` (queued on
    /// `channel`).
    async fn added_and_edited(&self, ext: &str, user: &str, channel: &str, ct: i64) {
        let added = ContactChange::Added {
            external_userid: ext.into(),
            staff_userid: user.into(),
            owner: None,
            state: None,
            welcome_code: None,
            via: None,
        };
        self.apply("add_external_contact", user, ext, ct, added)
            .await;
        self.edited(ext, user, channel, ct + 1).await;
    }

    async fn edited(&self, ext: &str, user: &str, channel: &str, ct: i64) {
        let edited = ContactChange::Edited {
            external_userid: ext.into(),
            staff_userid: user.into(),
            channel: channel.into(),
        };
        self.apply("edit_external_contact", user, ext, ct, edited)
            .await;
    }

    async fn sync(&self) -> Round {
        let env = self.env.clone();
        sync_due(
            &self.store,
            &self.settings,
            &move |n| env.get(n).cloned(),
            &self.tokens,
        )
        .await
        .unwrap()
    }

    async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self.store.sqlite_pool().unwrap())
            .await
            .unwrap();
    }

    /// The queued row of `ext`: (attempts, next_attempt_at, last_error).
    async fn row(&self, ext: &str) -> Option<(i64, i64, Option<String>)> {
        sqlx::query_as(
            "SELECT attempts, next_attempt_at, last_error FROM wecom_tag_sync WHERE external_userid = $1",
        )
        .bind(ext)
        .fetch_optional(self.store.sqlite_pool().unwrap())
        .await
        .unwrap()
    }

    async fn tags(&self, id: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT tag FROM contact_tags WHERE contact_id = $1 ORDER BY tag")
            .bind(id)
            .fetch_all(self.store.sqlite_pool().unwrap())
            .await
            .unwrap()
    }
}

fn round(applied: usize, postponed: usize, dropped: usize, changed: bool) -> Round {
    Round {
        applied,
        postponed,
        dropped,
        changed,
        // Every applied sync asks the marks worker to look (the customer's
        // relationships may take nurture's marks).
        marks_queued: applied > 0,
    }
}

/// The worker's failure paths against the fake: no token and WeCom busy are
/// retried later with a growing wait (the row stays), an expired token is
/// refetched, permanent errcodes drop the row, pages are all read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_sync_retries_failures_and_drops_permanent_errors() {
    let (base_url, fake) = WecomFake::start().await;
    let s = SyncSetup::new(&base_url).await;
    fake.set_follow_user("wmS", "zhangsan", &[("vip", 1)]);
    s.added_and_edited("wmS", "zhangsan", "wecom", 100).await;
    let now_ms = || chrono::Utc::now().timestamp_millis();

    // gettoken fails (even with a wrong secret): retried later, not dropped.
    fake.script(GETTOKEN, Answer::errcode(40001, "invalid credential"));
    assert_eq!(s.sync().await, round(0, 1, 0, false));
    let (attempts, next, err) = s.row("wmS").await.unwrap();
    assert_eq!(attempts, 1);
    assert!(next > now_ms() + 3_000, "backs off");
    assert!(err.unwrap().contains("no access token"));
    assert_eq!(fake.count(EXTERNALCONTACT_GET), 0);
    // Not due yet: nothing happens.
    assert_eq!(s.sync().await, round(0, 0, 0, false));

    // WeCom busy (-1), then a transport error: retried, the wait grows.
    s.exec("UPDATE wecom_tag_sync SET next_attempt_at = 0")
        .await;
    fake.script(EXTERNALCONTACT_GET, Answer::errcode(-1, "system busy"));
    assert_eq!(s.sync().await, round(0, 1, 0, false));
    let (attempts, next2, err) = s.row("wmS").await.unwrap();
    assert_eq!(attempts, 2);
    assert!(err.unwrap().contains("errcode -1"));
    assert!(next2 > now_ms() + 8_000, "the second wait is longer");
    s.exec("UPDATE wecom_tag_sync SET next_attempt_at = 0")
        .await;
    fake.script(EXTERNALCONTACT_GET, Answer::Status(502));
    assert_eq!(s.sync().await, round(0, 1, 0, false));
    // 45009 waits at least a minute.
    s.exec("UPDATE wecom_tag_sync SET next_attempt_at = 0")
        .await;
    fake.script(
        EXTERNALCONTACT_GET,
        Answer::errcode(45009, "api freq out of limit"),
    );
    assert_eq!(s.sync().await, round(0, 1, 0, false));
    let (_, next, _) = s.row("wmS").await.unwrap();
    assert!(next >= now_ms() + 59_000);
    assert!(s.tags("wmS").await.is_empty());

    // The token expired: refetched once, and the sync goes through.
    s.exec("UPDATE wecom_tag_sync SET next_attempt_at = 0")
        .await;
    let gettokens = fake.count(GETTOKEN);
    fake.expire_tokens();
    assert_eq!(s.sync().await, round(1, 0, 0, true));
    assert_eq!(fake.count(GETTOKEN), gettokens + 1);
    assert_eq!(s.tags("wmS").await, vec!["vip"]);
    assert!(s.row("wmS").await.is_none());

    // Permanent errcodes drop the row: no relationship, invalid id.
    for (code, msg) in [
        (84061, "not external contact"),
        (40096, "invalid external userid"),
    ] {
        s.edited("wmS", "zhangsan", "wecom", 200 + code).await;
        fake.script(EXTERNALCONTACT_GET, Answer::errcode(code, msg));
        assert_eq!(s.sync().await, round(0, 0, 1, false), "errcode {code}");
        assert!(s.row("wmS").await.is_none());
    }
    assert_eq!(
        s.tags("wmS").await,
        vec!["vip"],
        "a failed sync changes no tag"
    );

    // Too many failures: given up.
    s.edited("wmS", "zhangsan", "wecom", 300).await;
    s.exec(&format!(
        "UPDATE wecom_tag_sync SET attempts = {}",
        MAX_ATTEMPTS - 1
    ))
    .await;
    fake.script(EXTERNALCONTACT_GET, Answer::errcode(-1, "system busy"));
    assert_eq!(s.sync().await, round(0, 0, 1, false));
    assert!(s.row("wmS").await.is_none());

    // A channel the settings no longer have: kept and retried.
    s.edited("wmS", "zhangsan", "gone", 400).await;
    assert_eq!(s.sync().await, round(0, 1, 0, false));
    assert!(s.row("wmS").await.unwrap().2.unwrap().contains("\"gone\""));
    s.exec("DELETE FROM wecom_tag_sync").await;

    // Many relationships over several pages: the editor's entry is on the
    // last page, and a tag another salesperson has (page 1) is not removed.
    fake.set_follow_user_page(1);
    fake.set_follow_user("wmP", "lisi", &[("lead", 1)]);
    fake.set_follow_user("wmP", "wangwu", &[]);
    fake.set_follow_user("wmP", "zhangsan", &[("lead", 1), ("gold", 3)]);
    s.added_and_edited("wmP", "zhangsan", "wecom", 500).await;
    let before = fake.count(EXTERNALCONTACT_GET);
    assert_eq!(s.sync().await, round(1, 0, 0, true));
    assert_eq!(fake.count(EXTERNALCONTACT_GET), before + 3, "three pages");
    assert_eq!(s.tags("wmP").await, vec!["gold", "lead"]);
    fake.set_follow_user("wmP", "zhangsan", &[]);
    s.edited("wmP", "zhangsan", "wecom", 600).await;
    assert_eq!(s.sync().await, round(1, 0, 0, true));
    assert_eq!(s.tags("wmP").await, vec!["lead"], "lisi still has lead");
}

/// The sync request is durable: the daemon stops while WeCom has not
/// answered (without waiting for it), the request stays queued, and the next
/// start does the sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_tag_sync_survives_a_restart() {
    let (base_url, fake) = WecomFake::start().await;
    let p = Project::new(&settings(&base_url, true));
    let d = Running::start(&p, &env());
    let c = crypto();
    let t = chrono::Utc::now().timestamp();
    let vip = "SELECT count(*) FROM contact_tags WHERE contact_id = 'wmR' AND tag = 'vip'";
    let add = contact_event("add_external_contact", "zhangsan", "wmR", t, "");
    assert_eq!(d.post_event(&c, &add, 1).await.0, 200);
    fake.set_follow_user("wmR", "zhangsan", &[("vip", 1)]);
    fake.set_get_delay(Some(60 * SECS));
    let edit = contact_event("edit_external_contact", "zhangsan", "wmR", t + 1, "");
    assert_eq!(d.post_event(&c, &edit, 2).await.0, 200);
    // The fetch is in flight when the daemon is told to stop.
    fake.wait_for(EXTERNALCONTACT_GET, 1, 20 * SECS).await;
    d.stop(&p);
    assert_eq!(p.count(vip).await, 0);
    assert_eq!(
        p.count("SELECT count(*) FROM wecom_tag_sync WHERE contact_id = 'wmR'")
            .await,
        1
    );

    fake.set_get_delay(None);
    let d = Running::start(&p, &env());
    p.wait_count(vip, 1, 30 * SECS).await;
    p.wait_count("SELECT count(*) FROM wecom_tag_sync", 0, 10 * SECS)
        .await;
    d.stop(&p);
}

/// Two daemons working the same tag-sync queue claim disjoint sets of due
/// rows: a claimed row is leased (its `next_attempt_at` pushed forward), so
/// only one of them asks WeCom until the lease ends (a daemon that died).
/// Runs on PostgreSQL too under `.ci/with-postgres.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_due_tag_syncs_are_disjoint_until_the_lease_ends() {
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeSet;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&support::db::url_for(dir.path()))
        .await
        .unwrap();
    let db = store.db();
    for i in 0..30 {
        let contact = format!("c{i:02}");
        sqlx::query("INSERT INTO contacts (id, created_at, updated_at) VALUES ($1, 1, 1)")
            .bind(&contact)
            .execute(db)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO wecom_tag_sync (channel, contact_id, staff_userid, external_userid,
                                         requested_at, generation, attempts, next_attempt_at)
             VALUES ('wecom', $1, 'zhangsan', $2, $3, 1, 0, $3)",
        )
        .bind(&contact)
        .bind(format!("wm{i:02}"))
        .bind(1_000 + i as i64)
        .execute(db)
        .await
        .unwrap();
    }
    let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
    let (now, lease_until) = (at(10_000), at(20_000));
    let (a, b) = tokio::join!(
        store.claim_wecom_tag_syncs(now, lease_until, 20),
        store.claim_wecom_tag_syncs(now, lease_until, 20),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids_a: BTreeSet<String> = a.iter().map(|r| r.contact_id.clone()).collect();
    let ids_b: BTreeSet<String> = b.iter().map(|r| r.contact_id.clone()).collect();
    assert!(
        ids_a.is_disjoint(&ids_b),
        "claimed twice: {:?}",
        ids_a.intersection(&ids_b)
    );
    assert_eq!(ids_a.len() + ids_b.len(), 30);
    // Oldest request first within a claim.
    assert!(a.windows(2).all(|w| w[0].contact_id < w[1].contact_id));
    let r = a.iter().chain(&b).find(|r| r.contact_id == "c07").unwrap();
    assert_eq!(
        (r.external_userid.as_str(), r.generation, r.attempts),
        ("wm07", 1, 0)
    );

    // Leased: nobody else gets them before the lease ends...
    let c = store
        .claim_wecom_tag_syncs(at(10_001), lease_until, 500)
        .await
        .unwrap();
    assert!(c.is_empty(), "claimed while leased: {c:?}");
    // ...a failure's postponement sets the real next attempt...
    store
        .postpone_wecom_tag_sync(r, at(10_005), "busy")
        .await
        .unwrap();
    let c = store
        .claim_wecom_tag_syncs(at(10_005), at(20_001), 500)
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].contact_id.as_str(), c[0].attempts), ("c07", 1));
    // ...and a daemon that died leaves the rest to the others after it.
    let c = store
        .claim_wecom_tag_syncs(lease_until, at(50_000), 500)
        .await
        .unwrap();
    assert_eq!(c.len(), 29);
}
