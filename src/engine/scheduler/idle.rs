//! When the daemon stops (`--until-idle`) and how long it sleeps between
//! passes.

use super::*;

/// Nothing to plan or deliver: the log is consumed, no enrollment is active,
/// no message waits.
/// When `--until-idle` stops the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdleMode {
    /// Nothing left at all: no active enrollment, no message waiting.
    All,
    /// Nothing due now: waits and deferred messages stay in the store.
    Now,
}

/// What is left in the store, for `--until-idle`.
#[derive(Debug, Clone, Default)]
pub struct IdleState {
    pub pending_log: i64,
    pub active: i64,
    pub active_due: i64,
    pub next_active: Option<i64>,
    pub queued: i64,
    pub queued_due: i64,
    pub next_queued: Option<i64>,
}

impl IdleState {
    pub fn done(&self, mode: IdleMode) -> bool {
        match mode {
            IdleMode::All => self.pending_log == 0 && self.active == 0 && self.queued == 0,
            IdleMode::Now => self.pending_log == 0 && self.active_due == 0 && self.queued_due == 0,
        }
    }

    /// What the daemon still waits for, in words; times in `tz` (the
    /// project's zone, as the dry-run and `history` show them).
    pub fn waiting_for(&self, mode: IdleMode, tz: chrono_tz::Tz) -> String {
        let at = |t: Option<i64>| {
            t.map(|t| {
                format!(
                    ", the next due at {}",
                    crate::timefmt::in_tz(plan_reads::from_ms(t), tz)
                )
            })
            .unwrap_or_default()
        };
        let mut parts = Vec::new();
        if self.pending_log > 0 {
            parts.push(format!("{} trigger(s) in the event log", self.pending_log));
        }
        let (active, queued) = match mode {
            IdleMode::All => (self.active, self.queued),
            IdleMode::Now => (self.active_due, self.queued_due),
        };
        if active > 0 {
            parts.push(format!(
                "{active} enrollment(s) in a wait{}",
                at(self.next_active)
            ));
        }
        if queued > 0 {
            parts.push(format!(
                "{queued} message(s) to deliver (quiet hours, retries){}",
                at(self.next_queued)
            ));
        }
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join("; ")
        }
    }

    /// What stays in the store when `--until-idle=now` stops.
    pub fn left(&self, tz: chrono_tz::Tz) -> String {
        if self.active == 0 && self.queued == 0 {
            return "nothing left in the store".to_string();
        }
        format!("left for later: {}", self.waiting_for(IdleMode::All, tz))
    }
}

pub async fn idle_state(store: &Store, now: DateTime<Utc>) -> Result<IdleState> {
    let left = ticks::leftover(store, DAEMON_CURSOR, plan_reads::ms(now)).await?;
    Ok(IdleState {
        pending_log: left.pending_log,
        active: left.active,
        active_due: left.active_due,
        next_active: left.next_active,
        queued: left.queued,
        queued_due: left.queued_due,
        next_queued: left.next_queued,
    })
}

/// Whether `--until-idle` in `mode` may stop at `now`: [`IdleState::done`]
/// without counting what is left.
pub async fn is_idle(store: &Store, now: DateTime<Utc>, mode: IdleMode) -> Result<bool> {
    let (left, due) = ticks::anything_left(store, DAEMON_CURSOR, plan_reads::ms(now)).await?;
    Ok(match mode {
        IdleMode::All => !left,
        IdleMode::Now => !due,
    })
}

/// How long to sleep: until the next due enrollment or cron tick, at most 1 s
/// (new work from outside the API — rows written by other systems — is found
/// by polling).
pub(super) async fn next_wake(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
) -> Result<StdDuration> {
    let mut next = now + chrono::Duration::seconds(1);
    let due = ticks::next_enrollment_due(store).await?;
    if let Some(d) = due {
        next = next.min(plan_reads::from_ms(d));
    }
    for wf in project.workflows.iter().filter(|w| w.enabled) {
        let Some(cron) = wf.trigger.tick_cron() else {
            continue;
        };
        if let Some(t) = cron.next_after(now, project.settings.timezone) {
            next = next.min(t);
        }
    }
    Ok((next - now)
        .to_std()
        .unwrap_or_default()
        .max(StdDuration::from_millis(5)))
}
