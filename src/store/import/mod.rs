//! CSV import (SPEC §2): the first row names the columns; built-in names map
//! to built-in fields, `tags` is split on `;`, every other column becomes a
//! custom attribute (a string). Rows are upserted by `id`.
//!
//! Decisions beyond the SPEC:
//! - Column names are trimmed and case-sensitive (`Email` is an attribute).
//! - An empty cell means "not given": a built-in field keeps its stored value
//!   and the attribute is left as it is. Built-in cells are trimmed;
//!   attribute cells are kept as written.
//! - Tags in the file are added, never removed: a contact keeps tags it got
//!   elsewhere (remove them with `contacts tag ID --remove`).
//! - `unsubscribed` takes true/false, 1/0, yes/no (any case);
//!   `created_at`/`last_active_at` are RFC 3339 or one of Excel's forms
//!   (`2026-05-01 09:00:00`, `2026/5/1 9:00`, `2026-05-01` for midnight) in
//!   the settings' time zone; `timezone` is an IANA name.
//! - A column declared under `fields:` must hold its type: a number, a bool
//!   (stored as true/false) or a time (stored as RFC 3339 in the settings'
//!   time zone); a bad cell makes a bad row, named by line and column.
//! - A file that is not UTF-8 but reads as GB18030 (what Excel saves as
//!   "CSV" in a Chinese locale) is read as GB18030; `--encoding gbk` says so
//!   outright. A BOM is ignored.
//!   A new contact without `created_at` is created "now".
//! - A bad row (wrong column count, invalid UTF-8, missing id, bad value, an
//!   id already seen earlier in the file) is reported with its line number
//!   (the line where the record starts; quoted fields may span lines) and
//!   skipped; every good row is imported.
//! - A quoted field that is never closed, or that runs over more than
//!   [`MAX_RECORD_LINES`] lines, is a bad row at the line where its record
//!   starts, and reading resumes on the next line: one stray `"` used to
//!   swallow every row after it into one field. So the rows counted always
//!   add up to new + updated + unchanged + bad.
//! - Importing the same file again changes nothing and logs nothing.
//!
//! Speed: one thread parses while another writes batches of [`BATCH_ROWS`]
//! rows, one transaction each: on SQLite through `rusqlite` on its own
//! connection to the store's file (`store::bulk`), on PostgreSQL by `COPY`
//! into a staging table and set-based statements on a connection of its own
//! (`store::pg_import`), which write the event log in bulk. An in-memory
//! SQLite store is written through the pool with `write_rows`. All three
//! write the same rows and the same event log.

use std::str::FromStr;
use std::time::Duration;

use crate::settings::FieldType;

mod header;
mod reader;
mod record;
mod run;
mod seen;

pub use reader::MAX_RECORD_LINES;
pub use record::parse_time_in;

/// Rows per transaction. Fewer, larger commits write fewer WAL frames (the
/// same index pages again and again): 50,000 imported 1,000,000 rows in
/// about 12 s where 20,000 took about 20 s (2 CPUs, busy machine).
pub const BATCH_ROWS: usize = 50_000;

/// How to read a file beyond its header: declared field types, the time
/// zone of times written without an offset, the file's encoding, and whether
/// to write at all.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// `fields:` of the settings: a declared column's cells must be of its type.
    pub fields: std::collections::BTreeMap<String, FieldType>,
    /// Times without an offset (Excel's `2026/5/1 9:00`) are read in this zone.
    pub tz: chrono_tz::Tz,
    /// `None`: UTF-8, or GBK/GB18030 when the file is not UTF-8 and reads as GB18030.
    pub encoding: Option<Encoding>,
    /// Count what would change, then roll back: nothing is written.
    pub dry_run: bool,
    /// What the caller checks in each good row's phone and email (`contacts
    /// import`: the channels' address rules, which the store does not know).
    pub check: Option<RowCheck>,
}

/// A check of a good row's phone and email: each problem it finds, as (a
/// key naming the problem, why), is counted in [`ImportReport::flagged`].
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct RowCheck(
    pub std::sync::Arc<dyn Fn(Option<&str>, Option<&str>) -> Vec<(String, String)> + Send + Sync>,
);

impl std::fmt::Debug for RowCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowCheck")
    }
}

/// Good rows a [`RowCheck`] found a problem in, and the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flagged {
    pub rows: u64,
    /// The file's line of the first such row.
    pub first_line: u64,
    /// Why, for that row.
    pub first_why: String,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            fields: Default::default(),
            tz: chrono_tz::UTC,
            encoding: None,
            dry_run: false,
            check: None,
        }
    }
}

/// A file's encoding, as `--encoding` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    /// GBK and GB18030 (its superset): what Excel saves in a Chinese locale.
    Gb18030,
}

impl FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "gbk" | "gb18030" | "gb2312" | "cp936" => Ok(Encoding::Gb18030),
            _ => Err(format!(
                "unknown encoding {s:?}: give utf-8 or gbk (GB18030, what Excel saves in a Chinese locale)"
            )),
        }
    }
}

/// Where an import stands; given to the progress callback after each batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportProgress {
    pub bytes_read: u64,
    pub total_bytes: u64,
    /// Data rows read so far (bad ones included).
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub bad: u64,
}

/// A row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based line of the file where the record starts.
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Data rows in the file (bad ones included).
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub bad: Vec<BadRow>,
    pub elapsed: Duration,
    /// How many good rows name each `owner` (rows without one are not
    /// counted): `contacts import` warns about owners that are not
    /// salespeople of the settings' teams.
    pub owners: std::collections::BTreeMap<String, u64>,
    /// What [`ImportOptions::check`] found, by its key.
    pub flagged: std::collections::BTreeMap<String, Flagged>,
}

/// Writes `n` with thousands separators: 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
