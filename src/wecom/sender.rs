//! Who sends a mass message (`add_msg_template`'s `sender`) and who hands a
//! customer over (`transfer_customer`'s `handover_userid`), from the
//! customer's WeCom relationships (reference §1.2, §1.5; the rows are kept
//! by `store::wecom::relationships`).
//!
//! WeCom delivers a mass message only from a member the customer is a
//! friend of (a follow-user): from anyone else the task answers status 2
//! ("not a friend"), or errcode 41048 when nobody in the task can be sent
//! to. A transfer's handover member must be a follow-user too (else
//! per-customer 40131). nurture's owner is its own field: an `assign` makes
//! the new salesperson the owner at once, but WeCom moves the customer only
//! when the takeover completes (24 h after `transfer_customer`, and the
//! customer may refuse), and an owner set by an import or the API may never
//! have added the customer at all.
//!
//! So the sender is:
//! 1. the owner, when the owner is a standing follow-user;
//! 2. else, while the latest transfer to the owner is not done, its handover
//!    member (if still a follow-user), with the transfer's state in the note;
//! 3. else the follow-user who added the customer most recently;
//! 4. nobody when no relationship stands: the message is not sent.
//!
//! The note says which and why ("sent from lilei: wangfang (the owner) is
//! not a WeCom friend of the customer; transfer to wangfang pending"); it
//! goes on the task and, with the outcome, into `nurture history`.

use crate::store::states::{OutboxStatus, WecomTaskStatus};
use crate::store::wecom::relationships::Relationship;
use crate::store::wecom::tasks::LatestTransfer;

/// The member a mass message goes out from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    pub userid: String,
    /// Why it is not the owner; `None` when the owner sends.
    pub note: Option<String>,
}

/// What the state of the latest transfer to `owner` says, when it is one
/// that is not done: `(handover, why)`.
fn pending_transfer<'a>(owner: &str, t: &'a LatestTransfer) -> Option<(&'a str, String)> {
    let (Some(handover), Some(takeover)) = (&t.handover_userid, &t.takeover_userid) else {
        return None;
    };
    if takeover != owner || handover == owner {
        return None;
    }
    use OutboxStatus as O;
    use WecomTaskStatus as T;
    let why = match (t.outbox_status, t.task_status) {
        (O::Sent, Some(T::Done)) => return None,
        (O::Sent, Some(T::Pending)) => "pending".to_string(),
        (O::Sent, Some(s @ (T::Refused | T::TakeoverLimit | T::NoRecord))) => {
            let what = match s {
                T::Refused => "refused by the customer",
                T::TakeoverLimit => "failed: the takeover member is at their customer limit",
                _ => "failed: WeCom has no record of it",
            };
            match t.provider_status {
                Some(n) => format!("{what} (status {n})"),
                None => what.to_string(),
            }
        }
        (O::Sent, _) => "outcome unknown".to_string(),
        (O::Queued | O::Sending, _) => "not started yet".to_string(),
        (s, _) => format!("not started ({s})"),
    };
    Some((handover.as_str(), format!("transfer to {takeover} {why}")))
}

/// The standing follow-users, most recently added first.
fn standing(rels: &[Relationship]) -> Vec<&Relationship> {
    let mut s: Vec<&Relationship> = rels.iter().filter(|r| r.standing).collect();
    s.sort_by(|a, b| {
        b.added_at
            .unwrap_or(0)
            .cmp(&a.added_at.unwrap_or(0))
            .then_with(|| a.userid.cmp(&b.userid))
    });
    s
}

/// Picks the sender of a mass message to a customer with relationships
/// `rels`, whose salesperson's `wecom_userid` is `owner`. `Err` (the reason)
/// when no relationship stands.
pub fn choose(
    owner: Option<&str>,
    rels: &[Relationship],
    latest: Option<&LatestTransfer>,
) -> Result<Sender, String> {
    let standing = standing(rels);
    if let Some(o) = owner
        && standing.iter().any(|r| r.userid == o)
    {
        return Ok(Sender {
            userid: o.to_string(),
            note: None,
        });
    }
    let Some(newest) = standing.first() else {
        return Err(match rels.iter().find(|r| r.ended_by.is_some()) {
            Some(r) => format!(
                "no WeCom relationship of the customer stands (the last one, with {}, ended by {})",
                r.userid,
                r.ended_by.as_deref().unwrap_or("?")
            ),
            None => "the customer is not a WeCom friend of any staff member".to_string(),
        });
    };
    let not_owner = match owner {
        Some(o) => format!("{o} (the owner) is not a WeCom friend of the customer"),
        None => "the contact's owner has no wecom_userid".to_string(),
    };
    if let (Some(o), Some(t)) = (owner, latest)
        && let Some((handover, why)) = pending_transfer(o, t)
        && standing.iter().any(|r| r.userid == handover)
    {
        return Ok(Sender {
            userid: handover.to_string(),
            note: Some(format!("sent from {handover}: {not_owner}; {why}")),
        });
    }
    Ok(Sender {
        userid: newest.userid.clone(),
        note: Some(format!(
            "sent from {}: {not_owner}; {} is the follow-user who added them most recently",
            newest.userid, newest.userid
        )),
    })
}

/// The handover member for a transfer of a customer with relationships
/// `rels` to `takeover`: `wanted` (the previous owner's `wecom_userid`) when
/// it is a standing follow-user, else the follow-user who added the customer
/// most recently (not the takeover member). `Ok(None)` when the takeover
/// member already is a follow-user (nothing to transfer); `Err` when no
/// other relationship stands.
pub fn handover(
    wanted: Option<&str>,
    takeover: &str,
    rels: &[Relationship],
) -> Result<Option<Sender>, String> {
    let standing = standing(rels);
    if standing.iter().any(|r| r.userid == takeover) {
        return Ok(None);
    }
    if let Some(w) = wanted
        && standing.iter().any(|r| r.userid == w)
    {
        return Ok(Some(Sender {
            userid: w.to_string(),
            note: None,
        }));
    }
    let Some(newest) = standing.first() else {
        return Err(format!(
            "no WeCom relationship of the customer stands: nobody can hand them over to {takeover}"
        ));
    };
    Ok(Some(Sender {
        userid: newest.userid.clone(),
        note: Some(format!(
            "handed over by {}: {} is not a WeCom friend of the customer (40131 otherwise)",
            newest.userid,
            wanted.unwrap_or("the previous owner")
        )),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(userid: &str, added: i64, standing: bool) -> Relationship {
        Relationship {
            external_userid: "wm1".into(),
            userid: userid.into(),
            added_at: Some(added),
            state: None,
            remark: None,
            standing,
            ended_by: (!standing).then(|| "customer".to_string()),
            ended_at: None,
        }
    }

    fn transfer(outbox: &str, task: Option<&str>, provider: Option<i64>) -> LatestTransfer {
        LatestTransfer {
            handover_userid: Some("lilei".into()),
            takeover_userid: Some("wangfang".into()),
            outbox_status: outbox.parse().unwrap(),
            task_status: task.map(|t| t.parse().unwrap()),
            provider_status: provider,
        }
    }

    #[test]
    fn the_owner_sends_when_a_follow_user() {
        let rels = [rel("lilei", 1, true), rel("wangfang", 2, true)];
        let s = choose(Some("wangfang"), &rels, None).unwrap();
        assert_eq!((s.userid.as_str(), s.note), ("wangfang", None));
        // Even with a transfer to them pending (they already were a friend).
        let t = transfer("sent", Some("pending"), None);
        assert_eq!(
            choose(Some("wangfang"), &rels, Some(&t)).unwrap().userid,
            "wangfang"
        );
    }

    #[test]
    fn else_the_handover_member_of_a_pending_transfer_says_why() {
        let rels = [rel("lilei", 1, true), rel("chenjie", 5, true)];
        let cases = [
            (
                transfer("sent", Some("pending"), None),
                "transfer to wangfang pending",
            ),
            (transfer("queued", None, None), "not started yet"),
            (
                transfer("sent", Some("refused"), Some(3)),
                "refused by the customer (status 3)",
            ),
            (
                transfer("sent", Some("takeover_limit"), Some(4)),
                "customer limit (status 4)",
            ),
            (transfer("sent", Some("expired"), None), "outcome unknown"),
            (transfer("dead", None, None), "not started (dead)"),
        ];
        for (t, want) in cases {
            let s = choose(Some("wangfang"), &rels, Some(&t)).unwrap();
            assert_eq!(s.userid, "lilei", "{t:?}");
            let n = s.note.unwrap();
            assert!(
                n.starts_with("sent from lilei: wangfang (the owner) is not a WeCom friend"),
                "{n}"
            );
            assert!(n.contains(want), "{t:?}: {n}");
        }
    }

    #[test]
    fn else_the_newest_follow_user() {
        let rels = [
            rel("lilei", 1, true),
            rel("chenjie", 5, true),
            rel("zhao", 9, false),
        ];
        let s = choose(Some("wangfang"), &rels, None).unwrap();
        assert_eq!(s.userid, "chenjie");
        assert!(s.note.unwrap().contains("added them most recently"));
        // A done transfer, or one to someone else, does not name the sender.
        let done = transfer("sent", Some("done"), Some(1));
        assert_eq!(
            choose(Some("wangfang"), &rels, Some(&done)).unwrap().userid,
            "chenjie"
        );
        // No owner with a wecom_userid.
        let s = choose(None, &rels, None).unwrap();
        assert_eq!(s.userid, "chenjie");
        assert!(s.note.unwrap().contains("owner has no wecom_userid"));
    }

    #[test]
    fn nobody_when_no_relationship_stands() {
        let e = choose(Some("wangfang"), &[rel("lilei", 1, false)], None).unwrap_err();
        assert!(e.contains("lilei") && e.contains("customer"), "{e}");
        assert!(choose(Some("wangfang"), &[], None).is_err());
    }

    #[test]
    fn handover_is_a_real_follow_user() {
        let rels = [rel("lilei", 1, true), rel("chenjie", 5, true)];
        assert_eq!(
            handover(Some("lilei"), "wangfang", &rels).unwrap().unwrap(),
            Sender {
                userid: "lilei".into(),
                note: None
            }
        );
        let h = handover(Some("zhao"), "wangfang", &rels).unwrap().unwrap();
        assert_eq!(h.userid, "chenjie");
        assert!(h.note.unwrap().contains("zhao is not a WeCom friend"));
        assert_eq!(handover(Some("lilei"), "chenjie", &rels).unwrap(), None);
        assert!(handover(Some("lilei"), "wangfang", &[rel("lilei", 1, false)]).is_err());
    }
}
