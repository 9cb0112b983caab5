//! Conditions, fields, events and their properties: every name exists and every
//! literal has the declared field's type.

use super::*;

/// A field name that is neither built in nor declared under `fields:`: a
/// near miss of a known name is an error with "did you mean"; anything else
/// is a custom attribute nobody declared, a warning (a CSV column such as
/// `city` works without a declaration, compared as text).
pub(super) fn check_field_name(
    cx: &CheckContext,
    file: &std::path::Path,
    f: &Located<String>,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let s = cx.settings;
    if BUILTIN_FIELDS.contains(&f.value.as_str()) || s.fields.contains_key(&f.value) {
        return true;
    }
    let known = known_fields(s);
    let d = Diagnostic::new(file, f.pos, format!("unknown field \"{}\"", f.value))
        .did_you_mean(&f.value, &known);
    if d.suggestion.is_some() {
        out.push(d);
        return false;
    }
    out.push(undeclared_warning(file, f.pos, &f.value));
    true
}

pub(super) fn undeclared_warning(file: &std::path::Path, pos: Pos, field: &str) -> Diagnostic {
    Diagnostic::warning(
        file,
        pos,
        format!("custom attribute \"{field}\" is not declared under fields: in nurture.yaml"),
    )
    .with_suggestion(format!(
        "it is read as the contacts have it (CSV imports give text); declare its type (fields: {{ {}: string }}) to have it checked",
        field.split('"').next().unwrap_or(field)
    ))
}

pub(super) fn check_condition(
    cx: &CheckContext,
    file: &std::path::Path,
    c: &Condition,
    out: &mut Vec<Diagnostic>,
) {
    match c {
        Condition::All(cs) | Condition::Any(cs) => {
            cs.iter().for_each(|c| check_condition(cx, file, c, out))
        }
        Condition::Not(c) => check_condition(cx, file, c, out),
        Condition::Field { field, test } => {
            if !check_field_name(cx, file, field, out) {
                return;
            }
            if let Some(d) = template_literal(file, field, test) {
                out.push(d);
                return;
            }
            // A literal of the wrong type for a declared field never matches.
            if let Some(ty) = cx.settings.fields.get(&field.value)
                && let Some(problem) = literal_type_problem(test, *ty)
            {
                out.push(Diagnostic::new(
                    file,
                    field.pos,
                    format!("field \"{}\" {problem}", field.value),
                ));
                return;
            }
            if matches!(test, FieldTest::OlderThan(_) | FieldTest::NewerThan(_)) {
                let is_ts = TIMESTAMP_FIELDS.contains(&field.value.as_str())
                    || cx.settings.fields.get(&field.value) == Some(&FieldType::Timestamp);
                let known_other = BUILTIN_FIELDS.contains(&field.value.as_str())
                    || cx.settings.fields.contains_key(&field.value);
                if !is_ts && known_other {
                    let op = if matches!(test, FieldTest::OlderThan(_)) {
                        "older_than"
                    } else {
                        "newer_than"
                    };
                    out.push(Diagnostic::new(
                        file,
                        field.pos,
                        format!(
                            "{op} compares times, but \"{}\" is not a timestamp field",
                            field.value
                        ),
                    ));
                }
            }
        }
        Condition::Owner(OwnerTest::Is(id)) => {
            // Salespeople live in the settings; without teams we cannot tell.
            let s = cx.settings;
            if !s.teams.is_empty() && s.salesperson(id).is_none() {
                let ids: Vec<&str> = s.teams.values().flatten().map(|p| p.id.as_str()).collect();
                // The model keeps no position for owner ids: point at the file.
                out.push(
                    Diagnostic::new(
                        file,
                        Pos::new(1, 1),
                        format!("owner \"{id}\" is not a salesperson in any team"),
                    )
                    .did_you_mean(id, &ids),
                );
            }
        }
        Condition::Event { name, where_, .. } => {
            check_event_name(cx, file, name, out);
            if let Some(w) = where_ {
                check_property(cx, file, name, w, out);
            }
        }
        // Resolved (or reported) by `crate::segments` when the project loads.
        Condition::Owner(_) | Condition::Tag(_) | Condition::Segment(_) => {}
    }
}

/// Event names are checked only when the settings declare `events:`.
pub(super) fn check_event_name(
    cx: &CheckContext,
    file: &std::path::Path,
    name: &str,
    out: &mut Vec<Diagnostic>,
) {
    let events = &cx.settings.events;
    if events.is_empty() || events.contains_key(name) || BUILTIN_EVENTS.contains(&name) {
        return;
    }
    let known: Vec<&str> = events.keys().map(String::as_str).collect();
    let mut d = Diagnostic::new(
        file,
        find_in_file(file, name),
        format!("event \"{name}\" is not declared under events: in nurture.yaml"),
    )
    .did_you_mean(name, &known);
    if d.suggestion.is_none() {
        d = d.with_suggestion(format!(
            "declared events are: {}; add it there if it is new",
            known.join(", ")
        ));
    }
    out.push(d);
}

/// Events nurture itself records, valid whatever `events:` declares.
pub(super) const BUILTIN_EVENTS: &[&str] = &["wecom_contact_deleted", "wecom_follow_user_deleted"];

/// `where:` on a declared event: the property exists, and a literal compared
/// with it fits its type.
pub(super) fn check_property(
    cx: &CheckContext,
    file: &std::path::Path,
    event: &str,
    w: &crate::audience::PropertyTest,
    out: &mut Vec<Diagnostic>,
) {
    let Some(props) = cx.settings.events.get(event) else {
        return;
    };
    let Some(ty) = props.get(&w.field.value) else {
        let known: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut d = Diagnostic::new(
            file,
            w.field.pos,
            format!(
                "event \"{event}\" has no property \"{}\" under events: in nurture.yaml",
                w.field.value
            ),
        )
        .did_you_mean(&w.field.value, &known);
        if d.suggestion.is_none() {
            d = d.with_suggestion(if known.is_empty() {
                format!(
                    "declare it: events: {{ {event}: {{ {}: string }} }}",
                    w.field.value
                )
            } else {
                format!("its properties are: {}", known.join(", "))
            });
        }
        out.push(d);
        return;
    };
    if let Some(problem) = literal_type_problem(&w.test, *ty) {
        out.push(Diagnostic::new(
            file,
            w.field.pos,
            format!("property \"{}\" of \"{event}\" {problem}", w.field.value),
        ));
    }
}

/// A literal that looks like a template (`"{{today}}"`): conditions are not
/// rendered, so the field is compared with those very characters.
pub(super) fn template_literal(
    file: &std::path::Path,
    field: &Located<String>,
    test: &FieldTest,
) -> Option<Diagnostic> {
    use crate::audience::Literal;
    let lits: Vec<&Literal> = match test {
        FieldTest::Equals(l)
        | FieldTest::NotEquals(l)
        | FieldTest::Gt(l)
        | FieldTest::Gte(l)
        | FieldTest::Lt(l)
        | FieldTest::Lte(l) => vec![l],
        FieldTest::In(ls) | FieldTest::NotIn(ls) => ls.iter().collect(),
        _ => vec![],
    };
    let s = lits.into_iter().find_map(|l| match l {
        Literal::Str(s) if s.contains("{{") => Some(s),
        _ => None,
    })?;
    Some(
        Diagnostic::new(
            file,
            field.pos,
            format!(
                "\"{s}\" is compared as written: conditions are not templates, so the test on \"{}\" can never hold as meant",
                field.value
            ),
        )
        .with_suggestion(
            "compare times with older_than / newer_than (e.g. { field: last_active_at, newer_than: 1d } for today's), or a literal value",
        ),
    )
}

/// Why a test cannot hold on a value of type `ty` (a literal of the wrong
/// type, a time test on something else), if it cannot.
pub fn literal_type_problem(test: &FieldTest, ty: FieldType) -> Option<String> {
    use crate::audience::Literal;
    let lits: Vec<&Literal> = match test {
        FieldTest::Equals(l)
        | FieldTest::NotEquals(l)
        | FieldTest::Gt(l)
        | FieldTest::Gte(l)
        | FieldTest::Lt(l)
        | FieldTest::Lte(l) => vec![l],
        FieldTest::In(ls) | FieldTest::NotIn(ls) => ls.iter().collect(),
        FieldTest::OlderThan(_) | FieldTest::NewerThan(_) => {
            return (ty != FieldType::Timestamp).then(|| {
                format!(
                    "is a {}, not a timestamp: older_than/newer_than never hold",
                    ty.name()
                )
            });
        }
        _ => vec![],
    };
    for l in lits {
        let ok = match (ty, l) {
            (FieldType::Number, Literal::Num(_)) => true,
            (FieldType::Number, Literal::Str(s)) => s.trim().parse::<f64>().is_ok(),
            (FieldType::Bool, Literal::Bool(_)) => true,
            (FieldType::Timestamp, Literal::Str(s)) => {
                chrono::DateTime::parse_from_rfc3339(s).is_ok()
            }
            (FieldType::String, _) => true,
            // Dates compare as text, which orders YYYY-MM-DD correctly.
            (FieldType::Date, Literal::Str(s)) => {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
            }
            _ => false,
        };
        if !ok {
            let shown = match l {
                Literal::Str(s) => format!("\"{s}\""),
                Literal::Num(n) => n.to_string(),
                Literal::Bool(b) => b.to_string(),
            };
            let want = match ty {
                FieldType::Number => "a number such as 500",
                FieldType::Bool => "true or false",
                FieldType::Timestamp => "an RFC 3339 time such as \"2026-11-01T09:00:00+08:00\"",
                FieldType::String => "text",
                FieldType::Date => "a date such as \"2026-11-01\"",
            };
            return Some(format!(
                "is a {}, but {shown} is not {want}: the test can never hold",
                ty.name()
            ));
        }
    }
    None
}
