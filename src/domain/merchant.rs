//! Merchants: the unified social credit code (GB 32100), categories, eligibility, and statuses.

use std::fmt;

use super::ids::{AccountRequestId, StaffKeyId};
use super::region::{RegionCode, RegionLevel};
use super::season::{Batch, Category};
use super::staff::KeyLineage;
use super::time::Timestamp;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::MerchantId;

/// The 31 characters of GB 32100 codes (no I, O, S, V, Z), in value order.
const CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// An 18-character unified social credit code with a valid check character.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CreditCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditCodeError {
    #[error("a unified social credit code is 18 characters")]
    Length,
    #[error("a unified social credit code uses only 0-9 and A-Y without I, O, S, V, Z")]
    Charset,
    #[error("the check character of the unified social credit code is wrong")]
    CheckCharacter,
}

impl CreditCodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CreditCodeError::CheckCharacter => ErrorCode::CreditCodeCheck,
            _ => ErrorCode::CreditCodeFormat,
        }
    }
}

fn value_of(byte: u8) -> Option<u32> {
    CHARSET.iter().position(|c| *c == byte).map(|p| p as u32)
}

/// The check character for the first 17 characters (GB 32100-2015, section 5).
pub fn credit_check_char(first17: &[u8]) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (byte, weight) in first17.iter().zip(WEIGHTS) {
        sum += value_of(*byte)? * weight;
    }
    let check = (31 - sum % 31) % 31;
    Some(CHARSET[check as usize] as char)
}

impl CreditCode {
    pub fn parse(text: &str) -> Result<CreditCode, CreditCodeError> {
        let code = text.trim().to_ascii_uppercase();
        if code.len() != 18 {
            return Err(CreditCodeError::Length);
        }
        let bytes = code.as_bytes();
        if !bytes.iter().all(|b| value_of(*b).is_some()) {
            return Err(CreditCodeError::Charset);
        }
        if credit_check_char(&bytes[..17]) != Some(bytes[17] as char) {
            return Err(CreditCodeError::CheckCharacter);
        }
        Ok(CreditCode(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CreditCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreditCode({})", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MerchantStatus {
    Active,
    Suspended,
}

impl MerchantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantStatus::Active => "active",
            MerchantStatus::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<MerchantStatus> {
        match text {
            "active" => Some(MerchantStatus::Active),
            "suspended" => Some(MerchantStatus::Suspended),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct SettlementAccount {
    pub bank: String,
    pub account_no: String,
    pub account_name: String,
}

impl SettlementAccount {
    /// The account number with all but its last four characters as `*`: `************2222`.
    pub fn masked_account_no(&self) -> String {
        let count = self.account_no.chars().count();
        self.account_no.chars().enumerate().map(|(n, c)| if n + 4 < count { '*' } else { c }).collect()
    }
}

/// Masked: a merchant, a request or a change in a log line shows no whole account number.
impl fmt::Debug for SettlementAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettlementAccount")
            .field("bank", &self.bank)
            .field("account_no", &self.masked_account_no())
            .field("account_name", &self.account_name)
            .finish()
    }
}

/// How long a request to change a settlement account waits for its second key: a week.
pub const ACCOUNT_REQUEST_TTL_S: i64 = 7 * 86_400;

/// A request to change where a merchant is paid. It takes effect only when a staff key other
/// than the one that made it approves it (four eyes); either may reject it, and undecided it
/// lapses at `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRequest {
    pub id: AccountRequestId,
    pub merchant_id: MerchantId,
    /// 1 for the merchant's first request, then 2, 3 ...
    pub seq: i64,
    pub requested_at: Timestamp,
    /// The staff key that asked.
    pub requested_by: StaffKeyId,
    pub reason: String,
    pub to: SettlementAccount,
    pub expires_at: Timestamp,
    pub decision: Option<AccountDecision>,
}

/// What a second key decided about an [`AccountRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountDecision {
    pub approved: bool,
    pub decided_at: Timestamp,
    pub decided_by: StaffKeyId,
    pub note: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountRequestStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl AccountRequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountRequestStatus::Pending => "pending",
            AccountRequestStatus::Approved => "approved",
            AccountRequestStatus::Rejected => "rejected",
            AccountRequestStatus::Expired => "expired",
        }
    }
}

/// Why a decision about an [`AccountRequest`] cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionRefused {
    /// It was decided before (the other way, or by a retry that the caller answers itself).
    AlreadyDecided,
    Expired,
    /// The person who asked cannot approve their own request (with any of their keys), nor can
    /// a person who minted the asker's key, nor one whose key the asker minted, at any depth
    /// (see [`KeyLineage::may_share_holder`]).
    RelatedKey,
    /// The deciding key was revoked after it authenticated the request, or the key that asked
    /// has been revoked since (a leaked key's request is not approved; it may be rejected).
    RevokedKey,
}

impl AccountRequest {
    pub fn status_at(&self, now: Timestamp) -> AccountRequestStatus {
        match &self.decision {
            Some(d) if d.approved => AccountRequestStatus::Approved,
            Some(_) => AccountRequestStatus::Rejected,
            None if now >= self.expires_at => AccountRequestStatus::Expired,
            None => AccountRequestStatus::Pending,
        }
    }

    /// Whether `decider` may decide (`approve`: approve, else reject) the request at `now`;
    /// `asker` is the lineage of the key that asked. The key that asked may withdraw its request
    /// (reject it); neither it nor a key related to it may approve it.
    pub fn may_decide(
        &self,
        decider: &KeyLineage,
        asker: &KeyLineage,
        approve: bool,
        now: Timestamp,
    ) -> Result<(), DecisionRefused> {
        assert_eq!(asker.key, self.requested_by, "the asker's lineage is the requesting key's");
        match self.status_at(now) {
            AccountRequestStatus::Approved | AccountRequestStatus::Rejected => {
                Err(DecisionRefused::AlreadyDecided)
            }
            AccountRequestStatus::Expired => Err(DecisionRefused::Expired),
            AccountRequestStatus::Pending if approve && decider.may_share_holder(asker) => {
                Err(DecisionRefused::RelatedKey)
            }
            AccountRequestStatus::Pending => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    pub credit_code: CreditCode,
    pub category: Category,
    pub city: RegionCode,
    pub settlement: SettlementAccount,
    pub status: MerchantStatus,
}

impl Merchant {
    /// City vouchers only at that city's merchants; provincial ones anywhere in the province;
    /// and only in the batch's categories.
    pub fn eligible_for(&self, batch: &Batch) -> Result<(), String> {
        if !batch.categories.contains(&self.category) {
            return Err(format!("{} vouchers are not accepted at a {}", batch.name, self.category));
        }
        let region_ok = match batch.issuer.level() {
            RegionLevel::Province => batch.issuer.contains(self.city),
            _ => batch.issuer == self.city,
        };
        if !region_ok {
            return Err(format!("vouchers issued by {} are not accepted in {}", batch.issuer, self.city));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::staff::Holder;
    use proptest::prelude::*;
    use uuid::Uuid;

    #[test]
    fn an_account_number_is_masked_in_debug() {
        let account = SettlementAccount {
            bank: "青岛银行".into(),
            account_no: "6222000011112222".into(),
            account_name: "某书店".into(),
        };
        assert_eq!(account.masked_account_no(), "************2222");
        let shown = format!("{account:?}");
        assert!(shown.contains("************2222") && !shown.contains("62220000"), "{shown}");
        let short = SettlementAccount { account_no: "123".into(), ..account };
        assert_eq!(short.masked_account_no(), "123");
    }

    #[test]
    fn known_codes() {
        // Published codes: the State Administration for Market Regulation's own, and a computed one.
        let computed: String = format!("91370200MA3C{}", "0000A");
        let check = credit_check_char(computed.as_bytes()).expect("valid chars");
        let full = format!("{computed}{check}");
        assert!(CreditCode::parse(&full).is_ok());
        assert!(CreditCode::parse("11100000000013127D").is_ok(), "SAMR's code");
        assert_eq!(
            CreditCode::parse("11100000000013127E").err().map(|e| e.code().as_str()),
            Some("credit_code_check")
        );
        assert_eq!(CreditCode::parse("1110000000001312").err(), Some(CreditCodeError::Length));
        assert_eq!(CreditCode::parse("1110000000001312IO").err(), Some(CreditCodeError::Charset));
    }

    #[test]
    fn an_account_request_needs_a_second_key_in_time() {
        let key = |n: u128| StaffKeyId::from_uuid(Uuid::from_u128(n));
        let (asker_key, other_key) = (key(1), key(2));
        let person =
            |n: u128| Holder::Person(crate::domain::ids::StaffPersonId::from_uuid(Uuid::from_u128(n)));
        let (asker_person, minter_person) = (person(1), person(9));
        let asker = KeyLineage { key: asker_key, holder: asker_person, minters: vec![minter_person] };
        let other = KeyLineage { key: other_key, holder: person(2), minters: vec![minter_person] };
        let minted_by_asker =
            KeyLineage { key: key(5), holder: person(5), minters: vec![asker_person, minter_person] };
        let minter = KeyLineage { key: key(9), holder: minter_person, minters: vec![] };
        let asker_again = KeyLineage { key: key(6), holder: asker_person, minters: vec![minter_person] };
        let at = Timestamp::from_unix_us(1_000_000);
        let account =
            SettlementAccount { bank: "b".into(), account_no: "1".into(), account_name: "n".into() };
        let mut request = AccountRequest {
            id: Uuid::from_u128(3).into(),
            merchant_id: MerchantId::from_uuid(Uuid::from_u128(4)),
            seq: 1,
            requested_at: at,
            requested_by: asker_key,
            reason: "letter".into(),
            to: account,
            expires_at: at.plus_seconds(ACCOUNT_REQUEST_TTL_S),
            decision: None,
        };
        let before_expiry = at.plus_seconds(ACCOUNT_REQUEST_TTL_S - 1);
        assert_eq!(request.status_at(before_expiry), AccountRequestStatus::Pending);
        for related in [&asker, &minted_by_asker, &minter, &asker_again] {
            assert_eq!(request.may_decide(related, &asker, true, at), Err(DecisionRefused::RelatedKey));
        }
        assert_eq!(request.may_decide(&asker, &asker, false, at), Ok(()), "the asker may withdraw");
        assert_eq!(request.may_decide(&other, &asker, true, before_expiry), Ok(()), "a key minted beside it");
        let expired = at.plus_seconds(ACCOUNT_REQUEST_TTL_S);
        assert_eq!(request.status_at(expired), AccountRequestStatus::Expired);
        assert_eq!(request.may_decide(&other, &asker, true, expired), Err(DecisionRefused::Expired));
        request.decision = Some(AccountDecision {
            approved: false,
            decided_at: at,
            decided_by: other_key,
            note: String::new(),
        });
        assert_eq!(
            request.status_at(expired),
            AccountRequestStatus::Rejected,
            "a decision outlives the expiry"
        );
        assert_eq!(request.may_decide(&other, &asker, true, at), Err(DecisionRefused::AlreadyDecided));
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in ".{0,30}") {
            let _ = CreditCode::parse(&text);
        }

        #[test]
        fn every_computed_code_parses(indices in proptest::collection::vec(0usize..31, 17)) {
            let first: Vec<u8> = indices.iter().map(|i| CHARSET[*i]).collect();
            let check = credit_check_char(&first).expect("valid");
            let code = format!("{}{check}", String::from_utf8(first).expect("ascii"));
            prop_assert!(CreditCode::parse(&code).is_ok());
        }
    }
}
