//! The engine: plan, then apply. `plan` decides; `sources` finds what is due
//! at a time (pending events, cron-ticked workflows, sleeping enrollments).

pub mod apply;
pub mod caps;
pub mod explain;
pub mod explain_contact;
pub mod gates;
pub mod plan;
pub mod scheduler;
pub mod sim_index;
pub mod simulate;
pub mod sources;
pub mod transfer;

pub use plan::*;
