//! Reports about the user's files: `FILE:LINE:COLUMN: message`, the offending
//! line, and a suggestion where one exists.

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

/// One problem in one of the user's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: std::path::PathBuf,
    pub pos: Pos,
    pub message: String,
    /// "did you mean ...?" and similar, shown after the message.
    pub suggestion: Option<String>,
}
