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
    let welcome = &list["workflows"][8];
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
    let tampered = format!("{}0", &pair[..pair.len() - 1]);
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
    let out = run(&["graph", "welcome", "--format", "svg"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"welcome-wecom\""));
}
