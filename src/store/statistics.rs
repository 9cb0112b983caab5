//! Fresh planner statistics, on PostgreSQL, for the enrollments the daemon
//! writes.
//!
//! PostgreSQL plans from statistics that autovacuum refreshes, and its
//! launcher visits each database once per `autovacuum_naptime` (a minute by
//! default). A first import followed by a welcome to every new contact fills
//! the enrollments, their step records and the outbox from nothing within
//! that minute, planned from "empty table" statistics: the planner's lookup
//! of a batch's enrollments (`contact_id IN (...)`) then read the whole
//! table each time, 2.5 s of the server's 21 CPU seconds in a 100,000-contact
//! run. So the daemon analyzes the table itself whenever it has written
//! as many enrollments as the table held at its last analysis (at least
//! [`FIRST_AT`]): a handful of ANALYZEs while the table grows from nothing,
//! almost none once it is large, where autovacuum's thresholds take over.
//! SQLite plans without such statistics; nothing to do there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Store;

/// Enrollments written before the first analysis.
const FIRST_AT: u64 = 5_000;

/// What the daemon wrote since the tables were last analyzed.
#[derive(Debug)]
pub(super) struct Growth {
    written: AtomicU64,
    due_at: AtomicU64,
    analyzing: AtomicBool,
}

impl Growth {
    pub(super) fn new() -> Arc<Growth> {
        Arc::new(Growth {
            written: AtomicU64::new(0),
            due_at: AtomicU64::new(FIRST_AT),
            analyzing: AtomicBool::new(false),
        })
    }
}

/// The table whose statistics the planner's lookup needs. The step records
/// and the outbox grow as fast, but no statement's plan changed with their
/// statistics (the outbox's claims and outcomes go by its partial claim
/// index and its primary key), and analyzing them cost more than the
/// lookup saved: the outbox's wide `payload` and `body` made three tables'
/// ANALYZE 1.9 s of server time in a 100,000-contact run, this one 0.45 s,
/// and the run went from 4,200 to 4,700-4,900 msg/s.
const ANALYZE_SQL: &str = "ANALYZE enrollments";

impl Store {
    /// The planner committed `n` new enrollments: on PostgreSQL, analyze
    /// the tables it fills once they have grown enough (in the background;
    /// ANALYZE takes no lock that writes wait for).
    pub fn grew_by(&self, n: u64) {
        let Some(growth) = &self.growth else {
            return;
        };
        let written = growth.written.fetch_add(n, Ordering::Relaxed) + n;
        if written < growth.due_at.load(Ordering::Relaxed)
            || growth.analyzing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let store = self.clone();
        let growth = growth.clone();
        tokio::spawn(async move {
            let analyzed = sqlx::query(ANALYZE_SQL).execute(&store.db).await;
            let rows = sqlx::query_scalar::<_, i64>(
                "SELECT CAST(reltuples AS BIGINT) FROM pg_class WHERE oid = 'enrollments'::regclass",
            )
            .fetch_one(&store.db)
            .await;
            match (analyzed, rows) {
                (Ok(_), Ok(rows)) => {
                    tracing::debug!(written, enrollments = rows, "analyzed the planner's tables");
                    growth.written.store(0, Ordering::Relaxed);
                    growth
                        .due_at
                        .store(FIRST_AT.max(rows.max(0) as u64), Ordering::Relaxed);
                }
                (Err(e), _) | (_, Err(e)) => {
                    // Not the owner of the tables, say: autovacuum still
                    // keeps the statistics, a minute later. Not tried again.
                    tracing::info!(error = %e, "could not analyze the planner's tables; autovacuum will");
                    growth.due_at.store(u64::MAX, Ordering::Relaxed);
                }
            }
            growth.analyzing.store(false, Ordering::Release);
        });
    }
}
