//! Staff API keys: `wh_sk_` followed by 32 random bytes in base64url. Shown once; the database
//! keeps only the SHA-256 of the key (a hash is enough: the key has 256 bits of entropy).
//!
//! Keys belong to named people. At the console a key is minted at once (`mint_for`); through the
//! API an admin enrols a person (`enrol`: a one-time code to the person's phone) and the person
//! claims the key with the code (`claim`), so only the claimant ever sees its secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::codes::{CodeError, Codes};
use crate::app::error::AppError;
use crate::domain::citizen::Phone;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{StaffEnrolmentId, StaffKeyId};
use crate::domain::one_time_code::OneTimeCode;
use crate::domain::region::RegionCode;
use crate::domain::staff::{ENROLMENT_MAX_TRIES, ENROLMENT_TTL_S, Role, StaffScope};
use crate::domain::time::Timestamp;
use crate::storage::{
    ClaimOutcome, EnrolmentTry, NewEnrolment, NewStaffKey, NewStaffPerson, StaffStore, StorageError,
};

const PREFIX: &str = "wh_sk_";

/// A freshly minted key: the secret exists only in this value.
pub struct MintedKey {
    pub id: StaffKeyId,
    pub secret: String,
}

impl std::fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedKey").field("id", &self.id).finish_non_exhaustive()
    }
}

pub fn hash_key(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// Whether a presented string has the shape of a staff key (cheap check before hashing).
pub fn looks_like_key(secret: &str) -> bool {
    secret.len() == PREFIX.len() + 43 && secret.starts_with(PREFIX)
}

/// A new secret and its hash.
fn new_secret() -> Result<(String, Vec<u8>), StorageError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StorageError::Corrupt("system random source failed".into()))?;
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_key(&secret);
    Ok((secret, hash))
}

/// The HTTP layer refuses control characters; the CLI's text is cleaned of them here.
fn clean_label(label: &str) -> String {
    label.trim().chars().filter(|c| !c.is_control()).take(100).collect()
}

/// Mints a key for `scope` with no person (tests and the console without `--name`/`--phone`).
/// `minted_by`: a minting key, for tests of keys from before enrolment; None at the console.
pub async fn mint(
    store: &dyn StaffStore,
    scope: StaffScope,
    label: &str,
    minted_by: Option<StaffKeyId>,
) -> Result<MintedKey, StorageError> {
    let (secret, key_hash) = new_secret()?;
    let id = StaffKeyId::new_v7();
    store
        .insert_staff_key(&NewStaffKey {
            id,
            key_hash,
            scope,
            label: clean_label(label),
            created_at: Timestamp::now(),
            minted_by,
            person: None,
        })
        .await?;
    Ok(MintedKey { id, secret })
}

/// A person's enrolment for a key, waiting for the person's claim.
#[derive(Clone, Copy, Debug)]
pub struct Enrolled {
    pub id: StaffEnrolmentId,
    pub expires_at: Timestamp,
}

/// Who a key is for, as the enrolment and the console take it.
pub struct Person<'a> {
    pub name: &'a str,
    pub phone: &'a Phone,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("no such enrolment")]
    NotFound,
    #[error("the enrolment was claimed already; its key is shown only to the claimant, once")]
    Claimed,
    #[error("the enrolment has expired; ask an admin for a new one")]
    Expired,
    #[error("the key that enrolled this person has been revoked; no key comes of the enrolment")]
    MinterRevoked,
    #[error(transparent)]
    Code(#[from] CodeError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The stored form of a person: the name cleaned as a label is, and the phone's keyed hash.
pub fn new_person(person: &Person<'_>, phone_hash: [u8; 32]) -> NewStaffPerson {
    NewStaffPerson { name: clean_label(person.name), phone_hash: phone_hash.to_vec() }
}

/// Mints a key at the console for a named person (found by phone, made if new).
pub async fn mint_for(
    store: &dyn StaffStore,
    scope: StaffScope,
    label: &str,
    person: Option<NewStaffPerson>,
) -> Result<MintedKey, StorageError> {
    let (secret, key_hash) = new_secret()?;
    let id = StaffKeyId::new_v7();
    let created_at = Timestamp::now();
    let key =
        NewStaffKey { id, key_hash, scope, label: clean_label(label), created_at, minted_by: None, person };
    store.insert_staff_key(&key).await?;
    Ok(MintedKey { id, secret })
}

/// Enrols `person` for a key of `scope`, minted by `minted_by`: sends the one-time code to the
/// person's phone and stores the enrolment. No key exists until the person claims it.
pub async fn enrol(
    store: &dyn StaffStore,
    codes: &Codes,
    scope: StaffScope,
    label: &str,
    person: &Person<'_>,
    minted_by: StaffKeyId,
) -> Result<Enrolled, EnrolError> {
    let id = StaffEnrolmentId::new_v7();
    let now = codes.now();
    let expires_at = now.plus_seconds(ENROLMENT_TTL_S);
    let code_hash = codes.send_enrolment_code(person.phone, id.as_uuid(), ENROLMENT_TTL_S).await?;
    let enrolment = NewEnrolment {
        id,
        person: new_person(person, codes.phone_hash(person.phone)),
        scope,
        label: clean_label(label),
        minted_by,
        created_at: now,
        expires_at,
        code_hash,
    };
    store.insert_enrolment(&enrolment).await?;
    Ok(Enrolled { id, expires_at })
}

/// The person claims their enrolment with the code sent to their phone: the key, minted now,
/// shown to them alone. Every claim counts a try; a wrong code is `CodeError::Invalid`.
pub async fn claim(
    store: &dyn StaffStore,
    codes: &Codes,
    id: StaffEnrolmentId,
    code: &OneTimeCode,
) -> Result<(MintedKey, StaffScope), EnrolError> {
    let now = codes.now();
    let code_hash = match store.try_enrolment(id, now, ENROLMENT_MAX_TRIES).await? {
        EnrolmentTry::Counted { code_hash } => code_hash,
        EnrolmentTry::NotFound => return Err(EnrolError::NotFound),
        EnrolmentTry::Claimed => return Err(EnrolError::Claimed),
        EnrolmentTry::Expired => return Err(EnrolError::Expired),
        EnrolmentTry::Locked => return Err(CodeError::Locked.into()),
    };
    if !codes.enrolment_code_matches(id.as_uuid(), code, &code_hash) {
        return Err(CodeError::Invalid.into());
    }
    let (secret, key_hash) = new_secret()?;
    let key_id = StaffKeyId::new_v7();
    match store.claim_enrolment(id, key_id, &key_hash, now).await? {
        ClaimOutcome::Claimed { scope, .. } => Ok((MintedKey { id: key_id, secret }, scope)),
        ClaimOutcome::Gone => Err(EnrolError::Claimed),
        ClaimOutcome::MinterRevoked => Err(EnrolError::MinterRevoked),
    }
}

/// A key's scope from its role and region names: 422 `invalid_role`, `invalid_region`, or
/// `invalid_scope` for a role that cannot hold that region (a city role on a province, ...).
pub fn parse_scope(role: &str, region: &str) -> Result<StaffScope, AppError> {
    let role: Role = role.parse().map_err(|e: crate::domain::staff::StaffError| {
        AppError::invalid(ErrorCode::InvalidRole, e.to_string())
    })?;
    let region: RegionCode = region.parse().map_err(|e: crate::domain::region::RegionError| {
        AppError::invalid(ErrorCode::InvalidRegion, e.to_string())
    })?;
    StaffScope::new(role, region).map_err(|e| AppError::invalid(ErrorCode::InvalidScope, e.to_string()))
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn a_scope_names_a_role_and_a_region_it_may_hold() {
        let code = |role: &str, region: &str| parse_scope(role, region).expect_err("refused").code();
        assert_eq!(code("emperor", "370000"), Some(ErrorCode::InvalidRole));
        assert_eq!(code("province_admin", "37"), Some(ErrorCode::InvalidRegion));
        assert_eq!(code("city_admin", "370000"), Some(ErrorCode::InvalidScope));
        let scope = parse_scope("city_admin", "370200").expect("a city admin of a city");
        assert_eq!((scope.role, scope.region.to_string()), (Role::CityAdmin, "370200".to_owned()));
    }
}
