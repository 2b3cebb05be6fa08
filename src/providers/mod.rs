//! The `http` providers: the SMS gateway and the real-name register reached over HTTP(S), each
//! call signed with a shared secret (see docs/citizens.md, "Providers over HTTP"). The traits
//! they implement are the application's (`app::providers`); only this module knows HTTP
//! clients.
//!
//! Every call is a `POST` of a JSON body with two headers:
//! `X-Wenhui-Timestamp` (Unix seconds) and `X-Wenhui-Signature`
//! (`v1=` and the lowercase hex of HMAC-SHA256(secret, timestamp + "." + body)). A call that
//! times out, cannot connect, or is answered 429 or 5xx is tried again, up to the configured
//! retries, with a short doubling pause; then the provider is unavailable (503 to the client).

mod identity;
mod sms;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ring::hmac;

pub use identity::HttpIdentityVerifier;
pub use sms::HttpSms;

use crate::app::providers::ProviderError;

pub const TIMESTAMP_HEADER: &str = "x-wenhui-timestamp";
pub const SIGNATURE_HEADER: &str = "x-wenhui-signature";

/// Where an `http` provider is and how it is called.
#[derive(Clone)]
pub struct HttpProviderConfig {
    pub url: String,
    /// The shared secret the calls are signed with (at least 16 bytes).
    pub secret: Vec<u8>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How many times a failed attempt is tried again.
    pub retries: u32,
}

impl fmt::Debug for HttpProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProviderConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl HttpProviderConfig {
    /// Reads the shared secret from `secret_file` (a trailing newline is not part of it).
    pub fn from_file(
        url: String,
        secret_file: &Path,
        timeout: Duration,
        retries: u32,
    ) -> anyhow::Result<HttpProviderConfig> {
        anyhow::ensure!(
            url.starts_with("https://") || url.starts_with("http://"),
            "a provider URL starts with https:// or http://"
        );
        let mut secret = std::fs::read(secret_file)
            .with_context(|| format!("reading the provider secret {}", secret_file.display()))?;
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        anyhow::ensure!(secret.len() >= 16, "{} holds fewer than 16 bytes", secret_file.display());
        Ok(HttpProviderConfig { url, secret, timeout, retries })
    }
}

/// The signature of a call: `v1=` and hex HMAC-SHA256(secret, timestamp "." body).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1={}", hex::encode(context.sign().as_ref()))
}

/// A client that signs each call and retries what may succeed on another try.
#[derive(Debug)]
struct SignedClient {
    client: reqwest::Client,
    config: HttpProviderConfig,
}

/// A provider's final answer: its status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl SignedClient {
    fn new(config: HttpProviderConfig) -> anyhow::Result<SignedClient> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .context("building the provider's HTTP client")?;
        Ok(SignedClient { client, config })
    }

    /// POSTs `body`, signed, until an answer that is not worth retrying, or the retries run out.
    async fn post(&self, body: Vec<u8>) -> Result<Answer, ProviderError> {
        let mut pause = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let failure = match self.attempt(&body).await {
                Ok(answer) if !retryable(answer.status) => return Ok(answer),
                Ok(answer) => format!("answered {}", answer.status),
                Err(error) => error,
            };
            if attempt >= self.config.retries {
                return Err(ProviderError::Unavailable(failure));
            }
            tracing::warn!(attempt, failure, "provider call failed; trying again");
            attempt += 1;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<Answer, String> {
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(&self.config.secret, timestamp, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(describe)?.to_vec();
        Ok(Answer { status, body })
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

/// A transport error, without the request (nothing of the body reaches a log).
fn describe(error: reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    format!("the call {what}")
}
