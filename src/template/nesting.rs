//! The bounds on a template's shape, checked before handlebars sees it: block
//! and sub-expression depth, and the elements a template may not use
//! (partials, decorators).

use super::*;

/// Refuses templates nested deeper than [`MAX_TEMPLATE_DEPTH`] blocks or
/// [`MAX_SUBEXPRESSION_DEPTH`] parentheses, before handlebars sees them: its
/// parser and renderer recurse once per level, so thousands of nested
/// `{{#if}}` would overflow the stack. A lexical scan, so it cannot recurse
/// itself; an `{{else if}}` chain counts one level per link, as handlebars
/// nests it. Comments and raw blocks are not special-cased: a tag-like text
/// in a comment may count, which errs on the side of refusing.
pub(super) fn check_nesting(src: &str) -> Result<(), (u32, u32, String)> {
    // One entry per open block: how many levels it holds (1 + `else X` links).
    let mut stack: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    for Tag {
        at,
        text: tag,
        inner,
    } in tags(src)
    {
        let opens = inner.starts_with('#')
            || (inner.starts_with('^') && !inner[1..].trim_start().starts_with(['}', '~']));
        let chained_else = inner.starts_with("else")
            && inner[4..].starts_with(char::is_whitespace)
            && !inner[4..].trim_start().starts_with(['}', '~']);
        if opens {
            stack.push(1);
            depth += 1;
        } else if chained_else {
            if let Some(top) = stack.last_mut() {
                *top += 1;
                depth += 1;
            }
        } else if inner.starts_with('/')
            && let Some(n) = stack.pop()
        {
            depth -= n;
        }
        if depth > MAX_TEMPLATE_DEPTH {
            return Err((
                at.0,
                at.1,
                format!(
                    "blocks are nested more than {MAX_TEMPLATE_DEPTH} deep; flatten the template (an `{{{{else if}}}}` chain counts one level per link)"
                ),
            ));
        }
        let mut parens = 0usize;
        for c in tag.chars() {
            match c {
                '(' => {
                    parens += 1;
                    if parens > MAX_SUBEXPRESSION_DEPTH {
                        return Err((
                            at.0,
                            at.1,
                            format!(
                                "subexpressions are nested more than {MAX_SUBEXPRESSION_DEPTH} deep"
                            ),
                        ));
                    }
                }
                ')' => parens = parens.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// One `{{...}}` tag of a template: where it starts (line, column), its
/// text, and its text after the opening braces and `~`.
struct Tag<'a> {
    at: (u32, u32),
    text: &'a str,
    inner: &'a str,
}

/// The tags of `src` in order, found lexically (an unclosed tag runs to the end).
fn tags(src: &str) -> impl Iterator<Item = Tag<'_>> {
    let (mut line, mut col) = (1u32, 1u32);
    let mut advance = move |s: &str| {
        for c in s.chars() {
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        (line, col)
    };
    let mut rest = src;
    std::iter::from_fn(move || {
        let i = rest.find("{{")?;
        let at = advance(&rest[..i]);
        let tag_start = &rest[i..];
        let end = tag_start
            .find("}}")
            .map(|e| e + 2)
            .unwrap_or(tag_start.len());
        let text = &tag_start[..end];
        advance(text);
        rest = &tag_start[end..];
        let inner = text
            .trim_start_matches('{')
            .trim_start_matches('~')
            .trim_start();
        Some(Tag { at, text, inner })
    })
}

/// Where a template's blocks do not pair up, said the way a marketer fixes
/// it: a `{{#if}}` never closed, or a `{{/each}}` that closes an `{{#if}}`.
/// Handlebars itself only says "invalid syntax" at the end of the text. A
/// lexical scan like [`check_nesting`]; `None` when the blocks pair up.
pub(super) fn unpaired_block(src: &str) -> Option<(u32, u32, String)> {
    // The open blocks: (name, line, column).
    let mut open: Vec<(String, u32, u32)> = Vec::new();
    let name = |s: &str| -> String {
        s.trim_start()
            .split(|c: char| c.is_whitespace() || c == '}' || c == '~' || c == '(')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    for Tag {
        at: (line, col),
        inner,
        ..
    } in tags(src)
    {
        if inner.starts_with('!') {
            continue;
        }
        if let Some(opened) = inner.strip_prefix('#').or_else(|| {
            inner
                .strip_prefix('^')
                .filter(|r| !r.trim_start().starts_with(['}', '~']))
        }) {
            open.push((name(opened), line, col));
        } else if let Some(closed) = inner.strip_prefix('/') {
            let closed = name(closed);
            match open.pop() {
                Some((o, l, c)) if o != closed => {
                    return Some((
                        line,
                        col,
                        format!(
                            "{{{{/{closed}}}}} closes the {{{{#{o}}}}} opened at {l}:{c}; close it with {{{{/{o}}}}} first"
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    return Some((
                        line,
                        col,
                        format!(
                            "{{{{/{closed}}}}} closes a block that was never opened; remove it or add {{{{#{closed} ...}}}} before it"
                        ),
                    ));
                }
            }
        }
    }
    open.pop().map(|(o, l, c)| {
        (
            l,
            c,
            format!("{{{{#{o}}}}} is never closed; add {{{{/{o}}}}} where it should end"),
        )
    })
}

pub(super) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Refuses partials and decorators: templates may not include other
/// templates (which could recurse without end) or define inline partials.
pub(super) fn check_elements(t: &Template) -> Result<(), (u32, u32, String)> {
    for (i, e) in t.elements.iter().enumerate() {
        let pos = t
            .mapping
            .get(i)
            .map(|m| (to_u32(m.0), to_u32(m.1)))
            .unwrap_or((1, 1));
        match e {
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                return Err((
                    pos.0,
                    pos.1,
                    "partials ({{> name}}) are not supported in nurture templates".into(),
                ));
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                return Err((
                    pos.0,
                    pos.1,
                    "decorators ({{* ...}}) are not supported in nurture templates".into(),
                ));
            }
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h)
                if h.name.as_name() == Some("log") =>
            {
                return Err((
                    pos.0,
                    pos.1,
                    "{{log}} is disabled in nurture templates: it would write contact data into the daemon's log".into(),
                ));
            }
            TemplateElement::HelperBlock(h) => {
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    check_elements(inner)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
