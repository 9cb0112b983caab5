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
        // croner's default parser takes seconds and year as optional fields.
        let cron = source
            .parse::<croner::Cron>()
            .map_err(|e| format!("invalid cron expression \"{source}\": {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::CronSchedule;

    #[test]
    fn crons_that_never_fire_are_refused() {
        for never in ["0 9 30 2 *", "0 9 31 4 *", "0 0 31 2,4,6,9,11 *"] {
            let started = std::time::Instant::now();
            let err = CronSchedule::parse(never).unwrap_err();
            assert!(err.contains("never fires"), "{never}: {err}");
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
