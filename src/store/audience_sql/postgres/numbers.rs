//! Numbers compared on PostgreSQL exactly as eval.rs compares them:
//! integers of 64 bits exactly (as `numeric`), everything else as the `f64`
//! Rust's parse gives (see the parent module's documentation).

use super::Src;
use crate::audience::eval::Num;
use crate::store::audience_sql::Op;
use crate::store::dialect::{Bind, Sql};

/// 2^-1075: a decimal at or below it (in magnitude) parses to 0.0.
const UNDERFLOW: &str = "2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125E-324";
/// 2^1024 - 2^970: a decimal at or above it (in magnitude) parses to infinity.
const OVERFLOW: &str = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";

/// The JSON number grammar (RFC 8259), as `eval::parse_json_number` reads it.
const JSON_NUMBER: &str = "^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?$";

/// Text read as a JSON number (`eval::parse_json_number`) compared with `n`;
/// NULL when the text is not a number.
pub(super) fn text_num(src: Src<'_>, op: Op, n: Num, out: &mut Sql) -> bool {
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
pub(super) fn token_num(tok: Src<'_>, op: Op, n: Num, out: &mut Sql) -> bool {
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
pub(super) fn int_cmp(x: &dyn Fn(&mut Sql), op: Op, n: Num, out: &mut Sql) -> bool {
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
