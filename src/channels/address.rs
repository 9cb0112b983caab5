//! The address a send goes to, in the form its channel's provider takes,
//! or why the provider would refuse it.
//!
//! The planner asks before it plans a send: it sends the address this gives
//! (the preview shows that same address), and an address the provider would
//! refuse for its form (a phone number with a digit missing, an email
//! without `@`) is a skip with the reason `bad_address`, shown by the
//! dry-run, instead of a send the preview shows and the provider then
//! refuses. Only the form is checked, as the provider documents it; whether
//! the number exists is the provider's to say (Aliyun's
//! `isv.MOBILE_NUMBER_ILLEGAL`, Twilio's 21211 for a number it knows to be
//! invalid stay permanent failures).
//!
//! - Every address is trimmed; a phone number loses the spaces, dashes, dots
//!   and parentheses people write numbers with (`+86 138-0013-8000`), which
//!   neither provider documents taking.
//! - Twilio's `To` is E.164: `+`, the country code and the number, digits
//!   only, at most 15 (reference §2).
//! - Aliyun's `PhoneNumbers` (reference §3): a mainland number is 11 digits
//!   starting with 1, and may carry `+86`, `86` or `0086` in front; a number
//!   of another country is its country code and number (with `+` or `00`
//!   in front, or without).
//! - An email is what the SMTP channel can address ([`super::smtp::parse_recipient`]).
//! - WeCom's external user ids are opaque; the log and webhook channels reach
//!   a contact by id (or preview a field, `address:`): nothing to check.

use std::borrow::Cow;

use crate::settings::ChannelKind;

/// Why a provider would refuse an address. The address is part of the
/// text the dry-run shows and the step record keeps; the daemon's log gets
/// [`Refusal::without_address`] (no contact data in the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `phone` or `email`.
    pub field: &'static str,
    /// The address as the contact has it (cut to [`SHOWN`] characters).
    pub address: String,
    /// What the provider takes, after "is not" ("in E.164 form, ...").
    pub wanted: String,
}

/// Characters of a refused address shown: a junk cell may be megabytes.
const SHOWN: usize = 40;

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} is not {}",
            self.field, self.address, self.wanted
        )
    }
}

impl Refusal {
    fn new(field: &'static str, address: &str, wanted: String) -> Refusal {
        let address = if address.chars().count() > SHOWN {
            address.chars().take(SHOWN).chain(['…']).collect()
        } else {
            address.to_string()
        };
        Refusal {
            field,
            address,
            wanted,
        }
    }

    /// The refusal without the address, for the log.
    pub fn without_address(&self) -> String {
        format!("the {} is not {}", self.field, self.wanted)
    }
}

/// The address to send `to` on a channel of `kind`, or why its provider
/// would refuse it.
pub fn for_channel(kind: ChannelKind, to: &str) -> Result<String, Refusal> {
    form(kind, to).map(Cow::into_owned)
}

/// [`for_channel`] for an address the caller owns: the planner's, for every
/// send, which is nearly always in form already (then it is kept as it is).
pub fn into_channel_form(kind: ChannelKind, to: String) -> Result<String, Refusal> {
    let changed = match form(kind, &to)? {
        Cow::Borrowed(s) if s.len() == to.len() => None,
        other => Some(other.into_owned()),
    };
    Ok(changed.unwrap_or(to))
}

fn form(kind: ChannelKind, to: &str) -> Result<Cow<'_, str>, Refusal> {
    let trimmed = to.trim();
    match kind {
        ChannelKind::Twilio => {
            let phone = compact(trimmed);
            if e164(&phone) {
                return Ok(phone);
            }
            Err(Refusal::new(
                "phone",
                trimmed,
                "in E.164 form, which Twilio needs: + then the country code and number \
                 (+8613800138000)"
                    .into(),
            ))
        }
        ChannelKind::AliyunSms => {
            let phone = compact(trimmed);
            if aliyun(&phone) {
                return Ok(phone);
            }
            Err(Refusal::new(
                "phone",
                trimmed,
                "a number Aliyun SMS takes: 11 digits starting with 1 for the mainland \
                 (+86, 86 or 0086 in front allowed), or the country code and number"
                    .into(),
            ))
        }
        ChannelKind::Smtp => match super::smtp::parse_recipient(trimmed) {
            Ok(_) => Ok(Cow::Borrowed(trimmed)),
            Err(e) => Err(Refusal::new(
                "email",
                trimmed,
                format!("an email address: {e}"),
            )),
        },
        ChannelKind::Wecom | ChannelKind::Webhook | ChannelKind::Log => Ok(Cow::Borrowed(trimmed)),
    }
}

/// Why `to` cannot be sent to on a channel of `kind`, if it cannot.
pub fn refusal(kind: ChannelKind, to: &str) -> Option<Refusal> {
    form(kind, to).err()
}

/// The channels of the settings whose provider takes a contact's phone
/// (`twilio`, `aliyun_sms`) or email (`smtp`): what `contacts add`,
/// `contacts import` and `POST /v1/contacts` check a contact's addresses
/// against, to warn about the sends the planner will skip.
#[derive(Debug, Clone, Default)]
pub struct AddressChecks {
    /// (channel, kind, whether it takes the phone rather than the email).
    channels: Vec<(String, ChannelKind, bool)>,
}

impl AddressChecks {
    pub fn new(settings: &crate::settings::Settings) -> AddressChecks {
        // The field each kind sends to ([`ChannelKind::address_field`]);
        // WeCom's ids are opaque, and log and webhook channels check nothing.
        let channels = settings
            .channels
            .values()
            .filter_map(|c| match c.kind.address_field() {
                Some("phone") => Some((c.name.clone(), c.kind, true)),
                Some("email") => Some((c.name.clone(), c.kind, false)),
                _ => None,
            })
            .collect();
        AddressChecks { channels }
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// What each channel's provider would refuse of this phone and email:
    /// (channel, why). An empty or absent address is not refused (the
    /// planner skips it as `no_address`).
    pub fn refusals(&self, phone: Option<&str>, email: Option<&str>) -> Vec<(String, Refusal)> {
        self.channels
            .iter()
            .filter_map(|(name, kind, is_phone)| {
                let value = if *is_phone { phone } else { email };
                let value = value.filter(|v| !v.trim().is_empty())?;
                refusal(*kind, value).map(|why| (name.clone(), why))
            })
            .collect()
    }

    /// The warning for one contact's refusal on `channel`.
    pub fn warning(channel: &str, why: &Refusal) -> String {
        format!(
            "{why}; messages on the {channel} channel are skipped for this contact \
             (bad_address) until it is fixed"
        )
    }
}

/// A phone number without the separators people write in it.
fn compact(phone: &str) -> Cow<'_, str> {
    let separator = |c: char| c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')');
    if !phone.contains(separator) {
        return Cow::Borrowed(phone);
    }
    Cow::Owned(phone.chars().filter(|c| !separator(*c)).collect())
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
    fn twilio_takes_e164_written_with_or_without_separators() {
        for (given, sent) in [
            ("+8613800138000", "+8613800138000"),
            ("+14155550100", "+14155550100"),
            ("+6834002", "+6834002"),
            (" +447700900123 ", "+447700900123"),
            ("+1 (415) 555-0100", "+14155550100"),
            ("+86 138.0013.8000", "+8613800138000"),
            ("\u{3000}+8613800138000\u{a0}", "+8613800138000"),
        ] {
            assert_eq!(for_channel(ChannelKind::Twilio, given), Ok(sent.into()));
        }
        for bad in [
            "13800138000",
            "138-0013-8000",
            "+0123456789",
            "+1234567890123456",
            "+12345",
            "++8613800138000",
            "tel:+14155550100",
            "+86138001380O0",
        ] {
            let why = refusal(ChannelKind::Twilio, bad).expect(bad);
            assert_eq!(why.field, "phone");
            assert!(why.to_string().contains("is not in E.164 form"), "{why}");
        }
    }

    #[test]
    fn aliyun_takes_mainland_numbers_with_or_without_86_and_other_countries() {
        for (given, sent) in [
            ("13800138000", "13800138000"),
            ("+8613800138000", "+8613800138000"),
            ("8613800138000", "8613800138000"),
            ("008613800138000", "008613800138000"),
            ("85291234567", "85291234567"),
            ("+85291234567", "+85291234567"),
            ("0085291234567", "0085291234567"),
            ("+14155550100", "+14155550100"),
            ("0014155550100", "0014155550100"),
            ("138 0013 8000", "13800138000"),
            ("138-0013-8000", "13800138000"),
            ("+86 (138) 0013 8000", "+8613800138000"),
        ] {
            assert_eq!(for_channel(ChannelKind::AliyunSms, given), Ok(sent.into()));
        }
        for bad in [
            "1380013800",
            "138001380001",
            "+861380013800",
            "86138001380",
            "0138001380",
            "+0086 13800138000",
            "13800138000,13900139000",
            "abc",
            "+",
        ] {
            let why = refusal(ChannelKind::AliyunSms, bad).expect(bad);
            assert!(why.to_string().contains("Aliyun"), "{why}");
        }
    }

    #[test]
    fn smtp_takes_what_it_can_address() {
        for (given, sent) in [
            ("wang@example.com", "wang@example.com"),
            (" wang@example.com ", "wang@example.com"),
        ] {
            assert_eq!(for_channel(ChannelKind::Smtp, given), Ok(sent.into()));
        }
        for bad in ["wang", "wang@", "@example.com", "wang@@example.com"] {
            let why = refusal(ChannelKind::Smtp, bad).expect(bad);
            assert!(why.to_string().contains("is not an email address"), "{why}");
        }
    }

    #[test]
    fn an_address_in_form_is_kept_as_it_is() {
        let to = String::from("+8613800138000");
        let ptr = to.as_ptr();
        let kept = into_channel_form(ChannelKind::Twilio, to).unwrap();
        assert_eq!(kept.as_ptr(), ptr, "no copy");
        assert_eq!(
            into_channel_form(ChannelKind::Twilio, " +86 138 0013 8000".into()),
            Ok("+8613800138000".to_string())
        );
        assert_eq!(
            into_channel_form(ChannelKind::Log, " c1 ".into()),
            Ok("c1".to_string())
        );
        assert!(into_channel_form(ChannelKind::AliyunSms, "1380013800".into()).is_err());
    }

    #[test]
    fn ids_are_only_trimmed() {
        for kind in [ChannelKind::Wecom, ChannelKind::Webhook, ChannelKind::Log] {
            assert_eq!(
                for_channel(kind, " any thing "),
                Ok("any thing".to_string())
            );
        }
    }

    #[test]
    fn the_log_gets_no_address_and_a_long_one_is_cut() {
        let why = refusal(ChannelKind::Twilio, "13912345678").unwrap();
        assert_eq!(
            why.to_string(),
            "phone \"13912345678\" is not in E.164 form, which Twilio needs: + then the \
             country code and number (+8613800138000)"
        );
        assert!(!why.without_address().contains("13912345678"));
        assert!(
            why.without_address()
                .starts_with("the phone is not in E.164 form")
        );
        let junk = "x".repeat(1_000_000);
        let why = refusal(ChannelKind::AliyunSms, &junk).unwrap();
        assert_eq!(why.address.chars().count(), SHOWN + 1);
        assert!(why.to_string().len() < 300);
    }
}
