//! The header row: which column is which field, attribute keys JSON-escaped
//! once, declared types.

use std::path::Path;

use super::ImportOptions;
use crate::settings::FieldType;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Col {
    Id,
    Name,
    Email,
    Phone,
    Wecom,
    Owner,
    Timezone,
    CreatedAt,
    LastActiveAt,
    Unsubscribed,
    Tags,
    /// Index into the attribute keys.
    Attr(usize),
}

pub(super) fn builtin_col(name: &str) -> Option<Col> {
    Some(match name {
        "id" => Col::Id,
        "name" => Col::Name,
        "email" => Col::Email,
        "phone" => Col::Phone,
        "wecom_external_userid" => Col::Wecom,
        "owner" => Col::Owner,
        "timezone" => Col::Timezone,
        "created_at" => Col::CreatedAt,
        "last_active_at" => Col::LastActiveAt,
        "unsubscribed" => Col::Unsubscribed,
        "tags" => Col::Tags,
        _ => return None,
    })
}

pub(super) struct Header {
    pub(super) cols: Vec<Col>,
    pub(super) names: Vec<String>,
    /// The declared type of each attribute column (by attribute index).
    pub(super) attr_types: Vec<Option<FieldType>>,
    pub(super) tz: chrono_tz::Tz,
    /// `"key":` for each attribute column, JSON-escaped once.
    pub(super) attr_keys: Vec<String>,
}

pub(super) fn read_header(
    path: &Path,
    rec: &csv::ByteRecord,
    opts: &ImportOptions,
) -> Result<Header, StoreError> {
    // FILE:1:COLUMN: the header is the file's first line.
    let bad = |col: usize, message: String| StoreError::BadFile {
        path: format!("{}:1:{col}", path.display()),
        message,
    };
    let mut cols = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut attr_keys = Vec::new();
    let mut attr_types = Vec::new();
    for (i, field) in rec.iter().enumerate() {
        let field = if i == 0 {
            field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
        } else {
            field
        };
        let name = std::str::from_utf8(field)
            .map_err(|_| {
                bad(
                    i + 1,
                    format!(
                        "column {} of the header is not valid UTF-8; save the file as \"CSV UTF-8\" in Excel, or import it with --encoding gbk",
                        i + 1
                    ),
                )
            })?
            .trim()
            .to_string();
        if name.is_empty() {
            return Err(bad(
                i + 1,
                format!("column {} of the header has no name", i + 1),
            ));
        }
        if let Some(j) = names.iter().position(|n| *n == name) {
            return Err(bad(
                i + 1,
                format!(
                    "column {name:?} appears twice (columns {} and {})",
                    j + 1,
                    i + 1
                ),
            ));
        }
        let col = match builtin_col(&name) {
            Some(c) => c,
            None => {
                let mut key = serde_json::to_string(&name).expect("a string serialises");
                key.push(':');
                attr_keys.push(key);
                attr_types.push(opts.fields.get(&name).copied());
                Col::Attr(attr_keys.len() - 1)
            }
        };
        cols.push(col);
        names.push(name);
    }
    if !cols.contains(&Col::Id) {
        return Err(bad(
            1,
            format!("no \"id\" column (the header names: {})", names.join(", ")),
        ));
    }
    Ok(Header {
        cols,
        names,
        attr_types,
        tz: opts.tz,
        attr_keys,
    })
}
