//! Errors as the API answers them (`{"error": "..."}` with a status), the
//! JSON body extractor that turns every malformed body into a 400 naming the
//! problem (never axum's plain-text rejections), and the field readers the
//! handlers use to say which field is wrong and why.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::store::StoreError;

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UnknownContact(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Invalid(_) => ApiError::bad_request(e.to_string()),
            other => {
                tracing::error!(error = %other, "store error while serving the API");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

/// The largest body the API reads.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A request body that must be a JSON object. An empty body is an empty
/// object only where the route says so ([`OptionalJsonObject`]).
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

/// Like [`JsonObject`], but an empty body reads as `{}`.
#[derive(Debug)]
pub struct OptionalJsonObject(pub Map<String, Value>);

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        // curl -d without -H sends form encoding; a missing header is fine.
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/x-www-form-urlencoded"
    {
        // Form encoding is what `curl -d` sends by default; the body is
        // still read as JSON.
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body must be JSON (Content-Type: application/json), not {essence:?}"),
        ))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    check_content_type(req.headers())?;
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the limit of {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::new(
                r.status(),
                format!("cannot read the body: {}", r.body_text()),
            )
        }
    })
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON at line {} column {}: {}",
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        ))
    })?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!(
            "the body must be a JSON object, not {}",
            type_name(&other)
        ))),
    }
}

/// serde_json appends " at line L column C"; we say it first.
fn strip_position(s: &str) -> &str {
    match s.rfind(" at line ") {
        Some(i) => &s[..i],
        None => s,
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "the body is empty: expected a JSON object",
            ));
        }
        parse_object(&bytes).map(JsonObject)
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonObject(Map::new()));
        }
        parse_object(&bytes).map(OptionalJsonObject)
    }
}

// ---------------------------------------------------------------------------
// Field readers: each says which field is wrong and what was expected.

/// `a string`, `a number`, ... for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(field: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::bad_request(format!(
        "field \"{field}\": expected {expected}, got {}",
        type_name(got)
    ))
}

/// A string field; absent or null is `None`.
pub fn opt_string(m: &mut Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match m.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong(field, "a string", &other)),
    }
}

/// A required, non-blank string field.
pub fn req_string(m: &mut Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match opt_string(m, field)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("field \"{field}\" is empty"))),
        None => Err(ApiError::bad_request(format!(
            "field \"{field}\" is required"
        ))),
    }
}

pub fn opt_bool(m: &mut Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match m.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(wrong(field, "true or false", &other)),
    }
}

/// An RFC 3339 timestamp field.
pub fn opt_time(
    m: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match opt_string(m, field)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "field \"{field}\": {s:?} is not an RFC 3339 timestamp like \
                     2026-01-31T09:00:00+08:00 ({e})"
                ))
            }),
    }
}

/// A list of strings; absent or null is empty.
pub fn string_list(m: &mut Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match m.remove(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(wrong(&format!("{field}[{i}]"), "a string", &other)),
            })
            .collect(),
        Some(other) => Err(wrong(field, "an array of strings", &other)),
    }
}

/// Refuses keys left over after the known ones were taken.
pub fn no_other_fields(m: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match m.keys().next() {
        None => Ok(()),
        Some(k) => {
            let hint = crate::diagnostics::did_you_mean(k, known.iter().copied())
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_default();
            Err(ApiError::bad_request(format!(
                "unknown field \"{k}\" (expected {}){hint}",
                known
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_readers_name_the_field() {
        let mut m = parse_object(br#"{"id": 5, "tags": ["a", 1], "at": "yesterday"}"#).unwrap();
        assert_eq!(
            req_string(&mut m, "id").unwrap_err().message,
            "field \"id\": expected a string, got a number"
        );
        assert_eq!(
            string_list(&mut m, "tags").unwrap_err().message,
            "field \"tags[1]\": expected a string, got a number"
        );
        assert!(
            opt_time(&mut m, "at")
                .unwrap_err()
                .message
                .starts_with("field \"at\": \"yesterday\" is not an RFC 3339 timestamp")
        );
        let e = parse_object(b"{\"a\": }").unwrap_err();
        assert!(
            e.message.starts_with("invalid JSON at line 1 column 7"),
            "{}",
            e.message
        );
        assert_eq!(
            parse_object(b"[1]").unwrap_err().message,
            "the body must be a JSON object, not an array"
        );
        let mut m = parse_object(br#"{"chanel": "sms"}"#).unwrap();
        assert_eq!(opt_string(&mut m, "channel").unwrap(), None);
        assert_eq!(
            no_other_fields(&m, &["channel"]).unwrap_err().message,
            "unknown field \"chanel\" (expected \"channel\"); did you mean \"channel\"?"
        );
    }
}
