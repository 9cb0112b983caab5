//! What a channel accepts from a message: Aliyun SMS template variables
//! (length, no URLs), attachments and salesperson notices.

use super::*;

/// Adds a did-you-mean to a missing `contact.X` variable.
/// Longest value of one Aliyun SMS template variable, in characters
/// (Aliyun refuses longer ones with `isv.PARAM_LENGTH_LIMIT`).
pub const SMS_PARAM_MAX_CHARS: usize = 35;

/// Whether `v` looks like it carries a link (Aliyun refuses links in
/// variables with `isv.PARAM_NOT_SUPPORT_URL`: they belong in the reviewed
/// template text).
pub fn has_url(v: &str) -> bool {
    let l = v.to_lowercase();
    l.contains("://") || l.contains("www.")
}

/// A send on an `aliyun_sms` channel: Aliyun sends only reviewed, fixed
/// templates with short variables, so the template maps named values into
/// them with `params:` (each rendered for the sample contact: at most
/// [`SMS_PARAM_MAX_CHARS`] characters, no link).
pub(super) fn check_sms_params(
    cx: &CheckContext,
    wf: &Workflow,
    send: &SendStep,
    out: &mut Vec<Diagnostic>,
) {
    let is_aliyun = cx
        .settings
        .channels
        .get(&send.channel.value)
        .is_some_and(|c| c.kind == crate::settings::ChannelKind::AliyunSms);
    let t = &send.template;
    if !is_aliyun || !cx.templates.contains(t) {
        return;
    }
    let file = &wf.file;
    if cx.templates.param_names(t).is_empty() {
        out.push(
            Diagnostic::new(
                file,
                t.pos,
                format!(
                    "template \"{}\" is sent on the aliyun_sms channel \"{}\" but has no params:",
                    t.value, send.channel.value
                ),
            )
            .with_suggestion(
                "Aliyun sends only its reviewed, fixed template text with short variables: map them in the template's front matter, e.g. `params: { name: \"{{contact.name}}\", city: \"{{default contact.city \\\"全国\\\"}}\" }`",
            ),
        );
        return;
    }
    let Ok(r) = render_sample(cx, t, Some(wf), &mut Vec::new()) else {
        // Reported where the template is rendered.
        return;
    };
    for (name, v) in &r.params {
        let n = v.chars().count();
        let problem = if n > SMS_PARAM_MAX_CHARS {
            Some(format!(
                "is {n} characters for a sample contact; Aliyun takes at most {SMS_PARAM_MAX_CHARS} per variable (isv.PARAM_LENGTH_LIMIT)"
            ))
        } else if has_url(v) {
            Some("holds a link; Aliyun refuses links in variables (isv.PARAM_NOT_SUPPORT_URL): put it in the reviewed template text".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            out.push(Diagnostic::new(
                file,
                t.pos,
                format!("template \"{}\": param \"{name}\" {p}", t.value),
            ));
        }
    }
}

/// A template with `attachments:` sent on a channel that is not WeCom (or a
/// `log` channel standing in for it): only
/// WeCom sends them, and dropping them would send something other than what
/// the preview shows (see `crate::attachments`).
pub(super) fn check_attachments_channel(
    cx: &CheckContext,
    wf: &Workflow,
    send: &SendStep,
    out: &mut Vec<Diagnostic>,
) {
    let Some(ch) = cx.settings.channels.get(&send.channel.value) else {
        return;
    };
    let t = &send.template;
    // A `log` channel may stand in for WeCom (the quick start): it writes
    // the attachments to the log with the text.
    if matches!(
        ch.kind,
        crate::settings::ChannelKind::Wecom | crate::settings::ChannelKind::Log
    ) || cx.templates.attachments_at(t).is_none()
    {
        return;
    }
    out.push(
        Diagnostic::new(
            &wf.file,
            t.pos,
            format!(
                "template \"{}\" has attachments, but channel \"{}\" is {}: only WeCom sends attachments",
                t.value,
                send.channel.value,
                ch.kind.name()
            ),
        )
        .with_suggestion(
            "send this template on a wecom channel, or use a template without attachments: (put a link in the text instead)",
        ),
    );
}

/// An assignment notice's template exists and renders for the sample
/// contact and salesperson.
pub(super) fn check_notice(
    cx: &CheckContext,
    file: &std::path::Path,
    n: &Notify,
    out: &mut Vec<Diagnostic>,
) {
    let name = n.template_name();
    let pos = n.template.as_ref().map_or(n.channel.pos, |t| t.pos);
    if !cx.templates.contains(name) && name != template::NOTICE_TEMPLATE {
        if cx.template_files.contains(name) {
            return; // reported by the loader
        }
        out.push(
            Diagnostic::new(file, pos, format!("no template \"{name}\" for the notice"))
                .did_you_mean(name, cx.template_files),
        );
        return;
    }
    // A notice is one text app message: attachments would not reach the
    // salesperson, and the preview would show what is not sent.
    if let Some(at) = cx.templates.attachments_at(name) {
        out.push(
            Diagnostic::new(
                file,
                pos,
                format!(
                    "notice template \"{name}\" has attachments (templates/{name}.hbs line {}), but a notice to a salesperson is sent as text only",
                    at.line
                ),
            )
            .with_suggestion(
                "use a notice template without attachments: (put the link in its text), or send the attachment to the contact with a send: step",
            ),
        );
    }
    let ctx = sample_context(cx, "sample-workflow");
    let owner = ctx.get("owner").cloned().unwrap_or_default();
    let mut ctx = ctx;
    if let Some(m) = ctx.as_object_mut() {
        m.insert("previous_owner".into(), owner);
    }
    if let Err(e) = cx.templates.render_notice(name, &ctx) {
        out.push(render_diag(
            cx,
            Diagnostic::new(
                file,
                pos,
                format!("notice template \"{name}\" does not render for a sample contact: {e}"),
            ),
            &e,
        ));
    }
}
