//! A workflow test file: cases with contacts, a start time, timed events and
//! expectations, read with positions so every problem and every failing
//! expectation is reported at FILE:LINE:COLUMN.
//!
//! ```yaml
//! cases:
//!   - name: a reply gets a thank-you
//!     start: 2026-11-02T10:00        # the settings' time zone unless it has an offset
//!     until: 2d                      # a duration after start, or a time (default 7d)
//!     contacts:                      # a list, or a CSV path from the project folder
//!       - { id: t1, name: 周晓明, wecom_external_userid: wm-t1 }
//!     events:
//!       - { at: 2h, contact: t1, event: message_reply }
//!       - { at: 2026-11-02T15:00, contact: t1, tag: customer }
//!     expect:
//!       - assign: { workflow: welcome-wecom, contact: t1, salesperson: s01 }
//!       - send: { workflow: welcome-wecom, contact: t1, channel: wecom, body_contains: 周晓明 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::diagnostics::{Diagnostic, Pos};
use crate::store::ContactInput;
use crate::yaml::{Kind as NodeKind, Node, Reader};

mod types;

pub use types::*;

const CASE_KEYS: &[&str] = &[
    "name",
    "start",
    "until",
    "contacts",
    "events",
    "workflows",
    "enable",
    "strict",
    "expect",
];
const EVENT_KEYS: &[&str] = &["at", "contact", "event", "properties", "tag", "untag"];

/// What a file is checked against: names it may use.
pub struct Known<'a> {
    pub tz: Tz,
    pub workflows: Vec<&'a str>,
    pub root: &'a Path,
}

/// Reads a test file; every problem as a diagnostic.
pub fn load(path: &Path, known: &Known<'_>) -> (Option<TestFile>, Vec<Diagnostic>) {
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            return (
                None,
                vec![Diagnostic::new(
                    path,
                    Pos::new(0, 0),
                    format!("cannot read: {e}"),
                )],
            );
        }
    };
    let (file, diags) = parse_str(path, &source, known);
    (file, diags)
}

pub fn parse_str(
    path: &Path,
    source: &str,
    known: &Known<'_>,
) -> (Option<TestFile>, Vec<Diagnostic>) {
    let (root, mut diags) = crate::yaml::parse(path, source);
    let Some(root) = root else {
        return (None, diags);
    };
    let mut r = Reader::new(path);
    let mut cases = Vec::new();
    if let Some(f) = r.fields(&root, "a test file", &["cases"]) {
        match f.get("cases") {
            None => r.error(
                root.pos,
                "a test file needs `cases:`, a list of test cases".to_string(),
            ),
            Some(list) => {
                if let Some(items) = r.seq(list, "cases") {
                    for item in items {
                        if let Some(c) = case(&mut r, item, known) {
                            cases.push(c);
                        }
                    }
                }
            }
        }
    }
    let mut names: BTreeMap<&str, Pos> = BTreeMap::new();
    for c in &cases {
        if let Some(first) = names.insert(&c.name, c.pos) {
            r.error(
                c.pos,
                format!(
                    "a second case named \"{}\" (the first is at line {})",
                    c.name, first.line
                ),
            );
        }
    }
    diags.extend(r.diags);
    if !diags.is_empty() {
        return (None, diags);
    }
    (
        Some(TestFile {
            path: path.to_path_buf(),
            source: source.to_string(),
            cases,
        }),
        diags,
    )
}

fn case(r: &mut Reader<'_>, node: &Node, known: &Known<'_>) -> Option<Case> {
    let f = r.fields(node, "a test case", CASE_KEYS)?;
    let errors_before = r.diags.len();
    let name = match f.get("name") {
        Some(n) => r.string(n, "name"),
        None => {
            r.error(f.pos, "a test case needs `name:`, what it checks");
            None
        }
    };
    let start = match f.get("start") {
        Some(n) => time(r, n, "start", known.tz, None),
        None => {
            r.error(
                f.pos,
                "a test case needs `start:`, the time its clock starts (2026-11-02T10:00)",
            );
            None
        }
    };
    let contacts = match f.get("contacts") {
        None => Contacts::Inline(Vec::new()),
        Some(n) => contacts(r, n, known)?,
    };
    let ids: Vec<String> = match &contacts {
        Contacts::Inline(v) => v.iter().map(|(_, c)| c.id.clone()).collect(),
        Contacts::Csv(..) => Vec::new(),
    };
    let mut events = Vec::new();
    if let (Some(list), Some(start)) = (f.get("events"), start)
        && let Some(items) = r.seq(list, "events")
    {
        for item in items {
            if let Some(e) = event(r, item, start, known, &ids, &contacts) {
                events.push(e);
            }
        }
    }
    events.sort_by_key(|e| e.at);
    let until = match (f.get("until"), start) {
        (Some(n), Some(start)) => time(r, n, "until", known.tz, Some(start)),
        (None, Some(start)) => {
            let last = events.last().map(|e| e.at).unwrap_or(start);
            Some(last.max(start + chrono::TimeDelta::days(7)))
        }
        _ => None,
    };
    if let (Some(u), Some(last)) = (until, events.last())
        && last.at > u
    {
        r.error(
            last.pos,
            "this event comes after the case's `until:`; move `until:` later",
        );
    }
    let workflow_list = |r: &mut Reader<'_>, key: &str| -> Option<Vec<String>> {
        let n = f.get(key)?;
        let nodes: Vec<&Node> = match &n.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        let mut out = Vec::new();
        for n in nodes {
            if let Some(s) = r.string(n, key) {
                check_workflow(r, n.pos, &s, known);
                out.push(s);
            }
        }
        Some(out)
    };
    let workflows = workflow_list(r, "workflows");
    let enable = workflow_list(r, "enable").unwrap_or_default();
    let strict = match f.get("strict") {
        Some(n) => r.bool(n, "strict").unwrap_or(true),
        None => true,
    };
    let mut expect = Vec::new();
    if let (Some(list), Some(start)) = (f.get("expect"), start) {
        match &list.kind {
            NodeKind::Null => {}
            _ => {
                if let Some(items) = r.seq(list, "expect") {
                    for item in items {
                        if let Some(e) = expectation(r, item, start, known) {
                            expect.push(e);
                        }
                    }
                }
            }
        }
    }
    if r.diags.len() > errors_before {
        return None;
    }
    Some(Case {
        name: name?,
        pos: f.pos,
        start: start?,
        until: until?,
        contacts,
        events,
        workflows,
        enable,
        strict,
        expect_key: f.key_node("expect").map(|k| k.pos),
        expect,
    })
}

fn check_workflow(r: &mut Reader<'_>, pos: Pos, name: &str, known: &Known<'_>) {
    if !known.workflows.contains(&name) {
        r.push(
            Diagnostic::new(r.file, pos, format!("no workflow named \"{name}\""))
                .did_you_mean(name, known.workflows.iter()),
        );
    }
}

/// A time: RFC 3339, a local time in the settings' zone, or (with `start`)
/// a duration after the case's start (`2h`, `3d`).
fn time(
    r: &mut Reader<'_>,
    n: &Node,
    what: &str,
    tz: Tz,
    start: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let text = r.string(n, what)?;
    if let Some(start) = start
        && let Ok(d) = text.parse::<crate::duration::Duration>()
    {
        return Some(start + d.to_chrono());
    }
    match crate::timefmt::parse_at(&text, tz) {
        Ok(t) => {
            if let Some(s) = start
                && t < s
            {
                r.error(n.pos, format!("{what} {text} is before the case's start"));
                return None;
            }
            Some(t)
        }
        Err(_) => {
            let d = Diagnostic::new(
                r.file,
                n.pos,
                format!("{what}: \"{text}\" is not a time"),
            )
            .with_suggestion(if start.is_some() {
                format!(
                    "write a time like 2026-11-02T10:00 (in {tz}) or 2026-11-02T10:00:00+08:00, or a duration after the start like 2h or 3d"
                )
            } else {
                format!("write a time like 2026-11-02T10:00 (in {tz}) or 2026-11-02T10:00:00+08:00")
            });
            r.push(d);
            None
        }
    }
}

fn contacts(r: &mut Reader<'_>, n: &Node, known: &Known<'_>) -> Option<Contacts> {
    match &n.kind {
        NodeKind::Scalar { text, .. } => {
            let path = known.root.join(text);
            if !path.is_file() {
                r.push(
                    Diagnostic::new(
                        r.file,
                        n.pos,
                        format!("no CSV file {} (paths are from the project folder)", text),
                    )
                    .with_suggestion(
                        "give a CSV path like contacts/sample.csv, or a list of contacts",
                    ),
                );
                return None;
            }
            Some(Contacts::Csv(n.pos, path))
        }
        NodeKind::Seq(items) => {
            let mut out: Vec<(Pos, ContactInput)> = Vec::new();
            for item in items {
                if item.as_map().is_none() {
                    r.error(
                        item.pos,
                        format!(
                            "a contact must be a map like {{ id: t1, name: 周晓明 }}, found {}",
                            item.describe()
                        ),
                    );
                    continue;
                }
                let serde_json::Value::Object(m) = to_json(item) else {
                    continue;
                };
                match crate::api::contacts::contact_input(m) {
                    Ok(c) => {
                        if out.iter().any(|(_, o)| o.id == c.id) {
                            r.error(item.pos, format!("contact \"{}\" is given twice", c.id));
                        }
                        out.push((item.pos, c));
                    }
                    Err(e) => r.error(item.pos, format!("contact: {}", e.message)),
                }
            }
            Some(Contacts::Inline(out))
        }
        _ => {
            r.error(
                n.pos,
                format!(
                    "contacts must be a list of contacts or a CSV path, found {}",
                    n.describe()
                ),
            );
            None
        }
    }
}

fn event(
    r: &mut Reader<'_>,
    n: &Node,
    start: DateTime<Utc>,
    known: &Known<'_>,
    ids: &[String],
    contacts: &Contacts,
) -> Option<TimedEvent> {
    let f = r.fields(n, "an event", EVENT_KEYS)?;
    let at = match f.get("at") {
        Some(a) => time(r, a, "at", known.tz, Some(start)),
        None => {
            r.error(
                f.pos,
                "an event needs `at:`, a time or a duration after the start",
            );
            None
        }
    };
    let contact = match f.get("contact") {
        Some(c) => {
            let id = r.string(c, "contact")?;
            if matches!(contacts, Contacts::Inline(_)) && !ids.contains(&id) {
                r.push(
                    Diagnostic::new(
                        r.file,
                        c.pos,
                        format!("no contact \"{id}\" in this case's contacts"),
                    )
                    .did_you_mean(&id, ids.iter()),
                );
                return None;
            }
            Some(id)
        }
        None => {
            r.error(f.pos, "an event needs `contact:`, the contact's id");
            None
        }
    };
    let what = match (f.get("event"), f.get("tag"), f.get("untag")) {
        (Some(e), None, None) => {
            let name = r.string(e, "event")?;
            let properties = match f.get("properties") {
                None => Default::default(),
                Some(p) => match to_json(p) {
                    serde_json::Value::Object(m) => m,
                    _ => {
                        r.error(p.pos, "properties must be a map like { amount: 299 }");
                        return None;
                    }
                },
            };
            Happening::Event { name, properties }
        }
        (None, add, remove) if add.is_some() || remove.is_some() => Happening::Tags {
            add: add.map(|n| r.strings(n, "tag")).unwrap_or_default(),
            remove: remove.map(|n| r.strings(n, "untag")).unwrap_or_default(),
        },
        _ => {
            r.push(
                Diagnostic::new(
                    r.file,
                    f.pos,
                    "an event needs one of `event: NAME` (with optional `properties:`), or `tag:`/`untag:`",
                )
                .with_suggestion("{ at: 2h, contact: t1, event: purchase, properties: { amount: 299 } }"),
            );
            return None;
        }
    };
    Some(TimedEvent {
        pos: f.pos,
        at: at?,
        contact: contact?,
        what,
    })
}

fn expectation(
    r: &mut Reader<'_>,
    n: &Node,
    start: DateTime<Utc>,
    known: &Known<'_>,
) -> Option<Expectation> {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    let Some(entries) = n.as_map().filter(|m| m.len() == 1) else {
        r.push(
            Diagnostic::new(
                r.file,
                n.pos,
                format!(
                    "an expectation is one of {} with its fields, found {}",
                    kinds.join(", "),
                    n.describe()
                ),
            )
            .with_suggestion(
                "- send: { workflow: welcome-wecom, contact: t1, body_contains: 欢迎 }",
            ),
        );
        return None;
    };
    let (k, v) = &entries[0];
    let key = k.scalar_text().unwrap_or("");
    let Some(kind) = Kind::parse(key) else {
        r.unknown_key(k, &kinds, "an expectation");
        return None;
    };
    let allowed = kind.allowed();
    let what = format!("a `{}` expectation", kind.name());
    let f = r.fields(v, &what, &allowed)?;
    let mut fields = BTreeMap::new();
    for (k, v) in f.entries {
        let key = k.scalar_text().unwrap_or("");
        if !allowed.contains(&key) {
            continue;
        }
        let m = match key {
            "at" => Match::At(time(r, v, "at", known.tz, Some(start))?),
            "body_contains" => Match::Contains(r.strings(v, "body_contains")),
            _ => {
                let text = match &v.kind {
                    NodeKind::Scalar { text, .. } => text.clone(),
                    _ => {
                        r.error(
                            v.pos,
                            format!("{key} must be a string, found {}", v.describe()),
                        );
                        continue;
                    }
                };
                if key == "workflow" {
                    check_workflow(r, v.pos, &text, known);
                }
                Match::Is(text)
            }
        };
        fields.insert(key.to_string(), m);
    }
    Some(Expectation {
        pos: n.pos,
        kind,
        fields,
    })
}

/// A YAML node as JSON, scalars typed as YAML types them (quoted: strings).
pub fn to_json(n: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &n.kind {
        NodeKind::Null => Value::Null,
        NodeKind::Scalar { text, quoted } => {
            if *quoted {
                Value::String(text.clone())
            } else if let Some(b) = n.as_bool() {
                Value::Bool(b)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(f) = n.as_f64() {
                Value::from(f)
            } else {
                Value::String(text.clone())
            }
        }
        NodeKind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        NodeKind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.scalar_text().unwrap_or("").to_string(), to_json(v)))
                .collect(),
        ),
    }
}
