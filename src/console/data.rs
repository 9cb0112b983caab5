//! The console's JSON read API. Every route is a `GET` under `/v1`, part of
//! the documented API (docs/console.md), authorised by
//! [`super::require_reader`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path as FsPath;

use crate::store::console;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::ConsoleState;
use crate::engine::explain_contact::explain_text;
use crate::engine::plan::Action;
use crate::engine::simulate::{SimOptions, Simulation};
use crate::engine::sources::Start;
use crate::project::Project;
use crate::store::{from_ms, to_ms};
use crate::timefmt::{parse_at, parse_until};
use crate::web::ApiError;

pub(super) type Params = Query<HashMap<String, String>>;

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot read the store: {e}"),
    )
}

fn time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
}

pub(super) fn number(
    q: &HashMap<String, String>,
    k: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match param(q, k) {
        None => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .map(|n| n.min(max))
            .map_err(|_| ApiError::bad_request(format!("{k}={s:?}: expected a whole number"))),
    }
}

/// `file` as the settings' folder sees it (`workflows/a.yaml`).
fn relative(root: &FsPath, file: &FsPath) -> String {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let abs = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    abs.strip_prefix(&root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| file.display().to_string())
}

pub(super) fn unknown_workflow(project: &Project, name: &str) -> ApiError {
    let hint =
        crate::diagnostics::did_you_mean(name, project.workflows.iter().map(|w| w.name.as_str()))
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no workflow named \"{name}\"{hint}"),
    )
}

// ---------------------------------------------------------------------------
// Workflows

/// `GET /v1/workflows`: every workflow that runs, with its file's state
/// (running version, a rejected edit and its diagnostics), activation,
/// pause and counts; and every file the daemon recorded (a workflow file
/// that never loaded shows there as `broken`, not running).
pub async fn workflows(State(st): State<ConsoleState>) -> Result<Json<Value>, ApiError> {
    let project = st.project();
    let tz = project.settings.timezone;
    let root = project.settings.root.clone();
    let now = Utc::now();
    let counts = st.store.workflow_counts(now).await.map_err(internal)?;
    let files = st.store.file_states().await.map_err(internal)?;
    let states = st.store.workflow_states().await.map_err(internal)?;
    let file_json = |f: &crate::store::status::FileState| {
        json!({
            "file": relative(&root, FsPath::new(&f.file)),
            "state": f.state,
            "running_version": f.running_hash,
            "loaded_at": f.loaded_at.map(|t| time(t, tz)),
            "rejected_version": f.rejected_hash,
            "rejected_at": f.rejected_at.map(|t| time(t, tz)),
            "diagnostics": f.diagnostics.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>(),
        })
    };
    let mut list = Vec::new();
    for wf in &project.workflows {
        let rel = relative(&root, &wf.file);
        let file = files
            .iter()
            .find(|f| relative(&root, FsPath::new(&f.file)) == rel);
        let state = if !wf.enabled {
            "disabled"
        } else if file.is_some_and(|f| f.state == "broken") {
            "edit_rejected"
        } else {
            "loaded"
        };
        let ws = states.get(&wf.name);
        let c = counts.get(&wf.name).cloned().unwrap_or_default();
        list.push(json!({
            "name": wf.name,
            "description": wf.description,
            "file": rel,
            "state": state,
            "enabled": wf.enabled,
            "trigger": wf.trigger.kind(),
            "activated_at": ws.map(|s| time(s.activated_at, tz)),
            "paused": ws.and_then(|s| s.paused.as_ref()).map(|(at, why)| json!({"at": time(*at, tz), "reason": why})),
            "file_state": file.map(file_json),
            "counts": {
                "enrolled": c.enrolled, "active": c.active, "waiting": c.waiting, "done": c.done,
                "exited": c.exited, "sent": c.sent, "failed": c.failed, "queued": c.queued,
                "cancelled": c.cancelled, "skipped": c.skipped,
            },
        }));
    }
    Ok(Json(json!({
        "timezone": tz.name(),
        "workflows": list,
        "files": files.iter().map(file_json).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/workflows/{name}/graph`: the diagram (nodes laid out, edges)
/// and live counts per node.
pub async fn workflow_graph(
    State(st): State<ConsoleState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let project = st.project();
    let Some(wf) = project.workflows.iter().find(|w| w.name == name) else {
        return Err(unknown_workflow(&project, &name));
    };
    let g = super::graph::graph(wf);
    match param(&q, "format") {
        None | Some("json") => {}
        Some(f @ ("svg" | "mermaid" | "dot")) => {
            let (ct, body) = match f {
                "svg" => ("image/svg+xml; charset=utf-8", super::graph::svg(&g)),
                "mermaid" => ("text/plain; charset=utf-8", super::graph::mermaid(&g)),
                _ => ("text/vnd.graphviz; charset=utf-8", super::graph::dot(&g)),
            };
            return Ok(
                ([(header::CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response(),
            );
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format={other:?}: expected json, svg, mermaid or dot"
            )));
        }
    }
    let counts = step_counts(&st, &name).await.map_err(internal)?;
    let mut v = serde_json::to_value(&g).map_err(internal)?;
    v["counts"] = counts;
    Ok(Json(v).into_response())
}

/// Live counts per node: `trigger` (entered), each step id (reached, by
/// action, skipped by reason, messages by status, enrollments waiting to
/// run it or held before it), `end` (done), `goal` (converted, and other
/// exits by reason).
async fn step_counts(st: &ConsoleState, wf: &str) -> sqlx::Result<Value> {
    let reads = st.store.console();
    let mut nodes: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let bump = |nodes: &mut BTreeMap<String, serde_json::Map<String, Value>>,
                node: &str,
                path: &[&str],
                n: i64| {
        let mut m = nodes.entry(node.to_string()).or_default();
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                let cur = m.get(*k).and_then(Value::as_i64).unwrap_or(0);
                m.insert(k.to_string(), json!(cur + n));
            } else {
                m = m
                    .entry(k.to_string())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("an object");
            }
        }
    };
    for (step, action, n) in reads.step_actions(wf).await? {
        bump(&mut nodes, &step, &["reached"], n);
        bump(&mut nodes, &step, &[action.as_str()], n);
    }
    for (step, detail, n) in reads.skips(wf).await? {
        let code = detail
            .as_deref()
            .and_then(|d| d.split(':').next())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown")
            .to_string();
        bump(&mut nodes, &step, &["skipped", code.as_str()], n);
    }
    for (step, status, n) in reads.messages_by_step(wf).await? {
        let key = match status.as_str() {
            "sent" => "sent",
            "dead" => "failed",
            "cancelled" => "cancelled",
            _ => "queued",
        };
        bump(&mut nodes, &step, &["messages", key], n);
    }
    for (step, status, reason, n) in reads.enrollments_by_step(wf).await? {
        bump(&mut nodes, "trigger", &["entered"], n);
        match status.as_str() {
            "active" | "held" => {
                if let Some(step) = step {
                    let key = if status == "held" { "held" } else { "waiting" };
                    bump(&mut nodes, &step, &[key], n);
                }
            }
            "done" => bump(&mut nodes, "end", &["done"], n),
            _ => {
                let code = reason
                    .as_deref()
                    .and_then(|d| d.split(':').next())
                    .unwrap_or("unknown")
                    .trim()
                    .to_string();
                if code == "goal_reached" {
                    bump(&mut nodes, "goal", &["converted"], n);
                } else {
                    bump(&mut nodes, "goal", &["exited", code.as_str()], n);
                }
            }
        }
    }
    Ok(Value::Object(
        nodes
            .into_iter()
            .map(|(k, v)| (k, Value::Object(v)))
            .collect(),
    ))
}

// ---------------------------------------------------------------------------
// Reports

/// `GET /v1/report/workflows?days=30&workflow=NAME`: per workflow and day
/// (in the settings' timezone), contacts entered, messages sent and
/// contacts converted (left on their `exit_when` goal).
pub async fn report_workflows(
    State(st): State<ConsoleState>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let project = st.project();
    let tz = project.settings.timezone;
    let days = number(&q, "days", 30, 366)?.max(1) as i64;
    let only = param(&q, "workflow");
    if let Some(n) = only
        && !project.workflows.iter().any(|w| w.name == n)
    {
        return Err(unknown_workflow(&project, n));
    }
    let now = Utc::now();
    let offset_ms = i64::from(
        tz.offset_from_utc_datetime(&now.naive_utc())
            .fix()
            .local_minus_utc(),
    ) * 1000;
    const DAY: i64 = 86_400_000;
    let today = (to_ms(now) + offset_ms).div_euclid(DAY);
    let first = today - days + 1;
    let since = first * DAY - offset_ms;
    let labels: Vec<String> = (first..=today)
        .map(|d| from_ms(d * DAY).format("%Y-%m-%d").to_string())
        .collect();
    let mut series: BTreeMap<String, BTreeMap<&'static str, Vec<i64>>> = BTreeMap::new();
    for wf in project
        .workflows
        .iter()
        .filter(|w| only.is_none_or(|o| o == w.name))
    {
        let s = series.entry(wf.name.clone()).or_default();
        for k in ["entered", "sent", "converted"] {
            s.insert(k, vec![0; days as usize]);
        }
    }
    let queries: [(&'static str, console::Daily); 3] = [
        ("entered", console::Daily::Entered),
        ("sent", console::Daily::Sent),
        ("converted", console::Daily::Converted),
    ];
    for (key, which) in queries {
        for (name, day, n) in st
            .store
            .console()
            .daily(which, offset_ms, since)
            .await
            .map_err(internal)?
        {
            if let Some(v) = series.get_mut(&name).and_then(|s| s.get_mut(key))
                && let Some(slot) = v.get_mut((day - first) as usize)
            {
                *slot += n;
            }
        }
    }
    let workflows: Vec<Value> = series
        .into_iter()
        .map(|(name, s)| {
            let total = |k: &str| s.get(k).map(|v| v.iter().sum::<i64>()).unwrap_or(0);
            // A split or a holdout: the page shows it per arm
            // (`/v1/report/workflows/{name}`).
            let experiment = project.workflow(&name).is_some_and(|w| {
                w.holdout.is_some()
                    || w
                        .all_steps()
                        .iter()
                        .any(|s| matches!(s.action, crate::workflow::StepAction::Split(_)))
            });
            json!({
                "workflow": name,
                "experiment": experiment,
                "totals": {"entered": total("entered"), "sent": total("sent"), "converted": total("converted")},
                "entered": s["entered"], "sent": s["sent"], "converted": s["converted"],
            })
        })
        .collect();
    Ok(Json(json!({
        "timezone": tz.name(),
        "days": labels,
        "workflows": workflows,
    })))
}

/// `GET /v1/report/channels`: delivery by channel from the outbox (sent,
/// retried attempts, dead, cancelled, waiting), the queue depth exactly as
/// `/metrics` counts it, and this process's `nurture_sends_total` counters
/// (`since_start`; empty for `nurture console`, which sends nothing).
pub async fn report_channels(State(st): State<ConsoleState>) -> Result<Json<Value>, ApiError> {
    let mut channels = BTreeMap::new();
    for name in st.project().settings.channels.keys() {
        channels.insert(
            name.clone(),
            json!({"sent": 0, "retried": 0, "dead": 0, "cancelled": 0, "queued": 0, "since_start": {}}),
        );
    }
    for t in st
        .store
        .console()
        .channel_totals()
        .await
        .map_err(internal)?
    {
        channels.insert(
            t.channel,
            json!({"sent": t.sent, "dead": t.dead, "cancelled": t.cancelled, "queued": t.queued, "retried": t.retried, "since_start": {}}),
        );
    }
    for line in crate::metrics::render().lines() {
        let Some(rest) = line.strip_prefix("nurture_sends_total{") else {
            continue;
        };
        let label = |k: &str| {
            let start = rest.find(&format!("{k}=\""))? + k.len() + 2;
            let end = rest[start..].find('"')? + start;
            Some(rest[start..end].to_string())
        };
        let (Some(ch), Some(outcome)) = (label("channel"), label("outcome")) else {
            continue;
        };
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let entry = channels.entry(ch).or_insert_with(|| {
            json!({"sent": 0, "retried": 0, "dead": 0, "cancelled": 0, "queued": 0, "since_start": {}})
        });
        entry["since_start"][outcome] = json!(n as i64);
    }
    let depth = st.store.outbox_queue_depth().await.map_err(internal)?;
    Ok(Json(json!({
        "queue_depth": depth,
        "channels": channels.into_iter().map(|(k, mut v)| { v["channel"] = json!(k); v }).collect::<Vec<_>>(),
    })))
}

// ---------------------------------------------------------------------------
// Dry-run

struct RowFilter {
    workflow: Option<String>,
    action: Option<String>,
    contact: Option<String>,
    channel: Option<String>,
    reason: Option<String>,
}

impl RowFilter {
    fn shows_workflow(&self, wf: &str) -> bool {
        self.workflow.as_deref().is_none_or(|w| w == wf)
    }
    fn matches(&self, s: &crate::engine::plan::PlannedStep) -> bool {
        if !self.shows_workflow(&s.workflow) {
            return false;
        }
        if self.action.as_deref().is_some_and(|a| a != s.action.name()) {
            return false;
        }
        if self
            .contact
            .as_deref()
            .is_some_and(|c| !s.contact_id.contains(c))
        {
            return false;
        }
        if let Some(ch) = &self.channel {
            match &s.action {
                Action::Send { channel, .. } if channel == ch => {}
                _ => return false,
            }
        }
        if let Some(r) = &self.reason {
            match &s.action {
                Action::Skip { reason } | Action::Exit { reason } if reason.code() == r => {}
                _ => return false,
            }
        }
        true
    }
}

/// `GET /v1/dry-run?at=&until=&workflow=&action=&contact=&channel=&reason=&offset=&limit=&all_contacts=`:
/// the dry-run of `nurture dry-run` (the same simulation), a summary per
/// workflow and one page of the matching rows (`limit` ≤ 1000; only that
/// page is kept in memory, whatever the total). `format=jsonl` streams every
/// matching row instead, one JSON object per line, as they are decided.
pub async fn dry_run(
    State(st): State<ConsoleState>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let project = st.project();
    let tz = project.settings.timezone;
    let at = match param(&q, "at") {
        Some(s) => parse_at(s, tz).map_err(ApiError::bad_request)?,
        None => Utc::now(),
    };
    let until = match param(&q, "until") {
        Some(u) => parse_until(u, at, tz).map_err(ApiError::bad_request)?,
        None => at,
    };
    if until - at > Duration::days(92) {
        return Err(ApiError::bad_request(
            "until: at most 92 days after at".to_string(),
        ));
    }
    let filter = RowFilter {
        workflow: param(&q, "workflow").map(str::to_string),
        action: param(&q, "action").map(str::to_string),
        contact: param(&q, "contact").map(str::to_string),
        channel: param(&q, "channel").map(str::to_string),
        reason: param(&q, "reason").map(str::to_string),
    };
    if let Some(n) = &filter.workflow
        && !project.workflows.iter().any(|w| &w.name == n)
    {
        return Err(unknown_workflow(&project, n));
    }
    let all_contacts = matches!(param(&q, "all_contacts"), Some("1" | "true" | "yes"));
    let opts = SimOptions {
        at,
        until,
        all_contacts,
    };
    if param(&q, "format") == Some("jsonl") {
        return Ok(stream_jsonl(st, project, opts, filter));
    }
    let offset = number(&q, "offset", 0, u64::MAX)?;
    let limit = number(&q, "limit", 50, 1000)? as usize;

    let store = st.store.clone();
    let mut sim = Simulation::new(&store, &project, opts)
        .await
        .map_err(internal)?;
    let mut planner = sim.planner().await.map_err(internal)?;
    let mut summary: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut total = 0u64;
    let mut matched = 0u64;
    let mut rows: Vec<Value> = Vec::with_capacity(limit);
    sim.run(&mut planner, |d, when| {
        if !filter.shows_workflow(&d.workflow.name) {
            return Ok(());
        }
        let s = summary.entry(d.workflow.name.clone()).or_default();
        if let Start::New { .. } = d.start {
            s.0 += 1;
        }
        for step in &d.plan.steps {
            let key = match &step.action {
                Action::Skip { reason } => format!("skip {}", reason.code()),
                Action::Exit { reason } => format!("exit {}", reason.code()),
                a => a.name().to_string(),
            };
            *s.1.entry(key).or_insert(0) += 1;
            total += 1;
            if filter.matches(step) {
                if matched >= offset && rows.len() < limit {
                    let mut v = serde_json::to_value(step.to_json_row(tz, when))?;
                    v["when"] = json!(time(when, tz));
                    rows.push(v);
                }
                matched += 1;
            }
        }
        Ok(())
    })
    .await
    .map_err(internal)?;
    let summary: Vec<Value> = project
        .workflows
        .iter()
        .filter(|w| filter.shows_workflow(&w.name))
        .map(|w| {
            let (entered, actions) = summary.remove(&w.name).unwrap_or_default();
            json!({"workflow": w.name, "trigger": w.trigger.kind(), "enabled": w.enabled,
                   "entered": entered, "actions": actions})
        })
        .collect();
    let report = &sim.report;
    Ok(Json(json!({
        "at": time(at, tz),
        "until": time(until, tz),
        "summary": summary,
        "paused": report.paused.iter().map(|(w, t, why)| json!({"workflow": w, "at": time(*t, tz), "reason": why})).collect::<Vec<_>>(),
        "total": total,
        "matched": matched,
        "offset": offset,
        "limit": limit,
        "rows": rows,
        "note": "nothing was sent or changed; simulated as the daemon would run it, assuming no new contacts or events arrive",
    }))
    .into_response())
}

/// Every matching row as JSON lines, streamed as the simulation decides
/// them: the simulation runs on a blocking thread and waits whenever the
/// client is slower (a small bounded queue), so memory stays flat.
fn stream_jsonl(
    st: ConsoleState,
    project: std::sync::Arc<Project>,
    opts: SimOptions,
    filter: RowFilter,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let handle = tokio::runtime::Handle::current();
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let tz = project.settings.timezone;
            let run = async {
                let mut sim = Simulation::new(&store, &project, opts).await?;
                let mut planner = sim.planner().await?;
                sim.run(&mut planner, |d, when| {
                    for step in d.plan.steps.iter().filter(|s| filter.matches(s)) {
                        let mut line = serde_json::to_vec(&step.to_json_row(tz, when))?;
                        line.push(b'\n');
                        let mut bytes = Bytes::from(line);
                        loop {
                            match tx.try_send(bytes) {
                                Ok(()) => break,
                                Err(tokio::sync::mpsc::error::TrySendError::Full(b)) => {
                                    bytes = b;
                                    std::thread::sleep(std::time::Duration::from_millis(2));
                                }
                                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                                    anyhow::bail!("the client went away");
                                }
                            }
                        }
                    }
                    Ok(())
                })
                .await
            };
            if let Err(e) = run.await {
                tracing::debug!(error = %e, "dry-run stream ended early");
                let line = format!("{}\n", json!({"error": e.to_string()}));
                let _ = tx.try_send(Bytes::from(line));
            }
        })
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson; charset=utf-8"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Contacts

/// `GET /v1/contacts/search?q=TEXT&limit=20`: contacts whose id is TEXT, or
/// whose id starts with it, or whose name, phone or e-mail contains it
/// (e-mail case-insensitively).
pub async fn search_contacts(
    State(st): State<ConsoleState>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let Some(text) = param(&q, "q") else {
        return Err(ApiError::bad_request(
            "q: give an id, a name, a phone number or an e-mail",
        ));
    };
    let limit = number(&q, "limit", 20, 200)? as i64;
    let rows = st
        .store
        .console()
        .search_contacts(text, limit)
        .await
        .map_err(internal)?;
    let mut out = Vec::new();
    for (id, name, phone, email, owner) in rows {
        out.push(json!({"id": id, "name": name, "phone": phone, "email": email, "owner": owner}));
    }
    Ok(Json(json!({"contacts": out})))
}

/// `GET /v1/contacts/{id}`: fields, attributes, tags, owner, consent and
/// enrollments (`nurture contacts show ID --format json` prints the same).
pub async fn contact(
    State(st): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let project = st.project();
    match contact_value(&st.store, &project.settings, &id)
        .await
        .map_err(internal)?
    {
        Some(v) => Ok(Json(v)),
        None => Err(no_contact(&id)),
    }
}

/// One contact as `GET /v1/contacts/{id}` and `contacts show` give it;
/// `None` when there is no such contact.
pub async fn contact_value(
    store: &crate::store::Store,
    settings: &crate::settings::Settings,
    id: &str,
) -> anyhow::Result<Option<Value>> {
    let tz = settings.timezone;
    let Some(c) = store.contact(id).await? else {
        return Ok(None);
    };
    let enrollments = store.enrollments_of(id).await?;
    let owner = c.owner.as_deref().map(|o| {
        let sp = settings.salesperson(o);
        json!({"id": o, "name": sp.map(|s| s.name.clone())})
    });
    let channels: Vec<Value> = settings
        .channels
        .keys()
        .map(|ch| json!({"channel": ch, "allowed": !c.unsubscribed && !c.opted_out.contains(ch)}))
        .collect();
    Ok(Some(json!({
        "id": c.id,
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "wecom_external_userid": c.wecom_external_userid,
        "timezone": c.timezone,
        "created_at": time(c.created_at, tz),
        "last_active_at": c.last_active_at.map(|t| time(t, tz)),
        "owner": owner,
        "tags": c.tags,
        "attributes": c.attrs,
        "consent": {
            "unsubscribed": c.unsubscribed,
            "opted_out": c.opted_out,
            "channels": channels,
        },
        "enrollments": enrollments.iter().map(|e| json!({
            "id": e.id,
            "workflow": e.workflow,
            "status": e.status,
            "step": e.step_id,
            "next_run_at": e.next_run_at.map(|t| time(t, tz)),
            "started_at": time(e.started_at, tz),
        })).collect::<Vec<_>>(),
    })))
}

fn no_contact(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no contact with id {id:?}"))
}

/// `GET /v1/contacts/{id}/history`: what `nurture history --contact ID`
/// shows, oldest first, each entry with its time.
pub async fn history(
    State(st): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tz = st.project().settings.timezone;
    if !st.store.contact_exists(&id).await.map_err(internal)? {
        return Err(no_contact(&id));
    }
    let entries = st.store.contact_history(&id).await.map_err(internal)?;
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut v = serde_json::to_value(e).map_err(internal)?;
        v["at"] = json!(time(e.at, tz));
        out.push(v);
    }
    Ok(Json(json!({"contact_id": id, "history": out})))
}

/// `GET /v1/contacts/{id}/explain?workflow=&at=`: `nurture dry-run
/// --explain ID` as text, for every workflow or one.
pub async fn explain(
    State(st): State<ConsoleState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let project = st.project();
    let tz = project.settings.timezone;
    let at = match param(&q, "at") {
        Some(s) => parse_at(s, tz).map_err(ApiError::bad_request)?,
        None => Utc::now(),
    };
    let only = param(&q, "workflow");
    if let Some(n) = only
        && !project.workflows.iter().any(|w| w.name == n)
    {
        return Err(unknown_workflow(&project, n));
    }
    let sim = Simulation::new(
        &st.store,
        &project,
        SimOptions {
            at,
            until: at,
            all_contacts: false,
        },
    )
    .await
    .map_err(internal)?;
    let mut planner = sim.planner().await.map_err(internal)?;
    match explain_text(&project, &st.store, &mut planner, &id, only).await {
        Ok(Some(text)) => Ok(Json(
            json!({"contact_id": id, "at": time(at, tz), "text": text}),
        )),
        Ok(None) => Err(no_contact(&id)),
        Err(e) => Err(internal(e)),
    }
}
