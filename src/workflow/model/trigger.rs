//! What starts an enrollment: the trigger kinds, and when a date trigger
//! fires for a contact.

use super::*;

/// The event `staff_left` workflows fire on (logged by
/// `channels::wecom::resigned`).
pub const STAFF_LEFT_EVENT: &str = "wecom_staff_left";

#[derive(Debug, Clone)]
pub enum Trigger {
    /// A contact is created (or added again on WeCom); with `via`, only
    /// through that contact-way code (`contact_ways/NAME.yaml`).
    ContactCreated {
        via: Option<Located<String>>,
    },
    TagAdded {
        tag: String,
    },
    /// Fires at each `check` tick for contacts quiet for longer than `quiet_for`,
    /// once per quiet spell.
    Inactive {
        quiet_for: Duration,
        check: CronSchedule,
    },
    Event {
        name: String,
    },
    Schedule {
        cron: CronSchedule,
    },
    /// A WeCom follow-user of the contact left the company: the contact is
    /// on WeCom's unassigned list (`nurture wecom resigned`, or the daemon's
    /// daily look, logs the event `wecom_staff_left`).
    StaffLeft,
    /// `date: { field: birthday, offset: -3d, at: "10:00", every: year }`:
    /// on the date of a contact's date attribute (shifted by `offset`), at
    /// `at` in the contact's time zone; each year, or once.
    Date(DateTrigger),
}

#[derive(Debug, Clone)]
pub struct DateTrigger {
    /// The date attribute (unused with `calendar`).
    pub field: Located<String>,
    /// `schedule: { on: 春节 }`: a day of the named calendar
    /// (`crate::calendar`) instead of an attribute, every year.
    pub calendar: Option<String>,
    /// Whole days before (negative) or after the date.
    pub offset_days: i64,
    pub at: chrono::NaiveTime,
    pub every_year: bool,
    /// When the daemon looks (every 15 minutes).
    pub check: CronSchedule,
}

impl DateTrigger {
    /// The check that date triggers run on.
    pub const CHECK: &'static str = "*/15 * * * *";

    /// The occurrence due for a contact whose attribute is `value`, at `now`
    /// in time zone `tz`: its date and moment, when the moment is in the
    /// last day up to `now` (a daemon down for less than a day catches up).
    /// A date-only value is a calendar date; a timestamp is taken on its
    /// date in `tz`. Each year, a 29 February falls on the 28th in common
    /// years.
    pub fn due(
        &self,
        value: &serde_json::Value,
        tz: chrono_tz::Tz,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(chrono::NaiveDate, chrono::DateTime<chrono::Utc>)> {
        use chrono::Datelike;
        let text = value.as_str()?.trim();
        let base = match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(d) => d,
            Err(_) => chrono::DateTime::parse_from_rfc3339(text)
                .ok()?
                .with_timezone(&tz)
                .date_naive(),
        };
        let shift = chrono::TimeDelta::days(self.offset_days);
        let candidates: Vec<chrono::NaiveDate> = if self.every_year {
            let y = now.with_timezone(&tz).year();
            (y - 1..=y + 1)
                .filter_map(|y| {
                    chrono::NaiveDate::from_ymd_opt(y, base.month(), base.day())
                        .or_else(|| chrono::NaiveDate::from_ymd_opt(y, 2, 28))
                })
                .map(|d| d + shift)
                .collect()
        } else {
            vec![base + shift]
        };
        self.first_due(candidates, tz, now)
    }

    /// The occurrence due for a calendar day (`schedule: { on: 春节 }`).
    pub fn due_on_calendar(
        &self,
        name: &str,
        tz: chrono_tz::Tz,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(chrono::NaiveDate, chrono::DateTime<chrono::Utc>)> {
        use chrono::Datelike;
        let y = now.with_timezone(&tz).year();
        let shift = chrono::TimeDelta::days(self.offset_days);
        let candidates = (y - 1..=y + 1)
            .filter_map(|y| crate::calendar::date_of(name, y))
            .map(|d| d + shift)
            .collect();
        self.first_due(candidates, tz, now)
    }

    /// Whether the calendar day `name` can be due at `now` for a contact in
    /// any time zone: a superset of [`Self::due_on_calendar`] over all zones,
    /// which lets a check skip its scan on the other 364 days. Local time
    /// runs from UTC-12 to UTC+14, so the day's moment falls between 14 hours
    /// before and 12 hours after its local time read as UTC (one more for a
    /// gap at a clock change), and stays due for a day.
    pub fn calendar_may_be_due(&self, name: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::Datelike;
        let y = now.year();
        let shift = chrono::TimeDelta::days(self.offset_days);
        (y - 2..=y + 2)
            .filter_map(|y| crate::calendar::date_of(name, y))
            .map(|d| (d + shift).and_time(self.at).and_utc())
            .any(|local| {
                let earliest = local - chrono::TimeDelta::hours(14);
                let latest = local + chrono::TimeDelta::hours(13);
                now >= earliest && now < latest + chrono::TimeDelta::days(1)
            })
    }

    fn first_due(
        &self,
        candidates: Vec<chrono::NaiveDate>,
        tz: chrono_tz::Tz,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(chrono::NaiveDate, chrono::DateTime<chrono::Utc>)> {
        use chrono::TimeZone;
        let moment = |d: chrono::NaiveDate| {
            let local = d.and_time(self.at);
            tz.from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    tz.from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        candidates.into_iter().find_map(|d| {
            let m = moment(d)?;
            (m <= now && m > now - chrono::TimeDelta::days(1)).then_some((d, m))
        })
    }
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::ContactCreated { .. } => "contact_created",
            Trigger::TagAdded { .. } => "tag_added",
            Trigger::Inactive { .. } => "inactive",
            Trigger::Event { .. } => "event",
            Trigger::Schedule { .. } => "schedule",
            Trigger::StaffLeft => "staff_left",
            Trigger::Date(_) => "date",
        }
    }
    /// The event-log entries that fire it: (kind, name).
    pub fn log_match(&self) -> Option<(&'static str, Option<&str>)> {
        match self {
            Trigger::ContactCreated { via } => {
                Some(("contact_created", via.as_ref().map(|v| v.value.as_str())))
            }
            Trigger::TagAdded { tag } => Some(("tag_added", Some(tag))),
            Trigger::Event { name } => Some(("event", Some(name))),
            Trigger::StaffLeft => Some(("event", Some(STAFF_LEFT_EVENT))),
            Trigger::Inactive { .. } | Trigger::Schedule { .. } | Trigger::Date(_) => None,
        }
    }
    /// Triggers fired by a cron tick rather than by an entry in the event log.
    pub fn is_ticked(&self) -> bool {
        self.tick_cron().is_some()
    }
    /// The cron a ticked trigger runs on.
    pub fn tick_cron(&self) -> Option<&CronSchedule> {
        match self {
            Trigger::Inactive { check, .. } => Some(check),
            Trigger::Schedule { cron } => Some(cron),
            Trigger::Date(d) => Some(&d.check),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone, Utc};

    fn cny(offset_days: i64, at: &str) -> DateTrigger {
        DateTrigger {
            field: Located::new(String::new(), Default::default()),
            calendar: Some("春节".into()),
            offset_days,
            at: chrono::NaiveTime::parse_from_str(at, "%H:%M").unwrap(),
            every_year: true,
            check: CronSchedule::parse(DateTrigger::CHECK).unwrap(),
        }
    }

    /// Wherever a contact lives, a calendar day due for them is a day the
    /// check does not skip; and most days it is skipped.
    #[test]
    fn the_calendar_shortcut_never_skips_a_due_day() {
        let zones: Vec<chrono_tz::Tz> = [
            "Pacific/Kiritimati",
            "Etc/GMT+12",
            "Asia/Shanghai",
            "Asia/Kathmandu",
            "America/St_Johns",
            "America/New_York",
            "Europe/London",
            "Australia/Lord_Howe",
        ]
        .iter()
        .map(|z| z.parse().unwrap())
        .collect();
        for (offset, at) in [(-7, "10:00"), (0, "00:00"), (1, "23:59"), (-30, "02:30")] {
            let t = cny(offset, at);
            let mut skipped = 0;
            let mut now = Utc.with_ymd_and_hms(2030, 11, 1, 0, 0, 0).unwrap();
            let end = Utc.with_ymd_and_hms(2032, 4, 1, 0, 0, 0).unwrap();
            while now < end {
                let may = t.calendar_may_be_due("春节", now);
                for tz in &zones {
                    if t.due_on_calendar("春节", *tz, now).is_some() {
                        assert!(may, "{offset} {at}: due in {tz} at {now}, skipped");
                    }
                }
                skipped += usize::from(!may);
                now += TimeDelta::minutes(15);
            }
            // 17 months of 15-minute checks; at most about three days a year
            // are looked at.
            assert!(skipped > 45_000, "{offset} {at}: only {skipped} skipped");
        }
    }
}
