//! `nurture enroll WORKFLOW --existing [--dry-run]` and `nurture resume WORKFLOW`:
//! the two deliberate acts a workflow's activation and blast guard wait for.
//!
//! A workflow acts only on what happens after its activation. To reach the
//! contacts already in its audience, a marketer previews the enrollment
//! (`--dry-run`), then runs it: the same planner the daemon uses decides each
//! contact's steps, and the plans are applied in the daemon's batches. The
//! daemon (if running) delivers the messages and continues the waits.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use futures::StreamExt;

use super::{CliResult, Failure};
use crate::contact::Contact;
use crate::engine::apply::{Applied, apply_in, lock_event_log, touches_shared_counters};
use crate::engine::gates::Gates;
use crate::engine::plan::{Action, Planner};
use crate::engine::sources::{self, BATCH, Scan};
use crate::project::Project;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct EnrollArgs {
    /// The workflow.
    pub workflow: String,
    /// Enroll the contacts in the workflow's audience now (required: say it on purpose).
    #[arg(long, required = true)]
    pub existing: bool,
    /// Show what would happen, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The workflow the blast guard paused.
    pub workflow: String,
}

fn find<'p>(project: &'p Project, name: &str) -> Result<&'p crate::workflow::Workflow, Failure> {
    project.workflow(name).ok_or_else(|| {
        let names = project.workflows.iter().map(|w| w.name.as_str());
        let hint = crate::diagnostics::did_you_mean(name, names)
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        Failure::Input(format!("no workflow named \"{name}\"{hint}"))
    })
}

/// The project's store, which must exist already.
async fn open_store(project: &Project) -> Result<Store, Failure> {
    let url = project.settings.database_url();
    super::store_use::existing_store(&url, super::store_use::IMPORT_FIRST)?;
    super::store_use::open_store(&url).await
}

pub async fn enroll(config: &Path, args: EnrollArgs) -> CliResult {
    let project = super::load_project(config)?;
    let wf = find(&project, &args.workflow)?;
    if !wf.enabled {
        return Err(Failure::Input(format!(
            "workflow \"{}\" is disabled (enabled: false); enable it first",
            wf.name
        )));
    }
    super::store_use::closing(open_store(&project).await?, async |store| {
        enroll_in(store, &project, wf, &args).await
    })
    .await
}

/// [`enroll`] on an open store.
async fn enroll_in(
    store: &Store,
    project: &Project,
    wf: &crate::workflow::Workflow,
    args: &EnrollArgs,
) -> CliResult {
    let now = Utc::now();
    let assign = store
        .assign_state()
        .await
        .context("reading assignment counters")?;
    let mut planner = Planner::new(&project.settings, &project.templates, now, assign);
    planner.gates = Gates {
        states: store
            .workflow_states()
            .await
            .context("reading workflow states")?,
        unrecorded: Some(now),
    };
    // `throttle:` continues after the last message already queued, as the
    // daemon's pass does (without it, the first enrolled message went out
    // at once, next to the daemon's).
    planner.throttle_last = store
        .throttle_state(&[wf])
        .await
        .context("reading the throttle state")?;
    crate::engine::caps::load(&mut planner, store, &[wf])
        .await
        .context("reading the per-salesperson caps")?;
    let (filter, key_of, cause) = sources::scan_filter(
        wf,
        now,
        project.settings.timezone,
        store.dialect(),
        Scan::Existing,
    )
    .map_err(Failure::Other)?;
    // Read, planned and applied a batch at a time (issue 13): collecting
    // the audience first took 2.4 GB for 1.44 M contacts. The scan sees the
    // store as it began, so the decisions are those of a collected scan.
    let mut stream = store
        .scan_contacts_beside_writes(&filter.text, &filter.binds)
        .fuse();
    let mut entered = 0u64;
    let mut actions: BTreeMap<String, u64> = BTreeMap::new();
    let mut messages = 0usize;
    let mut chunk: Vec<Contact> = Vec::with_capacity(BATCH);
    loop {
        while chunk.len() < BATCH {
            match stream.next().await {
                Some(c) => chunk.push(c.context("reading contacts")?),
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let batch =
            sources::plan_scan_chunk(store, wf, &mut chunk, &key_of, &cause, &mut planner).await?;
        for d in &batch {
            entered += 1;
            for s in &d.plan.steps {
                let key = match &s.action {
                    Action::Skip { reason } => format!("skip {}", reason.code()),
                    Action::Exit { reason } => format!("exit {}", reason.code()),
                    a => a.name().to_string(),
                };
                *actions.entry(key).or_insert(0) += 1;
            }
        }
        if args.dry_run {
            continue;
        }
        let mut tx = store
            .transaction()
            .await
            .context("beginning a transaction")?;
        if touches_shared_counters(&batch) {
            lock_event_log(&mut tx).await?;
        }
        for d in &batch {
            if let Applied::Stored { messages: m, .. } =
                apply_in(&mut tx, &project.settings, d, now).await?
            {
                messages += m;
            }
        }
        tx.commit().await.context("committing the enrollments")?;
        planner.forget_planned();
    }
    let summary = actions
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    if args.dry_run {
        println!(
            "Would enroll {entered} contact(s) already in the audience of {}: {}",
            wf.name,
            if summary.is_empty() { "-" } else { &summary }
        );
        println!("Nothing was changed. Run again without --dry-run to enroll them.");
    } else {
        store
            .activate_workflows(&[wf.name.as_str()], now)
            .await
            .context("recording the activation")?;
        store
            .record_existing_done(&wf.name, now)
            .await
            .context("recording the enrollment")?;
        println!(
            "Enrolled {entered} contact(s) already in the audience of {}: {}; {messages} message(s) queued for the daemon to deliver.",
            wf.name,
            if summary.is_empty() { "-" } else { &summary }
        );
    }
    Ok(())
}

pub async fn resume(config: &Path, args: ResumeArgs) -> CliResult {
    let project = super::load_project(config)?;
    let wf = find(&project, &args.workflow)?;
    let r = super::store_use::closing(open_store(&project).await?, async |store| {
        Ok(store
            .resume_workflow(&wf.name, Utc::now())
            .await
            .context("resuming")?)
    })
    .await?;
    if !r.was_paused && r.released == 0 {
        println!("{} is not paused; nothing to do.", wf.name);
    } else {
        println!(
            "Resumed {}: {} held enrollment(s) are due now, and the daemon runs them at its next pass (start `nurture run` if none is running); the blast guard counts afresh from now.",
            wf.name, r.released
        );
    }
    Ok(())
}
