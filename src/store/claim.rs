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

use super::Dialect;

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
}
