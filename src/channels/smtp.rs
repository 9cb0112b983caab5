//! The `smtp` channel: one email per outbox message, sent with lettre over
//! SMTP submission (reference/channel-apis.md §4).
//!
//! **Connection.** `tls: starttls` (the default, port 587) upgrades with
//! STARTTLS and refuses to go on without it (lettre's `Tls::Required`): no
//! AUTH and no message ever cross an unencrypted connection. `tls: tls` is
//! implicit TLS (port 465). Certificates are verified against the Mozilla
//! roots (webpki-roots), plus the PEM certificates of `tls_ca_file` for a
//! relay with a private CA. `tls: none` is for a relay on the same machine and
//! for tests: it is refused for any host but `localhost`, `127.0.0.1` and
//! `::1`, and never together with credentials. Credentials
//! (`username_env`/`password_env`) are optional. Each message opens its own
//! connection (no pool), so an answer always belongs to one message.
//!
//! **The message.** `From` (the channel's `from`), `To` (the contact's
//! email), `Subject` (the template's front matter `subject:`), `Date` (this
//! attempt), and `Message-ID` = `<hex(SHA-256(outbox id))[..32]@FROM-DOMAIN>`:
//! derived from the idempotency key, so every retry carries the same id and
//! receivers that dedupe on it (most large mailbox providers do) show one
//! message even when an attempt timed out after the server had taken it. The
//! body is `multipart/alternative`: the rendered text as `text/plain` and
//! an HTML part made from the same text (see [`html`]).
//!
//! **Unsubscribe (RFC 8058).** A message to a contact carries
//! `List-Unsubscribe: <{unsubscribe_url}/v1/unsubscribe/TOKEN>` (plus
//! `<mailto:…>` when `unsubscribe_mailto` is set) and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, and the same link
//! at the end of both parts. `TOKEN` names the contact and this channel,
//! signed with the channel's secret ([`token`]); the daemon answers the
//! one-click POST at that URL (`api::unsubscribe`) by opting the contact out
//! of this channel. Assignment notices to salespeople (payload
//! `{"kind":"notice"}`) carry no unsubscribe link: the recipient is staff,
//! not the contact the notice is about.
//!
//! **DKIM (RFC 6376, RFC 8058 §4).** Receivers offer one-click unsubscribe
//! only when a valid DKIM signature covers both `List-Unsubscribe` and
//! `List-Unsubscribe-Post`, and the default header lists of OpenDKIM, exim
//! and rspamd do not include `List-Unsubscribe-Post`. With `dkim: { domain,
//! selector, private_key_env }` nurture signs each email itself (lettre's
//! signer, relaxed/relaxed, rsa-sha256 or ed25519-sha256), with `h=` over
//! [`DKIM_HEADERS`]. Without it the relay must sign both headers;
//! `relay_signs_list_unsubscribe: true` records that the operator set it up,
//! and `validate` warns when neither is set.
//!
//! **Answers.**
//! - `2xx` → delivered; the provider id is the `Message-ID`.
//! - `4xx`, timeouts, refused connections, TLS failures → retry.
//! - STARTTLS not offered while `tls: starttls` → retry, with a reason
//!   saying so: the settings or the server must change, and a retry lets the
//!   messages through once they do (the attempt cap dead-letters them
//!   otherwise); nothing is sent in the clear meanwhile.
//! - `5xx` → permanent, with the server's code and text.
//! - `5xx` with enhanced status `5.1.1` (bad destination mailbox) →
//!   permanent with a reason starting `opted_out:`, so the delivery layer
//!   records the contact's opt-out of this channel and no workflow mails
//!   that contact on it again. The opt-out is per contact and channel (it
//!   shows as `unsubscribed` in skips); if the contact later gets a new
//!   address, remove it from `contact_opt_outs`.
//! - An address lettre cannot send to (not an email address, non-ASCII
//!   without SMTPUTF8 on the server) → permanent.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::response::Response;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::Digest;

use super::{Channel, Delivery, Exchange, OutMessage};

mod answer;
pub mod html;
pub mod settings;
pub mod token;

pub use answer::{AUTH_FAILURE_WAIT, classify};
pub use settings::build;
pub use token::UnsubscribeKey;

/// The default port of submission with STARTTLS.
pub const DEFAULT_PORT: u16 = 587;
/// The default port of implicit TLS (submissions).
pub const DEFAULT_TLS_PORT: u16 = 465;
/// The path of one-click unsubscribe links, under `unsubscribe_url`.
pub const UNSUBSCRIBE_PATH: &str = "/v1/unsubscribe/";

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connect, then STARTTLS, required.
    StartTls,
    /// TLS from the first byte.
    Implicit,
    /// No encryption: loopback relays and tests only.
    None,
}

impl TlsMode {
    pub fn parse(s: &str) -> Option<TlsMode> {
        match s {
            "starttls" => Some(TlsMode::StartTls),
            "tls" => Some(TlsMode::Implicit),
            "none" => Some(TlsMode::None),
            _ => None,
        }
    }
}

/// Whether `host` is this machine (where `tls: none` and `http://` links are allowed).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Options of an SMTP channel, taken from its settings.
#[derive(Clone)]
pub struct SmtpConfig {
    /// The channel's name: signed into unsubscribe tokens.
    pub channel: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    pub from: Mailbox,
    /// Where the daemon is reachable publicly, e.g. `https://mail.example.com`
    /// (no trailing slash).
    pub unsubscribe_url: String,
    /// An address for `List-Unsubscribe: <mailto:…>`, if any.
    pub unsubscribe_mailto: Option<Address>,
    pub unsubscribe_key: UnsubscribeKey,
    /// Per SMTP command (connect, each reply).
    pub timeout: Duration,
    /// PEM certificates trusted besides the Mozilla roots (`tls_ca_file`):
    /// a relay with a private CA.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// DKIM signing by nurture (`dkim:`), if configured.
    pub dkim: Option<DkimSettings>,
    /// `relay_signs_list_unsubscribe: true`: the operator says the relay's
    /// DKIM signature covers List-Unsubscribe and List-Unsubscribe-Post.
    pub relay_signs_list_unsubscribe: bool,
}

/// `dkim: { domain, selector, private_key_env, algorithm }`.
#[derive(Clone)]
pub struct DkimSettings {
    /// `d=`: the From address's domain or a parent of it (DMARC alignment).
    pub domain: String,
    /// `s=`: the key's DNS name is `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`) for rsa, base64 of the
    /// 32-byte seed for ed25519.
    pub private_key: String,
    pub algorithm: DkimAlgorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

/// The headers nurture's DKIM signature covers (`h=`). RFC 8058 §4: a
/// receiver offers one-click unsubscribe only when the signature covers
/// both `List-Unsubscribe` and `List-Unsubscribe-Post`. A header the message
/// lacks (a notice has no List-Unsubscribe) is still listed, so nobody can
/// add one without breaking the signature. Not `Content-Type`: lettre
/// writes a multipart message's Content-Type only when it formats the
/// message, after signing, so a signature listing it would not verify at
/// the receiver (the test's independent verifier caught this).
pub const DKIM_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The signer of a channel's DKIM settings; `Err` says what is wrong with
/// the key (never the key).
pub fn dkim_config(d: &DkimSettings) -> Result<lettre::message::dkim::DkimConfig, String> {
    use lettre::message::dkim::{
        DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
        DkimSigningKey,
    };
    let (alg, what) = match d.algorithm {
        DkimAlgorithm::Rsa => (
            DkimSigningAlgorithm::Rsa,
            "a PKCS#1 PEM RSA private key (-----BEGIN RSA PRIVATE KEY-----; openssl genrsa -traditional 2048)",
        ),
        DkimAlgorithm::Ed25519 => (
            DkimSigningAlgorithm::Ed25519,
            "the base64 of a 32-byte Ed25519 private key",
        ),
    };
    let key = DkimSigningKey::new(d.private_key.trim(), alg)
        .map_err(|_| format!("the dkim private key (private_key_env) is not {what}"))?;
    Ok(DkimConfig::new(
        d.selector.clone(),
        d.domain.clone(),
        key,
        DKIM_HEADERS
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("channel", &self.channel)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("from", &self.from.to_string())
            .field("unsubscribe_url", &self.unsubscribe_url)
            .field(
                "dkim",
                &self
                    .dkim
                    .as_ref()
                    .map(|d| format!("{}._domainkey.{}", d.selector, d.domain)),
            )
            .finish()
    }
}

pub struct SmtpChannel {
    config: SmtpConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    dkim: Option<lettre::message::dkim::DkimConfig>,
}

impl std::fmt::Debug for SmtpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("config", &self.config)
            .finish()
    }
}

impl SmtpChannel {
    pub fn new(config: SmtpConfig) -> Result<SmtpChannel, String> {
        if config.tls == TlsMode::None && !is_loopback(&config.host) {
            return Err(format!(
                "tls: none is only allowed for a relay on this machine (localhost, 127.0.0.1); \
                 \"{}\" needs starttls or tls",
                config.host
            ));
        }
        if config.tls == TlsMode::None && config.credentials.is_some() {
            return Err(
                "tls: none with username_env/password_env would send the password in the clear; \
                 use starttls or tls, or drop the credentials"
                    .into(),
            );
        }
        super::http::install_crypto_provider();
        let tls = match config.tls {
            TlsMode::None => Tls::None,
            TlsMode::StartTls | TlsMode::Implicit => {
                let mut params = TlsParameters::builder(config.host.clone());
                if let Some(pem) = &config.extra_roots_pem {
                    let cert = Certificate::from_pem(pem)
                        .map_err(|e| format!("tls_ca_file: cannot read the certificates: {e}"))?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build()
                    .map_err(|e| format!("cannot set up TLS for \"{}\": {e}", config.host))?;
                if config.tls == TlsMode::StartTls {
                    Tls::Required(params)
                } else {
                    Tls::Wrapper(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some((user, pass)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        let dkim = config.dkim.as_ref().map(dkim_config).transpose()?;
        Ok(SmtpChannel {
            transport: builder.build(),
            config,
            dkim,
        })
    }

    /// The one-click link for `contact_id` on this channel.
    pub fn unsubscribe_link(&self, contact_id: &str) -> String {
        format!(
            "{}{UNSUBSCRIBE_PATH}{}",
            self.config.unsubscribe_url,
            token::sign(
                &self.config.unsubscribe_key,
                &self.config.channel,
                contact_id
            )
        )
    }

    /// The email for `msg`, or why it cannot be made (a permanent failure).
    pub fn build_message(&self, msg: &OutMessage, date: SystemTime) -> Result<Message, String> {
        let to = recipient(&msg.to)?;
        let notice = msg.payload.get("kind").and_then(|k| k.as_str()) == Some("notice");
        let link = (!notice).then(|| self.unsubscribe_link(&msg.contact_id));

        let mut b = Message::builder()
            .from(self.config.from.clone())
            .to(Mailbox::new(None, to))
            .date(date)
            .message_id(Some(message_id(&msg.id, self.config.from.email.domain())));
        if let Some(s) = &msg.subject {
            b = b.subject(s.clone());
        }
        if let Some(link) = &link {
            let mut value = format!("<{link}>");
            if let Some(m) = &self.config.unsubscribe_mailto {
                value.push_str(&format!(", <mailto:{m}?subject=unsubscribe>"));
            }
            b = b
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    value,
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let (text, html) = match &link {
            Some(link) => (
                format!("{}\n\n--\nUnsubscribe: {link}\n", msg.body),
                html::document(
                    &msg.body,
                    Some(&format!(
                        "<p style=\"font-size:small;color:#666\"><a href=\"{}\">Unsubscribe</a></p>",
                        html::escape(link)
                    )),
                ),
            ),
            None => (format!("{}\n", msg.body), html::document(&msg.body, None)),
        };
        let mut email = b
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(text))
                    .singlepart(SinglePart::html(html)),
            )
            .map_err(|e| format!("cannot build the email: {e}"))?;
        // Signed last: the signature covers the final headers and body.
        if let Some(d) = &self.dkim {
            lettre::message::dkim::dkim_sign(&mut email, d);
        }
        Ok(email)
    }

    async fn deliver(&self, msg: &OutMessage) -> Exchange {
        let email = match self.build_message(msg, SystemTime::now()) {
            Ok(m) => m,
            Err(reason) => return Delivery::Permanent { reason }.into(),
        };
        let id = message_id(&msg.id, self.config.from.email.domain());
        classify(self.transport.send(email).await, &id, self.config.tls)
    }
}

impl Channel for SmtpChannel {
    fn exchange<'a>(&'a self, msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        Box::pin(self.deliver(msg))
    }
}

/// `<hex(SHA-256(idempotency key))[..32]@domain>`: the same for every try.
pub fn message_id(key: &str, domain: &str) -> String {
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex = hex::encode(&digest[..16]);
    format!("<{hex}@{domain}>")
}

/// The recipient `to` names, or why it names none (a permanent failure).
pub fn recipient(to: &str) -> Result<Address, String> {
    let to = to.trim();
    parse_recipient(to).map_err(|e| format!("{to:?} is not an email address: {e}"))
}

/// The address `to` names: the planner skips a send to one that names none
/// as `bad_address` ([`super::address`]) with this same parse, so the
/// channel and the preview agree on what an email address is.
pub fn parse_recipient(to: &str) -> Result<Address, lettre::address::AddressError> {
    to.trim().parse()
}

#[cfg(test)]
mod tests;
