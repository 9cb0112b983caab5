//! Tags go both ways (issue 9, point 11): a workflow's `tag:` step on a
//! contact mirrored from WeCom marks the corp tag on the customer's
//! relationships through the daemon's tag-mark worker, against a fake that
//! enforces mark_tag's and add_corp_tag's rules; reading the marks back (a
//! salesperson's edit makes the tag sync read the customer) makes no tag
//! event, so nothing loops.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::daemon::Project;
use crate::support::wecom_fake::{self, WecomFake, WecomHandle};
use crate::wecom_callback::{Running, contact_event, crypto, env, settings};

const SECS: Duration = Duration::from_secs(1);

/// Polls `cond` until it holds; panics with `what` after `timeout`.
async fn until(p: &Project, what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn project(base_url: &str) -> Project {
    let p = Project::new(&settings(base_url, true));
    p.write(
        "workflows/tag-new.yaml",
        "trigger: { event: { name: tagme } }\nsteps:\n  - tag: { add: [vip, lead] }\n",
    )
    .write(
        "workflows/unvip.yaml",
        "trigger: { event: { name: unvip } }\nsteps:\n  - tag: { remove: [vip] }\n",
    )
    .write(
        "workflows/on-vip.yaml",
        "trigger: { tag_added: { tag: vip } }\nentry: every_time\nsteps:\n  - tag: { add: [vip-seen] }\n",
    );
    p
}

/// Once `n` relationships of `ext` are recorded, posts the `tagme` event.
async fn tag_when_recorded(p: &Project, d: &Running, ext: &str, n: i64) {
    p.wait_count(
        &format!(
            "SELECT count(*) FROM wecom_relationships WHERE external_userid = '{ext}' AND standing = 1"
        ),
        n,
        10 * SECS,
    )
    .await;
    let status = d
        .post_api("/v1/events", json!({"contact_id": ext, "name": "tagme"}))
        .await;
    assert!((200..300).contains(&status), "{status}");
}

fn tags(fake: &WecomHandle, ext: &str, user: &str) -> Vec<String> {
    fake.relationship_tags(ext, user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_steps_mark_corp_tags_and_reading_them_back_does_not_loop() {
    let (base_url, fake) = WecomFake::start().await;
    // vip is already a corp tag (an admin made it); lead is not.
    let vip_id = fake.create_corp_tag("Level", "vip");
    fake.befriend("wmT1", "zhangsan");
    fake.befriend("wmT1", "lisi");
    let p = project(&base_url);
    let d = Running::start(&p, &env());
    let c = crypto();
    let now = d.wait_active(&p, 3).await;
    for (i, user) in ["zhangsan", "lisi"].iter().enumerate() {
        let add = contact_event("add_external_contact", user, "wmT1", now + i as i64, "");
        assert_eq!(d.post_event(&c, &add, i as u8).await.0, 200);
    }
    // Marks go to the relationships standing when the worker runs: the
    // workflow starts once both are recorded.
    tag_when_recorded(&p, &d, "wmT1", 2).await;
    until(&p, "both relationships marked", 20 * SECS, || {
        // vip-seen: on-vip's step, marked too.
        tags(&fake, "wmT1", "zhangsan") == ["lead", "vip", "vip-seen"]
            && tags(&fake, "wmT1", "lisi") == ["lead", "vip", "vip-seen"]
    })
    .await;
    // vip is the admin's tag; lead was made once, in the `nurture` group.
    let lib = fake.corp_tags();
    assert_eq!(
        lib.iter().filter(|t| t.1 == "vip").count(),
        1,
        "no second vip: {lib:?}"
    );
    assert!(
        lib.iter().any(|t| t.0 == "nurture" && t.1 == "lead"),
        "{lib:?}"
    );
    assert_eq!(fake.count(wecom_fake::ADD_CORP_TAG), 2, "lead and vip-seen");
    let marks = fake.requests(wecom_fake::MARK_TAG);
    assert!(
        marks
            .iter()
            .any(|m| m["add_tag"] == json!([vip_id]) && m["userid"] == "lisi"),
        "{marks:?}"
    );
    p.wait_count(
        "SELECT count(*) FROM wecom_tag_marks WHERE contact_id = 'wmT1' AND state = 'done'",
        3,
        10 * SECS,
    )
    .await;

    // A salesperson's edit: the sync reads the marks back. No tag event,
    // so on-vip runs once.
    let edit = contact_event("edit_external_contact", "zhangsan", "wmT1", now + 5, "");
    assert_eq!(d.post_event(&c, &edit, 7).await.0, 200);
    p.wait_count("SELECT count(*) FROM wecom_tag_sync", 0, 10 * SECS)
        .await;
    let gets = fake.count(wecom_fake::EXTERNALCONTACT_GET);
    assert!(gets >= 1);
    assert_eq!(
        p.count("SELECT count(*) FROM event_log WHERE kind = 'tag_added' AND contact_id = 'wmT1' AND name IN ('vip', 'lead')").await,
        2
    );
    p.wait_count(
        "SELECT count(*) FROM contact_tags WHERE contact_id = 'wmT1' AND tag = 'vip-seen'",
        1,
        10 * SECS,
    )
    .await;

    // A workflow removes vip: gone from both relationships, and the read
    // back after another edit does not add it again.
    let status = d
        .post_api("/v1/events", json!({"contact_id": "wmT1", "name": "unvip"}))
        .await;
    assert!((200..300).contains(&status), "{status}");
    until(&p, "vip removed in WeCom", 20 * SECS, || {
        tags(&fake, "wmT1", "zhangsan") == ["lead", "vip-seen"]
            && tags(&fake, "wmT1", "lisi") == ["lead", "vip-seen"]
    })
    .await;
    p.wait_count(
        "SELECT count(*) FROM wecom_tag_marks WHERE contact_id = 'wmT1' AND tag = 'vip' AND action = 'remove' AND state = 'done'",
        1,
        10 * SECS,
    )
    .await;
    let edit = contact_event("edit_external_contact", "lisi", "wmT1", now + 6, "");
    assert_eq!(d.post_event(&c, &edit, 8).await.0, 200);
    p.wait_count("SELECT count(*) FROM wecom_tag_sync", 0, 10 * SECS)
        .await;
    assert_eq!(
        p.count("SELECT count(*) FROM contact_tags WHERE contact_id = 'wmT1' AND tag = 'vip'")
            .await,
        0
    );
    assert_eq!(
        p.count("SELECT count(*) FROM enrollments WHERE workflow = 'on-vip'")
            .await,
        1,
        "no loop"
    );

    // Both ways: salespeople remove lead in WeCom, nurture follows.
    fake.set_follow_user("wmT1", "zhangsan", &[]);
    fake.set_follow_user("wmT1", "lisi", &[]);
    let edit = contact_event("edit_external_contact", "lisi", "wmT1", now + 7, "");
    assert_eq!(d.post_event(&c, &edit, 9).await.0, 200);
    p.wait_count(
        "SELECT count(*) FROM contact_tags WHERE contact_id = 'wmT1' AND tag = 'lead'",
        0,
        10 * SECS,
    )
    .await;
    d.stop(&p);
}

/// Refusals end to end: a relationship WeCom does not have (84061) is
/// skipped, a tag an admin deleted (40068) is made again in the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_marks_are_skipped_or_recovered() {
    let (base_url, fake) = WecomFake::start().await;
    let vip_id = fake.create_corp_tag("Level", "vip");
    fake.befriend("wmR1", "zhangsan");
    let p = Project::new(&settings(&base_url, true));
    p.write(
        "workflows/tag-new.yaml",
        "trigger: { event: { name: tagme } }\nentry: every_time\nsteps:\n  - tag: { add: [vip] }\n",
    );
    let d = Running::start(&p, &env());
    let c = crypto();
    let now = d.wait_active(&p, 1).await;
    // lisi is a follow-user as far as the callback says, not in WeCom.
    let add = contact_event("add_external_contact", "zhangsan", "wmR1", now, "");
    assert_eq!(d.post_event(&c, &add, 1).await.0, 200);
    let add = contact_event("add_external_contact", "lisi", "wmR1", now + 1, "");
    assert_eq!(d.post_event(&c, &add, 2).await.0, 200);
    tag_when_recorded(&p, &d, "wmR1", 2).await;
    p.wait_count(
        "SELECT count(*) FROM wecom_tag_marks WHERE contact_id = 'wmR1' AND state = 'done' AND marked = 'zhangsan'",
        1,
        20 * SECS,
    )
    .await;
    assert_eq!(tags(&fake, "wmR1", "zhangsan"), ["vip"]);
    // The refusal was WeCom's: mark_tag for lisi was tried.
    assert!(
        fake.requests(wecom_fake::MARK_TAG)
            .iter()
            .any(|m| m["userid"] == "lisi")
    );

    // An admin deletes vip; the cached id is refused, nurture makes vip again
    // in its group and marks the next contact with it.
    fake.delete_corp_tag(&vip_id);
    fake.befriend("wmR2", "zhangsan");
    let add = contact_event("add_external_contact", "zhangsan", "wmR2", now + 2, "");
    assert_eq!(d.post_event(&c, &add, 3).await.0, 200);
    tag_when_recorded(&p, &d, "wmR2", 1).await;
    until(&p, "vip marked again", 20 * SECS, || {
        tags(&fake, "wmR2", "zhangsan") == ["vip"]
    })
    .await;
    let lib = fake.corp_tags();
    assert_eq!(
        lib.iter()
            .map(|t| (t.0.as_str(), t.1.as_str()))
            .collect::<Vec<_>>(),
        [("nurture", "vip")]
    );
    d.stop(&p);
}

/// The fake's own rules, over HTTP.
#[tokio::test]
async fn the_fake_enforces_corp_tag_rules() {
    let (base_url, fake) = WecomFake::start().await;
    fake.befriend("wmF", "zhangsan");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let tok: Value = client
        .get(format!(
            "{base_url}/cgi-bin/gettoken?corpid={}&corpsecret={}",
            wecom_fake::CORP_ID,
            wecom_fake::SECRET
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = tok["access_token"].as_str().unwrap().to_string();
    let post = |path: &'static str, body: Value| {
        let url = format!("{base_url}{path}?access_token={tok}");
        let client = client.clone();
        async move {
            let v: Value = client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let code = |v: &Value| v["errcode"].as_i64().unwrap();
    let made = post(
        wecom_fake::ADD_CORP_TAG,
        json!({"group_name": "nurture", "tag": [{"name": "vip"}]}),
    )
    .await;
    assert_eq!(code(&made), 0, "{made}");
    let id = made["tag_group"]["tag"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let gid = made["tag_group"]["group_id"].as_str().unwrap().to_string();
    // A duplicate name in the group, by name or by id.
    let dup = post(
        wecom_fake::ADD_CORP_TAG,
        json!({"group_name": "nurture", "tag": [{"name": "vip"}]}),
    )
    .await;
    assert_eq!(code(&dup), 40071);
    let dup = post(
        wecom_fake::ADD_CORP_TAG,
        json!({"group_id": gid, "tag": [{"name": "vip"}]}),
    )
    .await;
    assert_eq!(code(&dup), 40071);
    let long = post(
        wecom_fake::ADD_CORP_TAG,
        json!({"group_name": "nurture", "tag": [{"name": "x".repeat(31)}]}),
    )
    .await;
    assert_eq!(code(&long), 40072);
    let mark =
        |user: &str, add: Value| json!({"userid": user, "external_userid": "wmF", "add_tag": add});
    assert_eq!(
        code(&post(wecom_fake::MARK_TAG, mark("zhangsan", json!(["et-nope"]))).await),
        40068
    );
    assert_eq!(
        code(&post(wecom_fake::MARK_TAG, mark("lisi", json!([id]))).await),
        84061
    );
    assert_eq!(
        code(
            &post(
                wecom_fake::MARK_TAG,
                json!({"userid": "zhangsan", "external_userid": "wmF"})
            )
            .await
        ),
        40063
    );
    assert_eq!(
        code(&post(wecom_fake::MARK_TAG, mark("zhangsan", json!([id]))).await),
        0
    );
    assert_eq!(fake.relationship_tags("wmF", "zhangsan"), ["vip"]);
    let list = post(wecom_fake::GET_CORP_TAG_LIST, json!({})).await;
    assert_eq!(list["tag_group"][0]["tag"][0]["name"], "vip");
}

/// `dry-run` shows the marks: a tag step on a contact mirrored from WeCom
/// says it marks the corp tags too; on another contact it does not.
#[test]
fn dry_run_shows_which_tag_steps_mark_wecom() {
    let p = Project::new(&settings("http://127.0.0.1:9", true));
    p.write(
        "workflows/tag-new.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - tag: { add: [vip] }\n",
    )
    .write(
        "contacts.csv",
        "id,name,wecom_external_userid\nw1,Wang,wmDry\ne1,Li,\n",
    );
    let mut cmd = p.command();
    for (k, v) in env() {
        cmd.env(k, v);
    }
    assert!(
        cmd.args(["contacts", "import", "contacts.csv"])
            .status()
            .unwrap()
            .success()
    );
    crate::support::db::running_since_epoch(&p.db_url(), &["tag-new"]);
    let mut cmd = p.command();
    for (k, v) in env() {
        cmd.env(k, v);
    }
    let out = cmd.args(["dry-run", "--format", "jsonl"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tag = |id: &str| {
        rows.iter()
            .find(|r| r["contact_id"] == id && r["action"] == "tag")
            .unwrap_or_else(|| panic!("no tag row for {id}: {rows:?}"))
            .clone()
    };
    assert_eq!(tag("w1")["wecom"], json!(["wecom"]));
    assert!(tag("e1").get("wecom").is_none());
}

/// A relationship added after nurture marked the customer's corp tags gets
/// them too (WeCom's tags are per relationship): only the new relationship
/// is marked, and reading the tags back makes no tag event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relationship_added_later_gets_the_earlier_marks() {
    let (base_url, fake) = WecomFake::start().await;
    fake.befriend("wmL1", "zhangsan");
    let p = project(&base_url);
    let d = Running::start(&p, &env());
    let c = crypto();
    let now = d.wait_active(&p, 3).await;
    let add = contact_event("add_external_contact", "zhangsan", "wmL1", now, "");
    assert_eq!(d.post_event(&c, &add, 1).await.0, 200);
    tag_when_recorded(&p, &d, "wmL1", 1).await;
    until(&p, "zhangsan marked", 20 * SECS, || {
        tags(&fake, "wmL1", "zhangsan") == ["lead", "vip", "vip-seen"]
    })
    .await;
    p.wait_count(
        "SELECT count(*) FROM wecom_tag_marks WHERE contact_id = 'wmL1' AND state = 'done'",
        3,
        10 * SECS,
    )
    .await;
    let to_zhangsan = |fake: &WecomHandle| {
        fake.requests(wecom_fake::MARK_TAG)
            .iter()
            .filter(|m| m["userid"] == "zhangsan")
            .count()
    };
    let before = to_zhangsan(&fake);

    // lisi adds the customer later.
    fake.befriend("wmL1", "lisi");
    let add = contact_event("add_external_contact", "lisi", "wmL1", now + 1, "");
    assert_eq!(d.post_event(&c, &add, 2).await.0, 200);
    until(&p, "lisi marked with the earlier tags", 20 * SECS, || {
        tags(&fake, "wmL1", "lisi") == ["lead", "vip", "vip-seen"]
    })
    .await;
    p.wait_count(
        "SELECT count(*) FROM wecom_tag_marks WHERE contact_id = 'wmL1' AND state = 'done' \
         AND marked IN ('zhangsan,lisi', 'lisi,zhangsan')",
        3,
        10 * SECS,
    )
    .await;
    assert_eq!(
        to_zhangsan(&fake),
        before,
        "the first relationship is not marked again"
    );
    // The tags come back on lisi's edit: no tag event, no loop.
    let edit = contact_event("edit_external_contact", "lisi", "wmL1", now + 2, "");
    assert_eq!(d.post_event(&c, &edit, 3).await.0, 200);
    p.wait_count("SELECT count(*) FROM wecom_tag_sync", 0, 10 * SECS)
        .await;
    assert_eq!(
        p.count("SELECT count(*) FROM enrollments WHERE workflow = 'on-vip'")
            .await,
        1,
        "no loop"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM event_log WHERE kind = 'tag_added' AND contact_id = 'wmL1' AND name = 'vip'").await,
        1
    );
    d.stop(&p);
}

/// An in-process store (SQLite, or PostgreSQL under `NURTURE_TEST_POSTGRES`)
/// with one customer `ext` of `zhangsan`, tagged `tag` in nurture, and a
/// pending add mark of it that has failed `attempts` times.
async fn mark_setup(
    base_url: &str,
) -> (
    nurture::store::Store,
    nurture::settings::Settings,
    tempfile::TempDir,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let settings = nurture::settings::Settings::parse_str(
        &dir.path().join("nurture.yaml"),
        &settings(base_url, true),
    )
    .unwrap();
    let store = nurture::store::Store::open(&crate::support::db::store_url(dir.path()))
        .await
        .unwrap();
    (store, settings, dir)
}

async fn queued_mark(store: &nurture::store::Store, id: &str, ext: &str, tag: &str, attempts: i64) {
    for sql in [
        format!(
            "INSERT INTO contacts (id, wecom_external_userid, created_at, updated_at) VALUES ('{id}', '{ext}', 1, 1)"
        ),
        format!("INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ('{id}', '{tag}', 1)"),
        format!(
            "INSERT INTO wecom_relationships (external_userid, userid, standing, source, updated_at) VALUES ('{ext}', 'zhangsan', 1, 'test', 1)"
        ),
        format!(
            "INSERT INTO wecom_tag_marks (channel, contact_id, tag, action, state, generation, attempts, next_attempt_at, requested_at) VALUES ('wecom', '{id}', '{tag}', 'add', 'pending', 1, {attempts}, 0, 0)"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(store.db())
            .await
            .unwrap();
    }
}

async fn mark_row(store: &nurture::store::Store, id: &str) -> (String, i64, Option<String>) {
    sqlx::query_as("SELECT state, attempts, last_error FROM wecom_tag_marks WHERE contact_id = $1")
        .bind(id)
        .fetch_one(store.db())
        .await
        .unwrap()
}

/// add_corp_tag answering ok without the new tag is not a mark: it is tried
/// again (and found in the list then), and after MAX_ATTEMPTS it is given up
/// with the reason, logged on the contact for `history`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_corp_tag_answer_without_the_tag_is_retried_then_given_up() {
    use nurture::channels::wecom::tag_marks::{MAX_ATTEMPTS, Round, mark_due};
    let (base_url, fake) = WecomFake::start().await;
    fake.befriend("wmO1", "zhangsan");
    fake.befriend("wmO2", "zhangsan");
    let (store, settings, _dir) = mark_setup(&base_url).await;
    let envs: std::collections::HashMap<String, String> = env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env_fn = move |n: &str| envs.get(n).cloned();
    // One token cache for the test's rounds, as the daemon's worker has.
    let tokens = nurture::channels::wecom::token::TokenCaches::default();

    // WeCom made the tag but its answer does not list it.
    fake.omit_new_tags(1, true);
    queued_mark(&store, "o1", "wmO1", "lead", 0).await;
    let r = mark_due(&store, &settings, &env_fn, &tokens).await.unwrap();
    assert_eq!(
        r,
        Round {
            done: 0,
            postponed: 1,
            failed: 0
        }
    );
    let (state, attempts, err) = mark_row(&store, "o1").await;
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    assert!(
        err.as_deref()
            .unwrap_or("")
            .contains("no tag named \"lead\""),
        "{err:?}"
    );
    assert!(
        fake.relationship_tags("wmO1", "zhangsan").is_empty(),
        "not marked"
    );
    // The retry (made due now) finds the tag in the list and marks it.
    sqlx::query("UPDATE wecom_tag_marks SET next_attempt_at = 0")
        .execute(store.db())
        .await
        .unwrap();
    let r = mark_due(&store, &settings, &env_fn, &tokens).await.unwrap();
    assert_eq!(
        r,
        Round {
            done: 1,
            postponed: 0,
            failed: 0
        }
    );
    assert_eq!(fake.relationship_tags("wmO1", "zhangsan"), ["lead"]);
    assert_eq!(
        fake.count(wecom_fake::ADD_CORP_TAG),
        1,
        "found, not made twice"
    );

    // Never in the answer, never made: given up on the last attempt.
    fake.omit_new_tags(usize::MAX, false);
    queued_mark(&store, "o2", "wmO2", "vip", MAX_ATTEMPTS - 1).await;
    let r = mark_due(&store, &settings, &env_fn, &tokens).await.unwrap();
    assert_eq!(
        r,
        Round {
            done: 0,
            postponed: 0,
            failed: 1
        }
    );
    let (state, _, err) = mark_row(&store, "o2").await;
    assert_eq!(state, "failed");
    assert!(
        err.as_deref()
            .unwrap_or("")
            .contains("answered ok but its answer has no tag named \"vip\""),
        "{err:?}"
    );
    let logged: Vec<String> = sqlx::query_scalar(
        "SELECT properties FROM events WHERE contact_id = 'o2' AND name = 'wecom_tag_mark_failed'",
    )
    .fetch_all(store.db())
    .await
    .unwrap();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("no tag named"), "{logged:?}");
    assert!(fake.relationship_tags("wmO2", "zhangsan").is_empty());
}

/// The queue worker's lease: a claim pushes the row's due time to the
/// lease's end; a renewal moves only rows still held at that end, and a
/// hand-back makes them due now. Both stores.
#[tokio::test]
async fn claims_are_renewed_and_handed_back_by_their_lease() {
    use chrono::{TimeZone, Utc};
    let (store, _settings, _dir) = mark_setup("http://127.0.0.1:9").await;
    queued_mark(&store, "h1", "wmH1", "vip", 0).await;
    let t = |s: i64| Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap();
    let due = |store: nurture::store::Store| async move {
        let v: i64 = sqlx::query_scalar(
            "SELECT next_attempt_at FROM wecom_tag_marks WHERE contact_id = 'h1'",
        )
        .fetch_one(store.db())
        .await
        .unwrap();
        v
    };
    let claimed = store.claim_wecom_tag_marks(t(0), t(60), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .claim_wecom_tag_marks(t(1), t(61), 10)
            .await
            .unwrap()
            .is_empty(),
        "held"
    );
    // Renewed: held until t(120) now.
    store
        .move_wecom_tag_marks(&claimed, t(60), t(120))
        .await
        .unwrap();
    assert_eq!(due(store.clone()).await, t(120).timestamp_millis());
    // A move from the old lease end finds nothing held there.
    store
        .move_wecom_tag_marks(&claimed, t(60), t(5))
        .await
        .unwrap();
    assert_eq!(due(store.clone()).await, t(120).timestamp_millis());
    // Handed back: due at once for the next claim.
    store
        .move_wecom_tag_marks(&claimed, t(120), t(2))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_wecom_tag_marks(t(3), t(90), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}
