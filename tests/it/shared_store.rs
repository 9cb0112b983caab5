//! What several daemons sharing one store rely on, tested on the store
//! directly (on SQLite by default, on PostgreSQL when the suite runs on it):
//! due enrollments are claimed by one worker at a time and return to the
//! pool when the lease expires; on PostgreSQL, event-log rows become visible
//! in sequence order however their transactions interleave; and a store
//! that cannot be reached is a clear error that never shows the password.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use nurture::store::{Dialect, Store};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&support::db::url_for(dir.path()))
        .await
        .unwrap();
    (store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_enrollments_are_claimed_once_until_the_lease_ends() {
    let (store, _dir) = store().await;
    let db = store.db();
    for i in 0..100 {
        sqlx::query(
            "INSERT INTO enrollments (workflow, contact_id, entry_key, status, step_id, next_run_at, started_at)
             VALUES ('w', $1, 'once', 'active', 's', $2, 0)",
        )
        .bind(format!("c{i:03}"))
        .bind(1_000 + i as i64)
        .execute(db)
        .await
        .unwrap();
    }
    let now = Utc.timestamp_millis_opt(10_000).unwrap();
    let lease_until = 20_000;
    // Two workers claim at the same time: disjoint sets, 100 in all.
    let (a, b) = tokio::join!(
        store.claim_due_enrollments("a", now, lease_until, 60),
        store.claim_due_enrollments("b", now, lease_until, 60),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids_a: BTreeSet<i64> = a.iter().map(|e| e.id).collect();
    let ids_b: BTreeSet<i64> = b.iter().map(|e| e.id).collect();
    assert!(
        ids_a.is_disjoint(&ids_b),
        "claimed twice: {:?}",
        ids_a.intersection(&ids_b)
    );
    assert_eq!(ids_a.len() + ids_b.len(), 100);
    // Oldest due first within a claim.
    assert!(a.windows(2).all(|w| w[0].next_run_at <= w[1].next_run_at));

    // Leased: nobody else gets them before the lease ends...
    let c = store
        .claim_due_enrollments("c", now, lease_until, 500)
        .await
        .unwrap();
    assert!(c.is_empty(), "claimed while leased: {}", c.len());
    // ...and everyone may after (a daemon that died leaves them to the others).
    let later = Utc.timestamp_millis_opt(lease_until + 1).unwrap();
    let c = store
        .claim_due_enrollments("c", later, lease_until + 30_000, 500)
        .await
        .unwrap();
    assert_eq!(c.len(), 100);
    let owners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT lease_owner FROM enrollments")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(owners, vec!["c".to_string()]);
}

/// A transaction that logged first but commits last must not let a reader
/// see the later entry alone (its cursor would move past the earlier one):
/// writers of the log wait for each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_log_rows_become_visible_in_sequence_order() {
    let (store, _dir) = store().await;
    if store.dialect() != Dialect::Postgres {
        // SQLite has one writer at a time: the order holds by construction.
        return;
    }
    let db = store.db().clone();
    let mut first = db.begin().await.unwrap();
    sqlx::query("INSERT INTO contacts (id, created_at, updated_at) VALUES ('first', 1, 1)")
        .execute(&mut *first)
        .await
        .unwrap();
    // A second writer starts while the first is open...
    let db2 = db.clone();
    let second = tokio::spawn(async move {
        sqlx::query("INSERT INTO contacts (id, created_at, updated_at) VALUES ('second', 2, 2)")
            .execute(&db2)
            .await
            .unwrap();
    });
    // ...and cannot commit a log row before it: it is still waiting 300 ms
    // later, and nothing is visible yet.
    let mut second = second;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "the second writer did not wait"
    );
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(visible, 0);
    first.commit().await.unwrap();
    second.await.unwrap();
    let order: Vec<String> = sqlx::query_scalar("SELECT contact_id FROM event_log ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(order, vec!["first".to_string(), "second".to_string()]);
}

#[test]
fn an_unreachable_postgresql_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nurture.yaml"), "timezone: UTC\n").unwrap();
    let out = assert_cmd::Command::cargo_bin("nurture")
        .unwrap()
        .current_dir(dir.path())
        .env(
            "NURTURE_DATABASE",
            "postgres://nurture:s3cret@127.0.0.1:1/nurture",
        )
        .args(["contacts", "add", "c1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot open the store postgres://nurture:***@127.0.0.1:1/nurture"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the password was shown: {err}");
}

/// A transaction that the database ended by itself (SQLite does on
/// `SQLITE_FULL`, `SQLITE_IOERR`, ...) must not leave its connection in the
/// pool believing it is still inside it: that wedged every later write with
/// "attempted to call begin_with at non-zero transaction depth".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_database_ended_by_itself_leaves_the_pool_clean() {
    let (store, _dir) = store().await;
    sqlx::query("CREATE TABLE t (x TEXT)")
        .execute(store.db())
        .await
        .unwrap();
    for _ in 0..8 {
        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO t (x) VALUES ('lost')")
            .execute(&mut *tx)
            .await
            .unwrap();
        // Ends the transaction behind sqlx's back, as SQLite does on an error.
        sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
        drop(tx);
    }
    // Every connection of the pool begins and commits cleanly.
    let mut txs = Vec::new();
    for i in 0..4 {
        let mut tx = store
            .begin()
            .await
            .unwrap_or_else(|e| panic!("begin {i}: {e}"));
        sqlx::query("INSERT INTO t (x) VALUES ('kept')")
            .execute(&mut *tx)
            .await
            .unwrap();
        txs.push(tx);
        if store.dialect() == Dialect::Sqlite {
            // One writer at a time on SQLite.
            txs.pop().unwrap().commit().await.unwrap();
        }
    }
    for tx in txs {
        tx.commit().await.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE x = 'kept'")
        .fetch_one(store.db())
        .await
        .unwrap();
    assert_eq!(n, 4);
}

/// PostgreSQL compiles a statement it estimates costly to machine code (JIT);
/// for nurture's statements that costs more than it saves (a calendar check
/// compiled for 300-400 ms to run 10 ms), so every session nurture opens,
/// the pool's and its own connections (migrations, the bulk import), runs
/// with it off, without the server's notices in the daemon's log, and read
/// committed whatever the database's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_sessions_have_nurtures_settings() {
    if !support::db::on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = support::db::url_for(dir.path());
    // A database whose administrator made every transaction serializable:
    // nurture's claims and event-log reads are written for read committed.
    {
        let pool = support::db::any_pool(&url).await;
        let db: String = sqlx::query_scalar("SELECT CAST(current_database() AS text)")
            .fetch_one(&pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{db}\" SET default_transaction_isolation = 'serializable'"
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = Store::open(&url).await.unwrap();
    // Every connection of the pool, not only the first.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(store.db().acquire().await.unwrap());
    }
    // Set by the session itself, whatever the server's default: the test
    // holds on a server started with `-c jit=off` too.
    const SETTINGS: &str = "SELECT name || '=' || setting || ' from ' || source FROM pg_settings \
         WHERE name IN ('jit', 'client_min_messages', 'default_transaction_isolation') ORDER BY name";
    let expected = vec![
        "client_min_messages=warning from session".to_string(),
        "default_transaction_isolation=read committed from session".to_string(),
        "jit=off from session".to_string(),
    ];
    for c in &mut conns {
        let got: Vec<String> = sqlx::query_scalar(SETTINGS)
            .fetch_all(&mut **c)
            .await
            .unwrap();
        assert_eq!(got, expected, "a pool connection");
    }
    let mut own = nurture::store::pg_session(&url).await.unwrap();
    let got: Vec<String> = sqlx::query_scalar(SETTINGS)
        .fetch_all(&mut own)
        .await
        .unwrap();
    assert_eq!(got, expected, "a connection of its own");
}

/// sqlx warns of every statement that runs over a second, with its whole
/// text; a scan of a million contacts does by design, at every `inactive`
/// tick. The store warns only from half a minute: the daemon's log keeps its
/// warnings for what needs a look.
#[tokio::test(flavor = "current_thread")]
async fn a_statement_over_a_second_is_not_a_warning() {
    if !support::db::on_postgres() {
        return;
    }
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (store, _dir) = store().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::warn!("the capture works");
    sqlx::query("SELECT pg_sleep(1.1)")
        .execute(store.db())
        .await
        .unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("the capture works"), "{log}");
    assert!(!log.contains("slow statement"), "{log}");
}

/// A real "database or disk is full" (SQLite's `max_page_count` makes the
/// file full at its current size): the failed write is reported, and once
/// there is room again every write succeeds without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_recover_by_themselves_after_the_disk_was_full() {
    if support::db::on_postgres() {
        return; // SQLite's own page limit; PostgreSQL has no per-connection equivalent.
    }
    let (store, _dir) = store().await;
    let db = store.db();
    sqlx::query("CREATE TABLE t (x BLOB)")
        .execute(db)
        .await
        .unwrap();
    // Hold every connection of the pool and make each one's file "full".
    let pool_size = nurture::store::SQLITE_CONNECTIONS as usize;
    let mut conns = Vec::new();
    for _ in 0..pool_size {
        let mut c = db.acquire().await.unwrap();
        sqlx::query("PRAGMA max_page_count = 1")
            .execute(&mut *c)
            .await
            .unwrap();
        conns.push(c);
    }
    drop(conns);
    // Writes fail while the connections are full (SQLite ends each of
    // those transactions by itself; the pool then closes the connection
    // rather than reuse it). The pool may open a fresh, unlimited connection
    // once some are closed: a write on it succeeds, which ends this phase.
    let mut failures = 0;
    for _ in 0..pool_size {
        let mut tx = match store.begin().await {
            Ok(tx) => tx,
            Err(e) => panic!("begin after {failures} failed writes: {e}"),
        };
        let r = sqlx::query("INSERT INTO t (x) VALUES (zeroblob(100000))")
            .execute(&mut *tx)
            .await;
        let err = match r {
            Ok(_) => match tx.commit().await {
                Ok(()) => break,
                Err(e) => e,
            },
            Err(e) => e,
        };
        assert!(err.to_string().contains("full"), "{err}");
        failures += 1;
    }
    assert!(failures >= 1, "no write failed on a full store");
    // Room again: every connection (whichever the pool hands out) can write.
    let mut conns = Vec::new();
    for _ in 0..pool_size {
        let mut c = db.acquire().await.unwrap();
        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&mut *c)
            .await
            .unwrap();
        conns.push(c);
    }
    drop(conns);
    for i in 0..8 {
        let mut tx = store
            .begin()
            .await
            .unwrap_or_else(|e| panic!("begin {i} after the disk has room: {e}"));
        sqlx::query("INSERT INTO t (x) VALUES (zeroblob(100))")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// Runs nurture in `dir` with `NURTURE_DATABASE=url` (and the WeCom
/// channel's variables): whether it succeeded, and its stdout and stderr.
fn on_database(dir: &std::path::Path, url: &str, args: &[&str]) -> (bool, String) {
    let out = assert_cmd::Command::cargo_bin("nurture")
        .unwrap()
        .current_dir(dir)
        .env("NURTURE_DATABASE", url)
        .env("T_CORP", "ww1")
        .env("T_SECRET", "sec")
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

/// Every command that opens the store, run against one that cannot be
/// reached: none shows the password, in the URL's user part or its query.
#[test]
fn no_command_shows_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "timezone: UTC\n\
         channels:\n  console: { kind: log }\n\
         \x20 wecom: { kind: wecom, corp_id_env: T_CORP, secret_env: T_SECRET, agent_id: 1, base_url: \"http://127.0.0.1:1\" }\n\
         teams:\n  sales:\n    - { id: s1, wecom_userid: zhang }\n",
    )
    .unwrap();
    for d in ["templates", "workflows", "segments"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("templates/hi.hbs"), "hi").unwrap();
    std::fs::write(
        dir.path().join("workflows/w.yaml"),
        "name: w\ntrigger: { event: { name: visit } }\nsteps:\n  - send: { channel: console, template: hi }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("segments/s.yaml"),
        "condition: { tag: vip }\n",
    )
    .unwrap();
    // Every command that opens the store (`nurture --help`'s list).
    let commands: [&[&str]; 17] = [
        &["run", "--listen", "127.0.0.1:0"],
        &["status"],
        &["dry-run"],
        &["history", "--contact", "c1"],
        &["channels", "test", "console", "--to", "c1"],
        &["contacts", "add", "c1"],
        &["contacts", "import", "none.csv"],
        &["enroll", "w", "--existing", "--dry-run"],
        &["resume", "w"],
        &["report", "w"],
        &["segments", "count", "s"],
        &["console", "--listen", "127.0.0.1:0"],
        &["outbox", "requeue", "--dead"],
        &["prune", "--older-than", "90d", "--dry-run"],
        &["wecom", "sync-relationships"],
        &["wecom", "resigned"],
        &["wecom", "sync", "--dry-run"],
    ];
    for args in commands {
        let (ok, all) = on_database(
            dir.path(),
            "postgres://nurture:s3cret@127.0.0.1:1/nurture?sslmode=disable&password=s3cret2",
            args,
        );
        assert!(!ok, "{args:?}: {all}");
        assert!(
            !all.contains("s3cret"),
            "{args:?} showed the password: {all}"
        );
        assert!(
            all.contains("postgres://nurture:***@127.0.0.1:1/nurture?sslmode=disable&password=***"),
            "{args:?}: {all}"
        );
    }
}

/// A mistyped database URL is echoed by the error that refuses it, with
/// its password masked however it was written.
#[test]
fn a_mistyped_database_url_is_shown_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "timezone: UTC\nchannels:\n  console: { kind: log }\n",
    )
    .unwrap();
    for url in [
        "host=127.0.0.1 port=1 user=mkt password=hunter2pw",
        "postgres//mkt:hunter2pw@db/shop",
        "mkt:hunter2pw@db/shop",
    ] {
        for args in [&["status"][..], &["run", "--listen", "127.0.0.1:0"]] {
            let (ok, all) = on_database(dir.path(), url, args);
            assert!(!ok, "{url} {args:?}: {all}");
            assert!(!all.contains("hunter2"), "{url} {args:?}: {all}");
            assert!(all.contains("***"), "{url} {args:?}: {all}");
        }
    }
}

/// A command that fails after opening a SQLite store still closes it: the
/// last connection to close removes `nurture.db-wal` and `nurture.db-shm`,
/// which a newcomer otherwise finds beside the store after a typo.
#[test]
fn a_command_that_fails_on_an_open_store_leaves_only_the_store_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nurture.yaml"),
        "timezone: UTC\nchannels:\n  console: { kind: log }\n",
    )
    .unwrap();
    let nurture = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("nurture")
            .unwrap()
            .current_dir(dir.path())
            .env_remove("NURTURE_DATABASE")
            .args(args)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap()
    };
    let out = nurture(&["contacts", "add", "c1"]);
    assert!(out.status.success(), "{out:?}");
    // Fails once the store is open: the address cannot be listened on.
    let out = nurture(&["console", "--listen", "256.0.0.1:0"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listening on 256.0.0.1:0"),
        "{out:?}"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["nurture.db", "nurture.yaml"]);
}

#[test]
fn redact_masks_user_passwords_and_secret_parameters() {
    use nurture::store::redact;
    for (url, shown) in [
        ("postgres://u:p@h/db", "postgres://u:***@h/db"),
        (
            "postgres://u:p@ss:w@rd@h:5432/db",
            "postgres://u:***@h:5432/db",
        ),
        ("postgres://u@h/db", "postgres://u@h/db"),
        (
            "postgres://h/db?user=u&Password=p",
            "postgres://h/db?user=u&Password=***",
        ),
        ("sqlite://nurture.db?mode=ro", "sqlite://nurture.db?mode=ro"),
        ("sqlite://nurture.db", "sqlite://nurture.db"),
        // Mistyped URLs, which the errors echo.
        ("postgres//mkt:hunter2@db/shop", "postgres//mkt:***@db/shop"),
        ("mkt:hunter2@db/shop", "mkt:***@db/shop"),
        ("mkt:hun/ter2@db/shop", "mkt:***@db/shop"),
        (
            "host=127.0.0.1 port=1 user=mkt password=hunter2 dbname=shop",
            "host=127.0.0.1 port=1 user=mkt password=*** dbname=shop",
        ),
        (
            "host=db PASSWORD='hun ter\\'2' user=mkt",
            "host=db PASSWORD=*** user=mkt",
        ),
        ("password=", "password=***"),
        ("user=passwordless", "user=passwordless"),
        ("上海:密码@db", "上海:***@db"),
    ] {
        assert_eq!(redact(url), shown, "{url}");
    }
}

/// Sent outcomes are written a chunk per statement (500 each, values bound
/// before the time and owner): every message of three chunks is marked sent
/// with its own provider id, and a message whose lease another worker took
/// meanwhile is left to that worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_outcomes_are_written_in_chunks_under_the_lease() {
    use nurture::store::outbox::{self, ClaimTimes, Fate, Recorded};
    let (store, _dir) = store().await;
    let db = store.db();
    let n = 1_100;
    for i in 0..n {
        sqlx::query(
            "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                 status, attempts, not_before, next_attempt_at, created_at)
             VALUES ($1, 'w', $2, 1, 's', 'hook', $2, 'hi', 'queued', 0, 0, $3, 0)",
        )
        .bind(format!("m{i:04}"))
        .bind(format!("c{i:04}"))
        .bind(i as i64)
        .execute(db)
        .await
        .unwrap();
    }
    let times = ClaimTimes {
        now: 5_000,
        lease_until: 60_000,
        unknown_until: 60_000,
    };
    let claimed = outbox::claim(&store, "w1", times, &[("hook".to_string(), n)], None)
        .await
        .unwrap();
    assert_eq!(claimed[0].len(), n);
    // Another worker holds one message now (w1's lease expired and was reclaimed).
    sqlx::query("UPDATE outbox SET lease_owner = 'w2' WHERE id = 'm0777'")
        .execute(db)
        .await
        .unwrap();
    let fates: Vec<(String, Fate)> = (0..n)
        .map(|i| {
            let provider_id = (i % 2 == 0).then(|| format!("p{i}"));
            let fate = Fate::Sent {
                provider_id,
                store: Default::default(),
            };
            (format!("m{i:04}"), fate)
        })
        .collect();
    let recorded: Vec<Recorded<'_>> = fates
        .iter()
        .map(|(id, fate)| Recorded {
            id,
            contact_id: "c",
            channel: "hook",
            fate,
            opted_out: false,
        })
        .collect();
    outbox::record_outcomes(&store, "w1", 9_000, &recorded)
        .await
        .unwrap();
    // id, status, provider_id, sent_at, lease_owner
    type Row = (String, String, Option<String>, Option<i64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, status, provider_id, sent_at, lease_owner FROM outbox ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert_eq!(rows.len(), n);
    for (i, (id, status, provider, sent_at, owner)) in rows.into_iter().enumerate() {
        if id == "m0777" {
            assert_eq!((status.as_str(), owner.as_deref()), ("sending", Some("w2")));
            continue;
        }
        assert_eq!(status, "sent", "{id}");
        assert_eq!(provider, (i % 2 == 0).then(|| format!("p{i}")), "{id}");
        assert_eq!((sent_at, owner), (Some(9_000), None), "{id}");
    }
}

/// The delivery worker's own connection on a SQLite file
/// (`store::outbox_conn`) claims and records exactly what the pool's path
/// does: the same rows in the same order, then every fate (sent with and
/// without a provider id, sent with a webhook answer to store, retry, dead
/// with the provider's opt-out, cancelled, released, and an outcome whose
/// lease another worker took) leaves the same outbox, contacts and opt-outs.
/// On PostgreSQL there is no such connection: the pool's path is the only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_connection_writes_what_the_pool_writes() {
    use nurture::store::outbox::{self, ClaimTimes, Fate, Recorded};
    use nurture::store::outbox_conn::OutboxConn;
    let (pool_store, _a) = store().await;
    let (conn_store, _b) = store().await;
    let Some(conn) = OutboxConn::open(&conn_store).await.unwrap() else {
        assert_eq!(conn_store.dialect(), Dialect::Postgres);
        return;
    };
    for s in [&pool_store, &conn_store] {
        for i in 0..8 {
            sqlx::query(
                "INSERT INTO contacts (id, name, created_at, attrs, updated_at) VALUES ($1, 'n', 0, '{\"keep\":1}', 0)",
            )
            .bind(format!("c{i}"))
            .execute(s.db())
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body,
                                     status, attempts, not_before, next_attempt_at, created_at)
                 VALUES ($1, 'w', $2, 1, 's', $3, 'to', 'hi', 'queued', 0, 0, $4, 0)",
            )
            .bind(format!("m{i}"))
            .bind(format!("c{i}"))
            .bind(if i == 7 { "gone" } else { "hook" })
            // Due in reverse id order: the claim gives due order.
            .bind(100 - i as i64)
            .execute(s.db())
            .await
            .unwrap();
        }
    }
    let times = ClaimTimes {
        now: 5_000,
        lease_until: 60_000,
        unknown_until: 70_000,
    };
    let wants = vec![("hook".to_string(), 10)];
    let known = Some(vec!["hook".to_string()]);
    let by_pool = outbox::claim_with(&pool_store, "w1", times, &wants, known.clone(), true)
        .await
        .unwrap();
    let by_conn = conn
        .claim(&conn_store, "w1".into(), times, wants, known, true)
        .await
        .unwrap();
    let seen = |c: &Vec<Vec<outbox::Claimed>>| format!("{c:?}");
    assert_eq!(seen(&by_pool), seen(&by_conn));
    let ids: Vec<&str> = by_conn[0].iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["m6", "m5", "m4", "m3", "m2", "m1", "m0"], "due order");

    let mut answer = serde_json::Map::new();
    answer.insert("plan".into(), serde_json::json!("gold"));
    let fates: Vec<(&str, &str, Fate)> = vec![
        (
            "m0",
            "c0",
            Fate::Sent {
                provider_id: Some("p0".into()),
                store: Default::default(),
            },
        ),
        (
            "m1",
            "c1",
            Fate::Sent {
                provider_id: None,
                store: answer,
            },
        ),
        (
            "m2",
            "c2",
            Fate::Retry {
                next_at: 20_000,
                error: "503".into(),
            },
        ),
        (
            "m3",
            "c3",
            Fate::Dead {
                error: format!("{}21610 STOP", outbox::OPTED_OUT),
            },
        ),
        (
            "m4",
            "c4",
            Fate::Cancelled {
                reason: "unsubscribed".into(),
            },
        ),
        (
            "m5",
            "c5",
            Fate::Release {
                next_at: 30_000,
                error: "quiet hours".into(),
            },
        ),
        (
            "m6",
            "c6",
            Fate::Sent {
                provider_id: Some("p6".into()),
                store: Default::default(),
            },
        ),
    ];
    for s in [&pool_store, &conn_store] {
        // Another worker took m6's lease meanwhile: its outcome is not ours.
        sqlx::query("UPDATE outbox SET lease_owner = 'w2' WHERE id = 'm6'")
            .execute(s.db())
            .await
            .unwrap();
    }
    fn recorded<'a>(f: &'a (&'static str, &'static str, Fate)) -> Recorded<'a> {
        Recorded {
            id: f.0,
            contact_id: f.1,
            channel: "hook",
            fate: &f.2,
            opted_out: matches!(f.2, Fate::Dead { .. }),
        }
    }
    let view: Vec<Recorded<'_>> = fates.iter().map(recorded).collect();
    outbox::record_outcomes(&pool_store, "w1", 9_000, &view)
        .await
        .unwrap();
    drop(view);
    let turn = conn_store.write_turn().await;
    // The delivery's writer thread calls this on its own thread.
    tokio::task::spawn_blocking(move || {
        let view: Vec<Recorded<'_>> = fates.iter().map(recorded).collect();
        conn.record_outcomes_here("w1", 9_000, &view)
    })
    .await
    .unwrap()
    .unwrap();
    drop(turn);

    // id, status, attempts, sent_at, provider_id, last_error, lease_owner,
    // lease_until, first_failed_at, dead_at, next_attempt_at
    type OutboxRow = (
        String,
        String,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        i64,
    );
    async fn state(s: &Store) -> String {
        let outbox: Vec<OutboxRow> =
            sqlx::query_as(
                "SELECT id, status, attempts, sent_at, provider_id, last_error, lease_owner, lease_until,
                        first_failed_at, dead_at, next_attempt_at
                   FROM outbox ORDER BY id",
            )
            .fetch_all(s.db())
            .await
            .unwrap();
        let contacts: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, attrs, updated_at FROM contacts ORDER BY id")
                .fetch_all(s.db())
                .await
                .unwrap();
        let opt_outs: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT contact_id, channel, at FROM contact_opt_outs ORDER BY contact_id",
        )
        .fetch_all(s.db())
        .await
        .unwrap();
        format!("{outbox:#?}\n{contacts:#?}\n{opt_outs:#?}")
    }
    let (a, b) = (state(&pool_store).await, state(&conn_store).await);
    assert_eq!(a, b);
    // And what that is: the answer stored, the opt-out recorded, m6 left to
    // w2, m7 (a channel not in the settings) pushed back.
    assert!(a.contains(r#""{\"keep\":1,\"plan\":\"gold\"}""#), "{a}");
    assert!(
        a.contains(
            r#""c3",
        "hook",
        9000"#
        ),
        "{a}"
    );
    assert!(a.contains(r#""w2""#), "{a}");
    assert!(a.contains("70000"), "{a}");
}
