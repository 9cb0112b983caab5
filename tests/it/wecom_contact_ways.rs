//! Contact-way codes (渠道活码) as files (issue 9 point 7): `nurture validate`
//! checks `contact_ways/NAME.yaml`, `nurture wecom sync` pushes them to the
//! fake (which enforces WeCom's add/update/del_contact_way rules), and a
//! customer added through a code gets its attribute, tags and welcome and
//! fires `contact_created: { via: NAME }`.

use std::time::Duration;

use crate::support;
use crate::support::daemon::Project;
use crate::support::wecom_fake::{self, Answer, WecomFake};
use crate::wecom_callback::{Running, contact_event, crypto, env, settings};
use serde_json::json;

const SECS: Duration = Duration::from_secs(1);

fn run(p: &Project, args: &[&str]) -> (bool, String, String) {
    let mut cmd = p.command();
    for (k, v) in env() {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CODE: &str = "staff:\n  pool: [s1, s2]\n  strategy: round_robin\n  daily_cap: 50\ntags: [douyin, live-0618]\nwelcome: douyin-welcome\nremark: 抖音 618 直播间\n";

fn project(base_url: &str) -> Project {
    let p = Project::new(&settings(base_url, true));
    std::fs::create_dir(p.path("contact_ways")).unwrap();
    p.write("contact_ways/douyin-0618.yaml", CODE)
        .write("templates/douyin-welcome.hbs", "Hi from {{owner.name}}: your 618 coupon is waiting.")
        .write(
            "workflows/douyin-followup.yaml",
            "trigger: { contact_created: { via: douyin-0618 } }\nsteps:\n  - tag: { add: [from-douyin-workflow] }\n",
        );
    p
}

#[test]
fn validate_reports_code_mistakes_with_places_and_suggestions() {
    let p = project("http://127.0.0.1:9");
    let (ok, out, err) = run(&p, &["validate"]);
    assert!(ok, "{out}{err}");
    p.write(
        "contact_ways/douyin-0618.yaml",
        "staff:\n  pool: [s1, s3]\n  stratgy: round_robin\nwelcome: douyin-welcom\nremark: 一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十一\n",
    )
    .write(
        "workflows/douyin-followup.yaml",
        "trigger: { contact_created: { via: douyin-0619 } }\nsteps:\n  - tag: { add: [x] }\n",
    );
    let (ok, out, err) = run(&p, &["validate"]);
    assert!(!ok);
    let all = format!("{out}{err}");
    for want in [
        "contact_ways/douyin-0618.yaml:2:14: unknown salesperson \"s3\"",
        "contact_ways/douyin-0618.yaml:3:3: unknown key \"stratgy\"",
        "strategy",
        "contact_ways/douyin-0618.yaml:4:10: unknown template \"douyin-welcom\"",
        "douyin-welcome",
        "contact_ways/douyin-0618.yaml:5:9: remark is 31 characters",
        "workflows/douyin-followup.yaml:1:36: no contact way \"douyin-0619\"",
        "douyin-0618",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_creates_updates_and_deletes_codes_after_a_dry_run() {
    let (base_url, fake) = WecomFake::start().await;
    let p = project(&base_url);
    let (ok, out, err) = run(&p, &["wecom", "sync", "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("douyin-0618 would create (members s1, s2"),
        "{out}"
    );
    assert_eq!(fake.count(wecom_fake::ADD_CONTACT_WAY), 0);

    let (ok, out, err) = run(&p, &["wecom", "sync"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("douyin-0618 created"), "{out}");
    assert!(
        out.contains("QR code: https://wework.qpic.cn/wwpic/fake/"),
        "{out}"
    );
    let sent = fake.requests(wecom_fake::ADD_CONTACT_WAY);
    assert_eq!(sent[0]["type"], 2);
    assert_eq!(sent[0]["scene"], 2);
    assert_eq!(sent[0]["state"], "douyin-0618");
    assert_eq!(sent[0]["skip_verify"], true);
    assert_eq!(sent[0]["user"], json!(["zhangsan", "lisi"]));
    assert_eq!(sent[0]["remark"], "抖音 618 直播间");
    let rows = p
        .rows("SELECT config_id, qr_code FROM wecom_contact_ways WHERE name = 'douyin-0618'")
        .await;
    let config_id = rows[0]["config_id"].as_str().unwrap().to_string();
    assert!(fake.contact_ways().contains_key(&config_id));

    // Unchanged: no call. A changed pool: update_contact_way with the config_id.
    let (ok, out, _) = run(&p, &["wecom", "sync"]);
    assert!(ok && out.contains("unchanged"), "{out}");
    assert_eq!(fake.count(wecom_fake::UPDATE_CONTACT_WAY), 0);
    p.write(
        "contact_ways/douyin-0618.yaml",
        &CODE
            .replace("[s1, s2]", "[s2, s1]\n  backup: [s1]")
            .replace("round_robin", "least_loaded"),
    );
    let (ok, out, err) = run(&p, &["wecom", "sync"]);
    assert!(ok, "{out}{err}");
    let upd = fake.requests(wecom_fake::UPDATE_CONTACT_WAY);
    assert_eq!(upd.len(), 1, "{out}");
    assert_eq!(upd[0]["config_id"], config_id.as_str());
    assert!(
        upd[0].get("type").is_none(),
        "WeCom does not update the type"
    );

    // WeCom's refusals come back with the errcode (a member not in the
    // directory: 40003).
    fake.script(
        wecom_fake::UPDATE_CONTACT_WAY,
        Answer::errcode(40003, "invalid userid"),
    );
    p.write(
        "contact_ways/douyin-0618.yaml",
        &CODE.replace("daily_cap: 50", "daily_cap: 49"),
    );
    let (ok, _, err) = run(&p, &["wecom", "sync"]);
    assert!(!ok && err.contains("40003"), "{err}");

    // The file goes: sync alone does not delete; a dry-run lists it first.
    std::fs::remove_file(p.path("contact_ways/douyin-0618.yaml")).unwrap();
    std::fs::remove_file(p.path("workflows/douyin-followup.yaml")).unwrap();
    let (ok, out, _) = run(&p, &["wecom", "sync"]);
    assert!(
        ok && out.contains("run nurture wecom sync --dry-run to review"),
        "{out}"
    );
    assert_eq!(fake.count(wecom_fake::DEL_CONTACT_WAY), 0);
    let (ok, out, _) = run(&p, &["wecom", "sync", "--dry-run"]);
    assert!(ok && out.contains("douyin-0618 would delete"), "{out}");
    let (ok, out, _) = run(&p, &["wecom", "sync"]);
    assert!(ok && out.contains("douyin-0618 deleted"), "{out}");
    assert!(fake.contact_ways().is_empty());
    assert_eq!(p.count("SELECT count(*) FROM wecom_contact_ways").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_enforces_contact_way_rules() {
    let (base_url, fake) = WecomFake::start().await;
    let client = reqwest::Client::new();
    let tok: serde_json::Value = client
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
    let post = |path: &str, body: serde_json::Value| {
        let url = format!("{base_url}{path}?access_token={tok}");
        let client = client.clone();
        async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let add = wecom_fake::ADD_CONTACT_WAY;
    let code = |v: serde_json::Value| v["errcode"].as_i64().unwrap();
    assert_eq!(
        code(
            post(
                add,
                json!({"type": 1, "scene": 2, "user": ["zhangsan", "lisi"]})
            )
            .await
        ),
        40058
    );
    assert_eq!(
        code(post(add, json!({"type": 2, "scene": 2, "user": ["nobody"]})).await),
        40003
    );
    assert_eq!(
        code(
            post(
                add,
                json!({"type": 2, "scene": 2, "user": ["zhangsan"], "state": "x".repeat(31)})
            )
            .await
        ),
        40058
    );
    assert_eq!(
        code(post(add, json!({"type": 3, "scene": 2, "user": ["zhangsan"]})).await),
        40063
    );
    let ok = post(add, json!({"type": 1, "scene": 1, "user": ["zhangsan"]})).await;
    assert_eq!(code(ok.clone()), 0);
    assert!(
        ok.get("qr_code").is_none(),
        "no QR code for a mini-program code"
    );
    let id = ok["config_id"].as_str().unwrap();
    assert_eq!(
        code(
            post(
                wecom_fake::UPDATE_CONTACT_WAY,
                json!({"config_id": id, "user": ["zhangsan", "lisi"]})
            )
            .await
        ),
        40058
    );
    assert_eq!(
        code(post(wecom_fake::DEL_CONTACT_WAY, json!({"config_id": "nope"})).await),
        40058
    );
    assert_eq!(
        code(post(wecom_fake::DEL_CONTACT_WAY, json!({"config_id": id})).await),
        0
    );
    assert!(fake.contact_ways().is_empty());
}

/// A customer added through the code: `acquisition_channel`, the code's
/// tags, its welcome through `send_welcome_msg`, and the `via` workflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_through_a_code_gets_its_attribute_tags_welcome_and_via_workflow() {
    let (base_url, fake) = WecomFake::start().await;
    let p = project(&base_url);
    p.write(
        "workflows/other-adds.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - tag: { add: [any-add] }\n",
    );
    let (ok, out, err) = run(&p, &["wecom", "sync"]);
    assert!(ok, "{out}{err}");
    // In WeCom, lisi is the customer's friend: the code's tags are marked
    // on that relationship.
    fake.befriend("wmVia", "lisi");
    let d = Running::start(&p, &env());
    let c = crypto();
    // douyin-followup, other-adds and the code's welcome workflow.
    let now = d.wait_active(&p, 3).await;
    let add = contact_event(
        "add_external_contact",
        "lisi",
        "wmVia",
        now,
        "<State><![CDATA[douyin-0618]]></State><WelcomeCode><![CDATA[WC-VIA]]></WelcomeCode>",
    );
    assert_eq!(d.post_event(&c, &add, 1).await.0, 200);
    let plain = contact_event("add_external_contact", "zhangsan", "wmPlain", now, "");
    assert_eq!(d.post_event(&c, &plain, 2).await.0, 200);
    let deadline = std::time::Instant::now() + 15 * SECS;
    while fake.count(wecom_fake::SEND_WELCOME) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no welcome; log:\n{}",
            p.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let sent = fake.requests(wecom_fake::SEND_WELCOME);
    assert_eq!(sent[0]["welcome_code"], "WC-VIA");
    assert_eq!(
        sent[0]["text"]["content"],
        "Hi from Li Lei: your 618 coupon is waiting."
    );
    p.wait_count(
        "SELECT count(*) FROM contact_tags WHERE contact_id = 'wmVia' AND tag IN ('douyin', 'live-0618', 'from-douyin-workflow', 'any-add')",
        4,
        10 * SECS,
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM contact_tags WHERE contact_id = 'wmPlain' AND tag = 'any-add'",
        1,
        10 * SECS,
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM contact_tags WHERE contact_id = 'wmPlain' AND tag IN ('douyin', 'from-douyin-workflow')").await,
        0
    );
    let rows = p
        .rows("SELECT attrs FROM contacts WHERE id = 'wmVia'")
        .await;
    let attrs: serde_json::Value =
        serde_json::from_str(rows[0]["attrs"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["acquisition_channel"], "douyin-0618");
    // The code's tags (and the workflows' tag steps) as corp tags in WeCom.
    let deadline = std::time::Instant::now() + 20 * SECS;
    loop {
        let tags = fake.relationship_tags("wmVia", "lisi");
        if ["douyin", "live-0618", "from-douyin-workflow", "any-add"]
            .iter()
            .all(|t| tags.iter().any(|x| x == t))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{tags:?}\n{}",
            p.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    d.stop(&p);
    let _ = support::db::url_for;
}

/// `dry-run` says what a contact added through each code gets now, in the
/// table and as a `contact_way` line of `--format jsonl`.
#[test]
fn dry_run_says_what_an_add_via_a_code_gets() {
    let p = project("http://127.0.0.1:9");
    p.write("contacts.csv", "id,name\nc1,Wang\n");
    let (ok, out, err) = run(&p, &["contacts", "import", "contacts.csv"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&p, &["dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Contact-way codes:\n  a contact added via douyin-0618 gets staff s1 Wang Fang, s2 Li Lei (round_robin: the pool members under their cap), tags douyin, live-0618, welcome douyin-welcome"),
        "{out}"
    );
    let (ok, out, err) = run(&p, &["dry-run", "--format", "jsonl"]);
    assert!(ok, "{out}{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["action"], "contact_way");
    assert_eq!(first["contact_way"], "douyin-0618");
    assert_eq!(first["staff"], json!(["s1", "s2"]));
    assert_eq!(first["tags"], json!(["douyin", "live-0618"]));
    assert_eq!(first["welcome"], "douyin-welcome");
}
