//! Audience conditions compiled to a parameterised SQL boolean expression
//! over the contacts table aliased `c`, for SQLite and PostgreSQL.
//!
//! The meaning is the one documented in `audience/eval.rs`. ONE walk over the
//! condition ([`prefilter`]) writes `all`/`any`/`not`, tags, the owner and
//! events for both dialects; what differs is in [`Lits`] (how true, false,
//! a null-safe equality and a derived table are written) and in the field
//! tests ([`sqlite`], [`postgres`]: how a value is read and compared).
//! Nothing the user wrote is ever part of the SQL text: tags, field values
//! and attribute names are bound parameters.
//!
//! Every leaf yields false or true, never NULL, so `NOT` means exactly what
//! `!` means in Rust. Tags and events use correlated `EXISTS` subqueries,
//! answered from the `contact_tags (contact_id, tag)` primary key and the
//! `events (contact_id, name, at)` index without joins.
//!
//! An event's `where:` on its properties is not compiled: the walk writes
//! the event without it (a superset) and says the SQL is not exact; the
//! callers keep only the contacts `eval::holds` admits either way.

use chrono::{DateTime, Utc};

use super::dialect::{Bind, Dialect, Sql};
use crate::audience::{Condition, FieldTest, Literal, OwnerTest};
use crate::workflow::DateTexts;

mod postgres;
mod sqlite;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("audience conditions cannot be compiled to SQL for {0:?} yet")]
    Unsupported(Dialect),
}

/// The words the dialects write differently in the shared walk.
struct Lits {
    t: &'static str,
    f: &'static str,
    /// Null-safe equality with a bound value (the owner test).
    is: &'static str,
    /// After a derived table: PostgreSQL requires it to be named.
    derived: &'static str,
}

impl Lits {
    fn of(d: Dialect) -> Lits {
        match d {
            Dialect::Sqlite => Lits {
                t: "1",
                f: "0",
                is: "(c.owner IS ",
                derived: ")",
            },
            Dialect::Postgres => Lits {
                t: "TRUE",
                f: "FALSE",
                is: "(c.owner IS NOT DISTINCT FROM ",
                derived: ") AS k",
            },
        }
    }
}

/// Appends a test that is false for every contact without attribute `key`
/// and costs a substring search instead of parsing the attributes' JSON
/// (`c.attrs` names the key as `"key"`, as nurture's writers serialise it:
/// serde_json, SQLite's and PostgreSQL's `json_patch`; another system
/// writing the table must too, docs/operations.md), followed by `AND`;
/// nothing for a key with characters a writer might escape.
/// Why: a date trigger's check runs every 15 minutes over every contact,
/// and most have no such attribute.
pub fn attr_mentioned(key: &str, out: &mut Sql) {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        return;
    }
    out.push(match out.dialect {
        Dialect::Sqlite => "instr(c.attrs, ",
        Dialect::Postgres => "strpos(c.attrs, ",
    });
    out.bind(Bind::Text(format!("\"{key}\"")));
    out.push(") > 0 AND ");
}

/// Appends the test that attribute `key` passes `texts`, with exactly the
/// meaning of [`DateTexts::may_be_due`]: a value that is not text starting
/// with a plain `YYYY-MM-DD` passes (a date trigger's check decides it in
/// Rust); one that does passes when its `MM-DD` (each year) or
/// `YYYY-MM-DD` (once) is listed. True or false, never NULL.
pub fn date_texts(key: &str, texts: &DateTexts, out: &mut Sql) {
    let (from, len) = if texts.every_year { (6, 5) } else { (1, 10) };
    let value = |out: &mut Sql| match out.dialect {
        Dialect::Sqlite => {
            out.push("json_extract(c.attrs, ");
            out.bind(Bind::Text(sqlite::json_path(key)));
            out.push(")");
        }
        Dialect::Postgres => {
            out.push("(CAST(c.attrs AS json) ->> CAST(");
            out.bind(Bind::Text(key.to_string()));
            out.push(" AS text))");
        }
    };
    out.push("(coalesce(NOT (");
    value(out);
    out.push(match out.dialect {
        Dialect::Sqlite => " GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'), ",
        Dialect::Postgres => " ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}'), ",
    });
    out.push(Lits::of(out.dialect).t);
    out.push(") OR coalesce(substr(");
    value(out);
    out.push(&format!(", {from}, {len}) IN ("));
    for (i, k) in texts.keys.iter().enumerate() {
        if i > 0 {
            out.push(", ");
        }
        out.bind(Bind::Text(k.clone()));
    }
    if texts.keys.is_empty() {
        out.push("NULL");
    }
    out.push("), ");
    out.push(Lits::of(out.dialect).f);
    out.push("))");
}

/// Appends `cond` as a boolean SQL expression over `contacts c`, deciding
/// time windows against `now`: exactly the audience, except an event's
/// `where:` (see the module documentation).
pub fn compile(cond: &Condition, now: DateTime<Utc>, out: &mut Sql) -> Result<(), CompileError> {
    prefilter(cond, now.timestamp_millis(), out);
    Ok(())
}

/// Writes a boolean (never NULL) that holds for every contact for which
/// `cond` holds; returns whether it is exact (holds for no other). Negation
/// keeps only exact parts: the negation of a superset is not one.
pub fn prefilter(cond: &Condition, now_ms: i64, out: &mut Sql) -> bool {
    let lits = Lits::of(out.dialect);
    match cond {
        Condition::Segment(_) => {
            out.push(lits.f);
            true
        }
        Condition::All(cs) | Condition::Any(cs) if cs.is_empty() => {
            out.push(if matches!(cond, Condition::All(_)) {
                lits.t
            } else {
                lits.f
            });
            true
        }
        Condition::All(cs) | Condition::Any(cs) => {
            let op = if matches!(cond, Condition::All(_)) {
                " AND "
            } else {
                " OR "
            };
            let mut exact = true;
            out.push("(");
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    out.push(op);
                }
                exact &= prefilter(c, now_ms, out);
            }
            out.push(")");
            exact
        }
        Condition::Not(c) => {
            let mut o = Sql::new(out.dialect);
            o.binds = out.binds.clone();
            if prefilter(c, now_ms, &mut o) {
                out.push("(NOT ");
                out.push(&o.text);
                out.push(")");
                let n = out.binds.len();
                out.binds.extend(o.binds.split_off(n));
                true
            } else {
                out.push(lits.t);
                false
            }
        }
        Condition::Tag(t) => {
            out.push("EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = ");
            out.text_bind(t);
            out.push(")");
            true
        }
        Condition::Owner(OwnerTest::None) => {
            out.push("(c.owner IS NULL)");
            true
        }
        Condition::Owner(OwnerTest::Any) => {
            out.push("(c.owner IS NOT NULL)");
            true
        }
        Condition::Owner(OwnerTest::Is(id)) => {
            out.push(lits.is);
            out.text_bind(id);
            out.push(")");
            true
        }
        Condition::Event {
            name,
            within,
            at_least,
            where_,
        } => {
            if *at_least == 0 {
                out.push(lits.t);
                return true;
            }
            let inner = |out: &mut Sql| {
                out.push("SELECT 1 FROM events e WHERE e.contact_id = c.id AND e.name = ");
                out.text_bind(name);
                if let Some(d) = within {
                    out.push(" AND e.at > ");
                    out.bind(Bind::Int(now_ms.saturating_sub(d.millis())));
                }
            };
            if *at_least == 1 {
                out.push("EXISTS (");
                inner(out);
                out.push(")");
            } else {
                // Stops counting at K.
                out.push("((SELECT COUNT(*) FROM (");
                inner(out);
                out.push(" LIMIT ");
                out.bind(Bind::Int(i64::from(*at_least)));
                out.push(lits.derived);
                out.push(") >= ");
                out.bind(Bind::Int(i64::from(*at_least)));
                out.push(")");
            }
            // Without `where:` the count is exact; with it, a superset.
            where_.is_none()
        }
        Condition::Field { field, test } => {
            match out.dialect {
                Dialect::Sqlite => sqlite::field_sql(field, test, now_ms, out),
                Dialect::Postgres => postgres::field(field, test, now_ms, out),
            }
            true
        }
    }
}

/// A comparison operator, as both dialects write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    pub(super) fn sql(self) -> &'static str {
        match self {
            Op::Eq => " = ",
            Op::Gt => " > ",
            Op::Gte => " >= ",
            Op::Lt => " < ",
            Op::Lte => " <= ",
        }
    }

    /// Whether `x op y` holds when x < y (`Less`), and so on.
    pub(super) fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => o == Equal,
            Op::Gt => o == Greater,
            Op::Gte => o != Less,
            Op::Lt => o == Less,
            Op::Lte => o != Greater,
        }
    }
}

/// The comparison a field test makes, with its literal (`gt`, `gte`, `lt`,
/// `lte`); `None` for the other tests.
pub(super) fn cmp_op(test: &FieldTest) -> Option<(Op, &Literal)> {
    match test {
        FieldTest::Gt(l) => Some((Op::Gt, l)),
        FieldTest::Gte(l) => Some((Op::Gte, l)),
        FieldTest::Lt(l) => Some((Op::Lt, l)),
        FieldTest::Lte(l) => Some((Op::Lte, l)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audience::{FieldTest, Literal, PropertyTest};
    use crate::store::dialect::bind_sqlite_scalar;
    use crate::workflow::Located;

    fn field(name: &str, test: FieldTest) -> Condition {
        Condition::Field {
            field: Located::new(name.to_string(), Default::default()),
            test,
        }
    }

    /// An event's `where:` makes the SQL a superset on both dialects, and on
    /// SQLite the rest is written in SQLite's words: the walk used to write
    /// PostgreSQL's field tests (`json_typeof`) there, which SQLite cannot run.
    #[tokio::test]
    async fn an_event_where_is_left_to_rust_in_each_dialects_own_sql() {
        let cond = Condition::All(vec![
            Condition::Event {
                name: "purchase".into(),
                within: None,
                at_least: 2,
                where_: Some(Box::new(PropertyTest {
                    field: Located::new("amount".into(), Default::default()),
                    test: FieldTest::Gte(Literal::Num(500.0)),
                })),
            },
            field("plan", FieldTest::Equals(Literal::Str("pro".into()))),
            Condition::Owner(OwnerTest::Is("s01".into())),
        ]);
        let mut pg = Sql::new(Dialect::Postgres);
        assert!(!prefilter(&cond, 0, &mut pg), "not exact with where:");
        assert!(pg.text.contains("json_typeof") && pg.text.contains(") AS k) >= "));

        let mut lite = Sql::new(Dialect::Sqlite);
        lite.push("SELECT c.id FROM contacts c WHERE ");
        assert!(!prefilter(&cond, 0, &mut lite));
        assert!(!lite.text.contains("json_typeof"), "{}", lite.text);
        let store = crate::store::Store::open("sqlite::memory:").await.unwrap();
        sqlx::query(
            "INSERT INTO contacts (id, owner, attrs, created_at, updated_at)
             VALUES ('c1', 's01', '{\"plan\":\"pro\"}', 0, 0)",
        )
        .execute(store.db())
        .await
        .unwrap();
        for at in [1, 2] {
            sqlx::query(
                "INSERT INTO events (contact_id, name, at, properties) VALUES ('c1', 'purchase', $1, '{}')",
            )
            .bind(at)
            .execute(store.db())
            .await
            .unwrap();
        }
        let q = bind_sqlite_scalar(
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(lite.text.clone())),
            &lite.binds,
        );
        let ids = q
            .fetch_all(store.sqlite_pool().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lite.inline_sqlite()));
        assert_eq!(ids, vec!["c1".to_string()], "the superset keeps c1");
    }
}
