//! Store faults and hostile input (issue 10): what the daemon, the API and
//! the store do when the store file is deleted, replaced or read-only, and
//! when requests are hostile. The real binary and real stores (SQLite; on
//! PostgreSQL where the fault exists there).

use crate::support;

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
            project: None,
            channel_names: None,
            unsubscribe_keys: Default::default(),
            funnel_read: Default::default(),
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

/// Every line the daemon logs is bounded, and in JSON format every line is
/// still JSON: a reload rejected for a 200 KB value used to log it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_bounded_and_stay_json() {
    let p = Project::new(SETTINGS);
    p.write("templates/hi.hbs", "hi");
    p.write(
        "workflows/w.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: console, template: hi }\n",
    );
    let d = Daemon::start(&p, &["--log-format", "json"]);
    let key = "k".repeat(200_000);
    p.write(
        "workflows/w.yaml",
        &format!("trigger: {{ contact_created: {{}} }}\nentry: {key}\nsteps:\n  - send: {{ channel: console, template: hi }}\n"),
    );
    // The rejection is logged by the reload; the truncation note replaces it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !p.log().contains("log line truncated") {
        assert!(std::time::Instant::now() < deadline, "{}", p.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = d.terminate(Duration::from_secs(20));
    assert!(status.success());
    for line in p.log().lines() {
        assert!(
            line.len() <= nurture::logging::MAX_LOG_LINE,
            "{} bytes",
            line.len()
        );
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[test]
fn a_long_text_line_is_cut_at_a_character_boundary() {
    use nurture::logging::{MAX_LOG_LINE, bound_line};
    let line = format!("{}\n", "数".repeat(20_000));
    let out = String::from_utf8(bound_line(line.as_bytes(), false).into_owned()).unwrap();
    assert!(out.len() <= MAX_LOG_LINE, "{}", out.len());
    assert!(
        out.ends_with("[log line truncated: 60001 bytes]\n"),
        "{}",
        &out[out.len() - 60..]
    );
    assert_eq!(bound_line(b"short\n", false).as_ref(), b"short\n");
}

/// A project with the repository's example settings, workflows and templates.
fn example_project() -> Project {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = std::fs::read_to_string(root.join("nurture.yaml")).unwrap();
    // The examples listen on 8080; the daemon helper passes --listen.
    let p = Project::new(&settings);
    for dir in ["workflows", "templates", "contact_ways", "segments"] {
        std::fs::create_dir_all(p.path(dir)).unwrap();
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), p.path(dir).join(e.file_name())).unwrap();
        }
    }
    p
}

/// 100 concurrent API writers against a daemon running the example
/// workflows (each new contact enrolls and plans messages): no request may
/// fail. On SQLite they used to get `500 database is locked` within seconds.
/// Prints the latencies (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_api_writers_never_fail() {
    let p = example_project();
    let d = std::sync::Arc::new(Daemon::start(&p, &[]));
    let writers: usize = std::env::var("NURTURE_BENCH_WRITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let per_writer: usize = std::env::var("NURTURE_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..per_writer {
                let body = serde_json::json!({
                    "id": format!("load-{w:03}-{i:04}"),
                    "name": "压测",
                    "phone": format!("+86138{w:03}{i:05}"),
                    "wecom_external_userid": format!("wm{w}x{i}"),
                    "tags": ["trial", "customer"],
                    "city": "Shanghai",
                });
                let t0 = std::time::Instant::now();
                let (status, v) = d.post("/v1/contacts", body).await;
                if t0.elapsed() > Duration::from_secs(5) {
                    eprintln!(
                        "slow: writer {w} request {i} started at {:?}, took {:?}: {status}",
                        t0 - started,
                        t0.elapsed()
                    );
                }
                out.push((status, v, t0.elapsed()));
            }
            out
        }));
    }
    // The CLI and an import write at the same time, from other processes:
    // they wait for SQLite's lock (busy_timeout) instead of failing.
    let mut csv = String::from("id,name,tags\n");
    for i in 0..500 {
        csv.push_str(&format!("imp{i:04},Imported,trial\n"));
    }
    p.write("import.csv", &csv);
    let mut cli = Vec::new();
    for i in 0..5 {
        let mut c = p.command();
        c.args(["contacts", "add", &format!("cli-{i}"), "--tag", "trial"]);
        cli.push(tokio::task::spawn_blocking(move || c.output().unwrap()));
    }
    let mut c = p.command();
    c.args(["contacts", "import"]).arg(p.path("import.csv"));
    cli.push(tokio::task::spawn_blocking(move || c.output().unwrap()));
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for out in cli {
        let out = out.await.unwrap();
        if !out.status.success() {
            errors.push(format!("CLI: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    for t in tasks {
        for (status, v, el) in t.await.unwrap() {
            lat.push(el);
            if status != 201 {
                errors.push(format!("{status} {v}"));
            }
        }
    }
    let total = started.elapsed();
    lat.sort();
    let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    eprintln!(
        "{} requests from {writers} writers in {:.1} s: p50 {:?}, p99 {:?}, max {:?}, {} errors",
        lat.len(),
        total.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1],
        errors.len()
    );
    if let Ok(path) = std::env::var("NURTURE_BENCH_LOG") {
        std::fs::write(path, p.log()).unwrap();
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let d = std::sync::Arc::into_inner(d).unwrap();
    let (status, _) = d.terminate(Duration::from_secs(60));
    assert!(status.success());
}

/// `nurture outbox requeue --dead` brings dead letters back after a fix; a
/// running daemon sends them (same message id). `--channel` and `--since`
/// narrow it; an unknown channel is an input error with a suggestion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_requeued_after_a_fix() {
    use support::receiver::{Receiver, Reply, script};
    // The provider refuses the first call (say, a wrong credential), then accepts.
    let rx = Receiver::start(script::first_then(
        1,
        Reply::status(401).body("bad credentials"),
        Reply::ok(),
    ))
    .await;
    let p = Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\", secret_env: HOOK_SECRET }}\n  console: {{ kind: log }}\n",
        rx.url("/hook")
    ));
    p.write("templates/hi.hbs", "hi {{contact.id}}").write(
        "workflows/w.yaml",
        "trigger: { contact_created: {} }\nsteps:\n  - send: { channel: hook, template: hi }\n",
    );
    let d = Daemon::start(&p, &[]);
    d.post_ok("/v1/contacts", serde_json::json!({"id": "c1"}))
        .await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'dead'",
        1,
        Duration::from_secs(20),
    )
    .await;
    let out = p
        .command()
        .args(["outbox", "requeue", "--dead", "--channel", "hok"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean \"hook\"?"), "{err}");
    assert_eq!(
        p.ok(&["outbox", "requeue", "--dead", "--channel", "console"]),
        "requeued 0 dead messages\n"
    );
    assert_eq!(
        p.ok(&[
            "outbox",
            "requeue",
            "--dead",
            "--since",
            "2999-01-01T00:00:00Z"
        ]),
        "requeued 0 dead messages\n"
    );
    assert_eq!(
        p.ok(&[
            "outbox",
            "requeue",
            "--dead",
            "--channel",
            "hook",
            "--since",
            "2020-01-01T00:00"
        ]),
        "requeued 1 dead message\n"
    );
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent' AND attempts = 1",
        1,
        Duration::from_secs(20),
    )
    .await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].header("Idempotency-Key"),
        reqs[1].header("Idempotency-Key")
    );
    let (status, _) = d.terminate(Duration::from_secs(20));
    assert!(status.success());
}

/// Serves the API in-process with `limits`; its base address.
async fn api_with(limits: nurture::api::ServeLimits) -> (std::net::SocketAddr, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&support::db::url_for(dir.path()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = nurture::api::ApiState {
        store,
        token: Some("t".into()),
        wake: Default::default(),
        project: None,
        channel_names: None,
        unsubscribe_keys: Default::default(),
        funnel_read: Default::default(),
    };
    tokio::spawn(nurture::api::serve_with_limits(
        listener,
        state,
        None,
        None,
        limits,
        Default::default(),
    ));
    (addr, dir)
}

/// Reads until the server closes the connection; panics if it is still open
/// after `within`.
async fn closed_by_server(s: &mut tokio::net::TcpStream, within: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server kept the connection open");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let (addr, _dir) = api_with(nurture::api::ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    // Connected, nothing sent.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Half a request head.
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A whole request, then idle on the kept-alive connection.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for s in [&mut idle, &mut half] {
        closed_by_server(s, Duration::from_secs(5)).await;
    }
    let answer = closed_by_server(&mut kept, Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_once() {
    use tokio::io::AsyncWriteExt;
    let (addr, _dir) = api_with(nurture::api::ServeLimits {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A third is over the limit: closed without an answer.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = closed_by_server(&mut third, Duration::from_secs(5)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The two within the limit are served.
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_server(&mut first, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_routes_are_rate_limited_per_address() {
    let (addr, _dir) = api_with(nurture::api::ServeLimits {
        per_ip: Some((
            std::num::NonZeroU32::new(1).unwrap(),
            std::num::NonZeroU32::new(3).unwrap(),
        )),
        ..Default::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = client
            .post(format!("http://{addr}/v1/unsubscribe/forged-token"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(&statuses[3..], &[429, 429, 429], "{statuses:?}");
    assert!(statuses[..3].iter().all(|s| *s != 429), "{statuses:?}");
    // Routes behind the token, and probes, are not limited this way.
    for _ in 0..6 {
        let r = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Issue 12 item 8: every background task is supervised. When one dies (a
/// panic, an error, or a plain return while the daemon is not stopping),
/// the daemon says which, stops the others cleanly (the delivery worker
/// hands its claims back) and exits non-zero, so a service manager restarts
/// it, instead of limping on with the API up. The death is injected with the
/// test-only `NURTURE_TEST_FAULT` hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_task_stops_the_daemon_non_zero_and_names_the_task() {
    let cases = [
        ("panic:delivery", "delivery", "panicked"),
        ("error:scheduler", "scheduler", "injected error"),
        ("exit:wecom-poller", "wecom-poller", "ended on its own"),
        ("panic:api", "api", "panicked"),
    ];
    for (fault, task, why) in cases {
        let p = Project::new(SETTINGS);
        let mut d = Daemon::start_with_env(&p, &[], &[("NURTURE_TEST_FAULT", fault)]);
        let status = d.wait(Duration::from_secs(30));
        let log = p.log();
        assert!(!status.success(), "{fault}: {status}\n{log}");
        let line = log
            .lines()
            .find(|l| l.contains("daemon task") && l.contains("stopping the daemon"))
            .unwrap_or_else(|| panic!("{fault}: no supervisor line in\n{log}"));
        assert!(
            line.contains(&format!("task=\"{task}\"")),
            "{fault}: {line}"
        );
        assert!(log.contains(why), "{fault}: {log}");
        // The final error names the task too (what systemd's journal shows last).
        assert!(log.contains(&format!("the {task} task")), "{fault}: {log}");
        if task != "delivery" {
            // The others stopped the ordinary way.
            assert!(log.contains("delivery worker stopped"), "{fault}: {log}");
        }
    }
}

/// Without a fault, SIGTERM still stops every task and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_task_and_exits_zero() {
    let p = Project::new(SETTINGS);
    let d = Daemon::start(&p, &[]);
    let (status, _) = d.terminate(Duration::from_secs(30));
    let log = p.log();
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains("daemon task"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
