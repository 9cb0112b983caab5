//! A Twilio Messages endpoint as strict about `To` as Twilio: a number out
//! of E.164 (`+`, a country code not starting with 0, 7 to 15 digits) is
//! refused with 400 and code 21211 ("Invalid 'To' Phone Number"); any other
//! is queued (201 with a `sid`). For tests of what reaches the provider;
//! `sms_channels` has the fake that also checks the path and credentials.

use std::sync::Arc;

use super::receiver::{Reply, Request, Script};

/// The decoded `To` of a form-encoded Messages request.
pub fn to_of(r: &Request) -> String {
    let body = String::from_utf8_lossy(&r.body);
    body.split('&')
        .find_map(|kv| kv.strip_prefix("To="))
        .map(|v| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

pub fn script() -> Script {
    Arc::new(|r: &Request| {
        let to = to_of(r);
        let e164 = to.strip_prefix('+').is_some_and(|n| {
            (7..=15).contains(&n.len())
                && !n.starts_with('0')
                && n.bytes().all(|b| b.is_ascii_digit())
        });
        if e164 {
            Reply::status(201).body(&format!(r#"{{"sid":"SM{}","status":"queued"}}"#, r.index))
        } else {
            Reply::status(400)
                .body(r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#)
        }
    })
}
