//! Rendering a compiled template: strict, bounded by the channel's message
//! limit, plain text or HTML-escaped.

use super::*;

impl Templates {
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
