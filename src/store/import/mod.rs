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

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::bulk::{BulkWriter, Counts};
use super::contacts::{Row, check_tag, write_rows};
use super::pg_import::PgBulkWriter;
use super::{Store, StoreError, to_ms};
use crate::settings::FieldType;

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
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            fields: Default::default(),
            tz: chrono_tz::UTC,
            encoding: None,
            dry_run: false,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Id,
    Name,
    Email,
    Phone,
    Wecom,
    Owner,
    Timezone,
    CreatedAt,
    LastActiveAt,
    Unsubscribed,
    Tags,
    /// Index into the attribute keys.
    Attr(usize),
}

fn builtin_col(name: &str) -> Option<Col> {
    Some(match name {
        "id" => Col::Id,
        "name" => Col::Name,
        "email" => Col::Email,
        "phone" => Col::Phone,
        "wecom_external_userid" => Col::Wecom,
        "owner" => Col::Owner,
        "timezone" => Col::Timezone,
        "created_at" => Col::CreatedAt,
        "last_active_at" => Col::LastActiveAt,
        "unsubscribed" => Col::Unsubscribed,
        "tags" => Col::Tags,
        _ => return None,
    })
}

struct Header {
    cols: Vec<Col>,
    names: Vec<String>,
    /// The declared type of each attribute column (by attribute index).
    attr_types: Vec<Option<FieldType>>,
    tz: chrono_tz::Tz,
    /// `"key":` for each attribute column, JSON-escaped once.
    attr_keys: Vec<String>,
}

fn read_header(
    path: &Path,
    rec: &csv::ByteRecord,
    opts: &ImportOptions,
) -> Result<Header, StoreError> {
    let bad = |message: String| StoreError::BadFile {
        path: path.display().to_string(),
        message,
    };
    let mut cols = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut attr_keys = Vec::new();
    let mut attr_types = Vec::new();
    for (i, field) in rec.iter().enumerate() {
        let field = if i == 0 {
            field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
        } else {
            field
        };
        let name = std::str::from_utf8(field)
            .map_err(|_| {
                bad(format!(
                    "1: column {} of the header is not valid UTF-8",
                    i + 1
                ))
            })?
            .trim()
            .to_string();
        if name.is_empty() {
            return Err(bad(format!(
                "1: column {} of the header has no name",
                i + 1
            )));
        }
        if let Some(j) = names.iter().position(|n| *n == name) {
            return Err(bad(format!(
                "1: column {name:?} appears twice (columns {} and {})",
                j + 1,
                i + 1
            )));
        }
        let col = match builtin_col(&name) {
            Some(c) => c,
            None => {
                let mut key = serde_json::to_string(&name).expect("a string serialises");
                key.push(':');
                attr_keys.push(key);
                attr_types.push(opts.fields.get(&name).copied());
                Col::Attr(attr_keys.len() - 1)
            }
        };
        cols.push(col);
        names.push(name);
    }
    if !cols.contains(&Col::Id) {
        return Err(bad(format!(
            "1: no \"id\" column (the header names: {})",
            names.join(", ")
        )));
    }
    Ok(Header {
        cols,
        names,
        attr_types,
        tz: opts.tz,
        attr_keys,
    })
}

/// A time: RFC 3339, or one of Excel's forms (`2026-05-01 09:00:00`,
/// `2026/5/1 9:00`, a date alone for midnight) in `tz`.
pub fn parse_time_in(s: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = || {
        for fmt in [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y/%m/%d %H:%M:%S",
            "%Y/%m/%d %H:%M",
        ] {
            if let Ok(n) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
                return Some(n);
            }
        }
        for fmt in ["%Y-%m-%d", "%Y/%m/%d"] {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, fmt) {
                return d.and_hms_opt(0, 0, 0);
            }
        }
        None
    };
    let bad = || {
        format!(
            "{s:?} is not a time (RFC 3339 like 2026-01-31T09:00:00+08:00, or 2026-01-31 09:00, 2026/1/31 9:00, 2026-01-31 in {tz})"
        )
    };
    let n = local().ok_or_else(bad)?;
    use chrono::TimeZone;
    tz.from_local_datetime(&n)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{s:?} does not exist in {tz} (a daylight-saving gap)"))
}

fn parse_time(s: &str, tz: chrono_tz::Tz) -> Result<i64, String> {
    parse_time_in(s, tz).map(to_ms)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{s:?} is not true/false, 1/0 or yes/no")),
    }
}

/// An attribute cell of a declared type, as stored: a number as written
/// (trimmed), a bool as true/false, a time as RFC 3339 in `tz`.
fn typed_cell(ty: FieldType, raw: &str, tz: chrono_tz::Tz) -> Result<Option<String>, String> {
    let s = raw.trim();
    Ok(match ty {
        FieldType::String => None,
        FieldType::Number => {
            if s.parse::<f64>().map(|n| n.is_finite()) != Ok(true) {
                return Err(format!("{s:?} is not a number"));
            }
            Some(s.to_string())
        }
        FieldType::Bool => Some(parse_bool(s)?.to_string()),
        FieldType::Timestamp => Some(
            parse_time_in(s, tz)?
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        // A calendar date, not an instant: stored as YYYY-MM-DD (Excel's
        // 2026/5/1 read too).
        FieldType::Date => {
            let d = ["%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d"]
                .iter()
                .find_map(|f| chrono::NaiveDate::parse_from_str(s, f).ok())
                .ok_or_else(|| format!("{s:?} is not a date; write YYYY-MM-DD, e.g. 1990-06-15"))?;
            Some(d.format("%Y-%m-%d").to_string())
        }
    })
}

fn opt(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

/// Turns one data record into a row, or says why it is bad.
fn parse_row(h: &Header, rec: &csv::ByteRecord, row: &mut Row) -> Result<(), String> {
    if rec.len() != h.cols.len() {
        return Err(format!(
            "expected {} columns, found {}",
            h.cols.len(),
            rec.len()
        ));
    }
    let mut attrs: Vec<u8> = Vec::new();
    for (i, (col, field)) in h.cols.iter().zip(rec.iter()).enumerate() {
        // Where a bad cell is: its column's number and name.
        let at = |e: String| format!("column {} ({}): {e}", i + 1, h.names[i]);
        let raw = std::str::from_utf8(field).map_err(|_| {
            at("not valid UTF-8 (save the file as \"CSV UTF-8\" in Excel, or import it with --encoding gbk)".into())
        })?;
        if let Col::Attr(k) = *col {
            if !raw.is_empty() {
                attrs.push(if attrs.is_empty() { b'{' } else { b',' });
                attrs.extend_from_slice(h.attr_keys[k].as_bytes());
                let typed = match h.attr_types[k] {
                    None | Some(FieldType::String) => None,
                    Some(ty) => typed_cell(ty, raw, h.tz).map_err(at)?,
                };
                serde_json::to_writer(&mut attrs, typed.as_deref().unwrap_or(raw))
                    .expect("writing a string to memory cannot fail");
            }
            continue;
        }
        let s = raw.trim();
        match col {
            Col::Id => {
                if s.is_empty() {
                    return Err("missing id".into());
                }
                if s.chars().any(char::is_control) {
                    return Err(at(format!("id {s:?} contains a control character")));
                }
                if let Some(reason) = super::contacts::id_too_long(s) {
                    return Err(reason);
                }
                row.id = s.to_string();
            }
            Col::Name => row.name = opt(s),
            Col::Email => row.email = opt(s),
            Col::Phone => row.phone = opt(s),
            Col::Wecom => row.wecom_external_userid = opt(s),
            Col::Owner => row.owner = opt(s),
            Col::Timezone => {
                if !s.is_empty() {
                    chrono_tz::Tz::from_str(s).map_err(|_| {
                        at(format!(
                            "{s:?} is not an IANA time zone name (like Asia/Shanghai)"
                        ))
                    })?;
                    row.timezone = Some(s.to_string());
                }
            }
            Col::CreatedAt => {
                if !s.is_empty() {
                    row.created_at = Some(parse_time(s, h.tz).map_err(at)?);
                }
            }
            Col::LastActiveAt => {
                if !s.is_empty() {
                    row.last_active_at = Some(parse_time(s, h.tz).map_err(at)?);
                }
            }
            Col::Unsubscribed => {
                if !s.is_empty() {
                    row.unsubscribed = Some(parse_bool(s).map_err(at)?);
                }
            }
            Col::Tags => {
                for t in s.split(';') {
                    let t = t.trim();
                    if t.is_empty() {
                        continue;
                    }
                    let t = check_tag(t).map_err(|e| at(e.to_string()))?;
                    if !row.tags.contains(&t) {
                        row.tags.push(t);
                    }
                }
            }
            Col::Attr(_) => unreachable!(),
        }
    }
    if attrs.is_empty() {
        row.attrs = "{}".to_string();
    } else {
        attrs.push(b'}');
        row.attrs = String::from_utf8(attrs).expect("built from valid UTF-8");
    }
    Ok(())
}

/// Most lines one CSV record may span (quoted fields may hold newlines: an
/// address over a few lines). A record longer than this is taken for a
/// quote that was never closed.
pub const MAX_RECORD_LINES: u64 = 100;

/// Whether the raw bytes of one record end inside a quoted field (RFC 4180,
/// as the csv crate reads it: a `"` opens quotes only at the start of a
/// field, `""` inside quotes is a quote).
fn ends_in_quotes(raw: &[u8]) -> bool {
    let mut in_quotes = false;
    let mut field_start = true;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if in_quotes {
            if b == b'"' {
                if raw.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else if b == b'"' && field_start {
            in_quotes = true;
            field_start = false;
        } else {
            field_start = matches!(b, b',' | b'\n' | b'\r');
        }
        i += 1;
    }
    in_quotes
}

/// The raw bytes `start..end` of the file, read again (for the rare record
/// that spans lines).
fn raw_range<R: Read + Seek>(file: &mut R, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.by_ref()
        .take(end.saturating_sub(start))
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The ids read so far, to report a repeated id with the line it first
/// came on. Kept as 64-bit hashes with where their record lies in the file
/// (about 28 bytes an id, not the id itself: 10M ids took 1 GB as strings);
/// a hash met again is checked against the first record, read back from
/// the file, so a collision never costs a good row.
#[derive(Default)]
struct SeenIds {
    /// hash → (first record's byte offset, its length, its line)
    first: HashMap<u64, (u64, u32, u32)>,
    /// Ids whose hash an earlier, different id took (rare): kept whole.
    spilled: HashMap<Box<str>, u64>,
}

impl SeenIds {
    fn hash(id: &str) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
    }

    /// The line `id` first came on, or None (and it is recorded as on the
    /// record `rec`, which `reader` has just read).
    fn first_line<R: Read>(
        &mut self,
        id: &str,
        line: u64,
        header: &Header,
        again: &mut Box<dyn ReadSeek>,
        rec: &csv::ByteRecord,
        reader: &csv::Reader<R>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(pos) = rec.position() else {
            return Ok(None);
        };
        let start = pos.byte();
        let end = reader.position().byte();
        let h = Self::hash(id);
        match self.first.get(&h) {
            None => {
                let len = u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX);
                let line32 = u32::try_from(line).unwrap_or(u32::MAX);
                self.first.insert(h, (start, len, line32));
                Ok(None)
            }
            Some(&(at, len, first)) => {
                if Self::id_at(again, header, at, len)?.as_deref() == Some(id) {
                    return Ok(Some(u64::from(first)));
                }
                // Another id with the same hash: remember this one whole.
                match self.spilled.get(id) {
                    Some(&first) => Ok(Some(first)),
                    None => {
                        self.spilled.insert(id.into(), line);
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The id of the record at `at`, read back from the file.
    fn id_at(
        again: &mut Box<dyn ReadSeek>,
        header: &Header,
        at: u64,
        len: u32,
    ) -> Result<Option<String>, StoreError> {
        let raw = raw_range(again, at, at + u64::from(len)).map_err(|e| StoreError::BadFile {
            path: String::new(),
            message: e.to_string(),
        })?;
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(raw.as_slice());
        let mut rec = csv::ByteRecord::new();
        if !r.read_byte_record(&mut rec).unwrap_or(false) {
            return Ok(None);
        }
        let mut row = Row::default();
        Ok(parse_row(header, &rec, &mut row).ok().map(|()| row.id))
    }
}

/// A source that can be read again at a byte position.
trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// What the parsing thread hands to the writer.
struct Batch {
    rows: Vec<Row>,
    bad: Vec<BadRow>,
    records: u64,
    bytes_read: u64,
}

/// Reads the file on the current (blocking) thread and sends batches.
/// Whether the start of a file is not UTF-8 but reads as GB18030.
fn looks_gb18030(head: &[u8]) -> bool {
    let utf8_broken = match std::str::from_utf8(head) {
        Ok(_) => false,
        // A character cut by the end of the sample is not a fault.
        Err(e) => e.error_len().is_some(),
    };
    if !utf8_broken {
        return false;
    }
    let mut d = encoding_rs::GB18030.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(head.len() * 2);
    let (res, _) = d.decode_to_string_without_replacement(head, &mut out, false);
    !matches!(res, encoding_rs::DecoderResult::Malformed(..))
}

fn parse_file(
    path: &Path,
    opts: &ImportOptions,
    tx: &mpsc::Sender<Result<Batch, StoreError>>,
) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let gbk = match opts.encoding {
        Some(e) => e == Encoding::Gb18030,
        None => {
            use std::io::{Read, Seek};
            let mut head = vec![0u8; 64 * 1024];
            let n = file.read(&mut head).map_err(io)?;
            file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
            looks_gb18030(&head[..n])
        }
    };
    // `again` re-reads the records that span lines, by byte position in
    // what the parser reads (the decoded text for a GB18030 file).
    let (input, mut again): (Box<dyn ReadSeek>, Box<dyn ReadSeek>) = if gbk {
        // Decoded whole into memory: a Chinese Excel export is small next
        // to the UTF-8 files the fast path streams.
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (text, _, _) = encoding_rs::GB18030.decode(&bytes);
        let utf8 = text.into_owned().into_bytes();
        (
            Box::new(std::io::Cursor::new(utf8.clone())),
            Box::new(std::io::Cursor::new(utf8)),
        )
    } else {
        (
            Box::new(BufReader::with_capacity(1 << 20, file)),
            Box::new(File::open(path).map_err(io)?),
        )
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(input);
    let mut rec = csv::ByteRecord::new();
    let csv_err = |e: csv::Error| StoreError::BadFile {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if !reader.read_byte_record(&mut rec).map_err(csv_err)? {
        return Err(StoreError::BadFile {
            path: path.display().to_string(),
            message: "the file is empty: expected a header row naming the columns".into(),
        });
    }
    let header = read_header(path, &rec, opts)?;
    // The csv crate leaves the LF of a CRLF terminator unread when it returns
    // a record, so with CRLF (Excel's and WPS's exports) every later record's
    // line is one short (BurntSushi/rust-csv#395). It then starts at that LF:
    // look once, after the header, and add the line back when reporting.
    let crlf: u64 = {
        let at = reader.position().byte();
        let next = raw_range(&mut again, at, at + 1).map_err(io)?;
        u64::from(next.first() == Some(&b'\n'))
    };
    let mut seen = SeenIds::default();
    let mut batch = Batch {
        rows: Vec::with_capacity(BATCH_ROWS),
        bad: Vec::new(),
        records: 0,
        bytes_read: 0,
    };
    loop {
        match reader.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // An I/O error ends the import; a malformed record is a bad row.
                let line = e.position().map(|p| p.line() + crlf).unwrap_or(0);
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(csv_err(e));
                }
                batch.records += 1;
                batch.bad.push(BadRow {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        }
        let line = rec.position().map(|p| p.line() + crlf).unwrap_or(0);
        batch.records += 1;
        let end = reader.position().clone();
        if let Some(start) = rec.position().cloned()
            && end.line() > start.line() + 1
        {
            // The record spans lines: a quoted field with newlines, or a
            // quote that was never closed and swallowed the rows after it.
            let raw = raw_range(&mut again, start.byte(), end.byte()).map_err(io)?;
            let lines = end.line() - start.line();
            let unclosed = ends_in_quotes(&raw);
            if unclosed || lines > MAX_RECORD_LINES {
                batch.bad.push(BadRow {
                    line,
                    reason: if unclosed {
                        "a quoted field starting on this line is never closed; \
                         close it with \" (a quote inside a quoted field is written \"\")"
                            .into()
                    } else {
                        format!(
                            "a quoted field starting on this line runs over {lines} lines \
                             (at most {MAX_RECORD_LINES}); is a closing \" missing?"
                        )
                    },
                });
                // Resume on the line after the record's first line.
                let nl = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
                let mut next = csv::Position::new();
                next.set_byte(start.byte() + nl as u64 + 1)
                    .set_line(start.line() + 1)
                    .set_record(start.record() + 1);
                reader.seek(next).map_err(csv_err)?;
                continue;
            }
        }
        let mut row = Row::default();
        match parse_row(&header, &rec, &mut row) {
            Ok(()) => match seen.first_line(&row.id, line, &header, &mut again, &rec, &reader)? {
                Some(first) => batch.bad.push(BadRow {
                    line,
                    reason: format!(
                        "id {:?} was already on line {first}; this row was skipped",
                        row.id
                    ),
                }),
                None => batch.rows.push(row),
            },
            Err(reason) => batch.bad.push(BadRow { line, reason }),
        }
        if batch.rows.len() >= BATCH_ROWS {
            batch.bytes_read = reader.position().byte();
            let next = Batch {
                rows: Vec::with_capacity(BATCH_ROWS),
                bad: Vec::new(),
                records: 0,
                bytes_read: 0,
            };
            if tx
                .blocking_send(Ok(std::mem::replace(&mut batch, next)))
                .is_err()
            {
                return Ok(()); // the writer stopped; it reports why
            }
        }
    }
    batch.bytes_read = reader.position().byte();
    let _ = tx.blocking_send(Ok(batch));
    Ok(())
}

/// What the writer hands back after a batch: its counts, and the batch
/// (dropped on the async side, off the writer's thread).
struct Written {
    counts: Counts,
    batch: Batch,
}

/// Adds a written batch to the report and the progress.
fn tally(report: &mut ImportReport, state: &mut ImportProgress, w: Written) {
    report.inserted += w.counts.created;
    report.updated += w.counts.updated;
    report.unchanged += w.counts.unchanged;
    report.rows += w.batch.records;
    report.bad.extend(w.batch.bad);
    state.bytes_read = w.batch.bytes_read;
    state.rows = report.rows;
    state.inserted = report.inserted;
    state.updated = report.updated;
    state.unchanged = report.unchanged;
    state.bad = report.bad.len() as u64;
}

/// Writes the parser's batches through `writer` until the parser is done or
/// an error; sends each result on.
fn write_batches(
    mut writer: BulkWriter,
    mut rx: mpsc::Receiver<Result<Batch, StoreError>>,
    done: mpsc::Sender<Result<Written, StoreError>>,
    now_ms: i64,
) {
    while let Some(msg) = rx.blocking_recv() {
        let written = msg.and_then(|batch| {
            let counts = if batch.rows.is_empty() {
                Counts::default()
            } else {
                writer.write_batch(&batch.rows, now_ms)?
            };
            Ok(Written { counts, batch })
        });
        let failed = written.is_err();
        if done.blocking_send(written).is_err() || failed {
            return;
        }
    }
}

impl Store {
    /// Upserts the contacts of a CSV file (see the module documentation for
    /// the rules). Bad rows are reported, not fatal; an unreadable file or a
    /// bad header is an error and imports nothing. `now` is the creation time
    /// of contacts without `created_at` and the time their tags were added.
    pub async fn import_csv(
        &self,
        path: &Path,
        now: DateTime<Utc>,
        progress: impl FnMut(ImportProgress),
    ) -> Result<ImportReport, StoreError> {
        self.import_csv_with(path, now, &ImportOptions::default(), progress)
            .await
    }

    /// [`Store::import_csv`] with declared types, a time zone, an encoding,
    /// and `dry_run` (every batch in one transaction, rolled back).
    pub async fn import_csv_with(
        &self,
        path: &Path,
        now: DateTime<Utc>,
        opts: &ImportOptions,
        mut progress: impl FnMut(ImportProgress),
    ) -> Result<ImportReport, StoreError> {
        let started = Instant::now();
        let total_bytes = std::fs::metadata(path)
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?
            .len();
        // The file behind a SQLite store; empty for an in-memory store, which
        // a second connection cannot reach (it takes the batches through the
        // pool), and for PostgreSQL (`PgBulkWriter`, below).
        let db_file: String = match &self.sqlite {
            // A dry run goes through the pool: one transaction, rolled back.
            Some(_) if opts.dry_run => String::new(),
            Some(pool) => {
                sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                    .fetch_one(pool)
                    .await?
            }
            None => String::new(),
        };
        let writer = if db_file.is_empty() {
            None
        } else {
            let w = tokio::task::spawn_blocking(move || BulkWriter::open(&db_file))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
            Some(w)
        };
        // One batch queued ahead of the writer: the parser is the faster of
        // the two, and each batch in flight holds 50,000 rows (about 30 MB).
        let (tx, rx) = mpsc::channel::<Result<Batch, StoreError>>(1);
        let owned: PathBuf = path.to_path_buf();
        let popts = opts.clone();
        let parser = std::thread::spawn(move || {
            if let Err(e) = parse_file(&owned, &popts, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let now_ms = to_ms(now);
        let mut report = ImportReport::default();
        let mut state = ImportProgress {
            total_bytes,
            ..Default::default()
        };
        let mut result = Ok(());
        match writer {
            Some(writer) => {
                let (done_tx, mut done) = mpsc::channel::<Result<Written, StoreError>>(2);
                let task =
                    tokio::task::spawn_blocking(move || write_batches(writer, rx, done_tx, now_ms));
                while let Some(msg) = done.recv().await {
                    match msg {
                        Ok(w) => {
                            tally(&mut report, &mut state, w);
                            progress(state);
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                drop(done);
                if let Err(e) = task.await {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
            None if self.dialect == super::Dialect::Postgres => {
                let mut rx = rx;
                let mut pg = PgBulkWriter::open(&self.url, opts.dry_run).await?;
                while let Some(msg) = rx.recv().await {
                    let batch = match msg {
                        Ok(b) => b,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    };
                    let counts = if batch.rows.is_empty() {
                        Counts::default()
                    } else {
                        match pg.write_batch(&batch.rows, now_ms).await {
                            Ok(c) => c,
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    };
                    tally(&mut report, &mut state, Written { counts, batch });
                    progress(state);
                }
                // Dropping the receiver stops the parser if it is still reading.
                drop(rx);
                pg.finish().await?;
            }
            None => {
                let mut rx = rx;
                let mut dry = if opts.dry_run {
                    Some(self.begin().await?)
                } else {
                    None
                };
                while let Some(msg) = rx.recv().await {
                    let mut batch = match msg {
                        Ok(b) => b,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    };
                    let mut counts = Counts::default();
                    if !batch.rows.is_empty() {
                        let written = match dry.as_mut() {
                            Some(t) => {
                                write_batch_in(t, self.dialect, &mut batch.rows, now_ms).await
                            }
                            None => {
                                async {
                                    let mut t = self.begin().await?;
                                    let out = write_batch_in(
                                        &mut t,
                                        self.dialect,
                                        &mut batch.rows,
                                        now_ms,
                                    )
                                    .await?;
                                    t.commit().await?;
                                    Ok(out)
                                }
                                .await
                            }
                        };
                        match written {
                            Ok(out) => counts = Counts::of(&out),
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    tally(&mut report, &mut state, Written { counts, batch });
                    progress(state);
                }
                if let Some(t) = dry {
                    t.rollback().await?;
                }
            }
        }
        let _ = parser.join();
        result?;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// One batch in `t`: the rows, and their tags marked as imported.
async fn write_batch_in(
    t: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: super::Dialect,
    rows: &mut [Row],
    now_ms: i64,
) -> Result<Vec<super::Upserted>, StoreError> {
    let before = super::contacts::log_position_locked(t, dialect).await?;
    let out = write_rows(&mut *t, dialect, rows, now_ms).await?;
    sqlx::query(sqlx::AssertSqlSafe(
        super::contacts::MARK_IMPORTED_TAGS.replace('?', "$1"),
    ))
    .bind(before)
    .execute(&mut **t)
    .await?;
    Ok(out)
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
