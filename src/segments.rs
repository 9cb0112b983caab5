//! Reusable segments: `segments/NAME.yaml` holds a named condition
//! (`condition:`, and an optional `description:`); `segment: NAME` uses it
//! anywhere a condition goes. When the project loads, every `segment:` is
//! replaced by its condition (segments may use segments; a cycle is an
//! error), so the plan, the SQL scans and the Rust evaluator never see a
//! name: one syntax tree, two evaluators, as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::audience::Condition;
use crate::audience::parse::parse_condition;
use crate::diagnostics::{Diagnostic, Pos};
use crate::workflow::{Step, StepAction, WaitFor, Workflow};
use crate::yaml::{self, Reader};

#[derive(Debug, Clone)]
pub struct Segment {
    pub name: String,
    pub description: Option<String>,
    /// As written (it may name other segments).
    pub condition: Condition,
    pub file: PathBuf,
}

/// The segments of a project, by name, resolved.
#[derive(Debug, Clone, Default)]
pub struct Segments {
    pub by_name: BTreeMap<String, Segment>,
    /// Each segment's condition with the segments it names replaced.
    pub resolved: BTreeMap<String, Condition>,
    /// A hash of every segment file: a workflow is reloaded when it changes.
    pub hash: String,
}

/// Loads `dir/*.yaml` (a missing folder has none) and resolves them.
pub fn load(dir: &Path) -> (Segments, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let files = match crate::project_files::workflow_files(dir) {
        Ok(f) => f,
        Err(d) => return (Segments::default(), vec![d]),
    };
    let mut all = Vec::new();
    let mut by_name = BTreeMap::new();
    for f in files {
        let src = match std::fs::read_to_string(&f) {
            Ok(s) => s,
            Err(e) => {
                diags.push(Diagnostic::new(
                    &f,
                    Pos::default(),
                    format!("cannot read the file: {e}"),
                ));
                continue;
            }
        };
        all.extend_from_slice(f.to_string_lossy().as_bytes());
        all.extend_from_slice(src.as_bytes());
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (node, d) = yaml::parse(&f, &src);
        diags.extend(d);
        let Some(node) = node else { continue };
        let mut r = Reader::new(&f);
        let seg = (|| {
            let fields = r.fields(&node, "a segment", &["description", "condition"])?;
            let description = fields
                .get("description")
                .and_then(|n| r.string(n, "description"));
            let Some(c) = fields.get("condition") else {
                r.push(
                    Diagnostic::new(&f, node.pos, "a segment needs condition: {...}")
                        .with_suggestion("e.g. condition: { all: [ { tag: vip }, { field: city, equals: Shanghai } ] }"),
                );
                return None;
            };
            let condition = parse_condition(&mut r, c)?;
            Some(Segment {
                name: name.clone(),
                description,
                condition,
                file: f.clone(),
            })
        })();
        diags.append(&mut r.diags);
        if let Some(s) = seg {
            by_name.insert(name, s);
        }
    }
    let mut segs = Segments {
        by_name,
        resolved: BTreeMap::new(),
        hash: crate::project_files::short_hash(&all),
    };
    let names: Vec<String> = segs.by_name.keys().cloned().collect();
    for n in names {
        let mut c = segs.by_name[&n].condition.clone();
        let file = segs.by_name[&n].file.clone();
        let mut stack = vec![n.clone()];
        resolve_in(&mut c, &segs, &file, &mut stack, &mut diags);
        segs.resolved.insert(n, c);
    }
    (segs, diags)
}

fn resolve_in(
    c: &mut Condition,
    segs: &Segments,
    file: &Path,
    stack: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) {
    match c {
        Condition::All(cs) | Condition::Any(cs) => {
            for x in cs {
                resolve_in(x, segs, file, stack, diags);
            }
        }
        Condition::Not(x) => resolve_in(x, segs, file, stack, diags),
        Condition::Segment(name) => {
            if stack.contains(&name.value) {
                diags.push(Diagnostic::new(
                    file,
                    name.pos,
                    format!(
                        "segment \"{}\" uses itself ({} → {})",
                        name.value,
                        stack.join(" → "),
                        name.value
                    ),
                ));
                return;
            }
            let Some(seg) = segs.by_name.get(&name.value) else {
                let mut d =
                    Diagnostic::new(file, name.pos, format!("no segment \"{}\"", name.value))
                        .did_you_mean(&name.value, segs.by_name.keys());
                if d.suggestion.is_none() {
                    d = d.with_suggestion(if segs.by_name.is_empty() {
                        "segments are files segments/NAME.yaml with condition: {...}".to_string()
                    } else {
                        format!(
                            "segments are: {}",
                            segs.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    });
                }
                diags.push(d);
                return;
            };
            let mut inner = seg.condition.clone();
            stack.push(name.value.clone());
            resolve_in(&mut inner, segs, &seg.file, stack, diags);
            stack.pop();
            *c = inner;
        }
        _ => {}
    }
}

/// Replaces every `segment:` in the workflow's conditions; reports unknown
/// names (with did-you-mean) at the place they are written.
pub fn resolve_workflow(wf: &mut Workflow, segs: &Segments) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let file = wf.file.clone();
    let mut one = |c: &mut Condition| {
        resolve_in(c, segs, &file, &mut Vec::new(), &mut diags);
    };
    if let Some(c) = wf.audience.as_mut() {
        one(c);
    }
    if let Some(c) = wf.exit_when.as_mut() {
        one(c);
    }
    if let Some(g) = wf.goal.as_mut() {
        match &mut g.on {
            WaitFor::Event { condition, .. } | WaitFor::Condition(condition) => one(condition),
        }
    }
    fn steps(s: &mut [Step], one: &mut dyn FnMut(&mut Condition)) {
        for st in s {
            match &mut st.action {
                StepAction::If(i) => {
                    one(&mut i.condition);
                    steps(&mut i.then, one);
                    steps(&mut i.otherwise, one);
                }
                StepAction::WaitUntil(w) => {
                    match &mut w.until {
                        WaitFor::Event { condition, .. } | WaitFor::Condition(condition) => {
                            one(condition)
                        }
                    }
                    steps(&mut w.then, one);
                    steps(&mut w.otherwise, one);
                }
                StepAction::Split(sp) => {
                    for a in &mut sp.arms {
                        steps(&mut a.steps, one);
                    }
                }
                _ => {}
            }
        }
    }
    steps(&mut wf.steps, &mut one);
    diags
}

/// Whether the workflow names any segment (before resolution).
pub fn uses_segments(wf: &Workflow) -> bool {
    fn has(c: &Condition) -> bool {
        match c {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().any(has),
            Condition::Not(c) => has(c),
            Condition::Segment(_) => true,
            _ => false,
        }
    }
    let mut conds: Vec<&Condition> = wf.audience.iter().chain(wf.exit_when.iter()).collect();
    for s in wf.all_steps() {
        match &s.action {
            StepAction::If(i) => conds.push(&i.condition),
            StepAction::WaitUntil(w) => conds.push(w.until.condition()),
            _ => {}
        }
    }
    conds.into_iter().any(has)
}
