//! WeCom errcodes and what each means for a message (reference §1.8, with
//! the codes of §1.1–§1.5). WeCom answers API errors in an HTTP 200 with
//! `{"errcode": N, "errmsg": "..."}`: the adapter branches on `errcode` only.
//!
//! One table, [`CODES`], holds every code nurture knows; [`classify`] reads
//! it. A code not in the table is **permanent**, with the errcode and errmsg
//! in the reason: retrying an error nobody has classified risks spamming a
//! customer, while a dead-lettered message is visible in `nurture status` and
//! `history` and can be re-queued once the code is understood.

use std::time::Duration;

/// How long a 45009 (API frequency limit) waits when WeCom's answer does
/// not say which window was exceeded: a minute, the shortest (see
/// [`frequency_wait`]).
pub const FREQUENCY_WAIT: Duration = Duration::from_secs(60);

/// The wait of a 45009, from its `errmsg`: WeCom blocks the caller for the
/// window that was exceeded (per minute, per hour, per day: reference §1.8),
/// and says which in the message when it does ("…per hour…", "小时", "天").
/// Usually it does not (the errmsg is "api freq out of limit", as wechatpy's
/// and the SDKs' fixtures show): then the message waits a minute and, while
/// the block lasts, waits again. The delivery layer's wait does not use up
/// the message's attempts, so a day-long block costs a day, not the message.
pub fn frequency_wait(errmsg: &str) -> Duration {
    window_in(errmsg).unwrap_or(FREQUENCY_WAIT)
}

/// The quota window a provider's message names: minute, hour or day (in
/// English or Chinese: 分钟 / 小时 / 天, 日). `None` when it names none.
pub fn window_in(message: &str) -> Option<Duration> {
    let m = message.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["day", "daily", "天", "日"]) {
        Some(Duration::from_secs(86_400))
    } else if has(&["hour", "小时"]) {
        Some(Duration::from_secs(3_600))
    } else if has(&["minute", "分钟"]) {
        Some(Duration::from_secs(60))
    } else {
        None
    }
}

/// What an errcode means for the call that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `0`: done.
    Ok,
    /// Busy or overloaded: try again with backoff, at least `after` later.
    Retry { after: Option<Duration> },
    /// The access token is bad or expired: fetch a new one and retry once.
    RefreshToken,
    /// A quota window: try again after it.
    Wait(Duration),
    /// Do not try again.
    Permanent,
}

/// Every errcode nurture knows: (code, class, meaning).
pub const CODES: &[(i64, Class, &str)] = &[
    (0, Class::Ok, "ok"),
    (-1, Class::Retry { after: None }, "system busy"),
    (40014, Class::RefreshToken, "invalid access_token"),
    (42001, Class::RefreshToken, "access_token expired"),
    // From gettoken 40001 is a wrong secret (permanent, see `token`); from an
    // API call it is a token WeCom no longer accepts.
    (40001, Class::RefreshToken, "invalid credential"),
    (45009, Class::Wait(FREQUENCY_WAIT), "API frequency limit"),
    (
        45033,
        // The delivery layer's jittered backoff (1 s × 2^n) is the short wait.
        Class::Retry { after: None },
        "too many concurrent calls",
    ),
    (
        // From the result APIs: the task is still being dispatched; ask
        // again later. Never a final answer.
        41063,
        Class::Retry { after: None },
        "mass message still being dispatched",
    ),
    // Not the per-customer cap (that is result status 3): nobody in the task
    // can be sent to, usually because the sender is not their friend.
    (
        41048,
        Class::Permanent,
        "no sendable customer in the task (not a friend of the sender?)",
    ),
    (
        41050,
        Class::Permanent,
        "invalid, expired or used welcome code",
    ),
    (
        40128,
        Class::Permanent,
        "transfer: the customer was transferred too often (2 per 90 days)",
    ),
    (
        40129,
        Class::Permanent,
        "transfer: the customer is already being transferred",
    ),
    (
        40130,
        Class::Permanent,
        "transfer: handover and takeover are the same member",
    ),
    (
        40131,
        Class::Permanent,
        "transfer: the handover member is not a follow-user of the customer",
    ),
    (40013, Class::Permanent, "invalid corpid"),
    (41001, Class::Permanent, "access_token missing"),
    (60020, Class::Permanent, "caller IP not allow-listed"),
    (48002, Class::Permanent, "API not permitted"),
    (60011, Class::Permanent, "no privilege"),
    (40003, Class::Permanent, "invalid userid"),
    (40096, Class::Permanent, "invalid external userid"),
    (84061, Class::Permanent, "no external-contact relationship"),
    (40058, Class::Permanent, "bad parameter"),
    (40063, Class::Permanent, "empty or missing parameter"),
    (44004, Class::Permanent, "empty text"),
    (45002, Class::Permanent, "content too large"),
    (81013, Class::Permanent, "all recipients invalid"),
    // Corp tags and media (issue 9, points 8 and 11; WeCom's errcode list
    // as WxJava's WxCpErrorMsgEnum has it).
    (40068, Class::Permanent, "invalid tag id"),
    (40071, Class::Permanent, "tag name already exists"),
    (40072, Class::Permanent, "tag name empty or too long"),
    (40004, Class::Permanent, "invalid media file type"),
    (40005, Class::Permanent, "invalid media type parameter"),
    (40006, Class::Permanent, "invalid file size"),
    (40007, Class::Permanent, "invalid or expired media_id"),
    (40009, Class::Permanent, "invalid image size"),
    (44001, Class::Permanent, "empty media file"),
    (
        41051,
        Class::Permanent,
        "welcome code used or chat already started",
    ),
];

/// The class of `errcode`; unknown codes are [`Class::Permanent`].
pub fn classify(errcode: i64) -> Class {
    CODES
        .iter()
        .find(|(c, _, _)| *c == errcode)
        .map(|(_, class, _)| *class)
        .unwrap_or(Class::Permanent)
}

/// What nurture calls `errcode` in a reason, when it knows it.
pub fn meaning(errcode: i64) -> Option<&'static str> {
    CODES
        .iter()
        .find(|(c, _, _)| *c == errcode)
        .map(|(_, _, m)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every errcode the reference lists (§1.1–§1.5, §1.8), with its class.
    #[test]
    fn every_reference_code_lands_in_its_class() {
        let expected: &[(i64, Class)] = &[
            (0, Class::Ok),
            (-1, Class::Retry { after: None }),
            (40014, Class::RefreshToken),
            (42001, Class::RefreshToken),
            (40001, Class::RefreshToken),
            (45009, Class::Wait(Duration::from_secs(60))),
            (45033, Class::Retry { after: None }),
            (41063, Class::Retry { after: None }),
            (41048, Class::Permanent),
            (41050, Class::Permanent),
            (40128, Class::Permanent),
            (40129, Class::Permanent),
            (40130, Class::Permanent),
            (40131, Class::Permanent),
            (40013, Class::Permanent),
            (41001, Class::Permanent),
            (60020, Class::Permanent),
            (48002, Class::Permanent),
            (60011, Class::Permanent),
            (40003, Class::Permanent),
            (40096, Class::Permanent),
            (84061, Class::Permanent),
            (40058, Class::Permanent),
            (40063, Class::Permanent),
            (44004, Class::Permanent),
            (45002, Class::Permanent),
            (81013, Class::Permanent),
            (41051, Class::Permanent),
            (40068, Class::Permanent),
            (40071, Class::Permanent),
            (40072, Class::Permanent),
            (40004, Class::Permanent),
            (40005, Class::Permanent),
            (40006, Class::Permanent),
            (40007, Class::Permanent),
            (40009, Class::Permanent),
            (44001, Class::Permanent),
        ];
        for (code, class) in expected {
            assert_eq!(classify(*code), *class, "errcode {code}");
            assert!(meaning(*code).is_some(), "errcode {code} has a meaning");
        }
        // The table holds nothing the test does not check.
        assert_eq!(CODES.len(), expected.len());
    }

    #[test]
    fn a_frequency_limit_waits_at_least_a_minute() {
        match classify(45009) {
            Class::Wait(d) => assert!(d >= Duration::from_secs(60)),
            other => panic!("45009 is {other:?}"),
        }
    }

    #[test]
    fn a_frequency_limit_waits_for_the_window_named() {
        assert_eq!(
            frequency_wait("api freq out of limit"),
            Duration::from_secs(60)
        );
        assert_eq!(
            frequency_wait("api freq out of limit, per minute"),
            Duration::from_secs(60)
        );
        assert_eq!(
            frequency_wait("api freq out of limit: 150000 per hour"),
            Duration::from_secs(3_600)
        );
        assert_eq!(
            frequency_wait("接口调用超过天级限制"),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            window_in("触发小时级流控Permits:5"),
            Some(Duration::from_secs(3_600))
        );
        assert_eq!(
            window_in("触发分钟级流控Permits:1"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            window_in("触发天级流控Permits:10"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(window_in("参数异常"), None);
    }

    #[test]
    fn unknown_codes_are_permanent() {
        for code in [1, 40002, 60112, 90000, i64::MAX, i64::MIN] {
            assert_eq!(classify(code), Class::Permanent, "errcode {code}");
            assert_eq!(meaning(code), None);
        }
    }
}
