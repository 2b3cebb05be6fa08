//! The read cash-out scoring needs (`app::fraud`): a season's redemptions joined with their
//! merchant, voucher terms, voucher and citizen, streamed in (merchant, time) order so that the
//! caller tallies one merchant at a time and never holds the season's rows.

use async_trait::async_trait;
use futures_util::TryStreamExt;

use crate::domain::citizen::home_region_of_masked;
use crate::domain::fraud::RedemptionFact;
use crate::domain::ids::{CitizenId, MerchantId, SeasonId};
use crate::domain::region::RegionCode;
use crate::domain::season::Category;
use crate::domain::time::Timestamp;
use crate::storage::db::{QueryBuilder, query_as};
use crate::storage::{SqlStore, StorageError};

/// Most merchants named in one statement.
const NAMES_PER_STATEMENT: usize = 500;

/// A merchant as a finance officer recognises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantLabel {
    pub merchant_id: MerchantId,
    pub name: String,
}

/// What the scoring reads; a sink that refuses a fact stops the scan with its reason.
pub type FactSink<'a> = dyn FnMut(RedemptionFact) -> Result<(), String> + Send + 'a;

#[async_trait]
pub trait FraudStore: Send + Sync {
    /// Every redemption of the season made before `until` (reversals as of `until`), in
    /// merchant, then redemption-time order, into `sink`, one at a time; returns how many.
    async fn scan_redemption_facts(
        &self,
        season_id: SeasonId,
        until: Timestamp,
        sink: &mut FactSink<'_>,
    ) -> Result<u64, StorageError>;

    /// The name of each of these merchants that exists, in no particular order.
    async fn merchant_labels(&self, merchants: &[MerchantId]) -> Result<Vec<MerchantLabel>, StorageError>;
}

#[derive(sqlx::FromRow)]
struct FactRow {
    merchant_id: MerchantId,
    category: String,
    city: String,
    min_spend_fen: i64,
    order_amount_fen: i64,
    redeemed_at_us: i64,
    citizen_id: CitizenId,
    claimed_at_us: i64,
    /// The first four digits of the citizen's ID number.
    citizen_home_digits: Option<String>,
    reversed_at_us: Option<i64>,
}

impl FactRow {
    fn fact(
        self,
        until: Timestamp,
        last: &mut Option<(MerchantId, Category, RegionCode)>,
    ) -> Result<RedemptionFact, StorageError> {
        // One merchant's rows come together: its category and region are parsed once.
        let (category, merchant_region) = match *last {
            Some((id, category, region)) if id == self.merchant_id => (category, region),
            _ => {
                let category: Category = self
                    .category
                    .parse()
                    .map_err(|e| StorageError::Corrupt(format!("merchant {}: {e}", self.merchant_id)))?;
                let region: RegionCode = self.city.parse().map_err(|e| {
                    StorageError::Corrupt(format!("merchant {}: city: {e}", self.merchant_id))
                })?;
                *last = Some((self.merchant_id, category, region));
                (category, region)
            }
        };
        Ok(RedemptionFact {
            merchant_id: self.merchant_id,
            category,
            merchant_region,
            threshold_fen: (self.min_spend_fen > 0).then_some(self.min_spend_fen),
            order_amount_fen: self.order_amount_fen,
            redeemed_at: Timestamp::from_unix_us(self.redeemed_at_us),
            citizen_id: self.citizen_id,
            claimed_at: Timestamp::from_unix_us(self.claimed_at_us),
            citizen_home: self.citizen_home_digits.as_deref().and_then(home_region_of_masked),
            reversed_at: self.reversed_at_us.filter(|&at| at < until.unix_us()).map(Timestamp::from_unix_us),
        })
    }
}

#[async_trait]
impl FraudStore for SqlStore {
    async fn scan_redemption_facts(
        &self,
        season_id: SeasonId,
        until: Timestamp,
        sink: &mut FactSink<'_>,
    ) -> Result<u64, StorageError> {
        // By merchant, then time: what the aggregator needs to hold one merchant at a time. The
        // redemption row carries its citizen, claim time and the citizen's home digits
        // (migration 0032), so both backends walk `redemptions_by_season_merchant` in that order,
        // joined only to the season's few merchants and batches (BENCHMARKS.md, "Cash-out
        // scoring of a season").
        let mut rows = query_as::<FactRow>(
            "SELECT r.merchant_id, m.category, m.city, b.min_spend_fen, r.order_amount_fen, r.redeemed_at_us, \
             r.citizen_id, r.claimed_at_us, r.citizen_home_digits, r.reversed_at_us \
             FROM redemptions r \
             JOIN merchants m ON m.id = r.merchant_id \
             JOIN batches b ON b.id = r.batch_id \
             WHERE r.season_id = $1 AND r.redeemed_at_us < $2 \
             ORDER BY r.merchant_id, r.redeemed_at_us",
        )
        .bind(season_id)
        .bind(until.unix_us())
        .fetch(&self.pool);
        let mut count = 0u64;
        let mut last = None;
        while let Some(row) = rows.try_next().await? {
            sink(row.fact(until, &mut last)?).map_err(StorageError::Corrupt)?;
            count += 1;
        }
        Ok(count)
    }

    async fn merchant_labels(&self, merchants: &[MerchantId]) -> Result<Vec<MerchantLabel>, StorageError> {
        let mut labels = Vec::with_capacity(merchants.len());
        for chunk in merchants.chunks(NAMES_PER_STATEMENT) {
            let mut q = QueryBuilder::new("SELECT id, name FROM merchants WHERE id IN (");
            let mut list = q.separated(", ");
            for merchant in chunk {
                list.push_bind(*merchant);
            }
            q.push(")");
            let rows: Vec<(MerchantId, String)> = q.build_query_as().fetch_all(&self.pool).await?;
            labels.extend(rows.into_iter().map(|(merchant_id, name)| MerchantLabel { merchant_id, name }));
        }
        Ok(labels)
    }
}
