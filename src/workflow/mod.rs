//! Workflows: the YAML files marketers keep in `workflows/`.
//!
//! `model` holds the types, `load` reads one file into them (with every
//! problem reported at its place), `check` applies the rules that need the
//! whole project (names unique, channels/templates/teams exist, ...), and
//! `schema` describes the file format as JSON Schema for editors.

pub mod check;
pub mod limits;
pub mod load;
pub mod model;
pub mod schema;

pub use load::{LoadedWorkflow, load_file, load_str, load_valid};
pub use model::*;

/// The step id under which an enrollment in the workflow's holdout is
/// recorded (a split record, arm `holdout`): it names a step record, so the
/// planner that writes it and the report that counts it both take it from
/// here.
pub const HOLDOUT_STEP: &str = "@holdout";
