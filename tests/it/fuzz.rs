//! Property tests over hostile input (issue 10, item 12): the workflow
//! loader and the CSV import never panic, stay within their limits, and the
//! import's counts always add up. `cargo fuzz` needs a nightly toolchain,
//! which CI does not have; these run in every `./test.sh` (bounded case
//! counts; `PROPTEST_CASES` raises them for a longer local run).

use std::path::Path;

use proptest::prelude::*;

/// YAML-ish text: keys of a workflow, flow and block syntax, anchors and
/// aliases (the expansion bombs), odd scalars.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("trigger: { contact_created: {} }\n".to_string()),
        Just("steps:\n".to_string()),
        Just("  - send: { channel: console, template: t }\n".to_string()),
        Just("  - wait: 3d\n".to_string()),
        Just("  - if: { tag: a }\n    then:\n      - tag: { add: [b] }\n".to_string()),
        Just("audience:\n".to_string()),
        Just("  all: ".to_string()),
        Just("  any: ".to_string()),
        Just("&a ".to_string()),
        Just("&b ".to_string()),
        Just("*a".to_string()),
        Just("*b".to_string()),
        Just("[*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]".to_string()),
        Just("[{tag: x}, {tag: y}]".to_string()),
        Just("{ field: city, in: [a, b] }".to_string()),
        Just("x: &a [*b, *b, *b, *b, *b, *b, *b, *b]\n".to_string()),
        Just("entry: \"once per 30d\"\n".to_string()),
        Just("schedule: { cron: \"0 9 30 2 *\" }\n".to_string()),
        Just("[[[[[[[[[[[[[[[[[[[[".to_string()),
        Just("]]]]]]]]]]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("---\n".to_string()),
        Just("!!str ".to_string()),
        Just("|\n  text\n".to_string()),
        "[a-z_]{1,8}".prop_map(|s| s),
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// CSV-ish lines: commas, quotes (closed and not), newlines, long fields.
fn csvish() -> impl Strategy<Value = String> {
    let cell = prop_oneof![
        "[a-z0-9]{0,6}".prop_map(|s| s),
        Just("\"".to_string()),
        Just("\"quoted, with comma\"".to_string()),
        Just("\"multi\nline\"".to_string()),
        Just("\"unclosed".to_string()),
        Just("\"\"".to_string()),
        Just("2026-01-01T00:00:00+08:00".to_string()),
        Just("not-a-time".to_string()),
        Just("Asia/Shanghai".to_string()),
        Just("a;b;c".to_string()),
        Just("\u{1}".to_string()),
        Just("=cmd".to_string()),
    ];
    let row = prop::collection::vec(cell, 0..5).prop_map(|cells| cells.join(","));
    prop::collection::vec(row, 0..30).prop_map(|rows| {
        let mut s = String::from("id,name,created_at,timezone,tags\n");
        for r in rows {
            s.push_str(&r);
            s.push('\n');
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// The loader gives a workflow or diagnostics, never a panic, and never
    /// takes long, whatever the aliases expand to.
    #[test]
    fn the_workflow_loader_never_panics(src in yamlish()) {
        let started = std::time::Instant::now();
        let (wf, diags) = nurture::workflow::load_str(Path::new("workflows/f.yaml"), &src);
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(2));
        if let Some(wf) = wf {
            // A workflow that loaded holds no more than the cap allows.
            prop_assert!(wf.workflow.steps.len() <= nurture::workflow::limits::MAX_WORKFLOW_VALUES);
        }
        for d in diags {
            prop_assert!(d.pos.line >= 1 || d.pos == Default::default());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Whatever the rows, the import finishes and its counts add up to the
    /// rows it read; every good row is in the store.
    #[test]
    fn import_counts_always_add_up(text in csvish()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, &text).unwrap();
        let (report, stored) = rt.block_on(async {
            let store = nurture::store::Store::open("sqlite::memory:").await.unwrap();
            let report = store.import_csv(&path, chrono::Utc::now(), |_| {}).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
                .fetch_one(store.db())
                .await
                .unwrap();
            (report, n)
        });
        prop_assert_eq!(
            report.inserted + report.updated + report.unchanged + report.bad.len() as u64,
            report.rows,
            "{:?}", report
        );
        prop_assert_eq!(stored as u64, report.inserted);
    }
}

/// One API server for all cases (in-process, on a temporary SQLite store).
struct ApiServer {
    base: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn api_server() -> &'static ApiServer {
    static SERVER: std::sync::OnceLock<ApiServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nurture.db").display());
        let base = rt.block_on(async {
            let store = nurture::store::Store::open(&url).await.unwrap();
            let state = nurture::api::ApiState {
                store,
                token: Some("t".into()),
                wake: Default::default(),
                project: None,
                channel_names: Some(std::sync::Arc::new(|| vec!["sms".to_string()])),
                unsubscribe_keys: Default::default(),
                funnel_read: Default::default(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(nurture::api::serve(listener, state, Default::default()));
            base
        });
        ApiServer {
            base,
            rt,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    })
}

/// JSON-ish bodies: the API's field names with values of every type, and
/// broken JSON.
fn bodyish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("id"),
        Just("name"),
        Just("email"),
        Just("phone"),
        Just("tags"),
        Just("attributes"),
        Just("created_at"),
        Just("last_active_at"),
        Just("timezone"),
        Just("unsubscribed"),
        Just("owner"),
        Just("contact_id"),
        Just("at"),
        Just("properties"),
        Just("add"),
        Just("remove"),
        Just("channel"),
        Just("city"),
        Just(""),
    ];
    let value = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("0".to_string()),
        Just("-1e400".to_string()),
        Just("\"\"".to_string()),
        Just("\"c1\"".to_string()),
        Just("\"2026-01-01T00:00:00+08:00\"".to_string()),
        Just("\"Asia/Nowhere\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("[\"a\", 1, null]".to_string()),
        Just("{\"k\": {\"n\": [1]}}".to_string()),
        Just("\"SMS\"".to_string()),
        "\"[a-z]{0,200}\"".prop_map(|s| s),
    ];
    let pair = (key, value).prop_map(|(k, v)| format!("\"{k}\": {v}"));
    prop_oneof![
        prop::collection::vec(pair, 0..8).prop_map(|p| format!("{{{}}}", p.join(", "))),
        ".{0,40}".prop_map(|s| s),
        Just("[]".to_string()),
        Just("{\"id\": ".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Whatever the body, every write route answers, and never with a 5xx.
    #[test]
    fn api_bodies_never_get_a_5xx(body in bodyish(), route in 0..4usize) {
        let s = api_server();
        let path = ["/v1/contacts", "/v1/events", "/v1/contacts/c1/tags", "/v1/contacts/c1/unsubscribe"][route];
        let status = s.rt.block_on(async {
            s.client
                .post(format!("{}{path}", s.base))
                .bearer_auth("t")
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("the server answers")
                .status()
                .as_u16()
        });
        prop_assert!(status < 500, "{path} {body}: {status}");
    }
}
