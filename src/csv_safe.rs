//! CSV cells that a spreadsheet will not run as formulas.
//!
//! A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is
//! read by Excel, LibreOffice and Google Sheets as a formula
//! (`=HYPERLINK(...)`, `+cmd|' /C calc'!A0`). A contact's name or a rendered
//! message comes from outside, so such a cell is written with a leading `'`
//! (OWASP's advice), which spreadsheets show as text. A `+` or `-` followed
//! only by a number (a phone number such as `+8613800000000`, `-3.5`) is
//! not a formula and is left as it is.

use std::borrow::Cow;

/// `text`, or `'` + `text` when a spreadsheet would take it for a formula.
pub fn cell(text: &str) -> Cow<'_, str> {
    let Some(first) = text.chars().next() else {
        return Cow::Borrowed(text);
    };
    let risky = match first {
        '=' | '@' | '\t' | '\r' => true,
        '+' | '-' => !is_plain_number(&text[1..]),
        _ => false,
    };
    if risky {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Digits with the separators phone numbers and decimals use.
fn is_plain_number(rest: &str) -> bool {
    rest.chars().any(|c| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '.' | '(' | ')'))
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formulas_are_neutralised_and_numbers_kept() {
        for (given, written) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3+cmd|x", "'-2+3+cmd|x"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("+8613800000000", "+8613800000000"),
            ("+86 138 0000 0000", "+86 138 0000 0000"),
            ("-3.5", "-3.5"),
            ("-", "'-"),
            ("Hello", "Hello"),
            ("", ""),
        ] {
            assert_eq!(cell(given), written, "{given:?}");
        }
    }
}
