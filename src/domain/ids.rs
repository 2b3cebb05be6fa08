//! Typed identifiers: a season's id is not a merchant's, though both are UUIDs.
//!
//! `Id<K>` is a UUID tagged with the kind of thing it names; `SeasonId`, `MerchantId`, ... are
//! its aliases. It is transparent on the wire and in the database (a bare UUID string in JSON,
//! a `uuid` column on PostgreSQL, a 16-byte blob on SQLite: `storage/db.rs` binds and decodes
//! it), so typing an id changes no answer and no row. Mixing two kinds is a compile error.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The kind of thing an [`Id`] names; only its name is used, in `Debug`.
pub trait IdKind {
    const NAME: &'static str;
}

/// A UUID naming a `K`.
pub struct Id<K> {
    uuid: Uuid,
    kind: PhantomData<fn() -> K>,
}

impl<K> Id<K> {
    pub const fn from_uuid(uuid: Uuid) -> Id<K> {
        Id { uuid, kind: PhantomData }
    }

    /// A new id, ordered by creation time (UUIDv7).
    pub fn new_v7() -> Id<K> {
        Id::from_uuid(Uuid::now_v7())
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.uuid
    }
}

// Written out rather than derived: a derive would demand the same traits of `K`, which is only
// a tag.
impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Id<K> {}

impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}

impl<K> Eq for Id<K> {}

impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.uuid.cmp(&other.uuid)
    }
}

impl<K> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uuid.hash(state);
    }
}

impl<K: IdKind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", K::NAME, self.uuid)
    }
}

impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uuid, f)
    }
}

impl<K> FromStr for Id<K> {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::from_str(text).map(Id::from_uuid)
    }
}

impl<K> From<Uuid> for Id<K> {
    fn from(uuid: Uuid) -> Self {
        Id::from_uuid(uuid)
    }
}

impl<K> From<Id<K>> for Uuid {
    fn from(id: Id<K>) -> Self {
        id.uuid
    }
}

impl<K> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.uuid.serialize(serializer)
    }
}

impl<'de, K> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Uuid::deserialize(deserializer).map(Id::from_uuid)
    }
}

/// The kinds, one a thing the service names by id.
pub mod kind {
    use super::IdKind;

    /// A staff member's API key (its id, never its secret).
    pub enum StaffKey {}
    /// A named person who holds staff keys (one phone, one person).
    pub enum StaffPerson {}
    /// An admin's enrolment of a person for a key, claimed with a one-time code.
    pub enum StaffEnrolment {}
    pub enum Season {}
    pub enum Batch {}
    pub enum Voucher {}
    pub enum Citizen {}
    pub enum Merchant {}
    pub enum Terminal {}
    pub enum Redemption {}
    pub enum Settlement {}
    pub enum Card {}
    /// A payment with the benefit card at a till.
    pub enum CardPayment {}
    /// A reversal (refund) of a voucher redemption or of a card payment.
    pub enum Reversal {}
    /// A request to change a merchant's settlement account (four eyes).
    pub enum AccountRequest {}

    impl IdKind for StaffKey {
        const NAME: &'static str = "StaffKeyId";
    }
    impl IdKind for StaffPerson {
        const NAME: &'static str = "StaffPersonId";
    }
    impl IdKind for StaffEnrolment {
        const NAME: &'static str = "StaffEnrolmentId";
    }
    impl IdKind for Season {
        const NAME: &'static str = "SeasonId";
    }
    impl IdKind for Batch {
        const NAME: &'static str = "BatchId";
    }
    impl IdKind for Voucher {
        const NAME: &'static str = "VoucherId";
    }
    impl IdKind for Citizen {
        const NAME: &'static str = "CitizenId";
    }
    impl IdKind for Merchant {
        const NAME: &'static str = "MerchantId";
    }
    impl IdKind for Terminal {
        const NAME: &'static str = "TerminalId";
    }
    impl IdKind for Redemption {
        const NAME: &'static str = "RedemptionId";
    }
    impl IdKind for Settlement {
        const NAME: &'static str = "SettlementId";
    }
    impl IdKind for Card {
        const NAME: &'static str = "CardId";
    }
    impl IdKind for CardPayment {
        const NAME: &'static str = "CardPaymentId";
    }
    impl IdKind for Reversal {
        const NAME: &'static str = "ReversalId";
    }
    impl IdKind for AccountRequest {
        const NAME: &'static str = "AccountRequestId";
    }
}

pub type StaffKeyId = Id<kind::StaffKey>;
pub type StaffPersonId = Id<kind::StaffPerson>;
pub type StaffEnrolmentId = Id<kind::StaffEnrolment>;
pub type SeasonId = Id<kind::Season>;
pub type BatchId = Id<kind::Batch>;
pub type VoucherId = Id<kind::Voucher>;
pub type CitizenId = Id<kind::Citizen>;
pub type MerchantId = Id<kind::Merchant>;
pub type TerminalId = Id<kind::Terminal>;
pub type RedemptionId = Id<kind::Redemption>;
pub type SettlementId = Id<kind::Settlement>;
pub type CardId = Id<kind::Card>;
pub type CardPaymentId = Id<kind::CardPayment>;
pub type ReversalId = Id<kind::Reversal>;
pub type AccountRequestId = Id<kind::AccountRequest>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_bare_uuid_on_the_wire() {
        let uuid = Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001);
        let id = SeasonId::from_uuid(uuid);
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(json, format!("\"{uuid}\""));
        let back: SeasonId = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, id);
        assert_eq!(id.to_string(), uuid.to_string());
        assert_eq!(id.to_string().parse::<SeasonId>().expect("parses"), id);
        assert!(serde_json::from_str::<SeasonId>("\"not-a-uuid\"").is_err());
    }

    #[test]
    fn debug_names_the_kind() {
        let id = MerchantId::from_uuid(Uuid::nil());
        assert_eq!(format!("{id:?}"), format!("MerchantId({})", Uuid::nil()));
    }

    #[test]
    fn ids_order_and_hash_as_their_uuids() {
        let (a, b) = (StaffKeyId::from_uuid(Uuid::from_u128(1)), StaffKeyId::from_uuid(Uuid::from_u128(2)));
        assert!(a < b);
        let set: std::collections::HashSet<StaffKeyId> = [a, b, a].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(StaffKeyId::new_v7() != StaffKeyId::new_v7());
    }
}
