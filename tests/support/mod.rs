//! Helpers shared by the end-to-end tests. Each test file includes this with
//! `mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod console;
pub mod daemon;
pub mod db;
pub mod receiver;
