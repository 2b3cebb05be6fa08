//! Cash-out (套现) scores of a season's merchants (`app::fraud`), for finance and auditors: those
//! of the season's province see every merchant, those of a city their city's
//! (`access::read_season_finance`).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Staff, page_limit};
use crate::app::fraud::{self, MerchantScore};
use crate::domain::access::{self, SeasonView};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{MerchantId, SeasonId};
use crate::domain::time::Timestamp;

const SCORES_PAGE_DEFAULT: u32 = 100;
const SCORES_PAGE_MAX: u32 = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoresQuery {
    /// RFC 3339; default now (a scoring of the last `SCORES_FRESH_FOR_S`).
    #[serde(default)]
    until: Option<String>,
    /// 0 to 100; default 0 (every merchant).
    #[serde(default)]
    min_score: Option<u16>,
    #[serde(default)]
    after: Option<MerchantId>,
    #[serde(default)]
    limit: Option<u32>,
}

/// A page of a season's scores, highest first; `next_after` continues it (null on the last).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScoresPage {
    season_id: SeasonId,
    #[schema(value_type = String, format = DateTime)]
    until: Timestamp,
    /// Redemptions read (of the whole season, before `until`).
    redemptions: u64,
    /// Merchants at or above `min_score` (in the key's view), on every page.
    merchants_matching: usize,
    next_after: Option<MerchantId>,
    merchants: Vec<MerchantScore>,
}

/// Scores every merchant of the season on its redemptions before `until` (default now: the
/// node's scoring of the last minute, or one made now): a score from 0 to 100 with its reasons
/// (the signals, explained in Chinese, and their figures), highest first, then by merchant id.
/// Same data and `until`, same scores (`docs/fraud-scoring.md`).
#[utoipa::path(get, operation_id = "season_fraud_scores", path = "/v1/seasons/{id}/fraud/scores", security(("staff_key" = [])), params(("id" = Uuid, Path), ("until" = Option<String>, Query, description = "RFC 3339, default now (the node's scoring of the last minute)"), ("min_score" = Option<u16>, Query, description = "0 to 100, default 0"), ("after" = Option<Uuid>, Query, description = "next_after of the previous page"), ("limit" = Option<u32>, Query, description = "1 to 500, default 100")), responses((status = 200, description = "a page of merchants by score", body = ScoresPage), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody, description = "season_not_found"), (status = 422, body = super::error::ErrorBody, description = "invalid_query, invalid_limit, invalid_cursor")))]
pub async fn scores(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    ApiQuery(query): ApiQuery<ScoresQuery>,
) -> Result<Json<ScoresPage>, ApiError> {
    let limit = page_limit(query.limit, SCORES_PAGE_DEFAULT, SCORES_PAGE_MAX)?;
    let min_score = query.min_score.unwrap_or(0);
    if min_score > 100 {
        return Err(ApiError::unprocessable(ErrorCode::InvalidQuery, "min_score is 0 to 100"));
    }
    let until = query
        .until
        .as_deref()
        .map(|text| {
            Timestamp::parse_rfc3339(text).ok_or_else(|| {
                ApiError::unprocessable(ErrorCode::InvalidQuery, "until is an RFC 3339 instant")
            })
        })
        .transpose()?;
    let store = state.store();
    let season = store
        .season(season_id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::SeasonNotFound, "no such season"))?;
    let city = match staff.may(access::read_season_finance, season.province)? {
        SeasonView::Whole => None,
        SeasonView::City(city) => Some(city),
    };
    // The node's scoring of the last SCORES_FRESH_FOR_S (or one made now), so that every page
    // of a walk comes from one scoring.
    let scores = state.fraud_scores().scores(&season, until).await?;
    let matching: Vec<&MerchantScore> = scores
        .merchants
        .iter()
        .filter(|m| m.score >= min_score && city.is_none_or(|c| c.contains(m.merchant_city)))
        .collect();
    let start = match query.after {
        Some(after) => {
            matching.iter().position(|m| m.merchant_id == after).map(|i| i + 1).ok_or_else(|| {
                ApiError::unprocessable(ErrorCode::InvalidCursor, "after names no merchant of this list")
            })?
        }
        None => 0,
    };
    let merchants_matching = matching.len();
    let mut page: Vec<MerchantScore> =
        matching.into_iter().skip(start).take(limit as usize + 1).cloned().collect();
    let next_after = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|m| m.merchant_id)
    } else {
        None
    };
    fraud::name_merchants(store, &mut page).await?;
    Ok(Json(ScoresPage {
        season_id,
        until: scores.until,
        redemptions: scores.redemptions,
        merchants_matching,
        next_after,
        merchants: page,
    }))
}
