//! The HTTP API in-process on a loopback port, against a real SQLite file:
//! auth, every route's effect in the tables, and JSON errors for every kind
//! of malformed request.

use std::sync::Arc;
use std::time::Duration;

use nurture::api::{ApiState, serve};
use nurture::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support;

const TOKEN: &str = "s3cret-token";

struct Api {
    base: String,
    store: Store,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start(token: Option<&str>) -> Api {
        // reqwest is built without a default TLS provider; loopback HTTP needs none,
        // but the client builder wants one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let url = support::db::url_for(dir.path());
        let store = Store::open(&url).await.unwrap();
        let wake = Arc::new(Notify::new());
        let state = ApiState {
            store: store.clone(),
            token: token.map(str::to_string),
            wake: wake.clone(),
            project: None,
            channel_names: Some(Arc::new(|| {
                ["sms", "email", "wecom"].map(String::from).to_vec()
            })),
            unsubscribe_keys: Default::default(),
            funnel_read: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state, shutdown.clone()));
        Api {
            base,
            store,
            wake,
            shutdown,
            server,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.post(path).json(&body).send().await.unwrap();
        answer(r).await
    }

    async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let r = self
            .post(path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
            .fetch_one(self.store.db())
            .await
            .unwrap()
    }

    async fn woken(&self) -> bool {
        tokio::time::timeout(Duration::from_millis(200), self.wake.notified())
            .await
            .is_ok()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let res = tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .expect("the server stops on the token")
            .unwrap();
        assert!(res.is_ok());
    }
}

/// Status and JSON body; fails when an answer is not JSON.
async fn answer(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    assert!(
        ct.starts_with("application/json"),
        "{status}: content-type {ct:?}, body {text:?}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().expect("an error message")
}

#[tokio::test]
async fn bearer_auth_guards_v1_only() {
    let api = Api::start(Some(TOKEN)).await;
    let url = format!("{}/v1/contacts", api.base);
    // No token.
    let r = api
        .client
        .post(&url)
        .json(&json!({"id": "c1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (s, v) = answer(r).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(error_of(&v).contains("missing bearer token"));
    // Wrong token, and the right token with a different scheme.
    for auth in [
        "Bearer nope",
        "Bearer s3cret-tokenX",
        "Basic s3cret-token",
        "Bearer ",
    ] {
        let r = api
            .client
            .post(&url)
            .header("authorization", auth)
            .json(&json!({"id": "c1"}))
            .send()
            .await
            .unwrap();
        let (s, v) = answer(r).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth}");
        assert!(!error_of(&v).is_empty());
    }
    assert_eq!(api.count("SELECT count(*) FROM contacts").await, 0);
    // The scheme is case-insensitive.
    let r = api
        .client
        .post(&url)
        .header("authorization", format!("bearer {TOKEN}"))
        .json(&json!({"id": "c1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Probes are open.
    let r = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    api.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_v1_is_closed() {
    let api = Api::start(None).await;
    let r = api
        .client
        .post(format!("{}/v1/contacts", api.base))
        .json(&json!({"id": "c1"}))
        .send()
        .await
        .unwrap();
    let (s, v) = answer(r).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(error_of(&v).contains("NURTURE_API_TOKEN"), "{v}");
    // Even a request carrying some token.
    let (s, _) = api.post_json("/v1/contacts", json!({"id": "c1"})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(api.count("SELECT count(*) FROM contacts").await, 0);
    let r = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    api.stop().await;
}

#[tokio::test]
async fn contacts_are_created_then_updated() {
    let api = Api::start(Some(TOKEN)).await;
    let body = json!({
        "id": "c1", "name": "Ada", "email": "ada@example.com", "phone": null,
        "timezone": "Europe/London", "created_at": "2026-01-31T09:00:00+08:00",
        "tags": ["vip", "new"], "city": "Shanghai", "attributes": {"score": 7}
    });
    let (s, v) = api.post_json("/v1/contacts", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v, json!({"id": "c1", "result": "created"}));
    assert!(api.woken().await);
    let c = api.store.contact("c1").await.unwrap().unwrap();
    assert_eq!(c.name.as_deref(), Some("Ada"));
    assert_eq!(c.phone, None);
    assert_eq!(c.attrs["city"], json!("Shanghai"));
    assert_eq!(c.attrs["score"], json!(7));
    assert_eq!(c.created_at.to_rfc3339(), "2026-01-31T01:00:00+00:00");
    assert_eq!(c.tags.len(), 2);
    // The same again: 200, unchanged, and the scheduler is not woken.
    let (s, v) = api.post_json("/v1/contacts", body).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"], "unchanged");
    assert!(!api.woken().await);
    // A change: 200 updated; absent fields stay; null removes an attribute.
    let (s, v) = api
        .post_json(
            "/v1/contacts",
            json!({"id": "c1", "name": "Ada L.", "city": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"], "updated");
    let c = api.store.contact("c1").await.unwrap().unwrap();
    assert_eq!(c.name.as_deref(), Some("Ada L."));
    assert_eq!(c.email.as_deref(), Some("ada@example.com"));
    assert!(!c.attrs.contains_key("city"));
    assert_eq!(
        api.count("SELECT count(*) FROM event_log WHERE kind = 'contact_created'")
            .await,
        1
    );
    api.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_problem() {
    let api = Api::start(Some(TOKEN)).await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "/v1/contacts",
            r#"{"id": "c1", "name": }"#,
            "invalid JSON at line 1",
        ),
        ("/v1/contacts", "", "the body is empty"),
        ("/v1/contacts", "[1, 2]", "must be a JSON object"),
        ("/v1/contacts", r#"{"name": "Ada"}"#, "\"id\" is required"),
        ("/v1/contacts", r#"{"id": "  "}"#, "\"id\" is empty"),
        (
            "/v1/contacts",
            r#"{"id": 42}"#,
            "field \"id\": expected a string, got a number",
        ),
        (
            "/v1/contacts",
            r#"{"id": "c1", "name": 5}"#,
            "field \"name\": expected a string",
        ),
        (
            "/v1/contacts",
            r#"{"id": "c1", "tags": "vip"}"#,
            "field \"tags\": expected an array",
        ),
        (
            "/v1/contacts",
            r#"{"id": "c1", "unsubscribed": "yes"}"#,
            "field \"unsubscribed\"",
        ),
        (
            "/v1/contacts",
            r#"{"id": "c1", "created_at": "last tuesday"}"#,
            "field \"created_at\": \"last tuesday\" is not an RFC 3339 timestamp",
        ),
        (
            "/v1/contacts",
            r#"{"id": "c1", "timezone": "Mars/Base"}"#,
            "unknown timezone",
        ),
        (
            "/v1/contacts",
            r#"{"id": "c1", "prefs": {"a": 1}}"#,
            "field \"prefs\"",
        ),
        (
            "/v1/events",
            r#"{"contact_id": "c1", "name": "buy", "at": "2026-13-01"}"#,
            "field \"at\"",
        ),
        (
            "/v1/events",
            r#"{"contact_id": "c1"}"#,
            "\"name\" is required",
        ),
        (
            "/v1/events",
            r#"{"contact_id": "c1", "name": "buy", "properties": [1]}"#,
            "field \"properties\": expected an object",
        ),
        (
            "/v1/events",
            r#"{"contact_id": "c1", "name": "buy", "when": "now"}"#,
            "unknown field \"when\"",
        ),
        ("/v1/contacts/c1/tags", r#"{"add": "vip"}"#, "field \"add\""),
        (
            "/v1/contacts/c1/tags",
            r#"{}"#,
            "give \"add\" or \"remove\"",
        ),
        (
            "/v1/contacts/c1/tags",
            r#"{"ad": ["x"]}"#,
            "did you mean \"add\"",
        ),
        (
            "/v1/contacts/c1/unsubscribe",
            r#"{"channel": 3}"#,
            "field \"channel\"",
        ),
    ];
    for (path, body, want) in cases {
        let (s, v) = api.post_raw(path, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        assert!(
            error_of(&v).contains(want),
            "{path} {body}: {:?} does not contain {want:?}",
            error_of(&v)
        );
    }
    // A body that is not JSON at all.
    let r = api
        .post("/v1/contacts")
        .header("content-type", "text/csv")
        .body("id\nc1\n")
        .send()
        .await
        .unwrap();
    let (s, v) = answer(r).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(error_of(&v).contains("JSON"));
    assert_eq!(api.count("SELECT count(*) FROM contacts").await, 0);
    api.stop().await;
}

#[tokio::test]
async fn huge_bodies_get_413() {
    let api = Api::start(Some(TOKEN)).await;
    let big = format!(
        r#"{{"id": "c1", "notes": "{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (s, v) = api.post_raw("/v1/contacts", &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&v).contains("larger than the limit"));
    assert_eq!(api.count("SELECT count(*) FROM contacts").await, 0);
    api.stop().await;
}

#[tokio::test]
async fn tags_events_and_unsubscribe_reach_the_store() {
    let api = Api::start(Some(TOKEN)).await;
    let (s, _) = api.post_json("/v1/contacts", json!({"id": "c1"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(api.woken().await);

    // Tags.
    let (s, v) = api
        .post_json("/v1/contacts/c1/tags", json!({"add": ["vip", "trial"]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["added"], json!(["vip", "trial"]));
    assert!(api.woken().await);
    let (s, v) = api
        .post_json(
            "/v1/contacts/c1/tags",
            json!({"add": ["vip"], "remove": ["trial", "nope"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"id": "c1", "added": [], "removed": ["trial"]}));
    assert_eq!(
        api.count("SELECT count(*) FROM event_log WHERE kind = 'tag_added' AND contact_id = 'c1'")
            .await,
        2
    );
    assert_eq!(
        api.count("SELECT count(*) FROM event_log WHERE kind = 'tag_removed' AND name = 'trial'")
            .await,
        1
    );
    assert_eq!(api.count("SELECT count(*) FROM contact_tags").await, 1);
    let (s, v) = api
        .post_json("/v1/contacts/ghost/tags", json!({"add": ["x"]}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("ghost"));

    // Events.
    let (s, v) = api
        .post_json(
            "/v1/events",
            json!({"contact_id": "c1", "name": "purchase", "at": "2026-03-01T10:00:00Z",
                   "properties": {"amount": 99}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["name"], "purchase");
    assert!(v["event_id"].as_i64().is_some());
    assert!(api.woken().await);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM event_log WHERE kind = 'event' AND name = 'purchase' \
             AND at = 1772359200000"
        )
        .await,
        1
    );
    // Read as JSON text and parsed here: the same SQL on both stores.
    let props: String = sqlx::query_scalar("SELECT properties FROM events")
        .fetch_one(api.store.db())
        .await
        .unwrap();
    let props: Value = serde_json::from_str(&props).unwrap();
    assert_eq!(props["amount"], 99);
    // Without `at`: now.
    let (s, _) = api
        .post_json("/v1/events", json!({"contact_id": "c1", "name": "visit"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = api
        .post_json(
            "/v1/events",
            json!({"contact_id": "nobody", "name": "visit"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("nobody"), "{v}");
    assert_eq!(api.count("SELECT count(*) FROM events").await, 2);

    // A channel that is not in the settings is refused (it would be an
    // opt-out that does nothing), with a suggestion.
    for (ch, hint) in [
        ("SMS", "did you mean \"sms\"?"),
        ("pigeon", "channels: sms, email, wecom"),
    ] {
        let (s, v) = api
            .post_json("/v1/contacts/c1/unsubscribe", json!({"channel": ch}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ch}: {v}");
        assert!(error_of(&v).contains(hint), "{ch}: {v}");
    }
    assert_eq!(api.count("SELECT count(*) FROM contact_opt_outs").await, 0);
    // Unsubscribe from one channel, then from all (an empty body).
    let (s, v) = api
        .post_json("/v1/contacts/c1/unsubscribe", json!({"channel": "sms"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"], "unsubscribed");
    assert_eq!(
        api.count(
            "SELECT count(*) FROM contact_opt_outs WHERE contact_id = 'c1' AND channel = 'sms'"
        )
        .await,
        1
    );
    let (s, v) = api.post_raw("/v1/contacts/c1/unsubscribe", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["channel"], Value::Null);
    assert_eq!(
        api.count("SELECT unsubscribed FROM contacts WHERE id = 'c1'")
            .await,
        1
    );
    let (_, v) = api.post_raw("/v1/contacts/c1/unsubscribe", "{}").await;
    assert_eq!(v["result"], "unchanged");
    let (s, _) = api.post_raw("/v1/contacts/ghost/unsubscribe", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    api.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let api = Api::start(Some(TOKEN)).await;
    let r = api
        .client
        .get(format!("{}/nope", api.base))
        .send()
        .await
        .unwrap();
    let (s, v) = answer(r).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("/nope"));
    let r = api
        .client
        .get(format!("{}/v1/contacts", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (s, _) = answer(r).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    api.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics() {
    let api = Api::start(Some(TOKEN)).await;
    let r = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    let (s, v) = answer(r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");

    nurture::metrics::global().send("sms", "sent");
    sqlx::query(
        "INSERT INTO outbox (id, workflow, contact_id, step_id, channel, recipient, body, status, \
         not_before, next_attempt_at, created_at) VALUES \
         ('m1', 'w', 'c1', '0', 'sms', '+1', 'hi', 'queued', 0, 0, 0), \
         ('m2', 'w', 'c1', '1', 'sms', '+1', 'hi', 'queued', 0, 0, 0), \
         ('m3', 'w', 'c1', '2', 'sms', '+1', 'hi', 'sent', 0, 0, 0)",
    )
    .execute(api.store.db())
    .await
    .unwrap();
    let r = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    assert!(text.contains("nurture_outbox_queue_depth 2"), "{text}");
    assert!(text.contains("nurture_sends_total"), "{text}");

    // A closed store: 503.
    api.store.close().await;
    let r = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    let (s, v) = answer(r).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!error_of(&v).is_empty());
    api.stop().await;
}

#[tokio::test]
async fn contact_ids_are_capped_at_128_bytes() {
    let api = Api::start(Some(TOKEN)).await;
    let ok = "x".repeat(128);
    let (s, _) = api.post_json("/v1/contacts", json!({"id": ok})).await;
    assert_eq!(s, StatusCode::CREATED);
    // 43 three-byte characters: 129 bytes.
    let long = "客".repeat(43);
    let (s, v) = api.post_json("/v1/contacts", json!({"id": long})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        error_of(&v).contains("is 129 bytes long; at most 128 are accepted"),
        "{v}"
    );
    assert_eq!(api.count("SELECT count(*) FROM contacts").await, 1);
    api.stop().await;
}
