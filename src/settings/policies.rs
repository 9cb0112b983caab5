//! `policies:` in `nurture.yaml`: quiet hours, the frequency cap and the
//! blast guard, and how they are read.

use crate::diagnostics::Diagnostic;
use crate::duration::Duration;
use crate::yaml::{Node, Reader};

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

pub(super) fn read_policies(r: &mut Reader, node: &Node, p: &mut Policies) {
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
