//! Issue 11, item 5: a validate that helps. Literals checked against
//! declared types, `address:` naming an address field, cron problems in
//! words, template problems at the template's own line with the variables
//! that exist, `validate templates/x.hbs` checking the workflows that send
//! it, and a comparison to a template string flagged.

use std::path::Path;

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    dir
}

fn validate(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("nurture"))
        .current_dir(dir)
        .env_remove("NURTURE_DATABASE")
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap()
        ),
    )
}

const SETTINGS: &str = "timezone: Asia/Shanghai
channels:
  sms: { kind: log, address: lifetime_value }
  email: { kind: log, address: emial }
fields:
  lifetime_value: number
  level: string
";

#[test]
fn literals_addresses_cron_and_template_strings_are_checked() {
    let dir = folder(&[
        ("nurture.yaml", SETTINGS),
        (
            "workflows/vip.yaml",
            r#"trigger: { schedule: { cron: "0 9 31 2 *" } }
audience:
  all:
    - { field: lifetime_value, gte: "lots" }
    - { field: level, older_than: 30d }
    - { field: last_active_at, equals: "{{today}}" }
steps:
  - send: { channel: email, template: hi }
"#,
        ),
        ("templates/hi.hbs", "您好"),
    ]);
    let (code, out) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn template_problems_are_at_the_template_line_and_list_the_variables() {
    let dir = folder(&[
        (
            "nurture.yaml",
            "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log }\n",
        ),
        (
            "workflows/hello.yaml",
            "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hello }\n",
        ),
        (
            "workflows/other.yaml",
            "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: smss, template: other }\n",
        ),
        (
            "templates/hello.hbs",
            "{{contact.name}}您好，\n{{shop.name}}欢迎您",
        ),
        ("templates/other.hbs", "您好"),
    ]);
    let (code, all) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{all}");
    assert!(all.contains("smss"), "{all}");
    // One template: its problems and those of the workflows that send it,
    // not the others'.
    let (code, one) = validate(dir.path(), &["templates/hello.hbs"]);
    assert_eq!(code, 1, "{one}");
    assert!(!one.contains("smss"), "{one}");
    insta::assert_snapshot!(one);
    let (code, other) = validate(dir.path(), &["templates/other.hbs"]);
    assert_eq!(code, 1, "{other}");
    assert!(other.contains("no channel \"smss\""), "{other}");
}

#[test]
fn every_problem_of_a_channel_is_reported_in_one_run() {
    let dir = folder(&[
        (
            "nurture.yaml",
            "timezone: Asia/Shanghai\nchannels:\n  sms:\n    kind: twilio\n    from: \"+15550001\"\n    account_sid_env: NURTURE_TEST_UNSET_SID\n    auth_token_env: NURTURE_TEST_UNSET_TOKEN\n    timeout: soon\n",
        ),
        (
            "workflows/hello.yaml",
            "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hi }\n",
        ),
        ("templates/hi.hbs", "您好"),
    ]);
    let (code, out) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "NURTURE_TEST_UNSET_SID (account_sid_env) is not set",
        "NURTURE_TEST_UNSET_TOKEN (auth_token_env) is not set",
        "timeout \"soon\"",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
    insta::assert_snapshot!(out);
}

/// A helper name with a typo is placed at the name and gets a did-you-mean;
/// a name like nothing lists the helpers.
#[test]
fn an_unknown_helper_is_placed_and_gets_a_suggestion() {
    let dir = folder(&[
        (
            "nurture.yaml",
            "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log }\n",
        ),
        (
            "workflows/hello.yaml",
            "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms, template: hello }\n  - send: { channel: sms, template: other }\n",
        ),
        ("templates/hello.hbs", "您好 {{dat now \"M月D日\"}}"),
        ("templates/other.hbs", "您好 {{frobnicate now}}"),
    ]);
    let (code, all) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{all}");
    assert!(all.contains("templates/hello.hbs:1:6: "), "{all}");
    assert!(all.contains("help: did you mean \"date\"?"), "{all}");
    assert!(all.contains("templates/other.hbs:1:6: "), "{all}");
    assert!(
        all.contains("help: the helpers are add, and, date, default"),
        "{all}"
    );
}

/// A salesperson's email that SMTP cannot address is reported at its line
/// and column (notices on an smtp channel go there); internationalized
/// addresses are fine.
#[test]
fn a_salespersons_email_smtp_cannot_address_is_an_error_at_its_place() {
    let dir = folder(&[(
        "nurture.yaml",
        "timezone: Asia/Shanghai\nteams:\n  east:\n    \
         - { id: s01, name: 王芳, email: wangfang.example.com }\n    \
         - { id: s02, name: 李雷, email: 李雷@例子.中国 }\n",
    )]);
    let (code, out) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "nurture.yaml:4:35: salesperson \"s01\": email \"wangfang.example.com\" is not an email address"
        ),
        "{out}"
    );
    assert!(
        out.contains("notices to them on an smtp channel would be refused"),
        "{out}"
    );
    assert!(out.contains("1 problem"), "only s01's: {out}");
}

/// A template that reads `owner.*`, sent where a contact may have no owner
/// (no `assign` before it, no `if: { owner: any }` around it, an audience
/// that does not require one), is a warning at the template's line: such a
/// contact is skipped. Guarded sends, and a `{{#if owner}}`, are not.
#[test]
fn a_template_reading_the_owner_where_there_may_be_none_is_a_warning() {
    let dir = folder(&[
        (
            "nurture.yaml",
            "timezone: Asia/Shanghai\nfields: { city: string }\nchannels:\n  sms: { kind: log }\nteams:\n  east:\n    - { id: s1, name: 王芳, region: 上海 }\n",
        ),
        (
            "templates/hi.hbs",
            "{{contact.name}}您好，我是{{owner.name}}\n",
        ),
        (
            "templates/safe.hbs",
            "{{#if owner}}{{owner.name}}{{/if}}您好\n",
        ),
        (
            "workflows/a.yaml",
            "trigger: { contact_created: {} }
steps:
  - send: { channel: sms, template: safe }
  - if: { owner: none }
    then:
      - send: { channel: sms, template: safe }
    else:
      - send: { channel: sms, template: hi }
  - send: { channel: sms, template: hi }
",
        ),
        (
            "workflows/b.yaml",
            "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: east }\n  - send: { channel: sms, template: hi }\n",
        ),
        (
            "workflows/c.yaml",
            "trigger: { tag_added: { tag: vip } }\naudience: { all: [ { owner: any }, { tag: vip } ] }\nsteps:\n  - send: { channel: sms, template: hi }\n",
        ),
        // Guarded by a wait_until on the owner field: no warning.
        (
            "workflows/d.yaml",
            "trigger: { tag_added: { tag: lead } }
steps:
  - wait_until:
      condition: { field: owner, exists: true }
      timeout: 3d
      then: [ { send: { channel: sms, template: hi } } ]
",
        ),
        // The second arm of a split sends it unguarded: a warning, though
        // the first arm has nothing to say.
        (
            "workflows/e.yaml",
            "trigger: { tag_added: { tag: trial } }
steps:
  - split:
      arms:
        - { name: a, weight: 50, steps: [ { send: { channel: sms, template: safe } } ] }
        - { name: b, weight: 50, steps: [ { send: { channel: sms, template: hi } } ] }
",
        ),
        // A by_field assign leaves a contact whose city names nobody
        // without an owner: a warning.
        (
            "workflows/f.yaml",
            "trigger: { tag_added: { tag: store } }
steps:
  - assign: { team: east, strategy: by_field, field: city }
  - send: { channel: sms, template: hi }
",
        ),
    ]);
    let (code, out) = validate(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "templates/hi.hbs:1:24: warning: template \"hi\" reads owner.name, and workflow \"a\" \
             sends it (workflows/a.yaml:9) where a contact may have no owner: such a contact is skipped (template_error)"
        ),
        "{out}"
    );
    assert!(
        out.contains("help: add a round_robin or least_loaded assign step before this send"),
        "{out}"
    );
    assert!(
        out.contains("workflow \"e\" sends it (workflows/e.yaml:6)"),
        "{out}"
    );
    assert!(
        out.contains("workflow \"f\" sends it (workflows/f.yaml:4)"),
        "{out}"
    );
    assert_eq!(out.matches("warning:").count(), 3, "{out}");
}
