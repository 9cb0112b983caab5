//! `nurture contacts import|show|export|add|tag|event|unsubscribe`: changes
//! to the customer store, one at a time as the HTTP API makes them, or a CSV
//! file; one contact read back, or many written out in the import format.
//!
//! `export` writes what `import` reads: the built-in columns, then one
//! column per attribute any exported contact has (sorted), times in RFC 3339
//! in the settings' time zone. Opt-outs of single channels are not columns
//! of the import format and are not exported (`contacts show` lists them).
//!
//! Exit codes: 0 done; 1 the input is wrong (unknown contact, bad value, a
//! bad CSV header, or any bad CSV row: the good rows are imported all the
//! same and the bad ones are listed as `FILE:LINE: reason`); 2 anything else.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::{CliResult, Failure};
use crate::settings::Settings;
use crate::store::import::thousands;
use crate::store::{ContactInput, Encoding, ImportOptions, Store, StoreError, Upserted};

mod addresses;
mod import_export;
mod owners;
mod show;

use import_export::{export, import};
use show::show;

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Upsert contacts from a CSV file. The first row names the columns:
    /// id (required), name, email, phone, wecom_external_userid, owner,
    /// timezone, created_at, last_active_at (RFC 3339), unsubscribed,
    /// tags (separated by `;`, added, never removed); any other column is a
    /// custom attribute. An empty cell leaves the stored value as it is.
    /// Bad rows are listed with their line numbers and skipped; the others
    /// are imported, and the command then exits 1.
    /// Columns declared under `fields:` must hold their type (number, bool,
    /// timestamp); times without an offset, Excel's `2026/5/1 9:00` too, are
    /// in the settings' time zone. A GBK/GB18030 file is detected.
    #[command(after_help = "Examples:
  nurture contacts import contacts/sample.csv
  nurture contacts import export.csv --dry-run
  nurture contacts import crm-export.csv --encoding gbk")]
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The file's encoding: utf-8 or gbk (GB18030). Default: UTF-8, or
        /// GB18030 when the file is not UTF-8 and reads as GB18030.
        #[arg(long, value_name = "ENCODING")]
        encoding: Option<String>,
        /// Report what the import would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show one contact: fields, attributes, tags, owner, consent and enrollments.
    #[command(after_help = "Examples:
  nurture contacts show c0000123
  nurture contacts show c0000123 --format json | jq .attributes")]
    Show {
        /// The contact's id.
        id: String,
        /// `text` for people, `json` as `GET /v1/contacts/{id}` gives it.
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
    /// Write contacts as CSV in the import format (to stdout).
    #[command(after_help = "Examples:
  nurture contacts export > contacts.csv
  nurture contacts export --audience-of winback-30d > winback.csv")]
    Export {
        /// Only the contacts in this workflow's audience now.
        #[arg(long, value_name = "WORKFLOW")]
        audience_of: Option<String>,
    },
    /// Create a contact, or update the fields given of an existing one.
    #[command(after_help = "Examples:
  nurture contacts add c0009999 --name 周晓明 --phone +8613800000001 --attr city=Shanghai --tag trial")]
    Add(AddArgs),
    /// Add or remove tags of a contact.
    #[command(after_help = "Examples:
  nurture contacts tag c0009999 --add vip --remove trial")]
    Tag(TagArgs),
    /// Record an event for a contact (moves its last_active_at).
    #[command(after_help = "Examples:
  nurture contacts event c0009999 purchase --prop amount=299
  nurture contacts event c0009999 cart_abandoned --prop item=羊毛围巾 --at 2026-11-01T09:30:00+08:00")]
    Event(EventArgs),
    /// Unsubscribe a contact from every channel, or opt it out of one.
    #[command(after_help = "Examples:
  nurture contacts unsubscribe c0009999
  nurture contacts unsubscribe c0009999 --channel sms")]
    Unsubscribe(UnsubscribeArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The contact's id (your own key).
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub phone: Option<String>,
    /// The WeCom external user id.
    #[arg(long = "wecom-id", alias = "wecom-external-userid")]
    pub wecom_id: Option<String>,
    /// The assigned salesperson's id.
    #[arg(long)]
    pub owner: Option<String>,
    /// IANA time zone name, e.g. Asia/Shanghai.
    #[arg(long)]
    pub timezone: Option<String>,
    /// RFC 3339, or 2026-11-01T09:00 in the settings' timezone; default: now, for a new contact.
    #[arg(long)]
    pub created_at: Option<String>,
    /// RFC 3339, or 2026-11-01T09:00 in the settings' timezone.
    #[arg(long)]
    pub last_active_at: Option<String>,
    /// A custom attribute, KEY=VALUE (a string); repeat for more.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    /// A tag to add; repeat for more.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub id: String,
    /// A tag to add; repeat for more.
    #[arg(long = "add", value_name = "TAG")]
    pub add: Vec<String>,
    /// A tag to remove; repeat for more.
    #[arg(long = "remove", value_name = "TAG")]
    pub remove: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EventArgs {
    /// The contact's id.
    pub id: String,
    /// The event's name, e.g. purchase.
    pub name: String,
    /// When it happened: RFC 3339, or 2026-11-01T09:00 in the settings' timezone; default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// A property, KEY=VALUE (a string); repeat for more.
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    pub props: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UnsubscribeArgs {
    pub id: String,
    /// Only this channel (a channel name from nurture.yaml); default: all channels.
    #[arg(long)]
    pub channel: Option<String>,
}

pub async fn run(config: &Path, cmd: ContactsCommand) -> CliResult {
    let settings = load_settings(config)?;
    let store = Store::open(&settings.database_url())
        .await
        .map_err(store_failure)?;
    let now = Utc::now();
    super::store_use::closing(store, async |store| match cmd {
        ContactsCommand::Import {
            file,
            encoding,
            dry_run,
        } => {
            let encoding = encoding
                .as_deref()
                .map(str::parse::<Encoding>)
                .transpose()
                .map_err(Failure::Input);
            match encoding {
                Ok(encoding) => {
                    let opts = ImportOptions {
                        fields: settings.fields.clone(),
                        tz: settings.timezone,
                        encoding,
                        dry_run,
                        check: addresses::row_check(&settings),
                    };
                    import(store, &settings, &file, now, &opts).await
                }
                Err(e) => Err(e),
            }
        }
        ContactsCommand::Show { id, format } => show(store, &settings, &id, format).await,
        ContactsCommand::Export { audience_of } => {
            export(store, config, &settings, audience_of.as_deref(), now).await
        }
        ContactsCommand::Add(a) => add(store, &settings, a, now).await,
        ContactsCommand::Tag(a) => tag(store, a, now).await,
        ContactsCommand::Event(a) => event(store, a, now, settings.timezone).await,
        ContactsCommand::Unsubscribe(a) => unsubscribe(store, &settings, a, now).await,
    })
    .await
}

fn load_settings(config: &Path) -> Result<Settings, Failure> {
    Settings::load(config).map_err(|diags| {
        crate::diagnostics::eprint_all(&diags);
        Failure::Reported
    })
}

/// Wrong input is exit 1; a store that cannot be opened or written is exit 2.
fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::UnknownContact(_)
        | StoreError::Invalid(_)
        | StoreError::BadFile { .. }
        | StoreError::UnsupportedUrl { .. } => Failure::Input(e.to_string()),
        StoreError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Failure::Input(e.to_string())
        }
        other => Failure::Other(anyhow::Error::new(other)),
    }
}

/// A time given on the command line, read as `dry-run --at` reads it:
/// RFC 3339, or a date and time in the settings' zone.
fn parse_time(flag: &str, s: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, Failure> {
    crate::timefmt::parse_at(s, tz).map_err(|e| Failure::Input(e.replacen("--at", flag, 1)))
}

fn parse_pairs(flag: &str, pairs: &[String]) -> Result<Map<String, Value>, Failure> {
    let mut m = Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Failure::Input(format!("{flag} {p:?}: expected KEY=VALUE")));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(Failure::Input(format!("{flag} {p:?}: the key is empty")));
        }
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

async fn add(store: &Store, settings: &Settings, a: AddArgs, now: DateTime<Utc>) -> CliResult {
    let tz = settings.timezone;
    let input = ContactInput {
        id: a.id.clone(),
        name: a.name,
        email: a.email,
        phone: a.phone,
        wecom_external_userid: a.wecom_id,
        owner: a.owner,
        timezone: a.timezone,
        created_at: a
            .created_at
            .as_deref()
            .map(|s| parse_time("--created-at", s, tz))
            .transpose()?,
        last_active_at: a
            .last_active_at
            .as_deref()
            .map(|s| parse_time("--last-active-at", s, tz))
            .transpose()?,
        unsubscribed: None,
        tags: a.tags,
        attrs: parse_pairs("--attr", &a.attrs)?,
    };
    let done = store
        .upsert_contact(&input, now)
        .await
        .map_err(store_failure)?;
    let what = match done {
        Upserted::Created => "created",
        Upserted::Updated => "updated",
        Upserted::Unchanged => "unchanged",
    };
    println!("{what} contact {}", a.id);
    if let Some(w) = input
        .owner
        .as_deref()
        .and_then(|o| owners::warning_for_one(settings, o))
    {
        eprintln!("{w}");
    }
    for w in addresses::warnings_for_one(settings, input.phone.as_deref(), input.email.as_deref()) {
        eprintln!("{w}");
    }
    Ok(())
}

async fn tag(store: &Store, a: TagArgs, now: DateTime<Utc>) -> CliResult {
    if a.add.is_empty() && a.remove.is_empty() {
        return Err(Failure::Input(
            "contacts tag: give --add TAG or --remove TAG".into(),
        ));
    }
    let added = store
        .add_tags(&a.id, &a.add, now)
        .await
        .map_err(store_failure)?;
    let removed = store
        .remove_tags(&a.id, &a.remove)
        .await
        .map_err(store_failure)?;
    if added.is_empty() && removed.is_empty() {
        println!("contact {}: tags unchanged", a.id);
    } else {
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("added {}", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("removed {}", removed.join(", ")));
        }
        println!("contact {}: {}", a.id, parts.join("; "));
    }
    Ok(())
}

async fn event(store: &Store, a: EventArgs, now: DateTime<Utc>, tz: chrono_tz::Tz) -> CliResult {
    let at =
        a.at.as_deref()
            .map(|s| parse_time("--at", s, tz))
            .transpose()?
            .unwrap_or(now);
    let props = Value::Object(parse_pairs("--prop", &a.props)?);
    let id = store
        .record_event(&a.id, &a.name, at, &props)
        .await
        .map_err(store_failure)?;
    println!(
        "recorded event {} #{id} for contact {} at {}",
        a.name,
        a.id,
        crate::timefmt::in_tz(at, tz)
    );
    Ok(())
}

async fn unsubscribe(
    store: &Store,
    settings: &Settings,
    a: UnsubscribeArgs,
    now: DateTime<Utc>,
) -> CliResult {
    if let Some(ch) = &a.channel
        && !settings.channels.contains_key(ch)
    {
        let known: Vec<&str> = settings.channels.keys().map(String::as_str).collect();
        let hint = crate::diagnostics::did_you_mean(ch, known.iter().copied())
            .map(|s| format!("; did you mean {s:?}?"))
            .unwrap_or_default();
        return Err(Failure::Input(format!(
            "no channel {ch:?} in the settings (channels: {}){hint}",
            known.join(", ")
        )));
    }
    let done = store
        .unsubscribe(&a.id, a.channel.as_deref(), now)
        .await
        .map_err(store_failure)?;
    crate::metrics::unsubscribed(&a.id, &done);
    let changed = done.changed;
    let scope = match &a.channel {
        Some(ch) => format!("from channel {ch}"),
        None => "from every channel".to_string(),
    };
    if changed {
        println!("contact {} unsubscribed {scope}", a.id);
    } else {
        println!("contact {} was already unsubscribed {scope}", a.id);
    }
    Ok(())
}
