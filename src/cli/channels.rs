//! `nurture channels test NAME --to ADDRESS [--template T] [--contact ID]`:
//! sends ONE real message through a channel of the settings and prints the
//! provider's full answer — how users check credentials, sender ids and
//! templates before a launch.
//!
//! The message goes straight to the adapter: no outbox row, no retry, no
//! quiet hours, no frequency cap, no consent check (the user names the
//! address). Its idempotency key is `channels-test:NAME:MILLIS`, so a
//! provider that deduplicates never mistakes it for a workflow message.
//!
//! The text is the rendered `--template` (for `--contact ID` from the store,
//! else for the sample contact `validate` uses), or a fixed test line.
//!
//! Exit codes: 0 the provider accepted the message; 1 it refused it, or the
//! channel, template or contact does not exist; 2 no answer came back or the
//! store cannot be read.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};

use super::{CliResult, Failure};
use crate::channels::{Delivery, OutMessage};
use crate::contact::Contact;
use crate::project::Project;
use crate::store::Store;
use crate::template::{render_context, sample_contact};

#[derive(Subcommand, Debug)]
pub enum ChannelsCommand {
    /// Send one real test message through a channel and print the provider's answer.
    #[command(after_help = "Examples:
  nurture channels test sms --to +8613800000001
  nurture channels test sms --to +8613800000001 --template winback-sms --contact c0000123")]
    Test(TestArgs),
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The channel's name in the settings.
    pub name: String,
    /// The address: a phone number, an email address, a WeCom external user id, ...
    #[arg(long, value_name = "ADDRESS")]
    pub to: String,
    /// Render this template (name without `.hbs`) instead of the fixed test text.
    #[arg(long, value_name = "T")]
    pub template: Option<String>,
    /// Render the template for this contact of the store (default: a sample contact).
    #[arg(long, value_name = "ID", requires = "template")]
    pub contact: Option<String>,
}

pub async fn run(config: &Path, cmd: ChannelsCommand) -> CliResult {
    match cmd {
        ChannelsCommand::Test(args) => test(config, args).await,
    }
}

async fn test(config: &Path, args: TestArgs) -> CliResult {
    // The daemon's log on stderr: a `log` channel writes its message there
    // (the answer says "written to the log", and nothing showed).
    super::run::init_logging(super::run::LogFormat::Text);
    let project = super::load_project(config)?;
    let settings = &project.settings;
    if !settings.channels.contains_key(&args.name) {
        let known: Vec<&str> = settings.channels.keys().map(String::as_str).collect();
        let hint = crate::diagnostics::did_you_mean(&args.name, known.iter().copied())
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        return Err(Failure::Input(format!(
            "no channel \"{}\" in the settings (channels: {}){hint}",
            args.name,
            known.join(", ")
        )));
    }
    let url = project.settings.database_url();
    let exchange =
        super::store_use::with_store(&url, async |store| send_test(store, &project, &args).await)
            .await?;
    println!();
    match &exchange.answer {
        Some(answer) => {
            println!("provider answer:");
            for line in answer.lines() {
                println!("  {line}");
            }
        }
        None => println!("no answer from the provider"),
    }
    println!();
    match exchange.delivery {
        Delivery::Delivered { provider_id } => {
            println!(
                "result: accepted{}",
                provider_id
                    .map(|id| format!(" (provider id {id})"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Delivery::Permanent { reason } => Err(Failure::Input(format!(
            "refused (the daemon would dead-letter it): {reason}"
        ))),
        Delivery::Wait { reason, after } => Err(Failure::Other(anyhow::anyhow!(
            "not sent (the daemon would wait {}s, without using up an attempt): {reason}",
            after.as_secs()
        ))),
        Delivery::Retry { reason, after } => {
            let when = after
                .map(|a| format!(" after {}s", a.as_secs()))
                .unwrap_or_default();
            Err(Failure::Other(anyhow::anyhow!(
                "not sent (the daemon would retry{when}): {reason}"
            )))
        }
    }
}

/// Sends `channels test`'s message (and, on WeCom, checks tag marking) on an
/// open store; gives the provider's answer.
async fn send_test(
    store: &Store,
    project: &Project,
    args: &TestArgs,
) -> Result<crate::channels::Exchange, Failure> {
    let settings = &project.settings;
    // The address as the daemon would send it (a phone without its
    // separators), or not at all: the daemon would skip it (`bad_address`).
    let kind = settings.channels[&args.name].kind;
    let to = crate::channels::address::for_channel(kind, &args.to).map_err(|why| {
        Failure::Input(format!(
            "not sent: {why}; the daemon skips sends to such an address (bad_address)"
        ))
    })?;
    let contact = match &args.contact {
        Some(id) => store
            .contact(id)
            .await
            .context("reading the store")?
            .ok_or_else(|| Failure::Input(format!("no contact with id {id:?}")))?,
        None => sample_contact(),
    };
    let now = Utc::now();
    let (subject, body, attachments) = match &args.template {
        Some(t) => {
            let owner = contact
                .owner
                .as_deref()
                .and_then(|id| settings.salesperson(id))
                .map(|s| s.template_value());
            let ctx = render_context(
                &contact,
                owner.as_ref(),
                "channels-test",
                now,
                settings.timezone,
            );
            let r = project
                .templates
                .render(t, &ctx)
                .map_err(|e| Failure::Input(format!("template \"{t}\": {e}")))?;
            (r.subject, r.body, r.attachments)
        }
        None => (
            Some("nurture test message".to_string()),
            format!(
                "nurture test message through channel \"{}\" at {}",
                args.name,
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Vec::new(),
        ),
    };
    // The channel and the tag-marking check below share one token cache.
    let handles = crate::channels::build::Handles::with_store(store);
    let registry =
        crate::channels::build::build_registry_full(settings, &|n| std::env::var(n).ok(), &handles)
            .map_err(|errors| {
                Failure::Input(
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
    let (_, adapter) = registry.get(&args.name).context("the channel was built")?;
    let msg = OutMessage {
        id: format!("channels-test:{}:{}", args.name, now.timestamp_millis()),
        workflow: "channels-test".into(),
        contact_id: contact.id.clone(),
        step_id: "test".into(),
        channel: args.name.clone(),
        to,
        subject,
        body,
        contact: Contact::template_value(&contact),
        attempt: 1,
        // The template's attachments go as the daemon sends them (WeCom
        // uploads their files).
        payload: if attachments.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::json!({ "attachments": attachments })
        },
        in_doubt: false,
    };
    println!("sending through \"{}\" to {}:", args.name, args.to);
    if let Some(s) = &msg.subject {
        println!("  subject: {s}");
    }
    for line in msg.body.lines() {
        println!("  | {line}");
    }
    for a in &attachments {
        println!("  + {}", a.summary());
    }
    let exchange = adapter.exchange(&msg).await;
    // A wecom channel: what tag steps will do (read-only).
    if let Some(cs) = settings
        .channels
        .get(&args.name)
        .filter(|c| c.kind == crate::settings::ChannelKind::Wecom)
        && let Ok(config) = crate::channels::build::wecom_config(
            cs,
            settings,
            &|n| std::env::var(n).ok(),
            &handles.wecom_tokens,
        )
    {
        match crate::channels::wecom::tag_marks::describe(&config, cs).await {
            Ok(line) => println!("\n{line}"),
            Err(e) => println!("\ntag marking will fail: {e}"),
        }
    }
    Ok(exchange)
}
