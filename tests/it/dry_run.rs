//! End-to-end tests of `nurture dry-run`: the real binary, real files, a real
//! store (SQLite, or PostgreSQL when the suite runs on it: `support::db`),
//! and answers checked against independent SQL on the same data.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use sqlx::Row;

use crate::support;

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(settings: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("workflows")).unwrap();
        fs::create_dir(dir.path().join("templates")).unwrap();
        fs::write(dir.path().join("nurture.yaml"), settings).unwrap();
        Project { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn write(&self, p: &str, text: &str) -> &Self {
        fs::write(self.path(p), text).unwrap();
        self
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("nurture").unwrap();
        c.current_dir(self.dir.path());
        match support::db::on_postgres() {
            true => c.env("NURTURE_DATABASE", support::db::url_for(self.dir.path())),
            false => c.env_remove("NURTURE_DATABASE"),
        };
        c.arg("--config").arg(self.path("nurture.yaml"));
        c
    }
    fn import(&self, csv: &str) {
        self.write("contacts.csv", csv);
        self.cmd()
            .args(["contacts", "import"])
            .arg(self.path("contacts.csv"))
            .assert()
            .success();
    }
    fn dry_run_jsonl(&self, extra: &[&str]) -> Vec<Value> {
        let out = self
            .cmd()
            .args(["dry-run", "--format", "jsonl"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dry-run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
    fn db(&self) -> PathBuf {
        self.path("nurture.db")
    }
}

/// A pool on the project's store (the file `db`, or its PostgreSQL database).
async fn pool_of(db: &Path) -> sqlx::AnyPool {
    support::db::any_pool(&support::db::url_for(db.parent().unwrap())).await
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn ids_of(rows: &[Value], action: &str) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| r["action"] == action)
        .map(|r| r["contact_id"].as_str().unwrap().to_string())
        .collect()
}

const SETTINGS: &str = r#"
timezone: Asia/Shanghai
channels:
  sms: { kind: log, address: phone }
  wecom: { kind: log }
fields: { city: string, level: string }
teams:
  east:
    - { id: s1, name: Wang Fang }
    - { id: s2, name: Li Lei }
    - { id: s3, name: Chen Jie }
"#;

/// A deterministic spread of contacts: cities, tags, activity, phones.
fn generated_contacts(n: usize) -> String {
    let cities = ["Shanghai", "Hangzhou", "Beijing", "Chengdu", ""];
    let mut csv = String::from("id,name,phone,created_at,last_active_at,unsubscribed,tags,city\n");
    for i in 0..n {
        let city = cities[i % cities.len()];
        let mut tags = vec![];
        if i % 3 == 0 {
            tags.push("vip");
        }
        if i % 7 == 0 {
            tags.push("dnd");
        }
        let phone = if i % 11 == 0 {
            String::new()
        } else {
            format!("+86138{i:08}")
        };
        // Activity spread over the 80 days before 2026-11-01; some never active.
        let last = if i % 13 == 0 {
            String::new()
        } else {
            let day = i % 80;
            let d = chrono::DateTime::parse_from_rfc3339("2026-11-01T08:00:00+08:00").unwrap()
                - chrono::Duration::days(day as i64);
            d.to_rfc3339()
        };
        let unsub = if i % 17 == 0 { "true" } else { "false" };
        csv.push_str(&format!(
            "c{i:04},Name {i},{phone},2026-06-01T00:00:00+08:00,{last},{unsub},{},{city}\n",
            tags.join(";")
        ));
    }
    csv
}

const WINBACK: &str = r#"
name: winback
trigger:
  inactive: { for: 30d, check: "0 10 * * *" }
audience:
  all:
    - tag: vip
    - field: city
      in: [Shanghai, Hangzhou]
    - not: { tag: dnd }
steps:
  - send: { channel: sms, template: winback }
  - wait: 3d
"#;

#[test]
fn dry_run_plans_exactly_the_rows_an_independent_query_selects() {
    let p = Project::new(SETTINGS);
    p.write("workflows/winback.yaml", WINBACK).write(
        "templates/winback.hbs",
        "Hi {{contact.name}}, we miss you in {{contact.city}}.",
    );
    p.import(&generated_contacts(600));
    support::db::running_since_epoch(
        &support::db::url_for(p.db().parent().unwrap()),
        &["winback"],
    );
    let rows = p.dry_run_jsonl(&["--at", "2026-11-01T10:00:00+08:00"]);

    // The same question asked in plain SQL, written independently of the compiler.
    let at_ms = chrono::DateTime::parse_from_rfc3339("2026-11-01T10:00:00+08:00")
        .unwrap()
        .timestamp_millis();
    let (matched, reachable): (BTreeSet<String>, BTreeSet<String>) = rt().block_on(async {
        let pool = pool_of(&p.db()).await;
        let city = if support::db::on_postgres() {
            "CAST(c.attrs AS jsonb) ->> 'city'"
        } else {
            "json_extract(c.attrs, '$.city')"
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, unsubscribed, phone FROM contacts c
              WHERE EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'vip')
                AND {city} IN ('Shanghai', 'Hangzhou')
                AND NOT EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'dnd')
                AND coalesce(c.last_active_at, c.created_at) < $1"
        )))
        .bind(at_ms - 30 * 86_400_000)
        .fetch_all(&pool)
        .await
        .unwrap();
        let all: BTreeSet<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let ok = rows
            .iter()
            .filter(|r| r.get::<i64, _>(1) == 0 && r.get::<Option<String>, _>(2).is_some())
            .map(|r| r.get::<String, _>(0))
            .collect();
        (all, ok)
    });
    assert!(
        matched.len() > 20,
        "the fixture should match a fair number of contacts, got {}",
        matched.len()
    );
    assert_eq!(
        ids_of(&rows, "send"),
        reachable,
        "sends are the matched contacts that can be reached"
    );
    let waits = ids_of(&rows, "wait");
    assert_eq!(waits, matched, "every matched contact enters and waits");
    // The rest are skips with the right reasons.
    for r in rows.iter().filter(|r| r["action"] == "skip") {
        let id = r["contact_id"].as_str().unwrap();
        assert!(matched.contains(id));
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason == "unsubscribed" || reason == "no_address",
            "unexpected reason {reason}"
        );
    }
    // The SPEC's field names.
    let send = rows.iter().find(|r| r["action"] == "send").unwrap();
    for key in [
        "workflow",
        "contact_id",
        "step",
        "action",
        "channel",
        "to",
        "body",
        "at",
    ] {
        assert!(send.get(key).is_some(), "send row lacks {key}: {send}");
    }
    assert_eq!(send["step"], "0");
    assert_eq!(send["workflow"], "winback");
}

#[test]
fn unsubscribed_and_opted_out_contacts_are_never_planned_a_send() {
    let p = Project::new(SETTINGS);
    p.write("workflows/winback.yaml", WINBACK)
        .write("templates/winback.hbs", "Hi {{contact.name}}");
    p.import(&generated_contacts(300));
    support::db::running_since_epoch(
        &support::db::url_for(p.db().parent().unwrap()),
        &["winback"],
    );
    // One more opts out of sms only, through the CLI.
    let rows_before = p.dry_run_jsonl(&["--at", "2026-11-01T10:00:00+08:00"]);
    let victim = ids_of(&rows_before, "send").into_iter().next().unwrap();
    p.cmd()
        .args(["contacts", "unsubscribe", &victim, "--channel", "sms"])
        .assert()
        .success();

    let rows = p.dry_run_jsonl(&["--at", "2026-11-01T10:00:00+08:00"]);
    let sends = ids_of(&rows, "send");
    assert!(!sends.contains(&victim));
    let unsubscribed: BTreeSet<String> = rt().block_on(async {
        let pool = pool_of(&p.db()).await;
        sqlx::query_scalar::<_, String>("SELECT id FROM contacts WHERE unsubscribed = 1")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect()
    });
    assert!(!unsubscribed.is_empty());
    assert!(
        sends.is_disjoint(&unsubscribed),
        "an unsubscribed contact was planned a send"
    );
    let skipped: Vec<&Value> = rows
        .iter()
        .filter(|r| r["contact_id"] == victim.as_str())
        .collect();
    assert!(
        skipped
            .iter()
            .any(|r| r["action"] == "skip" && r["reason"] == "unsubscribed"),
        "{skipped:?}"
    );
}

#[test]
fn quiet_hours_defer_to_the_contacts_morning() {
    let p = Project::new(&format!(
        "{SETTINGS}\npolicies:\n  quiet_hours: {{ start: \"21:00\", end: \"09:00\" }}\n"
    ));
    p.write(
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hello }\n",
    )
    .write("templates/hello.hbs", "Hello {{contact.name}}");
    p.import(
        "id,name,phone,timezone\n\
         sh,Shanghai Person,+8613800000001,\n\
         la,LA Person,+13105550000,America/Los_Angeles\n",
    );
    // 22:30 in Shanghai is 06:30 in Los Angeles (PST): both are quiet.
    let rows = p.dry_run_jsonl(&["--at", "2026-11-10T22:30:00+08:00"]);
    let at = |id: &str| {
        rows.iter()
            .find(|r| r["contact_id"] == id && r["action"] == "send")
            .unwrap()["at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(at("sh"), "2026-11-11T09:00:00+08:00");
    assert_eq!(at("la"), "2026-11-10T09:00:00-08:00");
    // At 10:00 Shanghai (18:00 in LA) nothing waits.
    let rows = p.dry_run_jsonl(&["--at", "2026-11-10T10:00:00+08:00"]);
    let sh = rows.iter().find(|r| r["contact_id"] == "sh").unwrap();
    assert_eq!(sh["at"], "2026-11-10T10:00:00+08:00");
}

#[test]
fn strict_templates_skip_instead_of_sending_hi_comma() {
    let p = Project::new(SETTINGS);
    p.write(
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hello }\n",
    )
    .write(
        "templates/hello.hbs",
        "Hi {{contact.name}}, see you in {{contact.city}}!",
    );
    p.import(
        "id,name,phone,city\n\
         full,Ada,+8613800000001,Shanghai\n\
         noname,,+8613800000002,Shanghai\n\
         nocity,Bo,+8613800000003,\n",
    );
    let rows = p.dry_run_jsonl(&["--at", "2026-11-10T10:00:00+08:00"]);
    assert_eq!(ids_of(&rows, "send"), BTreeSet::from(["full".to_string()]));
    for id in ["noname", "nocity"] {
        let r = rows.iter().find(|r| r["contact_id"] == id).unwrap();
        assert_eq!(r["action"], "skip");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .starts_with("template_error: "),
            "{r}"
        );
    }
    for r in &rows {
        if let Some(body) = r["body"].as_str() {
            assert!(!body.contains("Hi ,") && !body.contains("in !"), "{body}");
        }
    }
}

#[test]
fn a_message_over_the_channels_limit_is_a_skip_with_a_reason() {
    // Two nested `{{#each}}` over a contact's tags: 300 tags make ~90,000
    // items, over the 64 KiB a `log` channel takes (10,000 tags rendered
    // 100 MB before the bound).
    let p = Project::new(SETTINGS);
    p.write(
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: tags }\n",
    )
    .write(
        "templates/tags.hbs",
        "{{#each contact.tags}}{{#each ../contact.tags}}{{this}} {{/each}}{{/each}}",
    );
    let tags: Vec<String> = (0..300).map(|i| format!("t{i:03}")).collect();
    p.import(&format!(
        "id,name,phone,tags\nmany,Ada,+8613800000001,{}\nfew,Bo,+8613800000002,a;b\n",
        tags.join(";")
    ));
    let rows = p.dry_run_jsonl(&["--at", "2026-11-10T10:00:00+08:00"]);
    assert_eq!(ids_of(&rows, "send"), BTreeSet::from(["few".to_string()]));
    let r = rows.iter().find(|r| r["contact_id"] == "many").unwrap();
    assert_eq!(r["action"], "skip");
    assert_eq!(
        r["reason"],
        "template_error: message is over the channel's limit of 65536 bytes in template \"tags\"",
        "{r}"
    );
}

#[test]
fn round_robin_spreads_new_contacts_evenly_and_shows_the_real_pick() {
    let p = Project::new(SETTINGS);
    p.write(
        "workflows/greet.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: east, strategy: round_robin }\n  - send: { channel: wecom, template: hi }\n",
    )
    .write("templates/hi.hbs", "{{owner.name}} will look after {{contact.id}}");
    let mut csv = String::from("id\n");
    for i in 0..301 {
        csv.push_str(&format!("p{i:03}\n"));
    }
    p.import(&csv);
    let rows = p.dry_run_jsonl(&["--at", "2026-11-10T10:00:00+08:00"]);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["action"] == "assign") {
        *counts
            .entry(r["salesperson"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(counts.values().sum::<usize>(), 301);
    let (min, max) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert!(max - min <= 1, "uneven: {counts:?}");
    // The message names the salesperson the assignment picked.
    let names = BTreeMap::from([("s1", "Wang Fang"), ("s2", "Li Lei"), ("s3", "Chen Jie")]);
    for pair in rows.chunks(2) {
        let who = pair[0]["salesperson"].as_str().unwrap();
        assert!(
            pair[1]["body"].as_str().unwrap().starts_with(names[who]),
            "{pair:?}"
        );
    }
}

#[test]
fn explain_says_which_condition_held_and_which_failed() {
    let p = Project::new(SETTINGS);
    p.write("workflows/winback.yaml", WINBACK)
        .write("templates/winback.hbs", "Hi {{contact.name}}");
    p.import(
        "id,name,phone,created_at,last_active_at,tags,city\n\
         bj,Beijing VIP,+8613800000001,2026-01-01T00:00:00Z,2026-08-01T00:00:00Z,vip,Beijing\n\
         sh,Shanghai VIP,+8613800000002,2026-01-01T00:00:00Z,2026-08-01T00:00:00Z,vip,Shanghai\n",
    );
    let out = p
        .cmd()
        .args([
            "dry-run",
            "--at",
            "2026-11-01T10:00:00+08:00",
            "--explain",
            "bj",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("✓ tag vip"), "{text}");
    assert!(
        text.contains("✗ field city in [\"Shanghai\", \"Hangzhou\"] (value: \"Beijing\")"),
        "{text}"
    );
    assert!(
        text.contains("would not enter: not in the audience"),
        "{text}"
    );

    let text = String::from_utf8(
        p.cmd()
            .args([
                "dry-run",
                "--at",
                "2026-11-01T10:00:00+08:00",
                "--explain",
                "sh",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(text.contains("→ would enter"), "{text}");
    assert!(text.contains("send on sms to +8613800000002"), "{text}");

    p.cmd()
        .args(["dry-run", "--explain", "nobody"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("no contact with id \"nobody\""));
}

#[test]
fn dry_run_changes_nothing_in_the_store() {
    let p = Project::new(SETTINGS);
    p.write("workflows/winback.yaml", WINBACK)
        .write("templates/winback.hbs", "Hi {{contact.name}}");
    p.write(
        "workflows/greet.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: east, strategy: round_robin }\n",
    );
    p.import(&generated_contacts(200));
    let snapshot = || {
        rt().block_on(async {
            let pool = pool_of(&p.db()).await;
            let mut v = vec![];
            for t in [
                "contacts",
                "contact_tags",
                "event_log",
                "enrollments",
                "enrollment_steps",
                "outbox",
                "team_cursors",
                "cursors",
                "salesperson_load",
            ] {
                let n: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                v.push((t, n));
            }
            let owners: i64 =
                sqlx::query_scalar("SELECT count(*) FROM contacts WHERE owner IS NOT NULL")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            v.push(("owners", owners));
            pool.close().await;
            v
        })
    };
    let before = snapshot();
    for format in ["table", "jsonl", "csv"] {
        p.cmd()
            .args([
                "dry-run",
                "--at",
                "2026-11-01T10:00:00+08:00",
                "--all-contacts",
                "--format",
                format,
            ])
            .assert()
            .success();
    }
    assert_eq!(snapshot(), before);
}

#[test]
fn csv_output_neutralises_formulas_but_keeps_phone_numbers() {
    let p = Project::new(SETTINGS);
    p.write(
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hello }\n",
    )
    .write("templates/hello.hbs", "{{contact.name}}");
    p.import(
        "id,name,phone\n\
         evil,\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",+8613800000001\n\
         at,@SUM(A1),+8613800000002\n",
    );
    let out = p
        .cmd()
        .args([
            "dry-run",
            "--at",
            "2026-11-10T10:00:00+08:00",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut r = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = r.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let body = &row[col("body")];
        assert!(body.starts_with("'=") || body.starts_with("'@"), "{body}");
        assert!(row[col("to")].starts_with("+86138"), "{row:?}");
    }
}

#[test]
fn csv_and_table_formats_carry_the_same_plan() {
    let p = Project::new(SETTINGS);
    p.write("workflows/winback.yaml", WINBACK).write(
        "templates/winback.hbs",
        "Hi {{contact.name}}, \"quoted\", comma",
    );
    p.import(&generated_contacts(300));
    support::db::running_since_epoch(
        &support::db::url_for(p.db().parent().unwrap()),
        &["winback"],
    );
    let jsonl = p.dry_run_jsonl(&["--at", "2026-11-01T10:00:00+08:00"]);
    let out = p
        .cmd()
        .args([
            "dry-run",
            "--at",
            "2026-11-01T10:00:00+08:00",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let mut rdr = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = rdr.headers().unwrap().clone();
    assert_eq!(&headers[0], "workflow");
    let records: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), jsonl.len());
    let body_col = headers.iter().position(|h| h == "body").unwrap();
    let first_send = records.iter().find(|r| &r[3] == "send").unwrap();
    assert!(first_send[body_col].contains("\"quoted\", comma"));
    // The same times as the JSON lines, in the same zones and notation (the
    // waits' were in UTC, with `Z` and `+00:00` mixed).
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    for (r, j) in records.iter().zip(&jsonl) {
        assert_eq!(&r[col("at")], j["at"].as_str().unwrap(), "{r:?} {j}");
        assert_eq!(
            &r[col("until")],
            j["until"].as_str().unwrap_or(""),
            "{r:?} {j}"
        );
    }
    assert!(records.iter().any(|r| &r[3] == "wait"));

    let table = String::from_utf8(
        p.cmd()
            .args(["dry-run", "--at", "2026-11-01T10:00:00+08:00"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let sends = jsonl.iter().filter(|r| r["action"] == "send").count();
    assert!(table.contains(&format!("send={sends}")), "{table}");
    assert!(table.contains("winback"), "{table}");
}

#[test]
fn bad_at_and_unknown_workflow_are_user_errors() {
    let p = Project::new(SETTINGS);
    p.write("workflows/winback.yaml", WINBACK)
        .write("templates/winback.hbs", "Hi {{contact.name}}");
    p.import("id\nx\n");
    p.cmd()
        .args(["dry-run", "--at", "yesterday"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("RFC 3339"));
    p.cmd()
        .args(["dry-run", "--workflow", "winbak"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("did you mean \"winback\""));
}
