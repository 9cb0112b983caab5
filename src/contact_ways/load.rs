//! Reading `contact_ways/NAME.yaml` files into [`ContactWay`]s, with every
//! problem at its place.

use std::path::{Path, PathBuf};

use chrono::NaiveTime;

use super::{ContactWay, PoolStrategy, REMARK_MAX_CHARS, STATE_MAX_CHARS};
use crate::diagnostics::{Diagnostic, Pos};
use crate::located::Located;
use crate::yaml::{self, Reader};

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
