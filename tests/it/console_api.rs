//! The console's read API (`/v1/workflows`, `/graph`, `/v1/report/...`,
//! `/v1/dry-run`, `/v1/contacts/...`) and its sign-in, served by a real
//! `nurture run` on the quick start, and by `nurture console` alone; and
//! `nurture graph`. Runs on both stores (`support::db`).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support;
use support::console::{CONSOLE_TOKEN, quick_start};
use support::daemon::TOKEN;

async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let s = r.status();
    let text = r.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_api_on_the_quick_start() {
    let (p, d) = quick_start(200).await;
    let c = reqwest::Client::new();
    let u = |path: &str| d.url(path);

    // Refused without a token, with a wrong one; both tokens read.
    for path in [
        "/v1/workflows",
        "/v1/dry-run",
        "/v1/contacts/search?q=a",
        "/v1/report/channels",
    ] {
        let (s, v) = get(&c, &u(path), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {v}");
        assert!(v["error"].is_string());
        let (s, _) = get(&c, &u(path), Some("nope")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, list) = get(&c, &u("/v1/workflows"), Some(CONSOLE_TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let names: Vec<&str> = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, support::console::WORKFLOWS);
    let welcome = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "welcome-wecom")
        .unwrap();
    assert_eq!(welcome["state"], "loaded");
    assert!(
        welcome["counts"]["enrolled"].as_i64().unwrap() > 0,
        "{welcome}"
    );
    assert_eq!(
        welcome["file_state"]["running_version"]
            .as_str()
            .unwrap()
            .len(),
        12,
        "{welcome}"
    );
    assert!(welcome["activated_at"].is_string());

    // The console token reads but does not write.
    let r = c
        .post(u("/v1/contacts"))
        .bearer_auth(CONSOLE_TOKEN)
        .json(&serde_json::json!({"id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The diagram with live counts.
    let (s, g) = get(&c, &u("/v1/workflows/welcome-wecom/graph"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let ids: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "trigger",
            "assign-owner",
            "welcome",
            "2",
            "check-reply",
            "check-reply.then.0",
            "check-reply.else.0",
            "end",
            "goal"
        ]
    );
    assert_eq!(g["edges"].as_array().unwrap().len(), 8);
    assert!(
        g["counts"]["trigger"]["entered"].as_i64().unwrap() > 0,
        "{g}"
    );
    assert!(
        g["counts"]["welcome"]["reached"].as_i64().unwrap() > 0,
        "{g}"
    );
    let (s, _) = get(&c, &u("/v1/workflows/nope/graph"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let svg = c
        .get(u("/v1/workflows/welcome-wecom/graph?format=svg"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("data-id=\"check-reply\""));

    // Reports.
    let (s, rep) = get(&c, &u("/v1/report/workflows?days=7"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{rep}");
    assert_eq!(rep["days"].as_array().unwrap().len(), 7);
    let w = rep["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workflow"] == "welcome-wecom")
        .unwrap();
    assert!(w["totals"]["entered"].as_i64().unwrap() > 0, "{w}");
    assert!(w["totals"]["sent"].as_i64().unwrap() > 0, "{w}");
    assert_eq!(w["entered"].as_array().unwrap().len(), 7);
    let (s, ch) = get(&c, &u("/v1/report/channels"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{ch}");
    let wecom = ch["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "wecom")
        .unwrap();
    let sent_store = p
        .count("SELECT count(*) FROM outbox WHERE channel = 'wecom' AND status = 'sent'")
        .await;
    assert!(wecom["sent"].as_i64().unwrap() >= 1);
    assert!(wecom["sent"].as_i64().unwrap() <= sent_store);
    assert!(
        wecom["since_start"]["sent"].as_i64().unwrap() >= 1,
        "{wecom}"
    );
    assert!(ch["queue_depth"].is_i64());

    // One customer: search by Chinese name, phone, e-mail; details; history; explain.
    for q in ["周晓明", "晓明", "+8613800000001", "c9000001"] {
        let (s, found) = get(
            &c,
            &format!("{}?q={}", u("/v1/contacts/search"), urlencode(q)),
            Some(TOKEN),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            found["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == "c9000001"),
            "{q}: {found}"
        );
    }
    let (s, one) = get(&c, &u("/v1/contacts/c9000001"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_eq!(one["name"], "周晓明");
    assert_eq!(one["attributes"]["city"], "Shanghai");
    assert!(one["tags"].as_array().unwrap().iter().any(|t| t == "trial"));
    assert_eq!(one["consent"]["unsubscribed"], false);
    assert!(!one["enrollments"].as_array().unwrap().is_empty(), "{one}");
    let (s, h) = get(&c, &u("/v1/contacts/c9000001/history"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["history"][0]["kind"], "contact_created");
    assert!(h["history"][0]["at"].is_string());
    let (s, ex) = get(
        &c,
        &u("/v1/contacts/c9000001/explain?workflow=welcome-wecom"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ex}");
    assert!(ex["text"].as_str().unwrap().contains("welcome-wecom"));
    let (s, _) = get(&c, &u("/v1/contacts/nobody"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Sign-in: a cookie, HttpOnly and SameSite=Strict, that reads but never writes.
    let r = c
        .post(u("/console/login"))
        .json(&serde_json::json!({"token": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(u("/console/login"))
        .json(&serde_json::json!({"token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the token itself is not in the cookie"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = c
        .get(u("/v1/workflows"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(u("/v1/contacts"))
        .header("cookie", &pair)
        .json(&serde_json::json!({"id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The signature's last character changed (to one it is not).
    let last = if pair.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &pair[..pair.len() - 1]);
    let r = c
        .get(u("/v1/workflows"))
        .header("cookie", tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The page: embedded, with a CSP without inline script, not framable.
    let r = c.get(u("/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(html.contains("/console/app.js") && !html.contains("<script>"));
    let js = c.get(u("/console/app.js")).send().await.unwrap();
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );

    let (status, _) = d.terminate(Duration::from_secs(20));
    assert!(status.success());

    // `nurture console` alone against the same store.
    let mut child = p
        .command()
        .args(["console", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("console on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end_matches("/console/")
        .to_string();
    let (s, list) = get(&c, &format!("{base}/v1/workflows"), Some(CONSOLE_TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(
        list["workflows"].as_array().unwrap().len(),
        support::console::WORKFLOWS.len()
    );
    let (s, _) = get(&c, &format!("{base}/v1/workflows"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let ub = |path: &str| format!("{base}{path}");
    // The dry-run, paged (the daemon stopped, so the store holds still):
    // two pages differ, the totals do not.
    let q = "/v1/dry-run?at=2026-11-01T10:00:00%2B08:00&until=2d&all_contacts=1&limit=10";
    let (s, p0) = get(&c, &ub(q), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{p0}");
    let (_, p1) = get(&c, &ub(&format!("{q}&offset=10")), Some(TOKEN)).await;
    assert!(p0["matched"].as_u64().unwrap() > 20, "{p0}");
    assert_eq!(p0["matched"], p1["matched"]);
    assert_eq!(p0["rows"].as_array().unwrap().len(), 10);
    assert_ne!(p0["rows"][0], p1["rows"][0]);
    let (_, sends) = get(
        &c,
        &ub(&format!("{q}&action=send&workflow=welcome-wecom")),
        Some(TOKEN),
    )
    .await;
    assert!(
        sends["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] == "send" && r["workflow"] == "welcome-wecom"),
        "{sends}"
    );
    let (s, big) = get(&c, &ub(&format!("{q}&limit=5000")), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(big["limit"], 1000);
    let (s, bad) = get(&c, &ub("/v1/dry-run?at=yesterday"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    // Streamed: every matching row, one JSON object per line.
    let jsonl = c
        .get(ub(&format!("{q}&format=jsonl")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        jsonl.lines().count() as u64,
        p0["matched"].as_u64().unwrap()
    );

    let r = c.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn nurture_graph_prints_the_diagram() {
    let bin = assert_cmd::cargo::cargo_bin("nurture");
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .current_dir(root)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["graph", "welcome-wecom", "--format", "mermaid"]);
    assert!(out.status.success());
    let m = String::from_utf8(out.stdout).unwrap();
    assert!(m.starts_with("flowchart TD\n"));
    assert!(
        m.contains("n_check_reply -->|yes| n_check_reply_then_0"),
        "{m}"
    );
    assert!(
        m.contains("n_check_reply -->|no| n_check_reply_else_0"),
        "{m}"
    );
    let out = run(&["graph", "winback-30d", "--format", "dot"]);
    let d = String::from_utf8(out.stdout).unwrap();
    assert!(
        d.starts_with("digraph \"winback-30d\"") && d.contains("\"bought\" [shape=diamond"),
        "{d}"
    );
    let out = run(&["graph", "vip-upgrade", "--format", "svg"]);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    // A contact way's welcome names its code: not every new contact.
    let out = run(&["graph", "contact-way:douyin-0618", "--format", "mermaid"]);
    let m = String::from_utf8(out.stdout).unwrap();
    assert!(m.contains("contact created via douyin-0618"), "{m}");
    let out = run(&["graph", "welcome", "--format", "svg"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"welcome-wecom\""));
}

/// The performance per split arm and against the holdout (issue 15, item 2):
/// `GET /v1/report/workflows/{name}` gives `nurture report`'s groups (all,
/// each arm, treatment, holdout) with intervals and the lift, and per group
/// entered, sent and converted per day; the list marks the workflow as an
/// experiment. On the store the suite runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_performance_per_arm_and_against_the_holdout() {
    use support::receiver::{Receiver, Reply, script};
    let rx = Receiver::start(script::always(Reply::ok())).await;
    let p = support::daemon::Project::new(&format!(
        "timezone: Asia/Shanghai\nchannels:\n  hook: {{ kind: webhook, url: \"{}\", secret_env: HOOK_SECRET }}\n",
        rx.url("/hook")
    ));
    p.write(
        "workflows/promo.yaml",
        r#"
name: promo
trigger: { event: { name: visit } }
holdout: 30%
goal: { event: purchase, within: 1d }
exit_on_goal: false
steps:
  - id: ab
    split:
      arms:
        - { name: a, steps: [ { id: hello-a, send: { channel: hook, template: hello } } ] }
        - { name: b, steps: [ { id: hello-b, send: { channel: hook, template: hello } } ] }
"#,
    )
    .write("templates/hello.hbs", "hello {{contact.name}}");
    let mut csv = String::from("id,name\n");
    for i in 0..40 {
        csv.push_str(&format!("c{i:02},N{i}\n"));
    }
    p.write("contacts.csv", &csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    for i in 0..40 {
        p.ok(&["contacts", "event", &format!("c{i:02}"), "visit"]);
    }
    for i in 0..12 {
        p.ok(&["contacts", "event", &format!("c{i:02}"), "purchase"]);
    }
    support::db::running_since_epoch(&p.db_url(), &["promo"]);
    let d = support::daemon::Daemon::start(&p, &[]);
    p.wait_count(
        "SELECT count(*) FROM enrollments",
        40,
        Duration::from_secs(20),
    )
    .await;
    let held = p
        .count("SELECT count(*) FROM enrollment_steps WHERE step_id = '@holdout'")
        .await;
    p.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent'",
        40 - held,
        Duration::from_secs(20),
    )
    .await;

    let c = reqwest::Client::new();
    let (s, _) = get(&c, &d.url("/v1/report/workflows/promo"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, r) = get(&c, &d.url("/v1/report/workflows/promo?days=7"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let group = |name: &str| -> Value {
        r["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("no group {name}: {r}"))
            .clone()
    };
    // The purchases came before the visits: none is a conversion. Then 5
    // contacts buy (within the day of their visit).
    assert_eq!(group("all")["entered"], 40, "{r}");
    assert_eq!(group("all")["converted"], 0, "{r}");
    drop(r);
    for i in 30..35 {
        d.post_ok(
            "/v1/events",
            serde_json::json!({ "contact_id": format!("c{i:02}"), "name": "purchase" }),
        )
        .await;
    }
    let (_, r) = get(&c, &d.url("/v1/report/workflows/promo?days=7"), Some(TOKEN)).await;
    let group = |name: &str| -> Value {
        r["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("no group {name}: {r}"))
            .clone()
    };
    assert_eq!(group("all")["converted"], 5, "{r}");
    assert_eq!(group("all")["kind"], "all");
    assert_eq!(group("ab=a")["kind"], "arm");
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(
        n(&group("ab=a")["entered"]) + n(&group("ab=b")["entered"]),
        40
    );
    assert_eq!(n(&group("treatment")["entered"]), 40 - held as u64);
    assert_eq!(n(&group("holdout")["entered"]), held as u64);
    assert_eq!(
        n(&group("treatment")["converted"]) + n(&group("holdout")["converted"]),
        5
    );
    assert!(r["lift"]["p_value"].is_number(), "{r}");
    assert_eq!(r["holdout"], true);
    // Per day: 7 days, everything today (the last).
    assert_eq!(r["days"].as_array().unwrap().len(), 7);
    let daily = |name: &str| -> Value {
        r["daily"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("no daily {name}: {r}"))
            .clone()
    };
    let sum = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(daily("all")["entered"][6], 40, "{r}");
    assert_eq!(sum(&daily("all")["entered"]), 40);
    assert_eq!(sum(&daily("all")["sent"]), 40 - held as u64);
    assert_eq!(
        sum(&daily("holdout")["sent"]),
        0,
        "the holdout gets nothing"
    );
    assert_eq!(sum(&daily("all")["converted"]), 5);
    assert_eq!(
        sum(&daily("ab=a")["sent"]) + sum(&daily("ab=b")["sent"]),
        40 - held as u64
    );
    // The funnel is there too, and the list marks the experiment.
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "hello-a")
    );
    let (_, list) = get(&c, &d.url("/v1/report/workflows?days=7"), Some(TOKEN)).await;
    assert_eq!(list["workflows"][0]["experiment"], true, "{list}");
    // A misspelt name.
    let (s, v) = get(&c, &d.url("/v1/report/workflows/prom"), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("did you mean \"promo\"?"),
        "{v}"
    );
}

/// The server's resident memory, from /proc (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `/v1/dry-run?format=jsonl` streams (issue 15): over 100,000 contacts the
/// server's memory grows by far less than the rows it sends (~300 MB),
/// because each row leaves as it is decided (a bounded queue between the
/// simulation and the socket) instead of being collected. 1,000,000
/// contacts take minutes in a debug build; 100,000 show the same.
/// Note: what does grow is the simulation's own state, about 1.2-2 KB per
/// contact it enrolls (the enrollments it made, for entry policies, and
/// the messages it planned, for the frequency cap), exactly as `nurture
/// dry-run` grows; the bound below allows for it (measured: +150-190 MB at
/// 100,000, so 1,000,000 contacts take 1.5-2 GB: not flat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_stream_keeps_the_servers_memory_bounded() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc to read the server's memory from");
        return;
    }
    const N: usize = 100_000;
    // The blast guard off: with it on, a scan is collected whole before the
    // guard judges it (as the daemon does), and this is about the stream.
    let p = support::daemon::Project::new(
        "timezone: Asia/Shanghai\npolicies:\n  blast_guard: off\nchannels:\n  sms: { kind: log, address: phone }\n",
    );
    // Never set off by the daemon: the dry-run imagines it for everyone.
    p.write(
        "workflows/hello.yaml",
        "name: hello\ntrigger: { event: { name: never-happens } }\nsteps:\n  - id: hi\n    send: { channel: sms, template: hi }\n",
    )
    // A long message (~3 KB a row, ~300 MB in all): rows held in memory
    // would show at once.
    .write(
        "templates/hi.hbs",
        &format!("{{{{contact.name}}}}您好，{}", "这是一条很长的预览消息。".repeat(80)),
    );
    let mut csv = String::with_capacity(N * 40);
    csv.push_str("id,name,phone\n");
    for i in 0..N {
        csv.push_str(&format!("m{i:07},客户{i},+86138{i:08}\n"));
    }
    p.write("contacts.csv", &csv);
    drop(csv);
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    let d = support::daemon::Daemon::start(&p, &[]);
    let pid = d.pid();
    let before = rss_kib(pid).unwrap();
    let mut resp = reqwest::Client::new()
        .get(d.url("/v1/dry-run?format=jsonl&all_contacts=1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (mut lines, mut bytes, mut peak) = (0usize, 0usize, before);
    let mut tail = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        // Keep the end of the stream across chunk boundaries: a chunk can
        // end mid-row, so the last row is read from the last 16 KB.
        tail.extend_from_slice(&chunk);
        if tail.len() > 16 * 1024 {
            tail.drain(..tail.len() - 16 * 1024);
        }
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    let tail = String::from_utf8_lossy(&tail);
    let last = tail.trim_end().rsplit('\n').next().unwrap_or_default();
    assert!(!last.contains("\"error\""), "{last}");
    assert_eq!(lines, N, "one send row per contact");
    assert!(last.contains("\"action\":\"send\""), "{last}");
    let grew_mib = (peak.saturating_sub(before)) / 1024;
    let sent_mib = bytes / (1024 * 1024);
    eprintln!(
        "dry-run stream: {lines} rows, {sent_mib} MiB sent, server RSS {} MiB → peak +{grew_mib} MiB",
        before / 1024
    );
    assert!(sent_mib >= 250, "{sent_mib} MiB");
    assert!(
        (grew_mib as usize) < sent_mib,
        "the server grew by {grew_mib} MiB while streaming {sent_mib} MiB: rows are being held"
    );
    // And the simulation's state stays within 2.5 KB a contact.
    assert!(
        peak.saturating_sub(before) < (N as u64) * 5 / 2,
        "the server grew by {grew_mib} MiB for {N} contacts"
    );
    drop(d);
}

/// `nurture console` alone with neither token's variable set refuses to
/// start, naming the variables, instead of serving a sign-in page that
/// refuses everyone.
#[test]
fn the_console_alone_without_a_token_says_which_variable_to_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "timezone: UTC\nchannels:\n  console: { kind: log }\n",
    )
    .unwrap();
    let nurture = |args: &[&str], console_env: bool| {
        let mut c = assert_cmd::Command::cargo_bin("nurture").unwrap();
        c.current_dir(dir.path())
            .env_remove("NURTURE_DATABASE")
            .env_remove("NURTURE_API_TOKEN")
            .env_remove("NURTURE_CONSOLE_TOKEN")
            .args(args)
            .timeout(Duration::from_secs(60));
        if console_env {
            c.env("NURTURE_CONSOLE_TOKEN", "");
        }
        c.output().unwrap()
    };
    assert!(nurture(&["contacts", "add", "c1"], false).status.success());
    let out = nurture(&["console", "--listen", "127.0.0.1:0"], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains("nobody could sign in to the console: set NURTURE_API_TOKEN (api_token_env)")
            && err.contains("console_token_env"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");

    // A console token's variable named but empty counts as unset.
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "timezone: UTC\nconsole_token_env: NURTURE_CONSOLE_TOKEN\nchannels:\n  console: { kind: log }\n",
    )
    .unwrap();
    let out = nurture(&["console", "--listen", "127.0.0.1:0"], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains("or NURTURE_CONSOLE_TOKEN (console_token_env)"),
        "{err}"
    );
}
