//! Audience conditions decided in Rust, for one contact.
//!
//! This file is the reference for what a condition means; `sql.rs` compiles
//! the same meaning into SQL and `tests/it/audience_equivalence.rs` holds the two
//! equal on random contacts and conditions.
//!
//! # Semantics
//!
//! * `all` / `any` / `not`: as in logic; `all: []` holds, `any: []` does not.
//! * `tag: T`: the contact has tag T (exact, case-sensitive).
//! * `owner: none | any | ID`: no owner / some owner / owner is ID.
//! * `event: N [within: D] [at_least: K]`: at least K (default 1) events named
//!   N, counting only those with `at > now - D` when `within` is given
//!   (milliseconds). `at_least: 0` always holds. The caller loads the events.
//!   `where: { field: P, OP: V }` counts only events whose property P passes
//!   the test, read as a custom attribute P would be.
//! * `field: F`: F is a built-in field (`id name email phone
//!   wecom_external_userid owner timezone created_at last_active_at
//!   unsubscribed tags`) or else a custom attribute.
//!
//! A field's value is one of: *missing* (unset built-in, absent attribute or
//! JSON null), *text*, *number* (integer or real), *bool*, *time*
//! (`created_at`, `last_active_at`, held as milliseconds since the epoch), or
//! *other* (an attribute holding a JSON array or object: present, but no
//! comparison matches it).
//!
//! A missing value makes every test false except `not_equals`, `not_in` and
//! `exists: false`, which hold. `not_equals` is exactly "not `equals`" and
//! `not_in` exactly "not `in`", for every value.
//!
//! **equals / in** (in = equals any of the list):
//! * text vs string literal: the same text (case-sensitive).
//! * text vs number literal: the text is a JSON number (RFC 8259 grammar,
//!   surrounding JSON whitespace allowed: `" 12"`, `"1.5e3"`; not `"+1"`,
//!   `".5"`, `"01"`, `"0x10"`) equal to the literal.
//! * text vs bool literal: the text is `true`/`false` in any ASCII case.
//! * number vs number literal: numerically equal (integers and reals compare
//!   exactly, as SQLite does).
//! * number vs string literal: the literal is a JSON number equal to it.
//! * bool vs bool literal: equal; bool vs string literal: the literal is
//!   `true`/`false` in any ASCII case matching it. Bool vs number: false.
//! * time vs string literal: the literal is RFC 3339 and names the same
//!   millisecond; time vs number literal: the milliseconds are equal.
//! * everything else: false.
//!
//! **gt / gte / lt / lte**:
//! * number literal: numbers and numeric text compare numerically; time
//!   compares as milliseconds; anything else is false.
//! * string literal on time: the literal must be RFC 3339 (else false);
//!   compares as time.
//! * string literal on text: when the literal is RFC 3339 *and* the text is a
//!   UTC timestamp of the form `YYYY-MM-DDTHH:MM:SSZ` or
//!   `YYYY-MM-DDTHH:MM:SS.sssZ`, they compare as time (millisecond
//!   precision); otherwise the texts compare byte by byte.
//! * string literal on a number: the literal must be a JSON number; numeric.
//! * bool literals and bool values: false.
//!
//! **contains / starts_with**: text values only, case-sensitive, no wildcards.
//! On `tags`: `contains: T` is "has tag T", `starts_with: P` is "has a tag
//! starting with P".
//!
//! **exists: true/false**: the value is (not) missing. On `tags`: the contact
//! has at least one tag (or none).
//!
//! **older_than: D / newer_than: D**: the value is a time before / after
//! `now - D` (milliseconds). Time fields qualify, and text attributes holding
//! a UTC timestamp in one of the two forms above (a CSV import's
//! `2026-01-31T09:00:00Z`). Other values (including timestamps with an offset
//! such as `+08:00` in a custom attribute) are false.
//!
//! `tags` with `equals`, `in`, `gt`...: false (`not_equals`/`not_in`: true).

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Condition, FieldTest, Literal, OwnerTest};
use crate::contact::Contact;

/// Does `cond` hold for `contact` at `now`?
pub fn holds(cond: &Condition, contact: &Contact, now: DateTime<Utc>) -> bool {
    holds_from(cond, contact, now, None)
}

/// [`holds`] for a goal (`exit_when`): events count only at or after
/// `since`, when the enrollment began. A purchase last year does not mean a
/// win-back that started today has reached its goal. Tags and fields are read
/// as they are now.
pub fn holds_since(
    cond: &Condition,
    contact: &Contact,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
) -> bool {
    holds_from(cond, contact, now, Some(since))
}

fn holds_from(
    cond: &Condition,
    contact: &Contact,
    now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> bool {
    match cond {
        Condition::Segment(_) => false,
        Condition::All(cs) => cs.iter().all(|c| holds_from(c, contact, now, since)),
        Condition::Any(cs) => cs.iter().any(|c| holds_from(c, contact, now, since)),
        Condition::Not(c) => !holds_from(c, contact, now, since),
        Condition::Tag(t) => contact.tags.contains(t),
        Condition::Owner(o) => match o {
            OwnerTest::None => contact.owner.is_none(),
            OwnerTest::Any => contact.owner.is_some(),
            OwnerTest::Is(id) => contact.owner.as_deref() == Some(id.as_str()),
        },
        Condition::Event {
            name,
            within,
            at_least,
            where_,
        } => {
            if *at_least == 0 {
                return true;
            }
            let cutoff = within.map(|d| now.timestamp_millis().saturating_sub(d.millis()));
            let n = contact
                .events
                .iter()
                .filter(|e| {
                    e.name == *name
                        && cutoff.is_none_or(|c| e.at.timestamp_millis() > c)
                        && since.is_none_or(|s| e.at >= s)
                        && where_
                            .as_ref()
                            .is_none_or(|w| property_holds(w, &e.properties, now))
                })
                .take(*at_least as usize)
                .count();
            n >= *at_least as usize
        }
        Condition::Field { field, test } => field_holds(field, test, contact, now),
    }
}

/// What a field name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldRef<'a> {
    /// A text column that may be NULL (`id` never is).
    Text(&'static str),
    /// A millisecond timestamp column.
    Time(&'static str),
    /// `unsubscribed`.
    Bool(&'static str),
    Tags,
    /// A custom attribute.
    Attr(&'a str),
}

pub(crate) fn resolve(name: &str) -> FieldRef<'_> {
    match name {
        "id" => FieldRef::Text("id"),
        "name" => FieldRef::Text("name"),
        "email" => FieldRef::Text("email"),
        "phone" => FieldRef::Text("phone"),
        "wecom_external_userid" => FieldRef::Text("wecom_external_userid"),
        "owner" => FieldRef::Text("owner"),
        "timezone" => FieldRef::Text("timezone"),
        "created_at" => FieldRef::Time("created_at"),
        "last_active_at" => FieldRef::Time("last_active_at"),
        "unsubscribed" => FieldRef::Bool("unsubscribed"),
        "tags" => FieldRef::Tags,
        other => FieldRef::Attr(other),
    }
}

/// A number as SQLite holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Real(f64),
}

#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Missing,
    Text(&'a str),
    Num(Num),
    Bool(bool),
    Time(i64),
    Other,
}

fn value<'a>(f: FieldRef<'_>, c: &'a Contact) -> Val<'a> {
    let text = |o: &'a Option<String>| o.as_deref().map_or(Val::Missing, Val::Text);
    match f {
        FieldRef::Text("id") => Val::Text(&c.id),
        FieldRef::Text("name") => text(&c.name),
        FieldRef::Text("email") => text(&c.email),
        FieldRef::Text("phone") => text(&c.phone),
        FieldRef::Text("wecom_external_userid") => text(&c.wecom_external_userid),
        FieldRef::Text("owner") => text(&c.owner),
        FieldRef::Text("timezone") => text(&c.timezone),
        FieldRef::Text(_) => Val::Missing,
        FieldRef::Time("created_at") => Val::Time(c.created_at.timestamp_millis()),
        FieldRef::Time("last_active_at") => c
            .last_active_at
            .map_or(Val::Missing, |t| Val::Time(t.timestamp_millis())),
        FieldRef::Time(_) => Val::Missing,
        FieldRef::Bool(_) => Val::Bool(c.unsubscribed),
        FieldRef::Tags => Val::Other,
        FieldRef::Attr(k) => json_val(c.attrs.get(k)),
    }
}

/// A JSON value (a custom attribute, an event property) as compared.
fn json_val(v: Option<&Value>) -> Val<'_> {
    match v {
        None | Some(Value::Null) => Val::Missing,
        Some(Value::String(s)) => Val::Text(s),
        Some(Value::Bool(b)) => Val::Bool(*b),
        Some(Value::Number(n)) => Val::Num(match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Real(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Some(Value::Array(_) | Value::Object(_)) => Val::Other,
    }
}

fn field_holds(field: &str, test: &FieldTest, c: &Contact, now: DateTime<Utc>) -> bool {
    let f = resolve(field);
    if f == FieldRef::Tags {
        return tags_hold(test, c);
    }
    test_value(value(f, c), test, now)
}

fn test_value(v: Val<'_>, test: &FieldTest, now: DateTime<Utc>) -> bool {
    match test {
        FieldTest::Equals(l) => equals(v, l),
        FieldTest::NotEquals(l) => !equals(v, l),
        FieldTest::In(ls) => ls.iter().any(|l| equals(v, l)),
        FieldTest::NotIn(ls) => !ls.iter().any(|l| equals(v, l)),
        FieldTest::Gt(l) => compare(v, l) == Some(Ordering::Greater),
        FieldTest::Gte(l) => matches!(compare(v, l), Some(Ordering::Greater | Ordering::Equal)),
        FieldTest::Lt(l) => compare(v, l) == Some(Ordering::Less),
        FieldTest::Lte(l) => matches!(compare(v, l), Some(Ordering::Less | Ordering::Equal)),
        FieldTest::Contains(s) => matches!(v, Val::Text(t) if t.contains(s.as_str())),
        FieldTest::StartsWith(s) => matches!(v, Val::Text(t) if t.starts_with(s.as_str())),
        FieldTest::Exists(b) => !matches!(v, Val::Missing) == *b,
        FieldTest::OlderThan(d) => {
            time_vs_cutoff(v, now.timestamp_millis().saturating_sub(d.millis()))
                == Some(Ordering::Less)
        }
        FieldTest::NewerThan(d) => {
            time_vs_cutoff(v, now.timestamp_millis().saturating_sub(d.millis()))
                == Some(Ordering::Greater)
        }
    }
}

/// A `where:` test on an event's properties: the meaning of the same test on
/// a custom attribute of that name.
pub fn property_holds(
    w: &super::PropertyTest,
    props: &serde_json::Map<String, Value>,
    now: DateTime<Utc>,
) -> bool {
    test_value(json_val(props.get(w.field.value.as_str())), &w.test, now)
}

fn tags_hold(test: &FieldTest, c: &Contact) -> bool {
    match test {
        FieldTest::NotEquals(_) | FieldTest::NotIn(_) => true,
        FieldTest::Contains(s) => c.tags.contains(s),
        FieldTest::StartsWith(s) => c.tags.iter().any(|t| t.starts_with(s.as_str())),
        FieldTest::Exists(b) => c.tags.is_empty() != *b,
        _ => false,
    }
}

fn equals(v: Val<'_>, l: &Literal) -> bool {
    let eq = |a: Num, b: Num| num_cmp(a, b) == Some(Ordering::Equal);
    match (v, l) {
        (Val::Text(t), Literal::Str(s)) => t == s,
        (Val::Text(t), Literal::Num(n)) => {
            parse_json_number(t).is_some_and(|x| eq(x, Num::Real(*n)))
        }
        (Val::Text(t), Literal::Bool(b)) => t.eq_ignore_ascii_case(bool_word(*b)),
        (Val::Num(x), Literal::Num(n)) => eq(x, Num::Real(*n)),
        (Val::Num(x), Literal::Str(s)) => parse_json_number(s).is_some_and(|y| eq(x, y)),
        (Val::Bool(c), Literal::Bool(b)) => c == *b,
        (Val::Bool(c), Literal::Str(s)) => s.eq_ignore_ascii_case(bool_word(c)),
        (Val::Time(ms), Literal::Str(s)) => rfc3339_ms(s) == Some(ms),
        (Val::Time(ms), Literal::Num(n)) => eq(Num::Int(ms), Num::Real(*n)),
        _ => false,
    }
}

/// The value compared with the literal, or `None` when they do not compare.
fn compare(v: Val<'_>, l: &Literal) -> Option<Ordering> {
    match (v, l) {
        (Val::Text(t), Literal::Num(n)) => num_cmp(parse_json_number(t)?, Num::Real(*n)),
        (Val::Text(t), Literal::Str(s)) => match (rfc3339_ms(s), utc_key(t)) {
            (Some(ms), Some(k)) => Some(k.as_str().cmp(key_of_ms(ms).as_str())),
            _ => Some(t.as_bytes().cmp(s.as_bytes())),
        },
        (Val::Num(x), Literal::Num(n)) => num_cmp(x, Num::Real(*n)),
        (Val::Num(x), Literal::Str(s)) => num_cmp(x, parse_json_number(s)?),
        (Val::Time(ms), Literal::Str(s)) => Some(ms.cmp(&rfc3339_ms(s)?)),
        (Val::Time(ms), Literal::Num(n)) => num_cmp(Num::Int(ms), Num::Real(*n)),
        _ => None,
    }
}

fn time_vs_cutoff(v: Val<'_>, cutoff_ms: i64) -> Option<Ordering> {
    match v {
        Val::Time(ms) => Some(ms.cmp(&cutoff_ms)),
        Val::Text(t) => Some(utc_key(t)?.cmp(&key_of_ms(cutoff_ms))),
        _ => None,
    }
}

pub(crate) fn bool_word(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Compares two numbers exactly (an integer and a real compare by value, not
/// after rounding the integer), as SQLite does. `None` when a real is NaN.
pub(crate) fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Real(x), Num::Real(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Real(y)) => int_real_cmp(x, y),
        (Num::Real(x), Num::Int(y)) => int_real_cmp(y, x).map(Ordering::reverse),
    }
}

fn int_real_cmp(i: i64, r: f64) -> Option<Ordering> {
    if r.is_nan() {
        return None;
    }
    if r >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    if r < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    let t = r.trunc();
    // In range, so the cast is exact.
    match i.cmp(&(t as i64)) {
        Ordering::Equal => t.partial_cmp(&r),
        o => Some(o),
    }
}

/// Reads text as a JSON number (RFC 8259 grammar, with JSON whitespace around
/// it), the way SQLite's `json_valid` + `json_extract` read it: integers that
/// fit 64 bits are integers, everything else a real.
pub(crate) fn parse_json_number(s: &str) -> Option<Num> {
    let t = s.trim_matches([' ', '\t', '\n', '\r']);
    let b = t.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return None,
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        integer = false;
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        integer = false;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    if integer && let Ok(n) = t.parse::<i64>() {
        return Some(Num::Int(n));
    }
    t.parse::<f64>().ok().map(Num::Real)
}

/// An RFC 3339 literal as milliseconds since the epoch.
pub(crate) fn rfc3339_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The sortable key of a UTC timestamp held as text:
/// `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS.sssZ` (digits checked, the
/// calendar not), as `YYYY-MM-DDTHH:MM:SS.sss`. `None` for any other text.
pub(crate) fn utc_key(t: &str) -> Option<String> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let b = t.as_bytes();
    let head_ok = |b: &[u8]| {
        b.len() >= SHAPE.len()
            && SHAPE.iter().zip(b).all(|(s, c)| match s {
                b'd' => c.is_ascii_digit(),
                s => s == c,
            })
    };
    if !head_ok(b) {
        return None;
    }
    match b.len() {
        20 if b[19] == b'Z' => Some(format!("{}.000", &t[..19])),
        24 if b[19] == b'.' && b[20..23].iter().all(u8::is_ascii_digit) && b[23] == b'Z' => {
            Some(t[..23].to_string())
        }
        _ => None,
    }
}

/// The [`utc_key`] of a millisecond instant.
pub(crate) fn key_of_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
        // Out of chrono's range: sorts before/after every real key.
        None if ms < 0 => String::new(),
        None => "\u{10FFFF}".to_string(),
    }
}
