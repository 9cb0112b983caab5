//! The HTML part of an email, made from the rendered text of the template.
//!
//! Templates are written once, as text (`templates/NAME.hbs`), and serve
//! every channel; an email gets its HTML alternative from that text rather
//! than from a second template, so the two parts can never say different
//! things. The text is HTML-escaped, blank lines separate paragraphs, single
//! line breaks become `<br>`, and `http(s)://` links become clickable. No
//! markup from the template reaches the HTML: a contact field holding
//! `<script>` arrives as text.

/// A complete HTML document for `text`, with `footer` (already HTML) after it.
pub fn document(text: &str, footer: Option<&str>) -> String {
    let mut out =
        String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body>\n");
    for para in paragraphs(text) {
        out.push_str("<p>");
        for (i, line) in para.iter().enumerate() {
            if i > 0 {
                out.push_str("<br>\n");
            }
            linkify_into(line, &mut out);
        }
        out.push_str("</p>\n");
    }
    if let Some(f) = footer {
        out.push_str(f);
        out.push('\n');
    }
    out.push_str("</body></html>\n");
    out
}

/// Groups lines into paragraphs at blank lines (whitespace-only lines count
/// as blank), dropping empty paragraphs.
fn paragraphs(text: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut current = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line.trim_end());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(text, &mut out);
    out
}

fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Writes `line` escaped, with each `http://` or `https://` link wrapped in
/// `<a href>`. A link ends at whitespace or at a character that cannot be
/// part of a URL in running text (`<>"'`); trailing sentence punctuation
/// (`.,;:!?)`) is left outside it.
fn linkify_into(line: &str, out: &mut String) {
    let mut rest = line;
    while let Some(start) = find_link(rest) {
        escape_into(&rest[..start], out);
        let tail = &rest[start..];
        let mut end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
            .unwrap_or(tail.len());
        while end > 0 && tail[..end].ends_with(['.', ',', ';', ':', '!', '?', ')']) {
            end -= 1;
        }
        // `end` > 0: `tail` starts with "http", which nothing above cuts.
        let url = &tail[..end.max(1)];
        let has_host = url.split_once("://").is_some_and(|(_, h)| !h.is_empty());
        if has_host {
            let e = escape(url);
            out.push_str(&format!("<a href=\"{e}\">{e}</a>"));
        } else {
            // A bare scheme is not a link.
            escape_into(url, out);
        }
        rest = &tail[url.len()..];
    }
    escape_into(rest, out);
}

fn find_link(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    match (lower.find("https://"), lower.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_breaks_and_escaping() {
        let html = document(
            "Hi <Ada> & \"friends\",\nline two\n\n  \nSecond 'para'.",
            None,
        );
        assert!(html.contains(
            "<p>Hi &lt;Ada&gt; &amp; &quot;friends&quot;,<br>\nline two</p>\n<p>Second &#39;para&#39;.</p>"
        ), "{html}");
        assert!(html.starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn links() {
        let mut out = String::new();
        linkify_into(
            "See https://example.com/a?b=1&c=2. Or (http://x.io/y), <https://z.io>",
            &mut out,
        );
        assert_eq!(
            out,
            "See <a href=\"https://example.com/a?b=1&amp;c=2\">https://example.com/a?b=1&amp;c=2</a>. \
             Or (<a href=\"http://x.io/y\">http://x.io/y</a>), \
             &lt;<a href=\"https://z.io\">https://z.io</a>&gt;"
        );
        let mut out = String::new();
        linkify_into("just https:// and <script>alert(1)</script>", &mut out);
        assert_eq!(
            out,
            "just https:// and &lt;script&gt;alert(1)&lt;/script&gt;"
        );
        let mut out = String::new();
        linkify_into("HTTPS://UPPER.example/ok 你好", &mut out);
        assert_eq!(
            out,
            "<a href=\"HTTPS://UPPER.example/ok\">HTTPS://UPPER.example/ok</a> 你好"
        );
    }

    #[test]
    fn footer_is_appended() {
        let html = document("x", Some("<p><a href=\"u\">Unsubscribe</a></p>"));
        assert!(html.contains("<p>x</p>\n<p><a href=\"u\">Unsubscribe</a></p>\n</body>"));
    }
}
