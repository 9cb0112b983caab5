//! A workflow as a diagram: trigger → steps, `if` branches side by side,
//! waits, the end and the goal (`exit_when`). One model, laid out once on a
//! grid, printed as Mermaid, Graphviz dot or SVG by `nurture graph`, and
//! served as JSON (with the layout) to the console, which draws the same
//! boxes with live counts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::audience::{Condition, FieldTest, Literal, OwnerTest};
use crate::workflow::{Entry, Step, StepAction, Strategy, Trigger, Workflow};

/// Box size and grid spacing of the layout, in pixels.
pub const NODE_W: i64 = 200;
pub const NODE_H: i64 = 58;
const COL_W: i64 = 230;
const ROW_H: i64 = 96;
const MARGIN: i64 = 20;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    /// `trigger`, or the step id, or `end`, `goal`.
    pub id: String,
    /// `trigger`, `send`, `assign`, `tag`, `wait`, `if`, `end`, `goal`.
    pub kind: String,
    /// The step id for step nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// First line: what it is (`send wecom`, `wait 1d`, ...).
    pub label: String,
    /// Second line: the detail (template, team, condition, ...).
    pub detail: String,
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// `yes` / `no` out of an `if`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Graph {
    pub workflow: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub entry: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub width: i64,
    pub height: i64,
}

struct Builder {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    max_col: f64,
    max_row: i64,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        id: &str,
        kind: &str,
        step: Option<&str>,
        label: String,
        detail: String,
        col: f64,
        row: i64,
    ) {
        self.max_col = self.max_col.max(col);
        self.max_row = self.max_row.max(row);
        self.nodes.push(Node {
            id: id.to_string(),
            kind: kind.to_string(),
            step: step.map(str::to_string),
            label,
            detail,
            // Provisional grid position; turned into pixels at the end.
            x: (col * 1000.0) as i64,
            y: row,
            w: NODE_W,
            h: NODE_H,
        });
    }

    fn edge(&mut self, from: &str, to: &str, label: Option<&str>) {
        self.edges.push(Edge {
            from: from.to_string(),
            to: to.to_string(),
            label: label.map(str::to_string),
        });
    }
}

/// Columns a sequence of steps needs.
fn width(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match &s.action {
            StepAction::If(_) | StepAction::WaitUntil(_) | StepAction::Split(_) => {
                s.action.children().iter().map(|c| width(c).max(1)).sum()
            }
            _ => 1,
        })
        .max()
        .unwrap_or(1)
}

/// Lays `steps` out from `row`, centred in columns `[left, left + cols)`.
/// `from` are the loose ends (node id, edge label) to connect to the first
/// node; returns the loose ends after the sequence and the next free row.
fn lay(
    b: &mut Builder,
    steps: &[Step],
    left: f64,
    cols: f64,
    mut row: i64,
    mut from: Vec<(String, Option<String>)>,
) -> (Vec<(String, Option<String>)>, i64) {
    let centre = left + (cols - 1.0) / 2.0;
    for s in steps {
        let (kind, label, detail) = describe(s);
        b.node(&s.id, kind, Some(&s.id), label, detail, centre, row);
        for (f, l) in from.drain(..) {
            b.edge(&f, &s.id, l.as_deref());
        }
        row += 1;
        let branches: Vec<(&[Step], String)> = match &s.action {
            StepAction::If(i) => vec![(&i.then[..], "yes".into()), (&i.otherwise[..], "no".into())],
            StepAction::WaitUntil(w) => vec![
                (&w.then[..], "came".into()),
                (&w.otherwise[..], "timeout".into()),
            ],
            StepAction::Split(sp) => sp
                .arms
                .iter()
                .map(|a| (&a.steps[..], format!("{} ({})", a.name.value, a.weight)))
                .collect(),
            _ => vec![],
        };
        if !branches.is_empty() {
            // Centre the branches under their step.
            let total: f64 = branches.iter().map(|(b, _)| width(b).max(1) as f64).sum();
            let mut start = left + (cols - total) / 2.0;
            let mut ends = Vec::new();
            let mut last = row;
            for (steps, label) in branches {
                let w = width(steps).max(1) as f64;
                let (e, r) = lay(b, steps, start, w, row, vec![(s.id.clone(), Some(label))]);
                ends.extend(e);
                last = last.max(r);
                start += w;
            }
            from = ends;
            row = last;
        } else {
            from = vec![(s.id.clone(), None)];
        }
    }
    (from, row)
}

/// The diagram of `wf`.
pub fn graph(wf: &Workflow) -> Graph {
    let cols = width(&wf.steps) as f64;
    let mut b = Builder {
        nodes: Vec::new(),
        edges: Vec::new(),
        max_col: 0.0,
        max_row: 0,
    };
    let centre = (cols - 1.0) / 2.0;
    let audience = wf
        .audience
        .as_ref()
        .map(|c| format!("who: {}", condition(c)))
        .unwrap_or_else(|| "who: everyone".into());
    b.node(
        "trigger",
        "trigger",
        None,
        trigger(&wf.trigger),
        audience,
        centre,
        0,
    );
    let (ends, row) = lay(
        &mut b,
        &wf.steps,
        0.0,
        cols,
        1,
        vec![("trigger".into(), None)],
    );
    b.node("end", "end", None, "end".into(), String::new(), centre, row);
    for (f, l) in ends {
        b.edge(&f, "end", l.as_deref());
    }
    if let Some(goal) = &wf.exit_when {
        // Beside the trigger: it holds at every step.
        b.node(
            "goal",
            "goal",
            None,
            "exit when".into(),
            condition(goal),
            cols,
            0,
        );
    }
    let total_cols = (b.max_col + 1.0).max(cols);
    for n in &mut b.nodes {
        let col = n.x as f64 / 1000.0;
        n.x = MARGIN + (col * COL_W as f64) as i64 + (COL_W - NODE_W) / 2;
        n.y = MARGIN + n.y * ROW_H;
    }
    Graph {
        workflow: wf.name.clone(),
        description: wf.description.clone(),
        enabled: wf.enabled,
        entry: match wf.entry {
            Entry::Once => "once".into(),
            Entry::EveryTime => "every_time".into(),
            Entry::OncePer(d) => format!("once per {d}"),
        },
        width: 2 * MARGIN + (total_cols * COL_W as f64) as i64,
        height: 2 * MARGIN + (b.max_row + 1) * ROW_H - (ROW_H - NODE_H),
        nodes: b.nodes,
        edges: b.edges,
    }
}

fn trigger(t: &Trigger) -> String {
    match t {
        Trigger::ContactCreated { via: None } => "contact created".into(),
        // A contact way's welcome: only the contacts that code brought.
        Trigger::ContactCreated { via: Some(way) } => format!("contact created via {}", way.value),
        Trigger::TagAdded { tag } => format!("tag added: {tag}"),
        Trigger::Inactive { quiet_for, check } => {
            format!("inactive {quiet_for} (check {})", check.source())
        }
        Trigger::Event { name } => format!("event: {name}"),
        Trigger::Schedule { cron } => format!("schedule {}", cron.source()),
        Trigger::StaffLeft => "staff left (WeCom)".into(),
        Trigger::Date(d) => format!(
            "date {} {:+}d at {} ({})",
            d.calendar.as_deref().unwrap_or(&d.field.value),
            d.offset_days,
            d.at.format("%H:%M"),
            if d.every_year { "every year" } else { "once" }
        ),
    }
}

fn describe(s: &Step) -> (&'static str, String, String) {
    match &s.action {
        StepAction::Send(x) => (
            "send",
            format!("send {}", x.channel.value),
            format!("template {}", x.template.value),
        ),
        StepAction::Assign(a) => {
            let strategy = match a.strategy {
                Strategy::RoundRobin => "round_robin",
                Strategy::LeastLoaded => "least_loaded",
                Strategy::ByField => "by_field",
            };
            let mut d = format!("{} {strategy}", a.team.value);
            if let Some(f) = &a.field {
                let _ = write!(d, " on {}", f.value);
            }
            if a.only_if_unassigned {
                d.push_str(", if unassigned");
            }
            ("assign", "assign".into(), d)
        }
        StepAction::Tag(t) => {
            let mut parts = Vec::new();
            if !t.add.is_empty() {
                parts.push(format!("+{}", t.add.join(" +")));
            }
            if !t.remove.is_empty() {
                parts.push(format!("-{}", t.remove.join(" -")));
            }
            ("tag", "tag".into(), parts.join(" "))
        }
        StepAction::Wait(d) => ("wait", format!("wait {d}"), String::new()),
        StepAction::If(i) => ("if", "if".into(), condition(&i.condition)),
        StepAction::Set(st) => (
            "set",
            "set".into(),
            st.values
                .iter()
                .map(|(k, v)| match v {
                    crate::workflow::SetValue::Literal(x) => format!("{}={x}", k.value),
                    crate::workflow::SetValue::Template(t) => format!("{}={t}", k.value),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        StepAction::Webhook(w) => (
            "webhook",
            format!("webhook {}", w.channel.value),
            w.body
                .iter()
                .map(|(k, _)| k.value.clone())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        StepAction::Notify(n) => (
            "notify",
            format!("notify on {}", n.channel.value),
            format!("the owner, template {}", n.template_name()),
        ),
        StepAction::Split(sp) => (
            "split",
            "split".into(),
            sp.arms
                .iter()
                .map(|a| format!("{} {}", a.name.value, a.weight))
                .collect::<Vec<_>>()
                .join(" / "),
        ),
        StepAction::WaitUntil(w) => (
            "wait_until",
            format!("wait until, at most {}", w.timeout),
            match &w.until {
                crate::workflow::WaitFor::Event { condition: c, .. }
                | crate::workflow::WaitFor::Condition(c) => condition(c),
            },
        ),
    }
}

/// A condition in one line, as written in the file.
pub fn condition(c: &Condition) -> String {
    let lit = |l: &Literal| match l {
        Literal::Str(s) => s.clone(),
        Literal::Num(n) => n.to_string(),
        Literal::Bool(b) => b.to_string(),
    };
    match c {
        Condition::Segment(name) => format!("segment {}", name.value),
        Condition::All(cs) => cs
            .iter()
            .map(condition_in)
            .collect::<Vec<_>>()
            .join(" and "),
        Condition::Any(cs) => cs.iter().map(condition_in).collect::<Vec<_>>().join(" or "),
        Condition::Not(c) => format!("not {}", condition_in(c)),
        Condition::Tag(t) => format!("tag {t}"),
        Condition::Event {
            name,
            within,
            at_least,
            where_,
        } => {
            let mut s = format!("event {name}");
            if let Some(w) = where_ {
                let _ = write!(s, " where {}", w.field.value);
            }
            if *at_least > 1 {
                let _ = write!(s, " ≥{at_least}");
            }
            if let Some(w) = within {
                let _ = write!(s, " within {w}");
            }
            s
        }
        Condition::Owner(o) => match o {
            OwnerTest::None => "no owner".into(),
            OwnerTest::Any => "has owner".into(),
            OwnerTest::Is(id) => format!("owner {id}"),
        },
        Condition::Field { field, test } => {
            let list = |ls: &[Literal]| ls.iter().map(lit).collect::<Vec<_>>().join("|");
            let t = match test {
                FieldTest::Equals(l) => format!("= {}", lit(l)),
                FieldTest::NotEquals(l) => format!("≠ {}", lit(l)),
                FieldTest::In(ls) => format!("in {}", list(ls)),
                FieldTest::NotIn(ls) => format!("not in {}", list(ls)),
                FieldTest::Contains(s) => format!("contains {s}"),
                FieldTest::StartsWith(s) => format!("starts with {s}"),
                FieldTest::Gt(l) => format!("> {}", lit(l)),
                FieldTest::Gte(l) => format!("≥ {}", lit(l)),
                FieldTest::Lt(l) => format!("< {}", lit(l)),
                FieldTest::Lte(l) => format!("≤ {}", lit(l)),
                FieldTest::Exists(true) => "exists".into(),
                FieldTest::Exists(false) => "missing".into(),
                FieldTest::OlderThan(d) => format!("older than {d}"),
                FieldTest::NewerThan(d) => format!("newer than {d}"),
            };
            format!("{} {t}", field.value)
        }
    }
}

fn condition_in(c: &Condition) -> String {
    match c {
        Condition::All(v) | Condition::Any(v) if v.len() > 1 => format!("({})", condition(c)),
        _ => condition(c),
    }
}

fn node_text(n: &Node) -> String {
    if n.detail.is_empty() {
        n.label.clone()
    } else {
        format!("{}\n{}", n.label, n.detail)
    }
}

/// Mermaid `flowchart TD` text.
pub fn mermaid(g: &Graph) -> String {
    let id = |s: &str| format!("n_{}", s.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let text = |n: &Node| node_text(n).replace('"', "#quot;").replace('\n', "<br/>");
    let mut out = String::from("flowchart TD\n");
    for n in &g.nodes {
        let (open, close) = match n.kind.as_str() {
            "trigger" => ("([", "])"),
            "if" => ("{", "}"),
            "wait" => ("[/", "/]"),
            "end" => ("((", "))"),
            "goal" => ("[[", "]]"),
            _ => ("[", "]"),
        };
        let _ = writeln!(out, "    {}{open}\"{}\"{close}", id(&n.id), text(n));
    }
    for e in &g.edges {
        match &e.label {
            Some(l) => {
                let _ = writeln!(out, "    {} -->|{l}| {}", id(&e.from), id(&e.to));
            }
            None => {
                let _ = writeln!(out, "    {} --> {}", id(&e.from), id(&e.to));
            }
        }
    }
    out
}

/// Graphviz dot text.
pub fn dot(g: &Graph) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!(
        "digraph {} {{\n    rankdir=TB;\n    node [fontname=\"Noto Sans CJK SC, sans-serif\"];\n",
        q(&g.workflow)
    );
    for n in &g.nodes {
        let shape = match n.kind.as_str() {
            "trigger" => "oval",
            "if" => "diamond",
            "wait" => "parallelogram",
            "end" => "doublecircle",
            "goal" => "octagon",
            _ => "box",
        };
        let _ = writeln!(
            out,
            "    {} [shape={shape}, label={}];",
            q(&n.id),
            q(&node_text(n)).replace("\n", "\\n")
        );
    }
    for e in &g.edges {
        match &e.label {
            Some(l) => {
                let _ = writeln!(out, "    {} -> {} [label={}];", q(&e.from), q(&e.to), q(l));
            }
            None => {
                let _ = writeln!(out, "    {} -> {};", q(&e.from), q(&e.to));
            }
        }
    }
    out.push_str("}\n");
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Cuts `s` to about `max` columns (a CJK character counts two).
pub fn clip(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut cols = 0;
    for c in s.chars() {
        let w = if (c as u32) >= 0x1100 { 2 } else { 1 };
        if cols + w > max {
            out.push('…');
            return out;
        }
        cols += w;
        out.push(c);
    }
    out
}

/// A standalone SVG picture (the console draws the same layout).
pub fn svg(g: &Graph) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"'Noto Sans CJK SC','PingFang SC','Microsoft YaHei','WenQuanYi Micro Hei',sans-serif\" font-size=\"13\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#667\"/></marker></defs>\n\
         <title>{}</title>\n",
        esc(&g.workflow),
        w = g.width,
        h = g.height
    );
    let find = |id: &str| g.nodes.iter().find(|n| n.id == id);
    for e in &g.edges {
        let (Some(a), Some(b)) = (find(&e.from), find(&e.to)) else {
            continue;
        };
        let (x1, y1) = (a.x + a.w / 2, a.y + a.h);
        let (x2, y2) = (b.x + b.w / 2, b.y);
        let my = y1 + 18;
        let _ = writeln!(
            out,
            "<path d=\"M{x1},{y1} L{x1},{my} L{x2},{my} L{x2},{y2}\" fill=\"none\" stroke=\"#667\" stroke-width=\"1.4\" marker-end=\"url(#arrow)\"/>"
        );
        if let Some(l) = &e.label {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" fill=\"#445\" font-size=\"12\">{}</text>",
                (x1 + x2) / 2 + 4,
                my - 4,
                esc(l)
            );
        }
    }
    for n in &g.nodes {
        let (fill, stroke) = colours(&n.kind);
        let rx = match n.kind.as_str() {
            "trigger" | "end" => 28,
            "if" => 2,
            _ => 8,
        };
        let _ = writeln!(
            out,
            "<g class=\"node {}\" data-id=\"{}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"600\">{}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#334\" font-size=\"12\">{}</text></g>",
            n.kind,
            esc(&n.id),
            n.x,
            n.y,
            n.w,
            n.h,
            n.x + n.w / 2,
            n.y + 23,
            esc(&clip(&n.label, 28)),
            n.x + n.w / 2,
            n.y + 42,
            esc(&clip(&n.detail, 30)),
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Fill and stroke per kind (the console's stylesheet uses the same).
pub fn colours(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "trigger" => ("#e3f0ff", "#2f6fd6"),
        "send" => ("#e8f7ee", "#2b9a57"),
        "assign" => ("#fff4e0", "#c9831a"),
        "tag" => ("#f3ecff", "#7b4fd1"),
        "wait" => ("#f1f2f5", "#7a8090"),
        "if" => ("#fffbe0", "#b59a00"),
        "goal" => ("#ffeef0", "#c7374a"),
        _ => ("#ffffff", "#445"),
    }
}
