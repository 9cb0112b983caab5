//! `throttle: N/PERIOD` on a workflow (issue 14, item 7, the workflow
//! throttle): a big enrollment's messages go out evenly spaced, in plan
//! order, the same in the dry-run and the daemon. The real binary, the
//! real store.

use crate::support;

use std::time::Duration;

use serde_json::Value;

use support::daemon::{Daemon, Project};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_workflow_spaces_its_messages() {
    let p =
        Project::new("timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log, address: phone }\n");
    p.write(
        "workflows/t.yaml",
        "name: t\ntrigger: { contact_created: {} }\nthrottle: 2/h\nsteps:\n  - id: hi\n    send: { channel: sms, template: hi }\n",
    )
    .write("templates/hi.hbs", "hi {{contact.name}}")
    .write(
        "contacts.csv",
        "id,name,phone\nc1,A,+8613000000001\nc2,B,+8613000000002\nc3,C,+8613000000003\nc4,D,+8613000000004\n",
    );
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    support::db::running_since_epoch(&p.db_url(), &["t"]);
    let out = p.ok(&["dry-run", "--format", "jsonl"]);
    let planned: Vec<(String, chrono::DateTime<chrono::FixedOffset>)> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "send")
        .map(|r| {
            (
                r["contact_id"].as_str().unwrap().to_string(),
                chrono::DateTime::parse_from_rfc3339(r["at"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let gaps = |v: &[i64]| v.windows(2).map(|w| w[1] - w[0]).collect::<Vec<i64>>();
    let secs: Vec<i64> = planned.iter().map(|(_, t)| t.timestamp()).collect();
    assert_eq!(gaps(&secs), vec![1800, 1800, 1800], "{out}");
    let mut d = Daemon::start(&p, &["--until-idle=now"]);
    assert!(d.wait(Duration::from_secs(30)).success(), "{}", p.log());
    let rows = p
        .rows("SELECT contact_id, not_before FROM outbox ORDER BY not_before")
        .await;
    let order: Vec<String> = rows
        .iter()
        .map(|r| r["contact_id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = planned.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(order, want);
    let ms: Vec<i64> = rows
        .iter()
        .map(|r| r["not_before"].as_i64().unwrap() / 1000)
        .collect();
    assert_eq!(gaps(&ms), vec![1800, 1800, 1800]);
    // The next message continues after the last one queued, not from now.
    p.ok(&[
        "contacts",
        "add",
        "c5",
        "--name",
        "E",
        "--phone",
        "+8613000000005",
    ]);
    let mut d = Daemon::start(&p, &["--until-idle=now"]);
    assert!(d.wait(Duration::from_secs(30)).success());
    let last = p
        .rows("SELECT not_before FROM outbox WHERE contact_id = 'c5'")
        .await;
    assert_eq!(last[0]["not_before"].as_i64().unwrap() / 1000 - ms[3], 1800);

    // A message cancelled while it waited holds no place: c5 unsubscribes,
    // its message is cancelled, and the next contact's message takes its
    // slot, in the dry-run as in the daemon.
    p.ok(&["contacts", "unsubscribe", "c5"]);
    let c5 = p
        .rows("SELECT status FROM outbox WHERE contact_id = 'c5'")
        .await;
    assert_eq!(c5[0]["status"], "cancelled");
    p.ok(&[
        "contacts",
        "add",
        "c6",
        "--name",
        "F",
        "--phone",
        "+8613000000006",
    ]);
    let out = p.ok(&["dry-run", "--format", "jsonl"]);
    let planned: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "send")
        .collect();
    assert_eq!(planned.len(), 1, "{out}");
    let at = chrono::DateTime::parse_from_rfc3339(planned[0]["at"].as_str().unwrap()).unwrap();
    assert_eq!(at.timestamp() - ms[3], 1800, "{out}");
    let mut d = Daemon::start(&p, &["--until-idle=now"]);
    assert!(d.wait(Duration::from_secs(30)).success());
    let c6 = p
        .rows("SELECT not_before FROM outbox WHERE contact_id = 'c6'")
        .await;
    assert_eq!(c6[0]["not_before"].as_i64().unwrap() / 1000, at.timestamp());
}

/// `enroll --existing` on a throttled workflow continues after the last
/// message the daemon queued, as the daemon's own pass does (it used to
/// start its first message at once, next to the daemon's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_existing_continues_the_throttle_after_what_is_queued() {
    let p =
        Project::new("timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log, address: phone }\n");
    p.write(
        "workflows/t.yaml",
        "name: t\ntrigger: { contact_created: {} }\nthrottle: 2/h\nsteps:\n  - id: hi\n    send: { channel: sms, template: hi }\n",
    )
    .write("templates/hi.hbs", "hi {{contact.name}}")
    .write(
        "contacts.csv",
        "id,name,phone\nc1,A,+8613000000001\nc2,B,+8613000000002\n",
    );
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    support::db::running_since_epoch(&p.db_url(), &["t"]);
    let mut d = Daemon::start(&p, &["--until-idle=now"]);
    assert!(d.wait(Duration::from_secs(30)).success(), "{}", p.log());
    let last = p.rows("SELECT max(not_before) AS m FROM outbox").await[0]["m"]
        .as_i64()
        .unwrap();
    p.write("more.csv", "id,name,phone\nc3,C,+8613000000003\n");
    p.ok(&["contacts", "import", p.path("more.csv").to_str().unwrap()]);
    p.ok(&["enroll", "t", "--existing"]);
    let c3 = p
        .rows("SELECT not_before FROM outbox WHERE contact_id = 'c3'")
        .await;
    assert_eq!(c3.len(), 1, "c3 enrolled once");
    assert_eq!(c3[0]["not_before"].as_i64().unwrap() - last, 1_800_000);
}

/// `on_cap: defer` (issue 14, item 7): `dry-run --explain` says when the
/// frequency cap's window frees — the oldest counted message's time plus
/// the window, as the daemon computes it — not "a window from now". The
/// daemon then stores that very moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_when_the_cap_window_frees_as_the_daemon_does() {
    let p = Project::new(
        "timezone: Asia/Shanghai\npolicies:\n  frequency_cap: { max: 1, per: 1d, on_cap: defer }\n\
         channels:\n  sms: { kind: log, address: phone }\n",
    );
    p.write(
        "workflows/t.yaml",
        "name: t\ntrigger: { tag_added: { tag: vip } }\nsteps:\n  - id: hi\n    send: { channel: sms, template: hi }\n",
    )
    .write("templates/hi.hbs", "hi {{contact.name}}")
    .write("contacts.csv", "id,name,phone,tags\nc1,A,+8613000000001,vip\n");
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    support::db::running_since_epoch(&p.db_url(), &["t"]);
    // A message 3 h 17 min ago fills the cap: the window frees a day after it.
    let sent = chrono::Utc::now().timestamp_millis() - (3 * 60 + 17) * 60_000;
    p.exec(&format!(
        "INSERT INTO outbox (id, workflow, contact_id, step_id, channel, recipient, body, status, \
         attempts, not_before, next_attempt_at, created_at, sent_at) \
         VALUES ('before', 'other', 'c1', 's', 'sms', '+8613000000001', 'b', 'sent', 1, {sent}, {sent}, {sent}, {sent})"
    ))
    .await;
    let frees = chrono::DateTime::from_timestamp_millis(sent + 86_400_000)
        .unwrap()
        .with_timezone(&chrono_tz::Asia::Shanghai);
    let want = format!(
        "step hi@cap: wait until {}",
        frees.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let out = p.ok(&["dry-run", "--explain", "c1"]);
    assert!(out.contains(&want), "want {want:?} in:\n{out}");

    let mut d = Daemon::start(&p, &["--until-idle=now"]);
    assert!(d.wait(Duration::from_secs(30)).success(), "{}", p.log());
    let rows = p
        .rows("SELECT step_id, next_run_at FROM enrollments WHERE workflow = 't'")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["step_id"], "hi");
    assert_eq!(rows[0]["next_run_at"], sent + 86_400_000, "{rows:?}");
}
