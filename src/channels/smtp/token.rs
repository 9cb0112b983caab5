//! One-click unsubscribe tokens (RFC 8058): the link in `List-Unsubscribe`
//! must identify the recipient and the list by itself, since the mailbox
//! provider POSTs to it with no cookie and no login.
//!
//! `TOKEN = base64url(CHANNEL "\n" CONTACT_ID) "." base64url(HMAC-SHA256(KEY, DOMAIN PAYLOAD))`
//! without padding, where `KEY` is the value of the channel's
//! `unsubscribe_secret_env` and `DOMAIN` is a fixed label (so a MAC made for
//! another purpose with the same key is never a valid token).
//!
//! Tokens do not expire: an unsubscribe link in an old email must keep
//! working (a link that stopped working would leave the recipient only the
//! "report spam" button). Changing the secret invalidates every link sent
//! before, so rotate it only when it leaked; links of a secret replaced by a
//! hot reload keep working until the daemon restarts (see [`UnsubscribeKeys`]).
//!
//! The payload is readable by the recipient (it is their own contact id and
//! the channel name); only the MAC is secret-derived. Verification compares
//! the MAC in constant time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Separates this use of the key from any other.
const DOMAIN: &[u8] = b"nurture-unsubscribe-v1\n";

/// Longest token accepted: the payload of a long contact id plus the MAC.
/// Anything longer is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 2048;

/// The secret of a channel's unsubscribe links. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct UnsubscribeKey(Arc<[u8]>);

impl std::fmt::Debug for UnsubscribeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsubscribeKey(..)")
    }
}

impl UnsubscribeKey {
    /// A key from the secret's bytes. At least 16 bytes are required, so a
    /// placeholder such as `x` is refused rather than protecting every link
    /// of a list with a guessable key.
    pub fn new(secret: &[u8]) -> Result<UnsubscribeKey, String> {
        if secret.len() < 16 {
            return Err(format!(
                "is {} bytes long; use at least 16 random bytes (e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        Ok(UnsubscribeKey(Arc::from(secret)))
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }
}

/// Who a token unsubscribes from what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub channel: String,
    pub contact_id: String,
}

/// The token for `contact_id` on `channel`.
pub fn sign(key: &UnsubscribeKey, channel: &str, contact_id: &str) -> String {
    let payload = format!("{channel}\n{contact_id}");
    let tag = key.mac(payload.as_bytes()).finalize().into_bytes();
    format!("{}.{}", B64URL.encode(payload), B64URL.encode(tag))
}

/// Reads the channel and contact of `token` without checking the MAC.
/// `None` when it is not a token at all.
fn parse(token: &str) -> Option<(Unsubscribe, Vec<u8>, Vec<u8>)> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let (payload_b64, tag_b64) = token.split_once('.')?;
    let payload = B64URL.decode(payload_b64).ok()?;
    let tag = B64URL.decode(tag_b64).ok()?;
    let text = std::str::from_utf8(&payload).ok()?;
    let (channel, contact_id) = text.split_once('\n')?;
    if channel.is_empty() || contact_id.is_empty() {
        return None;
    }
    let who = Unsubscribe {
        channel: channel.to_string(),
        contact_id: contact_id.to_string(),
    };
    Some((who, payload, tag))
}

/// Checks `token` against `keys` (the keys of its channel); `None` when it
/// is malformed or no key made it. Callers must not tell the two apart to
/// the client.
pub fn verify_with(token: &str, keys: &[UnsubscribeKey]) -> Option<Unsubscribe> {
    let (who, payload, tag) = parse(token)?;
    // Every key is tried, whatever the outcome of the first: constant work.
    let mut ok = false;
    for k in keys {
        ok |= k.mac(&payload).verify_slice(&tag).is_ok();
    }
    ok.then_some(who)
}

/// The keys the API verifies one-click links with, by channel name: a
/// handle the daemon owns and shares with the API state (no global).
///
/// The API answers one-click POSTs with no login, so the handler needs the
/// secret of the channel named in the token. The daemon adds the keys of the
/// smtp channels of every registry it builds (at start and on each hot
/// reload), so a rotated secret is accepted once the reload is. Keys are
/// only added, never removed, while the daemon runs: a link signed with a
/// secret that a reload replaced keeps working until the next restart.
#[derive(Clone, Default)]
pub struct UnsubscribeKeys(Arc<RwLock<HashMap<String, Vec<UnsubscribeKey>>>>);

impl std::fmt::Debug for UnsubscribeKeys {
    // Never print a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("UnsubscribeKeys")
            .field("channels", &map.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl UnsubscribeKeys {
    /// Remembers `key` as a key of `channel`'s unsubscribe links.
    pub fn add(&self, channel: &str, key: &UnsubscribeKey) {
        let mut keys = self.0.write().unwrap_or_else(|p| p.into_inner());
        let per_channel = keys.entry(channel.to_string()).or_default();
        if !per_channel.contains(key) {
            per_channel.push(key.clone());
        }
    }

    /// Checks `token` against the keys of the channel it names.
    pub fn verify(&self, token: &str) -> Option<Unsubscribe> {
        let (who, _, _) = parse(token)?;
        let keys = {
            let map = self.0.read().unwrap_or_else(|p| p.into_inner());
            map.get(&who.channel)?.clone()
        };
        verify_with(token, &keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> UnsubscribeKey {
        UnsubscribeKey::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn round_trip_and_forgeries() {
        let k = key("0123456789abcdef-secret");
        let t = sign(&k, "email", "c42");
        let who = verify_with(&t, std::slice::from_ref(&k)).expect("valid");
        assert_eq!(who.channel, "email");
        assert_eq!(who.contact_id, "c42");
        assert!(!t.contains('=') && !t.contains('+') && !t.contains('/'));

        // Another key, another contact with the same MAC, a cut MAC, junk.
        assert!(verify_with(&t, &[key("another-secret-of-16")]).is_none());
        let (_, tag) = t.split_once('.').unwrap();
        let forged = format!("{}.{tag}", B64URL.encode("email\nc43"));
        assert!(verify_with(&forged, std::slice::from_ref(&k)).is_none());
        let cut = &t[..t.len() - 2];
        assert!(verify_with(cut, std::slice::from_ref(&k)).is_none());
        for junk in [
            "",
            ".",
            "abc",
            "a.b",
            "!!.!!",
            &"A".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                verify_with(junk, std::slice::from_ref(&k)).is_none(),
                "{junk}"
            );
        }
        // Either of two keys (a rotated secret) verifies.
        assert!(verify_with(&t, &[key("another-secret-of-16"), k.clone()]).is_some());
    }

    #[test]
    fn known_answer() {
        // Computed independently: python3 -c 'import hmac,hashlib,base64;
        // p=b"email\nc1"; print(base64.urlsafe_b64encode(p).rstrip(b"=").decode()+"."+
        // base64.urlsafe_b64encode(hmac.new(b"0123456789abcdef",
        // b"nurture-unsubscribe-v1\n"+p, hashlib.sha256).digest()).rstrip(b"=").decode())'
        let t = sign(&key("0123456789abcdef"), "email", "c1");
        assert_eq!(t, KNOWN);
    }

    const KNOWN: &str = "ZW1haWwKYzE.HUXHUfd3akP-8Cd3bfK7GDeSmLADfxNKS5tuUnYlxoA";

    #[test]
    fn short_secrets_are_refused() {
        assert!(UnsubscribeKey::new(b"short").is_err());
        assert!(format!("{:?}", key("0123456789abcdef")).contains(".."));
    }

    #[test]
    fn keys_handle() {
        let keys = UnsubscribeKeys::default();
        let k = key("registry-test-secret-1");
        let t = sign(&k, "reg-test", "c1");
        assert!(keys.verify(&t).is_none(), "nothing added yet");
        keys.add("reg-test", &k);
        keys.add("reg-test", &k);
        assert_eq!(keys.verify(&t).unwrap().contact_id, "c1");
        let other = sign(&k, "reg-test-unknown", "c1");
        assert!(keys.verify(&other).is_none());
        // A rotated secret: the new one verifies, the old links still do.
        let k2 = key("registry-test-secret-2");
        keys.add("reg-test", &k2);
        assert!(keys.verify(&sign(&k2, "reg-test", "c2")).is_some());
        assert!(keys.verify(&t).is_some());
        // Another handle (another daemon in the same process) shares nothing.
        assert!(UnsubscribeKeys::default().verify(&t).is_none());
    }
}
