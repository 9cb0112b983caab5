//! The states a row of the store can be in, as Rust enums. Each is stored as
//! its `as_str` text; migration 0026 holds the columns to these sets on both
//! stores (a CHECK constraint on PostgreSQL, BEFORE INSERT/UPDATE triggers on
//! SQLite), and `tests/it/schema_parity.rs` holds the sets and the
//! constraints equal.

use sqlx::any::{Any, AnyTypeInfo};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;

/// An unknown state read from the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct UnknownState {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! state_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every state, in the order the migration lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Result<$name, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownState {
                        what: $what,
                        value: other.to_string(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<$name, UnknownState> {
                $name::parse(s)
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl sqlx::Type<Any> for $name {
            fn type_info() -> AnyTypeInfo {
                <str as sqlx::Type<Any>>::type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<'q, Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, Any> for $name {
            fn decode(value: <Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let s = <&str as sqlx::Decode<'r, Any>>::decode(value)?;
                Ok($name::parse(s)?)
            }
        }
    };
}

state_enum!(
    /// `outbox.status`. (`failed` was read but never written; migration 0026
    /// turned any such row into a dead letter.)
    OutboxStatus, "outbox status", {
        /// Waiting for its time (`next_attempt_at`).
        Queued = "queued",
        /// Claimed by a delivery worker (`lease_owner`, `lease_until`).
        Sending = "sending",
        Sent = "sent",
        /// Dead-lettered: `nurture requeue` brings it back.
        Dead = "dead",
        /// Not sent: the contact unsubscribed or was deleted.
        Cancelled = "cancelled",
    }
);

/// A new message is queued.
impl Default for OutboxStatus {
    fn default() -> Self {
        OutboxStatus::Queued
    }
}

impl OutboxStatus {
    /// Still to be delivered (the queue depth counts these).
    pub const WAITING: &'static [OutboxStatus] = &[OutboxStatus::Queued, OutboxStatus::Sending];
}

state_enum!(
    /// `enrollments.status`.
    EnrollmentStatus, "enrollment status", {
        /// Running or waiting for its next step (`next_run_at`).
        Active = "active",
        /// Stopped at its first step by the blast guard until `nurture resume`.
        Held = "held",
        Done = "done",
        Exited = "exited",
    }
);

state_enum!(
    /// `outbox.kind`: whom a message is for, from its payload's `kind`.
    MessageKind, "message kind", {
        /// A message to the contact (the payload has no `kind`).
        Message = "message",
        /// A notice to a salesperson: the contact's opt-outs do not hold it back.
        Notice = "notice",
        /// A WeCom transfer of the customer between salespeople.
        Transfer = "transfer",
        /// A `webhook:` step's POST.
        Webhook = "webhook",
    }
);

state_enum!(
    /// `wecom_tasks.kind`.
    WecomTaskKind, "WeCom task kind", {
        /// A mass message task the salesperson confirms.
        Mass = "mass",
        Transfer = "transfer",
        /// A transfer of a customer of a member who left.
        Resigned = "resigned",
    }
);

impl WecomTaskKind {
    /// A transfer of either kind.
    pub fn is_transfer(self) -> bool {
        matches!(self, WecomTaskKind::Transfer | WecomTaskKind::Resigned)
    }
}

state_enum!(
    /// `wecom_tasks.status`.
    WecomTaskStatus, "WeCom task status", {
        /// Waiting for WeCom's outcome.
        Pending = "pending",
        /// Mass: the customer got it.
        Sent = "sent",
        /// Mass: the customer is not (or no longer) the sender's contact.
        NotFriend = "not_friend",
        /// Mass: the customer's monthly cap of mass messages was reached.
        OverCap = "over_cap",
        /// Transfer: done.
        Done = "done",
        /// Transfer: the customer refused it.
        Refused = "refused",
        /// Transfer: the takeover member has too many customers.
        TakeoverLimit = "takeover_limit",
        /// Transfer: WeCom has no record of it.
        NoRecord = "no_record",
        /// No outcome in time.
        Expired = "expired",
        /// The outcome could not be read.
        Error = "error",
    }
);

state_enum!(
    /// `wecom_tag_marks.action`: what a mark does to the corp tag.
    MarkAction, "tag mark action", {
        Add = "add",
        Remove = "remove",
    }
);

state_enum!(
    /// `wecom_tag_marks.state`.
    MarkState, "tag mark state", {
        /// Queued (or claimed) for the marks worker.
        Pending = "pending",
        /// WeCom took the latest intent (the row stays: nurture's record).
        Done = "done",
        /// Refused for good or failed too often (`last_error` says why).
        Failed = "failed",
    }
);

state_enum!(
    /// Who ended a WeCom relationship (`wecom_relationships.ended_by`, where
    /// a transfer writes `transfer` instead).
    DeletedBy, "relationship ender", {
        /// `del_follow_user`: the customer deleted the staff member.
        Customer = "customer",
        /// `del_external_contact`: the staff member deleted the customer
        /// (with `Source=DELETE_BY_TRANSFER` when a transfer moved them).
        Staff = "staff",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_as_itself() {
        for s in OutboxStatus::ALL {
            assert_eq!(OutboxStatus::parse(s.as_str()), Ok(*s));
        }
        for s in EnrollmentStatus::ALL {
            assert_eq!(EnrollmentStatus::parse(s.as_str()), Ok(*s));
        }
        for s in WecomTaskStatus::ALL {
            assert_eq!(WecomTaskStatus::parse(s.as_str()), Ok(*s));
        }
        for s in WecomTaskKind::ALL {
            assert_eq!(WecomTaskKind::parse(s.as_str()), Ok(*s));
        }
        for s in MessageKind::ALL {
            assert_eq!(MessageKind::parse(s.as_str()), Ok(*s));
        }
        for s in MarkAction::ALL {
            assert_eq!(MarkAction::parse(s.as_str()), Ok(*s));
        }
        for s in MarkState::ALL {
            assert_eq!(MarkState::parse(s.as_str()), Ok(*s));
        }
        for s in DeletedBy::ALL {
            assert_eq!(DeletedBy::parse(s.as_str()), Ok(*s));
        }
    }

    #[test]
    fn an_unknown_state_says_what_was_expected() {
        let e = OutboxStatus::parse("failed").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown outbox status \"failed\" (expected one of: queued, sending, sent, dead, cancelled)"
        );
    }
}
