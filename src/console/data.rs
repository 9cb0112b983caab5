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

mod contacts;
mod dry_run;
mod reports;
mod workflows;

pub use contacts::*;
pub use dry_run::*;
pub use reports::*;
pub use workflows::*;

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
