//! The callback's settings, read from the `kind: wecom` channels of
//! `nurture.yaml`:
//!
//! ```yaml
//! channels:
//!   wecom:
//!     kind: wecom
//!     corp_id_env: WECOM_CORP_ID        # also the adapter's; checked as receiveid
//!     secret_env: WECOM_SECRET          # the adapter's
//!     token_env: WECOM_CALLBACK_TOKEN   # the callback's Token
//!     aes_key_env: WECOM_CALLBACK_AES_KEY  # its 43-character EncodingAESKey
//! ```
//!
//! `token_env` and `aes_key_env` come together: a channel with neither has no
//! callback; one with only one of them is an error. Several channels may
//! have a callback (several apps or corps): a request is checked against
//! each, and the one whose Token signs it handles it.
//!
//! Read on every request (the env lookups and one base64 decode are cheap),
//! so a settings reload applies at once. Messages name channels, keys and
//! variables, never a value.

use std::path::Path;

use crate::api::wecom_crypto::WecomCrypto;
use crate::diagnostics::{Diagnostic, Pos};
use crate::settings::{ChannelKind, ChannelSettings, Settings};

pub const TOKEN_ENV: &str = "token_env";
pub const AES_KEY_ENV: &str = "aes_key_env";
pub const CORP_ID_ENV: &str = "corp_id_env";

/// One channel's callback, ready to verify and decrypt.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub channel: String,
    pub crypto: WecomCrypto,
}

/// Why a channel's callback settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub channel: String,
    /// Where in `nurture.yaml` (the offending key, else the channel).
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "channel \"{}\": {}", self.channel, self.message)
    }
}

/// Every wecom channel's callback: the usable ones and the problems. Both
/// empty means no channel has a callback (the route answers 404).
pub fn resolve(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<CallbackConfig>, Vec<ConfigError>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for cs in settings.channels.values() {
        if cs.kind != ChannelKind::Wecom {
            continue;
        }
        match resolve_channel(cs, env) {
            Ok(Some(c)) => ok.push(c),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

/// `nurture validate`'s view of [`resolve`]: one diagnostic per problem, at
/// the offending key in `file`.
pub fn diagnostics(
    settings: &Settings,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Diagnostic> {
    resolve(settings, env)
        .1
        .into_iter()
        .map(|e| Diagnostic::new(file, e.pos, e.to_string()))
        .collect()
}

fn option<'a>(cs: &'a ChannelSettings, key: &str) -> Option<(&'a str, Pos)> {
    cs.options
        .get(key)
        .map(|v| (v.value.trim(), v.pos))
        .filter(|(v, _)| !v.is_empty())
}

/// `Ok(None)`: the channel has no callback.
fn resolve_channel(
    cs: &ChannelSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<CallbackConfig>, ConfigError> {
    let err = |pos: Pos, message: String| ConfigError {
        channel: cs.name.clone(),
        pos,
        message,
    };
    let (token_var, aes_var) = match (option(cs, TOKEN_ENV), option(cs, AES_KEY_ENV)) {
        (None, None) => return Ok(None),
        (Some(t), Some(a)) => (t, a),
        (Some((_, pos)), None) | (None, Some((_, pos))) => {
            return Err(err(
                pos,
                format!(
                    "{TOKEN_ENV} and {AES_KEY_ENV} go together: the WeCom callback needs both \
                     (the Token and the EncodingAESKey set on the app's callback), or neither"
                ),
            ));
        }
    };
    let Some((corp_var, corp_pos)) = option(cs, CORP_ID_ENV) else {
        return Err(err(
            cs.pos,
            format!(
                "the WeCom callback needs \"{CORP_ID_ENV}\" (the environment variable holding \
                 the corp id, which every callback's receiveid must match)"
            ),
        ));
    };
    let value = |(var, pos): (&str, Pos), key: &str| -> Result<String, ConfigError> {
        match env(var) {
            Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Some(_) => Err(err(
                pos,
                format!("the environment variable {var} ({key}) is empty"),
            )),
            None => Err(err(
                pos,
                format!("the environment variable {var} ({key}) is not set"),
            )),
        }
    };
    let token = value(token_var, TOKEN_ENV)?;
    let aes_key = value(aes_var, AES_KEY_ENV)?;
    let corp_id = value((corp_var, corp_pos), CORP_ID_ENV)?;
    let crypto = WecomCrypto::new(&token, &aes_key, &corp_id).map_err(|_| {
        let (var, pos) = aes_var;
        let n = aes_key.chars().count();
        let what = if n != 43 {
            format!("it has {n} characters")
        } else {
            "it has characters outside A-Z a-z 0-9 + /".to_string()
        };
        err(
            pos,
            format!(
                "the environment variable {var} ({AES_KEY_ENV}) is not an EncodingAESKey: \
                 expected 43 base64 characters, as WeCom shows it; {what}"
            ),
        )
    })?;
    Ok(Some(CallbackConfig {
        channel: cs.name.clone(),
        crypto,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Located;
    use std::path::PathBuf;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn settings(opts: &[(&str, &str)]) -> Settings {
        let mut s = Settings::defaults(PathBuf::from("."));
        s.channels.insert(
            "wecom".into(),
            ChannelSettings {
                name: "wecom".into(),
                kind: ChannelKind::Wecom,
                pos: Pos::new(3, 3),
                rate_limit: None,
                concurrency: None,
                options: opts
                    .iter()
                    .map(|(k, v)| (k.to_string(), Located::new(v.to_string(), Pos::new(4, 5))))
                    .collect(),
            },
        );
        s
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "TOK" => Some("QDG6eK".into()),
            "AES" => Some(KEY.into()),
            "CORP" => Some("wx5823bf96d3bd56c7".into()),
            "SHORT" => Some("abc-secret-value".into()),
            "BADCHARS" => Some(format!("{}-", &KEY[..42])),
            "EMPTY" => Some("  ".into()),
            _ => None,
        }
    }

    fn errors(opts: &[(&str, &str)]) -> Vec<String> {
        let (ok, errs) = resolve(&settings(opts), &env);
        assert!(ok.is_empty());
        errs.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn resolves_and_reports_without_values() {
        let full = [
            ("corp_id_env", "CORP"),
            ("token_env", "TOK"),
            ("aes_key_env", "AES"),
        ];
        let (ok, errs) = resolve(&settings(&full), &env);
        assert!(errs.is_empty());
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].crypto.corp_id(), "wx5823bf96d3bd56c7");
        // No callback keys: no callback, no error.
        let (ok, errs) = resolve(&settings(&[("corp_id_env", "CORP")]), &env);
        assert!(ok.is_empty() && errs.is_empty());

        let e = errors(&[("corp_id_env", "CORP"), ("token_env", "TOK")]);
        assert!(e[0].contains("go together"), "{e:?}");
        let e = errors(&[("token_env", "TOK"), ("aes_key_env", "AES")]);
        assert!(e[0].contains("corp_id_env"), "{e:?}");
        let e = errors(&[
            ("corp_id_env", "CORP"),
            ("token_env", "NOPE"),
            ("aes_key_env", "AES"),
        ]);
        assert!(e[0].contains("NOPE (token_env) is not set"), "{e:?}");
        let e = errors(&[
            ("corp_id_env", "CORP"),
            ("token_env", "TOK"),
            ("aes_key_env", "EMPTY"),
        ]);
        assert!(e[0].contains("EMPTY (aes_key_env) is empty"), "{e:?}");
        let e = errors(&[
            ("corp_id_env", "CORP"),
            ("token_env", "TOK"),
            ("aes_key_env", "SHORT"),
        ]);
        assert!(e[0].contains("has 16 characters"), "{e:?}");
        assert!(!e[0].contains("abc-secret-value"));
        let e = errors(&[
            ("corp_id_env", "CORP"),
            ("token_env", "TOK"),
            ("aes_key_env", "BADCHARS"),
        ]);
        assert!(e[0].contains("outside"), "{e:?}");
        assert!(!e[0].contains(&KEY[..42]));

        let d = diagnostics(
            &settings(&[("corp_id_env", "CORP"), ("token_env", "TOK")]),
            Path::new("nurture.yaml"),
            &env,
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].pos, Pos::new(4, 5));
    }
}
