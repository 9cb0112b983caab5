//! Tests of loading workflow files, by construct.

use super::*;

mod loading {
    use super::*;

    fn entry_of(src: &str) -> Entry {
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        wf.unwrap().workflow.entry
    }

    #[test]
    fn per_salesperson_is_a_rate_on_assign_and_send() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: t, per_salesperson: 30/d }\n  - send: { channel: c, template: x, per_salesperson: 5/h }\n";
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        match (&wf.steps[0].action, &wf.steps[1].action) {
            (StepAction::Assign(a), StepAction::Send(s)) => {
                let a = a.per_salesperson.unwrap();
                assert_eq!(
                    (a.count, a.per.to_chrono()),
                    (30, chrono::TimeDelta::days(1))
                );
                assert_eq!(s.per_salesperson.unwrap().count, 5);
            }
            other => panic!("{other:?}"),
        }
        let (_, diags) = load_str(
            Path::new("w.yaml"),
            "trigger: { contact_created: {} }\nsteps:\n  - assign: { team: t, per_salesperson: lots }\n",
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].pos, Pos::new(3, 41));
        assert!(
            diags[0]
                .message
                .contains("per_salesperson \"lots\" must be a rate such as 30/d")
        );
    }

    #[test]
    fn staff_left_fires_on_the_wecom_staff_left_event() {
        use crate::store::plan_reads::LogEntry;
        for src in [
            "trigger: { staff_left: {} }\nsteps:\n  - wait: 1d\n",
            "trigger:\n  staff_left:\nsteps:\n  - wait: 1d\n",
        ] {
            let (wf, diags) = load_str(Path::new("w.yaml"), src);
            assert!(diags.is_empty(), "{diags:?}");
            let wf = wf.unwrap().workflow;
            assert_eq!(wf.trigger.kind(), "staff_left");
            let entry = |kind: &str, name: &str| LogEntry {
                seq: 1,
                kind: kind.into(),
                contact_id: "c1".into(),
                name: Some(name.into()),
                at: chrono::Utc::now(),
                origin: None,
                properties: Default::default(),
            };
            assert!(crate::engine::sources::fires(
                &wf,
                &entry("event", "wecom_staff_left")
            ));
            assert!(!crate::engine::sources::fires(
                &wf,
                &entry("event", "purchase")
            ));
            assert!(!crate::engine::sources::fires(
                &wf,
                &entry("tag_added", "wecom_staff_left")
            ));
        }
        let (_, diags) = load_str(
            Path::new("w.yaml"),
            "trigger: { staff_left: { who: lisi } }\nsteps:\n  - wait: 1d\n",
        );
        assert!(!diags.is_empty());
    }

    #[test]
    fn a_schedule_enters_on_every_tick_unless_told_otherwise() {
        let steps = "steps:\n  - wait: 1d\n";
        assert_eq!(
            entry_of(&format!(
                "trigger: {{ schedule: {{ cron: \"0 9 1 * *\" }} }}\n{steps}"
            )),
            Entry::EveryTime
        );
        assert_eq!(
            entry_of(&format!(
                "trigger: {{ schedule: {{ cron: \"0 9 1 * *\" }} }}\nentry: once\n{steps}"
            )),
            Entry::Once
        );
        assert_eq!(
            entry_of(&format!("trigger: {{ contact_created: {{}} }}\n{steps}")),
            Entry::Once
        );
    }
}

mod wait_until_tests {
    use super::*;

    const SRC: &str = r#"
name: cart
trigger: { event: { name: cart_abandoned } }
steps:
  - id: w
    wait_until:
      event: purchase
      where: { field: amount, gte: 100 }
      timeout: 3d
      then:
        - tag: { add: [bought] }
      else:
        - tag: { add: [nudged] }
        - tag: { add: [nudged-twice] }
  - id: after
    tag: { add: [done] }
"#;

    #[test]
    fn reads_an_event_wait_with_its_branches_and_their_ids() {
        let (wf, diags) = load_str(Path::new("w.yaml"), SRC);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        let StepAction::WaitUntil(w) = &wf.steps[0].action else {
            panic!("{:?}", wf.steps[0]);
        };
        assert_eq!(w.timeout.to_string(), "3d");
        match &w.until {
            WaitFor::Event { name, condition } => {
                assert_eq!(name, "purchase");
                assert!(condition.has_event_where());
            }
            other => panic!("{other:?}"),
        }
        let ids: Vec<&str> = wf.all_steps().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["w", "w.then.0", "w.else.0", "w.else.1", "after"]);
        // The end of either branch continues after the step.
        assert_eq!(wf.next_after("w.then.0").unwrap().id, "after");
        assert_eq!(wf.next_after("w.else.0").unwrap().id, "w.else.1");
        assert_eq!(wf.next_after("w.else.1").unwrap().id, "after");
    }

    #[test]
    fn reads_a_condition_wait() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - wait_until: { condition: { tag: vip }, timeout: 2h }\n";
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        let StepAction::WaitUntil(w) = &wf.steps[0].action else {
            panic!();
        };
        assert!(matches!(&w.until, WaitFor::Condition(Condition::Tag(t)) if t == "vip"));
        assert!(w.then.is_empty() && w.otherwise.is_empty());
    }

    fn errors(src: &str) -> Vec<String> {
        let (_, diags) = load_str(Path::new("w.yaml"), src);
        diags
            .iter()
            .map(|d| {
                format!(
                    "{}:{}: {}{}",
                    d.pos.line,
                    d.pos.col,
                    d.message,
                    d.suggestion
                        .as_deref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn reports_mistakes_where_they_are_written() {
        let head = "trigger: { contact_created: {} }\nsteps:\n";
        let e = errors(&format!(
            "{head}  - wait_until:\n      event: purchase\n      timout: 3d\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("5:7: unknown key \"timout\"") && m.contains("timeout")),
            "{e:?}"
        );
        // The misspelling says it all: no second error about the same key.
        assert!(!e.iter().any(|m| m.contains("needs timeout")), "{e:?}");
        let e = errors(&format!(
            "{head}  - wait_until:\n      event: purchase\n      then: []\n"
        ));
        assert_eq!(
            e,
            [
                "4:7: a wait_until step needs timeout: DURATION (the enrollment takes else: once the timeout passes, e.g. timeout: 3d)"
            ]
        );
        let e = errors(&format!("{head}  - wait_until: {{ timeout: 3d }}\n"));
        assert!(
            e.iter()
                .any(|m| m.contains("needs event: NAME or condition")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{head}  - wait_until: {{ event: a, condition: {{ tag: b }}, timeout: 1d }}\n"
        ));
        assert!(e.iter().any(|m| m.contains("not both")), "{e:?}");
        let e = errors(&format!(
            "{head}  - wait_until: {{ event: a, timeout: 1d }}\n    then: []\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("4:5:") && m.contains("goes inside it")),
            "{e:?}"
        );
        let e = errors(&format!(
            "{head}  - wait_until: {{ event: a, timeout: 0s }}\n"
        ));
        assert!(e.iter().any(|m| m.contains("longer than 0")), "{e:?}");
    }
}

mod set_notify_tests {
    use super::*;

    #[test]
    fn reads_set_values_by_their_yaml_type_and_notify() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - set: { a: text, b: 12, c: 1.5, d: true, e: null, f: \"{{contact.name}}\", g: \"12\" }\n  - notify: wecom\n  - notify: { channel: sms, template: t }\n";
        let (wf, diags) = load_str(Path::new("w.yaml"), src);
        assert!(diags.is_empty(), "{diags:?}");
        let wf = wf.unwrap().workflow;
        let StepAction::Set(st) = &wf.steps[0].action else {
            panic!();
        };
        let got: Vec<(&str, &SetValue)> = st
            .values
            .iter()
            .map(|(k, v)| (k.value.as_str(), v))
            .collect();
        use serde_json::json;
        assert_eq!(
            got,
            vec![
                ("a", &SetValue::Literal(json!("text"))),
                ("b", &SetValue::Literal(json!(12))),
                ("c", &SetValue::Literal(json!(1.5))),
                ("d", &SetValue::Literal(json!(true))),
                ("e", &SetValue::Literal(json!(null))),
                ("f", &SetValue::Template("{{contact.name}}".into())),
                ("g", &SetValue::Literal(json!("12"))),
            ]
        );
        assert!(
            matches!(&wf.steps[1].action, StepAction::Notify(n) if n.channel.value == "wecom" && n.template.is_none())
        );
        assert!(
            matches!(&wf.steps[2].action, StepAction::Notify(n) if n.template.as_ref().unwrap().value == "t")
        );
    }

    #[test]
    fn a_broken_template_value_is_reported_where_it_is() {
        let src = "trigger: { contact_created: {} }\nsteps:\n  - set: { a: \"{{#if x}}\" }\n";
        let (_, diags) = load_str(Path::new("w.yaml"), src);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].pos.line, diags[0].pos.col), (3, 15));
        assert!(diags[0].message.contains("not a valid template"));
    }
}

/// Every "X needs KEY" goes through one helper: a missing required key is
/// reported once, where its map is, with its example; a misspelt one only
/// as the misspelling (with a did-you-mean).
mod required_keys {
    use super::*;

    fn messages(src: &str) -> Vec<String> {
        let (_, diags) = load_str(Path::new("w.yaml"), src);
        diags
            .iter()
            .map(|d| format!("{}:{}: {}", d.pos.line, d.pos.col, d.message))
            .collect()
    }

    const STEPS: &str = "steps:\n  - tag: { add: [a] }\n";

    #[test]
    fn a_missing_key_is_reported_at_its_map() {
        let cases = [
            (
                "trigger: { event: {} }\n",
                "1:19: the event trigger needs \"name\"",
            ),
            (
                "trigger: { tag_added: {} }\n",
                "1:23: tag_added needs \"tag\"",
            ),
            (
                "trigger: { inactive: {} }\n",
                "1:22: inactive needs \"for\"",
            ),
            (
                "trigger: { schedule: {} }\n",
                "1:22: schedule needs \"cron\"",
            ),
            (
                "trigger: { date: { at: \"10:00\" } }\n",
                "1:18: the date trigger needs field:",
            ),
        ];
        for (trigger, want) in cases {
            let m = messages(&format!("{trigger}{STEPS}"));
            assert_eq!(m.len(), 1, "{trigger}: {m:?}");
            assert!(m[0].starts_with(want), "{trigger}: {m:?}");
        }
        let m = messages("trigger: { contact_created: {} }\nsteps:\n  - send: { channel: sms }\n");
        assert_eq!(m, ["3:11: a send step needs \"template\""]);
        let m = messages("trigger: { contact_created: {} }\nsteps:\n  - split: {}\n");
        assert_eq!(m, ["3:12: a split step needs arms: [...]"]);
    }

    #[test]
    fn a_misspelt_key_is_reported_once_as_the_misspelling() {
        let cases = [
            ("trigger: { event: { nmae: buy } }\n", "nmae"),
            ("trigger: { tag_added: { tga: vip } }\n", "tga"),
            ("trigger: { date: { feild: birthday } }\n", "feild"),
            (
                "trigger: { contact_created: {} }\nsteps:\n  - send: { chanel: sms, template: t }\n",
                "chanel",
            ),
            (
                "trigger: { contact_created: {} }\nsteps:\n  - split: { arm: [] }\n",
                "arm",
            ),
        ];
        for (src, key) in cases {
            let src = if src.contains("steps:") {
                src.to_string()
            } else {
                format!("{src}{STEPS}")
            };
            let m = messages(&src);
            assert_eq!(m.len(), 1, "{src}: {m:?}");
            assert!(m[0].contains(&format!("unknown key \"{key}\"")), "{m:?}");
        }
    }
}
