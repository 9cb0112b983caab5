//! `GET /v1/report/workflows` and `GET /v1/report/channels`.

use super::*;

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
