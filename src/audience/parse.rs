//! Conditions as written in YAML (`audience:`, `exit_when:`, `if:`) → [`Condition`].
//!
//! A condition is a map with exactly one kind key (`all`, `any`, `not`,
//! `tag`, `field`, `event`, `owner`); a `field` condition takes exactly one
//! operator. Every problem is reported with its place.

use super::{Condition, FieldTest, Literal, OwnerTest};
use crate::diagnostics::Diagnostic;
use crate::located::Located;
use crate::yaml::{Kind, Node, Reader};

/// The keys that say what kind of condition a map is.
pub const CONDITION_KINDS: &[&str] = &[
    "all", "any", "not", "tag", "field", "event", "owner", "segment",
];

/// The operators of a `field` condition; exactly one per condition.
pub const FIELD_OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "older_than",
    "newer_than",
];

/// Reads one condition; `None` after reporting why it cannot be read.
pub fn parse_condition(r: &mut Reader, node: &Node) -> Option<Condition> {
    let Some(entries) = node.as_map() else {
        r.error(
            node.pos,
            format!(
                "a condition must be a map such as {{ tag: vip }} or {{ field: city, equals: Shanghai }}, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let kinds: Vec<&(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| CONDITION_KINDS.contains(&k.scalar_text().unwrap_or("")))
        .collect();
    match kinds.as_slice() {
        [] => {
            if entries.is_empty() {
                r.push(
                    Diagnostic::new(r.file, node.pos, "empty condition").with_suggestion(format!(
                        "a condition is one of: {}",
                        CONDITION_KINDS.join(", ")
                    )),
                );
            }
            let near_field = entries.iter().any(|(k, _)| {
                crate::diagnostics::did_you_mean(k.scalar_text().unwrap_or(""), ["field"]).is_some()
            });
            for (k, _) in entries {
                let text = k.scalar_text().unwrap_or("");
                if FIELD_OPERATORS.contains(&text) {
                    if near_field {
                        continue;
                    }
                    r.error(k.pos, format!("\"{text}\" needs a \"field:\" to compare, e.g. {{ field: city, {text}: ... }}"));
                } else {
                    r.unknown_key(k, CONDITION_KINDS, "a condition");
                }
            }
            None
        }
        [(k, v)] => {
            let kind = k.scalar_text().unwrap_or("");
            parse_kind(r, kind, k, v, node)
        }
        [(first, _), (second, _), ..] => {
            r.push(
                Diagnostic::new(
                    r.file,
                    second.pos,
                    format!(
                        "a condition has one kind, but this one has \"{}\" and \"{}\"",
                        first.scalar_text().unwrap_or(""),
                        second.scalar_text().unwrap_or("")
                    ),
                )
                .with_suggestion("combine conditions with all: [...] or any: [...]"),
            );
            None
        }
    }
}

fn parse_kind(
    r: &mut Reader,
    kind: &str,
    key: &Node,
    value: &Node,
    map: &Node,
) -> Option<Condition> {
    let _ = key;
    match kind {
        "all" | "any" => {
            r.fields(map, &format!("an \"{kind}\" condition"), &[kind])?;
            let items = r.seq(value, &format!("\"{kind}\""))?;
            // A child that cannot be read is reported and left out; the
            // others are kept so the project checks still look at them (the
            // condition as a whole is invalid anyway).
            let out: Vec<Condition> = items
                .iter()
                .filter_map(|item| parse_condition(r, item))
                .collect();
            Some(if kind == "all" {
                Condition::All(out)
            } else {
                Condition::Any(out)
            })
        }
        "not" => {
            r.fields(map, "a \"not\" condition", &["not"])?;
            Some(Condition::Not(Box::new(parse_condition(r, value)?)))
        }
        "segment" => {
            r.fields(map, "a \"segment\" condition", &["segment"])?;
            let name = r.string(value, "segment")?;
            Some(Condition::Segment(Located::new(name, value.pos)))
        }
        "tag" => {
            r.fields(map, "a \"tag\" condition", &["tag"])?;
            Some(Condition::Tag(r.string(value, "tag")?))
        }
        "owner" => {
            r.fields(map, "an \"owner\" condition", &["owner"])?;
            let o = r.string(value, "owner")?;
            Some(Condition::Owner(match o.as_str() {
                "none" => OwnerTest::None,
                "any" => OwnerTest::Any,
                _ => OwnerTest::Is(o),
            }))
        }
        "event" => {
            let f = r.fields(
                map,
                "an \"event\" condition",
                &["event", "within", "at_least", "where"],
            )?;
            let name = r.string(value, "event");
            let within = match f.get("within") {
                Some(n) => Some(r.duration(n, "within")?),
                None => None,
            };
            let at_least = match f.get("at_least") {
                Some(n) => {
                    let k = r.u32(n, "at_least")?;
                    if k == 0 {
                        r.error(
                            n.pos,
                            "at_least must be 1 or more (use not: { event: ... } for \"never\")",
                        );
                        return None;
                    }
                    k
                }
                None => 1,
            };
            let where_ = match f.get("where") {
                Some(w) => Some(Box::new(parse_where(r, w)?)),
                None => None,
            };
            Some(Condition::Event {
                name: name?,
                within,
                at_least,
                where_,
            })
        }
        "field" => parse_field(r, value, map),
        _ => None,
    }
}

/// `where: { field: amount, gte: 500 }`: a test of one property of an event
/// (event conditions, `wait_until: { event: ..., where: ... }`).
pub fn parse_where(r: &mut Reader, w: &Node) -> Option<super::PropertyTest> {
    match w.get("field") {
        Some(fv) => match parse_field(r, fv, w)? {
            Condition::Field { field, test } => Some(super::PropertyTest { field, test }),
            _ => None,
        },
        None => {
            r.push(
                Diagnostic::new(r.file, w.pos, "where: tests one property of the event")
                    .with_suggestion("write where: { field: amount, gte: 500 }"),
            );
            None
        }
    }
}

fn parse_field(r: &mut Reader, value: &Node, map: &Node) -> Option<Condition> {
    let mut allowed = vec!["field"];
    allowed.extend_from_slice(FIELD_OPERATORS);
    let f = r.fields(map, "a \"field\" condition", &allowed)?;
    let name = r.string(value, "field");
    let ops: Vec<&(Node, Node)> = f
        .entries
        .iter()
        .filter(|(k, _)| FIELD_OPERATORS.contains(&k.scalar_text().unwrap_or("")))
        .collect();
    let (op_key, op_val) = match ops.as_slice() {
        [] => {
            // Unknown keys were reported already (with a suggestion); only
            // say "needs an operator" when nothing else explains it.
            if f.keys().all(|k| k == "field") {
                r.push(
                    Diagnostic::new(
                        r.file,
                        map.pos,
                        format!(
                            "field condition on \"{}\" needs an operator",
                            name.as_deref().unwrap_or("")
                        ),
                    )
                    .with_suggestion(format!("add one of: {}", FIELD_OPERATORS.join(", "))),
                );
            }
            return None;
        }
        [(k, v)] => (k, v),
        [(first, _), (second, _), ..] => {
            r.push(
                Diagnostic::new(
                    r.file,
                    second.pos,
                    format!(
                        "a field condition takes one operator, but this one has \"{}\" and \"{}\"",
                        first.scalar_text().unwrap_or(""),
                        second.scalar_text().unwrap_or("")
                    ),
                )
                .with_suggestion("write two conditions inside all: [...]"),
            );
            return None;
        }
    };
    let op = op_key.scalar_text().unwrap_or("");
    let test = match op {
        "equals" => FieldTest::Equals(literal(r, op_val, op)?),
        "not_equals" => FieldTest::NotEquals(literal(r, op_val, op)?),
        "gt" => FieldTest::Gt(literal(r, op_val, op)?),
        "gte" => FieldTest::Gte(literal(r, op_val, op)?),
        "lt" => FieldTest::Lt(literal(r, op_val, op)?),
        "lte" => FieldTest::Lte(literal(r, op_val, op)?),
        "in" | "not_in" => {
            let items = r.seq(op_val, &format!("\"{op}\""))?;
            let mut lits = Vec::with_capacity(items.len());
            for i in items {
                lits.push(literal(r, i, op)?);
            }
            if op == "in" {
                FieldTest::In(lits)
            } else {
                FieldTest::NotIn(lits)
            }
        }
        "contains" => FieldTest::Contains(r.string(op_val, op)?),
        "starts_with" => FieldTest::StartsWith(r.string(op_val, op)?),
        "exists" => FieldTest::Exists(r.bool(op_val, op)?),
        "older_than" => FieldTest::OlderThan(r.duration(op_val, op)?),
        "newer_than" => FieldTest::NewerThan(r.duration(op_val, op)?),
        _ => return None,
    };
    Some(Condition::Field {
        field: Located::new(name?, value.pos),
        test,
    })
}

/// A value to compare with: quoted text is a string; plain `12` a number,
/// `true` a boolean.
fn literal(r: &mut Reader, n: &Node, op: &str) -> Option<Literal> {
    match &n.kind {
        Kind::Scalar { text, quoted: true } => Some(Literal::Str(text.clone())),
        Kind::Scalar {
            text,
            quoted: false,
        } => Some(if let Some(b) = n.as_bool() {
            Literal::Bool(b)
        } else if let Some(f) = n.as_f64() {
            Literal::Num(f)
        } else {
            Literal::Str(text.clone())
        }),
        _ => {
            r.error(
                n.pos,
                format!("\"{op}\" takes a single value, found {}", n.describe()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cond(src: &str) -> (Option<Condition>, Vec<String>) {
        let file = Path::new("c.yaml");
        let (n, _) = crate::yaml::parse(file, src);
        let mut r = Reader::new(file);
        let c = parse_condition(&mut r, &n.unwrap());
        (
            c,
            r.diags
                .into_iter()
                .map(|d| {
                    format!(
                        "{}:{} {} {:?}",
                        d.pos.line, d.pos.col, d.message, d.suggestion
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn reads_the_spec_example() {
        let (c, d) = cond(
            "all:\n  - tag: vip\n  - field: city\n    in: [Shanghai, Hangzhou]\n  - not: { tag: do-not-disturb }\n  - { event: purchase, within: 3d, at_least: 2 }\n  - owner: none\n  - { field: score, gte: 10 }\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let Some(Condition::All(cs)) = c else {
            panic!()
        };
        assert_eq!(cs.len(), 6);
        assert!(matches!(&cs[1], Condition::Field { test: FieldTest::In(v), .. } if v.len() == 2));
        assert!(matches!(
            &cs[3],
            Condition::Event {
                at_least: 2,
                within: Some(_),
                ..
            }
        ));
        assert!(matches!(&cs[4], Condition::Owner(OwnerTest::None)));
        assert!(
            matches!(&cs[5], Condition::Field { test: FieldTest::Gte(Literal::Num(n)), .. } if *n == 10.0)
        );
    }

    #[test]
    fn reports_operator_mistakes() {
        let (c, d) = cond("{ field: city, equals: a, in: [b] }");
        assert!(c.is_none());
        assert!(d[0].contains("one operator"), "{d:?}");
        let (_, d) = cond("{ field: city }");
        assert!(d[0].contains("needs an operator"), "{d:?}");
        let (_, d) = cond("{ field: city, equal: x }");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("did you mean \\\"equals\\\""), "{d:?}");
        let (_, d) = cond("{ tag: a, field: b }");
        assert!(d[0].contains("one kind"), "{d:?}");
        let (_, d) = cond("{ tga: vip }");
        assert!(d[0].contains("did you mean \\\"tag\\\""), "{d:?}");
        let (_, d) = cond("{ field: last_active_at, older_than: 30 }");
        assert!(d[0].contains("no unit"), "{d:?}");
    }
}
