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
            // The year of the date whose shifted occurrence is near now: an
            // offset can be longer than a year.
            let y = self.shifted_year(tz, now)?;
            (y - 1..=y + 1)
                .filter_map(|y| {
                    chrono::NaiveDate::from_ymd_opt(y, base.month(), base.day())
                        .or_else(|| chrono::NaiveDate::from_ymd_opt(y, 2, 28))
                })
                .filter_map(|d| d.checked_add_signed(shift))
                .collect()
        } else {
            // A date near the end of the calendar cannot be shifted past it.
            base.checked_add_signed(shift).into_iter().collect()
        };
        self.first_due(candidates, tz, now)
    }

    /// The date texts whose contacts [`Self::due`] can find due at `now`,
    /// in any time zone: a superset a scan can test in SQL before reading a
    /// contact, so a check every 15 minutes reads the few contacts whose date
    /// is near instead of every contact with the attribute.
    ///
    /// A value that [`Self::due`] finds due either does not start with a
    /// plain `YYYY-MM-DD` (a padded year, month and day: left for Rust to
    /// decide, see [`DateTexts::may_be_due`]) or starts with one whose
    /// `MM-DD` (each year) or `YYYY-MM-DD` (once) is listed. Why the window
    /// is wide enough: the occurrence's moment is its date at `at` in the
    /// contact's zone (UTC-12 to UTC+14, an hour more in a clock change's
    /// gap), due for one day up to `now`, so its date is within two days of
    /// `now`'s UTC date; a timestamp's date in the contact's zone is within
    /// two days of the date it is written with (offsets up to ±24 h on
    /// either side); 29 February falls on the 28th in common years.
    pub fn texts_maybe_due(&self, now: chrono::DateTime<chrono::Utc>) -> DateTexts {
        let today = now.date_naive();
        let shift = chrono::TimeDelta::days(self.offset_days);
        let mut keys = std::collections::BTreeSet::new();
        for days in -5..=5 {
            let Some(base) = today
                .checked_add_signed(chrono::TimeDelta::days(days))
                .and_then(|d| d.checked_sub_signed(shift))
            else {
                continue;
            };
            keys.insert(if self.every_year {
                base.format("%m-%d").to_string()
            } else {
                base.format("%Y-%m-%d").to_string()
            });
        }
        if self.every_year {
            keys.insert("02-29".into());
        }
        DateTexts {
            every_year: self.every_year,
            keys: keys.into_iter().collect(),
        }
    }

    /// The occurrence due for a calendar day (`schedule: { on: 春节 }`).
    pub fn due_on_calendar(
        &self,
        name: &str,
        tz: chrono_tz::Tz,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(chrono::NaiveDate, chrono::DateTime<chrono::Utc>)> {
        let shift = chrono::TimeDelta::days(self.offset_days);
        let y = self.shifted_year(tz, now)?;
        let candidates = (y - 1..=y + 1)
            .filter_map(|y| crate::calendar::date_of(name, y))
            .filter_map(|d| d.checked_add_signed(shift))
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
        let shift = chrono::TimeDelta::days(self.offset_days);
        let Some(shifted) = now.date_naive().checked_sub_signed(shift) else {
            return false;
        };
        let y = shifted.year();
        (y - 2..=y + 2)
            .filter_map(|y| crate::calendar::date_of(name, y))
            .filter_map(|d| d.checked_add_signed(shift))
            .map(|d| d.and_time(self.at).and_utc())
            .any(|local| {
                let earliest = local - chrono::TimeDelta::hours(14);
                let latest = local + chrono::TimeDelta::hours(13);
                now >= earliest && now < latest + chrono::TimeDelta::days(1)
            })
    }

    /// The time zones in which the calendar day `name` is due at `now`
    /// ([`Self::due_on_calendar`] in each): a contact is due when its zone
    /// is among them. Lets a check read only those contacts rather than the
    /// whole audience for the two days around the day.
    pub fn calendar_zones_due(
        &self,
        name: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<chrono_tz::Tz> {
        chrono_tz::TZ_VARIANTS
            .iter()
            .copied()
            .filter(|tz| self.due_on_calendar(name, *tz, now).is_some())
            .collect()
    }

    /// The year of the date whose shifted occurrence is near `now` in
    /// `tz` (an offset can be longer than a year); `None` past the
    /// calendar's ends.
    fn shifted_year(&self, tz: chrono_tz::Tz, now: chrono::DateTime<chrono::Utc>) -> Option<i32> {
        use chrono::Datelike;
        let today = now.with_timezone(&tz).date_naive();
        let shifted = today.checked_sub_signed(chrono::TimeDelta::days(self.offset_days))?;
        Some(shifted.year())
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
                    // In a clock change's gap, an hour later (unless that
                    // is past the calendar's end).
                    let later = local.checked_add_signed(chrono::TimeDelta::hours(1))?;
                    tz.from_local_datetime(&later).earliest()
                })
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        candidates.into_iter().find_map(|d| {
            let m = moment(d)?;
            (m <= now && m > now - chrono::TimeDelta::days(1)).then_some((d, m))
        })
    }
}

/// What [`DateTrigger::texts_maybe_due`] lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTexts {
    /// Each year: `keys` are `MM-DD`; once: `YYYY-MM-DD`.
    pub every_year: bool,
    pub keys: Vec<String>,
}

impl DateTexts {
    /// Whether a value with this text passes (what the scan's SQL computes,
    /// `store::scans`): one that does not start with a plain date always
    /// does.
    pub fn may_be_due(&self, text: &str) -> bool {
        let b = text.as_bytes();
        let plain = b.len() >= 10
            && b[..10].iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                _ => c.is_ascii_digit(),
            });
        if !plain {
            return true;
        }
        let key = if self.every_year {
            &text[5..10]
        } else {
            &text[..10]
        };
        self.keys.iter().any(|k| k == key)
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
    use chrono::{Datelike, TimeDelta, TimeZone, Utc};

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

    /// An offset longer than a year still finds each year's occurrence
    /// (the candidate years are those of the shifted date, not of now's).
    #[test]
    fn an_offset_over_a_year_finds_every_occurrence() {
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        for offset in [-400i64, 400, -800] {
            for calendar in [None, Some("春节".to_string())] {
                let t = DateTrigger {
                    field: Located::new("birthday".into(), Default::default()),
                    calendar: calendar.clone(),
                    offset_days: offset,
                    at: chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
                    every_year: true,
                    check: CronSchedule::parse(DateTrigger::CHECK).unwrap(),
                };
                let value = serde_json::json!("1990-06-15");
                let mut found = std::collections::BTreeSet::new();
                let mut now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
                let end = Utc.with_ymd_and_hms(2034, 1, 1, 0, 0, 0).unwrap();
                while now < end {
                    let due = match &calendar {
                        Some(day) => {
                            let due = t.due_on_calendar(day, tz, now);
                            if due.is_some() {
                                assert!(t.calendar_may_be_due(day, now), "{offset} {now}");
                            }
                            due
                        }
                        None => t.due(&value, tz, now),
                    };
                    found.extend(due.map(|(d, _)| d));
                    now += TimeDelta::minutes(15);
                }
                let want: std::collections::BTreeSet<chrono::NaiveDate> = (2020..2040)
                    .filter_map(|y| match &calendar {
                        Some(day) => crate::calendar::date_of(day, y),
                        None => chrono::NaiveDate::from_ymd_opt(y, 6, 15),
                    })
                    .map(|d| d + TimeDelta::days(offset))
                    .filter(|d| d.year() >= 2030 && d.year() < 2034)
                    .collect();
                assert_eq!(found, want, "offset {offset}, {calendar:?}");
            }
        }
    }

    /// Whatever the zone, the offset, the hour or the way the date is
    /// written, a value due at a check passes the scan's text test; and a
    /// date ten days off does not.
    #[test]
    fn the_date_text_test_never_drops_a_due_contact() {
        let zones: Vec<chrono_tz::Tz> = [
            "Pacific/Kiritimati",
            "Etc/GMT+12",
            "Asia/Shanghai",
            "America/St_Johns",
            "America/New_York",
            "Australia/Lord_Howe",
        ]
        .iter()
        .map(|z| z.parse().unwrap())
        .collect();
        let configs = [
            (-1, "10:00", true),
            (0, "00:00", true),
            (3, "23:59", false),
            (-30, "02:30", true),
            (0, "12:00", false),
        ];
        let fixed = [
            "2000-02-29",
            "2001-02-28",
            "1999-12-31",
            "2004-02-29T23:30:00-10:00",
        ];
        let mut due_seen = 0;
        for (offset, at, every_year) in configs {
            let t = DateTrigger {
                field: Located::new("birthday".into(), Default::default()),
                calendar: None,
                offset_days: offset,
                at: chrono::NaiveTime::parse_from_str(at, "%H:%M").unwrap(),
                every_year,
                check: CronSchedule::parse(DateTrigger::CHECK).unwrap(),
            };
            let mut now = Utc.with_ymd_and_hms(2031, 12, 20, 0, 0, 0).unwrap();
            let end = Utc.with_ymd_and_hms(2033, 3, 10, 0, 0, 0).unwrap();
            while now < end {
                let texts = t.texts_maybe_due(now);
                // Dates near the occurrence, written as a date and as
                // timestamps with far offsets, in this year and another.
                let mut values: Vec<String> = fixed.iter().map(|v| v.to_string()).collect();
                for k in -4..=4 {
                    let d = now.date_naive() + TimeDelta::days(k - offset);
                    for year_back in [0, 25] {
                        let d = d.with_year(d.year() - year_back).unwrap_or(d);
                        values.push(d.format("%Y-%m-%d").to_string());
                        values.push(format!("{}T23:30:00-11:00", d.format("%Y-%m-%d")));
                        values.push(format!("{}T00:30:00+13:45", d.format("%Y-%m-%d")));
                    }
                }
                for v in &values {
                    let json = serde_json::Value::String(v.clone());
                    for tz in &zones {
                        if t.due(&json, *tz, now).is_some() {
                            due_seen += 1;
                            assert!(
                                texts.may_be_due(v),
                                "{offset} {at} {every_year}: {v} due in {tz} at {now}, dropped by {texts:?}"
                            );
                        }
                    }
                }
                let far = (now.date_naive() + TimeDelta::days(10 - offset)).format("%Y-%m-%d");
                // (29 February always passes: it falls on the 28th in common years.)
                let far = far.to_string();
                assert!(
                    far.ends_with("02-29") || !texts.may_be_due(&far),
                    "{far} at {now}"
                );
                now += TimeDelta::minutes(1013);
            }
        }
        assert!(due_seen > 3_000, "only {due_seen} due values tried");
        // Texts not written as a plain date are left to the check.
        let t = DateTexts {
            every_year: true,
            keys: vec!["05-03".into()],
        };
        for v in [
            " 1990-06-01",
            "1990-6-1",
            "+01990-06-01",
            "19900601",
            "06/01/1990",
        ] {
            assert!(t.may_be_due(v), "{v}");
        }
        assert!(t.may_be_due("1990-05-03T10:00:00Z") && !t.may_be_due("1990-05-04"));
    }
}
