//! Who sends a mass message (`add_msg_template`'s `sender`) while the
//! contact's WeCom relationship is being transferred (reference §1.5).
//!
//! An `assign` makes the new salesperson the contact's owner at once, but
//! WeCom moves the customer only when the takeover completes, 24 h after
//! `transfer_customer`, and the customer may refuse. Until then the customer
//! is a friend of the handover member only: a mass task from the new owner
//! comes back "not a friend" (status 2) and the message is lost. So while the
//! latest transfer to the owner has not been confirmed done, the handover
//! member sends; once `transfer_result` said 1 (done), the owner does.
//!
//! Only the latest transfer of the contact counts, and only if it was a
//! transfer *to* the current owner: if the owner was changed since by other
//! means (the API, an import), that transfer says nothing about who the
//! customer's friend is, and the owner sends as before. Chains (a second
//! assignment while a first transfer is still pending) are not followed.

use super::tasks::LatestTransfer;

/// The member a mass message goes out from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    pub userid: String,
    /// Why it is not the owner, for the task row and the outcome note
    /// ("sent from lilei: transfer to wangfang pending"); `None` when the
    /// owner sends.
    pub note: Option<String>,
}

/// Picks the sender for a contact whose salesperson's `wecom_userid` is
/// `owner`, given the contact's latest transfer.
pub fn choose(owner: &str, latest: Option<&LatestTransfer>) -> Sender {
    let as_owner = Sender {
        userid: owner.to_string(),
        note: None,
    };
    let Some(t) = latest else { return as_owner };
    let (Some(handover), Some(takeover)) = (&t.handover_userid, &t.takeover_userid) else {
        return as_owner;
    };
    if takeover != owner || handover == owner {
        return as_owner;
    }
    let why = match (t.outbox_status.as_str(), t.task_status.as_deref()) {
        // `transfer_result` said 1: the customer is the owner's now.
        ("sent", Some("done")) => return as_owner,
        // Started; WeCom takes over after 24 h.
        ("sent", Some("pending")) => "pending".to_string(),
        // 3 refused, 4 takeover member at their limit, 5 no transfer record:
        // the customer stayed with the handover member.
        ("sent", Some(s @ ("refused" | "takeover_limit" | "no_record"))) => {
            let what = match s {
                "refused" => "refused by the customer",
                "takeover_limit" => "failed: the takeover member is at their customer limit",
                _ => "failed: WeCom has no record of it",
            };
            match t.provider_status {
                Some(n) => format!("{what} (status {n})"),
                None => what.to_string(),
            }
        }
        // Expired, unreadable, or its task was never recorded: nothing says
        // the takeover happened, so the member the customer surely had sends.
        ("sent", _) => "outcome unknown".to_string(),
        // Not called yet (or being called right now): nothing moved.
        ("queued" | "sending", _) => "not started yet".to_string(),
        // transfer_customer refused it (or it was cancelled): nothing moved.
        (s, _) => format!("not started ({s})"),
    };
    Sender {
        userid: handover.clone(),
        note: Some(format!(
            "sent from {handover}: transfer to {takeover} {why}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(outbox: &str, task: Option<&str>, provider: Option<i64>) -> LatestTransfer {
        LatestTransfer {
            handover_userid: Some("lilei".into()),
            takeover_userid: Some("wangfang".into()),
            outbox_status: outbox.into(),
            task_status: task.map(str::to_string),
            provider_status: provider,
        }
    }

    fn note(t: &LatestTransfer) -> Option<String> {
        let s = choose("wangfang", Some(t));
        assert_eq!(
            s.userid,
            if s.note.is_some() {
                "lilei"
            } else {
                "wangfang"
            }
        );
        s.note
    }

    #[test]
    fn the_owner_sends_without_a_transfer_or_once_it_is_done() {
        assert_eq!(choose("wangfang", None).userid, "wangfang");
        assert_eq!(note(&transfer("sent", Some("done"), Some(1))), None);
    }

    #[test]
    fn the_handover_member_sends_until_the_transfer_is_done() {
        let cases = [
            (
                transfer("sent", Some("pending"), None),
                "transfer to wangfang pending",
            ),
            (transfer("queued", None, None), "not started yet"),
            (transfer("sending", None, None), "not started yet"),
            (
                transfer("sent", Some("refused"), Some(3)),
                "refused by the customer (status 3)",
            ),
            (
                transfer("sent", Some("takeover_limit"), Some(4)),
                "customer limit (status 4)",
            ),
            (
                transfer("sent", Some("no_record"), Some(5)),
                "no record of it (status 5)",
            ),
            (transfer("sent", Some("expired"), None), "outcome unknown"),
            (transfer("sent", None, None), "outcome unknown"),
            (transfer("dead", None, None), "not started (dead)"),
        ];
        for (t, want) in cases {
            let n = note(&t).unwrap_or_else(|| panic!("{t:?}: the owner would send"));
            assert!(n.starts_with("sent from lilei: "), "{n}");
            assert!(n.contains(want), "{t:?}: {n}");
        }
    }

    #[test]
    fn a_transfer_to_someone_else_does_not_count() {
        // The owner changed since (not by this transfer).
        let t = transfer("sent", Some("pending"), None);
        assert_eq!(choose("chenjie", Some(&t)).userid, "chenjie");
        assert_eq!(choose("chenjie", Some(&t)).note, None);
        // A payload without its members.
        let mut t = transfer("sent", Some("pending"), None);
        t.handover_userid = None;
        assert_eq!(choose("wangfang", Some(&t)).userid, "wangfang");
    }
}
