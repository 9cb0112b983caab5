//! Issue "the marketer's day": event data in messages, dates and money,
//! notices as templates, a validate that helps, output people read, contacts
//! in and out. The real binary on a real store (SQLite, or PostgreSQL in the
//! suite's second pass).

use crate::support;

use std::time::Duration;

use serde_json::json;

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

const LOG_SETTINGS: &str = "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log }\n";

/// The abandoned-cart workflow of the issue: the message names the cart item;
/// a big buyer gets another message (`where:` on an event condition).
const CART: &str = r#"
trigger: { event: { name: cart_abandoned } }
entry: every_time
steps:
  - if: { event: purchase, where: { field: amount, gte: 500 } }
    then:
      - send: { channel: sms, template: vip-cart }
    else:
      - send: { channel: sms, template: cart }
"#;

fn cart_project(settings: &str) -> Project {
    let p = Project::new(settings);
    p.write("workflows/cart.yaml", CART)
        .write(
            "templates/cart.hbs",
            "{{contact.name}}，您的购物车里还有{{event.properties.item}}（{{event.name}} {{event.at}}）",
        )
        .write(
            "templates/vip-cart.hbs",
            "{{contact.name}}，尊贵的会员：{{event.properties.item}}为您保留",
        );
    p
}

#[test]
fn the_triggering_event_reaches_the_message_and_conditions_test_its_properties() {
    let p = cart_project(LOG_SETTINGS);
    p.ok(&["contacts", "add", "c1", "--name", "王芳"]);
    p.ok(&["contacts", "add", "c2", "--name", "李雷"]);
    // c2 bought for 899 before; c1 for 99.
    for (id, amount) in [("c1", "99"), ("c2", "899")] {
        p.ok(&[
            "contacts",
            "event",
            id,
            "purchase",
            "--at",
            "2026-10-01T10:00:00+08:00",
            "--prop",
            &format!("amount={amount}"),
        ]);
    }
    for (id, item) in [("c1", "羊毛围巾"), ("c2", "真丝睡衣")] {
        p.ok(&[
            "contacts",
            "event",
            id,
            "cart_abandoned",
            "--at",
            "2026-11-01T09:30:15.123+08:00",
            "--prop",
            &format!("item={item}"),
        ]);
    }
    support::db::running_since_epoch(&p.db_url(), &["cart"]);
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2026-11-01T10:00:00+08:00",
        "--format",
        "jsonl",
    ]);
    insta::assert_snapshot!(out);
}

#[tokio::test]
async fn a_step_after_a_wait_still_has_the_triggering_event() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\", secret_env: HOOK_SECRET }}\n",
        rx.url("/hook")
    ));
    p.write(
        "workflows/cart.yaml",
        "trigger: { event: { name: cart_abandoned } }\nsteps:\n  - wait: 2s\n  - send: { channel: hook, template: cart }\n",
    )
    .write(
        "templates/cart.hbs",
        "{{event.name}}: {{event.properties.item}} x{{event.properties.qty}} at {{event.at}}",
    );
    let d = Daemon::start(&p, &[]);
    p.wait_count(
        "SELECT count(*) FROM workflow_states",
        1,
        Duration::from_secs(15),
    )
    .await;
    d.post_ok("/v1/contacts", json!({"id": "c1", "name": "王芳"}))
        .await;
    d.post_ok(
        "/v1/events",
        json!({"contact_id": "c1", "name": "cart_abandoned", "properties": {"item": "羊毛围巾", "qty": 2}}),
    )
    .await;
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    let body = got[0].json()["body"].as_str().unwrap().to_string();
    let (head, at) = body.split_once(" at ").unwrap();
    assert_eq!(head, "cart_abandoned: 羊毛围巾 x2", "{body}");
    // In the contact's (here the settings') time zone, to the second.
    assert_eq!(at.len(), "2026-11-01T09:30:15+08:00".len(), "{body}");
    assert!(at.ends_with("+08:00"), "{body}");
    d.terminate(Duration::from_secs(15));
}

/// Runs `nurture validate ARGS` in `dir` (relative paths in the output);
/// returns (exit code, stdout, stderr).
fn validate_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("nurture"))
        .current_dir(dir)
        .env_remove("NURTURE_DATABASE")
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A folder with `files` (path, content) written in it.
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    dir
}

const EVENTS_SETTINGS: &str = "timezone: Asia/Shanghai
channels:
  sms: { kind: log }
events:
  cart_abandoned: { item: string, price: number }
  purchase: { amount: number }
";

#[test]
fn declared_events_are_checked_with_did_you_mean() {
    let dir = folder(&[
        ("nurture.yaml", EVENTS_SETTINGS),
        (
            "workflows/cart.yaml",
            "trigger: { event: { name: cart_abandonded } }
steps:
  - if: { event: purchse, within: 7d }
    then:
      - send: { channel: sms, template: cart }
  - if: { event: purchase, where: { field: amout, gte: 500 } }
    then:
      - send: { channel: sms, template: cart }
  - if: { event: purchase, where: { field: amount, gte: lots } }
    then:
      - send: { channel: sms, template: cart }
",
        ),
        (
            "workflows/ok.yaml",
            "trigger: { event: { name: cart_abandoned } }\nsteps:\n  - if: { event: purchase, where: { field: amount, gte: 500 } }\n    then:\n      - send: { channel: sms, template: item }\n",
        ),
        ("templates/cart.hbs", "{{contact.id}}"),
        (
            "templates/item.hbs",
            "您的{{event.properties.itme}}还在购物车里",
        ),
    ]);
    let (code, _, err) = validate_in(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn undeclared_events_take_any_property_and_cron_workflows_have_no_event() {
    let dir = folder(&[
        ("nurture.yaml", LOG_SETTINGS),
        (
            "workflows/cart.yaml",
            "trigger: { event: { name: cart_abandoned } }\nsteps:\n  - send: { channel: sms, template: item }\n",
        ),
        (
            "workflows/tagged.yaml",
            "trigger: { tag_added: { tag: vip } }\nsteps:\n  - send: { channel: sms, template: tag }\n",
        ),
        (
            "workflows/monthly.yaml",
            "trigger: { schedule: { cron: \"0 10 1 * *\" } }\nsteps:\n  - send: { channel: sms, template: monthly }\n",
        ),
        (
            "templates/item.hbs",
            "您的{{event.properties.item}}（{{event.properties.sku}}）还在购物车里",
        ),
        (
            "templates/tag.hbs",
            "{{event.name}} {{event.properties.tag}}",
        ),
        ("templates/monthly.hbs", "{{event.name}}"),
    ]);
    let (code, _, err) = validate_in(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn dates_and_money_read_naturally_in_the_contacts_time_zone() {
    let p = Project::new(
        "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log }\nfields:\n  lifetime_value: number\n",
    );
    p.write(
        "workflows/cart.yaml",
        "trigger: { event: { name: cart_abandoned } }\nentry: every_time\nsteps:\n  - send: { channel: sms, template: cart }\n",
    )
    .write(
        "templates/cart.hbs",
        "{{contact.name}}：{{date event.at \"M月D日 HH:mm\"}}加购，券{{date (add now \"7d\") \"M月D日\"}}前有效（{{date now \"YYYY-MM-DD dddd\"}}）；累计{{money contact.lifetime_value \"CNY\"}} / {{number contact.lifetime_value}} / {{money 99 \"USD\"}}；注册 {{contact.created_at}}；event {{event.at}}；now {{now}}；{{date event.at}}",
    )
    .write(
        "c.csv",
        "id,name,timezone,created_at,lifetime_value\nc1,王芳,,2025-12-11T08:57:41.5+08:00,1200\nc2,Ann,America/Los_Angeles,2025-12-11T08:57:41+08:00,1234567.891\n",
    );
    p.ok(&["contacts", "import", p.path("c.csv").to_str().unwrap()]);
    let mut recorded = String::new();
    for id in ["c1", "c2"] {
        recorded.push_str(&p.ok(&[
            "contacts",
            "event",
            id,
            "cart_abandoned",
            "--at",
            "2026-11-30T23:30:15.123+08:00",
        ]));
    }
    support::db::running_since_epoch(&p.db_url(), &["cart"]);
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2026-12-01T10:00:00+08:00",
        "--format",
        "jsonl",
    ]);
    insta::assert_snapshot!(format!("{recorded}{out}"));
}

const TEAM_SETTINGS: &str = "timezone: Asia/Shanghai
channels:
  wecom: { kind: log }
teams:
  east:
    - { id: s01, name: 王芳 }
    - { id: s02, name: 李雷 }
";

#[tokio::test]
async fn assignment_notices_are_templates_and_name_the_customer() {
    let p = Project::new(TEAM_SETTINGS);
    p.write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: east, notify: wecom }\n",
    )
    .write(
        "workflows/vip.yaml",
        "trigger: { tag_added: { tag: vip } }\nsteps:\n  - assign: { team: east, strategy: by_field, field: city, notify: { channel: wecom, template: vip-notice } }\n",
    )
    .write(
        "templates/vip-notice.hbs",
        "{{owner.name}}：VIP {{contact.name}}（{{contact.phone}}）转给您{{#if previous_owner}}，原顾问{{previous_owner.name}}{{/if}}",
    )
    .write(
        "c.csv",
        "id,name,phone,owner,city,created_at\nc1,周晓明,+8613800000001,,s02,2026-10-01T00:00:00+08:00\nc2,Ann,,s01,s01,2026-10-01T00:00:00+08:00\nc3,陈静,+8613800000003,s01,s02,2026-10-01T00:00:00+08:00\n",
    );
    p.ok(&["contacts", "import", p.path("c.csv").to_str().unwrap()]);
    support::db::running_since_epoch(&p.db_url(), &["welcome", "vip"]);
    for id in ["c1", "c2", "c3"] {
        p.ok(&["contacts", "tag", id, "--add", "vip"]);
    }
    let out = p.ok(&[
        "dry-run",
        "--at",
        "2026-11-01T10:00:00+08:00",
        "--format",
        "jsonl",
    ]);
    insta::assert_snapshot!(out);
    // Applied, the notices in the outbox are what the preview showed, and
    // the contact whose owner stays gets none.
    p.ok(&["enroll", "vip", "--existing"]);
    let rows = p
        .rows("SELECT contact_id, recipient, body FROM outbox ORDER BY contact_id")
        .await;
    let got: Vec<String> = rows
        .iter()
        .map(|r| format!("{} → {}: {}", r["contact_id"], r["recipient"], r["body"]))
        .collect();
    insta::assert_snapshot!("assignment_notices_in_the_outbox", got.join("\n"));
}

#[test]
fn an_undeclared_custom_attribute_is_a_warning_and_a_near_miss_an_error() {
    let settings =
        "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log }\nfields:\n  level: string\n";
    let dir = folder(&[
        ("nurture.yaml", settings),
        (
            "workflows/hello.yaml",
            "trigger: { contact_created: {} }\naudience: { field: source, equals: referral }\nsteps:\n  - send: { channel: sms, template: hello }\n",
        ),
        (
            "templates/hello.hbs",
            "{{contact.name}}您好，{{contact.city}}门店欢迎您",
        ),
    ]);
    let (code, out, err) = validate_in(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    let mut both = err;
    both.push_str(&out);
    // A near miss of a declared or built-in name stays an error.
    std::fs::write(
        dir.path().join("workflows/hello.yaml"),
        "trigger: { contact_created: {} }\naudience: { field: levle, equals: gold }\nsteps:\n  - send: { channel: sms, template: hello }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/hello.hbs"),
        "{{contact.nmae}}您好",
    )
    .unwrap();
    let (code, _, err) = validate_in(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    both.push_str("---\n");
    both.push_str(&err);
    insta::assert_snapshot!(both);
}

#[tokio::test]
async fn the_api_refuses_an_unsubscribe_from_an_unknown_channel_with_did_you_mean() {
    let p = Project::new(
        "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log }\n  wecom: { kind: log }\n",
    );
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", json!({"id": "c1"})).await;
    let (status, body) = d
        .post("/v1/contacts/c1/unsubscribe", json!({"channel": "smss"}))
        .await;
    assert_eq!(status, 400, "{body}");
    insta::assert_snapshot!(body["error"].as_str().unwrap());
    let (status, body) = d
        .post("/v1/contacts/c1/unsubscribe", json!({"channel": "sms"}))
        .await;
    assert_eq!(status, 200, "{body}");
    d.terminate(Duration::from_secs(15));
}

#[test]
fn every_command_has_examples_and_completions_are_printed() {
    let commands: &[&[&str]] = &[
        &["init"],
        &["validate"],
        &["run"],
        &["dry-run"],
        &["channels"],
        &["channels", "test"],
        &["contacts"],
        &["contacts", "import"],
        &["contacts", "show"],
        &["contacts", "export"],
        &["contacts", "add"],
        &["contacts", "tag"],
        &["contacts", "event"],
        &["contacts", "unsubscribe"],
        &["schema"],
        &["status"],
        &["history"],
        &["enroll"],
        &["resume"],
        &["wecom"],
        &["wecom", "sync-relationships"],
        &["wecom", "resigned"],
        &["wecom", "sync"],
        &["completions"],
        &["graph"],
        &["console"],
        &["outbox"],
        &["outbox", "requeue"],
        &["prune"],
        &["report"],
        &["segments"],
        &["segments", "count"],
        &["segments", "list"],
        &["test"],
    ];
    let help = |args: &[&str]| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("nurture"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    // Every subcommand clap knows is in the list above.
    let top = help(&[]);
    for line in top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
    {
        let Some(name) = line.split_whitespace().next() else {
            break;
        };
        if name == "help" {
            continue;
        }
        assert!(
            commands.iter().any(|c| c == &[name]),
            "{name} is missing from the list"
        );
    }
    for c in commands {
        let h = help(c);
        assert!(
            h.contains("Examples:\n  nurture "),
            "nurture {c:?} --help:\n{h}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("nurture"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("dry-run") && text.contains("contacts"),
            "{text}"
        );
    }
}

#[test]
fn piping_into_head_ends_quietly() {
    let script = format!(
        "{:?} completions bash | head -1 >/dev/null; {:?} schema | head -c 1 >/dev/null",
        assert_cmd::cargo::cargo_bin("nurture"),
        assert_cmd::cargo::cargo_bin("nurture")
    );
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("Broken pipe"), "{err}");
    assert_eq!(err, "", "{err}");
}

#[test]
fn until_idle_says_what_it_waits_for_and_now_stops_when_nothing_is_due() {
    let p = Project::new(LOG_SETTINGS);
    p.write(
        "workflows/drip.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hi }\n  - wait: 1d\n  - send: { channel: sms, template: hi }\n",
    )
    .write(
        "workflows/short.yaml",
        "trigger: { tag_added: { tag: short } }\nsteps:\n  - wait: 2s\n  - send: { channel: sms, template: hi }\n",
    )
    .write("templates/hi.hbs", "hi {{contact.id}}");
    p.ok(&["contacts", "add", "c1"]);
    support::db::running_since_epoch(&p.db_url(), &["drip", "short"]);
    let run = |mode: &str| {
        let out = p
            .command()
            .args(["run", mode, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let log = run("--until-idle=now");
    assert!(
        log.contains("nothing due now; stopping (--until-idle=now): left for later: 1 enrollment(s) in a wait, the next due at "),
        "{log}"
    );
    // In the project's time zone, as the dry-run and history show times.
    let due = log
        .split("the next due at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    assert!(
        due.ends_with("+08:00") && chrono::DateTime::parse_from_rfc3339(due).is_ok(),
        "{due:?} in {log}"
    );
    // The wait stays in the store.
    let status = p.ok(&["status", "--format", "json"]);
    assert!(status.contains("\"drip\""), "{status}");

    // Plain --until-idle waits for the short wait, and says so.
    p.ok(&["contacts", "add", "c2", "--tag", "short"]);
    let mut cmd = p.command();
    cmd.args(["run", "--until-idle", "--listen", "127.0.0.1:0"]);
    let log_path = p.path("until-idle.log");
    let mut child = cmd
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Once the short wait is over, it says it still waits for drip's
    // one-day waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    while !read().contains("--until-idle: waiting for 2 enrollment(s)") {
        assert!(
            std::time::Instant::now() < deadline,
            "no second waiting line: {}",
            read()
        );
        assert!(child.try_wait().unwrap().is_none(), "{}", read());
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: a plain kill(2) of the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success(), "{}", read());
    let log = read();
    assert!(
        log.contains("--until-idle: waiting for 3 enrollment(s) in a wait, the next due at "),
        "{log}"
    );
    assert!(
        log.contains("--until-idle: waiting for 2 enrollment(s) in a wait, the next due at "),
        "{log}"
    );
}
