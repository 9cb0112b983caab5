//! The `steps:` of a workflow file: each step kind, its options (`window`, `at`,
//! `per_salesperson`) and the nested steps of `if`, `split` and `wait_until`.

use super::*;

/// Reads a list of steps. `parent` is the id of the enclosing branch
/// ("3.then"), `None` at the top level.
pub(super) fn read_steps(r: &mut Reader, items: &[Node], parent: Option<&str>) -> Vec<Step> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let default_id = match parent {
            Some(p) => format!("{p}.{i}"),
            None => i.to_string(),
        };
        if let Some(s) = read_step(r, item, default_id) {
            out.push(s);
        }
    }
    out
}

pub(super) fn read_step(r: &mut Reader, node: &Node, default_id: String) -> Option<Step> {
    let Some(entries) = node.as_map() else {
        r.push(
            Diagnostic::new(
                r.file,
                node.pos,
                format!(
                    "a step must be a map such as send: {{...}}, found {}",
                    node.describe()
                ),
            )
            .with_suggestion(format!("steps are: {}", STEP_KINDS.join(", "))),
        );
        return None;
    };
    let kind = entries
        .iter()
        .find(|(k, _)| STEP_KINDS.contains(&k.scalar_text().unwrap_or("")))
        .and_then(|(k, _)| k.scalar_text())
        .unwrap_or("");
    let mut allowed: Vec<&str> = STEP_KINDS.to_vec();
    allowed.push("id");
    allowed.push("window");
    if kind == "if" {
        allowed.extend(["then", "else"]);
    }
    for (k, _) in entries {
        let text = k.scalar_text().unwrap_or("");
        if (text == "then" || text == "else") && kind == "wait_until" {
            r.push(
                Diagnostic::new(
                    r.file,
                    k.pos,
                    format!("\"{text}\" of a wait_until step goes inside it"),
                )
                .with_suggestion(format!(
                    "write wait_until: {{ event: purchase, timeout: 3d, {text}: [...] }}"
                )),
            );
        } else if (text == "then" || text == "else") && kind != "if" {
            r.error(k.pos, format!("\"{text}\" belongs to an if step"));
        } else if !allowed.contains(&text) {
            r.unknown_key(k, &allowed, "a step");
        }
    }
    let (k, v) = one_kind(r, node, STEP_KINDS, "step")?;
    let f = Fields {
        pos: node.pos,
        entries,
    };
    let id = match f.get("id") {
        Some(n) => r.string(n, "id")?,
        None => default_id,
    };
    let window = f.get("window").and_then(|w| read_window(r, w));
    let action = match k.scalar_text().unwrap_or("") {
        "send" => {
            let sf = r.fields(
                v,
                "a send step",
                &["channel", "template", "at", "per_salesperson"],
            )?;
            let per_salesperson = sf
                .get("per_salesperson")
                .and_then(|n| read_per_salesperson(r, n));
            let channel = required_located(r, &sf, v, "channel", "a send step");
            let template = required_located(r, &sf, v, "template", "a send step");
            let at = match sf.get("at") {
                Some(n) => Some(local_time(r, n, "at")?),
                None => None,
            };
            StepAction::Send(SendStep {
                channel: channel?,
                template: template?,
                at,
                per_salesperson,
            })
        }
        "assign" => read_assign(r, v)?,
        "tag" => {
            let tf = r.fields(v, "a tag step", &["add", "remove"])?;
            let add = tf
                .get("add")
                .map(|n| r.strings(n, "add"))
                .unwrap_or_default();
            let remove = tf
                .get("remove")
                .map(|n| r.strings(n, "remove"))
                .unwrap_or_default();
            if add.is_empty() && remove.is_empty() {
                r.error(v.pos, "a tag step needs add: [...] or remove: [...]");
                return None;
            }
            StepAction::Tag(TagStep { add, remove })
        }
        "wait" => StepAction::Wait(r.duration(v, "wait")?),
        "wait_until" => read_wait_until(r, v, &id)?,
        "split" => read_split(r, v, &id)?,
        "set" => read_set(r, v)?,
        "webhook" => {
            let wf_ = r.fields(v, "a webhook step", &["channel", "body", "store"])?;
            let store = wf_
                .get("store")
                .map(|n| read_webhook_store(r, n))
                .unwrap_or_default();
            let channel = required_located(r, &wf_, v, "channel", "a webhook step")?;
            let body = match wf_.get("body") {
                Some(b) => match read_set(r, b)? {
                    StepAction::Set(s) => s.values,
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            StepAction::Webhook(WebhookStep {
                channel,
                body,
                store,
            })
        }
        "notify" => StepAction::Notify(read_notify(r, v)?),
        "if" => {
            let condition = parse_condition(r, v);
            let branch = |r: &mut Reader, key: &str, short: &str| -> Vec<Step> {
                match f.get(key) {
                    Some(n) if n.is_null() => Vec::new(),
                    Some(n) => match r.seq(n, key) {
                        Some(items) => read_steps(r, items, Some(&format!("{id}.{short}"))),
                        None => Vec::new(),
                    },
                    None => Vec::new(),
                }
            };
            let then = branch(r, "then", "then");
            let otherwise = branch(r, "else", "else");
            if !f.has("then") && !f.has("else") {
                r.error(node.pos, "an if step needs then: [...] and/or else: [...]");
            }
            StepAction::If(IfStep {
                condition: condition.unwrap_or(Condition::All(Vec::new())),
                then,
                otherwise,
            })
        }
        _ => return None,
    };
    Some(Step {
        id,
        pos: node.pos,
        action,
        window,
    })
}

/// `window: { from: "10:00", to: "12:00", days: [mon, tue, ...] }`.
pub(super) fn read_window(r: &mut Reader, n: &Node) -> Option<Window> {
    let f = r.fields(n, "a window", &["from", "to", "days", "on"])?;
    let (Some(fr), Some(to)) = (f.get("from"), f.get("to")) else {
        r.push(
            Diagnostic::new(r.file, n.pos, "a window needs from: and to:").with_suggestion(
                "e.g. window: { from: \"10:00\", to: \"12:00\", days: [mon, tue, wed, thu, fri] }",
            ),
        );
        return None;
    };
    let from = local_time(r, fr, "from")?;
    let to_t = local_time(r, to, "to")?;
    if to_t <= from {
        r.push(
            Diagnostic::new(
                r.file,
                to.pos,
                "to: must be later than from: on the same day",
            )
            .with_suggestion(
                "a window does not run over midnight: end it at \"23:59\", or start at \"00:00\"",
            ),
        );
        return None;
    }
    const DAYS: [(&str, chrono::Weekday); 7] = [
        ("mon", chrono::Weekday::Mon),
        ("tue", chrono::Weekday::Tue),
        ("wed", chrono::Weekday::Wed),
        ("thu", chrono::Weekday::Thu),
        ("fri", chrono::Weekday::Fri),
        ("sat", chrono::Weekday::Sat),
        ("sun", chrono::Weekday::Sun),
    ];
    let mut days = Vec::new();
    if let Some(dn) = f.get("days") {
        let items = r.seq(dn, "days")?;
        for it in items {
            let Some(t) = r.string(it, "a day") else {
                continue;
            };
            match DAYS.iter().find(|(n, _)| *n == t.to_lowercase()) {
                Some((_, d)) => days.push(*d),
                None => r.push(
                    Diagnostic::new(r.file, it.pos, format!("unknown day \"{t}\""))
                        .did_you_mean(&t, DAYS.iter().map(|(n, _)| *n)),
                ),
            }
        }
    }
    let mut on = Vec::new();
    if let Some(on_node) = f.get("on") {
        for it in r.seq(on_node, "on")? {
            let Some(name) = r.string(it, "a calendar day") else {
                continue;
            };
            if crate::calendar::is_day(&name) {
                on.push(name);
            } else {
                r.push(
                    Diagnostic::new(r.file, it.pos, format!("no calendar day \"{name}\""))
                        .did_you_mean(
                            &name,
                            crate::calendar::NAMES
                                .iter()
                                .flat_map(|(zh, en)| [*zh, *en]),
                        ),
                );
            }
        }
    }
    Some(Window {
        from,
        to: to_t,
        days,
        on,
    })
}

/// `set: { FIELD: VALUE, ... }`.
pub(super) fn read_set(r: &mut Reader, v: &Node) -> Option<StepAction> {
    let Some(entries) = v.as_map() else {
        r.push(
            Diagnostic::new(
                r.file,
                v.pos,
                format!("set: needs a map of attributes, found {}", v.describe()),
            )
            .with_suggestion("write set: { level: gold, plan: \"{{event.properties.plan}}\" }"),
        );
        return None;
    };
    if entries.is_empty() {
        r.error(v.pos, "set: needs at least one attribute");
        return None;
    }
    let mut values = Vec::new();
    for (k, val) in entries {
        let Some(name) = k.scalar_text().map(str::to_string) else {
            r.error(k.pos, "an attribute name must be text");
            continue;
        };
        let value = match &val.kind {
            yaml::Kind::Null => SetValue::Literal(serde_json::Value::Null),
            yaml::Kind::Scalar { text, .. } => {
                if let Some(s) = val.as_str() {
                    if s.contains("{{") {
                        if let Err(e) = handlebars::Template::compile(s) {
                            r.error(
                                val.pos,
                                format!("the value of {name} is not a valid template: {e}"),
                            );
                            continue;
                        }
                        SetValue::Template(s.to_string())
                    } else {
                        SetValue::Literal(serde_json::Value::String(s.to_string()))
                    }
                } else if let Some(b) = val.as_bool() {
                    SetValue::Literal(serde_json::Value::Bool(b))
                } else if let Some(i) = val.as_i64() {
                    SetValue::Literal(serde_json::Value::from(i))
                } else if let Some(f) = val.as_f64() {
                    SetValue::Literal(serde_json::Value::from(f))
                } else {
                    SetValue::Literal(serde_json::Value::String(text.clone()))
                }
            }
            _ => {
                r.error(
                    val.pos,
                    format!("the value of {name} must be text, a number, true/false or null"),
                );
                continue;
            }
        };
        values.push((Located::new(name, k.pos), value));
    }
    Some(StepAction::Set(SetStep { values }))
}

/// A webhook step's `store: { ATTRIBUTE: /json/pointer }`.
pub(super) fn read_webhook_store(r: &mut Reader, n: &Node) -> Vec<(Located<String>, String)> {
    let Some(entries) = n.as_map() else {
        r.push(
            Diagnostic::new(
                r.file,
                n.pos,
                format!(
                    "store: needs a map of attribute: /json/pointer, found {}",
                    n.describe()
                ),
            )
            .with_suggestion("write store: { crm_id: /id, crm_stage: /deal/stage }"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.scalar_text().map(str::to_string) else {
            r.error(k.pos, "an attribute name must be text");
            continue;
        };
        if crate::contact::BUILTIN_FIELDS.contains(&name.as_str()) {
            r.error(
                k.pos,
                format!("store: \"{name}\" is a built-in field; a webhook's answer sets custom attributes only"),
            );
            continue;
        }
        let Some(pointer) = r.string(v, "a JSON pointer") else {
            continue;
        };
        if !pointer.starts_with('/') {
            r.push(
                Diagnostic::new(
                    r.file,
                    v.pos,
                    format!("store: \"{pointer}\" is not a JSON pointer"),
                )
                .with_suggestion(format!(
                    "a JSON pointer starts with / and names the path: /{} or /data/{}",
                    pointer.trim_start_matches('.'),
                    pointer.trim_start_matches('.')
                )),
            );
            continue;
        }
        out.push((Located::new(name, k.pos), pointer));
    }
    out
}
