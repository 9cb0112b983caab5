//! The daemon's log writer: every line is bounded.
//!
//! One event used to be able to write a line of any size (a diagnostic
//! quoting a huge value: 957 KB lines were seen), which log shippers truncate
//! or drop, splitting JSON. [`BoundedStderr`] writes each event to stderr as
//! is up to [`MAX_LOG_LINE`] bytes; a longer one is cut at a character
//! boundary and says how much was cut. In JSON format the cut line is itself
//! a JSON object, so every line still parses.

use std::io::Write;

/// The daemon's log format (`--log-format`). The log channel gets it too
/// (through channel building): a JSON line keeps a multi-line body as it
/// is, the text format escapes its line breaks.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Longest log line written, in bytes (newline included).
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// A `tracing_subscriber` writer for stderr with bounded lines.
#[derive(Debug, Clone, Copy)]
pub struct BoundedStderr {
    pub json: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BoundedStderr {
    type Writer = BoundedWriter;
    fn make_writer(&'a self) -> BoundedWriter {
        BoundedWriter { json: self.json }
    }
}

/// Writes one formatted event (the fmt layer makes one `write_all` per event).
pub struct BoundedWriter {
    json: bool,
}

impl Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = bound_line(buf, self.json);
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `line` if it is at most [`MAX_LOG_LINE`] bytes, else its start and how
/// many bytes were cut (a JSON object when `json`), ending in a newline.
pub fn bound_line(line: &[u8], json: bool) -> std::borrow::Cow<'_, [u8]> {
    if line.len() <= MAX_LOG_LINE {
        return std::borrow::Cow::Borrowed(line);
    }
    // Room for the note and, in JSON, the escaping of the kept text.
    let keep = if json {
        MAX_LOG_LINE / 8
    } else {
        MAX_LOG_LINE - 64
    };
    let text = String::from_utf8_lossy(line);
    let mut cut = keep.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let start = &text[..cut];
    let out = if json {
        let mut s = serde_json::json!({
            "level": "WARN",
            "fields": {
                "message": "log line truncated",
                "bytes": line.len(),
                "start": start,
            },
        })
        .to_string();
        s.push('\n');
        s
    } else {
        format!("{start} … [log line truncated: {} bytes]\n", line.len())
    };
    std::borrow::Cow::Owned(out.into_bytes())
}
