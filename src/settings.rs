//! `nurture.yaml`: where the store is, where the files are, policies,
//! channels and teams. Every key has a default, so a fresh folder works.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono_tz::Tz;

use crate::diagnostics::Pos;
use crate::duration::Duration;
use crate::workflow::Located;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from, if any.
    pub file: Option<PathBuf>,
    /// Folder of the settings file: relative paths are taken from here.
    pub root: PathBuf,
    /// `NURTURE_DATABASE` overrides the file's `database`.
    pub database: String,
    pub workflows_dir: PathBuf,
    pub templates_dir: PathBuf,
    pub timezone: Tz,
    pub listen: String,
    pub api_token_env: String,
    pub policies: Policies,
    pub channels: BTreeMap<String, ChannelSettings>,
    pub teams: BTreeMap<String, Vec<Salesperson>>,
    /// Custom contact attributes the workflows and templates may use, with
    /// their types. Unknown names in conditions and templates are reported
    /// against this list; the sample contact of `validate` carries them.
    pub fields: BTreeMap<String, FieldType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Timestamp,
    Bool,
}

#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub quiet_hours: Option<QuietHours>,
    pub frequency_cap: Option<FrequencyCap>,
}

/// Contact-local window in which nothing is sent; `start` may be after `end`
/// (the window then crosses midnight, the usual case: 21:00 to 09:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: chrono::NaiveTime,
    pub end: chrono::NaiveTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub max: u32,
    pub per: Duration,
}

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
        ChannelKind::ALL.iter().find(|(_, k)| *k == self).map(|(n, _)| *n).unwrap_or("log")
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
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Salesperson {
    pub id: String,
    pub name: Option<String>,
    pub wecom_userid: Option<String>,
    pub email: Option<String>,
    pub region: Option<String>,
    /// Most open contacts `least_loaded` gives this salesperson; `None` is unlimited.
    pub capacity: Option<u32>,
}

impl Salesperson {
    pub fn template_value(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        for (k, v) in [
            ("name", &self.name),
            ("wecom_userid", &self.wecom_userid),
            ("email", &self.email),
            ("region", &self.region),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if let Some(c) = self.capacity {
            m.insert("capacity".into(), c.into());
        }
        serde_json::Value::Object(m)
    }
}

impl Settings {
    /// The settings of a fresh folder with no `nurture.yaml` in `root`.
    pub fn defaults(root: PathBuf) -> Settings {
        let mut channels = BTreeMap::new();
        channels.insert(
            "console".to_string(),
            ChannelSettings {
                name: "console".into(),
                kind: ChannelKind::Log,
                pos: Pos::default(),
                rate_limit: None,
                concurrency: None,
                options: BTreeMap::new(),
            },
        );
        Settings {
            file: None,
            database: "sqlite://nurture.db".into(),
            workflows_dir: root.join("workflows"),
            templates_dir: root.join("templates"),
            root,
            timezone: chrono_tz::Asia::Shanghai,
            listen: "127.0.0.1:8080".into(),
            api_token_env: "NURTURE_API_TOKEN".into(),
            policies: Policies::default(),
            channels,
            teams: BTreeMap::new(),
            fields: BTreeMap::new(),
        }
    }

    /// The database URL after `NURTURE_DATABASE`, with a relative SQLite path
    /// taken from the settings' folder.
    pub fn database_url(&self) -> String {
        let url = std::env::var("NURTURE_DATABASE").unwrap_or_else(|_| self.database.clone());
        if let Some(path) = url.strip_prefix("sqlite://") {
            let p = std::path::Path::new(path);
            if p.is_relative() && !path.starts_with(':') {
                return format!("sqlite://{}", self.root.join(p).display());
            }
        }
        url
    }

    pub fn salesperson(&self, id: &str) -> Option<&Salesperson> {
        self.teams.values().flatten().find(|s| s.id == id)
    }
}
