//! `nurture contacts add|tag|event|unsubscribe`: the real binary, a real
//! SQLite store, effects checked with SQL.

use std::path::Path;

use assert_cmd::Command;
use sqlx::{AnyPool, AssertSqlSafe};

use crate::support;

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

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = nurture(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn add_tag_event_unsubscribe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = run(
        d,
        &[
            "contacts",
            "add",
            "c1",
            "--name",
            "Ada",
            "--timezone",
            "Asia/Shanghai",
            "--attr",
            "city=Shanghai",
            "--tag",
            "vip",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created contact c1"), "{out}");
    let (_, out, _) = run(d, &["contacts", "add", "c1", "--name", "Ada"]);
    assert!(out.contains("unchanged"), "{out}");
    let (_, out, _) = run(d, &["contacts", "add", "c1", "--email", "ada@example.com"]);
    assert!(out.contains("updated"), "{out}");

    let (code, out, _) = run(
        d,
        &[
            "contacts", "tag", "c1", "--add", "won", "--add", "vip", "--remove", "vip",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("added won") && out.contains("removed vip"),
        "{out}"
    );

    let (code, _, err) = run(
        d,
        &[
            "contacts",
            "event",
            "c1",
            "purchase",
            "--at",
            "2026-11-01T10:00:00+08:00",
            "--prop",
            "amount=99",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // An older event does not move last_active_at back.
    run(
        d,
        &[
            "contacts",
            "event",
            "c1",
            "visit",
            "--at",
            "2026-10-01T10:00:00+08:00",
        ],
    );

    let (code, _, _) = run(
        d,
        &["contacts", "unsubscribe", "c1", "--channel", "console"],
    );
    assert_eq!(code, 0);
    let (code, _, _) = run(d, &["contacts", "unsubscribe", "c1"]);
    assert_eq!(code, 0);

    let db = pool(d).await;
    assert_eq!(
        scalar::<String>(&db, "SELECT email FROM contacts WHERE id = 'c1'").await,
        "ada@example.com"
    );
    assert_eq!(
        scalar::<String>(&db, "SELECT attrs FROM contacts WHERE id = 'c1'").await,
        r#"{"city":"Shanghai"}"#
    );
    assert_eq!(
        scalar::<i64>(&db, "SELECT last_active_at FROM contacts WHERE id = 'c1'").await,
        1_793_498_400_000
    );
    assert_eq!(
        scalar::<i64>(&db, "SELECT unsubscribed FROM contacts WHERE id = 'c1'").await,
        1
    );
    assert_eq!(
        scalar::<String>(
            &db,
            "SELECT channel FROM contact_opt_outs WHERE contact_id = 'c1'"
        )
        .await,
        "console"
    );
    // JSON read as text and parsed here: the same SQL on both stores.
    let props =
        scalar::<String>(&db, "SELECT properties FROM events WHERE name = 'purchase'").await;
    let props: serde_json::Value = serde_json::from_str(&props).unwrap();
    assert_eq!(props["amount"], "99");
    assert_eq!(
        scalar::<String>(&db, "SELECT group_concat(kind || ':' || coalesce(name, ''), ',') FROM (SELECT * FROM event_log ORDER BY seq) AS l").await,
        "contact_created:,tag_added:vip,tag_added:won,tag_removed:vip,event:purchase,event:visit"
    );
}

#[tokio::test]
async fn wrong_input_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, err) = run(d, &["contacts", "event", "ghost", "purchase"]);
    assert_eq!(code, 1);
    assert!(err.contains("no contact with id \"ghost\""), "{err}");
    assert_eq!(run(d, &["contacts", "tag", "ghost", "--add", "x"]).0, 1);
    assert_eq!(run(d, &["contacts", "unsubscribe", "ghost"]).0, 1);
    assert_eq!(
        run(d, &["contacts", "add", "c1", "--timezone", "Mars/Base"]).0,
        1
    );
    assert_eq!(run(d, &["contacts", "add", "c1", "--attr", "novalue"]).0, 1);
    assert_eq!(run(d, &["contacts", "add", "c1", "--attr", "email=x"]).0, 1);
    run(d, &["contacts", "add", "c1"]);
    assert_eq!(
        run(d, &["contacts", "event", "c1", "x", "--at", "yesterday"]).0,
        1
    );
    let (code, _, err) = run(d, &["contacts", "unsubscribe", "c1", "--channel", "consle"]);
    assert_eq!(code, 1);
    assert!(err.contains("console"), "{err}");
}

#[tokio::test]
async fn a_row_written_by_another_system_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(d, &["contacts", "add", "c1"]);
    let db = pool(d).await;
    sqlx::query("INSERT INTO contacts (id, created_at, updated_at) VALUES ('ext1', 1000, 1000)")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO contact_tags (contact_id, tag, added_at) VALUES ('ext1', 'vip', 1000)",
    )
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM event_log WHERE contact_id = 'ext1' AND kind IN ('contact_created', 'tag_added')").await,
        2
    );
}

/// The contacts commands read a time as `dry-run --at` does: RFC 3339, or
/// a date and time in the settings' zone (Asia/Shanghai here). They took
/// RFC 3339 only, so `--at 2026-12-01T10:00` worked for dry-run and failed
/// for `contacts event`.
#[tokio::test]
async fn times_are_read_as_dry_run_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["contacts", "add", "c1", "--created-at", "2026-01-01 10:00"][..],
        &[
            "contacts",
            "add",
            "c2",
            "--last-active-at",
            "2026-01-01T10:00:00+00:00",
        ],
        &[
            "contacts",
            "event",
            "c1",
            "visit",
            "--at",
            "2026-12-01T10:00",
        ],
    ] {
        let (code, out, err) = run(d, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let pool = pool(d).await;
    let created: i64 = scalar(&pool, "SELECT created_at FROM contacts WHERE id = 'c1'").await;
    assert_eq!(created, 1_767_232_800_000, "2026-01-01 10:00 +08:00");
    let active: i64 = scalar(&pool, "SELECT last_active_at FROM contacts WHERE id = 'c2'").await;
    assert_eq!(active, 1_767_261_600_000, "2026-01-01 10:00 UTC");
    let at: i64 = scalar(&pool, "SELECT at FROM events WHERE contact_id = 'c1'").await;
    assert_eq!(at, 1_796_090_400_000, "2026-12-01 10:00 +08:00");
    // A time that is none is refused with the flag's name.
    let (code, _, err) = run(
        d,
        &["contacts", "event", "c1", "visit", "--at", "yesterday"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--at \"yesterday\" is not a time"), "{err}");
    let (code, _, err) = run(d, &["contacts", "add", "c3", "--created-at", "2026/13/01"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--created-at \"2026/13/01\" is not a time"),
        "{err}"
    );
}

/// An owner who is not a salesperson of the settings' teams is accepted (a
/// WeCom follow-user outside the teams is a legitimate owner) with a
/// warning, by `contacts add` and `contacts import`: such a contact's
/// templates see no `owner`. No teams, no warning.
#[tokio::test]
async fn owners_outside_the_teams_are_kept_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("nurture.yaml"),
        "timezone: Asia/Shanghai\nteams:\n  east:\n    - { id: s01, name: 王芳 }\n    - { id: s02, name: 李雷 }\n",
    )
    .unwrap();
    let (code, out, err) = run(d, &["contacts", "add", "c1", "--owner", "s0l"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created contact c1"), "{out}");
    assert!(
        err.contains(
            "warning: owner \"s0l\" is not a salesperson of any team (did you mean \"s01\"?)"
        ),
        "{err}"
    );
    assert!(
        err.contains("owner.*") && err.contains("team members: s01, s02"),
        "{err}"
    );
    let (code, _, err) = run(d, &["contacts", "add", "c2", "--owner", "s02"]);
    assert_eq!(code, 0);
    assert!(!err.contains("warning"), "{err}");
    let p = pool(d).await;
    let owner: String = scalar(&p, "SELECT owner FROM contacts WHERE id = 'c1'").await;
    assert_eq!(owner, "s0l", "kept as given");

    std::fs::write(
        d.join("people.csv"),
        "id,name,owner\nx1,A,s99\nx2,B,s99\nx3,C,s01\nx4,D,zz\nx5,E,\n",
    )
    .unwrap();
    let (code, out, err) = run(d, &["contacts", "import", "people.csv"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 new"), "{out}");
    assert!(
        err.contains(
            "warning: 3 rows name an owner who is not a salesperson of any team: \
             \"s99\" (2 rows), \"zz\" (1 row)"
        ),
        "{err}"
    );
    let n: i64 = scalar(
        &p,
        "SELECT COUNT(*) FROM contacts WHERE owner IN ('s99', 'zz')",
    )
    .await;
    assert_eq!(n, 3, "every row imported");

    // Without teams, nobody is a salesperson: nothing to warn about.
    std::fs::write(d.join("nurture.yaml"), "timezone: Asia/Shanghai\n").unwrap();
    let (code, _, err) = run(d, &["contacts", "add", "c3", "--owner", "s77"]);
    assert_eq!(code, 0);
    assert!(!err.contains("warning"), "{err}");
    let (_, _, err) = run(d, &["contacts", "import", "people.csv"]);
    assert!(!err.contains("warning"), "{err}");
}

/// A phone or email a channel's provider would refuse for its form is kept,
/// with a warning that its messages on that channel are skipped
/// (`bad_address`): one per channel for `contacts add`, counted with the
/// first line for `contacts import`. Without such channels, no warning.
#[tokio::test]
async fn addresses_a_provider_would_refuse_are_kept_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("nurture.yaml"),
        "timezone: Asia/Shanghai\nchannels:\n  \
         sms:\n    kind: aliyun_sms\n    access_key_id_env: ALI_ID\n    access_key_secret_env: ALI_SECRET\n    \
         sign_name: 示例商城\n    template_code: SMS_15305000\n  \
         email:\n    kind: smtp\n    host: smtp.example.com\n    from: news@example.com\n    \
         unsubscribe_url: https://mail.example.com\n    unsubscribe_secret_env: UNSUB_SECRET\n",
    )
    .unwrap();
    let (code, out, err) = run(
        d,
        &[
            "contacts",
            "add",
            "c1",
            "--phone",
            "1380013800",
            "--email",
            "wang.example.com",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created contact c1"), "{out}");
    assert!(
        err.contains(
            "warning: phone \"1380013800\" is not a number Aliyun SMS takes: 11 digits starting with 1"
        ) && err.contains("messages on the sms channel are skipped for this contact (bad_address)"),
        "{err}"
    );
    assert!(
        err.contains("\"wang.example.com\" is not an email address")
            && err.contains("messages on the email channel are skipped"),
        "{err}"
    );
    let (code, _, err) = run(
        d,
        &[
            "contacts",
            "add",
            "c2",
            "--phone",
            "+8613800138000",
            "--email",
            "li@example.com",
        ],
    );
    assert_eq!(code, 0);
    assert!(!err.contains("warning"), "{err}");
    let p = pool(d).await;
    let phone: String = scalar(&p, "SELECT phone FROM contacts WHERE id = 'c1'").await;
    assert_eq!(phone, "1380013800", "kept as given");

    std::fs::write(
        d.join("people.csv"),
        "id,phone,email\nx1,138 0013 8000,a@example.com\nx2,138001380000,b@example.com\n\
         x3,1380013800,c@\nx4,,\nx5,+85291234567,e@example.com\n",
    )
    .unwrap();
    let (code, out, err) = run(d, &["contacts", "import", "people.csv"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 new"), "{out}");
    assert!(
        err.contains(
            "warning: 2 rows have an address the sms channel's provider would refuse \
             (the first, line 3: phone \"138001380000\" is not a number Aliyun SMS takes"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: 1 row has an address the email channel's provider would refuse \
             (the first, line 4: email \"c@\" is not an email address"
        ),
        "{err}"
    );
    let n: i64 = scalar(&p, "SELECT COUNT(*) FROM contacts WHERE id LIKE 'x%'").await;
    assert_eq!(n, 5, "every row imported");

    // Channels that reach a contact by id check nothing.
    std::fs::write(
        d.join("nurture.yaml"),
        "timezone: Asia/Shanghai\nchannels:\n  sms: { kind: log, address: phone }\n",
    )
    .unwrap();
    let (_, _, err) = run(d, &["contacts", "add", "c3", "--phone", "12"]);
    assert!(!err.contains("warning"), "{err}");
    let (_, _, err) = run(d, &["contacts", "import", "people.csv"]);
    assert!(!err.contains("warning"), "{err}");
}
