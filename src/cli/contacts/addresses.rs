//! A warning when contacts are given phones or emails that a channel's
//! provider would refuse for their form ([`crate::channels::address`]). Not
//! an error: the contact is kept, and a channel that does not need the
//! field still reaches it. But the planner skips its sends on that channel
//! as `bad_address`: better said at the import than found in a dry-run.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::channels::address::AddressChecks;
use crate::settings::Settings;
use crate::store::import::{Flagged, RowCheck, thousands};

/// The check an import runs on every good row; none without such channels.
pub(super) fn row_check(settings: &Settings) -> Option<RowCheck> {
    let checks = AddressChecks::new(settings);
    if checks.is_empty() {
        return None;
    }
    Some(RowCheck(Arc::new(move |phone, email| {
        checks
            .refusals(phone, email)
            .into_iter()
            .map(|(channel, why)| (channel, why.to_string()))
            .collect()
    })))
}

/// The warnings for one contact (`contacts add`).
pub(super) fn warnings_for_one(
    settings: &Settings,
    phone: Option<&str>,
    email: Option<&str>,
) -> Vec<String> {
    AddressChecks::new(settings)
        .refusals(phone, email)
        .iter()
        .map(|(channel, why)| format!("warning: {}", AddressChecks::warning(channel, why)))
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
