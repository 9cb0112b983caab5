//! WeCom transfers are decided in the plan (issue 9, items 1 and 10): an
//! `assign` of a WeCom customer to a salesperson with a `wecom_userid` shows
//! its transfer and verdict in the dry-run row — queued now, deferred until
//! a pending takeover, refused by 2 in 90 days or by a member who left over
//! a year ago, or not needed because the takeover member already is a
//! follow-user — and the daemon then does exactly that: the strict WeCom fake
//! receives only the allowed transfer, the deferred one waits in the outbox
//! until the takeover, the refusals are recorded with the step. Both stores.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use support::daemon::{Daemon, HOOK_SECRET, Project, TOKEN};
use support::wecom_fake::{RESIGNED_TRANSFER_CUSTOMER, TRANSFER_CUSTOMER, WecomFake};

const DAY_MS: i64 = 86_400_000;

fn settings(base: &str) -> String {
    // The test daemon's environment already holds these two variables; the
    // fake takes them as the corp id and the secret.
    format!(
        r#"
timezone: Asia/Shanghai
channels:
  wecom:
    kind: wecom
    corp_id_env: NURTURE_API_TOKEN
    secret_env: HOOK_SECRET
    agent_id: 1000002
    base_url: "{base}"
    poll_interval: 1h
teams:
  east:
    - {{ id: s1, name: Wang Fang, wecom_userid: wangfang }}
  west:
    - {{ id: s3, name: Chen Jie, wecom_userid: chenjie }}
  north:
    - {{ id: s2, name: Li Lei, wecom_userid: lilei }}
"#
    )
}

const REASSIGN: &str = r#"
trigger: { contact_created: {} }
steps:
  - id: owner
    assign: { team: west, strategy: round_robin }
"#;

async fn relationship(p: &Project, ext: &str, userid: &str, added: i64) {
    p.exec(&format!(
        "INSERT INTO wecom_relationships (external_userid, userid, added_at, standing, source, updated_at)
         VALUES ('{ext}', '{userid}', {added}, 1, 'get', {added})"
    ))
    .await;
}

/// A transfer WeCom started at `at` (`status`: pending or done), not polled
/// during the test.
async fn started(p: &Project, id: &str, contact: &str, ext: &str, status: &str, at: i64) {
    p.exec(&format!(
        "INSERT INTO wecom_tasks (message_id, channel, kind, contact_id, external_userid, userid,
                                  takeover_userid, status, created_at, checks, next_check_at)
         VALUES ('{id}', 'wecom', 'transfer', '{contact}', '{ext}', 'lilei', 'wangfang', '{status}', {at}, 1, {})",
        at + 400 * DAY_MS
    ))
    .await;
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_shows_each_transfer_verdict_and_the_daemon_does_it() {
    let (base, fake) = WecomFake::start_with(TOKEN, HOOK_SECRET).await;
    let p = Project::new(&settings(&base));
    p.write("workflows/reassign.yaml", REASSIGN);
    p.write(
        "contacts.csv",
        "id,name,owner,wecom_external_userid\n\
         c1,Allowed,s1,wmAllowed\n\
         c2,Deferred,s1,wmDeferred\n\
         c3,Twice,s1,wmTwice\n\
         c4,Resigned,s1,wmResigned\n\
         c5,Standing,s1,wmStanding\n",
    );
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    support::db::running_since_epoch(&p.db_url(), &["reassign"]);
    let now = chrono::Utc::now().timestamp_millis();
    let added = now - 30 * DAY_MS;
    for ext in ["wmAllowed", "wmDeferred", "wmTwice", "wmStanding"] {
        relationship(&p, ext, "wangfang", added).await;
        fake.befriend(ext, "wangfang");
    }
    // c2: a transfer started 2 h ago waits for its takeover (24 h).
    let pending_at = now - 2 * 3_600_000;
    started(&p, "t-c2", "c2", "wmDeferred", "pending", pending_at).await;
    // c3: two transfers in the last 90 days, both taken over.
    started(&p, "t-c3a", "c3", "wmTwice", "done", now - 20 * DAY_MS).await;
    started(&p, "t-c3b", "c3", "wmTwice", "done", now - 10 * DAY_MS).await;
    // c4: its member left 400 days ago.
    p.exec(&format!(
        "INSERT INTO wecom_unassigned (external_userid, handover_userid, dimission_time, first_seen_at, last_seen_at)
         VALUES ('wmResigned', 'lisi', {}, {now}, {now})",
        now - 400 * DAY_MS
    ))
    .await;
    // c5: chenjie already is a follow-user.
    relationship(&p, "wmStanding", "chenjie", added).await;
    fake.befriend("wmStanding", "chenjie");

    // The preview: JSON rows and the text table.
    let rows: Vec<Value> = p
        .ok(&["dry-run", "--format", "jsonl"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let planned: BTreeMap<String, Value> = rows
        .iter()
        .filter(|r| r["action"] == "assign")
        .map(|r| (r["contact_id"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    assert_eq!(planned.len(), 5, "{rows:#?}");
    let t = |c: &str| planned[c]["transfer"].clone();
    assert_eq!(t("c1")["verdict"], "queued", "{:#}", t("c1"));
    assert_eq!(t("c1")["from"], "wangfang");
    assert_eq!(t("c1")["to"], "chenjie");
    assert_eq!(
        t("c1")["reason"],
        "transfer of wmAllowed from wangfang to chenjie: queued now"
    );
    assert_eq!(t("c2")["verdict"], "deferred", "{:#}", t("c2"));
    let until = pending_at + DAY_MS;
    let reason = t("c2")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with(&format!(
            "transfer of wmDeferred from wangfang to chenjie: deferred until {}, a transfer started at {} waits for takeover",
            when(until),
            when(pending_at)
        )),
        "{reason}"
    );
    assert_eq!(t("c3")["verdict"], "refused", "{:#}", t("c3"));
    assert_eq!(t("c3")["limit"], "2_per_90_days");
    assert!(
        t("c3")["reason"]
            .as_str()
            .unwrap()
            .contains("errcode 40128"),
        "{:#}",
        t("c3")
    );
    assert_eq!(t("c4")["verdict"], "refused", "{:#}", t("c4"));
    assert_eq!(t("c4")["limit"], "resigned_within_a_year");
    assert!(t("c4").get("until").is_none(), "never frees up");
    assert!(
        t("c4")["reason"]
            .as_str()
            .unwrap()
            .contains("lisi left more than a year ago"),
        "{:#}",
        t("c4")
    );
    assert_eq!(t("c5")["verdict"], "not_needed", "{:#}", t("c5"));
    let text = p.ok(&["dry-run"]);
    assert!(
        text.contains("transfer of wmDeferred from wangfang to chenjie: deferred until"),
        "{text}"
    );
    assert!(
        text.contains(
            "no transfer of wmStanding to chenjie: chenjie already is a WeCom follow-user"
        ),
        "{text}"
    );

    // The daemon does what the preview showed.
    let mut d = Daemon::start(&p, &["--until-idle=now"]);
    let status = d.wait(Duration::from_secs(60));
    assert!(status.success(), "exit {status}; log:\n{}", p.log());
    assert_eq!(
        fake.requests(TRANSFER_CUSTOMER),
        vec![
            json!({"handover_userid": "wangfang", "takeover_userid": "chenjie", "external_userid": ["wmAllowed"]})
        ],
        "only the allowed transfer reaches WeCom"
    );
    assert_eq!(fake.count(RESIGNED_TRANSFER_CUSTOMER), 0);
    let outbox = p
        .rows("SELECT contact_id, status, not_before, body FROM outbox WHERE kind = 'transfer' ORDER BY contact_id")
        .await;
    let by: BTreeMap<String, &serde_json::Map<String, Value>> = outbox
        .iter()
        .map(|r| (r["contact_id"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(
        by.keys().cloned().collect::<Vec<_>>(),
        ["c1", "c2"],
        "refused and unneeded transfers are not queued: {outbox:#?}"
    );
    assert_eq!(by["c1"]["status"], "sent");
    assert_eq!(by["c1"]["body"], t("c1")["reason"]);
    // The deferred transfer waits in the outbox until the takeover.
    assert_eq!(by["c2"]["status"], "queued");
    let nb = &by["c2"]["not_before"];
    let nb = nb
        .as_i64()
        .or_else(|| nb.as_str().and_then(|s| s.parse().ok()))
        .unwrap();
    assert_eq!(nb, until);
    assert_eq!(by["c2"]["body"].as_str(), Some(reason.as_str()));
    // The refusals are recorded with the assignment, in the preview's words.
    let steps = p
        .rows(
            "SELECT e.contact_id AS c, s.detail AS d FROM enrollment_steps s
               JOIN enrollments e ON e.id = s.enrollment_id WHERE s.action = 'assign' ORDER BY e.contact_id",
        )
        .await;
    let detail: BTreeMap<String, String> = steps
        .iter()
        .map(|r| {
            (
                r["c"].as_str().unwrap().to_string(),
                r["d"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for c in ["c1", "c2", "c5"] {
        assert_eq!(detail[c], "s3", "{detail:#?}");
    }
    for c in ["c3", "c4"] {
        assert_eq!(
            detail[c],
            format!("s3 — {}", t(c)["reason"].as_str().unwrap()),
            "{detail:#?}"
        );
    }
    let h = p.ok(&["history", "--contact", "c4"]);
    assert!(h.contains("lisi left more than a year ago"), "{h}");
    // The deferred transfer waits for a takeover, not for quiet hours.
    let h = p.ok(&["history", "--contact", "c2"]);
    assert!(
        h.contains("reassign: WeCom transfer queued on wecom to wmDeferred (step owner)"),
        "{h}"
    );
    assert!(h.contains("deferred until"), "{h}");
    assert!(!h.contains("quiet hours"), "{h}");
}

/// The dry-run counts the transfers it plans itself: a second assignment of
/// the same customer within `--until` is deferred until the first one's
/// takeover, as the daemon would defer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_transfer_planned_in_the_window_waits_for_the_first() {
    let (base, fake) = WecomFake::start_with(TOKEN, HOOK_SECRET).await;
    let p = Project::new(&settings(&base));
    p.write(
        "workflows/reassign.yaml",
        r#"
trigger: { contact_created: {} }
steps:
  - id: west
    assign: { team: west, strategy: round_robin }
  - wait: 1h
  - id: north
    assign: { team: north, strategy: round_robin }
"#,
    );
    p.write(
        "contacts.csv",
        "id,name,owner,wecom_external_userid\nc1,Ada,s1,wmTwo\n",
    );
    p.ok(&[
        "contacts",
        "import",
        p.path("contacts.csv").to_str().unwrap(),
    ]);
    support::db::running_since_epoch(&p.db_url(), &["reassign"]);
    let now = chrono::Utc::now();
    relationship(&p, "wmTwo", "wangfang", now.timestamp_millis() - DAY_MS).await;
    fake.befriend("wmTwo", "wangfang");
    let until = (now + chrono::Duration::hours(2)).to_rfc3339();
    let rows: Vec<Value> = p
        .ok(&["dry-run", "--format", "jsonl", "--until", &until])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let transfers: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "assign")
        .map(|r| &r["transfer"])
        .collect();
    assert_eq!(transfers.len(), 2, "{rows:#?}");
    assert_eq!(transfers[0]["verdict"], "queued", "{:#}", transfers[0]);
    assert_eq!(transfers[1]["verdict"], "deferred", "{:#}", transfers[1]);
    assert_eq!(transfers[1]["to"], "lilei");
    // The first goes out at the plan's moment; WeCom takes over 24 h later.
    let first_at = chrono::DateTime::parse_from_rfc3339(rows[0]["at"].as_str().unwrap()).unwrap();
    let second_until =
        chrono::DateTime::parse_from_rfc3339(transfers[1]["until"].as_str().unwrap()).unwrap();
    assert_eq!(
        second_until - first_at,
        chrono::Duration::hours(24),
        "{rows:#?}"
    );
}
