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
    /// `nurture report`'s funnel, by workflow and step (read from the store
    /// on a scrape, at most once a minute; see `funnel`).
    pub funnel_reached: Family<Labels, Gauge>,
    pub funnel_sent: Family<Labels, Gauge>,
    pub funnel_skipped: Family<Labels, Gauge>,
    pub funnel_converted_after: Family<Labels, Gauge>,
    /// Conversion by workflow and group (`all`, each split arm `STEP=ARM`,
    /// `treatment`, `holdout`).
    pub conversion_entered: Family<Labels, Gauge>,
    pub conversion_converted: Family<Labels, Gauge>,
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
        let funnel_reached = Family::<Labels, Gauge>::default();
        let funnel_sent = Family::<Labels, Gauge>::default();
        let funnel_skipped = Family::<Labels, Gauge>::default();
        let funnel_converted_after = Family::<Labels, Gauge>::default();
        let conversion_entered = Family::<Labels, Gauge>::default();
        let conversion_converted = Family::<Labels, Gauge>::default();
        registry.register(
            "funnel_reached",
            "Enrollments that reached each step, by workflow and step",
            funnel_reached.clone(),
        );
        registry.register(
            "funnel_sent",
            "Messages of each step delivered, by workflow and step",
            funnel_sent.clone(),
        );
        registry.register(
            "funnel_skipped",
            "Steps skipped, by workflow, step and reason",
            funnel_skipped.clone(),
        );
        registry.register(
            "funnel_converted_after",
            "Enrollments that reached each step and converted at or after it",
            funnel_converted_after.clone(),
        );
        registry.register(
            "conversion_entered",
            "Enrollments by workflow and group (all, split arm STEP=ARM, treatment, holdout)",
            conversion_entered.clone(),
        );
        registry.register(
            "conversion_converted",
            "Enrollments that reached the workflow's goal, by workflow and group",
            conversion_converted.clone(),
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
            funnel_reached,
            funnel_sent,
            funnel_skipped,
            funnel_converted_after,
            conversion_entered,
            conversion_converted,
        }
    }

    /// Sets the funnel and conversion gauges to these reports (replacing
    /// the previous ones: a removed workflow or step disappears).
    pub fn set_reports(&self, reports: &[crate::report::Report]) {
        let all = [
            &self.funnel_reached,
            &self.funnel_sent,
            &self.funnel_skipped,
            &self.funnel_converted_after,
            &self.conversion_entered,
            &self.conversion_converted,
        ];
        for f in all {
            f.clear();
        }
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for r in reports {
            for s in &r.steps {
                let l = vec![("workflow", r.workflow.clone()), ("step", s.step.clone())];
                self.funnel_reached.get_or_create(&l).set(n(s.reached));
                self.funnel_sent.get_or_create(&l).set(n(s.sent));
                self.funnel_converted_after
                    .get_or_create(&l)
                    .set(n(s.converted_after));
                for (reason, k) in &s.skipped {
                    let mut l = l.clone();
                    l.push(("reason", reason.clone()));
                    self.funnel_skipped.get_or_create(&l).set(n(*k));
                }
            }
            if r.goal.is_none() {
                continue;
            }
            for g in &r.groups {
                let group = g.group.strip_prefix("arm ").unwrap_or(&g.group);
                let l = vec![
                    ("workflow", r.workflow.clone()),
                    ("group", group.to_string()),
                ];
                self.conversion_entered.get_or_create(&l).set(n(g.entered));
                self.conversion_converted
                    .get_or_create(&l)
                    .set(n(g.converted));
            }
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

pub use crate::store::outbox::dead_reason;

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
    counted_skip(workflow, code);
}

/// A skip counted in `nurture_skips_total` without a line of its own: the
/// blast guard's holds, which a mistaken mass enrollment makes by the
/// thousand; the caller logs one line per workflow and batch instead.
pub fn counted_skip(workflow: &str, code: &str) {
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

/// The waiting messages an unsubscribe cancelled (`Store::unsubscribe`
/// gives them; every caller counts them here).
pub fn unsubscribed(contact: &str, u: &crate::store::Unsubscribed) {
    for (workflow, step, channel) in &u.cancelled {
        cancelled(workflow, contact, step, channel, "unsubscribed");
    }
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
