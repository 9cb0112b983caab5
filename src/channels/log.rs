//! The `log` channel: nothing leaves the machine. The message is written to
//! the log; the outbox row (status `sent`) is its record in the store.

use futures::future::BoxFuture;

use super::{Channel, Delivery, Exchange, OutMessage};
use crate::logging::LogFormat;

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
pub struct LogChannel {
    /// The daemon's log format: a JSON line keeps a multi-line body as it
    /// is; the text format puts it on one line ([`one_line`]).
    pub format: LogFormat,
}

impl Channel for LogChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        let json = self.format == LogFormat::Json;
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
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_multi_line_body_is_one_line() {
        assert_eq!(super::one_line("您好\n周一见\\"), "您好\\n周一见\\\\");
        assert_eq!(super::one_line("plain"), "plain");
    }

    /// What a channel writes under a JSON subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn body_logged(format: LogFormat) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let msg = OutMessage {
            id: "m1".into(),
            workflow: "w".into(),
            contact_id: "c1".into(),
            step_id: "1".into(),
            channel: "log".into(),
            to: "c1".into(),
            subject: None,
            body: "您好\n周一见".into(),
            contact: serde_json::json!({}),
            attempt: 1,
            payload: serde_json::json!({}),
            in_doubt: false,
        };
        let channel = LogChannel { format };
        tracing::subscriber::with_default(subscriber, || {
            futures::executor::block_on(channel.exchange(&msg))
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        line["fields"]["body"].as_str().unwrap().to_string()
    }

    /// The format is the channel's (handed down from `--log-format` when
    /// the daemon builds its channels), not a process-wide switch.
    #[test]
    fn the_channel_writes_in_the_format_it_was_built_with() {
        assert_eq!(body_logged(LogFormat::Json), "您好\n周一见");
        assert_eq!(body_logged(LogFormat::Text), "您好\\n周一见");
    }
}
