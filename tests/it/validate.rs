//! `nurture validate` and `nurture schema` on real files in a temporary
//! folder, run through the real binary. Diagnostics are snapshotted
//! (tests/it/snapshots/validate__*.snap).

use std::path::Path;

use assert_cmd::Command;
use proptest::prelude::*;

const SETTINGS: &str = r#"timezone: Asia/Shanghai
channels:
  sms:
    kind: twilio
    base_url: https://api.twilio.com
    account_sid_env: TWILIO_ACCOUNT_SID
    auth_token_env: TWILIO_AUTH_TOKEN
    from: "+15550001111"
    rate_limit: 50/s
  crm_hook: { kind: webhook, url: https://example.com/hooks/nurture, secret_env: CRM_HOOK_SECRET }
  console: { kind: log }
teams:
  east-sales:
    - { id: s01, name: Wang Fang, wecom_userid: wangfang, email: wangfang@example.com, region: east, capacity: 200 }
    - { id: s02, name: Li Lei, wecom_userid: lilei }
fields:
  city: string
  score: number
  last_order_at: timestamp
"#;

const WINBACK: &str = r#"name: winback-vip
description: Win back VIPs in the east who went quiet.
enabled: true
trigger:
  inactive: { for: 30d, check: "0 9 * * *" }
audience:
  all:
    - tag: vip
    - field: city
      in: [Shanghai, Hangzhou]
    - not: { tag: do-not-disturb }
entry: once
steps:
  - assign: { team: east-sales, strategy: round_robin, only_if_unassigned: true }
  - send: { channel: sms, template: winback }
  - wait: 3d
  - if: { event: purchase, within: 3d }
    then:
      - tag: { add: [won-back] }
    else:
      - send: { channel: crm_hook, template: winback-followup }
exit_when: { event: purchase }
"#;

/// A project folder: the settings above, two templates, and `files`
/// (path relative to the folder, content).
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::create_dir_all(root.join("templates")).unwrap();
    write(root, "nurture.yaml", SETTINGS);
    write(
        root,
        "templates/winback.hbs",
        "Hi {{contact.name}}, we miss you in {{default contact.city \"town\"}}. {{owner.name}}\n",
    );
    write(
        root,
        "templates/winback-followup.hbs",
        "---\nsubject: \"Follow up {{contact.id}}\"\n---\n{{contact.name}} went quiet; owner {{owner.id}}.\n",
    );
    for (p, c) in files {
        write(root, p, c);
    }
    dir
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// The environment variables the fixture's channels name (`*_env`).
const CHANNEL_SECRETS: [(&str, &str); 3] = [
    ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000"),
    ("TWILIO_AUTH_TOKEN", "test-token"),
    ("CRM_HOOK_SECRET", "test-secret"),
];

/// Runs `nurture validate ARGS` in `dir`; returns (exit code, stdout, stderr).
fn validate(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("nurture")
        .unwrap()
        .current_dir(dir)
        .env_remove("NURTURE_DATABASE")
        // The fixture's channels name these; validate checks they are set.
        .envs(CHANNEL_SECRETS)
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

/// Validates a project with one workflow file and returns stderr, checking exit code 1.
fn problems(workflow: &str) -> String {
    let dir = project(&[("workflows/w.yaml", workflow)]);
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "expected problems, got none:\n{err}");
    err
}

#[test]
fn clean_project_passes() {
    let dir = project(&[("workflows/winback-vip.yaml", WINBACK)]);
    let (code, out, err) = validate(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    assert_eq!(out, "ok: 1 workflow, 2 templates, 3 channels, 1 team\n");
}

#[test]
fn fresh_folder_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = validate(dir.path(), &[]);
    assert_eq!(code, 0);
    assert_eq!(out, "ok: 0 workflows, 0 templates, 1 channel, 0 teams\n");
    // Most often the wrong folder: said, with the ways out.
    assert!(
        err.starts_with("note: there is no nurture.yaml here and no workflows")
            && err.contains("nurture init"),
        "{err}"
    );
    // The default `console` channel exists without nurture.yaml.
    write(
        dir.path(),
        "templates/hello.hbs",
        "Hello {{contact.name}}\n",
    );
    write(
        dir.path(),
        "workflows/hello.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: console, template: hello }\n",
    );
    let (code, out, err) = validate(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ok: 1 workflow, 1 template, 1 channel, 0 teams\n");
    // A project without nurture.yaml is a project: no note.
    assert_eq!(err, "");
}

#[test]
fn disabled_workflows_are_checked_and_flagged() {
    let wf = WINBACK.replace("enabled: true", "enabled: false");
    let dir = project(&[("workflows/winback-vip.yaml", &wf)]);
    let (code, out, _) = validate(dir.path(), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("(1 disabled: winback-vip)"), "{out}");
}

#[test]
fn misspelt_key() {
    let wf = WINBACK.replace("template: winback }", "tempalte: winback }");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn unknown_channel() {
    let wf = WINBACK.replace("channel: sms,", "channel: smss,");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn missing_template() {
    let wf = WINBACK.replace("template: winback-followup", "template: winback-folowup");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn unknown_team() {
    let wf = WINBACK.replace("team: east-sales", "team: east_sales");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn duration_without_unit() {
    let wf = WINBACK.replace("wait: 3d", "wait: 30");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn bad_cron() {
    let wf = WINBACK.replace("check: \"0 9 * * *\"", "check: \"0 25 * * *\"");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn duplicate_workflow_name() {
    let dir = project(&[
        ("workflows/a-winback.yaml", WINBACK),
        ("workflows/b-winback-copy.yaml", WINBACK),
    ]);
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(err);
}

#[test]
fn two_triggers() {
    let wf = WINBACK.replace(
        "trigger:\n  inactive:",
        "trigger:\n  event: { name: signup }\n  inactive:",
    );
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn field_condition_with_two_operators() {
    let wf = WINBACK.replace(
        "      in: [Shanghai, Hangzhou]",
        "      in: [Shanghai, Hangzhou]\n      equals: Beijing",
    );
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn unknown_field() {
    let wf = WINBACK.replace("- field: city", "- field: ctiy");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn time_test_on_a_text_field() {
    let wf = WINBACK.replace(
        "- tag: vip",
        "- { field: city, older_than: 30d }\n    - { field: last_order_at, newer_than: 1w }",
    );
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn template_with_a_missing_variable() {
    let dir = project(&[("workflows/winback-vip.yaml", WINBACK)]);
    write(
        dir.path(),
        "templates/winback.hbs",
        "Hi {{contact.name}} from {{contact.ctiy}}\n",
    );
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(err);
}

#[test]
fn every_missing_variable_of_a_template_is_reported_in_one_run() {
    // A marketer fixes them all at once instead of one per run; a variable
    // read inside a block is said once, and the list ends there.
    let dir = project(&[("workflows/winback-vip.yaml", WINBACK)]);
    write(
        dir.path(),
        "templates/winback.hbs",
        "Hi {{contact.nmae}},\nfrom {{shop.city}} and {{shop.name}}\n{{#each contact.tags}}{{label}}{{/each}} {{agent}}\n",
    );
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    for at in [
        "templates/winback.hbs:1:6: ",
        "templates/winback.hbs:2:8: ",
        "templates/winback.hbs:2:26: ",
    ] {
        assert_eq!(err.matches(at).count(), 1, "{at} once in:\n{err}");
    }
    assert!(err.contains("did you mean \"name\"?"), "{err}");
    assert_eq!(
        err.matches("missing variable \"label\"").count(),
        1,
        "{err}"
    );
    assert!(err.contains("4 problems in 1 file"), "{err}");
    // The first error is reported as before: the list stops at the block's.
    assert!(!err.contains("\"agent\""), "{err}");
}

#[test]
fn template_that_does_not_compile() {
    let dir = project(&[("workflows/winback-vip.yaml", WINBACK)]);
    write(dir.path(), "templates/winback.hbs", "Hi {{contact.name}\n");
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1);
    // A template that does not compile is reported once, in its own file,
    // and not again as "missing" where it is used.
    assert!(!err.contains("no template"), "{err}");
    assert!(err.contains("templates/winback.hbs:1:"), "{err}");
}

#[test]
fn deeply_nested_template_is_a_positioned_error_not_a_crash() {
    // 5,000 nested blocks used to abort `validate` itself with a stack overflow.
    let dir = project(&[("workflows/winback-vip.yaml", WINBACK)]);
    let deep = format!(
        "Hi\n{}x{}\n",
        "{{#if contact.name}}".repeat(5_000),
        "{{/if}}".repeat(5_000)
    );
    write(dir.path(), "templates/winback.hbs", &deep);
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("templates/winback.hbs:2:641: "), "{err}");
    assert!(err.contains("nested more than 32 deep"), "{err}");
}

/// Under 500 bytes of aliases that expand to 1,000 `tag` conditions (one
/// more level makes 10,000; each used to be evaluated for every contact at
/// every tick).
const ALIAS_BOMB: &str = "trigger: { contact_created: {} }
x:
  a: &a [{tag: t1}, {tag: t2}, {tag: t3}, {tag: t4}, {tag: t5}, {tag: t6}, {tag: t7}, {tag: t8}, {tag: t9}, {tag: t10}]
  b: &b [{any: *a}, {any: *a}, {any: *a}, {any: *a}, {any: *a}, {any: *a}, {any: *a}, {any: *a}, {any: *a}, {any: *a}]
  c: &c [{all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}, {all: *b}]
audience: { any: *c }
steps:
  - send: { channel: console, template: winback }
";

#[test]
fn a_workflow_that_aliases_expand_past_the_cap_is_refused_where_it_grows() {
    let dir = project(&[("workflows/bomb.yaml", ALIAS_BOMB)]);
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    // The report points at the key that holds the most, and suggests a fix.
    assert!(
        err.contains("workflows/bomb.yaml:2:1: ") && err.contains("at most 2000 are accepted"),
        "{err}"
    );
    assert!(err.contains("split the workflow"), "{err}");
    // Under the cap the same shape is fine: one level less.
    let small: String = ALIAS_BOMB
        .lines()
        .filter(|l| !l.contains("c: &c"))
        .map(|l| format!("{}\n", l.replace("*c", "*b")))
        .collect();
    let dir = project(&[("workflows/small.yaml", &small)]);
    let (code, _, err) = validate(dir.path(), &[]);
    assert!(!err.contains("at most 2000"), "{err}");
    let _ = code;
}

#[test]
fn a_cron_that_never_fires_is_refused() {
    let wf = WINBACK.replace("check: \"0 9 * * *\"", "check: \"0 9 30 2 *\"");
    assert_ne!(wf, WINBACK);
    let err = problems(&wf);
    assert!(err.contains("workflows/w.yaml:5:"), "{err}");
    assert!(
        err.contains("day-of-month 30 never happens in February"),
        "{err}"
    );
}

#[test]
fn yaml_syntax_error() {
    let wf = WINBACK.replace("  - wait: 3d", "   - wait: 3d");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(problems(
        "trigger: { contact_created: {} }\nenabled: yes\nsteps: foo\n"
    ));
}

#[test]
fn duplicate_step_id() {
    let wf = WINBACK
        .replace("  - wait: 3d", "  - id: pause\n    wait: 3d")
        .replace(
            "  - send: { channel: sms, template: winback }",
            "  - id: pause\n    send: { channel: sms, template: winback }",
        );
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn by_field_without_field() {
    let wf = WINBACK.replace("strategy: round_robin", "strategy: by_field");
    insta::assert_snapshot!(problems(&wf));
}

#[test]
fn many_problems_in_one_file_are_all_reported() {
    let wf = r#"name: onboarding
trigger:
  tag_added: { tga: new }
audience:
  any:
    - { field: score, gte: 10 }
    - { feild: city, equals: Shanghai }
    - { event: purchase, within: 2 }
entry: sometimes
steps:
  - send: { channel: email, template: welcome }
  - wiat: 1d
  - if: { owner: none }
    then:
      - assign: { team: east-sales, strategy: nearest, notify: wecom }
"#;
    insta::assert_snapshot!(problems(wf));
}

#[test]
fn settings_problems() {
    let dir = project(&[("workflows/winback-vip.yaml", WINBACK)]);
    write(
        dir.path(),
        "nurture.yaml",
        &SETTINGS
            .replace(
                "timezone: Asia/Shanghai",
                "timezone: Asia/Shangai\ndatabse: sqlite://x.db",
            )
            .replace("auth_token_env: TWILIO_AUTH_TOKEN", "auth_token: abc123")
            .replace("rate_limit: 50/s", "rate_limit: fast")
            .replace("kind: webhook", "kind: webhok")
            .replace("{ id: s02,", "{ id: s01,"),
    );
    let (code, _, err) = validate(dir.path(), &[]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(err);
}

#[test]
fn paths_restrict_what_is_reported() {
    let bad = WINBACK
        .replace("name: winback-vip", "name: other")
        .replace("wait: 3d", "wait: 3");
    let dir = project(&[
        ("workflows/winback-vip.yaml", WINBACK),
        ("workflows/other.yaml", &bad),
    ]);
    let (code, out, err) = validate(dir.path(), &["workflows/winback-vip.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ok: 1 workflow, 2 templates, 3 channels, 1 team\n");
    let (code, _, err) = validate(dir.path(), &["workflows/other.yaml"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("workflows/other.yaml:16:11: "), "{err}");
    assert!(err.ends_with("1 problem in 1 file\n"), "{err}");
    let (code, _, err) = validate(dir.path(), &["workflows/nope.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("workflows/nope.yaml"), "{err}");
}

#[test]
fn config_elsewhere_gives_paths_from_the_current_folder() {
    let dir = project(&[("workflows/w.yaml", &WINBACK.replace("wait: 3d", "wait: 3"))]);
    let out = Command::cargo_bin("nurture")
        .unwrap()
        .current_dir(dir.path().parent().unwrap())
        .envs(CHANNEL_SECRETS)
        .arg("--config")
        .arg(
            dir.path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
                + "/nurture.yaml",
        )
        .arg("validate")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    let name = dir.path().file_name().unwrap().to_str().unwrap();
    assert!(
        err.starts_with(&format!("{name}/workflows/w.yaml:16:11: ")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// The JSON Schema
// ---------------------------------------------------------------------------

fn schema() -> serde_json::Value {
    let out = Command::cargo_bin("nurture")
        .unwrap()
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// YAML → JSON through our own position-keeping reader (typed scalars).
fn to_json(node: &nurture::yaml::Node) -> serde_json::Value {
    use nurture::yaml::Kind;
    use serde_json::Value;
    match &node.kind {
        Kind::Null => Value::Null,
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.scalar_text().unwrap_or("").to_string(), to_json(v)))
                .collect(),
        ),
        Kind::Scalar { text, .. } => {
            if let Some(b) = node.as_bool() {
                Value::Bool(b)
            } else if let Some(i) = node.as_i64() {
                Value::from(i)
            } else if let Some(f) = node.as_f64() {
                Value::from(f)
            } else {
                Value::String(text.clone())
            }
        }
    }
}

fn schema_accepts(validator: &jsonschema::Validator, yaml: &str) -> Result<(), String> {
    let (node, d) = nurture::yaml::parse(Path::new("x.yaml"), yaml);
    assert!(d.is_empty(), "{d:?}");
    let v = to_json(&node.unwrap());
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn schema_accepts_valid_workflows_and_refuses_mistakes() {
    let s = schema();
    let validator = jsonschema::validator_for(&s).expect("a valid JSON Schema");
    let mut valid = vec![WINBACK.to_string()];
    // Every example workflow shipped with the project.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    if let Ok(entries) = std::fs::read_dir(&examples) {
        for e in entries.flatten() {
            if e.path()
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml")
            {
                valid.push(std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    valid.push(
        "trigger: { schedule: { cron: \"0 9 * * 1\" } }\nentry: once per 30d\naudience: { any: [ { owner: none }, { field: score, gte: 3.5 }, { field: x, exists: true }, { event: open, at_least: 2 } ] }\nsteps:\n  - id: hello\n    tag: { add: vip, remove: [a, b] }\n  - if: { not: { tag: x } }\n    else: [ { wait: 45m } ]\n  - assign: { team: t, strategy: by_field, field: region, notify: console }\n".into(),
    );
    valid.push(
        "trigger:\n  contact_created:\nsteps: [ { send: { channel: c, template: t } } ]\n".into(),
    );
    for v in &valid {
        if let Err(e) = schema_accepts(&validator, v) {
            panic!("schema refuses a valid workflow: {e}\n{v}");
        }
    }
    let invalid = [
        WINBACK.replace("template: winback }", "tempalte: winback }"),
        WINBACK.replace("wait: 3d", "wait: 30"),
        WINBACK.replace(
            "trigger:\n  inactive:",
            "trigger:\n  event: { name: a }\n  inactive:",
        ),
        WINBACK.replace(
            "      in: [Shanghai, Hangzhou]",
            "      in: [Shanghai]\n      equals: x",
        ),
        WINBACK.replace("entry: once", "entry: twice"),
        "trigger: { contact_created: {} }\nsteps: foo\n".into(),
        "trigger: { contact_created: {} }\nsteps: []\n".into(),
    ];
    for v in &invalid {
        assert!(
            schema_accepts(&validator, v).is_err(),
            "schema accepts an invalid workflow:\n{v}"
        );
    }
}

// ---------------------------------------------------------------------------
// The loader never panics
// ---------------------------------------------------------------------------

fn load_everything(text: &str) {
    let p = Path::new("fuzz.yaml");
    let _ = nurture::yaml::parse(p, text);
    let _ = nurture::workflow::load_str(p, text);
    let _ = nurture::settings::Settings::parse_str(Path::new("nurture.yaml"), text);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn loader_never_panics_on_mutated_yaml(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, prop::sample::select(vec![
            ":", "-", " ", "\n", "{", "}", "[", "]", "&a", "*a", "!!str", "'", "\"", "#", "?", "|", ">", "---", "\t", "é", "0", "~", ",",
        ])), 1..8),
        base in prop::sample::select(vec![WINBACK, SETTINGS]),
    ) {
        let mut text: Vec<char> = base.chars().collect();
        for (idx, op, s) in edits {
            if text.is_empty() { break; }
            let i = idx.index(text.len());
            match op {
                0 => { text.remove(i); }
                1 => { for (k, c) in s.chars().enumerate() { text.insert(i + k, c); } }
                2 => { text[i] = s.chars().next().unwrap(); }
                _ => { let j = (i + 20).min(text.len()); text.drain(i..j); }
            }
        }
        let text: String = text.into_iter().collect();
        load_everything(&text);
    }

    #[test]
    fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        load_everything(&text);
    }
}

#[test]
fn hostile_documents_give_errors() {
    for text in [
        "[".repeat(100_000),
        "a:\n".to_string() + &"  - ".repeat(5_000),
        "- ".repeat(10_000),
        "{a: ".repeat(10_000),
    ] {
        load_everything(&text);
        let (wf, d) = nurture::workflow::load_str(Path::new("h.yaml"), &text);
        assert!(wf.is_none() || !d.is_empty());
    }
}
