use super::*;

fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

#[test]
fn hmac_sha1_vectors() {
    // RFC 2202 test cases 1, 2 and 6.
    assert_eq!(
        hex(&hmac_sha1(&[0x0b; 20], b"Hi There")),
        "b617318655057264e28bc0b6fb378c8ef146be00"
    );
    assert_eq!(
        hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        hex(&hmac_sha1(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
}

/// The parameters of Aliyun's documented `SendSms` signing walkthrough,
/// with the given AccessKeyId.
fn walkthrough(access_key_id: &str) -> Vec<(String, String)> {
    [
        ("AccessKeyId", access_key_id),
        ("Action", "SendSms"),
        ("Format", "XML"),
        ("OutId", "123"),
        ("PhoneNumbers", "15300000001"),
        ("RegionId", "cn-hangzhou"),
        ("SignName", "阿里云短信测试专用"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
        ("SignatureVersion", "1.0"),
        ("TemplateCode", "SMS_71390007"),
        ("TemplateParam", r#"{"customer":"test"}"#),
        ("Timestamp", "2017-07-12T02:42:19Z"),
        ("Version", "2017-05-25"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A worked example with the
/// parameters of Aliyun's documented `SendSms` signing walkthrough
/// (AccessKeyId `testid`, secret `testsecret`, GET); the expected
/// StringToSign and signature were computed by hand with Python's
/// `urllib.parse.quote(s, safe="-_.~")`, `hmac` and `hashlib.sha1` — an
/// implementation independent of this one.
#[test]
fn signature_known_answer() {
    let mut params = walkthrough("testid");
    params.reverse(); // order must not matter
    assert_eq!(
        string_to_sign("GET", &params),
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DSendSms%26Format%3DXML%26OutId%3D123%26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4%25BF%25A1%25E6%25B5%258B%25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0%26TemplateCode%3DSMS_71390007%26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D%26Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25"
    );
    assert_eq!(
        signature("GET", &params, "testsecret"),
        "LxugEBqtL8lacmz/6I2QOoMzw+Y="
    );
}

/// Aliyun's own published example (the SMS API's "HTTP protocol and
/// signature" page: AccessKeyId `testId`, secret `testSecret`, GET): its
/// documented signature is `zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D`.
#[test]
fn signature_matches_aliyuns_published_example() {
    let params = walkthrough("testId");
    let sig = signature("GET", &params, "testSecret");
    assert_eq!(sig, "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
    assert_eq!(percent_encode(&sig), "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D");
}

#[test]
fn query_send_details_lookup() {
    let page = |records: &str| {
        format!(
            r#"{{"Code":"OK","Message":"OK","TotalCount":1,"SmsSendDetailDTOs":{{"SmsSendDetailDTO":[{records}]}}}}"#
        )
    };
    let ok = StatusCode::OK;
    let found = page(r#"{"PhoneNum":"138","SendStatus":3,"ErrCode":"DELIVERED","OutId":"m1"}"#);
    assert_eq!(
        find_out_id(ok, found.as_bytes(), "m1"),
        Lookup::Found(Delivery::Delivered { provider_id: None })
    );
    assert_eq!(find_out_id(ok, found.as_bytes(), "m2"), Lookup::LastPage);
    let failed = page(r#"{"SendStatus":2,"ErrCode":"MOBILE_NOT_ON_SERVICE","OutId":"m1"}"#);
    assert!(matches!(
        find_out_id(ok, failed.as_bytes(), "m1"),
        Lookup::Found(Delivery::Permanent { reason }) if reason.contains("MOBILE_NOT_ON_SERVICE")
    ));
    let full = page(&vec![r#"{"SendStatus":3,"OutId":"other"}"#; 50].join(","));
    assert_eq!(find_out_id(ok, full.as_bytes(), "m1"), Lookup::MorePages);
    assert!(matches!(
        find_out_id(ok, br#"{"Code":"isv.INVALID_PARAMETERS"}"#, "m1"),
        Lookup::Error(r) if r.contains("isv.INVALID_PARAMETERS")
    ));
    assert!(matches!(
        find_out_id(StatusCode::BAD_GATEWAY, b"<html>", "m1"),
        Lookup::Error(_)
    ));
}

#[test]
fn pop_encoding() {
    assert_eq!(percent_encode("a b*c~d+e/"), "a%20b%2Ac~d%2Be%2F");
}

#[test]
fn query_phone_numbers_are_11_digits_for_the_mainland() {
    for (to, want) in [
        ("+8613800000000", "13800000000"),
        ("8613800000000", "13800000000"),
        ("008613800000000", "13800000000"),
        ("13800000000", "13800000000"),
        ("+86 138-0000-0000", "13800000000"),
        ("+85291234567", "85291234567"),
        ("+14155550100", "14155550100"),
        ("0085291234567", "85291234567"),
    ] {
        assert_eq!(query_phone_number(to), want, "{to}");
    }
}

#[test]
fn codes_map_to_deliveries() {
    let ok = |b: &str| classify(StatusCode::OK, None, b.as_bytes());
    assert_eq!(
        ok(r#"{"Code":"OK","Message":"OK","BizId":"900619746936498440^0","RequestId":"r"}"#),
        Delivery::Delivered {
            provider_id: Some("900619746936498440^0".into())
        }
    );
    assert!(matches!(
        ok(r#"{"Code":"isv.BUSINESS_LIMIT_CONTROL","Message":"limit"}"#),
        Delivery::Wait { after, reason } if after == FLOW_CONTROL_WAIT && reason.starts_with("aliyun isv.BUSINESS_LIMIT_CONTROL: limit")
    ));
    // The window the Message names (as Aliyun words it).
    for (m, secs) in [
        ("触发分钟级流控Permits:1", 60),
        ("触发小时级流控Permits:5", 3_600),
        ("触发天级流控Permits:10", 86_400),
    ] {
        let body = format!(r#"{{"Code":"isv.BUSINESS_LIMIT_CONTROL","Message":"{m}"}}"#);
        assert!(
            matches!(
                ok(&body),
                Delivery::Wait { after, .. } if after == Duration::from_secs(secs)
            ),
            "{m}"
        );
    }
    assert!(matches!(
        classify(StatusCode::BAD_REQUEST, Some(Duration::from_secs(2)), br#"{"Code":"Throttling.User"}"#),
        Delivery::Wait { after, .. } if after == Duration::from_secs(2)
    ));
    assert!(matches!(
        ok(r#"{"Code":"isv.DAY_LIMIT_CONTROL"}"#),
        Delivery::Wait { after, .. } if after == QUOTA_WAIT
    ));
    assert!(matches!(
        ok(r#"{"Code":"isp.SYSTEM_ERROR"}"#),
        Delivery::Retry { after: None, .. }
    ));
    for c in [
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.AMOUNT_NOT_ENOUGH",
        "isp.RAM_PERMISSION_DENY",
        "SignatureDoesNotMatch",
    ] {
        let body = format!(r#"{{"Code":"{c}","Message":"no"}}"#);
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, body.as_bytes()),
            Delivery::Permanent { reason } if reason.starts_with(&format!("aliyun {c}"))
        ));
    }
    assert!(matches!(
        classify(StatusCode::BAD_GATEWAY, None, b"<html>"),
        Delivery::Retry { .. }
    ));
    assert!(matches!(
        classify(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            br#"{"Code":"ServiceUnavailable"}"#
        ),
        Delivery::Retry { .. }
    ));
    assert!(matches!(
        ok("not json"),
        Delivery::Permanent { reason } if reason.contains("no Code")
    ));
}
