//! The named calendar of Chinese holidays and shopping festivals, for
//! schedule triggers (`schedule: { on: 春节, offset: -7d, at: "10:00" }`).
//!
//! The lunar festivals (春节 the 1st of the 1st month, 元宵 the 15th of the
//! 1st, 端午 the 5th of the 5th, 中秋 the 15th of the 8th) are a table for
//! 2020–2040. Source: the Gregorian dates of those lunar days as computed by
//! the Python package `lunardate` 0.3.0 (Fung F. Lee, Ricky Yeung, LI
//! Daobing), generated once and pasted here. The tests pin the dates the
//! State Council's holiday notices announced for 2020–2026 (typed in from
//! those notices, independently of the table) and check the lunar structure
//! of every year (29/30-day months, leap months). The shopping and national
//! days are fixed: 国庆 10-01, 618 06-18, 双11 11-11, 双12 12-12.

use chrono::NaiveDate;

/// (year, [春节, 元宵, 端午, 中秋] as (month, day)).
const LUNAR: [(i32, [(u32, u32); 4]); 21] = [
    (2020, [(1, 25), (2, 8), (6, 25), (10, 1)]),
    (2021, [(2, 12), (2, 26), (6, 14), (9, 21)]),
    (2022, [(2, 1), (2, 15), (6, 3), (9, 10)]),
    (2023, [(1, 22), (2, 5), (6, 22), (9, 29)]),
    (2024, [(2, 10), (2, 24), (6, 10), (9, 17)]),
    (2025, [(1, 29), (2, 12), (5, 31), (10, 6)]),
    (2026, [(2, 17), (3, 3), (6, 19), (9, 25)]),
    (2027, [(2, 6), (2, 20), (6, 9), (9, 15)]),
    (2028, [(1, 26), (2, 9), (5, 28), (10, 3)]),
    (2029, [(2, 13), (2, 27), (6, 16), (9, 22)]),
    (2030, [(2, 3), (2, 17), (6, 5), (9, 12)]),
    (2031, [(1, 23), (2, 6), (6, 24), (10, 1)]),
    (2032, [(2, 11), (2, 25), (6, 12), (9, 19)]),
    (2033, [(1, 31), (2, 14), (6, 1), (9, 8)]),
    (2034, [(2, 19), (3, 5), (6, 20), (9, 27)]),
    (2035, [(2, 8), (2, 22), (6, 10), (9, 16)]),
    (2036, [(1, 28), (2, 11), (5, 30), (10, 4)]),
    (2037, [(2, 15), (3, 1), (6, 18), (9, 24)]),
    (2038, [(2, 4), (2, 18), (6, 7), (9, 13)]),
    (2039, [(1, 24), (2, 7), (5, 27), (10, 2)]),
    (2040, [(2, 12), (2, 26), (6, 14), (9, 20)]),
];

/// The names a workflow may write, with their English aliases.
pub const NAMES: &[(&str, &str)] = &[
    ("春节", "spring_festival"),
    ("元宵", "lantern_festival"),
    ("端午", "dragon_boat"),
    ("中秋", "mid_autumn"),
    ("国庆", "national_day"),
    ("618", "618"),
    ("双11", "double_11"),
    ("双12", "double_12"),
];

/// The first and last year the calendar knows.
pub const YEARS: (i32, i32) = (2020, 2040);

/// Whether `name` is a day of the calendar (Chinese or English name).
pub fn is_day(name: &str) -> bool {
    canonical(name).is_some()
}

fn canonical(name: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(zh, en)| *zh == name || *en == name)
        .map(|(zh, _)| *zh)
}

/// The date of the named day in `year` (None outside 2020–2040 for the
/// lunar festivals, or for an unknown name).
pub fn date_of(name: &str, year: i32) -> Option<NaiveDate> {
    let fixed = |m, d| NaiveDate::from_ymd_opt(year, m, d);
    let lunar = |i: usize| {
        LUNAR
            .iter()
            .find(|(y, _)| *y == year)
            .and_then(|(_, days)| NaiveDate::from_ymd_opt(year, days[i].0, days[i].1))
    };
    match canonical(name)? {
        "春节" => lunar(0),
        "元宵" => lunar(1),
        "端午" => lunar(2),
        "中秋" => lunar(3),
        "国庆" => fixed(10, 1),
        "618" => fixed(6, 18),
        "双11" => fixed(11, 11),
        "双12" => fixed(12, 12),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// Spring Festival, Dragon Boat and Mid-Autumn as the State Council's
    /// holiday notices (国务院办公厅关于…部分节假日安排的通知) published them.
    #[test]
    fn published_holidays_2020_to_2026() {
        for (name, year, want) in [
            ("春节", 2020, "2020-01-25"),
            ("春节", 2021, "2021-02-12"),
            ("春节", 2022, "2022-02-01"),
            ("春节", 2023, "2023-01-22"),
            ("春节", 2024, "2024-02-10"),
            ("春节", 2025, "2025-01-29"),
            ("春节", 2026, "2026-02-17"),
            ("端午", 2020, "2020-06-25"),
            ("端午", 2021, "2021-06-14"),
            ("端午", 2022, "2022-06-03"),
            ("端午", 2023, "2023-06-22"),
            ("端午", 2024, "2024-06-10"),
            ("端午", 2025, "2025-05-31"),
            ("端午", 2026, "2026-06-19"),
            ("中秋", 2020, "2020-10-01"),
            ("中秋", 2021, "2021-09-21"),
            ("中秋", 2022, "2022-09-10"),
            ("中秋", 2023, "2023-09-29"),
            ("中秋", 2024, "2024-09-17"),
            ("中秋", 2025, "2025-10-06"),
            ("中秋", 2026, "2026-09-25"),
        ] {
            assert_eq!(date_of(name, year), Some(d(want)), "{name} {year}");
        }
    }

    #[test]
    fn the_table_has_the_shape_of_the_lunar_calendar() {
        for y in YEARS.0..=YEARS.1 {
            let cny = date_of("春节", y).unwrap();
            // Between 21 January and 20 February.
            assert!(
                cny >= d(&format!("{y}-01-21")) && cny <= d(&format!("{y}-02-20")),
                "{y}"
            );
            // The 15th of the month is 14 days after the 1st.
            assert_eq!(
                date_of("元宵", y).unwrap() - cny,
                chrono::TimeDelta::days(14)
            );
            // 4 lunar months of 29 or 30 days and 4 days (120 to 124 days),
            // plus a leap month when one falls before the 5th month.
            let dw = (date_of("端午", y).unwrap() - cny).num_days();
            assert!(
                (120..=124).contains(&dw) || (149..=154).contains(&dw),
                "{y}: {dw}"
            );
            // 7 months and 14 days, plus a leap month before the 8th.
            let zq = (date_of("中秋", y).unwrap() - cny).num_days();
            assert!(
                (217..=224).contains(&zq) || (246..=254).contains(&zq),
                "{y}: {zq}"
            );
        }
        assert_eq!(date_of("春节", 2041), None);
        assert_eq!(date_of("双11", 2041), Some(d("2041-11-11")));
        assert_eq!(date_of("spring_festival", 2030), Some(d("2030-02-03")));
        assert_eq!(date_of("圣诞", 2030), None);
    }
}
