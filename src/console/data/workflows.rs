//! `GET /v1/workflows` and a workflow's graph with live counts per node.

use super::*;

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
    let g = crate::console::graph::graph(wf);
    match param(&q, "format") {
        None | Some("json") => {}
        Some(f @ ("svg" | "mermaid" | "dot")) => {
            let (ct, body) = match f {
                "svg" => (
                    "image/svg+xml; charset=utf-8",
                    crate::console::graph::svg(&g),
                ),
                "mermaid" => (
                    "text/plain; charset=utf-8",
                    crate::console::graph::mermaid(&g),
                ),
                _ => (
                    "text/vnd.graphviz; charset=utf-8",
                    crate::console::graph::dot(&g),
                ),
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
