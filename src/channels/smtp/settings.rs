//! An `smtp` channel's settings, checked and turned into an [`SmtpChannel`].
//!
//! ```yaml
//! channels:
//!   email:
//!     kind: smtp
//!     host: smtp.example.com
//!     port: 587                 # default 587; 465 with tls: tls
//!     tls: starttls             # starttls (default) | tls | none (localhost only)
//!     username_env: SMTP_USER   # optional, with password_env
//!     password_env: SMTP_PASSWORD
//!     from: "Nurture <news@example.com>"
//!     unsubscribe_url: https://mail.example.com   # where this daemon is reachable
//!     unsubscribe_secret_env: NURTURE_UNSUBSCRIBE_SECRET  # >= 16 bytes
//!     unsubscribe_mailto: unsubscribe@example.com # optional
//!     timeout: 30s              # optional, per SMTP command
//!     tls_ca_file: relay-ca.pem # optional: also trust this CA (PEM), for a private relay
//!     dkim:                     # optional: nurture signs (h= covers List-Unsubscribe and -Post)
//!       domain: example.com     # the From domain or a parent of it
//!       selector: nurture1      # DNS: nurture1._domainkey.example.com
//!       private_key_env: DKIM_PRIVATE_KEY   # PKCS#1 PEM (rsa) or base64 seed (ed25519)
//!       algorithm: rsa          # rsa (default) | ed25519
//!     relay_signs_list_unsubscribe: true  # instead of dkim: the relay's signature covers both headers
//! ```

use std::sync::Arc;
use std::time::Duration;

use lettre::Address;
use lettre::message::Mailbox;

use super::token::UnsubscribeKey;
use super::{DEFAULT_PORT, DEFAULT_TLS_PORT, SmtpChannel, SmtpConfig, TlsMode, is_loopback};
use crate::channels::Channel;
use crate::channels::build::{option, secret_from_env};
use crate::settings::ChannelSettings;

/// SMTP servers can be slow to answer `DATA` for a large message; 30 s per
/// command is what common MTAs' clients use as a floor.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the adapter of an `smtp` channel (one problem at a time, named
/// after the key; secrets are never printed) and its unsubscribe key, which
/// the registry carries so the daemon can hand it to the API.
pub fn build(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Arc<dyn Channel>, UnsubscribeKey), String> {
    let config = config(cs, env)?;
    let key = config.unsubscribe_key.clone();
    let ch = SmtpChannel::new(config)?;
    Ok((Arc::new(ch), key))
}

/// The channel's options as an [`SmtpConfig`].
pub fn config(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SmtpConfig, String> {
    let host = option(cs, "host")
        .ok_or("an smtp channel needs \"host\" (the submission server, e.g. smtp.example.com)")?;
    let tls = match option(cs, "tls") {
        None => TlsMode::StartTls,
        Some(t) => TlsMode::parse(t).ok_or_else(|| {
            format!("tls \"{t}\" must be starttls (port 587), tls (implicit, port 465) or none")
        })?,
    };
    if tls == TlsMode::None && !is_loopback(host) {
        return Err(format!(
            "tls: none is only allowed for a relay on this machine (localhost, 127.0.0.1); \
             \"{host}\" needs starttls or tls"
        ));
    }
    let port = match option(cs, "port") {
        None if tls == TlsMode::Implicit => DEFAULT_TLS_PORT,
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port \"{p}\" must be a number from 1 to 65535"))?,
    };
    let credentials = match (option(cs, "username_env"), option(cs, "password_env")) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            if tls == TlsMode::None {
                return Err(
                    "username_env/password_env with tls: none would send the password in the \
                     clear; use starttls or tls"
                        .into(),
                );
            }
            Some((
                secret_from_env(cs, env, "username_env", "SMTP username")?,
                secret_from_env(cs, env, "password_env", "SMTP password")?,
            ))
        }
        _ => return Err("set both \"username_env\" and \"password_env\", or neither".into()),
    };
    let from_text = option(cs, "from").ok_or(
        "an smtp channel needs \"from\" (the sender, e.g. \"Nurture <news@example.com>\")",
    )?;
    let from: Mailbox = from_text
        .parse()
        .map_err(|e| format!("from \"{from_text}\" is not a mailbox: {e}"))?;
    let unsubscribe_url = unsubscribe_url(cs)?;
    let unsubscribe_mailto =
        match option(cs, "unsubscribe_mailto") {
            None => None,
            Some(m) => {
                let text = m.strip_prefix("mailto:").unwrap_or(m);
                Some(text.parse::<Address>().map_err(|e| {
                    format!("unsubscribe_mailto \"{m}\" is not an email address: {e}")
                })?)
            }
        };
    let secret = secret_from_env(cs, env, "unsubscribe_secret_env", "unsubscribe link secret")?;
    let unsubscribe_key = UnsubscribeKey::new(secret.as_bytes()).map_err(|m| {
        let var = option(cs, "unsubscribe_secret_env").unwrap_or_default();
        format!("the environment variable {var} (unsubscribe_secret_env) {m}")
    })?;
    let timeout = match option(cs, "timeout") {
        Some(_) => crate::channels::build::timeout_option(cs)?,
        None => DEFAULT_TIMEOUT,
    };
    let extra_roots_pem = match option(cs, "tls_ca_file") {
        None => None,
        Some(_) if tls == TlsMode::None => {
            return Err("tls_ca_file needs tls: starttls or tls".into());
        }
        Some(path) => {
            // A relative path is read from the working directory: channel options
            // do not know the settings file's folder. Absolute paths are clearer.
            let pem = std::fs::read(path)
                .map_err(|e| format!("tls_ca_file \"{path}\" cannot be read: {e}"))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "tls_ca_file \"{path}\" holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                ));
            }
            Some(pem)
        }
    };
    let dkim = dkim(cs, env, &from)?;
    let relay_signs_list_unsubscribe = match option(cs, "relay_signs_list_unsubscribe") {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(v) => {
            return Err(format!(
                "relay_signs_list_unsubscribe \"{v}\" must be true or false"
            ));
        }
    };
    Ok(SmtpConfig {
        dkim,
        relay_signs_list_unsubscribe,
        channel: cs.name.clone(),
        host: host.to_string(),
        port,
        tls,
        credentials,
        from,
        unsubscribe_url,
        unsubscribe_mailto,
        unsubscribe_key,
        timeout,
        extra_roots_pem,
    })
}

/// `dkim: { domain, selector, private_key_env, algorithm }`, checked: all
/// three keys, a key the signer takes, and a domain aligned with `from`
/// (DMARC passes only when `d=` is the From domain or a parent of it).
fn dkim(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
    from: &Mailbox,
) -> Result<Option<super::DkimSettings>, String> {
    let (domain, selector, key_env) = (
        option(cs, "dkim.domain"),
        option(cs, "dkim.selector"),
        option(cs, "dkim.private_key_env"),
    );
    let (domain, selector) = match (domain, selector, key_env) {
        (None, None, None) => return Ok(None),
        (Some(d), Some(s), Some(_)) => (d.trim().to_lowercase(), s.trim().to_string()),
        _ => {
            return Err(
                "dkim needs domain, selector and private_key_env (e.g. dkim: { domain: example.com, selector: nurture1, private_key_env: DKIM_PRIVATE_KEY })"
                    .into(),
            );
        }
    };
    let from_domain = from.email.domain().to_lowercase();
    if from_domain != domain && !from_domain.ends_with(&format!(".{domain}")) {
        return Err(format!(
            "dkim.domain \"{domain}\" is not the from address's domain ({from_domain}) or a parent of it: DMARC would not pass"
        ));
    }
    if selector.is_empty()
        || !selector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "dkim.selector \"{selector}\" must be a DNS label (letters, digits, -)"
        ));
    }
    let algorithm = match option(cs, "dkim.algorithm") {
        None | Some("rsa") => super::DkimAlgorithm::Rsa,
        Some("ed25519") => super::DkimAlgorithm::Ed25519,
        Some(a) => return Err(format!("dkim.algorithm \"{a}\" must be rsa or ed25519")),
    };
    let mut private_key = secret_from_env(cs, env, "dkim.private_key_env", "DKIM private key")?;
    // A PEM in one environment line (docker env files) has `\n` escapes.
    if private_key.contains("\\n") && !private_key.contains('\n') {
        private_key = private_key.replace("\\n", "\n");
    }
    let d = super::DkimSettings {
        domain,
        selector,
        private_key,
        algorithm,
    };
    // A key the signer cannot read is a settings problem, reported now.
    super::dkim_config(&d)?;
    Ok(Some(d))
}

/// `unsubscribe_url`: an https:// base URL (http:// only for localhost),
/// without query or fragment, returned without its trailing slash.
fn unsubscribe_url(cs: &ChannelSettings) -> Result<String, String> {
    let text = option(cs, "unsubscribe_url").ok_or(
        "an smtp channel needs \"unsubscribe_url\" (the https:// address where this daemon is \
         reachable from the internet, e.g. https://mail.example.com; one-click unsubscribe \
         links point there)",
    )?;
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("unsubscribe_url \"{text}\" is not a valid URL: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "unsubscribe_url \"{text}\" must be https:// (RFC 8058 requires it; http:// is \
                 only allowed for localhost)"
            ));
        }
        _ => return Err(format!("unsubscribe_url \"{text}\" must be https://")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "unsubscribe_url \"{text}\" must not have a query or fragment: the link is \
             {{unsubscribe_url}}/v1/unsubscribe/TOKEN"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Pos;
    use crate::settings::ChannelKind;
    use crate::workflow::Located;

    fn cs(opts: &[(&str, &str)]) -> ChannelSettings {
        ChannelSettings {
            name: "email".into(),
            kind: ChannelKind::Smtp,
            pos: Pos::default(),
            rate_limit: None,
            concurrency: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), Located::new(v.to_string(), Pos::default())))
                .collect(),
        }
    }

    const GOOD: &[(&str, &str)] = &[
        ("host", "smtp.example.com"),
        ("from", "Nurture <news@example.com>"),
        ("unsubscribe_url", "https://mail.example.com/"),
        ("unsubscribe_secret_env", "UNSUB"),
    ];

    fn env(name: &str) -> Option<String> {
        match name {
            "UNSUB" => Some("0123456789abcdef0123".into()),
            "SHORT" => Some("short".into()),
            "USER" => Some("me".into()),
            "PASS" => Some("hunter2-password".into()),
            _ => None,
        }
    }

    fn with(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&'static str, String)> =
            GOOD.iter().map(|(k, v)| (*k, v.to_string())).collect();
        for (k, val) in extra {
            let k: &'static str = Box::leak(k.to_string().into_boxed_str());
            v.retain(|(kk, _)| *kk != k);
            if !val.is_empty() {
                v.push((k, val.to_string()));
            }
        }
        v
    }

    fn try_config(extra: &[(&str, &str)]) -> Result<SmtpConfig, String> {
        let v = with(extra);
        let refs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        config(&cs(&refs), &env)
    }

    #[test]
    fn defaults() {
        let c = try_config(&[]).unwrap();
        assert_eq!((c.port, c.tls), (587, TlsMode::StartTls));
        assert_eq!(c.unsubscribe_url, "https://mail.example.com");
        assert_eq!(c.from.email.domain(), "example.com");
        assert!(c.credentials.is_none() && c.unsubscribe_mailto.is_none());
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        let c = try_config(&[("tls", "tls")]).unwrap();
        assert_eq!((c.port, c.tls), (465, TlsMode::Implicit));
        let c = try_config(&[
            ("port", "2525"),
            ("username_env", "USER"),
            ("password_env", "PASS"),
            ("unsubscribe_mailto", "mailto:unsub@example.com"),
        ])
        .unwrap();
        assert_eq!(c.port, 2525);
        assert_eq!(
            c.credentials,
            Some(("me".into(), "hunter2-password".into()))
        );
        assert_eq!(
            c.unsubscribe_mailto.as_ref().unwrap().to_string(),
            "unsub@example.com"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn problems() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("host", "")], "needs \"host\""),
            (&[("from", "")], "needs \"from\""),
            (&[("from", "not an address")], "is not a mailbox"),
            (&[("unsubscribe_url", "")], "needs \"unsubscribe_url\""),
            (
                &[("unsubscribe_url", "http://mail.example.com")],
                "must be https://",
            ),
            (&[("unsubscribe_url", "ftp://x")], "must be https://"),
            (
                &[("unsubscribe_url", "https://x/?a=1")],
                "query or fragment",
            ),
            (
                &[("unsubscribe_secret_env", "")],
                "needs \"unsubscribe_secret_env\"",
            ),
            (
                &[("unsubscribe_secret_env", "NOPE")],
                "NOPE (unsubscribe_secret_env) is not set",
            ),
            (&[("unsubscribe_secret_env", "SHORT")], "at least 16"),
            (&[("tls", "ssl")], "must be starttls"),
            (
                &[("tls", "none")],
                "only allowed for a relay on this machine",
            ),
            (&[("port", "0")], "from 1 to 65535"),
            (&[("port", "smtp")], "from 1 to 65535"),
            (&[("username_env", "USER")], "both"),
            (
                &[("username_env", "USER"), ("password_env", "NOPE")],
                "NOPE",
            ),
            (&[("unsubscribe_mailto", "nope")], "not an email address"),
            (&[("timeout", "soon")], "timeout"),
            (&[("tls_ca_file", "/nonexistent/ca.pem")], "cannot be read"),
            (&[("tls_ca_file", "/dev/null")], "no PEM certificate"),
            (
                &[
                    ("host", "localhost"),
                    ("tls", "none"),
                    ("tls_ca_file", "/dev/null"),
                ],
                "needs tls: starttls or tls",
            ),
            (
                &[
                    ("host", "127.0.0.1"),
                    ("tls", "none"),
                    ("username_env", "USER"),
                    ("password_env", "PASS"),
                ],
                "in the clear",
            ),
        ];
        for (extra, want) in cases {
            let e = try_config(extra)
                .err()
                .unwrap_or_else(|| panic!("{extra:?} is accepted"));
            assert!(e.contains(want), "{extra:?}: {e}");
            assert!(
                !e.contains("0123456789abcdef") && !e.contains("hunter2"),
                "{e}"
            );
        }
        // Loopback relays and test links are fine without TLS.
        let c = try_config(&[
            ("host", "localhost"),
            ("tls", "none"),
            ("unsubscribe_url", "http://127.0.0.1:8080"),
        ])
        .unwrap();
        assert_eq!(c.tls, TlsMode::None);
    }
}
