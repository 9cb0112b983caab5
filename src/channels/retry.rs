//! The retry policy of the delivery layer: exponential backoff with full
//! jitter, and `Retry-After` parsing (delay-seconds or an HTTP-date).
//!
//! Pure functions (the random draw and the clock are arguments), so the math
//! is tested without sleeping.

use std::time::{Duration, SystemTime};

/// The longest `Retry-After` nurture honours; a provider asking for more is
/// retried after this long (and keeps its say at the next answer).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3_600);

/// The backoff ceiling before jitter for retry number `attempt` (1 for the
/// retry after the first failed try): `base * 2^(attempt-1)`, at most `max`.
pub fn backoff_ceiling(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(63);
    let factor = 1u64.checked_shl(exp).unwrap_or(u64::MAX);
    let nanos = base.as_nanos().saturating_mul(u128::from(factor));
    if nanos >= max.as_nanos() {
        max
    } else {
        // Below `max`, so it fits.
        Duration::from_nanos(nanos as u64)
    }
}

/// Exponential backoff with full jitter (AWS's "full jitter"): a delay drawn
/// uniformly from `[0, backoff_ceiling]`. `unit` is the random draw in `[0, 1)`.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let ceiling = backoff_ceiling(attempt, base, max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// How long to wait before the next try: the longer of the provider's
/// `Retry-After` (clamped to [`RETRY_AFTER_MAX`]) and the jittered backoff.
pub fn next_delay(
    attempt: u32,
    retry_after: Option<Duration>,
    base: Duration,
    max: Duration,
    unit: f64,
) -> Duration {
    let b = backoff(attempt, base, max, unit);
    match retry_after {
        Some(ra) => b.max(ra.min(RETRY_AFTER_MAX)),
        None => b,
    }
}

/// Parses a `Retry-After` header value: delay-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`), against `now`. A date in the past is a
/// zero delay; the result is clamped to [`RETRY_AFTER_MAX`]. `None` when the
/// value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let d = if v.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings overflow u64: that is "a long time".
        Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const H: Duration = Duration::from_secs(3_600);

    #[test]
    fn ceiling_doubles_and_caps() {
        assert_eq!(backoff_ceiling(1, S, H), S);
        assert_eq!(backoff_ceiling(2, S, H), 2 * S);
        assert_eq!(backoff_ceiling(3, S, H), 4 * S);
        assert_eq!(backoff_ceiling(12, S, H), 2_048 * S);
        assert_eq!(backoff_ceiling(13, S, H), H); // 4096 s > 1 h
        assert_eq!(backoff_ceiling(1_000, S, H), H, "no overflow");
        assert_eq!(backoff_ceiling(u32::MAX, Duration::MAX, H), H);
        // attempt 0 is treated as the first retry
        assert_eq!(backoff_ceiling(0, S, H), S);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        assert_eq!(backoff(3, S, H, 0.0), Duration::ZERO);
        assert_eq!(backoff(3, S, H, 0.5), 2 * S);
        assert_eq!(backoff(3, S, H, 1.0), 4 * S);
        // out-of-range draws are clamped
        assert_eq!(backoff(3, S, H, 7.0), 4 * S);
        assert_eq!(backoff(3, S, H, -1.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_clamped() {
        assert_eq!(next_delay(1, Some(30 * S), S, H, 1.0), 30 * S);
        assert_eq!(next_delay(5, Some(S), S, H, 1.0), 16 * S);
        assert_eq!(next_delay(1, Some(10 * H), S, H, 0.0), RETRY_AFTER_MAX);
        assert_eq!(next_delay(2, None, S, H, 0.25), S / 2);
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("120", now), Some(120 * S));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("86400", now), Some(RETRY_AFTER_MAX));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_http_date() {
        // Wed, 21 Oct 2015 07:28:00 GMT = 1445412480
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after(date, at - 90 * S),
            Some(90 * S),
            "a date 90 s ahead"
        );
        assert_eq!(
            parse_retry_after(date, at + 90 * S),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after(date, at - 3 * H), Some(RETRY_AFTER_MAX));
        // the obsolete RFC 850 and asctime forms are HTTP-dates too
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", at - 10 * S),
            Some(10 * S)
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015", at - 10 * S),
            Some(10 * S)
        );
        assert_eq!(parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", at), None);
    }
}
