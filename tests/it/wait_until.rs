//! `wait_until` (issue 14, item 1): the enrollment waits at the step until
//! the event is logged (then `then`, at once) or the timeout passes (then
//! `else`); `{ condition, timeout }` waits for tags and fields. The real
//! binary, the real store (SQLite, or PostgreSQL under .ci/with-postgres.sh).

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

fn settings(rx: &Receiver) -> String {
    format!(
        r#"
timezone: Asia/Shanghai
channels:
  hook: {{ kind: webhook, url: "{}", secret_env: HOOK_SECRET }}
"#,
        rx.url("/hook")
    )
}

const CART: &str = r#"
name: cart
trigger: { event: { name: cart_abandoned } }
steps:
  - id: w
    wait_until:
      event: purchase
      where: { field: item, equals: scarf }
      timeout: TIMEOUT
      then:
        - id: bought
          send: { channel: hook, template: bought }
      else:
        - id: nudge
          send: { channel: hook, template: nudge }
  - id: bye
    tag: { add: [cart-done] }
"#;

fn project(rx: &Receiver, timeout: &str) -> Project {
    let p = Project::new(&settings(rx));
    p.write("workflows/cart.yaml", &CART.replace("TIMEOUT", timeout))
        .write(
            "templates/bought.hbs",
            "thanks for the scarf {{contact.name}}",
        )
        .write(
            "templates/nudge.hbs",
            "your cart misses you {{contact.name}}",
        )
        .write("contacts.csv", "id,name\nc1,Ada\nc2,Bo\nc3,Cy\n");
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    p
}

fn bodies(rx: &Receiver) -> Vec<(String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut v: Vec<(String, String)> = rx
        .requests()
        .iter()
        .map(|r| {
            let j = r.json();
            (s(&j["contact_id"]), s(&j["body"]))
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_ends_the_wait_at_once_and_the_timeout_takes_else() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "6s");
    for c in ["c1", "c2", "c3"] {
        p.ok(&["contacts", "event", c, "cart_abandoned"]);
    }
    support::db::running_since_epoch(&p.db_url(), &["cart"]);
    let d = Daemon::start(&p, &[]);
    // All three wait at `w`.
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE step_id = 'w' AND wait_since IS NOT NULL",
        3,
        Duration::from_secs(10),
    )
    .await;
    // c1 buys the scarf; c3 buys something else (the where: refuses it).
    d.post_ok(
        "/v1/events",
        json!({ "contact_id": "c1", "name": "purchase", "properties": { "item": "scarf" } }),
    )
    .await;
    d.post_ok(
        "/v1/events",
        json!({ "contact_id": "c3", "name": "purchase", "properties": { "item": "hat" } }),
    )
    .await;
    let got = rx.wait_for(1, Duration::from_secs(4)).await;
    // Moved on at the event, long before the 6 s timeout: nobody was nudged yet.
    assert_eq!(got.len(), 1, "{:?}", bodies(&rx));
    assert_eq!(
        bodies(&rx),
        vec![("c1".into(), "thanks for the scarf Ada".into())]
    );
    // The timeout: c2 and c3 take else.
    rx.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(
        bodies(&rx),
        vec![
            ("c1".into(), "thanks for the scarf Ada".into()),
            ("c2".into(), "your cart misses you Bo".into()),
            ("c3".into(), "your cart misses you Cy".into()),
        ]
    );
    // Both branches continue after the step; the branch taken is recorded.
    p.wait_count(
        "SELECT count(*) FROM contact_tags WHERE tag = 'cart-done'",
        3,
        Duration::from_secs(10),
    )
    .await;
    let rows = p
        .rows(
            "SELECT e.contact_id AS c, s.step_id AS s, s.detail AS d FROM enrollment_steps s
               JOIN enrollments e ON e.id = s.enrollment_id WHERE s.action = 'wait_until'
              ORDER BY e.contact_id",
        )
        .await;
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["c"].as_str().unwrap().to_string(),
                r["s"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("c1".into(), "w.then".into()),
            ("c2".into(), "w.else".into()),
            ("c3".into(), "w.else".into())
        ]
    );
    assert!(
        rows[0]["d"]
            .as_str()
            .unwrap()
            .starts_with("event purchase at "),
        "{rows:?}"
    );
    assert_eq!(rows[1]["d"].as_str().unwrap(), "timeout 6s");
    // history tells the branch.
    let h = p.ok(&["history", "--contact", "c1"]);
    assert!(h.contains("w.then"), "{h}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_sees_the_timeout_without_events_and_then_with_one_logged() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "1d");
    p.ok(&[
        "contacts",
        "event",
        "c1",
        "cart_abandoned",
        "--at",
        "2030-01-01T10:00:00+08:00",
    ]);
    p.ok(&[
        "contacts",
        "event",
        "c2",
        "cart_abandoned",
        "--at",
        "2030-01-01T10:00:00+08:00",
    ]);
    // c2 buys a minute later: logged, not yet seen by any daemon.
    p.ok(&[
        "contacts",
        "event",
        "c2",
        "purchase",
        "--prop",
        "item=scarf",
        "--at",
        "2030-01-01T10:01:00+08:00",
    ]);
    support::db::running_since_epoch(&p.db_url(), &["cart"]);
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2030-01-01T10:05:00+08:00",
        "--until",
        "2d",
        "--format",
        "jsonl",
    ]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pick = |c: &str| -> Vec<(String, String)> {
        rows.iter()
            .filter(|r| r["contact_id"] == c)
            .map(|r| {
                (
                    r["step"].as_str().unwrap().to_string(),
                    r["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // c1: no purchase assumed: it waits, and the timeout takes else.
    assert_eq!(
        pick("c1"),
        vec![
            ("w".into(), "wait".into()),
            ("w.else".into(), "wait_until".into()),
            ("nudge".into(), "send".into()),
            ("bye".into(), "tag".into())
        ],
        "{out}"
    );
    // c2: its purchase after the cart (before the daemon got to it) counts.
    assert_eq!(
        pick("c2"),
        vec![
            ("w".into(), "wait".into()),
            ("w.then".into(), "wait_until".into()),
            ("bought".into(), "send".into()),
            ("bye".into(), "tag".into())
        ],
        "{out}"
    );
    let then = rows.iter().find(|r| r["step"] == "w.then").unwrap();
    assert_eq!(then["branch"], "then");
    assert_eq!(
        then["reason"],
        "event purchase at 2030-01-01T10:01:00+08:00"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_wait_is_woken_by_a_tag() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx));
    p.write(
        "workflows/vip.yaml",
        r#"
name: vip
trigger: { contact_created: {} }
steps:
  - id: w
    wait_until:
      condition: { tag: vip }
      timeout: 1h
      then:
        - id: hi
          send: { channel: hook, template: hi }
"#,
    )
    .write("templates/hi.hbs", "welcome to vip {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({ "id": "c1", "name": "Ada" }))
        .await;
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE step_id = 'w' AND wait_since IS NOT NULL",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(rx.count(), 0);
    p.ok(&["contacts", "tag", "c1", "--add", "vip"]);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["body"], "welcome to vip Ada");
    drop(d);
}
