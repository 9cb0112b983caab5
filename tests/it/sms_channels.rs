//! The SMS adapters (`twilio`, `aliyun_sms`) against loopback fakes: channels
//! built from real settings text, each fake checking what a provider checks
//! (path, auth, form fields, signature) and answering each class of result.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nurture::channels::build::build_registry_with_env;
use nurture::channels::{Channel, Delivery, OutMessage, aliyun_sms};
use nurture::settings::Settings;
use support::receiver::{Receiver, Reply, Request, Script};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "tw-token-secret";
const AK_ID: &str = "LTAI-test-id";
const AK_SECRET: &str = "ak-secret-value";

fn env(name: &str) -> Option<String> {
    match name {
        "TW_SID" => Some(SID.into()),
        "TW_TOKEN" => Some(TOKEN.into()),
        "ALI_ID" => Some(AK_ID.into()),
        "ALI_SECRET" => Some(AK_SECRET.into()),
        _ => None,
    }
}

fn channel(yaml: &str, name: &str) -> Arc<dyn Channel> {
    let text = format!("channels:\n{yaml}");
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text)
        .unwrap_or_else(|d| panic!("settings: {d:?}"));
    let reg = build_registry_with_env(&settings, &env).unwrap_or_else(|e| panic!("{e:?}"));
    reg.get(name).expect("the channel").1.clone()
}

fn build_errors(yaml: &str) -> Vec<String> {
    let text = format!("channels:\n{yaml}");
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text)
        .unwrap_or_else(|d| panic!("settings: {d:?}"));
    match build_registry_with_env(&settings, &env) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

fn msg(to: &str, body: &str) -> OutMessage {
    OutMessage {
        id: "winback:c1:1:2".into(),
        workflow: "winback".into(),
        contact_id: "c1".into(),
        step_id: "2".into(),
        channel: "sms".into(),
        to: to.into(),
        subject: None,
        body: body.into(),
        contact: serde_json::Value::Null,
        attempt: 1,
        payload: serde_json::json!({}),
        in_doubt: false,
    }
}

/// Decodes an `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex"));
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).expect("utf-8")
    }
    std::str::from_utf8(body)
        .expect("utf-8 body")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

// ---------------------------------------------------------------- Twilio

/// A Twilio fake: 401 unless the path, basic auth and form are right; then
/// the answer is chosen by the `To` number.
fn twilio_fake() -> Script {
    Arc::new(|r: &Request| {
        let expected_auth = format!("Basic {}", BASE64.encode(format!("{SID}:{TOKEN}")));
        if r.method != "POST"
            || r.path != format!("/2010-04-01/Accounts/{SID}/Messages.json")
            || r.header("authorization") != Some(expected_auth.as_str())
            || r.header("content-type") != Some("application/x-www-form-urlencoded")
        {
            return Reply::status(401)
                .body(r#"{"code":20003,"message":"Authenticate","status":401}"#);
        }
        let f = form(&r.body);
        if f.get("From").map(String::as_str) != Some("+15005550006") || !f.contains_key("Body") {
            return Reply::status(400).body(r#"{"code":21602,"message":"missing","status":400}"#);
        }
        let err = |http: u16, code: u32| {
            Reply::status(http).body(&format!(
                r#"{{"code":{code},"message":"error {code}","more_info":"https://www.twilio.com/docs/errors/{code}","status":{http}}}"#
            ))
        };
        // Twilio takes `To` in E.164 only: 21211, "Invalid 'To' Phone Number".
        let to = f.get("To").map(String::as_str).unwrap_or_default();
        let national = to.strip_prefix('+').unwrap_or("-");
        if !(7..=15).contains(&national.len())
            || national.starts_with('0')
            || !national.chars().all(|c| c.is_ascii_digit())
        {
            return err(400, 21211);
        }
        match to {
            "+15005550429" => err(429, 20429).header("Retry-After", "3"),
            "+15005550500" => Reply::status(500).body("oops"),
            "+15005550610" => err(400, 21610),
            "+15005550211" => err(400, 21211),
            "+15005550614" => err(400, 21614),
            to => Reply::status(201).body(&format!(
                r#"{{"sid":"SM{}","status":"queued","to":"{to}","body":{}}}"#,
                r.index,
                serde_json::Value::String(f["Body"].clone())
            )),
        }
    })
}

fn twilio_yaml(base: &str, extra: &str) -> String {
    format!(
        "  sms:\n    kind: twilio\n    base_url: {base}\n    account_sid_env: TW_SID\n    auth_token_env: TW_TOKEN\n{extra}"
    )
}

#[tokio::test]
async fn twilio_sends_and_classifies() {
    let rx = Receiver::start(twilio_fake()).await;
    let ch = channel(
        &twilio_yaml(&rx.url(""), "    from: \"+15005550006\"\n"),
        "sms",
    );

    let body = "Hi Ann & co: 50% off ✨ +more";
    assert_eq!(
        ch.send(&msg("+8613800000000", body)).await,
        Delivery::Delivered {
            provider_id: Some("SM0".into())
        }
    );
    let f = form(&rx.requests()[0].body);
    assert_eq!(f["To"], "+8613800000000");
    assert_eq!(f["Body"], body);
    assert_eq!(f.len(), 3, "{f:?}");

    match ch.send(&msg("+15005550429", "x")).await {
        Delivery::Retry { after, reason } => {
            assert_eq!(after, Some(Duration::from_secs(3)));
            assert!(reason.starts_with("twilio 20429"), "{reason}");
        }
        d => panic!("{d:?}"),
    }
    assert!(matches!(
        ch.send(&msg("+15005550500", "x")).await,
        Delivery::Retry { reason, .. } if reason == "HTTP 500: oops"
    ));
    assert!(matches!(
        ch.send(&msg("+15005550610", "x")).await,
        Delivery::Permanent { reason } if reason.starts_with("opted_out: twilio 21610")
    ));
    for (to, code) in [("+15005550211", "21211"), ("+15005550614", "21614")] {
        assert!(matches!(
            ch.send(&msg(to, "x")).await,
            Delivery::Permanent { reason } if reason.starts_with(&format!("twilio {code}: error {code}"))
        ));
    }
}

#[tokio::test]
async fn twilio_messaging_service_and_bad_auth() {
    let rx = Receiver::start(twilio_fake()).await;
    // A messaging service instead of From: the fake wants From, so 400 21602.
    let ch = channel(
        &twilio_yaml(&rx.url("/"), "    messaging_service_sid: MG123\n"),
        "sms",
    );
    assert!(matches!(
        ch.send(&msg("+8613800000000", "x")).await,
        Delivery::Permanent { reason } if reason.starts_with("twilio 21602")
    ));
    let f = form(&rx.requests()[0].body);
    assert_eq!(
        f.get("MessagingServiceSid").map(String::as_str),
        Some("MG123")
    );
    assert!(!f.contains_key("From"));

    // A wrong token: 20003 is permanent.
    let text = format!(
        "channels:\n{}",
        twilio_yaml(&rx.url(""), "    from: \"+15005550006\"\n")
    );
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text).unwrap();
    let reg = build_registry_with_env(&settings, &|n| {
        if n == "TW_TOKEN" {
            Some("wrong".into())
        } else {
            env(n)
        }
    })
    .unwrap();
    assert!(matches!(
        reg.get("sms").unwrap().1.send(&msg("+8613800000000", "x")).await,
        Delivery::Permanent { reason } if reason.starts_with("twilio 20003")
    ));
}

#[tokio::test]
async fn twilio_timeouts_retry() {
    let rx = Receiver::start(Arc::new(|_: &Request| {
        Reply::status(201)
            .body(r#"{"sid":"SMlate"}"#)
            .delay(Duration::from_secs(2))
    }))
    .await;
    let ch = channel(
        &twilio_yaml(
            &rx.url(""),
            "    from: \"+15005550006\"\n    timeout: 200ms\n",
        ),
        "sms",
    );
    assert!(matches!(
        ch.send(&msg("+8613800000000", "x")).await,
        Delivery::Retry { after: None, reason } if reason.starts_with("timed out")
    ));
}

#[test]
fn twilio_settings_errors_are_clear() {
    let errs = build_errors(
        "  a:\n    kind: twilio\n    account_sid_env: TW_SID\n    auth_token_env: TW_TOKEN\n  b:\n    kind: twilio\n    from: \"+1\"\n    auth_token_env: TW_TOKEN\n  c:\n    kind: twilio\n    from: \"+1\"\n    account_sid_env: TW_SID\n    auth_token_env: NOPE_TOKEN\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("\"a\"") && e.contains("needs \"from\""))
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("\"b\"") && e.contains("needs \"account_sid_env\""))
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("\"c\"") && e.contains("NOPE_TOKEN") && e.contains("not set"))
    );
    assert!(errs.iter().all(|e| !e.contains(TOKEN)));
}

// ---------------------------------------------------------------- Aliyun

/// An Aliyun fake: checks the signature over the received parameters and the
/// fixed parameters, then answers by phone number.
fn aliyun_fake() -> Script {
    Arc::new(|r: &Request| {
        let f = form(&r.body);
        let params: Vec<(String, String)> = f.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let expected = aliyun_sms::signature("POST", &params, AK_SECRET);
        if r.method != "POST"
            || f.get("Signature") != Some(&expected)
            || f.get("AccessKeyId").map(String::as_str) != Some(AK_ID)
        {
            return Reply::status(400).body(
                r#"{"Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched","RequestId":"r"}"#,
            );
        }
        let fixed = [
            ("Action", "SendSms"),
            ("Version", "2017-05-25"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignName", "阿里云短信测试"),
            ("TemplateCode", "SMS_15305000"),
            ("RegionId", "cn-hangzhou"),
        ];
        for (k, v) in fixed {
            if f.get(k).map(String::as_str) != Some(v) {
                return Reply::status(400).body(&format!(
                    r#"{{"Code":"isv.INVALID_PARAMETERS","Message":"{k}"}}"#
                ));
            }
        }
        let ts_ok = f.get("Timestamp").is_some_and(|t| {
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%SZ").is_ok()
        });
        let tp: Option<serde_json::Map<String, serde_json::Value>> = f
            .get("TemplateParam")
            .and_then(|t| serde_json::from_str(t).ok());
        if !ts_ok || f.get("SignatureNonce").is_none_or(|n| n.len() < 16) {
            return Reply::status(400).body(r#"{"Code":"isv.INVALID_PARAMETERS","Message":"bad"}"#);
        }
        let Some(tp) = tp else {
            return Reply::ok()
                .body(r#"{"Code":"isv.INVALID_JSON_PARAM","Message":"JSON参数不合法"}"#);
        };
        // The approved template SMS_15305000 is fixed text with two short
        // variables: 【阿里云短信测试】${name}您好，您的${item}已发货。
        if APPROVED_VARS.iter().any(|v| !tp.contains_key(*v)) {
            return Reply::ok()
                .body(r#"{"Code":"isv.TEMPLATE_MISSING_PARAMETERS","Message":"模板缺少变量"}"#);
        }
        for v in tp.values() {
            let v = v.as_str().unwrap_or_default();
            if v.chars().count() > 35 {
                return Reply::ok()
                    .body(r#"{"Code":"isv.PARAM_LENGTH_LIMIT","Message":"参数超出长度限制"}"#);
            }
            if v.contains("://") || v.contains("www.") {
                return Reply::ok()
                    .body(r#"{"Code":"isv.PARAM_NOT_SUPPORT_URL","Message":"不支持url为变量"}"#);
            }
        }
        let code = |c: &str| {
            Reply::ok().body(&format!(
                r#"{{"Code":"{c}","Message":"m {c}","RequestId":"r"}}"#
            ))
        };
        // Each of the comma-separated numbers: a mainland one (11 digits
        // from 1, with +86, 86 or 0086 in front or not) or a country code
        // and number; digits only.
        let phones = f
            .get("PhoneNumbers")
            .map(String::as_str)
            .unwrap_or_default();
        if !phones.split(',').all(aliyun_takes) {
            return code("isv.MOBILE_NUMBER_ILLEGAL");
        }
        match phones {
            "13800000001" => Reply::ok().body(
                r#"{"Code":"isv.BUSINESS_LIMIT_CONTROL","Message":"触发小时级流控Permits:5","RequestId":"r"}"#,
            ),
            "13800000002" => {
                Reply::status(400).body(r#"{"Code":"Throttling.User","Message":"slow down"}"#)
            }
            "13800000003" => code("isv.MOBILE_NUMBER_ILLEGAL"),
            "13800000004" => code("isv.SMS_TEMPLATE_ILLEGAL"),
            "13800000005" => Reply::status(503)
                .body("unavailable")
                .header("Retry-After", "4"),
            "13800000006" => {
                Reply::status(500).body(r#"{"Code":"isp.SYSTEM_ERROR","Message":"x"}"#)
            }
            _ => Reply::ok().body(&format!(
                r#"{{"Code":"OK","Message":"OK","BizId":"900619746936498440^{}","RequestId":"r"}}"#,
                r.index
            )),
        }
    })
}

/// Whether the Aliyun fake takes `phone` (see `aliyun_fake`).
fn aliyun_takes(phone: &str) -> bool {
    let explicit = phone.starts_with('+') || phone.starts_with("00");
    let n = phone
        .strip_prefix('+')
        .or_else(|| phone.strip_prefix("00"))
        .unwrap_or(phone);
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let is_mainland = |m: &str| m.len() == 11 && m.starts_with('1');
    match n.strip_prefix("86") {
        Some(m) => is_mainland(m),
        None if !explicit && n.starts_with('1') => is_mainland(n),
        None => !n.starts_with('0') && (7..=15).contains(&n.len()),
    }
}

/// The variables of the fake's approved template SMS_15305000.
const APPROVED_VARS: &[&str] = &["name", "item"];
/// A rendered body for it (what a template with `params:` renders to).
const PARAMS: &str = r#"{"item":"x","name":"Ann"}"#;

fn aliyun_yaml(base: &str, extra: &str) -> String {
    format!(
        "  ali:\n    kind: aliyun_sms\n    base_url: {base}\n    access_key_id_env: ALI_ID\n    access_key_secret_env: ALI_SECRET\n    sign_name: 阿里云短信测试\n    template_code: SMS_15305000\n{extra}"
    )
}

#[tokio::test]
async fn aliyun_signs_sends_and_classifies() {
    let rx = Receiver::start(aliyun_fake()).await;
    let ch = channel(&aliyun_yaml(&rx.url("/"), ""), "ali");

    let body = r#"{"item":"50% off *today* ~ {\"x\"} +more","name":"您好 Ann"}"#;
    assert_eq!(
        ch.send(&msg("13800000000", body)).await,
        Delivery::Delivered {
            provider_id: Some("900619746936498440^0".into())
        }
    );
    let first = &rx.requests()[0];
    let f = form(&first.body);
    assert_eq!(first.path, "/");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&f["TemplateParam"]).unwrap(),
        serde_json::json!({ "name": "您好 Ann", "item": "50% off *today* ~ {\"x\"} +more" })
    );
    assert_eq!(f["OutId"], "winback:c1:1:2");

    // A second send of the same message gets a fresh nonce.
    ch.send(&msg("13800000000", body)).await;
    let second = form(&rx.requests()[1].body);
    assert_ne!(f["SignatureNonce"], second["SignatureNonce"]);

    // Flow control waits (not an attempt) for the window Aliyun names.
    assert!(matches!(
        ch.send(&msg("13800000001", PARAMS)).await,
        Delivery::Wait { after, reason }
            if after == Duration::from_secs(3_600) && reason.starts_with("aliyun isv.BUSINESS_LIMIT_CONTROL")
    ));
    assert!(matches!(
        ch.send(&msg("13800000002", PARAMS)).await,
        Delivery::Wait { reason, .. } if reason.starts_with("aliyun Throttling.User: slow down")
    ));
    for (to, code) in [
        ("13800000003", "isv.MOBILE_NUMBER_ILLEGAL"),
        ("13800000004", "isv.SMS_TEMPLATE_ILLEGAL"),
    ] {
        assert!(matches!(
            ch.send(&msg(to, PARAMS)).await,
            Delivery::Permanent { reason } if reason.starts_with(&format!("aliyun {code}"))
        ));
    }
    assert!(matches!(
        ch.send(&msg("13800000005", PARAMS)).await,
        Delivery::Retry { after: Some(a), reason } if a == Duration::from_secs(4) && reason == "HTTP 503: unavailable"
    ));
    assert!(matches!(
        ch.send(&msg("13800000006", PARAMS)).await,
        Delivery::Retry { reason, .. } if reason.starts_with("aliyun isp.SYSTEM_ERROR")
    ));
}

#[tokio::test]
async fn aliyun_wrong_secret_is_refused_by_the_fake() {
    let rx = Receiver::start(aliyun_fake()).await;
    let text = format!("channels:\n{}", aliyun_yaml(&rx.url("/"), ""));
    let settings = Settings::parse_str(Path::new("nurture.yaml"), &text).unwrap();
    let reg = build_registry_with_env(&settings, &|n| {
        if n == "ALI_SECRET" {
            Some("not-the-secret".into())
        } else {
            env(n)
        }
    })
    .unwrap();
    assert!(matches!(
        reg.get("ali").unwrap().1.send(&msg("13800000000", "x")).await,
        Delivery::Permanent { reason } if reason.starts_with("aliyun SignatureDoesNotMatch")
    ));
}

#[tokio::test]
async fn aliyun_timeouts_retry() {
    let rx = Receiver::start(Arc::new(|_: &Request| {
        Reply::ok()
            .body(r#"{"Code":"OK","BizId":"late"}"#)
            .delay(Duration::from_secs(2))
    }))
    .await;
    let ch = channel(&aliyun_yaml(&rx.url("/"), "    timeout: 200ms\n"), "ali");
    assert!(matches!(
        ch.send(&msg("13800000000", "x")).await,
        Delivery::Retry { after: None, reason } if reason.starts_with("timed out")
    ));
}

#[test]
fn aliyun_settings_errors_are_clear() {
    let errs = build_errors(
        "  a:\n    kind: aliyun_sms\n    access_key_id_env: ALI_ID\n    access_key_secret_env: ALI_SECRET\n    template_code: SMS_1\n  b:\n    kind: aliyun_sms\n    access_key_id_env: ALI_ID\n    access_key_secret_env: NOPE_SECRET\n    sign_name: S\n    template_code: SMS_1\n",
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("\"a\"") && e.contains("needs \"sign_name\""))
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("\"b\"") && e.contains("NOPE_SECRET") && e.contains("not set"))
    );
}

/// A stateful Aliyun fake for uncertain sends: `SendSms` records the `OutId`
/// (as Aliyun would) and may answer too late; `QuerySendDetails` lists what
/// was recorded for the phone number. Both check the signature.
fn aliyun_recording_fake(
    sent: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    late_first_send: bool,
    query_fails: bool,
) -> Script {
    Arc::new(move |r: &Request| {
        let f = form(&r.body);
        let params: Vec<(String, String)> = f.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if f.get("Signature") != Some(&aliyun_sms::signature("POST", &params, AK_SECRET)) {
            return Reply::status(400).body(r#"{"Code":"SignatureDoesNotMatch"}"#);
        }
        match f.get("Action").map(String::as_str) {
            Some("SendSms") => {
                let mut sent = sent.lock().unwrap();
                // SendSms takes +86/86/0086 in front of a mainland number;
                // Aliyun records the number itself.
                let to = f["PhoneNumbers"].trim_start_matches('+');
                let to = to.strip_prefix("00").unwrap_or(to);
                let to = match to.strip_prefix("86") {
                    Some(rest) if rest.len() == 11 && rest.starts_with('1') => rest,
                    _ => to,
                };
                sent.push((to.to_string(), f["OutId"].clone()));
                let reply = Reply::ok().body(r#"{"Code":"OK","Message":"OK","BizId":"b1"}"#);
                if late_first_send && sent.len() == 1 {
                    reply.delay(Duration::from_secs(2))
                } else {
                    reply
                }
            }
            Some("QuerySendDetails") => {
                let date_ok = f
                    .get("SendDate")
                    .is_some_and(|d| chrono::NaiveDate::parse_from_str(d, "%Y%m%d").is_ok());
                if !date_ok
                    || f.get("PageSize").map(String::as_str) != Some("50")
                    || !f.contains_key("CurrentPage")
                {
                    return Reply::status(400).body(r#"{"Code":"isv.INVALID_PARAMETERS"}"#);
                }
                // PhoneNumber: 11 digits for a mainland number (no +86, no
                // 86), country code and number without + otherwise.
                let phone = f.get("PhoneNumber").map(String::as_str).unwrap_or("");
                let digits = !phone.is_empty() && phone.bytes().all(|b| b.is_ascii_digit());
                let mainland_with_code = phone.len() == 13 && phone.starts_with("861");
                if !digits || mainland_with_code || phone.starts_with("00") {
                    return Reply::ok().body(
                        r#"{"Code":"isv.MOBILE_NUMBER_ILLEGAL","Message":"非法手机号","RequestId":"r"}"#,
                    );
                }
                if query_fails {
                    return Reply::status(500).body(r#"{"Code":"isp.SYSTEM_ERROR"}"#);
                }
                let records: Vec<serde_json::Value> = sent
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(phone, _)| Some(phone) == f.get("PhoneNumber"))
                    .map(|(phone, out_id)| {
                        serde_json::json!({"PhoneNum": phone, "SendStatus": 1, "ErrCode": "", "OutId": out_id})
                    })
                    .collect();
                Reply::ok().body(
                    &serde_json::json!({
                        "Code": "OK", "Message": "OK", "TotalCount": records.len(),
                        "SmsSendDetailDTOs": {"SmsSendDetailDTO": records}
                    })
                    .to_string(),
                )
            }
            _ => Reply::status(400).body(r#"{"Code":"InvalidAction"}"#),
        }
    })
}

fn attempt(mut m: OutMessage, n: u32) -> OutMessage {
    m.attempt = n;
    m
}

/// A send that timed out after reaching Aliyun is not sent again: the retry
/// finds its `OutId` with `QuerySendDetails`.
#[tokio::test]
async fn aliyun_timeout_is_resolved_before_a_retry() {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rx = Receiver::start(aliyun_recording_fake(sent.clone(), true, false)).await;
    let ch = channel(&aliyun_yaml(&rx.url("/"), "    timeout: 300ms\n"), "ali");
    let m = msg("13800000000", "hello");
    match ch.send(&attempt(m.clone(), 1)).await {
        Delivery::Retry { reason, .. } => assert!(reason.contains("uncertain"), "{reason}"),
        d => panic!("first attempt: {d:?}"),
    }
    assert_eq!(
        ch.send(&attempt(m.clone(), 2)).await,
        Delivery::Delivered { provider_id: None }
    );
    assert_eq!(sent.lock().unwrap().len(), 1, "the SMS went out once");
    // Another message to the same number is not confused with it.
    let other = OutMessage {
        id: "winback:c1:1:3".into(),
        ..m
    };
    assert!(matches!(
        ch.send(&attempt(other, 2)).await,
        Delivery::Delivered {
            provider_id: Some(_)
        }
    ));
    assert_eq!(sent.lock().unwrap().len(), 2);
}

/// A template's `params:` become the approved template's variables; the
/// whole message in one `${content}` (today's mapping without params) is
/// refused by the strict fake as Aliyun refuses it, and so are a long value
/// and a link.
#[tokio::test]
async fn aliyun_template_params_map_named_values_into_the_approved_template() {
    use nurture::template::Templates;
    let rx = Receiver::start(aliyun_fake()).await;
    let ch = channel(&aliyun_yaml(&rx.url("/"), ""), "ali");
    let mut t = Templates::empty();
    let problems = t.add(
        "shipped",
        "---\nparams: { name: \"{{contact.name}}\", item: '{{default contact.item \"您的订单\"}}' }\n---\n【阿里云短信测试】${name}您好，您的${item}已发货。\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let r = t
        .render("shipped", &serde_json::json!({"contact": {"name": "王芳"}}))
        .unwrap();
    assert_eq!(r.params.get("name").map(String::as_str), Some("王芳"));
    let d = ch.send(&msg("13800000000", &r.body)).await;
    assert!(matches!(d, Delivery::Delivered { .. }), "{d:?}");
    let f = form(&rx.requests()[0].body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&f["TemplateParam"]).unwrap(),
        serde_json::json!({"name": "王芳", "item": "您的订单"})
    );
    // The whole text in ${content}: refused.
    let d = ch
        .send(&msg("13800000000", "王芳您好，您的订单已发货。"))
        .await;
    assert!(
        matches!(&d, Delivery::Permanent { reason } if reason.contains("TEMPLATE_MISSING_PARAMETERS")),
        "{d:?}"
    );
    for (item, code) in [
        ("一".repeat(36), "PARAM_LENGTH_LIMIT"),
        ("https://t.cn/x".to_string(), "PARAM_NOT_SUPPORT_URL"),
    ] {
        let body = serde_json::json!({"name": "Ann", "item": item}).to_string();
        let d = ch.send(&msg("13800000000", &body)).await;
        assert!(
            matches!(&d, Delivery::Permanent { reason } if reason.contains(code)),
            "{d:?}"
        );
    }
}

/// Contacts keep E.164 numbers (`+8613800000000`); QuerySendDetails wants
/// the 11 digits of a mainland number (the fake refuses `+86…` and `86…`
/// as Aliyun does) and the country code without `+` otherwise: the
/// uncertain send is still found, not sent twice.
#[tokio::test]
async fn aliyun_query_send_details_takes_the_phone_number_in_aliyun_format() {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rx = Receiver::start(aliyun_recording_fake(sent.clone(), true, false)).await;
    let ch = channel(&aliyun_yaml(&rx.url("/"), "    timeout: 300ms\n"), "ali");
    for (i, to) in ["+8613800000000", "+85291234567"].iter().enumerate() {
        let mut m = msg(to, "hello");
        m.id = format!("winback:c1:1:{i}");
        let first = ch.send(&attempt(m.clone(), 1)).await;
        if i == 0 {
            assert!(matches!(first, Delivery::Retry { .. }), "{first:?}");
        }
        assert_eq!(
            ch.send(&attempt(m.clone(), 2)).await,
            Delivery::Delivered { provider_id: None },
            "{to}"
        );
    }
    let asked: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| form(&r.body))
        .filter(|f| f.get("Action").map(String::as_str) == Some("QuerySendDetails"))
        .map(|f| f["PhoneNumber"].clone())
        .collect();
    assert!(asked.contains(&"13800000000".to_string()), "{asked:?}");
    assert!(asked.contains(&"85291234567".to_string()), "{asked:?}");
    assert_eq!(sent.lock().unwrap().len(), 2, "each SMS went out once");
}

/// When the query fails, nothing is sent: the message waits for a later try.
#[tokio::test]
async fn aliyun_unresolved_uncertainty_does_not_resend() {
    let sent = Arc::new(std::sync::Mutex::new(vec![(
        "13800000000".to_string(),
        "winback:c1:1:2".to_string(),
    )]));
    let rx = Receiver::start(aliyun_recording_fake(sent.clone(), false, true)).await;
    let ch = channel(&aliyun_yaml(&rx.url("/"), ""), "ali");
    match ch.send(&attempt(msg("13800000000", "hello"), 3)).await {
        Delivery::Retry { reason, .. } => {
            assert!(reason.contains("QuerySendDetails"), "{reason}")
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(
        sent.lock().unwrap().len(),
        1,
        "nothing sent while uncertain"
    );
}

/// Issue 12 item 10: a first attempt reclaimed after its worker died
/// mid-call (`in_doubt`) asks `QuerySendDetails` before sending, like a
/// retry: found, it is not sent again; not found, it is sent.
#[tokio::test]
async fn aliyun_reclaimed_message_is_looked_up_before_it_is_sent_again() {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rx = Receiver::start(aliyun_recording_fake(sent.clone(), false, false)).await;
    let ch = channel(&aliyun_yaml(&rx.url("/"), ""), "ali");
    let m = msg("13800000000", "hello");
    assert!(matches!(ch.send(&m).await, Delivery::Delivered { .. }));
    let reclaimed = OutMessage {
        in_doubt: true,
        ..m.clone()
    };
    assert_eq!(reclaimed.attempt, 1);
    assert_eq!(
        ch.send(&reclaimed).await,
        Delivery::Delivered { provider_id: None },
        "found by its OutId"
    );
    assert_eq!(sent.lock().unwrap().len(), 1, "the SMS went out once");
    let never_sent = OutMessage {
        id: "winback:c9:1:0".into(),
        in_doubt: true,
        ..m
    };
    assert!(matches!(
        ch.send(&never_sent).await,
        Delivery::Delivered {
            provider_id: Some(_)
        }
    ));
    assert_eq!(sent.lock().unwrap().len(), 2);
    let actions: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| form(&r.body)["Action"].clone())
        .collect();
    // Found on today's page; not found after today's and yesterday's.
    assert_eq!(
        actions,
        [
            "SendSms",
            "QuerySendDetails",
            "QuerySendDetails",
            "QuerySendDetails",
            "SendSms"
        ]
    );
}

/// What the planner does with a number is what the provider makes of it:
/// the number it sends (trimmed, without the separators people write) is
/// one the provider's fake takes, and a number it skips as `bad_address` is
/// one the provider refuses, as the contact has it. Each adapter, against
/// its fake (each fake checks the provider's documented form on its own).
#[tokio::test]
async fn the_planners_bad_address_is_what_the_providers_refuse() {
    use nurture::channels::address::for_channel;
    use nurture::settings::ChannelKind;
    let numbers = [
        "+8613800138000",
        "13800138000",
        "8613800138000",
        "008613800138000",
        "+85291234567",
        "85291234567",
        "+14155550100",
        "1380013800",
        "+861380013800",
        "138 0013 8000",
        "138-0013-8000",
        "+1 415 555 0100",
        "+86 (138) 0013-8000",
        "+0086 13800138000",
        "++8613800138000",
        "+0123456789",
        "0138001380",
        "phone",
    ];
    let tw = Receiver::start(twilio_fake()).await;
    let twilio = channel(
        &twilio_yaml(&tw.url(""), "    from: \"+15005550006\"\n"),
        "sms",
    );
    let ali = Receiver::start(aliyun_fake()).await;
    let aliyun = channel(&aliyun_yaml(&ali.url("/"), ""), "ali");
    let mut sent = 0;
    for n in numbers {
        for (kind, ch, body) in [
            (ChannelKind::Twilio, &twilio, "hi"),
            (ChannelKind::AliyunSms, &aliyun, PARAMS),
        ] {
            let (to, planned) = match for_channel(kind, n) {
                Ok(to) => (to, true),
                Err(_) => (n.to_string(), false),
            };
            let accepted = match ch.send(&msg(&to, body)).await {
                Delivery::Delivered { .. } => true,
                Delivery::Permanent { reason } => {
                    assert!(
                        reason.contains("21211") || reason.contains("MOBILE_NUMBER_ILLEGAL"),
                        "{kind:?} {n}: {reason}"
                    );
                    false
                }
                d => panic!("{kind:?} {n}: {d:?}"),
            };
            assert_eq!(
                planned, accepted,
                "{kind:?} {n:?} (sent as {to:?}): planned {planned}, the provider accepted {accepted}"
            );
            sent += usize::from(planned);
        }
    }
    assert!(
        sent > 10 && sent < 2 * numbers.len(),
        "both kinds of case: {sent}"
    );
}
