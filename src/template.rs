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
    /// `params:` (SMS template variables, e.g. Aliyun's), each rendered.
    /// When a template has them, [`body`](Self::body) is their JSON object
    /// (`{"name":"王芳"}`): what the SMS provider receives as the approved
    /// template's variables, and what `dry-run` shows.
    pub params: BTreeMap<String, String>,
    /// `attachments:` (WeCom images, links, mini-programs, files), each
    /// text field rendered (see [`crate::attachments`]).
    pub attachments: Vec<crate::attachments::Attachment>,
}

/// The name of the assignment notice's template when `notify:` names none.
pub const NOTICE_TEMPLATE: &str = "assigned";

/// The shipped assignment notice, used when the project has no
/// `templates/assigned.hbs`: names the customer and their phone, in Chinese
/// and English. Variables: `contact`, `owner` (the new salesperson),
/// `previous_owner` (when there was one), `workflow`, `now`.
pub const DEFAULT_NOTICE: &str = "【新客户】{{default contact.name contact.id}}（电话 {{default contact.phone \"未留\"}}）已分配给您{{#if previous_owner}}，原顾问{{default previous_owner.name previous_owner.id}}{{/if}}。来自：{{workflow.name}}
New customer for {{default owner.name owner.id}}: {{default contact.name contact.id}}, phone {{default contact.phone \"not given\"}}{{#if previous_owner}} (previously {{default previous_owner.name previous_owner.id}}){{/if}}. Workflow: {{workflow.name}}";

/// The prefix of a `params:` entry's key among the template's parts.
const PARAM_PREFIX: &str = "params.";

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
    /// `attachments:` local files: (path, media type, position of the path).
    files: Vec<(String, crate::attachments::MediaType, Pos)>,
    /// Where the first attachment is, if the template has any.
    attachments_at: Option<Pos>,
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
    r.register_helper("date", Box::new(DateHelper));
    r.register_helper("add", Box::new(AddHelper));
    r.register_helper("money", Box::new(MoneyHelper));
    r.register_helper("number", Box::new(NumberHelper));
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
        let mut files = Vec::new();
        let mut attachments_at = None;
        for f in &front {
            if let Some(rest) = f.key.strip_prefix(crate::attachments::PREFIX) {
                attachments_at.get_or_insert(Pos::new(f.line, f.col));
                let ty = if rest.ends_with(".image.file") || rest.ends_with(".miniprogram.pic") {
                    Some(crate::attachments::MediaType::Image)
                } else if rest.ends_with(".file.file") {
                    Some(crate::attachments::MediaType::File)
                } else {
                    None
                };
                if let Some(ty) = ty {
                    files.push((f.value.clone(), ty, Pos::new(f.line, f.col)));
                }
            }
        }
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
        self.entries.insert(
            name.to_string(),
            Entry {
                parts,
                files,
                attachments_at,
            },
        );
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

    /// The `params:` names of a template, with the line of each (for
    /// `validate`).
    pub fn param_names(&self, name: &str) -> Vec<&str> {
        self.entries
            .get(name)
            .into_iter()
            .flat_map(|e| e.parts.iter())
            .filter_map(|p| p.key.as_deref()?.strip_prefix(PARAM_PREFIX))
            .collect()
    }

    /// Front matter keys of a template (e.g. `subject`).
    /// The local files a template's `attachments:` upload: (path as
    /// written, media type, position in the file).
    pub fn attachment_files(
        &self,
        name: &str,
    ) -> Vec<(String, crate::attachments::MediaType, Pos)> {
        self.entries
            .get(name)
            .map(|e| e.files.clone())
            .unwrap_or_default()
    }

    /// Where a template's first attachment is, if it has any.
    pub fn attachments_at(&self, name: &str) -> Option<Pos> {
        self.entries.get(name).and_then(|e| e.attachments_at)
    }

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

    /// Renders a template written inline in a workflow (a `set:` value),
    /// without HTML escaping, strictly (a missing variable is an error).
    pub fn render_inline(&self, src: &str, ctx: &Value) -> Result<String, String> {
        self.text
            .render_template(src, ctx)
            .map_err(|e| e.to_string())
    }

    /// Renders an assignment notice: the template `name`, or the shipped
    /// [`DEFAULT_NOTICE`] when `name` is `assigned` and the project has none.
    pub fn render_notice(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        if self.contains(name) || name != NOTICE_TEMPLATE {
            return self.render(name, ctx).map(|r| r.body);
        }
        self.text.render_template(DEFAULT_NOTICE, ctx).map_err(|e| {
            render_error(
                NOTICE_TEMPLATE,
                &Part {
                    key: None,
                    reg_name: String::new(),
                    line_offset: 0,
                },
                e,
            )
        })
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
        let mut attachment_parts = BTreeMap::new();
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
                Some(k) if k.starts_with(crate::attachments::PREFIX) => {
                    attachment_parts.insert(k.to_string(), text);
                }
                Some(k) => match k.strip_prefix(PARAM_PREFIX) {
                    Some(p) => {
                        out.params.insert(p.to_string(), text);
                    }
                    None => {
                        out.extra.insert(k.to_string(), text);
                    }
                },
            }
        }
        out.attachments = crate::attachments::collect(&attachment_parts);
        if !out.params.is_empty() {
            out.body = serde_json::to_string(&out.params).unwrap_or_default();
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
fn param_entry(text: &str) -> Result<(String, String, u32), String> {
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
fn parse_flow_params(raw: &str) -> Result<Vec<(String, String, u32)>, String> {
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
    m.insert("contact".into(), contact.template_value_in(Some(tz)));
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
    // The time zone the helpers (`date`) format in.
    m.insert("timezone".into(), Value::String(tz.name().to_string()));
    Value::Object(m)
}

/// The data an assignment notice sees: `contact`, `owner` (the salesperson
/// now assigned), `previous_owner` (when there was one), `workflow.name`,
/// `now`; times in `tz` (the settings' time zone: the salesperson's).
pub fn notice_context(
    contact: &Contact,
    owner: &Value,
    previous_owner: Option<&Value>,
    workflow: &str,
    now: DateTime<Utc>,
    tz: Tz,
) -> Value {
    let mut c = contact.clone();
    c.timezone = Some(tz.name().to_string());
    let mut v = render_context(&c, Some(owner), workflow, now, tz);
    if let Some(m) = v.as_object_mut() {
        if let Some(contact_v) = m.get_mut("contact").and_then(Value::as_object_mut) {
            // The contact's own time zone, as stored.
            match &contact.timezone {
                Some(z) => contact_v.insert("timezone".into(), Value::String(z.clone())),
                None => contact_v.remove("timezone"),
            };
        }
        if let Some(p) = previous_owner {
            m.insert("previous_owner".into(), p.clone());
        }
    }
    v
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

/// The value of parameter `i` of helper `name`; a missing variable is the
/// strict-mode error it would be if printed.
fn param<'a>(h: &'a Helper<'_>, name: &'static str, i: usize) -> Result<&'a Value, RenderError> {
    let p = h
        .param(i)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, i))?;
    if p.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
    }
    Ok(p.value())
}

fn helper_error(name: &str, msg: String) -> RenderError {
    RenderErrorReason::Other(format!("{name}: {msg}")).into()
}

/// The time zone the template renders in (`render_context`'s `timezone`).
fn context_tz(ctx: &Context) -> Tz {
    ctx.data()
        .get("timezone")
        .and_then(Value::as_str)
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// A time given to a helper: RFC 3339 text (what `now`, `event.at` and the
/// contact's times are), or milliseconds since the epoch.
fn time_value(name: &str, v: &Value) -> Result<DateTime<Utc>, RenderError> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
            })
            .map_err(|_| {
                helper_error(
                    name,
                    format!("\"{s}\" is not a time (RFC 3339, e.g. 2026-11-01T09:00:00+08:00)"),
                )
            }),
        Value::Number(n) => n
            .as_i64()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| helper_error(name, format!("{n} is not a time"))),
        other => Err(helper_error(name, format!("{other} is not a time"))),
    }
}

/// Formats a time with the tokens `YYYY YY MM M DD D HH H mm ss` and
/// `dddd` (星期一) / `ddd` (周一); text in `[brackets]` is kept as written.
pub fn format_date<T: chrono::TimeZone>(t: &DateTime<T>, pattern: &str) -> String {
    use chrono::{Datelike, Offset, Timelike};
    const WEEK: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if c == '[' {
            match rest.find(']') {
                Some(end) => {
                    out.push_str(&rest[1..end]);
                    rest = &rest[end + 1..];
                }
                None => {
                    out.push_str(&rest[1..]);
                    rest = "";
                }
            }
            continue;
        }
        let tokens: [(&str, String); 13] = [
            ("YYYY", format!("{:04}", t.year())),
            ("YY", format!("{:02}", t.year() % 100)),
            ("MM", format!("{:02}", t.month())),
            ("M", t.month().to_string()),
            ("DD", format!("{:02}", t.day())),
            ("D", t.day().to_string()),
            ("HH", format!("{:02}", t.hour())),
            ("H", t.hour().to_string()),
            ("mm", format!("{:02}", t.minute())),
            ("ss", format!("{:02}", t.second())),
            (
                "dddd",
                format!("星期{}", WEEK[t.weekday().num_days_from_monday() as usize]),
            ),
            (
                "ddd",
                format!("周{}", WEEK[t.weekday().num_days_from_monday() as usize]),
            ),
            ("ZZ", String::new()),
        ];
        // Longest token first.
        let mut best: Option<(&str, &String)> = None;
        for (tok, val) in &tokens {
            if rest.starts_with(tok) && best.is_none_or(|(b, _)| tok.len() > b.len()) {
                best = Some((tok, val));
            }
        }
        match best {
            Some(("ZZ", _)) => {
                let off = t.offset().fix().local_minus_utc();
                let sign = if off < 0 { '-' } else { '+' };
                let off = off.abs();
                out.push_str(&format!("{sign}{:02}:{:02}", off / 3600, off % 3600 / 60));
                rest = &rest[2..];
            }
            Some((tok, val)) => {
                out.push_str(val);
                rest = &rest[tok.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// `{{date TIME "M月D日"}}`: TIME in the contact's time zone (the settings'
/// when the contact has none), formatted; the default pattern is
/// `YYYY-MM-DD HH:mm`.
struct DateHelper;

impl HelperDef for DateHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let t = time_value("date", param(h, "date", 0)?)?;
        let pattern = match h.param(1) {
            Some(_) => param(h, "date", 1)?
                .as_str()
                .ok_or_else(|| {
                    helper_error("date", "the pattern must be text such as \"M月D日\"".into())
                })?
                .to_string(),
            None => "YYYY-MM-DD HH:mm".to_string(),
        };
        let local = t.with_timezone(&context_tz(ctx));
        Ok(ScopedJson::Derived(Value::String(format_date(
            &local, &pattern,
        ))))
    }
}

/// `{{date (add now "7d") "M月D日"}}`: a time plus a duration (`30m`,
/// `12h`, `7d`, `2w`; `-1d` subtracts), as RFC 3339 in the contact's time zone.
struct AddHelper;

impl HelperDef for AddHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let t = time_value("add", param(h, "add", 0)?)?;
        let d = param(h, "add", 1)?;
        let text = match d {
            Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        };
        let (neg, body) = match text.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, text.as_str()),
        };
        let dur: crate::duration::Duration = body.parse().map_err(|e| {
            helper_error(
                "add",
                format!("\"{text}\" is not a duration such as 7d: {e}"),
            )
        })?;
        let delta = dur.to_chrono();
        let out = if neg { t - delta } else { t + delta };
        Ok(ScopedJson::Derived(Value::String(crate::timefmt::in_tz(
            out,
            context_tz(ctx),
        ))))
    }
}

/// A number given to a helper: a JSON number or numeric text (what a CSV
/// import stores).
fn number_value(name: &str, v: &Value) -> Result<f64, RenderError> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', "").parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
    .ok_or_else(|| helper_error(name, format!("{v} is not a number")))
}

/// `1234567.5` with `decimals` → `1,234,567.50`.
pub fn group_thousands(n: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, n.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (s.clone(), None),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let neg = n < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0');
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(&grouped);
    if let Some(f) = frac {
        out.push('.');
        out.push_str(&f);
    }
    out
}

/// `{{money contact.lifetime_value "CNY"}}` → `¥1,200.00`. Codes with a
/// symbol: CNY/RMB ¥, USD $, EUR €, GBP £, HKD HK$, JPY ¥ (no decimals),
/// KRW ₩ (no decimals); others are written before the amount (`SGD 12.00`).
/// Without a code: CNY.
struct MoneyHelper;

impl HelperDef for MoneyHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let n = number_value("money", param(h, "money", 0)?)?;
        let code = match h.param(1) {
            Some(_) => param(h, "money", 1)?
                .as_str()
                .unwrap_or("CNY")
                .to_ascii_uppercase(),
            None => "CNY".to_string(),
        };
        let (symbol, decimals) = match code.as_str() {
            "CNY" | "RMB" => ("¥", 2),
            "USD" => ("$", 2),
            "EUR" => ("€", 2),
            "GBP" => ("£", 2),
            "HKD" => ("HK$", 2),
            "JPY" => ("¥", 0),
            "KRW" => ("₩", 0),
            _ => ("", 2),
        };
        let amount = group_thousands(n, decimals);
        let (sign, digits) = match amount.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("", amount.as_str()),
        };
        let text = if symbol.is_empty() {
            format!("{sign}{code} {digits}")
        } else {
            format!("{sign}{symbol}{digits}")
        };
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

/// `{{number VALUE 2}}` → `1,200.00`: thousands separated, DECIMALS
/// places (default: 0 for whole numbers, else 2).
struct NumberHelper;

impl HelperDef for NumberHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let n = number_value("number", param(h, "number", 0)?)?;
        let decimals = match h.param(1) {
            Some(_) => param(h, "number", 1)?
                .as_u64()
                .map(|d| d.min(10) as usize)
                .ok_or_else(|| helper_error("number", "decimals must be a whole number".into()))?,
            None if n.fract() == 0.0 => 0,
            None => 2,
        };
        Ok(ScopedJson::Derived(Value::String(group_thousands(
            n, decimals,
        ))))
    }
}
