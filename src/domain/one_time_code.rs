//! One-time codes sent by SMS: what a code is for, its form, and the rules of issuing one (how
//! long it lives, how often a phone may get a new one, how many tries it takes). Pure: the
//! random source, the keyed hash's secret and the store are the application's.

use std::fmt;

use ring::hmac;

use super::citizen::Phone;
use super::error_code::ErrorCode;
use super::time::Timestamp;

/// What a code proves the phone's holder may do. A code for one purpose never serves another.
/// Stored as its [`CodePurpose::as_str`] text, with no CHECK in the database, so a purpose added
/// here (staff enrolment, say) needs no migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodePurpose {
    /// `POST /v1/citizens`.
    Register,
    /// `POST /v1/citizens/sessions`.
    SignIn,
    /// `POST /v1/staff/enrolments/{id}/claim`: a staff person claims the key an admin enrolled
    /// them for. Sent by the service itself, never asked for at `POST /v1/citizens/codes`.
    StaffEnrol,
}

impl CodePurpose {
    pub const ALL: [CodePurpose; 3] = [CodePurpose::Register, CodePurpose::SignIn, CodePurpose::StaffEnrol];

    pub fn as_str(self) -> &'static str {
        match self {
            CodePurpose::Register => "register",
            CodePurpose::SignIn => "sign_in",
            CodePurpose::StaffEnrol => "staff_enrol",
        }
    }

    pub fn parse(text: &str) -> Option<CodePurpose> {
        CodePurpose::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// Six ASCII digits. Its `Debug` hides the digits: a code is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeCode(String);

#[derive(Debug, thiserror::Error)]
#[error("a one-time code is six digits")]
pub struct CodeFormatError;

impl CodeFormatError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::CodeFormat
    }
}

impl OneTimeCode {
    pub const DIGITS: usize = 6;

    pub fn parse(text: &str) -> Result<OneTimeCode, CodeFormatError> {
        let text = text.trim();
        if text.len() != Self::DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeFormatError);
        }
        Ok(OneTimeCode(text.to_owned()))
    }

    /// The code for a number below 1,000,000 (from a uniform random source).
    pub fn from_number(n: u32) -> OneTimeCode {
        OneTimeCode(format!("{:06}", n % 1_000_000))
    }

    /// The digits, for the message to the phone. Do not log them.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What is stored: HMAC-SHA256 under `key` of the purpose, the phone and the code, so a
    /// stored hash names one phone and one purpose, and six digits cannot be found from it
    /// without the key.
    pub fn keyed_hash(&self, key: &hmac::Key, phone: &Phone, purpose: CodePurpose) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(key, &hash_input(self, phone, purpose)).as_ref());
        out
    }

    /// Whether `stored` is this code's keyed hash, compared in constant time (`ring::hmac::verify`).
    pub fn matches(&self, key: &hmac::Key, phone: &Phone, purpose: CodePurpose, stored: &[u8]) -> bool {
        hmac::verify(key, &hash_input(self, phone, purpose), stored).is_ok()
    }
}

impl OneTimeCode {
    /// A staff enrolment's code is bound to the enrolment rather than to the phone (kept only as
    /// its keyed hash): HMAC-SHA256 under `key` of the purpose, the enrolment's id and the code.
    pub fn enrolment_hash(&self, key: &hmac::Key, enrolment: uuid::Uuid) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(key, &enrolment_input(self, enrolment)).as_ref());
        out
    }

    /// Whether `stored` is this code's enrolment hash, compared in constant time.
    pub fn matches_enrolment(&self, key: &hmac::Key, enrolment: uuid::Uuid, stored: &[u8]) -> bool {
        hmac::verify(key, &enrolment_input(self, enrolment), stored).is_ok()
    }
}

fn enrolment_input(code: &OneTimeCode, enrolment: uuid::Uuid) -> Vec<u8> {
    let mut input = Vec::with_capacity(48);
    input.extend_from_slice(CodePurpose::StaffEnrol.as_str().as_bytes());
    input.push(0);
    input.extend_from_slice(enrolment.as_bytes());
    input.extend_from_slice(code.as_str().as_bytes());
    input
}

fn hash_input(code: &OneTimeCode, phone: &Phone, purpose: CodePurpose) -> Vec<u8> {
    let mut input = Vec::with_capacity(40);
    for part in [purpose.as_str(), phone.as_str(), code.as_str()] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    input
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeCode(******)")
    }
}

/// The rules of one-time codes. [`CodePolicy::default`] is the service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodePolicy {
    /// How long a code is valid after it is sent.
    pub ttl_s: i64,
    /// How many tries a code takes; the next one is refused even if right (`code_locked`).
    pub max_tries: i32,
    /// How soon the same phone may get a new code for the same purpose.
    pub resend_after_s: i64,
    /// How many codes one phone may get for one purpose in a day (24 hours from the first).
    pub daily_cap: i32,
}

impl Default for CodePolicy {
    fn default() -> CodePolicy {
        CodePolicy { ttl_s: 300, max_tries: 5, resend_after_s: 60, daily_cap: 10 }
    }
}

const DAY_S: i64 = 86_400;

/// The issuing history of one phone and purpose, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssueHistory {
    pub issued_at: Timestamp,
    pub day_started_at: Timestamp,
    pub issued_in_day: i32,
}

/// Why a new code is not sent now, and how long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueRefusal {
    TooSoon { retry_after_s: i64 },
    DailyCap { retry_after_s: i64 },
}

impl IssueRefusal {
    pub fn retry_after_s(self) -> i64 {
        match self {
            IssueRefusal::TooSoon { retry_after_s } | IssueRefusal::DailyCap { retry_after_s } => {
                retry_after_s
            }
        }
    }
}

impl CodePolicy {
    /// May a new code be issued at `now` after `history`? If so, the history it makes.
    pub fn admit(&self, history: Option<IssueHistory>, now: Timestamp) -> Result<IssueHistory, IssueRefusal> {
        let Some(last) = history else {
            return Ok(IssueHistory { issued_at: now, day_started_at: now, issued_in_day: 1 });
        };
        let resend_at = last.issued_at.plus_seconds(self.resend_after_s);
        if now < resend_at {
            return Err(IssueRefusal::TooSoon { retry_after_s: seconds_until(now, resend_at) });
        }
        let day_ends_at = last.day_started_at.plus_seconds(DAY_S);
        if now >= day_ends_at {
            return Ok(IssueHistory { issued_at: now, day_started_at: now, issued_in_day: 1 });
        }
        if last.issued_in_day >= self.daily_cap {
            return Err(IssueRefusal::DailyCap { retry_after_s: seconds_until(now, day_ends_at) });
        }
        Ok(IssueHistory {
            issued_at: now,
            day_started_at: last.day_started_at,
            issued_in_day: last.issued_in_day + 1,
        })
    }
}

/// Whole seconds from `now` to `then`, rounded up, at least one.
fn seconds_until(now: Timestamp, then: Timestamp) -> i64 {
    let us = then.unix_us().saturating_sub(now.unix_us());
    ((us + 999_999) / 1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_us(s * 1_000_000)
    }

    #[test]
    fn a_phone_gets_a_code_a_minute_and_ten_a_day() {
        let policy = CodePolicy::default();
        let first = policy.admit(None, at(0)).expect("first");
        assert_eq!(policy.admit(Some(first), at(59)), Err(IssueRefusal::TooSoon { retry_after_s: 1 }));
        let mut history = first;
        for n in 1..10 {
            history = policy.admit(Some(history), at(60 * n)).expect("within the cap");
        }
        assert_eq!(history.issued_in_day, 10);
        let refused = policy.admit(Some(history), at(3_600));
        assert_eq!(refused, Err(IssueRefusal::DailyCap { retry_after_s: DAY_S - 3_600 }));
        let next_day = policy.admit(Some(history), at(DAY_S)).expect("a new day");
        assert_eq!((next_day.issued_in_day, next_day.day_started_at), (1, at(DAY_S)));
    }

    #[test]
    fn codes_are_six_digits_and_never_shown_by_debug() {
        assert!(OneTimeCode::parse("12345").is_err());
        assert!(OneTimeCode::parse("12345a").is_err());
        assert!(OneTimeCode::parse("１２３４５６").is_err());
        let code = OneTimeCode::parse("012345").expect("six digits");
        assert_eq!(OneTimeCode::from_number(12_345), code);
        assert!(!format!("{code:?}").contains("12345"));
    }

    #[test]
    fn a_hash_names_its_phone_and_purpose() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        let phone = Phone::parse("13800138000").expect("phone");
        let other = Phone::parse("13800138001").expect("phone");
        let code = OneTimeCode::parse("123456").expect("code");
        let stored = code.keyed_hash(&key, &phone, CodePurpose::SignIn);
        assert!(code.matches(&key, &phone, CodePurpose::SignIn, &stored));
        assert!(!code.matches(&key, &phone, CodePurpose::Register, &stored));
        assert!(!code.matches(&key, &other, CodePurpose::SignIn, &stored));
        let wrong = OneTimeCode::parse("123457").expect("code");
        assert!(!wrong.matches(&key, &phone, CodePurpose::SignIn, &stored));
    }
}
