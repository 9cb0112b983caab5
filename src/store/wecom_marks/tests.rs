use super::*;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
}

#[tokio::test]
async fn the_latest_intent_wins_and_outcomes_respect_generations() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    sqlx::query("INSERT INTO contacts (id, wecom_external_userid, created_at, updated_at) VALUES ('c1', 'wm1', 1, 1), ('c2', NULL, 1, 1)")
            .execute(s.db())
            .await
            .unwrap();
    let ch = vec!["wecom".to_string()];
    let mut conn = s.db().acquire().await.unwrap();
    let n = queue(&mut conn, &ch, "c1", &["vip".into()], &[], to_ms(t(0)))
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Not mirrored from WeCom: nothing queued.
    let n = queue(&mut conn, &ch, "c2", &["vip".into()], &[], to_ms(t(0)))
        .await
        .unwrap();
    assert_eq!(n, 0);
    drop(conn);
    let claimed = s.claim_wecom_tag_marks(t(1), t(60), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].action, MarkAction::Add);
    assert!(
        s.claim_wecom_tag_marks(t(2), t(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A remove arrives while the add is in WeCom's hands.
    let mut conn = s.db().acquire().await.unwrap();
    queue(&mut conn, &ch, "c1", &[], &["vip".into()], to_ms(t(3)))
        .await
        .unwrap();
    let (adding, removing) = in_flight(&mut conn, "c1", to_ms(t(0))).await.unwrap();
    assert!(adding.is_empty() && removing.contains("vip"));
    drop(conn);
    let wrote = s
        .finish_wecom_tag_mark(
            &claimed[0],
            &MarkOutcome::Done {
                marked: vec!["zhangsan".into()],
            },
            t(4),
        )
        .await
        .unwrap();
    assert!(!wrote, "a newer intent is pending");
    let again = s.claim_wecom_tag_marks(t(5), t(60), 10).await.unwrap();
    assert_eq!(again[0].action, MarkAction::Remove);
    assert!(
        s.finish_wecom_tag_mark(
            &again[0],
            &MarkOutcome::Done {
                marked: vec!["zhangsan".into()]
            },
            t(6)
        )
        .await
        .unwrap()
    );
    let mut conn = s.db().acquire().await.unwrap();
    // Done after the read was asked for: still counts; done before: not.
    let (_, removing) = in_flight(&mut conn, "c1", to_ms(t(6))).await.unwrap();
    assert!(removing.contains("vip"));
    let (_, removing) = in_flight(&mut conn, "c1", to_ms(t(7))).await.unwrap();
    assert!(removing.is_empty());
    drop(conn);
    assert_eq!(s.next_wecom_tag_mark_at().await.unwrap(), None);
}

#[tokio::test]
async fn corp_tag_cache() {
    let s = Store::open("sqlite::memory:").await.unwrap();
    let tag = |id: &str, name: &str, g: &str| CorpTag {
        tag_id: id.into(),
        name: name.into(),
        group_id: format!("g-{g}"),
        group_name: g.into(),
    };
    s.replace_wecom_corp_tags(
        "w",
        &[tag("t1", "vip", "Level"), tag("t2", "lead", "nurture")],
        t(0),
    )
    .await
    .unwrap();
    s.add_wecom_corp_tags("w", &[tag("t3", "vip", "nurture")], t(1))
        .await
        .unwrap();
    assert_eq!(s.wecom_corp_tags_named("w", "vip").await.unwrap().len(), 2);
    assert_eq!(
        s.wecom_corp_tag_group("w", "nurture")
            .await
            .unwrap()
            .as_deref(),
        Some("g-nurture")
    );
    s.forget_wecom_corp_tag("w", "t1").await.unwrap();
    assert_eq!(s.wecom_corp_tags_named("w", "vip").await.unwrap().len(), 1);
    assert!(
        s.wecom_corp_tags_named("other", "vip")
            .await
            .unwrap()
            .is_empty()
    );
}
