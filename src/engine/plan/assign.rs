//! What an assignment brings along: the WeCom transfer it calls for and the
//! notices telling salespeople about it.

use super::Planner;
use crate::contact::Contact;
use crate::workflow::Workflow;

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
}
