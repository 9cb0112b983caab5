use super::*;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
}

fn key(change: &str, user: &str, ext: &str, ct: &str) -> CallbackKey {
    CallbackKey {
        event: "change_external_contact".into(),
        change_type: change.into(),
        user_id: user.into(),
        external_userid: ext.into(),
        tag_id: String::new(),
        create_time: ct.into(),
    }
}

fn add(ext: &str, user: &str, owner: Option<&str>, code: Option<&str>) -> ContactChange {
    ContactChange::Added {
        external_userid: ext.into(),
        staff_userid: user.into(),
        owner: owner.map(Into::into),
        state: Some("qr1".into()),
        welcome_code: code.map(Into::into),
        via: None,
    }
}

async fn count(s: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(s.db())
        .await
        .unwrap()
}

#[tokio::test]
async fn add_creates_then_updates_and_logs_each_add_once() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    let k = key("add_external_contact", "zhangsan", "wmA", "100");
    let a = s
        .apply_wecom_callback(
            &k,
            &Value::Null,
            &add("wmA", "zhangsan", Some("sp1"), Some("W1")),
            t(0),
            t(0),
        )
        .await
        .unwrap();
    assert_eq!(a.outcome, "created");
    assert_eq!(a.contact_id.as_deref(), Some("wmA"));
    let c = s.contact("wmA").await.unwrap().unwrap();
    assert_eq!(c.owner.as_deref(), Some("sp1"));
    assert_eq!(c.wecom_external_userid.as_deref(), Some("wmA"));
    assert_eq!(c.attrs.get(ATTR_STAFF), Some(&Value::from("zhangsan")));
    assert_eq!(c.attrs.get(ATTR_STATE), Some(&Value::from("qr1")));
    assert!(!c.attrs.contains_key(ATTR_DELETED_BY));
    // The redelivery changes nothing.
    let again = s
        .apply_wecom_callback(
            &k,
            &Value::Null,
            &add("wmA", "zhangsan", Some("sp1"), Some("W1")),
            t(0),
            t(1),
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM event_log WHERE kind = 'contact_created'"
        )
        .await,
        1
    );
    // A later add (new CreateTime) of an existing contact logs again and
    // replaces the welcome code.
    sqlx::query("UPDATE wecom_welcome_codes SET used_at = 1")
        .execute(s.db())
        .await
        .unwrap();
    let k2 = key("add_external_contact", "lisi", "wmA", "200");
    let b = s
        .apply_wecom_callback(
            &k2,
            &Value::Null,
            &add("wmA", "lisi", None, Some("W2")),
            t(5),
            t(5),
        )
        .await
        .unwrap();
    assert_eq!(b.outcome, "updated");
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM event_log WHERE kind = 'contact_created'"
        )
        .await,
        2
    );
    assert_eq!(
            count(&s, "SELECT count(*) FROM wecom_welcome_codes WHERE welcome_code = 'W2' AND used_at IS NULL AND staff_userid = 'lisi'").await,
            1
        );
    // No matching salesperson: the owner is kept, the staff id recorded.
    let c = s.contact("wmA").await.unwrap().unwrap();
    assert_eq!(c.owner.as_deref(), Some("sp1"));
    assert_eq!(c.attrs.get(ATTR_STAFF), Some(&Value::from("lisi")));
}

#[tokio::test]
async fn delete_records_an_event_marks_and_keeps_last_active() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    s.apply_wecom_callback(
        &key("add_external_contact", "zhangsan", "wmB", "100"),
        &Value::Null,
        &add("wmB", "zhangsan", None, None),
        t(0),
        t(0),
    )
    .await
    .unwrap();
    // The customer deleted another staff member: recorded, not marked
    // (the relationship with zhangsan stands).
    let other = ContactChange::Deleted {
        external_userid: "wmB".into(),
        staff_userid: "wangwu".into(),
        by: DeletedBy::Customer,
        source: None,
    };
    let o = s
        .apply_wecom_callback(
            &key("del_follow_user", "wangwu", "wmB", "150"),
            &Value::Null,
            &other,
            t(1),
            t(1),
        )
        .await
        .unwrap();
    assert_eq!(o.outcome, "deleted_by_customer_other_staff");
    // zhangsan deleted the customer (del_external_contact): no
    // relationship stands any more.
    let del = ContactChange::Deleted {
        external_userid: "wmB".into(),
        staff_userid: "zhangsan".into(),
        by: DeletedBy::Staff,
        source: None,
    };
    let k = key("del_external_contact", "zhangsan", "wmB", "200");
    let d = s
        .apply_wecom_callback(&k, &Value::Null, &del, t(10), t(10))
        .await
        .unwrap();
    assert_eq!(d.outcome, "deleted_by_staff");
    let c = s.contact("wmB").await.unwrap().unwrap();
    assert_eq!(c.attrs.get(ATTR_DELETED_BY), Some(&Value::from("staff")));
    assert_eq!(c.last_active_at, None);
    assert_eq!(
            count(&s, "SELECT count(*) FROM events WHERE name = 'wecom_contact_deleted' AND json_extract(properties, '$.user_id') = 'zhangsan'").await,
            1
        );
    assert!(
        s.apply_wecom_callback(&k, &Value::Null, &del, t(10), t(11))
            .await
            .unwrap()
            .duplicate
    );
    assert_eq!(count(&s, "SELECT count(*) FROM events").await, 2);
    // Unknown contacts are recorded only.
    let u = s
        .apply_wecom_callback(
            &key("del_external_contact", "zhangsan", "nobody", "300"),
            &Value::Null,
            &ContactChange::Deleted {
                external_userid: "nobody".into(),
                staff_userid: "zhangsan".into(),
                by: DeletedBy::Staff,
                source: None,
            },
            t(20),
            t(20),
        )
        .await
        .unwrap();
    assert_eq!(u.outcome, "unknown_contact");
    assert_eq!(count(&s, "SELECT count(*) FROM contacts").await, 1);
    // A transfer moves the relationship: recorded with its source, not marked.
    s.apply_wecom_callback(
        &key("add_external_contact", "zhangsan", "wmC", "500"),
        &Value::Null,
        &add("wmC", "zhangsan", None, None),
        t(40),
        t(40),
    )
    .await
    .unwrap();
    let moved = s
        .apply_wecom_callback(
            &key("del_external_contact", "zhangsan", "wmC", "600"),
            &Value::Null,
            &ContactChange::Deleted {
                external_userid: "wmC".into(),
                staff_userid: "zhangsan".into(),
                by: DeletedBy::Staff,
                source: Some("DELETE_BY_TRANSFER".into()),
            },
            t(50),
            t(50),
        )
        .await
        .unwrap();
    assert_eq!(moved.outcome, "deleted_by_transfer");
    let c = s.contact("wmC").await.unwrap().unwrap();
    assert!(!c.attrs.contains_key(ATTR_DELETED_BY));
    assert_eq!(
            count(&s, "SELECT count(*) FROM events WHERE contact_id = 'wmC' AND json_extract(properties, '$.source') = 'DELETE_BY_TRANSFER'").await,
            1
        );
    // Re-adding clears the mark.
    s.apply_wecom_callback(
        &key("add_external_contact", "zhangsan", "wmB", "400"),
        &Value::Null,
        &add("wmB", "zhangsan", None, None),
        t(30),
        t(30),
    )
    .await
    .unwrap();
    let c = s.contact("wmB").await.unwrap().unwrap();
    assert!(!c.attrs.contains_key(ATTR_DELETED_BY));
}
