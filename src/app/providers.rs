//! The outside services a province plugs in: the SMS gateway that delivers one-time codes and
//! the real-name register that checks an identity. The traits say what the service needs and
//! nothing of how it is reached; the configured implementations are chosen at start
//! (`--sms-provider`, `--identity-provider`): the `dev` ones here, the `http` ones in
//! `src/providers/`.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::citizen::{CitizenName, IdNumber, Phone};
use crate::domain::one_time_code::{CodePurpose, OneTimeCode};
use crate::domain::time::Timestamp;

/// What a provider answered, when it did not say yes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered, and said no (the identity does not match, the number cannot take
    /// messages).
    #[error("refused by the provider: {0}")]
    Refused(String),
    /// The provider could not be reached or failed, after the configured retries.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
}

/// Delivers a one-time code to a phone.
#[async_trait]
pub trait SmsSender: Send + Sync + std::fmt::Debug {
    async fn send_code(
        &self,
        phone: &Phone,
        purpose: CodePurpose,
        code: &OneTimeCode,
        ttl_s: i64,
    ) -> Result<(), ProviderError>;

    /// Delivers a notice (no code): that a waitlist's voucher came to the person
    /// (docs/waitlist.md). `purpose` names the kind of notice for the gateway.
    async fn send_notice(
        &self,
        phone: &Phone,
        purpose: &'static str,
        text: &str,
    ) -> Result<(), ProviderError>;

    /// True only for a stand-in that sends nothing (the server refuses it in production).
    fn is_development(&self) -> bool {
        false
    }

    /// The development outbox, shown at `GET /v1/dev/sms`; only [`DevSms`] has one.
    fn dev_outbox(&self) -> Option<&DevSms> {
        None
    }
}

/// The real-name check at registration: does this person exist, and own this phone?
#[async_trait]
pub trait IdentityVerifier: Send + Sync + std::fmt::Debug {
    async fn verify_registration(
        &self,
        name: &CitizenName,
        id: &IdNumber,
        phone: &Phone,
    ) -> Result<(), ProviderError>;

    /// True only for a stand-in that checks nothing (the server refuses it in production).
    fn is_development(&self) -> bool {
        false
    }
}

/// Development real-name check: any well-formed identity passes. Never in production.
#[derive(Debug, Default)]
pub struct DevIdentityVerifier;

#[async_trait]
impl IdentityVerifier for DevIdentityVerifier {
    async fn verify_registration(
        &self,
        _: &CitizenName,
        _: &IdNumber,
        _: &Phone,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    fn is_development(&self) -> bool {
        true
    }
}

/// A code the development SMS provider "sent".
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SentCode {
    pub phone: String,
    pub purpose: CodePurpose,
    pub code: String,
    #[schema(value_type = String, format = DateTime)]
    pub sent_at: Timestamp,
}

/// Development SMS: keeps the last [`DevSms::KEPT`] codes in memory instead of sending them, for
/// tests and demonstrations to read at `GET /v1/dev/sms`. Never in production.
/// A notice the `dev` SMS provider kept instead of sending it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SentNotice {
    pub phone: String,
    pub purpose: String,
    pub text: String,
    #[schema(value_type = String, format = DateTime)]
    pub sent_at: Timestamp,
}

#[derive(Debug, Default)]
pub struct DevSms {
    outbox: Mutex<VecDeque<SentCode>>,
    notices: Mutex<VecDeque<SentNotice>>,
}

impl DevSms {
    pub const KEPT: usize = 1_000;

    /// The codes sent to this phone still kept, newest first.
    pub fn sent_to(&self, phone: &Phone) -> Vec<SentCode> {
        let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.iter().rev().filter(|sent| sent.phone == phone.as_str()).cloned().collect()
    }

    /// The notices kept for `phone`, newest first.
    pub fn notices_to(&self, phone: &Phone) -> Vec<SentNotice> {
        let notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        notices.iter().rev().filter(|sent| sent.phone == phone.as_str()).cloned().collect()
    }
}

#[async_trait]
impl SmsSender for DevSms {
    async fn send_code(
        &self,
        phone: &Phone,
        purpose: CodePurpose,
        code: &OneTimeCode,
        _ttl_s: i64,
    ) -> Result<(), ProviderError> {
        let sent = SentCode {
            phone: phone.as_str().to_owned(),
            purpose,
            code: code.as_str().to_owned(),
            sent_at: Timestamp::now(),
        };
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if outbox.len() >= Self::KEPT {
            outbox.pop_front();
        }
        outbox.push_back(sent);
        Ok(())
    }

    async fn send_notice(
        &self,
        phone: &Phone,
        purpose: &'static str,
        text: &str,
    ) -> Result<(), ProviderError> {
        let sent = SentNotice {
            phone: phone.as_str().to_owned(),
            purpose: purpose.to_owned(),
            text: text.to_owned(),
            sent_at: Timestamp::now(),
        };
        let mut notices = self.notices.lock().unwrap_or_else(|p| p.into_inner());
        if notices.len() >= Self::KEPT {
            notices.pop_front();
        }
        notices.push_back(sent);
        Ok(())
    }

    fn is_development(&self) -> bool {
        true
    }

    fn dev_outbox(&self) -> Option<&DevSms> {
        Some(self)
    }
}
