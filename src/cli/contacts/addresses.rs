//! A warning when contacts are given phones or emails that a channel's
//! provider would refuse for their form ([`crate::channels::address`]). Not
//! an error: the contact is kept, and a channel that does not need the
//! field still reaches it. But the planner skips its sends on that channel
//! as `bad_address`: better said at the import than found in a dry-run.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::channels::address::refusal;
use crate::settings::{ChannelKind, Settings};
use crate::store::import::{Flagged, RowCheck, thousands};

/// The channels whose provider takes the contact's phone or email, with
/// the field: (channel, kind, phone or not).
fn checked(settings: &Settings) -> Vec<(String, ChannelKind, bool)> {
    settings
        .channels
        .values()
        .filter_map(|c| match c.kind {
            ChannelKind::Twilio | ChannelKind::AliyunSms => Some((c.name.clone(), c.kind, true)),
            ChannelKind::Smtp => Some((c.name.clone(), c.kind, false)),
            _ => None,
        })
        .collect()
}

/// Each refusal of `phone` or `email`: (channel, why).
fn refusals(
    channels: &[(String, ChannelKind, bool)],
    phone: Option<&str>,
    email: Option<&str>,
) -> Vec<(String, String)> {
    channels
        .iter()
        .filter_map(|(name, kind, is_phone)| {
            let value = if *is_phone { phone } else { email };
            let value = value.filter(|v| !v.trim().is_empty())?;
            refusal(*kind, value).map(|why| (name.clone(), why.to_string()))
        })
        .collect()
}

/// The check an import runs on every good row; none without such channels.
pub(super) fn row_check(settings: &Settings) -> Option<RowCheck> {
    let channels = checked(settings);
    if channels.is_empty() {
        return None;
    }
    Some(RowCheck(Arc::new(move |phone, email| {
        refusals(&channels, phone, email)
    })))
}

/// The warnings for one contact (`contacts add`).
pub(super) fn warnings_for_one(
    settings: &Settings,
    phone: Option<&str>,
    email: Option<&str>,
) -> Vec<String> {
    refusals(&checked(settings), phone, email)
        .into_iter()
        .map(|(channel, why)| {
            format!(
                "warning: {why}; messages on the {channel} channel are skipped for this \
                 contact (bad_address) until it is fixed"
            )
        })
        .collect()
}

/// The warnings for an import (`contacts import`), one per channel.
pub(super) fn warnings_for_import(flagged: &BTreeMap<String, Flagged>) -> Vec<String> {
    flagged
        .iter()
        .map(|(channel, f)| {
            format!(
                "warning: {} row{} {} an address the {channel} channel's provider would refuse \
                 (the first, line {}: {}); their messages on {channel} are skipped (bad_address) \
                 until fixed: correct the file and import it again",
                thousands(f.rows),
                if f.rows == 1 { "" } else { "s" },
                if f.rows == 1 { "has" } else { "have" },
                f.first_line,
                f.first_why,
            )
        })
        .collect()
}
