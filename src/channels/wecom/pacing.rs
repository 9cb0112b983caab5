//! Pacing of app messages (`message/send`) per salesperson (reference §1.4):
//! WeCom delivers at most 30 a minute and 1,000 an hour from one app to one
//! member, and **silently drops** the excess (the call still answers
//! errcode 0). A burst of assignments would lose notices without a trace, so
//! nurture counts before it calls: a notice over either limit is not sent
//! but waits ([`Delivery::Wait`], not an attempt) until the oldest notice in
//! the full window is out of it.
//!
//! What is counted: the notices this process reserved (kept an hour), and
//! the notices the outbox records as sent to that member on the channel in
//! the last hour (so a restart, or another daemon on the same store, is
//! seen); the larger count of the two holds. Userids are compared
//! case-insensitively, as WeCom does.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::channels::Delivery;
use crate::store::Store;

/// WeCom's limits per app and member.
pub const PER_MINUTE: usize = 30;
pub const PER_HOUR: usize = 1_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// The wait before one more notice may go, given the send times (ms) in the
/// last hour; `None` when it may go now.
pub fn wait(times: &[i64], now: i64) -> Option<Duration> {
    let within = |ms: i64| {
        let mut t: Vec<i64> = times.iter().copied().filter(|t| now - *t < ms).collect();
        t.sort_unstable();
        t
    };
    let mut until: Option<i64> = None;
    for (window, limit) in [(MINUTE_MS, PER_MINUTE), (HOUR_MS, PER_HOUR)] {
        let t = within(window);
        if t.len() >= limit {
            // The (len - limit + 1)-th oldest must leave the window first.
            let free_at = t[t.len() - limit] + window;
            until = Some(until.map_or(free_at, |u: i64| u.max(free_at)));
        }
    }
    until.map(|u| Duration::from_millis(u64::try_from((u - now).max(1)).unwrap_or(1)))
}

/// Send times reserved by this process, per member (lower-cased).
#[derive(Default)]
pub struct Pacing {
    sent: Mutex<HashMap<String, Vec<i64>>>,
}

impl Pacing {
    /// Reserves a notice to `userid` now, or says how long to wait.
    pub async fn reserve(
        &self,
        store: Option<&Store>,
        channel: &str,
        userid: &str,
    ) -> Result<(), Delivery> {
        let key = userid.trim().to_lowercase();
        let now = crate::store::to_ms(chrono::Utc::now());
        // Held across the store read, so two notices to one member in this
        // process are counted one after the other.
        let mut sent = self.sent.lock().await;
        let mine = sent.entry(key.clone()).or_default();
        mine.retain(|t| now - *t < HOUR_MS);
        let stored = match store {
            Some(s) => match sent_notices(s, channel, &key, now - HOUR_MS).await {
                Ok(t) => t,
                Err(e) => {
                    return Err(Delivery::Retry {
                        after: None,
                        reason: format!("wecom: cannot count the notices to {userid}: {e}"),
                    });
                }
            },
            None => Vec::new(),
        };
        let mine = sent.entry(key).or_default();
        let counted = if stored.len() > mine.len() {
            &stored
        } else {
            &*mine
        };
        if let Some(after) = wait(counted, now) {
            return Err(Delivery::Wait {
                after,
                reason: format!(
                    "wecom: pacing notices to {userid} to WeCom's {PER_MINUTE} a minute and {PER_HOUR} an hour (it drops the excess silently)"
                ),
            });
        }
        mine.push(now);
        Ok(())
    }
}

/// When the outbox says notices to `userid` went out on `channel` since
/// `since` (ms).
async fn sent_notices(
    store: &Store,
    channel: &str,
    userid: &str,
    since: i64,
) -> sqlx::Result<Vec<i64>> {
    store.wecom().sent_notices(channel, userid, since).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_a_minute_then_wait_for_the_oldest() {
        let now = 10 * HOUR_MS;
        let times: Vec<i64> = (0..29).map(|i| now - 50_000 + i).collect();
        assert_eq!(wait(&times, now), None);
        let mut full = times.clone();
        full.push(now - 1);
        // The oldest (50 s ago) leaves the minute in 10 s.
        assert_eq!(wait(&full, now), Some(Duration::from_millis(10_000)));
        // Older than a minute does not count towards it.
        let old: Vec<i64> = (0..100).map(|i| now - 2 * MINUTE_MS - i).collect();
        assert_eq!(wait(&old, now), None);
    }

    #[test]
    fn a_thousand_an_hour() {
        let now = 10 * HOUR_MS;
        // 1,000 spread over the last hour, none in the last minute.
        let times: Vec<i64> = (0..1_000).map(|i| now - HOUR_MS + 1 + i * 3_500).collect();
        assert!(
            times
                .iter()
                .all(|t| now - t > MINUTE_MS && now - t < HOUR_MS)
        );
        assert_eq!(wait(&times, now), Some(Duration::from_millis(1)));
        assert_eq!(wait(&times[1..], now), None);
    }
}
