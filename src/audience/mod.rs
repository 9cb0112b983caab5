//! Audience conditions: one syntax tree, two evaluators.
//!
//! The store compiles a condition into a parameterised WHERE clause for scans
//! over millions of contacts (`store::audience_sql`); `eval` decides it in
//! Rust for one contact on the event path. A property test holds the two equal.

pub mod eval;
pub mod parse;

use crate::duration::Duration;
use crate::located::Located;

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Tag(String),
    Field {
        field: Located<String>,
        test: FieldTest,
    },
    /// The contact has `at_least` (default 1) events `name`, within the last
    /// `within` if given, whose properties pass `where_` if given.
    Event {
        name: String,
        within: Option<Duration>,
        at_least: u32,
        where_: Option<Box<PropertyTest>>,
    },
    Owner(OwnerTest),
    /// `segment: NAME`, before the project replaces it with the condition
    /// of `segments/NAME.yaml` (see `crate::segments`). A running workflow
    /// never holds one; if one were left, it holds for nobody.
    Segment(Located<String>),
}

/// A literal written in a condition. Numbers compare as numbers; strings that
/// are RFC 3339 timestamps compare as time against timestamp fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldTest {
    Equals(Literal),
    NotEquals(Literal),
    In(Vec<Literal>),
    NotIn(Vec<Literal>),
    Contains(String),
    StartsWith(String),
    Gt(Literal),
    Gte(Literal),
    Lt(Literal),
    Lte(Literal),
    Exists(bool),
    /// The timestamp field is older than now - D.
    OlderThan(Duration),
    /// The timestamp field is newer than now - D.
    NewerThan(Duration),
}

/// `where: { field: amount, gte: 500 }` on an event condition: a test of one
/// property of the event, with the meaning of the same test on a custom
/// attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyTest {
    pub field: Located<String>,
    pub test: FieldTest,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OwnerTest {
    None,
    Any,
    Is(String),
}

impl Condition {
    /// Names of the events this condition looks at, so callers load only those.
    pub fn event_names(&self, out: &mut Vec<String>) {
        match self {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.event_names(out)),
            Condition::Not(c) => c.event_names(out),
            Condition::Event { name, .. } if !out.contains(name) => out.push(name.clone()),
            _ => {}
        }
    }

    /// Whether an event condition with `where:` is inside (SQL cannot decide
    /// those exactly: scans narrow without it and decide in Rust).
    pub fn has_event_where(&self) -> bool {
        match self {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().any(Condition::has_event_where),
            Condition::Not(c) => c.has_event_where(),
            Condition::Event { where_, .. } => where_.is_some(),
            _ => false,
        }
    }
}
