//! Staff API keys: `wh_sk_` followed by 32 random bytes in base64url. Shown once; the database
//! keeps only the SHA-256 of the key (a hash is enough: the key has 256 bits of entropy).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::domain::ids::StaffKeyId;

use crate::domain::staff::StaffScope;
use crate::domain::time::Timestamp;
use crate::storage::{NewStaffKey, StaffStore, StorageError};

const PREFIX: &str = "wh_sk_";

/// A freshly minted key: the secret exists only in this value.
pub struct MintedKey {
    pub id: StaffKeyId,
    pub secret: String,
}

impl std::fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedKey").field("id", &self.id).finish_non_exhaustive()
    }
}

pub fn hash_key(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// Whether a presented string has the shape of a staff key (cheap check before hashing).
pub fn looks_like_key(secret: &str) -> bool {
    secret.len() == PREFIX.len() + 43 && secret.starts_with(PREFIX)
}

/// Mints a key for `scope`. `minted_by`: the staff key that asked for it through the API (it
/// sees the secret, so the two may be one person), None at the command line.
pub async fn mint(
    store: &dyn StaffStore,
    scope: StaffScope,
    label: &str,
    minted_by: Option<StaffKeyId>,
) -> Result<MintedKey, StorageError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StorageError::Corrupt("system random source failed".into()))?;
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let id = StaffKeyId::new_v7();
    // The HTTP layer refuses control characters; the CLI's label is cleaned of them here.
    let label: String = label.trim().chars().filter(|c| !c.is_control()).take(100).collect();
    store
        .insert_staff_key(&NewStaffKey {
            id,
            key_hash: hash_key(&secret),
            scope,
            label,
            created_at: Timestamp::now(),
            minted_by,
        })
        .await?;
    Ok(MintedKey { id, secret })
}
