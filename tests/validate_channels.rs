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
