//! `nurture prune --older-than D`: what goes (finished enrollments but the
//! latest per contact and workflow, sent and dead messages, consumed log
//! rows), what stays, the counts kept for `status`, and `--dry-run`; on the
//! test's store (SQLite, or PostgreSQL with `NURTURE_TEST_POSTGRES`).

use std::path::Path;

use assert_cmd::Command;
use sqlx::AssertSqlSafe;

use crate::support;

const DAY: i64 = 86_400_000;

fn nurture(dir: &Path, url: &str) -> Command {
    let mut cmd = Command::cargo_bin("nurture").unwrap();
    cmd.current_dir(dir)
        .env("NURTURE_DATABASE", url)
        .arg("--config")
        .arg(dir.join("nurture.yaml"));
    cmd
}

async fn count(db: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
        .fetch_one(db)
        .await
        .unwrap()
}

/// A store a daemon has been running on for a year: old and recent history.
async fn history(url: &str) {
    let store = nurture::store::Store::open(url).await.unwrap();
    store.close().await;
    let db = support::db::any_pool(url).await;
    let now = chrono::Utc::now().timestamp_millis();
    let old = now - 200 * DAY;
    let recent = now - 10 * DAY;
    let enrollments = [
        // a: two finished long ago; the first goes, the latest stays.
        ("w", "a", "k1", "done", Some(old)),
        ("w", "a", "k2", "done", Some(old + 1)),
        // b: its only (latest) enrollment stays: `entry: once` reads it.
        ("w", "b", "k1", "exited", Some(old)),
        ("w", "b", "k0", "exited", Some(old - 5)),
        ("w", "c", "k1", "active", None),
        ("w", "c", "k0", "done", Some(recent)),
        ("v", "a", "k1", "done", Some(old)),
    ];
    for (i, (wf, c, key, status, ended)) in enrollments.iter().enumerate() {
        // ids in insertion order: "latest" is the highest id.
        sqlx::query(
            "INSERT INTO enrollments (workflow, contact_id, entry_key, status, started_at, ended_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(*wf)
        .bind(*c)
        .bind(*key)
        .bind(*status)
        .bind(old - 1000 + i as i64)
        .bind(*ended)
        .execute(&db)
        .await
        .unwrap();
    }
    // A step record for each: they go with their enrollment.
    sqlx::query(
        "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, workflow, started_at) \
         SELECT id, 's', started_at, 'send', workflow, started_at FROM enrollments",
    )
    .execute(&db)
    .await
    .unwrap();
    // A skipped step in a pruned enrollment and in a kept one: `status`
    // splits skips by reason code.
    sqlx::query(
        "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail, workflow, started_at) \
         SELECT id, 'k', started_at, 'skip', \
                CASE entry_key WHEN 'k1' THEN 'template_error: missing variable x' ELSE 'no_address' END, \
                workflow, started_at \
           FROM enrollments WHERE workflow = 'w' AND contact_id = 'a'",
    )
    .execute(&db)
    .await
    .unwrap();
    let outbox = [
        ("m1", "sent", Some(old), None, "{}"),
        ("m2", "sent", Some(old), None, "{\"kind\":\"notice\"}"),
        ("m3", "dead", None, Some(old), "{}"),
        ("m4", "sent", Some(recent), None, "{}"),
        ("m5", "queued", None, None, "{}"),
        // Cancelled (consent withdrawn): dated by `next_attempt_at`.
        ("m6", "cancelled", None, None, "{}"),
        ("m7", "cancelled", None, None, "{}"),
    ];
    for (id, status, sent, dead, payload) in outbox {
        // m7 was queued long ago and cancelled recently (an unsubscribe
        // while it waited for a retry): it stays.
        let next = if id == "m7" { recent } else { old };
        sqlx::query(
            "INSERT INTO outbox (id, workflow, contact_id, step_id, channel, recipient, body, payload, \
             status, not_before, next_attempt_at, created_at, sent_at, dead_at, last_error) \
             VALUES ($1, 'w', 'a', 's', 'sms', '+86', 'hi', $2, $3, $4, $7, $4, $5, $6, $8)",
        )
        .bind(id)
        .bind(payload)
        .bind(status)
        .bind(old)
        .bind(sent)
        .bind(dead)
        .bind(next)
        .bind(match status {
            "cancelled" => Some("unsubscribed"),
            "dead" => Some("gave up after 12 attempts: 503 Service Unavailable"),
            _ => None,
        })
        .execute(&db)
        .await
        .unwrap();
    }
    for (kind, at) in [
        ("contact_created", old),
        ("tag_added", old),
        ("contact_created", recent),
        ("event", old),
    ] {
        sqlx::query("INSERT INTO event_log (kind, contact_id, at) VALUES ($1, 'a', $2)")
            .bind(kind)
            .bind(at)
            .execute(&db)
            .await
            .unwrap();
    }
    // The daemon has read the first three log rows.
    let third: i64 = count(
        &db,
        "SELECT seq FROM event_log ORDER BY seq LIMIT 1 OFFSET 2",
    )
    .await;
    sqlx::query("INSERT INTO cursors (name, position) VALUES ('daemon', $1)")
        .bind(third)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
}

#[tokio::test]
async fn prune_deletes_old_history_keeps_what_the_engine_reads_and_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nurture.yaml"), "timezone: Asia/Shanghai\n").unwrap();
    let url = support::db::url_for(dir.path());
    history(&url).await;
    let db = support::db::any_pool(&url).await;
    let before = (
        count(&db, "SELECT count(*) FROM enrollments").await,
        count(&db, "SELECT count(*) FROM outbox").await,
        count(&db, "SELECT count(*) FROM event_log").await,
    );

    // --dry-run: the counts, and nothing deleted.
    let out = nurture(dir.path(), &url)
        .args(["prune", "--older-than", "90d", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("would delete 2 enrollments, 4 messages, 2 event-log rows"),
        "{text}"
    );
    let after_dry = (
        count(&db, "SELECT count(*) FROM enrollments").await,
        count(&db, "SELECT count(*) FROM outbox").await,
        count(&db, "SELECT count(*) FROM event_log").await,
    );
    assert_eq!(after_dry, before);
    assert_eq!(count(&db, "SELECT count(*) FROM pruned_counts").await, 0);

    let out = nurture(dir.path(), &url)
        .args(["prune", "--older-than", "90d"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("deleted 2 enrollments, 4 messages, 2 event-log rows"),
        "{text}"
    );
    // What stays: the latest enrollment per contact and workflow, active
    // ones, recent ones; recent, waiting and recently cancelled messages; the log
    // row no cursor has passed and the recent one.
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT workflow || ':' || contact_id || ':' || entry_key FROM enrollments ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(left, ["v:a:k1", "w:a:k2", "w:b:k0", "w:c:k0", "w:c:k1"]);
    // Their step records stay, the pruned ones' go (PostgreSQL has no
    // cascade for them: migration 0046).
    let steps: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT e.workflow || ':' || e.contact_id || ':' || e.entry_key \
           FROM enrollment_steps s LEFT JOIN enrollments e ON e.id = s.enrollment_id ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        steps, left,
        "the step records of the enrollments left, none orphaned"
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(left, ["m4", "m5", "m7"]);
    let left: Vec<String> = sqlx::query_scalar("SELECT kind FROM event_log ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(left, ["contact_created", "event"]);
    let kept: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT workflow, what, n FROM pruned_counts ORDER BY workflow, what")
            .fetch_all(&db)
            .await
            .unwrap();
    let kept: Vec<(&str, &str, i64)> = kept
        .iter()
        .map(|(w, k, n)| (w.as_str(), k.as_str(), *n))
        .collect();
    assert_eq!(
        kept,
        [
            ("", "log_contact_created", 1),
            ("", "log_tag_added", 1),
            ("w", "cancelled", 1),
            ("w", "cancelled:unsubscribed", 1),
            ("w", "dead", 1),
            ("w", "dead:retries_exhausted", 1),
            ("w", "enrollments_done", 1),
            ("w", "enrollments_exited", 1),
            ("w", "notices", 1),
            ("w", "sent", 1),
            ("w", "skipped:template_error", 1),
        ]
    );
    // `status` still counts what was pruned.
    let counts = nurture::store::status::workflow_counts(&db, chrono::Utc::now())
        .await
        .unwrap();
    let w = &counts["w"];
    assert_eq!((w.enrolled, w.done, w.exited), (6, 3, 2));
    assert_eq!((w.sent, w.notices, w.failed), (2, 1, 1));
    assert_eq!(w.cancelled, 2, "the pruned one and the one left");
    // Its per-reason lines too: they add up to the totals.
    let split = |m: &std::collections::BTreeMap<String, i64>| {
        m.iter().map(|(k, n)| (k.clone(), *n)).collect::<Vec<_>>()
    };
    assert_eq!(
        split(&w.cancelled_by_reason),
        [("unsubscribed".to_string(), 2)]
    );
    assert_eq!(
        split(&w.failed_by_reason),
        [("retries_exhausted".to_string(), 1)]
    );
    assert_eq!(
        split(&w.skipped),
        [
            ("no_address".to_string(), 1),
            ("template_error".to_string(), 1)
        ]
    );

    // Again: nothing more is old enough.
    let out = nurture(dir.path(), &url)
        .args(["prune", "--older-than", "90d"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("deleted 0 enrollments, 0 messages, 0 event-log rows")
    );
    db.close().await;
}

#[test]
fn an_age_inside_the_policies_windows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "timezone: Asia/Shanghai\npolicies:\n  frequency_cap: { max: 3, per: 7d }\n",
    )
    .unwrap();
    let url = support::db::url_for(dir.path());
    for (age, want) in [
        // The window in the units a marketer writes (it said `(604800s)`).
        (
            "3d",
            "frequency cap's window (policies.frequency_cap.per) (1w)",
        ),
        ("12h", "frequency cap"),
        ("soon", "--older-than \"soon\""),
    ] {
        let out = nurture(dir.path(), &url)
            .args(["prune", "--older-than", age])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{age}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{age}: {err}");
    }
}
