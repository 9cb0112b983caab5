//! Durations as marketers write them: `30s`, `45m`, `12h`, `30d`, `2w`.
//!
//! Seconds exist so that tests can use short waits; everything else is what
//! the SPEC lists. The value is kept as whole seconds: nothing in nurture
//! needs finer grain, and integers compare the same in Rust and in SQL.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    secs: i64,
}

impl Duration {
    pub const fn from_secs(secs: i64) -> Self {
        Duration { secs }
    }
    pub const fn secs(self) -> i64 {
        self.secs
    }
    pub fn millis(self) -> i64 {
        self.secs.saturating_mul(1000)
    }
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.secs)
    }
}

/// Why a duration string was refused; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(pub String);

impl std::str::FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let hint = "durations are a whole number and a unit: 30s, 45m, 12h, 30d, 2w";
        let Some(unit) = t.chars().last() else {
            return Err(DurationError(format!("empty duration; {hint}")));
        };
        let digits = &t[..t.len() - unit.len_utf8()];
        let per = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            c if c.is_ascii_digit() => {
                return Err(DurationError(format!(
                    "duration \"{t}\" has no unit; did you mean \"{t}d\"? ({hint})"
                )));
            }
            _ => {
                return Err(DurationError(format!(
                    "unknown unit in duration \"{t}\"; {hint}"
                )));
            }
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(DurationError(format!("invalid duration \"{t}\"; {hint}")));
        }
        let n: i64 = digits
            .parse()
            .map_err(|_| DurationError(format!("duration \"{t}\" is too large")))?;
        let secs = n
            .checked_mul(per)
            .filter(|s| *s <= 100 * 366 * 86_400)
            .ok_or_else(|| {
                DurationError(format!("duration \"{t}\" is too large (at most 100 years)"))
            })?;
        Ok(Duration { secs })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.secs;
        for (per, unit) in [(604_800, 'w'), (86_400, 'd'), (3_600, 'h'), (60, 'm')] {
            if s != 0 && s % per == 0 {
                return write!(f, "{}{}", s / per, unit);
            }
        }
        write!(f, "{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!("30s".parse::<Duration>().unwrap().secs(), 30);
        assert_eq!("45m".parse::<Duration>().unwrap().secs(), 2_700);
        assert_eq!("12h".parse::<Duration>().unwrap().secs(), 43_200);
        assert_eq!("30d".parse::<Duration>().unwrap().secs(), 2_592_000);
        assert_eq!("2w".parse::<Duration>().unwrap().secs(), 1_209_600);
    }

    #[test]
    fn refuses_with_a_reason() {
        assert!(
            "30".parse::<Duration>()
                .unwrap_err()
                .0
                .contains("did you mean \"30d\"")
        );
        assert!("3x".parse::<Duration>().is_err());
        assert!("d".parse::<Duration>().is_err());
        assert!("-3d".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
        assert!("99999999999999999w".parse::<Duration>().is_err());
        assert!("日".parse::<Duration>().is_err());
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(Duration::from_secs(1_209_600).to_string(), "2w");
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
        assert_eq!(Duration::from_secs(5_400).to_string(), "90m");
    }
}
