//! Who is on a code now (online hours, daily caps, the strategy, the
//! backup), and what a contact added through it gets.

use std::collections::HashMap;

use chrono::{DateTime, NaiveTime, Utc};

use super::{ContactWay, PoolStrategy, channel_of};
use crate::settings::Settings;

/// Whether `at` is inside the code's online hours.
pub fn online(way: &ContactWay, settings: &Settings, at: DateTime<Utc>) -> bool {
    let Some((start, end)) = way.online_hours else {
        return true;
    };
    let t = at.with_timezone(&settings.timezone).time();
    if start < end {
        t >= start && t < end
    } else {
        t >= start || t < end
    }
}

/// The start of `at`'s day in the settings' time zone.
pub fn day_start(settings: &Settings, at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::TimeZone;
    let local = at.with_timezone(&settings.timezone).date_naive();
    settings
        .timezone
        .from_local_datetime(&local.and_time(NaiveTime::MIN))
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or(at)
}

/// Who is on the code now, as salesperson ids, and why (for `sync` and
/// `dry-run`). `adds_today`: adds through this code today per salesperson id.
pub fn members_now(
    way: &ContactWay,
    settings: &Settings,
    at: DateTime<Utc>,
    adds_today: &HashMap<String, u32>,
) -> (Vec<String>, String) {
    let adds = |id: &str| adds_today.get(id).copied().unwrap_or(0);
    if !online(way, settings, at) {
        let b: Vec<String> = way.backup.iter().map(|m| m.value.clone()).collect();
        return (b, "outside online hours: the backup staff".into());
    }
    let open: Vec<&str> = way
        .pool
        .iter()
        .map(|m| m.value.as_str())
        .filter(|id| way.daily_cap.is_none_or(|c| adds(id) < c))
        .collect();
    if open.is_empty() {
        let b: Vec<String> = way.backup.iter().map(|m| m.value.clone()).collect();
        return (
            b,
            "every pool member reached the daily cap: the backup staff".into(),
        );
    }
    match way.strategy {
        PoolStrategy::RoundRobin => (
            open.iter().map(|s| s.to_string()).collect(),
            "round_robin: the pool members under their cap".into(),
        ),
        PoolStrategy::LeastLoaded => {
            let least = open.iter().map(|id| adds(id)).min().unwrap_or(0);
            (
                open.iter()
                    .filter(|id| adds(id) == least)
                    .map(|s| s.to_string())
                    .collect(),
                format!("least_loaded: the pool members with the fewest adds today ({least})"),
            )
        }
    }
}

/// The WeCom userids of salesperson ids (those without one are left out).
pub fn userids(settings: &Settings, ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| {
            settings
                .teams
                .values()
                .flatten()
                .find(|s| &s.id == id)
                .and_then(|s| s.wecom_userid.clone())
        })
        .collect()
}

/// The salesperson id of a WeCom userid.
pub fn salesperson_of_userid(settings: &Settings, userid: &str) -> Option<String> {
    settings
        .teams
        .values()
        .flatten()
        .find(|s| s.wecom_userid.as_deref() == Some(userid))
        .map(|s| s.id.clone())
}

/// What a contact added through a code now gets (`dry-run` shows it: "a
/// contact added via NAME gets staff X, tags Y, welcome Z").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Preview {
    #[serde(rename = "contact_way")]
    pub name: String,
    pub channel: Option<String>,
    /// Salesperson ids on the code now ([`members_now`]).
    pub staff: Vec<String>,
    /// Why those (online hours, caps, strategy).
    pub why: String,
    pub tags: Vec<String>,
    pub welcome: Option<String>,
}

impl Preview {
    pub fn new(way: &ContactWay, settings: &Settings, staff: Vec<String>, why: String) -> Preview {
        Preview {
            name: way.name.clone(),
            channel: channel_of(way, settings).map(str::to_string),
            staff,
            why,
            tags: way.tags.clone(),
            welcome: way.welcome.as_ref().map(|w| w.value.clone()),
        }
    }

    /// One sentence; salespeople by id and name.
    pub fn describe(&self, settings: &Settings) -> String {
        let staff = if self.staff.is_empty() {
            "no staff (nobody can be on the code now)".to_string()
        } else {
            let names: Vec<String> = self
                .staff
                .iter()
                .map(
                    |id| match settings.salesperson(id).and_then(|s| s.name.as_deref()) {
                        Some(n) => format!("{id} {n}"),
                        None => id.clone(),
                    },
                )
                .collect();
            format!("staff {} ({})", names.join(", "), self.why)
        };
        let tags = if self.tags.is_empty() {
            "no tags".to_string()
        } else {
            format!("tags {}", self.tags.join(", "))
        };
        let welcome = match &self.welcome {
            Some(w) => format!("welcome {w}"),
            None => "no welcome".to_string(),
        };
        format!(
            "a contact added via {} gets {staff}, {tags}, {welcome}",
            self.name
        )
    }
}

/// WeCom's `type`: 1 for a code of one member in all, else 2.
pub fn wecom_type(way: &ContactWay) -> i64 {
    let mut all: Vec<&str> = way
        .pool
        .iter()
        .chain(&way.backup)
        .map(|m| m.value.as_str())
        .collect();
    all.sort();
    all.dedup();
    if all.len() == 1 { 1 } else { 2 }
}
