//! `nurture validate` checks each channel's own settings: required keys, and
//! that the environment variables its `*_env` keys name are set (their values
//! are never printed).

use assert_cmd::Command;

const SETTINGS: &str = "channels:
  sms:
    kind: twilio
    account_sid_env: NURTURE_TEST_TW_SID
    auth_token_env: NURTURE_TEST_TW_TOKEN
    from: \"+15550001111\"
  hook:
    kind: webhook
    url: http://127.0.0.1:9/x
";

fn validate(dir: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("nurture").unwrap();
    c.current_dir(dir)
        .env_remove("NURTURE_TEST_TW_SID")
        .env_remove("NURTURE_TEST_TW_TOKEN")
        .arg("validate");
    c
}

#[test]
fn a_channel_missing_its_secret_or_a_required_key_is_reported_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nurture.yaml"), SETTINGS).unwrap();
    let out = validate(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("nurture.yaml:2:3: channel \"sms\": the environment variable NURTURE_TEST_TW_SID (account_sid_env) is not set"),
        "{err}"
    );

    // With the variables set, the secret's value never appears, and all is well.
    let out = validate(dir.path())
        .env("NURTURE_TEST_TW_SID", "ACverysecret123")
        .env("NURTURE_TEST_TW_TOKEN", "verysecret-token")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("verysecret"), "{all}");

    // A required key missing.
    std::fs::write(
        dir.path().join("nurture.yaml"),
        SETTINGS.replace("    from: \"+15550001111\"\n", ""),
    )
    .unwrap();
    let out = validate(dir.path())
        .env("NURTURE_TEST_TW_SID", "AC1")
        .env("NURTURE_TEST_TW_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs \"from\""));
}

/// A template sent on an `aliyun_sms` channel maps named values into the
/// approved template with `params:`; `validate` renders them for a sample
/// contact and reports a missing `params:`, a value over Aliyun's length
/// limit and a link, each at the send's template.
#[test]
fn aliyun_sms_templates_need_short_params_without_links() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("nurture.yaml"),
        "channels:
  sms:
    kind: aliyun_sms
    access_key_id_env: NURTURE_TEST_ALI_ID
    access_key_secret_env: NURTURE_TEST_ALI_SECRET
    sign_name: 示例商城
    template_code: SMS_15305000
",
    )
    .unwrap();
    std::fs::create_dir_all(p.join("workflows")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    let wf = |t: &str| {
        format!(
            "trigger: {{ contact_created: {{}} }}\nsteps:\n  - send: {{ channel: sms, template: {t} }}\n"
        )
    };
    std::fs::write(p.join("workflows/a.yaml"), wf("plain")).unwrap();
    std::fs::write(p.join("workflows/b.yaml"), wf("long")).unwrap();
    std::fs::write(p.join("workflows/c.yaml"), wf("link")).unwrap();
    std::fs::write(p.join("workflows/d.yaml"), wf("good")).unwrap();
    std::fs::write(
        p.join("templates/plain.hbs"),
        "{{contact.name}}您好，好久不见。\n",
    )
    .unwrap();
    std::fs::write(
        p.join("templates/long.hbs"),
        "---\nparams: { name: \"{{contact.name}}，{{contact.email}}，{{contact.phone}}，{{contact.id}}\" }\n---\n${name}您好\n",
    )
    .unwrap();
    std::fs::write(
        p.join("templates/link.hbs"),
        "---\nparams:\n  name: \"{{contact.name}}\"\n  url: \"https://shop.example.com/c\"\n---\n${name}您好\n",
    )
    .unwrap();
    std::fs::write(
        p.join("templates/good.hbs"),
        "---\nparams: { name: \"{{contact.name}}\", city: '{{default contact.city \"全国\"}}' }\n---\n${name}您好，${city}门店送您一张回归券。\n",
    )
    .unwrap();
    let out = Command::cargo_bin("nurture")
        .unwrap()
        .current_dir(p)
        .env("NURTURE_TEST_ALI_ID", "id")
        .env("NURTURE_TEST_ALI_SECRET", "secret")
        .arg("validate")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("workflows/a.yaml:3:")
            && err.contains(
                "template \"plain\" is sent on the aliyun_sms channel \"sms\" but has no params:"
            ),
        "{err}"
    );
    assert!(
        err.contains("workflows/b.yaml:3:")
            && err.contains("param \"name\" is")
            && err.contains("at most 35"),
        "{err}"
    );
    assert!(
        err.contains("workflows/c.yaml:3:") && err.contains("param \"url\" holds a link"),
        "{err}"
    );
    assert!(!err.contains("workflows/d.yaml"), "{err}");
}

/// `run` compiles the project as `validate` does (one config compiler): a
/// channel `validate` refuses stops the daemon before it opens the store,
/// with the same diagnostic and exit 1; so does a half-configured WeCom
/// callback.
#[test]
fn run_refuses_what_validate_refuses_before_opening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let settings = format!(
        "database: sqlite://store.db\n{SETTINGS}  wecom:\n    kind: wecom\n    corp_id_env: NURTURE_TEST_CORP\n    secret_env: NURTURE_TEST_CORP\n    agent_id: 1\n    token_env: NURTURE_TEST_CORP\n"
    );
    std::fs::write(dir.path().join("nurture.yaml"), settings).unwrap();
    let out = validate(dir.path())
        .env("NURTURE_TEST_CORP", "ww1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let validate_err = String::from_utf8(out.stderr).unwrap();
    let mut run = Command::cargo_bin("nurture").unwrap();
    let out = run
        .current_dir(dir.path())
        .env_remove("NURTURE_TEST_TW_SID")
        .env_remove("NURTURE_TEST_TW_TOKEN")
        .env_remove("NURTURE_DATABASE")
        .env("NURTURE_TEST_CORP", "ww1")
        .args(["run", "--until-idle", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let run_err = String::from_utf8(out.stderr).unwrap();
    for wanted in [
        "nurture.yaml:3:3: channel \"sms\": the environment variable NURTURE_TEST_TW_SID (account_sid_env) is not set",
        "token_env and aes_key_env go together",
    ] {
        assert!(validate_err.contains(wanted), "{validate_err}");
        assert!(run_err.contains(wanted), "{run_err}");
    }
    assert!(
        !dir.path().join("store.db").exists(),
        "the store was created"
    );
}
