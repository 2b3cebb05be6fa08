//! The SMS gateway over HTTP: `POST {url}` with `{"phone", "purpose", "code", "ttl_s"}` (a
//! one-time code) or `{"phone", "purpose", "text"}` (a notice); any 2xx is delivered, another 4xx
//! refused, and timeouts, 429 and 5xx are retried.

use async_trait::async_trait;

use super::{HttpProviderConfig, SignedClient};
use crate::app::providers::{ProviderError, SmsSender};
use crate::domain::citizen::Phone;
use crate::domain::one_time_code::{CodePurpose, OneTimeCode};

#[derive(Debug)]
pub struct HttpSms(SignedClient);

impl HttpSms {
    pub fn new(config: HttpProviderConfig) -> anyhow::Result<HttpSms> {
        Ok(HttpSms(SignedClient::new(config)?))
    }
}

#[async_trait]
impl SmsSender for HttpSms {
    async fn send_code(
        &self,
        phone: &Phone,
        purpose: CodePurpose,
        code: &OneTimeCode,
        ttl_s: i64,
    ) -> Result<(), ProviderError> {
        let body = serde_json::json!({
            "phone": phone.as_str(),
            "purpose": purpose.as_str(),
            "code": code.as_str(),
            "ttl_s": ttl_s,
        });
        let answer = self.0.post(body.to_string().into_bytes()).await?;
        match answer.status {
            200..=299 => Ok(()),
            status => Err(ProviderError::Refused(format!("the SMS gateway answered {status}"))),
        }
    }

    async fn send_notice(
        &self,
        phone: &Phone,
        purpose: &'static str,
        text: &str,
    ) -> Result<(), ProviderError> {
        let body = serde_json::json!({ "phone": phone.as_str(), "purpose": purpose, "text": text });
        let answer = self.0.post(body.to_string().into_bytes()).await?;
        match answer.status {
            200..=299 => Ok(()),
            status => Err(ProviderError::Refused(format!("the SMS gateway answered {status}"))),
        }
    }
}
