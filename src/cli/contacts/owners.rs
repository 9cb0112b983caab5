//! A warning when contacts are given owners who are not salespeople of the
//! settings' teams. Not an error: a WeCom follow-user outside the teams is a
//! legitimate owner. But such a contact's templates see no `owner` (only
//! team members have a name, a WeCom user id and the rest), so a template
//! that reads `owner.*` skips the contact's message with `template_error`:
//! better said at the import than found in a dry-run.

use crate::settings::Settings;
use crate::store::import::thousands;

/// Owners named at most in one warning.
const MAX_LISTED: usize = 10;

/// The owners of `counts` (owner, rows) that no team lists; nothing when the
/// settings have no teams (then no owner is anybody's salesperson).
fn unknown<'a>(
    settings: &Settings,
    counts: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<(&'a str, u64)> {
    if settings.teams.is_empty() {
        return Vec::new();
    }
    counts
        .into_iter()
        .filter(|(owner, _)| settings.salesperson(owner).is_none())
        .collect()
}

fn members(settings: &Settings) -> Vec<&str> {
    settings
        .teams
        .values()
        .flatten()
        .map(|s| s.id.as_str())
        .collect()
}

const CONSEQUENCE: &str = "messages whose template reads owner.* are skipped for their contacts \
     (template_error); add them to teams: in the settings if they are your salespeople";

/// The warning for one contact's owner (`contacts add`), if it is needed.
pub(super) fn warning_for_one(settings: &Settings, owner: &str) -> Option<String> {
    unknown(settings, [(owner, 1)]).first()?;
    let known = members(settings);
    let hint = crate::diagnostics::did_you_mean(owner, known.iter().copied())
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default();
    Some(format!(
        "warning: owner {owner:?} is not a salesperson of any team{hint}: \
         messages whose template reads owner.* are skipped for this contact (template_error); \
         team members: {}",
        known.join(", ")
    ))
}

/// The warning for an import's owners (`contacts import`), if it is needed.
pub(super) fn warning_for_import<'a>(
    settings: &Settings,
    counts: impl IntoIterator<Item = (&'a str, u64)>,
) -> Option<String> {
    let mut unknown = unknown(settings, counts);
    if unknown.is_empty() {
        return None;
    }
    // The owners of the most rows first.
    unknown.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let rows: u64 = unknown.iter().map(|(_, n)| n).sum();
    let mut listed: Vec<String> = unknown
        .iter()
        .take(MAX_LISTED)
        .map(|(owner, n)| {
            format!(
                "{owner:?} ({} row{})",
                thousands(*n),
                if *n == 1 { "" } else { "s" }
            )
        })
        .collect();
    if unknown.len() > MAX_LISTED {
        listed.push(format!("and {} more", unknown.len() - MAX_LISTED));
    }
    Some(format!(
        "warning: {} row{} name{} an owner who is not a salesperson of any team: {}; {CONSEQUENCE}",
        thousands(rows),
        if rows == 1 { "" } else { "s" },
        if rows == 1 { "s" } else { "" },
        listed.join(", "),
    ))
}
