//! Which wecom channels mark corp tags, and how (issue 9, point 11): the
//! channel options `mark_tags` and `tag_group`, read by the planner (a
//! `tag:` step queues a mark per marking channel) and by the channel's
//! marks worker (`channels::wecom::tag_marks`) alike, so both agree.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::settings::{ChannelKind, ChannelSettings, Settings};

/// The corp tag group nurture creates its tags in, unless `tag_group` says.
pub const DEFAULT_TAG_GROUP: &str = "nurture";
/// WeCom's longest tag and group name (characters).
pub const NAME_MAX: usize = 30;
/// Tells the marks worker that marks were queued (plans with tag steps, or
/// a relationship added after nurture marked the customer). A handle the
/// daemon owns and gives the scheduler, the WeCom channels, the tag sync and
/// the callback; a notification without a waiting worker keeps a permit, so
/// one made during a round is not missed.
#[derive(Clone, Debug, Default)]
pub struct MarksQueued(Arc<Notify>);

impl MarksQueued {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// What the marks worker waits on.
    pub fn into_notify(self) -> Arc<Notify> {
        self.0
    }
}

fn option<'a>(cs: &'a ChannelSettings, key: &str) -> Option<&'a str> {
    cs.options.get(key).map(|v| v.value.as_str())
}

/// Whether a wecom channel marks tags (`mark_tags`, default true).
pub fn marks_tags(cs: &ChannelSettings) -> bool {
    cs.kind == ChannelKind::Wecom && option(cs, "mark_tags").is_none_or(|v| v != "false")
}

/// The channel's tag group (`tag_group`, default `nurture`).
pub fn tag_group(cs: &ChannelSettings) -> String {
    option(cs, "tag_group")
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .unwrap_or(DEFAULT_TAG_GROUP)
        .to_string()
}

/// The wecom channels a tag step marks corp tags through (sorted by name).
pub fn marking_channels(settings: &Settings) -> Vec<String> {
    let mut v: Vec<String> = settings
        .channels
        .values()
        .filter(|cs| marks_tags(cs))
        .map(|cs| cs.name.clone())
        .collect();
    v.sort();
    v
}

/// Checks the settings a channel's marks use (`validate`, `channels test`):
/// `mark_tags` true/false, `tag_group` a WeCom group name.
pub fn check_options(cs: &ChannelSettings) -> Result<(), String> {
    if let Some(v) = option(cs, "mark_tags")
        && v != "true"
        && v != "false"
    {
        return Err(format!("mark_tags \"{v}\" must be true or false"));
    }
    if let Some(g) = option(cs, "tag_group") {
        let n = g.trim().chars().count();
        if n == 0 || n > NAME_MAX {
            return Err(format!(
                "tag_group \"{g}\" must be 1 to {NAME_MAX} characters (WeCom's limit for a tag group name)"
            ));
        }
    }
    Ok(())
}
