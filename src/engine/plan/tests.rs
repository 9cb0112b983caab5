//! Tests of the planner, by construct.

use super::*;

mod wait_until_tests {
    use super::*;
    use crate::contact::EventFact;
    use chrono::TimeZone;

    const WF: &str = r#"
name: cart
trigger: { event: { name: cart_abandoned } }
steps:
  - id: w
    wait_until:
      event: purchase
      where: { field: item, equals: scarf }
      timeout: 1d
      then:
        - tag: { add: [bought] }
      else:
        - tag: { add: [nudged] }
  - id: after
    tag: { add: [done] }
"#;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::hours(h)
    }

    fn purchase(at: DateTime<Utc>, item: &str) -> EventFact {
        EventFact {
            name: "purchase".into(),
            at,
            properties: serde_json::json!({ "item": item })
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    fn run(
        contact: &Contact,
        now: DateTime<Utc>,
        start: StartAt<'_>,
        trigger: Option<&TriggerEvent>,
    ) -> EnrollmentPlan {
        let settings =
            Settings::parse_str(std::path::Path::new("nurture.yaml"), "timezone: UTC\n").unwrap();
        let templates = Templates::empty();
        let (wf, d) = crate::workflow::load_str(std::path::Path::new("w.yaml"), WF);
        assert!(d.is_empty(), "{d:?}");
        let wf = wf.unwrap().workflow;
        let mut p = Planner::new(&settings, &templates, now, Default::default());
        p.plan(&wf, contact, start, 0, trigger)
    }

    fn steps(p: &EnrollmentPlan) -> Vec<(String, &'static str)> {
        p.steps
            .iter()
            .map(|s| (s.step.clone(), s.action.name()))
            .collect()
    }

    fn contact(events: Vec<EventFact>) -> Contact {
        Contact {
            id: "c1".into(),
            events,
            ..Default::default()
        }
    }

    #[test]
    fn arriving_waits_until_the_timeout_and_nothing_before_counts() {
        // A purchase before the cart was abandoned does not end the wait.
        let c = contact(vec![purchase(t(-1), "scarf")]);
        let trigger = TriggerEvent {
            name: "cart_abandoned".into(),
            at: t(0),
            properties: Default::default(),
        };
        let p = run(&c, t(0), StartAt::First { since: t(0) }, Some(&trigger));
        assert_eq!(steps(&p), [("w".to_string(), "wait")]);
        let ws = t(0) + chrono::TimeDelta::milliseconds(1);
        assert_eq!(
            p.outcome,
            Outcome::Waiting {
                next_step: Some("w".into()),
                until: ws + chrono::TimeDelta::days(1),
                wait_since: Some(ws),
            }
        );
    }

    #[test]
    fn the_event_takes_then_and_the_timeout_takes_else() {
        let start = |ws| StartAt::Step {
            id: "w",
            since: t(0),
            waiting_since: Some(ws),
        };
        // The scarf is bought an hour into the wait: then, at once.
        let c = contact(vec![purchase(t(1), "scarf")]);
        let p = run(&c, t(1), start(t(0)), None);
        assert_eq!(
            steps(&p),
            [
                ("w.then".to_string(), "wait_until"),
                ("w.then.0".into(), "tag"),
                ("after".into(), "tag")
            ]
        );
        assert!(
            matches!(&p.steps[0].action, Action::WaitEnded { met: true, why } if why.starts_with("event purchase at 2030-01-01T01:00:00"))
        );
        assert_eq!(p.outcome, Outcome::Done);
        // A hat does not pass where:, woken early it waits on, writing nothing.
        let c = contact(vec![purchase(t(1), "hat")]);
        let p = run(&c, t(1), start(t(0)), None);
        assert!(p.steps.is_empty());
        assert!(
            matches!(p.outcome, Outcome::Waiting { until, wait_since: Some(ws), .. } if until == t(24) && ws == t(0))
        );
        // At the deadline: else.
        let p = run(&c, t(24), start(t(0)), None);
        assert_eq!(
            steps(&p),
            [
                ("w.else".to_string(), "wait_until"),
                ("w.else.0".into(), "tag"),
                ("after".into(), "tag")
            ]
        );
        assert!(
            matches!(&p.steps[0].action, Action::WaitEnded { met: false, why } if why == "timeout 1d")
        );
        // A purchase after the deadline is too late too.
        let c = contact(vec![purchase(t(25), "scarf")]);
        let p = run(&c, t(25), start(t(0)), None);
        assert_eq!(p.steps[0].step, "w.else");
    }
}
