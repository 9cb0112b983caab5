//! The `log` channel: nothing leaves the machine. The message is written to
//! the log; the outbox row (status `sent`) is its record in the store.

use futures::future::BoxFuture;

use super::{Channel, Delivery, Exchange, OutMessage};

/// Writes each message with `tracing::info!` (target `nurture::channel::log`).
#[derive(Debug, Clone, Default)]
pub struct LogChannel;

impl Channel for LogChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        tracing::info!(
            target: "nurture::channel::log",
            id = %msg.id,
            channel = %msg.channel,
            to = %msg.to,
            subject = msg.subject.as_deref().unwrap_or(""),
            body = %msg.body,
            "message"
        );
        Box::pin(std::future::ready(Exchange {
            delivery: Delivery::Delivered { provider_id: None },
            answer: Some("written to the log (target nurture::channel::log)".into()),
        }))
    }
}
