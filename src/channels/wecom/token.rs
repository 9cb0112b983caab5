//! The WeCom access token cache (reference §1.1).
//!
//! Each app secret has its own token, so there is one cache per
//! (base URL, corp id, secret) in the daemon's [`TokenCaches`], shared by
//! every channel and worker built with that triple (and kept across settings
//! reloads). A token is used until
//! `expires_in − 200 s`; WeCom may also invalidate it early, which callers
//! report with [`TokenCache::invalidate`].
//!
//! Refreshing happens under a lock, and the cache is looked at again once the
//! lock is held: N sends that find the token missing or expired at the same
//! moment cause one `gettoken` call, not N (gettoken itself is throttled).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so tests move it with `tokio::time::pause` and `advance`.
use tokio::time::Instant;

use sha2::{Digest, Sha256};

/// How long before WeCom's `expires_in` the token is refreshed.
pub const EARLY_REFRESH: Duration = Duration::from_secs(200);

/// A token as gettoken returned it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub access_token: String,
    pub expires_in: Duration,
}

#[derive(Clone)]
struct Token {
    value: String,
    valid_until: Instant,
}

/// One app's token.
#[derive(Default)]
pub struct TokenCache {
    current: Mutex<Option<Token>>,
    /// Held while a gettoken call is running.
    refresh: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

/// How long a token is used: `expires_in − 200 s`; a token that lives 400 s
/// or less (never seen from WeCom, but tests use it) is used for half its
/// life, so a short lifetime never means "always expired".
pub fn usable_for(expires_in: Duration) -> Duration {
    if expires_in > EARLY_REFRESH * 2 {
        expires_in - EARLY_REFRESH
    } else {
        expires_in / 2
    }
}

/// The token caches of every app, by (base URL, corp id, secret): a handle
/// the daemon owns and hands to every channel and worker it builds (the
/// sender, the poller, the tag sync and marks), so they share one token per
/// app and one `gettoken` call refreshes it for all. A clone is the same set
/// of caches. It is not a process global: two daemons in one process (tests)
/// never see each other's tokens, and a rotated secret is another key, so a
/// reload with a new secret fetches a token with it.
#[derive(Clone, Default)]
pub struct TokenCaches {
    caches: Arc<Mutex<HashMap<AppKey, Arc<TokenCache>>>>,
}

/// (base URL without a trailing slash, corp id, SHA-256 of the secret: the
/// secret itself is not kept in the key).
type AppKey = (String, String, Vec<u8>);

impl std::fmt::Debug for TokenCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCaches").finish_non_exhaustive()
    }
}

impl TokenCaches {
    /// The cache of the app (`base_url`, `corp_id`, `secret`), created on
    /// first use.
    pub fn app(&self, base_url: &str, corp_id: &str, secret: &str) -> Arc<TokenCache> {
        let key = (
            base_url.trim_end_matches('/').to_string(),
            corp_id.to_string(),
            Sha256::digest(secret.as_bytes()).to_vec(),
        );
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.entry(key).or_default().clone()
    }
}

impl TokenCache {
    fn fresh(&self) -> Option<String> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref()
            .filter(|t| Instant::now() < t.valid_until)
            .map(|t| t.value.clone())
    }

    /// A valid token: the cached one, or a new one from `fetch` (called by
    /// at most one caller at a time; the others wait and take its result).
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, E>>,
    {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _refreshing = self.refresh.lock().await;
        // Someone else may have refreshed while this caller waited for the lock.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let f = fetch().await?;
        let token = Token {
            value: f.access_token.clone(),
            valid_until: Instant::now() + usable_for(f.expires_in),
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
        Ok(f.access_token)
    }

    /// WeCom rejected `stale` (40014, 42001, 40001): forget it, unless the
    /// cache already holds a newer token (another send refreshed it).
    pub fn invalidate(&self, stale: &str) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_some_and(|t| t.value == stale) {
            *cur = None;
        }
    }

    /// How many gettoken calls this cache made (for tests and logs).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Delivery;
    use std::sync::atomic::AtomicUsize;

    fn fetched(t: &str, secs: u64) -> Fetched {
        Fetched {
            access_token: t.into(),
            expires_in: Duration::from_secs(secs),
        }
    }

    #[test]
    fn lifetimes() {
        assert_eq!(
            usable_for(Duration::from_secs(7200)),
            Duration::from_secs(7000)
        );
        assert_eq!(usable_for(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn caches_are_shared_per_app_within_one_handle() {
        let caches = TokenCaches::default();
        let a = caches.app("http://x/", "corp", "s1");
        let b = caches.clone().app("http://x", "corp", "s1");
        let c = caches.app("http://x", "corp", "s2");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        // Another owner's handle is another set of caches.
        let other = TokenCaches::default().app("http://x", "corp", "s1");
        assert!(!Arc::ptr_eq(&a, &other));
    }

    #[tokio::test]
    async fn concurrent_callers_fetch_once() {
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, Delivery>(fetched("t1", 7200))
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.fetches(), 1);

        // Invalidating an old token does not drop a newer one.
        cache.invalidate("t0");
        assert_eq!(cache.fresh().as_deref(), Some("t1"));
        cache.invalidate("t1");
        assert_eq!(cache.fresh(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_used_for_its_usable_life_then_fetched_again() {
        let cache = TokenCache::default();
        let get =
            |t: &'static str| cache.get(move || async move { Ok::<_, Delivery>(fetched(t, 7200)) });
        assert_eq!(get("t1").await.unwrap(), "t1");
        // 7,200 s from WeCom: used for 7,000 s.
        tokio::time::advance(Duration::from_secs(6_999)).await;
        assert_eq!(get("t2").await.unwrap(), "t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(get("t2").await.unwrap(), "t2");
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_cached() {
        let cache = TokenCache::default();
        let r = cache
            .get(|| async {
                Err(Delivery::Retry {
                    after: None,
                    reason: "busy".into(),
                })
            })
            .await;
        assert!(r.is_err());
        let t = cache
            .get(|| async { Ok::<_, Delivery>(fetched("t2", 7200)) })
            .await;
        assert_eq!(t.unwrap(), "t2");
    }
}
