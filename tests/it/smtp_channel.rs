//! The `smtp` channel against a real SMTP server: Python's aiosmtpd (PyPI),
//! started by each test from `tests/it/support/smtp_server.py` on a free
//! loopback port. The server writes every message it gets (headers decoded,
//! both parts) to a folder, logs every command, and refuses chosen
//! recipients with chosen replies.
//!
//! Needs `python3 -m pip install aiosmtpd` (`.ci/run` and `test.sh` install
//! it); without it the tests fail saying so.
//!
//! The last tests run the real daemon: an email goes out through the
//! channel, the test follows its `List-Unsubscribe` link with a one-click
//! POST, and the contact is opted out of email.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{KeyInit, Mac};
use nurture::channels::build::build_registry_with_env;
use nurture::channels::{Channel, Delivery, Exchange, OutMessage};
use nurture::settings::Settings;
use serde_json::{Value, json};
use sha2::Digest;
use support::certs::Certs;
use support::daemon::Project;

const SECRET: &str = "unsubscribe-secret-for-tests-0123";
const SECS: Duration = Duration::from_secs(1);

// ---- the SMTP server ----

/// A running `smtp_server.py`, killed when dropped.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts the server with extra `args` (see smtp_server.py).
    fn start(args: &[&str]) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/smtp_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg("--dir").arg(dir.path()).args(args);
        let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("cannot run python3 (needed for the aiosmtpd test server)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
        let err = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
        let Some(port) = line
            .as_deref()
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|p| p.trim().parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            if err.contains("aiosmtpd") {
                panic!(
                    "the SMTP tests need aiosmtpd: run `python3 -m pip install aiosmtpd` \
                     (CI installs it)\n{err}"
                );
            }
            panic!("the SMTP test server did not start (first line {line:?}):\n{err}");
        };
        SmtpServer { child, port, dir }
    }

    /// Replaces the server's rules (see smtp_server.py).
    fn rules(&self, rules: Value) {
        let tmp = self.dir.path().join("rules.json.tmp");
        std::fs::write(&tmp, rules.to_string()).unwrap();
        std::fs::rename(tmp, self.dir.path().join("rules.json")).unwrap();
    }

    /// Every message that reached the end of DATA, in order.
    fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("msg-") && n.ends_with(".json")
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
            .collect()
    }

    async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{} messages after {timeout:?}, want {n}",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The commands received, as `CMD arg`.
    fn commands(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                match v["arg"].as_str() {
                    Some(a) => format!("{} {a}", v["cmd"].as_str().unwrap()),
                    None => v["cmd"].as_str().unwrap().to_string(),
                }
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A received message's header (the first of that name), decoded and unfolded.
fn header(m: &Value, name: &str) -> Option<String> {
    m["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
}

fn part(m: &Value, content_type: &str) -> String {
    let p = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["content_type"] == content_type)
        .unwrap_or_else(|| panic!("no {content_type} part in {}", m["raw"]));
    p["content"].as_str().unwrap().replace("\r\n", "\n")
}

// ---- the channel ----

fn env(name: &str) -> Option<String> {
    match name {
        "UNSUB_SECRET" => Some(SECRET.into()),
        "SMTP_USER" => Some("mailer".into()),
        "SMTP_PASSWORD" => Some("smtp-password-value".into()),
        _ => None,
    }
}

fn channel(options: &str) -> Arc<dyn Channel> {
    let text = format!("channels:\n  email:\n    kind: smtp\n{options}");
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text)
        .unwrap_or_else(|d| panic!("settings: {d:?}"));
    let reg = build_registry_with_env(&settings, &env).unwrap_or_else(|e| panic!("{e:?}"));
    reg.get("email").expect("the channel").1.clone()
}

/// A plain-text channel to `server`, links under `http://localhost:8080`.
fn plain_channel(server: &SmtpServer) -> Arc<dyn Channel> {
    channel(&format!(
        "    host: 127.0.0.1\n    port: {}\n    tls: none\n    from: \"Nurture <news@example.com>\"\n    \
         unsubscribe_url: http://localhost:8080/\n    unsubscribe_secret_env: UNSUB_SECRET\n    \
         unsubscribe_mailto: unsubscribe@example.com\n    timeout: 10s\n",
        server.port
    ))
}

fn msg(id: &str, contact: &str, to: &str) -> OutMessage {
    OutMessage {
        id: id.into(),
        workflow: "welcome".into(),
        contact_id: contact.into(),
        step_id: "0".into(),
        channel: "email".into(),
        to: to.into(),
        subject: Some("Welcome, Ada — 50% off".into()),
        body: "Hi Ada <3,\n\nYour offer: https://example.com/offer?a=1&b=2.\nSee you soon!".into(),
        contact: json!({"id": contact, "name": "Ada"}),
        attempt: 1,
        payload: json!({}),
        in_doubt: false,
    }
}

/// The Message-ID the channel must use, computed here independently.
fn expected_message_id(key: &str) -> String {
    let d = sha2::Sha256::digest(key.as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@example.com>")
}

/// The unsubscribe token for `contact` on `email`, computed here independently.
fn expected_token(contact: &str) -> String {
    let payload = format!("email\n{contact}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(b"nurture-unsubscribe-v1\n");
    mac.update(payload.as_bytes());
    format!(
        "{}.{}",
        B64URL.encode(payload),
        B64URL.encode(mac.finalize().into_bytes())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_has_both_parts_and_exact_headers() {
    let server = SmtpServer::start(&[]);
    let ch = plain_channel(&server);
    let m = msg("welcome:c1:1:0", "c1", "ann@example.com");
    let before = chrono::Utc::now();
    let ex: Exchange = ch.exchange(&m).await;
    let id = expected_message_id("welcome:c1:1:0");
    assert_eq!(
        ex.delivery,
        Delivery::Delivered {
            provider_id: Some(id.clone())
        }
    );
    assert_eq!(
        ex.answer.as_deref(),
        Some("250 2.0.0 OK queued as Q0001"),
        "the server's reply is the answer"
    );

    let got = server.wait_messages(1, 10 * SECS).await;
    let r = &got[0];
    assert_eq!(r["mail_from"], "news@example.com");
    assert_eq!(r["rcpt_tos"], json!(["ann@example.com"]));
    assert_eq!(header(r, "From").unwrap(), "Nurture <news@example.com>");
    assert_eq!(header(r, "To").unwrap(), "ann@example.com");
    assert_eq!(header(r, "Subject").unwrap(), "Welcome, Ada — 50% off");
    assert_eq!(header(r, "Message-ID").unwrap(), id);
    let date = chrono::DateTime::parse_from_rfc2822(&header(r, "Date").unwrap()).unwrap();
    let drift = (date.with_timezone(&chrono::Utc) - before)
        .num_seconds()
        .abs();
    assert!(drift < 60, "Date {date} is {drift} s off");
    let link = format!(
        "http://localhost:8080/v1/unsubscribe/{}",
        expected_token("c1")
    );
    assert_eq!(
        header(r, "List-Unsubscribe").unwrap(),
        format!("<{link}>, <mailto:unsubscribe@example.com?subject=unsubscribe>")
    );
    assert_eq!(
        header(r, "List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    assert!(
        header(r, "Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        r["raw"]
    );

    // Both parts: the text as rendered, the HTML escaped and linked, and the
    // visible unsubscribe link in each.
    assert_eq!(
        part(r, "text/plain"),
        format!("{}\n\n--\nUnsubscribe: {link}\n", m.body)
    );
    let html = part(r, "text/html");
    assert!(
        html.contains(
            "<p>Hi Ada &lt;3,</p>\n<p>Your offer: \
             <a href=\"https://example.com/offer?a=1&amp;b=2\">https://example.com/offer?a=1&amp;b=2</a>.\
             <br>\nSee you soon!</p>"
        ),
        "{html}"
    );
    assert!(
        html.contains(&format!("<a href=\"{link}\">Unsubscribe</a>")),
        "{html}"
    );

    // A notice to a salesperson carries no unsubscribe link: the recipient
    // is not the contact the notice is about.
    let mut notice = msg("welcome:c1:1:1", "c1", "sales@example.com");
    notice.payload = json!({"kind": "notice"});
    assert!(matches!(ch.send(&notice).await, Delivery::Delivered { .. }));
    let got = server.wait_messages(2, 10 * SECS).await;
    assert_eq!(header(&got[1], "List-Unsubscribe"), None);
    assert_eq!(header(&got[1], "List-Unsubscribe-Post"), None);
    assert!(!part(&got[1], "text/plain").contains("Unsubscribe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_keeps_the_message_id() {
    let server = SmtpServer::start(&[]);
    server.rules(json!({"data": {"bob@example.com": ["451 4.7.1 Greylisted, try again later"]}}));
    let ch = plain_channel(&server);
    let mut m = msg("welcome:c2:7:0", "c2", "bob@example.com");

    let first = ch.exchange(&m).await;
    match &first.delivery {
        Delivery::Retry { reason, .. } => {
            assert!(
                reason.contains("451") && reason.contains("Greylisted"),
                "{reason}"
            )
        }
        other => panic!("451 must be retried, got {other:?}"),
    }
    assert!(
        first.answer.as_deref().unwrap().starts_with("451"),
        "{first:?}"
    );

    m.attempt = 2;
    assert!(matches!(ch.send(&m).await, Delivery::Delivered { .. }));
    let got = server.wait_messages(2, 10 * SECS).await;
    assert!(got[0]["reply"].as_str().unwrap().starts_with("451"));
    assert!(got[1]["reply"].as_str().unwrap().starts_with("250"));
    let id = expected_message_id("welcome:c2:7:0");
    assert_eq!(header(&got[0], "Message-ID").unwrap(), id);
    assert_eq!(header(&got[1], "Message-ID").unwrap(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_map_to_classes() {
    let server = SmtpServer::start(&[]);
    server.rules(json!({
        "rcpt": {
            "busy@example.com": "452 4.2.2 Mailbox full",
            "relay@example.com": "550 5.7.1 Relaying denied",
            "gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown",
        },
        "data": {"spam@example.com": "554 5.7.1 Message rejected as spam"},
    }));
    let ch = plain_channel(&server);
    let send = |to: &'static str| {
        let ch = ch.clone();
        async move { ch.exchange(&msg("w:c:1:0", "c", to)).await }
    };

    let ex = send("busy@example.com").await;
    assert!(
        matches!(&ex.delivery, Delivery::Retry { reason, .. } if reason == "smtp 452 4.2.2 Mailbox full"),
        "{ex:?}"
    );
    let ex = send("relay@example.com").await;
    assert_eq!(
        ex.delivery,
        Delivery::Permanent {
            reason: "smtp 550 5.7.1 Relaying denied".into()
        }
    );
    assert_eq!(ex.answer.as_deref(), Some("550 5.7.1 Relaying denied"));
    let ex = send("spam@example.com").await;
    assert!(
        matches!(&ex.delivery, Delivery::Permanent { reason } if reason == "smtp 554 5.7.1 Message rejected as spam"),
        "{ex:?}"
    );
    // 5.1.1: permanent, and marked so the delivery layer records the opt-out.
    let ex = send("gone@example.com").await;
    match &ex.delivery {
        Delivery::Permanent { reason } => {
            assert!(
                reason.starts_with("opted_out: smtp 550 5.1.1 <gone@example.com>"),
                "{reason}"
            )
        }
        other => panic!("5.1.1 must be permanent, got {other:?}"),
    }
    // Only the spam message reached the end of DATA.
    assert_eq!(server.messages().len(), 1);

    // Not an address at all: permanent before any connection.
    let ex = send("not-an-address").await;
    assert!(
        matches!(&ex.delivery, Delivery::Permanent { reason } if reason.contains("not an email address")),
        "{ex:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_before_auth() {
    // The server offers AUTH in the clear and no STARTTLS: a client that
    // does not insist on TLS would log in and send.
    let server = SmtpServer::start(&["--advertise-auth"]);
    let ch = channel(&format!(
        "    host: 127.0.0.1\n    port: {}\n    tls: starttls\n    username_env: SMTP_USER\n    \
         password_env: SMTP_PASSWORD\n    from: news@example.com\n    \
         unsubscribe_url: https://mail.example.com\n    unsubscribe_secret_env: UNSUB_SECRET\n    \
         timeout: 10s\n",
        server.port
    ));
    let ex = ch.exchange(&msg("w:c:1:0", "c", "ann@example.com")).await;
    match &ex.delivery {
        Delivery::Retry { reason, .. } => {
            assert!(reason.contains("does not offer STARTTLS"), "{reason}")
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let cmds = server.commands();
    assert!(cmds.iter().any(|c| c.starts_with("EHLO")), "{cmds:?}");
    assert!(
        !cmds
            .iter()
            .any(|c| c.starts_with("AUTH") || c.starts_with("MAIL")),
        "nothing may follow EHLO without TLS: {cmds:?}"
    );
    assert!(server.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ch = channel(&format!(
        "    host: 127.0.0.1\n    port: {port}\n    tls: none\n    from: news@example.com\n    \
         unsubscribe_url: https://mail.example.com\n    unsubscribe_secret_env: UNSUB_SECRET\n"
    ));
    let ex = ch.exchange(&msg("w:c:1:0", "c", "ann@example.com")).await;
    assert!(
        matches!(&ex.delivery, Delivery::Retry { reason, .. }
            if reason.starts_with("smtp: connection failed") && reason.to_lowercase().contains("refused")),
        "{ex:?}"
    );
    assert_eq!(ex.answer, None);
}

// ---- TLS ----

/// Server arguments: this certificate, STARTTLS (or implicit TLS).
fn server_args(certs: &Certs, implicit: bool) -> Vec<String> {
    let mut a = vec![
        "--tls-cert".to_string(),
        certs.path("leaf.pem"),
        "--tls-key".to_string(),
        certs.path("leaf.key"),
    ];
    if implicit {
        a.push("--implicit-tls".into());
    }
    a
}

fn tls_channel(server: &SmtpServer, tls: &str, ca: Option<&str>) -> Arc<dyn Channel> {
    let ca = ca
        .map(|c| format!("    tls_ca_file: \"{c}\"\n"))
        .unwrap_or_default();
    channel(&format!(
        "    host: 127.0.0.1\n    port: {}\n    tls: {tls}\n    username_env: SMTP_USER\n    \
         password_env: SMTP_PASSWORD\n    from: news@example.com\n    \
         unsubscribe_url: https://mail.example.com\n    unsubscribe_secret_env: UNSUB_SECRET\n    \
         timeout: 10s\n{ca}",
        server.port
    ))
}

fn position(cmds: &[String], prefix: &str) -> usize {
    cmds.iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {cmds:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_auth_with_a_verified_certificate() {
    let certs = Certs::make();
    let args = server_args(&certs, false);
    let server = SmtpServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ch = tls_channel(&server, "starttls", Some(&certs.path("ca.pem")));
    let ex = ch.exchange(&msg("w:c:1:0", "c", "ann@example.com")).await;
    assert!(matches!(ex.delivery, Delivery::Delivered { .. }), "{ex:?}");
    let cmds = server.commands();
    let (tls, auth, mail) = (
        position(&cmds, "STARTTLS"),
        position(&cmds, "AUTHENTICATED mailer"),
        position(&cmds, "MAIL"),
    );
    assert!(tls < auth && auth < mail, "{cmds:?}");
    let got = server.wait_messages(1, 10 * SECS).await;
    assert_eq!(got[0]["rcpt_tos"], json!(["ann@example.com"]));
}

/// A refused login is the settings' fault, not the recipient's: the message
/// waits for the password to be fixed instead of being dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_waits_instead_of_dead_lettering() {
    let certs = Certs::make();
    let mut args = server_args(&certs, true);
    args.push("--reject-logins".into());
    let server = SmtpServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ch = tls_channel(&server, "tls", Some(&certs.path("ca.pem")));
    let ex = ch.exchange(&msg("w:c:1:0", "c", "ann@example.com")).await;
    match &ex.delivery {
        Delivery::Retry {
            after: Some(after),
            reason,
        } => {
            assert!(*after >= Duration::from_secs(300), "{after:?}");
            assert!(reason.starts_with("smtp 535"), "{reason}");
            assert!(reason.contains("password_env"), "{reason}");
        }
        d => panic!("{d:?}"),
    }
    let cmds = server.commands();
    assert!(
        cmds.iter().any(|c| c.starts_with("AUTH_REFUSED")),
        "{cmds:?}"
    );
    assert!(!cmds.iter().any(|c| c.starts_with("MAIL")), "{cmds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_a_verified_certificate() {
    let certs = Certs::make();
    let args = server_args(&certs, true);
    let server = SmtpServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ch = tls_channel(&server, "tls", Some(&certs.path("ca.pem")));
    let ex = ch.exchange(&msg("w:c:1:0", "c", "ann@example.com")).await;
    assert!(matches!(ex.delivery, Delivery::Delivered { .. }), "{ex:?}");
    let cmds = server.commands();
    assert!(position(&cmds, "AUTHENTICATED mailer") < position(&cmds, "MAIL"));
    assert!(!cmds.iter().any(|c| c.starts_with("STARTTLS")), "{cmds:?}");
    server.wait_messages(1, 10 * SECS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_before_auth() {
    let certs = Certs::make();
    let args = server_args(&certs, false);
    let server = SmtpServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Without tls_ca_file the test CA is not trusted.
    let ch = tls_channel(&server, "starttls", None);
    let ex = ch.exchange(&msg("w:c:1:0", "c", "ann@example.com")).await;
    match &ex.delivery {
        Delivery::Retry { reason, .. } => {
            assert!(
                reason.starts_with("smtp: TLS failed") && reason.contains("certificate"),
                "{reason}"
            )
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let cmds = server.commands();
    assert!(
        !cmds
            .iter()
            .any(|c| c.starts_with("AUTH") || c.starts_with("MAIL")),
        "{cmds:?}"
    );
    assert!(server.messages().is_empty());
}

// ---- the daemon, end to end ----

#[test]
fn validate_checks_the_smtp_settings() {
    let p = Project::new(
        "channels:\n  email:\n    kind: smtp\n    host: smtp.example.com\n    \
         from: news@example.com\n    unsubscribe_url: http://mail.example.com\n    \
         unsubscribe_secret_env: UNSUB_SECRET\n",
    );
    let out = p.command().arg("validate").output().unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("must be https://"), "{err}");

    p.write(
        "nurture.yaml",
        "channels:\n  email:\n    kind: smtp\n    host: smtp.example.com\n    \
         from: news@example.com\n    unsubscribe_url: https://mail.example.com\n    \
         unsubscribe_secret_env: UNSUB_SECRET\n",
    );
    let out = p.command().arg("validate").output().unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("UNSUB_SECRET (unsubscribe_secret_env) is not set"),
        "{err}"
    );

    let out = p
        .command()
        .env("UNSUB_SECRET", SECRET)
        .arg("validate")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(SECRET));
    // Neither nurture's DKIM nor a relay said to sign both unsubscribe
    // headers: a warning (one-click would not be offered), not a problem.
    assert!(
        text.contains("nurture.yaml:2:3: warning: channel \"email\": no DKIM signature is known to cover List-Unsubscribe and List-Unsubscribe-Post"),
        "{text}"
    );

    // The relay is said to sign both: no warning.
    let base = "channels:\n  email:\n    kind: smtp\n    host: smtp.example.com\n    \
                from: news@mail.example.com\n    unsubscribe_url: https://mail.example.com\n    \
                unsubscribe_secret_env: UNSUB_SECRET\n";
    p.write(
        "nurture.yaml",
        &format!("{base}    relay_signs_list_unsubscribe: true\n"),
    );
    let out = p
        .command()
        .env("UNSUB_SECRET", SECRET)
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success() && !text.contains("warning"), "{text}");

    // nurture signs (ed25519 here: the key is the base64 of a 32-byte seed).
    let dkim = |domain: &str| {
        format!(
            "{base}    dkim: {{ domain: {domain}, selector: nurture1, private_key_env: DKIM_KEY, algorithm: ed25519 }}\n"
        )
    };
    let seed = "nWGxne/9WmC6hEr0kuwsxERJxWl7MGkZcDusAxyuf2A=";
    p.write("nurture.yaml", &dkim("example.com"));
    let out = p
        .command()
        .env("UNSUB_SECRET", SECRET)
        .env("DKIM_KEY", seed)
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success() && !text.contains("warning"), "{text}");
    assert!(!text.contains(seed));
    // Refusals: a domain DMARC would not align, a key the signer cannot
    // read, a missing variable.
    p.write("nurture.yaml", &dkim("other.example"));
    let out = p
        .command()
        .env("UNSUB_SECRET", SECRET)
        .env("DKIM_KEY", seed)
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DMARC would not pass"), "{text}");
    p.write("nurture.yaml", &dkim("example.com"));
    let out = p
        .command()
        .env("UNSUB_SECRET", SECRET)
        .env("DKIM_KEY", "not a key")
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is not the base64 of a 32-byte Ed25519 private key"),
        "{text}"
    );
    assert!(!text.contains("not a key"), "no key in messages: {text}");
    let out = p
        .command()
        .env("UNSUB_SECRET", SECRET)
        .env_remove("DKIM_KEY")
        .arg("validate")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        text.contains("DKIM_KEY (dkim.private_key_env) is not set"),
        "{text}"
    );
}

/// `nurture run` with the unsubscribe secret in its environment.
struct Daemon {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Daemon {
    fn start(p: &Project) -> Daemon {
        Daemon::start_with(p, &[])
    }

    /// [`Daemon::start`] with more environment variables.
    fn start_with(p: &Project, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.log_path())
            .unwrap();
        let mut child = p
            .command()
            .env("UNSUB_SECRET", SECRET)
            .envs(env.iter().copied())
            .args(["run", "--listen", "127.0.0.1:0", "--backoff-ms", "100"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
        let Some(addr) = line
            .as_deref()
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.trim().parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not start ({line:?}); log:\n{}", p.log());
        };
        Daemon { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn stop(mut self, p: &Project) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "the daemon exited with {s}; log:\n{}", p.log());
                return;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_end_to_end() {
    let server = SmtpServer::start(&[]);
    server
        .rules(json!({"rcpt": {"gone@example.com": "550 5.1.1 <gone@example.com>: User unknown"}}));
    let p = Project::new(&format!(
        r#"
timezone: UTC
channels:
  email:
    kind: smtp
    host: 127.0.0.1
    port: {}
    tls: none
    from: "Nurture <news@example.com>"
    unsubscribe_url: https://mail.example.com
    unsubscribe_secret_env: UNSUB_SECRET
"#,
        server.port
    ));
    p.write(
        "workflows/welcome.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: email, template: welcome }\n",
    )
    .write(
        "workflows/vip.yaml",
        "trigger: { tag_added: { tag: vip } }\nsteps:\n  - send: { channel: email, template: welcome }\n",
    )
    .write(
        "templates/welcome.hbs",
        "---\nsubject: \"Welcome, {{contact.name}}\"\n---\nHi {{contact.name}}!\n",
    );
    p.ok(&[
        "contacts",
        "add",
        "c1",
        "--name",
        "Ada",
        "--email",
        "ann@example.com",
    ]);
    p.ok(&[
        "contacts",
        "add",
        "c2",
        "--name",
        "Bob",
        "--email",
        "gone@example.com",
    ]);
    support::db::running_since_epoch(&p.db_url(), &["welcome", "vip"]);
    let d = Daemon::start(&p);

    // The email reaches the server with its one-click link.
    let got = server.wait_messages(1, 20 * SECS).await;
    let r = &got[0];
    assert_eq!(header(r, "To").unwrap(), "ann@example.com");
    assert_eq!(header(r, "Subject").unwrap(), "Welcome, Ada");
    let list = header(r, "List-Unsubscribe").unwrap();
    let url = list
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .unwrap_or_else(|| panic!("List-Unsubscribe {list:?}"));
    assert_eq!(
        url,
        format!(
            "https://mail.example.com/v1/unsubscribe/{}",
            expected_token("c1")
        )
    );
    // A reverse proxy would map https://mail.example.com to the daemon.
    let path = url.strip_prefix("https://mail.example.com").unwrap();

    // c2's address does not exist (550 5.1.1): dead-lettered and opted out.
    p.wait_count(
        "SELECT count(*) FROM contact_opt_outs WHERE contact_id = 'c2' AND channel = 'email'",
        1,
        20 * SECS,
    )
    .await;
    let dead = p
        .rows("SELECT status, last_error FROM outbox WHERE contact_id = 'c2'")
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["status"], "dead");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("550 5.1.1"),
        "{dead:?}"
    );

    let http = client();
    // GET shows a confirmation page and changes nothing (link scanners).
    let page = http.get(d.url(path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(
        text.contains("<form method=\"post\">") && text.contains("One-Click"),
        "{text}"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM contact_opt_outs WHERE contact_id = 'c1'")
            .await,
        0
    );

    // Forged tokens: another contact with c1's MAC, a wrong MAC, junk.
    let (_, mac) = expected_token("c1")
        .split_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    for forged in [
        format!("{}.{mac}", B64URL.encode("email\nc2")),
        format!(
            "{}.{}",
            B64URL.encode("email\nc1"),
            B64URL.encode([0u8; 32])
        ),
        "not-a-token".to_string(),
    ] {
        let resp = http
            .post(d.url(&format!("/v1/unsubscribe/{forged}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{forged}");
        assert!(resp.text().await.unwrap().contains("not valid"));
    }
    // A POST without the one-click body does nothing.
    let resp = http.post(d.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    // The one-click POST, as a mailbox provider sends it: no auth, no cookie.
    let resp = http
        .post(d.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("You are unsubscribed"));
    assert_eq!(
        p.count(
            "SELECT count(*) FROM contact_opt_outs WHERE contact_id = 'c1' AND channel = 'email'"
        )
        .await,
        1
    );
    // Again: still 200 (the link did its job).
    let resp = http
        .post(d.url(path))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Neither contact is mailed again: the vip workflow skips both.
    p.ok(&["contacts", "tag", "c1", "--add", "vip"]);
    p.ok(&["contacts", "tag", "c2", "--add", "vip"]);
    p.wait_count(
        "SELECT count(*) FROM enrollments WHERE workflow = 'vip' AND status != 'active'",
        2,
        20 * SECS,
    )
    .await;
    assert_eq!(
        p.count("SELECT count(*) FROM outbox WHERE workflow = 'vip'")
            .await,
        0,
        "no email planned for an opted-out contact"
    );
    let history = p.ok(&["history", "--contact", "c1"]);
    assert!(history.contains("unsubscribed"), "{history}");
    p.settled(10 * SECS).await;
    assert_eq!(server.messages().len(), 1, "exactly one email went out");
    d.stop(&p);
}

/// Issue 12 item 6: the unsubscribe keys are the daemon's (the API state
/// carries them, no global): a rotated secret is accepted once the reload
/// that names it is, and links signed with the old one keep working until
/// the daemon restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_unsubscribe_secret_takes_effect_on_reload() {
    const ROTATED: &str = "rotated-unsubscribe-secret-0123456";
    let settings = |var: &str| {
        format!(
            "timezone: UTC\nchannels:\n  email:\n    kind: smtp\n    host: 127.0.0.1\n    port: 2525\n    tls: none\n    from: \"Nurture <news@example.com>\"\n    unsubscribe_url: https://mail.example.com\n    unsubscribe_secret_env: {var}\n"
        )
    };
    let p = Project::new(&settings("UNSUB_SECRET"));
    let d = Daemon::start_with(&p, &[("UNSUB_SECRET_2", ROTATED)]);
    let sign = |secret: &str| {
        let payload = "email\nc1";
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"nurture-unsubscribe-v1\n");
        mac.update(payload.as_bytes());
        format!(
            "{}.{}",
            B64URL.encode(payload),
            B64URL.encode(mac.finalize().into_bytes())
        )
    };
    let http = client();
    let status = |token: String| {
        let http = http.clone();
        let url = d.url(&format!("/v1/unsubscribe/{token}"));
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(sign(SECRET)).await, 200);
    assert_eq!(status(sign(ROTATED)).await, 404, "not yet");
    p.write("nurture.yaml", &settings("UNSUB_SECRET_2"));
    let deadline = Instant::now() + 20 * SECS;
    while status(sign(ROTATED)).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the rotated secret was not taken; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(sign(SECRET)).await, 200, "old links keep working");
    d.stop(&p);
}
