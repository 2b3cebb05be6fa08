//! Merchants: a new merchant and its settlement account checked, and the four-eyes change of a settlement account (asked by one key, decided by an
//! unrelated one) and what each outcome answers. See [docs/staff.md](../../docs/staff.md).

use uuid::Uuid;

use crate::app::error::AppError;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{AccountRequestId, MerchantId, StaffKeyId};
use crate::domain::merchant::{
    AccountDecision, AccountRequest, CreditCode, DecisionRefused, Merchant, MerchantStatus, SettlementAccount,
};
use crate::domain::region::{RegionCode, RegionError, RegionLevel};
use crate::domain::season::Category;
use crate::domain::text::{PLAIN_TEXT_RULE, plain_text};
use crate::domain::time::Timestamp;
use crate::storage::{
    AccountDecisionOutcome, AccountRequestOutcome, NewAccountDecision, NewAccountRequest, Storage,
};

/// Free text of 1 to `max_chars` characters by the rule of `domain::text` (422 `invalid_field`).
pub fn text_field(value: &str, what: &str, max_chars: usize) -> Result<String, AppError> {
    match plain_text(value, max_chars) {
        Some(value) if !value.is_empty() => Ok(value.into_string()),
        _ => Err(AppError::invalid(
            ErrorCode::InvalidField,
            format!("{what} must be 1-{max_chars} characters, {PLAIN_TEXT_RULE}"),
        )),
    }
}

/// A settlement account as asked, in the request's words.
pub struct AccountAsked<'a> {
    pub bank: &'a str,
    pub account_no: &'a str,
    pub account_name: &'a str,
}

/// A settlement account, checked: 8 to 34 digits (422 `invalid_account`), a bank and a name.
pub fn settlement_account(asked: &AccountAsked<'_>) -> Result<SettlementAccount, AppError> {
    let account_no = asked.account_no.trim().to_owned();
    if !(8..=34).contains(&account_no.len()) || !account_no.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AppError::invalid(ErrorCode::InvalidAccount, "account_no must be 8-34 digits"));
    }
    Ok(SettlementAccount {
        bank: text_field(asked.bank, "bank", 100)?,
        account_no,
        account_name: text_field(asked.account_name, "account_name", 100)?,
    })
}

/// A merchant as asked, in the request's words.
pub struct MerchantAsked<'a> {
    pub name: &'a str,
    pub credit_code: &'a str,
    pub category: &'a str,
    pub city: &'a str,
    pub account: AccountAsked<'a>,
}

/// A new merchant, checked: its credit code, category, city (a city, not a province), name and
/// settlement account, in that order.
pub fn new_merchant(asked: &MerchantAsked<'_>) -> Result<Merchant, AppError> {
    let invalid = AppError::invalid;
    let credit_code = CreditCode::parse(asked.credit_code).map_err(|e| invalid(e.code(), e.to_string()))?;
    let category: Category =
        asked.category.parse().map_err(|e: String| invalid(ErrorCode::InvalidCategory, e))?;
    let city: RegionCode =
        asked.city.parse().map_err(|e: RegionError| invalid(ErrorCode::InvalidRegion, e.to_string()))?;
    if city.level() != RegionLevel::City {
        return Err(AppError::invalid(ErrorCode::InvalidRegion, "a merchant belongs to a city (xxxx00)"));
    }
    Ok(Merchant {
        id: MerchantId::new_v7(),
        name: text_field(asked.name, "name", 100)?,
        credit_code,
        category,
        city,
        settlement: settlement_account(&asked.account)?,
        status: MerchantStatus::Active,
    })
}

/// What asking for a change of account did.
pub enum Asked {
    /// The merchant already has this account and nothing is waiting.
    Unchanged,
    /// The request waiting for a second key: this one, or the same account asked for before.
    Waiting(Box<AccountRequest>),
}

/// Asks to change where the merchant is paid; another account waiting is 409 `change_pending`.
pub async fn request_change(store: &dyn Storage, asked: &NewAccountRequest) -> Result<Asked, AppError> {
    match store.request_account_change(asked).await? {
        AccountRequestOutcome::NoSuchMerchant => {
            Err(AppError::not_found(ErrorCode::MerchantNotFound, "no such merchant"))
        }
        AccountRequestOutcome::Unchanged => Ok(Asked::Unchanged),
        AccountRequestOutcome::OtherPending(waiting) => Err(AppError::conflict(
            ErrorCode::ChangePending,
            format!(
                "request {} for another account is waiting for a second key: approve or reject it first",
                waiting.id
            ),
        )),
        AccountRequestOutcome::Requested(waiting) => {
            if waiting.id == asked.id {
                tracing::info!(merchant = %asked.merchant_id, request = %waiting.id, staff_key = %asked.requested_by,
                    "settlement account change requested");
            }
            Ok(Asked::Waiting(waiting))
        }
    }
}

/// A decision on a request, as asked: by which key, when, approving or not, with what note.
pub struct Decision {
    pub merchant_id: MerchantId,
    pub request_id: AccountRequestId,
    pub approve: bool,
    pub by: StaffKeyId,
    pub at: Timestamp,
    /// Why (a call to the merchant, a check of the letter), already checked as text.
    pub note: String,
}

/// What a decision did: the request as decided, and whether this decision approved it (the
/// merchant is paid to the new account from now on).
pub struct Decided {
    pub request: AccountRequest,
    pub approved_now: bool,
}

/// Records a decision and answers with the request as decided; the same decision made before (a
/// retry) answers the same. The key must be unrelated to the asker's (403 `same_approver`) and
/// not revoked (403 `key_revoked`); a request decided the other way is 409 `request_decided`,
/// one left a week undecided 409 `request_expired`.
pub async fn decide(store: &dyn Storage, asked: Decision) -> Result<Decided, AppError> {
    let decision = NewAccountDecision {
        request_id: asked.request_id,
        merchant_id: asked.merchant_id,
        decision: AccountDecision {
            approved: asked.approve,
            decided_at: asked.at,
            decided_by: asked.by,
            note: asked.note,
        },
        change_id: Uuid::now_v7(),
    };
    let (merchant, key) = (asked.merchant_id, asked.by);
    match store.decide_account_request(&decision).await? {
        AccountDecisionOutcome::NoSuchRequest => Err(AppError::not_found(
            ErrorCode::RequestNotFound,
            "no such request for this merchant's account",
        )),
        AccountDecisionOutcome::Approved(request, change) => {
            tracing::info!(merchant = %merchant, request = %request.id, change = %change.id, staff_key = %key,
                "settlement account change approved");
            Ok(Decided { request: *request, approved_now: true })
        }
        AccountDecisionOutcome::Rejected(request) => {
            tracing::info!(merchant = %merchant, request = %request.id, staff_key = %key,
                "settlement account change rejected");
            Ok(Decided { request: *request, approved_now: false })
        }
        AccountDecisionOutcome::Refused(refused, request) => {
            refusal(refused, *request, asked.approve, asked.at)
                .map(|request| Decided { request, approved_now: false })
        }
    }
}

/// A decision refused: the request as it stands when it was decided the same way before (a
/// retry), else why not.
fn refusal(
    refused: DecisionRefused,
    request: AccountRequest,
    approve: bool,
    at: Timestamp,
) -> Result<AccountRequest, AppError> {
    match refused {
        DecisionRefused::AlreadyDecided
            if request.decision.as_ref().is_some_and(|d| d.approved == approve) =>
        {
            Ok(request)
        }
        DecisionRefused::AlreadyDecided => Err(AppError::conflict(
            ErrorCode::RequestDecided,
            format!("the request was {} already", request.status_at(at).as_str()),
        )),
        DecisionRefused::Expired => Err(AppError::conflict(
            ErrorCode::RequestExpired,
            "the request waited a week undecided; ask again",
        )),
        DecisionRefused::RevokedKey => Err(AppError::forbidden(
            ErrorCode::KeyRevoked,
            "a revoked key neither decides nor has its request approved; ask again with a valid key",
        )),
        DecisionRefused::RelatedKey => Err(AppError::forbidden(
            ErrorCode::SameApprover,
            "a change of settlement account needs a second person: the key that asked, the keys \
             it minted and the keys that minted it cannot approve",
        )),
    }
}

/// The longest name a merchant search takes, in characters.
const MAX_SEARCH_CHARS: usize = 50;
/// Merchants read from storage at a time while searching by name.
const SEARCH_SCAN_PAGE: i64 = 500;

/// A name to search merchants by: what a person typed, trimmed; none when empty; otherwise 1 to
/// 50 characters by the rule of `domain::text` (422 `invalid_field`).
pub fn search_name(typed: Option<&str>) -> Result<Option<String>, AppError> {
    match typed.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => Ok(Some(text_field(text, "name", MAX_SEARCH_CHARS)?)),
    }
}

/// Merchants of `region` (a city, or a whole province) in the storage's order (by name, then
/// id), after `after`, at most `limit`; with `name`, only those whose name contains it (letters
/// compared without case). A search reads the region's merchants a page at a time until it has
/// `limit` matches: a region holds some thousands of merchants, and a search is a person typing.
pub async fn search(
    store: &dyn Storage,
    region: RegionCode,
    name: Option<&str>,
    after: Option<&Merchant>,
    limit: i64,
) -> Result<Vec<Merchant>, AppError> {
    let Some(name) = name else {
        return Ok(store.merchants_in(region, after, limit).await?);
    };
    let wanted = name.to_lowercase();
    let keep = usize::try_from(limit).unwrap_or(0);
    let mut found = Vec::new();
    let mut cursor = after.cloned();
    while found.len() < keep {
        let page = store.merchants_in(region, cursor.as_ref(), SEARCH_SCAN_PAGE).await?;
        let last_page = page.len() < usize::try_from(SEARCH_SCAN_PAGE).unwrap_or(usize::MAX);
        cursor = page.last().cloned();
        found.extend(page.into_iter().filter(|m| m.name.to_lowercase().contains(&wanted)));
        if last_page || cursor.is_none() {
            break;
        }
    }
    found.truncate(keep);
    Ok(found)
}

/// A terminal's Ed25519 public key as its registration gives it: 32 bytes of base64url (trailing
/// padding and surrounding spaces tolerated), or 422 `invalid_public_key`.
pub fn terminal_public_key(text: &str) -> Result<Vec<u8>, AppError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .ok()
        .filter(|key| key.len() == 32)
        .ok_or_else(|| {
            AppError::invalid(ErrorCode::InvalidPublicKey, "public_key must be 32 bytes of base64url")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_key_is_32_bytes_of_base64url() {
        let key = [7u8; 32];
        let text = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
        };
        assert_eq!(terminal_public_key(&text).expect("plain"), key);
        assert_eq!(terminal_public_key(&format!(" {text}= ")).expect("padded"), key);
        for bad in ["", "not base64!", &text[..40], "AAAA"] {
            let refused = terminal_public_key(bad).expect_err("refused");
            assert_eq!(refused.code(), Some(ErrorCode::InvalidPublicKey), "{bad:?}");
        }
    }
}
