//! nurture: marketing automation workflows kept as files in Git.
//!
//! Reading order: `workflow` and `settings` (the files), `audience` and
//! `template` (conditions and messages), `store` (the customer store),
//! `engine` (plan, then apply), `cli` (the commands).

pub mod api;
pub mod assign;
pub mod attachments;
pub mod audience;
pub mod calendar;
pub mod channels;
pub mod cli;
pub mod config;
pub mod console;
pub mod contact;
pub mod contact_ways;
pub mod csv_safe;
pub mod daemon;
pub mod diagnostics;
pub mod duration;
pub mod engine;
pub mod located;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod project;
pub mod project_files;
pub mod reload;
pub mod report;
pub mod schedule;
pub mod segments;
pub mod settings;
pub mod store;
pub mod template;
pub mod timefmt;
pub mod web;
pub mod wecom;
pub mod workflow;
pub mod workflow_tests;
pub mod yaml;
