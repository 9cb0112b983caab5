//! The steps that hold other steps: `wait_until` (then/else after an event,
//! a condition or a timeout) and `split` (weighted arms).

use super::*;

/// `wait_until: { event: NAME, where?: {...}, timeout: D, then?: [...], else?: [...] }`
/// or `wait_until: { condition: C, timeout: D, ... }`.
pub(super) fn read_wait_until(r: &mut Reader, v: &Node, id: &str) -> Option<StepAction> {
    let f = r.fields(
        v,
        "a wait_until step",
        &["event", "where", "condition", "timeout", "then", "else"],
    )?;
    let until = match (f.get("event"), f.get("condition")) {
        (Some(_), Some(c)) => {
            r.push(
                Diagnostic::new(
                    r.file,
                    c.pos,
                    "a wait_until step waits for an event or a condition, not both",
                )
                .with_suggestion(
                    "for an event with a test of its properties, write event: NAME, where: {...}",
                ),
            );
            return None;
        }
        (Some(e), None) => wait_for_event(r, e, &f)?,
        (None, Some(c)) => {
            if let Some(w) = f.get("where") {
                r.error(w.pos, "where: tests the event of wait_until: { event: ... }; a condition has its own where: inside event: conditions");
            }
            WaitFor::Condition(parse_condition(r, c)?)
        }
        (None, None) => {
            r.push(
                Diagnostic::new(
                    r.file,
                    v.pos,
                    "a wait_until step needs event: NAME or condition: {...}",
                )
                .with_suggestion(
                    "write wait_until: { event: purchase, timeout: 3d, then: [...], else: [...] }",
                ),
            );
            return None;
        }
    };
    let t = required(
        r,
        &f,
        v,
        "timeout",
        "a wait_until step needs timeout: DURATION",
        Some("the enrollment takes else: once the timeout passes, e.g. timeout: 3d"),
    )?;
    let timeout = r.duration(t, "timeout")?;
    if timeout.to_chrono() <= chrono::TimeDelta::zero() {
        r.error(t.pos, "timeout must be longer than 0");
        return None;
    }
    let branch = |r: &mut Reader, key: &str| -> Vec<Step> {
        match f.get(key) {
            Some(n) if n.is_null() => Vec::new(),
            Some(n) => match r.seq(n, key) {
                Some(items) => read_steps(r, items, Some(&format!("{id}.{key}"))),
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    };
    let then = branch(r, "then");
    let otherwise = branch(r, "else");
    Some(StepAction::WaitUntil(WaitUntilStep {
        until,
        timeout,
        then,
        otherwise,
    }))
}

/// `split: { arms: [ { name, weight, steps }, ... ] }`.
pub(super) fn read_split(r: &mut Reader, v: &Node, id: &str) -> Option<StepAction> {
    let f = r.fields(v, "a split step", &["arms"])?;
    let arms_node = required(
        r,
        &f,
        v,
        "arms",
        "a split step needs arms: [...]",
        Some(
            "write split: { arms: [ { name: a, weight: 50, steps: [...] }, { name: b, weight: 50, steps: [...] } ] }",
        ),
    )?;
    let items = r.seq(arms_node, "arms")?;
    if items.len() < 2 {
        r.error(arms_node.pos, "a split needs at least two arms");
    }
    let mut arms: Vec<Arm> = Vec::new();
    for item in items {
        let Some(af) = r.fields(item, "an arm", &["name", "weight", "steps"]) else {
            continue;
        };
        let Some(name_node) = af.get("name") else {
            r.error(
                item.pos,
                "an arm needs name: (recorded for each contact, used in reports)",
            );
            continue;
        };
        let Some(name) = r.string(name_node, "name") else {
            continue;
        };
        if !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
            || name == "then"
            || name == "else"
        {
            r.error(
                name_node.pos,
                format!(
                    "arm name \"{name}\" must be letters, digits, - and _ (and not then or else)"
                ),
            );
            continue;
        }
        if let Some(first) = arms.iter().find(|a| a.name.value == name) {
            r.error(
                name_node.pos,
                format!(
                    "duplicate arm \"{name}\" (first at line {})",
                    first.name.pos.line
                ),
            );
            continue;
        }
        let weight = match af.get("weight") {
            Some(w) => match r.u32(w, "weight") {
                Some(0) => {
                    r.error(w.pos, "weight must be 1 or more");
                    continue;
                }
                Some(k) => k,
                None => continue,
            },
            None => 1,
        };
        let steps = match af.get("steps") {
            Some(n) if n.is_null() => Vec::new(),
            Some(n) => match r.seq(n, "steps") {
                Some(items) => read_steps(r, items, Some(&format!("{id}.{name}"))),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        arms.push(Arm {
            name: Located::new(name, name_node.pos),
            weight,
            steps,
        });
    }
    if arms.is_empty() {
        return None;
    }
    Some(StepAction::Split(SplitStep { arms }))
}
