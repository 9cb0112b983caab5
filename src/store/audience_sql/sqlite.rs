//! Audience field tests compiled to SQLite, with exactly the meaning of
//! `audience/eval.rs` (every branch here mirrors a branch there). The walk
//! over the condition is shared with PostgreSQL ([`super`]); this is what
//! differs: how a field is read and compared.
//!
//! Nothing the user wrote is ever part of the SQL text: field values and
//! attribute names (as JSON paths) are bound parameters. Every leaf yields
//! 0 or 1, never NULL (NULL is folded to 0 with `COALESCE`), so `NOT` means
//! exactly what `!` means in Rust.

use super::cmp_op;
use crate::audience::eval::{
    FieldRef, Num, bool_word, key_of_ms, parse_json_number, resolve, rfc3339_ms,
};
use crate::audience::{FieldTest, Literal};
use crate::store::dialect::{Bind, Sql};

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
pub(super) fn json_path(key: &str) -> String {
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

/// Appends the test of `field` as a SQLite 0/1, never NULL.
pub(super) fn field_sql(field: &str, test: &FieldTest, now_ms: i64, out: &mut Sql) {
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
            ord_sql(kind, op.sql(), lit, out)
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
