//! A template that reads `owner.*`, sent where a contact may have no owner.
//!
//! Rendering is strict, so such a contact is skipped (`template_error`),
//! and a marketer finds out only from the dry-run. A contact has an owner
//! after an `assign` step on its path (`round_robin` or `least_loaded`: a
//! `by_field` assign leaves a contact whose field names nobody without
//! one), inside an `if` or a `wait_until` whose branch says so (`if: {
//! owner: any }`, `field: owner` tests, the `else` of `owner: none`), when
//! the workflow's audience requires one, or when the contact came through
//! a contact-way code (`contact_created: { via: CODE }`: the salesperson
//! who added it owns it). Anywhere else the sample render runs once more
//! without an owner. Contacts imported with an owner, or assigned by
//! another workflow, have one, so this is a warning. (A full team also
//! leaves a contact without one; the dry-run shows that skip.)

use std::collections::BTreeMap;

use super::*;

/// One warning per template that reads `owner.*` and is sent where a
/// contact may have no owner, placed in the template, naming the first
/// such send.
pub(super) fn sends_without_owner(
    cx: &CheckContext,
    wf: &Workflow,
    file: &std::path::Path,
) -> Vec<Diagnostic> {
    let mut sends: BTreeMap<&str, &Located<String>> = BTreeMap::new();
    let has_owner = wf.audience.as_ref().is_some_and(implies_owner)
        || matches!(wf.trigger, Trigger::ContactCreated { via: Some(_) });
    walk(&wf.steps, has_owner, &mut sends);
    sends
        .into_values()
        .filter_map(|t| warning(cx, wf, file, t))
        .collect()
}

/// Collects the templates of the sends in `steps` reached without an owner
/// (`has_owner`: whether one is certain on entry); gives whether one is
/// certain after the last step.
fn walk<'a>(
    steps: &'a [Step],
    mut has_owner: bool,
    sends: &mut BTreeMap<&'a str, &'a Located<String>>,
) -> bool {
    for step in steps {
        match &step.action {
            StepAction::Send(s) if !has_owner => {
                sends
                    .entry(s.template.value.as_str())
                    .or_insert(&s.template);
            }
            StepAction::Assign(a) => {
                has_owner = has_owner || !matches!(a.strategy, Strategy::ByField);
            }
            StepAction::If(i) => {
                let then = walk(&i.then, has_owner || implies_owner(&i.condition), sends);
                let otherwise = walk(
                    &i.otherwise,
                    has_owner || false_implies_owner(&i.condition),
                    sends,
                );
                has_owner = then && otherwise;
            }
            // `then` once the condition holds; `else` at the timeout.
            StepAction::WaitUntil(w) => {
                let then = walk(
                    &w.then,
                    has_owner || implies_owner(w.until.condition()),
                    sends,
                );
                let otherwise = walk(&w.otherwise, has_owner, sends);
                has_owner = then && otherwise;
            }
            other => {
                let children = other.children();
                if !children.is_empty() {
                    // Every branch walked (each may hold a send), then
                    // certain after it only if certain after each.
                    let ends: Vec<bool> = children
                        .into_iter()
                        .map(|c| walk(c, has_owner, sends))
                        .collect();
                    has_owner = ends.iter().all(|b| *b);
                }
            }
        }
    }
    has_owner
}

/// The contact has an owner wherever `c` holds.
fn implies_owner(c: &Condition) -> bool {
    match c {
        Condition::Owner(OwnerTest::Any | OwnerTest::Is(_)) => true,
        Condition::Field { field, test } if field.value == "owner" => match test {
            FieldTest::Exists(e) => *e,
            FieldTest::In(vs) => !vs.is_empty(),
            FieldTest::Equals(_) | FieldTest::StartsWith(_) | FieldTest::Contains(_) => true,
            _ => false,
        },
        Condition::All(cs) => cs.iter().any(implies_owner),
        Condition::Any(cs) => !cs.is_empty() && cs.iter().all(implies_owner),
        Condition::Not(c) => false_implies_owner(c),
        _ => false,
    }
}

/// The contact has an owner wherever `c` does not hold.
fn false_implies_owner(c: &Condition) -> bool {
    match c {
        Condition::Owner(OwnerTest::None) => true,
        Condition::Field { field, test } if field.value == "owner" => {
            matches!(test, FieldTest::Exists(false))
        }
        Condition::Any(cs) => cs.iter().any(false_implies_owner),
        Condition::All(cs) => !cs.is_empty() && cs.iter().all(false_implies_owner),
        Condition::Not(c) => implies_owner(c),
        _ => false,
    }
}

/// The warning for `template`, if it reads `owner.*` where the sample
/// contact has none (and renders with one: otherwise its errors are
/// reported already).
fn warning(
    cx: &CheckContext,
    wf: &Workflow,
    file: &std::path::Path,
    template: &Located<String>,
) -> Option<Diagnostic> {
    if !cx.templates.contains(template) {
        return None;
    }
    let mut ctx = sample_render_context(cx, Some(wf));
    render_sample_in(cx, template, Some(wf), &mut ctx.clone(), &mut Vec::new()).ok()?;
    ctx.as_object_mut()?.remove("owner");
    let e = render_sample_in(cx, template, Some(wf), &mut ctx, &mut Vec::new()).err()?;
    let TemplateError::MissingVariable { var: Some(var), .. } = &e else {
        return None;
    };
    if var != "owner" && !var.starts_with("owner.") {
        return None;
    }
    let hbs = cx
        .settings
        .templates_dir
        .join(format!("{}.hbs", template.value));
    let line = template_error_line(&e).unwrap_or(1);
    let col = column_in(&hbs, line, &e);
    Some(
        Diagnostic::warning(
            hbs,
            Pos::new(line, col),
            format!(
                "template \"{}\" reads {var}, and workflow \"{}\" sends it ({}:{}) where a contact may have no owner: \
                 such a contact is skipped (template_error)",
                template.value,
                wf.name,
                file.display(),
                template.pos.line
            ),
        )
        .with_suggestion(
            "add a round_robin or least_loaded assign step before this send, send it under if: { owner: any }, or put the owner's part inside {{#if owner}}...{{/if}}",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(t: OwnerTest) -> Condition {
        Condition::Owner(t)
    }

    #[test]
    fn which_conditions_promise_an_owner() {
        let vip = || Condition::Tag("vip".into());
        let field = |test: FieldTest| Condition::Field {
            field: Located::new("owner".into(), Pos::new(1, 1)),
            test,
        };
        let holds = [
            field(FieldTest::Exists(true)),
            field(FieldTest::Equals(crate::audience::Literal::Str(
                "s1".into(),
            ))),
            owner(OwnerTest::Any),
            owner(OwnerTest::Is("s1".into())),
            Condition::All(vec![vip(), owner(OwnerTest::Any)]),
            Condition::Any(vec![
                owner(OwnerTest::Is("s1".into())),
                owner(OwnerTest::Any),
            ]),
            Condition::Not(Box::new(owner(OwnerTest::None))),
        ];
        for c in &holds {
            assert!(implies_owner(c), "{c:?}");
        }
        let not = [
            field(FieldTest::Exists(false)),
            field(FieldTest::NotEquals(crate::audience::Literal::Str(
                "s1".into(),
            ))),
            owner(OwnerTest::None),
            vip(),
            Condition::Any(vec![vip(), owner(OwnerTest::Any)]),
            Condition::Any(vec![]),
            Condition::Not(Box::new(owner(OwnerTest::Any))),
        ];
        for c in &not {
            assert!(!implies_owner(c), "{c:?}");
        }
        // Where the condition fails (an `else`).
        let fails = [
            field(FieldTest::Exists(false)),
            owner(OwnerTest::None),
            Condition::Any(vec![owner(OwnerTest::None), vip()]),
            Condition::All(vec![owner(OwnerTest::None)]),
            Condition::Not(Box::new(owner(OwnerTest::Any))),
        ];
        for c in &fails {
            assert!(false_implies_owner(c), "{c:?}");
        }
        let not = [
            owner(OwnerTest::Any),
            Condition::All(vec![owner(OwnerTest::None), vip()]),
            Condition::All(vec![]),
        ];
        for c in &not {
            assert!(!false_implies_owner(c), "{c:?}");
        }
    }
}
