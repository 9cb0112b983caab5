//! Workflows: the YAML files marketers keep in `workflows/`.

pub mod model;

pub use model::*;
