//! WeCom callback crypto (`src/api/wecom_crypto.rs`).
//!
//! Known vectors: the official WXBizMsgCrypt sample, as published in
//! LeoEatle/WXBizMsgCryptNode `Sample.cpp` (commit 982fb47a; the same values
//! appear in Tencent's C#/PHP/Java samples and on
//! developer.work.weixin.qq.com/document/path/90968): Token `QDG6eK`,
//! EncodingAESKey `jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C`, corp id
//! `wx5823bf96d3bd56c7`, one URL check (`echostr`) and one encrypted message.

use aes::Aes256;
use aes::cipher::{BlockEncrypt, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nurture::api::wecom_crypto::{
    CryptoError, WecomCrypto, WecomEvent, extract_encrypt, signature, xml_field,
};
use proptest::prelude::*;

const TOKEN: &str = "QDG6eK";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const CORP_ID: &str = "wx5823bf96d3bd56c7";

// Sample 1: URL check.
const VERIFY_SIG: &str = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3";
const VERIFY_TS: &str = "1409659589";
const VERIFY_NONCE: &str = "263014780";
const VERIFY_ECHOSTR: &str =
    "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";

// Sample 2: an encrypted message.
const MSG_SIG: &str = "477715d11cdb4164915debcba66cb864d751f3e6";
const MSG_TS: &str = "1409659813";
const MSG_NONCE: &str = "1372623149";
const MSG_BODY: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>";

fn official() -> WecomCrypto {
    WecomCrypto::new(TOKEN, AES_KEY, CORP_ID).expect("official key")
}

/// The AES key, decoded independently of the module (lenient on the
/// trailing bits of the 43rd character, as the SDKs are).
fn raw_key() -> [u8; 32] {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(format!("{AES_KEY}="))
        .unwrap()
        .try_into()
        .unwrap()
}

/// An independent AES-256-CBC (IV = key[..16]) over an already-padded
/// plaintext, so tests can build ciphertexts with arbitrary (bad) padding.
fn seal_raw(plain: &[u8]) -> String {
    assert_eq!(plain.len() % 16, 0);
    let key = raw_key();
    let cipher = Aes256::new(&key.into());
    let mut prev = [0u8; 16];
    prev.copy_from_slice(&key[..16]);
    let mut out = Vec::new();
    for chunk in plain.chunks(16) {
        let mut block = [0u8; 16];
        for i in 0..16 {
            block[i] = chunk[i] ^ prev[i];
        }
        let mut b = aes::Block::from(block);
        cipher.encrypt_block(&mut b);
        prev.copy_from_slice(&b);
        out.extend_from_slice(&b);
    }
    STANDARD.encode(out)
}

/// `random(16) ‖ len ‖ msg ‖ receiveid`, unpadded.
fn frame(msg: &[u8], receive_id: &[u8]) -> Vec<u8> {
    let mut v = vec![7u8; 16];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v.extend_from_slice(receive_id);
    v
}

fn pad32(mut v: Vec<u8>) -> Vec<u8> {
    let pad = 32 - v.len() % 32;
    v.resize(v.len() + pad, pad as u8);
    v
}

fn decrypt_signed(c: &WecomCrypto, enc: &str) -> Result<String, CryptoError> {
    let sig = signature(TOKEN, "1700000000", "nonce", enc);
    c.decrypt_message(&sig, "1700000000", "nonce", enc)
}

#[test]
fn official_vector_signatures() {
    assert_eq!(
        signature(TOKEN, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHOSTR),
        VERIFY_SIG
    );
    let enc = extract_encrypt(MSG_BODY).unwrap();
    assert_eq!(signature(TOKEN, MSG_TS, MSG_NONCE, &enc), MSG_SIG);
    assert_eq!(official().signature(MSG_TS, MSG_NONCE, &enc), MSG_SIG);
}

#[test]
fn official_vector_verify_url() {
    let echo = official()
        .verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHOSTR)
        .expect("official URL check");
    // The sample's echostr decrypts to a decimal string.
    assert_eq!(echo, "1616140317555161061");
}

#[test]
fn official_vector_decrypt_message() {
    let enc = extract_encrypt(MSG_BODY).unwrap();
    let xml = official()
        .decrypt_message(MSG_SIG, MSG_TS, MSG_NONCE, &enc)
        .expect("official message");
    assert_eq!(xml_field(&xml, "Content").as_deref(), Some("hello"));
    assert_eq!(
        xml_field(&xml, "MsgId").as_deref(),
        Some("4561255354251345929")
    );
    let event = WecomEvent::parse(&xml);
    assert_eq!(event.to_user_name.as_deref(), Some(CORP_ID));
    assert_eq!(event.create_time.as_deref(), Some(MSG_TS));
    assert_eq!(xml_field(MSG_BODY, "AgentID").as_deref(), Some("218"));
}

#[test]
fn bad_key_is_rejected() {
    for key in [
        "",
        "short",
        &AES_KEY[..42],
        &format!("{AES_KEY}A"),
        "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2=",
        "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2é",
    ] {
        assert_eq!(
            WecomCrypto::new(TOKEN, key, CORP_ID).err(),
            Some(CryptoError::BadKey),
            "{key:?}"
        );
    }
}

#[test]
fn round_trip_reply_and_event() {
    let c = official();
    for msg in [
        "",
        "x",
        "中文 and emoji 🙂",
        &"a".repeat(31),
        &"b".repeat(32),
        &"c".repeat(1000),
    ] {
        let (enc, sig) = c.encrypt_reply(msg, "1700000000", "abc");
        assert_eq!(sig, signature(TOKEN, "1700000000", "abc", &enc));
        assert_eq!(
            c.decrypt_message(&sig, "1700000000", "abc", &enc).unwrap(),
            msg
        );
        // Upper-case hex is accepted too.
        assert_eq!(
            c.decrypt_message(&sig.to_uppercase(), "1700000000", "abc", &enc)
                .unwrap(),
            msg
        );
    }

    let inner = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA]]></ExternalUserID><State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>";
    let body = c.encrypt_reply_xml(inner, "1700000000", "n1");
    let enc = extract_encrypt(&body).unwrap();
    let sig = xml_field(&body, "MsgSignature").unwrap();
    assert_eq!(xml_field(&body, "TimeStamp").as_deref(), Some("1700000000"));
    assert_eq!(xml_field(&body, "Nonce").as_deref(), Some("n1"));
    let xml = c.decrypt_message(&sig, "1700000000", "n1", &enc).unwrap();
    assert_eq!(xml, inner);
    assert_eq!(
        WecomEvent::parse(&xml),
        WecomEvent {
            to_user_name: Some(CORP_ID.into()),
            event: Some("change_external_contact".into()),
            change_type: Some("add_external_contact".into()),
            user_id: Some("zhangsan".into()),
            external_user_id: Some("woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA".into()),
            welcome_code: Some("WELCOMECODE".into()),
            create_time: Some("1403610513".into()),
        }
    );
}

#[test]
fn deterministic_encrypt_matches_independent_cbc() {
    let c = official();
    let random = [7u8; 16];
    let ours = c.encrypt_with_random("<xml/>", random);
    let theirs = seal_raw(&pad32(frame(b"<xml/>", CORP_ID.as_bytes())));
    assert_eq!(ours, theirs);
    // Whole-block plaintext gets a full 32-byte block of padding.
    let msg = "m".repeat(64 - 20 - CORP_ID.len());
    assert_eq!(frame(msg.as_bytes(), CORP_ID.as_bytes()).len(), 64);
    let enc = c.encrypt_with_random(&msg, random);
    assert_eq!(STANDARD.decode(&enc).unwrap().len(), 96);
    assert_eq!(decrypt_signed(&c, &enc).unwrap(), msg);
}

#[test]
fn tampered_signature_is_rejected() {
    let c = official();
    let enc = extract_encrypt(MSG_BODY).unwrap();
    let mut bad = MSG_SIG.to_owned();
    bad.replace_range(0..1, "5");
    for sig in [bad.as_str(), "", &MSG_SIG[..39], &format!("{MSG_SIG}0")] {
        assert_eq!(
            c.decrypt_message(sig, MSG_TS, MSG_NONCE, &enc),
            Err(CryptoError::BadSignature)
        );
    }
    // Right signature, changed timestamp / nonce / ciphertext / token.
    assert_eq!(
        c.decrypt_message(MSG_SIG, "1409659814", MSG_NONCE, &enc),
        Err(CryptoError::BadSignature)
    );
    assert_eq!(
        c.decrypt_message(MSG_SIG, MSG_TS, "1372623148", &enc),
        Err(CryptoError::BadSignature)
    );
    let flipped = enc.replacen('R', "S", 1);
    assert_eq!(
        c.decrypt_message(MSG_SIG, MSG_TS, MSG_NONCE, &flipped),
        Err(CryptoError::BadSignature)
    );
    let other_token = WecomCrypto::new("other", AES_KEY, CORP_ID).unwrap();
    assert_eq!(
        other_token.verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHOSTR),
        Err(CryptoError::BadSignature)
    );
}

#[test]
fn wrong_corp_id_is_rejected() {
    let other = WecomCrypto::new(TOKEN, AES_KEY, "wx5823bf96d3bd56c8").unwrap();
    let enc = extract_encrypt(MSG_BODY).unwrap();
    assert_eq!(
        other.decrypt_message(MSG_SIG, MSG_TS, MSG_NONCE, &enc),
        Err(CryptoError::WrongCorpId)
    );
    assert_eq!(
        other.verify_url(VERIFY_SIG, VERIFY_TS, VERIFY_NONCE, VERIFY_ECHOSTR),
        Err(CryptoError::WrongCorpId)
    );
    // A prefix / extension of the corp id is not the corp id.
    let c = official();
    for rid in [&CORP_ID[..17], &format!("{CORP_ID}x"), ""] {
        let enc = seal_raw(&pad32(frame(b"<xml/>", rid.as_bytes())));
        assert_eq!(
            decrypt_signed(&c, &enc),
            Err(CryptoError::WrongCorpId),
            "{rid:?}"
        );
    }
}

#[test]
fn bad_padding_is_rejected() {
    let c = official();
    // 64 bytes of frame, then custom padding blocks.
    let body = frame(&vec![b'm'; 64 - 20 - CORP_ID.len()], CORP_ID.as_bytes());
    assert_eq!(body.len(), 64);

    // Pad value 0.
    let mut p0 = body.clone();
    p0.extend_from_slice(&[0u8; 32]);
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&p0)),
        Err(CryptoError::BadPadding)
    );

    // Pad value 33 (one more than the 32-byte block).
    let mut p33 = body.clone();
    p33.extend_from_slice(&[33u8; 32]);
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&p33)),
        Err(CryptoError::BadPadding)
    );

    // Pad value 255.
    let mut p255 = body.clone();
    p255.extend_from_slice(&[255u8; 32]);
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&p255)),
        Err(CryptoError::BadPadding)
    );

    // Inconsistent pad bytes: last byte says 32, one of the others differs.
    let mut mixed = body.clone();
    let mut pad = [32u8; 32];
    pad[3] = 31;
    mixed.extend_from_slice(&pad);
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&mixed)),
        Err(CryptoError::BadPadding)
    );

    // Consistent full-block padding of 32 is accepted (control).
    let mut ok = body.clone();
    ok.extend_from_slice(&[32u8; 32]);
    assert!(decrypt_signed(&c, &seal_raw(&ok)).is_ok());

    // Pad value 16 (valid for 16-byte PKCS#7, fine here too when consistent).
    let frame48 = frame(&vec![b'm'; 48 - 20 - CORP_ID.len()], CORP_ID.as_bytes());
    let mut p16 = frame48.clone();
    p16.extend_from_slice(&[16u8; 16]);
    assert!(decrypt_signed(&c, &seal_raw(&p16)).is_ok());
}

#[test]
fn bad_lengths_are_rejected() {
    let c = official();
    // msg_len larger than what follows.
    let mut f = frame(b"<xml/>", CORP_ID.as_bytes());
    f[16..20].copy_from_slice(&1000u32.to_be_bytes());
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&pad32(f))),
        Err(CryptoError::BadLength)
    );
    // msg_len = u32::MAX.
    let mut f = frame(b"<xml/>", CORP_ID.as_bytes());
    f[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&pad32(f))),
        Err(CryptoError::BadLength)
    );
    // Fewer than 20 bytes before the padding.
    let short = pad32(vec![1u8; 12]);
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&short)),
        Err(CryptoError::BadLength)
    );
    // Invalid UTF-8 message.
    let f = frame(&[0xff, 0xfe], CORP_ID.as_bytes());
    assert_eq!(
        decrypt_signed(&c, &seal_raw(&pad32(f))),
        Err(CryptoError::BadUtf8)
    );
}

#[test]
fn truncated_and_malformed_ciphertext_is_rejected() {
    let c = official();
    let enc = extract_encrypt(MSG_BODY).unwrap();
    let raw = STANDARD.decode(&enc).unwrap();

    // Truncated by a byte (not a multiple of 16).
    let t1 = STANDARD.encode(&raw[..raw.len() - 1]);
    assert_eq!(
        decrypt_signed(&c, &t1),
        Err(CryptoError::BadCiphertextLength)
    );
    // Truncated by whole blocks: CBC still decrypts, the frame does not check out.
    for cut in [16, 32, raw.len() - 16] {
        let t = STANDARD.encode(&raw[..raw.len() - cut]);
        assert!(decrypt_signed(&c, &t).is_err(), "cut {cut}");
    }
    // Empty.
    assert_eq!(
        decrypt_signed(&c, ""),
        Err(CryptoError::BadCiphertextLength)
    );
    // Not base64 / base64 cut mid-quantum.
    assert_eq!(
        decrypt_signed(&c, "!!!not base64"),
        Err(CryptoError::BadBase64)
    );
    assert_eq!(
        decrypt_signed(&c, &enc[..enc.len() - 3]),
        Err(CryptoError::BadBase64)
    );
}

#[test]
fn xml_helpers() {
    assert_eq!(
        extract_encrypt("<xml><ToUserName>x</ToUserName></xml>"),
        Err(CryptoError::MissingField("Encrypt"))
    );
    assert_eq!(
        extract_encrypt("<xml><Encrypt></Encrypt></xml>"),
        Err(CryptoError::MissingField("Encrypt"))
    );
    assert_eq!(
        extract_encrypt("<xml><Encrypt>abc"),
        Err(CryptoError::MissingField("Encrypt"))
    );
    assert_eq!(
        extract_encrypt("<xml><Encrypt><![CDATA[abc</Encrypt></xml>"),
        Err(CryptoError::MissingField("Encrypt"))
    );
    assert_eq!(
        extract_encrypt("<xml>\n  <Encrypt>\n  <![CDATA[a+b/c==]]>\n  </Encrypt>\n</xml>").unwrap(),
        "a+b/c=="
    );
    assert_eq!(
        xml_field("<a><B> 1 &amp; 2 &lt;&#x41;&#66;&gt; </B></a>", "B").as_deref(),
        Some("1 & 2 <AB>")
    );
    assert_eq!(xml_field("<a><B>&unknown;</B></a>", "B"), None);
    assert_eq!(xml_field("<a><B>&amp</B></a>", "B"), None);
    assert_eq!(xml_field("<a><B><C>1</C></B></a>", "B"), None);
    assert_eq!(xml_field("<a><B/></a>", "B").as_deref(), Some(""));
    assert_eq!(
        xml_field("<a><BB>1</BB><B>2</B></a>", "B").as_deref(),
        Some("2")
    );
    assert_eq!(
        xml_field("<a><B><![CDATA[</B>]]></B></a>", "B").as_deref(),
        Some("</B>")
    );
    assert_eq!(xml_field("<a></a>", "B"), None);
    assert_eq!(WecomEvent::parse("garbage"), WecomEvent::default());
}

proptest! {
    #[test]
    fn decrypt_message_never_panics(
        sig in ".{0,48}",
        ts in "[0-9]{0,12}",
        nonce in ".{0,16}",
        enc in ".{0,200}",
    ) {
        let c = official();
        let _ = c.decrypt_message(&sig, &ts, &nonce, &enc);
        // With a valid signature, so the decryption path is exercised.
        let good = signature(TOKEN, &ts, &nonce, &enc);
        let _ = c.decrypt_message(&good, &ts, &nonce, &enc);
        let _ = extract_encrypt(&enc);
        let _ = WecomEvent::parse(&enc);
    }

    #[test]
    fn decrypt_never_panics_on_arbitrary_blocks(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let c = official();
        let enc = STANDARD.encode(&bytes);
        let _ = decrypt_signed(&c, &enc);
        // Arbitrary plaintext frames, validly encrypted.
        let mut padded = bytes.clone();
        padded.resize(bytes.len().div_ceil(16) * 16, 0);
        if !padded.is_empty() {
            let _ = decrypt_signed(&c, &seal_raw(&padded));
        }
    }

    #[test]
    fn round_trip_any_text(msg in any::<String>(), random in any::<[u8; 16]>()) {
        let c = official();
        let enc = c.encrypt_with_random(&msg, random);
        prop_assert_eq!(decrypt_signed(&c, &enc).unwrap(), msg);
    }
}

// Vectors from a second, independent SDK's test suite: wechatpy
// (github.com/wechatpy/wechatpy, tests/test_crypto.py at commit 3d560725,
// `wechatpy.work.crypto`): Token `123456`, EncodingAESKey
// `kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR`, corp id `wx49f0ab532d5d035a`.
// Its reply test fixes the 16 random bytes to "1234567890123456", so the
// ciphertext is a known answer for our encryption too.
const WP_TOKEN: &str = "123456";
const WP_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const WP_CORP: &str = "wx49f0ab532d5d035a";
const WP_ECHOSTR: &str =
    "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==";
const WP_REPLY: &str = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
const WP_REPLY_ENC: &str = "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3";
const WP_MSG_ENC: &str = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";

#[test]
fn wechatpy_vectors() {
    let c = WecomCrypto::new(WP_TOKEN, WP_KEY, WP_CORP).expect("wechatpy's key");
    // test_check_signature_should_ok / _should_fail.
    assert!(
        c.verify_url(
            "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96",
            "1411443780",
            "437374425",
            WP_ECHOSTR
        )
        .is_ok()
    );
    assert_eq!(
        c.verify_url(
            "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96",
            "1411443780",
            "437374424",
            WP_ECHOSTR
        ),
        Err(CryptoError::BadSignature)
    );
    // test_encrypt_message: the same ciphertext and signature, byte for byte.
    let enc = c.encrypt_with_random(WP_REPLY, *b"1234567890123456");
    assert_eq!(enc, WP_REPLY_ENC);
    assert_eq!(
        c.signature("1411525903", "461056294", &enc),
        "407518b7649e86ef23978113f92d27afa9296533"
    );
    // (decrypt_signed signs with the official sample's Token: refused.)
    assert!(decrypt_signed(&c, &enc).is_err());
    assert_eq!(
        c.decrypt_message(
            "407518b7649e86ef23978113f92d27afa9296533",
            "1411525903",
            "461056294",
            &enc
        )
        .unwrap(),
        WP_REPLY
    );
    // test_decrypt_message.
    let body = format!(
        "<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>\n<Encrypt><![CDATA[{WP_MSG_ENC}]]></Encrypt>\n<AgentID><![CDATA[1]]></AgentID>\n</xml>"
    );
    let xml = c
        .decrypt_message(
            "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
            "1411525903",
            "461056294",
            &extract_encrypt(&body).unwrap(),
        )
        .expect("wechatpy's message");
    assert_eq!(xml_field(&xml, "Content").as_deref(), Some("test"));
    assert_eq!(xml_field(&xml, "FromUserName").as_deref(), Some("messense"));
}
