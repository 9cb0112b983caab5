//! Split arms and the holdout (issue 14, item 4): the arm is a stable hash
//! of (workflow, contact, split id), so re-entry, the dry-run and the daemon
//! agree, and it is recorded; held-out contacts are enrolled but get no
//! messages. The real binary, the real store.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use support::daemon::{Daemon, Project};
use support::receiver::{Receiver, Reply, script};

const AB: &str = r#"
name: ab
trigger: { event: { name: visit } }
entry: every_time
holdout: 20%
steps:
  - id: offer
    split:
      arms:
        - name: coupon
          weight: 3
          steps:
            - id: c
              send: { channel: hook, template: coupon }
        - name: call
          weight: 1
          steps:
            - id: k
              send: { channel: hook, template: call }
  - id: done
    tag: { add: [offered] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arms_are_stable_recorded_and_the_holdout_gets_nothing() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\", secret_env: HOOK_SECRET }}\n",
        rx.url("/hook")
    ));
    p.write("workflows/ab.yaml", AB)
        .write("templates/coupon.hbs", "coupon for {{contact.name}}")
        .write("templates/call.hbs", "we will call {{contact.name}}");
    let mut csv = String::from("id,name\n");
    for i in 0..200 {
        csv.push_str(&format!("c{i:03},N{i}\n"));
    }
    p.write("contacts.csv", &csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    // Two visits each: every contact enters twice.
    for round in 0..2 {
        for i in 0..200 {
            let at = format!("2026-01-0{}T10:00:00+08:00", round + 1);
            p.ok(&[
                "contacts",
                "event",
                &format!("c{i:03}"),
                "visit",
                "--at",
                &at,
            ]);
        }
    }
    support::db::running_since_epoch(&p.db_url(), &["ab"]);

    let preview = p.ok(&["dry-run", "--format", "jsonl"]);
    let rows: Vec<Value> = preview
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    // (contact, step, arm) of every split row, twice per contact.
    let mut planned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut planned_n = 0;
    for r in rows.iter().filter(|r| r["action"] == "split") {
        planned_n += 1;
        planned
            .entry(s(&r["contact_id"]))
            .or_default()
            .insert(format!("{}={}", s(&r["step"]), s(&r["arm"])));
    }
    assert_eq!(planned.len(), 200);
    // Held-out contacts: a @holdout row and the split (measured), but skips.
    let held: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["step"] == "@holdout")
        .map(|r| s(&r["contact_id"]))
        .collect();
    assert!((15..70).contains(&held.len()), "{} held out", held.len());
    for r in rows.iter().filter(|r| held.contains(&s(&r["contact_id"]))) {
        assert_ne!(r["action"], "send", "{r}");
    }
    assert!(
        rows.iter()
            .any(|r| r["action"] == "skip" && r["reason"] == "holdout")
    );
    // Re-entry takes the same arm: one arm per contact though two entries.
    for (c, arms) in &planned {
        let splits: Vec<&String> = arms.iter().filter(|a| a.starts_with("offer=")).collect();
        assert_eq!(splits.len(), 1, "{c}: {arms:?}");
    }
    let coupon = planned
        .values()
        .filter(|a| a.contains("offer=coupon"))
        .count();
    assert!(
        (120..180).contains(&coupon),
        "{coupon} of 200 took coupon (weight 3 of 4)"
    );

    let mut d = Daemon::start(&p, &["--until-idle"]);
    let status = d.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", p.log());
    // The daemon recorded the arms the dry-run showed.
    let stored = p
        .rows(
            "SELECT e.contact_id AS c, s.step_id AS s, s.detail AS d FROM enrollment_steps s
               JOIN enrollments e ON e.id = s.enrollment_id WHERE s.action = 'split'",
        )
        .await;
    assert_eq!(stored.len(), planned_n);
    let mut recorded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &stored {
        recorded
            .entry(s(&r["c"]))
            .or_default()
            .insert(format!("{}={}", s(&r["s"]), s(&r["d"])));
    }
    assert_eq!(planned, recorded);
    // Messages went to treated contacts only, by their arm.
    let sent = rx.requests();
    assert_eq!(sent.len(), 2 * (200 - held.len()));
    for r in &sent {
        let j = r.json();
        let c = s(&j["contact_id"]);
        assert!(!held.contains(&c), "{c} is held out but got {j}");
        let arm = if s(&j["body"]).starts_with("coupon") {
            "offer=coupon"
        } else {
            "offer=call"
        };
        assert!(planned[&c].contains(arm), "{c}: {j}");
    }
    // `nurture report` counts in SQL what `status` counts row by row: the
    // same groups (each arm, treatment and holdout) and funnel.
    let report: Value = serde_json::from_str(&p.ok(&["report", "ab", "--format", "json"])).unwrap();
    let status: Value = serde_json::from_str(&p.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["reports"]["ab"], report, "report vs status");
    let entered = |g: &str| {
        report["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["group"] == g)
            .map(|x| x["entered"].as_u64().unwrap())
    };
    // Per enrollment: the dry-run's split rows by step and arm.
    let rows_of = |step: &str, arm: Option<&str>| {
        rows.iter()
            .filter(|r| r["action"] == "split" && r["step"] == step)
            .filter(|r| arm.is_none_or(|a| r["arm"] == a))
            .count() as u64
    };
    let coupon = rows_of("offer", Some("coupon"));
    let call = rows_of("offer", Some("call"));
    assert!(coupon > call && call > 0, "{coupon} / {call}");
    assert_eq!(entered("arm offer=coupon"), Some(coupon));
    assert_eq!(entered("arm offer=call"), Some(call));
    assert_eq!(entered("holdout"), Some(rows_of("@holdout", None)));
    assert_eq!(
        entered("all"),
        Some(entered("treatment").unwrap() + entered("holdout").unwrap())
    );
    // history shows the arm.
    let c = planned.keys().next().unwrap();
    let h = p.ok(&["history", "--contact", c]);
    assert!(h.contains("offer"), "{h}");
}
