//! The helpers a template may call: `default`, `date`, `add`, `money`,
//! `number`. None runs code, reads files or sees anything but its arguments.

use super::*;

/// `{{default VALUE FALLBACK}}`: VALUE unless it is missing, null or "".
/// A missing VALUE is not a strict-mode error here (handlebars only rejects
/// missing values that are printed); a missing FALLBACK is.
pub(super) struct DefaultHelper;

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

/// The value of parameter `i` of helper `name`; a missing variable is the
/// strict-mode error it would be if printed.
pub(super) fn param<'a>(
    h: &'a Helper<'_>,
    name: &'static str,
    i: usize,
) -> Result<&'a Value, RenderError> {
    let p = h
        .param(i)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, i))?;
    if p.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
    }
    Ok(p.value())
}

pub(super) fn helper_error(name: &str, msg: String) -> RenderError {
    RenderErrorReason::Other(format!("{name}: {msg}")).into()
}

/// The time zone the template renders in (`render_context`'s `timezone`).
pub(super) fn context_tz(ctx: &Context) -> Tz {
    ctx.data()
        .get("timezone")
        .and_then(Value::as_str)
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// A time given to a helper: RFC 3339 text (what `now`, `event.at` and the
/// contact's times are), or milliseconds since the epoch.
pub(super) fn time_value(name: &str, v: &Value) -> Result<DateTime<Utc>, RenderError> {
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
pub(super) struct DateHelper;

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
pub(super) struct AddHelper;

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
pub(super) fn number_value(name: &str, v: &Value) -> Result<f64, RenderError> {
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
pub(super) struct MoneyHelper;

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
pub(super) struct NumberHelper;

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
