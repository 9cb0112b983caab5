//! Tests of the daemon's pass against a real (in-memory) store.

use super::*;
use crate::store::ContactInput;
use chrono::Timelike;

/// A contact created after a pass began (the pass reads the log after its
/// due steps) waits from its creation: its wait never ends early. Found as
/// a flaky `daemon::waits_and_branches` ("sent 1.944 s after", `wait: 2s`).
#[tokio::test]
async fn a_contact_created_after_the_pass_began_waits_from_its_creation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nurture.yaml"), "timezone: UTC\n").unwrap();
    std::fs::create_dir(dir.path().join("workflows")).unwrap();
    std::fs::write(
        dir.path().join("workflows/w.yaml"),
        "name: w\ntrigger: { contact_created: {} }\nsteps:\n  - id: pause\n    wait: 2s\n  - id: hello\n    tag: { add: [greeted] }\n",
    )
    .unwrap();
    let project = Arc::new(Project::load_strict(&dir.path().join("nurture.yaml")).unwrap());
    let store = Store::open("sqlite::memory:").await.unwrap();
    // In the past: the daemon plans an entry no later than its wall clock.
    let t0 = (Utc::now() - chrono::TimeDelta::minutes(1))
        .with_nanosecond(0)
        .unwrap();
    store
        .activate_workflows(&["w"], t0 - chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    let created = t0 + chrono::TimeDelta::milliseconds(300);
    let input = ContactInput {
        id: "c1".into(),
        ..Default::default()
    };
    store.upsert_contact(&input, created).await.unwrap();

    let (_keep, project_rx) = watch::channel(project.clone());
    let scheduler = Scheduler {
        store: store.clone(),
        handoff: None,
        project: project_rx,
        wake: Arc::new(Notify::new()),
        deliver: Arc::new(Notify::new()),
        marks_queued: Default::default(),
        shutdown: CancellationToken::new(),
        until_idle: None,
        worker: "test".into(),
        lease: StdDuration::from_secs(30),
    };
    let pass = scheduler.pass(&project, t0).await.unwrap();
    assert_eq!(pass.plans, 1, "{pass:?}");
    let rows = store
        .enrollments_of_many(&["c1".to_string()])
        .await
        .unwrap();
    let e = &rows["c1"][0];
    assert_eq!(e.step_id.as_deref(), Some("hello"), "{e:?}");
    assert_eq!(
        e.next_run_at,
        Some(created + chrono::TimeDelta::seconds(2)),
        "{e:?}"
    );
}
