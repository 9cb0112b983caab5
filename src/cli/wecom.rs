//! `nurture wecom sync-relationships [--channel NAME]`: reads every WeCom
//! relationship of the settings' salespeople (`batch/get_by_user`) into the
//! store, so mass messages and transfers go from real follow-users (see
//! `channels::wecom::follow_sync`). Exit 0 when everything was read; 1 for
//! a channel that does not exist or cannot be built; 2 when WeCom or the
//! store failed (what was read before is kept).

use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{CliResult, Failure};
use crate::channels::Delivery;
use crate::channels::wecom::{follow_sync, resigned};
use crate::project::Project;
use crate::settings::ChannelKind;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum WecomCommand {
    /// Read the WeCom relationships of every salesperson with a wecom_userid (batch/get_by_user).
    #[command(after_help = "Examples:
  nurture wecom sync-relationships
  nurture wecom sync-relationships --channel wecom")]
    SyncRelationships(SyncArgs),
    /// Find the customers of staff who left (get_unassigned_list): logs wecom_staff_left on each, once.
    Resigned(SyncArgs),
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
        (None, []) => Err(Failure::Input("the settings have no wecom channel".into())),
        (None, _) => Err(Failure::Input(format!(
            "several wecom channels ({}): name one with --channel",
            wecom.join(", ")
        ))),
    }
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
    let project = Project::load_or_report(config)?;
    let settings = &project.settings;
    let name = channel_name(settings, args.channel.as_ref())?;
    let cs = &settings.channels[&name];
    let env = |k: &str| std::env::var(k).ok();
    let config = crate::channels::build::wecom_config(cs, settings, &env)
        .map_err(|e| Failure::Input(format!("channel \"{name}\": {e}")))?;
    let api = config
        .api()
        .map_err(|e| Failure::Input(format!("channel \"{name}\": {e}")))?;
    let url = settings.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the store {url}"))?;
    let result = resigned::sync(&api, &store, crate::store::to_ms(chrono::Utc::now())).await;
    store.close().await;
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
    let project = Project::load_or_report(config)?;
    let settings = &project.settings;
    let name = channel_name(settings, args.channel.as_ref())?;
    let cs = &settings.channels[&name];
    let env = |k: &str| std::env::var(k).ok();
    let config = crate::channels::build::wecom_config(cs, settings, &env)
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
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the store {url}"))?;
    let result = follow_sync::sync_by_user(&api, &store, &userids).await;
    store.close().await;
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
