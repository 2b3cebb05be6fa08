//! The service's Ed25519 signing keys, kept as PKCS#8 files (mode 0600) in the data directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::domain::checkpoint::{Checkpoint, key_id_for};
use crate::domain::ledger::LedgerHead;
use crate::domain::time::Timestamp;

pub struct SigningKey {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the key at `path`, or generates one there (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
        if path.exists() {
            let pkcs8 = fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
            return SigningKey::from_pkcs8(&pkcs8)
                .with_context(|| format!("{} is not an Ed25519 PKCS#8 key", path.display()));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("could not generate an Ed25519 key"))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating key {}", path.display()))?;
        file.write_all(pkcs8.as_ref())?;
        file.sync_all()?;
        tracing::info!(path = %path.display(), "generated a new signing key");
        SigningKey::from_pkcs8(pkcs8.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow::anyhow!("bad Ed25519 key: {e}"))?;
        let key_id = key_id_for(pair.public_key().as_ref());
        Ok(SigningKey { pair, key_id })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key())
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// Signs the current head of the ledger.
    pub fn sign_checkpoint(&self, head: &LedgerHead, signed_at: Timestamp) -> Checkpoint {
        let message = Checkpoint::message(head.seq, &head.hash, signed_at, &self.key_id);
        Checkpoint {
            seq: head.seq,
            head_hash: head.hash.to_hex(),
            signed_at,
            key_id: self.key_id.clone(),
            signature: URL_SAFE_NO_PAD.encode(self.sign(&message)),
        }
    }
}

/// Where the ledger checkpoint key lives unless configured otherwise.
pub fn default_ledger_key_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("ledger-checkpoint.pk8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::LedgerHead;

    #[test]
    fn generated_key_is_private_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/k.pk8");
        let first = SigningKey::load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let second = SigningKey::load_or_create(&path).expect("load");
        assert_eq!(first.key_id(), second.key_id());
    }

    #[test]
    fn checkpoint_signature_verifies_and_detects_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::load_or_create(&dir.path().join("k")).expect("key");
        let checkpoint = key.sign_checkpoint(&LedgerHead::GENESIS, Timestamp::from_unix_us(5));
        assert_eq!(checkpoint.verify(key.public_key()), Ok(()));
        let mut edited = checkpoint.clone();
        edited.seq = 7;
        assert!(edited.verify(key.public_key()).is_err());
    }
}
