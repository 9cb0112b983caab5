use super::*;
use crate::store::{ContactInput, Store};
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
}

#[tokio::test]
async fn counts_file_states_and_history() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    let pool = s.db().clone();
    s.upsert_contact(
        &ContactInput {
            id: "c1".into(),
            created_at: Some(t(0)),
            ..Default::default()
        },
        t(0),
    )
    .await
    .unwrap();
    s.add_tags("c1", &["vip".into()], t(10)).await.unwrap();
    s.record_event("c1", "purchase", t(20), &serde_json::json!({"amount": 5}))
        .await
        .unwrap();
    for (id, status, next) in [(1, "active", 1000), (2, "active", -1000), (3, "done", 0)] {
        sqlx::query(
                "INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, next_run_at, started_at, ended_at, end_reason) \
                 VALUES ($1, 'w', 'c1', $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(id.to_string())
            .bind(status)
            .bind(to_ms(t(next)))
            .bind(to_ms(t(30)))
            .bind((status == "done").then(|| to_ms(t(50))))
            .bind((status == "done").then_some("completed"))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(
            "INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail) VALUES (3, '0', $1, 'send', 'sms')",
        )
        .bind(to_ms(t(40)))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, status, attempts, not_before, next_attempt_at, created_at, sent_at, last_error) \
             VALUES ('m1', 'w', 'c1', 3, '0', 'sms', '+1', 'Hi', 'dead', 5, $1, $2, $3, NULL, 'bad number')",
        )
        .bind(to_ms(t(40)))
        .bind(to_ms(t(45)))
        .bind(to_ms(t(40)))
        .execute(&pool)
        .await
        .unwrap();
    let counts = workflow_counts(&pool, t(0)).await.unwrap();
    let w = &counts["w"];
    assert_eq!(
        (w.enrolled, w.active, w.waiting, w.done, w.exited, w.failed),
        (3, 2, 1, 1, 0, 1)
    );
    assert_eq!(outbox_queue_depth(&pool).await.unwrap(), 0);

    let h = contact_history(&pool, "c1").await.unwrap();
    let kinds: Vec<&str> = h.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "contact_created",
            "tag_added",
            "event",
            "enrollment_started",
            "enrollment_started",
            "enrollment_started",
            "step",
            "message_queued",
            "message_dead",
            "enrollment_ended"
        ]
    );
    assert_eq!(h[8].detail.as_deref(), Some("bad number"));

    let a = FileState {
        running_hash: Some("0123456789ab".into()),
        loaded_at: Some(t(5)),
        ..FileState::new("a.yaml")
    };
    let b = FileState {
        state: "broken".into(),
        diagnostics: "b.yaml:1:1: bad".into(),
        ..FileState::new("b.yaml")
    };
    record_file_states(&pool, s.dialect(), &[a, b.clone()])
        .await
        .unwrap();
    let b2 = FileState {
        diagnostics: "x".into(),
        rejected_hash: Some("ba0ba0ba0ba0".into()),
        rejected_at: Some(t(7)),
        ..b
    };
    record_file_states(&pool, s.dialect(), &[b2]).await.unwrap();
    let fs = file_states(&pool).await.unwrap();
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].diagnostics, "x");
    assert_eq!(fs[0].running_hash, None);
    assert_eq!(fs[0].rejected_hash.as_deref(), Some("ba0ba0ba0ba0"));
    assert_eq!(fs[0].rejected_at, Some(t(7)));
}
