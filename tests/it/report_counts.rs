//! The report is counted by the store (issue 14: a report over a million
//! enrollments in under 2 s), and `nurture report`, `status --format json`
//! and the console's performance page use that one code. This test holds
//! its numbers to an oracle: a store seeded with varied step records,
//! messages and events (three workflows — a goal on an event's properties,
//! a plain event goal, a condition goal — so each counts only its own;
//! skips with reasons, exits, a holdout, an arm and a step no longer in the
//! workflow, messages not sent), whose report is also computed here, row by
//! row, from the seed. On the store the suite runs on.

use crate::support;

use std::collections::{BTreeMap, HashMap};

use chrono::{TimeZone, Utc};
use serde_json::Value;

use support::daemon::{Daemon, Project, TOKEN};

const DAY: i64 = 86_400_000;
const OFFSET: i64 = 8 * 3_600_000; // Asia/Shanghai
const STEPS: &str = r#"
holdout: 20%
steps:
  - id: ab
    split:
      arms:
        - { name: a, steps: [ { id: hello-a, send: { channel: hook, template: hello } } ] }
        - { name: b, steps: [ { id: hello-b, send: { channel: hook, template: hello } } ] }
  - wait: 1h
  - id: bye
    send: { channel: hook, template: hello }
"#;

/// A small deterministic generator (the seed is printed on failure).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Goal {
    /// purchase with amount >= 100, within 2d
    Property,
    /// purchase within 2d
    Event,
    /// a condition: the plan's goal_reached exit
    Exit,
}

struct Enrollment {
    id: i64,
    workflow: &'static str,
    contact: String,
    started: i64,
    /// (step, action, detail, ran at)
    steps: Vec<(String, &'static str, Option<String>, i64)>,
}

/// (id, workflow, contact, enrollment, step, status, sent at)
type Message = (
    String,
    &'static str,
    String,
    Option<i64>,
    String,
    &'static str,
    Option<i64>,
);

struct Seed {
    enrollments: Vec<Enrollment>,
    messages: Vec<Message>,
    /// (contact, name, at, amount)
    events: Vec<(String, &'static str, i64, i64)>,
}

fn seed(rng: &mut Lcg, now: i64, contacts: usize) -> Seed {
    let mut s = Seed {
        enrollments: vec![],
        messages: vec![],
        events: vec![],
    };
    let mut id = 0;
    for wf in ["promo-prop", "promo-event", "promo-cond"] {
        for c in 0..contacts {
            if rng.next(10) == 0 {
                continue; // not every contact entered
            }
            id += 1;
            let contact = format!("c{c:03}");
            // Started in the last 12 days (the console shows 7; --since cuts too).
            let started = now - rng.next(12 * DAY as u64) as i64 - 3_600_000;
            let mut steps = vec![];
            let mut t = started;
            let held = rng.next(5) == 0;
            if held {
                steps.push(("@holdout".to_string(), "split", Some("holdout".into()), t));
            }
            let arm = ["a", "b", "a", "b", "gone"][rng.next(5) as usize];
            steps.push(("ab".to_string(), "split", Some(arm.to_string()), t));
            let hello = format!("hello-{arm}");
            let mut send = |steps: &mut Vec<_>, step: &str, t: i64, rng: &mut Lcg| {
                let r = rng.next(10);
                if held {
                    steps.push((step.to_string(), "skip", Some("holdout".into()), t));
                } else if r == 0 {
                    let why = format!("quiet_hours: until {}", t + 3_600_000);
                    steps.push((step.to_string(), "skip", Some(why), t));
                } else if r == 1 {
                    steps.push((step.to_string(), "skip", Some("frequency_cap".into()), t));
                } else {
                    steps.push((
                        step.to_string(),
                        "send",
                        Some(format!("hook → {contact}")),
                        t,
                    ));
                    let status =
                        ["sent", "sent", "sent", "cancelled", "dead"][rng.next(5) as usize];
                    let sent_at = (status == "sent").then_some(t + 1000);
                    s.messages.push((
                        format!("{wf}:{contact}:{id}:{step}"),
                        wf,
                        contact.clone(),
                        Some(id),
                        step.to_string(),
                        status,
                        sent_at,
                    ));
                }
            };
            send(&mut steps, &hello, t, rng);
            t += rng.next(2 * DAY as u64) as i64;
            match rng.next(6) {
                0 => steps.push(("bye".into(), "exit", Some("goal_reached".into()), t)),
                1 => steps.push(("bye".into(), "exit", Some("unsubscribed".into()), t)),
                2 => steps.push(("old-step".into(), "send", None, t)),
                _ => send(&mut steps, "bye", t, rng),
            }
            // Goal events: before the start, inside the 2-day window (big
            // or small purchases), after it; and other events.
            for _ in 0..rng.next(3) {
                let at = started + rng.next(4 * DAY as u64) as i64 - DAY;
                let name = ["purchase", "purchase", "visit"][rng.next(3) as usize];
                if at < now {
                    s.events.push((
                        contact.clone(),
                        name,
                        at,
                        [20, 100, 500][rng.next(3) as usize],
                    ));
                }
            }
            s.enrollments.push(Enrollment {
                id,
                workflow: wf,
                contact,
                started,
                steps,
            });
        }
    }
    // A message of no enrollment, and one of another workflow.
    s.messages.push((
        "api:1".into(),
        "promo-prop",
        "c000".into(),
        None,
        "hello-a".into(),
        "sent",
        Some(now - 1000),
    ));
    s.messages.push((
        "other:1".into(),
        "other",
        "c000".into(),
        Some(1),
        "hello-a".into(),
        "sent",
        Some(now - 1000),
    ));
    s
}

/// The report of one workflow computed row by row from the seed: groups
/// (name → entered, converted), steps (id → reached, sent, skipped,
/// converted after), and per group per day (entered, sent, converted) from
/// day number `first`, `days` days.
struct Expected {
    groups: BTreeMap<String, (u64, u64)>,
    steps: BTreeMap<String, (u64, u64, BTreeMap<String, u64>, u64)>,
    daily: BTreeMap<String, [Vec<u64>; 3]>,
}

fn expected(s: &Seed, wf: &str, goal: Goal, since: i64, first: i64, days: usize) -> Expected {
    let conv: HashMap<i64, i64> = s
        .enrollments
        .iter()
        .filter(|e| e.workflow == wf && e.started >= since)
        .filter_map(|e| {
            let at = match goal {
                Goal::Exit => e
                    .steps
                    .iter()
                    .filter(|(_, a, d, _)| *a == "exit" && d.as_deref() == Some("goal_reached"))
                    .map(|r| r.3)
                    .max(),
                Goal::Event | Goal::Property => s
                    .events
                    .iter()
                    .filter(|(c, n, at, amount)| {
                        *c == e.contact
                            && *n == "purchase"
                            && *at >= e.started
                            && *at <= e.started + 2 * DAY
                            && (goal == Goal::Event || *amount >= 100)
                    })
                    .map(|r| r.2)
                    .min(),
            };
            at.map(|at| (e.id, at))
        })
        .collect();
    let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut steps: BTreeMap<String, (u64, u64, BTreeMap<String, u64>, u64)> =
        // The wait step's id is its position, "1".
        ["ab", "hello-a", "hello-b", "1", "bye"]
            .iter()
            .map(|s| (s.to_string(), Default::default()))
            .collect();
    let mut daily: BTreeMap<String, [Vec<u64>; 3]> = BTreeMap::new();
    let slot = |t: i64| {
        usize::try_from((t + OFFSET).div_euclid(DAY) - first)
            .ok()
            .filter(|d| *d < days)
    };
    let sent: Vec<_> = s
        .messages
        .iter()
        .filter(|m| m.1 == wf && m.5 == "sent")
        .collect();
    for e in s
        .enrollments
        .iter()
        .filter(|e| e.workflow == wf && e.started >= since)
    {
        let c = conv.get(&e.id).copied();
        let mut names = vec!["all".to_string()];
        let held = e.steps.iter().any(|r| r.0 == "@holdout");
        names.push(if held { "holdout" } else { "treatment" }.into());
        for r in e.steps.iter().filter(|r| r.1 == "split" && r.0 == "ab") {
            names.push(format!("arm ab={}", r.2.as_deref().unwrap()));
        }
        let my_sent: Vec<&_> = sent.iter().filter(|m| m.3 == Some(e.id)).collect();
        for n in &names {
            let g = groups.entry(n.clone()).or_default();
            g.0 += 1;
            g.1 += u64::from(c.is_some());
            let d = daily
                .entry(n.strip_prefix("arm ").unwrap_or(n).to_string())
                .or_insert_with(|| [vec![0; days], vec![0; days], vec![0; days]]);
            if let Some(k) = slot(e.started) {
                d[0][k] += 1;
            }
            for m in my_sent.iter().filter(|m| m.6.unwrap() >= since) {
                if let Some(k) = slot(m.6.unwrap()) {
                    d[1][k] += 1;
                }
            }
            if let Some(k) = c.and_then(slot) {
                d[2][k] += 1;
            }
        }
        for (step, action, detail, at) in &e.steps {
            let Some(row) = steps.get_mut(step) else {
                continue;
            };
            if *action == "exit" {
                continue;
            }
            row.0 += 1;
            row.1 += my_sent.iter().filter(|m| m.4 == *step).count() as u64;
            if *action == "skip" {
                let code = detail.as_deref().unwrap().split(':').next().unwrap();
                *row.2.entry(code.to_string()).or_default() += 1;
            }
            if c.is_some_and(|c| c >= *at) {
                row.3 += 1;
            }
        }
    }
    // Groups the workflow names but nobody is in.
    for n in ["all", "arm ab=a", "arm ab=b", "treatment", "holdout"] {
        groups.entry(n.into()).or_default();
    }
    groups.retain(|n, _| n != "arm ab=gone");
    daily.retain(|n, _| n != "ab=gone");
    Expected {
        groups,
        steps,
        daily,
    }
}

fn groups_of(r: &Value) -> BTreeMap<String, (u64, u64)> {
    r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_string(),
                (
                    g["entered"].as_u64().unwrap(),
                    g["converted"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn steps_of(r: &Value) -> BTreeMap<String, (u64, u64, BTreeMap<String, u64>, u64)> {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let skipped = s["skipped"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect();
            (
                s["step"].as_str().unwrap().to_string(),
                (
                    s["reached"].as_u64().unwrap(),
                    s["sent"].as_u64().unwrap(),
                    skipped,
                    s["converted_after"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

async fn insert(p: &Project, s: &Seed) {
    let q = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let opt = |v: &Option<String>| v.as_deref().map(q).unwrap_or_else(|| "NULL".into());
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "NULL".into());
    for chunk in s.enrollments.chunks(200) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|e| {
                format!(
                    "({}, {}, {}, 'k', 'done', {}, {})",
                    e.id,
                    q(e.workflow),
                    q(&e.contact),
                    e.started,
                    e.started
                )
            })
            .collect();
        p.exec(&format!(
            "INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, started_at, ended_at) VALUES {}",
            rows.join(", ")
        ))
        .await;
        let rows: Vec<String> = chunk
            .iter()
            .flat_map(|e| {
                e.steps.iter().map(move |(st, a, d, t)| {
                    // Each record carries its enrollment's workflow and
                    // start, as the store's writer copies them.
                    format!(
                        "({}, {}, {t}, {}, {}, {}, {})",
                        e.id,
                        q(st),
                        q(a),
                        opt(d),
                        q(e.workflow),
                        e.started
                    )
                })
            })
            .collect();
        p.exec(&format!(
            "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail, workflow, started_at) VALUES {}",
            rows.join(", ")
        ))
        .await;
    }
    for chunk in s.messages.chunks(200) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|(id, wf, c, e, st, status, sent)| {
                let at = sent.unwrap_or(0);
                format!(
                    "({}, {}, {}, {}, {}, 'hook', {}, 'x', {}, 1, {at}, {at}, {at}, {}, '{{}}')",
                    q(id),
                    q(wf),
                    q(c),
                    num(*e),
                    q(st),
                    q(c),
                    q(status),
                    num(*sent)
                )
            })
            .collect();
        p.exec(&format!(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, \
             status, attempts, not_before, next_attempt_at, created_at, sent_at, payload) VALUES {}",
            rows.join(", ")
        ))
        .await;
    }
    for chunk in s.events.chunks(200) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|(c, n, at, amount)| {
                format!("({}, {}, {at}, '{{\"amount\": {amount}}}')", q(c), q(n))
            })
            .collect();
        p.exec(&format!(
            "INSERT INTO events (contact_id, name, at, properties) VALUES {}",
            rows.join(", ")
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_status_and_console_count_what_the_rows_say() {
    let p = Project::new("timezone: Asia/Shanghai\nchannels:\n  hook: { kind: log }\n");
    let goals = [
        (
            "promo-prop",
            Goal::Property,
            "goal: { event: purchase, where: { field: amount, gte: 100 }, within: 2d }",
        ),
        (
            "promo-event",
            Goal::Event,
            "goal: { event: purchase, within: 2d }",
        ),
        (
            "promo-cond",
            Goal::Exit,
            "goal: { condition: { tag: vip }, within: 2d }",
        ),
    ];
    for (name, _, goal) in &goals {
        p.write(
            &format!("workflows/{name}.yaml"),
            &format!("name: {name}\ntrigger: {{ event: {{ name: never }} }}\n{goal}\n{STEPS}"),
        );
    }
    p.write("templates/hello.hbs", "hello");
    let contacts = 120;
    let mut csv = String::from("id,name\n");
    for i in 0..contacts {
        csv.push_str(&format!("c{i:03},N{i}\n"));
    }
    p.write("contacts.csv", &csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    let now = Utc::now().timestamp_millis();
    let seed_value = now as u64;
    let mut rng = Lcg(seed_value);
    let s = seed(&mut rng, now, contacts);
    insert(&p, &s).await;
    let ctx = format!("seed {seed_value}");

    // `nurture report` (all, and --since 5 days ago) and `status`.
    let status: Value = serde_json::from_str(&p.ok(&["status", "--format", "json"])).unwrap();
    let since5 = now - 5 * DAY;
    let since5_text = Utc
        .timestamp_millis_opt(since5)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (name, goal, _) in &goals {
        for since in [None, Some(since5)] {
            let mut args = vec!["report", name, "--format", "json"];
            if since.is_some() {
                args.extend(["--since", &since5_text]);
            }
            let r: Value = serde_json::from_str(&p.ok(&args)).unwrap();
            let want = expected(&s, name, *goal, since.unwrap_or(i64::MIN), 0, 0);
            assert_eq!(
                groups_of(&r),
                want.groups,
                "{name} since {since:?}: groups ({ctx})"
            );
            assert_eq!(
                steps_of(&r),
                want.steps,
                "{name} since {since:?}: steps ({ctx})"
            );
            if since.is_none() {
                assert_eq!(
                    status["reports"][name], r,
                    "{name}: status vs report ({ctx})"
                );
            }
        }
    }

    // The console's page per workflow: the same groups over its days, and
    // per day what the rows say.
    let d = Daemon::start(&p, &[]);
    let c = reqwest::Client::new();
    for (name, goal, _) in &goals {
        let r: Value = c
            .get(d.url(&format!("/v1/report/workflows/{name}?days=7")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let first_label = r["days"][0].as_str().unwrap();
        let first_day = chrono::NaiveDate::parse_from_str(first_label, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
            / DAY;
        let since = first_day * DAY - OFFSET;
        let want = expected(&s, name, *goal, since, first_day, 7);
        let mut groups = groups_of(&r);
        groups = groups
            .into_iter()
            .map(|(g, v)| {
                let full = if ["all", "treatment", "holdout"].contains(&g.as_str()) {
                    g
                } else {
                    format!("arm {g}")
                };
                (full, v)
            })
            .collect();
        assert_eq!(groups, want.groups, "{name}: console groups ({ctx})");
        assert_eq!(steps_of(&r), want.steps, "{name}: console steps ({ctx})");
        // And `nurture report --since` of the same moment says the same.
        let since_text = Utc
            .timestamp_millis_opt(since)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rep: Value = serde_json::from_str(&p.ok(&[
            "report",
            name,
            "--format",
            "json",
            "--since",
            &since_text,
        ]))
        .unwrap();
        assert_eq!(
            groups_of(&rep),
            want.groups,
            "{name}: report --since {since_text}"
        );
        for g in r["daily"].as_array().unwrap() {
            let n = g["group"].as_str().unwrap();
            let series = |k: &str| -> Vec<u64> {
                g[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect()
            };
            let zero = [vec![0; 7], vec![0; 7], vec![0; 7]];
            let w = want.daily.get(n).unwrap_or(&zero);
            assert_eq!(
                series("entered"),
                w[0],
                "{name} {n}: entered per day ({ctx})"
            );
            assert_eq!(series("sent"), w[1], "{name} {n}: sent per day ({ctx})");
            assert_eq!(
                series("converted"),
                w[2],
                "{name} {n}: converted per day ({ctx})"
            );
        }
    }
    drop(d);
}
