use super::*;
use crate::store::wecom::{CallbackKey, ContactChange};
use chrono::TimeZone;
use serde_json::Value;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
}

fn set(tags: &[&str]) -> BTreeSet<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

async fn edit(s: &Store, ext: &str, user: &str, ct: &str) {
    let key = CallbackKey {
        event: "change_external_contact".into(),
        change_type: "edit_external_contact".into(),
        user_id: user.into(),
        external_userid: ext.into(),
        tag_id: String::new(),
        create_time: ct.into(),
    };
    let change = ContactChange::Edited {
        external_userid: ext.into(),
        staff_userid: user.into(),
        channel: "wecom".into(),
    };
    let a = s
        .apply_wecom_callback(&key, &Value::Null, &change, t(0), t(0))
        .await
        .unwrap();
    assert!(a.tag_sync, "{a:?}");
    assert_eq!(a.outcome, "tag_sync_queued");
}

async fn tags(s: &Store, id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT tag FROM contact_tags WHERE contact_id = $1 ORDER BY tag")
        .bind(id)
        .fetch_all(s.db())
        .await
        .unwrap()
}

async fn logged(s: &Store, kind: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM event_log WHERE kind = $1 ORDER BY seq")
        .bind(kind)
        .fetch_all(s.db())
        .await
        .unwrap()
}

#[tokio::test]
async fn syncs_add_and_remove_only_wecom_tags() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    sqlx::query("INSERT INTO contacts (id, wecom_external_userid, created_at, updated_at) VALUES ('c1', 'wm1', 1, 1)")
            .execute(s.db())
            .await
            .unwrap();
    s.add_tags("c1", &["keep".into(), "both".into()], t(0))
        .await
        .unwrap();

    edit(&s, "wm1", "zhangsan", "10").await;
    let due = s.due_wecom_tag_syncs(t(1), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let req = due[0].clone();
    assert_eq!(
        (req.contact_id.as_str(), req.staff_userid.as_str()),
        ("c1", "zhangsan")
    );
    let view = WecomTags {
        editor: set(&["vip", "both"]),
        all: Some(set(&["vip", "both", "lisi-only"])),
        relationships: None,
    };
    let d = s.apply_wecom_tags(&req, &view, t(2)).await.unwrap();
    assert_eq!(d.added, vec!["vip".to_string()], "both was already there");
    assert!(d.removed.is_empty() && !d.requeued);
    assert_eq!(tags(&s, "c1").await, vec!["both", "keep", "vip"]);
    assert!(s.due_wecom_tag_syncs(t(3), 10).await.unwrap().is_empty());

    // vip and both are gone from WeCom: vip (WeCom's) is removed, both
    // (nurture's before WeCom had it) and keep stay.
    edit(&s, "wm1", "zhangsan", "20").await;
    let req = s.due_wecom_tag_syncs(t(3), 10).await.unwrap().remove(0);
    let d = s
        .apply_wecom_tags(
            &req,
            &WecomTags {
                editor: set(&[]),
                all: Some(set(&[])),
                relationships: None,
            },
            t(4),
        )
        .await
        .unwrap();
    assert_eq!(d.removed, vec!["vip".to_string()]);
    assert_eq!(tags(&s, "c1").await, vec!["both", "keep"]);
    assert_eq!(logged(&s, "tag_added").await, vec!["keep", "both", "vip"]);
    assert_eq!(logged(&s, "tag_removed").await, vec!["vip"]);
}

#[tokio::test]
async fn another_relationship_keeps_a_tag_and_an_incomplete_list_removes_nothing() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    sqlx::query("INSERT INTO contacts (id, wecom_external_userid, created_at, updated_at) VALUES ('c1', 'wm1', 1, 1)")
            .execute(s.db())
            .await
            .unwrap();
    edit(&s, "wm1", "zhangsan", "10").await;
    let req = s.due_wecom_tag_syncs(t(1), 10).await.unwrap().remove(0);
    s.apply_wecom_tags(
        &req,
        &WecomTags {
            editor: set(&["vip"]),
            all: Some(set(&["vip"])),
            relationships: None,
        },
        t(1),
    )
    .await
    .unwrap();
    // zhangsan removed vip, lisi still has it.
    edit(&s, "wm1", "zhangsan", "20").await;
    let req = s.due_wecom_tag_syncs(t(2), 10).await.unwrap().remove(0);
    let d = s
        .apply_wecom_tags(
            &req,
            &WecomTags {
                editor: set(&[]),
                all: Some(set(&["vip"])),
                relationships: None,
            },
            t(2),
        )
        .await
        .unwrap();
    assert!(d.removed.is_empty());
    // Not every relationship was read: nothing removed.
    edit(&s, "wm1", "zhangsan", "30").await;
    let req = s.due_wecom_tag_syncs(t(3), 10).await.unwrap().remove(0);
    let d = s
        .apply_wecom_tags(
            &req,
            &WecomTags {
                editor: set(&[]),
                all: None,
                relationships: None,
            },
            t(3),
        )
        .await
        .unwrap();
    assert!(d.removed.is_empty());
    assert_eq!(tags(&s, "c1").await, vec!["vip"]);
}

#[tokio::test]
async fn an_edit_during_the_fetch_keeps_the_row_and_drops_respect_it() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    sqlx::query("INSERT INTO contacts (id, wecom_external_userid, created_at, updated_at) VALUES ('c1', 'wm1', 1, 1)")
            .execute(s.db())
            .await
            .unwrap();
    edit(&s, "wm1", "zhangsan", "10").await;
    let req = s.due_wecom_tag_syncs(t(1), 10).await.unwrap().remove(0);
    // A failure backs off; a new edit keeps the backoff.
    s.postpone_wecom_tag_sync(&req, t(100), "busy")
        .await
        .unwrap();
    edit(&s, "wm1", "zhangsan", "11").await;
    assert!(s.due_wecom_tag_syncs(t(50), 10).await.unwrap().is_empty());
    assert_eq!(
        s.next_wecom_tag_sync_at().await.unwrap(),
        Some(to_ms(t(100)))
    );
    // The stale request is applied but the row stays, due now.
    let d = s
        .apply_wecom_tags(&req, &WecomTags::default(), t(101))
        .await
        .unwrap();
    assert!(d.requeued);
    let again = s.due_wecom_tag_syncs(t(101), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0);
    assert!(again[0].generation > req.generation);
    // Dropping with an old generation keeps the row; the current one goes.
    assert!(!s.drop_wecom_tag_sync(&req).await.unwrap());
    assert!(s.drop_wecom_tag_sync(&again[0]).await.unwrap());
    assert_eq!(s.next_wecom_tag_sync_at().await.unwrap(), None);

    // A contact deleted meanwhile: nothing applied, the row went with it.
    edit(&s, "wm1", "zhangsan", "12").await;
    let req = s.due_wecom_tag_syncs(t(200), 10).await.unwrap().remove(0);
    sqlx::query("DELETE FROM contacts WHERE id = 'c1'")
        .execute(s.db())
        .await
        .unwrap();
    let d = s
        .apply_wecom_tags(
            &req,
            &WecomTags {
                editor: set(&["vip"]),
                all: None,
                relationships: None,
            },
            t(201),
        )
        .await
        .unwrap();
    assert!(d.contact_gone);
    assert_eq!(s.next_wecom_tag_sync_at().await.unwrap(), None);
}

#[tokio::test]
async fn marks_nurture_is_making_are_not_read_back_as_news() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    sqlx::query("INSERT INTO contacts (id, wecom_external_userid, created_at, updated_at) VALUES ('c1', 'wm1', 1, 1)")
            .execute(s.db())
            .await
            .unwrap();
    s.add_tags("c1", &["lead".into()], t(0)).await.unwrap();
    sqlx::query(
        "INSERT INTO wecom_contact_tags (contact_id, tag, added_at) VALUES ('c1', 'lead', 1)",
    )
    .execute(s.db())
    .await
    .unwrap();
    // A workflow removed vip and added lead; WeCom has not been told yet.
    let mut conn = s.db().acquire().await.unwrap();
    crate::store::wecom_marks::queue(
        &mut conn,
        &["wecom".into()],
        "c1",
        &["lead".into()],
        &["vip".into()],
        to_ms(t(0)),
    )
    .await
    .unwrap();
    drop(conn);
    edit(&s, "wm1", "zhangsan", "10").await;
    let req = s.due_wecom_tag_syncs(t(1), 10).await.unwrap().remove(0);
    // WeCom still shows vip and not yet lead.
    let d = s
        .apply_wecom_tags(
            &req,
            &WecomTags {
                editor: set(&["vip"]),
                all: Some(set(&["vip"])),
                relationships: None,
            },
            t(2),
        )
        .await
        .unwrap();
    assert!(d.added.is_empty() && d.removed.is_empty(), "{d:?}");
    assert_eq!(tags(&s, "c1").await, vec!["lead"]);
}
