//! Reports about the user's files: `FILE:LINE:COLUMN: message`, the offending
//! line, and a suggestion where one exists.
//!
//! ```text
//! workflows/welcome.yaml:7:22: unknown key "tempalte" in a send step
//!   |
//! 7 |   - send: { channel: sms, tempalte: welcome }
//!   |                           ^
//!   = help: did you mean "template"?
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A place in a file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub fn new(line: u32, col: u32) -> Self {
        Pos { line, col }
    }
}

const WARNING: &str = "warning: ";

/// One problem in one of the user's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: std::path::PathBuf,
    pub pos: Pos,
    pub message: String,
    /// "did you mean ...?" and similar, shown after the message.
    pub suggestion: Option<String>,
}

impl Diagnostic {
    pub fn new(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            pos,
            message: message.into(),
            suggestion: None,
        }
    }

    /// A warning: printed by `validate`, which still exits 0; never stops a
    /// file from loading.
    pub fn warning(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic::new(file, pos, format!("{WARNING}{}", message.into()))
    }

    pub fn is_warning(&self) -> bool {
        self.message.starts_with(WARNING)
    }

    /// Adds a suggestion (shown as `= help: ...`).
    pub fn with_suggestion(mut self, suggestion: impl Into<String>) -> Self {
        self.suggestion = Some(suggestion.into());
        self
    }

    /// Adds `did you mean "X"?` when one of `candidates` is close to `word`.
    pub fn did_you_mean<I, S>(mut self, word: &str, candidates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if let Some(s) = did_you_mean(word, candidates) {
            self.suggestion = Some(format!("did you mean \"{s}\"?"));
        }
        self
    }

    /// The first line only: `FILE:LINE:COLUMN: message`.
    pub fn headline(&self) -> String {
        if self.pos.line == 0 {
            format!("{}: {}", self.file.display(), self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file.display(),
                self.pos.line,
                self.pos.col.max(1),
                self.message
            )
        }
    }

    /// The full report: headline, the offending line with a caret under the
    /// column (when `source` is the file's text and the line exists), and the
    /// suggestion.
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = self.headline();
        out.push('\n');
        let line_text = source.and_then(|s| {
            if self.pos.line == 0 {
                None
            } else {
                s.lines().nth(self.pos.line as usize - 1)
            }
        });
        if let Some(text) = line_text {
            let text = text.trim_end_matches('\r');
            let num = self.pos.line.to_string();
            let pad = " ".repeat(num.len());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {text}");
            // Keep tabs as tabs so the caret lines up however the terminal shows them.
            // A Chinese character takes two columns: two spaces under it.
            let before: String = text
                .chars()
                .take(self.pos.col.saturating_sub(1) as usize)
                .map(|c| match c {
                    '\t' => "\t".to_string(),
                    c => " ".repeat(unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)),
                })
                .collect();
            let _ = writeln!(out, "{pad} | {before}^");
        }
        if let Some(s) = &self.suggestion {
            let _ = writeln!(out, "  = help: {s}");
        }
        out
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.headline())?;
        if let Some(s) = &self.suggestion {
            write!(f, " ({s})")?;
        }
        Ok(())
    }
}

/// Sorts by file, then line, then column, and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| (&a.file, a.pos, &a.message).cmp(&(&b.file, b.pos, &b.message)));
    diags.dedup();
}

/// Renders every diagnostic (sorted), reading each file once for its source lines.
pub fn render_all(diags: &[Diagnostic]) -> String {
    let mut sorted = diags.to_vec();
    sort(&mut sorted);
    let mut sources: HashMap<PathBuf, Option<String>> = HashMap::new();
    let mut out = String::new();
    for d in &sorted {
        let src = sources
            .entry(d.file.clone())
            .or_insert_with(|| std::fs::read_to_string(&d.file).ok());
        out.push_str(&d.render(src.as_deref()));
    }
    out
}

/// Prints every diagnostic to stderr (sorted, with source lines).
pub fn eprint_all(diags: &[Diagnostic]) {
    eprint!("{}", render_all(diags));
}

/// How many distinct files the diagnostics are about.
pub fn file_count(diags: &[Diagnostic]) -> usize {
    let mut files: Vec<&Path> = diags.iter().map(|d| d.file.as_path()).collect();
    files.sort();
    files.dedup();
    files.len()
}

/// The candidate closest to `word`, if it is close enough to be what the user
/// meant. Case differences count as near misses; short words need near-exact
/// matches so that "sms" does not suggest "smtp" for "abc".
pub fn did_you_mean<I, S>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let lower = word.to_lowercase();
    let mut best: Option<(f64, String)> = None;
    for c in candidates {
        let c = c.as_ref();
        if c == word {
            continue;
        }
        let cl = c.to_lowercase();
        let dist = strsim::damerau_levenshtein(&lower, &cl);
        let longest = lower.chars().count().max(cl.chars().count());
        // Allow one edit for short words, two for medium, three for long ones.
        let allowed = match longest {
            0..=3 => 1,
            4..=8 => 2,
            _ => 3,
        };
        let jw = strsim::jaro_winkler(&lower, &cl);
        let close = dist <= allowed && dist < longest;
        // A long shared prefix ("team" vs "teams", "east" vs "east-sales") also counts.
        let prefix = jw >= 0.9 && (cl.starts_with(&lower) || lower.starts_with(&cl));
        if !(close || prefix) {
            continue;
        }
        let score = jw - dist as f64 * 0.01;
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, c.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
#[allow(clippy::needless_borrows_for_generic_args)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let keys = ["channel", "template"];
        assert_eq!(did_you_mean("tempalte", &keys).as_deref(), Some("template"));
        assert_eq!(did_you_mean("chanel", &keys).as_deref(), Some("channel"));
        assert_eq!(did_you_mean("Template", &keys).as_deref(), Some("template"));
        assert_eq!(did_you_mean("body", &keys), None);
        assert_eq!(
            did_you_mean("smss", &["sms", "console"]).as_deref(),
            Some("sms")
        );
        assert_eq!(
            did_you_mean("ctiy", &["city", "name"]).as_deref(),
            Some("city")
        );
        assert_eq!(did_you_mean("abc", &["sms"]), None);
        assert_eq!(did_you_mean("x", &["y"]), None);
        assert_eq!(did_you_mean("", &["sms"]), None);
        let none: [&str; 0] = [];
        assert_eq!(did_you_mean("sms", none), None);
        let owned = vec!["template".to_string()];
        assert_eq!(did_you_mean("templat", &owned).as_deref(), Some("template"));
    }

    #[test]
    fn renders_line_caret_and_help() {
        let d = Diagnostic::new("w.yaml", Pos::new(2, 5), "unknown key \"tempalte\"")
            .did_you_mean("tempalte", &["template"]);
        let text = d.render(Some("a: 1\nb:  tempalte: x\n"));
        assert_eq!(
            text,
            "w.yaml:2:5: unknown key \"tempalte\"\n  |\n2 | b:  tempalte: x\n  |     ^\n  = help: did you mean \"template\"?\n"
        );
    }

    #[test]
    fn sorts_by_file_line_col() {
        let mut v = vec![
            Diagnostic::new("b", Pos::new(1, 1), "x"),
            Diagnostic::new("a", Pos::new(3, 1), "x"),
            Diagnostic::new("a", Pos::new(1, 9), "x"),
            Diagnostic::new("a", Pos::new(1, 9), "x"),
        ];
        sort(&mut v);
        let order: Vec<_> = v
            .iter()
            .map(|d| (d.file.display().to_string(), d.pos.line))
            .collect();
        assert_eq!(
            order,
            [("a".into(), 1), ("a".into(), 3), ("b".to_string(), 1)]
        );
    }
}
