//! The `trigger:` and `entry:` of a workflow file: event, schedule (cron or a named
//! calendar day), date and the other trigger kinds.

use super::*;

pub(super) fn read_trigger(r: &mut Reader, node: &Node) -> Option<Trigger> {
    // Unknown keys are reported with a suggestion by `fields`.
    r.fields(node, "the trigger", TRIGGER_KINDS)?;
    let (k, v) = one_kind(r, node, TRIGGER_KINDS, "trigger")?;
    match k.scalar_text().unwrap_or("") {
        "contact_created" => {
            let mut via = None;
            if !v.is_null() {
                let f = r.fields(v, "contact_created", &["via"])?;
                if let Some(n) = f.get("via") {
                    via = Some(Located::new(r.string(n, "via")?, n.pos));
                }
            }
            Some(Trigger::ContactCreated { via })
        }
        "date" => read_date_trigger(r, v),
        "staff_left" => {
            if !v.is_null() {
                r.fields(v, "staff_left", &[])?;
            }
            Some(Trigger::StaffLeft)
        }
        "tag_added" => {
            let f = r.fields(v, "tag_added", &["tag"])?;
            let t = required(
                r,
                &f,
                v,
                "tag",
                "tag_added needs \"tag\", e.g. tag_added: { tag: vip }",
                None,
            )?;
            Some(Trigger::TagAdded {
                tag: r.string(t, "tag")?,
            })
        }
        "inactive" => {
            let f = r.fields(v, "inactive", &["for", "check"])?;
            let quiet_for = required(
                r,
                &f,
                v,
                "for",
                "inactive needs \"for\", e.g. inactive: { for: 30d }",
                None,
            )
            .and_then(|n| r.duration(n, "for"));
            let check = match f.get("check") {
                Some(n) => cron(r, n, "check"),
                None => CronSchedule::parse(DEFAULT_INACTIVE_CHECK).ok(),
            };
            Some(Trigger::Inactive {
                quiet_for: quiet_for?,
                check: check?,
            })
        }
        "event" => {
            let f = r.fields(v, "the event trigger", &["name"])?;
            let n = required(
                r,
                &f,
                v,
                "name",
                "the event trigger needs \"name\", e.g. event: { name: purchase }",
                None,
            )?;
            Some(Trigger::Event {
                name: r.string(n, "name")?,
            })
        }
        "schedule" => {
            let f = r.fields(v, "schedule", &["cron", "on", "offset", "at"])?;
            if let Some(on) = f.get("on") {
                return read_calendar_schedule(r, &f, on);
            }
            let n = required(
                r,
                &f,
                v,
                "cron",
                "schedule needs \"cron\", e.g. schedule: { cron: \"0 9 * * 1\" }",
                None,
            )?;
            Some(Trigger::Schedule {
                cron: cron(r, n, "cron")?,
            })
        }
        _ => None,
    }
}

pub(super) fn read_entry(r: &mut Reader, n: &Node) -> Option<Entry> {
    let text = r.string(n, "entry")?;
    let t = text.trim();
    match t {
        "once" => return Some(Entry::Once),
        "every_time" => return Some(Entry::EveryTime),
        _ => {}
    }
    if let Some(rest) = t.strip_prefix("once per ") {
        return match rest.trim().parse() {
            Ok(d) => Some(Entry::OncePer(d)),
            Err(crate::duration::DurationError(msg)) => {
                r.error(n.pos, format!("entry: {msg}"));
                None
            }
        };
    }
    let mut d = Diagnostic::new(r.file, n.pos, format!("unknown entry \"{t}\""))
        .did_you_mean(t, ["once", "every_time"]);
    if d.suggestion.is_none() {
        d = d.with_suggestion(
            "entry is once, every_time, or \"once per DURATION\" such as \"once per 30d\"",
        );
    }
    r.push(d);
    None
}

/// `schedule: { on: 春节, offset: -7d, at: "10:00" }`: a day of the named
/// calendar each year, in each contact's time zone.
pub(super) fn read_calendar_schedule(r: &mut Reader, f: &Fields, on: &Node) -> Option<Trigger> {
    if let Some(c) = f.get("cron") {
        r.error(c.pos, "a schedule is on: a calendar day or cron:, not both");
        return None;
    }
    let name = r.string(on, "on")?;
    if !crate::calendar::is_day(&name) {
        let mut d = Diagnostic::new(r.file, on.pos, format!("no calendar day \"{name}\""))
            .did_you_mean(
                &name,
                crate::calendar::NAMES
                    .iter()
                    .flat_map(|(zh, en)| [*zh, *en]),
            );
        if d.suggestion.is_none() {
            d = d.with_suggestion(format!(
                "the calendar knows {}",
                crate::calendar::NAMES
                    .iter()
                    .map(|(zh, _)| *zh)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        r.push(d);
        return None;
    }
    let offset_days = match f.get("offset") {
        None => 0,
        Some(n) => whole_days(r, n)?,
    };
    let at = match f.get("at") {
        None => chrono::NaiveTime::from_hms_opt(9, 0, 0).expect("a valid time"),
        Some(n) => local_time(r, n, "at")?,
    };
    Some(Trigger::Date(DateTrigger {
        field: Located::new(String::new(), on.pos),
        calendar: Some(name),
        offset_days,
        at,
        every_year: true,
        check: CronSchedule::parse(DateTrigger::CHECK).ok()?,
    }))
}

/// The longest offset a date trigger takes: a century, as the duration
/// parser reads `100y` (100 years of 366 days).
const MAX_OFFSET_DAYS: i64 = 36_600;

/// `-3d`, `7d`, `+1w`: whole days before (negative) or after.
pub(super) fn whole_days(r: &mut Reader, n: &Node) -> Option<i64> {
    let text = r.string(n, "offset")?;
    let t = text.trim();
    let (neg, rest) = match t.strip_prefix('-') {
        Some(x) => (true, x),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let days = rest
        .parse::<crate::duration::Duration>()
        .ok()
        .map(|d| d.to_chrono())
        .filter(|d| *d == chrono::TimeDelta::days(d.num_days()))
        .map(|d| d.num_days())
        // A century either way is more than any journey needs, and keeps
        // the date arithmetic far from the calendar's ends.
        .filter(|d| *d <= MAX_OFFSET_DAYS);
    match days {
        Some(d) => Some(if neg { -d } else { d }),
        None => {
            r.push(
                Diagnostic::new(
                    r.file,
                    n.pos,
                    format!(
                        "offset \"{text}\" must be whole days within a century, e.g. -3d or 7d"
                    ),
                )
                .with_suggestion("the time of day is at: \"10:00\""),
            );
            None
        }
    }
}

/// `date: { field, offset?, at?, every? }`.
pub(super) fn read_date_trigger(r: &mut Reader, v: &Node) -> Option<Trigger> {
    let f = r.fields(v, "the date trigger", &["field", "offset", "at", "every"])?;
    let fnode = required(
        r,
        &f,
        v,
        "field",
        "the date trigger needs field: (a date attribute)",
        Some("e.g. date: { field: birthday, at: \"10:00\", every: year }"),
    )?;
    let field = Located::new(r.string(fnode, "field")?, fnode.pos);
    let offset_days = match f.get("offset") {
        None => 0,
        Some(n) => whole_days(r, n)?,
    };
    let at = match f.get("at") {
        None => chrono::NaiveTime::from_hms_opt(9, 0, 0).expect("a valid time"),
        Some(n) => {
            let text = r.string(n, "at")?;
            match chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M") {
                Ok(t) => t,
                Err(_) => {
                    r.error(
                        n.pos,
                        format!("at \"{text}\" must be a time HH:MM such as \"10:00\""),
                    );
                    return None;
                }
            }
        }
    };
    let every_year = match f.get("every") {
        None => true,
        Some(n) => match r.string(n, "every")?.as_str() {
            "year" => true,
            "once" => false,
            other => {
                r.push(
                    Diagnostic::new(r.file, n.pos, format!("every \"{other}\" is year or once"))
                        .did_you_mean(other, ["year", "once"]),
                );
                return None;
            }
        },
    };
    Some(Trigger::Date(DateTrigger {
        field,
        calendar: None,
        offset_days,
        at,
        every_year,
        check: CronSchedule::parse(DateTrigger::CHECK).ok()?,
    }))
}
