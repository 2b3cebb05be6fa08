//! QR signing keys and token issuance. The token format lives in the merchant SDK
//! (`wenhui_merchant_sdk::token`) so that the service and every till share one implementation.
//!
//! Private keys are PKCS#8 files in `<keys dir>/qr/<key id>.pk8` (`--keys-dir`, by default
//! `<data dir>/keys`) (mode 0600); the database
//! records each key's public half and validity (`qr_keys`). `wenhui keys rotate-qr` adds a key
//! and retires the previous one: tokens it signed before retirement stay valid until they expire
//! (at most 120 s), so a rotation never breaks a token in flight.

pub mod image;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;
use wenhui_merchant_sdk::token::{KeyRing, MAX_LIFETIME_S, TokenKind, TokenPayload, VerificationKey};

use crate::app::signing::SigningKey;
use crate::domain::time::{Clock, Timestamp};
use crate::storage::{QrKeyRecord, Storage, StorageError, TillStore};

/// How long a freshly issued token lives.
pub const TOKEN_LIFETIME_S: i64 = 90;
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The QR keys' folder in the keys directory (`--keys-dir`).
pub fn key_dir(keys_dir: &Path) -> PathBuf {
    keys_dir.join("qr")
}

/// Generates a key, stores its file and its public record (retiring the previous key).
pub async fn rotate(store: &dyn TillStore, keys_dir: &Path, now: Timestamp) -> anyhow::Result<String> {
    let dir = key_dir(keys_dir);
    let staging = dir.join(format!("new-{}.pk8", Uuid::new_v4()));
    let key = SigningKey::load_or_create(&staging)?;
    let final_path = dir.join(format!("{}.pk8", key.key_id()));
    std::fs::rename(&staging, &final_path).context("naming the new QR key")?;
    let record = QrKeyRecord {
        key_id: key.key_id().to_owned(),
        public_key: key.public_key().to_vec(),
        valid_from: now,
        retired_at: None,
    };
    store.insert_qr_key(&record).await?;
    Ok(record.key_id)
}

/// Makes sure a current QR key exists (first start), and that this node's file for it is the
/// key whose public half the database records (every node must sign with the same key).
pub async fn ensure_key(store: &dyn TillStore, keys_dir: &Path, now: Timestamp) -> anyhow::Result<()> {
    let keys = store.qr_keys().await?;
    let Some(current) = keys.iter().find(|k| k.retired_at.is_none()) else {
        return rotate(store, keys_dir, now).await.map(|_| ());
    };
    let path = key_dir(keys_dir).join(format!("{}.pk8", current.key_id));
    anyhow::ensure!(
        path.exists(),
        "the current QR key {} has no private key file in {}",
        current.key_id,
        key_dir(keys_dir).display()
    );
    let pkcs8 = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let key = SigningKey::from_pkcs8(&pkcs8)?;
    anyhow::ensure!(
        key.public_key() == current.public_key.as_slice(),
        "refusing to start: the QR signing key {} read from {} is not the key the database records \
         (its public half differs). Every node over one database must read the same keys directory",
        current.key_id,
        path.display()
    );
    Ok(())
}

/// The published verification keys: the current one and the one before it.
pub fn key_ring(records: &[QrKeyRecord]) -> KeyRing {
    let keys = records
        .iter()
        .take(2)
        .map(|record| VerificationKey {
            key_id: record.key_id.clone(),
            public_key: URL_SAFE_NO_PAD.encode(&record.public_key),
            status: if record.retired_at.is_none() { "current" } else { "previous" }.to_owned(),
            valid_from_s: record.valid_from.unix_us().div_euclid(1_000_000),
            valid_until_s: record.retired_at.map(|t| t.unix_us().div_euclid(1_000_000)),
        })
        .collect();
    KeyRing { keys }
}

struct Loaded {
    at: Instant,
    signer: Arc<SigningKey>,
    ring: KeyRing,
}

/// Issues tokens with the current key and verifies them against the published ones; reloads
/// from the database every second, and at once when a rotation is announced (`app::events`).
pub struct QrKeys {
    store: Arc<dyn Storage>,
    keys_dir: PathBuf,
    clock: Arc<dyn Clock>,
    loaded: Mutex<Option<Arc<Loaded>>>,
}

impl QrKeys {
    pub fn new(store: Arc<dyn Storage>, keys_dir: PathBuf, clock: Arc<dyn Clock>) -> QrKeys {
        QrKeys { store, keys_dir, clock, loaded: Mutex::new(None) }
    }

    async fn current(&self) -> Result<Arc<Loaded>, StorageError> {
        let cached = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(loaded) = cached.filter(|l| l.at.elapsed() < RELOAD_EVERY) {
            return Ok(loaded);
        }
        let records = self.store.qr_keys().await?;
        let current = records
            .iter()
            .find(|k| k.retired_at.is_none())
            .ok_or_else(|| StorageError::Corrupt("no current QR key".into()))?;
        let path = key_dir(&self.keys_dir).join(format!("{}.pk8", current.key_id));
        let pkcs8 = std::fs::read(&path).map_err(|e| StorageError::Corrupt(format!("QR key file: {e}")))?;
        let signer = SigningKey::from_pkcs8(&pkcs8).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let loaded =
            Arc::new(Loaded { at: Instant::now(), signer: Arc::new(signer), ring: key_ring(&records) });
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(loaded.clone());
        Ok(loaded)
    }

    /// Reads the keys again on next use (a rotation announced by another process).
    pub fn reload(&self) {
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The keys tills should hold (GET /v1/keys).
    pub async fn ring(&self) -> Result<KeyRing, StorageError> {
        Ok(self.current().await?.ring.clone())
    }

    /// A fresh token for `subject`, valid for [`TOKEN_LIFETIME_S`].
    pub async fn issue(&self, kind: TokenKind, subject: Uuid) -> Result<(String, Timestamp), StorageError> {
        let loaded = self.current().await?;
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StorageError::Corrupt("random source failed".into()))?;
        let now_s = self.clock.now().unix_us().div_euclid(1_000_000);
        let key_id: [u8; 8] = wenhui_merchant_sdk::token::key_id_for(loaded.signer.public_key());
        let payload = TokenPayload {
            kind,
            key_id,
            subject,
            nonce,
            issued_at_s: now_s,
            expires_at_s: now_s + TOKEN_LIFETIME_S.min(MAX_LIFETIME_S),
        };
        let signature = loaded.signer.sign(&payload.signing_input());
        let expires_at = Timestamp::from_unix_us(payload.expires_at_s * 1_000_000);
        Ok((payload.encode(&signature), expires_at))
    }
}

/// The token drawn as a QR code, as SVG. Drawing takes about half a millisecond of CPU, so it
/// runs on the blocking pool instead of holding a request worker through a rush of refreshes.
pub async fn svg(token: String) -> anyhow::Result<String> {
    let draw = move || crate::app::qr::image::QrSymbol::encode(token.as_bytes()).map(|symbol| symbol.svg());
    let drawn = tokio::task::spawn_blocking(draw).await.context("QR drawing task")?;
    drawn.map_err(|e| anyhow::anyhow!("QR encoding: {e}"))
}
