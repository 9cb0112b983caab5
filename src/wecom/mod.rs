//! WeCom's rules, shared by the planner (`engine`) and the WeCom channel
//! (`channels::wecom`) and so below both: who sends a mass message and who
//! hands a customer over, WeCom's transfer limits and the verdict on a
//! transfer, which channels mark tags. Pure: they decide from values (the
//! store's facts, the settings) and do no I/O, so the dry-run and the
//! channel reach the same answer from the same facts.

pub mod sender;
pub mod tag_marks;
pub mod transfer;
