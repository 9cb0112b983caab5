//! WeCom transfers (issue 9, items 1 and 10; reference §1.5): the rules,
//! shared by the planner, which decides a transfer when an `assign` changes
//! the owner of a WeCom customer (`engine::transfer` loads the facts), and
//! the channel, which checks the same verdict ([`held_by_limits`]) once more
//! at delivery, as the last guard: the store may change between plan and
//! send. WeCom limits transfers: at most 2 of a customer in 90 days
//! (40128), none while one waits for its takeover (24 h; 40129), and a
//! resigned member's customers only within a year of leaving. Pure: the
//! facts come in as values, so the dry-run shows what the daemon then does.

use crate::store::wecom::resigned::Resigned;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Resigned members' customers can be handed over within a year of leaving.
pub const RESIGNED_WITHIN_MS: i64 = 365 * DAY_MS;
pub const RESIGNED_WITHIN: &str = "a year";
/// At most 2 transfers per customer in 90 days (errcode 40128).
pub const TRANSFERS_PER_WINDOW: i64 = 2;
pub const TRANSFER_WINDOW_MS: i64 = 90 * DAY_MS;
/// WeCom takes a customer over 24 h after the transfer started; another
/// transfer before that is refused (40129, a transfer is in progress).
pub const TAKEOVER_AFTER_MS: i64 = DAY_MS;

/// Which of WeCom's transfer limits holds a transfer back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// At most 2 transfers per customer in 90 days (40128).
    TwoPer90Days,
    /// A transfer of the customer is waiting for its takeover (24 h; 40129).
    TakeoverPending,
    /// A resigned member's customers only within a year of leaving.
    ResignedWithinAYear,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::TwoPer90Days => "2_per_90_days",
            Limit::TakeoverPending => "takeover_after_24h",
            Limit::ResignedWithinAYear => "resigned_within_a_year",
        }
    }
}

/// A transfer WeCom's limits hold back now: which limit, when it frees up
/// (ms; `None`: never), and the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub limit: Limit,
    pub frees_at: Option<i64>,
    pub reason: String,
}

/// Whether WeCom's limits hold a transfer of the customer back at `now_ms`:
/// `started` are its transfers in the last 90 days (started ms, still
/// waiting), `resigned` the member who left it, if any. A waiting transfer
/// younger than 24 h defers the new one until its takeover; 2 in 90 days
/// refuse it until the older of them is 90 days old; a resigned handover
/// more than a year after leaving never frees up.
pub fn held_by_limits(
    started: &[(i64, bool)],
    resigned: Option<&Resigned>,
    now_ms: i64,
) -> Option<Held> {
    if let Some(Resigned {
        handover_userid,
        dimission_ms: Some(left),
    }) = resigned
        && now_ms - left > RESIGNED_WITHIN_MS
    {
        return Some(Held {
            limit: Limit::ResignedWithinAYear,
            frees_at: None,
            reason: format!(
                "{handover_userid} left more than {RESIGNED_WITHIN} ago: WeCom hands over a resigned member's customers only within {RESIGNED_WITHIN} of leaving"
            ),
        });
    }
    let recent: Vec<i64> = started
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at > now_ms - TRANSFER_WINDOW_MS)
        .collect();
    if recent.len() as i64 >= TRANSFERS_PER_WINDOW {
        // The window frees a place when the oldest counted transfer leaves it.
        let frees = recent[recent.len() - TRANSFERS_PER_WINDOW as usize] + TRANSFER_WINDOW_MS;
        return Some(Held {
            limit: Limit::TwoPer90Days,
            frees_at: Some(frees),
            reason: format!(
                "WeCom allows {TRANSFERS_PER_WINDOW} transfers of a customer in 90 days and this one had {} (errcode 40128): not transferred; a transfer is possible again from {}",
                recent.len(),
                when(frees)
            ),
        });
    }
    if let Some(at) = started
        .iter()
        .filter(|(at, waiting)| *waiting && now_ms - at < TAKEOVER_AFTER_MS)
        .map(|(at, _)| *at)
        .max()
    {
        let frees = at + TAKEOVER_AFTER_MS;
        return Some(Held {
            limit: Limit::TakeoverPending,
            frees_at: Some(frees),
            reason: format!(
                "a transfer of this customer started at {} and WeCom takes over only after 24 h (errcode 40129 before then): deferred until {}",
                when(at),
                when(frees)
            ),
        });
    }
    None
}

/// A time for people, in UTC to the minute.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// For `dry-run --explain`: WeCom's transfer limits on the customer `ext`
/// at `now_ms`, with the verdict the channel checks before a transfer
/// ([`held_by_limits`]): `started` its transfers in the last 90 days,
/// `left` the member who left it. `None` when neither holds anything.
pub fn explain_limits(
    ext: &str,
    started: &[(i64, bool)],
    left: Option<&Resigned>,
    now_ms: i64,
) -> Option<String> {
    if started.is_empty() && left.is_none() {
        return None;
    }
    let mut out = format!(
        "WeCom transfers of {ext}: {} in the last 90 days (at most {TRANSFERS_PER_WINDOW})",
        started.len()
    );
    if let Some(r) = left {
        out.push_str(&format!(
            "; held by {} who left{}",
            r.handover_userid,
            r.dimission_ms
                .map(|t| format!(" at {}", when(t)))
                .unwrap_or_default()
        ));
    }
    out.push('\n');
    match held_by_limits(started, left, now_ms) {
        Some(h) => out.push_str(&format!(
            "  a transfer now is held by limit {}{}: {}\n",
            h.limit.as_str(),
            h.frees_at
                .map(|t| format!(" (frees up {})", when(t)))
                .unwrap_or_else(|| " (never frees up)".into()),
            h.reason
        )),
        None => out.push_str("  a transfer now is within WeCom's limits\n"),
    }
    Some(out)
}

/// What the store says about one customer, for a transfer decision.
pub use crate::store::plan_reads::TransferFacts as Facts;

/// Who hands the customer over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// A standing follow-user (`note`: why not the previous owner).
    Member {
        userid: String,
        note: Option<String>,
    },
    /// A member who left, with the resigned transfer.
    Resigned { userid: String },
    /// nurture has no relationship rows of the customer yet: the channel
    /// asks WeCom for its follow-users (`externalcontact/get`) at delivery.
    AtDelivery,
}

/// The plan's verdict on a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Queued now.
    Now { from: Handover },
    /// Queued, to go out at `until_ms`: a transfer started at `started_ms`
    /// waits for its takeover (24 h; WeCom answers 40129 before then).
    Deferred {
        from: Handover,
        until_ms: i64,
        started_ms: i64,
    },
    /// The takeover member already is a standing follow-user: nothing to move.
    NotNeeded,
    /// Not queued: `limit` (none: no relationship stands to hand it over)
    /// holds it until `frees_at` (`None`: never).
    Refused {
        limit: Option<Limit>,
        frees_at: Option<i64>,
        reason: String,
    },
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Now { .. } => "queued",
            Verdict::Deferred { .. } => "deferred",
            Verdict::NotNeeded => "not_needed",
            Verdict::Refused { .. } => "refused",
        }
    }
}

/// A transfer an `assign` step calls for, as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The wecom channel (the first by name).
    pub channel: String,
    pub external_userid: String,
    /// The previous owner's `wecom_userid` ("" without one): the outbox
    /// payload's `handover_userid`, the channel's first choice.
    pub wanted: String,
    pub takeover: String,
    pub verdict: Verdict,
}

impl Transfer {
    /// When the outbox row may go out; `None`: nothing is queued.
    pub fn queued_at_ms(&self, now_ms: i64) -> Option<i64> {
        match &self.verdict {
            Verdict::Now { .. } => Some(now_ms),
            Verdict::Deferred { until_ms, .. } => Some(*until_ms),
            Verdict::NotNeeded | Verdict::Refused { .. } => None,
        }
    }

    /// The handover member in words.
    fn handover_words(&self) -> String {
        let from = match &self.verdict {
            Verdict::Now { from } | Verdict::Deferred { from, .. } => from,
            _ => return String::new(),
        };
        match from {
            Handover::Member { userid, .. } => format!(" from {userid}"),
            Handover::Resigned { userid } => {
                format!(" from {userid} (left the company; the resigned transfer)")
            }
            Handover::AtDelivery => " from a follow-user WeCom lists at delivery".to_string(),
        }
    }

    /// The transfer and its verdict in words (the dry-run row, the outbox
    /// row's body, the step's detail when refused).
    pub fn describe(&self) -> String {
        let (ext, to) = (&self.external_userid, &self.takeover);
        match &self.verdict {
            Verdict::Now { .. } => {
                format!(
                    "transfer of {ext}{} to {to}: queued now",
                    self.handover_words()
                )
            }
            Verdict::Deferred {
                until_ms,
                started_ms,
                ..
            } => format!(
                "transfer of {ext}{} to {to}: deferred until {}, a transfer started at {} waits for takeover (WeCom takes over after 24 h; errcode 40129 before then)",
                self.handover_words(),
                when(*until_ms),
                when(*started_ms)
            ),
            Verdict::NotNeeded => format!(
                "no transfer of {ext} to {to}: {to} already is a WeCom follow-user of the customer"
            ),
            Verdict::Refused { reason, .. } => {
                format!("transfer of {ext} to {to}: refused, {reason}")
            }
        }
    }
}

impl Transfer {
    /// The handover member as the row shows it (`None`: picked at delivery).
    fn handover_userid(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Now { from } | Verdict::Deferred { from, .. } => match from {
                Handover::Member { userid, .. } | Handover::Resigned { userid } => Some(userid),
                Handover::AtDelivery => None,
            },
            _ => None,
        }
    }

    /// The transfer in a dry-run JSON row: who, the verdict, when it goes
    /// out or frees up (`until`; absent: now, or never), and in words.
    pub fn to_json(&self, tz: chrono_tz::Tz) -> serde_json::Value {
        let t = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map(|t| {
                t.with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
        };
        let until = match &self.verdict {
            Verdict::Deferred { until_ms, .. } => t(*until_ms),
            Verdict::Refused { frees_at, .. } => frees_at.and_then(t),
            _ => None,
        };
        let mut v = serde_json::json!({
            "channel": self.channel,
            "external_userid": self.external_userid,
            "to": self.takeover,
            "verdict": self.verdict.as_str(),
            "reason": self.describe(),
        });
        if let Some(from) = self.handover_userid() {
            v["from"] = from.into();
        }
        if let Some(u) = until {
            v["until"] = u.into();
        }
        if let Verdict::Refused { limit: Some(l), .. } = &self.verdict {
            v["limit"] = l.as_str().into();
        }
        v
    }
}

/// Decides a transfer of the customer with `facts` to `takeover` at
/// `now_ms`, in the channel's order: WeCom's limits first (with a resigned
/// handover other than the takeover member), then who hands over: the
/// member who left (resigned transfer), else the previous owner `wanted`
/// when a standing follow-user, else the follow-user who added the customer
/// most recently ([`super::sender::handover`], the channel's own
/// choice); no transfer when the takeover member already stands.
pub fn decide(facts: &Facts, wanted: Option<&str>, takeover: &str, now_ms: i64) -> Verdict {
    let left = facts
        .resigned
        .as_ref()
        .filter(|r| r.handover_userid != takeover);
    let from = match left {
        Some(r) => Ok(Some(Handover::Resigned {
            userid: r.handover_userid.clone(),
        })),
        None if facts.relationships.is_empty() => Ok(Some(Handover::AtDelivery)),
        None => super::sender::handover(
            wanted.filter(|w| !w.is_empty()),
            takeover,
            &facts.relationships,
        )
        .map(|s| {
            s.map(|s| Handover::Member {
                userid: s.userid,
                note: s.note,
            })
        }),
    };
    // A takeover member who already stands needs no transfer, whatever
    // the limits say (nothing is queued, so the channel never asks).
    if let Ok(None) = from {
        return Verdict::NotNeeded;
    }
    if let Some(h) = held_by_limits(&facts.started, left, now_ms) {
        return match (h.limit, h.frees_at, from) {
            (Limit::TakeoverPending, Some(until_ms), Ok(Some(from))) => Verdict::Deferred {
                from,
                until_ms,
                started_ms: until_ms - TAKEOVER_AFTER_MS,
            },
            _ => Verdict::Refused {
                limit: Some(h.limit),
                frees_at: h.frees_at,
                reason: h.reason,
            },
        };
    }
    match from {
        Ok(Some(from)) => Verdict::Now { from },
        Ok(None) => Verdict::NotNeeded,
        Err(reason) => Verdict::Refused {
            limit: None,
            frees_at: None,
            reason,
        },
    }
}

#[cfg(test)]
mod tests;
