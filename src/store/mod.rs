//! The customer store: contacts, tags, opt-outs, events and the event log,
//! plus the engine's tables (enrollments, outbox, cursors, ...).
//!
//! SQLite is the embedded default; the schema lives in `migrations/sqlite`
//! and is applied on open. `Backend` is an enum so that a PostgreSQL variant
//! (same table and column names, `migrations/postgres`) can be added without
//! changing the callers.
//!
//! Timestamps are stored as INTEGER milliseconds since the Unix epoch (UTC);
//! [`to_ms`] and [`from_ms`] convert.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

mod bulk;
pub mod contacts;
pub mod import;
pub mod plan_reads;
pub mod status;
pub mod wecom;

pub use contacts::{Bind, ContactInput, Upserted};
pub use import::{BadRow, ImportProgress, ImportReport};

/// What can go wrong in the store. Every variant says which store, file or
/// contact it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL {url:?}: expected sqlite://PATH (PostgreSQL is not supported yet)"
    )]
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

/// The database behind a [`Store`].
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(SqlitePool),
}

/// A handle on the customer store. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    url: String,
}

/// How long a connection waits for SQLite's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Opens (and creates, for SQLite) the store at `url` and applies the
    /// migrations. `sqlite://PATH` (relative paths are taken from the working
    /// directory; `Settings::database_url` makes them absolute) or
    /// `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Self::open_sqlite(url).await
        } else {
            Err(StoreError::UnsupportedUrl {
                url: url.to_string(),
            })
        }
    }

    async fn open_sqlite(url: &str) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
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
        // An in-memory database lives in one connection: never open a second.
        let memory = url.contains(":memory:") || url.contains("mode=memory");
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
                url: url.to_string(),
                source,
            })?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
            url: url.to_string(),
        })
    }

    /// The URL this store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The SQLite pool, for modules that write their own queries
    /// (`store::plan_reads`). `None` on other backends.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite(pool) => Some(pool),
        }
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
        }
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

/// `BEGIN IMMEDIATE`: SQLite takes the write lock at once, so a
/// read-then-write transaction cannot fail half-way on a lock upgrade.
pub(crate) const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";
