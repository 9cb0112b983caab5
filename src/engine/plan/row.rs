//! A planned step as the dry-run prints it: one flat row (JSON, CSV, table),
//! in the output contract's field order.

use super::*;

/// A planned step as one flat JSON object, in the SPEC's field order.
#[derive(Serialize)]
pub struct RowJson<'a> {
    pub workflow: &'a str,
    pub contact_id: &'a str,
    pub step: &'a str,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salesperson: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A `wait_until` step ended: `then` (the event came) or `else` (timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<&'static str>,
    /// The arm a split chose (`holdout` at step `@holdout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm: Option<&'a str>,
    /// The attributes a `set:` step changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<&'a std::collections::BTreeMap<String, serde_json::Value>>,
    /// The JSON body a `webhook:` step posts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a serde_json::Value>,
    /// What a `webhook:` step would store from the answer: attribute → JSON
    /// pointer (the answer is not known before the call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_store: Option<&'a std::collections::BTreeMap<String, String>>,
    /// A WeCom message's attachments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<&'a [crate::attachments::Attachment]>,
    /// A tag step's wecom channels that mark the corp tags too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wecom: Option<&'a [String]>,
    /// An assign step's WeCom transfer and its verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<serde_json::Value>,
}

impl PlannedStep {
    /// The row as JSON. `when` is the moment the plan is made; every row
    /// carries the time it happens (`at`): a message's is when it may go
    /// out (after quiet hours), in the contact's time zone.
    pub fn to_json_row(&self, settings_tz: Tz, when: DateTime<Utc>) -> RowJson<'_> {
        let mut r = RowJson {
            workflow: &self.workflow,
            contact_id: &self.contact_id,
            step: &self.step,
            action: self.action.name(),
            channel: None,
            to: None,
            subject: None,
            body: None,
            at: Some(secs(when.with_timezone(&settings_tz))),
            salesperson: None,
            notify: None,
            add: None,
            remove: None,
            until: None,
            reason: None,
            branch: None,
            arm: None,
            set: None,
            payload: None,
            would_store: None,
            attachments: None,
            wecom: None,
            transfer: None,
        };
        match &self.action {
            Action::Send {
                channel,
                to,
                subject,
                body,
                at,
                tz,
                attachments,
            } => {
                r.channel = Some(channel);
                r.to = Some(to);
                r.subject = subject.as_deref();
                r.body = Some(body);
                if !attachments.is_empty() {
                    r.attachments = Some(attachments);
                }
                r.at = Some(secs(at.with_timezone(tz)));
            }
            Action::Assign {
                salesperson,
                notify,
                notices,
                transfer,
                ..
            } => {
                r.transfer = transfer.as_ref().map(|t| t.to_json(settings_tz));
                r.salesperson = Some(salesperson);
                r.notify = notify.as_deref();
                match notices.get(salesperson) {
                    Some(Ok(b)) => r.body = Some(b),
                    // The assignment happens; the notice does not.
                    Some(Err(e)) => {
                        r.reason = Some(format!("notice not sent: template_error: {e}"))
                    }
                    None => {}
                }
            }
            Action::Tag { add, remove, wecom } => {
                r.add = Some(add);
                r.remove = Some(remove);
                if !wecom.is_empty() {
                    r.wecom = Some(wecom);
                }
            }
            Action::Wait { until } => r.until = Some(secs(until.with_timezone(&settings_tz))),
            Action::Split { arm } => r.arm = Some(arm),
            Action::Set { values } => r.set = Some(values),
            Action::Webhook {
                channel,
                body,
                store,
            } => {
                r.channel = Some(channel);
                r.payload = Some(body);
                r.would_store = (!store.is_empty()).then_some(store);
            }
            Action::Notify {
                salesperson,
                channel,
                body,
            } => {
                r.salesperson = Some(salesperson);
                r.notify = Some(channel);
                match body {
                    Ok(b) => r.body = Some(b),
                    Err(e) => r.reason = Some(format!("notice not sent: template_error: {e}")),
                }
            }
            Action::WaitEnded { met, why } => {
                r.branch = Some(if *met { "then" } else { "else" });
                r.reason = Some(why.clone());
            }
            Action::Exit { reason } | Action::Skip { reason } => {
                r.reason = Some(reason.to_string())
            }
        }
        r
    }
}

/// A time as RFC 3339 to the second: what people read, never nanoseconds.
pub(super) fn secs<T: chrono::TimeZone>(t: DateTime<T>) -> String
where
    T::Offset: std::fmt::Display,
{
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}
