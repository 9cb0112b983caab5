use super::*;
use crate::store::Store;

fn follow(userid: &str, added: i64) -> FollowUser {
    FollowUser {
        userid: userid.into(),
        added_at: Some(added),
        state: None,
        remark: None,
    }
}

#[tokio::test]
async fn many_stand_at_once_as_one_by_one() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    let mut tx = s.begin().await.unwrap();
    // lilei's relationship with wm1 ended; wm2 is new.
    stands(&mut tx, "wm1", &follow("wangfang", 1), "get", 1)
        .await
        .unwrap();
    ended(&mut tx, "wm1", "lilei", ENDED_BY_CUSTOMER, 2, "callback", 2)
        .await
        .unwrap();
    let entries = vec![
        ("wm1".to_string(), follow("wangfang", 1)),
        ("wm1".to_string(), follow("lilei", 3)),
        ("wm2".to_string(), follow("chenjie", 4)),
        // Listed twice: counted once, the last listing kept.
        ("wm2".to_string(), follow("chenjie", 5)),
    ];
    let added = stand_many(&mut tx, &entries, "batch", 9).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(added, 2, "lilei stands again, chenjie is new");
    let one = of_customer(s.db(), "wm1").await.unwrap();
    assert!(
        one.iter().all(|r| r.standing && r.ended_by.is_none()),
        "{one:?}"
    );
    let two = of_customer(s.db(), "wm2").await.unwrap();
    assert_eq!(two.len(), 1);
    assert_eq!(two[0].added_at, Some(5));
}

#[tokio::test]
async fn a_synced_page_makes_its_customers_reachable_again() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    for (id, ext) in [("c1", "wm1"), ("c2", "wm2")] {
        let input = crate::store::contacts::ContactInput {
            id: id.into(),
            wecom_external_userid: Some(ext.into()),
            ..Default::default()
        };
        s.upsert_contact(&input, chrono::Utc::now()).await.unwrap();
    }
    sqlx::query(
        "UPDATE contacts SET attrs = '{\"wecom_deleted_by\":\"customer\",\"city\":\"Suzhou\"}'",
    )
    .execute(s.db())
    .await
    .unwrap();
    record_batch(&s, &[("wm1".to_string(), follow("lilei", 1))], 7)
        .await
        .unwrap();
    let attrs: Vec<(String, String)> = sqlx::query_as("SELECT id, attrs FROM contacts ORDER BY id")
        .fetch_all(s.db())
        .await
        .unwrap();
    assert_eq!(attrs[0].1, r#"{"city":"Suzhou"}"#);
    assert!(attrs[1].1.contains("wecom_deleted_by"), "not listed: kept");
}

/// `nurture wecom sync-relationships` records pages of 100: 3,000
/// relationships (1,000 contacts' customers × 3 members), on a SQLite file.
/// Run: `cargo test --lib relationships::tests::sync_speed -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn sync_speed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.db").display());
    let s = Store::open(&url).await.unwrap();
    for c in 0..1_000 {
        let input = crate::store::contacts::ContactInput {
            id: format!("c{c:05}"),
            wecom_external_userid: Some(format!("wm{c:05}")),
            ..Default::default()
        };
        s.upsert_contact(&input, chrono::Utc::now()).await.unwrap();
    }
    let entries: Vec<(String, FollowUser)> = (0..1_000)
        .flat_map(|c| {
            ["wangfang", "lilei", "chenjie"]
                .into_iter()
                .map(move |u| (format!("wm{c:05}"), follow(u, 1_000 + c)))
        })
        .collect();
    for round in ["first", "again"] {
        let t = std::time::Instant::now();
        for page in entries.chunks(100) {
            record_batch(&s, page, 5_000).await.unwrap();
        }
        eprintln!(
            "record_batch, {round}: {} relationships in {:?}",
            entries.len(),
            t.elapsed()
        );
    }
}
