//! `GET /v1/dry-run`: the simulation of `nurture dry-run`, one page or streamed as JSON lines.

use super::*;

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
