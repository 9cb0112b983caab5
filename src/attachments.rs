//! Rich content (issue 9, point 8): a template's `attachments:` — images,
//! link cards, mini-program cards and files — sent with WeCom welcome
//! messages (`send_welcome_msg`) and mass messages (`add_msg_template`),
//! at most [`MAX`] (WeCom's limit, reference §1.2–§1.3).
//!
//! ```text
//! ---
//! attachments:
//!   - link: { title: "618 特惠", desc: "{{contact.name}}，专属优惠", picurl: "https://cdn.example.com/618.png", url: "https://example.com/618?c={{contact.id}}" }
//!   - image: media/poster.png
//!   - miniprogram: { title: "商城", pic: media/cover.jpg, appid: wx8bd80126147dfaaa, page: pages/index/index }
//!   - file: media/brochure.pdf
//! ---
//! ```
//!
//! Decisions:
//! - Text fields (a link's title, desc, url; a mini-program's title and
//!   page) are templates like every front matter value: rendered per contact
//!   and shown by `dry-run`.
//! - Files (`image`, `file`, a mini-program's `pic`) are local paths taken
//!   from the project folder (where `nurture.yaml` is), never template text:
//!   each is uploaded once through `media/upload` and its `media_id` reused
//!   by every contact (`store::wecom_media`). WeCom keeps a `media_id` three
//!   days; nurture uploads again after 2.5 days. A link's `picurl` is a URL
//!   (WeCom fetches it), so it is not uploaded.
//! - Only WeCom sends attachments: `validate` rejects a template with
//!   attachments sent on another channel (dropping them silently would send
//!   something the preview did not show). A `log` channel standing in for
//!   WeCom (the quick start) writes them to the log with the text.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diagnostics::{Diagnostic, Pos};

/// WeCom's most attachments on one welcome or mass message.
pub const MAX: usize = 9;
/// WeCom's upload limits (bytes): images 10 MB (JPG, PNG), files 20 MB;
/// every upload more than 5 bytes.
pub const IMAGE_MAX_BYTES: u64 = 10 * 1024 * 1024;
pub const FILE_MAX_BYTES: u64 = 20 * 1024 * 1024;
pub const MIN_BYTES: u64 = 6;
/// Field limits (bytes) for text WeCom takes on cards.
const LINK_TITLE_MAX: usize = 128;
const LINK_DESC_MAX: usize = 512;
const MINIPROGRAM_TITLE_MAX: usize = 64;

/// One attachment, rendered for a contact (file paths as written, relative
/// to the project folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
pub enum Attachment {
    Image {
        file: String,
    },
    Link {
        title: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        desc: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        picurl: Option<String>,
        url: String,
    },
    Miniprogram {
        title: String,
        /// The card's picture, a local image uploaded for `pic_media_id`.
        pic: String,
        appid: String,
        page: String,
    },
    File {
        file: String,
    },
}

impl Attachment {
    /// One line for `dry-run`: `link: TITLE`, `image: media/poster.png`, ...
    pub fn summary(&self) -> String {
        match self {
            Attachment::Image { file } => format!("image: {file}"),
            Attachment::Link { title, url, .. } => format!("link: {title} ({url})"),
            Attachment::Miniprogram { title, appid, .. } => {
                format!("miniprogram: {title} ({appid})")
            }
            Attachment::File { file } => format!("file: {file}"),
        }
    }

    /// The local file this attachment uploads, with WeCom's media type.
    pub fn upload(&self) -> Option<(&str, MediaType)> {
        match self {
            Attachment::Image { file } => Some((file, MediaType::Image)),
            Attachment::Miniprogram { pic, .. } => Some((pic, MediaType::Image)),
            Attachment::File { file } => Some((file, MediaType::File)),
            Attachment::Link { .. } => None,
        }
    }
}

/// `media/upload?type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Image,
    File,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Image => "image",
            MediaType::File => "file",
        }
    }
}

/// The front matter key prefix of an attachment's fields:
/// `attachments.INDEX.KIND.FIELD`.
pub const PREFIX: &str = "attachments.";

const KINDS: &str = "image, link, miniprogram, file";

fn fields_of(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    // (every field, the required ones)
    match kind {
        "image" | "file" => Some((&["file"], &["file"])),
        "link" => Some((&["title", "desc", "picurl", "url"], &["title", "url"])),
        "miniprogram" => Some((
            &["title", "pic", "appid", "page"],
            &["title", "pic", "appid", "page"],
        )),
        _ => None,
    }
}

/// Checks a local path written in a template: not a URL, no template tags.
fn check_path(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("needs the path of a local file, e.g. `media/poster.png`".into());
    }
    if path.contains("{{") {
        return Err(
            "a file path cannot hold template tags: the file is uploaded once and sent to every contact"
                .into(),
        );
    }
    let l = path.to_lowercase();
    if l.starts_with("http://") || l.starts_with("https://") {
        return Err("WeCom takes a local file here (uploaded with media/upload): save it in the project, e.g. media/poster.png".into());
    }
    Ok(())
}

fn is_url_or_template(v: &str) -> bool {
    let l = v.trim_start().to_lowercase();
    l.starts_with("https://") || l.starts_with("http://") || l.starts_with("{{")
}

/// One field of an attachment item: (name, value, 1-based column).
pub type Field = (String, String, u32);

/// One `KIND: VALUE` item of `attachments:` (the text after `- `): the kind
/// and its fields (field, value, 1-based column of the value in `item`).
/// `flow` parses a one-line `{ a: x, b: y }` map, `scalar` one value (the
/// template module's front matter readers).
pub fn parse_item(
    item: &str,
    flow: impl Fn(&str) -> Result<Vec<Field>, String>,
    scalar: impl Fn(&str) -> Result<String, String>,
) -> Result<(String, Vec<Field>), (u32, String)> {
    let Some(colon) = item.find(':') else {
        return Err((
            1,
            format!("attachments entries are `- KIND: ...` with KIND one of {KINDS}"),
        ));
    };
    let kind = item[..colon].trim();
    let Some((all, required)) = fields_of(kind) else {
        return Err((
            1,
            format!("unknown attachment kind \"{kind}\"; kinds are {KINDS}"),
        ));
    };
    let rest = &item[colon + 1..];
    let lead = rest.len() - rest.trim_start().len();
    let raw = rest.trim();
    let vcol = item[..colon + 1 + lead].chars().count() as u32 + 1;
    if kind == "image" || kind == "file" {
        if raw.starts_with('{') {
            return Err((
                vcol,
                format!("{kind} takes the file's path, e.g. `- {kind}: media/poster.png`"),
            ));
        }
        let path = scalar(raw).map_err(|m| (vcol, m))?;
        check_path(&path).map_err(|m| (vcol, format!("{kind}: {m}")))?;
        return Ok((kind.to_string(), vec![("file".into(), path, vcol)]));
    }
    let entries = flow(raw).map_err(|m| {
        (
            vcol,
            format!("{kind} is a one-line map, e.g. `- {kind}: {{ title: \"...\", ... }}`: {m}"),
        )
    })?;
    let mut seen: Vec<&str> = Vec::new();
    for (k, v, c) in &entries {
        let col = vcol + c - 1;
        if !all.contains(&k.as_str()) {
            return Err((
                col,
                format!(
                    "unknown {kind} field \"{k}\"; fields are {}",
                    all.join(", ")
                ),
            ));
        }
        if seen.contains(&k.as_str()) {
            return Err((col, format!("{kind} field \"{k}\" appears twice")));
        }
        seen.push(k);
        let problem = match (kind, k.as_str()) {
            ("link", "url" | "picurl") if !is_url_or_template(v) => {
                Some(format!("{k} must start with https:// or http://"))
            }
            ("link", "title") if !v.contains("{{") && v.len() > LINK_TITLE_MAX => Some(format!(
                "title is {} bytes; WeCom takes at most {LINK_TITLE_MAX}",
                v.len()
            )),
            ("link", "desc") if !v.contains("{{") && v.len() > LINK_DESC_MAX => Some(format!(
                "desc is {} bytes; WeCom takes at most {LINK_DESC_MAX}",
                v.len()
            )),
            ("miniprogram", "title") if !v.contains("{{") && v.len() > MINIPROGRAM_TITLE_MAX => {
                Some(format!(
                    "title is {} bytes; WeCom takes at most {MINIPROGRAM_TITLE_MAX}",
                    v.len()
                ))
            }
            ("miniprogram", "pic") => check_path(v).err().map(|m| format!("pic: {m}")),
            ("miniprogram", "appid") if v.contains("{{") || v.trim().is_empty() => {
                Some("appid is the mini-program's fixed AppID (wx...)".into())
            }
            _ if v.trim().is_empty() => Some(format!("{k} is empty")),
            _ => None,
        };
        if let Some(p) = problem {
            return Err((col, format!("{kind}: {p}")));
        }
    }
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !seen.contains(r))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err((vcol, format!("{kind} needs {}", missing.join(", "))));
    }
    Ok((kind.to_string(), entries))
}

/// The attachments of a render, from its `attachments.I.KIND.FIELD` parts.
pub fn collect(parts: &BTreeMap<String, String>) -> Vec<Attachment> {
    let mut items: BTreeMap<usize, (String, BTreeMap<String, String>)> = BTreeMap::new();
    for (k, v) in parts {
        let Some(rest) = k.strip_prefix(PREFIX) else {
            continue;
        };
        let mut it = rest.splitn(3, '.');
        let (Some(i), Some(kind), Some(field)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(i) = i.parse::<usize>() else {
            continue;
        };
        let e = items
            .entry(i)
            .or_insert_with(|| (kind.to_string(), BTreeMap::new()));
        e.1.insert(field.to_string(), v.clone());
    }
    items
        .into_values()
        .filter_map(|(kind, mut f)| {
            let mut take = |k: &str| f.remove(k).unwrap_or_default();
            Some(match kind.as_str() {
                "image" => Attachment::Image { file: take("file") },
                "file" => Attachment::File { file: take("file") },
                "link" => Attachment::Link {
                    title: take("title"),
                    url: take("url"),
                    desc: f.remove("desc"),
                    picurl: f.remove("picurl"),
                },
                "miniprogram" => Attachment::Miniprogram {
                    title: take("title"),
                    pic: take("pic"),
                    appid: take("appid"),
                    page: take("page"),
                },
                _ => return None,
            })
        })
        .collect()
}

/// Checks a template's local files (`validate`): each exists under `root`,
/// is a file WeCom takes (images JPG or PNG up to 10 MB, files up to 20 MB,
/// more than 5 bytes). `files` are (path, media type, position) as
/// [`crate::template::Templates::attachment_files`] gives them.
pub fn check_files(
    template_file: &Path,
    root: &Path,
    files: &[(String, MediaType, Pos)],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (path, ty, pos) in files {
        let full = root.join(path);
        let meta = match std::fs::metadata(&full) {
            Ok(m) if m.is_file() => m,
            _ => {
                out.push(
                    Diagnostic::new(
                        template_file,
                        *pos,
                        format!("attachment file {path:?} not found (looked for {})", full.display()),
                    )
                    .with_suggestion(
                        "paths are taken from the project folder (where nurture.yaml is), e.g. media/poster.png",
                    ),
                );
                continue;
            }
        };
        let max = match ty {
            MediaType::Image => IMAGE_MAX_BYTES,
            MediaType::File => FILE_MAX_BYTES,
        };
        let problem = if meta.len() < MIN_BYTES {
            Some(format!(
                "is {} bytes; WeCom takes no upload of 5 bytes or less",
                meta.len()
            ))
        } else if meta.len() > max {
            Some(format!(
                "is {} bytes; WeCom takes {} of at most {max}",
                meta.len(),
                if *ty == MediaType::Image {
                    "images"
                } else {
                    "files"
                }
            ))
        } else if *ty == MediaType::Image
            && !matches!(
                full.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_lowercase)
                    .as_deref(),
                Some("jpg" | "jpeg" | "png")
            )
        {
            Some("is not a JPG or PNG image (WeCom takes only those)".into())
        } else {
            None
        };
        if let Some(p) = problem {
            out.push(Diagnostic::new(
                template_file,
                *pos,
                format!("attachment file {path:?} {p}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_rendered_parts_in_order() {
        let mut p = BTreeMap::new();
        p.insert("attachments.1.image.file".to_string(), "a.png".to_string());
        p.insert("attachments.0.link.title".into(), "T".into());
        p.insert("attachments.0.link.url".into(), "https://x".into());
        p.insert("subject".into(), "S".into());
        let a = collect(&p);
        assert_eq!(
            a,
            vec![
                Attachment::Link {
                    title: "T".into(),
                    desc: None,
                    picurl: None,
                    url: "https://x".into()
                },
                Attachment::Image {
                    file: "a.png".into()
                }
            ]
        );
        assert_eq!(a[0].summary(), "link: T (https://x)");
        let j = serde_json::to_value(&a[1]).unwrap();
        assert_eq!(j, serde_json::json!({"msgtype": "image", "file": "a.png"}));
    }
}
