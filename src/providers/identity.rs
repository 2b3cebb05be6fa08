//! The real-name register over HTTP: `POST {url}` with `{"name", "id_number", "phone"}`,
//! answered 200 `{"match": true}` (known, and the phone is theirs) or `{"match": false,
//! "reason": "..."}`. Another answer, after the retries, is the register being unavailable.

use async_trait::async_trait;

use super::{HttpProviderConfig, SignedClient};
use crate::app::providers::{IdentityVerifier, ProviderError};
use crate::domain::citizen::{CitizenName, IdNumber, Phone};

#[derive(Debug)]
pub struct HttpIdentityVerifier(SignedClient);

impl HttpIdentityVerifier {
    pub fn new(config: HttpProviderConfig) -> anyhow::Result<HttpIdentityVerifier> {
        Ok(HttpIdentityVerifier(SignedClient::new(config)?))
    }
}

#[derive(serde::Deserialize)]
struct Verdict {
    #[serde(rename = "match")]
    matched: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[async_trait]
impl IdentityVerifier for HttpIdentityVerifier {
    async fn verify_registration(
        &self,
        name: &CitizenName,
        id: &IdNumber,
        phone: &Phone,
    ) -> Result<(), ProviderError> {
        let body = serde_json::json!({
            "name": name.as_str(),
            "id_number": id.as_str(),
            "phone": phone.as_str(),
        });
        let answer = self.0.post(body.to_string().into_bytes()).await?;
        if answer.status != 200 {
            let status = answer.status;
            return Err(ProviderError::Unavailable(format!("the real-name register answered {status}")));
        }
        let verdict: Verdict = serde_json::from_slice(&answer.body).map_err(|_| {
            ProviderError::Unavailable("the real-name register's answer is not {\"match\": bool}".into())
        })?;
        match verdict.matched {
            true => Ok(()),
            false => Err(ProviderError::Refused(
                verdict.reason.unwrap_or_else(|| "the real-name register does not know this person".into()),
            )),
        }
    }
}
