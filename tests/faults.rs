//! Store faults and hostile input (issue 10): what the daemon, the API and
//! the store do when the store file is deleted, replaced or read-only, and
//! when requests are hostile. The real binary and real stores (SQLite; on
//! PostgreSQL where the fault exists there).

mod support;

use std::time::Duration;

use nurture::store::Store;
use support::daemon::{Daemon, Project};

const SETTINGS: &str = "timezone: Asia/Shanghai\nchannels:\n  console: { kind: log }\n";

fn on_sqlite() -> bool {
    !support::db::on_postgres()
}

/// Starts the daemon, checks it takes a write, then applies `fault` to the
/// store file and returns the daemon's exit status and log.
async fn daemon_after(fault: impl FnOnce(&Project)) -> (std::process::ExitStatus, String) {
    let p = Project::new(SETTINGS);
    let mut d = Daemon::start(&p, &[]);
    let v = d
        .post_ok("/v1/contacts", serde_json::json!({"id": "c1"}))
        .await;
    assert_eq!(v["id"], "c1", "{v}");
    fault(&p);
    let status = d.wait(Duration::from_secs(20));
    (status, p.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stops_non_zero_when_its_store_file_is_deleted() {
    if !on_sqlite() {
        return; // A PostgreSQL database is not a file.
    }
    let (status, log) = daemon_after(|p| std::fs::remove_file(p.db_path()).unwrap()).await;
    assert!(!status.success(), "{status}\n{log}");
    assert!(log.contains("is gone"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stops_non_zero_when_its_store_file_is_replaced() {
    if !on_sqlite() {
        return;
    }
    let (status, log) = daemon_after(|p| {
        // A restore from backup: another file renamed over the store.
        let other = p.path("restored.db");
        std::fs::copy(p.db_path(), &other).unwrap();
        std::fs::rename(&other, p.db_path()).unwrap();
    })
    .await;
    assert!(!status.success(), "{status}\n{log}");
    assert!(log.contains("was replaced"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_to_start_on_a_store_it_cannot_write() {
    let p = Project::new(SETTINGS);
    // Create and migrate the store, then make it read-only.
    p.ok(&["contacts", "add", "c1"]);
    let url = match &p.postgres {
        Some(url) => {
            let db = url.rsplit('/').next().unwrap();
            p.exec(&format!(
                "ALTER DATABASE {db} SET default_transaction_read_only = on"
            ))
            .await;
            url.clone()
        }
        None => format!("sqlite://{}?mode=ro", p.db_path().display()),
    };
    let child = p
        .command()
        .env("NURTURE_DATABASE", &url)
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("read-only") || stderr.contains("readonly"),
        "{stderr}"
    );
}

/// The child's output once it exits; kills it and panics if it runs longer
/// than `timeout` (a daemon that started anyway).
fn output_within(child: std::process::Child, timeout: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            panic!("the command was still running after {timeout:?}");
        }
    }
}

/// `/healthz` writes: a store that answers reads but loses or refuses
/// writes is 503 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_when_the_store_is_gone_or_read_only() {
    if !on_sqlite() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nurture.db");
    let rw = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let ro = Store::open(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for store in [rw, ro] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = nurture::api::ApiState {
            store,
            token: None,
            wake: Default::default(),
        };
        tokio::spawn(nurture::api::serve(listener, state, Default::default()));
        answers.push(base);
    }
    let health = |base: &str| {
        let r = client.get(format!("{base}/healthz")).send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(health(&answers[0]).await.0, 200);
    let (code, body) = health(&answers[1]).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cannot be written"), "{body}");
    std::fs::remove_file(&path).unwrap();
    let (code, body) = health(&answers[0]).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("is gone"), "{body}");
}
