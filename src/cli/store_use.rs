//! The store as a one-shot command uses it: opened with its password kept
//! out of every message, and closed on every way out.
//!
//! Closing matters on SQLite: the last connection to close copies the WAL
//! into `nurture.db` and removes `nurture.db-wal` and `nurture.db-shm`. A
//! command that returned early on an error used to leave them behind, and a
//! newcomer's `ls` after a failed command showed files they had not made.

use std::path::Path;

use super::Failure;
use crate::store::{Store, StoreError, redact};

/// Opens the store at `url`. The error names the store with its password
/// replaced by `***`: a command's error goes to a terminal or a CI log.
pub async fn open_store(url: &str) -> Result<Store, Failure> {
    Store::open(url).await.map_err(|e| match e {
        // A URL that names no store we know is the user's to fix (exit 1).
        StoreError::UnsupportedUrl { .. } => Failure::Input(e.to_string()),
        // These name the store already.
        StoreError::Open { .. } | StoreError::Migrate { .. } => Failure::Other(e.into()),
        other => Failure::Other(
            anyhow::Error::new(other).context(format!("opening the store {}", redact(url))),
        ),
    })
}

/// Runs `body` on `store`, then closes the store, whatever `body` returned.
pub async fn closing<T>(
    store: Store,
    body: impl AsyncFnOnce(&Store) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let result = body(&store).await;
    store.close().await;
    result
}

/// [`open_store`], then [`closing`]: the usual shape of a command's store work.
pub async fn with_store<T>(
    url: &str,
    body: impl AsyncFnOnce(&Store) -> Result<T, Failure>,
) -> Result<T, Failure> {
    closing(open_store(url).await?, body).await
}

/// Refuses a SQLite store file that does not exist yet, for the commands
/// that only read one: opening it would create an empty store, and the
/// command would answer about nobody. `then` ends the message ("import
/// contacts first ...", "nothing to prune").
pub fn existing_store(url: &str, then: &str) -> Result<(), Failure> {
    match url.strip_prefix("sqlite://") {
        Some(path) if !Path::new(path).exists() => Err(Failure::Input(format!(
            "no customer store at {path}: {then}"
        ))),
        _ => Ok(()),
    }
}

/// What the read-only commands tell a newcomer with no store yet.
pub const IMPORT_FIRST: &str = "import contacts first (nurture contacts import FILE.csv)";
