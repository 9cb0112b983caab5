//! The channel's task records live in the store ([`crate::store::wecom::tasks`]);
//! re-exported here for the channel's code.

pub use crate::store::wecom::tasks::*;
