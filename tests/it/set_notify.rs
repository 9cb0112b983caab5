//! `set:` and `notify:` steps (issue 14, item 5): attributes set (templated
//! from the trigger event, typed by the declaration, null removes), seen by
//! the steps after; the owner told on a channel without reassigning. The
//! real binary, the real store.

use crate::support;

use std::time::Duration;

use serde_json::Value;

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

const WF: &str = r#"
name: upgrade
trigger: { event: { name: upgraded } }
steps:
  - id: s
    set:
      plan: "{{event.properties.plan}}"
      seats: "{{event.properties.seats}}"
      trial: null
      level: gold
  - id: check
    if: { field: level, equals: gold }
    then:
      - id: tell
        notify: { channel: hook, template: told }
  - id: hi
    send: { channel: hook, template: hi }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_changes_attributes_and_notify_tells_the_owner() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&format!(
        r#"
timezone: Asia/Shanghai
channels:
  hook: {{ kind: webhook, url: "{}", secret_env: HOOK_SECRET }}
teams:
  east:
    - {{ id: s1, name: 王芳 }}
fields:
  plan: string
  seats: number
  trial: string
  level: string
"#,
        rx.url("/hook")
    ));
    p.write("workflows/upgrade.yaml", WF)
        .write(
            "templates/told.hbs",
            "{{owner.name}}: {{contact.name}} is now on {{contact.plan}}",
        )
        .write(
            "templates/hi.hbs",
            "{{contact.name}}, welcome to {{contact.plan}} ({{contact.seats}} seats)",
        )
        .write(
            "contacts.csv",
            "id,name,owner,trial\nc1,Ada,s1,yes\nc2,Bo,,yes\n",
        );
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    for c in ["c1", "c2"] {
        p.ok(&[
            "contacts", "event", c, "upgraded", "--prop", "plan=pro", "--prop", "seats=12",
        ]);
    }
    support::db::running_since_epoch(&p.db_url(), &["upgrade"]);

    let preview = p.ok(&["dry-run", "--format", "jsonl"]);
    let rows: Vec<Value> = preview
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let set = rows
        .iter()
        .find(|r| r["contact_id"] == "c1" && r["action"] == "set")
        .unwrap();
    assert_eq!(
        set["set"],
        serde_json::json!({ "level": "gold", "plan": "pro", "seats": 12, "trial": null }),
        "{preview}"
    );
    let told = rows
        .iter()
        .find(|r| r["contact_id"] == "c1" && r["action"] == "notify")
        .unwrap();
    assert_eq!(told["salesperson"], "s1");
    assert_eq!(told["body"], "王芳: Ada is now on pro");
    let c2 = rows
        .iter()
        .find(|r| r["contact_id"] == "c2" && r["step"] == "tell")
        .unwrap();
    assert_eq!(c2["action"], "skip");
    assert_eq!(c2["reason"], "no_owner");

    let mut d = Daemon::start(&p, &["--until-idle"]);
    assert!(d.wait(Duration::from_secs(60)).success(), "{}", p.log());
    let mut bodies: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.json()["body"].as_str().unwrap().to_string())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![
            "Ada, welcome to pro (12 seats)",
            "Bo, welcome to pro (12 seats)",
            "王芳: Ada is now on pro",
        ]
    );
    // Stored: typed, trial removed; the owner unchanged.
    let rows = p
        .rows("SELECT id, owner, attrs FROM contacts ORDER BY id")
        .await;
    let attrs: Value = serde_json::from_str(rows[0]["attrs"].as_str().unwrap()).unwrap();
    assert_eq!(
        attrs,
        serde_json::json!({ "level": "gold", "plan": "pro", "seats": 12 })
    );
    assert_eq!(rows[0]["owner"], "s1");
    let h = p.ok(&["history", "--contact", "c1"]);
    assert!(h.contains("notify"), "{h}");
}

#[test]
fn validate_reports_set_and_notify_mistakes() {
    let p = Project::new(
        "timezone: Asia/Shanghai\nchannels:\n  hook: { kind: log }\nfields:\n  seats: number\n  level: string\n",
    );
    p.write(
        "workflows/bad.yaml",
        r#"
trigger: { contact_created: {} }
steps:
  - set: { seats: many, levle: gold, email: x@y.z }
  - notify: { channel: hok }
"#,
    );
    let out = p.command().arg("validate").output().unwrap();
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("bad.yaml:4:12: seats is declared a number"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:4:25: unknown field \"levle\""),
        "{err}"
    );
    assert!(err.contains("did you mean \"level\"?"), "{err}");
    assert!(
        err.contains("bad.yaml:4:38: set: writes custom attributes"),
        "{err}"
    );
    assert!(err.contains("bad.yaml:5:24"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_step_posts_its_body_through_the_delivery_layer() {
    // The endpoint fails once: the delivery layer retries with the same key.
    let rx = Receiver::start(script::fail_first(1, 503)).await;
    let p = Project::new(&format!(
        r#"
timezone: Asia/Shanghai
channels:
  crm: {{ kind: webhook, url: "{}", secret_env: HOOK_SECRET }}
fields:
  plan: string
"#,
        rx.url("/crm")
    ));
    p.write(
        "workflows/sync.yaml",
        r#"
name: sync
trigger: { event: { name: upgraded } }
steps:
  - id: push
    webhook:
      channel: crm
      body: { contact: "{{contact.id}}", plan: "{{event.properties.plan}}", source: nurture, seats: 3 }
"#,
    )
    .write("contacts.csv", "id,name\nc1,Ada\n");
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    p.ok(&["contacts", "event", "c1", "upgraded", "--prop", "plan=pro"]);
    support::db::running_since_epoch(&p.db_url(), &["sync"]);
    let preview = p.ok(&["dry-run", "--format", "jsonl"]);
    let row: Value = serde_json::from_str(preview.lines().next().unwrap()).unwrap();
    assert_eq!(row["action"], "webhook");
    assert_eq!(
        row["payload"],
        serde_json::json!({ "contact": "c1", "plan": "pro", "source": "nurture", "seats": 3 })
    );
    let mut d = Daemon::start(&p, &["--until-idle", "--backoff-ms", "50"]);
    assert!(d.wait(Duration::from_secs(60)).success(), "{}", p.log());
    let got = rx.requests();
    assert_eq!(got.len(), 2, "one failure, one retry");
    assert_eq!(got[1].json(), row["payload"]);
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
    assert_eq!(got[1].header("idempotency-key"), Some("sync:c1:1:push"));
    // Not a message to the contact: the frequency cap does not count it.
    assert_eq!(
        p.count("SELECT count(*) FROM outbox WHERE status = 'sent' AND payload LIKE '%\"kind\":\"webhook\"%'")
            .await,
        1
    );
}

/// `store:` on a webhook step (issue 14, item 5): once the call succeeds,
/// fields of its JSON answer become the contact's attributes (what the
/// answer lacks, or gives as an object, is not stored); a failed call stores
/// nothing. The dry-run cannot know the answer: it says what it would store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_step_stores_fields_of_its_answer() {
    // c1's call is answered with JSON; c2's is refused for good.
    let rx = Receiver::start(std::sync::Arc::new(|r: &support::receiver::Request| {
        if r.json()["contact"] == "c2" {
            Reply::status(400).body("{\"error\":\"no such account\"}")
        } else {
            Reply::ok().body(
                r#"{"id": "crm-7", "deal": {"stage": "qualified", "score": 81}, "tags": ["x"]}"#,
            )
        }
    }))
    .await;
    let p = Project::new(&format!(
        r#"
timezone: Asia/Shanghai
channels:
  crm: {{ kind: webhook, url: "{}", secret_env: HOOK_SECRET }}
fields:
  crm_id: string
  crm_stage: string
"#,
        rx.url("/crm")
    ));
    p.write(
        "workflows/sync.yaml",
        r#"
name: sync
trigger: { event: { name: upgraded } }
steps:
  - id: push
    webhook:
      channel: crm
      body: { contact: "{{contact.id}}" }
      store: { crm_id: /id, crm_stage: /deal/stage, score: /deal/score, crm_tags: /tags, gone: /nothing }
"#,
    )
    .write("contacts.csv", "id,name\nc1,Ada\nc2,Bo\n");
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    p.ok(&["contacts", "event", "c1", "upgraded"]);
    p.ok(&["contacts", "event", "c2", "upgraded"]);
    support::db::running_since_epoch(&p.db_url(), &["sync"]);
    let preview = p.ok(&["dry-run", "--format", "jsonl"]);
    let row: Value = serde_json::from_str(preview.lines().next().unwrap()).unwrap();
    assert_eq!(
        row["would_store"],
        serde_json::json!({ "crm_id": "/id", "crm_stage": "/deal/stage", "score": "/deal/score", "crm_tags": "/tags", "gone": "/nothing" })
    );
    let table = p.ok(&["dry-run"]);
    assert!(table.contains("would store crm_id ← /id"), "{table}");

    let mut d = Daemon::start(&p, &["--until-idle"]);
    assert!(d.wait(Duration::from_secs(60)).success(), "{}", p.log());
    assert_eq!(rx.requests().len(), 2);
    let show = |id: &str| -> Value {
        serde_json::from_str(&p.ok(&["contacts", "show", id, "--format", "json"])).unwrap()
    };
    let c1 = show("c1");
    let attrs = c1["attributes"]
        .as_object()
        .unwrap_or_else(|| panic!("{c1}"));
    assert_eq!(attrs["crm_id"], "crm-7", "{c1}");
    assert_eq!(attrs["crm_stage"], "qualified");
    assert_eq!(attrs["score"], 81);
    assert!(
        !attrs.contains_key("crm_tags"),
        "a list is not stored: {c1}"
    );
    assert!(!attrs.contains_key("gone"), "{c1}");
    let log = p.log();
    assert!(log.contains("crm_tags: /tags is a list"), "{log}");
    assert!(
        log.contains("gone: the answer has nothing at /nothing"),
        "{log}"
    );
    // The refused call stored nothing.
    let c2 = show("c2");
    assert!(
        c2["attributes"]
            .as_object()
            .is_none_or(|a| !a.contains_key("crm_id")),
        "{c2}"
    );
}

#[test]
fn validate_reports_webhook_store_mistakes() {
    let p = Project::new(
        "timezone: Asia/Shanghai\nchannels:\n  crm: { kind: webhook, url: \"http://127.0.0.1:9/\" }\n",
    );
    p.write(
        "workflows/bad.yaml",
        "name: bad\ntrigger: { event: { name: x } }\nsteps:\n  - webhook: { channel: crm, store: { crm_id: id, phone: /phone } }\n",
    );
    let out = p.command().arg("validate").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:4:47: store: \"id\" is not a JSON pointer"),
        "{err}"
    );
    assert!(
        err.contains("help: a JSON pointer starts with / and names the path: /id"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:4:51: store: \"phone\" is a built-in field"),
        "{err}"
    );
}
