//! What an assignment brings along: the WeCom transfer it calls for and the
//! notices telling salespeople about it.

use std::collections::HashMap;

use super::{Action, Planner, Reason};
use crate::assign::Pick;
use crate::contact::Contact;
use crate::workflow::{Step, Workflow};

impl Planner<'_> {
    /// The WeCom transfer an assignment of `c` from `previous` to
    /// `salesperson` calls for: when the contact has a WeCom external userid,
    /// the new salesperson a `wecom_userid` (other than the previous one's;
    /// without one the handover is a real follow-user), and the settings a
    /// wecom channel (the first by name). Decided from the store's facts
    /// and the transfers this run planned before, which it then counts.
    pub(super) fn transfer(
        &mut self,
        c: &Contact,
        previous: Option<&str>,
        salesperson: &str,
    ) -> Option<crate::engine::transfer::Transfer> {
        let userid = |id: &str| {
            self.settings
                .salesperson(id)
                .and_then(|p| p.wecom_userid.clone())
        };
        let takeover = userid(salesperson)?;
        let wanted = previous.and_then(userid).unwrap_or_default();
        if wanted == takeover {
            return None;
        }
        let channel = self
            .settings
            .channels
            .values()
            .find(|ch| ch.kind == crate::settings::ChannelKind::Wecom)?
            .name
            .clone();
        let ext = c
            .wecom_external_userid
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())?
            .to_string();
        let mut facts = self.wecom_facts.get(&ext).cloned().unwrap_or_default();
        if let Some(planned) = self.planned_transfers.get(&ext) {
            facts.started.extend(planned.iter().map(|at| (*at, true)));
            facts.started.sort();
        }
        let now = self.now.timestamp_millis();
        let verdict = crate::engine::transfer::decide(&facts, Some(&wanted), &takeover, now);
        let t = crate::engine::transfer::Transfer {
            channel,
            external_userid: ext,
            wanted,
            takeover,
            verdict,
        };
        if let Some(at) = t.queued_at_ms(now) {
            self.planned_transfers
                .entry(t.external_userid.clone())
                .or_default()
                .push(at);
        }
        Some(t)
    }

    /// The assignment notice telling `salesperson` about contact `c` (whose
    /// owner is still the previous one).
    pub(super) fn notice(
        &self,
        wf: &Workflow,
        c: &Contact,
        salesperson: &str,
        template: &str,
    ) -> Result<String, String> {
        let value = |id: &str| {
            self.settings
                .salesperson(id)
                .map(|s| s.template_value())
                .unwrap_or_else(|| serde_json::json!({ "id": id }))
        };
        let owner = value(salesperson);
        let previous = c.owner.as_deref().map(value);
        let ctx = crate::template::notice_context(
            c,
            &owner,
            previous.as_ref(),
            &wf.name,
            self.now,
            self.settings.timezone,
        );
        self.templates
            .render_notice(template, &ctx)
            .map_err(|e| e.to_string())
    }

    /// Decide an assign step for a contact not held out: pick a salesperson
    /// (round-robin, least loaded, by field), or wait for a place to free
    /// under `per_salesperson`; a new owner brings notices and a WeCom transfer.
    pub(super) fn plan_assign(
        &mut self,
        wf: &Workflow,
        step: &Step,
        c: &mut std::borrow::Cow<'_, Contact>,
        a: &crate::workflow::AssignStep,
    ) -> Assigned {
        let team = self
            .settings
            .teams
            .get(&a.team.value)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let cursor_before = self.assign.team_cursor.get(&a.team.value).copied();
        let key = (wf.name.clone(), step.id.clone());
        let capped = match a.per_salesperson {
            Some(rate) => crate::engine::caps::at_cap(
                self.assigned.get(&key).map(Vec::as_slice).unwrap_or(&[]),
                rate.count,
                self.now - rate.per.to_chrono(),
            ),
            None => HashMap::new(),
        };
        let capped_ids: std::collections::HashSet<String> = capped.keys().cloned().collect();
        let picked = self.assign.pick_capped(a, team, c, &capped_ids);
        // The whole team (or the matching salesperson) is at the
        // cap: the enrollment waits, not run, for the first place
        // to free, and is taken again in its turn.
        if let (Pick::TeamFull | Pick::NoMatch, Some(rate)) = (&picked, a.per_salesperson)
            && !capped.is_empty()
            && matches!(self.assign.clone().pick(a, team, c), Pick::Chosen(_))
        {
            let per = rate.per.to_chrono();
            let n = rate.count as usize;
            let until = capped
                .values()
                .map(|times| times[times.len() - n] + per)
                .min()
                .unwrap_or(self.now + per);
            return Assigned::WaitsForCap(until);
        }
        if let (Pick::Chosen(id), Some(_)) = (&picked, a.per_salesperson)
            && c.owner.as_deref() != Some(id.as_str())
        {
            self.assigned
                .entry(key)
                .or_default()
                .push((id.clone(), self.now));
        }
        Assigned::Decided(match picked {
            // The owner does not change: no reassignment, no notice.
            // Nothing is written, so the daemon's round-robin
            // position does not move; neither does the plan's.
            Pick::Chosen(id) if c.owner.as_deref() == Some(id.as_str()) => {
                match cursor_before {
                    Some(v) => {
                        self.assign.team_cursor.insert(a.team.value.clone(), v);
                    }
                    None => {
                        self.assign.team_cursor.remove(&a.team.value);
                    }
                }
                Action::Skip {
                    reason: Reason::AlreadyAssigned,
                }
            }
            Pick::Chosen(id) => {
                let notices = match &a.notify {
                    Some(n) => {
                        let others: Vec<&str> = if matches!(
                            a.strategy,
                            crate::workflow::Strategy::RoundRobin
                                | crate::workflow::Strategy::LeastLoaded
                        ) {
                            team.iter().map(|p| p.id.as_str()).collect()
                        } else {
                            vec![]
                        };
                        std::iter::once(id.as_str())
                            .chain(others)
                            .filter(|s| c.owner.as_deref() != Some(*s))
                            .map(|s| (s.to_string(), self.notice(wf, c, s, n.template_name())))
                            .collect()
                    }
                    None => Default::default(),
                };
                let previous = c.to_mut().owner.replace(id.clone());
                let transfer = self.transfer(c, previous.as_deref(), &id);
                Action::Assign {
                    salesperson: id,
                    previous,
                    notify: a.notify.as_ref().map(|n| n.channel.value.clone()),
                    notices,
                    transfer,
                }
            }
            Pick::AlreadyAssigned => Action::Skip {
                reason: Reason::AlreadyAssigned,
            },
            Pick::TeamFull => Action::Skip {
                reason: Reason::TeamFull,
            },
            Pick::NoMatch => Action::Skip {
                reason: Reason::NoMatchingSalesperson,
            },
        })
    }
}

/// What an assign step comes to.
// Returned and matched at once, never stored: boxing the action would cost
// an allocation per assignment for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Assigned {
    /// Assigned, or skipped with a reason.
    Decided(Action),
    /// Every place is taken under `per_salesperson`: the step waits until the first frees.
    WaitsForCap(chrono::DateTime<chrono::Utc>),
}
