//! The one statement shape of every claim loop (the delivery worker's
//! outbox, the scheduler's due enrollments, the WeCom poller's tasks and the
//! tag sync): in one statement, pick due rows in due order and lease them,
//!
//! ```sql
//! UPDATE t SET <lease> WHERE <key> IN
//!   (SELECT <key> FROM t WHERE <due> ORDER BY <order> LIMIT <n> [FOR UPDATE SKIP LOCKED])
//! RETURNING <columns>
//! ```
//!
//! (underway's `dequeue_in_tx`). On PostgreSQL the inner SELECT skips rows
//! another daemon is claiming right now instead of waiting for them; SQLite
//! has one writer. A lease is either an owner and an expiry (`lease_owner`,
//! `lease_until`: the outbox and the enrollments, whose claimers renew and
//! hand back by owner) or the row's due time pushed to the lease's end (the
//! WeCom tasks and the tag sync: the outcome write sets the real next time,
//! and a claimer that dies leaves the row to come due again). RETURNING
//! gives no order: callers sort what they claimed.

use super::{Dialect, StoreError};

pub(crate) struct Claim<'a> {
    pub table: &'static str,
    /// The row's identity: one column, or several separated by commas.
    pub key: &'static str,
    /// What the claim sets: the lease.
    pub lease: &'a str,
    /// Which rows are due.
    pub due: &'a str,
    pub order: &'static str,
    /// The LIMIT's placeholder.
    pub limit: &'static str,
    pub returning: &'a str,
}

impl Claim<'_> {
    pub fn sql(&self, dialect: Dialect) -> String {
        let key = if self.key.contains(',') {
            format!("({})", self.key)
        } else {
            self.key.to_string()
        };
        format!(
            "UPDATE {t} SET {lease}
              WHERE {key} IN (SELECT {cols} FROM {t}
                               WHERE {due}
                               ORDER BY {order} LIMIT {limit}{skip})
             RETURNING {returning}",
            t = self.table,
            lease = self.lease,
            cols = self.key,
            due = self.due,
            order = self.order,
            limit = self.limit,
            skip = dialect.skip_locked(),
            returning = self.returning,
        )
    }
}

/// Rows of a queue whose lease is its due time (the WeCom tag sync and tag
/// marks): renewing a lease and handing a claim back are one statement,
/// moving the due time of the rows still held at `from` to `to` (a later
/// lease's end, or now). A row whose outcome was written meanwhile no longer
/// holds `from` and is left alone.
pub(crate) struct Held {
    pub table: &'static str,
    /// The row's identity, one column per key value.
    pub key: &'static [&'static str],
    /// The due-time column the lease is written to.
    pub due: &'static str,
}

impl Held {
    fn sql(&self) -> String {
        let mut sql = format!(
            "UPDATE {t} SET {d} = $1 WHERE {d} = $2",
            t = self.table,
            d = self.due
        );
        for (i, k) in self.key.iter().enumerate() {
            sql.push_str(&format!(" AND {k} = ${}", i + 3));
        }
        sql
    }

    /// Moves the rows of `keys` (each as many values as [`Held::key`]) held
    /// until `from_ms` to `to_ms`. Gives how many moved.
    pub async fn moved(
        &self,
        pool: &sqlx::AnyPool,
        keys: &[Vec<&str>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64, StoreError> {
        let sql = self.sql();
        let mut n = 0;
        for key in keys {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(to_ms)
                .bind(from_ms);
            for v in key {
                q = q.bind(*v);
            }
            n += q.execute(pool).await?.rows_affected();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_on_both_stores() {
        let c = Claim {
            table: "q",
            key: "a, b",
            lease: "until = $1",
            due: "due <= $2",
            order: "due",
            limit: "$3",
            returning: "a, b",
        };
        let pg = c.sql(Dialect::Postgres);
        assert!(pg.contains("WHERE (a, b) IN (SELECT a, b FROM q"), "{pg}");
        assert!(pg.contains("LIMIT $3 FOR UPDATE SKIP LOCKED)"), "{pg}");
        assert!(c.sql(Dialect::Sqlite).contains("LIMIT $3)"));
    }

    #[test]
    fn held_rows_move_by_key_and_lease() {
        let h = Held {
            table: "q",
            key: &["a", "b"],
            due: "due",
        };
        assert_eq!(
            h.sql(),
            "UPDATE q SET due = $1 WHERE due = $2 AND a = $3 AND b = $4"
        );
    }
}
