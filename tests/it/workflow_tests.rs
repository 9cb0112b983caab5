//! `nurture test` (issue 14, item 10): workflow test cases kept beside the
//! workflows, run by the real binary. A passing file exits 0; a failing one
//! prints the difference at FILE:LINE:COLUMN and exits 1; `--update` writes
//! what was seen as the expectations and keeps the rest of the file; a bad
//! file is refused with FILE:LINE:COLUMN and a suggestion. The cases run on
//! a throwaway in-memory store, never the project's: the project's store is
//! left untouched (checked), whichever store the suite runs on.

use crate::support;

use support::daemon::Project;

const WORKFLOW: &str = r#"
name: welcome
trigger: { contact_created: {} }
steps:
  - id: hello
    send: { channel: sms, template: hello }
  - wait: 1d
  - id: check
    if: { event: purchase, within: 1d }
    then:
      - tag: { add: [buyer] }
    else:
      - id: nudge
        send: { channel: sms, template: nudge }
"#;

fn project() -> Project {
    let p = Project::new(
        "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log, address: phone }\n\
         policies:\n  quiet_hours: { start: \"21:00\", end: \"09:00\" }\n",
    );
    std::fs::create_dir(p.path("tests")).unwrap();
    p.write("workflows/welcome.yaml", WORKFLOW)
        .write("templates/hello.hbs", "{{contact.name}}您好，欢迎！")
        .write("templates/nudge.hbs", "{{contact.name}}，新人礼包还在等您");
    p
}

const PASSING: &str = r#"# Welcome tests: a comment kept by --update.
cases:
  - name: a new contact is welcomed, then nudged
    start: 2026-11-02T21:30        # in quiet hours (21:00-09:00)
    contacts:
      - { id: t1, name: 周晓明, phone: "+8613800000001" }
    expect:
      - send: { workflow: welcome, contact: t1, step: hello, at: 2026-11-03T09:00, body_contains: 欢迎 }
      - send: { workflow: welcome, contact: t1, step: nudge, at: 2026-11-04T09:00, body: "周晓明，新人礼包还在等您" }

  - name: a buyer is not nudged
    start: 2026-11-02T10:00
    until: 3d
    contacts:
      - { id: t2, name: Ada, phone: "+8613800000002" }
    events:
      - { at: 2h, contact: t2, event: purchase, properties: { amount: 10 } }
    expect:
      - send: { contact: t2, step: hello }
"#;

fn run(p: &Project, args: &[&str]) -> (i32, String, String) {
    let out = p.command().arg("test").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn passing_cases_exit_zero_and_leave_the_store_alone() {
    let p = project();
    p.write("tests/welcome.yaml", PASSING);
    let (code, out, err) = run(&p, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok    "), "{out}");
    assert!(out.contains("2 cases: 2 passed, 0 failed"), "{out}");
    // The project's own SQLite store was never created.
    if p.postgres.is_none() {
        assert!(
            !p.db_path().exists(),
            "nurture test created the project's store"
        );
    }
    // --case picks cases by name.
    let (code, out, _) = run(&p, &["--case", "buyer"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 case: 1 passed"), "{out}");
}

#[test]
fn a_failing_case_prints_the_difference_at_its_line_and_exits_1() {
    let p = project();
    // The nudge is expected at 10:00 with another text; the buyer case
    // expects nothing, and sees the welcome.
    let failing = PASSING
        .replace(
            "at: 2026-11-04T09:00, body: \"周晓明，新人礼包还在等您\"",
            "at: 2026-11-04T10:00, body: \"周晓明，新人礼包\"",
        )
        .replace(
            "      - send: { contact: t2, step: hello }\n",
            "    expect: []\n",
        )
        .replace("    expect:\n    expect: []", "    expect: []");
    p.write("tests/welcome.yaml", &failing);
    let (code, out, _) = run(&p, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("2 cases: 0 passed, 2 failed"), "{out}");
    // The failing expectation, at its line and column.
    assert!(
        out.contains("tests/welcome.yaml:9:9: expected, not seen:"),
        "{out}"
    );
    assert!(
        out.contains("- send: { workflow: welcome, contact: t1, step: nudge, at: \"2026-11-04T10:00\", body: 周晓明，新人礼包 }"),
        "{out}"
    );
    assert!(
        out.contains("+ send: { workflow: welcome, contact: t1, step: nudge, channel: sms, to: \"+8613800000001\", at: \"2026-11-04T09:00\""),
        "{out}"
    );
    assert!(out.contains("differs in: at, body"), "{out}");
    // What was seen and not expected, at the case's `expect:`.
    assert!(out.contains("seen, not expected:"), "{out}");
    assert!(
        out.contains("+ send: { workflow: welcome, contact: t2, step: hello"),
        "{out}"
    );
    assert!(out.contains("nurture test --update"), "{out}");
}

#[test]
fn update_writes_what_was_seen_and_keeps_the_file() {
    let p = project();
    let stale = PASSING
        .replace(
            "      - send: { workflow: welcome, contact: t1, step: nudge, at: 2026-11-04T09:00, body: \"周晓明，新人礼包还在等您\" }\n",
            "      - skip: { workflow: welcome, contact: t1, reason: frequency_cap }\n",
        )
        .replace("      - send: { contact: t2, step: hello }\n", "");
    p.write("tests/welcome.yaml", &stale);
    let (code, out, _) = run(&p, &[]);
    assert_eq!(code, 1, "{out}");
    let (code, out, err) = run(&p, &["--update"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 file(s) updated"), "{out}");
    let text = std::fs::read_to_string(p.path("tests/welcome.yaml")).unwrap();
    // The case structure and the comments stay; the expectation that still
    // holds keeps its hand-written form; the stale one is gone; what was
    // seen is written in full.
    assert!(
        text.starts_with("# Welcome tests: a comment kept by --update.\n"),
        "{text}"
    );
    assert!(
        text.contains("start: 2026-11-02T21:30        # in quiet hours (21:00-09:00)"),
        "{text}"
    );
    assert!(text.contains("body_contains: 欢迎 }"), "{text}");
    assert!(!text.contains("frequency_cap"), "{text}");
    assert!(
        text.contains("      - send: { workflow: welcome, contact: t1, step: nudge, channel: sms, to: \"+8613800000001\", at: \"2026-11-04T09:00\", body: 周晓明，新人礼包还在等您 }"),
        "{text}"
    );
    assert!(
        text.contains("events:\n      - { at: 2h, contact: t2, event: purchase"),
        "{text}"
    );
    assert!(text.contains("contact: t2, step: hello"), "{text}");
    // And now it passes, and a second update changes nothing.
    let (code, out, _) = run(&p, &[]);
    assert_eq!(code, 0, "{out}\n{text}");
    run(&p, &["--update"]);
    assert_eq!(
        std::fs::read_to_string(p.path("tests/welcome.yaml")).unwrap(),
        text
    );
}

#[test]
fn a_bad_test_file_is_refused_at_file_line_column() {
    let p = project();
    p.write(
        "tests/bad.yaml",
        r#"cases:
  - name: typos
    start: 2026-11-02T10:00
    contacts:
      - { id: t1 }
    evnets: []
    events:
      - { at: tomorrow, contact: t1, event: purchase }
    expect:
      - sned: { contact: t1 }
      - send: { workflow: welcom, bdy: x }
"#,
    );
    let (code, out, err) = run(&p, &[]);
    assert_eq!(code, 1, "{out}{err}");
    for want in [
        "tests/bad.yaml:6:5: unknown key \"evnets\" in a test case",
        "did you mean \"events\"?",
        "tests/bad.yaml:8:15: at: \"tomorrow\" is not a time",
        "tests/bad.yaml:10:9: unknown key \"sned\" in an expectation",
        "did you mean \"send\"?",
        "tests/bad.yaml:11:27: no workflow named \"welcom\"",
        "did you mean \"welcome\"?",
        "tests/bad.yaml:11:35: unknown key \"bdy\" in a `send` expectation",
        "5 problems in 1 file",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Nothing ran.
    assert!(!out.contains("ok "), "{out}");
}

#[test]
fn the_quick_start_ships_passing_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("nurture"))
        .current_dir(root)
        .env_remove("NURTURE_DATABASE")
        .args(["--config", "nurture.yaml", "test"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
