//! Rich content (issue 9, point 8): a template's `attachments:` (link,
//! image, mini-program, file) checked by `validate`, shown by `dry-run`, and
//! sent with WeCom welcome and mass messages, local files uploaded once
//! through `media/upload` (cached, renewed) against a fake that refuses
//! unknown or expired media ids (40007) and more than 9 attachments.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::daemon::Project;
use crate::support::wecom_fake::{self, WecomFake};
use crate::wecom_callback::{Running, contact_event, crypto, env, settings};

const SECS: Duration = Duration::from_secs(1);

/// A PNG's signature and a few bytes: enough for the fake's checks.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-poster-bytes";

const PROMO: &str = r#"---
attachments:
  - link: { title: "618 for {{default contact.name contact.id}}", desc: "Your coupon", url: "https://example.com/618?c={{contact.id}}" }
  - image: media/poster.png
  - miniprogram: { title: "Shop", pic: media/poster.png, appid: wx8bd80126147dfaaa, page: pages/index/index }
  - file: media/brochure.pdf
---
Hi {{default contact.name "there"}}, our 618 sale starts now.
"#;

fn project(base_url: &str) -> Project {
    let p = Project::new(&settings(base_url, true));
    std::fs::create_dir(p.path("media")).unwrap();
    std::fs::write(p.path("media/poster.png"), PNG).unwrap();
    std::fs::write(p.path("media/brochure.pdf"), b"%PDF-1.4 brochure").unwrap();
    p.write("templates/promo.hbs", PROMO).write(
        "workflows/promo.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: wecom, template: promo }\n",
    );
    p
}

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

#[test]
fn validate_reports_attachment_mistakes_at_their_place() {
    let p = project("http://127.0.0.1:9");
    let (ok, out, err) = run(&p, &["validate"]);
    assert!(ok, "{out}{err}");

    // Ten attachments: the tenth is reported where it is.
    let mut ten = String::from("---\nattachments:\n");
    for _ in 0..10 {
        ten.push_str("  - image: media/poster.png\n");
    }
    ten.push_str("---\nHi\n");
    p.write("templates/promo.hbs", &ten);
    let (ok, _, err) = run(&p, &["validate"]);
    assert!(!ok);
    assert!(
        err.contains("promo.hbs:12:3: attachment 10 of a message: WeCom sends at most 9"),
        "{err}"
    );

    // A missing file, an unknown field, a link without https.
    for (text, want) in [
        (
            "---\nattachments:\n  - file: media/gone.pdf\n---\nHi\n",
            "promo.hbs:3:11: attachment file \"media/gone.pdf\" not found",
        ),
        (
            "---\nattachments:\n  - link: { title: T, url: \"https://x\", colour: red }\n---\nHi\n",
            "promo.hbs:3:49: unknown link field \"colour\"; fields are title, desc, picurl, url",
        ),
        (
            "---\nattachments:\n  - link: { title: T, url: example.com }\n---\nHi\n",
            "promo.hbs:3:28: link: url must start with https:// or http://",
        ),
        (
            "---\nattachments:\n  - miniprogram: { title: T, pic: media/poster.png }\n---\nHi\n",
            "promo.hbs:3:18: miniprogram needs appid, page",
        ),
        (
            "---\nattachments:\n  - video: media/a.mp4\n---\nHi\n",
            "promo.hbs:3:5: unknown attachment kind \"video\"; kinds are image, link, miniprogram, file",
        ),
        (
            "---\nattachments:\n  - image: https://cdn.example.com/a.png\n---\nHi\n",
            "promo.hbs:3:12: image: WeCom takes a local file here",
        ),
    ] {
        p.write("templates/promo.hbs", text);
        let (ok, _, err) = run(&p, &["validate"]);
        assert!(!ok, "{text}");
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }

    // Attachments on a channel that is not WeCom (nor a log channel standing
    // in for it): refused at the step.
    p.write("templates/promo.hbs", PROMO);
    let s = std::fs::read_to_string(p.path("nurture.yaml")).unwrap();
    p.write(
        "nurture.yaml",
        &s.replace(
            "channels:\n",
            "channels:\n  hook: { kind: webhook, url: \"http://127.0.0.1:9/h\" }\n",
        ),
    );
    p.write(
        "workflows/promo.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: hook, template: promo }\n",
    );
    let (ok, _, err) = run(&p, &["validate"]);
    assert!(!ok);
    assert!(
        err.contains("promo.yaml:3:38: template \"promo\" has attachments, but channel \"hook\" is webhook: only WeCom sends attachments"),
        "{err}"
    );
}

/// A notice to a salesperson is one text app message: a notice template
/// with attachments is refused where the step names it, with the template's
/// line, instead of dropping them silently.
#[test]
fn validate_refuses_attachments_on_a_notice_template() {
    let p = project("http://127.0.0.1:9");
    p.write(
        "workflows/promo.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - notify: { channel: wecom, template: promo }\n",
    );
    let (ok, out, err) = run(&p, &["validate"]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("promo.yaml:3:41: notice template \"promo\" has attachments (templates/promo.hbs line 3), but a notice to a salesperson is sent as text only"),
        "{err}"
    );
    assert!(
        err.contains("use a notice template without attachments"),
        "{err}"
    );
    // The same template's text alone is a fine notice.
    p.write(
        "templates/promo.hbs",
        "Hi {{contact.id}}, a new contact for you.\n",
    );
    let (ok, out, err) = run(&p, &["validate"]);
    assert!(ok, "{out}{err}");
}

#[test]
fn dry_run_shows_the_attachments() {
    let p = project("http://127.0.0.1:9");
    p.write(
        "contacts.csv",
        "id,name,wecom_external_userid\nc1,Wang,wmD1\n",
    );
    let (ok, out, err) = run(&p, &["contacts", "import", "contacts.csv"]);
    assert!(ok, "{out}{err}");
    crate::support::db::running_since_epoch(&p.db_url(), &["promo"]);
    let (ok, out, err) = run(&p, &["dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("+ link: 618 for Wang (https://example.com/618?c=c1)")
            && out.contains("+ image: media/poster.png")
            && out.contains("+ miniprogram: Shop (wx8bd80126147dfaaa)")
            && out.contains("+ file: media/brochure.pdf"),
        "{out}"
    );
    let (ok, out, err) = run(&p, &["dry-run", "--format", "jsonl"]);
    assert!(ok, "{out}{err}");
    let row: Value = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["action"] == "send")
        .unwrap();
    assert_eq!(row["attachments"][0]["msgtype"], "link");
    assert_eq!(row["attachments"][0]["title"], "618 for Wang");
    assert_eq!(row["attachments"].as_array().unwrap().len(), 4);
}

fn media_id(a: &Value) -> &str {
    for k in ["image", "file"] {
        if let Some(m) = a[k]["media_id"].as_str() {
            return m;
        }
    }
    a["miniprogram"]["pic_media_id"].as_str().unwrap_or("")
}

/// Welcome (with a code) and mass message (without) carry the attachments;
/// files are uploaded once and reused, renewed after 2.5 days, and
/// uploaded again when WeCom refuses an expired id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_and_mass_messages_carry_uploaded_attachments() {
    let (base_url, fake) = WecomFake::start().await;
    let p = project(&base_url);
    let d = Running::start(&p, &env());
    let c = crypto();
    let now = d.wait_active(&p, 1).await;
    fake.befriend("wmA1", "zhangsan");
    let add = contact_event(
        "add_external_contact",
        "zhangsan",
        "wmA1",
        now,
        "<WelcomeCode><![CDATA[WC-A1]]></WelcomeCode>",
    );
    assert_eq!(d.post_event(&c, &add, 1).await.0, 200);
    let sent = fake.wait_for(wecom_fake::SEND_WELCOME, 1, 15 * SECS).await;
    let atts = sent[0]["attachments"].as_array().unwrap().clone();
    assert_eq!(atts.len(), 4, "{atts:?}");
    assert_eq!(atts[0]["msgtype"], "link");
    assert_eq!(atts[0]["link"]["title"], "618 for wmA1");
    assert_eq!(atts[0]["link"]["url"], "https://example.com/618?c=wmA1");
    assert_eq!(atts[2]["miniprogram"]["appid"], "wx8bd80126147dfaaa");
    // The poster is uploaded once for the image and the mini-program's pic.
    assert_eq!(
        fake.count(wecom_fake::MEDIA_UPLOAD),
        2,
        "poster and brochure"
    );
    assert_eq!(media_id(&atts[1]), media_id(&atts[2]));
    let media = fake.media();
    assert_eq!(media[media_id(&atts[3])].0, "file");
    assert_eq!(media[media_id(&atts[1])].1, "poster.png");

    // A second contact, no welcome code: a mass task, the cached ids.
    fake.befriend("wmA2", "zhangsan");
    let add = contact_event("add_external_contact", "zhangsan", "wmA2", now + 1, "");
    assert_eq!(d.post_event(&c, &add, 2).await.0, 200);
    let tasks = fake
        .wait_for(wecom_fake::ADD_MSG_TEMPLATE, 1, 15 * SECS)
        .await;
    assert_eq!(tasks[0]["attachments"].as_array().unwrap().len(), 4);
    assert_eq!(media_id(&tasks[0]["attachments"][1]), media_id(&atts[1]));
    assert_eq!(fake.count(wecom_fake::MEDIA_UPLOAD), 2, "reused");

    // 2.5 days later nurture uploads again rather than send an id about to
    // expire.
    p.exec("UPDATE wecom_media SET uploaded_at = uploaded_at - 61 * 3600 * 1000")
        .await;
    fake.befriend("wmA3", "zhangsan");
    let add = contact_event("add_external_contact", "zhangsan", "wmA3", now + 2, "");
    assert_eq!(d.post_event(&c, &add, 3).await.0, 200);
    let tasks = fake
        .wait_for(wecom_fake::ADD_MSG_TEMPLATE, 2, 15 * SECS)
        .await;
    assert_eq!(fake.count(wecom_fake::MEDIA_UPLOAD), 4, "renewed");
    assert_ne!(media_id(&tasks[1]["attachments"][1]), media_id(&atts[1]));

    // WeCom forgot the ids (they expired there): the send is refused with
    // 40007, nurture uploads again and the retry goes out.
    fake.age_media(Duration::from_secs(4 * 86_400));
    fake.befriend("wmA4", "zhangsan");
    let add = contact_event("add_external_contact", "zhangsan", "wmA4", now + 3, "");
    assert_eq!(d.post_event(&c, &add, 4).await.0, 200);
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE recipient = 'wmA4' AND status = 'sent'",
        1,
        20 * SECS,
    )
    .await;
    assert_eq!(
        fake.count(wecom_fake::MEDIA_UPLOAD),
        6,
        "uploaded after the refusal"
    );
    d.stop(&p);
}

/// The fake's own media rules, over HTTP.
#[tokio::test]
async fn the_fake_enforces_media_rules() {
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
    let upload = |ty: &str, name: &str, bytes: &[u8]| {
        let mut body = format!(
            "--b0undary\r\nContent-Disposition: form-data; name=\"media\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n--b0undary--\r\n");
        let req = client
            .post(format!(
                "{base_url}{}?access_token={tok}&type={ty}",
                wecom_fake::MEDIA_UPLOAD
            ))
            .header("content-type", "multipart/form-data; boundary=b0undary")
            .body(body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let code = |v: &Value| v["errcode"].as_i64().unwrap();
    assert_eq!(code(&upload("doc", "a.png", PNG).await), 40005);
    assert_eq!(
        code(&upload("image", "a.gif", b"GIF89a-not-png").await),
        40004
    );
    assert_eq!(code(&upload("file", "a.txt", b"abc").await), 40006);
    assert_eq!(code(&upload("file", "a.txt", b"").await), 44001);
    let img = upload("image", "a.png", PNG).await;
    assert_eq!(code(&img), 0, "{img}");
    let id = img["media_id"].as_str().unwrap().to_string();

    let post = |body: Value| {
        let req = client
            .post(format!(
                "{base_url}{}?access_token={tok}",
                wecom_fake::ADD_MSG_TEMPLATE
            ))
            .json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let task = |atts: Value| {
        json!({"chat_type": "single", "external_userid": ["wmF"], "sender": "zhangsan",
               "text": {"content": "hi"}, "attachments": atts})
    };
    let image = |id: &str| json!({"msgtype": "image", "image": {"media_id": id}});
    assert_eq!(code(&post(task(json!([image(&id)]))).await), 0);
    assert_eq!(
        code(&post(task(json!([image("media-unknown")]))).await),
        40007
    );
    // A file id is not an image.
    let pdf = upload("file", "b.pdf", b"%PDF-1.4 x").await;
    assert_eq!(
        code(&post(task(json!([image(pdf["media_id"].as_str().unwrap())]))).await),
        40007
    );
    let ten: Vec<Value> = (0..10).map(|_| image(&id)).collect();
    assert_eq!(code(&post(task(json!(ten))).await), 40058);
    assert_eq!(
        code(&post(task(json!([{"msgtype": "link", "link": {"title": "T"}}]))).await),
        40063
    );
    fake.age_media(wecom_fake::MEDIA_LIFE);
    assert_eq!(
        code(&post(task(json!([image(&id)]))).await),
        40007,
        "expired"
    );
}

/// `channels test wecom --template T` sends the attachments as the daemon
/// would (uploading the files) and says what tag steps will do;
/// `validate` checks `mark_tags` and `tag_group`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_test_sends_attachments_and_checks_tag_settings() {
    let (base_url, fake) = WecomFake::start().await;
    fake.befriend("wmC", "zhangsan");
    fake.create_corp_tag("nurture", "vip");
    let p = project(&base_url);
    let (ok, out, err) = run(
        &p,
        &[
            "channels",
            "test",
            "wecom",
            "--to",
            "wmC",
            "--template",
            "promo",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("  + link: 618 for "), "{out}");
    assert!(out.contains("  + file: media/brochure.pdf"), "{out}");
    assert!(
        out.contains("tag steps mark corp tags: 1 corp tags in 1 groups; group \"nurture\" has 1"),
        "{out}"
    );
    let sent = fake.requests(wecom_fake::ADD_MSG_TEMPLATE);
    assert_eq!(sent[0]["attachments"].as_array().unwrap().len(), 4);
    assert_eq!(fake.count(wecom_fake::MEDIA_UPLOAD), 2);

    let s = std::fs::read_to_string(p.path("nurture.yaml")).unwrap();
    p.write(
        "nurture.yaml",
        &s.replace(
            "agent_id: \"1000002\"",
            "agent_id: \"1000002\", mark_tags: maybe, tag_group: \"\"",
        ),
    );
    let (ok, _, err) = run(&p, &["validate"]);
    assert!(!ok);
    assert!(
        err.contains("mark_tags \"maybe\" must be true or false"),
        "{err}"
    );
    p.write(
        "nurture.yaml",
        &s.replace(
            "agent_id: \"1000002\"",
            "agent_id: \"1000002\", tag_group: 客户标签",
        ),
    );
    let (ok, out, err) = run(&p, &["channels", "test", "wecom", "--to", "wmC"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("group \"客户标签\" does not exist yet"),
        "{out}"
    );
}
