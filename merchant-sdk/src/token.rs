//! Signed QR tokens, version 1.
//!
//! ```text
//! token   = "WH1." base64url(payload) "." base64url(signature)      (no padding)
//! payload = 58 bytes:
//!   [0]      version = 1
//!   [1]      kind: 1 = voucher, 2 = benefit card
//!   [2..10]  key id: the first 8 bytes of SHA-256 of the signing public key
//!   [10..26] subject id (the voucher's or card's UUID)
//!   [26..42] nonce: 16 random bytes, single use
//!   [42..50] issued_at, i64 big-endian, Unix seconds
//!   [50..58] expires_at, i64 big-endian, Unix seconds
//! signature = Ed25519 over "wenhui-qr-v1" 0x00 || payload
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::signature::{ED25519, UnparsedPublicKey};
use uuid::Uuid;

pub const PREFIX: &str = "WH1.";
pub const PAYLOAD_LEN: usize = 58;
const SIGNING_CONTEXT: &[u8] = b"wenhui-qr-v1\x00";
/// The longest a token may live (a screenshot is worthless after this).
pub const MAX_LIFETIME_S: i64 = 120;
pub const MIN_LIFETIME_S: i64 = 60;
/// Clock skew tolerated between the phone's issuer (the service) and the till.
pub const CLOCK_SKEW_S: i64 = 30;
const MAX_TOKEN_LEN: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Voucher,
    Card,
}

impl TokenKind {
    fn code(self) -> u8 {
        match self {
            TokenKind::Voucher => 1,
            TokenKind::Card => 2,
        }
    }

    fn from_code(code: u8) -> Option<TokenKind> {
        match code {
            1 => Some(TokenKind::Voucher),
            2 => Some(TokenKind::Card),
            _ => None,
        }
    }
}

/// The signed contents of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPayload {
    pub kind: TokenKind,
    pub key_id: [u8; 8],
    pub subject: Uuid,
    pub nonce: [u8; 16],
    pub issued_at_s: i64,
    pub expires_at_s: i64,
}

/// A token parsed but not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub struct QrToken {
    pub payload: TokenPayload,
    payload_bytes: Vec<u8>,
    signature: Vec<u8>,
}

/// The payload (what the token says), without the signature that, with it, is the token.
impl std::fmt::Debug for QrToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrToken").field("payload", &self.payload).finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a Wenhui QR token")]
    Malformed,
    #[error("unsupported token version {0}")]
    UnsupportedVersion(u8),
    #[error("signed by unknown key {0}; refresh the keys")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    /// The token names a known key but was issued outside the time that key signed tokens
    /// (before it was current, or after it was retired).
    #[error("the token was issued outside its key's validity window")]
    KeyNotValidAtIssue,
    /// The cached or fetched key itself is not 32 bytes of base64url: refetch the keys.
    #[error("the verification key {0} is not a valid public key; refresh the keys")]
    BadKey(String),
    #[error("the token expired at {0} (Unix seconds)")]
    Expired(i64),
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's lifetime is outside 60-120 seconds")]
    BadLifetime,
}

impl TokenError {
    /// The API error code for this failure (the service answers the same codes).
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Expired(_) => "qr_expired",
            _ => "qr_invalid",
        }
    }
}

pub fn key_id_for(public_key: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest::digest(&digest::SHA256, public_key).as_ref()[..8]);
    id
}

impl TokenPayload {
    pub fn to_bytes(&self) -> [u8; PAYLOAD_LEN] {
        let mut bytes = [0u8; PAYLOAD_LEN];
        bytes[0] = 1;
        bytes[1] = self.kind.code();
        bytes[2..10].copy_from_slice(&self.key_id);
        bytes[10..26].copy_from_slice(self.subject.as_bytes());
        bytes[26..42].copy_from_slice(&self.nonce);
        bytes[42..50].copy_from_slice(&self.issued_at_s.to_be_bytes());
        bytes[50..58].copy_from_slice(&self.expires_at_s.to_be_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Result<TokenPayload, TokenError> {
        if bytes.len() != PAYLOAD_LEN {
            return Err(TokenError::Malformed);
        }
        if bytes[0] != 1 {
            return Err(TokenError::UnsupportedVersion(bytes[0]));
        }
        let kind = TokenKind::from_code(bytes[1]).ok_or(TokenError::Malformed)?;
        let array = |range: std::ops::Range<usize>| bytes.get(range).ok_or(TokenError::Malformed);
        let i64_at = |start: usize| -> Result<i64, TokenError> {
            let raw: [u8; 8] = array(start..start + 8)?.try_into().map_err(|_| TokenError::Malformed)?;
            Ok(i64::from_be_bytes(raw))
        };
        Ok(TokenPayload {
            kind,
            key_id: array(2..10)?.try_into().map_err(|_| TokenError::Malformed)?,
            subject: Uuid::from_slice(array(10..26)?).map_err(|_| TokenError::Malformed)?,
            nonce: array(26..42)?.try_into().map_err(|_| TokenError::Malformed)?,
            issued_at_s: i64_at(42)?,
            expires_at_s: i64_at(50)?,
        })
    }

    /// The exact bytes the issuer signs.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut input = SIGNING_CONTEXT.to_vec();
        input.extend_from_slice(&self.to_bytes());
        input
    }

    /// Renders a token from this payload and the issuer's signature over [`Self::signing_input`].
    pub fn encode(&self, signature: &[u8]) -> String {
        format!("{PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(self.to_bytes()), URL_SAFE_NO_PAD.encode(signature))
    }
}

impl QrToken {
    /// Parses the form of a token. Never panics, whatever the input.
    pub fn parse(text: &str) -> Result<QrToken, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let rest = text.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (payload, signature) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let payload_bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        if signature.len() != 64 {
            return Err(TokenError::Malformed);
        }
        let payload = TokenPayload::from_bytes(&payload_bytes)?;
        Ok(QrToken { payload, payload_bytes, signature })
    }

    /// Checks the signature with `public_key` (32 bytes) and the validity window at `now_s`.
    pub fn verify(&self, public_key: &[u8], now_s: i64) -> Result<&TokenPayload, TokenError> {
        if key_id_for(public_key) != self.payload.key_id {
            return Err(TokenError::UnknownKey(hex::encode(self.payload.key_id)));
        }
        let mut input = SIGNING_CONTEXT.to_vec();
        input.extend_from_slice(&self.payload_bytes);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&input, &self.signature)
            .map_err(|_| TokenError::BadSignature)?;
        let lifetime = self.payload.expires_at_s - self.payload.issued_at_s;
        if !(MIN_LIFETIME_S..=MAX_LIFETIME_S).contains(&lifetime) {
            return Err(TokenError::BadLifetime);
        }
        if now_s + CLOCK_SKEW_S < self.payload.issued_at_s {
            return Err(TokenError::NotYetValid);
        }
        if now_s >= self.payload.expires_at_s {
            return Err(TokenError::Expired(self.payload.expires_at_s));
        }
        Ok(&self.payload)
    }

    pub fn key_id_hex(&self) -> String {
        hex::encode(self.payload.key_id)
    }
}

/// A verification key as published at `GET /v1/keys`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerificationKey {
    pub key_id: String,
    /// Raw 32-byte Ed25519 public key, base64url without padding.
    pub public_key: String,
    /// "current" or "previous".
    pub status: String,
    pub valid_from_s: i64,
    /// Tokens issued after this moment under this key are refused (None: still current).
    pub valid_until_s: Option<i64>,
}

/// The keys a till verifies tokens with, fetched from `GET /v1/keys` and cached.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyRing {
    pub keys: Vec<VerificationKey>,
}

impl KeyRing {
    /// Verifies a token offline: known key, signature, lifetime, expiry, and that the token was
    /// issued while its key was valid.
    pub fn verify<'t>(&self, token: &'t QrToken, now_s: i64) -> Result<&'t TokenPayload, TokenError> {
        let key_id = token.key_id_hex();
        let key = self.keys.iter().find(|k| k.key_id == key_id).ok_or(TokenError::UnknownKey(key_id))?;
        let public_key =
            URL_SAFE_NO_PAD.decode(&key.public_key).map_err(|_| TokenError::BadKey(key.key_id.clone()))?;
        let payload = token.verify(&public_key, now_s)?;
        let issued = payload.issued_at_s;
        if issued + CLOCK_SKEW_S < key.valid_from_s || key.valid_until_s.is_some_and(|until| issued > until) {
            return Err(TokenError::KeyNotValidAtIssue);
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("seed")
    }

    fn sample(pair: &Ed25519KeyPair, issued_at_s: i64) -> String {
        let payload = TokenPayload {
            kind: TokenKind::Voucher,
            key_id: key_id_for(pair.public_key().as_ref()),
            subject: Uuid::from_u128(42),
            nonce: [9; 16],
            issued_at_s,
            expires_at_s: issued_at_s + 90,
        };
        payload.encode(pair.sign(&payload.signing_input()).as_ref())
    }

    #[test]
    fn round_trip_and_expiry() {
        let pair = key();
        let token = QrToken::parse(&sample(&pair, 1_000)).expect("parses");
        let public = pair.public_key().as_ref();
        assert_eq!(token.verify(public, 1_010).map(|p| p.subject), Ok(Uuid::from_u128(42)));
        assert_eq!(token.verify(public, 1_090), Err(TokenError::Expired(1_090)));
        assert_eq!(token.verify(public, 900), Err(TokenError::NotYetValid));
    }

    /// The vector in docs/qr-token.md (checked independently with OpenSSL 3).
    pub(crate) const VECTOR_TOKEN: &str = "WH1.AQH-gSwS86tM5gAAAAAAAAAAAAAAAAAAACoJCQkJCQkJCQkJCQkJCQkJAAAAAGlVuQAAAAAAaVW5Wg.\
        iKOZKKQH90d87igeOWfIE8JdOo9hcM13vx01HKtc2M1NJwoEOyIz-DUnjpvj4lOAwber2hFCaiiWPcZBij9MCQ";

    #[test]
    fn test_vector() {
        let pair = key();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw"
        );
        assert_eq!(hex::encode(key_id_for(pair.public_key().as_ref())), "fe812c12f3ab4ce6");
        let token = sample(&pair, 1_767_225_600);
        assert_eq!(token, VECTOR_TOKEN);
        let parsed = QrToken::parse(&token).expect("parses");
        assert_eq!(
            hex::encode(parsed.payload.to_bytes()),
            "0101fe812c12f3ab4ce60000000000000000000000000000002a09090909090909090909090909090909\
             000000006955b900000000006955b95a"
        );
        let ring = KeyRing {
            keys: vec![VerificationKey {
                key_id: "fe812c12f3ab4ce6".into(),
                public_key: "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw".into(),
                status: "current".into(),
                valid_from_s: 1_767_225_000,
                valid_until_s: None,
            }],
        };
        let payload = ring.verify(&parsed, 1_767_225_610).expect("verifies");
        assert_eq!((payload.kind, payload.subject), (TokenKind::Voucher, Uuid::from_u128(42)));
        assert_eq!(payload.expires_at_s, 1_767_225_690);
        assert_eq!(ring.verify(&parsed, 1_767_225_690), Err(TokenError::Expired(1_767_225_690)));
    }

    /// The card-kind vector in docs/qr-token.md (signature checked independently with OpenSSL 3):
    /// the voucher vector with payload byte 1 set to 2. Kind is inside the signed payload, so a
    /// voucher token cannot be turned into a card token.
    pub(crate) const CARD_VECTOR_TOKEN: &str = "WH1.AQL-gSwS86tM5gAAAAAAAAAAAAAAAAAAACoJCQkJCQkJCQkJCQkJCQkJAAAAAGlVuQAAAAAAaVW5Wg.\
        MoVhUt8sQELILbeAXYd8zbT571IDDx3_2lQtBg-Zb-igEuU94xHYeEGOhu8SUN3SuJ6V17H4f4Edt2vsZn1SDQ";

    #[test]
    fn card_test_vector() {
        let pair = key();
        let payload = TokenPayload {
            kind: TokenKind::Card,
            key_id: key_id_for(pair.public_key().as_ref()),
            subject: Uuid::from_u128(42),
            nonce: [9; 16],
            issued_at_s: 1_767_225_600,
            expires_at_s: 1_767_225_690,
        };
        let token = payload.encode(pair.sign(&payload.signing_input()).as_ref());
        assert_eq!(token, CARD_VECTOR_TOKEN);
        let parsed = QrToken::parse(&token).expect("parses");
        let verified = parsed.verify(pair.public_key().as_ref(), 1_767_225_610).expect("verifies");
        assert_eq!((verified.kind, verified.subject), (TokenKind::Card, Uuid::from_u128(42)));
        // The voucher vector's signature does not cover a card payload.
        let voucher_signature = VECTOR_TOKEN.rsplit('.').next().expect("signature");
        let forged = format!("{}.{voucher_signature}", token.rsplit_once('.').expect("dot").0);
        let forged = QrToken::parse(&forged).expect("parses");
        assert_eq!(forged.verify(pair.public_key().as_ref(), 1_767_225_610), Err(TokenError::BadSignature));
    }

    #[test]
    fn any_changed_byte_fails() {
        let pair = key();
        let text = sample(&pair, 1_000);
        for index in PREFIX.len()..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).expect("ascii");
            let verified =
                QrToken::parse(&changed).and_then(|t| t.verify(pair.public_key().as_ref(), 1_010).cloned());
            assert!(verified.is_err() || changed == text, "byte {index} changed and still verified");
        }
    }

    #[test]
    fn a_token_issued_outside_its_keys_window_says_so() {
        let pair = key();
        let token = QrToken::parse(&sample(&pair, 1_000)).expect("parses");
        let verification = |valid_from_s, valid_until_s| VerificationKey {
            key_id: token.key_id_hex(),
            public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            status: "previous".into(),
            valid_from_s,
            valid_until_s,
        };
        let ring = |k| KeyRing { keys: vec![k] };
        assert!(ring(verification(0, None)).verify(&token, 1_010).is_ok());
        let retired = ring(verification(0, Some(900))).verify(&token, 1_010);
        assert_eq!(retired, Err(TokenError::KeyNotValidAtIssue));
        let later = ring(verification(2_000, None)).verify(&token, 1_010);
        assert_eq!(later, Err(TokenError::KeyNotValidAtIssue));
        let mut broken = verification(0, None);
        broken.public_key = "not base64!".into();
        let refused = ring(broken).verify(&token, 1_010);
        assert!(matches!(&refused, Err(TokenError::BadKey(_))), "{refused:?}");
        assert_eq!(refused.map(|_| ()).unwrap_err().code(), "qr_invalid");
    }

    #[test]
    fn another_key_is_refused() {
        let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).expect("seed");
        let token = QrToken::parse(&sample(&other, 1_000)).expect("parses");
        assert!(matches!(token.verify(key().public_key().as_ref(), 1_010), Err(TokenError::UnknownKey(_))));
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in ".{0,300}") {
            let _ = QrToken::parse(&text);
        }

        #[test]
        fn parser_never_panics_on_near_tokens(payload in proptest::collection::vec(any::<u8>(), 0..80),
                                              signature in proptest::collection::vec(any::<u8>(), 0..80)) {
            let text = format!("{PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(&signature));
            if let Ok(token) = QrToken::parse(&text) {
                let _ = token.verify(key().public_key().as_ref(), 0);
            }
        }
    }
}
