//! Policies that hold across every workflow: consent, quiet hours and the
//! frequency cap. Pure functions of the contact, the settings and the clock,
//! so the dry-run and the daemon decide alike.

use chrono::{DateTime, Duration as ChronoDuration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::contact::Contact;
use crate::settings::{FrequencyCap, QuietHours, Settings};

/// The contact's own timezone when it has a valid one, else the settings'.
pub fn contact_tz(contact: &Contact, settings: &Settings) -> Tz {
    contact_tz_or(contact, settings.timezone)
}

/// The contact's own timezone when it has a valid one, else `default`.
pub fn contact_tz_or(contact: &Contact, default: Tz) -> Tz {
    contact
        .timezone
        .as_deref()
        .and_then(|t| t.parse::<Tz>().ok())
        .unwrap_or(default)
}

/// May this contact be messaged on `channel` at all?
pub fn consents(contact: &Contact, channel: &str) -> bool {
    !contact.unsubscribed && !contact.opted_out.contains(channel)
}

/// When a message planned at `at` may really go out: `at` itself outside quiet
/// hours, else the end of the quiet window in the contact's timezone.
pub fn deliverable_at(quiet: Option<&QuietHours>, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let Some(q) = quiet else { return at };
    if q.start == q.end {
        return at;
    }
    let local = at.with_timezone(&tz);
    let t = local.time();
    let quiet_now = if q.start < q.end {
        t >= q.start && t < q.end
    } else {
        // The window crosses midnight, e.g. 21:00 to 09:00.
        t >= q.start || t < q.end
    };
    if !quiet_now {
        return at;
    }
    // The window ends today if we are before its end, else tomorrow.
    let mut day = local.date_naive();
    if t >= q.end {
        day = day.succ_opt().unwrap_or(day);
    }
    local_time(tz, day, q.end).unwrap_or(at)
}

/// A wall-clock time on a day in `tz`; in a DST gap, the first instant after it.
fn local_time(tz: Tz, day: chrono::NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = day.and_time(time);
    for minutes in 0..=180 {
        let probe = naive + ChronoDuration::minutes(minutes);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// Whether one more message would break the cap, given how many the contact
/// already got (or has queued) inside the cap's window.
pub fn over_cap(cap: Option<&FrequencyCap>, already: u32) -> bool {
    cap.is_some_and(|c| already >= c.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn quiet_hours_across_midnight_defer_to_the_morning() {
        let q = QuietHours {
            start: hm(21, 0),
            end: hm(9, 0),
        };
        let tz = chrono_tz::Asia::Shanghai;
        // 22:30 in Shanghai → 09:00 next day.
        assert_eq!(
            deliverable_at(Some(&q), at("2026-11-01T22:30:00+08:00"), tz),
            at("2026-11-02T09:00:00+08:00")
        );
        // 03:00 → 09:00 the same day.
        assert_eq!(
            deliverable_at(Some(&q), at("2026-11-02T03:00:00+08:00"), tz),
            at("2026-11-02T09:00:00+08:00")
        );
        // 10:00 is outside the window.
        let ten = at("2026-11-02T10:00:00+08:00");
        assert_eq!(deliverable_at(Some(&q), ten, tz), ten);
        // 09:00 sharp is open again, 21:00 sharp is quiet.
        let nine = at("2026-11-02T09:00:00+08:00");
        assert_eq!(deliverable_at(Some(&q), nine, tz), nine);
        assert_eq!(
            deliverable_at(Some(&q), at("2026-11-02T21:00:00+08:00"), tz),
            at("2026-11-03T09:00:00+08:00")
        );
    }

    #[test]
    fn quiet_hours_are_contact_local() {
        let q = QuietHours {
            start: hm(21, 0),
            end: hm(9, 0),
        };
        // 10:00 in Shanghai is 18:00 the day before in Los Angeles (PST): fine there.
        let t = at("2026-11-02T10:00:00+08:00");
        assert_eq!(
            deliverable_at(Some(&q), t, chrono_tz::America::Los_Angeles),
            t
        );
        // 14:00 in Shanghai is 22:00 in LA: deferred to 09:00 LA.
        assert_eq!(
            deliverable_at(
                Some(&q),
                at("2026-11-02T14:00:00+08:00"),
                chrono_tz::America::Los_Angeles
            ),
            at("2026-11-02T09:00:00-08:00")
        );
    }

    #[test]
    fn a_window_within_one_day() {
        let q = QuietHours {
            start: hm(12, 0),
            end: hm(14, 0),
        };
        let tz = chrono_tz::UTC;
        assert_eq!(
            deliverable_at(Some(&q), at("2026-11-02T12:30:00Z"), tz),
            at("2026-11-02T14:00:00Z")
        );
        let t = at("2026-11-02T15:00:00Z");
        assert_eq!(deliverable_at(Some(&q), t, tz), t);
    }

    #[test]
    fn the_cap_counts_what_was_already_sent() {
        let cap = FrequencyCap {
            max: 3,
            per: crate::duration::Duration::from_secs(7 * 86_400),
            on_cap: Default::default(),
        };
        assert!(!over_cap(Some(&cap), 2));
        assert!(over_cap(Some(&cap), 3));
        assert!(!over_cap(None, 100));
    }
}
