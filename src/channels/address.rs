//! Whether a contact's address has the shape its channel's provider takes.
//!
//! The planner asks before it plans a send: an address the provider would
//! refuse (a phone number with a digit missing, an email without `@`) is a
//! skip with the reason `bad_address`, shown by the dry-run, instead of a
//! send the preview shows and the provider then refuses. Only the shape is
//! checked, as the provider documents it; whether the number exists is the
//! provider's to say (Aliyun's `isv.MOBILE_NUMBER_ILLEGAL`, Twilio's 21211
//! for a number it knows to be invalid stay permanent failures).
//!
//! - Twilio's `To` is E.164: `+`, the country code and the number, digits
//!   only, at most 15 (reference §2).
//! - Aliyun's `PhoneNumbers` (reference §3): a mainland number is 11 digits
//!   starting with 1, and may carry `+86`, `86` or `0086` in front; a number
//!   of another country is its country code and number (with `+` or `00`
//!   in front, or without). Digits only: Aliyun does not strip spaces or
//!   dashes.
//! - An email is what the SMTP channel can address ([`super::smtp::recipient`]).
//! - WeCom's external user ids are opaque; the log and webhook channels reach
//!   a contact by id (or preview a field): nothing to check.

use crate::settings::ChannelKind;

/// Why `to` cannot be sent to on a channel of `kind`, if it cannot.
pub fn refusal(kind: ChannelKind, to: &str) -> Option<String> {
    let to = to.trim();
    match kind {
        ChannelKind::Twilio => (!e164(to)).then(|| {
            format!(
                "phone {to:?} is not in E.164 form, which Twilio needs: \
                 + then the country code and number, digits only (+8613800138000)"
            )
        }),
        ChannelKind::AliyunSms => (!aliyun(to)).then(|| {
            format!(
                "phone {to:?} is not a number Aliyun SMS takes: 11 digits starting with 1 \
                 for the mainland (+86, 86 or 0086 in front allowed), or the country code \
                 and number, digits only"
            )
        }),
        ChannelKind::Smtp => super::smtp::recipient(to).err(),
        ChannelKind::Wecom | ChannelKind::Webhook | ChannelKind::Log => None,
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// E.164: `+`, a country code not starting with 0, at most 15 digits in all.
/// Seven is the shortest number in use (Niue, +683 and four digits).
fn e164(to: &str) -> bool {
    to.strip_prefix('+')
        .is_some_and(|d| digits(d) && !d.starts_with('0') && (7..=15).contains(&d.len()))
}

/// A mainland mobile number: 11 digits, the first 1.
fn mainland(d: &str) -> bool {
    d.len() == 11 && d.starts_with('1') && digits(d)
}

fn aliyun(to: &str) -> bool {
    let (international, d) = match to.strip_prefix('+').or_else(|| to.strip_prefix("00")) {
        Some(rest) => (true, rest),
        None => (false, to),
    };
    if !digits(d) {
        return false;
    }
    // China's country code in front: the number after it is a mainland one.
    if let Some(rest) = d.strip_prefix("86") {
        return mainland(rest);
    }
    // Without a country code, a number starting with 1 is a mainland one
    // (Aliyun reads it so); with one, 1 is North America's country code.
    if !international && d.starts_with('1') {
        return mainland(d);
    }
    !d.starts_with('0') && (7..=15).contains(&d.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_takes_e164_only() {
        for ok in [
            "+8613800138000",
            "+14155550100",
            "+6834002",
            " +447700900123 ",
        ] {
            assert_eq!(refusal(ChannelKind::Twilio, ok), None, "{ok}");
        }
        for bad in [
            "13800138000",
            "+1 415 555 0100",
            "+1-415-555-0100",
            "+0123456789",
            "+1234567890123456",
            "+12345",
            "++8613800138000",
            "tel:+14155550100",
        ] {
            let why = refusal(ChannelKind::Twilio, bad).expect(bad);
            assert!(why.contains("E.164"), "{why}");
        }
    }

    #[test]
    fn aliyun_takes_mainland_numbers_with_or_without_86_and_other_countries() {
        for ok in [
            "13800138000",
            "+8613800138000",
            "8613800138000",
            "008613800138000",
            "85291234567",
            "+85291234567",
            "0085291234567",
            "+14155550100",
            "0014155550100",
        ] {
            assert_eq!(refusal(ChannelKind::AliyunSms, ok), None, "{ok}");
        }
        for bad in [
            "1380013800",
            "138001380001",
            "+861380013800",
            "86138001380",
            "138 0013 8000",
            "138-0013-8000",
            "+86 13800138000",
            "0138001380",
            "abc",
            "+",
        ] {
            let why = refusal(ChannelKind::AliyunSms, bad).expect(bad);
            assert!(why.contains("Aliyun"), "{why}");
        }
    }

    #[test]
    fn smtp_takes_what_it_can_address() {
        assert_eq!(refusal(ChannelKind::Smtp, "wang@example.com"), None);
        assert_eq!(refusal(ChannelKind::Smtp, " wang@example.com "), None);
        for bad in [
            "wang",
            "wang@",
            "@example.com",
            "wang@@example.com",
            "王 @example.com",
        ] {
            let why = refusal(ChannelKind::Smtp, bad).expect(bad);
            assert!(why.contains("not an email address"), "{why}");
        }
    }

    #[test]
    fn ids_are_not_checked() {
        for kind in [ChannelKind::Wecom, ChannelKind::Webhook, ChannelKind::Log] {
            assert_eq!(refusal(kind, "anything at all"), None);
        }
    }
}
