//! `nurture wecom sync-relationships [--channel NAME]`: reads every WeCom
//! relationship of the settings' salespeople (`batch/get_by_user`) into the
//! store, so mass messages and transfers go from real follow-users (see
//! `channels::wecom::follow_sync`). Exit 0 when everything was read; 1 for
//! a channel that does not exist or cannot be built; 2 when WeCom or the
//! store failed (what was read before is kept).

use std::path::Path;

use clap::{Args, Subcommand};

use super::{CliResult, Failure};
use crate::channels::Delivery;
use crate::channels::wecom::{follow_sync, resigned};
use crate::settings::ChannelKind;

#[derive(Subcommand, Debug)]
pub enum WecomCommand {
    /// Read the WeCom relationships of every salesperson with a wecom_userid (batch/get_by_user).
    #[command(after_help = "Examples:
  nurture wecom sync-relationships
  nurture wecom sync-relationships --channel wecom")]
    SyncRelationships(SyncArgs),
    /// Find the customers of staff who left (get_unassigned_list): logs wecom_staff_left on each, once.
    #[command(after_help = "Examples:
  nurture wecom resigned                    # then a workflow with trigger staff_left hands them over
  nurture wecom resigned --channel wecom")]
    Resigned(SyncArgs),
    /// Push contact_ways/*.yaml to WeCom (add_contact_way/update_contact_way) and print each QR code; codes whose file is gone are deleted once a --dry-run listed them.
    #[command(after_help = "Examples:
  nurture wecom sync --dry-run     # what would change; lists codes whose file is gone
  nurture wecom sync               # creates, updates, deletes what the dry-run listed")]
    Sync(ContactWaySyncArgs),
}

#[derive(Args, Debug)]
pub struct ContactWaySyncArgs {
    /// The wecom channel (default: every wecom channel that has codes).
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
    /// Call nothing: print what would change, and mark codes whose file is gone as listed for deletion.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The wecom channel whose app reads them (default: the only one).
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
}

pub async fn run(config: &Path, cmd: WecomCommand) -> CliResult {
    match cmd {
        WecomCommand::SyncRelationships(args) => sync(config, args).await,
        WecomCommand::Resigned(args) => resigned(config, args).await,
        WecomCommand::Sync(args) => contact_ways(config, args).await,
    }
}

/// The wecom channel named by `--channel`, or the only one.
fn channel_name(
    settings: &crate::settings::Settings,
    wanted: Option<&String>,
) -> Result<String, Failure> {
    let wecom: Vec<&str> = settings
        .channels
        .values()
        .filter(|c| c.kind == ChannelKind::Wecom)
        .map(|c| c.name.as_str())
        .collect();
    match (wanted, wecom.as_slice()) {
        (Some(n), _) if wecom.contains(&n.as_str()) => Ok(n.clone()),
        (Some(n), _) => Err(Failure::Input(format!(
            "no wecom channel \"{n}\" in the settings (wecom channels: {})",
            wecom.join(", ")
        ))),
        (None, [one]) => Ok(one.to_string()),
        (None, []) => Err(no_wecom_channel(settings)),
        (None, _) => Err(Failure::Input(format!(
            "several wecom channels ({}): name one with --channel",
            wecom.join(", ")
        ))),
    }
}

/// No channel talks to WeCom. The quick start has a `log` channel standing in
/// for one, so say that, and what to change.
fn no_wecom_channel(settings: &crate::settings::Settings) -> Failure {
    let stand_ins: Vec<String> = settings
        .channels
        .values()
        .filter(|c| {
            c.name.contains("wecom")
                || c.options.get("address").map(|a| a.value.as_str())
                    == Some("wecom_external_userid")
        })
        .map(|c| format!("\"{}\" is kind: {}", c.name, c.kind.name()))
        .collect();
    let mut msg = String::from("the settings have no channel of kind: wecom");
    if !stand_ins.is_empty() {
        msg.push_str(&format!(
            " ({}, a stand-in that never calls WeCom)",
            stand_ins.join(", ")
        ));
    }
    msg.push_str(
        "\n  help: this command calls WeCom's API: set the channel's kind to wecom with \
         corp_id_env and secret_env (see docs/operations.md); meanwhile `nurture dry-run` \
         shows what each contact-way code gives",
    );
    Failure::Input(msg)
}

fn reason_of(d: Delivery) -> String {
    match d {
        Delivery::Retry { reason, .. }
        | Delivery::Permanent { reason }
        | Delivery::Wait { reason, .. } => reason,
        Delivery::Delivered { .. } => "no answer".into(),
    }
}

async fn resigned(config: &Path, args: SyncArgs) -> CliResult {
    let project = super::load_project(config)?;
    let settings = &project.settings;
    let name = channel_name(settings, args.channel.as_ref())?;
    let cs = &settings.channels[&name];
    let env = |k: &str| std::env::var(k).ok();
    // A one-shot command: its own token cache (the daemon has its own).
    let tokens = crate::channels::wecom::token::TokenCaches::default();
    let config = crate::channels::build::wecom_config(cs, settings, &env, &tokens)
        .map_err(|e| Failure::Input(format!("channel \"{name}\": {e}")))?;
    let api = config
        .api()
        .map_err(|e| Failure::Input(format!("channel \"{name}\": {e}")))?;
    let url = settings.database_url();
    let result = super::store_use::with_store(&url, async |store| {
        Ok(resigned::sync(&api, store, crate::store::to_ms(chrono::Utc::now())).await)
    })
    .await?;
    match result {
        Ok(f) => {
            println!(
                "wecom {name}: {} customers of staff who left ({} new); wecom_staff_left logged on {} contacts ({} calls)",
                f.listed, f.new, f.events, f.calls
            );
            Ok(())
        }
        Err((f, e)) => Err(Failure::Other(anyhow::anyhow!(
            "{} ({} entries recorded before it)",
            reason_of(e.delivery),
            f.listed
        ))),
    }
}

async fn sync(config: &Path, args: SyncArgs) -> CliResult {
    let project = super::load_project(config)?;
    let settings = &project.settings;
    let name = channel_name(settings, args.channel.as_ref())?;
    let cs = &settings.channels[&name];
    let env = |k: &str| std::env::var(k).ok();
    // A one-shot command: its own token cache (the daemon has its own).
    let tokens = crate::channels::wecom::token::TokenCaches::default();
    let config = crate::channels::build::wecom_config(cs, settings, &env, &tokens)
        .map_err(|e| Failure::Input(format!("channel \"{name}\": {e}")))?;
    let api = config
        .api()
        .map_err(|e| Failure::Input(format!("channel \"{name}\": {e}")))?;
    let mut userids: Vec<String> = settings
        .teams
        .values()
        .flatten()
        .filter_map(|s| s.wecom_userid.clone())
        .collect();
    userids.sort();
    userids.dedup();
    if userids.is_empty() {
        return Err(Failure::Input(
            "no salesperson in teams has a wecom_userid: nobody to read relationships of".into(),
        ));
    }
    let url = settings.database_url();
    let result = super::store_use::with_store(&url, async |store| {
        Ok(follow_sync::sync_by_user(&api, store, &userids).await)
    })
    .await?;
    match result {
        Ok(s) => {
            println!(
                "wecom {name}: {} relationships of {} customers recorded for {} salespeople ({} calls)",
                s.relationships,
                s.customers,
                userids.len(),
                s.calls
            );
            Ok(())
        }
        Err((s, e)) => {
            let reason = reason_of(e.delivery);
            Err(Failure::Other(anyhow::anyhow!(
                "{reason} ({} relationships recorded before it)",
                s.relationships
            )))
        }
    }
}

async fn contact_ways(config: &Path, args: ContactWaySyncArgs) -> CliResult {
    use crate::channels::wecom::contact_way::{self, Action};
    let project = super::load_project(config)?;
    let settings = &project.settings;
    let names: Vec<String> = match &args.channel {
        Some(_) => vec![channel_name(settings, args.channel.as_ref())?],
        None => settings
            .channels
            .values()
            .filter(|c| c.kind == ChannelKind::Wecom)
            .map(|c| c.name.clone())
            .collect(),
    };
    if names.is_empty() {
        return Err(no_wecom_channel(settings));
    }
    let url = settings.database_url();
    let now = chrono::Utc::now();
    let failed = super::store_use::with_store(&url, async |store| {
        let mut failed = None;
        for name in names {
            let cs = &settings.channels[&name];
            let env = |k: &str| std::env::var(k).ok();
            // A one-shot command: its own token cache (the daemon has its own).
            let tokens = crate::channels::wecom::token::TokenCaches::default();
            let api = crate::channels::build::wecom_config(cs, settings, &env, &tokens)
                .and_then(|c| c.api())
                .map_err(|e| Failure::Input(format!("channel \"{name}\": {e}")))?;
            let (lines, error) = match contact_way::sync(
                &api,
                store,
                &project,
                &name,
                args.dry_run,
                false,
                now,
            )
            .await
            {
                Ok(l) => (l, None),
                Err((l, e)) => (l, Some(e)),
            };
            for l in &lines {
                let members = l.members.join(", ");
                let what = match (&l.action, args.dry_run) {
                    (Action::Create, true) => format!("would create (members {members}: {})", l.why),
                    (Action::Create, false) => format!("created (members {members}: {})", l.why),
                    (Action::Update, true) => format!("would update (members {members}: {})", l.why),
                    (Action::Update, false) => format!("updated (members {members}: {})", l.why),
                    (Action::Recreate, true) => format!("would delete and create again: one member <-> several changes WeCom's type (members {members})"),
                    (Action::Recreate, false) => format!("deleted and created again (members {members}): print the new QR code"),
                    (Action::Unchanged, _) => format!("unchanged (members {members}: {})", l.why),
                    (Action::Delete, true) => "would delete: its file is gone (listed: nurture wecom sync deletes it)".into(),
                    (Action::Delete, false) => "deleted: its file is gone".into(),
                    (Action::DeletePending, _) => "its file is gone: run nurture wecom sync --dry-run to review, then sync deletes it".into(),
                    (Action::NoMembers, _) => format!("not pushed: nobody can be on the code now ({})", l.why),
                };
                println!("wecom {name}: {} {what}", l.name);
                if let Some(qr) = &l.qr_code
                    && !matches!(l.action, Action::Delete)
                {
                    println!("  QR code: {qr}");
                }
            }
            if let Some(e) = error {
                failed = Some(format!("wecom {name}: {e}"));
            }
        }
        Ok(failed)
    })
    .await?;
    match failed {
        Some(e) => Err(Failure::Other(anyhow::anyhow!(e))),
        None => Ok(()),
    }
}
