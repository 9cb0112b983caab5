//! The WHERE clauses of the engine's contact scans (issue 12 item 1: only
//! the store writes SQL): a workflow's audience scan (a cron tick,
//! `entry_existing`, `--all-contacts`), a condition's members (`nurture
//! segments`) and contacts by id. The engine decides
//! what a scan is for (`engine::sources::scan_filter`); this writes the SQL
//! the store's contact scans (`Store::scan_contacts*`) take.

use chrono::{DateTime, Utc};

use super::audience_sql::{CompileError, compile};
use super::dialect::{Bind, Dialect, Sql};
use super::to_ms as ms;
use crate::audience::Condition;
use crate::workflow::{DateTexts, DateTrigger, Entry, Trigger, Workflow};

/// The WHERE clause of a scan of `wf`'s audience at `at`: the trigger's own
/// test (unless `existing`: the audience as it is), the audience, and the
/// entry policy over the stored enrollments.
///
/// `default_tz`: the settings' time zone, which a contact without a zone of
/// its own (or with one that is not a zone's name) is in.
pub fn workflow_scan(
    wf: &Workflow,
    at: DateTime<Utc>,
    default_tz: chrono_tz::Tz,
    dialect: Dialect,
    existing: bool,
) -> Result<Sql, CompileError> {
    let mut sql = Sql::new(dialect);
    // The trigger's own test first: it is the cheapest, and SQLite evaluates
    // the terms in order, so most contacts are dismissed before the audience's
    // subqueries run.
    match &wf.trigger {
        _ if existing => {}
        Trigger::Inactive { quiet_for, .. } => {
            sql.push("coalesce(c.last_active_at, c.created_at) < ");
            sql.bind(Bind::Int(ms(at - quiet_for.to_chrono())));
            sql.push(" AND ");
        }
        Trigger::Date(d) => {
            // The attribute is set and its date is near; whether it is due
            // is decided in Rust, in the contact's time zone
            // (`engine::sources::date_due`). An occurrence taken in the
            // last two days is not taken again.
            // A calendar day due nowhere on earth now: the check finds no
            // one, without reading the audience (`engine::sources::takes`
            // would drop every contact).
            if let Some(day) = &d.calendar {
                if d.calendar_may_be_due(day, at) {
                    // Only the contacts in a zone where the day is due.
                    in_zones(&d.calendar_zones_due(day, at), default_tz, &mut sql);
                    sql.push(" AND ");
                } else {
                    sql.push("1 = 0 AND ");
                }
            }
            if d.calendar.is_none() {
                date_near(d, &d.texts_maybe_due(at), at, &mut sql)?;
                sql.push(" AND ");
            }
            sql.push("NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.contact_id = c.id AND e.workflow = ");
            sql.bind(Bind::Text(wf.name.clone()));
            sql.push(" AND e.entry_key LIKE 'date:%' AND e.started_at > ");
            sql.bind(Bind::Int(ms(at - chrono::TimeDelta::days(2))));
            sql.push(") AND ");
        }
        _ => {}
    }
    sql.push("(");
    match &wf.audience {
        Some(cond) => compile(cond, at, &mut sql)?,
        None => sql.push("1=1"),
    }
    sql.push(")");
    if matches!(wf.trigger, Trigger::Inactive { .. }) && !existing {
        // Once per quiet spell: not if this spell already entered.
        sql.push(" AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.contact_id = c.id AND e.workflow = ");
        sql.bind(Bind::Text(wf.name.clone()));
        sql.push(" AND e.entry_key = 'spell:' || coalesce(c.last_active_at, c.created_at))");
    }
    match wf.entry {
        Entry::Once => {
            sql.push(" AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.contact_id = c.id AND e.workflow = ");
            sql.bind(Bind::Text(wf.name.clone()));
            sql.push(")");
        }
        Entry::OncePer(d) => {
            sql.push(" AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.contact_id = c.id AND e.workflow = ");
            sql.bind(Bind::Text(wf.name.clone()));
            sql.push(" AND e.started_at > ");
            sql.bind(Bind::Int(ms(at - d.to_chrono())));
            sql.push(")");
        }
        Entry::EveryTime => {}
    }
    Ok(sql)
}

/// The contacts in one of `zones`, as `engine::sources::date_due` places
/// them: in their own zone when it is a zone's name, otherwise in
/// `default_tz`. True or false, never NULL.
fn in_zones(zones: &[chrono_tz::Tz], default_tz: chrono_tz::Tz, sql: &mut Sql) {
    let names = |zones: &mut dyn Iterator<Item = chrono_tz::Tz>| {
        let names: Vec<&str> = zones.map(|z| z.name()).collect();
        Bind::Text(serde_json::to_string(&names).expect("strings serialize"))
    };
    let list = |sql: &mut Sql, b: Bind| match sql.dialect {
        Dialect::Sqlite => {
            sql.push("(SELECT value FROM json_each(");
            sql.bind(b);
            sql.push("))");
        }
        Dialect::Postgres => {
            sql.push("(SELECT jsonb_array_elements_text(CAST(");
            sql.bind(b);
            sql.push(" AS jsonb)))");
        }
    };
    sql.push("(coalesce(c.timezone IN ");
    list(sql, names(&mut zones.iter().copied()));
    sql.push(match sql.dialect {
        Dialect::Sqlite => ", 0)",
        Dialect::Postgres => ", FALSE)",
    });
    if zones.contains(&default_tz) {
        sql.push(" OR c.timezone IS NULL OR c.timezone NOT IN ");
        list(sql, names(&mut chrono_tz::TZ_VARIANTS.iter().copied()));
    }
    sql.push(")");
}

/// The contacts whose date attribute is near (`texts`): the part of a date
/// trigger's check that changes once a day (with the texts), not every
/// check. Only the contacts whose date is near are read: the check runs
/// every 15 minutes, and most contacts' dates are months away.
fn date_near(
    d: &DateTrigger,
    texts: &DateTexts,
    at: DateTime<Utc>,
    sql: &mut Sql,
) -> Result<(), CompileError> {
    super::audience_sql::attr_mentioned(&d.field.value, sql);
    compile(
        &Condition::Field {
            field: d.field.clone(),
            test: crate::audience::FieldTest::Exists(true),
        },
        at,
        sql,
    )?;
    sql.push(" AND ");
    super::audience_sql::date_texts(&d.field.value, texts, sql);
    Ok(())
}

/// For a date trigger on an attribute: the texts its check at `at` lets
/// through, and the WHERE clause of the contacts whose date is near. Every
/// check with the same texts (a day's 96) finds its contacts among these
/// ([`workflow_scan`] at `at` is this and more); a dry-run that does not
/// write reads them once a day ([`among`]) rather than every contact at
/// each check.
pub fn date_candidates(
    wf: &Workflow,
    at: DateTime<Utc>,
    dialect: Dialect,
) -> Result<Option<(DateTexts, Sql)>, CompileError> {
    let Trigger::Date(d) = &wf.trigger else {
        return Ok(None);
    };
    if d.calendar.is_some() {
        return Ok(None);
    }
    let texts = d.texts_maybe_due(at);
    let mut sql = Sql::new(dialect);
    date_near(d, &texts, at, &mut sql)?;
    Ok(Some((texts, sql)))
}

/// Contacts named by their place in the store ([`Store::contact_keys`]):
/// SQLite's rowids, PostgreSQL's ids, as one JSON array bound to a query.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactKeys {
    json: String,
    len: usize,
}

impl ContactKeys {
    pub(super) fn new<T: serde::Serialize>(keys: &[T]) -> ContactKeys {
        ContactKeys {
            json: serde_json::to_string(keys).expect("numbers and strings serialize"),
            len: keys.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `filter`'s contacts in a fixed order, for a date check's scan: on
/// SQLite the order they were added (the rowid), on PostgreSQL, which keeps
/// no such order, their id. The daemon scans the audience and the dry-run
/// reads the day's near contacts ([`among`]); without an order each follows
/// its own plan (an audience on owners read through the owner index, an OR
/// by union, comes in owner order; PostgreSQL's heap order moves as rows
/// are updated), and the order decides a throttle's send times and a round
/// robin's picks. A date check reads the few contacts whose date is near;
/// a calendar day's reads its audience in the zones where it is due, which
/// SQLite's full scan gives in rowid order without a sort, and which
/// PostgreSQL sorts (345,498 contacts at a million: no cost that shows
/// beside planning them, BENCHMARKS.md, session 9).
pub fn in_scan_order(mut filter: Sql) -> Sql {
    filter.push(match filter.dialect {
        Dialect::Sqlite => " ORDER BY c.rowid",
        Dialect::Postgres => " ORDER BY c.id",
    });
    filter
}

/// `filter` restricted to the contacts `keys` names, in the order a scan
/// of `filter` alone returns them on SQLite (rowid order: the keys are
/// looked up in ascending order, as a full scan visits them).
pub fn among(filter: &Sql, keys: &ContactKeys) -> Sql {
    let mut sql = filter.clone();
    sql.text = format!("({}) AND ", sql.text);
    match sql.dialect {
        Dialect::Sqlite => {
            sql.push("c.rowid IN (SELECT value FROM json_each(");
            sql.bind(Bind::Text(keys.json.clone()));
            sql.push("))");
        }
        Dialect::Postgres => {
            sql.push("c.id IN (SELECT jsonb_array_elements_text(CAST(");
            sql.bind(Bind::Text(keys.json.clone()));
            sql.push(" AS jsonb)))");
        }
    }
    sql
}

/// `filter` without the contacts `ids` (a dry-run's own enrollments, which
/// the store's scans cannot see).
///
/// The test comes first: SQLite evaluates the terms in order, and a
/// contact left out then costs one look-up instead of the audience's
/// subqueries. `filter`'s placeholders are numbered after its own.
pub fn excluding(filter: &Sql, ids: &[&str]) -> Sql {
    let mut sql = Sql::new(filter.dialect);
    let json = serde_json::to_string(ids).expect("strings serialize");
    match sql.dialect {
        Dialect::Sqlite => {
            sql.push("c.id NOT IN (SELECT value FROM json_each(");
            sql.bind(Bind::Text(json));
            sql.push("))");
        }
        // NOT EXISTS rather than NOT IN: an anti-join PostgreSQL can hash
        // however many ids there are.
        Dialect::Postgres => {
            sql.push("NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(CAST(");
            sql.bind(Bind::Text(json));
            sql.push(" AS jsonb)) AS x(v) WHERE x.v = c.id)");
        }
    }
    sql.push(" AND (");
    sql.append(filter);
    sql.push(")");
    sql
}

/// The WHERE clause of the contacts with these ids.
pub fn contacts_with_ids(ids: &[String], dialect: Dialect) -> Sql {
    let mut filter = Sql::new(dialect);
    filter.push("c.id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            filter.push(",");
        }
        filter.bind(Bind::Text(id.clone()));
    }
    filter.push(")");
    filter
}

/// The WHERE clause of the contacts a condition holds for at `now`: exact on
/// SQLite for a condition without event `where:`, otherwise a prefilter (a
/// superset) that Rust decides.
pub fn condition(
    cond: &Condition,
    now: DateTime<Utc>,
    dialect: Dialect,
) -> Result<Sql, CompileError> {
    let mut sql = Sql::new(dialect);
    compile(cond, now, &mut sql)?;
    Ok(sql)
}
