//! `channels:` in `nurture.yaml`: each channel's kind, rate limit,
//! concurrency and provider options (secrets only as `*_env` names), and how
//! they are read.

use std::collections::BTreeMap;

use super::{check_env_name, looks_secret};
use crate::diagnostics::{Diagnostic, Pos};
use crate::duration::Duration;
use crate::located::Located;
use crate::yaml::{Node, Reader};

#[derive(Debug, Clone)]
pub struct ChannelSettings {
    pub name: String,
    pub kind: ChannelKind,
    pub pos: Pos,
    /// Requests per second allowed (from `rate_limit: 50/s`, `600/m`).
    pub rate_limit: Option<RateLimit>,
    pub concurrency: Option<u32>,
    /// Every other key, kept for the provider's adapter (`base_url`, `from`,
    /// `*_env`, ...), as strings.
    pub options: BTreeMap<String, Located<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Twilio,
    AliyunSms,
    Wecom,
    Smtp,
    Webhook,
    Log,
}

impl ChannelKind {
    pub const ALL: &[(&str, ChannelKind)] = &[
        ("twilio", ChannelKind::Twilio),
        ("aliyun_sms", ChannelKind::AliyunSms),
        ("wecom", ChannelKind::Wecom),
        ("smtp", ChannelKind::Smtp),
        ("webhook", ChannelKind::Webhook),
        ("log", ChannelKind::Log),
    ];

    pub fn name(self) -> &'static str {
        ChannelKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("log")
    }

    /// The contact field a message on this kind of channel is addressed to.
    pub fn address_field(self) -> Option<&'static str> {
        match self {
            ChannelKind::Twilio | ChannelKind::AliyunSms => Some("phone"),
            ChannelKind::Smtp => Some("email"),
            ChannelKind::Wecom => Some("wecom_external_userid"),
            // A webhook or the log reaches the contact by id: there is always an address.
            ChannelKind::Webhook | ChannelKind::Log => None,
        }
    }

    /// The longest message a channel of this kind takes; a longer rendered
    /// message is skipped with a reason (README, "Limits").
    pub fn message_limit(self) -> crate::template::MessageLimit {
        use crate::template::MessageLimit;
        match self {
            // Twilio refuses bodies over 1,600 characters.
            ChannelKind::Twilio => MessageLimit::Chars(1600),
            // Aliyun splits long SMS and caps them at 500 characters.
            ChannelKind::AliyunSms => MessageLimit::Chars(500),
            // WeCom's welcome and customer messages take 4,000 bytes of text.
            ChannelKind::Wecom => MessageLimit::Bytes(4000),
            ChannelKind::Smtp | ChannelKind::Webhook => MessageLimit::Bytes(1024 * 1024),
            // Every message on the log channel is one log line.
            ChannelKind::Log => MessageLimit::Bytes(64 * 1024),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

/// `50/s`, `600/m`, `1000/h`.
pub fn parse_rate(text: &str) -> Option<RateLimit> {
    let (count, unit) = text.trim().split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3_600),
        "d" => Duration::from_secs(86_400),
        _ => return None,
    };
    Some(RateLimit { count, per })
}

pub(super) fn read_channels(r: &mut Reader, node: &Node) -> BTreeMap<String, ChannelSettings> {
    let mut out = BTreeMap::new();
    let Some(entries) = node.as_map() else {
        if !node.is_null() {
            r.error(
                node.pos,
                format!(
                    "channels must be a map of name: settings, found {}",
                    node.describe()
                ),
            );
        }
        return out;
    };
    let kinds: Vec<&str> = ChannelKind::ALL.iter().map(|(n, _)| *n).collect();
    for (k, v) in entries {
        let Some(name) = r.string(k, "a channel name") else {
            continue;
        };
        let Some(m) = v.as_map() else {
            r.error(
                v.pos,
                format!(
                    "channel \"{name}\" must be a map with a kind, found {}",
                    v.describe()
                ),
            );
            continue;
        };
        let mut ch = ChannelSettings {
            name: name.clone(),
            kind: ChannelKind::Log,
            pos: k.pos,
            rate_limit: None,
            concurrency: None,
            options: BTreeMap::new(),
        };
        let mut kind_ok = false;
        for (ok, ov) in m {
            let Some(key) = ok.scalar_text() else {
                continue;
            };
            match key {
                "kind" => {
                    let Some(kind) = r.string(ov, "kind") else {
                        continue;
                    };
                    match ChannelKind::ALL.iter().find(|(n, _)| *n == kind) {
                        Some((_, kd)) => {
                            ch.kind = *kd;
                            kind_ok = true;
                        }
                        None => {
                            let mut d = Diagnostic::new(
                                r.file,
                                ov.pos,
                                format!("unknown channel kind \"{kind}\""),
                            )
                            .did_you_mean(&kind, &kinds);
                            if d.suggestion.is_none() {
                                d = d.with_suggestion(format!("kinds are: {}", kinds.join(", ")));
                            }
                            r.push(d);
                            // Reported; avoid a second "needs a kind".
                            kind_ok = true;
                        }
                    }
                }
                "rate_limit" => {
                    let Some(t) = r.string(ov, "rate_limit") else {
                        continue;
                    };
                    match parse_rate(&t) {
                        Some(rl) => ch.rate_limit = Some(rl),
                        None => r.error(
                            ov.pos,
                            format!("rate_limit \"{t}\" must be COUNT/UNIT with a unit of s, m or h, e.g. 50/s or 600/m"),
                        ),
                    }
                }
                // `dkim: { domain, selector, private_key_env }` (an smtp
                // channel's signing key): kept as `dkim.KEY` options.
                "dkim" => {
                    let Some(sub) = ov.as_map() else {
                        r.error(
                            ov.pos,
                            format!(
                                "dkim must be a map: dkim: {{ domain: example.com, selector: s1, private_key_env: DKIM_KEY }}, found {}",
                                ov.describe()
                            ),
                        );
                        continue;
                    };
                    for (sk, sv) in sub {
                        let Some(skey) = sk.scalar_text() else {
                            continue;
                        };
                        if !["domain", "selector", "private_key_env", "algorithm"].contains(&skey) {
                            r.error(
                                sk.pos,
                                format!("unknown dkim key \"{skey}\"; keys are domain, selector, private_key_env, algorithm"),
                            );
                            continue;
                        }
                        let Some(text) = sv.scalar_text().map(str::to_string) else {
                            r.error(sv.pos, format!("dkim.{skey} must be a single value"));
                            continue;
                        };
                        if skey.ends_with("_env") {
                            check_env_name(r, sv, &text);
                        }
                        ch.options
                            .insert(format!("dkim.{skey}"), Located::new(text, sv.pos));
                    }
                }
                "concurrency" => {
                    if let Some(c) = r.u32(ov, "concurrency") {
                        if c == 0 {
                            r.error(ov.pos, "concurrency must be at least 1");
                        } else {
                            ch.concurrency = Some(c);
                        }
                    }
                }
                _ => {
                    let Some(text) = ov.scalar_text().map(str::to_string) else {
                        r.error(
                            ov.pos,
                            format!(
                                "channel option \"{key}\" must be a single value, found {}",
                                ov.describe()
                            ),
                        );
                        continue;
                    };
                    if key.ends_with("_env") {
                        check_env_name(r, ov, &text);
                    } else if looks_secret(key) {
                        r.push(
                            Diagnostic::new(r.file, ok.pos, format!("\"{key}\" looks like a secret written into the file"))
                                .with_suggestion(format!(
                                    "keep secrets out of nurture.yaml: write \"{key}_env: SOME_VAR\" and put the secret in that environment variable"
                                )),
                        );
                        continue;
                    }
                    ch.options
                        .insert(key.to_string(), Located::new(text, ov.pos));
                }
            }
        }
        if !kind_ok {
            r.push(
                Diagnostic::new(r.file, k.pos, format!("channel \"{name}\" needs a kind"))
                    .with_suggestion(format!("kinds are: {}", kinds.join(", "))),
            );
        }
        out.insert(name, ch);
    }
    out
}
