//! How times are shown to people: RFC 3339 in the relevant time zone, to the
//! second, never with fractions of a second.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
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

/// `--until`: a duration after `at` (7d, 36h) or a time as [`parse_at`] reads it.
pub fn parse_until(s: &str, at: DateTime<Utc>, tz: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = s.parse::<crate::duration::Duration>() {
        return Ok(at + d.to_chrono());
    }
    let t = parse_at(s, tz).map_err(|_| {
        format!("--until \"{s}\" is neither a duration (7d, 36h) nor a time like 2026-11-08T10:00")
    })?;
    if t < at {
        return Err(format!(
            "--until {s} is before --at {}; give a later time or a duration such as 7d",
            at.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(t)
}

/// RFC 3339, or a local date-time (`T` or space, seconds optional) in `tz`.
pub fn parse_at(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return tz
                .from_local_datetime(&n)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| format!("--at {s}: that time does not exist in {tz} (a DST gap)"));
        }
    }
    Err(format!(
        "--at \"{s}\" is not a time; write RFC 3339 like 2026-11-01T09:00:00+08:00, or 2026-11-01T09:00 in {tz}"
    ))
}
