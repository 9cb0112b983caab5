//! The front matter of a template file: a small, strict subset of YAML
//! (`key: value` lines, quoted or plain, and `params:` for Aliyun SMS).

use super::*;

pub(super) struct FrontValue {
    pub(super) key: String,
    pub(super) value: String,
    /// 1-based file line and column where the value starts.
    pub(super) line: u32,
    pub(super) col: u32,
}

pub(super) type Split<'a> = (Vec<FrontValue>, &'a str, u32);

/// Splits a template file into its front matter values, the body, and the
/// number of file lines before the body.
///
/// The front matter is deliberately small YAML: `key: value` lines, where the
/// value is plain text, `"double quoted"` (with `\"`, `\\`, `\n`, `\t`
/// escapes) or `'single quoted'` (`''` for a quote); blank lines and `#`
/// comments are skipped.
pub(super) fn split_front_matter(source: &str) -> Result<Split<'_>, (Pos, String)> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let first_end = source.find('\n').map(|i| i + 1).unwrap_or(source.len());
    if source[..first_end].trim_end() != "---" {
        return Ok((Vec::new(), source, 0));
    }
    let mut values = Vec::new();
    let mut offset = first_end;
    let mut line_no: u32 = 1;
    loop {
        if offset >= source.len() {
            return Err((
                Pos::new(1, 1),
                "front matter is not closed: add a line \"---\" after it".into(),
            ));
        }
        line_no += 1;
        let end = source[offset..]
            .find('\n')
            .map(|i| offset + i + 1)
            .unwrap_or(source.len());
        let line = source[offset..end].trim_end_matches(['\n', '\r']);
        offset = end;
        if line.trim_end() == "---" {
            break;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some(colon) = line.find(':') else {
            return Err((
                Pos::new(line_no, 1),
                "front matter lines are `key: value`".into(),
            ));
        };
        let key = line[..colon].trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            || line.starts_with([' ', '\t'])
        {
            return Err((
                Pos::new(line_no, 1),
                format!("invalid front matter key \"{key}\"; keys are words like `subject`"),
            ));
        }
        if values.iter().any(|v: &FrontValue| v.key == key) {
            return Err((
                Pos::new(line_no, 1),
                format!("front matter key \"{key}\" appears twice"),
            ));
        }
        let rest = &line[colon + 1..];
        let lead = rest.len() - rest.trim_start().len();
        let raw = rest.trim();
        let col = line[..colon + 1 + lead].chars().count() as u32 + 1;
        if key == "attachments" {
            // One indented `- KIND: VALUE` line per attachment (see
            // `crate::attachments`).
            if !(raw.is_empty() || raw.starts_with('#')) {
                return Err((
                    Pos::new(line_no, col),
                    "attachments is a list: one indented `- KIND: ...` line per attachment (image, link, miniprogram, file)".into(),
                ));
            }
            let mut n = 0usize;
            loop {
                let end = source[offset..]
                    .find('\n')
                    .map(|i| offset + i + 1)
                    .unwrap_or(source.len());
                let next = source[offset..end].trim_end_matches(['\n', '\r']);
                if !next.starts_with([' ', '\t']) || next.trim().is_empty() {
                    break;
                }
                line_no += 1;
                offset = end;
                let indent = (next.len() - next.trim_start().len()) as u32;
                let t = next.trim_start();
                if t.starts_with('#') {
                    continue;
                }
                let Some(item) = t.strip_prefix("- ") else {
                    return Err((
                        Pos::new(line_no, indent + 1),
                        "attachments entries are `- KIND: ...` lines (image, link, miniprogram, file)".into(),
                    ));
                };
                if n >= crate::attachments::MAX {
                    return Err((
                        Pos::new(line_no, indent + 1),
                        format!(
                            "attachment {} of a message: WeCom sends at most {} attachments with a welcome or mass message",
                            n + 1,
                            crate::attachments::MAX
                        ),
                    ));
                }
                let lead = (item.len() - item.trim_start().len()) as u32;
                let item_col = indent + 3 + lead;
                let (kind, fields) = crate::attachments::parse_item(
                    item.trim_start(),
                    parse_flow_params,
                    parse_scalar,
                )
                .map_err(|(c, m)| (Pos::new(line_no, item_col + c - 1), m))?;
                for (field, value, c) in fields {
                    values.push(FrontValue {
                        key: format!("{}{n}.{kind}.{field}", crate::attachments::PREFIX),
                        value,
                        line: line_no,
                        col: item_col + c - 1,
                    });
                }
                n += 1;
            }
            if n == 0 {
                return Err((
                    Pos::new(line_no, col),
                    "attachments needs at least one indented `- KIND: ...` line".into(),
                ));
            }
            continue;
        }
        if key == "params" {
            // `params: { name: "{{contact.name}}", date: "..." }` on one
            // line, or an empty value and one indented `name: value` line
            // per variable.
            let mut entries = if raw.is_empty() || raw.starts_with('#') {
                let mut block = Vec::new();
                loop {
                    let end = source[offset..]
                        .find('\n')
                        .map(|i| offset + i + 1)
                        .unwrap_or(source.len());
                    let next = source[offset..end].trim_end_matches(['\n', '\r']);
                    if !next.starts_with([' ', '\t']) || next.trim().is_empty() {
                        break;
                    }
                    line_no += 1;
                    offset = end;
                    let indent = (next.len() - next.trim_start().len()) as u32;
                    let (k, v, c) = param_entry(next.trim_start())
                        .map_err(|m| (Pos::new(line_no, indent + 1), m))?;
                    block.push((k, v, line_no, indent + c));
                }
                block
            } else {
                parse_flow_params(raw)
                    .map_err(|m| (Pos::new(line_no, col), m))?
                    .into_iter()
                    .map(|(k, v, c)| (k, v, line_no, col + c - 1))
                    .collect()
            };
            if entries.is_empty() {
                return Err((
                    Pos::new(line_no, col),
                    "params needs at least one `name: value`".into(),
                ));
            }
            for (k, v, l, c) in entries.drain(..) {
                if values
                    .iter()
                    .any(|x: &FrontValue| x.key == format!("{PARAM_PREFIX}{k}"))
                {
                    return Err((Pos::new(l, c), format!("param \"{k}\" appears twice")));
                }
                values.push(FrontValue {
                    key: format!("{PARAM_PREFIX}{k}"),
                    value: v,
                    line: l,
                    col: c,
                });
            }
            continue;
        }
        let value = parse_scalar(raw).map_err(|m| (Pos::new(line_no, col), m))?;
        // Quoted values start one column later in the file than their text.
        let col = if raw.starts_with(['"', '\'']) {
            col + 1
        } else {
            col
        };
        values.push(FrontValue {
            key: key.to_string(),
            value,
            line: line_no,
            col,
        });
    }
    Ok((values, &source[offset..], line_no))
}

/// One `name: value` of `params`: (name, value, 1-based column of the
/// value within `text`).
pub(super) fn param_entry(text: &str) -> Result<(String, String, u32), String> {
    let Some(colon) = text.find(':') else {
        return Err("params entries are `name: value`".into());
    };
    let k = text[..colon].trim();
    if k.is_empty() || !k.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid param name \"{k}\"; names are words like `name` (letters, digits, _)"
        ));
    }
    let rest = &text[colon + 1..];
    let lead = rest.len() - rest.trim_start().len();
    let v = parse_scalar(rest.trim())?;
    let col = text[..colon + 1 + lead].chars().count() as u32 + 1;
    Ok((k.to_string(), v, col))
}

/// `{ a: "x", b: 'y, z', c: plain }`: the entries of a one-line flow map,
/// split at commas outside quotes; (name, value, column within `raw`).
pub(super) fn parse_flow_params(raw: &str) -> Result<Vec<(String, String, u32)>, String> {
    let inner = raw
        .strip_prefix('{')
        .and_then(|r| r.trim_end().strip_suffix('}'))
        .ok_or("params is a map: `params: { name: \"...\" }` on one line, or one indented `name: value` per line")?;
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let bytes: Vec<(usize, char)> = inner.char_indices().collect();
    let mut pieces = Vec::new();
    for &(i, c) in &bytes {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ',' => {
                pieces.push((start, &inner[start..i]));
                start = i + 1;
            }
            None => {}
        }
    }
    pieces.push((start, &inner[start..]));
    for (at, piece) in pieces {
        if piece.trim().is_empty() {
            continue;
        }
        let lead = piece.len() - piece.trim_start().len();
        let (k, v, c) = param_entry(piece.trim())?;
        // +1 for the `{`.
        let col = inner[..at + lead].chars().count() as u32 + 1 + c;
        out.push((k, v, col));
    }
    Ok(out)
}

pub(super) fn parse_scalar(raw: &str) -> Result<String, String> {
    if let Some(inner) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        loop {
            match chars.next() {
                None => return Err("unterminated double-quoted value".into()),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some(c) => return Err(format!("unknown escape \"\\{c}\" in value")),
                    None => return Err("unterminated double-quoted value".into()),
                },
                Some(c) => out.push(c),
            }
        }
        let tail = chars.as_str().trim();
        if !tail.is_empty() && !tail.starts_with('#') {
            return Err("unexpected text after the quoted value".into());
        }
        Ok(out)
    } else if let Some(inner) = raw.strip_prefix('\'') {
        let mut out = String::new();
        let mut rest = inner;
        loop {
            let Some(i) = rest.find('\'') else {
                return Err("unterminated single-quoted value".into());
            };
            out.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('\'') {
                out.push('\'');
                rest = r;
            } else {
                break;
            }
        }
        let tail = rest.trim();
        if !tail.is_empty() && !tail.starts_with('#') {
            return Err("unexpected text after the quoted value".into());
        }
        Ok(out)
    } else {
        if raw.starts_with(['|', '>', '[', '{', '&', '*', '!']) {
            return Err(
                "front matter values are single-line text; quote the value if it starts with a special character".into(),
            );
        }
        // A ` #` starts a comment in plain YAML scalars.
        let v = match raw.find(" #") {
            Some(i) => raw[..i].trim_end(),
            None => raw,
        };
        Ok(v.to_string())
    }
}
