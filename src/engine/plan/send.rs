//! One message of a send step: consent, address, the frequency cap,
//! rendering, quiet hours, throttle and per-salesperson pacing.

use chrono::{DateTime, Utc};

use super::{Action, Planner, Reason};
use crate::contact::{Contact, TriggerEvent};
use crate::policy;
use crate::template::render_context;
use crate::workflow::Workflow;

impl Planner<'_> {
    /// Messages planned in this run for `contact_id` inside the frequency
    /// cap's window ending now.
    fn planned_in_window(&self, contact_id: &str) -> u32 {
        let Some(times) = self.planned_sends.get(contact_id) else {
            return 0;
        };
        let from = self
            .settings
            .policies
            .frequency_cap
            .as_ref()
            .map(|c| self.now - c.per.to_chrono());
        times
            .iter()
            .filter(|t| from.is_none_or(|f| **t > f))
            .count() as u32
    }

    /// When a contact over the frequency cap may be sent to again: the
    /// oldest message counted (the store's, or this run's) leaves the window.
    pub(super) fn cap_frees(
        &self,
        contact_id: &str,
        cap: crate::settings::FrequencyCap,
    ) -> DateTime<Utc> {
        let per = cap.per.to_chrono();
        let from = self.now - per;
        let planned = self
            .planned_sends
            .get(contact_id)
            .and_then(|v| v.iter().filter(|t| **t > from).min().copied());
        let stored = self
            .cap_oldest
            .get(contact_id)
            .copied()
            .filter(|t| *t > from);
        match (stored, planned) {
            (Some(a), Some(b)) => a.min(b) + per,
            (Some(a), None) | (None, Some(a)) => a + per,
            // Nothing known in the window (a cap of 0): look again a window later.
            (None, None) => self.now + per,
        }
    }

    /// Decide one message: consent, address, cap, rendering, quiet hours.
    pub(super) fn plan_send(
        &mut self,
        wf: &Workflow,
        step_id: &str,
        c: &Contact,
        send: &crate::workflow::SendStep,
        recent: u32,
        trigger: Option<&TriggerEvent>,
    ) -> Action {
        let channel = send.channel.value.as_str();
        let template = send.template.value.as_str();
        if wf.held_out(&c.id) {
            return Action::Skip {
                reason: Reason::Holdout,
            };
        }
        let Some(ch) = self.settings.channels.get(channel) else {
            // `validate` refuses unknown channels, so this only happens on a broken reload.
            return Action::Skip {
                reason: Reason::TemplateError(format!("unknown channel \"{channel}\"")),
            };
        };
        if !policy::consents(c, channel) {
            return Action::Skip {
                reason: Reason::Unsubscribed,
            };
        }
        // A log or webhook channel reaches the contact by id, unless its
        // `address:` option names the field it stands in for (a `log` channel
        // named `sms` in a quick start previews real phone numbers).
        let field = ch
            .kind
            .address_field()
            .or_else(|| ch.options.get("address").map(|a| a.value.as_str()));
        let to = match field {
            Some("phone") => c.phone.clone(),
            Some("email") => c.email.clone(),
            // A customer whose WeCom relationship ended (marked by the
            // callback) cannot be reached there any more.
            Some("wecom_external_userid") => c
                .wecom_external_userid
                .clone()
                .filter(|_| !c.attrs.contains_key(crate::store::wecom::ATTR_DELETED_BY)),
            _ => Some(c.id.clone()),
        };
        let Some(to) = to.filter(|t| !t.trim().is_empty()) else {
            return Action::Skip {
                reason: Reason::NoAddress,
            };
        };
        // The address in the provider's form; one it would refuse is shown
        // as a skip, not sent to be refused.
        let to = match crate::channels::address::into_channel_form(ch.kind, to) {
            Ok(to) => to,
            Err(why) => {
                return Action::Skip {
                    reason: Reason::BadAddress(Box::new(why)),
                };
            }
        };
        let planned = self.planned_in_window(&c.id);
        if policy::over_cap(
            self.settings.policies.frequency_cap.as_ref(),
            recent + planned,
        ) {
            return Action::Skip {
                reason: Reason::FrequencyCap,
            };
        }
        let tz = policy::contact_tz(c, self.settings);
        let owner = c
            .owner
            .as_deref()
            .and_then(|id| self.settings.salesperson(id))
            .map(|s| s.template_value());
        let mut ctx = render_context(c, owner.as_ref(), &wf.name, self.now, tz);
        if let (Some(e), Some(m)) = (trigger, ctx.as_object_mut()) {
            m.insert("event".into(), e.template_value(tz));
        }
        let ctx = handlebars::Context::from(ctx);
        let rendered = match self
            .templates
            .render_limited(template, &ctx, ch.kind.message_limit())
        {
            Ok(r) => r,
            Err(e) => {
                return Action::Skip {
                    reason: Reason::TemplateError(e.to_string()),
                };
            }
        };
        // Only the frequency cap reads these: without one, a million planned
        // sends would be remembered for nothing (the dry-run never forgets).
        if self.settings.policies.frequency_cap.is_some() {
            self.planned_sends
                .entry(c.id.clone())
                .or_default()
                .push(self.now);
        }
        // `at: "10:00"`: the next such local time; then quiet hours.
        let base = match send.at {
            Some(t) => crate::workflow::next_local_time(t, self.now, tz),
            None => self.now,
        };
        let mut at = policy::deliverable_at(self.settings.policies.quiet_hours.as_ref(), base, tz);
        // `throttle: N/PERIOD`: one message every PERIOD/N, in plan order.
        if let Some(rate) = wf.throttle {
            let every = rate.per.to_chrono() / rate.count as i32;
            if let Some(last) = self.throttle_last.get(&wf.name) {
                let slot = at.max(*last + every);
                at = policy::deliverable_at(self.settings.policies.quiet_hours.as_ref(), slot, tz);
            }
            self.throttle_last.insert(wf.name.clone(), at);
        }
        // `per_salesperson: N/PERIOD`: at most N of the step's messages per
        // owner in any PERIOD; the excess goes out as places free, in order.
        if let (Some(rate), Some(owner)) = (send.per_salesperson, c.owner.as_deref()) {
            let sent = self
                .owner_sends
                .entry((wf.name.clone(), step_id.to_string()))
                .or_default();
            let mine: Vec<DateTime<Utc>> = sent
                .iter()
                .filter(|(o, _)| o == owner)
                .map(|(_, t)| *t)
                .collect();
            at = crate::engine::caps::owner_slot(
                &mine,
                at,
                rate,
                self.settings.policies.quiet_hours.as_ref(),
                tz,
            );
            sent.push((owner.to_string(), at));
        }
        Action::Send {
            channel: channel.to_string(),
            to,
            subject: rendered.subject,
            body: rendered.body,
            at,
            tz,
            attachments: rendered.attachments,
        }
    }
}
