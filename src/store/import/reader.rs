//! The parsing thread: reads the file (UTF-8, or GB18030 decoded), cuts it
//! into records, turns them into rows or bad rows, and sends them to the
//! writer in batches.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use tokio::sync::mpsc;

use super::header::read_header;
use super::record::parse_row;
use super::seen::SeenIds;
use super::{BadRow, Encoding, ImportOptions};
use crate::store::StoreError;
use crate::store::contacts::Row;

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
pub(super) fn raw_range<R: Read + Seek>(
    file: &mut R,
    start: u64,
    end: u64,
) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.by_ref()
        .take(end.saturating_sub(start))
        .read_to_end(&mut buf)?;
    Ok(buf)
}
/// A source that can be read again at a byte position.
pub(super) trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// What the parsing thread hands to the writer.
pub(super) struct Batch {
    pub(super) rows: Vec<Row>,
    pub(super) bad: Vec<BadRow>,
    pub(super) records: u64,
    pub(super) bytes_read: u64,
    /// Good rows per `owner` named (see [`super::ImportReport::owners`]).
    pub(super) owners: HashMap<String, u64>,
    /// What the caller's check found (see [`super::ImportReport::flagged`]).
    pub(super) flagged: HashMap<String, super::Flagged>,
}

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

/// Records read before the file's row count is estimated from their length.
const SAMPLE_RECORDS: u64 = 1_000;

/// The rows a file of `total_bytes` holds if they are as long as the
/// `SAMPLE_RECORDS` read in its first `read` bytes, with a tenth more.
fn expected_rows(total_bytes: u64, read: u64) -> usize {
    let per_row = read.max(1) as f64 / SAMPLE_RECORDS as f64;
    let rows = total_bytes as f64 / per_row * 1.1;
    // A row is at least a few bytes: a short sample says little beyond that.
    rows.min(total_bytes as f64 / 4.0) as usize
}

/// Reads the file on the current (blocking) thread and sends batches of
/// `rows_per_batch` rows.
pub(super) fn parse_file(
    path: &Path,
    opts: &ImportOptions,
    tx: &mpsc::Sender<Result<Batch, StoreError>>,
    rows_per_batch: usize,
) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let total_bytes = file.metadata().map_err(io)?.len();
    {
        // UTF-16 (a BOM of FF FE or FE FF) is what Excel's "Unicode Text"
        // saves, tab-separated: read as CSV it is one garbled column. Said
        // plainly instead, with what to save.
        use std::io::{Read, Seek};
        let mut bom = [0u8; 2];
        let n = file.read(&mut bom).map_err(io)?;
        file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        if n == 2 && (bom == [0xFF, 0xFE] || bom == [0xFE, 0xFF]) {
            return Err(StoreError::BadFile {
                path: path.display().to_string(),
                message: "the file is in UTF-16 (as Excel's \"Unicode Text\" saves), which import does not read; save it as \"CSV UTF-8 (逗号分隔)\" and import that".into(),
            });
        }
    }
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
    let mut records_read: u64 = 0;
    let mut batch = Batch {
        rows: Vec::with_capacity(rows_per_batch),
        bad: Vec::new(),
        records: 0,
        bytes_read: 0,
        owners: HashMap::new(),
        flagged: HashMap::new(),
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
        records_read += 1;
        if records_read == SAMPLE_RECORDS {
            seen.expect(expected_rows(total_bytes, reader.position().byte()));
        }
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
                None => {
                    if let Some(check) = &opts.check {
                        for (key, why) in (check.0)(row.phone.as_deref(), row.email.as_deref()) {
                            batch
                                .flagged
                                .entry(key)
                                .and_modify(|f| f.rows += 1)
                                .or_insert_with(|| super::Flagged {
                                    rows: 1,
                                    first_line: line,
                                    first_why: why,
                                });
                        }
                    }
                    if let Some(owner) = &row.owner {
                        match batch.owners.get_mut(owner.as_str()) {
                            Some(n) => *n += 1,
                            None => {
                                batch.owners.insert(owner.clone(), 1);
                            }
                        }
                    }
                    batch.rows.push(row)
                }
            },
            Err(reason) => batch.bad.push(BadRow { line, reason }),
        }
        if batch.rows.len() >= rows_per_batch {
            batch.bytes_read = reader.position().byte();
            let next = Batch {
                rows: Vec::with_capacity(rows_per_batch),
                bad: Vec::new(),
                records: 0,
                bytes_read: 0,
                owners: HashMap::new(),
                flagged: HashMap::new(),
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
