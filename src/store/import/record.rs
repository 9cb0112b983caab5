//! One data record into a [`Row`]: built-in fields checked and trimmed,
//! times and declared types read, attributes serialised as a JSON object.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::header::{Col, Header};
use crate::settings::FieldType;
use crate::store::contacts::{Row, check_tag};
use crate::store::to_ms;

/// A time: RFC 3339, or one of Excel's forms (`2026-05-01 09:00:00`,
/// `2026/5/1 9:00`, a date alone for midnight) in `tz`.
pub fn parse_time_in(s: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = || {
        for fmt in [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y/%m/%d %H:%M:%S",
            "%Y/%m/%d %H:%M",
        ] {
            if let Ok(n) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
                return Some(n);
            }
        }
        for fmt in ["%Y-%m-%d", "%Y/%m/%d"] {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, fmt) {
                return d.and_hms_opt(0, 0, 0);
            }
        }
        None
    };
    let bad = || {
        format!(
            "{s:?} is not a time (RFC 3339 like 2026-01-31T09:00:00+08:00, or 2026-01-31 09:00, 2026/1/31 9:00, 2026-01-31 in {tz})"
        )
    };
    let n = local().ok_or_else(bad)?;
    use chrono::TimeZone;
    tz.from_local_datetime(&n)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{s:?} does not exist in {tz} (a daylight-saving gap)"))
}

fn parse_time(s: &str, tz: chrono_tz::Tz) -> Result<i64, String> {
    parse_time_in(s, tz).map(to_ms)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{s:?} is not true/false, 1/0 or yes/no")),
    }
}

/// An attribute cell of a declared type, as stored: a number as written
/// (trimmed), a bool as true/false, a time as RFC 3339 in `tz`.
fn typed_cell(ty: FieldType, raw: &str, tz: chrono_tz::Tz) -> Result<Option<String>, String> {
    let s = raw.trim();
    Ok(match ty {
        FieldType::String => None,
        FieldType::Number => {
            if s.parse::<f64>().map(|n| n.is_finite()) != Ok(true) {
                return Err(format!("{s:?} is not a number"));
            }
            Some(s.to_string())
        }
        FieldType::Bool => Some(parse_bool(s)?.to_string()),
        FieldType::Timestamp => Some(
            parse_time_in(s, tz)?
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        // A calendar date, not an instant: stored as YYYY-MM-DD (Excel's
        // 2026/5/1 read too).
        FieldType::Date => {
            let d = ["%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d"]
                .iter()
                .find_map(|f| chrono::NaiveDate::parse_from_str(s, f).ok())
                .ok_or_else(|| format!("{s:?} is not a date; write YYYY-MM-DD, e.g. 1990-06-15"))?;
            Some(d.format("%Y-%m-%d").to_string())
        }
    })
}

fn opt(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

/// Turns one data record into a row, or says why it is bad.
pub(super) fn parse_row(h: &Header, rec: &csv::ByteRecord, row: &mut Row) -> Result<(), String> {
    if rec.len() != h.cols.len() {
        return Err(format!(
            "expected {} columns, found {}",
            h.cols.len(),
            rec.len()
        ));
    }
    let mut attrs: Vec<u8> = Vec::new();
    for (i, (col, field)) in h.cols.iter().zip(rec.iter()).enumerate() {
        // Where a bad cell is: its column's number and name.
        let at = |e: String| format!("column {} ({}): {e}", i + 1, h.names[i]);
        let raw = std::str::from_utf8(field).map_err(|_| {
            at("not valid UTF-8 (save the file as \"CSV UTF-8\" in Excel, or import it with --encoding gbk)".into())
        })?;
        if let Col::Attr(k) = *col {
            if !raw.is_empty() {
                attrs.push(if attrs.is_empty() { b'{' } else { b',' });
                attrs.extend_from_slice(h.attr_keys[k].as_bytes());
                let typed = match h.attr_types[k] {
                    None | Some(FieldType::String) => None,
                    Some(ty) => typed_cell(ty, raw, h.tz).map_err(at)?,
                };
                serde_json::to_writer(&mut attrs, typed.as_deref().unwrap_or(raw))
                    .expect("writing a string to memory cannot fail");
            }
            continue;
        }
        let s = raw.trim();
        match col {
            Col::Id => {
                if s.is_empty() {
                    return Err("missing id".into());
                }
                if s.chars().any(char::is_control) {
                    return Err(at(format!("id {s:?} contains a control character")));
                }
                if let Some(reason) = crate::store::contacts::id_too_long(s) {
                    return Err(reason);
                }
                row.id = s.to_string();
            }
            Col::Name => row.name = opt(s),
            Col::Email => row.email = opt(s),
            Col::Phone => row.phone = opt(s),
            Col::Wecom => row.wecom_external_userid = opt(s),
            Col::Owner => row.owner = opt(s),
            Col::Timezone => {
                if !s.is_empty() {
                    chrono_tz::Tz::from_str(s).map_err(|_| {
                        at(format!(
                            "{s:?} is not an IANA time zone name (like Asia/Shanghai)"
                        ))
                    })?;
                    row.timezone = Some(s.to_string());
                }
            }
            Col::CreatedAt => {
                if !s.is_empty() {
                    row.created_at = Some(parse_time(s, h.tz).map_err(at)?);
                }
            }
            Col::LastActiveAt => {
                if !s.is_empty() {
                    row.last_active_at = Some(parse_time(s, h.tz).map_err(at)?);
                }
            }
            Col::Unsubscribed => {
                if !s.is_empty() {
                    row.unsubscribed = Some(parse_bool(s).map_err(at)?);
                }
            }
            Col::Tags => {
                for t in s.split(';') {
                    let t = t.trim();
                    if t.is_empty() {
                        continue;
                    }
                    let t = check_tag(t).map_err(|e| at(e.to_string()))?;
                    if !row.tags.contains(&t) {
                        row.tags.push(t);
                    }
                }
            }
            Col::Attr(_) => unreachable!(),
        }
    }
    if attrs.is_empty() {
        row.attrs = "{}".to_string();
    } else {
        attrs.push(b'}');
        row.attrs = String::from_utf8(attrs).expect("built from valid UTF-8");
    }
    Ok(())
}
