//! The `log` channel: nothing leaves the machine. The message is written to
//! the log; the outbox row (status `sent`) is its record in the store.

use futures::future::BoxFuture;

use super::{Channel, Delivery, Exchange, OutMessage};

/// Whether the daemon logs JSON (`--log-format json`): a JSON line keeps a
/// multi-line body as it is; the text format escapes its line breaks.
pub static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A body on one line for the text log: `\` as `\\`, line breaks as `\n`
/// and `\r`, so one message is always one line.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\n', '\r', '\\']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Writes each message with `tracing::info!` (target `nurture::channel::log`).
#[derive(Debug, Clone, Default)]
pub struct LogChannel;

impl Channel for LogChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        let json = JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed);
        let (subject, body): (std::borrow::Cow<str>, std::borrow::Cow<str>) = if json {
            (
                msg.subject.as_deref().unwrap_or("").into(),
                msg.body.as_str().into(),
            )
        } else {
            (
                one_line(msg.subject.as_deref().unwrap_or("")),
                one_line(&msg.body),
            )
        };
        // A WeCom message's attachments (the log channel standing in for
        // WeCom), one summary each.
        let attachments: Vec<String> = crate::channels::wecom::media::of_payload(&msg.payload)
            .unwrap_or_default()
            .iter()
            .map(crate::attachments::Attachment::summary)
            .collect();
        if attachments.is_empty() {
            tracing::info!(
                target: "nurture::channel::log",
                id = %msg.id,
                channel = %msg.channel,
                to = %msg.to,
                subject = %subject,
                body = %body,
                "message"
            );
        } else {
            tracing::info!(
                target: "nurture::channel::log",
                id = %msg.id,
                channel = %msg.channel,
                to = %msg.to,
                subject = %subject,
                body = %body,
                attachments = %attachments.join(" | "),
                "message"
            );
        }
        Box::pin(std::future::ready(Exchange {
            delivery: Delivery::Delivered { provider_id: None },
            answer: Some("written to the log (target nurture::channel::log)".into()),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_multi_line_body_is_one_line() {
        assert_eq!(super::one_line("您好\n周一见\\"), "您好\\n周一见\\\\");
        assert_eq!(super::one_line("plain"), "plain");
    }
}
