//! Tests of the model's decisions: split arms, goals, date triggers, windows.

use super::*;

mod split_tests {
    use super::*;

    fn split(weights: &[u32]) -> SplitStep {
        SplitStep {
            arms: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Arm {
                    name: Located::new(format!("arm{i}"), Pos::new(1, 1)),
                    weight: *w,
                    steps: vec![],
                })
                .collect(),
        }
    }

    fn wf(holdout: Option<u32>) -> Workflow {
        Workflow {
            name: "ab".into(),
            description: None,
            enabled: true,
            trigger: Trigger::ContactCreated { via: None },
            audience: None,
            entry: Entry::Once,
            steps: vec![],
            exit_when: None,
            entry_existing: false,
            holdout,
            goal: None,
            exit_on_goal: true,
            throttle: None,
            file: PathBuf::from("ab.yaml"),
        }
    }

    /// Over 10,000 contacts each arm's share is within 1.5 points of its weight.
    #[test]
    fn arms_take_their_weights_over_ten_thousand_contacts() {
        for weights in [&[50, 50][..], &[10, 30, 60], &[1, 1, 1, 1], &[95, 5]] {
            let sp = split(weights);
            let w = wf(None);
            let mut counts = vec![0u32; weights.len()];
            for i in 0..10_000 {
                let arm = w.arm(&sp, "offer", &format!("c{i:07}"));
                let k: usize = arm.name.value[3..].parse().unwrap();
                counts[k] += 1;
            }
            let total: u32 = weights.iter().sum();
            for (k, n) in counts.iter().enumerate() {
                let want = f64::from(weights[k]) / f64::from(total);
                let got = f64::from(*n) / 10_000.0;
                assert!(
                    (got - want).abs() < 0.015,
                    "weights {weights:?}: arm {k} got {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn the_arm_is_stable_and_depends_on_workflow_contact_and_split() {
        let sp = split(&[50, 50]);
        let w = wf(None);
        // The same answer every time (re-entry, dry-run, daemon, another machine).
        let first: Vec<String> = (0..200)
            .map(|i| w.arm(&sp, "offer", &format!("c{i}")).name.value.clone())
            .collect();
        let again: Vec<String> = (0..200)
            .map(|i| w.arm(&sp, "offer", &format!("c{i}")).name.value.clone())
            .collect();
        assert_eq!(first, again);
        // Pinned values: a change of the hash would move running tests' contacts.
        assert_eq!(
            stable_hash(&["ab", "c1", "offer"]),
            0x615e_e21b_9b29_2e5a_u64
        );
        // Another split in the same workflow is independent of the first.
        let other: Vec<String> = (0..200)
            .map(|i| w.arm(&sp, "second", &format!("c{i}")).name.value.clone())
            .collect();
        let same = first.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!((60..140).contains(&same), "{same} of 200 agree");
    }

    #[test]
    fn the_holdout_takes_its_share() {
        let w = wf(Some(1000));
        let held = (0..10_000)
            .filter(|i| w.held_out(&format!("c{i:07}")))
            .count();
        assert!((850..1150).contains(&held), "{held}");
        assert!((0..1000).all(|i| !wf(None).held_out(&format!("c{i}"))));
    }
}

mod goal_tests {
    use chrono::{TimeZone, Utc};

    #[test]
    fn an_event_goal_counts_events_inside_the_window_only() {
        let (wf, d) = crate::workflow::load_str(
            std::path::Path::new("g.yaml"),
            "trigger: { contact_created: {} }\ngoal: { event: purchase, where: { field: item, equals: scarf }, within: 1d }\nsteps:\n  - wait: 1h\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let wf = wf.unwrap().workflow;
        let g = wf.goal.as_ref().unwrap();
        assert!(wf.exit_on_goal);
        let t = |h: i64| {
            Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::hours(h)
        };
        let ev = |h: i64, item: &str| crate::contact::EventFact {
            name: "purchase".into(),
            at: t(h),
            properties: serde_json::json!({ "item": item })
                .as_object()
                .unwrap()
                .clone(),
        };
        let c = |events| crate::contact::Contact {
            id: "c".into(),
            events,
            ..Default::default()
        };
        // Before entering, after the window, or another item: no.
        let none = c(vec![ev(-1, "scarf"), ev(25, "scarf"), ev(2, "hat")]);
        assert_eq!(g.converted_at(&none, t(30), t(0)), None);
        // The first one inside the window.
        let two = c(vec![ev(5, "scarf"), ev(3, "scarf")]);
        assert_eq!(g.converted_at(&two, t(30), t(0)), Some(t(3)));
        // Not yet happened as of now.
        assert_eq!(g.converted_at(&two, t(2), t(0)), None);
    }
}

mod date_trigger_tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn trigger(src: &str) -> super::DateTrigger {
        let (wf, d) = crate::workflow::load_str(
            std::path::Path::new("d.yaml"),
            &format!("trigger: {{ date: {src} }}\nsteps:\n  - wait: 1d\n"),
        );
        assert!(d.is_empty(), "{d:?}");
        match wf.unwrap().workflow.trigger {
            super::Trigger::Date(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_birthday_fires_at_the_local_time_of_the_contact() {
        let t = trigger("{ field: birthday, offset: -1d, at: \"10:00\" }");
        let sh = chrono_tz::Asia::Shanghai;
        let ny = chrono_tz::America::New_York;
        let v = json!("1990-06-15");
        // 10:00 in Shanghai on the 14th is 02:00 UTC.
        let at = |y, m, d, h, mi| Utc.with_ymd_and_hms(y, m, d, h, mi, 0).unwrap();
        assert_eq!(t.due(&v, sh, at(2030, 6, 14, 1, 59)), None);
        let (day, when) = t.due(&v, sh, at(2030, 6, 14, 2, 0)).unwrap();
        assert_eq!(day.to_string(), "2030-06-14");
        assert_eq!(when, at(2030, 6, 14, 2, 0));
        // Still due later that day (a daemon that was down), not a day later.
        assert!(t.due(&v, sh, at(2030, 6, 15, 1, 0)).is_some());
        assert_eq!(t.due(&v, sh, at(2030, 6, 15, 2, 1)), None);
        // In New York it is 10:00 EDT = 14:00 UTC.
        assert_eq!(t.due(&v, ny, at(2030, 6, 14, 13, 59)), None);
        assert!(t.due(&v, ny, at(2030, 6, 14, 14, 0)).is_some());
        // A timestamp is taken on its date in the contact's zone: 1990-06-14T20:00Z
        // is the 15th in Shanghai.
        let ts = json!("1990-06-14T20:00:00Z");
        assert!(t.due(&ts, sh, at(2030, 6, 14, 2, 0)).is_some());
        // Not a date: never.
        assert_eq!(t.due(&json!("soon"), sh, at(2030, 6, 14, 2, 0)), None);
        assert_eq!(t.due(&json!(19900615), sh, at(2030, 6, 14, 2, 0)), None);
    }

    #[test]
    fn a_29_february_birthday_falls_on_the_28th_in_common_years() {
        let t = trigger("{ field: birthday, at: \"09:00\" }");
        let utc = chrono_tz::UTC;
        let v = json!("2000-02-29");
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 9, 30, 0).unwrap();
        assert_eq!(
            t.due(&v, utc, at(2031, 2, 28)).unwrap().0.to_string(),
            "2031-02-28"
        );
        assert_eq!(t.due(&v, utc, at(2031, 3, 1)), None);
        assert_eq!(t.due(&v, utc, at(2032, 2, 28)), None);
        assert_eq!(
            t.due(&v, utc, at(2032, 2, 29)).unwrap().0.to_string(),
            "2032-02-29"
        );
    }

    /// A date at the calendar's end, or a century's offset, is never due
    /// rather than a panic in the date arithmetic.
    #[test]
    fn dates_at_the_calendars_ends_are_never_due() {
        let now = Utc.with_ymd_and_hms(2030, 6, 17, 11, 0, 0).unwrap();
        for src in [
            "{ field: b, offset: 36600d, every: once }",
            "{ field: b, offset: -36600d, every: once }",
            "{ field: b, offset: 36600d }",
            "{ field: b, offset: -36600d }",
            // Late in the day west of UTC: the moment falls past the
            // calendar's end, and the clock-change retry an hour later too.
            "{ field: b, every: once, at: \"23:30\" }",
            "{ field: b, every: once, at: \"00:30\" }",
        ] {
            let t = trigger(src);
            for tz in [
                chrono_tz::UTC,
                chrono_tz::America::New_York,
                chrono_tz::Pacific::Kiritimati,
            ] {
                for v in ["+262142-12-31", "-262143-01-01", "9999-12-31", "0000-01-01"] {
                    assert_eq!(t.due(&json!(v), tz, now), None, "{src} {v} {tz}");
                }
            }
        }
    }

    #[test]
    fn once_fires_for_the_date_itself_only() {
        let t = trigger("{ field: renewal_at, offset: -3d, at: \"10:00\", every: once }");
        let utc = chrono_tz::UTC;
        let v = json!("2030-06-20");
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 11, 0, 0).unwrap();
        assert_eq!(
            t.due(&v, utc, at(2030, 6, 17)).unwrap().0.to_string(),
            "2030-06-17"
        );
        assert_eq!(t.due(&v, utc, at(2031, 6, 17)), None);
    }

    #[test]
    fn validate_reads_offsets_and_refuses_mistakes() {
        for (src, want) in [
            ("{ field: b, offset: 36h }", "must be whole days"),
            ("{ field: b, offset: -36601d }", "within a century"),
            ("{ field: b, offset: 99999999999d }", "within a century"),
            ("{ field: b, at: \"25:00\" }", "must be a time HH:MM"),
            ("{ field: b, every: yaer }", "did you mean \"year\"?"),
            ("{ offset: 1d }", "needs field:"),
        ] {
            let (_, d) = crate::workflow::load_str(
                std::path::Path::new("d.yaml"),
                &format!("trigger: {{ date: {src} }}\nsteps:\n  - wait: 1d\n"),
            );
            let all: String = d
                .iter()
                .map(|x| format!("{} {}", x.message, x.suggestion.clone().unwrap_or_default()))
                .collect();
            assert!(all.contains(want), "{src}: {all}");
        }
    }
}

mod window_tests {
    use super::*;
    use chrono::{NaiveTime, TimeZone, Utc, Weekday};

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn a_weekday_window_in_the_contacts_zone() {
        let w = Window {
            from: t(10, 0),
            to: t(12, 0),
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            on: vec![],
        };
        let sh = chrono_tz::Asia::Shanghai;
        // Friday 2030-06-14 11:59 Shanghai is inside; 12:00 is not.
        let at = |d, h, m| {
            sh.with_ymd_and_hms(2030, 6, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert!(w.contains(at(14, 11, 59), sh));
        assert!(!w.contains(at(14, 12, 0), sh));
        assert!(w.contains(at(14, 10, 0), sh));
        // Friday after noon: next opening Monday 10:00.
        assert_eq!(w.next_open(at(14, 12, 0), sh), at(17, 10, 0));
        // Saturday: Monday. Monday 09:00: that morning.
        assert_eq!(w.next_open(at(15, 9, 0), sh), at(17, 10, 0));
        assert_eq!(w.next_open(at(17, 9, 0), sh), at(17, 10, 0));
        // The same instant is Friday 22:00 in New York: outside.
        let ny = chrono_tz::America::New_York;
        assert!(!w.contains(at(15, 10, 0), ny));
    }

    #[test]
    fn a_window_on_calendar_days() {
        let w = Window {
            from: t(10, 0),
            to: t(22, 0),
            days: vec![],
            on: vec!["双11".into(), "618".into()],
        };
        let sh = chrono_tz::Asia::Shanghai;
        let at = |m, d, h| {
            sh.with_ymd_and_hms(2030, m, d, h, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert!(w.contains(at(11, 11, 12), sh));
        assert!(!w.contains(at(11, 12, 12), sh));
        assert_eq!(w.next_open(at(7, 1, 9), sh), at(11, 11, 10));
        let next_618 = sh
            .with_ymd_and_hms(2031, 6, 18, 10, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(w.next_open(at(11, 11, 23), sh), next_618);
    }

    #[test]
    fn send_at_is_the_next_such_local_time() {
        let sh = chrono_tz::Asia::Shanghai;
        let at = |d, h, m| {
            sh.with_ymd_and_hms(2030, 6, d, h, m, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(next_local_time(t(10, 0), at(14, 9, 0), sh), at(14, 10, 0));
        assert_eq!(next_local_time(t(10, 0), at(14, 10, 0), sh), at(14, 10, 0));
        assert_eq!(next_local_time(t(10, 0), at(14, 10, 1), sh), at(15, 10, 0));
        // A DST gap: 02:30 does not exist in New York on 2030-03-10; the hour after.
        let ny = chrono_tz::America::New_York;
        let before = ny
            .with_ymd_and_hms(2030, 3, 10, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let got = next_local_time(t(2, 30), before, ny).with_timezone(&ny);
        assert_eq!(got.format("%Y-%m-%d %H:%M").to_string(), "2030-03-10 03:30");
    }
}
