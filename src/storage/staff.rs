//! Staff people and enrolments: the rows behind "a key belongs to a named person" (issue 22).
//! The trait methods are on [`crate::storage::StaffStore`]; their bodies are here.

use crate::domain::ids::{StaffEnrolmentId, StaffKeyId, StaffPersonId};
use crate::domain::staff::{ChainLink, KeyLineage, MAX_LINEAGE_DEPTH, StaffScope};
use crate::domain::time::Timestamp;
use crate::storage::db::{Tx, query, query_as};
use crate::storage::{SqlStore, StorageError};

/// A person a key is for: a name and the keyed hash of their phone (one phone, one person).
#[derive(Clone, Debug)]
pub struct NewStaffPerson {
    pub name: String,
    pub phone_hash: Vec<u8>,
}

/// An admin's enrolment of a person for a key; the key is minted when the person claims it.
#[derive(Clone, Debug)]
pub struct NewEnrolment {
    pub id: StaffEnrolmentId,
    pub person: NewStaffPerson,
    pub scope: StaffScope,
    pub label: String,
    pub minted_by: StaffKeyId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The one-time code's keyed hash, bound to the enrolment's id.
    pub code_hash: Vec<u8>,
}

/// A claim at an enrolment, its try counted (or why not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrolmentTry {
    /// The try is counted; compare the code with this hash.
    Counted {
        code_hash: Vec<u8>,
    },
    NotFound,
    Claimed,
    Expired,
    /// The enrolment has taken its tries.
    Locked,
}

/// What claiming a matched enrolment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is minted for the enrolment's person, with this scope.
    Claimed { scope: StaffScope, person: StaffPersonId },
    /// Another claim took it first, or it expired meanwhile.
    Gone,
    /// The key that enrolled the person has been revoked since: no key comes of it.
    MinterRevoked,
}

/// An unclaimed enrolment, as its claim reads it.
#[derive(sqlx::FromRow)]
struct EnrolmentRow {
    person_name: String,
    phone_hash: Vec<u8>,
    role: String,
    region: String,
    label: String,
    minted_by: StaffKeyId,
}

/// Why a try at an enrolment's code was not counted: claimed, expired, or out of tries.
#[derive(sqlx::FromRow)]
struct EnrolmentStateRow {
    claimed_at_us: Option<i64>,
    expires_at_us: i64,
}

impl SqlStore {
    /// The person with this phone, made if there is none (one phone, one person: the first
    /// name given stays).
    pub(crate) async fn person_for(
        tx: &mut Tx,
        person: &NewStaffPerson,
        at: Timestamp,
    ) -> Result<StaffPersonId, StorageError> {
        query(
            "INSERT INTO staff_people (id, name, phone_hash, created_at_us) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (phone_hash) DO NOTHING",
        )
        .bind(StaffPersonId::new_v7())
        .bind(person.name.clone())
        .bind(person.phone_hash.clone())
        .bind(at.unix_us())
        .execute(&mut *tx)
        .await?;
        let (id,): (StaffPersonId,) = query_as("SELECT id FROM staff_people WHERE phone_hash = $1")
            .bind(person.phone_hash.clone())
            .fetch_one(&mut *tx)
            .await?;
        Ok(id)
    }

    /// The key's holder and its minters' holders, nearest first (one recursive query).
    pub(crate) async fn key_lineage(tx: &mut Tx, key: StaffKeyId) -> Result<KeyLineage, StorageError> {
        let chain: Vec<(StaffKeyId, Option<StaffPersonId>)> = query_as(
            "WITH RECURSIVE lineage (id, person_id, minted_by, depth) AS ( \
               SELECT id, person_id, minted_by, 0 FROM staff_keys WHERE id = $1 \
               UNION ALL \
               SELECT k.id, k.person_id, k.minted_by, l.depth + 1 FROM staff_keys k \
               JOIN lineage l ON k.id = l.minted_by WHERE l.depth < $2) \
             SELECT id, person_id FROM lineage ORDER BY depth",
        )
        .bind(key)
        .bind(MAX_LINEAGE_DEPTH as i64)
        .fetch_all(&mut *tx)
        .await?;
        let links: Vec<ChainLink> =
            chain.into_iter().map(|(key, person)| ChainLink { key, person }).collect();
        KeyLineage::from_chain(&links).ok_or_else(|| StorageError::Corrupt(format!("no staff key {key}")))
    }

    pub(crate) async fn insert_enrolment_row(&self, enrolment: &NewEnrolment) -> Result<(), StorageError> {
        query(
            "INSERT INTO staff_enrolments (id, person_name, phone_hash, role, region, label, minted_by, \
             created_at_us, expires_at_us, code_hash, tries) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)",
        )
        .bind(enrolment.id)
        .bind(enrolment.person.name.clone())
        .bind(enrolment.person.phone_hash.clone())
        .bind(enrolment.scope.role.as_str())
        .bind(enrolment.scope.region.to_string())
        .bind(enrolment.label.clone())
        .bind(enrolment.minted_by)
        .bind(enrolment.created_at.unix_us())
        .bind(enrolment.expires_at.unix_us())
        .bind(enrolment.code_hash.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn try_enrolment_row(
        &self,
        id: StaffEnrolmentId,
        now: Timestamp,
        max_tries: i32,
    ) -> Result<EnrolmentTry, StorageError> {
        let counted: Option<(Vec<u8>,)> = query_as(
            "UPDATE staff_enrolments SET tries = tries + 1 WHERE id = $1 AND claimed_at_us IS NULL \
             AND expires_at_us > $2 AND tries < $3 RETURNING code_hash",
        )
        .bind(id)
        .bind(now.unix_us())
        .bind(max_tries)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((code_hash,)) = counted {
            return Ok(EnrolmentTry::Counted { code_hash });
        }
        let row: Option<EnrolmentStateRow> =
            query_as("SELECT claimed_at_us, expires_at_us FROM staff_enrolments WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => EnrolmentTry::NotFound,
            Some(EnrolmentStateRow { claimed_at_us: Some(_), .. }) => EnrolmentTry::Claimed,
            Some(row) if row.expires_at_us <= now.unix_us() => EnrolmentTry::Expired,
            Some(_) => EnrolmentTry::Locked,
        })
    }

    /// Mints the enrolment's key (`key_id`, `key_hash`) for its person, and marks it claimed, in
    /// one transaction: at most one claim succeeds.
    pub(crate) async fn claim_enrolment_row(
        &self,
        id: StaffEnrolmentId,
        key_id: StaffKeyId,
        key_hash: &[u8],
        at: Timestamp,
    ) -> Result<ClaimOutcome, StorageError> {
        let (_gate, mut tx) = self.begin_row_write().await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT person_name, phone_hash, role, region, label, minted_by FROM staff_enrolments \
             WHERE id = $1 AND claimed_at_us IS NULL AND expires_at_us > $2{}",
            self.backend.for_update()
        ));
        let row: Option<EnrolmentRow> =
            query_as(sql).bind(id).bind(at.unix_us()).fetch_optional(&mut tx).await?;
        let Some(EnrolmentRow { person_name: name, phone_hash, role, region, label, minted_by }) = row else {
            return Ok(ClaimOutcome::Gone);
        };
        let revoked: Option<(Option<i64>,)> = query_as("SELECT revoked_at_us FROM staff_keys WHERE id = $1")
            .bind(minted_by)
            .fetch_optional(&mut tx)
            .await?;
        if !matches!(revoked, Some((None,))) {
            return Ok(ClaimOutcome::MinterRevoked);
        }
        let scope = super::ledger::scope_from_db(&role, &region)?;
        let person = Self::person_for(&mut tx, &NewStaffPerson { name, phone_hash }, at).await?;
        query(
            "INSERT INTO staff_keys (id, key_hash, role, region, label, created_at_us, minted_by, person_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(key_id)
        .bind(key_hash.to_vec())
        .bind(role)
        .bind(region)
        .bind(label)
        .bind(at.unix_us())
        .bind(minted_by)
        .bind(person)
        .execute(&mut tx)
        .await?;
        let done = query(
            "UPDATE staff_enrolments SET claimed_at_us = $2, key_id = $3 WHERE id = $1 AND claimed_at_us IS NULL",
        )
        .bind(id)
        .bind(at.unix_us())
        .bind(key_id)
        .execute(&mut tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(ClaimOutcome::Gone);
        }
        tx.commit().await?;
        Ok(ClaimOutcome::Claimed { scope, person })
    }
}
