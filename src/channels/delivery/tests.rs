//! Tests of delivery's pure parts.

use super::*;
use crate::settings::RateLimit;

mod unit {
    use super::*;
    use crate::duration::Duration as NDuration;

    fn rate(count: u32, secs: i64) -> RateLimit {
        RateLimit {
            count,
            per: NDuration::from_secs(secs),
        }
    }

    #[test]
    fn quota_never_exceeds_the_window() {
        for (count, secs) in [
            (1, 1),
            (20, 1),
            (50, 1),
            (600, 60),
            (5_000, 1),
            (100_000, 1),
            (1, 3_600),
        ] {
            let q = quota(rate(count, secs));
            let per_ns = Duration::from_secs(secs as u64).as_nanos();
            let burst = u128::from(q.burst_size().get());
            let period = q.replenish_interval().as_nanos();
            // Most calls in a half-open window of `per`: the burst, then one per period.
            let most = burst + per_ns.div_ceil(period) - 1;
            assert!(most <= u128::from(count), "{count}/{secs}s allows {most}");
            // And not far under the limit.
            assert!(
                most * 100 >= u128::from(count) * 99,
                "{count}/{secs}s allows only {most}"
            );
        }
    }

    #[test]
    fn pending_is_bounded_by_rate_and_concurrency() {
        assert_eq!(max_pending(64, None, 256), 512);
        assert_eq!(max_pending(1, None, 256), 8);
        assert_eq!(max_pending(64, Some(rate(20, 1)), 256), 100);
        assert_eq!(max_pending(64, Some(rate(1, 60)), 256), 1);
        assert_eq!(max_pending(1_000, None, 256), 1_024);
    }

    #[test]
    fn every_attempt_is_held_to_the_contacts_window() {
        let q = QuietHours {
            start: chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            end: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
        };
        let sh = chrono_tz::Asia::Shanghai;
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        // The example: 20:59 meets a one-hour wait; not 21:59 but 09:00.
        let retry_at = ms("2026-11-02T21:59:00+08:00");
        assert_eq!(
            in_window(Some((q, sh)), retry_at),
            ms("2026-11-03T09:00:00+08:00")
        );
        let fine = ms("2026-11-02T10:00:00+08:00");
        assert_eq!(in_window(Some((q, sh)), fine), fine);
        assert_eq!(in_window(None, retry_at), retry_at);
        assert!(
            quiet_note(ms("2026-11-03T09:00:00+08:00"), Some((q, sh)))
                .contains("2026-11-03 09:00 CST")
        );
        assert!(to_the_contact(&serde_json::json!({})));
        assert!(to_the_contact(&serde_json::json!({"kind": "wecom"})));
        for kind in ["notice", "transfer", "webhook"] {
            assert!(!to_the_contact(&serde_json::json!({ "kind": kind })));
        }
    }

    #[test]
    fn consent_rules() {
        let mut c = Contact {
            id: "c1".into(),
            ..Default::default()
        };
        assert_eq!(consent(None, "sms"), Some("contact_deleted"));
        assert_eq!(consent(Some(&c), "sms"), None);
        c.opted_out.insert("sms".into());
        assert_eq!(consent(Some(&c), "sms"), Some("unsubscribed"));
        assert_eq!(consent(Some(&c), "hook"), None);
        c.unsubscribed = true;
        assert_eq!(consent(Some(&c), "hook"), Some("unsubscribed"));
        // Notices and transfers are not messages to the contact.
        let notice = serde_json::json!({"kind": "notice"});
        let transfer = serde_json::json!({"kind": "transfer"});
        assert_eq!(consent_for(Some(&c), "hook", &notice), None);
        assert_eq!(consent_for(Some(&c), "hook", &transfer), None);
        assert_eq!(
            consent_for(None, "hook", &transfer),
            Some("contact_deleted")
        );
        assert_eq!(
            consent_for(Some(&c), "hook", &serde_json::json!({})),
            Some("unsubscribed")
        );
    }
}
