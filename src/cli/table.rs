//! Tables people read in a terminal: cells measured by display width (a
//! Chinese character takes two columns), cut by width with `…`, and the
//! table fitted to the terminal.
//!
//! The width to fit is `COLUMNS` when set, else the terminal's when stdout
//! is one; output piped to a file or another program is not cut (a script
//! reading it gets every character).

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Display width of `s` in terminal columns.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` columns, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > max - 1 {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

/// `s` padded with spaces to `w` columns (left-aligned).
pub fn pad_right(s: &str, w: usize) -> String {
    let mut out = s.to_string();
    out.push_str(&" ".repeat(w.saturating_sub(width(s))));
    out
}

/// `s` padded with spaces to `w` columns (right-aligned).
pub fn pad_left(s: &str, w: usize) -> String {
    let mut out = " ".repeat(w.saturating_sub(width(s)));
    out.push_str(s);
    out
}

/// The width output should fit: `COLUMNS`, else the terminal's when stdout
/// is a terminal, else none (no cutting).
pub fn terminal_width() -> Option<usize> {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    #[cfg(unix)]
    {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            // SAFETY: TIOCGWINSZ fills a winsize struct we own.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
            if ok && ws.ws_col > 0 {
                return Some(ws.ws_col as usize);
            }
        }
    }
    None
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Align {
    Left,
    Right,
}

/// A table of text cells. Columns are as wide as their widest cell; when the
/// whole is wider than the width to fit, the `flex` column (the free text,
/// usually the last) gives way first, then the widest of the others, never
/// below `MIN` columns or their header.
pub struct Table {
    pub indent: String,
    pub sep: String,
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
    flex: Option<usize>,
}

const MIN: usize = 8;

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            indent: String::new(),
            sep: "  ".into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
            flex: headers.len().checked_sub(1),
        }
    }

    pub fn indent(mut self, s: &str) -> Table {
        self.indent = s.into();
        self
    }

    pub fn sep(mut self, s: &str) -> Table {
        self.sep = s.into();
        self
    }

    pub fn right(mut self, cols: &[usize]) -> Table {
        for c in cols {
            self.align[*c] = Align::Right;
        }
        self
    }

    /// Which column gives way first (default: the last).
    pub fn flex(mut self, col: usize) -> Table {
        self.flex = Some(col);
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The column widths, fitted to `max` columns in all when given.
    fn widths(&self, max: Option<usize>) -> Vec<usize> {
        let n = self.headers.len();
        let mut w: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                // A multi-line cell is shown on one line (see `clean`).
                w[i] = w[i].max(width(&clean(c)));
            }
        }
        let Some(max) = max else { return w };
        let fixed = width(&self.indent) + width(&self.sep) * n.saturating_sub(1);
        let floor = |i: usize| width(&self.headers[i]).max(MIN);
        let total = |w: &[usize]| fixed + w.iter().sum::<usize>();
        if let Some(f) = self.flex {
            let over = total(&w).saturating_sub(max);
            w[f] = w[f].saturating_sub(over).max(floor(f).min(w[f]));
        }
        while total(&w) > max {
            // The widest column that can still give way.
            let Some(i) = (0..n)
                .filter(|&i| w[i] > floor(i))
                .max_by_key(|&i| (w[i], std::cmp::Reverse(i)))
            else {
                break;
            };
            w[i] -= 1;
        }
        w
    }

    /// The table's lines, fitted to `max` columns when given.
    pub fn render(&self, max: Option<usize>) -> String {
        let w = self.widths(max);
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            let mut line = self.indent.clone();
            let last = r.len().min(w.len()).saturating_sub(1);
            for (i, cell) in r.iter().enumerate().take(w.len()) {
                if i > 0 {
                    line.push_str(&self.sep);
                }
                let cell = truncate(&clean(cell), w[i]);
                match self.align[i] {
                    Align::Right => line.push_str(&pad_left(&cell, w[i])),
                    Align::Left if i == last => line.push_str(&cell),
                    Align::Left => line.push_str(&pad_right(&cell, w[i])),
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The table fitted to the terminal (see [`terminal_width`]).
    pub fn render_for_terminal(&self) -> String {
        self.render(terminal_width())
    }
}

/// A cell on one line: line breaks and tabs become spaces.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r', '\t']) {
        s.replace("\r\n", " ")
            .replace(['\n', '\r', '\t'], " ")
            .into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_is_two_columns_and_cut_by_width() {
        assert_eq!(width("周晓明"), 6);
        assert_eq!(truncate("周晓明你好", 7), "周晓明…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(pad_right("王芳", 6), "王芳  ");
    }

    #[test]
    fn columns_line_up_and_the_table_fits() {
        let mut t = Table::new(&["ID", "NAME", "NOTE"]);
        t.row(vec![
            "c1".into(),
            "王芳".into(),
            "a long note about her".into(),
        ]);
        t.row(vec!["c2".into(), "Li Lei".into(), "短".into()]);
        let s = t.render(None);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1], "c1  王芳    a long note about her");
        assert_eq!(lines[2], "c2  Li Lei  短");
        let s = t.render(Some(24));
        for l in s.lines() {
            assert!(width(l) <= 24, "{l:?}");
        }
        assert!(s.contains("a long note…"), "{s}");
    }
}
