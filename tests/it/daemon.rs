//! End-to-end tests of `nurture run`: the real binary as a child process, a
//! real SQLite file in a temp project, a loopback receiver standing in as a
//! `webhook` channel, the API token from the environment, and SIGTERM to stop.
//!
//! Each test has its own project, store, port and receiver, so they run in
//! parallel. Timing assertions use the receiver's arrival times.

use crate::support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use support::daemon::{Daemon, HOOK_SECRET, Project};
use support::receiver::{Receiver, Reply, Request, script};

const SECS: Duration = Duration::from_secs(1);

/// Settings with one signed webhook channel `hook` pointing at `rx`, a team
/// `east`, and `extra` appended (policies, more channels).
fn settings(rx: &Receiver, channel_extra: &str, extra: &str) -> String {
    format!(
        r#"
timezone: Asia/Shanghai
channels:
  hook: {{ kind: webhook, url: "{}", secret_env: HOOK_SECRET{channel_extra} }}
teams:
  east:
    - {{ id: s1, name: Wang Fang }}
    - {{ id: s2, name: Li Lei }}
{extra}
"#,
        rx.url("/hook")
    )
}

/// A workflow that sends `template` on `hook` when a contact is created.
fn greet_workflow(template: &str) -> String {
    format!(
        "trigger: {{ contact_created: {{}} }}\nsteps:\n  - send: {{ channel: hook, template: {template} }}\n"
    )
}

fn body_of(r: &Request) -> String {
    r.json()["body"].as_str().unwrap().to_string()
}

fn contact_of(r: &Request) -> String {
    r.json()["contact_id"].as_str().unwrap().to_string()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Stops the daemon with SIGTERM and asserts a clean, prompt exit.
fn stop(d: Daemon, p: &Project) {
    let (status, took) = d.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "the daemon exited with {status}; log:\n{}",
        p.log()
    );
    assert!(took < Duration::from_secs(12), "SIGTERM took {took:?}");
}

/// Checks a Standard Webhooks v1 signature independently of nurture's code.
fn verify_signature(r: &Request) {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let sig = r.header("webhook-signature").expect("webhook-signature");
    let ts_num: i64 = ts.parse().expect("a numeric timestamp");
    let drift = (chrono::Utc::now().timestamp() - ts_num).abs();
    assert!(drift < 60, "webhook-timestamp {ts} is {drift} s off");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let want = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    // The header may carry several space-separated signatures.
    assert!(
        sig.split(' ').any(|s| s == want),
        "signature {sig:?} does not match {want:?}"
    );
}

/// 1. A contact created through the API is assigned round robin and greeted
///    with its salesperson's name; the request is signed and carries the
///    message id as its idempotency key; the owner is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_created_through_the_api_is_assigned_and_greeted() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write(
        "workflows/greet.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: east, strategy: round_robin }\n  - send: { channel: hook, template: welcome }\n",
    )
    .write(
        "templates/welcome.hbs",
        "Hi {{contact.name}}, I am {{owner.name}}.\n",
    );
    let d = Daemon::start(&p, &[]);

    let (status, v) = d
        .post("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    assert_eq!(status, 201, "{v}");
    let reqs = rx.wait_for(1, 10 * SECS).await;
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 1, "exactly one request for one contact");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");

    let eid = p
        .count("SELECT id FROM enrollments WHERE workflow = 'greet' AND contact_id = 'c1'")
        .await;
    let step = p
        .rows(&format!(
            "SELECT step_id FROM enrollment_steps WHERE enrollment_id = {eid} AND action = 'send'"
        ))
        .await;
    assert_eq!(step.len(), 1);
    let step = step[0]["step_id"].as_str().unwrap().to_string();
    let id = format!("greet:c1:{eid}:{step}");
    assert_eq!(r.header("Idempotency-Key"), Some(id.as_str()));
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    verify_signature(r);

    let b = r.json();
    assert_eq!(b["message_id"], id);
    assert_eq!(b["workflow"], "greet");
    assert_eq!(b["contact_id"], "c1");
    assert_eq!(b["to"], "c1");
    assert_eq!(b["body"], "Hi Ada, I am Wang Fang.");
    assert_eq!(b["contact"]["name"], "Ada");
    assert!(b.get("subject").is_some(), "subject is in the body (null)");

    let owner = p.rows("SELECT owner FROM contacts WHERE id = 'c1'").await;
    assert_eq!(owner[0]["owner"], "s1");
    p.wait_count(
        &format!("SELECT count(*) FROM outbox WHERE id = '{id}' AND status = 'sent'"),
        1,
        5 * SECS,
    )
    .await;

    // Round robin goes on with the next salesperson.
    d.post_ok("/v1/contacts", json!({"id": "c2", "name": "Bo"}))
        .await;
    let reqs = rx.wait_for(2, 10 * SECS).await;
    assert_eq!(body_of(&reqs[1]), "Hi Bo, I am Li Lei.");
    let owner = p.rows("SELECT owner FROM contacts WHERE id = 'c2'").await;
    assert_eq!(owner[0]["owner"], "s2");
    stop(d, &p);
}

/// 2. A tag added with the CLI while the daemon runs starts the tag_added workflow.
/// The workflows a daemon starts with are active by the time it says it
/// listens: a contact the API takes right after that line enrolls. (They
/// used to be activated by the scheduler's first pass, a few milliseconds
/// later; a contact created in between was passed over as from before the
/// workflow's activation, about one run in six on a loaded machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_active_before_the_daemon_listens() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hi {{contact.name}}\n");
    let before = now_ms();
    let d = Daemon::start(&p, &[]);
    let listening = now_ms();
    let activated = p
        .count("SELECT activated_at FROM workflow_states WHERE workflow = 'greet'")
        .await;
    assert!(
        (before..=listening).contains(&activated),
        "activated at {activated}, the daemon started at {before} and listened by {listening}"
    );
    let (status, v) = d
        .post("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    assert_eq!(status, 201, "{v}");
    rx.wait_for(1, 10 * SECS).await;
    stop(d, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_added_through_the_cli_starts_its_workflow() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write(
        "workflows/vip.yaml",
        "trigger: { tag_added: { tag: vip } }\nsteps:\n  - send: { channel: hook, template: vip }\n",
    )
    .write("templates/vip.hbs", "Welcome to the club, {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 0, "no message before the tag");

    p.ok(&["contacts", "tag", "c1", "--add", "vip"]);
    let reqs = rx.wait_for(1, 10 * SECS).await;
    assert_eq!(contact_of(&reqs[0]), "c1");
    assert_eq!(body_of(&reqs[0]), "Welcome to the club, Ada");
    assert_eq!(reqs[0].json()["workflow"], "vip");
    // Adding it again is no new tag: nothing more.
    p.ok(&["contacts", "tag", "c1", "--add", "vip"]);
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 1);
    stop(d, &p);
}

/// 3. `wait: 2s` then a branch on a tag: each contact gets its branch's
///    message, and neither before the wait elapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_and_branches() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write(
        "workflows/branch.yaml",
        r#"trigger: { contact_created: {} }
steps:
  - wait: 2s
  - if: { tag: vip }
    then:
      - send: { channel: hook, template: vip_offer }
    else:
      - send: { channel: hook, template: regular_offer }
"#,
    )
    .write("templates/vip_offer.hbs", "VIP offer for {{contact.name}}")
    .write(
        "templates/regular_offer.hbs",
        "Regular offer for {{contact.name}}",
    );
    let d = Daemon::start(&p, &[]);
    let t0 = Instant::now();
    d.post_ok(
        "/v1/contacts",
        json!({"id": "v1", "name": "Vee", "tags": ["vip"]}),
    )
    .await;
    d.post_ok("/v1/contacts", json!({"id": "r1", "name": "Arr"}))
        .await;
    // Nothing is sent during the wait: every request below arrives after it.
    let reqs = rx.wait_for(2, 10 * SECS).await;
    for r in &reqs {
        let after = r.at.duration_since(t0);
        assert!(
            after >= Duration::from_millis(1950),
            "sent {after:?} after the contact was created"
        );
        match contact_of(r).as_str() {
            "v1" => assert_eq!(body_of(r), "VIP offer for Vee"),
            "r1" => assert_eq!(body_of(r), "Regular offer for Arr"),
            other => panic!("unexpected contact {other}"),
        }
    }
    assert_ne!(contact_of(&reqs[0]), contact_of(&reqs[1]));
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 2);
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE status = 'done'",
        2,
        5 * SECS,
    )
    .await;
    stop(d, &p);
}

/// 4. `exit_when: { event: purchase }`: a purchase recorded during the wait
///    ends the enrollment (goal_reached) before the second message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_reached_during_the_wait_stops_the_workflow() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write(
        "workflows/nurture-buyers.yaml",
        r#"trigger: { contact_created: {} }
exit_when: { event: purchase }
steps:
  - send: { channel: hook, template: first }
  - wait: 2s
  - send: { channel: hook, template: second }
"#,
    )
    .write("templates/first.hbs", "first for {{contact.name}}")
    .write("templates/second.hbs", "second for {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "buyer", "name": "Bea"}))
        .await;
    d.post_ok("/v1/contacts", json!({"id": "lurker", "name": "Lu"}))
        .await;
    rx.wait_for(2, 10 * SECS).await;
    let (status, v) = d
        .post(
            "/v1/events",
            json!({"contact_id": "buyer", "name": "purchase"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    // The lurker gets the second message after the wait; the buyer does not.
    let reqs = rx.wait_for(3, 10 * SECS).await;
    assert_eq!(contact_of(&reqs[2]), "lurker");
    assert_eq!(body_of(&reqs[2]), "second for Lu");
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE contact_id = 'buyer' AND status = 'exited' AND end_reason = 'goal_reached'",
        1,
        5 * SECS,
    )
    .await;
    p.settled(10 * SECS).await;
    let buyer: Vec<String> = rx
        .requests()
        .iter()
        .filter(|r| contact_of(r) == "buyer")
        .map(body_of)
        .collect();
    assert_eq!(buyer, ["first for Bea"]);

    let history = p.ok(&["history", "buyer"]);
    assert_eq!(p.ok(&["history", "--contact", "buyer"]), history);
    let o = p.command().arg("history").output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("<ID>"), "{err}");
    assert!(
        history
            .lines()
            .any(|l| l.contains("exited") && l.contains("goal_reached")),
        "history shows the exit with goal_reached:\n{history}"
    );
    stop(d, &p);
}

/// `HH:MM` in Asia/Shanghai, `offset_min` minutes from now.
fn shanghai_hhmm(offset_min: i64) -> String {
    let t = chrono::Utc::now() + chrono::Duration::minutes(offset_min);
    t.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%H:%M")
        .to_string()
}

/// 5a. Quiet hours covering now (in the settings' timezone): the message is
///     queued for the end of the window and nothing is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_the_message() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let policies = format!(
        "policies:\n  quiet_hours: {{ start: \"{}\", end: \"{}\" }}\n",
        shanghai_hhmm(-60),
        shanghai_hhmm(120)
    );
    let p = Project::new(&settings(&rx, "", &policies));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    p.wait_count("SELECT count(*) FROM outbox", 1, 10 * SECS)
        .await;
    let row = &p
        .rows("SELECT status, not_before, next_attempt_at FROM outbox")
        .await[0];
    let not_before = row["not_before"].as_i64().unwrap();
    // The window ends 2 h from now, give or take the minute's rounding.
    let ahead = not_before - now_ms();
    assert!(
        ahead > 115 * 60_000 && ahead <= 121 * 60_000,
        "not_before is {ahead} ms ahead"
    );
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 0, "nothing is delivered in quiet hours");
    let row = &p.rows("SELECT status FROM outbox").await[0];
    assert_eq!(row["status"], "queued");
    stop(d, &p);
}

/// 5b. A frequency cap of one message holds across two workflows on the same
///     trigger: one message, and the other workflow's step is a skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frequency_cap_holds_across_workflows() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(
        &rx,
        "",
        "policies:\n  frequency_cap: { max: 1, per: 7d }\n",
    ));
    p.write("workflows/a.yaml", &greet_workflow("a"))
        .write("workflows/b.yaml", &greet_workflow("b"))
        .write("templates/a.hbs", "from a")
        .write("templates/b.hbs", "from b");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    rx.wait_for(1, 10 * SECS).await;
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE status = 'done'",
        2,
        5 * SECS,
    )
    .await;
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 1, "one message in all");
    let steps = p
        .rows(
            "SELECT e.workflow, s.action, s.detail FROM enrollment_steps s
               JOIN enrollments e ON e.id = s.enrollment_id ORDER BY e.workflow",
        )
        .await;
    assert_eq!(steps.len(), 2, "{steps:?}");
    let actions: Vec<&str> = steps
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"send") && actions.contains(&"skip"),
        "{steps:?}"
    );
    let skip = steps.iter().find(|s| s["action"] == "skip").unwrap();
    assert_eq!(skip["detail"], "frequency_cap");
    // The message that went out is the one of the workflow that sent.
    let sent = steps.iter().find(|s| s["action"] == "send").unwrap();
    assert_eq!(rx.requests()[0].json()["workflow"], sent["workflow"]);
    assert_eq!(p.count("SELECT count(*) FROM outbox").await, 1);
    stop(d, &p);
}

/// 6. An unsubscribe that arrives while the message waits for its channel
///    (concurrency 1, the endpoint busy with another contact's message for
///    4 s) cancels it: it ends `cancelled` and never reaches the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_stops_a_queued_message() {
    let rx = Receiver::start(script::first_then(
        1,
        Reply::ok().delay(4 * SECS),
        Reply::ok(),
    ))
    .await;
    let p = Project::new(&settings(&rx, ", concurrency: 1", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "busy", "name": "Bee"}))
        .await;
    rx.wait_for(1, 10 * SECS).await;
    d.post_ok("/v1/contacts", json!({"id": "leaver", "name": "Lee"}))
        .await;
    p.wait_count(
        // Claimed by the worker, waiting for the channel's one slot.
        "SELECT count(*) FROM outbox WHERE contact_id = 'leaver' AND status = 'sending'",
        1,
        5 * SECS,
    )
    .await;
    let (status, v) = d.post("/v1/contacts/leaver/unsubscribe", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "unsubscribed");
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE contact_id = 'leaver' AND status = 'cancelled'",
        1,
        10 * SECS,
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE contact_id = 'busy' AND status = 'sent'",
        1,
        10 * SECS,
    )
    .await;
    p.settled(10 * SECS).await;
    assert!(
        rx.requests().iter().all(|r| contact_of(r) != "leaver"),
        "the unsubscribed contact's message reached the endpoint"
    );
    assert_eq!(rx.count(), 1);
    let row = &p
        .rows("SELECT last_error FROM outbox WHERE contact_id = 'leaver'")
        .await[0];
    assert_eq!(row["last_error"], "unsubscribed");
    stop(d, &p);
}

/// A project with one greet workflow on `rx`; a contact `c1` created.
async fn one_message(rx: &Receiver, args: &[&str]) -> (Project, Daemon) {
    let p = Project::new(&settings(rx, "", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, args);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    (p, d)
}

/// 7a. 500, 500, then 200: delivered on the third try, same key each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_5xx_until_delivered() {
    let rx = Receiver::start(script::fail_first(2, 500)).await;
    let (p, d) = one_message(&rx, &["--backoff-ms", "100"]).await;
    let reqs = rx.wait_for(3, 10 * SECS).await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent' AND attempts = 3",
        1,
        5 * SECS,
    )
    .await;
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 3);
    let key = reqs[0].header("Idempotency-Key").unwrap().to_string();
    assert!(
        reqs.iter()
            .all(|r| r.header("Idempotency-Key") == Some(key.as_str()))
    );
    for r in &reqs {
        verify_signature(r);
    }
    stop(d, &p);
}

/// 7b. 429 with `Retry-After: 1`: the second try comes at least 1 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let rx = Receiver::start(script::first_then(
        1,
        Reply::status(429).header("Retry-After", "1"),
        Reply::ok(),
    ))
    .await;
    let (p, d) = one_message(&rx, &["--backoff-ms", "10"]).await;
    let reqs = rx.wait_for(2, 10 * SECS).await;
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= SECS,
        "second try {gap:?} after a 429 with Retry-After: 1"
    );
    assert!(gap < 5 * SECS, "second try only after {gap:?}");
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent' AND attempts = 2",
        1,
        5 * SECS,
    )
    .await;
    stop(d, &p);
}

/// 7c. A 400 is permanent: one request, the message dead with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_not_retried() {
    let rx = Receiver::start(script::always(Reply::status(400).body("unknown recipient"))).await;
    let (p, d) = one_message(&rx, &["--backoff-ms", "100"]).await;
    rx.wait_for(1, 10 * SECS).await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'dead'",
        1,
        5 * SECS,
    )
    .await;
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 1, "a permanent error is not retried");
    let row = &p.rows("SELECT attempts, last_error FROM outbox").await[0];
    assert_eq!(row["attempts"], 1);
    let err = row["last_error"].as_str().unwrap();
    assert!(
        err.contains("400") && err.contains("unknown recipient"),
        "last_error: {err}"
    );
    stop(d, &p);
}

/// 7d. Always 500 with `--max-attempts 3`: three requests, then dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_attempts() {
    let rx = Receiver::start(script::always(Reply::status(500).body("down"))).await;
    let (p, d) = one_message(&rx, &["--backoff-ms", "100", "--max-attempts", "3"]).await;
    rx.wait_for(3, 10 * SECS).await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'dead'",
        1,
        5 * SECS,
    )
    .await;
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 3, "no try after the last");
    let row = &p.rows("SELECT attempts, last_error FROM outbox").await[0];
    assert_eq!(row["attempts"], 3);
    let err = row["last_error"].as_str().unwrap();
    assert!(err.contains("500"), "last_error: {err}");
    stop(d, &p);
}

/// Waits until `needle` occurs in the daemon's log more than `before` times.
async fn wait_log(p: &Project, needle: &str, before: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if p.log().matches(needle).count() > before {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{needle:?} not logged within {timeout:?}; log:\n{}",
                p.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `nurture status --format json` entry of a file whose path ends with `suffix`.
fn file_state(p: &Project, suffix: &str) -> Value {
    let out = p.ok(&["status", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no file {suffix} in status: {v}"))
        .clone()
}

/// A workflow added while the daemon runs is active once the reload that
/// takes it is logged: a contact created right after enrolls in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_added_by_a_reload_is_active_when_the_reload_is_logged() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    let reloads = p.log().matches("reloaded workflows and templates").count();
    p.write("templates/second.hbs", "Second {{contact.name}}")
        .write("workflows/second.yaml", &greet_workflow("second"));
    let second = "SELECT count(*) FROM workflow_states WHERE workflow = 'second'";
    // The template may be taken by an earlier reload than the workflow.
    let deadline = Instant::now() + 10 * SECS;
    while !p.log().contains("workflows/second.yaml") {
        assert!(
            Instant::now() < deadline,
            "never loaded:
{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_log(&p, "reloaded workflows and templates", reloads, 10 * SECS).await;
    assert_eq!(
        p.count(second).await,
        1,
        "activated by the reload:
{}",
        p.log()
    );
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    let reqs = rx.wait_for(2, 10 * SECS).await;
    let mut bodies: Vec<String> = reqs.iter().map(body_of).collect();
    bodies.sort();
    assert_eq!(bodies, ["Hello Ada", "Second Ada"]);
    stop(d, &p);
}

/// 8. Hot reload: a valid template edit applies to the next contact without a
///    restart; a broken workflow (bad YAML, then an unknown channel) is
///    rejected with its diagnostic in the log and in `status`, and the last
///    valid version keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_takes_valid_edits_and_keeps_the_last_good_version() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello v1 {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    let reqs = rx.wait_for(1, 10 * SECS).await;
    assert_eq!(body_of(&reqs[0]), "Hello v1 Ada");

    // A valid edit of the template.
    let reloads = p.log().matches("reloaded workflows and templates").count();
    p.write("templates/welcome.hbs", "Hello v2 {{contact.name}}");
    wait_log(&p, "reloaded workflows and templates", reloads, 10 * SECS).await;
    d.post_ok("/v1/contacts", json!({"id": "c2", "name": "Bo"}))
        .await;
    let reqs = rx.wait_for(2, 10 * SECS).await;
    assert_eq!(body_of(&reqs[1]), "Hello v2 Bo");

    // Broken YAML in the workflow.
    let rejected = p.log().matches("reload rejected").count();
    p.write(
        "workflows/greet.yaml",
        "trigger: { contact_created: {} \nsteps:\n  - send: [\n",
    );
    wait_log(&p, "reload rejected", rejected, 10 * SECS).await;
    assert!(
        p.log().contains("greet.yaml:2:"),
        "the diagnostic names the file and line:\n{}",
        p.log()
    );
    let f = file_state(&p, "greet.yaml");
    assert_eq!(f["state"], "broken", "{f}");
    assert!(
        !f["diagnostics"].as_array().unwrap().is_empty(),
        "status shows the diagnostic: {f}"
    );
    assert!(f["running_version"].is_string(), "{f}");
    assert_eq!(workflow_state(&p, "greet")["state"], "edit_rejected");
    d.post_ok("/v1/contacts", json!({"id": "c3", "name": "Cy"}))
        .await;
    let reqs = rx.wait_for(3, 10 * SECS).await;
    assert_eq!(
        body_of(&reqs[2]),
        "Hello v2 Cy",
        "the last valid version runs"
    );

    // Valid YAML, but a channel that does not exist.
    let rejected = p.log().matches("reload rejected").count();
    p.write(
        "workflows/greet.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: nowhere, template: welcome }\n",
    );
    wait_log(&p, "reload rejected", rejected, 10 * SECS).await;
    assert!(
        p.log().contains("greet.yaml:3:") && p.log().contains("\"nowhere\""),
        "the diagnostic names the channel:\n{}",
        p.log()
    );
    // The log line comes first; `status` follows once the state is recorded.
    let f = wait_file(&p, "greet.yaml", |f| f["state"] == "broken", 10 * SECS).await;
    assert!(
        f["diagnostics"].to_string().contains("nowhere"),
        "status shows the unknown channel: {f}"
    );
    d.post_ok("/v1/contacts", json!({"id": "c4", "name": "Di"}))
        .await;
    let reqs = rx.wait_for(4, 10 * SECS).await;
    assert_eq!(body_of(&reqs[3]), "Hello v2 Di");
    assert_eq!(reqs[3].json()["workflow"], "greet");

    // Fixed (and changed): loaded again, and the new version runs.
    let reloads = p.log().matches("reloaded workflows and templates").count();
    p.write("templates/bye.hbs", "Fixed {{contact.name}}");
    p.write("workflows/greet.yaml", &greet_workflow("bye"));
    wait_log(&p, "reloaded workflows and templates", reloads, 10 * SECS).await;
    wait_file(&p, "greet.yaml", |f| f["state"] == "loaded", 10 * SECS).await;
    d.post_ok("/v1/contacts", json!({"id": "c5", "name": "Ed"}))
        .await;
    let reqs = rx.wait_for(5, 10 * SECS).await;
    assert_eq!(body_of(&reqs[4]), "Fixed Ed");
    stop(d, &p);
}

/// The first 12 hex digits of the SHA-256 of `text`: how `status` names a
/// file version (computed here independently of nurture).
fn version_of(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls `nurture status --format json` until the entry of the file ending
/// with `suffix` satisfies `ok`; panics after `timeout` with the last entry.
async fn wait_file(
    p: &Project,
    suffix: &str,
    ok: impl Fn(&Value) -> bool,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let out = p.ok(&["status", "--format", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let f = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"].as_str().unwrap().ends_with(suffix))
            .cloned();
        if let Some(f) = &f
            && ok(f)
        {
            return f.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "{suffix} not as expected within {timeout:?}: {f:?}\nstatus: {v}\nlog:\n{}",
                p.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `nurture status --format json` row of workflow `name`.
fn workflow_state(p: &Project, name: &str) -> Value {
    let out = p.ok(&["status", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no workflow {name} in status: {v}"))
        .clone()
}

/// 8b. Per-file reload: a template broken in the same save as a new, valid
///     workflow does not hold the workflow back. The new workflow starts
///     (a contact created after gets its message), the workflow that sends
///     the broken template keeps its last valid version, and `status` shows
///     the template's running version and its rejected edit. A new workflow
///     whose template never had a valid version is rejected, and starts
///     once the template is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_does_not_hold_back_a_new_workflow() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    let v1 = "Hello v1 {{contact.name}}";
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", v1);
    let d = Daemon::start(&p, &[]);
    wait_file(
        &p,
        "templates/welcome.hbs",
        |f| f["running_version"] == version_of(v1).as_str(),
        10 * SECS,
    )
    .await;

    // One save: the template broken, a new workflow with its own template,
    // and another new workflow whose template is broken from the start.
    let broken = "Hello {{#if contact.name}} v2";
    p.write("templates/welcome.hbs", broken)
        .write("templates/vip.hbs", "Welcome aboard {{contact.name}}")
        .write(
            "workflows/onboard.yaml",
            "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: hook, template: vip }\n",
        )
        .write("templates/nope.hbs", "Oops {{/if}}")
        .write(
            "workflows/never.yaml",
            "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: hook, template: nope }\n",
        );
    let onboard = wait_file(
        &p,
        "workflows/onboard.yaml",
        |f| f["state"] == "loaded" && f["running_version"].is_string(),
        10 * SECS,
    )
    .await;
    assert!(
        onboard["diagnostics"].as_array().unwrap().is_empty(),
        "{onboard}"
    );
    let t = wait_file(
        &p,
        "templates/welcome.hbs",
        |f| f["state"] == "broken",
        10 * SECS,
    )
    .await;
    assert_eq!(t["running_version"], version_of(v1).as_str(), "{t}");
    assert_eq!(t["rejected_version"], version_of(broken).as_str(), "{t}");
    assert!(
        t["loaded_at"].is_string() && t["rejected_at"].is_string(),
        "{t}"
    );
    let diag = t["diagnostics"][0].as_str().unwrap();
    assert!(diag.contains("welcome.hbs:1:"), "FILE:LINE:COLUMN: {t}");
    let never = wait_file(
        &p,
        "workflows/never.yaml",
        |f| f["state"] == "broken",
        10 * SECS,
    )
    .await;
    assert!(never["running_version"].is_null(), "{never}");
    assert!(
        never["diagnostics"]
            .to_string()
            .contains("no valid version"),
        "{never}"
    );
    assert!(
        never["diagnostics"][0]
            .as_str()
            .unwrap()
            .contains("never.yaml:3:"),
        "{never}"
    );
    assert_eq!(workflow_state(&p, "greet")["state"], "loaded");
    assert_eq!(workflow_state(&p, "onboard")["state"], "loaded");
    assert_eq!(workflow_state(&p, "never")["state"], "broken");
    assert!(p.log().contains("reload rejected"), "{}", p.log());

    // A contact created now: the new workflow greets it, the old one with
    // its template's last valid version, and `never` does not run.
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    let reqs = rx.wait_for(2, 10 * SECS).await;
    let mut bodies: Vec<String> = reqs.iter().map(body_of).collect();
    bodies.sort();
    assert_eq!(bodies, ["Hello v1 Ada", "Welcome aboard Ada"]);

    // Fixed: both load, and `never` starts.
    let v2 = "Hello v2 {{contact.name}}";
    p.write("templates/welcome.hbs", v2)
        .write("templates/nope.hbs", "Fixed {{contact.name}}");
    wait_file(
        &p,
        "workflows/never.yaml",
        |f| f["state"] == "loaded" && f["running_version"].is_string(),
        10 * SECS,
    )
    .await;
    let t = wait_file(
        &p,
        "templates/welcome.hbs",
        |f| f["state"] == "loaded",
        10 * SECS,
    )
    .await;
    assert_eq!(t["running_version"], version_of(v2).as_str(), "{t}");
    assert!(t["rejected_version"].is_null(), "{t}");
    d.post_ok("/v1/contacts", json!({"id": "c2", "name": "Bo"}))
        .await;
    let reqs = rx.wait_for(5, 10 * SECS).await;
    let mut bodies: Vec<String> = reqs[2..].iter().map(body_of).collect();
    bodies.sort();
    assert_eq!(bodies, ["Fixed Bo", "Hello v2 Bo", "Welcome aboard Bo"]);
    stop(d, &p);
}

/// 8c. A copied workflow file with the same `name` is the one flagged (even
///     though its file name sorts first); the original keeps running alone.
///     Once the copy gets a name of its own, it loads and runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_workflow_with_the_same_name_is_the_one_flagged() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    let original = format!("name: greet\n{}", greet_workflow("welcome"));
    p.write("workflows/greet.yaml", &original)
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    wait_file(
        &p,
        "workflows/greet.yaml",
        |f| f["state"] == "loaded",
        10 * SECS,
    )
    .await;

    p.write("workflows/a-copy.yaml", &original);
    let copy = wait_file(
        &p,
        "workflows/a-copy.yaml",
        |f| f["state"] == "broken",
        10 * SECS,
    )
    .await;
    assert!(copy["running_version"].is_null(), "{copy}");
    let diag = copy["diagnostics"][0].as_str().unwrap();
    assert!(
        diag.contains("a-copy.yaml:1:")
            && diag.contains("already used")
            && diag.contains("greet.yaml"),
        "{copy}"
    );
    let orig = file_state(&p, "workflows/greet.yaml");
    assert_eq!(orig["state"], "loaded", "{orig}");
    assert_eq!(
        orig["running_version"],
        version_of(&original).as_str(),
        "{orig}"
    );
    let w = workflow_state(&p, "greet");
    assert_eq!(w["state"], "loaded", "{w}");
    assert_eq!(w["file"], "workflows/greet.yaml", "{w}");

    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    rx.wait_for(1, 10 * SECS).await;
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE contact_id = 'c1' AND status <> 'active'",
        1,
        10 * SECS,
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM outbox WHERE contact_id = 'c1'")
            .await,
        1,
        "one greeting: the copy does not run"
    );

    // The copy gets its own name: it loads.
    let renamed = format!("name: greet-copy\n{}", greet_workflow("welcome"));
    p.write("workflows/a-copy.yaml", &renamed);
    let copy = wait_file(
        &p,
        "workflows/a-copy.yaml",
        |f| f["state"] == "loaded",
        10 * SECS,
    )
    .await;
    assert_eq!(
        copy["running_version"],
        version_of(&renamed).as_str(),
        "{copy}"
    );
    d.post_ok("/v1/contacts", json!({"id": "c2", "name": "Bo"}))
        .await;
    let reqs = rx.wait_for(3, 10 * SECS).await;
    let mut wfs: Vec<String> = reqs[1..]
        .iter()
        .map(|r| r.json()["workflow"].as_str().unwrap().to_string())
        .collect();
    wfs.sort();
    assert_eq!(wfs, ["greet", "greet-copy"]);
    stop(d, &p);
}

/// 9. SIGTERM with messages in flight (the endpoint takes 1 s per answer,
///    two at a time): exit 0 within a few seconds, nothing left `sending`,
///    and a restart delivers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_restart_delivers_the_rest() {
    let rx = Receiver::start(script::always(Reply::ok().delay(SECS))).await;
    let p = Project::new(&settings(&rx, ", concurrency: 2", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    for i in 0..8 {
        d.post_ok(
            "/v1/contacts",
            json!({"id": format!("c{i}"), "name": format!("N{i}")}),
        )
        .await;
    }
    p.wait_count("SELECT count(*) FROM outbox", 8, 10 * SECS)
        .await;
    rx.wait_for(2, 10 * SECS).await;

    let (status, took) = d.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", p.log());
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");

    let rows = p
        .rows("SELECT id, status, lease_owner FROM outbox ORDER BY id")
        .await;
    assert_eq!(rows.len(), 8);
    for r in &rows {
        let s = r["status"].as_str().unwrap();
        assert!(s == "sent" || s == "queued", "{r:?} after SIGTERM");
        if s == "queued" {
            assert!(r["lease_owner"].is_null(), "{r:?} still leased");
        }
    }
    let sent_before = rows.iter().filter(|r| r["status"] == "sent").count();
    assert!(sent_before >= 2, "the calls in flight finished: {rows:?}");
    assert!(
        sent_before < 8,
        "some messages were handed back (else the test proves little): {rows:?}"
    );
    // Every message whose call finished is recorded as sent.
    let seen_before = rx.count();
    assert!(seen_before >= sent_before);

    let d = Daemon::start(&p, &[]);
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent'",
        8,
        15 * SECS,
    )
    .await;
    let keys: std::collections::BTreeSet<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("Idempotency-Key").unwrap().to_string())
        .collect();
    let ids: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ids, "every message reached the endpoint");
    stop(d, &p);
}

/// 10. Rows written straight into the store by another system (contacts,
///     contact_tags, events) trigger workflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_by_another_system_trigger_workflows() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write(
            "workflows/vip.yaml",
            "trigger: { tag_added: { tag: vip } }\nsteps:\n  - send: { channel: hook, template: vip }\n",
        )
        .write(
            "workflows/thanks.yaml",
            "trigger: { event: { name: purchase } }\nsteps:\n  - send: { channel: hook, template: thanks }\n",
        )
        .write("templates/welcome.hbs", "welcome {{contact.name}}")
        .write("templates/vip.hbs", "vip {{contact.name}}")
        .write("templates/thanks.hbs", "thanks {{contact.name}}");
    let d = Daemon::start(&p, &[]);

    let now = now_ms();
    p.exec(&format!(
        "INSERT INTO contacts (id, name, created_at, updated_at) VALUES ('sql1', 'Sequel', {now}, {now})"
    ))
    .await;
    let reqs = rx.wait_for(1, 10 * SECS).await;
    assert_eq!(body_of(&reqs[0]), "welcome Sequel");

    p.exec(&format!(
        "INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ('sql1', 'vip', {})",
        now_ms()
    ))
    .await;
    let reqs = rx.wait_for(2, 10 * SECS).await;
    assert_eq!(body_of(&reqs[1]), "vip Sequel");

    p.exec(&format!(
        "INSERT INTO events (contact_id, name, at) VALUES ('sql1', 'purchase', {})",
        now_ms()
    ))
    .await;
    let reqs = rx.wait_for(3, 10 * SECS).await;
    assert_eq!(body_of(&reqs[2]), "thanks Sequel");
    let workflows: Vec<Value> = reqs.iter().map(|r| r.json()["workflow"].clone()).collect();
    assert_eq!(workflows, ["greet", "vip", "thanks"]);

    // A row whose attributes are not a JSON object is refused where it is
    // written, with a message naming the column: it cannot get into the
    // store and break the scans of every other contact.
    let pool = p.pool().await;
    for bad in ["not json", "[1, 2]"] {
        let err = sqlx::query(
            "INSERT INTO contacts (id, name, attrs, created_at, updated_at) VALUES ('bad', 'Bad', $1, $2, $2)",
        )
        .bind(bad)
        .bind(now_ms())
        .execute(&pool)
        .await
        .expect_err("a contact with non-object attrs is refused");
        assert!(err.to_string().contains("attrs"), "{err}");
    }
    let err = sqlx::query("UPDATE contacts SET attrs = 'oops' WHERE id = 'sql1'")
        .execute(&pool)
        .await
        .expect_err("an update to non-object attrs is refused");
    assert!(err.to_string().contains("attrs"), "{err}");
    pool.close().await;
    p.exec(&format!(
        "INSERT INTO contacts (id, name, attrs, created_at, updated_at) VALUES ('sql2', 'Good', '{{\"city\":\"Hangzhou\"}}', {now}, {now})"
    ))
    .await;
    let reqs = rx.wait_for(4, 10 * SECS).await;
    assert_eq!(body_of(&reqs[3]), "welcome Good");
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 4);
    stop(d, &p);
}

/// 6b. The same while the message waits for the end of quiet hours (hours
///     away): the unsubscribe cancels it at once rather than leaving it
///     `queued` for an unsubscribed contact until the window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_cancels_a_message_held_by_quiet_hours() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let policies = format!(
        "policies:\n  quiet_hours: {{ start: \"{}\", end: \"{}\" }}\n",
        shanghai_hhmm(-60),
        shanghai_hhmm(120)
    );
    let p = Project::new(&settings(&rx, "", &policies));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    d.post_ok("/v1/contacts", json!({"id": "c2", "name": "Bo"}))
        .await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'queued'",
        2,
        10 * SECS,
    )
    .await;
    d.post_ok("/v1/contacts/c1/unsubscribe", json!({})).await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE contact_id = 'c1' AND status = 'cancelled' AND last_error = 'unsubscribed'",
        1,
        5 * SECS,
    )
    .await;
    // The other contact's message still waits for the window's end.
    let other = &p
        .rows("SELECT status FROM outbox WHERE contact_id = 'c2'")
        .await[0];
    assert_eq!(other["status"], "queued");
    assert_eq!(rx.count(), 0);
    // Not silent: a log line, a metric, a count in status, a line in history.
    assert!(
        p.log().contains("message cancelled") && p.log().contains("c1"),
        "{}",
        p.log()
    );
    let m = metrics_text(&d).await;
    assert!(
        m.contains(
            "nurture_messages_cancelled_total{workflow=\"greet\",reason=\"unsubscribed\"} 1"
        ),
        "{m}"
    );
    let w = workflow_state(&p, "greet");
    assert_eq!(w["cancelled_by_reason"]["unsubscribed"], 1, "{w}");
    let h = p.ok(&["history", "--contact", "c1"]);
    assert!(
        h.contains("greet: message (template ") && h.contains("on hook cancelled: unsubscribed"),
        "{h}"
    );
    // Dated when the unsubscribe cancelled it, not at the end of quiet
    // hours it was waiting for (two hours away).
    let at = |kind: &str| -> chrono::DateTime<chrono::FixedOffset> {
        let lines = p.ok(&["history", "--contact", "c1", "--format", "jsonl"]);
        let line = lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {lines}"));
        chrono::DateTime::parse_from_rfc3339(line["at"].as_str().unwrap()).unwrap()
    };
    let late = at("message_cancelled") - at("unsubscribed");
    assert!(
        late.num_seconds().abs() < 60,
        "cancelled {late} after the unsubscribe"
    );
    stop(d, &p);
}

/// `GET /metrics` of a running daemon.
async fn metrics_text(d: &Daemon) -> String {
    reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// 11b. Nothing silent: a template that fails at run time (a declared
///      attribute the contact lacks) is a skip with a log line, a metric, a
///      count per reason in `status` (JSON and table) and a line in
///      `history`; a dead letter likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skips_and_dead_letters_at_run_time_are_not_silent() {
    let rx = Receiver::start(script::always(Reply::status(400))).await;
    let p = Project::new(&settings(&rx, "", "fields:\n  city: string\n"));
    p.write("workflows/greet.yaml", &greet_workflow("city"))
        .write(
            "templates/city.hbs",
            "Hello {{contact.name}} in {{contact.city}}",
        );
    let d = Daemon::start(&p, &[]);
    // c1 has no city: the template fails for it. c2 has one: its message
    // goes out, and the receiver refuses it for good (400).
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    d.post_ok(
        "/v1/contacts",
        json!({"id": "c2", "name": "Bo", "city": "Hangzhou"}),
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE workflow = 'greet' AND status = 'done'",
        2,
        10 * SECS,
    )
    .await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'dead'",
        1,
        10 * SECS,
    )
    .await;

    // The log names the workflow, the contact, the step and the reason.
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("step skipped"))
        .unwrap_or_else(|| panic!("no skip logged:\n{log}"));
    for want in ["greet", "c1", "step=", "template_error"] {
        assert!(line.contains(want), "{want} missing in {line}");
    }
    let line = log
        .lines()
        .find(|l| l.contains("message dead-lettered"))
        .unwrap_or_else(|| panic!("no dead letter logged:\n{log}"));
    for want in ["greet", "c2", "permanent_error"] {
        assert!(line.contains(want), "{want} missing in {line}");
    }

    let m = metrics_text(&d).await;
    assert!(
        m.contains("nurture_skips_total{workflow=\"greet\",reason=\"template_error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("nurture_messages_dead_total{workflow=\"greet\",reason=\"permanent_error\"} 1"),
        "{m}"
    );

    let w = workflow_state(&p, "greet");
    assert_eq!(w["skipped"]["template_error"], 1, "{w}");
    assert_eq!(w["failed_by_reason"]["permanent_error"], 1, "{w}");
    let table = p.ok(&["status"]);
    let row = |what: &str, reason: &str| {
        table.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells == ["greet", what, reason, "1"]
        })
    };
    assert!(row("skipped", "template_error"), "{table}");
    assert!(row("failed", "permanent_error"), "{table}");

    let h = p.ok(&["history", "--contact", "c1"]);
    assert!(
        h.contains("greet: step 0 skipped (template_error: missing variable \"contact.city\""),
        "{h}"
    );
    let h = p.ok(&["history", "--contact", "c2"]);
    assert!(h.contains(") failed on hook after"), "{h}");
    stop(d, &p);
}

/// Logs: plain text without colour codes when stderr is not a terminal (a
/// file, journald), and one JSON object per line with `--log-format json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_text_off_a_terminal_and_json_on_request() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    rx.wait_for(1, 10 * SECS).await;
    stop(d, &p);
    let text = p.log();
    assert!(text.contains("listening"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log written to a file:\n{text:?}"
    );

    std::fs::remove_file(p.log_path()).unwrap();
    let d = Daemon::start(&p, &["--log-format", "json"]);
    d.post_ok("/v1/contacts", json!({"id": "c2", "name": "Bo"}))
        .await;
    rx.wait_for(2, 10 * SECS).await;
    stop(d, &p);
    let log = p.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
}

/// A 6-field cron (every 2 s) with `entry: every_time`: the tick seen at
/// start is only recorded, each later tick sends once per contact, and no
/// tick runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_ticks_run_once_each() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write(
        "workflows/pulse.yaml",
        "trigger: { schedule: { cron: \"*/2 * * * * *\" } }\nentry: every_time\nsteps:\n  - send: { channel: hook, template: pulse }\n",
    )
    .write("templates/pulse.hbs", "pulse for {{contact.name}}");
    p.ok(&["contacts", "add", "c1", "--name", "Ada"]);
    let d = Daemon::start(&p, &[]);
    let reqs = rx.wait_for(2, 10 * SECS).await;
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= SECS && gap <= Duration::from_millis(4500),
        "ticks {gap:?} apart"
    );
    stop(d, &p);
    let ticks = p.count("SELECT count(*) FROM cron_ticks").await;
    let messages = p.count("SELECT count(*) FROM outbox").await;
    assert_eq!(
        messages,
        ticks - 1,
        "one message per tick taken, except the first (only recorded)"
    );
    let ids: std::collections::BTreeSet<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("Idempotency-Key").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), rx.count(), "a message was sent twice");
    assert!(rx.requests().iter().all(|r| body_of(r) == "pulse for Ada"));
}

/// A daemon stopped during a wait resumes after a restart: the step after
/// the wait runs once, the one before it is not repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_an_enrollment_in_its_wait() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write(
        "workflows/drip.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: hook, template: one }\n  - wait: 2s\n  - send: { channel: hook, template: two }\n",
    )
    .write("templates/one.hbs", "one")
    .write("templates/two.hbs", "two");
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "Ada"}))
        .await;
    rx.wait_for(1, 10 * SECS).await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent'",
        1,
        5 * SECS,
    )
    .await;
    stop(d, &p);
    // Down for longer than the wait: until the step after it is overdue.
    let due = p
        .count("SELECT next_run_at FROM enrollments WHERE status = 'active'")
        .await;
    while chrono::Utc::now().timestamp_millis() <= due + 500 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.count(), 1);
    let restarted = Instant::now();
    let d = Daemon::start(&p, &[]);
    let reqs = rx.wait_for(2, 10 * SECS).await;
    assert!(
        reqs[1].at.duration_since(restarted) < 3 * SECS,
        "the overdue step ran promptly"
    );
    assert_eq!(body_of(&reqs[1]), "two");
    p.settled(10 * SECS).await;
    assert_eq!(rx.count(), 2, "nothing repeated");
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE status = 'done'",
        1,
        5 * SECS,
    )
    .await;
    stop(d, &p);
}

/// `--until-idle` exits 0 by itself once the event log is consumed and the
/// outbox delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_idle_exits_when_the_work_is_done() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", ""));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    p.ok(&["contacts", "add", "c1", "--name", "Ada"]);
    p.ok(&["contacts", "add", "c2", "--name", "Bo"]);
    support::db::running_since_epoch(&p.db_url(), &["greet"]);
    let mut d = Daemon::start(&p, &["--until-idle"]);
    let status = d.wait(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", p.log());
    assert_eq!(rx.count(), 2);
    assert_eq!(
        p.count("SELECT count(*) FROM outbox WHERE status = 'sent'")
            .await,
        2
    );
}

/// On PostgreSQL the daemon analyzes the enrollments once it has written
/// 5,000 (`store::statistics`): autovacuum looks at a database once a
/// minute, and the planner's lookup of a batch's enrollments, planned
/// meanwhile from "empty table" statistics, reads the whole table at every
/// pass. SQLite keeps no such statistics: there the test checks only that
/// the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_analyzes_the_enrollments_it_writes_on_postgres() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, "", "policies:\n  blast_guard: off\n"));
    p.write("workflows/greet.yaml", &greet_workflow("welcome"))
        .write("templates/welcome.hbs", "Hello {{contact.name}}");
    let n = 6_000;
    let mut csv = String::from("id,name\n");
    for i in 0..n {
        csv.push_str(&format!("c{i:05},Name {i}\n"));
    }
    p.write("contacts.csv", &csv);
    p.ok(&["contacts", "import", "contacts.csv"]);
    support::db::running_since_epoch(&p.db_url(), &["greet"]);
    let mut d = Daemon::start(&p, &["--until-idle"]);
    let status = d.wait(Duration::from_secs(120));
    assert!(status.success(), "exit {status}; log:\n{}", p.log());
    assert_eq!(p.count("SELECT count(*) FROM enrollments").await, n);
    assert_eq!(rx.count(), n as usize);
    if p.postgres.is_none() {
        return;
    }
    // Manual ANALYZEs only (autovacuum's are `autoanalyze_count`).
    p.wait_count(
        "SELECT count(*) FROM pg_stat_user_tables
          WHERE relname = 'enrollments' AND analyze_count > 0",
        1,
        Duration::from_secs(10),
    )
    .await;
}
