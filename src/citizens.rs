//! Citizens: registration with real-name identity, sessions, and token verification that costs
//! no database round trip at rush load (tokens are cached in memory after first use).
//!
//! A session can be revoked before it expires (the citizen signs out, or a province_admin revokes
//! every session of a citizen). The revoking process drops the token from its cache at once;
//! every other process re-reads a cached token at most [`SESSION_RECHECK`] after it last read it,
//! so a revocation reaches all of them within that time.
//!
//! Identity numbers and phones are never stored in the clear: a keyed hash (HMAC-SHA256 under a
//! server secret) for uniqueness and a masked form for display.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use crate::domain::citizen::{CitizenName, IdNumber, Phone};
use crate::domain::time::{Clock, Timestamp};
use crate::storage::{NewCitizen, NewSession, Storage, StorageError, WriteError};

pub const TOKEN_TTL_S: i64 = 30 * 24 * 3600;
const TOKEN_PREFIX: &str = "wh_ct_";
const TOKEN_CACHE_MAX: usize = 1_000_000;

/// How long a process trusts its cached copy of a session before reading it again.
pub const SESSION_RECHECK: Duration = Duration::from_secs(60);

/// The real identity check (SMS code, bank-card real-name check) a province plugs in.
///
/// A deployment implements this trait against its provider and passes it to
/// [`Citizens::new`]; [`DevIdentityVerifier`] is the development stand-in.
#[async_trait]
pub trait IdentityVerifier: Send + Sync {
    /// Registration: does this person exist and own this phone?
    async fn verify_registration(
        &self,
        name: &CitizenName,
        id: &IdNumber,
        phone: &Phone,
    ) -> Result<(), String>;
    /// Sign-in: is the one-time code right for this phone?
    async fn verify_sign_in(&self, phone: &Phone, code: Option<&str>) -> Result<(), String>;
}

/// Development identity checks: any well-formed identity registers; sign-in needs no code.
/// Never use in production.
#[derive(Debug, Default)]
pub struct DevIdentityVerifier;

#[async_trait]
impl IdentityVerifier for DevIdentityVerifier {
    async fn verify_registration(&self, _: &CitizenName, _: &IdNumber, _: &Phone) -> Result<(), String> {
        Ok(())
    }

    async fn verify_sign_in(&self, _: &Phone, _: Option<&str>) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CitizenError {
    #[error("this ID number is already registered")]
    AlreadyRegistered,
    #[error("identity check failed: {0}")]
    IdentityRejected(String),
    #[error("no citizen with this ID number and phone")]
    UnknownCitizen,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Session {
    pub citizen_id: Uuid,
    pub token: String,
    pub expires_at: Timestamp,
}

/// A session as this process last read it.
#[derive(Clone, Copy)]
struct CachedSession {
    citizen_id: Uuid,
    expires_at: Timestamp,
    read_at: Instant,
}

pub struct Citizens {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    secret: Vec<u8>,
    verifier: Arc<dyn IdentityVerifier>,
    session_recheck: Duration,
    tokens: Mutex<HashMap<[u8; 32], CachedSession>>,
}

impl Citizens {
    pub fn new(
        store: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        secret: Vec<u8>,
        verifier: Arc<dyn IdentityVerifier>,
    ) -> Citizens {
        Citizens {
            store,
            clock,
            secret,
            verifier,
            session_recheck: SESSION_RECHECK,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Re-read cached sessions after `recheck` instead of [`SESSION_RECHECK`].
    pub fn with_session_recheck(mut self, recheck: Duration) -> Citizens {
        self.session_recheck = recheck;
        self
    }

    pub async fn register(
        &self,
        name: CitizenName,
        id: IdNumber,
        phone: Phone,
    ) -> Result<Session, CitizenError> {
        self.verifier
            .verify_registration(&name, &id, &phone)
            .await
            .map_err(CitizenError::IdentityRejected)?;
        let now = self.clock.now();
        let citizen = NewCitizen {
            id: Uuid::now_v7(),
            id_hash: id.keyed_hash(&self.secret).to_vec(),
            id_masked: id.masked(),
            name_masked: name.masked(),
            phone_hash: phone.keyed_hash(&self.secret).to_vec(),
            phone_masked: phone.masked(),
            created_at: now,
        };
        let (token, session) = self.new_session(citizen.id, now)?;
        match self.store.insert_citizen(&citizen, &session).await {
            Ok(()) => {}
            Err(WriteError::Conflict(_)) => return Err(CitizenError::AlreadyRegistered),
            Err(WriteError::Storage(e)) => return Err(e.into()),
            Err(other) => return Err(StorageError::Corrupt(other.to_string()).into()),
        }
        self.cache(&session);
        Ok(Session { citizen_id: citizen.id, token, expires_at: session.expires_at })
    }

    pub async fn sign_in(
        &self,
        id: IdNumber,
        phone: Phone,
        code: Option<&str>,
    ) -> Result<Session, CitizenError> {
        self.verifier.verify_sign_in(&phone, code).await.map_err(CitizenError::IdentityRejected)?;
        let record = self.store.citizen_by_id_hash(&id.keyed_hash(&self.secret)).await?;
        let record = record.ok_or(CitizenError::UnknownCitizen)?;
        if record.phone_hash != phone.keyed_hash(&self.secret) {
            return Err(CitizenError::UnknownCitizen);
        }
        let (token, session) = self.new_session(record.id, self.clock.now())?;
        self.store.insert_session(&session).await?;
        self.cache(&session);
        Ok(Session { citizen_id: record.id, token, expires_at: session.expires_at })
    }

    /// The citizen a token belongs to, if it is valid now. Served from memory after first use,
    /// read again from the database once the cached copy is [`SESSION_RECHECK`] old.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Uuid>, StorageError> {
        let Some(hash) = well_formed_token_hash(token) else { return Ok(None) };
        let now = self.clock.now();
        let cached = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&hash).copied();
        let session = match cached.filter(|s| s.read_at.elapsed() < self.session_recheck) {
            Some(fresh) => fresh,
            None => {
                let Some(record) = self.store.session(&hash).await? else {
                    self.forget_token(&hash);
                    return Ok(None);
                };
                let read = CachedSession {
                    citizen_id: record.citizen_id,
                    expires_at: record.expires_at,
                    read_at: Instant::now(),
                };
                self.insert_token(hash, read);
                read
            }
        };
        Ok((now < session.expires_at).then_some(session.citizen_id))
    }

    /// Signs out: revokes the session of this token. Revoking a token that is unknown, expired
    /// or already revoked is not an error, so a retried sign-out gets the same answer.
    pub async fn sign_out(&self, token: &str) -> Result<(), StorageError> {
        let Some(hash) = well_formed_token_hash(token) else { return Ok(()) };
        self.store.revoke_session(&hash, self.clock.now()).await?;
        self.forget_token(&hash);
        Ok(())
    }

    /// Revokes every session of a citizen; `None` if there is no such citizen.
    pub async fn revoke_all(&self, citizen_id: Uuid) -> Result<Option<u64>, StorageError> {
        let revoked = self.store.revoke_citizen_sessions(citizen_id, self.clock.now()).await?;
        if revoked.is_some() {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens.retain(|_, session| session.citizen_id != citizen_id);
        }
        Ok(revoked)
    }

    fn new_session(&self, citizen_id: Uuid, now: Timestamp) -> Result<(String, NewSession), StorageError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StorageError::Corrupt("random source failed".into()))?;
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let session = NewSession {
            token_hash: token_hash(&token).to_vec(),
            citizen_id,
            expires_at: now.plus_seconds(TOKEN_TTL_S),
            created_at: now,
        };
        Ok((token, session))
    }

    fn cache(&self, session: &NewSession) {
        if let Ok(hash) = <[u8; 32]>::try_from(session.token_hash.as_slice()) {
            let read = CachedSession {
                citizen_id: session.citizen_id,
                expires_at: session.expires_at,
                read_at: Instant::now(),
            };
            self.insert_token(hash, read);
        }
    }

    fn forget_token(&self, hash: &[u8; 32]) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }

    fn insert_token(&self, hash: [u8; 32], value: CachedSession) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.clear();
        }
        tokens.insert(hash, value);
    }
}

/// The hash a token is stored under, if the token has the form this service issues.
fn well_formed_token_hash(token: &str) -> Option<[u8; 32]> {
    let well_formed = token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 43;
    well_formed.then(|| token_hash(token))
}

fn token_hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// The HMAC secret for identity hashes: 32 random bytes in the data directory (mode 0600),
/// created on first start. Losing it means re-registering everyone: back it up with the keys.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        let secret = std::fs::read(path)?;
        anyhow::ensure!(secret.len() >= 32, "{} is shorter than 32 bytes", path.display());
        return Ok(secret);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut secret = vec![0u8; 32];
    SystemRandom::new().fill(&mut secret).map_err(|_| anyhow::anyhow!("random source failed"))?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(&secret)?;
    file.sync_all()?;
    Ok(secret)
}
