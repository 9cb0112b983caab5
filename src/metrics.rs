//! Prometheus metrics of the daemon, served at `GET /metrics`.
//!
//! One process-wide set: the scheduler, the delivery worker and the API record
//! into it; `render` writes the text exposition format.

use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    /// Event-log entries processed, by kind.
    pub events: Family<Labels, Counter>,
    /// Enrollments started, ended, by workflow and what happened.
    pub enrollments: Family<Labels, Counter>,
    /// Delivery attempts by channel and outcome (sent, retry, dead, cancelled).
    pub sends: Family<Labels, Counter>,
    /// Steps skipped at run time, by workflow and reason code.
    pub skips: Family<Labels, Counter>,
    /// Messages dead-lettered, by workflow and reason class.
    pub dead_letters: Family<Labels, Counter>,
    /// Messages cancelled before delivery, by workflow and reason.
    pub cancelled: Family<Labels, Counter>,
    /// Messages waiting in the outbox.
    pub queue_depth: Gauge,
    /// Seconds from a message being queued to the provider accepting it, by channel.
    pub delivery_latency: Family<Labels, Histogram>,
    /// Seconds a provider call took, by channel.
    pub provider_latency: Family<Labels, Histogram>,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nurture");
        let events = Family::<Labels, Counter>::default();
        let enrollments = Family::<Labels, Counter>::default();
        let sends = Family::<Labels, Counter>::default();
        let skips = Family::<Labels, Counter>::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let cancelled = Family::<Labels, Counter>::default();
        let queue_depth = Gauge::default();
        let delivery_latency =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let provider_latency =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register("events", "Event-log entries processed", events.clone());
        registry.register(
            "enrollments",
            "Enrollments by workflow and outcome",
            enrollments.clone(),
        );
        registry.register(
            "sends",
            "Delivery attempts by channel and outcome",
            sends.clone(),
        );
        registry.register(
            "skips",
            "Steps skipped at run time by workflow and reason",
            skips.clone(),
        );
        registry.register(
            "messages_dead",
            "Messages dead-lettered by workflow and reason",
            dead_letters.clone(),
        );
        registry.register(
            "messages_cancelled",
            "Messages cancelled before delivery by workflow and reason",
            cancelled.clone(),
        );
        registry.register(
            "outbox_queue_depth",
            "Messages waiting in the outbox",
            queue_depth.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From queued to accepted by the provider",
            delivery_latency.clone(),
        );
        registry.register(
            "provider_latency_seconds",
            "Duration of provider calls",
            provider_latency.clone(),
        );
        Metrics {
            registry,
            events,
            enrollments,
            sends,
            skips,
            dead_letters,
            cancelled,
            queue_depth,
            delivery_latency,
            provider_latency,
        }
    }

    /// Count one delivery attempt.
    pub fn send(&self, channel: &str, outcome: &'static str) {
        self.sends
            .get_or_create(&vec![
                ("channel", channel.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn event(&self, kind: &str) {
        self.events
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn enrollment(&self, workflow: &str, outcome: &'static str) {
        self.enrollments
            .get_or_create(&vec![
                ("workflow", workflow.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn delivered_after(&self, channel: &str, seconds: f64) {
        self.delivery_latency
            .get_or_create(&vec![("channel", channel.to_string())])
            .observe(seconds);
    }

    pub fn provider_call(&self, channel: &str, seconds: f64) {
        self.provider_latency
            .get_or_create(&vec![("channel", channel.to_string())])
            .observe(seconds);
    }
}

/// The class of a dead letter's error, for labels and `status`:
/// `opted_out` (the provider says the recipient opted out),
/// `retries_exhausted`, or `permanent_error`.
pub fn dead_reason(error: &str) -> &'static str {
    if error.starts_with(crate::channels::delivery::OPTED_OUT) {
        "opted_out"
    } else if error.starts_with("gave up after ") {
        "retries_exhausted"
    } else {
        "permanent_error"
    }
}

/// A step skipped at run time (template failure, no address, frequency cap,
/// unsubscribed, team full, ...): an info log line and
/// `nurture_skips_total{workflow,reason}`. `code` is the reason's code,
/// `detail` its full text.
pub fn skipped(workflow: &str, contact: &str, step: &str, code: &str, detail: &str) {
    tracing::info!(
        workflow,
        contact,
        step,
        reason = code,
        detail,
        "step skipped"
    );
    global()
        .skips
        .get_or_create(&vec![
            ("workflow", workflow.to_string()),
            ("reason", code.to_string()),
        ])
        .inc();
}

/// A message dead-lettered: a warn log line and
/// `nurture_messages_dead_total{workflow,reason}` (see [`dead_reason`]).
pub fn dead_letter(workflow: &str, contact: &str, step: &str, channel: &str, error: &str) {
    let reason = dead_reason(error);
    tracing::warn!(
        workflow,
        contact,
        step,
        channel,
        reason,
        error,
        "message dead-lettered"
    );
    global()
        .dead_letters
        .get_or_create(&vec![
            ("workflow", workflow.to_string()),
            ("reason", reason.to_string()),
        ])
        .inc();
}

/// A message cancelled before delivery (unsubscribed, contact deleted): an
/// info log line and `nurture_messages_cancelled_total{workflow,reason}`.
pub fn cancelled(workflow: &str, contact: &str, step: &str, channel: &str, reason: &str) {
    tracing::info!(
        workflow,
        contact,
        step,
        channel,
        reason,
        "message cancelled"
    );
    global()
        .cancelled
        .get_or_create(&vec![
            ("workflow", workflow.to_string()),
            ("reason", reason.to_string()),
        ])
        .inc();
}

pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The Prometheus text format of every metric.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &global().registry);
    out
}
