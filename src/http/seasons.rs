//! Seasons, budgets and voucher batches.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, ApiQuery, PageQuery, Staff, next_cursor, page_limit, plain_text};
use super::idempotency::{IdempotencyKey, Prelude, parse_json, staff_prelude, write_outcome};
use crate::domain::access;
use crate::domain::entries::{budget_entry, reserve_entry};
use crate::domain::error_code::ErrorCode;
use crate::domain::finance::FunderFigures;
use crate::domain::funding::{FundingShares, VoucherTerms};
use crate::domain::ids::{BatchId, SeasonId};
use crate::domain::money::{Fen, Yuan};
use crate::domain::region::{RegionCode, RegionLevel};
use crate::domain::season::{
    Batch, Category, Lottery, MAX_BATCHES_PER_SEASON, MAX_RELEASES, MAX_STOCK, MAX_VALID_HOURS, Release,
    Season, SubsidyCeilings,
};
use crate::domain::staff::Role;
use crate::domain::time::Timestamp;
use crate::storage::{IdemRecord, Storage};

const MAX_BUDGETS: usize = 64;
/// The highest per-merchant redemption limit a season takes.
const MAX_MERCHANT_REDEMPTION_LIMIT: u32 = 1_000;
const MAX_NAME_CHARS: usize = 100;

fn invalid(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, message)
}

fn parse_region(text: &str, what: &str) -> Result<RegionCode, ApiError> {
    text.parse().map_err(|e: crate::domain::region::RegionError| {
        invalid(ErrorCode::InvalidRegion, format!("{what}: {e}"))
    })
}

fn check_name(name: &str) -> Result<String, ApiError> {
    match plain_text(name, MAX_NAME_CHARS) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(invalid(
            ErrorCode::InvalidName,
            "a name is 1-100 characters, none of them control characters",
        )),
    }
}

fn conflict(refused: crate::storage::WriteError) -> ApiError {
    match refused {
        crate::storage::WriteError::Refused(crate::storage::Refusal::Code(ErrorCode::SeasonClosed)) => {
            season_closed()
        }
        other => ApiError::constraint_refusal(&other.to_string()),
    }
}

fn season_closed() -> ApiError {
    ApiError::conflict(ErrorCode::SeasonClosed, "the season is closed: it takes no more budgets or batches")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BudgetLine {
    funder: String,
    amount: Yuan,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSeason {
    name: String,
    province: String,
    #[schema(value_type = String, format = DateTime)]
    starts_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    ends_at: Timestamp,
    budgets: Vec<BudgetLine>,
    #[serde(default)]
    per_citizen_cap: Option<Yuan>,
    /// At most this much face value claimed per person per calendar month (CST).
    #[serde(default)]
    per_citizen_monthly_cap: Option<Yuan>,
    #[serde(default)]
    allow_stacking: bool,
    /// A refunded sale forfeits its voucher (Guangzhou) instead of giving it back (off).
    #[serde(default)]
    refund_forfeits_voucher: bool,
    /// At most this many of a citizen's vouchers at one merchant in the season (1 to 1,000).
    #[serde(default)]
    merchant_redemption_limit: Option<u32>,
    /// The most of an order the vouchers may pay, in percent (1 to 100), per merchant category:
    /// `{"performance": 50, "bookstore": 20}`. A category not listed has no ceiling.
    #[serde(default)]
    subsidy_ceilings: std::collections::BTreeMap<String, u32>,
}

/// A season's subsidy ceilings from the request: known categories, 1 to 100 percent each (422
/// `invalid_subsidy_ceiling`).
fn parse_ceilings(asked: &std::collections::BTreeMap<String, u32>) -> Result<SubsidyCeilings, ApiError> {
    let mut pairs = Vec::with_capacity(asked.len());
    for (category, percent) in asked {
        let category: Category =
            category.parse().map_err(|m: String| invalid(ErrorCode::InvalidSubsidyCeiling, m))?;
        pairs.push((category, *percent));
    }
    SubsidyCeilings::new(pairs).map_err(|m| invalid(ErrorCode::InvalidSubsidyCeiling, m))
}

/// Creates a season with each funder's budget (province_admin of that province).
#[utoipa::path(post, operation_id = "create_season", request_body = CreateSeason, path = "/v1/seasons", security(("staff_key" = [])), params(("Idempotency-Key" = String, Header)), responses((status = 201, description = "the season with each funder's amounts", body = SeasonAnswer), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_season(
    State(state): State<AppState>,
    staff: Staff,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    staff.require(&[Role::ProvinceAdmin])?;
    let (idem_scope, hash) =
        match staff_prelude(state.store(), staff.key_id, "/v1/seasons", &key, &body).await? {
            Prelude::Replay(replayed) => return Ok(replayed),
            Prelude::Fresh { scope, hash } => (scope, hash),
        };
    let request: CreateSeason = parse_json(&body)?;
    let province = parse_region(&request.province, "province")?;
    staff.may(access::open_season, province)?;
    if request.ends_at <= request.starts_at {
        return Err(invalid(ErrorCode::InvalidDates, "ends_at must be after starts_at"));
    }
    let merchant_redemption_limit = match request.merchant_redemption_limit {
        Some(1..=MAX_MERCHANT_REDEMPTION_LIMIT) | None => request.merchant_redemption_limit,
        Some(_) => {
            let message = format!("merchant_redemption_limit is 1 to {MAX_MERCHANT_REDEMPTION_LIMIT}");
            return Err(invalid(ErrorCode::InvalidMerchantRedemptionLimit, message));
        }
    };
    let subsidy_ceilings = parse_ceilings(&request.subsidy_ceilings)?;
    let season = Season {
        id: SeasonId::new_v7(),
        name: check_name(&request.name)?,
        province,
        starts_at: request.starts_at,
        ends_at: request.ends_at,
        per_citizen_cap: request.per_citizen_cap.map(|y| y.0).filter(|c| !c.is_zero()),
        per_citizen_monthly_cap: request.per_citizen_monthly_cap.map(|y| y.0).filter(|c| !c.is_zero()),
        allow_stacking: request.allow_stacking,
        refund_forfeits_voucher: request.refund_forfeits_voucher,
        merchant_redemption_limit,
        subsidy_ceilings,
        closed_at: None,
    };
    if request.budgets.is_empty() || request.budgets.len() > MAX_BUDGETS {
        return Err(invalid(ErrorCode::InvalidBudgets, "a season needs 1 to 64 budgets"));
    }
    let mut funders = Vec::new();
    let mut entries = Vec::new();
    for line in &request.budgets {
        let funder = parse_region(&line.funder, "funder")?;
        if !season.accepts_funder(funder) || funders.contains(&funder) {
            return Err(invalid(
                ErrorCode::InvalidFunder,
                format!("{funder} is not a distinct funder of province {province}"),
            ));
        }
        if line.amount.0.is_zero() {
            return Err(invalid(ErrorCode::InvalidAmount, "a budget must be more than 0.00"));
        }
        entries.push(budget_entry(
            season.id,
            funder,
            line.amount.0,
            format!("budget:{}:{funder}:initial", season.id),
        ));
        funders.push(funder);
    }
    // The answer is stored with the season, so it is built before the funders exist in storage:
    // from the budgets, as a GET right after reads them.
    let view = season_json(&season, state.clock().now(), &opening_figures(&funders, &request.budgets));
    let record =
        IdemRecord { scope: idem_scope, key, request_hash: hash, status: 201, body: answer_text(&view)? };
    let outcome = state.store().create_season(&season, &funders, &entries, &record).await;
    write_outcome(state.store(), outcome, record, conflict).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddBudget {
    funder: String,
    amount: Yuan,
}

/// Adds to a funder's budget (that funder's admin).
#[utoipa::path(post, operation_id = "add_budget", request_body = AddBudget, path = "/v1/seasons/{id}/budgets", security(("staff_key" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 201, description = "the budget added", body = BudgetAnswer), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn add_budget(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin])?;
    let (idem_scope, hash) = match staff_prelude(
        state.store(),
        staff.key_id,
        &format!("/v1/seasons/{season_id}/budgets"),
        &key,
        &body,
    )
    .await?
    {
        Prelude::Replay(replayed) => return Ok(replayed),
        Prelude::Fresh { scope, hash } => (scope, hash),
    };
    let request: AddBudget = parse_json(&body)?;
    let season = load_season(state.store(), season_id).await?;
    let funder = parse_region(&request.funder, "funder")?;
    if !season.accepts_funder(funder) {
        return Err(invalid(
            ErrorCode::InvalidFunder,
            format!("{funder} cannot fund a season of {}", season.province),
        ));
    }
    staff.may(access::act_as_funder, funder)?;
    if request.amount.0.is_zero() {
        return Err(invalid(ErrorCode::InvalidAmount, "a budget must be more than 0.00"));
    }
    let entry =
        budget_entry(season.id, funder, request.amount.0, format!("budget:{}:{}", season.id, Uuid::now_v7()));
    let answer = BudgetAnswer { season_id: season.id, funder, amount: request.amount.0.to_string() };
    let record =
        IdemRecord { scope: idem_scope, key, request_hash: hash, status: 201, body: answer_text(&answer)? };
    let outcome = state.store().add_budget(season.id, funder, &entry, &record).await;
    write_outcome(state.store(), outcome, record, conflict).await
}

/// A budget added to a funder, in yuan.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BudgetAnswer {
    season_id: SeasonId,
    #[schema(value_type = String)]
    funder: RegionCode,
    amount: String,
}

/// An answer as the text stored with an idempotent write.
fn answer_text(answer: &impl serde::Serialize) -> Result<String, ApiError> {
    serde_json::to_string(answer).map_err(|error| {
        tracing::error!(%error, "an answer did not serialise");
        ApiError::internal()
    })
}

async fn load_season(store: &dyn Storage, id: SeasonId) -> Result<Season, ApiError> {
    store.season(id).await?.ok_or_else(|| ApiError::not_found(ErrorCode::SeasonNotFound, "no such season"))
}

/// A season with each funder's appropriated, reserved, committed and available amounts.
async fn season_view(store: &dyn Storage, season: &Season, now: Timestamp) -> Result<SeasonAnswer, ApiError> {
    // One read of the season's accounts; the chart says what each one is (domain::finance).
    let figures = crate::domain::finance::funder_figures(season.id, &store.season_balances(season.id).await?);
    let funders: Vec<(RegionCode, FunderFigures)> = store
        .season_funders(season.id)
        .await?
        .into_iter()
        .map(|funder| (funder, figures.get(&funder).cloned().unwrap_or_default()))
        .collect();
    Ok(season_json(season, now, &funders))
}

/// Each funder's figures in a new season: its whole budget appropriated and available, in the
/// order storage lists a season's funders (by code).
fn opening_figures(funders: &[RegionCode], budgets: &[BudgetLine]) -> Vec<(RegionCode, FunderFigures)> {
    let mut figures: Vec<(RegionCode, FunderFigures)> = funders
        .iter()
        .zip(budgets)
        .map(|(funder, line)| {
            let amount_fen = line.amount.0.as_fen();
            (*funder, FunderFigures { appropriated: amount_fen, available: amount_fen, ..Default::default() })
        })
        .collect();
    figures.sort_by_key(|(funder, _)| *funder);
    figures
}

/// A season with each funder's figures: the answer of `POST /v1/seasons`, `GET /v1/seasons/{id}`
/// and each item of `GET /v1/seasons`. Amounts are yuan as decimal strings.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SeasonAnswer {
    id: SeasonId,
    name: String,
    #[schema(value_type = String)]
    province: RegionCode,
    status: crate::domain::season::SeasonStatus,
    #[schema(format = DateTime)]
    starts_at: String,
    #[schema(format = DateTime)]
    ends_at: String,
    per_citizen_cap: Option<String>,
    per_citizen_monthly_cap: Option<String>,
    allow_stacking: bool,
    refund_forfeits_voucher: bool,
    merchant_redemption_limit: Option<u32>,
    /// Per category, the highest subsidy percent.
    subsidy_ceilings: std::collections::BTreeMap<String, u32>,
    funders: Vec<FunderAnswer>,
}

/// One funder's figures in a season, in yuan.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FunderAnswer {
    #[schema(value_type = String)]
    funder: RegionCode,
    appropriated: String,
    reserved: String,
    committed: String,
    available: String,
}

/// The answer for a season, given each funder's figures in the order to list them.
fn season_json(
    season: &Season,
    now: Timestamp,
    funder_figures: &[(RegionCode, FunderFigures)],
) -> SeasonAnswer {
    let yuan = |fen: i64| Fen::new(fen.max(0)).map(|f| f.to_string()).unwrap_or_default();
    let funders = funder_figures
        .iter()
        .map(|(funder, f)| FunderAnswer {
            funder: *funder,
            appropriated: yuan(f.appropriated),
            reserved: yuan(f.reserved),
            committed: yuan(f.outstanding),
            available: yuan(f.available),
        })
        .collect();
    SeasonAnswer {
        id: season.id,
        name: season.name.clone(),
        province: season.province,
        status: season.status_at(now),
        starts_at: season.starts_at.to_string(),
        ends_at: season.ends_at.to_string(),
        per_citizen_cap: season.per_citizen_cap.map(|c| c.to_string()),
        per_citizen_monthly_cap: season.per_citizen_monthly_cap.map(|c| c.to_string()),
        allow_stacking: season.allow_stacking,
        refund_forfeits_voucher: season.refund_forfeits_voucher,
        merchant_redemption_limit: season.merchant_redemption_limit,
        subsidy_ceilings: season
            .subsidy_ceilings
            .iter()
            .map(|(c, percent)| (c.to_string(), percent))
            .collect(),
        funders,
    }
}

/// A page of seasons; `next_after` is the cursor of the next page, null on the last.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SeasonPage {
    seasons: Vec<SeasonAnswer>,
    next_after: Option<SeasonId>,
}

/// A page of `GET /v1/seasons`: 20 by default, at most 100 (each season's view reads its
/// funders' balances).
const SEASONS_PAGE_DEFAULT: u32 = 20;
const SEASONS_PAGE_MAX: u32 = 100;

/// The seasons, latest start first, a page at a time.
#[utoipa::path(get, operation_id = "list_seasons", path = "/v1/seasons",
    params(("after" = Option<Uuid>, Query, description = "next_after of the previous page"), ("limit" = Option<u32>, Query, description = "1 to 100, default 20")),
    responses((status = 200, description = "a page of seasons, latest start first", body = SeasonPage), (status = 422, body = super::error::ErrorBody, description = "invalid_limit, invalid_cursor")))]
pub async fn list_seasons(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<SeasonPage>, ApiError> {
    let limit = page_limit(query.limit, SEASONS_PAGE_DEFAULT, SEASONS_PAGE_MAX)?;
    let after = match query.after {
        Some(id) => Some(state.store().season(id.into()).await?.ok_or_else(|| {
            ApiError::unprocessable(
                ErrorCode::InvalidCursor,
                "after names no season: pass a page's next_after",
            )
        })?),
        None => None,
    };
    let mut page = state.store().seasons(None, after.as_ref(), i64::from(limit) + 1).await?;
    let next_after = next_cursor(&mut page, limit).map(|last| last.id);
    let now = state.clock().now();
    let mut seasons = Vec::new();
    for season in &page {
        seasons.push(season_view(state.store(), season, now).await?);
    }
    Ok(Json(SeasonPage { seasons, next_after }))
}

#[utoipa::path(get, operation_id = "get_season", path = "/v1/seasons/{id}", params(("id" = Uuid, Path)), responses((status = 200, description = "the season with each funder's appropriated, reserved, committed and available amounts", body = SeasonAnswer), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_season(
    State(state): State<AppState>,
    ApiPath(season_id): ApiPath<SeasonId>,
) -> Result<Json<SeasonAnswer>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    Ok(Json(season_view(state.store(), &season, state.clock().now()).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FundingLine {
    funder: String,
    share: u32,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DailyRelease {
    #[schema(value_type = String, format = DateTime)]
    first_at: Timestamp,
    quantity: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBatch {
    name: String,
    issuer: String,
    kind: String,
    #[serde(default)]
    face_value: Option<Yuan>,
    #[serde(default)]
    percent: Option<u32>,
    #[serde(default)]
    cap: Option<Yuan>,
    #[serde(default)]
    step: Option<Yuan>,
    #[serde(default)]
    min_spend: Option<Yuan>,
    stock: i64,
    per_citizen_limit: u32,
    valid_hours: u32,
    #[schema(value_type = String, format = DateTime)]
    claim_opens_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    claim_closes_at: Timestamp,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    releases: Option<Vec<Release>>,
    #[serde(default)]
    daily_release: Option<DailyRelease>,
    categories: Vec<String>,
    #[serde(default)]
    funding: Option<Vec<FundingLine>>,
    /// Points a benefit card holder pays to exchange for one voucher (absent: not exchangeable).
    #[serde(default)]
    points_price: Option<i64>,
    /// Given out by lottery: `{"seed_sha256": "<64 hex digits>"}`, the SHA-256 of the seed the
    /// issuer will reveal when it draws (absent: a rush).
    #[serde(default)]
    lottery: Option<LotteryRequest>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LotteryRequest {
    seed_sha256: String,
}

/// A lottery batch's terms: a well-formed commitment; one voucher per person; no releases and
/// no points exchange (both are ways of claiming, which a lottery replaces). 422 `invalid_lottery`.
fn batch_lottery(request: &CreateBatch) -> Result<Option<Lottery>, ApiError> {
    let Some(asked) = &request.lottery else { return Ok(None) };
    let seed_sha256 = Lottery::parse_commitment(&asked.seed_sha256).ok_or_else(|| {
        invalid(ErrorCode::InvalidLottery, "seed_sha256 is the SHA-256 of the seed, as 64 hex digits")
    })?;
    if request.per_citizen_limit != 1 {
        return Err(invalid(
            ErrorCode::InvalidLottery,
            "a lottery gives at most one voucher per person: per_citizen_limit 1",
        ));
    }
    if request.releases.is_some() || request.daily_release.is_some() || request.points_price.is_some() {
        return Err(invalid(
            ErrorCode::InvalidLottery,
            "a lottery batch has no releases and no points price",
        ));
    }
    Ok(Some(Lottery { seed_sha256, drawn_at: None }))
}

fn batch_terms(request: &CreateBatch) -> Result<VoucherTerms, ApiError> {
    let min_spend = request.min_spend.map(|y| y.0).unwrap_or(Fen::ZERO);
    let missing = |field: &str| invalid(ErrorCode::InvalidTerms, format!("{} needs {field}", request.kind));
    let terms = match request.kind.as_str() {
        "threshold" => VoucherTerms::Threshold {
            face_value: request.face_value.ok_or_else(|| missing("face_value"))?.0,
            min_spend,
        },
        "percent" => VoucherTerms::Percent {
            percent: request.percent.ok_or_else(|| missing("percent"))?,
            cap: request.cap.ok_or_else(|| missing("cap"))?.0,
            step: request.step.ok_or_else(|| missing("step"))?.0,
            min_spend,
        },
        other => {
            return Err(invalid(
                ErrorCode::InvalidKind,
                format!("kind must be threshold or percent, not {other:?}"),
            ));
        }
    };
    terms.validate().map_err(|e| invalid(ErrorCode::InvalidTerms, e.to_string()))?;
    Ok(terms)
}

fn batch_releases(request: &CreateBatch) -> Result<Vec<Release>, ApiError> {
    let in_window = |at: Timestamp| at >= request.claim_opens_at && at < request.claim_closes_at;
    let releases = match (&request.releases, &request.daily_release) {
        (Some(_), Some(_)) => {
            return Err(invalid(ErrorCode::InvalidReleases, "give releases or daily_release, not both"));
        }
        (None, None) => return Ok(Vec::new()),
        (Some(list), None) => list.clone(),
        (None, Some(daily)) => {
            if !(1..=MAX_STOCK).contains(&daily.quantity) {
                return Err(invalid(
                    ErrorCode::InvalidReleases,
                    format!("daily_release.quantity is 1 to {MAX_STOCK}"),
                ));
            }
            let days = (request.stock + daily.quantity - 1) / daily.quantity;
            (0..days.min(MAX_RELEASES as i64 + 1))
                .map(|day| Release {
                    at: daily.first_at.plus_seconds(day * 86_400),
                    quantity: daily.quantity,
                })
                .collect()
        }
    };
    if releases.is_empty() || releases.len() > MAX_RELEASES {
        return Err(invalid(ErrorCode::InvalidReleases, format!("1 to {MAX_RELEASES} releases")));
    }
    if releases.iter().any(|r| !(1..=MAX_STOCK).contains(&r.quantity) || !in_window(r.at)) {
        return Err(invalid(
            ErrorCode::InvalidReleases,
            format!("each release needs a quantity of 1 to {MAX_STOCK} inside the claim window"),
        ));
    }
    // At most MAX_RELEASES quantities of at most MAX_STOCK each: the sum cannot overflow.
    let total: i64 = releases.iter().map(|r| r.quantity).sum();
    if total < request.stock || (request.releases.is_some() && total != request.stock) {
        return Err(invalid(
            ErrorCode::InvalidReleases,
            format!("releases add up to {total}, the stock is {}", request.stock),
        ));
    }
    Ok(releases)
}

fn batch_funding(
    request: &CreateBatch,
    issuer: RegionCode,
    season: &Season,
) -> Result<FundingShares, ApiError> {
    let Some(lines) = &request.funding else { return Ok(FundingShares::single(issuer)) };
    let mut shares = Vec::new();
    for line in lines {
        let funder = parse_region(&line.funder, "funder")?;
        let allowed = funder == issuer || (funder == season.province && issuer.level() == RegionLevel::City);
        if !allowed {
            return Err(invalid(
                ErrorCode::InvalidFunding,
                format!("{funder} cannot co-fund a batch issued by {issuer}"),
            ));
        }
        shares.push((funder, line.share));
    }
    FundingShares::new(shares).map_err(|e| invalid(e.code(), e.to_string()))
}

fn batch_categories(request: &CreateBatch) -> Result<Vec<Category>, ApiError> {
    let mut categories = Vec::new();
    for text in &request.categories {
        let category: Category = text.parse().map_err(|e: String| invalid(ErrorCode::InvalidCategory, e))?;
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    if categories.is_empty() {
        return Err(invalid(ErrorCode::InvalidCategory, "a batch needs at least one category"));
    }
    Ok(categories)
}

fn check_batch_numbers(request: &CreateBatch, season: &Season) -> Result<(), ApiError> {
    if request.stock <= 0 || request.stock > MAX_STOCK {
        return Err(invalid(ErrorCode::InvalidStock, format!("stock must be 1 to {MAX_STOCK}")));
    }
    if request.per_citizen_limit == 0 || request.per_citizen_limit > 100 {
        return Err(invalid(ErrorCode::InvalidLimit, "per_citizen_limit must be 1 to 100"));
    }
    if request.points_price.is_some_and(|p| p <= 0 || p > crate::domain::card::MAX_POINTS_PRICE) {
        return Err(invalid(
            ErrorCode::InvalidPointsPrice,
            format!("points_price must be 1 to {}", crate::domain::card::MAX_POINTS_PRICE),
        ));
    }
    if request.valid_hours == 0 || request.valid_hours > MAX_VALID_HOURS {
        return Err(invalid(
            ErrorCode::InvalidValidHours,
            format!("valid_hours must be 1 to {MAX_VALID_HOURS}"),
        ));
    }
    let window_ok = request.claim_opens_at < request.claim_closes_at
        && request.claim_opens_at >= season.starts_at
        && request.claim_closes_at <= season.ends_at;
    if !window_ok {
        return Err(invalid(ErrorCode::InvalidDates, "the claim window must lie inside the season"));
    }
    Ok(())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DrawRequest {
    /// The seed whose SHA-256 the batch published.
    seed: String,
}

/// Draws a lottery batch (its issuer's admin, once its claim window has closed): the seed must
/// hash to the batch's `seed_sha256` (422 `seed_mismatch`); every entry ranks by SHA-256(seed ||
/// citizen id), lowest first, and the stock goes to the first in that order, a voucher each,
/// skipping a winner a per-person cap refuses. 409 `not_a_lottery`, `draw_too_early`,
/// `already_drawn`, `season_closed`. Answers `{batch_id, seed, seed_sha256, entries, issued,
/// drawn_at}`; the unissued stock goes back to the pool when the sweeper closes the batch.
#[utoipa::path(post, operation_id = "draw_lottery", request_body = DrawRequest, path = "/v1/batches/{id}/draw", security(("staff_key" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, description = "the draw", body = DrawAnswer), (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn draw(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(batch_id): ApiPath<BatchId>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin])?;
    let path = format!("/v1/batches/{batch_id}/draw");
    let (idem_scope, hash) = match staff_prelude(state.store(), staff.key_id, &path, &key, &body).await? {
        Prelude::Replay(replayed) => return Ok(replayed),
        Prelude::Fresh { scope, hash } => (scope, hash),
    };
    let request: DrawRequest = parse_json(&body)?;
    let batch = state
        .store()
        .batch(batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::BatchNotFound, "no such batch"))?;
    staff.may(access::act_as_funder, batch.issuer)?;
    let lottery = match check_drawable(&state, &batch, &request.seed).await {
        Err(refused) if refused.code == ErrorCode::AlreadyDrawn => {
            return drawn_already(&state, &idem_scope, &key, &hash).await;
        }
        checked => checked?,
    };
    let now = state.clock().now();
    let started = std::time::Instant::now();
    let ranking = rank_entries(&state, batch.id, &request.seed, draw_places(batch.stock)).await?;
    let ranked_s = started.elapsed().as_secs_f64();
    let entries = ranking.entries();
    state.writer().issue_drawn(batch.id, ranking.finish()).await.map_err(|error| {
        tracing::error!(%error, batch = %batch.id, "issuing a draw's vouchers failed part way; draw again to finish");
        ApiError::unavailable(ErrorCode::DrawUnfinished, "the draw stopped part way; send it again to finish it")
    })?;
    let issued_s = started.elapsed().as_secs_f64() - ranked_s;
    // Every voucher the draw gave, also those of an earlier attempt stopped part way (or of a
    // twin request running beside this one): a lottery batch's vouchers come from draws only.
    let issued = state.store().batch(batch.id).await?.map_or(0, |b| b.claimed_count);
    let answer = DrawAnswer {
        batch_id: batch.id,
        seed: request.seed.clone(),
        seed_sha256: lottery.commitment_hex(),
        entries,
        issued,
        drawn_at: now.to_string(),
    };
    let record =
        IdemRecord { scope: idem_scope, key, request_hash: hash, status: 200, body: answer_text(&answer)? };
    let recorded =
        state.store().record_draw(batch.id, &request.seed, now, &record).await.map_err(|e| match e {
            crate::storage::WriteError::Storage(error) => ApiError::from(error),
            other => ApiError::constraint_refusal(&other.to_string()),
        })?;
    if !recorded {
        return drawn_already(&state, &record.scope, &record.key, &record.request_hash).await;
    }
    tracing::info!(batch = %batch.id, entries, issued, ranked_s, issued_s, "lottery drawn");
    Ok(super::idempotency::json_response(200, record.body))
}

/// Reads a lottery batch's entries 10,000 a page and ranks each page on the blocking pool:
/// ranking is a SHA-256 per entry, about 5 ms of CPU a page, which on a request worker would
/// hold up the claims and redemptions sharing it.
async fn rank_entries(
    state: &AppState,
    batch_id: BatchId,
    seed: &str,
    keep: usize,
) -> Result<crate::domain::season::Draw, ApiError> {
    const PAGE: usize = 10_000;
    let mut ranking = crate::domain::season::Draw::new(seed, keep);
    let mut after = None;
    loop {
        let page = state.store().lottery_entrants(batch_id, after, PAGE as i64).await?;
        let last = if page.len() == PAGE { page.last().copied() } else { None };
        let rank_page = move || {
            page.iter().for_each(|citizen| ranking.add(*citizen));
            ranking
        };
        ranking = tokio::task::spawn_blocking(rank_page).await.map_err(|error| {
            tracing::error!(%error, "ranking a page of lottery entries failed");
            ApiError::internal()
        })?;
        match last {
            Some(last) => after = Some(last),
            None => return Ok(ranking),
        }
    }
}

/// A lottery batch's entrants, by citizen id, a page at a time (1,000 by default, at most
/// 10,000): with the seed the draw reveals, anyone allowed to read them recomputes the draw.
/// Staff of the batch's region (admins, finance, auditors); citizen ids, nothing else.
#[utoipa::path(get, operation_id = "list_lottery_entrants", path = "/v1/batches/{id}/entries", security(("staff_key" = [])),
    params(("id" = Uuid, Path), ("after" = Option<Uuid>, Query, description = "next_after of the previous page"), ("limit" = Option<u32>, Query, description = "1 to 10,000, default 1,000")),
    responses((status = 200, description = "a page of entrants", body = EntrantsPage), (status = 409, body = super::error::ErrorBody, description = "not_a_lottery")))]
pub async fn lottery_entrants(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(batch_id): ApiPath<BatchId>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<EntrantsPage>, ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin, Role::Finance, Role::Auditor])?;
    let limit = page_limit(page.limit, 1_000, 10_000)?;
    let not_found = || ApiError::not_found(ErrorCode::BatchNotFound, "no such batch");
    let batch = state.store().batch(batch_id).await?.ok_or_else(not_found)?;
    staff.may(access::read_batch_entrants, batch.issuer)?;
    if batch.lottery.is_none() {
        return Err(not_a_lottery());
    }
    let mut entrants = state.store().lottery_entrants(batch.id, page.after, i64::from(limit) + 1).await?;
    let next_after = next_cursor(&mut entrants, limit).copied();
    Ok(Json(EntrantsPage { entries: entrants, next_after }))
}

/// A lottery's draw: the revealed seed, its published SHA-256, how many entered and how many
/// vouchers the draw issued.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DrawAnswer {
    batch_id: BatchId,
    seed: String,
    seed_sha256: String,
    entries: u64,
    issued: i64,
    #[schema(format = DateTime)]
    drawn_at: String,
}

/// A page of a lottery batch's entrants (citizen ids); `next_after` is null on the last page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EntrantsPage {
    entries: Vec<Uuid>,
    next_after: Option<Uuid>,
}

/// The answer to a draw of a batch drawn already: the stored answer when a twin of this
/// request (the same key, sent at once) made the draw, else 409 `already_drawn`.
async fn drawn_already(state: &AppState, scope: &str, key: &str, hash: &[u8]) -> Result<Response, ApiError> {
    let twin = super::idempotency::replay_if_known(state.store(), scope, key, hash).await?;
    twin.ok_or_else(|| ApiError::conflict(ErrorCode::AlreadyDrawn, "the batch was drawn already"))
}

/// 409 `not_a_lottery`: entries and draws are for lottery batches only.
pub(crate) fn not_a_lottery() -> ApiError {
    ApiError::conflict(ErrorCode::NotALottery, "this batch is claimed in a rush, not drawn")
}

/// The lottery of a batch that may be drawn now with `seed`, or why not.
async fn check_drawable(state: &AppState, batch: &Batch, seed: &str) -> Result<Lottery, ApiError> {
    let Some(lottery) = batch.lottery.clone() else {
        return Err(not_a_lottery());
    };
    if lottery.drawn_at.is_some() {
        return Err(ApiError::conflict(ErrorCode::AlreadyDrawn, "the batch was drawn already"));
    }
    let now = state.clock().now();
    // Vouchers drawn after the season's end would be born expired.
    if load_season(state.store(), batch.season_id).await?.status_at(now)
        != crate::domain::season::SeasonStatus::Open
    {
        return Err(ApiError::conflict(ErrorCode::SeasonClosed, "the season is not open"));
    }
    if now < batch.claim_closes_at {
        let message = format!("entries close at {}; draw after that", batch.claim_closes_at);
        return Err(ApiError::conflict(ErrorCode::DrawTooEarly, message));
    }
    if seed.chars().any(char::is_control) {
        // Stored as text with the draw: PostgreSQL refuses NUL in text. A seed is printable.
        return Err(invalid(ErrorCode::InvalidSeed, "a seed holds no control characters"));
    }
    if seed.len() > crate::domain::season::MAX_SEED_LEN || !lottery.seed_matches(seed) {
        return Err(invalid(ErrorCode::SeedMismatch, "the seed does not hash to the batch's seed_sha256"));
    }
    Ok(lottery)
}

/// How many of the best-ranked entries a draw keeps: the stock, and a tenth more (at least
/// 1,000) for winners a per-person cap refuses. Should more be refused than that, the rest of
/// the stock goes back to the pool with the batch's close.
fn draw_places(stock: i64) -> usize {
    let stock = usize::try_from(stock).unwrap_or(0);
    stock.saturating_add((stock / 10).max(1_000))
}

/// Creates a voucher batch and reserves its money (the issuer's admin).
#[utoipa::path(post, operation_id = "create_batch", request_body = CreateBatch, path = "/v1/seasons/{id}/batches", security(("staff_key" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 201, description = "the batch", body = BatchAnswer), (status = 409, body = super::error::ErrorBody, description = "budget_exceeded"), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_batch(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin])?;
    let (idem_scope, hash) = match staff_prelude(
        state.store(),
        staff.key_id,
        &format!("/v1/seasons/{season_id}/batches"),
        &key,
        &body,
    )
    .await?
    {
        Prelude::Replay(replayed) => return Ok(replayed),
        Prelude::Fresh { scope, hash } => (scope, hash),
    };
    let request: CreateBatch = parse_json(&body)?;
    let season = load_season(state.store(), season_id).await?;
    let issuer = parse_region(&request.issuer, "issuer")?;
    if !season.accepts_funder(issuer) {
        return Err(invalid(
            ErrorCode::InvalidIssuer,
            format!("{issuer} is not the province or a city of {}", season.province),
        ));
    }
    staff.may(access::act_as_funder, issuer)?;
    check_batch_numbers(&request, &season)?;
    // A size guard, read outside the write: concurrent creations may pass it by a few.
    if state.store().season_batches(season_id).await?.len() >= MAX_BATCHES_PER_SEASON {
        return Err(ApiError::conflict(
            ErrorCode::TooManyBatches,
            format!("a season has at most {MAX_BATCHES_PER_SEASON} batches"),
        ));
    }
    let batch = Batch {
        id: BatchId::new_v7(),
        season_id,
        name: check_name(&request.name)?,
        issuer,
        terms: batch_terms(&request)?,
        stock: request.stock,
        per_citizen_limit: request.per_citizen_limit,
        valid_hours: request.valid_hours,
        claim_opens_at: request.claim_opens_at,
        claim_closes_at: request.claim_closes_at,
        categories: batch_categories(&request)?,
        funding: batch_funding(&request, issuer, &season)?,
        releases: batch_releases(&request)?,
        claimed_count: 0,
        returned_count: 0,
        reserve_returned: false,
        points_price: request.points_price,
        lottery: batch_lottery(&request)?,
    };
    let entry = reserve_entry(&batch).map_err(|e| invalid(ErrorCode::InvalidStock, e.to_string()))?;
    let view = batch_view(&batch, state.clock().now());
    let record =
        IdemRecord { scope: idem_scope, key, request_hash: hash, status: 201, body: answer_text(&view)? };
    let outcome = state.store().create_batch(&batch, &entry, &record).await;
    write_outcome(state.store(), outcome, record, conflict).await
}

/// A batch: its terms, stock and claims so far, release schedule, funding and lottery.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    id: BatchId,
    season_id: SeasonId,
    name: String,
    #[schema(value_type = String)]
    issuer: RegionCode,
    stock: i64,
    claimed: i64,
    returned: i64,
    released: i64,
    remaining: i64,
    #[schema(format = DateTime)]
    next_release_at: Option<String>,
    per_citizen_limit: u32,
    valid_hours: u32,
    #[schema(format = DateTime)]
    claim_opens_at: String,
    #[schema(format = DateTime)]
    claim_closes_at: String,
    categories: Vec<&'static str>,
    funding: Vec<FundingAnswer>,
    points_price: Option<i64>,
    lottery: Option<LotteryAnswer>,
    #[serde(flatten)]
    terms: crate::app::claims::TermsAnswer,
}

/// A funder's share of a batch's subsidy, in percent.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FundingAnswer {
    #[schema(value_type = String)]
    funder: RegionCode,
    share: u32,
}

/// A lottery batch's commitment, and when it was drawn.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LotteryAnswer {
    seed_sha256: String,
    #[schema(format = DateTime)]
    drawn_at: Option<String>,
}

fn batch_view(batch: &Batch, now: Timestamp) -> BatchAnswer {
    BatchAnswer {
        id: batch.id,
        season_id: batch.season_id,
        name: batch.name.clone(),
        issuer: batch.issuer,
        stock: batch.stock,
        claimed: batch.claimed_count,
        returned: batch.returned_count,
        released: batch.released_at(now),
        remaining: batch.remaining_at(now),
        next_release_at: batch.next_release_after(now).map(|t| t.to_string()),
        per_citizen_limit: batch.per_citizen_limit,
        valid_hours: batch.valid_hours,
        claim_opens_at: batch.claim_opens_at.to_string(),
        claim_closes_at: batch.claim_closes_at.to_string(),
        categories: batch.categories.iter().map(|c| c.as_str()).collect(),
        funding: batch.funding.iter().map(|(funder, share)| FundingAnswer { funder, share }).collect(),
        points_price: batch.points_price,
        lottery: batch.lottery.as_ref().map(|l| LotteryAnswer {
            seed_sha256: l.commitment_hex(),
            drawn_at: l.drawn_at.map(|t| t.to_string()),
        }),
        terms: crate::app::claims::TermsAnswer::of(batch),
    }
}

/// Open and upcoming batches of a season, with remaining stock and the next release.
#[utoipa::path(get, operation_id = "list_batches", path = "/v1/seasons/{id}/batches", params(("id" = Uuid, Path)), responses((status = 200, description = "open and upcoming batches with remaining stock and the next release", body = Vec<BatchAnswer>)))]
pub async fn list_batches(
    State(state): State<AppState>,
    ApiPath(season_id): ApiPath<SeasonId>,
) -> Result<Json<Vec<BatchAnswer>>, ApiError> {
    load_season(state.store(), season_id).await?;
    let now = state.clock().now();
    let batches = state
        .store()
        .season_batches(season_id)
        .await?
        .iter()
        .filter(|b| b.claim_closes_at > now)
        .map(|b| batch_view(b, now))
        .collect();
    Ok(Json(batches))
}
