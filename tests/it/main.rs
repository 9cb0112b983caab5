//! The integration tests: one test binary (as ripgrep does), one module per
//! area. Each of the former 27 test executables linked every dependency; one
//! binary links them once, which is most of the suite's build time and disk.
//!
//! `cargo test --test it MODULE::` runs one area (`cargo test --test it dry_run::`).

mod support;

mod api;
mod audience_equivalence;
mod channels_cli;
mod console_api;
mod console_browser;
mod contacts_cli;
mod contacts_in_out;
mod crash;
mod daemon;
mod date_trigger;
mod delivery;
mod docs_links;
mod dry_run;
mod faults;
mod fidelity;
mod fuzz;
mod getting_started;
mod goals;
mod import;
mod layering;
mod marketer_day;
mod multi_daemon;
mod no_surprises;
mod people_output;
mod plan_equals_daemon;
mod prune;
mod real_exports;
mod report_counts;
mod salesperson_cap;
mod scheduler_fairness;
mod schema_file;
mod schema_parity;
mod segments;
mod send_window;
mod set_notify;
mod shared_store;
mod sms_channels;
mod smtp_channel;
mod split;
mod status_history;
mod template_fuzz;
mod template_render;
mod throttle;
mod validate;
mod validate_channels;
mod validate_helps;
mod wait_until;
mod webhook_transport;
mod wecom_attachments;
mod wecom_callback;
mod wecom_channel;
mod wecom_contact_ways;
mod wecom_crypto;
mod wecom_tag_marks;
mod wecom_transfer_plan;
mod workflow_tests;
