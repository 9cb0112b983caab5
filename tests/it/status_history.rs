//! `nurture status` and `nurture history`: the real binary on a project in a
//! temporary folder, with enrollments and messages written by SQL as the
//! daemon would write them.

use std::fs;
use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

use crate::support;

const SETTINGS: &str = r#"
timezone: Asia/Shanghai
channels:
  sms: { kind: log }
"#;

const WELCOME: &str = "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hello }\n  - wait: 3d\n";

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("workflows")).unwrap();
        fs::create_dir(dir.path().join("templates")).unwrap();
        fs::write(dir.path().join("nurture.yaml"), SETTINGS).unwrap();
        let p = Project { dir };
        p.write("workflows/welcome.yaml", WELCOME)
            .write("templates/hello.hbs", "Hello {{contact.id}}");
        p
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
        c.env("NO_COLOR", "1")
            .arg("--config")
            .arg(self.path("nurture.yaml"));
        c
    }
    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn sql(&self, statements: &[&str]) {
        let url = support::db::url_for(self.dir.path());
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = nurture::store::Store::open(&url).await.unwrap();
            let pool = store.db();
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            store.close().await;
        });
    }
}

/// 2026-11-01T09:00:00+08:00 plus `mins` minutes, in ms.
fn t(mins: i64) -> i64 {
    1_793_494_800_000 + mins * 60_000
}

/// Two contacts, enrollments in every status, steps and messages in every
/// outcome, written as the daemon writes them.
fn seed(p: &Project) {
    p.run_ok(&[
        "contacts",
        "add",
        "c1",
        "--created-at",
        "2026-11-01T09:00:00+08:00",
    ]);
    p.run_ok(&[
        "contacts",
        "add",
        "c2",
        "--created-at",
        "2026-11-01T09:00:00+08:00",
    ]);
    p.run_ok(&[
        "contacts",
        "event",
        "c1",
        "purchase",
        "--at",
        "2026-11-01T09:30:00+08:00",
        "--prop",
        "amount=5",
    ]);
    let far = 4_000_000_000_000i64; // 2096: still waiting
    let stmts = [
        format!(
            "INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ('c1', 'vip', {})",
            t(0)
        ),
        format!(
            "INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, step_id, next_run_at, started_at) \
             VALUES (1, 'welcome', 'c1', 'once', 'active', '1', {far}, {})",
            t(10)
        ),
        format!(
            "INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, step_id, next_run_at, started_at) \
             VALUES (2, 'welcome', 'c2', 'once', 'active', '0', {}, {})",
            t(10),
            t(10)
        ),
        format!(
            "INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, started_at, ended_at, end_reason) \
             VALUES (3, 'welcome', 'c1', 'x', 'done', {}, {}, 'completed')",
            t(11),
            t(50)
        ),
        format!(
            "INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, started_at, ended_at, end_reason) \
             VALUES (4, 'old-promo', 'c1', 'once', 'exited', {}, {}, 'goal_reached')",
            t(12),
            t(40)
        ),
        format!(
            "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail) \
             VALUES (1, '0', {}, 'send', 'sms to c1')",
            t(20)
        ),
        // A wait's end is stored in UTC.
        format!(
            "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail) \
             VALUES (1, '1', {}, 'wait', '2026-11-02T01:00:00Z')",
            t(25)
        ),
        format!(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, status, \
             attempts, not_before, next_attempt_at, created_at, sent_at, provider_id) \
             VALUES ('m1', 'welcome', 'c1', 1, '0', 'sms', 'c1', 'Hello c1', 'sent', 1, {0}, {0}, {0}, {1}, 'log-1')",
            t(20),
            t(21)
        ),
        format!(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, status, \
             attempts, not_before, next_attempt_at, created_at, last_error) \
             VALUES ('m2', 'welcome', 'c1', 3, '0', 'sms', 'c1', 'Hello again', 'dead', 5, {0}, {1}, {0}, 'provider said: invalid number')",
            t(30),
            t(35)
        ),
        format!(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, status, \
             not_before, next_attempt_at, created_at) \
             VALUES ('m3', 'welcome', 'c2', 2, '0', 'sms', 'c2', 'Hello c2', 'queued', {0}, {0}, {0})",
            t(60)
        ),
    ];
    let stmts: Vec<&str> = stmts.iter().map(String::as_str).collect();
    p.sql(&stmts);
}

#[test]
fn status_counts_per_workflow_and_shows_a_broken_file() {
    let p = Project::new();
    p.write(
        "workflows/broken.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, tempalte: hello }\n",
    );
    // Before any store: zeros, no error. (A PostgreSQL database always
    // exists: status opens it, and finds it empty.)
    let out = p.run_ok(&["status"]);
    if !support::db::on_postgres() {
        assert!(out.contains("no customer store"), "{out}");
    }
    seed(&p);

    let out = p.run_ok(&["status", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let wf = |name: &str| -> Value {
        v["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))
            .clone()
    };
    let w = wf("welcome");
    assert_eq!(w["state"], "loaded");
    assert_eq!(
        [
            &w["enrolled"],
            &w["active"],
            &w["waiting"],
            &w["done"],
            &w["exited"]
        ],
        [3, 2, 1, 1, 0]
    );
    assert_eq!([&w["sent"], &w["failed"], &w["queued"]], [1, 1, 1]);
    let old = wf("old-promo");
    assert_eq!(old["state"], "removed");
    assert_eq!(old["exited"], 1);
    assert_eq!(wf("broken")["state"], "broken");
    assert_eq!(v["files_source"], "checked_now");
    let files = v["files"].as_array().unwrap();
    let broken = files
        .iter()
        .find(|f| f["file"] == "workflows/broken.yaml")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(broken["state"], "broken");
    let first = broken["diagnostics"][0].as_str().unwrap();
    assert!(
        first.starts_with("workflows/broken.yaml:3:") || first.contains("broken.yaml:3:"),
        "{first}"
    );
    assert!(first.contains("tempalte"), "{first}");
    for f in [
        "nurture.yaml",
        "workflows/welcome.yaml",
        "templates/hello.hbs",
    ] {
        let row = files
            .iter()
            .find(|r| r["file"] == f)
            .unwrap_or_else(|| panic!("{f}: {v}"));
        assert_eq!(row["state"], "loaded");
    }

    // The table says the same.
    let out = p.run_ok(&["status"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("welcome "))
        .unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "welcome", "loaded", "3", "2", "1", "1", "0", "1", "0", "1", "1"
        ],
        "{out}"
    );
    assert!(out.contains("ENROLLED"), "{out}");
    let broken_line = out
        .lines()
        .find(|l| {
            l.contains("broken") && l.contains("workflows/broken.yaml") && l.contains("tempalte")
        })
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        broken_line.trim_start().starts_with("broken"),
        "{broken_line}"
    );

    // Once the daemon recorded file states (by absolute path), those are shown.
    let welcome = p.path("workflows/welcome.yaml").canonicalize().unwrap();
    p.sql(&[&format!(
        "INSERT INTO file_states (file, state, diagnostics, updated_at) VALUES \
         ('{0}', 'broken', '{0}:2:3: unknown step \"sned\"', 1793494800000)",
        welcome.display()
    )]);
    let out = p.run_ok(&["status"]);
    assert!(out.contains("as the daemon loaded them"), "{out}");
    assert!(out.contains("unknown step \"sned\""), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("welcome ") && l.contains("broken")),
        "{out}"
    );
}

#[test]
fn history_lists_what_happened_in_order() {
    let p = Project::new();
    seed(&p);
    let out = p.run_ok(&["history", "--contact", "c1"]);
    let lines: Vec<&str> = out.lines().skip(1).collect();
    let expect = [
        ("2026-11-01 09:00:00 +08:00", "contact created"),
        ("2026-11-01 09:00:00 +08:00", "tag added: vip"),
        (
            "2026-11-01 09:10:00 +08:00",
            "welcome: enrolled (entry once)",
        ),
        ("2026-11-01 09:11:00 +08:00", "welcome: enrolled (entry x)"),
        ("2026-11-01 09:12:00 +08:00", "old-promo: enrolled"),
        (
            "2026-11-01 09:20:00 +08:00",
            "welcome: step 0 send: sms to c1",
        ),
        (
            "2026-11-01 09:20:00 +08:00",
            "welcome: message queued on sms to c1",
        ),
        ("2026-11-01 09:21:00 +08:00", ", provider id log-1"),
        // In the zone the header names, not UTC.
        (
            "2026-11-01 09:25:00 +08:00",
            "welcome: step 1 wait until 2026-11-02 09:00:00 +08:00",
        ),
        (
            "2026-11-01 09:30:00 +08:00",
            "event purchase {\"amount\":\"5\"}",
        ),
        (
            "2026-11-01 09:30:00 +08:00",
            "welcome: message queued on sms to c1",
        ),
        (
            "2026-11-01 09:35:00 +08:00",
            "failed on sms after 5 attempts: provider said: invalid number",
        ),
        (
            "2026-11-01 09:40:00 +08:00",
            "old-promo: exited (goal_reached)",
        ),
        ("2026-11-01 09:50:00 +08:00", "welcome: done (completed)"),
    ];
    assert_eq!(lines.len(), expect.len(), "{out}");
    for (line, (time, text)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(time),
            "{line:?} should be at {time}\n{out}"
        );
        assert!(line.contains(text), "{line:?} should say {text:?}\n{out}");
    }
    // c2's message is not in c1's history.
    assert!(!out.contains("Hello c2"), "{out}");

    let out = p.run_ok(&["history", "--contact", "c2", "--format", "jsonl"]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["contact_created", "enrollment_started", "message_queued"]
    );
    assert_eq!(rows[2]["status"], "queued");
    assert_eq!(rows[2]["body"], "Hello c2");
    assert_eq!(rows[2]["at"], "2026-11-01T10:00:00+08:00");
    assert!(rows.iter().all(|r| r["contact_id"] == "c2"));

    // A wait's end is in the project's zone too, as in the text.
    let out = p.run_ok(&["history", "--contact", "c1", "--format", "jsonl"]);
    let wait: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"] == "wait")
        .collect();
    assert_eq!(wait.len(), 1, "{out}");
    assert_eq!(wait[0]["detail"], "2026-11-02T09:00:00+08:00", "{out}");
}

#[test]
fn history_of_an_unknown_contact_exits_1() {
    let p = Project::new();
    let out = p
        .cmd()
        .args(["history", "--contact", "ghost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    seed(&p);
    let out = p
        .cmd()
        .args(["history", "--contact", "ghost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no contact with id \"ghost\""), "{err}");
}
