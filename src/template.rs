//! Message templates: `templates/NAME.hbs`, Handlebars with strict rendering.
//!
//! A template may start with a front matter block of `key: value` lines
//! between two `---` lines; every value is itself a template (`subject` is
//! the email subject, other keys are kept in [`Rendered::extra`]):
//!
//! ```text
//! ---
//! subject: "Hi {{contact.name}}"
//! ---
//! Hello {{default contact.city "friend"}}!
//! ```
//!
//! Rules (SPEC §1.3):
//! - strict: a variable that does not exist is an error, never empty text;
//!   `{{#if}}`/`{{#unless}}` stay lenient so optional fields can be tested;
//! - `{{default VALUE "fallback"}}` gives the fallback when VALUE is missing,
//!   null or the empty string;
//! - no HTML escaping for text channels (SMS, WeCom, webhooks); an escaping
//!   registry exists for HTML email ([`Templates::render_html`]);
//! - templates cannot run code or read files: no script helpers, no partials
//!   (`{{> x}}`) and no decorators (`{{*inline}}`), which also rules out
//!   unbounded recursion.
//!
//! Every template is compiled once at load; rendering reuses the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use handlebars::template::TemplateElement;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson, Template,
};
use serde_json::Value;

use crate::contact::Contact;
use crate::diagnostics::{Diagnostic, Pos};

/// Largest template file accepted, in bytes. Messages are short; this keeps a
/// stray binary file from being compiled.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// Deepest nesting of blocks (`{{#if}}`, `{{#each}}`, `{{else if}}` chains)
/// a template may have. Compiling and rendering recurse once per level, and a
/// few thousand levels overflow a thread's stack; real messages use two or
/// three.
pub const MAX_TEMPLATE_DEPTH: usize = 32;

/// Deepest nesting of subexpressions (`(default (lookup ...))`) in one tag.
pub const MAX_SUBEXPRESSION_DEPTH: usize = 16;

/// Most text one render may produce when the caller gives no channel limit
/// (`validate`'s sample render, `channels test`): two nested `{{#each}}` over
/// a contact with many tags would otherwise build a message of any size.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// The front matter's `subject`, rendered.
    pub subject: Option<String>,
    pub body: String,
    /// Other front matter keys, rendered.
    pub extra: BTreeMap<String, String>,
}

/// Why a message could not be rendered. The text is short: the dry-run prints
/// it as `template_error: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("no template \"{0}\"")]
    NotFound(String),
    #[error("missing variable{} in template \"{template}\"{}{}", quoted(var), part_of(part), line_of(*line))]
    MissingVariable {
        template: String,
        /// `None` for the body, else the front matter key.
        part: Option<String>,
        var: Option<String>,
        /// Line in the template file.
        line: Option<u32>,
    },
    #[error(
        "message is over the channel's limit of {limit} in template \"{template}\"{}",
        part_of(part)
    )]
    TooLong {
        template: String,
        part: Option<String>,
        /// The limit, with its unit ("1600 characters", "4000 bytes").
        limit: String,
    },
    #[error("{message} in template \"{template}\"{}{}", part_of(part), line_of(*line))]
    Render {
        template: String,
        part: Option<String>,
        message: String,
        line: Option<u32>,
    },
}

fn quoted(var: &Option<String>) -> String {
    var.as_ref()
        .map(|v| format!(" \"{v}\""))
        .unwrap_or_default()
}
fn part_of(part: &Option<String>) -> String {
    part.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
}
fn line_of(line: Option<u32>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// Where one compiled part of a template came from.
#[derive(Debug, Clone)]
struct Part {
    /// Front matter key, or `None` for the body.
    key: Option<String>,
    /// Name in the registries.
    reg_name: String,
    /// File line of the part's first line, minus one (added to handlebars' 1-based lines).
    line_offset: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    parts: Vec<Part>,
}

/// The compiled templates of a folder. Cheap to share behind an `Arc`; `Send + Sync`.
#[derive(Clone)]
pub struct Templates {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::empty()
    }
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    r.set_prevent_indent(true);
    if !escape {
        r.register_escape_fn(handlebars::no_escape);
    }
    r.register_helper("default", Box::new(DefaultHelper));
    // `{{log contact.phone}}` would write contact data into the daemon's log.
    r.unregister_helper("log");
    r
}

impl Templates {
    pub fn empty() -> Templates {
        Templates {
            text: registry(false),
            html: registry(true),
            entries: BTreeMap::new(),
        }
    }

    /// Loads every `*.hbs` file in `dir` (not recursive). A missing folder is
    /// no templates. Problems come back as diagnostics; the templates that
    /// compiled are kept.
    pub fn load(dir: &Path) -> (Templates, Vec<Diagnostic>) {
        let mut t = Templates::empty();
        let mut diags = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (t, diags),
            Err(e) => {
                diags.push(diag(
                    dir,
                    Pos::default(),
                    format!("cannot read folder: {e}"),
                ));
                return (t, diags);
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "hbs") && p.is_file())
            .collect();
        files.sort();
        for path in files {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                diags.push(diag(
                    &path,
                    Pos::default(),
                    "template file names must be UTF-8".into(),
                ));
                continue;
            };
            match std::fs::read(&path) {
                Err(e) => diags.push(diag(&path, Pos::default(), format!("cannot read: {e}"))),
                Ok(bytes) if bytes.len() > MAX_TEMPLATE_BYTES => diags.push(diag(
                    &path,
                    Pos::new(1, 1),
                    format!(
                        "template is {} bytes; at most {MAX_TEMPLATE_BYTES} are accepted",
                        bytes.len()
                    ),
                )),
                Ok(bytes) => match String::from_utf8(bytes) {
                    Err(e) => diags.push(diag(
                        &path,
                        Pos::new(1, 1),
                        format!("template is not UTF-8 text: {e}"),
                    )),
                    Ok(src) => {
                        for (pos, message) in t.add(name, &src) {
                            diags.push(diag(&path, pos, message));
                        }
                    }
                },
            }
        }
        (t, diags)
    }

    /// Builds templates from `(name, source)` pairs; for tests and the
    /// validate command. Fails with the first problem found.
    pub fn from_sources<I, N, S>(sources: I) -> Result<Templates, Diagnostic>
    where
        I: IntoIterator<Item = (N, S)>,
        N: AsRef<str>,
        S: AsRef<str>,
    {
        let mut t = Templates::empty();
        for (name, src) in sources {
            let name = name.as_ref();
            if let Some((pos, message)) = t.add(name, src.as_ref()).into_iter().next() {
                return Err(diag(Path::new(&format!("{name}.hbs")), pos, message));
            }
        }
        Ok(t)
    }

    /// Compiles one template and registers it under `name`, replacing any
    /// template of that name. Returns the problems (position in the file).
    /// On any problem the template is not registered.
    pub fn add(&mut self, name: &str, source: &str) -> Vec<(Pos, String)> {
        let mut problems = Vec::new();
        let (front, body, body_offset) = match split_front_matter(source) {
            Ok(x) => x,
            Err((pos, msg)) => return vec![(pos, msg)],
        };
        let mut compiled = Vec::new();
        let mut pieces: Vec<(Option<String>, String, u32, u32)> = front
            .into_iter()
            .map(|f| (Some(f.key), f.value, f.line - 1, f.col - 1))
            .collect();
        // The newline that ends the file is not part of the message.
        let body = body.trim_end_matches(['\n', '\r']);
        pieces.push((None, body.to_string(), body_offset, 0));
        for (key, src, line_offset, col_offset) in pieces {
            match compile(&src) {
                Ok(t) => {
                    let reg_name = match &key {
                        None => name.to_string(),
                        Some(k) => format!("{name}\u{0}{k}"),
                    };
                    compiled.push((
                        Part {
                            key,
                            reg_name,
                            line_offset,
                        },
                        t,
                    ));
                }
                Err((line, col, msg)) => {
                    // Columns shift only on the first line of a front matter value.
                    let col = if line == 1 { col + col_offset } else { col };
                    problems.push((Pos::new(line + line_offset, col), msg));
                }
            }
        }
        if !problems.is_empty() {
            return problems;
        }
        self.remove(name);
        let mut parts = Vec::new();
        for (part, t) in compiled {
            self.html.register_template(&part.reg_name, t.clone());
            self.text.register_template(&part.reg_name, t);
            parts.push(part);
        }
        self.entries.insert(name.to_string(), Entry { parts });
        problems
    }

    /// Forgets a template.
    pub fn remove(&mut self, name: &str) {
        if let Some(e) = self.entries.remove(name) {
            for p in e.parts {
                self.text.unregister_template(&p.reg_name);
                self.html.unregister_template(&p.reg_name);
            }
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Front matter keys of a template (e.g. `subject`).
    pub fn front_matter_keys(&self, name: &str) -> impl Iterator<Item = &str> {
        self.entries
            .get(name)
            .into_iter()
            .flat_map(|e| e.parts.iter().filter_map(|p| p.key.as_deref()))
    }

    /// Renders a template as plain text (no escaping): SMS, WeCom, webhooks.
    /// The output is bounded by [`MAX_RENDERED_BYTES`].
    pub fn render(&self, name: &str, ctx: &Value) -> Result<Rendered, TemplateError> {
        self.render_in(
            &self.text,
            name,
            &Context::from(ctx.clone()),
            MessageLimit::DEFAULT,
        )
    }

    /// Like [`render`](Self::render) with a prebuilt handlebars context, which
    /// saves a copy of the data when one context renders several templates.
    pub fn render_with(&self, name: &str, ctx: &Context) -> Result<Rendered, TemplateError> {
        self.render_in(&self.text, name, ctx, MessageLimit::DEFAULT)
    }

    /// Like [`render_with`](Self::render_with), for a channel that takes at
    /// most `limit`: rendering stops as soon as the output is over it (it
    /// never builds more than the limit's bytes) and the result is
    /// [`TemplateError::TooLong`].
    pub fn render_limited(
        &self,
        name: &str,
        ctx: &Context,
        limit: MessageLimit,
    ) -> Result<Rendered, TemplateError> {
        self.render_in(&self.text, name, ctx, limit)
    }

    /// Renders with HTML escaping of variables, for HTML email bodies.
    pub fn render_html(&self, name: &str, ctx: &Value) -> Result<Rendered, TemplateError> {
        self.render_in(
            &self.html,
            name,
            &Context::from(ctx.clone()),
            MessageLimit::DEFAULT,
        )
    }

    fn render_in(
        &self,
        reg: &Handlebars<'static>,
        name: &str,
        ctx: &Context,
        limit: MessageLimit,
    ) -> Result<Rendered, TemplateError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| TemplateError::NotFound(name.to_string()))?;
        let mut out = Rendered::default();
        for part in &entry.parts {
            let too_long = || TemplateError::TooLong {
                template: name.to_string(),
                part: part.key.clone(),
                limit: limit.to_string(),
            };
            let mut w = CappedWriter {
                buf: Vec::new(),
                max: limit.max_bytes(),
                over: false,
            };
            if let Err(e) = reg.render_with_context_to_write(&part.reg_name, ctx, &mut w) {
                return Err(if w.over {
                    too_long()
                } else {
                    render_error(name, part, e)
                });
            }
            // Handlebars writes whole `str` segments, so the bytes are UTF-8.
            let text = String::from_utf8(w.buf).map_err(|e| TemplateError::Render {
                template: name.to_string(),
                part: part.key.clone(),
                message: e.to_string(),
                line: None,
            })?;
            if !limit.fits(&text) {
                return Err(too_long());
            }
            match part.key.as_deref() {
                None => out.body = text,
                Some("subject") => out.subject = Some(text),
                Some(k) => {
                    out.extra.insert(k.to_string(), text);
                }
            }
        }
        Ok(out)
    }
}

/// The most one message on a channel may hold: SMS providers count
/// characters, WeCom counts bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageLimit {
    Bytes(usize),
    Chars(usize),
}

impl MessageLimit {
    /// The bound when no channel is named.
    pub const DEFAULT: MessageLimit = MessageLimit::Bytes(MAX_RENDERED_BYTES);

    /// The bytes a render may write before it is stopped (a character is at
    /// most 4 bytes of UTF-8).
    fn max_bytes(self) -> usize {
        match self {
            MessageLimit::Bytes(n) => n,
            MessageLimit::Chars(n) => n.saturating_mul(4),
        }
    }

    pub fn fits(self, text: &str) -> bool {
        match self {
            MessageLimit::Bytes(n) => text.len() <= n,
            MessageLimit::Chars(n) => text.chars().count() <= n,
        }
    }
}

impl std::fmt::Display for MessageLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageLimit::Bytes(n) => write!(f, "{n} bytes"),
            MessageLimit::Chars(n) => write!(f, "{n} characters"),
        }
    }
}

/// A buffer that refuses to grow past `max` bytes: the render fails at the
/// first write over it instead of building a huge string.
struct CappedWriter {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(b.len()) > self.max {
            self.over = true;
            return Err(std::io::Error::other("rendered message too long"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_error(template: &str, part: &Part, e: RenderError) -> TemplateError {
    let line = e.line_no.map(|l| {
        u32::try_from(l)
            .unwrap_or(u32::MAX)
            .saturating_add(part.line_offset)
    });
    let template = template.to_string();
    let part = part.key.clone();
    match e.reason() {
        RenderErrorReason::MissingVariable(var) => TemplateError::MissingVariable {
            template,
            part,
            var: var.clone(),
            line,
        },
        other => TemplateError::Render {
            template,
            part,
            message: other.to_string(),
            line,
        },
    }
}

fn diag(file: &Path, pos: Pos, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        pos,
        message,
        suggestion: None,
    }
}

/// Compiles one piece of template text; errors as (line, column, message)
/// relative to the piece.
fn compile(src: &str) -> Result<Template, (u32, u32, String)> {
    check_nesting(src)?;
    let t = Template::compile(src).map_err(|e| {
        let (line, col) = e.pos().unwrap_or((1, 1));
        let msg = match e.reason() {
            handlebars::TemplateErrorReason::InvalidSyntax(_) => {
                "invalid template syntax".to_string()
            }
            r => r.to_string(),
        };
        (to_u32(line), to_u32(col), msg)
    })?;
    check_elements(&t)?;
    Ok(t)
}

/// Refuses templates nested deeper than [`MAX_TEMPLATE_DEPTH`] blocks or
/// [`MAX_SUBEXPRESSION_DEPTH`] parentheses, before handlebars sees them: its
/// parser and renderer recurse once per level, so thousands of nested
/// `{{#if}}` would overflow the stack. A lexical scan, so it cannot recurse
/// itself; an `{{else if}}` chain counts one level per link, as handlebars
/// nests it. Comments and raw blocks are not special-cased: a tag-like text
/// in a comment may count, which errs on the side of refusing.
fn check_nesting(src: &str) -> Result<(), (u32, u32, String)> {
    // One entry per open block: how many levels it holds (1 + `else X` links).
    let mut stack: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let (mut line, mut col) = (1u32, 1u32);
    let mut rest = src;
    while let Some(i) = rest.find("{{") {
        for c in rest[..i].chars() {
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        let at = (line, col);
        let tag_start = &rest[i..];
        let end = tag_start
            .find("}}")
            .map(|e| e + 2)
            .unwrap_or(tag_start.len());
        let tag = &tag_start[..end];
        let inner = tag
            .trim_start_matches('{')
            .trim_start_matches('~')
            .trim_start();
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
        for c in tag.chars() {
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        rest = &tag_start[end..];
    }
    Ok(())
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Refuses partials and decorators: templates may not include other
/// templates (which could recurse without end) or define inline partials.
fn check_elements(t: &Template) -> Result<(), (u32, u32, String)> {
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

struct FrontValue {
    key: String,
    value: String,
    /// 1-based file line and column where the value starts.
    line: u32,
    col: u32,
}

type Split<'a> = (Vec<FrontValue>, &'a str, u32);

/// Splits a template file into its front matter values, the body, and the
/// number of file lines before the body.
///
/// The front matter is deliberately small YAML: `key: value` lines, where the
/// value is plain text, `"double quoted"` (with `\"`, `\\`, `\n`, `\t`
/// escapes) or `'single quoted'` (`''` for a quote); blank lines and `#`
/// comments are skipped.
fn split_front_matter(source: &str) -> Result<Split<'_>, (Pos, String)> {
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

fn parse_scalar(raw: &str) -> Result<String, String> {
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

/// `{{default VALUE FALLBACK}}`: VALUE unless it is missing, null or "".
/// A missing VALUE is not a strict-mode error here (handlebars only rejects
/// missing values that are printed); a missing FALLBACK is.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let fallback = h
            .param(1)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 0))?;
        let use_fallback = value.is_value_missing()
            || value.value().is_null()
            || value.value().as_str() == Some("");
        let chosen = if use_fallback { fallback } else { value };
        if chosen.is_value_missing() {
            return Err(RenderErrorReason::MissingVariable(chosen.relative_path().cloned()).into());
        }
        Ok(ScopedJson::Derived(chosen.value().clone()))
    }
}

/// The data a template sees: `contact`, `owner` (absent when the contact has
/// none), `workflow.name` and `now` (RFC 3339 in the contact's timezone, or
/// `tz` when the contact has none or an unknown one).
pub fn render_context(
    contact: &Contact,
    owner: Option<&Value>,
    workflow: &str,
    now: DateTime<Utc>,
    tz: Tz,
) -> Value {
    let tz = contact
        .timezone
        .as_deref()
        .and_then(|z| z.parse::<Tz>().ok())
        .unwrap_or(tz);
    let mut m = serde_json::Map::new();
    m.insert("contact".into(), contact.template_value());
    if let Some(o) = owner {
        m.insert("owner".into(), o.clone());
    }
    m.insert("workflow".into(), serde_json::json!({ "name": workflow }));
    m.insert(
        "now".into(),
        Value::String(
            now.with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    );
    Value::Object(m)
}

/// A contact with every built-in field set, for checking that templates
/// render (validate).
pub fn sample_contact() -> Contact {
    Contact {
        id: "c0000001".into(),
        name: Some("Ada".into()),
        email: Some("ada@example.com".into()),
        phone: Some("+8613800000000".into()),
        wecom_external_userid: Some("wmAda".into()),
        owner: Some("s01".into()),
        timezone: Some("Asia/Shanghai".into()),
        created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        last_active_at: DateTime::from_timestamp(1_750_000_000, 0),
        ..Contact::default()
    }
}
