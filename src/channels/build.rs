//! Building the channel [`Registry`] from the settings: one adapter per
//! configured channel, secrets read from the env vars named by `*_env` keys.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::aliyun_sms::{AliyunSmsChannel, AliyunSmsConfig};
use super::log::LogChannel;
use super::twilio::{Sender, TwilioChannel, TwilioConfig};
use super::webhook::{DEFAULT_TIMEOUT, Secret, WebhookChannel, WebhookConfig, proxy_configured};
use super::wecom::token::TokenCaches;
use super::wecom::{WecomChannel, WecomConfig};
use super::{Channel, ChannelError, Delivery, Exchange, OutMessage, Registry};
use crate::logging::LogFormat;
use crate::settings::{ChannelKind, ChannelSettings, Settings};
use crate::store::Store;
use crate::wecom::tag_marks::MarksQueued;

/// In-flight requests of a channel without `concurrency` in its settings.
pub const DEFAULT_CONCURRENCY: u32 = 64;

/// Builds every channel of `settings`, reading secrets from the process
/// environment. Every problem is reported (not only the first); an error
/// names the channel and the env var, never a secret's value.
pub fn build_registry(settings: &Settings) -> Result<Registry, Vec<ChannelError>> {
    build_registry_with_env(settings, &|name| std::env::var(name).ok())
}

/// What the channels share with their owner (the daemon, a command, a
/// test): handles passed in, not process globals, so two daemons in one
/// process never share state and a reload's channels get the same handles.
#[derive(Clone, Debug, Default)]
pub struct Handles {
    /// Channels that keep state in the store (the WeCom channel's welcome
    /// codes and tasks) get it; none when the channels are only checked.
    pub store: Option<Store>,
    /// The WeCom apps' token caches, shared by the channels and the WeCom
    /// workers (poller, tag sync, marks) of one owner.
    pub wecom_tokens: TokenCaches,
    /// The daemon's log format, which the log channel writes in.
    pub log_format: LogFormat,
    /// The WeCom tag marks worker's wake-up (a channel that reads a
    /// customer's relationships may queue marks for them).
    pub marks_queued: MarksQueued,
}

impl Handles {
    /// Handles with `store` (the daemon's, or a command's that sends).
    pub fn with_store(store: &Store) -> Handles {
        Handles {
            store: Some(store.clone()),
            ..Handles::default()
        }
    }
}

/// [`build_registry`] for a command that sends: channels that keep state in
/// the store (the WeCom channel's welcome codes and tasks) get `store`.
pub fn build_registry_with_store(
    settings: &Settings,
    store: &Store,
) -> Result<Registry, Vec<ChannelError>> {
    build_registry_full(
        settings,
        &|name| std::env::var(name).ok(),
        &Handles::with_store(store),
    )
}

/// [`build_registry`] with the environment given as a lookup function (tests).
pub fn build_registry_with_env(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Registry, Vec<ChannelError>> {
    build_registry_full(settings, env, &Handles::default())
}

/// [`build_registry`] with the environment given as a lookup function and
/// the owner's handles.
pub fn build_registry_full(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    handles: &Handles,
) -> Result<Registry, Vec<ChannelError>> {
    let mut registry = Registry {
        policy: super::DeliveryPolicy::of(settings),
        ..Registry::default()
    };
    let mut errors = Vec::new();
    for (name, cs) in &settings.channels {
        let built = if cs.kind == ChannelKind::Wecom {
            // The WeCom channel also needs the teams (senders) and the store.
            build_wecom(cs, settings, env, handles).map_err(|message| ChannelError {
                channel: cs.name.clone(),
                message,
            })
        } else if cs.kind == ChannelKind::Smtp {
            // Its unsubscribe key goes with the registry, for the API.
            super::smtp::build(cs, env)
                .map(|(ch, key)| {
                    registry.unsubscribe_keys.push((name.clone(), key));
                    ch
                })
                .map_err(|message| ChannelError {
                    channel: cs.name.clone(),
                    message,
                })
        } else {
            build_channel(cs, env, handles)
        };
        match built {
            Ok(ch) => {
                registry.channels.insert(name.clone(), (cs.clone(), ch));
            }
            Err(e) => {
                // Every problem of the channel at once, not one per run:
                // the builder stops at its first; the others it would meet
                // (unset variables, bad URLs and timeouts) are added.
                let more: Vec<String> = more_problems(cs, env)
                    .into_iter()
                    .filter(|m| *m != e.message)
                    .collect();
                errors.push(e);
                for message in more {
                    errors.push(ChannelError {
                        channel: cs.name.clone(),
                        message,
                    });
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(registry)
    } else {
        Err(errors)
    }
}

/// The problems of a channel's options that can be told without building
/// it: every `*_env` variable unset or empty, a URL or a timeout that does
/// not parse. (The WeCom callback's `token_env` and `aes_key_env` are
/// checked with the callback's settings.)
fn more_problems(cs: &ChannelSettings, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, v) in &cs.options {
        let var = v.value.as_str();
        if key.ends_with("_env") && key != "token_env" && key != "aes_key_env" {
            match env(var) {
                Some(x) if !x.trim().is_empty() => {}
                Some(_) => out.push(format!("the environment variable {var} ({key}) is empty")),
                None => out.push(format!("the environment variable {var} ({key}) is not set")),
            }
        }
        if key == "url" || key == "base_url" {
            match reqwest::Url::parse(var) {
                Err(e) => out.push(format!("{key} \"{var}\" is not a valid URL: {e}")),
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    out.push(format!("{key} \"{var}\" must be http:// or https://"))
                }
                Ok(_) => {}
            }
        }
        if key == "timeout" && parse_timeout(var).is_none() {
            out.push(format!(
                "timeout \"{var}\" must be a duration such as 15s, 1m or 500ms"
            ));
        }
    }
    out
}

/// Builds the adapter of one channel.
pub fn build_channel(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
    handles: &Handles,
) -> Result<Arc<dyn Channel>, ChannelError> {
    let err = |message: String| ChannelError {
        channel: cs.name.clone(),
        message,
    };
    match cs.kind {
        ChannelKind::Log => Ok(Arc::new(LogChannel {
            format: handles.log_format,
        })),
        ChannelKind::Webhook => {
            let url_text = option(cs, "url").ok_or_else(|| {
                err("a webhook channel needs \"url\" (the full URL to POST to)".into())
            })?;
            let url = reqwest::Url::parse(url_text)
                .map_err(|e| err(format!("url \"{url_text}\" is not a valid URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(err(format!(
                    "url \"{url_text}\" must be http:// or https://"
                )));
            }
            let secret = match option(cs, "secret_env") {
                Some(var) => {
                    let value = env(var).ok_or_else(|| {
                        err(format!(
                            "the environment variable {var} (secret_env) is not set"
                        ))
                    })?;
                    Some(Secret::parse(&value).map_err(|m| {
                        err(format!("the environment variable {var} (secret_env): {m}"))
                    })?)
                }
                None => None,
            };
            let timeout = match option(cs, "timeout") {
                Some(t) => parse_timeout(t).ok_or_else(|| {
                    err(format!(
                        "timeout \"{t}\" must be a duration such as 15s, 1m or 500ms"
                    ))
                })?,
                None => DEFAULT_TIMEOUT,
            };
            let ch = WebhookChannel::new(WebhookConfig {
                url,
                secret,
                timeout,
                max_idle: cs.concurrency.unwrap_or(DEFAULT_CONCURRENCY) as usize,
                proxied: proxy_configured(env),
            })
            .map_err(err)?;
            Ok(Arc::new(ch))
        }
        ChannelKind::Twilio => build_twilio(cs, env).map_err(err),
        ChannelKind::AliyunSms => build_aliyun_sms(cs, env).map_err(err),
        ChannelKind::Smtp => super::smtp::build(cs, env).map(|(ch, _)| ch).map_err(err),
        // Without the settings' teams and a store, a send to a contact has no
        // sender: `build_registry*` build WeCom channels whole.
        ChannelKind::Wecom => {
            build_wecom(cs, &Settings::defaults(".".into()), env, handles).map_err(err)
        }
    }
}

/// The value of the env var named by option `key` (`*_env`), both required.
pub(super) fn secret_from_env(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
    key: &str,
    what: &str,
) -> Result<String, String> {
    let kind = cs.kind.name();
    let var = option(cs, key).ok_or_else(|| {
        format!("a {kind} channel needs \"{key}\" (the environment variable holding the {what})")
    })?;
    match env(var) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Some(_) => Err(format!("the environment variable {var} ({key}) is empty")),
        None => Err(format!("the environment variable {var} ({key}) is not set")),
    }
}

/// `base_url` (default `default`), checked to be http(s).
fn base_url(cs: &ChannelSettings, default: &str) -> Result<reqwest::Url, String> {
    let text = option(cs, "base_url").unwrap_or(default);
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("base_url \"{text}\" is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("base_url \"{text}\" must be http:// or https://"));
    }
    Ok(url)
}

pub(super) fn timeout_option(cs: &ChannelSettings) -> Result<Duration, String> {
    match option(cs, "timeout") {
        Some(t) => parse_timeout(t)
            .ok_or_else(|| format!("timeout \"{t}\" must be a duration such as 15s, 1m or 500ms")),
        None => Ok(DEFAULT_TIMEOUT),
    }
}

fn build_twilio(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Channel>, String> {
    let base_url = base_url(cs, super::twilio::DEFAULT_BASE_URL)?;
    let sender = match (option(cs, "from"), option(cs, "messaging_service_sid")) {
        (Some(f), None) => Sender::From(f.to_string()),
        (None, Some(s)) => Sender::MessagingService(s.to_string()),
        (Some(_), Some(_)) => {
            return Err("set either \"from\" or \"messaging_service_sid\", not both".into());
        }
        (None, None) => {
            return Err(
                "a twilio channel needs \"from\" (a sender number) or \"messaging_service_sid\""
                    .into(),
            );
        }
    };
    let account_sid = secret_from_env(cs, env, "account_sid_env", "account SID")?;
    let auth_token = secret_from_env(cs, env, "auth_token_env", "auth token")?;
    let ch = TwilioChannel::new(TwilioConfig {
        base_url,
        account_sid,
        auth_token,
        sender,
        timeout: timeout_option(cs)?,
        max_idle: cs.concurrency.unwrap_or(DEFAULT_CONCURRENCY) as usize,
    })?;
    Ok(Arc::new(ch))
}

fn build_aliyun_sms(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Channel>, String> {
    let base_url = base_url(cs, super::aliyun_sms::DEFAULT_BASE_URL)?;
    let sign_name = option(cs, "sign_name")
        .ok_or("an aliyun_sms channel needs \"sign_name\" (the approved SMS signature)")?;
    let template_code = option(cs, "template_code").ok_or(
        "an aliyun_sms channel needs \"template_code\" (e.g. SMS_15305...; its one variable is ${content})",
    )?;
    let access_key_id = secret_from_env(cs, env, "access_key_id_env", "AccessKey ID")?;
    let access_key_secret = secret_from_env(cs, env, "access_key_secret_env", "AccessKey secret")?;
    let ch = AliyunSmsChannel::new(AliyunSmsConfig {
        base_url,
        access_key_id,
        access_key_secret,
        sign_name: sign_name.to_string(),
        template_code: template_code.to_string(),
        region_id: option(cs, "region_id").unwrap_or("cn-hangzhou").to_string(),
        timeout: timeout_option(cs)?,
        max_idle: cs.concurrency.unwrap_or(DEFAULT_CONCURRENCY) as usize,
    })?;
    Ok(Arc::new(ch))
}

/// A `wecom` channel's options (reference §1): `corp_id_env`, `secret_env`,
/// `agent_id` (an integer, the app that sends notices), `base_url`,
/// `mass_message_cap` (informational: `month`, `week`, `day`),
/// `poll_interval` (default 60 s), `remind_after` (none), `timeout`,
/// `mark_tags` (default true) and `tag_group` (default `nurture`: see
/// `wecom::tag_marks`). Senders come from the
/// settings' teams (salesperson id → `wecom_userid`).
pub fn wecom_config(
    cs: &ChannelSettings,
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    tokens: &TokenCaches,
) -> Result<WecomConfig, String> {
    let base_url = base_url(cs, super::wecom::DEFAULT_BASE_URL)?;
    let agent_id = option(cs, "agent_id").ok_or(
        "a wecom channel needs \"agent_id\" (the integer AgentId of the app that sends notices)",
    )?;
    let agent_id: i64 = agent_id
        .parse()
        .map_err(|_| format!("agent_id \"{agent_id}\" must be an integer (the app's AgentId)"))?;
    crate::wecom::tag_marks::check_options(cs)?;
    let corp_id = secret_from_env(cs, env, "corp_id_env", "corp id")?;
    let secret = secret_from_env(cs, env, "secret_env", "app secret")?;
    let poll_interval = match option(cs, "poll_interval") {
        Some(t) => parse_timeout(t).ok_or_else(|| {
            format!("poll_interval \"{t}\" must be a duration such as 60s, 5m or 500ms")
        })?,
        None => super::wecom::DEFAULT_POLL_INTERVAL,
    };
    let remind_after =
        match option(cs, "remind_after") {
            Some(t) => Some(parse_timeout(t).ok_or_else(|| {
                format!("remind_after \"{t}\" must be a duration such as 4h or 30m")
            })?),
            None => None,
        };
    let senders = settings
        .teams
        .values()
        .flatten()
        .filter_map(|p| Some((p.id.clone(), p.wecom_userid.clone()?)))
        .collect();
    Ok(WecomConfig {
        name: cs.name.clone(),
        base_url,
        corp_id,
        secret,
        agent_id,
        mass_message_cap: option(cs, "mass_message_cap").map(str::to_string),
        poll_interval,
        remind_after,
        timeout: timeout_option(cs)?,
        max_idle: cs.concurrency.unwrap_or(DEFAULT_CONCURRENCY) as usize,
        senders,
        root: settings.root.clone(),
        tokens: tokens.clone(),
    })
}

fn build_wecom(
    cs: &ChannelSettings,
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    handles: &Handles,
) -> Result<Arc<dyn Channel>, String> {
    let config = wecom_config(cs, settings, env, &handles.wecom_tokens)?;
    Ok(Arc::new(WecomChannel::new(
        config,
        handles.store.clone(),
        handles.marks_queued.clone(),
    )?))
}

pub(super) fn option<'a>(cs: &'a ChannelSettings, key: &str) -> Option<&'a str> {
    cs.options
        .get(key)
        .map(|v| v.value.trim())
        .filter(|v| !v.is_empty())
}

/// `500ms`, or a nurture duration (`15s`, `1m`, ...). Zero is refused.
fn parse_timeout(text: &str) -> Option<Duration> {
    let t = text.trim();
    let d = if let Some(ms) = t.strip_suffix("ms") {
        Duration::from_millis(ms.trim().parse().ok()?)
    } else {
        let d: crate::duration::Duration = t.parse().ok()?;
        Duration::from_secs(u64::try_from(d.secs()).ok()?)
    };
    (!d.is_zero()).then_some(d)
}

/// The adapter of a kind nurture cannot talk to yet: every message is a
/// permanent failure with a reason that says so, so the daemon keeps running
/// the other channels.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported {
    pub kind: ChannelKind,
}

impl Channel for Unsupported {
    fn exchange<'a>(&'a self, _msg: &'a OutMessage) -> BoxFuture<'a, Exchange> {
        Box::pin(std::future::ready(
            Delivery::Permanent {
                reason: format!("channel kind {} is not supported yet", self.kind.name()),
            }
            .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Pos;
    use crate::workflow::Located;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn channel(name: &str, kind: ChannelKind, opts: &[(&str, &str)]) -> ChannelSettings {
        ChannelSettings {
            name: name.into(),
            kind,
            pos: Pos::default(),
            rate_limit: None,
            concurrency: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), Located::new(v.to_string(), Pos::default())))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_timeout("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("0s"), None);
        assert_eq!(parse_timeout("fast"), None);
    }

    #[test]
    fn builds_and_reports_every_problem() {
        let mut s = Settings::defaults(PathBuf::from("."));
        for c in [
            channel(
                "hook",
                ChannelKind::Webhook,
                &[
                    ("url", "http://127.0.0.1:9/x"),
                    ("secret_env", "HOOK_SECRET"),
                ],
            ),
            channel("nourl", ChannelKind::Webhook, &[]),
            channel(
                "nosecret",
                ChannelKind::Webhook,
                &[
                    ("url", "http://127.0.0.1:9/x"),
                    ("secret_env", "MISSING_SECRET"),
                ],
            ),
            channel("wc", ChannelKind::Wecom, &[("corp_id_env", "HOOK_SECRET")]),
        ] {
            s.channels.insert(c.name.clone(), c);
        }
        let env = |name: &str| (name == "HOOK_SECRET").then(|| "s3cr3t-value".to_string());
        let errs = build_registry_with_env(&s, &env)
            .err()
            .expect("three errors");
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("\"wc\"") && t.contains("needs \"agent_id\""))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("\"nourl\"") && t.contains("needs \"url\""))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("\"nosecret\"") && t.contains("MISSING_SECRET"))
        );
        assert!(text.iter().all(|t| !t.contains("s3cr3t")));

        s.channels.remove("nourl");
        s.channels.remove("nosecret");
        s.channels.remove("wc");
        let reg = build_registry_with_env(&s, &env).expect("builds");
        assert!(reg.get("hook").is_some() && reg.get("console").is_some());
        let sms = Unsupported {
            kind: ChannelKind::Wecom,
        };
        let msg = OutMessage {
            id: "m".into(),
            workflow: "w".into(),
            contact_id: "c".into(),
            step_id: "0".into(),
            channel: "sms".into(),
            to: "+1".into(),
            subject: None,
            body: "hi".into(),
            contact: serde_json::Value::Null,
            attempt: 1,
            payload: serde_json::json!({}),
            in_doubt: false,
        };
        let d = futures::executor::block_on(sms.send(&msg));
        assert_eq!(
            d,
            Delivery::Permanent {
                reason: "channel kind wecom is not supported yet".into()
            }
        );
    }
}
