//! Contact-way codes (渠道活码) as files: `contact_ways/NAME.yaml`.
//!
//! ```yaml
//! channel: wecom                 # the wecom channel (default: the only one)
//! staff:
//!   pool: [sp-wang, sp-li]       # salesperson ids of teams, each with a wecom_userid
//!   strategy: round_robin        # round_robin | least_loaded
//!   backup: [sp-chen]            # when nobody of the pool can take adds
//!   daily_cap: 50                # adds per salesperson per day (the settings' time zone)
//!   online_hours: "09:00-21:00"  # outside them the pool is off the code (backup only)
//! auto_accept: true              # skip_verify: added without the salesperson confirming
//! tags: [douyin, 618]
//! welcome: douyin-welcome        # a template sent as the welcome to every add via this code
//! remark: 抖音 618 直播间          # at most 30 characters (WeCom)
//! ```
//!
//! The code's `state` is its NAME (at most 30 characters, WeCom's limit for
//! `state`), so the callback's `State` says which code a new customer came
//! through. `nurture wecom sync` pushes each code with `add_contact_way` /
//! `update_contact_way` (see `channels::wecom::contact_way`); the daemon
//! re-pushes the members on a code every minute when the pool's members
//! change (a cap reached, online hours starting or ending).
//!
//! Who is on the code now ([`ContactWay::members_now`]): the pool members
//! inside online hours and under their daily cap; with `round_robin` all of
//! them (WeCom hands the adds of a multi-member code out among them), with
//! `least_loaded` only those with the fewest adds today. Nobody left: the
//! backup members. A code whose files names one member in all is a
//! single-member code (`type` 1), otherwise multi-member (`type` 2); WeCom
//! does not let a code change its type, so `sync` deletes and re-creates one
//! whose type would change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveTime, Utc};

use crate::diagnostics::{Diagnostic, Pos};
use crate::settings::{ChannelKind, Settings};
use crate::template::Templates;
use crate::workflow::model::{Entry, Located, SendStep, Step, StepAction, Trigger, Workflow};
use crate::yaml::{self, Reader};

/// WeCom's limits on `add_contact_way` (WxJava `WxCpContactWayInfo`,
/// developer.work.weixin.qq.com/document/path/92228): `state` and `remark`
/// at most 30 characters; a multi-member code at most 100 members.
pub const STATE_MAX_CHARS: usize = 30;
pub const REMARK_MAX_CHARS: usize = 30;
pub const MEMBERS_MAX: usize = 100;

/// The folder, relative to the settings file.
pub const DIR: &str = "contact_ways";

/// Workflows made from a code's `welcome:` are named this plus the code.
pub const WORKFLOW_PREFIX: &str = "contact-way:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStrategy {
    RoundRobin,
    LeastLoaded,
}

impl PoolStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStrategy::RoundRobin => "round_robin",
            PoolStrategy::LeastLoaded => "least_loaded",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ContactWay {
    /// The file stem; also the code's `state`.
    pub name: String,
    pub file: PathBuf,
    pub channel: Option<Located<String>>,
    pub pool: Vec<Located<String>>,
    pub strategy: PoolStrategy,
    pub backup: Vec<Located<String>>,
    pub daily_cap: Option<u32>,
    /// Start and end, in the settings' time zone (end before start: over midnight).
    pub online_hours: Option<(NaiveTime, NaiveTime)>,
    pub auto_accept: bool,
    pub tags: Vec<String>,
    pub welcome: Option<Located<String>>,
    pub remark: Option<String>,
}

const KEYS: &[&str] = &[
    "channel",
    "staff",
    "auto_accept",
    "tags",
    "welcome",
    "remark",
];
const STAFF_KEYS: &[&str] = &["pool", "strategy", "backup", "daily_cap", "online_hours"];

/// `*.yaml` / `*.yml` files of `dir`, sorted; none when it does not exist.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    crate::project_files::workflow_files(dir).unwrap_or_default()
}

/// Reads every file of the folder.
pub fn load_dir(dir: &Path) -> (Vec<ContactWay>, Vec<Diagnostic>) {
    let mut ways = Vec::new();
    let mut diags = Vec::new();
    for f in files(dir) {
        match std::fs::read_to_string(&f) {
            Ok(src) => {
                let (w, d) = load_str(&f, &src);
                ways.extend(w);
                diags.extend(d);
            }
            Err(e) => diags.push(Diagnostic::new(
                &f,
                Pos::new(1, 1),
                format!("cannot read the file: {e}"),
            )),
        }
    }
    (ways, diags)
}

fn names(r: &mut Reader, n: &yaml::Node, what: &str) -> Vec<Located<String>> {
    let items: Vec<&yaml::Node> = match n.as_seq() {
        Some(s) => s.iter().collect(),
        None if n.is_null() => Vec::new(),
        None => vec![n],
    };
    items
        .into_iter()
        .filter_map(|i| r.string(i, what).map(|s| Located::new(s, i.pos)))
        .collect()
}

fn hours(r: &mut Reader, n: &yaml::Node) -> Option<(NaiveTime, NaiveTime)> {
    let text = r.string(n, "online_hours")?;
    let parsed = text.split_once('-').and_then(|(a, b)| {
        Some((
            NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?,
            NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?,
        ))
    });
    match parsed {
        Some((a, b)) if a != b => Some((a, b)),
        _ => {
            r.push(
                Diagnostic::new(r.file, n.pos, format!("online_hours \"{text}\" is not HH:MM-HH:MM"))
                    .with_suggestion("write e.g. \"09:00-21:00\" (the settings' time zone; 22:00-02:00 spans midnight)"),
            );
            None
        }
    }
}

/// One file. The name is the file stem.
pub fn load_str(path: &Path, src: &str) -> (Option<ContactWay>, Vec<Diagnostic>) {
    let (node, mut diags) = yaml::parse(path, src);
    let Some(node) = node else {
        return (None, diags);
    };
    let mut r = Reader::new(path);
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    let top = Pos::new(1, 1);
    if name.is_empty()
        || name.chars().count() > STATE_MAX_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        r.push(
            Diagnostic::new(
                path,
                top,
                format!("the contact way's name \"{name}\" (its file name) is its WeCom state: at most {STATE_MAX_CHARS} characters of a-z, 0-9, - and _"),
            )
            .with_suggestion("rename the file, e.g. contact_ways/douyin-0618.yaml"),
        );
    }
    let way = (|| {
        let f = r.fields(&node, "a contact way", KEYS)?;
        let mut way = ContactWay {
            name: name.clone(),
            file: path.to_path_buf(),
            channel: None,
            pool: Vec::new(),
            strategy: PoolStrategy::RoundRobin,
            backup: Vec::new(),
            daily_cap: None,
            online_hours: None,
            auto_accept: true,
            tags: Vec::new(),
            welcome: None,
            remark: None,
        };
        if let Some(n) = f.get("channel") {
            way.channel = r.string(n, "channel").map(|s| Located::new(s, n.pos));
        }
        match f.get("staff") {
            Some(s) => {
                if let Some(sf) = r.fields(s, "staff", STAFF_KEYS) {
                    match sf.get("pool") {
                        Some(p) => way.pool = names(&mut r, p, "a pool member"),
                        None if !sf.misspelt("pool") => r.push(
                            Diagnostic::new(
                                path,
                                s.pos,
                                "staff needs pool: the salespeople on the code",
                            )
                            .with_suggestion("pool: [sp-wang, sp-li] (salesperson ids of teams)"),
                        ),
                        None => {}
                    }
                    if let Some(n) = sf.get("strategy") {
                        match n.scalar_text() {
                            Some("round_robin") => way.strategy = PoolStrategy::RoundRobin,
                            Some("least_loaded") => way.strategy = PoolStrategy::LeastLoaded,
                            other => r.push(
                                Diagnostic::new(
                                    path,
                                    n.pos,
                                    format!("unknown strategy \"{}\"", other.unwrap_or("")),
                                )
                                .did_you_mean(other.unwrap_or(""), ["round_robin", "least_loaded"]),
                            ),
                        }
                    }
                    if let Some(n) = sf.get("backup") {
                        way.backup = names(&mut r, n, "a backup member");
                    }
                    if let Some(n) = sf.get("daily_cap") {
                        way.daily_cap = r.u32(n, "daily_cap");
                        if way.daily_cap == Some(0) {
                            r.error(
                                n.pos,
                                "daily_cap must be at least 1 (leave it out for no cap)",
                            );
                        }
                    }
                    if let Some(n) = sf.get("online_hours") {
                        way.online_hours = hours(&mut r, n);
                    }
                }
            }
            None if !f.misspelt("staff") => r.push(
                Diagnostic::new(path, f.pos, "a contact way needs staff")
                    .with_suggestion("staff: { pool: [sp-wang], strategy: round_robin }"),
            ),
            None => {}
        }
        if let Some(n) = f.get("auto_accept") {
            way.auto_accept = r.bool(n, "auto_accept").unwrap_or(true);
        }
        if let Some(n) = f.get("tags") {
            way.tags = r.strings(n, "a tag");
        }
        if let Some(n) = f.get("welcome") {
            way.welcome = r.string(n, "welcome").map(|s| Located::new(s, n.pos));
        }
        if let Some(n) = f.get("remark")
            && let Some(t) = r.string(n, "remark")
        {
            if t.chars().count() > REMARK_MAX_CHARS {
                r.error(
                    n.pos,
                    format!(
                        "remark is {} characters; WeCom takes at most {REMARK_MAX_CHARS}",
                        t.chars().count()
                    ),
                );
            }
            way.remark = Some(t);
        }
        Some(way)
    })();
    diags.extend(r.diags);
    (way, diags)
}

/// The wecom channel of a code: the one named, else the only one.
pub fn channel_of<'s>(way: &ContactWay, settings: &'s Settings) -> Option<&'s str> {
    match &way.channel {
        Some(c) => settings
            .channels
            .get(&c.value)
            // A `log` channel may stand in for WeCom (the quick start's
            // preview); `nurture wecom sync` only pushes to `wecom` ones.
            .filter(|c| matches!(c.kind, ChannelKind::Wecom | ChannelKind::Log))
            .map(|c| c.name.as_str()),
        None => {
            let mut w = settings
                .channels
                .values()
                .filter(|c| c.kind == ChannelKind::Wecom);
            match (w.next(), w.next()) {
                (Some(one), None) => Some(one.name.as_str()),
                _ => None,
            }
        }
    }
}

/// Checks the codes against the settings and templates.
pub fn check(ways: &[ContactWay], settings: &Settings, templates: &Templates) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let staff: BTreeMap<&str, Option<&str>> = settings
        .teams
        .values()
        .flatten()
        .map(|s| (s.id.as_str(), s.wecom_userid.as_deref()))
        .collect();
    for w in ways {
        let file = &w.file;
        match &w.channel {
            Some(c) if channel_of(w, settings).is_none() => {
                let wecom: Vec<&str> = settings
                    .channels
                    .values()
                    .filter(|c| c.kind == ChannelKind::Wecom)
                    .map(|c| c.name.as_str())
                    .collect();
                out.push(
                    Diagnostic::new(file, c.pos, format!("no wecom channel \"{}\"", c.value))
                        .did_you_mean(&c.value, wecom),
                );
            }
            None if channel_of(w, settings).is_none() => out.push(
                Diagnostic::new(
                    file,
                    Pos::new(1, 1),
                    "a contact way needs a wecom channel: the settings have none, or several (name one with channel:)",
                ),
            ),
            _ => {}
        }
        for m in w.pool.iter().chain(&w.backup) {
            match staff.get(m.value.as_str()) {
                Some(Some(_)) => {}
                Some(None) => out.push(Diagnostic::new(
                    file,
                    m.pos,
                    format!("salesperson \"{}\" has no wecom_userid in teams: WeCom cannot put them on a code", m.value),
                )),
                None => out.push(
                    Diagnostic::new(file, m.pos, format!("unknown salesperson \"{}\"", m.value))
                        .did_you_mean(&m.value, staff.keys().copied()),
                ),
            }
        }
        let total = w.pool.len() + w.backup.len();
        if total > MEMBERS_MAX {
            out.push(Diagnostic::new(
                file,
                Pos::new(1, 1),
                format!("{total} members; a WeCom code takes at most {MEMBERS_MAX}"),
            ));
        }
        if let Some(t) = &w.welcome
            && !templates.contains(&t.value)
        {
            out.push(
                Diagnostic::new(file, t.pos, format!("unknown template \"{}\"", t.value))
                    .did_you_mean(&t.value, templates.names()),
            );
        }
    }
    out
}

/// The workflow that sends a code's welcome: triggered by an add through the
/// code, every time, one `send` on the code's channel.
pub fn welcome_workflow(way: &ContactWay, settings: &Settings) -> Option<Workflow> {
    let template = way.welcome.clone()?;
    let channel = channel_of(way, settings)?;
    Some(Workflow {
        name: format!("{WORKFLOW_PREFIX}{}", way.name),
        description: Some(format!("the welcome of contact way {}", way.name)),
        enabled: true,
        trigger: Trigger::ContactCreated {
            via: Some(Located::new(way.name.clone(), Pos::new(1, 1))),
        },
        audience: None,
        entry: Entry::EveryTime,
        steps: vec![Step {
            id: "welcome".into(),
            pos: template.pos,
            action: StepAction::Send(SendStep {
                channel: Located::new(channel.to_string(), template.pos),
                template,
                at: None,
                per_salesperson: None,
            }),
            window: None,
        }],
        exit_when: None,
        entry_existing: false,
        holdout: None,
        goal: None,
        exit_on_goal: true,
        throttle: None,
        file: way.file.clone(),
    })
}

/// Whether `at` is inside the code's online hours.
pub fn online(way: &ContactWay, settings: &Settings, at: DateTime<Utc>) -> bool {
    let Some((start, end)) = way.online_hours else {
        return true;
    };
    let t = at.with_timezone(&settings.timezone).time();
    if start < end {
        t >= start && t < end
    } else {
        t >= start || t < end
    }
}

/// The start of `at`'s day in the settings' time zone.
pub fn day_start(settings: &Settings, at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::TimeZone;
    let local = at.with_timezone(&settings.timezone).date_naive();
    settings
        .timezone
        .from_local_datetime(&local.and_time(NaiveTime::MIN))
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or(at)
}

/// Who is on the code now, as salesperson ids, and why (for `sync` and
/// `dry-run`). `adds_today`: adds through this code today per salesperson id.
pub fn members_now(
    way: &ContactWay,
    settings: &Settings,
    at: DateTime<Utc>,
    adds_today: &HashMap<String, u32>,
) -> (Vec<String>, String) {
    let adds = |id: &str| adds_today.get(id).copied().unwrap_or(0);
    if !online(way, settings, at) {
        let b: Vec<String> = way.backup.iter().map(|m| m.value.clone()).collect();
        return (b, "outside online hours: the backup staff".into());
    }
    let open: Vec<&str> = way
        .pool
        .iter()
        .map(|m| m.value.as_str())
        .filter(|id| way.daily_cap.is_none_or(|c| adds(id) < c))
        .collect();
    if open.is_empty() {
        let b: Vec<String> = way.backup.iter().map(|m| m.value.clone()).collect();
        return (
            b,
            "every pool member reached the daily cap: the backup staff".into(),
        );
    }
    match way.strategy {
        PoolStrategy::RoundRobin => (
            open.iter().map(|s| s.to_string()).collect(),
            "round_robin: the pool members under their cap".into(),
        ),
        PoolStrategy::LeastLoaded => {
            let least = open.iter().map(|id| adds(id)).min().unwrap_or(0);
            (
                open.iter()
                    .filter(|id| adds(id) == least)
                    .map(|s| s.to_string())
                    .collect(),
                format!("least_loaded: the pool members with the fewest adds today ({least})"),
            )
        }
    }
}

/// The WeCom userids of salesperson ids (those without one are left out).
pub fn userids(settings: &Settings, ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| {
            settings
                .teams
                .values()
                .flatten()
                .find(|s| &s.id == id)
                .and_then(|s| s.wecom_userid.clone())
        })
        .collect()
}

/// The salesperson id of a WeCom userid.
pub fn salesperson_of_userid(settings: &Settings, userid: &str) -> Option<String> {
    settings
        .teams
        .values()
        .flatten()
        .find(|s| s.wecom_userid.as_deref() == Some(userid))
        .map(|s| s.id.clone())
}

/// What a contact added through a code now gets (`dry-run` shows it: "a
/// contact added via NAME gets staff X, tags Y, welcome Z").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Preview {
    #[serde(rename = "contact_way")]
    pub name: String,
    pub channel: Option<String>,
    /// Salesperson ids on the code now ([`members_now`]).
    pub staff: Vec<String>,
    /// Why those (online hours, caps, strategy).
    pub why: String,
    pub tags: Vec<String>,
    pub welcome: Option<String>,
}

impl Preview {
    pub fn new(way: &ContactWay, settings: &Settings, staff: Vec<String>, why: String) -> Preview {
        Preview {
            name: way.name.clone(),
            channel: channel_of(way, settings).map(str::to_string),
            staff,
            why,
            tags: way.tags.clone(),
            welcome: way.welcome.as_ref().map(|w| w.value.clone()),
        }
    }

    /// One sentence; salespeople by id and name.
    pub fn describe(&self, settings: &Settings) -> String {
        let staff = if self.staff.is_empty() {
            "no staff (nobody can be on the code now)".to_string()
        } else {
            let names: Vec<String> = self
                .staff
                .iter()
                .map(
                    |id| match settings.salesperson(id).and_then(|s| s.name.as_deref()) {
                        Some(n) => format!("{id} {n}"),
                        None => id.clone(),
                    },
                )
                .collect();
            format!("staff {} ({})", names.join(", "), self.why)
        };
        let tags = if self.tags.is_empty() {
            "no tags".to_string()
        } else {
            format!("tags {}", self.tags.join(", "))
        };
        let welcome = match &self.welcome {
            Some(w) => format!("welcome {w}"),
            None => "no welcome".to_string(),
        };
        format!(
            "a contact added via {} gets {staff}, {tags}, {welcome}",
            self.name
        )
    }
}

/// WeCom's `type`: 1 for a code of one member in all, else 2.
pub fn wecom_type(way: &ContactWay) -> i64 {
    let mut all: Vec<&str> = way
        .pool
        .iter()
        .chain(&way.backup)
        .map(|m| m.value.as_str())
        .collect();
    all.sort();
    all.dedup();
    if all.len() == 1 { 1 } else { 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn way(src: &str) -> (Option<ContactWay>, Vec<Diagnostic>) {
        load_str(Path::new("contact_ways/douyin-0618.yaml"), src)
    }

    #[test]
    fn reads_a_code_and_reports_mistakes_with_places() {
        let (w, d) = way(
            "staff:\n  pool: [a, b]\n  strategy: least_loaded\n  backup: c\n  daily_cap: 2\n  online_hours: \"09:00-21:00\"\ntags: [douyin]\nwelcome: hi\nremark: 抖音\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let w = w.unwrap();
        assert_eq!(w.name, "douyin-0618");
        assert_eq!(w.strategy, PoolStrategy::LeastLoaded);
        assert_eq!(w.backup[0].value, "c");
        assert_eq!(wecom_type(&w), 2);
        let (_, d) = way(
            "staff:\n  pool: [a]\n  stratgy: round_robin\nremark: 一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十一\n",
        );
        let text: Vec<String> = d.iter().map(|d| d.headline()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("3:3") && t.contains("stratgy")),
            "{text:?}"
        );
        assert!(d.iter().any(|d| {
            d.suggestion
                .as_deref()
                .is_some_and(|s| s.contains("strategy"))
        }));
        assert!(
            text.iter()
                .any(|t| t.contains("4:9") && t.contains("at most 30")),
            "{text:?}"
        );
    }

    #[test]
    fn members_follow_caps_hours_and_strategy() {
        let (w, _) = way(
            "staff:\n  pool: [a, b]\n  strategy: least_loaded\n  backup: [c]\n  daily_cap: 2\n  online_hours: \"09:00-21:00\"\n",
        );
        let w = w.unwrap();
        let s = Settings::defaults(PathBuf::from("."));
        // 10:00 in Shanghai.
        let at = DateTime::parse_from_rfc3339("2026-06-18T02:00:00Z")
            .unwrap()
            .to_utc();
        let mut adds = HashMap::new();
        adds.insert("a".to_string(), 1);
        assert_eq!(members_now(&w, &s, at, &adds).0, vec!["b"]);
        adds.insert("b".to_string(), 1);
        assert_eq!(members_now(&w, &s, at, &adds).0, vec!["a", "b"]);
        adds.insert("a".to_string(), 2);
        adds.insert("b".to_string(), 2);
        assert_eq!(members_now(&w, &s, at, &adds).0, vec!["c"]);
        // 22:00 in Shanghai: backup only.
        let late = DateTime::parse_from_rfc3339("2026-06-18T14:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(members_now(&w, &s, late, &HashMap::new()).0, vec!["c"]);
        assert_eq!(
            day_start(&s, late).to_rfc3339(),
            "2026-06-17T16:00:00+00:00"
        );
    }
}
