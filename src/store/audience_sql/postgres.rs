//! Audience field tests compiled to PostgreSQL, with exactly the meaning of
//! `eval.rs` (see its module documentation), so that scans on PostgreSQL
//! select in SQL what the Rust evaluator admits rather than pulling every
//! contact to filter in Rust.
//!
//! Custom attributes are read from `attrs` cast to `json` (not `jsonb`):
//! `json` keeps each value's text as written, which is what serde reads in
//! Rust (`1.0` and `1e3` are reals there, `1000` an integer). A value is
//! tested by its JSON type first (`json_typeof`), so a number, a string or
//! a bool compares only as eval.rs compares it, and a missing key, a JSON
//! null, an array or an object match nothing.
//!
//! Numbers: eval.rs compares integers (those that fit 64 bits, written
//! without `.` or an exponent) exactly and everything else as an `f64`.
//! Here an integer is compared as `numeric` against the literal brought to
//! integers (floor/ceil, worked out in Rust); a real is parsed to `float8`
//! (correctly rounded, as Rust parses), with values that `float8` would
//! refuse (beyond its range, or exponents too large for `numeric`) mapped
//! to infinity or zero as Rust's parse maps them, so no stored value can
//! make the scan fail. Text compares byte by byte (`COLLATE "C"`), as Rust
//! compares `&str`.
//!
//! Every test yields a boolean that is never NULL (`COALESCE(..., FALSE)`),
//! so `NOT` means `!`.

use super::{Op, cmp_op};
use crate::audience::eval::{
    FieldRef, Num, bool_word, key_of_ms, parse_json_number, resolve, rfc3339_ms,
};
use crate::audience::{FieldTest, Literal};
use crate::store::dialect::{Bind, Sql};

mod numbers;
use numbers::{int_cmp, text_num, token_num};

/// Where a value comes from; each use writes the expression again (with its
/// own placeholder for an attribute's key).
#[derive(Clone, Copy)]
enum Src<'a> {
    /// A text column, or a time column (BIGINT milliseconds).
    Col(&'static str),
    /// An attribute's value as JSON (`json`).
    AttrJson(&'a str),
    /// An attribute's value as text (`->>`: a string's content, a number's digits).
    AttrText(&'a str),
    /// The text of a JSON number: `AttrJson` cast to text (a number has no quotes).
    AttrToken(&'a str),
    /// Text trimmed of JSON whitespace, for text read as a number.
    Trimmed(&'a Src<'a>),
}

impl Src<'_> {
    fn emit(&self, out: &mut Sql) {
        match self {
            Src::Col(c) => {
                out.push("c.");
                out.push(c);
            }
            Src::AttrJson(k) => {
                out.push("(CAST(c.attrs AS json) -> CAST(");
                out.bind(Bind::Text(k.to_string()));
                out.push(" AS text))");
            }
            Src::AttrText(k) => {
                out.push("(CAST(c.attrs AS json) ->> CAST(");
                out.bind(Bind::Text(k.to_string()));
                out.push(" AS text))");
            }
            Src::AttrToken(k) => {
                out.push("CAST(");
                Src::AttrJson(k).emit(out);
                out.push(" AS text)");
            }
            Src::Trimmed(s) => {
                out.push("btrim(");
                s.emit(out);
                out.push(", E' \\t\\n\\r')");
            }
        }
    }
}

/// The kinds of value a test is written for (mirrors `eval::Val`).
#[derive(Clone, Copy)]
enum Kind<'a> {
    Text(Src<'a>),
    /// The text of a JSON number.
    Num(Src<'a>),
    /// An attribute holding JSON true or false (known from its branch).
    BoolConst(bool),
    BoolCol(&'static str),
    Time(&'static str),
}

/// Appends the test of `field` as a PostgreSQL boolean, never NULL.
pub(super) fn field(name: &str, test: &FieldTest, now_ms: i64, out: &mut Sql) {
    let f = resolve(name);
    match test {
        FieldTest::NotEquals(l) => {
            out.push("(NOT ");
            field(name, &FieldTest::Equals(l.clone()), now_ms, out);
            out.push(")");
            return;
        }
        FieldTest::NotIn(ls) => {
            out.push("(NOT ");
            field(name, &FieldTest::In(ls.clone()), now_ms, out);
            out.push(")");
            return;
        }
        FieldTest::Exists(b) => {
            exists(f, *b, out);
            return;
        }
        _ => {}
    }
    match f {
        FieldRef::Tags => tags(test, out),
        FieldRef::Text(col) => leaf(out, |o| branch(Kind::Text(Src::Col(col)), test, now_ms, o)),
        FieldRef::Time(col) => leaf(out, |o| branch(Kind::Time(col), test, now_ms, o)),
        FieldRef::Bool(col) => leaf(out, |o| branch(Kind::BoolCol(col), test, now_ms, o)),
        FieldRef::Attr(k) => attr(k, test, now_ms, out),
    }
}

/// Runs `f` on a copy of `out` (placeholders numbered on from its binds);
/// keeps what it wrote when it says the test can hold.
fn try_write(out: &Sql, f: impl FnOnce(&mut Sql) -> bool) -> Option<(String, Vec<Bind>)> {
    let mut o = Sql::new(out.dialect);
    o.binds = out.binds.clone();
    if f(&mut o) {
        let added = o.binds.split_off(out.binds.len());
        Some((o.text, added))
    } else {
        None
    }
}

fn append(out: &mut Sql, (text, binds): (String, Vec<Bind>)) {
    out.push(&text);
    out.binds.extend(binds);
}

/// `COALESCE(test, FALSE)`, or `FALSE` when the test never holds.
fn leaf(out: &mut Sql, f: impl FnOnce(&mut Sql) -> bool) {
    match try_write(out, f) {
        Some(w) => {
            out.push("COALESCE(");
            append(out, w);
            out.push(", FALSE)");
        }
        None => out.push("FALSE"),
    }
}

fn attr(k: &str, test: &FieldTest, now_ms: i64, out: &mut Sql) {
    // The value's JSON type decides which kind of test applies.
    let text = |o: &mut Sql| branch(Kind::Text(Src::AttrText(k)), test, now_ms, o);
    let num = |o: &mut Sql| branch(Kind::Num(Src::AttrToken(k)), test, now_ms, o);
    let t = try_write(out, |o| branch(Kind::BoolConst(true), test, now_ms, o)).is_some();
    let f = try_write(out, |o| branch(Kind::BoolConst(false), test, now_ms, o)).is_some();
    let arms = usize::from(try_write(out, text).is_some())
        + usize::from(try_write(out, num).is_some())
        + usize::from(t || f);
    if arms == 0 {
        out.push("FALSE");
        return;
    }
    // One kind of value can match (the usual case: a text test): the value
    // is tested first and its type only for the rows it kept.
    if arms == 1 && !(t || f) {
        let (w, ty) = match try_write(out, text) {
            Some(_) => ("string", true),
            None => ("number", false),
        };
        out.push("COALESCE((");
        let written = if ty {
            try_write(out, text)
        } else {
            try_write(out, num)
        }
        .expect("checked above");
        append(out, written);
        out.push(") AND json_typeof(");
        Src::AttrJson(k).emit(out);
        out.push(&format!(") = '{w}', FALSE)"));
        return;
    }
    out.push("COALESCE(CASE json_typeof(");
    Src::AttrJson(k).emit(out);
    out.push(")");
    if let Some(w) = try_write(out, text) {
        out.push(" WHEN 'string' THEN ");
        append(out, w);
    }
    if let Some(w) = try_write(out, num) {
        out.push(" WHEN 'number' THEN ");
        append(out, w);
    }
    if t || f {
        out.push(" WHEN 'boolean' THEN ");
        // Which literal the value is: the test holds for t, for f, or both.
        match (t, f) {
            (true, true) => out.push("TRUE"),
            (true, false) => {
                Src::AttrText(k).emit(out);
                out.push(" = 'true'");
            }
            _ => {
                Src::AttrText(k).emit(out);
                out.push(" = 'false'");
            }
        }
    }
    out.push(" ELSE FALSE END, FALSE)");
}

fn exists(f: FieldRef<'_>, b: bool, out: &mut Sql) {
    match f {
        FieldRef::Text("id") | FieldRef::Time("created_at") | FieldRef::Bool(_) => {
            out.push(if b { "TRUE" } else { "FALSE" })
        }
        FieldRef::Text(col) | FieldRef::Time(col) => {
            out.push(&format!("(c.{col} IS {}NULL)", if b { "NOT " } else { "" }));
        }
        FieldRef::Attr(k) => {
            // Absent (NULL) and JSON null are both missing.
            out.push(if b { "COALESCE(" } else { "(NOT COALESCE(" });
            out.push("json_typeof(");
            Src::AttrJson(k).emit(out);
            out.push(") <> 'null', FALSE)");
            if !b {
                out.push(")");
            }
        }
        FieldRef::Tags => {
            out.push(if b { "" } else { "NOT " });
            out.push("EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id)");
        }
    }
}

fn tags(test: &FieldTest, out: &mut Sql) {
    match test {
        FieldTest::Contains(s) => {
            out.push("EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = ");
            out.bind(Bind::Text(s.clone()));
            out.push(")");
        }
        FieldTest::StartsWith(s) => {
            out.push(
                "EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND strpos(t.tag, ",
            );
            out.bind(Bind::Text(s.clone()));
            out.push(") = 1)");
        }
        _ => out.push("FALSE"),
    }
}

/// Writes the test for one kind of value; returns false (what it wrote is
/// then dropped) when the test can never hold for that kind.
fn branch(kind: Kind<'_>, test: &FieldTest, now_ms: i64, out: &mut Sql) -> bool {
    match test {
        FieldTest::Equals(l) => equals_any(kind, std::slice::from_ref(l), out),
        FieldTest::In(ls) => equals_any(kind, ls, out),
        FieldTest::Contains(s) | FieldTest::StartsWith(s) => match kind {
            Kind::Text(src) => {
                out.push("(strpos(");
                src.emit(out);
                out.push(", ");
                out.bind(Bind::Text(s.clone()));
                out.push(if matches!(test, FieldTest::Contains(_)) {
                    ") > 0)"
                } else {
                    ") = 1)"
                });
                true
            }
            _ => false,
        },
        FieldTest::OlderThan(d) | FieldTest::NewerThan(d) => {
            let op = if matches!(test, FieldTest::OlderThan(_)) {
                Op::Lt
            } else {
                Op::Gt
            };
            let cutoff = now_ms.saturating_sub(d.millis());
            match kind {
                Kind::Time(col) => {
                    out.push(&format!("(c.{col}{}", op.sql()));
                    out.bind(Bind::Int(cutoff));
                    out.push(")");
                    true
                }
                Kind::Text(src) => {
                    out.push("(");
                    utc_key(src, out);
                    out.push(op.sql());
                    out.bind(Bind::Text(key_of_ms(cutoff)));
                    out.push(")");
                    true
                }
                _ => false,
            }
        }
        _ => match cmp_op(test) {
            Some((op, lit)) => order(kind, op, lit, out),
            None => false,
        },
    }
}

/// `eval::equals` against any of `lits`, for one kind of value.
fn equals_any(kind: Kind<'_>, lits: &[Literal], out: &mut Sql) -> bool {
    let mut parts: Vec<(String, Vec<Bind>)> = Vec::new();
    let mut add = |out: &Sql, f: &dyn Fn(&mut Sql) -> bool| {
        let mut o = Sql::new(out.dialect);
        o.binds = out.binds.clone();
        for (_, b) in &parts {
            o.binds.extend(b.iter().cloned());
        }
        let before = o.binds.len();
        if f(&mut o) {
            let added = o.binds.split_off(before);
            parts.push((o.text, added));
        }
    };
    match kind {
        Kind::Text(src) => {
            let strs: Vec<&str> = lits
                .iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            if !strs.is_empty() {
                add(out, &|o: &mut Sql| {
                    src.emit(o);
                    o.push(" IN (");
                    for (i, s) in strs.iter().enumerate() {
                        if i > 0 {
                            o.push(", ");
                        }
                        o.bind(Bind::Text(s.to_string()));
                    }
                    o.push(")");
                    true
                });
            }
            for l in lits {
                if let Literal::Num(n) = l {
                    add(out, &|o: &mut Sql| text_num(src, Op::Eq, Num::Real(*n), o));
                }
            }
            let mut words: Vec<&str> = lits
                .iter()
                .filter_map(|l| match l {
                    Literal::Bool(b) => Some(bool_word(*b)),
                    _ => None,
                })
                .collect();
            words.sort_unstable();
            words.dedup();
            if !words.is_empty() {
                add(out, &|o: &mut Sql| {
                    // In the C collation lower() folds ASCII only, as
                    // eq_ignore_ascii_case does.
                    o.push("lower(");
                    src.emit(o);
                    o.push(" COLLATE \"C\") IN (");
                    for (i, w) in words.iter().enumerate() {
                        if i > 0 {
                            o.push(", ");
                        }
                        o.push(&format!("'{w}'"));
                    }
                    o.push(")");
                    true
                });
            }
        }
        Kind::Num(src) => {
            for l in lits {
                let n = match l {
                    Literal::Num(n) => Some(Num::Real(*n)),
                    Literal::Str(s) => parse_json_number(s),
                    Literal::Bool(_) => None,
                };
                if let Some(n) = n {
                    add(out, &|o: &mut Sql| token_num(src, Op::Eq, n, o));
                }
            }
        }
        Kind::BoolConst(v) => {
            let matches = lits.iter().any(|l| match l {
                Literal::Bool(b) => *b == v,
                Literal::Str(s) => s.eq_ignore_ascii_case(bool_word(v)),
                Literal::Num(_) => false,
            });
            return matches && {
                out.push("TRUE");
                true
            };
        }
        Kind::BoolCol(col) => {
            let m = |v: bool| {
                lits.iter().any(|l| match l {
                    Literal::Bool(b) => *b == v,
                    Literal::Str(s) => s.eq_ignore_ascii_case(bool_word(v)),
                    Literal::Num(_) => false,
                })
            };
            match (m(true), m(false)) {
                (false, false) => return false,
                (true, true) => out.push("TRUE"),
                (true, false) => out.push(&format!("(c.{col} <> 0)")),
                (false, true) => out.push(&format!("(c.{col} = 0)")),
            }
            return true;
        }
        Kind::Time(col) => {
            for l in lits {
                let n = match l {
                    Literal::Num(n) => Some(Num::Real(*n)),
                    Literal::Str(s) => rfc3339_ms(s).map(Num::Int),
                    Literal::Bool(_) => None,
                };
                if let Some(n) = n {
                    add(out, &|o: &mut Sql| {
                        int_cmp(&|o: &mut Sql| o.push(&format!("c.{col}")), Op::Eq, n, o)
                    });
                }
            }
        }
    }
    if parts.is_empty() {
        return false;
    }
    out.push("(");
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(" OR ");
        }
        append(out, p);
    }
    out.push(")");
    true
}

/// `gt`/`gte`/`lt`/`lte` (mirrors `eval::compare`).
fn order(kind: Kind<'_>, op: Op, lit: &Literal, out: &mut Sql) -> bool {
    match (kind, lit) {
        (Kind::Text(src), Literal::Num(n)) => text_num(src, op, Num::Real(*n), out),
        (Kind::Text(src), Literal::Str(s)) => {
            out.push("(");
            match rfc3339_ms(s) {
                Some(ms) => {
                    // As time when the text is a UTC timestamp, else as text.
                    out.push("COALESCE(");
                    utc_key(src, out);
                    out.push(op.sql());
                    out.bind(Bind::Text(key_of_ms(ms)));
                    out.push(", ");
                    src.emit(out);
                    out.push(" COLLATE \"C\"");
                    out.push(op.sql());
                    out.bind(Bind::Text(s.clone()));
                    out.push(")");
                }
                None => {
                    src.emit(out);
                    out.push(" COLLATE \"C\"");
                    out.push(op.sql());
                    out.bind(Bind::Text(s.clone()));
                }
            }
            out.push(")");
            true
        }
        (Kind::Num(src), Literal::Num(n)) => token_num(src, op, Num::Real(*n), out),
        (Kind::Num(src), Literal::Str(s)) => match parse_json_number(s) {
            Some(n) => token_num(src, op, n, out),
            None => false,
        },
        (Kind::Time(col), Literal::Str(s)) => match rfc3339_ms(s) {
            Some(ms) => int_cmp(
                &|o: &mut Sql| o.push(&format!("c.{col}")),
                op,
                Num::Int(ms),
                out,
            ),
            None => false,
        },
        (Kind::Time(col), Literal::Num(n)) => int_cmp(
            &|o: &mut Sql| o.push(&format!("c.{col}")),
            op,
            Num::Real(*n),
            out,
        ),
        _ => false,
    }
}

/// `KEY(V)`: the sortable key of a UTC timestamp text, NULL for other text
/// (mirrors `eval::utc_key`); compared in the C collation.
fn utc_key(src: Src<'_>, out: &mut Sql) {
    const HEAD: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}";
    out.push("(CASE WHEN ");
    src.emit(out);
    out.push(&format!(" ~ '{HEAD}Z$' THEN substr("));
    src.emit(out);
    out.push(", 1, 19) || '.000' WHEN ");
    src.emit(out);
    out.push(&format!(" ~ '{HEAD}\\.[0-9]{{3}}Z$' THEN substr("));
    src.emit(out);
    out.push(", 1, 23) END) COLLATE \"C\"");
}
