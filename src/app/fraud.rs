//! Cash-out (套现) scoring of a season: one streaming read of its redemptions
//! (`FraudStore::scan_redemption_facts`), tallied a merchant at a time and scored by
//! `domain::fraud`, each reason explained in Chinese (`zh::fraud`). What a score above the
//! season's threshold does to settlement is decided elsewhere; this only scores.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::error::AppError;
use super::zh;
use crate::domain::finance::day_label;
use crate::domain::fraud::{Aggregator, Assessment, Signal, assess};
use crate::domain::ids::{MerchantId, SeasonId};
use crate::domain::region::RegionCode;
use crate::domain::season::Season;
use crate::domain::time::Timestamp;
use crate::storage::{FraudStore, StorageError};

/// How often (in redemptions read) the progress callback is called.
pub const PROGRESS_EVERY: u64 = 10_000;

/// A season's scores as of `until`: every merchant with a redemption before it, highest score
/// first, then by merchant id. The same data and `until` give the same scores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SeasonScores {
    pub season_id: SeasonId,
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
    /// Redemptions read.
    pub redemptions: u64,
    pub merchants: Vec<MerchantScore>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MerchantScore {
    pub merchant_id: MerchantId,
    /// Filled by [`name_merchants`] (empty until then).
    pub merchant_name: String,
    /// The merchant's region code (GB/T 2260).
    #[schema(value_type = String)]
    pub merchant_city: RegionCode,
    /// The merchant's category (`bookstore`, `ktv`, ...).
    pub category: String,
    pub redemptions: u32,
    /// 0 (nothing unusual) to 100.
    pub score: u16,
    /// The signals that gave points, largest first.
    pub reasons: Vec<ScoreReason>,
    /// The merchant's days (CST) with redemptions, ascending.
    pub days: Vec<DayScore>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScoreReason {
    #[schema(value_type = String)]
    pub signal: Signal,
    pub points: u16,
    /// What the signal saw, in words a finance officer reads (zh-CN).
    pub explanation_zh: String,
    /// The figures behind it (counts; shares and rates in per-mille).
    pub figures: BTreeMap<String, i64>,
}

/// One CST day of a merchant's redemptions and how many of them each signal counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayScore {
    /// `YYYY-MM-DD`, Beijing time.
    pub day: String,
    pub redemptions: u32,
    pub at_threshold: u32,
    pub outside_usual_hours: u32,
    pub reversed: u32,
    pub far_and_fast: u32,
    pub max_distinct_in_window: u32,
}

impl MerchantScore {
    fn of(assessment: Assessment) -> MerchantScore {
        MerchantScore {
            merchant_id: assessment.merchant_id,
            merchant_name: String::new(),
            merchant_city: assessment.merchant_region,
            category: assessment.category.as_str().to_owned(),
            redemptions: assessment.redemptions,
            score: assessment.score,
            reasons: assessment
                .reasons
                .into_iter()
                .map(|reason| ScoreReason {
                    signal: reason.signal,
                    points: reason.points,
                    explanation_zh: zh::fraud::explanation(reason.signal, &reason.figures),
                    figures: reason.figures.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                })
                .collect(),
            days: assessment
                .days
                .into_iter()
                .map(|d| DayScore {
                    day: day_label(d.day),
                    redemptions: d.redemptions,
                    at_threshold: d.at_threshold,
                    outside_usual_hours: d.outside_usual_hours,
                    reversed: d.reversed,
                    far_and_fast: d.far_and_fast,
                    max_distinct_in_window: d.max_distinct_in_window,
                })
                .collect(),
        }
    }
}

/// Scores every merchant of `season` on its redemptions before `until`.
pub async fn score_season(
    store: &dyn FraudStore,
    season: &Season,
    until: Timestamp,
) -> Result<SeasonScores, AppError> {
    score_season_with_progress(store, season, until, &mut |_| {}).await
}

/// [`score_season`], calling `progress` with the redemptions read so far every
/// [`PROGRESS_EVERY`] (the command line's progress bar).
pub async fn score_season_with_progress(
    store: &dyn FraudStore,
    season: &Season,
    until: Timestamp,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<SeasonScores, AppError> {
    let mut aggregator = Aggregator::new();
    let mut read = 0u64;
    let redemptions = store
        .scan_redemption_facts(season.id, until, &mut |fact| {
            aggregator.push(&fact).map_err(|e| e.to_string())?;
            read += 1;
            if read.is_multiple_of(PROGRESS_EVERY) {
                progress(read);
            }
            Ok(())
        })
        .await?;
    progress(redemptions);
    let merchants = assess(&aggregator.finish()).into_iter().map(MerchantScore::of).collect();
    Ok(SeasonScores { season_id: season.id, until, redemptions, merchants })
}

/// Fills in the name of each merchant (one read for all of them).
pub async fn name_merchants(
    store: &dyn FraudStore,
    merchants: &mut [MerchantScore],
) -> Result<(), StorageError> {
    let ids: Vec<MerchantId> = merchants.iter().map(|m| m.merchant_id).collect();
    let labels: HashMap<MerchantId, String> =
        store.merchant_labels(&ids).await?.into_iter().map(|label| (label.merchant_id, label.name)).collect();
    for merchant in merchants {
        if let Some(name) = labels.get(&merchant.merchant_id) {
            merchant.merchant_name.clone_from(name);
        }
    }
    Ok(())
}
