//! Runs one case: the project's real workflows, planned by the dry-run's
//! engine (`engine::simulate`, the daemon's own passes) on a throwaway
//! in-memory store, with a simulated clock. The case's events are written to
//! that store when the clock reaches them, so the plans see them as the
//! daemon would: a trigger fires, a `wait_until` wakes, a goal is reached.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::file::{Case, Contacts, Happening, Kind};
use crate::engine::plan::Action;
use crate::engine::simulate::{SimOptions, Simulation};
use crate::engine::sources::{self, Start};
use crate::project::Project;
use crate::store::Store;
use crate::store::import::ImportOptions;

/// One thing the case saw happen.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub kind: Kind,
    pub at: DateTime<Utc>,
    /// The kind's fields (see [`Kind::fields`]) but `at`.
    pub fields: BTreeMap<&'static str, String>,
}

impl Observed {
    fn new(kind: Kind, at: DateTime<Utc>, workflow: &str, contact: &str) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert("workflow", workflow.to_string());
        fields.insert("contact", contact.to_string());
        Observed { kind, at, fields }
    }

    fn with(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.fields.insert(k, v.into());
        self
    }
}

/// Runs `case` with `project`'s workflows, settings and templates.
pub async fn run_case(project: &mut Project, case: &Case) -> Result<Vec<Observed>> {
    // Switch on what the case enables, for this case only.
    let mut switched = Vec::new();
    for w in project.workflows.iter_mut() {
        if case.enable.contains(&w.name) && !w.enabled {
            w.enabled = true;
            switched.push(w.name.clone());
        }
    }
    let result = run_enabled(project, case).await;
    for w in project.workflows.iter_mut() {
        if switched.contains(&w.name) {
            w.enabled = false;
        }
    }
    result
}

async fn run_enabled(project: &Project, case: &Case) -> Result<Vec<Observed>> {
    let store = Store::open("sqlite::memory:")
        .await
        .context("opening the in-memory store")?;
    match &case.contacts {
        Contacts::Inline(list) => {
            for (_, c) in list {
                store
                    .upsert_contact(c, case.start)
                    .await
                    .with_context(|| format!("adding contact {}", c.id))?;
            }
        }
        Contacts::Csv(_, path) => {
            let opts = ImportOptions {
                fields: project.settings.fields.clone(),
                tz: project.settings.timezone,
                encoding: None,
                dry_run: false,
                check: None,
            };
            let report = store
                .import_csv_with(path, case.start, &opts, |_| {})
                .await
                .with_context(|| format!("importing {}", path.display()))?;
            if let Some(bad) = report.bad.first() {
                anyhow::bail!("{}:{}: {}", path.display(), bad.line, bad.reason);
            }
        }
    }
    let mut sim = Simulation::new(
        &store,
        project,
        SimOptions {
            at: case.start,
            until: case.until,
            all_contacts: false,
        },
    )
    .await?;
    let mut planner = sim.planner().await?;
    let mut seen: Vec<Observed> = Vec::new();
    // Enrollments started in workflows with a goal: (workflow, contact, since).
    let mut entered: Vec<(String, String, DateTime<Utc>)> = Vec::new();
    let mut collect = |d: &sources::Decided<'_>, when: DateTime<Utc>| -> Result<()> {
        if let Start::New { .. } = d.start
            && d.workflow.goal.is_some()
        {
            entered.push((d.workflow.name.clone(), d.contact_id.clone(), when));
        }
        for s in &d.plan.steps {
            let o = |k| Observed::new(k, when, &s.workflow, &s.contact_id);
            let item = match &s.action {
                Action::Send {
                    channel,
                    to,
                    subject,
                    body,
                    at,
                    ..
                } => {
                    let mut o = Observed::new(Kind::Send, *at, &s.workflow, &s.contact_id)
                        .with("step", &s.step)
                        .with("channel", channel)
                        .with("to", to)
                        .with("body", body);
                    if let Some(subj) = subject {
                        o = o.with("subject", subj);
                    }
                    o
                }
                Action::Assign { salesperson, .. } => o(Kind::Assign)
                    .with("step", &s.step)
                    .with("salesperson", salesperson),
                Action::Notify {
                    salesperson,
                    channel,
                    body,
                } => {
                    let o = o(Kind::Notify)
                        .with("step", &s.step)
                        .with("salesperson", salesperson)
                        .with("channel", channel);
                    match body {
                        Ok(b) => o.with("body", b),
                        Err(_) => o,
                    }
                }
                Action::Webhook { channel, .. } => o(Kind::Webhook)
                    .with("step", &s.step)
                    .with("channel", channel),
                Action::Skip { reason } => o(Kind::Skip)
                    .with("step", &s.step)
                    .with("reason", reason.to_string()),
                // The holdout is recorded as arm `holdout` at step `@holdout`.
                Action::Split { arm } => o(Kind::Arm).with("arm", arm),
                _ => continue,
            };
            seen.push(item);
        }
        Ok(())
    };
    for ev in &case.events {
        sim.run_to(&mut planner, ev.at, &mut collect).await?;
        let exists = store.contact(&ev.contact).await?.is_some();
        if !exists {
            anyhow::bail!("no contact \"{}\" in the case's contacts", ev.contact);
        }
        match &ev.what {
            Happening::Event { name, properties } => {
                store
                    .record_event(
                        &ev.contact,
                        name,
                        ev.at,
                        &serde_json::Value::Object(properties.clone()),
                    )
                    .await?;
            }
            Happening::Tags { add, remove } => {
                let added = store.add_tags(&ev.contact, add, ev.at).await?;
                let removed = store.remove_tags(&ev.contact, remove).await?;
                planner.tags_changed_outside(&ev.contact, &added, &removed);
            }
        }
        sim.absorb_store_writes().await?;
    }
    sim.run_to(&mut planner, case.until, &mut collect).await?;

    // Conversions: the goal reached within its window after entering, by
    // the end of the case (as `nurture report` counts them).
    for (wf_name, contact_id, since) in entered {
        let Some(wf) = project.workflow(&wf_name) else {
            continue;
        };
        let Some(goal) = &wf.goal else { continue };
        let Some(stored) = store.contact(&contact_id).await? else {
            continue;
        };
        let mut c = planner.current(&stored).into_owned();
        let names = sources::event_names(wf);
        if !names.is_empty() {
            let mut events = store
                .events_of(std::slice::from_ref(&contact_id), &names)
                .await?;
            c.events = events.remove(&contact_id).unwrap_or_default();
        }
        if let Some(at) = goal.converted_at(&c, case.until, since) {
            seen.push(Observed::new(Kind::Converted, at, &wf_name, &contact_id));
        }
    }
    store.close().await;
    seen.sort_by_key(|o| o.at);
    Ok(seen)
}
