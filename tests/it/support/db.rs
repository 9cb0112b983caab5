//! Which store a test runs on. Plain `cargo test` uses SQLite files, as
//! users do by default. With `NURTURE_TEST_POSTGRES` set to a server's URL
//! (`.ci/with-postgres.sh` does it: postgres://postgres@127.0.0.1:PORT/postgres)
//! every test gets a fresh database on that server, and the binaries it
//! starts are pointed at it with `NURTURE_DATABASE`. The server is a
//! throwaway one, so test databases are not dropped.

use std::path::Path;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Executor};

/// The admin URL of the test PostgreSQL server, when the suite runs on one.
pub fn postgres_admin() -> Option<String> {
    std::env::var("NURTURE_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn on_postgres() -> bool {
    postgres_admin().is_some()
}

/// A fresh, empty PostgreSQL database on the test server; its URL.
pub fn fresh_postgres(admin: &str) -> String {
    let name = format!("nurture_t_{:016x}", rand::random::<u64>());
    let admin_url = admin.to_string();
    let db = name.clone();
    // Its own thread and runtime: callers may be sync or inside a runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("connecting to {admin_url}: {e}"));
            c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .await
                .unwrap();
            let _ = c.close().await;
            // Tests check results with SQLite's group_concat; the same
            // aggregate here keeps one SQL text for both stores.
            let url = format!("{}/{db}", admin_url.rsplit_once('/').unwrap().0);
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            c.execute(
                "CREATE FUNCTION group_concat_step(acc text, v text, sep text) RETURNS text
                   LANGUAGE sql IMMUTABLE AS
                   $$ SELECT CASE WHEN v IS NULL THEN acc WHEN acc IS NULL THEN v ELSE acc || sep || v END $$;
                 CREATE AGGREGATE group_concat(text, text) (SFUNC = group_concat_step, STYPE = text);
                 CREATE FUNCTION group_concat_step1(acc text, v text) RETURNS text
                   LANGUAGE sql IMMUTABLE AS $$ SELECT group_concat_step(acc, v, ',') $$;
                 CREATE AGGREGATE group_concat(text) (SFUNC = group_concat_step1, STYPE = text);",
            )
            .await
            .unwrap();
            let _ = c.close().await;
        })
    })
    .join()
    .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{name}")
}

/// The store a test in `dir` should use: a fresh PostgreSQL database, or
/// the SQLite file `dir/nurture.db`.
pub fn store_url(dir: &Path) -> String {
    match postgres_admin() {
        Some(admin) => fresh_postgres(&admin),
        None => format!("sqlite://{}", dir.join("nurture.db").display()),
    }
}

/// A small pool on either store, for reading what the binary wrote.
pub async fn any_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// The store of the test folder `dir`, the same on every call: on
/// PostgreSQL a fresh database is made on the first call and its URL kept
/// in `dir/.nurture-test-db`; on SQLite, `dir/nurture.db`.
pub fn url_for(dir: &Path) -> String {
    let Some(admin) = postgres_admin() else {
        return format!("sqlite://{}", dir.join("nurture.db").display());
    };
    let memo = dir.join(".nurture-test-db");
    if let Ok(url) = std::fs::read_to_string(&memo) {
        return url;
    }
    let url = fresh_postgres(&admin);
    std::fs::write(&memo, &url).unwrap();
    url
}

/// Points a command at the store of `dir` (see [`url_for`]): on SQLite the
/// settings' default file, so no variable is set.
pub fn point_at(cmd: &mut std::process::Command, dir: &Path) {
    if on_postgres() {
        cmd.env("NURTURE_DATABASE", url_for(dir));
    } else {
        cmd.env_remove("NURTURE_DATABASE");
    }
}

/// Marks `workflows` as activated (and, for cron workflows, ticked) at the Unix epoch in the store at `url`
/// (which a command has created), as if a daemon had run them since before
/// the test's contacts and events existed: tests that seed a store and then
/// start the daemon expect those triggers to enroll. (A real store's
/// workflows are activated when a daemon first loads them; earlier triggers
/// are passed over.)
pub fn running_since_epoch(url: &str, workflows: &[&str]) {
    let url = url.to_string();
    let names: Vec<String> = workflows.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let pool = any_pool(&url).await;
                for n in names {
                    sqlx::query(
                        "INSERT INTO workflow_states (workflow, activated_at) VALUES ($1, 0)
                         ON CONFLICT (workflow) DO UPDATE SET activated_at = 0",
                    )
                    .bind(&n)
                    .execute(&pool)
                    .await
                    .unwrap();
                    // A cron workflow has ticked before, so its next tick runs
                    // (rather than being recorded as its first sight).
                    sqlx::query(
                        "INSERT INTO cron_ticks (workflow, tick_at, taken_at) VALUES ($1, 0, 0)
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&n)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
                pool.close().await;
            })
    })
    .join()
    .unwrap();
}
