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

/// 2^-1075: a decimal at or below it (in magnitude) parses to 0.0.
const UNDERFLOW: &str = "2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125E-324";
/// 2^1024 - 2^970: a decimal at or above it (in magnitude) parses to infinity.
const OVERFLOW: &str = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";

/// The JSON number grammar (RFC 8259), as `eval::parse_json_number` reads it.
const JSON_NUMBER: &str = "^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?$";

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

/// Text read as a JSON number (`eval::parse_json_number`) compared with `n`;
/// NULL when the text is not a number.
fn text_num(src: Src<'_>, op: Op, n: Num, out: &mut Sql) -> bool {
    let trimmed = Src::Trimmed(&src);
    out.push("(CASE WHEN ");
    trimmed.emit(out);
    out.push(&format!(" ~ '{JSON_NUMBER}' THEN "));
    if !token_num(trimmed, op, n, out) {
        out.push("FALSE");
    }
    out.push(" END)");
    true
}

/// The text of a JSON number compared with `n` as eval.rs compares: as an
/// integer when it is one that fits 64 bits, else as a float8.
fn token_num(tok: Src<'_>, op: Op, n: Num, out: &mut Sql) -> bool {
    out.push("(CASE WHEN ");
    tok.emit(out);
    out.push(" ~ '^-?[0-9]+$' AND CAST(");
    tok.emit(out);
    out.push(" AS numeric) BETWEEN -9223372036854775808 AND 9223372036854775807 THEN ");
    let as_int = |o: &mut Sql| {
        o.push("CAST(");
        tok.emit(o);
        o.push(" AS numeric)");
    };
    if !int_cmp(&as_int, op, n, out) {
        out.push("FALSE");
    }
    out.push(" ELSE ");
    if !real_cmp(tok, op, n, out) {
        out.push("FALSE");
    }
    out.push(" END)");
    true
}

/// An integer expression compared with `n` exactly (`eval::num_cmp`).
fn int_cmp(x: &dyn Fn(&mut Sql), op: Op, n: Num, out: &mut Sql) -> bool {
    let r = match n {
        Num::Int(y) => {
            out.push("(");
            x(out);
            out.push(op.sql());
            out.bind(Bind::Int(y));
            out.push(")");
            return true;
        }
        Num::Real(r) => r,
    };
    if r.is_nan() {
        return false;
    }
    // Beyond i64: every integer is below (or above) it.
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&r) {
        let o = if r > 0.0 {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        };
        if !op.holds(o) {
            return false;
        }
        // Every value holds, but a missing one (NULL) still does not, as in
        // the evaluator: not a bare TRUE.
        out.push("(");
        x(out);
        out.push(" IS NOT NULL)");
        return true;
    }
    let f = r.floor();
    let frac = f != r;
    // In range, so the cast is exact.
    let fi = f as i64;
    let (sql_op, ok) = match (op, frac) {
        (Op::Eq, true) => (Op::Eq, false),
        (Op::Eq, false) => (Op::Eq, true),
        (Op::Gt, _) => (Op::Gt, true),
        (Op::Gte, true) => (Op::Gt, true),
        (Op::Gte, false) => (Op::Gte, true),
        (Op::Lt, true) => (Op::Lte, true),
        (Op::Lt, false) => (Op::Lt, true),
        (Op::Lte, _) => (Op::Lte, true),
    };
    if !ok {
        return false;
    }
    out.push("(");
    x(out);
    out.push(sql_op.sql());
    out.bind(Bind::Int(fi));
    out.push(")");
    true
}

/// A JSON number's text that is not an integer of 64 bits, parsed to an
/// f64 as Rust parses it, compared with `n` (`eval::num_cmp`).
fn real_cmp(tok: Src<'_>, op: Op, n: Num, out: &mut Sql) -> bool {
    let (op, bound) = match n {
        Num::Real(r) if r.is_nan() => return false,
        Num::Real(r) => (op, r),
        Num::Int(y) => {
            // The doubles around y: compare with y itself when it is one.
            let d = y as f64;
            if d as i128 == i128::from(y) {
                (op, d)
            } else {
                let (lo, hi) = if (d as i128) < i128::from(y) {
                    (d, d.next_up())
                } else {
                    (d.next_down(), d)
                };
                // lo < y < hi, and no double lies between.
                match op {
                    Op::Eq => return false,
                    Op::Gt | Op::Gte => (Op::Gte, hi),
                    Op::Lt | Op::Lte => (Op::Lte, lo),
                }
            }
        }
    };
    out.push("(");
    float8(tok, out);
    out.push(op.sql());
    out.bind(Bind::Real(bound));
    out.push(")");
    true
}

/// A JSON number's text as the f64 Rust's parse gives: correctly rounded,
/// infinity past the largest double, zero below the smallest. Written so
/// that no text matching the grammar makes PostgreSQL fail: an exponent of
/// five digits or more is decided from the text alone (numeric cannot hold
/// 1e-99999), and float8 is never asked to parse what it would refuse.
fn float8(tok: Src<'_>, out: &mut Sql) {
    let num = |o: &mut Sql| {
        o.push("CAST(");
        tok.emit(o);
        o.push(" AS numeric)");
    };
    out.push("(CASE WHEN ");
    tok.emit(out);
    out.push(" ~ '^-?0(\\.0+)?([eE].*)?$' THEN CAST(0 AS float8) WHEN ");
    tok.emit(out);
    out.push(" ~ '[eE]-0*[1-9][0-9]{4,}$' THEN CAST(0 AS float8) WHEN ");
    tok.emit(out);
    out.push(" ~ '[eE]\\+?0*[1-9][0-9]{4,}$' THEN (CASE WHEN ");
    tok.emit(out);
    out.push(
        " ~ '^-' THEN CAST('-Infinity' AS float8) ELSE CAST('Infinity' AS float8) END) WHEN abs(",
    );
    num(out);
    out.push(&format!(
        ") >= CAST('{OVERFLOW}' AS numeric) THEN (CASE WHEN "
    ));
    tok.emit(out);
    out.push(
        " ~ '^-' THEN CAST('-Infinity' AS float8) ELSE CAST('Infinity' AS float8) END) WHEN abs(",
    );
    num(out);
    out.push(&format!(
        ") <= CAST('{UNDERFLOW}' AS numeric) THEN CAST(0 AS float8) ELSE CAST("
    ));
    tok.emit(out);
    out.push(" AS float8) END)");
}
