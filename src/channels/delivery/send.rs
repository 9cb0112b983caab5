//! Sending one message: consent and quiet hours checked again at the last
//! moment, the provider called, and its answer turned into an outcome.

use super::*;

/// Why a contact may not get a message on `channel`, if so.
pub(super) fn consent(contact: Option<&Contact>, channel: &str) -> Option<&'static str> {
    match contact {
        None => Some("contact_deleted"),
        Some(c) if c.unsubscribed || c.opted_out.contains(channel) => Some("unsubscribed"),
        Some(_) => None,
    }
}

/// [`consent`] for a message with outbox `payload`: a notice goes to a
/// salesperson and a WeCom transfer moves the relationship between
/// salespeople; neither is a message to the contact, so the contact's
/// opt-outs do not hold them back (a deleted contact still does).
pub(super) fn consent_for(
    contact: Option<&Contact>,
    channel: &str,
    payload: &serde_json::Value,
) -> Option<&'static str> {
    let kind = payload
        .get("kind")
        .and_then(|k| k.as_str())
        .and_then(|k| MessageKind::parse(k).ok());
    match kind {
        Some(MessageKind::Notice | MessageKind::Transfer) if contact.is_some() => None,
        _ => consent(contact, channel),
    }
}

/// Whether a message with outbox `payload` is one to the contact, held by
/// the contact's quiet hours (as the planner holds a `send`): a notice goes to
/// a salesperson, a transfer moves a relationship between salespeople, and a
/// `webhook:` step calls the team's own system; none of them waits.
pub(super) fn to_the_contact(payload: &serde_json::Value) -> bool {
    !matches!(
        payload.get("kind").and_then(|k| k.as_str()),
        Some("notice" | "transfer" | "webhook")
    )
}

/// The first instant at or after `at_ms` outside the contact's quiet hours
/// (`at_ms` itself without them): [`crate::policy::deliverable_at`], the
/// function the planner uses for a first send.
pub(super) fn in_window(quiet: Option<(QuietHours, Tz)>, at_ms: i64) -> i64 {
    let Some((q, tz)) = quiet else { return at_ms };
    let Some(at) = chrono::DateTime::from_timestamp_millis(at_ms) else {
        return at_ms;
    };
    crate::store::to_ms(crate::policy::deliverable_at(Some(&q), at, tz)).max(at_ms)
}

/// `last_error` of a message held back by quiet hours.
pub(super) fn quiet_note(until_ms: i64, quiet: Option<(QuietHours, Tz)>) -> String {
    let tz = quiet.map_or(chrono_tz::UTC, |(_, tz)| tz);
    let local = chrono::DateTime::from_timestamp_millis(until_ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default();
    format!("deferred by quiet hours until {local}")
}

pub(super) async fn load_contacts(
    store: &Store,
    ids: &[&str],
) -> Result<HashMap<String, Contact>, String> {
    let json = serde_json::to_string(ids).map_err(|e| e.to_string())?;
    let filter = format!("c.id IN {}", store.dialect().json_strings(1));
    let mut stream = store.scan_contacts(&filter, &[Bind::Text(json)]);
    let mut out = HashMap::with_capacity(ids.len());
    while let Some(c) = stream.next().await {
        let c = c.map_err(|e| e.to_string())?;
        out.insert(c.id.clone(), c);
    }
    Ok(out)
}

pub(super) struct SendTask {
    pub(super) shared: Arc<Shared>,
    pub(super) adapter: Arc<dyn Channel>,
    pub(super) out: mpsc::Sender<Outcome>,
    pub(super) hard_stop: CancellationToken,
    pub(super) checked_at: Instant,
    pub(super) pending: Arc<AtomicUsize>,
    pub(super) room_at: usize,
    pub(super) created_at: i64,
    pub(super) attempts: u32,
    pub(super) first_failed_at: Option<i64>,
    /// The contact's quiet hours and timezone, when they apply to this message.
    pub(super) quiet: Option<(QuietHours, Tz)>,
    /// The channel's concurrency slot, from the pump; it goes with the outcome.
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

impl SendTask {
    /// [`SendTask::run`], with a panic (a bug in an adapter) turned into a
    /// retry of that message: one bad call must not leave its message leased
    /// forever nor take the worker down.
    pub(super) async fn run_caught(self, msg: OutMessage, permit: OwnedSemaphorePermit) {
        use futures::FutureExt;
        let out = self.out.clone();
        let (backoff_base, backoff_max, tries) = (
            self.shared.opts.backoff_base,
            self.shared.opts.backoff_max,
            self.attempts + 1,
        );
        let on_panic = Outcome {
            id: msg.id.clone(),
            workflow: msg.workflow.clone(),
            contact_id: msg.contact_id.clone(),
            step_id: msg.step_id.clone(),
            channel: msg.channel.clone(),
            created_at: self.created_at,
            fate: Fate::Retry {
                next_at: 0,
                error: String::new(),
            },
            pending: self.pending.clone(),
            room_at: self.room_at,
            _permit: None,
        };
        let caught = std::panic::AssertUnwindSafe(self.run(msg, permit))
            .catch_unwind()
            .await;
        if let Err(p) = caught {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(id = %on_panic.id, channel = %on_panic.channel, panic = %why,
                "the channel adapter panicked; the message will be tried again");
            let unit: f64 = rand::rng().random();
            let delay = next_delay(tries, None, backoff_base, backoff_max, unit);
            let _ = out
                .send(Outcome {
                    fate: Fate::Retry {
                        next_at: now_ms() + dur_ms(delay),
                        error: format!("the channel adapter panicked: {why}"),
                    },
                    ..on_panic
                })
                .await;
        }
    }

    /// Makes the call, holding `permit` (the channel's concurrency) until its
    /// outcome is written.
    async fn run(mut self, mut msg: OutMessage, permit: OwnedSemaphorePermit) {
        self.permit = Some(permit);
        let opts = &self.shared.opts;
        if self.checked_at.elapsed() > opts.consent_recheck_after {
            match self.shared.store.contact(&msg.contact_id).await {
                Ok(c) => {
                    if let Some(reason) = consent_for(c.as_ref(), &msg.channel, &msg.payload) {
                        self.finish(
                            &msg,
                            Fate::Cancelled {
                                reason: reason.into(),
                            },
                        )
                        .await;
                        return;
                    }
                    if let Some(c) = c {
                        msg.contact = c.template_value();
                    }
                }
                Err(e) => {
                    let fate = Fate::Release {
                        next_at: now_ms() + 1_000,
                        error: format!("could not read the contact: {e}"),
                    };
                    self.finish(&msg, fate).await;
                    return;
                }
            }
        }
        let started = Instant::now();
        // A webhook step with `store:` needs the answer, not only its meaning.
        let wants_answer = msg.payload.get("store").is_some_and(|s| s.is_object());
        let exchange = tokio::select! {
            biased;
            e = async {
                if wants_answer {
                    self.adapter.exchange(&msg).await
                } else {
                    self.adapter.send(&msg).await.into()
                }
            } => e,
            // Past the grace period: leave the row leased for the hand-back.
            _ = self.hard_stop.cancelled() => return,
        };
        let store = match (&exchange.delivery, wants_answer) {
            (Delivery::Delivered { .. }, true) => answer_values(&msg, exchange.answer.as_deref()),
            _ => Default::default(),
        };
        let delivery = exchange.delivery;
        metrics::global().provider_call(&msg.channel, started.elapsed().as_secs_f64());
        let tries = self.attempts + 1;
        let fate = match delivery {
            Delivery::Delivered { provider_id } => Fate::Sent { provider_id, store },
            Delivery::Permanent { reason } => Fate::Dead { error: reason },
            // Waiting out a provider's quota window: not an attempt.
            Delivery::Wait { after, reason } => {
                let unit: f64 = rand::rng().random();
                // A little jitter (up to 5 %, at most a minute) so messages
                // that waited together do not all come back at once.
                let jitter = after.mul_f64(0.05 * unit).min(Duration::from_secs(60));
                Fate::Release {
                    next_at: now_ms() + dur_ms(after.min(WAIT_MAX) + jitter),
                    error: format!("waiting {}s: {reason}", after.min(WAIT_MAX).as_secs()),
                }
            }
            Delivery::Retry { reason, .. } if tries >= opts.max_attempts => Fate::Dead {
                error: format!("gave up after {tries} tries: {reason}"),
            },
            Delivery::Retry { reason, .. }
                if retries_over(self.first_failed_at, now_ms(), opts.retry_for) =>
            {
                Fate::Dead {
                    error: format!(
                        "gave up after {tries} tries over {}: {reason}",
                        crate::duration::Duration::from_secs(
                            i64::try_from(opts.retry_for.as_secs()).unwrap_or(i64::MAX)
                        )
                    ),
                }
            }
            Delivery::Retry { after, reason } => {
                let unit: f64 = rand::rng().random();
                let delay = next_delay(tries, after, opts.backoff_base, opts.backoff_max, unit);
                Fate::Retry {
                    next_at: now_ms() + dur_ms(delay),
                    error: reason,
                }
            }
        };
        let fate = match fate {
            Fate::Retry { next_at, error } => Fate::Retry {
                next_at: in_window(self.quiet, next_at),
                error,
            },
            Fate::Release { next_at, error } => Fate::Release {
                next_at: in_window(self.quiet, next_at),
                error,
            },
            f => f,
        };
        self.finish(&msg, fate).await;
    }

    async fn finish(&mut self, msg: &OutMessage, fate: Fate) {
        let permit = self.permit.take();
        let _ = self
            .out
            .send(Outcome {
                id: msg.id.clone(),
                workflow: msg.workflow.clone(),
                contact_id: msg.contact_id.clone(),
                step_id: msg.step_id.clone(),
                channel: msg.channel.clone(),
                created_at: self.created_at,
                fate,
                pending: self.pending.clone(),
                room_at: self.room_at,
                _permit: permit,
            })
            .await;
    }
}

/// The attributes a delivered webhook step's answer sets (its `store:`):
/// the answer's body is JSON; what cannot be stored is logged, and the rest
/// is stored.
pub(super) fn answer_values(
    msg: &OutMessage,
    answer: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let Some(store) = msg.payload.get("store").and_then(|s| s.as_object()) else {
        return Default::default();
    };
    // `Exchange::http`: the status line, then the body.
    let body = answer
        .and_then(|a| a.split_once('\n'))
        .map(|(_, b)| b)
        .unwrap_or("");
    let json: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(id = %msg.id, workflow = %msg.workflow, contact = %msg.contact_id, step = %msg.step_id, error = %e, "webhook answer is not JSON: nothing stored");
            return Default::default();
        }
    };
    let (values, problems) = crate::store::answers::pick(&json, store);
    for p in problems {
        tracing::warn!(id = %msg.id, workflow = %msg.workflow, contact = %msg.contact_id, step = %msg.step_id, problem = %p, "webhook answer: an attribute not stored");
    }
    values
}
