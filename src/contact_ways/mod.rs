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
//! Who is on the code now ([`members_now`]): the pool members
//! inside online hours and under their daily cap; with `round_robin` all of
//! them (WeCom hands the adds of a multi-member code out among them), with
//! `least_loaded` only those with the fewest adds today. Nobody left: the
//! backup members. A code whose files names one member in all is a
//! single-member code (`type` 1), otherwise multi-member (`type` 2); WeCom
//! does not let a code change its type, so `sync` deletes and re-creates one
//! whose type would change.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::NaiveTime;

use crate::diagnostics::{Diagnostic, Pos};
use crate::settings::{ChannelKind, Settings};
use crate::template::Templates;
use crate::workflow::model::{Entry, Located, SendStep, Step, StepAction, Trigger, Workflow};

mod load;
mod members;

pub use load::{files, load_dir, load_str};
pub use members::{
    Preview, day_start, members_now, online, salesperson_of_userid, userids, wecom_type,
};

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

#[cfg(test)]
mod tests;
