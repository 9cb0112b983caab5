//! `nurture channels test NAME --to ADDRESS [--template T --contact ID]`: the
//! real binary sends one message through a channel to a loopback receiver and
//! prints the provider's answer; the exit code says whether it was accepted.

use crate::support;

use std::path::Path;

use assert_cmd::Command;
use support::receiver::{Receiver, Reply, script};

fn nurture(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("nurture").unwrap();
    cmd.current_dir(dir);
    // The store of `dir`: SQLite, or a fresh PostgreSQL database in the
    // suite's PostgreSQL pass.
    match support::db::on_postgres() {
        true => cmd.env("NURTURE_DATABASE", support::db::url_for(dir)),
        false => cmd.env_remove("NURTURE_DATABASE"),
    };
    cmd.env("HOOK_SECRET", "whsec_dGVzdA==")
        .arg("--config")
        .arg(dir.join("nurture.yaml"));
    cmd
}

fn project(dir: &Path, url: &str) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("nurture.yaml"),
        format!(
            "channels:\n  hook:\n    kind: webhook\n    url: {url}\n    secret_env: HOOK_SECRET\n  console:\n    kind: log\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/hello.hbs"),
        "---\nsubject: \"Hi {{contact.name}}\"\n---\nHello {{contact.name}} from {{default contact.city \"somewhere\"}}\n",
    )
    .unwrap();
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = nurture(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_message_reaches_the_provider_and_its_answer_is_printed() {
    let rx = Receiver::start(script::always(
        Reply::ok().body(r#"{"accepted":true,"ref":"r-42"}"#),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &rx.url("/hook"));
    let (code, out, err) = run(dir.path(), &["channels", "test", "hook", "--to", "crm-1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("HTTP 200 OK"), "{out}");
    assert!(out.contains(r#"{"accepted":true,"ref":"r-42"}"#), "{out}");
    assert!(out.contains("result: accepted"), "{out}");
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "exactly one message");
    let body = reqs[0].json();
    assert_eq!(body["to"], "crm-1");
    assert!(
        body["message_id"]
            .as_str()
            .unwrap()
            .starts_with("channels-test:hook:")
    );
    assert!(reqs[0].header("webhook-signature").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_is_rendered_for_a_contact_of_the_store() {
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &rx.url("/hook"));
    let (code, _, err) = run(
        dir.path(),
        &[
            "contacts",
            "add",
            "c7",
            "--name",
            "Wang Fang",
            "--attr",
            "city=Hangzhou",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(
        dir.path(),
        &[
            "channels",
            "test",
            "hook",
            "--to",
            "x",
            "--template",
            "hello",
            "--contact",
            "c7",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let body = rx.requests()[0].json();
    assert_eq!(body["subject"], "Hi Wang Fang");
    assert_eq!(body["body"], "Hello Wang Fang from Hangzhou");
    assert_eq!(body["contact_id"], "c7");

    // An unknown contact or template is the user's mistake: exit 1, nothing sent.
    let (code, _, err) = run(
        dir.path(),
        &[
            "channels",
            "test",
            "hook",
            "--to",
            "x",
            "--template",
            "hello",
            "--contact",
            "nobody",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no contact with id \"nobody\""), "{err}");
    let (code, _, err) = run(
        dir.path(),
        &[
            "channels",
            "test",
            "hook",
            "--to",
            "x",
            "--template",
            "nope",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(rx.count(), 1);
    // Refused or not, the command closed the store: no WAL is left behind.
    if !support::db::on_postgres() {
        assert!(dir.path().join("nurture.db").exists());
        assert!(!dir.path().join("nurture.db-wal").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_prints_the_answer_and_exits_1_a_timeout_exits_2() {
    let rx = Receiver::start(script::always(
        Reply::status(400).body(r#"{"error":"bad recipient"}"#),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &rx.url("/hook"));
    let (code, out, err) = run(dir.path(), &["channels", "test", "hook", "--to", "x"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("HTTP 400 Bad Request"), "{out}");
    assert!(out.contains("bad recipient"), "{out}");
    assert!(err.contains("refused"), "{err}");

    let busy = Receiver::start(script::always(
        Reply::status(503).header("Retry-After", "7"),
    ))
    .await;
    project(dir.path(), &busy.url("/hook"));
    let (code, out, err) = run(dir.path(), &["channels", "test", "hook", "--to", "x"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("would retry after 7s"), "{err}");
}

#[test]
fn an_unknown_channel_is_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "http://127.0.0.1:9/");
    let (code, _, err) = run(dir.path(), &["channels", "test", "hoek", "--to", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("no channel \"hoek\""), "{err}");
    assert!(err.contains("did you mean \"hook\""), "{err}");
}

/// A `log` channel's test message is written where the answer says: the
/// log, on stderr (no log was set up for the command, so nothing showed).
#[test]
fn a_log_channel_test_shows_its_message() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "http://127.0.0.1:1/hook");
    let (code, out, err) = run(dir.path(), &["channels", "test", "console", "--to", "c1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("written to the log"), "{out}");
    assert!(
        err.contains("nurture::channel::log") && err.contains("to=c1"),
        "{err}"
    );
}

/// `channels test` sends to the address as the daemon would (a phone
/// without its separators), and not at all to one the daemon would skip
/// (`bad_address`): the provider (a Twilio fake) sees the one E.164 number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_goes_to_the_address_the_daemon_would_use() {
    let rx = Receiver::start(support::twilio_fake::script()).await;
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &rx.url("/hook"));
    std::fs::write(
        dir.path().join("nurture.yaml"),
        format!(
            "channels:\n  sms:\n    kind: twilio\n    base_url: {}\n    account_sid_env: TW_SID\n    \
             auth_token_env: TW_TOKEN\n    from: \"+15005550006\"\n",
            rx.url("")
        ),
    )
    .unwrap();
    let out = nurture(dir.path())
        .env("TW_SID", "AC0123")
        .env("TW_TOKEN", "secret")
        .args(["channels", "test", "sms", "--to", "138-0013-8000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not sent: phone \"138-0013-8000\" is not in E.164 form")
            && err.contains("(bad_address)"),
        "{err}"
    );
    assert_eq!(rx.count(), 0, "nothing reached the provider");

    let out = nurture(dir.path())
        .env("TW_SID", "AC0123")
        .env("TW_TOKEN", "secret")
        .args(["channels", "test", "sms", "--to", "+86 138-0013-8000"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Vec<String> = rx
        .requests()
        .iter()
        .map(support::twilio_fake::to_of)
        .collect();
    assert_eq!(sent, ["+8613800138000"]);
}
