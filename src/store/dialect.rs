//! The two SQL dialects the store speaks, and SQL text built with its bound
//! parameters ([`Sql`]): what the audience compiler
//! ([`super::audience_sql`]) and the scans write. Only the store builds SQL
//! (issue 12 item 1); the layers above hand it conditions, not text.

use crate::audience::eval::Num;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
}

/// SQL text with its parameters, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    pub dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            text: String::new(),
            binds: Vec::new(),
            dialect,
        }
    }

    /// Appends SQL text written by the program (never user input).
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// Appends a placeholder `$n` bound to `b` (both SQLite and PostgreSQL
    /// read numbered parameters).
    pub fn bind(&mut self, b: Bind) {
        self.binds.push(b);
        self.text.push('$');
        self.text.push_str(&self.binds.len().to_string());
    }

    pub(crate) fn text_bind(&mut self, s: &str) {
        self.bind(Bind::Text(s.to_string()))
    }

    pub(crate) fn num_bind(&mut self, n: Num) {
        self.bind(match n {
            Num::Int(i) => Bind::Int(i),
            Num::Real(r) => Bind::Real(r),
        })
    }

    /// Appends `other` (same dialect), its placeholders numbered after this
    /// one's. A `$` inside a quoted literal is left alone.
    pub fn append(&mut self, other: &Sql) {
        let offset = self.binds.len();
        let mut chars = other.text.chars().peekable();
        let mut quoted = false;
        while let Some(ch) = chars.next() {
            if ch == '\'' {
                quoted = !quoted;
            }
            if quoted || ch != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
                self.text.push(ch);
                continue;
            }
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = n.saturating_mul(10).saturating_add(d as usize);
                chars.next();
            }
            self.text.push('$');
            self.text.push_str(&(n + offset).to_string());
        }
        self.binds.extend(other.binds.iter().cloned());
    }

    /// The SQL with every parameter written in as a literal, for the sqlite3
    /// command-line shell (benchmarks, debugging). SQLite dialect only; the
    /// text must hold no `$DIGIT` other than placeholders (true of what
    /// `store::audience_sql::compile` writes).
    pub fn inline_sqlite(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 16 * self.binds.len());
        let mut chars = self.text.chars().peekable();
        while let Some(ch) = chars.next() {
            if ch != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
                out.push(ch);
                continue;
            }
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = n * 10 + d as usize;
                chars.next();
            }
            match n.checked_sub(1).and_then(|i| self.binds.get(i)) {
                Some(Bind::Text(s)) => {
                    out.push('\'');
                    out.push_str(&s.replace('\'', "''"));
                    out.push('\'');
                }
                Some(Bind::Int(i)) => out.push_str(&i.to_string()),
                Some(Bind::Real(r)) if r.is_nan() => out.push_str("NULL"),
                Some(Bind::Real(r)) if r.is_infinite() => {
                    out.push_str(if *r > 0.0 { "9e999" } else { "-9e999" })
                }
                Some(Bind::Real(r)) => out.push_str(&format!("{r:?}")),
                None => out.push_str(&format!("${n}")),
            }
        }
        out
    }
}

/// Binds an [`Sql`]'s parameters onto a SQLite `query_scalar`, in order.
pub fn bind_sqlite_scalar<'q, O>(
    mut q: sqlx::query::QueryScalar<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments>,
    binds: &[Bind],
) -> sqlx::query::QueryScalar<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
            Bind::Real(r) => q.bind(*r),
        };
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_placeholders_follow_the_first_ones() {
        let mut a = Sql::new(Dialect::Sqlite);
        a.push("a = ");
        a.bind(Bind::Int(1));
        a.push(" AND ");
        let mut b = Sql::new(Dialect::Sqlite);
        b.push("x GLOB '$1*' AND b = ");
        b.bind(Bind::Text("two".into()));
        b.push(" AND c IN (");
        for i in 0..10 {
            if i > 0 {
                b.push(", ");
            }
            b.bind(Bind::Int(i));
        }
        b.push(")");
        a.append(&b);
        assert_eq!(
            a.text,
            "a = $1 AND x GLOB '$1*' AND b = $2 AND c IN ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        assert_eq!(a.binds.len(), 12);
        assert_eq!(a.binds[1], Bind::Text("two".into()));
        assert_eq!(a.binds[11], Bind::Int(9));
    }
}
