//! One secret set for all nodes: the database records a fingerprint of the citizen HMAC secret
//! (SHA-256 of an HMAC under the secret over a fixed label, so the secret itself is never
//! stored and the fingerprint is of no use for anything else), and a node whose secret gives
//! another fingerprint refuses to start, saying which secret and where it read it. The ledger's
//! checkpoint key is held to one key the same way (by its public half: checkpoints signed by
//! two keys would not verify against one). QR signing keys are checked against the public halves
//! the database records (`qr::ensure_key`).

use std::path::Path;

use ring::{digest, hmac};

use crate::domain::time::Timestamp;
use crate::storage::Storage;

/// The citizen HMAC secret's name in `secret_fingerprints`.
pub const CITIZEN_HMAC: &str = "citizen-hmac";

/// The ledger checkpoint key's name in `secret_fingerprints` (fingerprinted by its public key).
pub const LEDGER_CHECKPOINT_KEY: &str = "ledger-checkpoint-key";

/// The fingerprint of `secret` named `name`: hex SHA-256 of HMAC-SHA256(secret, label).
pub fn fingerprint(name: &str, secret: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, format!("wenhui secret fingerprint v1: {name}").as_bytes());
    digest::digest(&digest::SHA256, tag.as_ref()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Records the citizen HMAC secret's fingerprint on first start, and refuses a secret that
/// differs from the one recorded.
pub async fn check_citizen_secret(
    store: &dyn Storage,
    secret: &[u8],
    path: &Path,
    now: Timestamp,
) -> anyhow::Result<()> {
    check(store, CITIZEN_HMAC, "citizen HMAC secret", secret, path, now).await
}

/// Records the ledger checkpoint key's fingerprint (of its public key) on first start, and
/// refuses another key.
pub async fn check_ledger_key(
    store: &dyn Storage,
    public_key: &[u8],
    path: &Path,
    now: Timestamp,
) -> anyhow::Result<()> {
    check(store, LEDGER_CHECKPOINT_KEY, "ledger checkpoint key", public_key, path, now).await
}

async fn check(
    store: &dyn Storage,
    name: &str,
    what: &str,
    material: &[u8],
    path: &Path,
    now: Timestamp,
) -> anyhow::Result<()> {
    let mine = fingerprint(name, material);
    let recorded = store.secret_fingerprint(name, &mine, now.unix_us()).await?;
    anyhow::ensure!(
        recorded == mine,
        "refusing to start: the {what} read from {} is not the one this database was set up \
         with (fingerprint {} recorded, this file gives {}). Every node over one database must \
         read the same keys directory: copy the first node's (--keys-dir, see \
         docs/operations.md, \"Running many nodes\")",
        path.display(),
        short(&recorded),
        short(&mine),
    );
    Ok(())
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_stable_and_tells_secrets_apart() {
        let a = fingerprint(CITIZEN_HMAC, &[1u8; 32]);
        assert_eq!(a, fingerprint(CITIZEN_HMAC, &[1u8; 32]));
        assert_ne!(a, fingerprint(CITIZEN_HMAC, &[2u8; 32]));
        assert_ne!(a, fingerprint("other", &[1u8; 32]));
        assert_eq!(a.len(), 64);
        assert!(!a.contains(&hex(&[1u8; 32])), "the secret is not in its fingerprint");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
