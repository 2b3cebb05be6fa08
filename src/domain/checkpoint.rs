//! Signed checkpoints: the service's Ed25519 signature over (sequence, head hash, time), so an
//! auditor holding only the public key can tell that an exported chain is the one the service
//! vouched for.
//!
//! The signed message, version 1:
//! ```text
//! "wenhui-checkpoint" 0x00 0x01   tag and version
//! u64 BE  seq
//! 32 B    head hash
//! i64 BE  signed_at (microseconds since the Unix epoch)
//! str     key id (u32 BE length, UTF-8)
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::signature::{ED25519, UnparsedPublicKey};

use super::ledger::EntryHash;
use super::time::Timestamp;

const TAG: &[u8] = b"wenhui-checkpoint\x00\x01";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// Hex SHA-256 of the entry at `seq` (all zeros for an empty ledger).
    pub head_hash: String,
    pub signed_at: Timestamp,
    pub key_id: String,
    /// Base64url (no padding) Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint was signed by key {found}, not {expected}")]
    WrongKey { expected: String, found: String },
    #[error("checkpoint signature does not verify")]
    BadSignature,
    #[error("checkpoint head hash is not 32 bytes of hex")]
    BadHash,
    #[error("public key must be 32 bytes, base64url")]
    BadPublicKey,
}

impl Checkpoint {
    pub fn message(seq: i64, head_hash: &EntryHash, signed_at: Timestamp, key_id: &str) -> Vec<u8> {
        let mut message = Vec::with_capacity(TAG.len() + 8 + 32 + 8 + 4 + key_id.len());
        message.extend_from_slice(TAG);
        message.extend_from_slice(&(seq as u64).to_be_bytes());
        message.extend_from_slice(&head_hash.0);
        message.extend_from_slice(&signed_at.unix_us().to_be_bytes());
        message.extend_from_slice(&(key_id.len() as u32).to_be_bytes());
        message.extend_from_slice(key_id.as_bytes());
        message
    }

    /// Verifies the signature with a raw 32-byte Ed25519 public key.
    pub fn verify(&self, public_key: &[u8]) -> Result<(), CheckpointError> {
        let expected_id = key_id_for(public_key);
        if expected_id != self.key_id {
            return Err(CheckpointError::WrongKey { expected: expected_id, found: self.key_id.clone() });
        }
        let hash = EntryHash::from_hex(&self.head_hash).ok_or(CheckpointError::BadHash)?;
        let signature = URL_SAFE_NO_PAD.decode(&self.signature).map_err(|_| CheckpointError::BadSignature)?;
        let message = Checkpoint::message(self.seq, &hash, self.signed_at, &self.key_id);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&message, &signature)
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// A key's id: the first 8 bytes of SHA-256 of the raw public key, hex.
pub fn key_id_for(public_key: &[u8]) -> String {
    hex::encode(&digest::digest(&digest::SHA256, public_key).as_ref()[..8])
}

/// Parses a public key given as base64url (with or without padding) or hex.
pub fn parse_public_key(text: &str) -> Result<Vec<u8>, CheckpointError> {
    let text = text.trim();
    let decoded = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
        .filter(|b| b.len() == 32)
        .or_else(|| hex::decode(text).ok().filter(|b| b.len() == 32));
    decoded.ok_or(CheckpointError::BadPublicKey)
}
