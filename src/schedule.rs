//! Cron schedules, read in the settings' timezone.
//!
//! We use `croner` rather than `cron`: marketers write the 5-field form
//! (minute hour day month weekday), and croner reads it, handles DST gaps by
//! running just after them, and accepts 6 or 7 fields too.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub struct CronSchedule {
    source: String,
    cron: croner::Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl CronSchedule {
    pub fn parse(source: &str) -> Result<Self, String> {
        let fields = source.split_whitespace().count();
        if !(5..=7).contains(&fields) {
            return Err(format!(
                "cron expression \"{source}\" has {fields} fields; write 5 (minute hour day month weekday), e.g. \"0 9 * * *\""
            ));
        }
        if fields == 5
            && let Some(words) = in_words(source)
        {
            return Err(format!("cron expression \"{source}\": {words}"));
        }
        // croner's default parser takes seconds and year as optional fields.
        let cron = source.parse::<croner::Cron>().map_err(|e| {
            format!(
                "invalid cron expression \"{source}\" ({e}); write minute hour day-of-month month weekday, e.g. \"0 9 * * 1\" for Mondays at 09:00"
            )
        })?;
        // "0 9 30 2 *" (February 30th) parses but never fires: the workflow
        // would silently never run, and the dry-run would preview nothing.
        // Searched from a fixed time, so parsing stays a pure function.
        let from = DateTime::<Utc>::UNIX_EPOCH;
        if cron.find_next_occurrence(&from, false).is_err() {
            return Err(format!(
                "cron expression \"{source}\" never fires (no such date: check the day and month fields, e.g. February has no 30th)"
            ));
        }
        Ok(CronSchedule {
            source: source.to_string(),
            cron,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// "At 09:00", for humans.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The latest tick at or before `at`, in timezone `tz`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first tick strictly after `at`, in timezone `tz`.
    pub fn next_after(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// What is wrong with a 5-field cron expression, in words, when something
/// is: a value out of its field's range, or a day of the month that never
/// comes in the months given ("day-of-month 31 never happens in February").
/// `None` when it looks right (croner then has the last word).
pub fn in_words(source: &str) -> Option<String> {
    const NAMES: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("weekday", 0, 7),
    ];
    let mut sets: Vec<Option<Vec<u32>>> = Vec::new();
    for (text, (name, lo, hi)) in source.split_whitespace().zip(NAMES) {
        let mut values = Vec::new();
        let mut any = false;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, st)) => match st.parse::<u32>() {
                    Ok(n) if n > 0 => (r, n),
                    _ => {
                        return Some(format!(
                            "the {name} step \"/{st}\" is not a whole number above 0"
                        ));
                    }
                },
                None => (item, 1),
            };
            let num = |t: &str| -> Result<Option<u32>, String> {
                if let Ok(n) = t.parse::<u32>() {
                    if n < lo || n > hi {
                        return Err(format!(
                            "{name} {n} is out of range: {name} runs from {lo} to {hi}"
                        ));
                    }
                    return Ok(Some(n));
                }
                // Names (JAN, MON), L, W, # ...: croner judges those.
                Ok(None)
            };
            if range == "*" || range == "?" {
                any = true;
                continue;
            }
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a, b),
                None => (range, range),
            };
            let (a, b) = match (num(a), num(b)) {
                (Err(e), _) | (_, Err(e)) => return Some(e),
                (Ok(Some(a)), Ok(Some(b))) => (a, b),
                _ => {
                    any = true;
                    continue;
                }
            };
            if a > b {
                return Some(format!(
                    "the {name} range {a}-{b} runs backwards; write {b}-{a}"
                ));
            }
            values.extend((a..=b).step_by(step as usize));
        }
        sets.push(if any { None } else { Some(values) });
    }
    // A day that never comes in any month given.
    if let (Some(Some(days)), Some(Some(months))) = (sets.get(2), sets.get(3)) {
        let longest = |m: u32| match m {
            2 => 29,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let possible = days
            .iter()
            .any(|d| months.iter().any(|m| *d <= longest(*m)));
        if !possible {
            let names: Vec<&str> = months.iter().map(|m| MONTHS[*m as usize - 1]).collect();
            let d = days.iter().min().copied().unwrap_or(0);
            return Some(format!(
                "day-of-month {d} never happens in {}: the workflow would never run",
                names.join(" or ")
            ));
        }
    }
    None
}

#[cfg(test)]
mod words_tests {
    use super::in_words;

    #[test]
    fn cron_problems_in_words() {
        assert_eq!(
            in_words("0 9 31 2 *").as_deref(),
            Some("day-of-month 31 never happens in February: the workflow would never run")
        );
        assert_eq!(
            in_words("0 24 * * *").as_deref(),
            Some("hour 24 is out of range: hour runs from 0 to 23")
        );
        assert_eq!(in_words("0 9 1 * 1-5"), None);
        assert_eq!(in_words("*/15 9-17 * * MON"), None);
        assert_eq!(in_words("0 9 30 2,4 *"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::CronSchedule;

    #[test]
    fn crons_that_never_fire_are_refused() {
        for never in ["0 9 30 2 *", "0 9 31 4 *", "0 0 31 2,4,6,9,11 *"] {
            let started = std::time::Instant::now();
            let err = CronSchedule::parse(never).unwrap_err();
            assert!(err.contains("never"), "{never}: {err}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{never}"
            );
        }
        for fires in ["0 9 29 2 *", "0 9 * * *", "0 9 31 * *", "*/5 * * * *"] {
            CronSchedule::parse(fires).unwrap_or_else(|e| panic!("{fires}: {e}"));
        }
    }
}
