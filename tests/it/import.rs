//! `nurture contacts import`: the real binary on real CSV files and a real
//! SQLite store in a temporary folder; results checked with SQL.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use sqlx::{AnyPool, AssertSqlSafe};

use crate::support;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

fn nurture(dir: &Path) -> Command {
    // A project folder: outside one, nurture refuses to create a store.
    if !dir.join("nurture.yaml").exists() {
        std::fs::write(dir.join("nurture.yaml"), "timezone: Asia/Shanghai\n").unwrap();
    }
    let mut cmd = Command::cargo_bin("nurture").unwrap();
    cmd.current_dir(dir);
    match support::db::on_postgres() {
        true => cmd.env("NURTURE_DATABASE", support::db::url_for(dir)),
        false => cmd.env_remove("NURTURE_DATABASE"),
    };
    cmd.arg("--config").arg(dir.join("nurture.yaml"));
    cmd
}

async fn pool(dir: &Path) -> AnyPool {
    support::db::any_pool(&support::db::url_for(dir)).await
}

async fn scalar<T>(pool: &AnyPool, sql: &str) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A text attribute of a contact (JSON read as text and parsed here: the
/// same SQL on both stores).
async fn attr(pool: &AnyPool, id: &str, key: &str) -> String {
    let attrs: String = scalar(
        pool,
        &format!("SELECT attrs FROM contacts WHERE id = '{id}'"),
    )
    .await;
    let attrs: serde_json::Value = serde_json::from_str(&attrs).unwrap();
    attrs[key].as_str().unwrap().to_string()
}

/// The mixed fixture plus a last row with invalid UTF-8 (line 13).
fn mixed_csv(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(fixture("mixed.csv")).unwrap();
    bytes.extend_from_slice(b"c8,Bad \xff Bytes,,,,,,,\n");
    let path = dir.join("mixed.csv");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The bad rows of the mixed fixture, each reported at its line.
fn assert_mixed_lines(f: &str, stderr: &str) {
    for (line, what) in [
        (5, "missing id"),
        (6, "created_at"),
        (7, "timezone"),
        (9, "expected 9 columns, found 2"),
        (10, "already on line 2"),
        (11, "unsubscribed"),
        (13, "UTF-8"),
    ] {
        let prefix = format!("{f}:{line}: ");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no {prefix}...{what} in:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_good_rows_imported() {
    let dir = tempfile::tempdir().unwrap();
    let csv = mixed_csv(dir.path());
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let f = csv.display().to_string();
    assert_mixed_lines(&f, &stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with(&f)).count(),
        7,
        "{stderr}"
    );
    assert!(stdout.contains("imported 10 rows"), "{stdout}");
    assert!(
        stdout.contains("3 new, 0 updated, 0 unchanged, 7 bad"),
        "{stdout}"
    );

    let db = pool(dir.path()).await;
    assert_eq!(scalar::<i64>(&db, "SELECT count(*) FROM contacts").await, 3);
    // The import lifts the attrs check only inside its own transaction: after
    // it, a non-object attrs written by another system is refused again.
    let err = sqlx::query("UPDATE contacts SET attrs = 'oops' WHERE id = 'c1'")
        .execute(&db)
        .await
        .expect_err("the attrs check is back after the import");
    assert!(err.to_string().contains("attrs"), "{err}");
    assert_eq!(
        scalar::<String>(
            &db,
            "SELECT group_concat(id, ',') FROM (SELECT id FROM contacts ORDER BY id) AS s"
        )
        .await,
        "c1,c2,c7"
    );
    // Tags split on ';', trimmed, empties dropped.
    assert_eq!(
        scalar::<String>(&db, "SELECT group_concat(tag, ',') FROM (SELECT tag FROM contact_tags WHERE contact_id = 'c1' ORDER BY tag) AS s").await,
        "newsletter,vip"
    );
    // Attributes: strings; an empty cell is no attribute; quoted multi-line values kept.
    assert_eq!(
        scalar::<String>(&db, "SELECT attrs FROM contacts WHERE id = 'c1'").await,
        r#"{"city":"Shanghai"}"#
    );
    assert_eq!(attr(&db, "c2", "note").await, "first line\nsecond line");
    assert_eq!(attr(&db, "c7", "note").await, "say \"hi\"");
    // Built-in fields.
    assert_eq!(
        scalar::<i64>(&db, "SELECT created_at FROM contacts WHERE id = 'c1'").await,
        1_767_229_200_000
    );
    assert_eq!(
        scalar::<String>(&db, "SELECT timezone FROM contacts WHERE id = 'c1'").await,
        "Asia/Shanghai"
    );
    assert_eq!(
        scalar::<i64>(&db, "SELECT unsubscribed FROM contacts WHERE id = 'c7'").await,
        1
    );
    assert_eq!(
        scalar::<Option<String>>(&db, "SELECT email FROM contacts WHERE id = 'c2'").await,
        None
    );
    // The event log: 3 contacts created, 3 tags added.
    assert_eq!(
        scalar::<i64>(
            &db,
            "SELECT count(*) FROM event_log WHERE kind = 'contact_created'"
        )
        .await,
        3
    );
    assert_eq!(
        scalar::<i64>(
            &db,
            "SELECT count(*) FROM event_log WHERE kind = 'tag_added'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn importing_the_same_file_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let csv = mixed_csv(dir.path());
    nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&csv)
        .assert()
        .code(1);
    let db = pool(dir.path()).await;
    let log = scalar::<i64>(&db, "SELECT count(*) FROM event_log").await;
    let stamp = scalar::<String>(
        &db,
        "SELECT group_concat(id || ':' || updated_at || ':' || attrs, ';') FROM contacts",
    )
    .await;
    db.close().await;

    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 new, 0 updated, 3 unchanged, 7 bad"),
        "{stdout}"
    );
    let db = pool(dir.path()).await;
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM event_log").await,
        log
    );
    assert_eq!(
        scalar::<String>(
            &db,
            "SELECT group_concat(id || ':' || updated_at || ':' || attrs, ';') FROM contacts"
        )
        .await,
        stamp
    );
}

#[tokio::test]
async fn a_clean_file_exits_0_and_a_second_file_updates_and_adds_tags() {
    let dir = tempfile::tempdir().unwrap();
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(fixture("good.csv"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 new, 0 updated, 0 unchanged, 0 bad"));

    // g1 changes level and gets a new tag; g2 is the same; g3 is new. Tags are never removed.
    let second = dir.path().join("second.csv");
    std::fs::write(&second, "id,level,tags\ng1,4,new\ng2,,\ng3,1,\n").unwrap();
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&second)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 new, 1 updated, 1 unchanged, 0 bad"));
    let db = pool(dir.path()).await;
    // Compared as JSON: PostgreSQL's merge writes jsonb's text (`{"level": "4"}`).
    let attrs = scalar::<String>(&db, "SELECT attrs FROM contacts WHERE id = 'g1'").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&attrs).unwrap(),
        serde_json::json!({"level": "4"})
    );
    assert_eq!(
        scalar::<String>(&db, "SELECT name FROM contacts WHERE id = 'g1'").await,
        "Gao"
    );
    assert_eq!(
        scalar::<String>(&db, "SELECT group_concat(tag, ',') FROM (SELECT tag FROM contact_tags WHERE contact_id = 'g1' ORDER BY tag) AS s").await,
        "gold,new,vip"
    );
}

#[test]
fn a_file_without_an_id_column_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("noid.csv");
    std::fs::write(&csv, "name,email\nAda,a@example.com\n").unwrap();
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("noid.csv:1:1: no \"id\" column"));
    // A header fault is at FILE:1:COLUMN.
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "id,name,id\n1,a,2\n").unwrap();
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&dup)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("dup.csv:1:3: column \"id\" appears twice (columns 1 and 3)"),
        "{out:?}"
    );
    // UTF-16 (Excel's "Unicode Text") is named, with what to save instead.
    let wide = dir.path().join("wide.csv");
    let mut bytes = vec![0xFF, 0xFE];
    for u in "id,name\n1,王芳\n".encode_utf16() {
        bytes.extend(u.to_le_bytes());
    }
    std::fs::write(&wide, bytes).unwrap();
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&wide)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the file is in UTF-16")
            && String::from_utf8_lossy(&out.stderr).contains("CSV UTF-8"),
        "{out:?}"
    );
    let missing = nurture(dir.path())
        .args(["contacts", "import", "nope.csv"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

/// One stray quote used to swallow every row after it into one field (990 of
/// 1,000 rows not imported, and a summary saying every other row was).
#[tokio::test]
async fn an_unclosed_quote_is_one_bad_row_and_the_rows_after_it_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,name,city\n");
    for i in 1..=1000 {
        match i {
            // Line 11: a stray quote (the next quote in the file, on line
            // 501, would close it).
            10 => csv.push_str("c0010,\"Broken,Shanghai\n"),
            // Line 501: a legal quoted field over three lines.
            500 => csv.push_str("c0500,\"Multi\nline\nname\",Hangzhou\n"),
            _ => csv.push_str(&format!("c{i:04},Name {i},Beijing\n")),
        }
    }
    // Line 1004: a contact id of 200 bytes, too long.
    csv.push_str(&format!("{},Long,x\n", "i".repeat(200)));
    // A quote closed only 200 lines later is taken for an unclosed one too.
    csv.push_str("late,\"Opened here,x\n");
    for i in 0..200 {
        csv.push_str(&format!("l{i:03},Later {i},Shenzhen\n"));
    }
    csv.push_str("end,closed\",x\n");
    // Line 1206: a quote never closed before the end of the file.
    csv.push_str("tail,\"never closed\nt1,a,b\nt2,a,b\nt3,a,b\n");
    let path = dir.path().join("quote.csv");
    std::fs::write(&path, &csv).unwrap();
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let shown = path.display();
    assert!(
        stderr.contains(&format!(
            "{shown}:11: a quoted field starting on this line runs over 491 lines"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{shown}:1005: a quoted field starting on this line runs over 202 lines"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{shown}:1207: a quoted field starting on this line is never closed"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}:1004: contact id \"iiii"))
            && stderr.contains("is 200 bytes long; at most 128"),
        "{stderr}"
    );
    // 999 + 200 + `end` + 3 good rows, 4 bad: they add up to every row read.
    assert!(
        stdout.contains("imported 1,207 rows")
            && stdout.contains("1,203 new, 0 updated, 0 unchanged, 4 bad"),
        "{stdout}"
    );
    let pool = pool(dir.path()).await;
    let n: i64 = scalar(&pool, "SELECT count(*) FROM contacts").await;
    assert_eq!(n, 1203);
    assert_eq!(
        scalar::<String>(&pool, "SELECT name FROM contacts WHERE id = 'c0500'").await,
        "Multi\nline\nname"
    );
    let n: i64 = scalar(
        &pool,
        "SELECT count(*) FROM contacts WHERE id IN ('c0011', 'c1000', 'l199', 't3')",
    )
    .await;
    assert_eq!(n, 4);
}

/// An event-log row without its seq: kind, contact, name, at, origin.
type LogRow = (String, String, Option<String>, i64, Option<String>);
/// A contact row: id, name, email, created_at, last_active_at, unsubscribed, attrs, updated_at.
type ContactRow = (
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    String,
    i64,
);

/// Everything an import writes that the engine reads, in a comparable form:
/// the event log in seq order (without seq, which differs only by where the
/// log started), contacts and tags.
async fn import_effects(db: &AnyPool) -> (Vec<LogRow>, Vec<String>, Vec<String>) {
    let log: Vec<LogRow> =
        sqlx::query_as("SELECT kind, contact_id, name, at, origin FROM event_log ORDER BY seq")
            .fetch_all(db)
            .await
            .unwrap();
    let contacts: Vec<ContactRow> = sqlx::query_as(
        "SELECT id, name, email, created_at, last_active_at, unsubscribed, attrs, updated_at FROM contacts ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    // Attributes compared as JSON values (PostgreSQL's json_patch writes
    // jsonb's canonical text).
    let contacts = contacts
        .into_iter()
        .map(|(id, n, e, c, l, u, a, up)| {
            let a: serde_json::Value = serde_json::from_str(&a).unwrap();
            format!("{id}|{n:?}|{e:?}|{c}|{l:?}|{u}|{a}|{up}")
        })
        .collect();
    let tags: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT contact_id, tag, added_at FROM contact_tags ORDER BY contact_id, tag",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let tags = tags.into_iter().map(|t| format!("{t:?}")).collect();
    (log, contacts, tags)
}

/// The three writers of an import (SQLite's rusqlite bulk writer, the pool's
/// `write_rows` for an in-memory store, PostgreSQL's COPY and set-based
/// statements, which write the event log themselves) leave the same
/// contacts, tags and event-log rows, in the same order, and count the same.
/// On PostgreSQL only when the suite runs with one (`NURTURE_TEST_POSTGRES`).
#[tokio::test]
async fn every_import_writer_logs_the_same_events() {
    use chrono::TimeZone;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.csv");
    let second = dir.path().join("second.csv");
    std::fs::write(
        &first,
        "id,name,email,tags,created_at,unsubscribed,city,score\n\
         c3,Cy,,b;a,2026-01-03T00:00:00Z,,Shanghai,7\n\
         c1,Ada,ada@example.com,vip;newsletter,2026-01-01T09:00:00+08:00,no,Shanghai,\n\
         c2,Ben,,,,yes,\"Bei\\jing\ttab\",1.5\n\
         c4,,,x,,,,\n",
    )
    .unwrap();
    std::fs::write(
        &second,
        "id,name,tags,city,score\n\
         c9,New,z;vip,Hangzhou,\n\
         c2,Ben,vip,,\n\
         c1,Ada,newsletter;late,Beijing,\n\
         c3,Cy,a,Shanghai,7\n\
         c4,Dee,,,\n",
    )
    .unwrap();
    let t1 = chrono::Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let t2 = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let memory = format!(
        "sqlite:file:import-eq-{:x}?mode=memory&cache=shared",
        rand::random::<u64>()
    );
    let mut urls = vec![
        format!("sqlite://{}", dir.path().join("file.db").display()),
        memory,
    ];
    if let Some(admin) = support::db::postgres_admin() {
        urls.push(support::db::fresh_postgres(&admin));
    }
    let mut seen = Vec::new();
    for url in &urls {
        let store = nurture::store::Store::open(url).await.unwrap();
        let a = store.import_csv(&first, t1, |_| {}).await.unwrap();
        let b = store.import_csv(&second, t2, |_| {}).await.unwrap();
        let again = store.import_csv(&second, t2, |_| {}).await.unwrap();
        let counts = [
            (a.inserted, a.updated, a.unchanged),
            (b.inserted, b.updated, b.unchanged),
            (again.inserted, again.updated, again.unchanged),
        ];
        assert_eq!(counts, [(4, 0, 0), (1, 3, 1), (0, 0, 5)], "{url}");
        let effects = import_effects(store.db()).await;
        store.close().await;
        seen.push((url.clone(), effects));
    }
    let (first_url, want) = &seen[0];
    assert_eq!(want.0.len(), 4 + 5 + 1 + 2 + 2, "{:#?}", want.0);
    for (url, got) in &seen[1..] {
        assert_eq!(got.0, want.0, "event log: {url} vs {first_url}");
        assert_eq!(got.1, want.1, "contacts: {url} vs {first_url}");
        assert_eq!(got.2, want.2, "tags: {url} vs {first_url}");
    }
}

/// The same over files longer than one transaction (50,000 rows): the
/// SQLite file's writer takes the parser's rows in chunks of 5,000 into each
/// transaction and writes the tags at its commit; PostgreSQL writes two
/// batches at once on two connections, the log rows in batch order. The
/// second file updates every third contact, leaves the others as they are,
/// adds tags to some and brings new contacts.
#[tokio::test]
async fn writers_agree_over_several_transactions() {
    use chrono::TimeZone;
    use std::fmt::Write;
    const N: usize = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.csv"), dir.path().join("second.csv"));
    let mut a = String::from("id,name,tags,city\n");
    for i in 0..N {
        let tags = ["", "vip", "a;b", "newsletter"][i % 4];
        writeln!(a, "c{i:06},N{i},{tags},C{}", i % 7).unwrap();
    }
    let mut b = String::from("id,name,tags,city\n");
    for i in (0..N + 6_000).step_by(2) {
        let name = if i % 3 == 0 {
            format!("M{i}")
        } else {
            format!("N{i}")
        };
        let tags = ["", "vip", "late", "b"][i % 4];
        writeln!(b, "c{i:06},{name},{tags},C{}", i % 7).unwrap();
    }
    std::fs::write(&first, a).unwrap();
    std::fs::write(&second, b).unwrap();
    let t1 = chrono::Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let t2 = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let mut urls = vec![
        format!("sqlite://{}", dir.path().join("file.db").display()),
        format!(
            "sqlite:file:import-many-{:x}?mode=memory&cache=shared",
            rand::random::<u64>()
        ),
    ];
    if let Some(admin) = support::db::postgres_admin() {
        urls.push(support::db::fresh_postgres(&admin));
    }
    let mut seen = Vec::new();
    for url in &urls {
        let store = nurture::store::Store::open(url).await.unwrap();
        let a = store.import_csv(&first, t1, |_| {}).await.unwrap();
        let b = store.import_csv(&second, t2, |_| {}).await.unwrap();
        let counts = [
            (a.inserted, a.updated, a.unchanged),
            (b.inserted, b.updated, b.unchanged),
        ];
        // Second file: 30,000 existing rows (ids 0, 2, 4, ...): those at
        // i % 4 == 2 get "late", a new tag (15,000); of the others, those
        // renamed (i % 12 == 0) are updated too (5,000); 3,000 new contacts.
        assert_eq!(counts, [(N as u64, 0, 0), (3_000, 20_000, 10_000)], "{url}");
        let effects = import_effects(store.db()).await;
        store.close().await;
        seen.push((url.clone(), effects));
    }
    let (first_url, want) = &seen[0];
    for (url, got) in &seen[1..] {
        assert!(got.0 == want.0, "event log: {url} vs {first_url}");
        assert!(got.1 == want.1, "contacts: {url} vs {first_url}");
        assert!(got.2 == want.2, "tags: {url} vs {first_url}");
    }
}

/// Excel and WPS write CRLF: the same file with CRLF line ends reports the
/// same lines (the csv crate alone counts every record after the first one
/// line short, BurntSushi/rust-csv#395).
#[tokio::test]
async fn crlf_files_report_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let lf = std::fs::read(mixed_csv(dir.path())).unwrap();
    let mut crlf = Vec::new();
    for &b in &lf {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    let path = dir.path().join("crlf.csv");
    std::fs::write(&path, crlf).unwrap();
    let out = nurture(dir.path())
        .args(["contacts", "import"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = path.display().to_string();
    assert_mixed_lines(&f, &stderr);
}

/// PostgreSQL's fast path for a batch of new contacts (a plain INSERT, no
/// `ON CONFLICT`): a contact created by a writer the batch's existence probe
/// cannot see yet (inserted, not committed; here a raw SQL writer that, like
/// an import, stands the log triggers aside and so takes no log lock) makes
/// the batch's insert wait, then fail on the key; the batch is then written
/// by the general path, which counts that contact as existing and updates
/// it. Nothing of the batch is lost. Only with a server
/// (`NURTURE_TEST_POSTGRES`).
#[tokio::test]
async fn pg_a_contact_created_while_a_new_batch_is_written_is_updated() {
    use sqlx::{Connection, Executor};
    let Some(admin) = support::db::postgres_admin() else {
        return;
    };
    let url = support::db::fresh_postgres(&admin);
    let store = nurture::store::Store::open(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("new.csv");
    std::fs::write(&csv, "id,name,tags\nc1,Ada,vip\nc2,Ben,vip\nc3,Cy,\n").unwrap();

    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    other
        .execute(
            "BEGIN; SET LOCAL nurture.bulk_import = 'on'; \
             INSERT INTO contacts (id, name, created_at, updated_at) VALUES ('c2', 'Other', 1, 1)",
        )
        .await
        .unwrap();
    let importing = {
        let store = store.clone();
        tokio::spawn(async move { store.import_csv(&csv, chrono::Utc::now(), |_| {}).await })
    };
    // The import's insert waits on the uncommitted c2.
    let db = store.db().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = scalar(
            &db,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the import never waited on the other writer's contact"
        );
        // The polling interval, as support's wait_count.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    other.execute("COMMIT").await.unwrap();
    let report = importing.await.unwrap().unwrap();
    assert_eq!(
        (report.inserted, report.updated, report.unchanged),
        (2, 1, 0)
    );
    let name: String = scalar(&db, "SELECT name FROM contacts WHERE id = 'c2'").await;
    assert_eq!(name, "Ben");
    let log: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT kind, contact_id, name FROM event_log ORDER BY seq")
            .fetch_all(&db)
            .await
            .unwrap();
    let log: Vec<String> = log
        .into_iter()
        .map(|(k, c, n)| format!("{k} {c} {}", n.unwrap_or_default()))
        .collect();
    assert_eq!(
        log,
        [
            "contact_created c1 ",
            "contact_created c3 ",
            "tag_added c1 vip",
            "tag_added c2 vip"
        ]
    );
    store.close().await;
}

/// PostgreSQL: an import's batches take the event-log writers' lock in
/// shared mode (two batches of one import are written at once), so a log
/// writer holding it (exclusive, as every other writer takes it) keeps the
/// import from writing any contact until it commits, and a second import
/// waits for the first one to end (its session lock): the log's rows
/// become visible in seq order. Only with a server (`NURTURE_TEST_POSTGRES`).
#[tokio::test]
async fn pg_an_import_waits_for_the_log_writers_and_for_another_import() {
    use sqlx::{Connection, Executor};
    let Some(admin) = support::db::postgres_admin() else {
        return;
    };
    let url = support::db::fresh_postgres(&admin);
    let store = nurture::store::Store::open(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("new.csv");
    std::fs::write(&csv, "id,name,tags\nc1,Ada,vip\nc2,Ben,\n").unwrap();
    let db = store.db().clone();
    // Waits until `n` sessions wait on an advisory lock.
    let waiting_for_lock = |n: i64| {
        let db = db.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let waiting: i64 = scalar(
                    &db,
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event = 'advisory'",
                )
                .await;
                if waiting >= n {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no import waited on the lock"
                );
                // The polling interval, as support's wait_count.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let import = || {
        let store = store.clone();
        let csv = csv.clone();
        tokio::spawn(async move { store.import_csv(&csv, chrono::Utc::now(), |_| {}).await })
    };

    // A log writer in the middle of its transaction.
    let mut writer = sqlx::PgConnection::connect(&url).await.unwrap();
    writer
        .execute("BEGIN; SELECT pg_advisory_xact_lock(4711001)")
        .await
        .unwrap();
    let first = import();
    waiting_for_lock(1).await;
    let contacts: i64 = scalar(&db, "SELECT count(*) FROM contacts").await;
    assert_eq!(contacts, 0);
    writer.execute("COMMIT").await.unwrap();
    let report = first.await.unwrap().unwrap();
    assert_eq!(report.inserted, 2);

    // Another import holding its session lock (as an import does from
    // start to end).
    writer
        .execute("SELECT pg_advisory_lock(4711003)")
        .await
        .unwrap();
    let second = import();
    waiting_for_lock(1).await;
    writer
        .execute("SELECT pg_advisory_unlock(4711003)")
        .await
        .unwrap();
    let report = second.await.unwrap().unwrap();
    assert_eq!((report.inserted, report.unchanged), (0, 2));
    store.close().await;
}
