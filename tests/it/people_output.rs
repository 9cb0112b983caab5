//! Issue 11, items 6-8: output people read. Chinese text lines up in every
//! table and fits the terminal, people are named beside their ids, and
//! status and history say honestly what went out, to whom, and what waits.

use crate::support;

use support::daemon::Project;
use unicode_width::UnicodeWidthStr;

const SETTINGS: &str = "timezone: Asia/Shanghai
channels:
  sms: { kind: log }
  wecom: { kind: log }
teams:
  east:
    - { id: s01, name: 王芳 }
    - { id: s02, name: 李雷 }
";

const CONTACTS: &str = "id,name,phone,created_at
c1,周晓明,+8613800000001,2026-10-01T00:00:00+08:00
c2,Ann Lee,+8613800000002,2026-10-01T00:00:00+08:00
c3,欧阳娜娜,+8613800000003,2026-10-01T00:00:00+08:00
";

fn project() -> Project {
    let p = Project::new(SETTINGS);
    p.write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: east, notify: wecom }\n  - send: { channel: sms, template: welcome }\n",
    )
    .write(
        "templates/welcome.hbs",
        "{{contact.name}}您好！\n欢迎加入会员，本周到店购物满300元立减50元，回复TD退订",
    )
    .write("c.csv", CONTACTS);
    p.ok(&["contacts", "import", p.path("c.csv").to_str().unwrap()]);
    support::db::running_since_epoch(&p.db_url(), &["welcome"]);
    p
}

/// stdout of a command, with COLUMNS set (or not).
fn run(p: &Project, columns: Option<&str>, args: &[&str]) -> String {
    let mut c = p.command();
    match columns {
        Some(n) => c.env("COLUMNS", n),
        None => c.env_remove("COLUMNS"),
    };
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The display column where `word` starts on `line`.
fn column_of(line: &str, word: &str) -> usize {
    let i = line
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {line:?}"));
    line[..i].width()
}

#[test]
fn dry_run_lines_up_chinese_names_people_and_fits_the_terminal() {
    let p = project();
    let args = ["dry-run", "--at", "2026-11-01T10:00:00+08:00"];
    let wide = run(&p, None, &args);
    // Every row's ACTION column starts where its header does, whatever the
    // names before it (two columns a Chinese character).
    let lines: Vec<&str> = wide.lines().collect();
    let head = lines.iter().position(|l| l.starts_with("WHEN")).unwrap();
    let at = column_of(lines[head], "ACTION");
    for l in &lines[head + 1..] {
        let word = if l.contains(" assign ") {
            "assign"
        } else {
            "send"
        };
        assert_eq!(column_of(l, word), at, "{l}");
    }
    // Names beside ids: the contact's, and the salesperson's.
    assert!(wide.contains("c1 周晓明"), "{wide}");
    assert!(
        wide.contains("→ s01 王芳") || wide.contains("→ s02 李雷"),
        "{wide}"
    );
    insta::assert_snapshot!("dry_run_wide", wide);

    let narrow = run(&p, Some("100"), &args);
    for l in narrow.lines() {
        assert!(l.width() <= 100, "{} columns: {l}", l.width());
    }
    insta::assert_snapshot!("dry_run_in_100_columns", narrow);
}

/// The time at the start of each history line, replaced (the entries of a
/// real run are at the real time).
/// Deliveries of one moment (the notice and the message) are sorted: which
/// the delivery worker finishes first varies.
fn without_times(s: &str) -> String {
    let mut lines: Vec<String> = s
        .lines()
        .map(|l| {
            if l.len() > 26 && l.as_bytes()[0].is_ascii_digit() && l.as_bytes()[4] == b'-' {
                format!("TIME{}", &l[26..])
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j < lines.len() && lines[j].contains(" sent on ") {
            j += 1;
        }
        lines[i..j].sort();
        i = j.max(i + 1);
    }
    lines.join("\n")
}

/// A workflow switched off in its file is neither "activated" nor "not
/// activated yet" (which promised the daemon would activate it).
#[test]
fn status_says_a_disabled_workflow_is_disabled() {
    let p = project();
    p.write(
        "workflows/later.yaml",
        "enabled: false\ntrigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: welcome }\n",
    );
    p.ok(&["run", "--until-idle", "--listen", "127.0.0.1:0"]);
    let status = run(&p, None, &["status"]);
    assert!(
        status
            .contains("later: disabled (`enabled: false` in its file): the daemon does not run it"),
        "{status}"
    );
    assert!(!status.contains("later: not activated"), "{status}");
    assert!(!status.contains("later: activated"), "{status}");
    assert!(status.contains("welcome: activated"), "{status}");
    // The files' lines do not repeat the heading's load time.
    let heading = status
        .lines()
        .find_map(|l| l.strip_prefix("files (as the daemon loaded them at "))
        .and_then(|l| l.strip_suffix("):"))
        .unwrap_or_else(|| panic!("no files heading:\n{status}"));
    let running: Vec<&str> = status.lines().filter(|l| l.contains(" running ")).collect();
    assert!(running.len() >= 3, "{status}");
    for line in running {
        assert!(!line.contains(&format!("(loaded {heading})")), "{status}");
    }
}

#[tokio::test]
async fn status_and_history_tell_messages_from_notices_deferrals_and_unsubscribes() {
    let p = project();
    // The daemon runs the workflow for the three contacts and delivers.
    let out = p
        .command()
        .args(["run", "--until-idle", "--listen", "127.0.0.1:0"])
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    // A multi-line body is one line of the text log.
    assert!(log.contains(r"周晓明您好！\n欢迎加入会员"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("欢迎")),
        "a body broke the log format:\n{log}"
    );

    // One more message held by quiet hours (as the daemon queues one at
    // night: not_before the end of the contact's quiet hours).
    p.exec(
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, payload, status, attempts, not_before, next_attempt_at, created_at) \
         VALUES ('late', 'welcome', 'c2', NULL, '1', 'sms', '+8613800000002', 'Ann您好', '{}', 'queued', 0, 4102444800000, 4102444800000, 4102405200000)",
    )
    .await;
    p.exec(
        "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, payload, status, attempts, not_before, next_attempt_at, created_at) \
         VALUES ('late1', 'welcome', 'c1', NULL, '1', 'sms', '+8613800000001', '晓明您好', '{}', 'queued', 0, 4102448400000, 4102448400000, 4102405200000)",
    )
    .await;
    p.ok(&["contacts", "unsubscribe", "c2", "--channel", "sms"]);
    p.ok(&["contacts", "unsubscribe", "c3"]);

    let status = run(&p, None, &["status"]);
    let table: String = status
        .lines()
        .take_while(|l| !l.starts_with("files"))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("status", table);
    let json: serde_json::Value =
        serde_json::from_str(&run(&p, None, &["status", "--format", "json"])).unwrap();
    let w = &json["workflows"][0];
    assert_eq!(
        (w["sent"].as_i64(), w["notices"].as_i64()),
        (Some(3), Some(3))
    );

    let mut all = String::new();
    for id in ["c1", "c2", "c3"] {
        all.push_str(&without_times(&run(
            &p,
            None,
            &["history", "--contact", id],
        )));
        all.push_str("\n\n");
    }
    insta::assert_snapshot!("history", all);
    let narrow = run(&p, Some("80"), &["history", "--contact", "c1"]);
    for l in narrow.lines() {
        assert!(l.width() <= 80, "{} columns: {l}", l.width());
    }
    let jsonl = run(
        &p,
        None,
        &["history", "--contact", "c2", "--format", "jsonl"],
    );
    assert!(jsonl.contains("\"template\":\"welcome\""), "{jsonl}");
    assert!(
        jsonl.contains("\"deferred_until\":\"2100-01-01T08:00:00+08:00\""),
        "{jsonl}"
    );
}

#[test]
fn validate_points_the_caret_under_the_right_column_after_chinese() {
    let p = Project::new(SETTINGS);
    p.write(
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { template: 欢迎, channel: smss }\n",
    )
    .write("templates/欢迎.hbs", "您好");
    let out = p.command().arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    let src = lines
        .iter()
        .position(|l| l.contains("channel: smss"))
        .unwrap_or_else(|| panic!("{err}"));
    let caret = lines[src + 1];
    assert_eq!(
        caret.find('^').map(|i| caret[..i].width()),
        Some(column_of(lines[src], "smss")),
        "{err}"
    );
    insta::assert_snapshot!(err.replace(&p.dir.path().display().to_string(), "DIR"));
}
