//! Citizens: registration with real-name identity, sessions, and token verification that costs
//! no database round trip at rush load (tokens are cached in memory after first use).
//!
//! A session can be revoked before it expires (the citizen signs out, or a province_admin revokes
//! every session of a citizen). The revoking process drops the token from its cache at once and
//! tells the other nodes (`app::events`), which drop it within about a second; as a safety net
//! every process also reads the feed of recent revocations every [`REVOCATION_POLL`] and drops
//! those tokens, so a revocation reaches all of them within that time even if a notice is lost. The feed costs one small
//! indexed query per poll, however many tokens are cached: a rush of a million signed-in
//! citizens still authenticates from memory.
//!
//! Identity numbers and phones are never stored in the clear: a keyed hash (HMAC-SHA256 under a
//! server secret) for uniqueness and a masked form for display.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::ids::CitizenId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::codes::{CodeError, Codes};
use super::events::NodeEvent;
use super::providers::ProviderError;
use crate::domain::citizen::{CitizenName, IdNumber, Phone};
use crate::domain::one_time_code::{CodePurpose, OneTimeCode};
use crate::domain::time::{Clock, Timestamp};
use crate::storage::{Constraint, NewCitizen, NewSession, Storage, StorageError, WriteError};

pub const TOKEN_TTL_S: i64 = 30 * 24 * 3600;
const TOKEN_PREFIX: &str = "wh_ct_";
const TOKEN_CACHE_MAX: usize = 1_000_000;

/// How often each process reads the feed of revoked sessions.
pub const REVOCATION_POLL: Duration = Duration::from_secs(5);

/// How far before its last successful poll each poll reads the feed again, so that a revocation
/// committed late, stamped by a process whose clock is a little behind, or racing a cache fill,
/// is still seen. Dropping a token twice is harmless.
const REVOCATION_OVERLAP_S: i64 = 120;

/// Revocations read per poll; a poll that finds more clears the whole cache instead.
const REVOCATION_PAGE: i64 = 10_000;

pub use super::providers::{DevIdentityVerifier, IdentityVerifier};

#[derive(Debug, thiserror::Error)]
pub enum CitizenError {
    #[error("this ID number is already registered")]
    AlreadyRegistered,
    #[error("identity check failed: {0}")]
    IdentityRejected(String),
    #[error("the real-name register is unavailable; retry later")]
    IdentityUnavailable(String),
    #[error(transparent)]
    Code(#[from] CodeError),
    #[error("no citizen with this ID number and phone")]
    UnknownCitizen,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Session {
    pub citizen_id: CitizenId,
    pub token: String,
    pub expires_at: Timestamp,
}

pub struct Citizens {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    secret: Vec<u8>,
    verifier: Arc<dyn IdentityVerifier>,
    codes: Codes,
    tokens: Mutex<HashMap<[u8; 32], (CitizenId, Timestamp)>>,
}

impl Citizens {
    pub fn new(
        store: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        secret: Vec<u8>,
        verifier: Arc<dyn IdentityVerifier>,
        codes: Codes,
    ) -> Citizens {
        Citizens { store, clock, secret, verifier, codes, tokens: Mutex::new(HashMap::new()) }
    }

    /// One-time codes: sending them (`POST /v1/citizens/codes`), and the SMS provider.
    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    /// Registers a citizen who holds `code`, sent to `phone` for registration, once the
    /// real-name register knows them. The code is used up only if the check passes.
    pub async fn register(
        &self,
        name: CitizenName,
        id: IdNumber,
        phone: Phone,
        code: &OneTimeCode,
    ) -> Result<Session, CitizenError> {
        let matched = self.codes.check(&phone, CodePurpose::Register, code).await?;
        self.verifier.verify_registration(&name, &id, &phone).await.map_err(|error| match error {
            ProviderError::Refused(why) => CitizenError::IdentityRejected(why),
            ProviderError::Unavailable(why) => CitizenError::IdentityUnavailable(why),
        })?;
        self.codes.spend(matched).await?;
        let now = self.clock.now();
        let citizen = NewCitizen {
            id: CitizenId::new_v7(),
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
            Err(WriteError::Constraint(Constraint::CitizenIdNumber)) => {
                return Err(CitizenError::AlreadyRegistered);
            }
            Err(WriteError::Storage(e)) => return Err(e.into()),
            Err(other) => return Err(StorageError::Corrupt(other.to_string()).into()),
        }
        self.cache(&session);
        Ok(Session { citizen_id: citizen.id, token, expires_at: session.expires_at })
    }

    /// What registration and sign-in attempts are counted by (`http::rate_limit`): the keyed
    /// hashes of the ID number and of the phone.
    pub fn identity_keys(&self, id: &IdNumber, phone: &Phone) -> [[u8; 32]; 2] {
        [id.keyed_hash(&self.secret), phone.keyed_hash(&self.secret)]
    }

    /// The keyed hash a phone is stored as (a citizen's `phone_hash`).
    pub fn phone_hash(&self, phone: &Phone) -> [u8; 32] {
        phone.keyed_hash(&self.secret)
    }

    pub async fn sign_in(
        &self,
        id: IdNumber,
        phone: Phone,
        code: &OneTimeCode,
    ) -> Result<Session, CitizenError> {
        let matched = self.codes.check(&phone, CodePurpose::SignIn, code).await?;
        let record = self.store.citizen_by_id_hash(&id.keyed_hash(&self.secret)).await?;
        let record = record.ok_or(CitizenError::UnknownCitizen)?;
        if record.phone_hash != phone.keyed_hash(&self.secret) {
            return Err(CitizenError::UnknownCitizen);
        }
        self.codes.spend(matched).await?;
        let (token, session) = self.new_session(record.id, self.clock.now())?;
        self.store.insert_session(&session).await?;
        self.cache(&session);
        Ok(Session { citizen_id: record.id, token, expires_at: session.expires_at })
    }

    /// The citizen a token belongs to, if it is valid now. Served from memory after first use
    /// (revoked tokens are dropped from memory by [`spawn_revocation_feed`]).
    pub async fn authenticate(&self, token: &str) -> Result<Option<CitizenId>, StorageError> {
        let Some(hash) = well_formed_token_hash(token) else { return Ok(None) };
        let now = self.clock.now();
        let cached = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&hash).copied();
        let (citizen_id, expires_at) = match cached {
            Some(found) => found,
            None => {
                let Some(session) = self.store.session(&hash).await? else { return Ok(None) };
                let found = (session.citizen_id, session.expires_at);
                self.insert_token(hash, found);
                found
            }
        };
        Ok((now < expires_at).then_some(citizen_id))
    }

    /// Signs out: revokes the session of this token. Revoking a token that is unknown, expired
    /// or already revoked is not an error, so a retried sign-out gets the same answer.
    pub async fn sign_out(&self, token: &str) -> Result<(), StorageError> {
        let Some(hash) = well_formed_token_hash(token) else { return Ok(()) };
        self.store.revoke_session(&hash, self.clock.now()).await?;
        self.forget_token(&hash);
        self.tell_other_nodes(NodeEvent::SessionRevoked(hash)).await;
        Ok(())
    }

    /// Revokes every session of a citizen; `None` if there is no such citizen.
    pub async fn revoke_all(&self, citizen_id: CitizenId) -> Result<Option<u64>, StorageError> {
        let revoked = self.store.revoke_citizen_sessions(citizen_id, self.clock.now()).await?;
        if revoked.is_some() {
            self.forget_citizen(citizen_id);
            self.tell_other_nodes(NodeEvent::CitizenSessionsRevoked(citizen_id)).await;
        }
        Ok(revoked)
    }

    /// Sends a revocation to the other nodes, which forget the tokens within about a second; if
    /// it cannot be sent, the revocation feed they poll still brings it.
    async fn tell_other_nodes(&self, event: NodeEvent) {
        if let Err(error) = self.store.publish_notice(&event.encode()).await {
            tracing::warn!(%error, "could not notify the other nodes of a revocation; their poll will see it");
        }
    }

    /// Drops the token with this hash from memory (revoked on another node).
    pub fn forget_token(&self, hash: &[u8; 32]) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }

    /// Drops every token of a citizen from memory.
    pub fn forget_citizen(&self, citizen_id: CitizenId) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, (holder, _)| *holder != citizen_id);
    }

    /// Drops every token from memory: each is read from the database again on its next use.
    pub fn forget_every_token(&self) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Drops from memory every token revoked at or after `since` (by any process), reading at
    /// most `page` revocations: when there are more, it forgets every cached token instead (each
    /// is then read from the database again on its next use).
    pub async fn drop_revoked_since(&self, since: Timestamp, page: i64) -> Result<FeedPoll, StorageError> {
        assert!(page > 0, "a revocation page holds at least one revocation");
        let revoked = self.store.revoked_sessions_since(since, page).await?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if revoked.len() >= page as usize {
            tokens.clear();
            return Ok(FeedPoll::ForgotEveryToken);
        }
        for session in &revoked {
            if let Ok(hash) = <[u8; 32]>::try_from(session.token_hash.as_slice()) {
                tokens.remove(&hash);
            }
        }
        Ok(FeedPoll::Dropped(revoked.len()))
    }

    fn new_session(
        &self,
        citizen_id: CitizenId,
        now: Timestamp,
    ) -> Result<(String, NewSession), StorageError> {
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
            self.insert_token(hash, (session.citizen_id, session.expires_at));
        }
    }

    fn insert_token(&self, hash: [u8; 32], value: (CitizenId, Timestamp)) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= TOKEN_CACHE_MAX {
            tokens.clear();
        }
        tokens.insert(hash, value);
    }
}

/// What one read of the revocation feed did to the token cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedPoll {
    /// These many revocations were read and their tokens dropped.
    Dropped(usize),
    /// More revocations than a page: every cached token was forgotten.
    ForgotEveryToken,
}

/// Reads the revocation feed every `every` and drops revoked tokens from `citizens`' memory, for
/// as long as the task runs. Each poll reads from [`REVOCATION_OVERLAP_S`] before the start of the
/// last poll that succeeded, so a database outage misses nothing.
pub fn spawn_revocation_feed(
    citizens: Arc<Citizens>,
    clock: Arc<dyn Clock>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_success = clock.now();
        loop {
            ticker.tick().await;
            let started = clock.now();
            let since = last_success.plus_seconds(-REVOCATION_OVERLAP_S);
            match citizens.drop_revoked_since(since, REVOCATION_PAGE).await {
                Ok(poll) => {
                    if poll == FeedPoll::ForgotEveryToken {
                        tracing::info!(
                            page = REVOCATION_PAGE,
                            "a page of revocations or more: token cache cleared"
                        );
                    }
                    last_success = started;
                }
                Err(error) => tracing::warn!(%error, "reading the session revocation feed failed"),
            }
        }
    })
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
