//! The WeCom poller: follows the tasks the channel recorded until WeCom says
//! how they ended (reference §1.2 and §1.5).
//!
//! - A mass message (`add_msg_template`): `get_groupmsg_send_result` with the
//!   task's msgid and sender. Status 1 sent, 2 not a friend, 3 over the
//!   per-customer cap; 0 not sent yet (the salesperson has not confirmed).
//! - A transfer: `transfer_result` for the (handover, takeover) pair. Status
//!   1 done, 3 refused, 4 takeover member at its customer limit, 5 no
//!   transfer record; 2 still waiting (WeCom takes over after 24 h).
//!
//! A task still waiting is looked at again after `poll_interval × 2^checks`
//! (at most 32 × `poll_interval`, at most an hour); after [`GIVE_UP_AFTER`]
//! it is recorded as `expired`. The outcome goes into `wecom_tasks` and, as a
//! note, into the outbox row's `last_error` (the row stays `sent`), which
//! `nurture history --contact` shows. A mass task sent from a handover
//! member during a transfer keeps the reason in its `detail` (see
//! [`crate::wecom::sender`]) and its outcome note ends with it, so what was seen
//! while it waited is logged rather than stored for mass tasks.
//!
//! The poller runs in the daemon beside the delivery worker and takes the
//! channels from the current settings, so a reload applies to it too.
//! Daemons sharing one store divide the tasks: each batch is claimed
//! ([`tasks::claim`]) with a lease ([`lease`]) before WeCom is asked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::api::WecomApi;
use super::tasks::Task;
use super::token::TokenCaches;
use super::{REMIND_GROUPMSG_SEND, SEND_RESULT, TRANSFER_RESULT, WecomConfig, now_ms};
use crate::channels::Delivery;
use crate::project::Project;
use crate::settings::{ChannelKind, Settings};
use crate::store::Store;
use crate::store::states::{WecomTaskKind, WecomTaskStatus};

/// How often the daemon reads WeCom's unassigned list (customers of staff
/// who left).
const RESIGNED_EVERY_MS: i64 = 24 * 3600 * 1000;

/// How long a task is followed before it is recorded as `expired`.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// Tasks of a channel claimed at once. Small, because the claim's lease must
/// cover the whole batch's calls (see [`lease`]).
const BATCH: i64 = 20;
/// Pages of one result list read before waiting for the next round.
const MAX_PAGES: usize = 20;

/// How long a claim keeps a batch of `rows` tasks from the other daemons
/// sharing the store: a minute plus two call timeouts per task, which covers
/// the usual one page per task even on a slow WeCom. A daemon that dies
/// leaves its claims to the others after this; a batch that outlives it
/// (many pages, every call timing out) may see a task looked at twice, which
/// costs a call, not a wrong outcome (outcome writes only touch pending rows).
pub fn lease(timeout: Duration, rows: i64) -> Duration {
    let rows = u32::try_from(rows.max(1)).unwrap_or(u32::MAX);
    Duration::from_secs(60).saturating_add(timeout.saturating_mul(2).saturating_mul(rows))
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When a task checked `checks` times is looked at next.
pub fn next_check_delay(poll_interval: Duration, checks: i64) -> Duration {
    let factor = 1u32 << checks.clamp(0, 5);
    (poll_interval * factor).min(Duration::from_secs(3_600).max(poll_interval))
}

/// What WeCom said about one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not decided yet (with what was seen, for the record).
    Waiting(String),
    /// Decided: (our status, WeCom's status number, the note).
    Final(WecomTaskStatus, Option<i64>, String),
}

/// The outcome of a mass message from its `send_list` status.
pub fn mass_outcome(status: i64, sender: &str, cap: Option<&str>) -> Outcome {
    match status {
        0 => Outcome::Waiting("not sent yet (status 0)".into()),
        1 => Outcome::Final(
            WecomTaskStatus::Sent,
            Some(1),
            "wecom: delivered to the customer (status 1)".into(),
        ),
        2 => Outcome::Final(
            WecomTaskStatus::NotFriend,
            Some(2),
            format!("wecom: not a friend of {sender} (status 2)"),
        ),
        3 => Outcome::Final(
            WecomTaskStatus::OverCap,
            Some(3),
            format!(
                "wecom: over the per-customer mass-message cap{} (status 3)",
                cap.map(|c| format!(" (per {c})")).unwrap_or_default()
            ),
        ),
        other => Outcome::Final(
            WecomTaskStatus::Error,
            Some(other),
            format!("wecom: unknown send status {other}"),
        ),
    }
}

/// The outcome of a transfer from its `transfer_result` status.
pub fn transfer_outcome(status: i64) -> Outcome {
    let (s, note) = match status {
        1 => (WecomTaskStatus::Done, "transfer done (status 1)"),
        2 => return Outcome::Waiting("waiting for the takeover (status 2)".into()),
        3 => (
            WecomTaskStatus::Refused,
            "the customer refused the transfer (status 3)",
        ),
        4 => (
            WecomTaskStatus::TakeoverLimit,
            "the takeover member is at their customer limit (status 4)",
        ),
        5 => (
            WecomTaskStatus::NoRecord,
            "WeCom has no record of the transfer (status 5)",
        ),
        other => {
            return Outcome::Final(
                WecomTaskStatus::Error,
                Some(other),
                format!("wecom: unknown transfer status {other}"),
            );
        }
    };
    Outcome::Final(s, Some(status), format!("wecom: {note}"))
}

struct Poller {
    config: WecomConfig,
    api: WecomApi,
}

/// Runs until `shutdown`: polls every WeCom channel of the current settings.
pub async fn run(
    store: Store,
    mut project: watch::Receiver<Arc<Project>>,
    tokens: TokenCaches,
    shutdown: CancellationToken,
) {
    let mut pollers: HashMap<String, Poller> = HashMap::new();
    let mut built_for: Option<Arc<Project>> = None;
    // Per channel: when the unassigned list was last read (once a day; at
    // start, since a restart may have missed a day).
    let mut resigned_at: HashMap<String, i64> = HashMap::new();
    loop {
        let current = project.borrow_and_update().clone();
        if built_for.as_ref().is_none_or(|b| !Arc::ptr_eq(b, &current)) {
            pollers = build_pollers(&current.settings, &|name| std::env::var(name).ok(), &tokens);
            built_for = Some(current);
        }
        let mut tick = Duration::from_secs(60);
        for p in pollers.values() {
            tick = tick.min(p.config.poll_interval);
            if let Err(e) = round(&store, p).await {
                tracing::warn!(channel = %p.config.name, error = %e, "wecom poll round failed");
            }
            let due = resigned_at
                .get(&p.config.name)
                .is_none_or(|t| now_ms() - t >= RESIGNED_EVERY_MS);
            if due {
                resigned_at.insert(p.config.name.clone(), now_ms());
                match super::resigned::sync(&p.api, &store, now_ms()).await {
                    Ok(f) => {
                        tracing::info!(channel = %p.config.name, listed = f.listed, new = f.new,
                        events = f.events, "wecom: looked for customers of staff who left")
                    }
                    Err((_, e)) => tracing::warn!(channel = %p.config.name, error = ?e.delivery,
                        "wecom: get_unassigned_list failed; trying again in a day"),
                }
            }
            // Members on the contact-way codes follow caps and online hours.
            let project_now = built_for.clone().expect("built above");
            if !project_now.contact_ways.is_empty() {
                match super::contact_way::sync(
                    &p.api,
                    &store,
                    &project_now,
                    &p.config.name,
                    false,
                    true,
                    chrono::Utc::now(),
                )
                .await
                {
                    Ok(lines) => {
                        for l in lines
                            .iter()
                            .filter(|l| l.action == super::contact_way::Action::Update)
                        {
                            tracing::info!(channel = %p.config.name, code = %l.name, members = %l.members.join(","),
                            why = %l.why, "wecom: contact-way members updated");
                        }
                    }
                    Err((_, e)) => tracing::warn!(channel = %p.config.name, error = %e,
                        "wecom: contact-way members not updated; trying again next round"),
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick.max(Duration::from_millis(50))) => {}
            r = project.changed() => if r.is_err() {
                // The daemon is going away; the shutdown token follows.
                shutdown.cancelled().await;
                return;
            },
        }
    }
}

/// One round over every WeCom channel of `settings`, with the environment
/// given as a lookup function (the daemon's loop does this every tick).
pub async fn poll_once(
    store: &Store,
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    tokens: &TokenCaches,
) -> sqlx::Result<()> {
    for p in build_pollers(settings, env, tokens).values() {
        round(store, p).await?;
    }
    Ok(())
}

fn build_pollers(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    tokens: &TokenCaches,
) -> HashMap<String, Poller> {
    let mut out = HashMap::new();
    for (name, cs) in &settings.channels {
        if cs.kind != ChannelKind::Wecom {
            continue;
        }
        let built = crate::channels::build::wecom_config(cs, settings, env, tokens)
            .and_then(|config| Ok((config.api()?, config)));
        match built {
            Ok((api, config)) => {
                out.insert(name.clone(), Poller { config, api });
            }
            Err(e) => tracing::warn!(channel = %name, error = %e, "wecom channel not polled"),
        }
    }
    out
}

/// Batches of due tasks looked at in one round, at most (2,000 tasks): a
/// backlog is worked off over several ticks rather than in one burst of calls.
const BATCHES_PER_ROUND: usize = 100;

/// One round over a channel's due tasks.
async fn round(store: &Store, p: &Poller) -> sqlx::Result<()> {
    for _ in 0..BATCHES_PER_ROUND {
        // Each task claimed is leased, then finished or postponed, so the
        // next batch holds other tasks.
        if batch(store, p).await? < BATCH as usize {
            break;
        }
    }
    Ok(())
}

/// One batch of due tasks; returns how many there were.
async fn batch(store: &Store, p: &Poller) -> sqlx::Result<usize> {
    let rows = store.wecom();
    let now = now_ms();
    // Claimed, not just read: another daemon on the same store skips them.
    let lease_until = now + millis(lease(p.config.timeout, BATCH));
    let due = rows
        .claim_tasks(&p.config.name, now, lease_until, BATCH)
        .await?;
    let n = due.len();
    for task in due {
        // A mass task's note ("sent from lilei: transfer to wangfang
        // pending") goes on with its outcome, so `history` says who sent it
        // and why.
        let outcome_note = |note: &str| match &task.note {
            Some(n) => format!("{note}; {n}"),
            None => note.to_string(),
        };
        // A mass task's `detail` holds that note until the outcome: what a
        // look saw meanwhile is only logged.
        let seen = |what: String| {
            if task.kind == WecomTaskKind::Mass {
                tracing::debug!(message = %task.message_id, %what, "wecom mass task still waiting");
                None
            } else {
                Some(what)
            }
        };
        if now - task.created_at > millis(GIVE_UP_AFTER) {
            let note = format!(
                "wecom: no outcome after {} days; stopped asking",
                GIVE_UP_AFTER.as_secs() / 86_400
            );
            rows.finish_task(
                &task,
                WecomTaskStatus::Expired,
                None,
                &outcome_note(&note),
                now,
            )
            .await?;
            continue;
        }
        let outcome = match task.kind {
            WecomTaskKind::Mass => check_mass(p, &task).await,
            WecomTaskKind::Transfer => check_transfer(p, &task, TRANSFER_RESULT).await,
            WecomTaskKind::Resigned => {
                check_transfer(p, &task, super::resigned::RESIGNED_TRANSFER_RESULT).await
            }
        };
        let next = now_ms() + millis(next_check_delay(p.config.poll_interval, task.checks));
        match outcome {
            Ok(Outcome::Final(status, code, note)) => {
                tracing::info!(message = %task.message_id, status = %status, "wecom task finished");
                // The customer is the takeover member's now: the sender of
                // the next mass message (and the next handover) follows.
                if let (true, WecomTaskStatus::Done, Some(takeover)) = (
                    task.kind.is_transfer(),
                    status,
                    task.takeover_userid.as_deref(),
                ) && let Err(e) = rows
                    .transfer_done(
                        &task.external_userid,
                        &task.userid,
                        takeover,
                        now_ms(),
                        now_ms(),
                    )
                    .await
                {
                    // Polled again: the outcome is written only after this.
                    tracing::warn!(message = %task.message_id, error = %e,
                        "wecom: the transfer's relationships could not be recorded");
                    rows.postpone_task(&task.message_id, next, None).await?;
                    continue;
                }
                if task.kind == WecomTaskKind::Resigned && status == WecomTaskStatus::Done {
                    rows.assigned(&task.external_userid, &task.userid).await?;
                }
                let note = outcome_note(&note);
                rows.finish_task(&task, status, code, &note, now_ms())
                    .await?;
            }
            Ok(Outcome::Waiting(what)) => {
                if task.kind == WecomTaskKind::Mass {
                    remind(store, p, &task).await?;
                }
                rows.postpone_task(&task.message_id, next, seen(what).as_deref())
                    .await?;
            }
            Err(Delivery::Permanent { reason }) => {
                tracing::warn!(message = %task.message_id, %reason, "wecom task cannot be followed");
                let note = outcome_note(&reason);
                rows.finish_task(&task, WecomTaskStatus::Error, None, &note, now_ms())
                    .await?;
            }
            Err(Delivery::Wait { reason, after }) => {
                let next = next.max(now_ms() + millis(after));
                rows.postpone_task(&task.message_id, next, seen(reason).as_deref())
                    .await?;
            }
            Err(Delivery::Retry { reason, after }) => {
                let next = next.max(now_ms() + after.map(millis).unwrap_or(0));
                rows.postpone_task(&task.message_id, next, seen(reason).as_deref())
                    .await?;
            }
            Err(Delivery::Delivered { .. }) => {
                rows.postpone_task(&task.message_id, next, None).await?;
            }
        }
    }
    Ok(n)
}

/// WeCom reminds a member of one mass task at most this often in 24 hours
/// (`remind_groupmsg_send`: "24小时内每个群发最多触发三次提醒").
pub const REMINDERS_PER_DAY: i64 = 3;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Whether a mass task not confirmed yet is due a reminder at `now`: the
/// channel's `remind_after` passed since the task was created and since the
/// last reminder, and fewer than [`REMINDERS_PER_DAY`] went out in the last
/// 24 hours (`sent_at`: when reminders went, any order).
pub fn reminder_due(remind_after: Duration, created_at: i64, sent_at: &[i64], now: i64) -> bool {
    let after = millis(remind_after);
    let last = sent_at.iter().copied().max().unwrap_or(created_at);
    let in_day = sent_at.iter().filter(|t| now - **t < DAY_MS).count() as i64;
    now - created_at >= after && now - last >= after && in_day < REMINDERS_PER_DAY
}

/// Reminds the sender of a mass task they have not confirmed, when the
/// channel's `remind_after` says so ([`reminder_due`]). A failed reminder is
/// logged and recorded with its errcode (it counts towards WeCom's 3, as
/// WeCom may have counted it); it never fails the round.
async fn remind(store: &Store, p: &Poller, task: &Task) -> sqlx::Result<()> {
    let (Some(after), Some(msgid)) = (p.config.remind_after, task.msgid.as_deref()) else {
        return Ok(());
    };
    let sent_at = store.wecom().reminders_sent(msgid).await?;
    let now = now_ms();
    if !reminder_due(after, task.created_at, &sent_at, now) {
        return Ok(());
    }
    let errcode = match p
        .api
        .post(REMIND_GROUPMSG_SEND, &json!({ "msgid": msgid }))
        .await
    {
        Ok(_) => {
            tracing::info!(message = %task.message_id, sender = %task.userid,
                "wecom: reminded the salesperson of an unconfirmed mass message");
            Some(0)
        }
        Err(e) => {
            let code = e
                .answer
                .as_deref()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
                .and_then(|a| a.get("errcode").and_then(Value::as_i64));
            tracing::warn!(message = %task.message_id, error = ?e.delivery,
                "wecom: remind_groupmsg_send failed");
            code
        }
    };
    store
        .wecom()
        .record_reminder(&task.message_id, msgid, now, errcode)
        .await?;
    Ok(())
}

/// Reads every page of a result list (`key`) until `found` picks an entry.
async fn find_in_pages(
    api: &WecomApi,
    path: &str,
    mut body: Value,
    key: &str,
    found: impl Fn(&Value) -> bool,
) -> Result<Option<Value>, Delivery> {
    for _ in 0..MAX_PAGES {
        let answer = api.post(path, &body).await.map_err(|e| e.delivery)?;
        if let Some(hit) = answer
            .json
            .get(key)
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|v| found(v)))
        {
            return Ok(Some(hit.clone()));
        }
        match answer.json.get("next_cursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => body["cursor"] = json!(c),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

async fn check_mass(p: &Poller, task: &Task) -> Result<Outcome, Delivery> {
    let Some(msgid) = &task.msgid else {
        return Err(Delivery::Permanent {
            reason: "wecom: the task has no msgid".into(),
        });
    };
    let body = json!({ "msgid": msgid, "userid": task.userid, "limit": 1000, "cursor": "" });
    let hit = find_in_pages(&p.api, SEND_RESULT, body, "send_list", |v| {
        v.get("external_userid").and_then(Value::as_str) == Some(&task.external_userid)
    })
    .await?;
    Ok(
        match hit.and_then(|v| v.get("status").and_then(Value::as_i64)) {
            Some(status) => {
                mass_outcome(status, &task.userid, p.config.mass_message_cap.as_deref())
            }
            None => Outcome::Waiting("the customer is not in the send list yet".into()),
        },
    )
}

async fn check_transfer(p: &Poller, task: &Task, path: &str) -> Result<Outcome, Delivery> {
    let Some(takeover) = &task.takeover_userid else {
        return Err(Delivery::Permanent {
            reason: "wecom: the transfer has no takeover_userid".into(),
        });
    };
    let body = json!({ "handover_userid": task.userid, "takeover_userid": takeover, "cursor": "" });
    let hit = find_in_pages(&p.api, path, body, "customer", |v| {
        v.get("external_userid").and_then(Value::as_str) == Some(&task.external_userid)
    })
    .await?;
    Ok(
        match hit.and_then(|v| v.get("status").and_then(Value::as_i64)) {
            Some(status) => transfer_outcome(status),
            None => Outcome::Waiting("the customer is not in transfer_result yet".into()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert!(matches!(mass_outcome(0, "u", None), Outcome::Waiting(_)));
        assert!(matches!(
            mass_outcome(1, "u", None),
            Outcome::Final(WecomTaskStatus::Sent, Some(1), _)
        ));
        match mass_outcome(2, "wangfang", None) {
            Outcome::Final(WecomTaskStatus::NotFriend, Some(2), n) => {
                assert!(n.contains("wangfang"))
            }
            o => panic!("{o:?}"),
        }
        match mass_outcome(3, "u", Some("month")) {
            Outcome::Final(WecomTaskStatus::OverCap, Some(3), n) => assert!(n.contains("month")),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            transfer_outcome(1),
            Outcome::Final(WecomTaskStatus::Done, Some(1), _)
        ));
        assert!(matches!(transfer_outcome(2), Outcome::Waiting(_)));
        assert!(matches!(
            transfer_outcome(3),
            Outcome::Final(WecomTaskStatus::Refused, Some(3), _)
        ));
        assert!(matches!(
            transfer_outcome(4),
            Outcome::Final(WecomTaskStatus::TakeoverLimit, Some(4), _)
        ));
        assert!(matches!(
            transfer_outcome(5),
            Outcome::Final(WecomTaskStatus::NoRecord, Some(5), _)
        ));
    }

    #[test]
    fn reminders_wait_and_stay_within_three_a_day() {
        let h = 3_600_000;
        let after = Duration::from_secs(4 * 3600);
        assert!(!reminder_due(after, 0, &[], 3 * h));
        assert!(reminder_due(after, 0, &[], 4 * h));
        assert!(!reminder_due(after, 0, &[4 * h], 7 * h));
        assert!(reminder_due(after, 0, &[4 * h], 8 * h));
        // Three in the last 24 h: the next waits until the first is a day old.
        let one = Duration::from_secs(60);
        let three = [10 * h, 11 * h, 12 * h];
        assert!(!reminder_due(one, 0, &three, 20 * h));
        assert!(!reminder_due(one, 0, &three, 34 * h - 1));
        assert!(reminder_due(one, 0, &three, 34 * h));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let i = Duration::from_secs(60);
        assert_eq!(next_check_delay(i, 0), i);
        assert_eq!(next_check_delay(i, 1), i * 2);
        assert_eq!(next_check_delay(i, 5), i * 32);
        assert_eq!(next_check_delay(i, 50), i * 32);
        assert_eq!(
            next_check_delay(Duration::from_secs(600), 5),
            Duration::from_secs(3_600)
        );
    }
}
