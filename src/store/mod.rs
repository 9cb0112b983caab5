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
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Any, AnyPool, Connection, PgConnection, SqlitePool, Transaction};

mod bulk;
pub mod contacts;
pub mod import;
pub mod plan_reads;
pub mod status;
pub mod wecom;
pub mod workflow_states;

pub use contacts::{Bind, ContactInput, Upserted};
pub use import::{BadRow, Encoding, ImportOptions, ImportProgress, ImportReport};

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
}

pub use crate::audience::sql::Dialect;

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
}

/// How long a connection waits for SQLite's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per daemon to PostgreSQL: the scheduler, the delivery claim
/// and writer, the API and a scan can each hold one. Three daemons use 30 of
/// the server's default 100.
const PG_CONNECTIONS: u32 = 10;

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
            Err(StoreError::UnsupportedUrl {
                url: url.to_string(),
            })
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
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536")
            // Rows cross from SQLite's worker thread in a bounded channel; a deep
            // one lets a scan over a million contacts run without a thread
            // handoff per row.
            .row_buffer_size(4096);
        let pool = SqlitePoolOptions::new()
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
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute(
                        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                         PRAGMA busy_timeout = 5000; PRAGMA temp_store = memory; \
                         PRAGMA cache_size = -65536",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(open_err)?;
        Ok(Store {
            db,
            dialect: Dialect::Sqlite,
            sqlite: Some(pool),
            url: given.to_string(),
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
            let mut conn = PgConnection::connect(url).await.map_err(open_err)?;
            sqlx::migrate!("migrations/postgres")
                .run(&mut conn)
                .await
                .map_err(|source| StoreError::Migrate {
                    url: redact(url),
                    source,
                })?;
            let _ = conn.close().await;
        }
        let db = AnyPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(600)))
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(open_err)?;
        Ok(Store {
            db,
            dialect: Dialect::Postgres,
            sqlite: None,
            url: url.to_string(),
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

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.db.close().await;
        if let Some(p) = &self.sqlite {
            p.close().await;
        }
    }
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

/// The URL without its password, for error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch, as the store keeps time.
pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`to_ms`]; out-of-range values clamp to the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
