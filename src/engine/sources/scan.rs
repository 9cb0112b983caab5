//! Audience scans (a cron tick, `entry_existing`, `--all-contacts`): what a
//! scan is for, its entry keys, the entry policy, date triggers, and when a
//! cron tick runs.

use super::*;

/// A scan's contacts (a cron tick, `entry_existing`, `--all-contacts`),
/// planned as new enrollments.
pub async fn plan_scan_chunk<'w>(
    store: &Store,
    wf: &'w Workflow,
    chunk: &mut Vec<Contact>,
    key_of: &KeyOf,
    cause: &Cause,
    planner: &mut Planner<'_>,
) -> Result<Vec<Decided<'w>>> {
    let recent = enrich(store, wf, chunk, planner).await?;
    let mut batch = Vec::new();
    for (contact, recent) in chunk.drain(..).zip(recent) {
        // The SQL chose the audience; conditions on events are re-checked
        // here with the events just loaded.
        if !in_audience(wf, &planner.current(&contact), planner.now) {
            continue;
        }
        // A date trigger: only contacts whose date is due now. The scans
        // leave the others out before counting them for the blast guard;
        // checked again here so that a batch is right whoever builds it.
        if !takes(wf, cause, &contact, planner.now, planner.settings.timezone) {
            continue;
        }
        let plan = planner.plan(
            wf,
            &contact,
            StartAt::First { since: planner.now },
            recent,
            None,
        );
        batch.push(Decided {
            workflow: wf,
            contact_id: contact.id.clone(),
            start: Start::New {
                entry_key: key_of.key(wf, &contact),
                cause: cause.clone(),
            },
            from_step: None,
            plan,
            trigger: None,
        });
    }
    Ok(batch)
}

/// How a scan names the enrollments it would create.
pub enum KeyOf {
    Once,
    Spell,
    Tick(i64),
    Now(i64),
    /// `entry_existing` / `nurture enroll --existing`.
    Existing(i64),
    /// A date trigger at this moment (and the settings' time zone): the key
    /// is the occurrence's date.
    Date(DateTime<Utc>, chrono_tz::Tz),
}

impl KeyOf {
    pub fn key(&self, wf: &Workflow, c: &Contact) -> String {
        if wf.entry == Entry::Once {
            return "once".into();
        }
        match self {
            KeyOf::Once => "once".into(),
            KeyOf::Spell => format!("spell:{}", ms(c.quiet_since())),
            KeyOf::Tick(t) => format!("tick:{t}"),
            KeyOf::Now(t) => format!("now:{t}"),
            KeyOf::Existing(t) => format!("existing:{t}"),
            KeyOf::Date(at, tz) => match date_due(wf, c, *at, *tz) {
                Some(d) => format!("date:{d}"),
                None => format!("date:none:{}", ms(*at)),
            },
        }
    }
}

/// Why contacts are scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The workflow's cron tick (`inactive`, `schedule`), or, for an
    /// event-triggered workflow, `--all-contacts`' imagined trigger.
    Trigger,
    /// `entry_existing` / `nurture enroll --existing`: the audience as it is.
    Existing,
}

/// The WHERE clause of a scan: audience, trigger condition, entry policy.
pub fn scan_filter(
    wf: &Workflow,
    at: DateTime<Utc>,
    tz: chrono_tz::Tz,
    dialect: Dialect,
    scan: Scan,
) -> Result<(Sql, KeyOf, Cause)> {
    let sql = crate::store::scans::workflow_scan(wf, at, tz, dialect, scan == Scan::Existing)?;
    let (key_of, cause) = match &wf.trigger {
        _ if scan == Scan::Existing => (KeyOf::Existing(ms(at)), Cause::Existing),
        Trigger::Inactive { .. } => (KeyOf::Spell, Cause::Tick(at)),
        Trigger::Schedule { .. } => (KeyOf::Tick(ms(at)), Cause::Tick(at)),
        Trigger::Date(_) => (KeyOf::Date(at, tz), Cause::Tick(at)),
        _ => (KeyOf::Now(ms(at)), Cause::Imagined),
    };
    let key_of = if wf.entry == Entry::Once {
        KeyOf::Once
    } else {
        key_of
    };
    Ok((sql, key_of, cause))
}

/// The entry policy over the contact's existing enrollments (any workflow).
pub fn may_enter_given(
    wf: &Workflow,
    existing: &[plan_reads::EnrollmentRow],
    key: &str,
    at: DateTime<Utc>,
) -> bool {
    let mut mine = existing.iter().filter(|e| e.workflow == wf.name);
    match wf.entry {
        Entry::Once => mine.next().is_none(),
        Entry::EveryTime => mine.all(|e| e.entry_key != key),
        Entry::OncePer(d) => {
            let since = at - d.to_chrono();
            mine.all(|e| e.entry_key != key && e.started_at <= since)
        }
    }
}

/// Whether a contact the scan's SQL found is the scan's to plan. A date
/// trigger's tick takes only the contacts whose date is due now: the SQL
/// finds the contacts whose date is within days of it (whether it is due is
/// decided in Rust, in the contact's time zone), and the others are neither
/// planned nor counted
/// by the blast guard, which would otherwise see each birthday as the first
/// of a thousand and hold it.
pub fn takes(
    wf: &Workflow,
    cause: &Cause,
    c: &Contact,
    at: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
) -> bool {
    !(matches!(cause, Cause::Tick(_))
        && matches!(wf.trigger, Trigger::Date(_))
        && date_due(wf, c, at, default_tz).is_none())
}

/// For a date-triggered workflow: the occurrence of the contact's date due
/// at `at`, in the contact's time zone.
/// (`default_tz`: the settings' time zone, for contacts without their own).
pub fn date_due(
    wf: &Workflow,
    c: &Contact,
    at: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
) -> Option<chrono::NaiveDate> {
    let Trigger::Date(d) = &wf.trigger else {
        return None;
    };
    let tz = c
        .timezone
        .as_deref()
        .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(default_tz);
    match &d.calendar {
        Some(day) => d.due_on_calendar(day, tz, at),
        None => d.due(c.attrs.get(&d.field.value)?, tz, at),
    }
    .map(|(date, _)| date)
}

/// Whether a cron tick runs, given the last tick taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickDue {
    /// No tick was ever taken: this one is recorded, not run. Past ticks are
    /// not "missed": a monthly broadcast deployed on the 20th does not fire
    /// for the 1st; its first run is its next real tick.
    FirstSight,
    /// Taken already.
    Taken,
    /// Due (or missed while the daemon was down): run it, once.
    Run,
}

pub fn tick_due(last_taken_ms: Option<i64>, tick: DateTime<Utc>) -> TickDue {
    match last_taken_ms {
        None => TickDue::FirstSight,
        Some(t) if t >= ms(tick) => TickDue::Taken,
        Some(_) => TickDue::Run,
    }
}
