//! One-time codes by SMS: a citizen proves they hold a phone before registering or signing in.
//!
//! A code is six digits from the system's CSPRNG (`ring::rand`), sent through the configured
//! [`SmsSender`], and stored only as its keyed hash (HMAC-SHA256 under a key derived from the
//! server's citizen secret). It lives [`CodePolicy::ttl_s`], takes [`CodePolicy::max_tries`]
//! tries (each counted before the comparison, which is in constant time), and is gone once
//! used. A phone gets a new code for a purpose at most once every
//! [`CodePolicy::resend_after_s`] and [`CodePolicy::daily_cap`] times a day. A code is never
//! logged nor answered.

use std::sync::Arc;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::providers::{ProviderError, SmsSender};
use crate::domain::citizen::Phone;
use crate::domain::one_time_code::{CodePolicy, CodePurpose, IssueRefusal, OneTimeCode};
use crate::domain::time::{Clock, Timestamp};
use crate::storage::{CodeStore, CodeTry, NewCode, Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("a new code for this phone is not sent yet; retry in {} s", .0.retry_after_s())]
    NotNow(IssueRefusal),
    #[error("the SMS provider is unavailable; nothing was sent, retry later")]
    Unavailable(String),
    #[error("the SMS provider refused the message; nothing was stored")]
    Refused(String),
    #[error("the code is wrong, used, expired, or for something else")]
    Invalid,
    #[error("the code has taken its tries; ask for a new one")]
    Locked,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A code sent: when it stops working and when the next may be asked for.
#[derive(Clone, Copy, Debug)]
pub struct CodeSent {
    pub expires_at: Timestamp,
    pub resend_after_s: i64,
}

/// A code that matched, with its try counted; [`Codes::spend`] uses it up.
#[derive(Debug)]
pub struct MatchedCode {
    phone_hash: [u8; 32],
    purpose: CodePurpose,
    code_hash: Vec<u8>,
}

pub struct Codes {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    /// The key of the codes' hashes, derived from the citizen secret.
    key: hmac::Key,
    /// The citizen secret: a phone's keyed hash names its row, as in `citizens`.
    phone_secret: Vec<u8>,
    sms: Arc<dyn SmsSender>,
    policy: CodePolicy,
}

/// What the codes' key is derived with: HMAC-SHA256(citizen secret, this label).
const KEY_LABEL: &[u8] = b"wenhui one-time codes v1";

impl Codes {
    pub fn new(
        store: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        secret: &[u8],
        sms: Arc<dyn SmsSender>,
        policy: CodePolicy,
    ) -> Codes {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), KEY_LABEL);
        let key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        Codes { store, clock, key, phone_secret: secret.to_vec(), sms, policy }
    }

    pub fn sms(&self) -> &dyn SmsSender {
        self.sms.as_ref()
    }

    pub fn policy(&self) -> CodePolicy {
        self.policy
    }

    /// Sends a new code for `purpose` to `phone`, in place of any earlier one. Nothing is
    /// stored when the rate refuses it or the provider fails.
    pub async fn send(&self, phone: &Phone, purpose: CodePurpose) -> Result<CodeSent, CodeError> {
        let phone_hash = phone.keyed_hash(&self.phone_secret);
        let store: &dyn CodeStore = self.store.as_ref();
        let previous = store.code_history(&phone_hash, purpose).await?;
        let now = self.clock.now();
        let history = self.policy.admit(previous, now).map_err(CodeError::NotNow)?;
        let code = random_code()?;
        self.sms.send_code(phone, purpose, &code, self.policy.ttl_s).await.map_err(|error| {
            tracing::warn!(%error, purpose = purpose.as_str(), "sending a one-time code failed");
            match error {
                ProviderError::Refused(why) => CodeError::Refused(why),
                ProviderError::Unavailable(why) => CodeError::Unavailable(why),
            }
        })?;
        let expires_at = now.plus_seconds(self.policy.ttl_s);
        let new = NewCode {
            phone_hash: phone_hash.to_vec(),
            purpose,
            code_hash: code.keyed_hash(&self.key, phone, purpose).to_vec(),
            expires_at,
            history,
        };
        if !store.put_code(&new, previous).await? {
            // Another request for this phone and purpose stored its code first: that one holds.
            let retry_after_s = self.policy.resend_after_s.max(1);
            return Err(CodeError::NotNow(IssueRefusal::TooSoon { retry_after_s }));
        }
        tracing::info!(phone = %phone.masked(), purpose = purpose.as_str(), "one-time code sent");
        Ok(CodeSent { expires_at, resend_after_s: self.policy.resend_after_s })
    }

    /// The keyed hash of a phone, as `citizens` and `staff_people` store it.
    pub fn phone_hash(&self, phone: &Phone) -> [u8; 32] {
        phone.keyed_hash(&self.phone_secret)
    }

    /// The time now, on the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sends a fresh code to a staff person for `enrolment` and returns its keyed hash, bound to
    /// the enrolment, for the enrolment's row. Not counted against the phone's citizen codes:
    /// only an admin's authenticated request sends one. Nothing is to be stored if it fails.
    pub async fn send_enrolment_code(
        &self,
        phone: &Phone,
        enrolment: uuid::Uuid,
        ttl_s: i64,
    ) -> Result<Vec<u8>, CodeError> {
        let code = random_code()?;
        let purpose = CodePurpose::StaffEnrol;
        self.sms.send_code(phone, purpose, &code, ttl_s).await.map_err(|error| {
            tracing::warn!(%error, purpose = purpose.as_str(), "sending a one-time code failed");
            match error {
                ProviderError::Refused(why) => CodeError::Refused(why),
                ProviderError::Unavailable(why) => CodeError::Unavailable(why),
            }
        })?;
        tracing::info!(phone = %phone.masked(), purpose = purpose.as_str(), "one-time code sent");
        Ok(code.enrolment_hash(&self.key, enrolment).to_vec())
    }

    /// Whether `code` is the one sent for `enrolment` (`stored`: its hash), in constant time.
    pub fn enrolment_code_matches(&self, enrolment: uuid::Uuid, code: &OneTimeCode, stored: &[u8]) -> bool {
        code.matches_enrolment(&self.key, enrolment, stored)
    }

    /// Counts a try at `code` and compares it in constant time with the code sent; the code
    /// stays until [`Codes::spend`].
    pub async fn check(
        &self,
        phone: &Phone,
        purpose: CodePurpose,
        code: &OneTimeCode,
    ) -> Result<MatchedCode, CodeError> {
        let phone_hash = phone.keyed_hash(&self.phone_secret);
        let store: &dyn CodeStore = self.store.as_ref();
        let now = self.clock.now();
        match store.try_code(&phone_hash, purpose, now, self.policy.max_tries).await? {
            CodeTry::Counted { code_hash } if code.matches(&self.key, phone, purpose, &code_hash) => {
                Ok(MatchedCode { phone_hash, purpose, code_hash })
            }
            CodeTry::Counted { .. } | CodeTry::NoCode => Err(CodeError::Invalid),
            CodeTry::Locked => Err(CodeError::Locked),
        }
    }

    /// Uses up a matched code: `Invalid` if another request used it first.
    pub async fn spend(&self, matched: MatchedCode) -> Result<(), CodeError> {
        let store: &dyn CodeStore = self.store.as_ref();
        match store.use_code(&matched.phone_hash, matched.purpose, &matched.code_hash).await? {
            true => Ok(()),
            false => Err(CodeError::Invalid),
        }
    }
}

/// Six uniform digits: a 32-bit draw below the largest multiple of a million, reduced.
fn random_code() -> Result<OneTimeCode, StorageError> {
    const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
    let random = SystemRandom::new();
    loop {
        let mut bytes = [0u8; 4];
        random.fill(&mut bytes).map_err(|_| StorageError::Corrupt("random source failed".into()))?;
        let n = u32::from_le_bytes(bytes);
        if n < LIMIT {
            return Ok(OneTimeCode::from_number(n % 1_000_000));
        }
    }
}
