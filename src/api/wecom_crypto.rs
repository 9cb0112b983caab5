//! WeCom (企业微信) callback crypto: the `WXBizMsgCrypt` scheme of the
//! official SDKs (reference: channel-apis.md §1.7).
//!
//! - `EncodingAESKey` is 43 base64 characters; `base64(key + "=")` gives the
//!   32-byte AES-256 key, and the IV is the key's first 16 bytes.
//! - `msg_signature = hex(sha1(concat(sort([token, timestamp, nonce, encrypt]))))`
//!   (for the URL check, `encrypt` is the `echostr`).
//! - The ciphertext is AES-256-CBC over
//!   `random(16) ‖ msg_len (u32, big-endian) ‖ msg ‖ receiveid`, padded
//!   PKCS#7-style to a multiple of **32** bytes (pad value 1..=32).
//!
//! Every check failure is a [`CryptoError`]; nothing here panics on hostile
//! input. The signature is always checked before anything is decrypted.
//!
//! Not wired into the router yet: the callback route would go next to
//! `/healthz`, outside the bearer check.

use aes::Aes256;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq;

/// PKCS#7 block size WeCom pads to (not AES's 16).
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
/// `random(16) ‖ msg_len(4)`.
const HEADER: usize = 20;

/// The key decoder: the SDKs decode `EncodingAESKey + "="` leniently, and the
/// 43rd character of a real key usually has non-zero trailing bits (the
/// official sample key ends in `C`), which a strict decoder rejects.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a callback was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 base64 characters decoding to 32 bytes")]
    BadKey,
    #[error("msg_signature does not match")]
    BadSignature,
    #[error("ciphertext is not valid base64")]
    BadBase64,
    #[error("ciphertext length is not a non-zero multiple of 16 bytes")]
    BadCiphertextLength,
    #[error("bad PKCS#7 padding (32-byte block)")]
    BadPadding,
    #[error("decrypted message length field is inconsistent")]
    BadLength,
    #[error("receiveid does not match the configured corp id")]
    WrongCorpId,
    #[error("decrypted message is not UTF-8")]
    BadUtf8,
    #[error("XML body has no <{0}> element")]
    MissingField(&'static str),
}

/// One app's callback settings: `Token`, the AES key decoded from
/// `EncodingAESKey`, and the corp id expected as `receiveid`.
#[derive(Clone)]
pub struct WecomCrypto {
    token: String,
    key: [u8; 32],
    corp_id: String,
}

impl std::fmt::Debug for WecomCrypto {
    // Never print the token or key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomCrypto")
            .field("token", &"<set>")
            .field("key", &"<set>")
            .field("corp_id", &self.corp_id)
            .finish()
    }
}

impl WecomCrypto {
    pub fn new(token: &str, encoding_aes_key: &str, corp_id: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != 43
            || !encoding_aes_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            return Err(CryptoError::BadKey);
        }
        let decoded = KEY_ENGINE
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = decoded.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            token: token.to_owned(),
            key,
            corp_id: corp_id.to_owned(),
        })
    }

    pub fn corp_id(&self) -> &str {
        &self.corp_id
    }

    /// `hex(sha1(sorted concat of token, timestamp, nonce, encrypted))`.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        signature(&self.token, timestamp, nonce, encrypted)
    }

    /// The URL check (`GET ?msg_signature&timestamp&nonce&echostr`, already
    /// URL-decoded): verify, decrypt `echostr`, return the plaintext to echo.
    pub fn verify_url(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        echostr: &str,
    ) -> Result<String, CryptoError> {
        self.decrypt_message(msg_signature, timestamp, nonce, echostr)
    }

    /// An event: verify the signature over `encrypt_b64` (the `<Encrypt>`
    /// text of the body, see [`extract_encrypt`]), decrypt, return the inner
    /// XML.
    pub fn decrypt_message(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt_b64: &str,
    ) -> Result<String, CryptoError> {
        let expected = self.signature(timestamp, nonce, encrypt_b64);
        if !ct_eq_ignore_case(expected.as_bytes(), msg_signature.as_bytes()) {
            return Err(CryptoError::BadSignature);
        }
        self.decrypt(encrypt_b64)
    }

    /// Decrypt without checking a signature (the caller has checked it).
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypt_b64.trim())
            .map_err(|_| CryptoError::BadBase64)?;
        if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
            return Err(CryptoError::BadCiphertextLength);
        }
        self.cbc_decrypt(&mut buf);

        let pad = usize::from(*buf.last().ok_or(CryptoError::BadPadding)?);
        if !(1..=PAD_BLOCK).contains(&pad) || pad > buf.len() {
            return Err(CryptoError::BadPadding);
        }
        let (content, padding) = buf.split_at(buf.len() - pad);
        if padding.iter().any(|&b| usize::from(b) != pad) {
            return Err(CryptoError::BadPadding);
        }
        if content.len() < HEADER {
            return Err(CryptoError::BadLength);
        }
        let len_bytes: [u8; 4] = content[16..HEADER]
            .try_into()
            .map_err(|_| CryptoError::BadLength)?;
        let msg_len = u32::from_be_bytes(len_bytes) as usize;
        let rest = &content[HEADER..];
        if msg_len > rest.len() {
            return Err(CryptoError::BadLength);
        }
        let (msg, receive_id) = rest.split_at(msg_len);
        if receive_id != self.corp_id.as_bytes() {
            return Err(CryptoError::WrongCorpId);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::BadUtf8)
    }

    /// A passive reply: returns `(encrypt_b64, msg_signature)`.
    pub fn encrypt_reply(&self, plaintext: &str, timestamp: &str, nonce: &str) -> (String, String) {
        let encrypted = self.encrypt_with_random(plaintext, rand::random());
        let signature = self.signature(timestamp, nonce, &encrypted);
        (encrypted, signature)
    }

    /// Encrypt with the given 16 "random" bytes (deterministic; for tests).
    pub fn encrypt_with_random(&self, plaintext: &str, random: [u8; 16]) -> String {
        let msg = plaintext.as_bytes();
        let mut buf = Vec::with_capacity(HEADER + msg.len() + self.corp_id.len() + PAD_BLOCK);
        buf.extend_from_slice(&random);
        // WeCom messages are far below 4 GiB; saturate rather than panic.
        buf.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.corp_id.as_bytes());
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        buf.resize(buf.len() + pad, pad as u8);
        self.cbc_encrypt(&mut buf);
        STANDARD.encode(buf)
    }

    /// The reply body WeCom expects for a passive encrypted reply.
    pub fn encrypt_reply_xml(&self, plaintext: &str, timestamp: &str, nonce: &str) -> String {
        let (encrypted, signature) = self.encrypt_reply(plaintext, timestamp, nonce);
        format!(
            "<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt><MsgSignature><![CDATA[{signature}]]></MsgSignature><TimeStamp>{}</TimeStamp><Nonce><![CDATA[{}]]></Nonce></xml>",
            escape_text(timestamp),
            cdata_safe(nonce)
        )
    }

    /// AES-256-CBC with the key's first 16 bytes as the IV, in place, over
    /// whole blocks (WeCom pads to 32 bytes itself, see `PAD_BLOCK`).
    fn cbc_decrypt(&self, buf: &mut [u8]) {
        let iv: [u8; AES_BLOCK] = self.key[..AES_BLOCK].try_into().expect("16 bytes");
        // The caller checked that the length is a multiple of the block.
        let _ = cbc::Decryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(buf);
    }

    fn cbc_encrypt(&self, buf: &mut [u8]) {
        let iv: [u8; AES_BLOCK] = self.key[..AES_BLOCK].try_into().expect("16 bytes");
        let len = buf.len();
        // The caller padded to a multiple of 32 bytes.
        let _ = cbc::Encryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(buf, len);
    }
}

/// `hex(sha1(concat(sort([token, timestamp, nonce, encrypted]))))`.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypted: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypted];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Equal length and equal bytes (ASCII case-insensitive), without an early
/// exit on the first difference.
fn ct_eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.to_ascii_lowercase().ct_eq(&b.to_ascii_lowercase()).into()
}

/// The `<Encrypt>` text of an event's outer body.
pub fn extract_encrypt(body: &str) -> Result<String, CryptoError> {
    match xml_field(body, "Encrypt") {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(CryptoError::MissingField("Encrypt")),
    }
}

/// The fields nurture uses from a decrypted event (§1.7); absent ones are
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WecomEvent {
    pub to_user_name: Option<String>,
    pub event: Option<String>,
    pub change_type: Option<String>,
    pub user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub welcome_code: Option<String>,
    pub create_time: Option<String>,
}

impl WecomEvent {
    pub fn parse(xml: &str) -> Self {
        Self {
            to_user_name: xml_field(xml, "ToUserName"),
            event: xml_field(xml, "Event"),
            change_type: xml_field(xml, "ChangeType"),
            user_id: xml_field(xml, "UserID"),
            external_user_id: xml_field(xml, "ExternalUserID"),
            welcome_code: xml_field(xml, "WelcomeCode"),
            create_time: xml_field(xml, "CreateTime"),
        }
    }
}

/// The text of the first `<name>` element: CDATA sections verbatim, other
/// text with the five predefined entities and numeric references decoded
/// (quick-xml expands nothing else: no DTDs, no external entities).
/// Whitespace around CDATA is dropped; plain text is trimmed. `None` when the
/// XML is malformed before the element ends, the element is missing or
/// contains child elements. `<name/>` is `""`.
pub fn xml_field(xml: &str, name: &str) -> Option<String> {
    use quick_xml::events::Event;
    if name.is_empty() || name.contains(['<', '>', '/']) {
        return None;
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    // (is CDATA, text)
    let mut segments: Vec<(bool, String)> = Vec::new();
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if !inside && e.name().as_ref() == name.as_bytes() => inside = true,
            Event::Empty(e) if !inside && e.name().as_ref() == name.as_bytes() => {
                return Some(String::new());
            }
            // A child element: not a text field.
            Event::Start(_) | Event::Empty(_) if inside => return None,
            Event::Text(t) if inside => {
                let raw = std::str::from_utf8(t.as_ref()).ok()?;
                segments.push((false, unescape(raw)?));
            }
            Event::GeneralRef(r) if inside => {
                let raw = std::str::from_utf8(r.as_ref()).ok()?;
                segments.push((false, unescape(&format!("&{raw};"))?));
            }
            Event::CData(c) if inside => {
                segments.push((true, std::str::from_utf8(c.as_ref()).ok()?.to_owned()));
            }
            Event::End(e) if inside && e.name().as_ref() == name.as_bytes() => break,
            Event::Eof => return None,
            _ => {}
        }
    }
    if segments.iter().any(|(cdata, _)| *cdata) {
        Some(
            segments
                .into_iter()
                .filter(|(cdata, text)| *cdata || !text.trim().is_empty())
                .map(|(_, text)| text)
                .collect(),
        )
    } else {
        Some(
            segments
                .into_iter()
                .map(|(_, text)| text)
                .collect::<String>()
                .trim()
                .to_owned(),
        )
    }
}

/// The five predefined entities and numeric character references, through
/// quick-xml; any other entity is refused (`None`).
fn unescape(text: &str) -> Option<String> {
    quick_xml::escape::unescape(text)
        .ok()
        .map(|c| c.into_owned())
}

fn escape_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `]]>` cannot appear inside a CDATA section; split it across two.
fn cdata_safe(text: &str) -> String {
    text.replace("]]>", "]]]]><![CDATA[>")
}
