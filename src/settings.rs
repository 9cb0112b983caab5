//! `nurture.yaml`: where the store is, where the files are, policies,
//! channels and teams. Every key has a default, so a fresh folder works.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;

use crate::diagnostics::{Diagnostic, Pos};
use crate::duration::Duration;
use crate::located::Located;
use crate::yaml::{self, Node, Reader};

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

#[derive(Debug, Clone)]
pub struct Policies {
    pub quiet_hours: Option<QuietHours>,
    pub frequency_cap: Option<FrequencyCap>,
    /// `None` only when written `blast_guard: off`.
    pub blast_guard: Option<BlastGuard>,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            quiet_hours: None,
            frequency_cap: None,
            blast_guard: Some(BlastGuard::default()),
        }
    }
}

/// At most `max` new enrollments of one workflow within `per`; beyond that
/// the workflow is paused until `nurture resume` (its enrollments wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlastGuard {
    pub max: u32,
    pub per: Duration,
}

impl Default for BlastGuard {
    /// 500 per hour: more than a busy day of new WeCom contacts for one
    /// salesperson team reaches in an hour, far less than a mistaken
    /// broadcast to a whole store. See docs/no-surprises.md, "The blast guard".
    fn default() -> Self {
        BlastGuard {
            max: 500,
            per: Duration::from_secs(3600),
        }
    }
}

/// Contact-local window in which nothing is sent; `start` may be after `end`
/// (the window then crosses midnight, the usual case: 21:00 to 09:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: chrono::NaiveTime,
    pub end: chrono::NaiveTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub max: u32,
    pub per: Duration,
    /// What a send over the cap does: skipped (the default), or deferred
    /// until the window frees.
    pub on_cap: OnCap,
}

/// `frequency_cap: { on_cap: defer | skip }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCap {
    /// The send is skipped with reason `frequency_cap` (the enrollment moves on).
    #[default]
    Skip,
    /// The enrollment waits at the send until the oldest message counted
    /// in the window leaves it, then tries again.
    Defer,
}

#[derive(Debug, Clone)]
pub struct ChannelSettings {
    pub name: String,
    pub kind: ChannelKind,
    pub pos: Pos,
    /// Requests per second allowed (from `rate_limit: 50/s`, `600/m`).
    pub rate_limit: Option<RateLimit>,
    pub concurrency: Option<u32>,
    /// Every other key, kept for the provider's adapter (`base_url`, `from`,
    /// `*_env`, ...), as strings.
    pub options: BTreeMap<String, Located<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Twilio,
    AliyunSms,
    Wecom,
    Smtp,
    Webhook,
    Log,
}

impl ChannelKind {
    pub const ALL: &[(&str, ChannelKind)] = &[
        ("twilio", ChannelKind::Twilio),
        ("aliyun_sms", ChannelKind::AliyunSms),
        ("wecom", ChannelKind::Wecom),
        ("smtp", ChannelKind::Smtp),
        ("webhook", ChannelKind::Webhook),
        ("log", ChannelKind::Log),
    ];

    pub fn name(self) -> &'static str {
        ChannelKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("log")
    }

    /// The contact field a message on this kind of channel is addressed to.
    pub fn address_field(self) -> Option<&'static str> {
        match self {
            ChannelKind::Twilio | ChannelKind::AliyunSms => Some("phone"),
            ChannelKind::Smtp => Some("email"),
            ChannelKind::Wecom => Some("wecom_external_userid"),
            // A webhook or the log reaches the contact by id: there is always an address.
            ChannelKind::Webhook | ChannelKind::Log => None,
        }
    }

    /// The longest message a channel of this kind takes; a longer rendered
    /// message is skipped with a reason (README, "Limits").
    pub fn message_limit(self) -> crate::template::MessageLimit {
        use crate::template::MessageLimit;
        match self {
            // Twilio refuses bodies over 1,600 characters.
            ChannelKind::Twilio => MessageLimit::Chars(1600),
            // Aliyun splits long SMS and caps them at 500 characters.
            ChannelKind::AliyunSms => MessageLimit::Chars(500),
            // WeCom's welcome and customer messages take 4,000 bytes of text.
            ChannelKind::Wecom => MessageLimit::Bytes(4000),
            ChannelKind::Smtp | ChannelKind::Webhook => MessageLimit::Bytes(1024 * 1024),
            // Every message on the log channel is one log line.
            ChannelKind::Log => MessageLimit::Bytes(64 * 1024),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Salesperson {
    pub id: String,
    pub name: Option<String>,
    pub wecom_userid: Option<String>,
    pub email: Option<String>,
    pub region: Option<String>,
    /// Most open contacts `least_loaded` gives this salesperson; `None` is unlimited.
    pub capacity: Option<u32>,
}

impl Salesperson {
    pub fn template_value(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        for (k, v) in [
            ("name", &self.name),
            ("wecom_userid", &self.wecom_userid),
            ("email", &self.email),
            ("region", &self.region),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if let Some(c) = self.capacity {
            m.insert("capacity".into(), c.into());
        }
        serde_json::Value::Object(m)
    }
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
const SALESPERSON_KEYS: &[&str] = &["id", "name", "wecom_userid", "email", "region", "capacity"];
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

fn read_policies(r: &mut Reader, node: &Node, p: &mut Policies) {
    let Some(f) = r.fields(
        node,
        "policies",
        &["quiet_hours", "frequency_cap", "blast_guard"],
    ) else {
        return;
    };
    if let Some(n) = f.get("blast_guard") {
        if matches!(n.scalar_text(), Some("off") | Some("false")) {
            p.blast_guard = None;
        } else if let Some(g) = r.fields(n, "blast_guard", &["max", "per"]) {
            let mut guard = BlastGuard::default();
            if let Some(n) = g.get("max")
                && let Some(max) = r.u32(n, "blast_guard max")
            {
                if max == 0 {
                    r.error(
                        n.pos,
                        "blast_guard max must be at least 1; write blast_guard: off to turn the guard off",
                    );
                }
                guard.max = max;
            }
            if let Some(n) = g.get("per")
                && let Some(per) = r.duration(n, "blast_guard per")
            {
                guard.per = per;
            }
            p.blast_guard = Some(guard);
        }
    }
    if let Some(n) = f.get("quiet_hours")
        && let Some(q) = r.fields(n, "quiet_hours", &["start", "end"])
    {
        let mut time = |key: &str| -> Option<chrono::NaiveTime> {
            let Some(n) = q.get(key) else {
                r.error(q.pos, format!("quiet_hours needs \"{key}\" (HH:MM)"));
                return None;
            };
            let t = r.string(n, key)?;
            let parsed = chrono::NaiveTime::parse_from_str(&t, "%H:%M").ok();
            if parsed.is_none() {
                r.error(
                    n.pos,
                    format!(
                        "quiet_hours {key} \"{t}\" must be a time of day as HH:MM, e.g. \"21:00\""
                    ),
                );
            }
            parsed
        };
        let (start, end) = (time("start"), time("end"));
        if let (Some(start), Some(end)) = (start, end) {
            if start == end {
                r.error(
                    q.pos,
                    "quiet_hours start and end are equal; remove quiet_hours to send at any time",
                );
            } else {
                p.quiet_hours = Some(QuietHours { start, end });
            }
        }
    }
    if let Some(n) = f.get("frequency_cap")
        && let Some(c) = r.fields(n, "frequency_cap", &["max", "per", "on_cap"])
    {
        let max = match c.get("max") {
            Some(n) => r.u32(n, "frequency_cap max"),
            None => {
                r.error(c.pos, "frequency_cap needs \"max\" (messages per contact)");
                None
            }
        };
        let per = match c.get("per") {
            Some(n) => r.duration(n, "frequency_cap per"),
            None => {
                r.error(c.pos, "frequency_cap needs \"per\" (a duration such as 7d)");
                None
            }
        };
        let on_cap = match c.get("on_cap") {
            None => Some(OnCap::Skip),
            Some(n) => match r.string(n, "frequency_cap on_cap").as_deref() {
                Some("skip") => Some(OnCap::Skip),
                Some("defer") => Some(OnCap::Defer),
                Some(other) => {
                    let mut d = Diagnostic::new(
                        r.file,
                        n.pos,
                        format!("frequency_cap on_cap \"{other}\" must be skip or defer"),
                    )
                    .did_you_mean(other, ["skip", "defer"]);
                    if d.suggestion.is_none() {
                        d = d.with_suggestion(
                            "skip: the send is skipped (default); defer: it waits until the window frees",
                        );
                    }
                    r.push(d);
                    None
                }
                None => None,
            },
        };
        if let (Some(max), Some(per), Some(on_cap)) = (max, per, on_cap) {
            p.frequency_cap = Some(FrequencyCap { max, per, on_cap });
        }
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

/// `50/s`, `600/m`, `1000/h`.
pub fn parse_rate(text: &str) -> Option<RateLimit> {
    let (count, unit) = text.trim().split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3_600),
        "d" => Duration::from_secs(86_400),
        _ => return None,
    };
    Some(RateLimit { count, per })
}

fn read_channels(r: &mut Reader, node: &Node) -> BTreeMap<String, ChannelSettings> {
    let mut out = BTreeMap::new();
    let Some(entries) = node.as_map() else {
        if !node.is_null() {
            r.error(
                node.pos,
                format!(
                    "channels must be a map of name: settings, found {}",
                    node.describe()
                ),
            );
        }
        return out;
    };
    let kinds: Vec<&str> = ChannelKind::ALL.iter().map(|(n, _)| *n).collect();
    for (k, v) in entries {
        let Some(name) = r.string(k, "a channel name") else {
            continue;
        };
        let Some(m) = v.as_map() else {
            r.error(
                v.pos,
                format!(
                    "channel \"{name}\" must be a map with a kind, found {}",
                    v.describe()
                ),
            );
            continue;
        };
        let mut ch = ChannelSettings {
            name: name.clone(),
            kind: ChannelKind::Log,
            pos: k.pos,
            rate_limit: None,
            concurrency: None,
            options: BTreeMap::new(),
        };
        let mut kind_ok = false;
        for (ok, ov) in m {
            let Some(key) = ok.scalar_text() else {
                continue;
            };
            match key {
                "kind" => {
                    let Some(kind) = r.string(ov, "kind") else {
                        continue;
                    };
                    match ChannelKind::ALL.iter().find(|(n, _)| *n == kind) {
                        Some((_, kd)) => {
                            ch.kind = *kd;
                            kind_ok = true;
                        }
                        None => {
                            let mut d = Diagnostic::new(
                                r.file,
                                ov.pos,
                                format!("unknown channel kind \"{kind}\""),
                            )
                            .did_you_mean(&kind, &kinds);
                            if d.suggestion.is_none() {
                                d = d.with_suggestion(format!("kinds are: {}", kinds.join(", ")));
                            }
                            r.push(d);
                            // Reported; avoid a second "needs a kind".
                            kind_ok = true;
                        }
                    }
                }
                "rate_limit" => {
                    let Some(t) = r.string(ov, "rate_limit") else {
                        continue;
                    };
                    match parse_rate(&t) {
                        Some(rl) => ch.rate_limit = Some(rl),
                        None => r.error(
                            ov.pos,
                            format!("rate_limit \"{t}\" must be COUNT/UNIT with a unit of s, m or h, e.g. 50/s or 600/m"),
                        ),
                    }
                }
                // `dkim: { domain, selector, private_key_env }` (an smtp
                // channel's signing key): kept as `dkim.KEY` options.
                "dkim" => {
                    let Some(sub) = ov.as_map() else {
                        r.error(
                            ov.pos,
                            format!(
                                "dkim must be a map: dkim: {{ domain: example.com, selector: s1, private_key_env: DKIM_KEY }}, found {}",
                                ov.describe()
                            ),
                        );
                        continue;
                    };
                    for (sk, sv) in sub {
                        let Some(skey) = sk.scalar_text() else {
                            continue;
                        };
                        if !["domain", "selector", "private_key_env", "algorithm"].contains(&skey) {
                            r.error(
                                sk.pos,
                                format!("unknown dkim key \"{skey}\"; keys are domain, selector, private_key_env, algorithm"),
                            );
                            continue;
                        }
                        let Some(text) = sv.scalar_text().map(str::to_string) else {
                            r.error(sv.pos, format!("dkim.{skey} must be a single value"));
                            continue;
                        };
                        if skey.ends_with("_env") {
                            check_env_name(r, sv, &text);
                        }
                        ch.options
                            .insert(format!("dkim.{skey}"), Located::new(text, sv.pos));
                    }
                }
                "concurrency" => {
                    if let Some(c) = r.u32(ov, "concurrency") {
                        if c == 0 {
                            r.error(ov.pos, "concurrency must be at least 1");
                        } else {
                            ch.concurrency = Some(c);
                        }
                    }
                }
                _ => {
                    let Some(text) = ov.scalar_text().map(str::to_string) else {
                        r.error(
                            ov.pos,
                            format!(
                                "channel option \"{key}\" must be a single value, found {}",
                                ov.describe()
                            ),
                        );
                        continue;
                    };
                    if key.ends_with("_env") {
                        check_env_name(r, ov, &text);
                    } else if looks_secret(key) {
                        r.push(
                            Diagnostic::new(r.file, ok.pos, format!("\"{key}\" looks like a secret written into the file"))
                                .with_suggestion(format!(
                                    "keep secrets out of nurture.yaml: write \"{key}_env: SOME_VAR\" and put the secret in that environment variable"
                                )),
                        );
                        continue;
                    }
                    ch.options
                        .insert(key.to_string(), Located::new(text, ov.pos));
                }
            }
        }
        if !kind_ok {
            r.push(
                Diagnostic::new(r.file, k.pos, format!("channel \"{name}\" needs a kind"))
                    .with_suggestion(format!("kinds are: {}", kinds.join(", "))),
            );
        }
        out.insert(name, ch);
    }
    out
}

fn read_teams(r: &mut Reader, node: &Node) -> BTreeMap<String, Vec<Salesperson>> {
    let mut out = BTreeMap::new();
    let Some(entries) = node.as_map() else {
        if !node.is_null() {
            r.error(
                node.pos,
                format!(
                    "teams must be a map of team name: list of salespeople, found {}",
                    node.describe()
                ),
            );
        }
        return out;
    };
    let mut seen: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for (k, v) in entries {
        let Some(team) = r.string(k, "a team name") else {
            continue;
        };
        let Some(items) = r.seq(v, &format!("team \"{team}\"")) else {
            continue;
        };
        let mut people = Vec::new();
        for item in items {
            let Some(f) = r.fields(item, "a salesperson", SALESPERSON_KEYS) else {
                continue;
            };
            let Some(idn) = f.get("id") else {
                r.error(item.pos, "a salesperson needs an \"id\"");
                continue;
            };
            let Some(id) = r.string(idn, "id") else {
                continue;
            };
            if let Some((first_team, first)) = seen.get(&id) {
                r.error(
                    idn.pos,
                    format!(
                        "salesperson id \"{id}\" is already used in team \"{first_team}\" (line {}); ids must be unique across teams",
                        first.line
                    ),
                );
                continue;
            }
            seen.insert(id.clone(), (team.clone(), idn.pos));
            let mut opt = |key: &str| f.get(key).and_then(|n| r.string(n, key));
            let sp = Salesperson {
                id,
                name: opt("name"),
                wecom_userid: opt("wecom_userid"),
                email: opt("email"),
                region: opt("region"),
                capacity: f.get("capacity").and_then(|n| r.u32(n, "capacity")),
            };
            people.push(sp);
        }
        out.insert(team, people);
    }
    out
}

#[cfg(test)]
mod on_cap_tests {
    use super::*;

    #[test]
    fn on_cap_is_skip_by_default_or_defer() {
        let s = |src: &str| Settings::parse_str(Path::new("nurture.yaml"), src);
        let cap = |src: &str| s(src).unwrap().policies.frequency_cap.unwrap().on_cap;
        assert_eq!(
            cap("policies:\n  frequency_cap: { max: 3, per: 7d }\n"),
            OnCap::Skip
        );
        assert_eq!(
            cap("policies:\n  frequency_cap: { max: 3, per: 7d, on_cap: defer }\n"),
            OnCap::Defer
        );
        let d = s("policies:\n  frequency_cap: { max: 3, per: 7d, on_cap: defr }\n").unwrap_err();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].pos, Pos::new(2, 45));
        assert!(
            d[0].message
                .contains("on_cap \"defr\" must be skip or defer")
        );
        assert_eq!(d[0].suggestion.as_deref(), Some("did you mean \"defer\"?"));
    }
}
