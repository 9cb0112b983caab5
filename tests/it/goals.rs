//! Goals, conversion and the funnel report (issue 14, items 8 and 9): a
//! goal event wakes a waiting enrollment and it leaves (`exit_on_goal`);
//! `nurture report` counts entered and converted per arm and for the
//! holdout, with intervals and the lift, and the funnel per step. The real
//! binary, the real store.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

const WF: &str = r#"
name: promo
trigger: { event: { name: visit } }
holdout: 30%
goal: { event: purchase, within: 1d }
steps:
  - id: ab
    split:
      arms:
        - { name: a, steps: [ { id: hello-a, send: { channel: hook, template: hello } } ] }
        - { name: b, steps: [ { id: hello-b, send: { channel: hook, template: hello } } ] }
  - id: w
    wait_until:
      event: reply
      timeout: 1h
      else:
        - id: reminder
          send: { channel: hook, template: hello }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_goal_ends_the_journey_at_once_and_the_report_counts_it() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\", secret_env: HOOK_SECRET }}\n",
        rx.url("/hook")
    ));
    p.write("workflows/promo.yaml", WF)
        .write("templates/hello.hbs", "hello {{contact.name}}");
    let mut csv = String::from("id,name\n");
    for i in 0..40 {
        csv.push_str(&format!("c{i:02},N{i}\n"));
    }
    p.write("contacts.csv", &csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    for i in 0..40 {
        p.ok(&["contacts", "event", &format!("c{i:02}"), "visit"]);
    }
    support::db::running_since_epoch(&p.db_url(), &["promo"]);
    let d = Daemon::start(&p, &[]);
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE step_id = 'w' AND wait_since IS NOT NULL",
        40,
        Duration::from_secs(20),
    )
    .await;
    for i in 0..10 {
        d.post_ok(
            "/v1/events",
            json!({ "contact_id": format!("c{i:02}"), "name": "purchase" }),
        )
        .await;
    }
    // Woken by the goal event, they leave long before the hour is up.
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE status = 'exited' AND end_reason = 'goal_reached'",
        10,
        Duration::from_secs(10),
    )
    .await;
    let held = p
        .count("SELECT count(*) FROM enrollment_steps WHERE step_id = '@holdout'")
        .await as u64;
    assert!((3..25).contains(&held), "{held} held out");
    // Every step record carries its enrollment's workflow and start (the
    // report counts one workflow's records by them).
    let all = p.count("SELECT count(*) FROM enrollment_steps").await;
    let copied = p
        .count(
            "SELECT count(*) FROM enrollment_steps s JOIN enrollments e ON e.id = s.enrollment_id \
              WHERE s.workflow = e.workflow AND s.started_at = e.started_at",
        )
        .await;
    assert_eq!(
        copied, all,
        "step records without their enrollment's workflow and start"
    );
    rx.wait_for((40 - held) as usize, Duration::from_secs(10))
        .await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent'",
        (40 - held) as i64,
        Duration::from_secs(10),
    )
    .await;
    // The same numbers on /metrics, read once everything is settled (the
    // funnel is read from the store on a scrape, at most once a minute).
    let metrics = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    drop(d);

    let out = p.ok(&["report", "promo", "--format", "json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["goal"], "event purchase within 1d");
    let group = |name: &str| {
        r["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("no group {name}: {out}"))
            .clone()
    };
    assert_eq!(group("all")["entered"], 40);
    assert_eq!(group("all")["converted"], 10);
    assert_eq!(group("all")["rate"], 0.25);
    let ci = group("all")["ci"].as_array().unwrap().clone();
    assert!(ci[0].as_f64().unwrap() < 0.25 && ci[1].as_f64().unwrap() > 0.25);
    assert_eq!(group("holdout")["entered"], held);
    assert_eq!(group("treatment")["entered"], 40 - held);
    let arms = group("arm ab=a")["entered"].as_u64().unwrap()
        + group("arm ab=b")["entered"].as_u64().unwrap();
    assert_eq!(arms, 40, "{out}");
    assert!(r["lift"]["p_value"].is_number(), "{out}");
    let step = |id: &str| {
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == id)
            .unwrap()
            .clone()
    };
    let a = step("hello-a");
    let b = step("hello-b");
    assert_eq!(
        a["reached"].as_u64().unwrap() + b["reached"].as_u64().unwrap(),
        40
    );
    assert_eq!(
        a["sent"].as_u64().unwrap() + b["sent"].as_u64().unwrap(),
        40 - held
    );
    let skipped = a["skipped"]["holdout"].as_u64().unwrap_or(0)
        + b["skipped"]["holdout"].as_u64().unwrap_or(0);
    assert_eq!(skipped, held);
    assert_eq!(step("ab")["converted_after"], 10);
    assert_eq!(step("reminder")["reached"], 0);
    // The table and the CSV carry the same numbers.
    let table = p.ok(&["report", "promo"]);
    assert!(table.contains("all"), "{table}");
    assert!(table.contains("25.0%"), "{table}");
    assert!(table.contains("lift over the holdout"), "{table}");
    let csv = p.ok(&["report", "promo", "--format", "csv"]);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("group,all,40,10,0.2500,")),
        "{csv}"
    );
    // /metrics: per step reached, sent, skipped by reason, converted after;
    // per group (arm, treatment, holdout) entered and converted.
    for st in r["steps"].as_array().unwrap() {
        let l = format!(
            "workflow=\"promo\",step=\"{}\"",
            st["step"].as_str().unwrap()
        );
        for (series, key) in [
            ("funnel_reached", "reached"),
            ("funnel_sent", "sent"),
            ("funnel_converted_after", "converted_after"),
        ] {
            let line = format!("nurture_{series}{{{l}}} {}", st[key]);
            assert!(
                metrics.lines().any(|m| m == line),
                "no {line} in:\n{metrics}"
            );
        }
        for (reason, n) in st["skipped"].as_object().unwrap() {
            let line = format!("nurture_funnel_skipped{{{l},reason=\"{reason}\"}} {n}");
            assert!(
                metrics.lines().any(|m| m == line),
                "no {line} in:\n{metrics}"
            );
        }
    }
    for g in r["groups"].as_array().unwrap() {
        let name = g["group"].as_str().unwrap();
        let name = name.strip_prefix("arm ").unwrap_or(name);
        for (series, key) in [
            ("conversion_entered", "entered"),
            ("conversion_converted", "converted"),
        ] {
            let line = format!(
                "nurture_{series}{{workflow=\"promo\",group=\"{name}\"}} {}",
                g[key]
            );
            assert!(
                metrics.lines().any(|m| m == line),
                "no {line} in:\n{metrics}"
            );
        }
    }
    assert!(
        metrics.contains("nurture_funnel_skipped{workflow=\"promo\",step=\"hello-"),
        "{metrics}"
    );
    // And in `status --format json`, under reports.
    let status: Value = serde_json::from_str(&p.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["reports"]["promo"], r, "status --format json");
    // A misspelt workflow.
    let out = p.command().args(["report", "prom"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"promo\"?"));
}

/// A workflow without a goal measures no conversion: its report shows who
/// entered and the funnel, not a rate and an interval of nothing (it
/// printed `0.0%  [0.0%, 65.8%]` under "conversion not measured").
#[test]
fn a_report_without_a_goal_shows_no_conversion() {
    let p = Project::new("timezone: Asia/Shanghai\nchannels:\n  log: { kind: log }\n");
    p.write(
        "workflows/hello.yaml",
        "trigger: { event: { name: visit } }\nsteps:\n  - send: { channel: log, template: hi }\n",
    )
    .write("templates/hi.hbs", "hi");
    p.ok(&["contacts", "add", "c1"]);
    let table = p.ok(&["report", "hello"]);
    assert!(
        table.contains("goal none (conversion not measured)"),
        "{table}"
    );
    assert!(!table.contains('%'), "{table}");
    assert!(!table.contains("CONVERTED  "), "{table}");
    assert!(
        table.contains("GROUP   ENTERED\nall           0"),
        "{table}"
    );
}
