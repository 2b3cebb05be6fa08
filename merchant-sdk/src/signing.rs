//! Terminal request signatures, version 1.
//!
//! Every request a till sends carries four headers:
//!
//! | header | value |
//! |---|---|
//! | `Wenhui-Terminal` | the terminal id (UUID) returned at registration |
//! | `Wenhui-Timestamp` | Unix seconds when the request was signed: ASCII digits, no sign, no leading zero ([`parse_timestamp`]) |
//! | `Wenhui-Nonce` | 16-64 characters of `[A-Za-z0-9_-]`, never reused by this terminal |
//! | `Wenhui-Signature` | base64url (no padding) Ed25519 signature over the canonical string |
//!
//! The canonical string is UTF-8, lines joined by `\n` (0x0A), no trailing newline:
//!
//! ```text
//! WENHUI-TERMINAL-V1
//! <METHOD, upper case>
//! <path and query exactly as sent, e.g. /v1/redemptions>
//! <timestamp, decimal: the header's text, which has one form only>
//! <nonce>
//! <SHA-256 of the body bytes, lower-case hex (of the empty string for no body)>
//! ```
//!
//! The service refuses a timestamp in any other form (401 `timestamp_malformed`), a bad signature
//! (401 `bad_signature`), a timestamp more than 300 seconds
//! from its clock (401 `stale_request`), a nonce it has seen from this terminal (401
//! `replayed_request`), a revoked terminal (403 `terminal_revoked`) and a suspended merchant
//! (403 `merchant_suspended`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

pub const HEADER_TERMINAL: &str = "wenhui-terminal";
pub const HEADER_TIMESTAMP: &str = "wenhui-timestamp";
pub const HEADER_NONCE: &str = "wenhui-nonce";
pub const HEADER_SIGNATURE: &str = "wenhui-signature";
pub const MAX_SKEW_S: i64 = 300;
const TAG: &str = "WENHUI-TERMINAL-V1";

/// The parts of a request that are signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedParts<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub timestamp_s: i64,
    pub nonce: &'a str,
    pub body: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the nonce must be 16-64 characters of [A-Za-z0-9_-]")]
    BadNonce,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the timestamp is more than {MAX_SKEW_S} seconds from the server's clock")]
    Stale,
    #[error("Wenhui-Timestamp must be Unix seconds as ASCII digits, with no sign and no leading zero")]
    MalformedTimestamp,
}

pub fn nonce_is_valid(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `Wenhui-Timestamp` header's value as Unix seconds. It has one form: ASCII decimal digits,
/// no sign, no leading zero (`0` alone aside), at most `i64::MAX`. That text is exactly the
/// integer's decimal form, so the canonical string a till signs from the header as sent and the
/// one the service rebuilds from the integer are the same; any other form (`01767225600`,
/// `+1767225600`, ` 1767225600`) is refused rather than failing the signature check.
pub fn parse_timestamp(text: &str) -> Result<i64, SignatureError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return Err(SignatureError::MalformedTimestamp);
    }
    text.parse().map_err(|_| SignatureError::MalformedTimestamp)
}

impl SignedParts<'_> {
    pub fn canonical_string(&self) -> String {
        let body_hash = hex::encode(digest::digest(&digest::SHA256, self.body));
        format!(
            "{TAG}\n{}\n{}\n{}\n{}\n{body_hash}",
            self.method.to_ascii_uppercase(),
            self.path_and_query,
            self.timestamp_s,
            self.nonce
        )
    }

    /// The `Wenhui-Signature` value for these parts.
    pub fn sign(&self, key: &Ed25519KeyPair) -> String {
        URL_SAFE_NO_PAD.encode(key.sign(self.canonical_string().as_bytes()))
    }

    /// Checks the nonce's form, the signature under `public_key`, and the timestamp against `now_s`.
    pub fn verify(&self, public_key: &[u8], signature: &str, now_s: i64) -> Result<(), SignatureError> {
        if !nonce_is_valid(self.nonce) {
            return Err(SignatureError::BadNonce);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .map_err(|_| SignatureError::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(self.canonical_string().as_bytes(), &signature)
            .map_err(|_| SignatureError::BadSignature)?;
        if now_s.abs_diff(self.timestamp_s) > MAX_SKEW_S.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::signature::KeyPair;

    fn parts(body: &[u8]) -> SignedParts<'_> {
        SignedParts {
            method: "POST",
            path_and_query: "/v1/redemptions",
            timestamp_s: 1_767_225_600,
            nonce: "AAECAwQFBgcICQoLDA0ODw",
            body,
        }
    }

    #[test]
    fn test_vector() {
        // The vector in docs/terminal-signing.md: seed 32 x 0x01, this request, this signature.
        let key = Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).expect("seed");
        let body = br#"{"qr":"WH1.x.y","order_amount":"100.00","order_ref":"A-1"}"#;
        let request = parts(body);
        assert_eq!(
            request.canonical_string(),
            format!(
                "WENHUI-TERMINAL-V1\nPOST\n/v1/redemptions\n1767225600\nAAECAwQFBgcICQoLDA0ODw\n{}",
                hex::encode(digest::digest(&digest::SHA256, body))
            )
        );
        assert_eq!(
            hex::encode(digest::digest(&digest::SHA256, body)),
            "4997421cd2ab05b0ec1781b665d7e8fa2ed8d139ae1611393caa14233dd9f436"
        );
        let signature = request.sign(&key);
        assert_eq!(request.verify(key.public_key().as_ref(), &signature, 1_767_225_600), Ok(()));
        // Checked independently with OpenSSL 3 (`openssl pkeyutl -sign -rawin`).
        assert_eq!(
            URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
            "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"
        );
        assert_eq!(
            signature,
            "iTBuwgO1Kn0PWzuByEdYc5HxF0uLZw74tVKF4rO-gyBGR_oLU-QOP0BV3pMhxCmNapQiOeizpudDUeA1wMuhBw"
        );
    }

    #[test]
    fn get_test_vector() {
        // The second vector in docs/terminal-signing.md: a GET has the hash of the empty body.
        let key = Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).expect("seed");
        let request = SignedParts {
            method: "GET",
            path_and_query: "/v1/redemptions/0190f5a2-0000-7000-8000-000000000001",
            timestamp_s: 1_767_225_600,
            nonce: "AAECAwQFBgcICQoLDA0ODw",
            body: b"",
        };
        assert!(request.canonical_string().ends_with(
            "\nAAECAwQFBgcICQoLDA0ODw\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ));
        assert_eq!(
            request.sign(&key),
            "hlVEiheRD1t6Bhnwgp0npjmIE-tNFftPK5_1d0a_7QKTAMQRzrT0MCYL4VRl8HlWPUM0OkCMpZbxssyv3VEpCA"
        );
    }

    #[test]
    fn refusals() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).expect("seed");
        let request = parts(b"{}");
        let signature = request.sign(&key);
        let public = key.public_key().as_ref();
        assert_eq!(request.verify(public, &signature, 1_767_225_600 + 301), Err(SignatureError::Stale));
        let other_body = parts(b"{ }");
        assert_eq!(other_body.verify(public, &signature, 1_767_225_600), Err(SignatureError::BadSignature));
        let short_nonce = SignedParts { nonce: "short", ..request.clone() };
        assert_eq!(short_nonce.verify(public, &signature, 1_767_225_600), Err(SignatureError::BadNonce));
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        // Validly signed, so the freshness check is reached: `now - timestamp` would overflow.
        let key = Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).expect("seed");
        let public = key.public_key().as_ref();
        let now_s: i64 = 1_767_225_600;
        for timestamp_s in [i64::MIN, i64::MIN + 1, now_s.wrapping_add(i64::MIN), i64::MAX] {
            let request = SignedParts { timestamp_s, ..parts(b"{}") };
            let signature = request.sign(&key);
            assert_eq!(
                request.verify(public, &signature, now_s),
                Err(SignatureError::Stale),
                "{timestamp_s}"
            );
        }
        let edge = SignedParts { timestamp_s: now_s - MAX_SKEW_S, ..parts(b"{}") };
        assert_eq!(edge.verify(public, &edge.sign(&key), now_s), Ok(()));
    }

    #[test]
    fn a_timestamp_has_one_form() {
        assert_eq!(parse_timestamp("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_timestamp("0"), Ok(0));
        assert_eq!(parse_timestamp("9223372036854775807"), Ok(i64::MAX));
        for refused in [
            "01767225600",
            "00",
            "+1767225600",
            "-1767225600",
            "-0",
            "",
            " 1767225600",
            "1767225600 ",
            "1767225600.0",
            "1e9",
            "0x10",
            "\u{661}\u{662}",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_timestamp(refused), Err(SignatureError::MalformedTimestamp), "{refused:?}");
        }
    }

    proptest! {
        /// Accepted exactly when the text is the decimal form of a non-negative i64: what the
        /// canonical string holds.
        #[test]
        fn a_timestamp_is_accepted_in_its_decimal_form_only(text in "[-+0-9 ]{0,21}") {
            match parse_timestamp(&text) {
                Ok(seconds) => prop_assert!(seconds >= 0 && seconds.to_string() == text),
                Err(_) => prop_assert!(text.parse::<i64>().map_or(true, |n| n < 0 || n.to_string() != text)),
            }
        }

        #[test]
        fn every_non_negative_i64_round_trips(seconds in 0..=i64::MAX) {
            prop_assert_eq!(parse_timestamp(&seconds.to_string()), Ok(seconds));
        }

        #[test]
        fn verifier_never_panics(signature in ".{0,120}", nonce in ".{0,80}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let key = Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).expect("seed");
            let request = SignedParts { nonce: &nonce, ..parts(&body) };
            let _ = request.verify(key.public_key().as_ref(), &signature, 0);
        }
    }
}
