//! `GET /v1/report/workflows/{name}`: one workflow's performance per split
//! arm and against its holdout — `nurture report`'s numbers (entered,
//! converted, rate and 95% interval per group, the lift over the holdout,
//! the funnel) and, per group, entered, sent and converted per day.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{Offset, TimeZone, Utc};
use serde_json::{Value, json};

use super::ConsoleState;
use super::data::{Params, internal, number, unknown_workflow};
use crate::store::{from_ms, to_ms};
use crate::web::ApiError;

/// `?days=30` (at most 366): the days of the series, ending today in the
/// settings' time zone (at today's UTC offset, as `/v1/report/workflows`).
/// The conversion numbers cover enrollments started in those days.
pub async fn report_workflow(
    State(st): State<ConsoleState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let project = st.project();
    let Some(wf) = project.workflows.iter().find(|w| w.name == name) else {
        return Err(unknown_workflow(&project, &name));
    };
    let tz = project.settings.timezone;
    let days = number(&q, "days", 30, 366)?.max(1) as i64;
    let now = Utc::now();
    let offset_ms = i64::from(
        tz.offset_from_utc_datetime(&now.naive_utc())
            .fix()
            .local_minus_utc(),
    ) * 1000;
    const DAY: i64 = 86_400_000;
    let today = (to_ms(now) + offset_ms).div_euclid(DAY);
    let first = today - days + 1;
    let since = from_ms(first * DAY - offset_ms);
    let report = crate::report::build(&st.store, wf, Some(since))
        .await
        .map_err(internal)?;
    let daily = crate::report::daily(&st.store, wf, since, offset_ms, first, days as usize)
        .await
        .map_err(internal)?;
    let labels: Vec<String> = (first..=today)
        .map(|d| from_ms(d * DAY).format("%Y-%m-%d").to_string())
        .collect();
    let groups: Vec<Value> = report
        .groups
        .iter()
        .map(|g| {
            let mut v = serde_json::to_value(g).unwrap_or_default();
            v["group"] = json!(g.group.strip_prefix("arm ").unwrap_or(&g.group));
            v["kind"] = json!(match g.group.as_str() {
                "all" => "all",
                "treatment" | "holdout" => g.group.as_str(),
                _ => "arm",
            });
            v
        })
        .collect();
    Ok(Json(json!({
        "workflow": wf.name,
        "goal": report.goal,
        "timezone": tz.name(),
        "days": labels,
        "holdout": wf.holdout.is_some(),
        "groups": groups,
        "lift": report.lift,
        "daily": daily,
        "steps": report.steps,
    })))
}
