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
use crate::workflow::{Entry, Trigger, Workflow};

/// The WHERE clause of a scan of `wf`'s audience at `at`: the trigger's own
/// test (unless `existing`: the audience as it is), the audience, and the
/// entry policy over the stored enrollments.
pub fn workflow_scan(
    wf: &Workflow,
    at: DateTime<Utc>,
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
            if let Some(day) = &d.calendar
                && !d.calendar_may_be_due(day, at)
            {
                sql.push("1 = 0 AND ");
            }
            if d.calendar.is_none() {
                super::audience_sql::attr_mentioned(&d.field.value, &mut sql);
                compile(
                    &Condition::Field {
                        field: d.field.clone(),
                        test: crate::audience::FieldTest::Exists(true),
                    },
                    at,
                    &mut sql,
                )?;
                sql.push(" AND ");
                // Only the contacts whose date is near: the check runs
                // every 15 minutes, and most contacts' dates are months
                // away.
                super::audience_sql::date_texts(&d.field.value, &d.texts_maybe_due(at), &mut sql);
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
