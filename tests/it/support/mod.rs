//! Helpers shared by the end-to-end tests (`use crate::support;`).
#![allow(dead_code)]

pub mod certs;
pub mod console;
pub mod daemon;
pub mod db;
pub mod receiver;
pub mod twilio_fake;
pub mod wecom_fake;
