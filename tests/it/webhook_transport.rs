//! The webhook channel's two ways to its endpoint
//! (src/channels/webhook/transport.rs): hyper directly, and reqwest when
//! the environment names a proxy. Both send the same request and read
//! answers alike; HTTPS checks the endpoint's certificate against the
//! system's roots; a proxy the environment names is used.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nurture::channels::webhook::{PROXY_VARS, Secret, WebhookChannel, WebhookConfig};
use nurture::channels::{Channel, Delivery, Exchange, OutMessage};
use serde_json::json;
use support::certs::Certs;
use support::receiver::{Receiver, Reply};

fn channel(url: &str, proxied: bool) -> WebhookChannel {
    WebhookChannel::new(WebhookConfig {
        url: reqwest::Url::parse(url).unwrap(),
        secret: Some(Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()),
        timeout: Duration::from_millis(500),
        max_idle: 4,
        proxied,
    })
    .unwrap()
}

fn msg(id: &str) -> OutMessage {
    OutMessage {
        id: id.into(),
        workflow: "welcome".into(),
        contact_id: "c1".into(),
        step_id: "0".into(),
        channel: "hook".into(),
        to: "c1".into(),
        subject: None,
        body: "你好 Ada, 50% off".into(),
        contact: json!({"id": "c1", "name": "Ada"}),
        attempt: 1,
        payload: json!({}),
        in_doubt: false,
    }
}

/// A reason's kind ("timed out", "HTTP 500 …") without the transport's own
/// wording of a timeout.
fn comparable(ex: &Exchange) -> Exchange {
    let mut ex = ex.clone();
    if let Delivery::Retry { reason, .. } = &mut ex.delivery
        && reason.starts_with("timed out")
    {
        *reason = "timed out".into();
    }
    ex
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_send_the_same_request_and_read_answers_alike() {
    let big = "x".repeat(100 * 1024);
    let rx = Receiver::start(std::sync::Arc::new(
        move |r: &support::receiver::Request| {
            let id = r.header("webhook-id").unwrap_or_default();
            match id.split(':').next().unwrap_or_default() {
                "ok" => Reply::ok().body(r#"{"id":"p-1"}"#),
                "busy" => Reply::status(429).header("Retry-After", "7"),
                "down" => Reply::status(500).body("boom"),
                "gone" => Reply::status(410),
                "moved" => Reply::status(302).header("Location", "http://elsewhere/"),
                "big" => Reply::ok().body(&big),
                "slow" => Reply::ok().delay(Duration::from_secs(3)),
                _ => Reply::status(400),
            }
        },
    ))
    .await;
    let kinds = ["ok", "busy", "down", "gone", "moved", "big", "slow"];
    let mut seen = Vec::new();
    for proxied in [false, true] {
        // With credentials in the URL: both send them as Basic auth.
        let url = rx
            .url("/hook?token=abc")
            .replace("http://", "http://crm:p%40ss@");
        let ch = channel(&url, proxied);
        let mut exchanges = Vec::new();
        for kind in kinds {
            exchanges.push(ch.exchange(&msg(&format!("{kind}:{proxied}"))).await);
        }
        seen.push(exchanges);
    }
    let (direct, proxied) = (&seen[0], &seen[1]);
    for (i, kind) in kinds.iter().enumerate() {
        assert_eq!(
            comparable(&direct[i]),
            comparable(&proxied[i]),
            "{kind}: the two transports disagree"
        );
    }
    assert_eq!(
        direct[0].delivery,
        Delivery::Delivered {
            provider_id: Some("p-1".into())
        }
    );
    assert!(matches!(
        &direct[1].delivery,
        Delivery::Retry { after: Some(a), .. } if *a == Duration::from_secs(7)
    ));
    // At most 64 KiB of an answer is read.
    let answer = direct[5].answer.as_deref().unwrap();
    assert_eq!(answer.len(), "HTTP 200 OK\n".len() + 64 * 1024);
    match &direct[6].delivery {
        Delivery::Retry {
            after: None,
            reason,
        } => {
            assert!(reason.starts_with("timed out"), "{reason}");
            assert!(
                !reason.contains("token=abc"),
                "no URL in the reason: {reason}"
            );
        }
        other => panic!("a slow endpoint is a retry, got {other:?}"),
    }

    // The same request on the wire, but for the time-dependent headers.
    let reqs = rx.requests();
    assert_eq!(
        reqs.len(),
        2 * kinds.len(),
        "one request per message, no retries"
    );
    for kind in kinds {
        let of = |proxied: bool| {
            reqs.iter()
                .find(|r| r.header("webhook-id") == Some(&format!("{kind}:{proxied}")))
                .unwrap()
        };
        let (a, b) = (of(false), of(true));
        assert_eq!(a.method, b.method);
        assert_eq!(a.path, "/hook");
        assert_eq!(a.path, b.path);
        let names = |r: &support::receiver::Request| {
            let mut n: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(names(a), names(b), "{kind}: header names");
        for name in a.headers.keys() {
            if [
                "webhook-id",
                "idempotency-key",
                "webhook-timestamp",
                "webhook-signature",
                "content-length",
            ]
            .contains(&name.as_str())
            {
                continue;
            }
            assert_eq!(a.headers.get(name), b.headers.get(name), "{kind}: {name}");
        }
        assert_eq!(a.header("authorization"), Some("Basic Y3JtOnBAc3M="));
        assert!(
            !a.header("host").unwrap().contains('@'),
            "{:?}",
            a.header("host")
        );
        assert_eq!(a.header("idempotency-key"), a.header("webhook-id"));
        assert_eq!(b.header("idempotency-key"), b.header("webhook-id"));
        let (ja, jb) = (a.json(), b.json());
        assert_eq!(ja["body"], jb["body"]);
        assert_eq!(ja["contact"], jb["contact"]);
        for r in [a, b] {
            let ts: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
            let expected = nurture::channels::webhook::signature(
                &Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
                r.header("webhook-id").unwrap(),
                ts,
                &r.body,
            );
            assert_eq!(r.header("webhook-signature"), Some(expected.as_str()));
        }
    }
    assert!(
        reqs[0]
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("nurture/"))
    );
}

/// A refused connection: a retry that names the cause, not the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_retry_on_either_transport() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for proxied in [false, true] {
        let ch = channel(&format!("http://{closed}/hook?token=abc"), proxied);
        match ch.exchange(&msg("m1")).await.delivery {
            Delivery::Retry {
                after: None,
                reason,
            } => {
                assert!(reason.starts_with("connection failed"), "{reason}");
                assert!(!reason.contains("token=abc"), "{reason}");
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}

/// The HTTPS endpoint of `https_server.py` with `certs`' certificate.
struct HttpsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl HttpsServer {
    fn start(certs: &Certs) -> HttpsServer {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/https_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(certs.path("leaf.pem"))
            .arg(certs.path("leaf.key"))
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot run python3 (the HTTPS test endpoint)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the HTTPS endpoint did not start: {line:?}"));
        HttpsServer { child, port, dir }
    }

    fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("requests.txt"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nurture channels test hook --to x` in a project whose one channel is a
/// webhook to `url`, with `env` added to a proxy-free environment.
fn channels_test(url: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nurture.yaml"),
        format!("channels:\n  hook:\n    kind: webhook\n    url: {url}\n"),
    )
    .unwrap();
    let mut cmd = assert_cmd::Command::cargo_bin("nurture").unwrap();
    cmd.current_dir(dir.path())
        .env("NURTURE_DATABASE", support::db::url_for(dir.path()))
        .args(["channels", "test", "hook", "--to", "x"]);
    for var in PROXY_VARS
        .iter()
        .chain(&["NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"])
    {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// HTTPS is checked against the system's roots: a certificate from an
/// unknown CA is refused before any request is sent; the same endpoint is
/// accepted once its CA is among the roots (`SSL_CERT_FILE`, which the
/// system's root loading honours).
#[test]
fn an_https_endpoint_is_trusted_only_with_its_ca_among_the_roots() {
    let certs = Certs::make();
    let server = HttpsServer::start(&certs);
    let url = format!("https://127.0.0.1:{}/hook", server.port);

    let (code, out, err) = channels_test(&url, &[]);
    assert_eq!(code, 2, "a TLS failure is a retry\n{out}\n{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(
        server.requests(),
        0,
        "nothing sent to an untrusted endpoint"
    );

    let ca = certs.path("ca.pem");
    let (code, out, err) = channels_test(&url, &[("SSL_CERT_FILE", ca.as_str())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("HTTP 200 OK"), "{out}");
    assert_eq!(server.requests(), 1);
}

/// With `HTTP_PROXY` set the call goes to the proxy, which is asked for the
/// endpoint's URL (here the receiver plays the proxy for a host that does
/// not resolve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_named_by_the_environment_is_used() {
    let proxy = Receiver::start(support::receiver::script::always(Reply::ok())).await;
    let (code, out, err) = channels_test(
        "http://crm.invalid/hook",
        &[("HTTP_PROXY", proxy.url("").as_str())],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/hook");
    assert_eq!(reqs[0].header("host"), Some("crm.invalid"));

    // Without it, the same channel cannot reach that host.
    let (code, _, err) = channels_test("http://crm.invalid/hook", &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(proxy.count(), 1);
}
