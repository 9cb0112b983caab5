//! Tests of the shared pieces of a pass, against a real (in-memory) store.

use super::*;
use crate::engine::gates::Gates;
use crate::settings::Settings;
use crate::store::ContactInput;
use crate::template::Templates;
use chrono::TimeZone;

const WF: &str = r#"
name: w
trigger: { contact_created: {} }
steps:
  - id: pause
    wait: 2s
  - id: hello
    tag: { add: [greeted] }
"#;

/// A contact created after the pass began (the daemon reads the log last in
/// its pass) waits from its creation: its wait never ends early.
#[tokio::test]
async fn an_entry_after_the_pass_began_counts_its_waits_from_the_entry() {
    let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let store = Store::open("sqlite::memory:").await.unwrap();
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
    let entries = store.pending_log(0, 10).await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].at, created);

    let settings =
        Settings::parse_str(std::path::Path::new("nurture.yaml"), "timezone: UTC\n").unwrap();
    let templates = Templates::empty();
    let (wf, d) = crate::workflow::load_str(std::path::Path::new("w.yaml"), WF);
    assert!(d.is_empty(), "{d:?}");
    let wf = wf.unwrap().workflow;
    let mut planner = Planner::new(&settings, &templates, t0, Default::default());
    planner.gates = Gates {
        states: store.workflow_states().await.unwrap(),
        unrecorded: None,
    };
    let decided = plan_log_batch(
        &store,
        &[&wf],
        &entries,
        &mut planner,
        &mut HashSet::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(
        decided[0].plan.steps[0].action,
        Action::Wait {
            until: created + chrono::TimeDelta::seconds(2)
        }
    );
    // The pass's own clock is unchanged for what it plans next.
    assert_eq!(planner.now, t0);
}
