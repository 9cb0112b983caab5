//! "No surprise sends": what existed before a workflow was activated never
//! sets it off, goals look forward, the blast guard holds a mass enrollment
//! for confirmation, and the dry-run shows cron workflows at their real
//! ticks and drips beyond their first wait. The real binary, a real store
//! (SQLite, or PostgreSQL in the suite's second pass), a loopback webhook.

use crate::support;

use std::time::Duration;

use serde_json::json;

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

fn settings(rx: &Receiver, policies: &str) -> String {
    format!(
        r#"
timezone: Asia/Shanghai
channels:
  hook: {{ kind: webhook, url: "{}", secret_env: HOOK_SECRET }}
{policies}
"#,
        rx.url("/hook")
    )
}

fn bodies(rx: &Receiver) -> Vec<String> {
    let mut b: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.json()["body"].as_str().unwrap().to_string())
        .collect();
    b.sort();
    b
}

const WELCOME: &str =
    "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: hook, template: welcome }\n";
const VIP: &str =
    "trigger: { tag_added: { tag: vip } }\nsteps:\n  - send: { channel: hook, template: vip }\n";
const THANKS: &str = "trigger: { event: { name: purchase } }\nentry: every_time\nsteps:\n  - send: { channel: hook, template: thanks }\n";

fn project(rx: &Receiver, policies: &str) -> Project {
    let p = Project::new(&settings(rx, policies));
    p.write("workflows/welcome.yaml", WELCOME)
        .write("workflows/vip.yaml", VIP)
        .write("workflows/thanks.yaml", THANKS)
        .write("templates/welcome.hbs", "welcome {{contact.id}}")
        .write("templates/vip.hbs", "vip {{contact.id}}")
        .write("templates/thanks.hbs", "thanks {{contact.id}}");
    p
}

#[tokio::test]
async fn imports_and_backdated_events_set_nothing_off() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "");
    p.write(
        "old.csv",
        "id,name,created_at,tags\nold1,A,2025-01-01T00:00:00+08:00,vip\nold2,B,2025-02-01T00:00:00+08:00,\n",
    );
    p.ok(&["contacts", "import", p.path("old.csv").to_str().unwrap()]);

    // The dry-run before any daemon ran says why nothing would happen.
    let preview = p.ok(&["dry-run", "--format", "jsonl"]);
    assert!(preview.contains("before_activation"), "{preview}");
    assert!(!preview.contains("\"action\":\"send\""), "{preview}");

    let d = Daemon::start(&p, &[]);
    // The daemon has activated the workflows.
    p.wait_count(
        "SELECT count(*) FROM workflow_states",
        3,
        Duration::from_secs(15),
    )
    .await;
    // After activation: an import of more old contacts, one of them VIP, and a
    // backdated purchase for an old contact. None of it is news.
    p.write(
        "more.csv",
        "id,name,created_at,tags\nold3,C,2025-03-01T00:00:00+08:00,vip\n",
    );
    p.ok(&["contacts", "import", p.path("more.csv").to_str().unwrap()]);
    p.ok(&[
        "contacts",
        "event",
        "old1",
        "purchase",
        "--at",
        "2026-10-01T10:00:00+08:00",
    ]);
    // Then real news: a new contact, a tag added now, a purchase now.
    d.post_ok("/v1/contacts", json!({"id": "new1", "name": "N"}))
        .await;
    p.ok(&["contacts", "tag", "old2", "--add", "vip"]);
    p.ok(&["contacts", "event", "old1", "purchase"]);
    rx.wait_for(3, Duration::from_secs(20)).await;
    // Everything logged is consumed before the count is read.
    p.wait_count(
        "SELECT count(*) FROM event_log WHERE seq > (SELECT position FROM cursors WHERE name = 'daemon')",
        0,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        bodies(&rx),
        vec!["thanks old1", "vip old2", "welcome new1"],
        "log:\n{}",
        p.log()
    );
    let (status, _) = d.terminate(Duration::from_secs(15));
    assert!(status.success());
}

#[tokio::test]
async fn a_goal_counts_only_events_after_entry() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, ""));
    p.write(
        "workflows/nudge.yaml",
        "trigger: { tag_added: { tag: lapsed } }\nexit_when: { event: purchase }\nsteps:\n  - send: { channel: hook, template: nudge }\n  - wait: 3d\n  - send: { channel: hook, template: nudge }\n",
    )
    .write("templates/nudge.hbs", "nudge {{contact.id}}");
    let d = Daemon::start(&p, &[]);
    p.wait_count(
        "SELECT count(*) FROM workflow_states",
        1,
        Duration::from_secs(15),
    )
    .await;
    // Bought last month, lapsed today: the goal (a purchase) is not reached
    // by the old purchase.
    d.post_ok("/v1/contacts", json!({"id": "b1"})).await;
    p.ok(&[
        "contacts",
        "event",
        "b1",
        "purchase",
        "--at",
        "2026-10-01T10:00:00+08:00",
    ]);
    p.ok(&["contacts", "tag", "b1", "--add", "lapsed"]);
    rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(bodies(&rx), vec!["nudge b1"]);
    let explain = p.ok(&["dry-run", "--explain", "b1", "--workflow", "nudge"]);
    assert!(
        explain.contains("exit_when for an entry now (events after entry only) does not hold"),
        "{explain}"
    );
    assert!(
        explain.contains("does not hold: it goes on"),
        "the running enrollment has not bought since it entered: {explain}"
    );
    // A purchase now, after the entry: the running enrollment is at its
    // goal. The explanation says so, as the preview does.
    p.ok(&["contacts", "event", "b1", "purchase"]);
    let explain = p.ok(&["dry-run", "--explain", "b1", "--workflow", "nudge"]);
    assert!(
        explain.contains("holds: it leaves before its next step (goal_reached)"),
        "{explain}"
    );
    let preview = p.ok(&["dry-run", "--until", "7d", "--workflow", "nudge"]);
    assert!(preview.contains("goal_reached"), "{preview}");
    d.terminate(Duration::from_secs(15));
}

#[tokio::test]
async fn the_blast_guard_holds_a_mass_enrollment_until_resumed() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "policies:\n  blast_guard: { max: 3, per: 1h }\n");
    let d = Daemon::start(&p, &[]);
    p.wait_count(
        "SELECT count(*) FROM workflow_states",
        3,
        Duration::from_secs(15),
    )
    .await;
    // Five new contacts in one import: over the guard's 3 per hour.
    let mut csv = String::from("id,name\n");
    for i in 0..5 {
        csv.push_str(&format!("n{i},Name {i}\n"));
    }
    p.write("new.csv", &csv);
    p.ok(&["contacts", "import", p.path("new.csv").to_str().unwrap()]);
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE workflow = 'welcome' AND status = 'held'",
        5,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(rx.count(), 0, "nothing was sent while paused");
    let status = p.ok(&["status"]);
    assert!(
        status.contains("welcome: PAUSED by the blast guard"),
        "{status}"
    );
    assert!(p.log().contains("paused by the blast guard"));
    // One line for the five held, not a line per contact (a real mistaken
    // broadcast holds thousands).
    let log = p.log();
    assert!(
        log.contains("enrollments held by the blast guard") && log.contains("held=5"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("step skipped") && l.contains("blast_guard")),
        "{log}"
    );

    let out = p.ok(&["resume", "welcome"]);
    assert!(
        out.contains("5 held enrollment(s) are due now, and the daemon runs them"),
        "{out}"
    );
    rx.wait_for(5, Duration::from_secs(20)).await;
    assert_eq!(rx.count(), 5);
    let status = p.ok(&["status"]);
    assert!(!status.contains("PAUSED"), "{status}");
    d.terminate(Duration::from_secs(15));
}

#[test]
fn the_dry_run_shows_real_ticks_and_sees_past_the_first_wait() {
    let rx_settings = "timezone: Asia/Shanghai\nchannels:\n  log: { kind: log }\n";
    let p = Project::new(rx_settings);
    p.write(
        "workflows/monthly.yaml",
        "trigger: { schedule: { cron: \"0 10 1 * *\" } }\nsteps:\n  - send: { channel: log, template: news }\n",
    )
    .write(
        "workflows/drip.yaml",
        "trigger: { tag_added: { tag: trial } }\nsteps:\n  - send: { channel: log, template: news }\n  - wait: 3d\n  - id: day3\n    send: { channel: log, template: news }\n  - wait: 4d\n  - id: day7\n    send: { channel: log, template: news }\n",
    )
    .write("templates/news.hbs", "news for {{contact.id}}");
    p.write("c.csv", "id,name\nc1,A\nc2,B\n");
    p.ok(&["contacts", "import", p.path("c.csv").to_str().unwrap()]);

    // On the 5th, the monthly workflow does not tick: it shows its next tick.
    let table = p.ok(&["dry-run", "--at", "2026-11-05T10:00:00+08:00"]);
    assert!(
        table.contains("next tick 2026-12-01 10:00:00 +08:00"),
        "{table}"
    );
    assert!(
        !table.contains("monthly                      schedule                2"),
        "{table}"
    );

    // A tag added after the (assumed) activation: the drip's whole week.
    let at = chrono::Utc::now();
    p.ok(&["contacts", "tag", "c1", "--add", "trial"]);
    let rows = p.ok(&[
        "dry-run",
        "--at",
        &at.to_rfc3339(),
        "--until",
        "8d",
        "--workflow",
        "drip",
        "--format",
        "jsonl",
    ]);
    let steps: Vec<String> = rows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["action"] == "send")
        .map(|r| r["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, vec!["0", "day3", "day7"], "{rows}");
    // --workflow reports that workflow alone.
    assert!(
        rows.lines().all(|l| l.contains("\"workflow\":\"drip\"")),
        "{rows}"
    );

    // From the 5th: the 1st of November is the first sight (recorded, not
    // run), as a daemon started on the 5th does; the 1st of December runs.
    let table = p.ok(&[
        "dry-run",
        "--at",
        "2026-11-05T10:00:00+08:00",
        "--until",
        "2026-12-02T00:00",
        "--workflow",
        "monthly",
        "--format",
        "jsonl",
    ]);
    let sends: Vec<serde_json::Value> = table
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["action"] == "send")
        .collect();
    assert_eq!(sends.len(), 2, "{table}");
    assert!(
        sends
            .iter()
            .all(|r| r["at"].as_str().unwrap().starts_with("2026-12-01T10:00:00")),
        "{table}"
    );
}

#[tokio::test]
async fn existing_contacts_are_enrolled_only_on_purpose() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, ""));
    p.write(
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\naudience: { tag: newsletter }\nsteps:\n  - send: { channel: hook, template: hello }\n",
    )
    .write(
        "workflows/intro.yaml",
        "trigger: { tag_added: { tag: newsletter } }\nentry_existing: true\nsteps:\n  - send: { channel: hook, template: intro }\n",
    )
    .write("templates/hello.hbs", "hello {{contact.id}}")
    .write("templates/intro.hbs", "intro {{contact.id}}");
    p.write(
        "old.csv",
        "id,name,created_at,tags\no1,A,2025-01-01T00:00:00+08:00,newsletter\no2,B,2025-01-01T00:00:00+08:00,newsletter\no3,C,2025-01-01T00:00:00+08:00,\n",
    );
    p.ok(&["contacts", "import", p.path("old.csv").to_str().unwrap()]);

    // The preview of `enroll --existing` changes nothing.
    let preview = p.ok(&["enroll", "hello", "--existing", "--dry-run"]);
    assert!(preview.contains("Would enroll 2 contact(s)"), "{preview}");
    assert!(preview.contains("send=2"), "{preview}");

    // The daemon: `intro` (entry_existing) enrolls its audience once at
    // activation; `hello` waits to be asked.
    let d = Daemon::start(&p, &[]);
    rx.wait_for(3, Duration::from_secs(20)).await;
    p.wait_count(
        "SELECT count(*) FROM workflow_states WHERE existing_done_at IS NOT NULL",
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(bodies(&rx), vec!["intro o1", "intro o2", "intro o3"]);
    let out = p.ok(&["enroll", "hello", "--existing"]);
    assert!(out.contains("Enrolled 2 contact(s)"), "{out}");
    rx.wait_for(5, Duration::from_secs(20)).await;
    // Asked twice, enrolled once (`entry: once`).
    let again = p.ok(&["enroll", "hello", "--existing"]);
    assert!(again.contains("Enrolled 0 contact(s)"), "{again}");
    let (status, _) = d.terminate(Duration::from_secs(15));
    assert!(status.success());

    // A restart does not enroll the existing audience again.
    let mut d = Daemon::start(&p, &["--until-idle"]);
    assert!(d.wait(Duration::from_secs(20)).success(), "{}", p.log());
    assert_eq!(
        bodies(&rx),
        vec!["hello o1", "hello o2", "intro o1", "intro o2", "intro o3"]
    );
}

/// `enroll --existing` reads, plans and applies its audience a batch (256
/// contacts) at a time while the scan stays open (issue 13: collecting it
/// first took 2.4 GB at 1.44 M contacts). Over several batches every
/// contact of the audience is enrolled exactly once with one message, the
/// others not at all, and asking again enrolls no one.
#[tokio::test]
async fn enroll_existing_over_many_batches_enrolls_each_contact_once() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&settings(&rx, ""));
    p.write(
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\naudience: { tag: newsletter }\nsteps:\n  - send: { channel: hook, template: hello }\n",
    )
    .write("templates/hello.hbs", "hello {{contact.id}}");
    let mut csv = String::from("id,name,created_at,tags\n");
    for i in 0..700 {
        // Every seventh contact is outside the audience.
        let tag = if i % 7 == 0 { "" } else { "newsletter" };
        csv.push_str(&format!("c{i:04},N{i},2025-01-01T00:00:00+08:00,{tag}\n"));
    }
    p.write("many.csv", &csv);
    p.ok(&["contacts", "import", p.path("many.csv").to_str().unwrap()]);
    let out = p.ok(&["enroll", "hello", "--existing"]);
    assert!(out.contains("Enrolled 600 contact(s)"), "{out}");
    assert!(out.contains("600 message(s) queued"), "{out}");
    assert_eq!(
        p.count("SELECT count(DISTINCT contact_id) FROM enrollments WHERE workflow = 'hello'")
            .await,
        600
    );
    assert_eq!(
        p.count("SELECT count(*) FROM outbox o JOIN contact_tags t ON t.contact_id = o.contact_id AND t.tag = 'newsletter'")
            .await,
        600
    );
    let again = p.ok(&["enroll", "hello", "--existing"]);
    assert!(again.contains("Enrolled 0 contact(s)"), "{again}");
}

/// A daemon's first start over an imported store passes over every
/// trigger from before activation, and says so once per workflow, not once
/// per log batch (an import of a million rows made thousands of lines).
#[tokio::test]
async fn passed_over_triggers_are_told_once_per_workflow() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = project(&rx, "");
    let mut csv = String::from("id,name,tags\n");
    for i in 0..1000 {
        csv.push_str(&format!("c{i:04},N{i},vip\n"));
    }
    p.write("many.csv", &csv);
    p.ok(&["contacts", "import", p.path("many.csv").to_str().unwrap()]);
    let mut d = Daemon::start(&p, &["--until-idle"]);
    let status = d.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", p.log());
    let log = p.log();
    let told: Vec<&str> = log.lines().filter(|l| l.contains("passed over")).collect();
    assert_eq!(told.len(), 2, "one line each for welcome and vip:\n{log}");
    for wf in ["welcome", "vip"] {
        assert!(
            told.iter()
                .any(|l| l.contains(&format!("workflow={wf}")) && l.contains("triggers=1000")),
            "{wf}: {told:?}"
        );
    }
    assert!(rx.requests().is_empty());
}

/// A phone number the provider would refuse for its form is a skip the
/// preview shows (`bad_address`, with the number and the form wanted), and
/// the daemon sends nothing to it: the provider (a Twilio fake that refuses
/// a `To` out of E.164 with 21211, as Twilio does) sees only the good number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_the_provider_would_refuse_is_a_skip_the_preview_shows() {
    let rx = Receiver::start(support::twilio_fake::script()).await;
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  sms:\n    kind: twilio\n    base_url: {}\n    account_sid_env: TW_SID\n    auth_token_env: TW_TOKEN\n    from: \"+15005550006\"\n",
        rx.url("")
    ));
    p.write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: welcome }\n",
    )
    .write("templates/welcome.hbs", "welcome {{contact.id}}");
    let env = [("TW_SID", "AC0123"), ("TW_TOKEN", "secret")];
    p.ok(&["contacts", "add", "good", "--phone", "+8613800138000"]);
    p.ok(&["contacts", "add", "spaced", "--phone", "+86 139 0013-9000"]);
    p.ok(&["contacts", "add", "national", "--phone", "138-0013-8000"]);
    p.ok(&["contacts", "add", "none"]);
    support::db::running_since_epoch(&p.db_url(), &["welcome"]);

    let preview = p.ok(&["dry-run", "--format", "jsonl"]);
    let rows: Vec<serde_json::Value> = preview
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["step"].is_string())
        .collect();
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["contact_id"] == id)
            .unwrap_or_else(|| panic!("no row for {id}: {preview}"))
    };
    assert_eq!(row("good")["action"], "send", "{preview}");
    // Written with spaces and a dash, sent as E.164: the preview shows the
    // number Twilio gets.
    assert_eq!(row("spaced")["action"], "send", "{preview}");
    assert_eq!(row("spaced")["to"], "+8613900139000", "{preview}");
    assert_eq!(row("national")["action"], "skip", "{preview}");
    let reason = row("national")["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(r#"bad_address: phone "138-0013-8000" is not in E.164 form"#),
        "{reason}"
    );
    assert_eq!(row("none")["reason"], "no_address", "{preview}");

    let mut d = Daemon::start_with_env(&p, &["--until-idle"], &env);
    let status = d.wait(Duration::from_secs(30));
    assert!(status.success(), "exit {status}; log:\n{}", p.log());
    let mut to: Vec<String> = rx
        .requests()
        .iter()
        .map(support::twilio_fake::to_of)
        .collect();
    to.sort();
    assert_eq!(
        to,
        ["+8613800138000", "+8613900139000"],
        "only numbers in E.164 reach Twilio"
    );
    let history = p.ok(&["history", "national"]);
    assert!(history.contains("bad_address"), "{history}");
    assert_eq!(
        p.count("SELECT count(*) FROM outbox WHERE contact_id = 'national'")
            .await,
        0
    );
    // The daemon's log says why, without the number.
    let log = p.log();
    assert!(
        log.contains("bad_address: the phone is not in E.164 form"),
        "{log}"
    );
    assert!(!log.contains("138-0013-8000"), "{log}");
}

/// `POST /v1/contacts` keeps a phone the channel's provider would refuse
/// and says so in its answer (`warnings`), as `contacts add` does; a good
/// number gets no warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_warns_about_an_address_the_provider_would_refuse() {
    let p = Project::new(
        "timezone: Asia/Shanghai\nchannels:\n  sms:\n    kind: aliyun_sms\n    \
         access_key_id_env: ALI_ID\n    access_key_secret_env: ALI_SECRET\n    \
         sign_name: 示例商城\n    template_code: SMS_15305000\n",
    );
    let env = [("ALI_ID", "id"), ("ALI_SECRET", "secret")];
    let d = Daemon::start_with_env(&p, &[], &env);
    let (status, v) = d
        .post("/v1/contacts", json!({"id": "a1", "phone": "1380013800"}))
        .await;
    assert_eq!(status, 201, "{v}");
    let warnings = v["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{v}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.starts_with(r#"phone "1380013800" is not a number Aliyun SMS takes"#)
            && w.contains("messages on the sms channel are skipped for this contact (bad_address)"),
        "{w}"
    );
    let (status, v) = d
        .post(
            "/v1/contacts",
            json!({"id": "a2", "phone": "138 0013 8000"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v, json!({"id": "a2", "result": "created"}));
    assert_eq!(
        p.count("SELECT count(*) FROM contacts WHERE id IN ('a1', 'a2')")
            .await,
        2,
        "both kept"
    );
    d.terminate(Duration::from_secs(15));
}
