//! Cash-out (套现) scoring of a season: one streaming read of its redemptions
//! (`FraudStore::scan_redemption_facts`), tallied a merchant at a time and scored by
//! `domain::fraud`, each reason explained in Chinese (`zh::fraud`). What a score above the
//! season's threshold does to settlement is decided elsewhere; this only scores.
//!
//! The scores API pages over one scoring: [`ScoresCache`] keeps a season's last scoring on this
//! node for [`SCORES_FRESH_FOR_S`], made once however many requests ask for it at a time. A
//! settlement never reads it (`finance::hold_by_scores` scores at its own cut-off).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::error::AppError;
use super::zh;
use crate::domain::finance::day_label;
use crate::domain::fraud::{Aggregator, Assessment, Signal, assess};
use crate::domain::ids::{MerchantId, SeasonId};
use crate::domain::region::RegionCode;
use crate::domain::season::Season;
use crate::domain::time::{Clock, Timestamp};
use crate::storage::{FraudStore, StorageError};

use super::read_side::ReadSide;

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

/// How long (service clock) a scoring serves the scores API on a node: pages asked within it
/// walk one scoring, and a redemption made meanwhile is counted by the next scoring after it.
pub const SCORES_FRESH_FOR_S: i64 = 60;

/// Scorings a node keeps at once (an explicit `until` is the caller's to choose); past it, the
/// oldest goes first.
const MAX_SCORINGS: usize = 16;

/// What a scoring is kept under: the season and the explicit `until` (none: "now").
type ScoringKey = (SeasonId, Option<Timestamp>);

/// One scoring of a season, kept by [`ScoresCache`]: made once (single flight), then shared.
struct Scoring {
    /// When it was asked for (service clock); without an explicit `until`, also its `until`.
    started: Timestamp,
    scores: tokio::sync::OnceCell<Arc<SeasonScores>>,
}

impl Scoring {
    /// Serves from `started` until [`SCORES_FRESH_FOR_S`] later (a clock moved back before
    /// `started` makes it stale too).
    fn fresh_at(&self, now: Timestamp) -> bool {
        self.started <= now && now < self.started.plus_seconds(SCORES_FRESH_FOR_S)
    }
}

/// A node's recent scorings per (season, explicit `until`, or none for "now"), for the scores
/// API. Concurrent requests for one key wait for one scoring; a failed scoring is not kept (the
/// next request scores again).
pub struct ScoresCache {
    reads: Arc<ReadSide>,
    clock: Arc<dyn Clock>,
    scorings: Mutex<HashMap<ScoringKey, Arc<Scoring>>>,
    made: AtomicU64,
}

impl ScoresCache {
    pub fn new(reads: Arc<ReadSide>, clock: Arc<dyn Clock>) -> ScoresCache {
        ScoresCache { reads, clock, scorings: Mutex::new(HashMap::new()), made: AtomicU64::new(0) }
    }

    /// `season`'s scores before `until`, or, with none, before the time of a scoring made at
    /// most [`SCORES_FRESH_FOR_S`] ago (the answer's `until`): kept, or made now (once, on the
    /// read side) if none is fresh.
    pub async fn scores(
        &self,
        season: &Season,
        until: Option<Timestamp>,
    ) -> Result<Arc<SeasonScores>, AppError> {
        let scoring = self.scoring(season.id, until);
        let scores = scoring
            .scores
            .get_or_try_init(|| async {
                self.made.fetch_add(1, Ordering::Relaxed);
                let until = until.unwrap_or(scoring.started);
                let scores = self
                    .reads
                    .read(|store| async move { score_season(store.as_ref(), season, until).await })
                    .await?;
                Ok::<_, AppError>(Arc::new(scores))
            })
            .await?;
        Ok(scores.clone())
    }

    /// How many scorings this cache has begun (each key's once per [`SCORES_FRESH_FOR_S`]).
    pub fn scorings_made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// The fresh scoring of a key, or a new one in its place; stale ones are dropped.
    fn scoring(&self, season_id: SeasonId, until: Option<Timestamp>) -> Arc<Scoring> {
        let now = self.clock.now();
        let mut scorings = self.scorings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        scorings.retain(|_, scoring| scoring.fresh_at(now));
        let key = (season_id, until);
        if let Some(scoring) = scorings.get(&key) {
            return scoring.clone();
        }
        if scorings.len() >= MAX_SCORINGS
            && let Some(oldest) = scorings.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k)
        {
            scorings.remove(&oldest);
        }
        let scoring = Arc::new(Scoring { started: now, scores: tokio::sync::OnceCell::new() });
        scorings.insert(key, scoring.clone());
        scoring
    }
}
