//! Seasons, budgets and voucher batches.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::AppState;
use super::conditional;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, ApiQuery, PageQuery, Staff, next_cursor, page_limit};
use super::idempotency::{IdempotencyKey, Prelude, parse_json, staff_prelude, write_outcome};
use crate::app::seasons::{self, AddBudget, CreateBatch, CreateSeason};
use crate::domain::access;
use crate::domain::error_code::ErrorCode;
use crate::domain::finance::FunderFigures;
use crate::domain::ids::{BatchId, CitizenId, SeasonId};
use crate::domain::money::Fen;
use crate::domain::region::RegionCode;
use crate::domain::season::{Batch, Season};
use crate::domain::staff::Role;
use crate::domain::time::Timestamp;
use crate::storage::{IdemRecord, Storage};

fn conflict(refused: crate::storage::WriteError) -> ApiError {
    match refused {
        crate::storage::WriteError::Refused(crate::storage::Refusal::Code(ErrorCode::SeasonClosed)) => {
            seasons::season_closed().into()
        }
        other => ApiError::constraint_refusal(&other.to_string()),
    }
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
    let plan = seasons::plan_season(&staff.scope, &request)?;
    let (season, funders, entries) = (plan.season, plan.funders, plan.entries);
    // The answer is stored with the season, so it is built before the funders exist in storage:
    // from the budgets, as a GET right after reads them.
    let view = season_json(&season, state.clock().now(), &opening_figures(&funders, &plan.amounts));
    let record =
        IdemRecord { scope: idem_scope, key, request_hash: hash, status: 201, body: answer_text(&view)? };
    let outcome = state.store().create_season(&season, &funders, &entries, &record).await;
    state.announce(crate::app::events::NodeEvent::CatalogChanged).await;
    write_outcome(state.store(), outcome, record, conflict).await
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
    let (funder, entry) = seasons::plan_budget(&staff.scope, &season, &request)?;
    let answer = BudgetAnswer { season_id: season.id, funder, amount: request.amount.0.to_string() };
    let record =
        IdemRecord { scope: idem_scope, key, request_hash: hash, status: 201, body: answer_text(&answer)? };
    let outcome = state.store().add_budget(season.id, funder, &entry, &record).await;
    state.announce(crate::app::events::NodeEvent::CatalogChanged).await;
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

/// Each funder's figures in a new season: its whole budget appropriated and available, in the
/// order storage lists a season's funders (by code).
fn opening_figures(funders: &[RegionCode], amounts: &[Fen]) -> Vec<(RegionCode, FunderFigures)> {
    let mut figures: Vec<(RegionCode, FunderFigures)> = funders
        .iter()
        .zip(amounts)
        .map(|(funder, amount)| {
            let amount_fen = amount.as_fen();
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
    /// The cash-out score at or above which a merchant's settlement is held; null: none.
    hold_score_threshold: Option<u8>,
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
        hold_score_threshold: season.hold_score_threshold,
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

/// The seasons, latest start first, a page at a time, from the node's snapshot (at most a
/// second old); a strong ETag, and 304 for an `If-None-Match` that names it.
#[utoipa::path(get, operation_id = "list_seasons", path = "/v1/seasons",
    params(("after" = Option<Uuid>, Query, description = "next_after of the previous page"), ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("If-None-Match" = Option<String>, Header, description = "the ETag of an answer held: 304 if it is still the answer")),
    responses((status = 200, description = "a page of seasons, latest start first", body = SeasonPage), (status = 304, description = "not modified: the answer held is current"), (status = 422, body = super::error::ErrorBody, description = "invalid_limit, invalid_cursor")))]
pub async fn list_seasons(
    State(state): State<AppState>,
    if_none_match: conditional::IfNoneMatch,
    ApiQuery(query): ApiQuery<PageQuery<SeasonId>>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query.limit, SEASONS_PAGE_DEFAULT, SEASONS_PAGE_MAX)?;
    let snapshot = state.public_reads().seasons(query.after, limit).await?;
    if !snapshot.value.cursor_known {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidCursor,
            "after names no season: pass a page's next_after",
        ));
    }
    let rendered = snapshot.rendered(|page, as_of| {
        let seasons = page.seasons.iter().map(|s| season_json(&s.season, as_of, &s.funders)).collect();
        conditional::to_json(&SeasonPage { seasons, next_after: page.next_after })
    });
    conditional::answer(&if_none_match, rendered, conditional::SEASONS)
}

/// A season from the node's snapshot (at most a second old), with a strong ETag.
#[utoipa::path(get, operation_id = "get_season", path = "/v1/seasons/{id}",
    params(("id" = Uuid, Path), ("If-None-Match" = Option<String>, Header, description = "the ETag of an answer held: 304 if it is still the answer")),
    responses((status = 200, description = "the season with each funder's appropriated, reserved, committed and available amounts", body = SeasonAnswer), (status = 304, description = "not modified: the answer held is current"), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_season(
    State(state): State<AppState>,
    if_none_match: conditional::IfNoneMatch,
    ApiPath(season_id): ApiPath<SeasonId>,
) -> Result<Response, ApiError> {
    let snapshot = state.public_reads().season(season_id).await?;
    if snapshot.value.is_none() {
        return Err(ApiError::not_found(ErrorCode::SeasonNotFound, "no such season"));
    }
    let rendered = snapshot.rendered(|found, as_of| match found {
        Some(s) => conditional::to_json(&season_json(&s.season, as_of, &s.funders)),
        None => b"null".to_vec(),
    });
    conditional::answer(&if_none_match, rendered, conditional::SEASONS)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DrawRequest {
    /// The seed whose SHA-256 the batch published.
    seed: String,
}

/// Draws a lottery batch (its issuer's admin, once its claim window has closed): the seed must
/// hash to the batch's `seed_sha256` (422 `seed_mismatch`); every entry ranks by SHA-256(seed ||
/// HMAC-SHA256(salt, citizen id)), lowest first (docs/lottery-audit.md), and the stock goes to
/// the first in that order, a voucher each,
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
    let now = state.clock().now();
    let lottery = match seasons::check_drawable(state.store(), &batch, &request.seed, now).await {
        Err(refused) if refused.code() == Some(ErrorCode::AlreadyDrawn) => {
            return drawn_already(&state, &idem_scope, &key, &hash).await;
        }
        checked => checked?,
    };
    let started = std::time::Instant::now();
    let (entries, ranked_s) = if lottery.waitlist {
        // The whole list ranked and placed; the stock to the first in line (docs/waitlist.md).
        let entries =
            crate::app::waitlist::open(state.store(), state.writer(), &batch, &lottery, &request.seed)
                .await?;
        (entries, started.elapsed().as_secs_f64())
    } else {
        let places = seasons::draw_places(batch.stock);
        let ranking =
            seasons::rank_entries(state.store(), batch.id, &request.seed, &lottery.salt, places).await?;
        let ranked_s = started.elapsed().as_secs_f64();
        let entries = ranking.entries();
        state.writer().issue_drawn(batch.id, ranking.finish()).await.map_err(|error| {
            tracing::error!(%error, batch = %batch.id, "issuing a draw's vouchers failed part way; draw again to finish");
            ApiError::unavailable(ErrorCode::DrawUnfinished, "the draw stopped part way; send it again to finish it")
        })?;
        (entries, ranked_s)
    };
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
    state.announce(crate::app::events::NodeEvent::CatalogChanged).await;
    if !recorded {
        return drawn_already(&state, &record.scope, &record.key, &record.request_hash).await;
    }
    tracing::info!(batch = %batch.id, entries, issued, ranked_s, issued_s, "lottery drawn");
    Ok(super::idempotency::json_response(200, record.body))
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
    ApiQuery(page): ApiQuery<PageQuery<CitizenId>>,
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

/// A drawn lottery's public audit (no key): the seed and the per-batch salt with their SHA-256
/// commitments and when those were published, the draw's time, the stock, and the entrants,
/// winners and skipped as keyed hashes HMAC-SHA256(salt, citizen id), never a name, phone or
/// ID number. `wenhui lottery verify --file audit.json` (or any verifier written from
/// docs/lottery-audit.md) recomputes the draw from it. 404 `batch_not_found`; 409
/// `not_a_lottery`, `not_drawn` (before the draw: the salt is secret until then),
/// `draw_not_auditable` (drawn before the audit existed).
#[utoipa::path(get, operation_id = "lottery_audit", path = "/v1/batches/{id}/draw/audit", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the draw's audit document", body = crate::app::lottery_audit::LotteryAudit), (status = 404, body = super::error::ErrorBody, description = "batch_not_found"), (status = 409, body = super::error::ErrorBody, description = "not_a_lottery, not_drawn, draw_not_auditable")))]
pub async fn lottery_audit(
    State(state): State<AppState>,
    ApiPath(batch_id): ApiPath<BatchId>,
) -> Result<Response, ApiError> {
    let audit = crate::app::lottery_audit::audit(state.store(), batch_id).await?;
    let cache = [(axum::http::header::CACHE_CONTROL, "public, max-age=300")];
    Ok(axum::response::IntoResponse::into_response((cache, Json(&*audit))))
}

/// A waitlist batch's line, for the console.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WaitlistSummaryAnswer {
    batch_id: BatchId,
    /// People who joined.
    length: i64,
    /// Vouchers issued in all (at the opening and moved on since).
    issued: i64,
    /// Expired or forfeited vouchers that went on to the next in line.
    moved_on: i64,
    /// Freed vouchers nobody was left to take (or the season was over).
    unmoved: i64,
    /// People reached and passed over (a per-person cap refused them).
    passed: i64,
    /// The first place not reached yet (null before the opening).
    next_place: Option<i64>,
    /// People still waiting after the opening.
    waiting: Option<i64>,
    #[schema(format = DateTime)]
    opened_at: Option<String>,
}

/// A waitlist batch's line: how long, how many vouchers issued and moved on, who is next.
/// Staff of the batch's region (admins, finance, auditors). 409 `not_a_waitlist`.
#[utoipa::path(get, operation_id = "waitlist_summary", path = "/v1/batches/{id}/waitlist", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the line", body = WaitlistSummaryAnswer), (status = 404, body = super::error::ErrorBody, description = "batch_not_found"), (status = 409, body = super::error::ErrorBody, description = "not_a_waitlist")))]
pub async fn waitlist_summary(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(batch_id): ApiPath<BatchId>,
) -> Result<Json<WaitlistSummaryAnswer>, ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin, Role::Finance, Role::Auditor])?;
    let not_found = || ApiError::not_found(ErrorCode::BatchNotFound, "no such batch");
    let batch = state.store().batch(batch_id).await?.ok_or_else(not_found)?;
    staff.may(access::read_batch_entrants, batch.issuer)?;
    let Some(lottery) = batch.lottery.as_ref().filter(|l| l.waitlist) else {
        return Err(crate::app::waitlist::not_a_waitlist().into());
    };
    let summary = state.store().waitlist_summary(batch.id).await?;
    let placed = lottery.next_place.map(|_| summary.length);
    Ok(Json(WaitlistSummaryAnswer {
        batch_id: batch.id,
        length: summary.length,
        issued: batch.claimed_count,
        moved_on: summary.moved_on,
        unmoved: summary.unmoved,
        passed: summary.passed,
        next_place: summary.next_place,
        waiting: placed.zip(summary.next_place).map(|(length, next)| (length - next + 1).max(0)),
        opened_at: lottery.drawn_at.map(|t| t.to_string()),
    }))
}

/// A page of a lottery batch's entrants (citizen ids); `next_after` is null on the last page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EntrantsPage {
    entries: Vec<CitizenId>,
    next_after: Option<CitizenId>,
}

/// The answer to a draw of a batch drawn already: the stored answer when a twin of this
/// request (the same key, sent at once) made the draw, else 409 `already_drawn`.
async fn drawn_already(state: &AppState, scope: &str, key: &str, hash: &[u8]) -> Result<Response, ApiError> {
    let twin = super::idempotency::replay_if_known(state.store(), scope, key, hash).await?;
    twin.ok_or_else(|| seasons::already_drawn().into())
}

/// 409 `not_a_lottery`: entries and draws are for lottery batches only.
pub(crate) fn not_a_lottery() -> ApiError {
    seasons::not_a_lottery().into()
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
    let now = state.clock().now();
    let (batch, entry) = seasons::plan_batch(state.store(), &staff.scope, &season, &request, now).await?;
    let view = batch_view(&batch, now);
    let record =
        IdemRecord { scope: idem_scope, key, request_hash: hash, status: 201, body: answer_text(&view)? };
    let outcome = state.store().create_batch(&batch, &entry, &record).await;
    state.announce(crate::app::events::NodeEvent::CatalogChanged).await;
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
    /// In a batch list: the server's clock when the list was read (the same in every item), for
    /// a phone whose own clock is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    server_time: Option<String>,
}

/// A funder's share of a batch's subsidy, in percent.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FundingAnswer {
    #[schema(value_type = String)]
    funder: RegionCode,
    share: u32,
}

/// A lottery batch's commitments (the seed's and the salt's SHA-256), when they were published,
/// and when it was drawn (then its audit is at `/v1/batches/{id}/draw/audit`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LotteryAnswer {
    seed_sha256: String,
    salt_sha256: String,
    #[schema(format = DateTime)]
    committed_at: String,
    #[schema(format = DateTime)]
    drawn_at: Option<String>,
    /// A waitlist (docs/waitlist.md): the draw opens the line, and vouchers that expire or are
    /// forfeited go to the next in line.
    waitlist: bool,
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
            salt_sha256: crate::domain::season::hex(&l.salt.sha256()),
            committed_at: l.committed_at.to_string(),
            drawn_at: l.drawn_at.map(|t| t.to_string()),
            waitlist: l.waitlist,
        }),
        terms: crate::app::claims::TermsAnswer::of(batch),
        server_time: None,
    }
}

/// Which batches `GET /v1/seasons/{id}/batches` lists.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchesQuery {
    /// Also the batches whose claim window has closed (a lottery waiting for its draw).
    #[serde(default)]
    ended: bool,
}

/// Open and upcoming batches of a season, with remaining stock and the next release; with
/// `ended=true`, also those whose claim window has closed. Served from the node's snapshot: a
/// claim here shows at once, elsewhere within a second; each batch says the snapshot's
/// `server_time`. A strong ETag, and 304 for an `If-None-Match` that names it.
#[utoipa::path(get, operation_id = "list_batches", path = "/v1/seasons/{id}/batches",
    params(("id" = Uuid, Path), ("ended" = Option<bool>, Query, description = "also the batches whose claim window has closed"),
        ("If-None-Match" = Option<String>, Header, description = "the ETag of an answer held: 304 if it is still the answer")),
    responses((status = 200, description = "the season's batches with remaining stock and the next release", body = Vec<BatchAnswer>), (status = 304, description = "not modified: the answer held is current"), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_batches(
    State(state): State<AppState>,
    if_none_match: conditional::IfNoneMatch,
    ApiPath(season_id): ApiPath<SeasonId>,
    ApiQuery(query): ApiQuery<BatchesQuery>,
) -> Result<Response, ApiError> {
    let snapshot = state.public_reads().batches(season_id).await?;
    if snapshot.value.is_none() {
        return Err(ApiError::not_found(ErrorCode::SeasonNotFound, "no such season"));
    }
    let render = |batches: &crate::app::public_reads::SeasonBatches, as_of: Timestamp| {
        let list: Vec<BatchAnswer> = batches
            .iter()
            .flatten()
            .filter(|b| query.ended || b.claim_closes_at > as_of)
            .map(|b| BatchAnswer { server_time: Some(as_of.to_string()), ..batch_view(b, as_of) })
            .collect();
        conditional::to_json(&list)
    };
    let rendered = if query.ended {
        // Rendered for this request: the memo holds the common list, without the ended ones.
        &crate::app::public_reads::Rendered::new(render(&snapshot.value, snapshot.as_of))
    } else {
        snapshot.rendered(render)
    };
    conditional::answer(&if_none_match, rendered, conditional::BATCHES)
}
