//! The real `nurture run` as a child process, in a temp project with its own
//! store (a SQLite file, or a fresh PostgreSQL database when the suite runs
//! on PostgreSQL: see `support::db`): start it on a free port, talk to its
//! API, read its store, and stop it with SIGTERM.
//!
//! ```ignore
//! let p = Project::new(&settings);
//! p.write("workflows/greet.yaml", "...");
//! let d = Daemon::start(&p, &[]);
//! d.post("/v1/contacts", json!({"id": "c1"})).await;
//! assert!(d.terminate(Duration::from_secs(10)).success());
//! ```

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{AnyPool, AssertSqlSafe};

/// The bearer token every test daemon is started with.
pub const TOKEN: &str = "test-token-e2e";
/// The webhook signing secret (raw bytes, not `whsec_`).
pub const HOOK_SECRET: &str = "hook-secret-e2e";

/// A temp folder with `nurture.yaml`, `workflows/` and `templates/`.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database of this project, when the suite runs on one.
    pub postgres: Option<String>,
}

impl Project {
    pub fn new(settings: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("workflows")).unwrap();
        fs::create_dir(dir.path().join("templates")).unwrap();
        fs::write(dir.path().join("nurture.yaml"), settings).unwrap();
        let postgres = super::db::postgres_admin().map(|a| super::db::fresh_postgres(&a));
        Project { dir, postgres }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn write(&self, p: &str, text: &str) -> &Self {
        fs::write(self.path(p), text).unwrap();
        self
    }

    /// The binary with the project's config, token and secret in its env.
    pub fn command(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("nurture"));
        c.current_dir(self.dir.path());
        match &self.postgres {
            Some(url) => c.env("NURTURE_DATABASE", url),
            None => c.env_remove("NURTURE_DATABASE"),
        };
        c.env("NURTURE_API_TOKEN", TOKEN)
            .env("HOOK_SECRET", HOOK_SECRET)
            .arg("--config")
            .arg(self.path("nurture.yaml"));
        c
    }

    /// Runs a CLI command to completion; panics unless it exits 0. Returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "nurture {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("nurture.db")
    }

    /// The URL of the project's store.
    pub fn db_url(&self) -> String {
        match &self.postgres {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.db_path().display()),
        }
    }

    /// A small pool on the project's store (the daemon created it).
    pub async fn pool(&self) -> AnyPool {
        super::db::any_pool(&self.db_url()).await
    }

    /// Runs one SQL statement (INSERT, UPDATE) on the store.
    pub async fn exec(&self, sql: &str) {
        let pool = self.pool().await;
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    }

    /// Every row of `sql`, as JSON objects keyed by column name (values as
    /// text, integers or null).
    pub async fn rows(&self, sql: &str) -> Vec<serde_json::Map<String, Value>> {
        use sqlx::{Column, Row, ValueRef};
        let pool = self.pool().await;
        let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out = Vec::new();
        for r in &rows {
            let mut m = serde_json::Map::new();
            for (i, c) in r.columns().iter().enumerate() {
                let raw = r.try_get_raw(i).unwrap();
                let v = if raw.is_null() {
                    Value::Null
                } else if let Ok(n) = r.try_get::<i64, _>(i) {
                    Value::from(n)
                } else if let Ok(f) = r.try_get::<f64, _>(i) {
                    Value::from(f)
                } else {
                    Value::from(r.get::<String, _>(i))
                };
                m.insert(c.name().to_string(), v);
            }
            out.push(m);
        }
        pool.close().await;
        out
    }

    /// One integer.
    pub async fn count(&self, sql: &str) -> i64 {
        let pool = self.pool().await;
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
        n
    }

    /// Polls `sql` (one integer) until it equals `want`; panics after `timeout`.
    pub async fn wait_count(&self, sql: &str, want: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(sql).await;
            if n == want {
                return;
            }
            if Instant::now() > deadline {
                panic!("{sql}: {n}, expected {want} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the daemon has nothing to do now — the state in which
    /// `run --until-idle=now` stops: every trigger in the event log planned,
    /// no enrollment due, no message due or in flight (and no WeCom tag sync
    /// due). From then on nothing
    /// more reaches a receiver until something is written or a wait, retry
    /// or quiet hours end. This is the observable "quiet" that "nothing more
    /// arrived" assertions wait for (instead of sleeping). Panics with what
    /// is still pending after `timeout`.
    pub async fn settled(&self, timeout: Duration) {
        use nurture::engine::scheduler::{IdleMode, idle_state};
        let pool = self.pool().await;
        let store = nurture::store::Store::open(&self.db_url()).await.unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let now = chrono::Utc::now();
            let st = idle_state(&store, now).await.unwrap();
            // The WeCom tag sync's queue (fed by the callback) too.
            let tag_syncs: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM wecom_tag_sync WHERE next_attempt_at <= $1",
            )
            .bind(now.timestamp_millis())
            .fetch_one(&pool)
            .await
            .unwrap();
            if st.done(IdleMode::Now) && tag_syncs == 0 {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "the daemon did not settle within {timeout:?}: waiting for {} and {tag_syncs} WeCom tag sync(s); log:\n{}",
                    st.waiting_for(IdleMode::Now, chrono_tz::UTC),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pool.close().await;
    }

    pub fn log_path(&self) -> PathBuf {
        self.path("daemon.log")
    }

    /// What the daemon wrote to stderr (every run appends).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// A running `nurture run`. Killed (SIGKILL) when dropped still running.
pub struct Daemon {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    client: reqwest::Client,
}

impl Daemon {
    /// Starts `nurture run --listen 127.0.0.1:0 EXTRA...` and waits for its
    /// `listening on ADDR` line. stderr goes to `daemon.log` in the project.
    pub fn start(p: &Project, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(p, extra, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with_env(p: &Project, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.log_path())
            .unwrap();
        let mut child = p
            .command()
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not start; log:\n{}", p.log());
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", p.log()))
            .trim()
            .parse()
            .unwrap();
        // reqwest is built without a TLS crypto provider; plain HTTP needs none,
        // but building a client does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Daemon {
            child,
            addr,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs JSON with the bearer token; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// POSTs and panics unless the answer is 2xx.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {v}");
        v
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to end; panics after `timeout` (killing it).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the daemon did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for the exit; returns the status and how long it took.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        self.sigterm();
        let s = self.wait(timeout);
        (s, t0.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
