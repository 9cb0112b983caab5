//! YAML with positions.
//!
//! `serde_yaml` is archived and serde loses positions in the places users
//! make mistakes, so nurture reads YAML into a small tree of [`Node`]s built
//! from `saphyr-parser`'s events. Every node keeps where it was written, and
//! [`Reader`] turns the tree into typed values while collecting every problem
//! as a [`Diagnostic`] instead of stopping at the first.
//!
//! Hostile input gives an error, never a panic or a stack overflow: nesting
//! is capped at [`MAX_DEPTH`], files at [`MAX_BYTES`], and alias expansion at
//! [`MAX_NODES`] nodes (no "billion laughs").

use std::collections::HashMap;
use std::path::Path;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, StrInput};

use crate::diagnostics::{Diagnostic, Pos};

/// Deepest nesting of maps and lists accepted.
pub const MAX_DEPTH: usize = 64;
/// Largest file accepted (1 MiB); workflows and settings are small.
pub const MAX_BYTES: usize = 1 << 20;
/// Most nodes in one document, counting each alias expansion.
pub const MAX_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Entries in file order; keys are unique (a duplicate is reported and dropped).
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    /// `quoted` is true for quoted and block (`|`, `>`) scalars, and for `!!str`:
    /// those are always strings, never numbers, booleans or null.
    Scalar {
        text: String,
        quoted: bool,
    },
    /// `null`, `~`, or nothing at all.
    Null,
}

impl Node {
    pub fn null(pos: Pos) -> Node {
        Node {
            pos,
            kind: Kind::Null,
        }
    }

    /// What this node is, for messages: "a map", "a list", "a number", ...
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Map(_) => "a map".into(),
            Kind::Seq(_) => "a list".into(),
            Kind::Null => "nothing (null)".into(),
            Kind::Scalar { text, .. } => {
                let what = if self.as_bool().is_some() {
                    "true/false"
                } else if self.as_f64().is_some() {
                    "a number"
                } else {
                    "a string"
                };
                let mut shown: String = text.chars().take(40).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                format!("{what} {shown:?}")
            }
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// The text of a scalar, whatever its type (`2024` gives "2024").
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A string: a quoted scalar, or a plain one that is not a number or boolean.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, quoted: true } => Some(text),
            Kind::Scalar {
                text,
                quoted: false,
            } if self.as_bool().is_none() && self.as_f64().is_none() => Some(text),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match &self.kind {
            Kind::Scalar {
                text,
                quoted: false,
            } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match &self.kind {
            Kind::Scalar {
                text,
                quoted: false,
            } => {
                let t = text.strip_prefix('+').unwrap_or(text);
                t.parse::<i64>().ok()
            }
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match &self.kind {
            Kind::Scalar {
                text,
                quoted: false,
            } => {
                if let Some(i) = self.as_i64() {
                    return Some(i as f64);
                }
                // YAML 1.2 core schema floats; refuse Rust-only spellings like "inf" or "NaN".
                let t = text.as_str();
                let numeric = !t.is_empty()
                    && t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
                    && t.chars().any(|c| c.is_ascii_digit());
                if numeric {
                    t.parse::<f64>().ok().filter(|f| f.is_finite())
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key`, when this is a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.scalar_text() == Some(key))
            .map(|(_, v)| v)
    }

    /// How many values this node holds, counting every alias expansion.
    pub fn size(&self) -> usize {
        match &self.kind {
            Kind::Map(m) => 1 + m.iter().map(|(k, v)| k.size() + v.size()).sum::<usize>(),
            Kind::Seq(s) => 1 + s.iter().map(Node::size).sum::<usize>(),
            _ => 1,
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX).max(1);
    let col = u32::try_from(span.start.col()).unwrap_or(u32::MAX - 1) + 1;
    Pos::new(line, col)
}

/// Parses one YAML document. An empty file gives a null node at 1:1. The node
/// is `None` only when the text cannot be read as YAML at all; duplicate keys
/// and similar problems are reported alongside a usable tree.
pub fn parse(file: &Path, src: &str) -> (Option<Node>, Vec<Diagnostic>) {
    let mut b = Builder {
        parser: Parser::new_from_str(src),
        file,
        diags: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
    };
    if src.len() > MAX_BYTES {
        b.diags.push(Diagnostic::new(
            file,
            Pos::new(1, 1),
            format!(
                "file is too large ({} bytes; at most {MAX_BYTES})",
                src.len()
            ),
        ));
        return (None, b.diags);
    }
    match b.document() {
        Ok(node) => (Some(node), b.diags),
        Err(d) => {
            b.diags.push(d);
            (None, b.diags)
        }
    }
}

struct Builder<'a> {
    parser: Parser<'a, StrInput<'a>>,
    file: &'a Path,
    diags: Vec<Diagnostic>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Diagnostic> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                let pos = Pos::new(
                    u32::try_from(m.line()).unwrap_or(u32::MAX).max(1),
                    u32::try_from(m.col()).unwrap_or(u32::MAX - 1) + 1,
                );
                Err(Diagnostic::new(
                    self.file,
                    pos,
                    format!("YAML syntax error: {}", e.info()),
                ))
            }
            None => Err(Diagnostic::new(
                self.file,
                Pos::new(1, 1),
                "YAML syntax error: unexpected end of input",
            )),
        }
    }

    fn document(&mut self) -> Result<Node, Diagnostic> {
        let mut root: Option<Node> = None;
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        // Report the second document, then stop reading.
                        return Err(Diagnostic::new(
                            self.file,
                            pos_of(&span),
                            "a file holds one YAML document; remove the second \"---\" and what follows, or move it to its own file",
                        ));
                    }
                }
                ev => {
                    let node = self.node(ev, span, 0)?;
                    root = Some(node);
                }
            }
        }
        Ok(root.unwrap_or_else(|| Node::null(Pos::new(1, 1))))
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), Diagnostic> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::new(
                self.file,
                pos,
                format!("document is too large (more than {MAX_NODES} values, counting aliases)"),
            ));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, Diagnostic> {
        let pos = pos_of(&span);
        if depth > MAX_DEPTH {
            return Err(Diagnostic::new(
                self.file,
                pos,
                format!("nesting is too deep (more than {MAX_DEPTH} levels)"),
            ));
        }
        self.count(1, pos)?;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let str_tag = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str")
                    || tag
                        .as_ref()
                        .is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                let quoted = str_tag || !matches!(style, ScalarStyle::Plain);
                let kind =
                    if !quoted && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                        Kind::Null
                    } else {
                        Kind::Scalar {
                            text: text.into_owned(),
                            quoted,
                        }
                    };
                (Node { pos, kind }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (
                    Node {
                        pos,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(ev, span, depth + 1)?;
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span, depth + 1)?;
                    let text = match &key.kind {
                        Kind::Scalar { text, .. } => Some(text.clone()),
                        Kind::Null => Some(String::new()),
                        _ => None,
                    };
                    let Some(text) = text else {
                        self.diags.push(Diagnostic::new(
                            self.file,
                            key.pos,
                            format!("a key must be plain text, not {}", key.describe()),
                        ));
                        continue;
                    };
                    if let Some((first, _)) = entries
                        .iter()
                        .find(|(k, _)| k.scalar_text().unwrap_or("") == text)
                    {
                        self.diags.push(Diagnostic::new(
                            self.file,
                            key.pos,
                            format!(
                                "duplicate key \"{text}\" (first written at line {})",
                                first.pos.line
                            ),
                        ));
                        continue;
                    }
                    entries.push((key, value));
                }
                (
                    Node {
                        pos,
                        kind: Kind::Map(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => {
                    let mut n = n.clone();
                    self.count(n.size(), pos)?;
                    n.pos = pos;
                    return Ok(n);
                }
                None => {
                    return Err(Diagnostic::new(
                        self.file,
                        pos,
                        "alias refers to an unknown anchor",
                    ));
                }
            },
            other => {
                return Err(Diagnostic::new(
                    self.file,
                    pos,
                    format!("YAML syntax error: unexpected {other:?}"),
                ));
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

/// Turns nodes into typed values, collecting every problem.
pub struct Reader<'f> {
    pub file: &'f Path,
    pub diags: Vec<Diagnostic>,
}

/// A map whose keys were checked against the allowed ones.
pub struct Fields<'n> {
    pub pos: Pos,
    pub entries: &'n [(Node, Node)],
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.scalar_text() == Some(key))
            .map(|(_, v)| v)
    }
    pub fn key_node(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.scalar_text() == Some(key))
            .map(|(k, _)| k)
    }
    /// Whether some other key looks like a misspelling of `key` (then a
    /// "needs KEY" message would only repeat the "did you mean" one).
    pub fn misspelt(&self, key: &str) -> bool {
        self.keys()
            .any(|k| k != key && crate::diagnostics::did_you_mean(k, [key]).is_some())
    }
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    pub fn keys(&self) -> impl Iterator<Item = &'n str> {
        self.entries.iter().filter_map(|(k, _)| k.scalar_text())
    }
}

impl<'f> Reader<'f> {
    pub fn new(file: &'f Path) -> Self {
        Reader {
            file,
            diags: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(self.file, pos, message));
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Reports `key` as unknown, suggesting the closest allowed key.
    pub fn unknown_key(&mut self, key: &Node, allowed: &[&str], what: &str) {
        let text = key.scalar_text().unwrap_or("");
        let mut d = Diagnostic::new(
            self.file,
            key.pos,
            format!("unknown key \"{text}\" in {what}"),
        )
        .did_you_mean(text, allowed);
        if d.suggestion.is_none() {
            d = d.with_suggestion(format!("{what} takes: {}", allowed.join(", ")));
        }
        self.diags.push(d);
    }

    /// `node` as a map with only `allowed` keys (unknown ones are reported and
    /// still returned, so that later checks may look at what is there).
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!("{what} must be a map, found {}", node.describe()),
            );
            return None;
        };
        for (k, _) in entries {
            if !allowed.contains(&k.scalar_text().unwrap_or("")) {
                self.unknown_key(k, allowed, what);
            }
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(s) => Some(s),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a list, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A non-empty string. Plain numbers are taken as their text (`tag: 2024`).
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { text, .. } if !text.trim().is_empty() => Some(text.clone()),
            Kind::Scalar { .. } => {
                self.error(node.pos, format!("{what} must not be empty"));
                None
            }
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a string, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A string, or a list of strings (`add: vip` or `add: [vip, new]`).
    pub fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.kind {
            Kind::Seq(items) => items.iter().filter_map(|n| self.string(n, what)).collect(),
            Kind::Null => Vec::new(),
            _ => self.string(node, what).into_iter().collect(),
        }
    }

    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        let b = node.as_bool();
        if b.is_none() {
            self.error(
                node.pos,
                format!("{what} must be true or false, found {}", node.describe()),
            );
        }
        b
    }

    pub fn u32(&mut self, node: &Node, what: &str) -> Option<u32> {
        let v = node.as_i64().and_then(|i| u32::try_from(i).ok());
        if v.is_none() {
            self.error(
                node.pos,
                format!(
                    "{what} must be a whole number (0 or more), found {}",
                    node.describe()
                ),
            );
        }
        v
    }

    pub fn duration(&mut self, node: &Node, what: &str) -> Option<crate::duration::Duration> {
        let text = self.string(node, what)?;
        match text.parse() {
            Ok(d) => Some(d),
            Err(crate::duration::DurationError(msg)) => {
                self.error(node.pos, format!("{what}: {msg}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
