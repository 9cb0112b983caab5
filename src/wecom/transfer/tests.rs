use super::*;

#[test]
fn held_transfers_say_which_limit_and_when_it_frees_up() {
    let now = 1_000 * DAY_MS;
    // One 10 days ago, one 2 h ago still waiting: the 24 h first? No:
    // two in 90 days refuse it, until the older is 90 days old.
    let started = [(now - 10 * DAY_MS, false), (now - 2 * 3_600_000, true)];
    let h = held_by_limits(&started, None, now).unwrap();
    assert_eq!(h.limit, Limit::TwoPer90Days);
    assert_eq!(h.frees_at, Some(now + 80 * DAY_MS));
    assert!(h.reason.contains("possible again from"), "{}", h.reason);
    // One waiting, started 2 h ago: deferred to its takeover.
    let h = held_by_limits(&started[1..], None, now).unwrap();
    assert_eq!(h.limit, Limit::TakeoverPending);
    assert_eq!(h.frees_at, Some(now + 22 * 3_600_000));
    // Taken over (or 24 h passed): free.
    assert_eq!(
        held_by_limits(&[(now - 2 * 3_600_000, false)], None, now),
        None
    );
    assert_eq!(
        held_by_limits(&[(now - 25 * 3_600_000, true)], None, now),
        None
    );
    // Out of the window: free.
    assert_eq!(
        held_by_limits(
            &[(now - 91 * DAY_MS, false), (now - DAY_MS * 2, false)],
            None,
            now
        ),
        None
    );
    let r = Resigned {
        handover_userid: "lisi".into(),
        dimission_ms: Some(now - 400 * DAY_MS),
    };
    let h = held_by_limits(&[], Some(&r), now).unwrap();
    assert_eq!((h.limit, h.frees_at), (Limit::ResignedWithinAYear, None));
    assert!(
        h.reason.contains("lisi left more than a year ago"),
        "{}",
        h.reason
    );
    // Within the year: free; one transfer in the window: free.
    let r = Resigned {
        dimission_ms: Some(now - 364 * DAY_MS),
        ..r
    };
    assert_eq!(held_by_limits(&[], Some(&r), now), None);
    assert_eq!(
        held_by_limits(&[(now - DAY_MS * 2, false)], None, now),
        None
    );
    let two = [(now - 3 * DAY_MS, false), (now - 2 * DAY_MS, false)];
    assert!(
        held_by_limits(&two, None, now)
            .unwrap()
            .reason
            .contains("40128")
    );
}

#[test]
fn explain_says_the_transfers_and_the_limit_that_holds() {
    let now = 1_000 * DAY_MS;
    assert_eq!(explain_limits("wm1", &[], None, now), None);
    let two = [(now - 3 * DAY_MS, false), (now - 2 * DAY_MS, false)];
    let text = explain_limits("wm1", &two, None, now).unwrap();
    assert!(
        text.starts_with("WeCom transfers of wm1: 2 in the last 90 days (at most 2)\n"),
        "{text}"
    );
    assert!(
        text.contains("held by limit 2_per_90_days (frees up "),
        "{text}"
    );
    let r = Resigned {
        handover_userid: "lisi".into(),
        dimission_ms: Some(now - 10 * DAY_MS),
    };
    let text = explain_limits("wm1", &[], Some(&r), now).unwrap();
    assert!(text.contains("; held by lisi who left at "), "{text}");
    assert!(text.ends_with("within WeCom's limits\n"), "{text}");
}

fn rel(
    userid: &str,
    added: i64,
    standing: bool,
) -> crate::store::wecom::relationships::Relationship {
    crate::store::wecom::relationships::Relationship {
        external_userid: "wm1".into(),
        userid: userid.into(),
        added_at: Some(added),
        state: None,
        remark: None,
        standing,
        ended_by: (!standing).then(|| "customer".to_string()),
        ended_at: None,
    }
}

fn transfer(verdict: Verdict) -> Transfer {
    Transfer {
        channel: "wecom".into(),
        external_userid: "wm1".into(),
        wanted: "wangfang".into(),
        takeover: "chenjie".into(),
        verdict,
    }
}

#[test]
fn the_plan_decides_each_verdict_in_the_channels_order() {
    let now = 1_000 * DAY_MS;
    let facts = Facts {
        relationships: vec![rel("wangfang", 1, true), rel("lilei", 2, true)],
        ..Default::default()
    };
    // Allowed: the previous owner stands and hands over.
    let v = decide(&facts, Some("wangfang"), "chenjie", now);
    assert_eq!(
        v,
        Verdict::Now {
            from: Handover::Member {
                userid: "wangfang".into(),
                note: None
            }
        }
    );
    assert_eq!(
        transfer(v).describe(),
        "transfer of wm1 from wangfang to chenjie: queued now"
    );
    // The previous owner is no follow-user: the newest follow-user.
    let v = decide(&facts, Some("zhaomin"), "chenjie", now);
    assert!(
        matches!(&v, Verdict::Now { from: Handover::Member { userid, note: Some(_) } } if userid == "lilei"),
        "{v:?}"
    );
    // No rows known: the channel looks the follow-users up at delivery.
    let v = decide(&Facts::default(), Some("wangfang"), "chenjie", now);
    assert_eq!(
        v,
        Verdict::Now {
            from: Handover::AtDelivery
        }
    );
    // Deferred by a waiting transfer 2 h old, until its takeover.
    let pending = Facts {
        started: vec![(now - 2 * 3_600_000, true)],
        ..facts.clone()
    };
    let v = decide(&pending, Some("wangfang"), "chenjie", now);
    assert!(
        matches!(v, Verdict::Deferred { until_ms, started_ms, .. }
            if until_ms == now + 22 * 3_600_000 && started_ms == now - 2 * 3_600_000),
        "{v:?}"
    );
    assert!(transfer(v).describe().contains("waits for takeover"));
    // Refused: two in 90 days.
    let twice = Facts {
        started: vec![(now - 20 * DAY_MS, false), (now - 10 * DAY_MS, false)],
        ..facts.clone()
    };
    let v = decide(&twice, Some("wangfang"), "chenjie", now);
    assert!(
        matches!(v, Verdict::Refused { limit: Some(Limit::TwoPer90Days), frees_at: Some(t), .. }
            if t == now + 70 * DAY_MS),
        "{v:?}"
    );
    // Refused: the member who holds it left over a year ago.
    let left = Facts {
        resigned: Some(Resigned {
            handover_userid: "lisi".into(),
            dimission_ms: Some(now - 400 * DAY_MS),
        }),
        ..facts.clone()
    };
    let v = decide(&left, Some("wangfang"), "chenjie", now);
    assert!(
        matches!(
            v,
            Verdict::Refused {
                limit: Some(Limit::ResignedWithinAYear),
                frees_at: None,
                ..
            }
        ),
        "{v:?}"
    );
    // Within the year: the resigned transfer, from the member who left.
    let recent = Facts {
        resigned: Some(Resigned {
            handover_userid: "lisi".into(),
            dimission_ms: Some(now - 10 * DAY_MS),
        }),
        ..facts.clone()
    };
    let v = decide(&recent, Some("wangfang"), "chenjie", now);
    assert_eq!(
        v,
        Verdict::Now {
            from: Handover::Resigned {
                userid: "lisi".into()
            }
        }
    );
    // Not needed: the takeover member stands, whatever the limits say.
    let v = decide(&twice, Some("wangfang"), "lilei", now);
    assert_eq!(v, Verdict::NotNeeded);
    // Nobody stands to hand over: refused, never.
    let gone = Facts {
        relationships: vec![rel("wangfang", 1, false)],
        ..Default::default()
    };
    let v = decide(&gone, Some("wangfang"), "chenjie", now);
    assert!(
        matches!(
            v,
            Verdict::Refused {
                limit: None,
                frees_at: None,
                ..
            }
        ),
        "{v:?}"
    );
}
