//! The customer store: contacts, tags, opt-outs, events and the event log,
//! plus the engine's tables (enrollments, outbox, cursors, ...).
//!
//! SQLite is the embedded default (`migrations/sqlite`); PostgreSQL has the
//! same tables and columns (`migrations/postgres`, BIGINT where SQLite says
//! INTEGER). The schema is applied on open.
//!
//! Timestamps are stored as INTEGER milliseconds since the Unix epoch (UTC);
//! [`to_ms`] and [`from_ms`] convert.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Any, AnyPool, Connection, Executor as _, PgConnection, SqlitePool, Transaction};

pub mod answers;
pub mod audience_sql;
mod bulk;
pub mod caps;
mod checkpointer;
mod claim;
pub mod console;
pub mod contacts;
pub mod dialect;
pub mod enrollments;
pub mod handoff;
pub mod import;
pub mod log_position;
mod named;
pub mod outbox;
pub mod outbox_conn;
mod pg_import;
pub mod placeholders;
pub mod plan_reads;
pub mod plan_writes;
pub mod prune;
pub mod reports;
mod scan_sqlite;
pub mod scans;
pub mod states;
mod statistics;
pub mod status;
pub mod ticks;
mod tx;
pub mod wecom;
pub mod wecom_marks;
pub mod wecom_media;
pub mod workflow_states;

pub use contacts::{Bind, ContactInput, Unsubscribed, Upserted};
pub use import::{BadRow, Encoding, ImportOptions, ImportProgress, ImportReport};
pub use tx::Tx;

/// What can go wrong in the store. Every variant says which store, file or
/// contact it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {url:?}: expected sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl { url: String },
    #[error("cannot open the store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the schema of the store {url} up to date: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("no contact with id {0:?}")]
    UnknownContact(String),
    /// A value given by the user that the store cannot take.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadFile { path: String, message: String },
    #[error("store error: {0}")]
    Db(#[from] sqlx::Error),
    /// The write probe failed: the store answers but cannot take a write.
    #[error("the store {url} cannot be written: {source}")]
    NotWritable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite file this store opened is no longer at its path.
    #[error(
        "the store file {path} is gone (deleted or moved away while in use); writes would be lost"
    )]
    Gone { path: String },
    /// Another file now sits at the path of the SQLite file this store opened.
    #[error(
        "the store file {path} was replaced by another file while in use; writes would go to the old one"
    )]
    Replaced { path: String },
}

pub use dialect::Dialect;

/// A handle on the customer store. Cheap to clone (connection pools).
///
/// Every query that reads the same on both databases goes through `db`, an
/// `AnyPool`, and is written once with `$1, $2, ...` placeholders (SQLite
/// reads `$N` as numbered parameters too), BIGINT/INTEGER millisecond times
/// and TEXT JSON, so the Rust types are the same on both. Where the SQL must
/// differ, code branches on [`Store::dialect`]. The SQLite pool is kept for
/// the two hot paths that stay SQLite-specific (the packed contact scan and
/// the rusqlite bulk import).
#[derive(Debug, Clone)]
pub struct Store {
    db: AnyPool,
    dialect: Dialect,
    sqlite: Option<SqlitePool>,
    url: String,
    /// The SQLite file opened, and its identity then (`None` in memory and
    /// on PostgreSQL).
    file: Option<FileIdentity>,
    /// The queue API writes wait in on SQLite (one at a time, first come
    /// first served); `None` on PostgreSQL, which has row locks.
    write_queue: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// Rows the planner wrote since its tables were analyzed; `None` but on
    /// PostgreSQL (see `statistics.rs`).
    growth: Option<std::sync::Arc<statistics::Growth>>,
    /// Read-only connections to the SQLite file that contact scans reuse
    /// (`scan_sqlite.rs`); `None` in memory and on PostgreSQL.
    readers: Option<std::sync::Arc<scan_sqlite::Readers>>,
    /// The thread that copies the WAL into a SQLite file
    /// (`checkpointer.rs`); `None` in memory and on PostgreSQL.
    checkpointer: Option<std::sync::Arc<checkpointer::Checkpointer>>,
}

/// A file's path and (device, inode) when it was opened: the same path with
/// another identity is another file.
#[derive(Debug, Clone)]
struct FileIdentity {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &std::path::Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileIdentity {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// How long a connection waits for SQLite's write lock before giving up.
/// It must cover the longest write transaction of a daemon (a scheduler
/// batch over many contacts takes seconds), so that API, CLI and import
/// writes queue behind it rather than fail with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections of the SQLite pool every query goes through. SQLite writes
/// one at a time, but each of the daemon's tasks (scheduler, delivery claim
/// and outcomes, WeCom poller, tag sync, the API's one queued writer,
/// `/healthz`) holds one, and the scheduler reads on a second connection
/// while it holds the write lock: with four, a burst of API writes could
/// take the rest and leave the scheduler waiting for a connection while
/// they waited for its lock (30 s stalls until the pool gave up).
pub const SQLITE_CONNECTIONS: u32 = 12;

/// The per-connection settings of the SQLite `AnyPool`'s connections.
static ANY_POOL_PRAGMAS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = 60000; PRAGMA temp_store = memory; \
         PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = {}; \
         PRAGMA journal_size_limit = {}",
        checkpointer::SAFETY_NET_PAGES,
        checkpointer::WAL_SIZE_LIMIT
    )
});

/// Connections per daemon to PostgreSQL: the scheduler, the delivery claim
/// and writer, the API and a scan can each hold one. Three daemons use 30 of
/// the server's default 100.
const PG_CONNECTIONS: u32 = 10;

/// Set on every PostgreSQL session nurture opens (the pool's, the
/// migrations' and the bulk import's).
///
/// `jit = off`: PostgreSQL compiles a statement to machine code (JIT) when
/// its estimated cost is high, and it estimates an audience scan's
/// correlated tag and enrollment probes very high: on 100,000 contacts a
/// calendar check that finds nobody ran 10 ms and compiled for 300-400 ms,
/// 9.7 s of a 13.2 s dry-run (`auto_explain`). Every statement nurture runs
/// is an index lookup, a batch write or a scan that reads each row once,
/// where compiling cannot pay for itself.
///
/// `client_min_messages = warning`: the server's notices ("relation
/// _sqlx_migrations already exists, skipping" at every start) are not news
/// to an operator; its warnings still reach the log.
///
/// `default_transaction_isolation = 'read committed'`: the claims (`FOR
/// UPDATE SKIP LOCKED` under a lease) and the event log's reads in sequence
/// order are written for PostgreSQL's default isolation; a database set to
/// repeatable read or serializable would fail them with serialization
/// errors when daemons meet. A transaction that needs more asks for it
/// (`prune`: repeatable read).
pub(crate) const PG_SESSION_SETTINGS: &str = "SET jit = off; SET client_min_messages = warning; \
     SET default_transaction_isolation = 'read committed'";

/// sqlx logs a statement that runs over a second as a warning, with its
/// whole text. A scan of a million contacts (an `inactive` tick, a dry-run)
/// takes a second or more by design, and a warning at each tick would teach
/// an operator to ignore the daemon's warnings: only a statement that ran
/// half a minute is one (a lock held that long, a plan gone wrong).
/// `NURTURE_LOG=info,sqlx=debug` shows every statement with its time.
fn quiet_slow_statements<O: sqlx::ConnectOptions>(options: O) -> O {
    options.log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(30))
}

/// A connection of its own to the PostgreSQL server at `url`, set up as the
/// pool's are ([`PG_SESSION_SETTINGS`]): the migrations' and the bulk
/// import's lanes.
pub async fn pg_session(url: &str) -> Result<PgConnection, sqlx::Error> {
    let options = quiet_slow_statements(sqlx::postgres::PgConnectOptions::from_str(url)?);
    let mut conn = PgConnection::connect_with(&options).await?;
    conn.execute(PG_SESSION_SETTINGS).await?;
    Ok(conn)
}

impl Store {
    /// Opens (and creates, for SQLite) the store at `url` and applies the
    /// migrations. `sqlite://PATH` (relative paths are taken from the working
    /// directory; `Settings::database_url` makes them absolute),
    /// `sqlite::memory:`, or `postgres://USER:PASS@HOST:PORT/DB`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            Self::open_sqlite(url).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else {
            Err(StoreError::UnsupportedUrl { url: redact(url) })
        }
    }

    async fn open_sqlite(given: &str) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            url: given.to_string(),
            source,
        };
        // Two pools must reach one database: an anonymous in-memory database
        // is private to its connection, so name it and share its cache.
        let memory = given.contains(":memory:") || given.contains("mode=memory");
        let url = if given.contains(":memory:") {
            let n: u64 = rand::random();
            format!(
                "sqlite:file:nurture-memory-{}-{n:016x}?mode=memory&cache=shared",
                std::process::id()
            )
        } else {
            given.to_string()
        };
        let options = SqliteConnectOptions::from_str(&url).map_err(open_err)?;
        let path = options.get_filename().to_path_buf();
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536")
            .pragma(
                "wal_autocheckpoint",
                checkpointer::SAFETY_NET_PAGES.to_string(),
            )
            .pragma(
                "journal_size_limit",
                checkpointer::WAL_SIZE_LIMIT.to_string(),
            )
            // Rows cross from SQLite's worker thread in a bounded channel; a deep
            // one lets a scan over a million contacts run without a thread
            // handoff per row.
            .row_buffer_size(4096);
        let options = quiet_slow_statements(options);
        // No ping before each acquire (sqlx's default): it was a round trip
        // (to the connection's thread here, to the server on PostgreSQL) in
        // front of every statement on the planner's serial path, +7% end to
        // end on PostgreSQL. sqlx still pings each connection when it is
        // released and closes a broken one, so after a PostgreSQL restart a
        // dead connection fails one statement (callers retry) and is gone.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .after_release(|conn, _| Box::pin(release_clean(conn)))
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: given.to_string(),
                source,
            })?;
        // The Any driver rebuilds SQLite options from the URL alone, so the
        // per-connection pragmas are set again here (WAL is a property of the
        // file, set above).
        let db = AnyPoolOptions::new()
            .test_before_acquire(false)
            .after_release(|conn, _| Box::pin(release_clean(conn)))
            .max_connections(if memory { 1 } else { SQLITE_CONNECTIONS })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute(ANY_POOL_PRAGMAS.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(quiet_slow_statements(
                AnyConnectOptions::from_str(&url).map_err(open_err)?,
            ))
            .await
            .map_err(open_err)?;
        let file = if memory {
            None
        } else {
            Some(FileIdentity::of(&path).map_err(|e| StoreError::Io {
                path: path.display().to_string(),
                source: e,
            })?)
        };
        let readers = file
            .as_ref()
            .map(|f| std::sync::Arc::new(scan_sqlite::Readers::new(f.path.clone())));
        let checkpointer = match &file {
            Some(f) => Some(std::sync::Arc::new(checkpointer::Checkpointer::start(
                &f.path.to_string_lossy(),
            )?)),
            None => None,
        };
        Ok(Store {
            db,
            dialect: Dialect::Sqlite,
            sqlite: Some(pool),
            url: given.to_string(),
            file,
            write_queue: Some(std::sync::Arc::new(tokio::sync::Semaphore::new(1))),
            growth: None,
            readers,
            checkpointer,
        })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            url: redact(url),
            source,
        };
        // Migrations run on a concrete connection; sqlx's PostgreSQL migrator
        // takes an advisory lock, so daemons starting together apply them once.
        {
            let mut conn = pg_session(url).await.map_err(open_err)?;
            sqlx::migrate!("migrations/postgres")
                .run(&mut conn)
                .await
                .map_err(|source| StoreError::Migrate {
                    url: redact(url),
                    source,
                })?;
            let _ = conn.close().await;
        }
        let db = pg_pool_options(PG_CONNECTIONS)
            .connect_with(quiet_slow_statements(
                AnyConnectOptions::from_str(url).map_err(open_err)?,
            ))
            .await
            .map_err(open_err)?;
        Ok(Store {
            db,
            dialect: Dialect::Postgres,
            sqlite: None,
            url: url.to_string(),
            file: None,
            write_queue: None,
            growth: Some(statistics::Growth::new()),
            readers: None,
            checkpointer: None,
        })
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pool every dialect-neutral query runs on.
    pub fn db(&self) -> &AnyPool {
        &self.db
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The SQLite pool, for the SQLite-only fast paths. `None` on PostgreSQL.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        self.sqlite.as_ref()
    }

    /// Begins a read-then-write transaction: `BEGIN IMMEDIATE` on SQLite
    /// (the write lock up front, so the transaction cannot fail half-way on a
    /// lock upgrade); a plain `BEGIN` (READ COMMITTED) on PostgreSQL, where
    /// the code takes row locks (`FOR UPDATE`) where it reads-then-writes.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        begin(&self.db, self.dialect).await
    }

    /// Waits for this process's turn to write, on SQLite: the API's writers
    /// queue here in order, so that at most one of them holds a connection
    /// while it waits for SQLite's write lock. A hundred concurrent requests
    /// used to take every connection of the pool and spin in SQLite's busy
    /// handler (which is not fair) until some gave up with "database is
    /// locked". Hold the permit until the write is committed. `None` (no
    /// wait) on PostgreSQL.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let q = self.write_queue.clone()?;
        q.acquire_owned().await.ok()
    }

    /// The file behind a SQLite store, for a second connection to reach it;
    /// `None` on PostgreSQL and for an in-memory store.
    pub(crate) async fn sqlite_file(&self) -> Result<Option<String>, StoreError> {
        let Some(pool) = &self.sqlite else {
            return Ok(None);
        };
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(pool)
                .await?;
        Ok(Some(file).filter(|f| !f.is_empty()))
    }

    /// Whether the SQLite file opened is still the file at its path (always
    /// true on PostgreSQL and in memory). A deleted store keeps working
    /// through the open file handles, and everything written to it is lost
    /// at the last close; a replaced one splits the data between two files.
    pub fn check_same_file(&self) -> Result<(), StoreError> {
        let Some(f) = &self.file else {
            return Ok(());
        };
        let path = f.path.display().to_string();
        match FileIdentity::of(&f.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Gone { path }),
            Err(source) => Err(StoreError::Io { path, source }),
            Ok(now) if (now.dev, now.ino) != (f.dev, f.ino) => Err(StoreError::Replaced { path }),
            Ok(_) => Ok(()),
        }
    }

    /// Checks that the store is the file it opened and takes a write: a
    /// committed update of one row of `health_probe`. `/healthz` and the
    /// daemon's start run it; a read-only or full store fails it.
    pub async fn check_writable(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.check_same_file()?;
        let not_writable = |source| StoreError::NotWritable {
            url: redact(&self.url),
            source,
        };
        let mut tx = self.begin().await.map_err(not_writable)?;
        sqlx::query(
            "INSERT INTO health_probe (id, at) VALUES ('probe', $1) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await
        .map_err(not_writable)?;
        tx.commit().await.map_err(not_writable)
    }

    /// Closes every connection (checkpointing the WAL). The scans' kept
    /// readers go first: the last connection to close checkpoints, and a
    /// read-only one cannot.
    pub async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close();
        }
        if let Some(c) = self.checkpointer.clone() {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
        self.db.close().await;
        if let Some(p) = &self.sqlite {
            p.close().await;
        }
    }
}

/// A PostgreSQL pool of at most `max` connections: none opened ahead, each
/// set up with [`PG_SESSION_SETTINGS`], closed after ten idle minutes, handed
/// back clean (`release_clean`).
fn pg_pool_options(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .test_before_acquire(false)
        .after_release(|conn, _| Box::pin(release_clean(conn)))
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(600)))
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(PG_SESSION_SETTINGS).await?;
                Ok(())
            })
        })
}

/// Decides whether a connection goes back to the pool: only when no
/// transaction is open on it.
///
/// SQLite ends a transaction by itself on some errors (`SQLITE_FULL`,
/// `SQLITE_IOERR`, ...). sqlx still counts it open, its `ROLLBACK` on drop
/// then fails ("no transaction is active"), and the connection used to go
/// back to the pool at transaction depth 1: every later `BEGIN IMMEDIATE` on
/// it failed with "attempted to call begin_with at non-zero transaction
/// depth" until a restart (a brief disk-full wedged the daemon). The ping
/// first lets the rollback queued by the dropped transaction run, so the
/// depth read after it is the real one; a connection still in a transaction
/// is closed and the pool opens a fresh one when it needs it.
///
/// A connection at depth 0 has no rollback queued (a dropped transaction
/// leaves the depth at 1 until its rollback ran), so it goes back without
/// the ping: on SQLite every ping is a round trip to the connection's
/// thread, one more per statement the delivery worker runs.
async fn release_clean<C: Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("closing a store connection left inside a failed transaction");
        return Ok(false);
    }
    Ok(true)
}

/// [`Store::begin`] for code that holds only the pool and the dialect.
pub async fn begin(
    db: &AnyPool,
    dialect: Dialect,
) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match dialect {
        Dialect::Sqlite => db.begin_with("BEGIN IMMEDIATE").await,
        Dialect::Postgres => db.begin().await,
    }
}

impl Dialect {
    /// The suffix of a claim's inner SELECT: on PostgreSQL, rows another
    /// daemon is claiming right now are skipped instead of waited for. SQLite
    /// has one writer at a time and no row locks.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The suffix of a read that a write in the same transaction depends on.
    /// The `n`th (1-based) bind placeholder of a generated statement:
    /// `$n` on PostgreSQL, an anonymous `?` on SQLite (bound in order; a
    /// named `$n` costs SQLite a lookup in a list per parameter).
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => "?".to_string(),
        }
    }

    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// A subquery giving the strings of the JSON array bound at `$n`.
    pub fn json_strings(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("(SELECT value FROM json_each(${n}))"),
            Dialect::Postgres => format!("(SELECT jsonb_array_elements_text(CAST(${n} AS jsonb)))"),
        }
    }
}

/// Query parameters of a database URL whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "pass",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "auth_token",
    "api_key",
    "apikey",
];

/// The URL with its credentials masked, for anything shown to a person
/// (errors, logs, `status`): the password of `scheme://user:PASSWORD@host`
/// and the values of `password=`-like parameters become `***`.
///
/// It masks mistyped URLs too, since those are the ones an error echoes:
/// `user:PASSWORD@host` without its scheme (or with `//` for `://`), and a
/// libpq key-value string (`host=db user=mkt password=PASSWORD`), which
/// the store refuses as unsupported and names in its error.
pub fn redact(url: &str) -> String {
    mask_secret_values(&mask_userinfo(url))
}

/// `scheme://user:***@host...`: the password of the part before the last
/// `@` (of the part before `?`), from the first `:` after the scheme.
fn mask_userinfo(url: &str) -> String {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let Some(at) = base.rfind('@') else {
        return url.to_string();
    };
    let from = base.find("://").map_or(0, |s| s + 3);
    match base[from..at].find(':') {
        Some(c) => format!("{}***{}", &url[..from + c + 1], &url[at..]),
        None => url.to_string(),
    }
}

/// `password=***`: the value of every secret-named parameter, in a query
/// (`&`-separated) or a key-value string (space-separated, values quoted
/// with `'` or not).
fn mask_secret_values(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let at_start = i == 0 || matches!(bytes[i - 1], b' ' | b'&' | b'?' | b';' | b'\t');
        let key = at_start
            .then(|| {
                SECRET_PARAMS.iter().find(|k| {
                    let end = i + k.len();
                    end < bytes.len()
                        && bytes[end] == b'='
                        && bytes[i..end].eq_ignore_ascii_case(k.as_bytes())
                })
            })
            .flatten();
        let Some(key) = key else {
            i += 1;
            continue;
        };
        let value = i + key.len() + 1;
        let mut end = value;
        if bytes.get(value) == Some(&b'\'') {
            end += 1;
            while end < bytes.len() && bytes[end] != b'\'' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            end = (end + 1).min(bytes.len());
        } else {
            while end < bytes.len() && !matches!(bytes[end], b' ' | b'&' | b';' | b'\t') {
                end += 1;
            }
        }
        out.push_str(&s[copied..value]);
        out.push_str("***");
        copied = end;
        i = end;
    }
    out.push_str(&s[copied..]);
    out
}

/// Milliseconds since the Unix epoch, as the store keeps time.
pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`to_ms`]; out-of-range values clamp to the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
