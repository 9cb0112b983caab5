use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

#[test]
fn message_ids_are_stable_and_distinct() {
    let a = message_id("w:c1:1:0", "example.com");
    assert_eq!(a, message_id("w:c1:1:0", "example.com"));
    assert_ne!(a, message_id("w:c1:2:0", "example.com"));
    assert_eq!(a.len(), 1 + 32 + 1 + "example.com".len() + 1);
    // sha256("w:c1:1:0"), first 16 bytes, computed with python3 hashlib.
    assert_eq!(a, format!("<{}@example.com>", KNOWN_PREFIX));
}

const KNOWN_PREFIX: &str = "20d9135724573c6d8158d4ff04565406";

fn channel() -> SmtpChannel {
    channel_with(None)
}

fn channel_with(dkim: Option<DkimSettings>) -> SmtpChannel {
    SmtpChannel::new(SmtpConfig {
        dkim,
        relay_signs_list_unsubscribe: false,
        channel: "email".into(),
        host: "127.0.0.1".into(),
        port: 25,
        tls: TlsMode::None,
        credentials: None,
        from: "Nurture <news@example.com>".parse().unwrap(),
        unsubscribe_url: "https://mail.example.com".into(),
        unsubscribe_mailto: None,
        unsubscribe_key: UnsubscribeKey::new(b"0123456789abcdef").unwrap(),
        timeout: Duration::from_secs(1),
        extra_roots_pem: None,
    })
    .unwrap()
}

fn out(to: &str, subject: &str) -> OutMessage {
    OutMessage {
        id: "w:c1:1:0".into(),
        workflow: "w".into(),
        contact_id: "c1".into(),
        step_id: "0".into(),
        channel: "email".into(),
        to: to.into(),
        subject: Some(subject.into()),
        body: "hi".into(),
        contact: serde_json::Value::Null,
        attempt: 1,
        payload: serde_json::json!({}),
        in_doubt: false,
    }
}

/// The seed of a throwaway Ed25519 key (RFC 8032 test vector 1).
const ED25519_SEED: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x7b, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

/// RFC 6376 §3.4.2 relaxed header canonicalization of one header.
fn relaxed_header(name: &str, value: &str) -> String {
    let unfolded = value.replace("\r\n", "");
    let collapsed = unfolded
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    format!("{}:{}", name.to_ascii_lowercase(), collapsed.trim())
}

/// RFC 6376 §3.4.4 relaxed body canonicalization.
fn relaxed_body(body: &str) -> String {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|l| {
            l.split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return String::new();
    }
    lines.join("\r\n") + "\r\n"
}

/// Verifies the email's DKIM-Signature (ed25519-sha256, relaxed/relaxed)
/// independently of lettre's signer; returns its `h=` list.
fn verify_dkim(raw: &str, public: &ed25519_dalek::VerifyingKey) -> Vec<String> {
    use sha2::Digest;
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers and body");
    // Unfold into (name, raw value) in order.
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().unwrap();
            last.1.push_str("\r\n");
            last.1.push_str(line);
        } else {
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.to_string(), v.to_string()));
        }
    }
    let sig = &headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .expect("a DKIM-Signature")
        .1;
    let tags: std::collections::HashMap<String, String> = sig
        .replace("\r\n", "")
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect();
    assert_eq!(tags["a"], "ed25519-sha256");
    assert_eq!(tags["c"], "relaxed/relaxed");
    assert_eq!(
        (tags["d"].as_str(), tags["s"].as_str()),
        ("example.com", "nurture1")
    );
    let bh = BASE64.encode(sha2::Sha256::digest(relaxed_body(body).as_bytes()));
    assert_eq!(tags["bh"], bh, "body hash");
    let h: Vec<String> = tags["h"].split(':').map(str::to_string).collect();
    let mut data = String::new();
    for name in &h {
        if let Some((n, v)) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            data.push_str(&relaxed_header(n, v));
            data.push_str("\r\n");
        }
    }
    // The signature header itself, with b= empty, without CRLF: cut
    // after the `b=` of the tag whose name is `b` (not `bh`).
    let mut b_at = None;
    let mut offset = 0;
    for seg in sig.split(';') {
        let lead = seg.len() - seg.trim_start().len();
        if seg.trim_start().starts_with("b=") {
            b_at = Some(offset + lead);
        }
        offset += seg.len() + 1;
    }
    let b_at = b_at.expect("a b= tag");
    let unsigned = format!("{}b=", &sig[..b_at]);
    data.push_str(&relaxed_header("DKIM-Signature", &unsigned));
    let digest = sha2::Sha256::digest(data.as_bytes());
    let signature = BASE64.decode(tags["b"].as_bytes()).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    public
        .verify_strict(&digest, &signature)
        .expect("the DKIM signature verifies");
    h
}

#[test]
fn dkim_signs_over_both_list_unsubscribe_headers() {
    let seed = BASE64.encode(ED25519_SEED);
    let ch = channel_with(Some(DkimSettings {
        domain: "example.com".into(),
        selector: "nurture1".into(),
        private_key: seed,
        algorithm: DkimAlgorithm::Ed25519,
    }));
    let m = ch
        .build_message(&out("ann@example.org", "Hello  there"), SystemTime::now())
        .unwrap();
    let raw = String::from_utf8(m.formatted()).unwrap();
    assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    let public = ed25519_dalek::SigningKey::from_bytes(&ED25519_SEED).verifying_key();
    let h = verify_dkim(&raw, &public);
    for needed in [
        "from",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "subject",
        "date",
    ] {
        assert!(h.iter().any(|x| x == needed), "h= lacks {needed}: {h:?}");
    }
    // A changed List-Unsubscribe-Post breaks it.
    let tampered = raw.replace(
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "List-Unsubscribe-Post: List-Unsubscribe=Other",
    );
    let r = std::panic::catch_unwind(|| verify_dkim(&tampered, &public));
    assert!(r.is_err(), "the signature covers List-Unsubscribe-Post");
    // Without dkim: no signature (the relay's job).
    let plain = channel()
        .build_message(&out("ann@example.org", "x"), SystemTime::now())
        .unwrap();
    assert!(
        !String::from_utf8(plain.formatted())
            .unwrap()
            .contains("DKIM-Signature")
    );
}

#[test]
fn no_header_injection() {
    // A subject rendered from contact data must not add headers.
    let m = channel()
        .build_message(
            &out("ann@example.com", "Hi\r\nBcc: evil@example.com"),
            SystemTime::now(),
        )
        .unwrap();
    let text = String::from_utf8(m.formatted()).unwrap();
    assert!(!text.lines().any(|l| l.starts_with("Bcc:")), "{text}");
    assert_eq!(m.envelope().to().len(), 1);
    // Nor an address.
    for to in [
        "ann@example.com\r\nBcc: evil@example.com",
        "ann@example.com, evil@example.com",
    ] {
        assert!(
            channel()
                .build_message(&out(to, "x"), SystemTime::now())
                .is_err(),
            "{to}"
        );
    }
}

#[test]
fn tls_none_is_loopback_only_and_never_with_credentials() {
    let mut c = channel().config.clone();
    c.host = "smtp.example.com".into();
    assert!(SmtpChannel::new(c.clone()).is_err());
    c.host = "localhost".into();
    c.credentials = Some(("u".into(), "p".into()));
    let e = SmtpChannel::new(c).err().unwrap();
    assert!(e.contains("in the clear"), "{e}");
}

#[test]
fn loopback_hosts() {
    for h in [
        "localhost",
        "127.0.0.1",
        "::1",
        "[::1]",
        "LOCALHOST",
        "127.0.0.2",
    ] {
        assert!(is_loopback(h), "{h}");
    }
    for h in ["example.com", "10.0.0.1", "localhost.example.com", ""] {
        assert!(!is_loopback(h), "{h}");
    }
}
