//! What a test file says: cases, their contacts and timed events, and the
//! expectations they check.

use super::*;

/// One file of cases, with its text (for `--update`).
#[derive(Debug, Clone)]
pub struct TestFile {
    pub path: PathBuf,
    pub source: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub pos: Pos,
    pub start: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub contacts: Contacts,
    pub events: Vec<TimedEvent>,
    /// Only these workflows' results are compared (all still run: they
    /// share caps, teams and contacts).
    pub workflows: Option<Vec<String>>,
    /// Workflows switched on for this case (shipped `enabled: false`).
    pub enable: Vec<String>,
    /// Results not expected fail the case (default); `strict: false` only
    /// checks that what is expected happens.
    pub strict: bool,
    /// The `expect:` key (None: the case has none yet).
    pub expect_key: Option<Pos>,
    pub expect: Vec<Expectation>,
}

#[derive(Debug, Clone)]
pub enum Contacts {
    Inline(Vec<(Pos, ContactInput)>),
    Csv(Pos, PathBuf),
}

/// Something that happens to a contact at a time during the case.
#[derive(Debug, Clone)]
pub struct TimedEvent {
    pub pos: Pos,
    pub at: DateTime<Utc>,
    pub contact: String,
    pub what: Happening,
}

#[derive(Debug, Clone)]
pub enum Happening {
    Event {
        name: String,
        properties: serde_json::Map<String, serde_json::Value>,
    },
    Tags {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// What a case observes, and what an expectation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Send,
    Assign,
    Notify,
    Webhook,
    Skip,
    Arm,
    Converted,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Send,
        Kind::Assign,
        Kind::Notify,
        Kind::Webhook,
        Kind::Skip,
        Kind::Arm,
        Kind::Converted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Send => "send",
            Kind::Assign => "assign",
            Kind::Notify => "notify",
            Kind::Webhook => "webhook",
            Kind::Skip => "skip",
            Kind::Arm => "arm",
            Kind::Converted => "converted",
        }
    }

    /// The fields an observation of this kind carries, in the order written.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Send => &[
                "workflow", "contact", "step", "channel", "to", "at", "subject", "body",
            ],
            Kind::Assign => &["workflow", "contact", "step", "salesperson", "at"],
            Kind::Notify => &[
                "workflow",
                "contact",
                "step",
                "salesperson",
                "channel",
                "at",
                "body",
            ],
            Kind::Webhook => &["workflow", "contact", "step", "channel", "at"],
            Kind::Skip => &["workflow", "contact", "step", "reason", "at"],
            Kind::Arm => &["workflow", "contact", "arm", "at"],
            Kind::Converted => &["workflow", "contact", "at"],
        }
    }

    /// The keys an expectation of this kind takes.
    pub(super) fn allowed(self) -> Vec<&'static str> {
        let mut v = self.fields().to_vec();
        if self.fields().contains(&"body") {
            v.push("body_contains");
        }
        v
    }

    pub(super) fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// How an expected field is compared with what was observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    Is(String),
    /// `body_contains`: each text is in the body.
    Contains(Vec<String>),
    /// `at`: the same instant.
    At(DateTime<Utc>),
}

#[derive(Debug, Clone)]
pub struct Expectation {
    pub pos: Pos,
    pub kind: Kind,
    pub fields: BTreeMap<String, Match>,
}
