#[tokio::test]
async fn the_wecom_clock_follows_a_paused_tokio_clock() {
    let before = super::now_ms();
    assert!((before - crate::store::to_ms(chrono::Utc::now())).abs() < 1_000);
    tokio::time::pause();
    let paused = super::now_ms();
    tokio::time::advance(std::time::Duration::from_secs(3_600)).await;
    let later = super::now_ms();
    assert!(
        (later - paused - 3_600_000).abs() < 1_000,
        "{paused} → {later}"
    );
    tokio::time::resume();
    // Running again, still an hour ahead of the system time.
    assert!(super::now_ms() - crate::store::to_ms(chrono::Utc::now()) >= 3_599_000);
}
