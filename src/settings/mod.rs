//! `nurture.yaml`: where the store is, where the files are, policies,
//! channels and teams. Every key has a default, so a fresh folder works.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;

use crate::diagnostics::{Diagnostic, Pos};
use crate::yaml::{self, Node, Reader};

mod channels;
mod policies;
mod teams;

use channels::read_channels;
pub use channels::{ChannelKind, ChannelSettings, RateLimit, parse_rate};
use policies::read_policies;
pub use policies::{BlastGuard, FrequencyCap, OnCap, Policies, QuietHours};
pub use teams::Salesperson;
use teams::read_teams;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from, if any.
    pub file: Option<PathBuf>,
    /// Folder of the settings file: relative paths are taken from here.
    pub root: PathBuf,
    /// `NURTURE_DATABASE` overrides the file's `database`.
    pub database: String,
    pub workflows_dir: PathBuf,
    pub templates_dir: PathBuf,
    /// `segments/`: one named condition per file (`segment: NAME`).
    pub segments_dir: PathBuf,
    /// `tests/`: workflow test cases that `nurture test` runs.
    pub tests_dir: PathBuf,
    pub timezone: Tz,
    pub listen: String,
    pub api_token_env: String,
    /// The variable holding the console's read-only token, if any.
    pub console_token_env: Option<String>,
    pub policies: Policies,
    pub channels: BTreeMap<String, ChannelSettings>,
    pub teams: BTreeMap<String, Vec<Salesperson>>,
    /// Custom contact attributes the workflows and templates may use, with
    /// their types. Unknown names in conditions and templates are reported
    /// against this list; the sample contact of `validate` carries them.
    pub fields: BTreeMap<String, FieldType>,
    /// Event names the workflows may use, each with its properties and their
    /// types (`events: { purchase: { amount: number } }`). When any is
    /// declared, `validate` checks event names in triggers and conditions and
    /// `event.properties.X` in templates against this list.
    pub events: BTreeMap<String, BTreeMap<String, FieldType>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Timestamp,
    Bool,
    /// A calendar date `YYYY-MM-DD` (a birthday, a renewal day): not an
    /// instant; date triggers take it in the contact's time zone.
    Date,
}

impl Settings {
    /// The settings of a fresh folder with no `nurture.yaml` in `root`.
    pub fn defaults(root: PathBuf) -> Settings {
        let mut channels = BTreeMap::new();
        channels.insert(
            "console".to_string(),
            ChannelSettings {
                name: "console".into(),
                kind: ChannelKind::Log,
                pos: Pos::default(),
                rate_limit: None,
                concurrency: None,
                options: BTreeMap::new(),
            },
        );
        Settings {
            file: None,
            database: "sqlite://nurture.db".into(),
            workflows_dir: root.join("workflows"),
            templates_dir: root.join("templates"),
            segments_dir: root.join("segments"),
            tests_dir: root.join("tests"),
            root,
            timezone: chrono_tz::Asia::Shanghai,
            listen: "127.0.0.1:8080".into(),
            api_token_env: "NURTURE_API_TOKEN".into(),
            console_token_env: None,
            policies: Policies::default(),
            channels,
            teams: BTreeMap::new(),
            fields: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    /// The database URL after `NURTURE_DATABASE`, with a relative SQLite path
    /// taken from the settings' folder.
    pub fn database_url(&self) -> String {
        let url = std::env::var("NURTURE_DATABASE").unwrap_or_else(|_| self.database.clone());
        if let Some(path) = url.strip_prefix("sqlite://") {
            let p = std::path::Path::new(path);
            if p.is_relative() && !path.starts_with(':') {
                return format!("sqlite://{}", self.root.join(p).display());
            }
        }
        url
    }

    pub fn salesperson(&self, id: &str) -> Option<&Salesperson> {
        self.teams.values().flatten().find(|s| s.id == id)
    }
}

// ---------------------------------------------------------------------------
// Loading `nurture.yaml`
// ---------------------------------------------------------------------------

const TOP_KEYS: &[&str] = &[
    "database",
    "workflows",
    "templates",
    "segments",
    "tests",
    "timezone",
    "listen",
    "api_token_env",
    "console_token_env",
    "policies",
    "channels",
    "teams",
    "fields",
    "events",
];
const FIELD_TYPES: &[(&str, FieldType)] = &[
    ("string", FieldType::String),
    ("number", FieldType::Number),
    ("timestamp", FieldType::Timestamp),
    ("date", FieldType::Date),
    ("bool", FieldType::Bool),
];

impl FieldType {
    pub fn name(self) -> &'static str {
        FIELD_TYPES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("string")
    }
}

/// Key fragments that suggest a secret written straight into the file.
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    !k.ends_with("_env")
        && [
            "secret",
            "password",
            "passwd",
            "token",
            "api_key",
            "apikey",
            "private_key",
            "aes_key",
        ]
        .iter()
        .any(|s| k.contains(s))
}

impl Settings {
    /// Reads `config_path`. A missing file gives [`Settings::defaults`] for its
    /// folder (a fresh folder works). Every problem in the file is reported.
    ///
    /// Channels: when the file defines no channels at all, the default `log`
    /// channel `console` exists, as in a fresh folder. A file that defines
    /// channels gets exactly those: add `console: { kind: log }` to keep it.
    /// That way nothing is silently sent to a channel the user did not write.
    pub fn load(config_path: &Path) -> Result<Settings, Vec<Diagnostic>> {
        let root = config_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let src = match std::fs::read_to_string(config_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Settings::defaults(root));
            }
            Err(e) => {
                return Err(vec![Diagnostic::new(
                    config_path,
                    Pos::default(),
                    format!("cannot read the settings: {e}"),
                )]);
            }
        };
        Settings::parse_str(config_path, &src)
    }

    /// Reads settings from `src`, the text of `config_path`.
    pub fn parse_str(config_path: &Path, src: &str) -> Result<Settings, Vec<Diagnostic>> {
        let root = config_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut s = Settings::defaults(root.clone());
        s.file = Some(config_path.to_path_buf());
        let (node, diags) = yaml::parse(config_path, src);
        let mut r = Reader::new(config_path);
        r.diags = diags;
        if let Some(node) = node
            && !node.is_null()
        {
            read_settings(&mut r, &node, &mut s);
        }
        if r.diags.is_empty() {
            Ok(s)
        } else {
            Err(r.diags)
        }
    }
}

fn read_settings(r: &mut Reader, node: &Node, s: &mut Settings) {
    let Some(f) = r.fields(node, "the settings", TOP_KEYS) else {
        return;
    };
    if let Some(n) = f.get("database")
        && let Some(db) = r.string(n, "database")
    {
        if db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://")
        {
            s.database = db;
        } else {
            r.error(
                n.pos,
                format!("database \"{db}\" must start with sqlite:// or postgres://"),
            );
        }
    }
    if let Some(n) = f.get("workflows")
        && let Some(d) = r.string(n, "workflows")
    {
        s.workflows_dir = s.root.join(d);
    }
    if let Some(n) = f.get("templates")
        && let Some(d) = r.string(n, "templates")
    {
        s.templates_dir = s.root.join(d);
    }
    if let Some(n) = f.get("segments")
        && let Some(d) = r.string(n, "segments")
    {
        s.segments_dir = s.root.join(d);
    }
    if let Some(n) = f.get("tests")
        && let Some(d) = r.string(n, "tests")
    {
        s.tests_dir = s.root.join(d);
    }
    if let Some(n) = f.get("timezone")
        && let Some(tz) = r.string(n, "timezone")
    {
        match tz.parse::<Tz>() {
            Ok(t) => s.timezone = t,
            Err(_) => {
                let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
                r.push(
                    Diagnostic::new(r.file, n.pos, format!("unknown timezone \"{tz}\""))
                        .did_you_mean(&tz, &names),
                );
                if r.diags.last().is_some_and(|d| d.suggestion.is_none()) {
                    let d = r.diags.pop().expect("just pushed");
                    r.push(d.with_suggestion(
                        "use an IANA name such as \"Asia/Shanghai\" or \"Europe/Berlin\"",
                    ));
                }
            }
        }
    }
    if let Some(n) = f.get("listen")
        && let Some(l) = r.string(n, "listen")
    {
        let port_ok = l
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if port_ok {
            s.listen = l;
        } else {
            r.error(
                n.pos,
                format!("listen \"{l}\" must be HOST:PORT, e.g. 127.0.0.1:8080"),
            );
        }
    }
    if let Some(n) = f.get("api_token_env")
        && let Some(v) = r.string(n, "api_token_env")
    {
        check_env_name(r, n, &v);
        s.api_token_env = v;
    }
    if let Some(n) = f.get("console_token_env")
        && let Some(v) = r.string(n, "console_token_env")
    {
        check_env_name(r, n, &v);
        s.console_token_env = Some(v);
    }
    if let Some(n) = f.get("policies") {
        read_policies(r, n, &mut s.policies);
    }
    if let Some(n) = f.get("fields") {
        read_fields(r, n, &mut s.fields);
    }
    if let Some(n) = f.get("events") {
        read_events(r, n, &mut s.events);
    }
    if let Some(n) = f.get("channels") {
        let channels = read_channels(r, n);
        if !channels.is_empty() {
            s.channels = channels;
        }
    }
    if let Some(n) = f.get("teams") {
        s.teams = read_teams(r, n);
    }
}

fn check_env_name(r: &mut Reader, n: &Node, v: &str) {
    let ok = v
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        r.error(
            n.pos,
            format!("\"{v}\" is not an environment variable name; a key ending in _env names the variable that holds the secret, e.g. TWILIO_AUTH_TOKEN"),
        );
    }
}

/// `events: { NAME: { PROPERTY: TYPE, ... } }`; `NAME: {}` (or nothing)
/// declares an event without properties.
fn read_events(
    r: &mut Reader,
    node: &Node,
    out: &mut BTreeMap<String, BTreeMap<String, FieldType>>,
) {
    let Some(entries) = node.as_map() else {
        if !node.is_null() {
            r.error(
                node.pos,
                format!(
                    "events must be a map of event name: {{ property: type }}, found {}",
                    node.describe()
                ),
            );
        }
        return;
    };
    for (k, v) in entries {
        let Some(name) = r.string(k, "an event name") else {
            continue;
        };
        let mut props = BTreeMap::new();
        if !v.is_null() {
            read_types(r, v, &mut props, "the properties of an event", false);
        }
        out.insert(name, props);
    }
}

fn read_fields(r: &mut Reader, node: &Node, out: &mut BTreeMap<String, FieldType>) {
    read_types(r, node, out, "fields", true)
}

fn read_types(
    r: &mut Reader,
    node: &Node,
    out: &mut BTreeMap<String, FieldType>,
    what: &str,
    contact_fields: bool,
) {
    let Some(entries) = node.as_map() else {
        if !node.is_null() {
            r.error(
                node.pos,
                format!(
                    "{what} must be a map of name: type, found {}",
                    node.describe()
                ),
            );
        }
        return;
    };
    let type_names: Vec<&str> = FIELD_TYPES.iter().map(|(n, _)| *n).collect();
    for (k, v) in entries {
        let Some(name) = r.string(k, "a field name") else {
            continue;
        };
        if contact_fields && crate::contact::BUILTIN_FIELDS.contains(&name.as_str()) {
            r.error(
                k.pos,
                format!("\"{name}\" is a built-in contact field; declare only custom attributes"),
            );
            continue;
        }
        let Some(t) = r.string(v, "a field type") else {
            continue;
        };
        match FIELD_TYPES.iter().find(|(n, _)| *n == t) {
            Some((_, ft)) => {
                out.insert(name, *ft);
            }
            None => {
                let mut d = Diagnostic::new(r.file, v.pos, format!("unknown field type \"{t}\""))
                    .did_you_mean(&t, &type_names);
                if d.suggestion.is_none() {
                    d = d.with_suggestion("field types are: string, number, timestamp, bool");
                }
                r.push(d);
            }
        }
    }
}

#[cfg(test)]
mod tests;
