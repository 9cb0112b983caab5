//! Audience conditions compiled to a parameterised SQL boolean expression over
//! the contacts table aliased `c`.
//!
//! The meaning is the one documented in `eval.rs`; every branch here mirrors a
//! branch there. Nothing the user wrote is ever part of the SQL text: tags,
//! field values, attribute names (as JSON paths) are bound parameters. The
//! only literals in the text are the ones written in this file.
//!
//! Every leaf yields 0 or 1, never NULL (NULL is folded to 0 with
//! `COALESCE`), so `NOT` means exactly what `!` means in Rust.
//!
//! Tags and events use correlated `EXISTS` subqueries, which SQLite answers
//! from the `contact_tags (contact_id, tag)` primary key and the
//! `events (contact_id, name, at)` index without joins.

use chrono::{DateTime, Utc};

use super::eval::{FieldRef, Num, bool_word, key_of_ms, parse_json_number, resolve, rfc3339_ms};
use super::{Condition, FieldTest, Literal, OwnerTest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    /// On PostgreSQL, [`compile`] writes [`pg_prefilter`]: exactly the
    /// audience (tags, owner, events and field tests, the latter in
    /// `sql_pg.rs`), except an event's `where:` on its properties, which is
    /// left to Rust (the scan then selects a superset). The callers keep
    /// only the contacts that `eval::holds` admits either way.
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("audience conditions cannot be compiled to SQL for {0:?} yet")]
    Unsupported(Dialect),
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

    fn text_bind(&mut self, s: &str) {
        self.bind(Bind::Text(s.to_string()))
    }

    fn num_bind(&mut self, n: Num) {
        self.bind(match n {
            Num::Int(i) => Bind::Int(i),
            Num::Real(r) => Bind::Real(r),
        })
    }

    /// The SQL with every parameter written in as a literal, for the sqlite3
    /// command-line shell (benchmarks, debugging). SQLite dialect only; the
    /// text must hold no `$DIGIT` other than placeholders (true of what
    /// [`compile`] writes).
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

/// Appends `cond` as a boolean SQL expression over `contacts c`, deciding
/// time windows against `now`.
pub fn compile(cond: &Condition, now: DateTime<Utc>, out: &mut Sql) -> Result<(), CompileError> {
    match out.dialect {
        Dialect::Sqlite if cond.has_event_where() => {
            // Event properties are not compiled to SQL: the scan narrows
            // (events counted without `where:`, which selects a superset)
            // and the callers decide in Rust, as on PostgreSQL.
            pg_prefilter(cond, now.timestamp_millis(), out);
            Ok(())
        }
        Dialect::Sqlite => {
            cond_sql(cond, now.timestamp_millis(), out);
            Ok(())
        }
        Dialect::Postgres => {
            pg_prefilter(cond, now.timestamp_millis(), out);
            Ok(())
        }
    }
}

/// Writes a PostgreSQL boolean that holds for every contact for which `cond`
/// holds (never NULL); returns whether it is exact (holds for no other).
/// Negation keeps only exact parts: the negation of a superset is not one.
pub fn pg_prefilter(cond: &Condition, now_ms: i64, out: &mut Sql) -> bool {
    match cond {
        Condition::Segment(_) => {
            out.push("FALSE");
            true
        }
        Condition::All(cs) | Condition::Any(cs) if cs.is_empty() => {
            out.push(if matches!(cond, Condition::All(_)) {
                "TRUE"
            } else {
                "FALSE"
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
                exact &= pg_prefilter(c, now_ms, out);
            }
            out.push(")");
            exact
        }
        Condition::Not(c) => {
            let mut o = Sql::new(out.dialect);
            o.binds = out.binds.clone();
            if pg_prefilter(c, now_ms, &mut o) {
                out.push("(NOT ");
                out.push(&o.text);
                out.push(")");
                let n = out.binds.len();
                out.binds.extend(o.binds.split_off(n));
                true
            } else {
                out.push("TRUE");
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
            out.push("(c.owner IS NOT DISTINCT FROM ");
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
                out.push("TRUE");
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
                out.push("((SELECT COUNT(*) FROM (");
                inner(out);
                out.push(" LIMIT ");
                out.bind(Bind::Int(i64::from(*at_least)));
                out.push(") AS k) >= ");
                out.bind(Bind::Int(i64::from(*at_least)));
                out.push(")");
            }
            // Without `where:` the count is exact; with it, a superset.
            where_.is_none()
        }
        Condition::Field { field, test } => {
            super::sql_pg::field(field, test, now_ms, out);
            true
        }
    }
}

fn cond_sql(cond: &Condition, now_ms: i64, out: &mut Sql) {
    match cond {
        Condition::Segment(_) => out.push("0"),
        Condition::All(cs) | Condition::Any(cs) if cs.is_empty() => {
            out.push(if matches!(cond, Condition::All(_)) {
                "1"
            } else {
                "0"
            })
        }
        Condition::All(cs) | Condition::Any(cs) => {
            let op = if matches!(cond, Condition::All(_)) {
                " AND "
            } else {
                " OR "
            };
            out.push("(");
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    out.push(op);
                }
                cond_sql(c, now_ms, out);
            }
            out.push(")");
        }
        Condition::Not(c) => {
            out.push("(NOT ");
            cond_sql(c, now_ms, out);
            out.push(")");
        }
        Condition::Tag(t) => {
            out.push("EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = ");
            out.text_bind(t);
            out.push(")");
        }
        Condition::Owner(OwnerTest::None) => out.push("(c.owner IS NULL)"),
        Condition::Owner(OwnerTest::Any) => out.push("(c.owner IS NOT NULL)"),
        Condition::Owner(OwnerTest::Is(id)) => {
            out.push("(c.owner IS ");
            out.text_bind(id);
            out.push(")");
        }
        Condition::Event {
            name,
            within,
            at_least,
            ..
        } => {
            // `compile` never sends a condition with `where:` here.
            if *at_least == 0 {
                out.push("1");
                return;
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
                out.push(")) >= ");
                out.bind(Bind::Int(i64::from(*at_least)));
                out.push(")");
            }
        }
        Condition::Field { field, test } => field_sql(field, test, now_ms, out),
    }
}

/// How the value is read, per kind of value (mirrors `eval::Val`).
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// Text from a column or attribute.
    Text(Src<'a>),
    /// An attribute holding a JSON number.
    Num(Src<'a>),
    /// An attribute holding JSON true/false.
    BoolConst(bool),
    /// `unsubscribed`.
    BoolCol(&'static str),
    /// A millisecond column.
    Time(&'static str),
}

#[derive(Clone, Copy)]
enum Src<'a> {
    Col(&'static str),
    Attr(&'a str),
}

impl Src<'_> {
    fn emit(self, out: &mut Sql) {
        match self {
            Src::Col(c) => {
                out.push("c.");
                out.push(c);
            }
            Src::Attr(k) => {
                out.push("json_extract(c.attrs, ");
                out.bind(Bind::Text(json_path(k)));
                out.push(")");
            }
        }
    }
}

/// `$."key"` with `"` and `\` escaped, which SQLite's JSON path reads back
/// as the key itself.
fn json_path(key: &str) -> String {
    let mut p = String::with_capacity(key.len() + 4);
    p.push_str("$.\"");
    for ch in key.chars() {
        if ch == '"' || ch == '\\' {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('"');
    p
}

fn field_sql(field: &str, test: &FieldTest, now_ms: i64, out: &mut Sql) {
    let f = resolve(field);
    match test {
        FieldTest::NotEquals(_) | FieldTest::NotIn(_) => {
            let positive = match test {
                FieldTest::NotEquals(l) => FieldTest::Equals(l.clone()),
                FieldTest::NotIn(ls) => FieldTest::In(ls.clone()),
                _ => unreachable!(),
            };
            out.push("(NOT ");
            field_sql(field, &positive, now_ms, out);
            out.push(")");
            return;
        }
        FieldTest::Exists(b) => {
            exists_sql(f, *b, out);
            return;
        }
        _ => {}
    }
    match f {
        FieldRef::Tags => tags_sql(test, out),
        FieldRef::Text(col) => leaf(out, |o| branch(Kind::Text(Src::Col(col)), test, now_ms, o)),
        FieldRef::Time(col) => leaf(out, |o| branch(Kind::Time(col), test, now_ms, o)),
        FieldRef::Bool(col) => leaf(out, |o| branch(Kind::BoolCol(col), test, now_ms, o)),
        FieldRef::Attr(k) => {
            let src = Src::Attr(k);
            let arms: [(&str, Kind<'_>); 5] = [
                ("text", Kind::Text(src)),
                ("integer", Kind::Num(src)),
                ("real", Kind::Num(src)),
                ("true", Kind::BoolConst(true)),
                ("false", Kind::BoolConst(false)),
            ];
            // Each case is numbered from the binds before it (`$n` placeholders
            // must match bind positions), so cases are built where they go.
            let dialect = out.dialect;
            let build = |binds: &Vec<Bind>| {
                let mut cases = Vec::new();
                let mut at = binds.clone();
                for (ty, kind) in arms {
                    let mut o = Sql::new(dialect);
                    o.binds = at.clone();
                    if branch(kind, test, now_ms, &mut o) {
                        let added = o.binds.split_off(at.len());
                        at.extend(added.iter().cloned());
                        cases.push((ty, o.text, added));
                    }
                }
                cases
            };
            let mut cases = build(&out.binds);
            if cases.is_empty() {
                out.push("0");
                return;
            }
            // One kind of value can match (the usual case: a text test).
            // Test the value first and its type only for the rows it kept:
            // on a scan of a million contacts this saves a JSON lookup per row.
            if cases.len() == 1 {
                let (ty, text, binds) = cases.pop().expect("one case");
                out.push("COALESCE(COALESCE(");
                out.push(&text);
                out.binds.extend(binds);
                out.push(", 0) AND json_type(c.attrs, ");
                out.bind(Bind::Text(json_path(k)));
                out.push(") = '");
                out.push(ty);
                out.push("', 0)");
                return;
            }
            out.push("COALESCE(CASE json_type(c.attrs, ");
            out.bind(Bind::Text(json_path(k)));
            out.push(")");
            let cases = build(&out.binds);
            for (ty, text, binds) in cases {
                out.push(" WHEN '");
                out.push(ty);
                out.push("' THEN ");
                out.push(&text);
                out.binds.extend(binds);
            }
            out.push(" ELSE 0 END, 0)");
        }
    }
}

/// Wraps a branch as `COALESCE(..., 0)`, or writes `0` when it never holds.
fn leaf(out: &mut Sql, f: impl FnOnce(&mut Sql) -> bool) {
    let mut o = Sql::new(out.dialect);
    o.binds = out.binds.clone();
    if f(&mut o) {
        out.push("COALESCE(");
        out.push(&o.text);
        out.push(", 0)");
        let n = out.binds.len();
        out.binds.extend(o.binds.split_off(n));
    } else {
        out.push("0");
    }
}

fn exists_sql(f: FieldRef<'_>, b: bool, out: &mut Sql) {
    let not = if b { "NOT " } else { "" };
    match f {
        FieldRef::Text("id") | FieldRef::Time("created_at") | FieldRef::Bool(_) => {
            out.push(if b { "1" } else { "0" })
        }
        FieldRef::Text(col) | FieldRef::Time(col) => {
            out.push("(c.");
            out.push(col);
            out.push(" IS ");
            out.push(not);
            out.push("NULL)");
        }
        FieldRef::Attr(k) => {
            out.push("(json_extract(c.attrs, ");
            out.bind(Bind::Text(json_path(k)));
            out.push(") IS ");
            out.push(not);
            out.push("NULL)");
        }
        FieldRef::Tags => {
            out.push(if b { "" } else { "NOT " });
            out.push("EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id)");
        }
    }
}

fn tags_sql(test: &FieldTest, out: &mut Sql) {
    match test {
        FieldTest::Contains(s) => {
            out.push("EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = ");
            out.text_bind(s);
            out.push(")");
        }
        FieldTest::StartsWith(s) => {
            out.push(
                "EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND instr(t.tag, ",
            );
            out.text_bind(s);
            out.push(") = 1)");
        }
        _ => out.push("0"),
    }
}

fn cmp_op(test: &FieldTest) -> Option<(&'static str, &Literal)> {
    match test {
        FieldTest::Gt(l) => Some((" > ", l)),
        FieldTest::Gte(l) => Some((" >= ", l)),
        FieldTest::Lt(l) => Some((" < ", l)),
        FieldTest::Lte(l) => Some((" <= ", l)),
        _ => None,
    }
}

/// Writes the test for one kind of value; returns false (writing nothing)
/// when the test can never hold for that kind.
fn branch(kind: Kind<'_>, test: &FieldTest, now_ms: i64, out: &mut Sql) -> bool {
    match test {
        FieldTest::Equals(l) => in_sql(kind, std::slice::from_ref(l), out),
        FieldTest::In(ls) => in_sql(kind, ls, out),
        FieldTest::Contains(s) | FieldTest::StartsWith(s) => match kind {
            Kind::Text(src) => {
                out.push("instr(");
                src.emit(out);
                out.push(", ");
                out.text_bind(s);
                out.push(if matches!(test, FieldTest::Contains(_)) {
                    ") > 0"
                } else {
                    ") = 1"
                });
                true
            }
            _ => false,
        },
        FieldTest::OlderThan(d) | FieldTest::NewerThan(d) => {
            let op = if matches!(test, FieldTest::OlderThan(_)) {
                " < "
            } else {
                " > "
            };
            let cutoff = now_ms.saturating_sub(d.millis());
            match kind {
                Kind::Time(col) => {
                    out.push("c.");
                    out.push(col);
                    out.push(op);
                    out.bind(Bind::Int(cutoff));
                    true
                }
                Kind::Text(src) => {
                    utc_key_sql(src, out);
                    out.push(op);
                    out.bind(Bind::Text(key_of_ms(cutoff)));
                    true
                }
                _ => false,
            }
        }
        _ => {
            let Some((op, lit)) = cmp_op(test) else {
                return false;
            };
            ord_sql(kind, op, lit, out)
        }
    }
}

/// `KEY(V)`: the sortable key of a UTC timestamp text, NULL for other text
/// (mirrors `eval::utc_key`).
fn utc_key_sql(src: Src<'_>, out: &mut Sql) {
    const D4: &str = "[0-9][0-9][0-9][0-9]";
    const D2: &str = "[0-9][0-9]";
    let head = format!("{D4}-{D2}-{D2}T{D2}:{D2}:{D2}");
    out.push("(CASE WHEN ");
    src.emit(out);
    out.push(&format!(" GLOB '{head}Z' THEN substr("));
    src.emit(out);
    out.push(", 1, 19) || '.000' WHEN ");
    src.emit(out);
    out.push(&format!(" GLOB '{head}.[0-9][0-9][0-9]Z' THEN substr("));
    src.emit(out);
    out.push(", 1, 23) END)");
}

/// `NUMTEXT(V)`: text read as a JSON number, NULL when it is not one
/// (mirrors `eval::parse_json_number`).
fn num_text_sql(src: Src<'_>, out: &mut Sql) {
    out.push("(CASE WHEN json_valid(");
    src.emit(out);
    out.push(") AND json_type(");
    src.emit(out);
    out.push(") IN ('integer', 'real') THEN json_extract(");
    src.emit(out);
    out.push(", '$') END)");
}

/// `equals` / `in` for one kind of value (mirrors `eval::equals`).
fn in_sql(kind: Kind<'_>, lits: &[Literal], out: &mut Sql) -> bool {
    match kind {
        Kind::Text(src) => {
            let strs: Vec<&str> = lits
                .iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            let nums: Vec<f64> = lits
                .iter()
                .filter_map(|l| match l {
                    Literal::Num(n) => Some(*n),
                    _ => None,
                })
                .collect();
            let mut bools: Vec<bool> = lits
                .iter()
                .filter_map(|l| match l {
                    Literal::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect();
            bools.dedup();
            let mut parts = 0;
            out.push("(");
            if !strs.is_empty() {
                src.emit(out);
                out.push(" IN (");
                for (i, s) in strs.iter().enumerate() {
                    if i > 0 {
                        out.push(", ");
                    }
                    out.text_bind(s);
                }
                out.push(")");
                parts += 1;
            }
            if !nums.is_empty() {
                if parts > 0 {
                    out.push(" OR ");
                }
                num_text_sql(src, out);
                out.push(" IN (");
                for (i, n) in nums.iter().enumerate() {
                    if i > 0 {
                        out.push(", ");
                    }
                    out.bind(Bind::Real(*n));
                }
                out.push(")");
                parts += 1;
            }
            if !bools.is_empty() {
                if parts > 0 {
                    out.push(" OR ");
                }
                out.push("lower(");
                src.emit(out);
                out.push(") IN (");
                for (i, b) in bools.iter().enumerate() {
                    if i > 0 {
                        out.push(", ");
                    }
                    out.push("'");
                    out.push(bool_word(*b));
                    out.push("'");
                }
                out.push(")");
                parts += 1;
            }
            out.push(")");
            parts > 0
        }
        Kind::Num(src) => {
            let nums: Vec<Num> = lits
                .iter()
                .filter_map(|l| match l {
                    Literal::Num(n) => Some(Num::Real(*n)),
                    Literal::Str(s) => parse_json_number(s),
                    Literal::Bool(_) => None,
                })
                .collect();
            if nums.is_empty() {
                return false;
            }
            src.emit(out);
            out.push(" IN (");
            for (i, n) in nums.iter().enumerate() {
                if i > 0 {
                    out.push(", ");
                }
                out.num_bind(*n);
            }
            out.push(")");
            true
        }
        Kind::BoolConst(v) => {
            if lits.iter().any(|l| bool_matches(v, l)) {
                out.push("1");
                true
            } else {
                false
            }
        }
        Kind::BoolCol(col) => {
            let t = lits.iter().any(|l| bool_matches(true, l));
            let f = lits.iter().any(|l| bool_matches(false, l));
            match (t, f) {
                (false, false) => return false,
                (true, true) => out.push("1"),
                (true, false) => out.push(&format!("(c.{col} <> 0)")),
                (false, true) => out.push(&format!("(c.{col} = 0)")),
            }
            true
        }
        Kind::Time(col) => {
            let nums: Vec<Num> = lits
                .iter()
                .filter_map(|l| match l {
                    Literal::Num(n) => Some(Num::Real(*n)),
                    Literal::Str(s) => rfc3339_ms(s).map(Num::Int),
                    Literal::Bool(_) => None,
                })
                .collect();
            if nums.is_empty() {
                return false;
            }
            out.push("c.");
            out.push(col);
            out.push(" IN (");
            for (i, n) in nums.iter().enumerate() {
                if i > 0 {
                    out.push(", ");
                }
                out.num_bind(*n);
            }
            out.push(")");
            true
        }
    }
}

fn bool_matches(v: bool, l: &Literal) -> bool {
    match l {
        Literal::Bool(b) => *b == v,
        Literal::Str(s) => s.eq_ignore_ascii_case(bool_word(v)),
        Literal::Num(_) => false,
    }
}

/// `gt`/`gte`/`lt`/`lte` for one kind of value (mirrors `eval::compare`).
fn ord_sql(kind: Kind<'_>, op: &str, lit: &Literal, out: &mut Sql) -> bool {
    match (kind, lit) {
        (Kind::Text(src), Literal::Num(n)) => {
            num_text_sql(src, out);
            out.push(op);
            out.bind(Bind::Real(*n));
            true
        }
        (Kind::Text(src), Literal::Str(s)) => {
            match rfc3339_ms(s) {
                Some(ms) => {
                    out.push("COALESCE(");
                    utc_key_sql(src, out);
                    out.push(op);
                    out.bind(Bind::Text(key_of_ms(ms)));
                    out.push(", ");
                    src.emit(out);
                    out.push(op);
                    out.text_bind(s);
                    out.push(")");
                }
                None => {
                    src.emit(out);
                    out.push(op);
                    out.text_bind(s);
                }
            }
            true
        }
        (Kind::Num(src), Literal::Num(n)) => {
            src.emit(out);
            out.push(op);
            out.bind(Bind::Real(*n));
            true
        }
        (Kind::Num(src), Literal::Str(s)) => match parse_json_number(s) {
            Some(n) => {
                src.emit(out);
                out.push(op);
                out.num_bind(n);
                true
            }
            None => false,
        },
        (Kind::Time(col), Literal::Str(s)) => match rfc3339_ms(s) {
            Some(ms) => {
                out.push("c.");
                out.push(col);
                out.push(op);
                out.bind(Bind::Int(ms));
                true
            }
            None => false,
        },
        (Kind::Time(col), Literal::Num(n)) => {
            out.push("c.");
            out.push(col);
            out.push(op);
            out.bind(Bind::Real(*n));
            true
        }
        _ => false,
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
