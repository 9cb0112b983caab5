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

mod context;
mod front_matter;
mod helpers;
mod nesting;
mod render;

pub use context::{notice_context, render_context, sample_contact};
use front_matter::*;
use helpers::*;
pub use helpers::{format_date, group_thousands};
use nesting::*;
pub use render::MessageLimit;

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

/// The helpers a template can call, sorted (for did-you-mean): ours and
/// handlebars' built-in ones but `log` (see [`registry`]; a unit test
/// checks each is registered).
pub const HELPERS: [&str; 21] = [
    "add", "and", "date", "default", "each", "eq", "gt", "gte", "if", "len", "lookup", "lt", "lte",
    "money", "ne", "not", "number", "or", "raw", "unless", "with",
];

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
                // Blocks that do not pair up are the usual cause: say which.
                if let Some(unpaired) = nesting::unpaired_block(src) {
                    return unpaired;
                }
                "invalid template syntax".to_string()
            }
            r => r.to_string(),
        };
        (to_u32(line), to_u32(col), msg)
    })?;
    check_elements(&t)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name validate suggests is a helper templates can call, and
    /// `log` (unregistered: it would log contact data) is not one.
    #[test]
    fn the_helpers_named_for_did_you_mean_are_registered() {
        let r = registry(false);
        let not_found = |name: &str| {
            r.render_template(&format!("{{{{{name} 1}}}}"), &serde_json::json!({}))
                .err()
                .is_some_and(|e| e.to_string().contains("Helper not found"))
        };
        for name in HELPERS {
            assert!(!not_found(name), "{name}");
        }
        assert!(not_found("log"));
        assert!(not_found("dat"));
    }

    /// Blocks that do not pair up are named, with where they opened
    /// (handlebars alone said "invalid template syntax" at the end).
    #[test]
    fn unpaired_blocks_are_named_where_they_open() {
        let err = |src: &str| compile(src).expect_err(src);
        assert_eq!(
            err("您好{{#if contact.city}}{{contact.city}}门店\n"),
            (
                1,
                3,
                "{{#if}} is never closed; add {{/if}} where it should end".into()
            )
        );
        assert_eq!(
            err("{{#each contact.tags}}\n{{#if this}}x{{/each}}"),
            (
                2,
                14,
                "{{/each}} closes the {{#if}} opened at 2:1; close it with {{/if}} first".into()
            )
        );
        assert_eq!(
            err("x{{/if}}").2,
            "{{/if}} closes a block that was never opened; remove it or add {{#if ...}} before it"
        );
        assert!(compile("{{#if a}}{{#each b}}{{/each}}{{else}}{{/if}}{{! {{#if }}").is_ok());
    }
}
