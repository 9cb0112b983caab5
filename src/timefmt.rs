//! How times are shown to people: RFC 3339 in the relevant time zone, to the
//! second, never with fractions of a second.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;

/// `2026-11-01T09:30:15+08:00`.
pub fn rfc3339<T: TimeZone>(t: &DateTime<T>) -> String
where
    T::Offset: std::fmt::Display,
{
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `t` in `tz` as [`rfc3339`].
pub fn in_tz(t: DateTime<Utc>, tz: Tz) -> String {
    rfc3339(&t.with_timezone(&tz))
}
