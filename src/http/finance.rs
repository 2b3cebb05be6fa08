//! Finance endpoints: the season report (JSON, CSV, xlsx), reconciliation, settlements and
//! payouts, closing a season, merchant statements and till-journal matching.
//!
//! Who sees what (`crate::domain::access`): `finance` and `auditor`s of the season's province see
//! the whole season; those of a city see its own city's funder figures, batches and merchants.
//! Only the province's `finance` settles, records payouts and closes. Auditors change nothing.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, ApiQuery, PageQuery, Staff, next_cursor, page_limit, plain_text};
use super::idempotency::{IdempotencyKey, Prelude, json_response, parse_json, staff_prelude};
use super::till::merchant_or_staff;
use crate::app::finance::report_files::{self, Lang, ReportFormat, StatementLine};
use crate::app::finance::{self, CloseOutcome, FinanceError, Reconciliation, SeasonReport, SettlementAnswer};
use crate::app::till::journal_match::MatchOutcome;
use crate::domain::access::{self, SeasonView};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{MerchantId, SeasonId, SettlementId};
use crate::domain::region::RegionCode;
use crate::domain::season::Season;
use crate::domain::time::Timestamp;
use crate::storage::{IdemRecord, MAX_REPORT_ROWS, Storage};

/// Largest till journal accepted for matching.
pub const JOURNAL_LIMIT_BYTES: usize = 8 * 1024 * 1024;
/// Most journal lines read from one upload.
const MAX_JOURNAL_LINES: usize = 50_000;

async fn load_season(store: &dyn Storage, id: SeasonId) -> Result<Season, ApiError> {
    store.season(id).await?.ok_or_else(|| ApiError::not_found(ErrorCode::SeasonNotFound, "no such season"))
}

async fn load_settlement(
    store: &dyn Storage,
    id: SettlementId,
) -> Result<crate::storage::SettlementRecord, ApiError> {
    store
        .settlement(id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::SettlementNotFound, "no such settlement"))
}

/// Whose view of a season a staff key gets: None for all of it, Some(city) for a city's
/// (`access::read_season_finance`).
fn viewer_city(staff: &Staff, season: &Season) -> Result<Option<RegionCode>, ApiError> {
    match staff.may(access::read_season_finance, season.province)? {
        SeasonView::Whole => Ok(None),
        SeasonView::City(city) => Ok(Some(city)),
    }
}

/// Settling, payouts and closing: the finance office of the season's province.
fn require_province_finance(staff: &Staff, season: &Season) -> Result<(), ApiError> {
    staff.may(access::settle_season, season.province)
}

fn finance_error(error: FinanceError) -> ApiError {
    match error {
        FinanceError::NothingToSettle => {
            ApiError::conflict(ErrorCode::NothingToSettle, "no unsettled redemptions up to the cut-off")
        }
        FinanceError::CutOffInFuture => {
            ApiError::unprocessable(ErrorCode::InvalidCutOff, "the cut-off is in the future")
        }
        FinanceError::SeasonNotEnded => {
            ApiError::conflict(ErrorCode::SeasonNotEnded, "a season closes after it ends")
        }
        FinanceError::AlreadyPaid => {
            ApiError::conflict(ErrorCode::AlreadyPaid, "the payout was already recorded")
        }
        FinanceError::InProgress => ApiError::conflict(
            ErrorCode::SettlementInProgress,
            "the settlement is still in progress: retry it with its Idempotency-Key, or settle again",
        ),
        FinanceError::KeyReused => ApiError::unprocessable(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        ),
        FinanceError::NotFound(what) => ApiError::not_found(ErrorCode::NotFound, format!("no such {what}")),
        FinanceError::Storage(error) => error.into(),
        FinanceError::Holding(error) => error.into(),
        FinanceError::Replay | FinanceError::Write(_) => ApiError::internal(),
    }
}

fn file_response(content_type: &'static str, filename: String, body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

fn file_failed(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "writing a finance file failed");
    ApiError::internal()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    view: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// The `lang` of a finance file: Chinese (default) or `en`.
fn file_lang(lang: Option<&str>) -> Result<Lang, ApiError> {
    Lang::parse(lang)
        .ok_or_else(|| ApiError::unprocessable(ErrorCode::InvalidFormat, "lang is zh (default) or en"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LangQuery {
    #[serde(default)]
    lang: Option<String>,
}

/// The season report: JSON (default), `?format=csv&view=funders|batches|merchants|categories|days|cards|summary`,
/// `?format=xlsx` (one sheet per view), or a chart of it, `?format=svg&view=funders|days|categories|cities|leverage`
/// (Chinese labels; the console's dashboard). A closed season's report is the one stored at close.
#[utoipa::path(get, operation_id = "season_report", path = "/v1/seasons/{id}/report", security(("staff_key" = [])), params(("id" = Uuid, Path), ("format" = Option<String>, Query), ("view" = Option<String>, Query), ("lang" = Option<String>, Query, description = "zh (default) or en")), responses((status = 200, description = "the report: JSON, or a CSV view, or an xlsx workbook", content((SeasonReport = "application/json"), (String = "text/csv"), (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"), (String = "image/svg+xml"))), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let now = state.clock().now();
    let report = state.reads().read(|store| viewer_report(store, &staff, season_id, now)).await?;
    let stem = format!("season-{season_id}-report");
    let lang = file_lang(query.lang.as_deref())?;
    match report_files::report_format(query.format.as_deref(), query.view.as_deref())? {
        ReportFormat::Json => Ok(Json(report).into_response()),
        ReportFormat::Csv(view) => {
            let table = report_files::table(&report, view, lang).ok_or_else(ApiError::internal)?;
            let body = report_files::csv(&table).map_err(file_failed)?;
            Ok(file_response("text/csv; charset=utf-8", format!("{stem}-{view}.csv"), body))
        }
        ReportFormat::Xlsx => {
            let body = report_files::xlsx(&report, lang).map_err(file_failed)?;
            let kind = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
            Ok(file_response(kind, format!("{stem}.xlsx"), body))
        }
        ReportFormat::Svg(view) => {
            let svg = finance::charts::chart(&report, view).ok_or_else(ApiError::internal)?;
            let kind = HeaderValue::from_static("image/svg+xml; charset=utf-8");
            Ok(([(header::CONTENT_TYPE, kind)], svg).into_response())
        }
    }
}

/// The season's report as `staff` may see it, read on `store` (the read side).
async fn viewer_report(
    store: Arc<dyn Storage>,
    staff: &Staff,
    season_id: SeasonId,
    now: Timestamp,
) -> Result<SeasonReport, ApiError> {
    let season = load_season(store.as_ref(), season_id).await?;
    let city = viewer_city(staff, &season)?;
    Ok(finance::report_for(store.as_ref(), &season, city, now).await?)
}

/// Reconciles the season now and lists every break (a closed season is reconciled afresh too).
#[utoipa::path(get, operation_id = "reconcile_season", path = "/v1/seasons/{id}/reconciliation", security(("staff_key" = [])), params(("id" = Uuid, Path)), responses((status = 200, description = "every check and its breaks", body = Reconciliation), (status = 403, body = super::error::ErrorBody)))]
pub async fn reconciliation(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
) -> Result<Json<Reconciliation>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    staff.may(access::reconcile_season, season.province)?;
    Ok(Json(finance::reconcile(state.store(), &season, state.clock().now()).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    season_id: SeasonId,
    #[schema(value_type = String, format = DateTime)]
    cut_off: Timestamp,
}

/// Settles every unsettled, unreversed redemption up to the cut-off: one line per merchant,
/// written a chunk of merchants at a time (`finance::settle`).
#[utoipa::path(post, operation_id = "settle", request_body = SettleBody, path = "/v1/settlements", security(("staff_key" = [])), params(("Idempotency-Key" = String, Header)), responses((status = 201, description = "the settlement", body = SettlementAnswer), (status = 409, body = super::error::ErrorBody, description = "nothing_to_settle"), (status = 422, body = super::error::ErrorBody, description = "idempotency_key_reused, invalid_cut_off"), (status = 403, body = super::error::ErrorBody)))]
pub async fn settle(
    State(state): State<AppState>,
    staff: Staff,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let (scope, hash) =
        match staff_prelude(state.store(), staff.key_id, "/v1/settlements", &key, &body).await? {
            Prelude::Replay(replayed) => return Ok(replayed),
            Prelude::Fresh { scope, hash } => (scope, hash),
        };
    let request: SettleBody = parse_json(&body)?;
    let season = load_season(state.store(), request.season_id).await?;
    require_province_finance(&staff, &season)?;
    let answer = IdemRecord { scope, key, request_hash: hash, status: 201, body: String::new() };
    let now = state.clock().now();
    match finance::settle(
        state.store(),
        &season,
        request.cut_off,
        now,
        answer.clone(),
        state.settlement_chunking(),
    )
    .await
    {
        Ok(settlement) => Ok(json_response(201, SettlementAnswer::text(&settlement))),
        Err(FinanceError::Replay) => replay_answer(&state, &answer).await,
        Err(FinanceError::NothingToSettle) => {
            // Stored like a 201, so a retry with this key is told the same even if redemptions
            // up to the cut-off have appeared since (a late till sync): it settles nothing.
            let refusal = finance_error(FinanceError::NothingToSettle);
            let record =
                IdemRecord { status: refusal.status.as_u16(), body: refusal.body_text(), ..answer.clone() };
            match state.store().save_answer(&record).await {
                Err(crate::storage::WriteError::IdempotencyTaken) => replay_answer(&state, &answer).await,
                Err(crate::storage::WriteError::Storage(error)) => Err(error.into()),
                _ => Err(refusal),
            }
        }
        Err(error) => Err(finance_error(error)),
    }
}

async fn replay_answer(state: &AppState, answer: &IdemRecord) -> Result<Response, ApiError> {
    super::idempotency::replay_if_known(state.store(), &answer.scope, &answer.key, &answer.request_hash)
        .await?
        .ok_or_else(ApiError::internal)
}

const SETTLEMENTS_PAGE_DEFAULT: u32 = 100;
const SETTLEMENTS_PAGE_MAX: u32 = 500;

/// The season's settlements, oldest first, a page at a time: each with its status (complete,
/// or in progress after a run that stopped part way), total and payout. Finance and auditors.
#[utoipa::path(get, operation_id = "list_season_settlements", path = "/v1/seasons/{id}/settlements", security(("staff_key" = [])), params(("id" = Uuid, Path), ("after" = Option<Uuid>, Query, description = "next_after of the previous page"), ("limit" = Option<u32>, Query, description = "1 to 500, default 100")), responses((status = 200, description = "a page of settlements, oldest first", body = SettlementPage), (status = 422, body = super::error::ErrorBody, description = "invalid_limit, invalid_cursor")))]
pub async fn season_settlements(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    ApiQuery(query): ApiQuery<PageQuery<SettlementId>>,
) -> Result<Json<SettlementPage>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    viewer_city(&staff, &season)?;
    let limit = page_limit(query.limit, SETTLEMENTS_PAGE_DEFAULT, SETTLEMENTS_PAGE_MAX)?;
    let after = match query.after {
        Some(id) => Some(
            state.store().settlement(id).await?.filter(|s| s.season_id == season_id).ok_or_else(|| {
                ApiError::unprocessable(ErrorCode::InvalidCursor, "after names no settlement of this season")
            })?,
        ),
        None => None,
    };
    let mut settlements =
        state.store().season_settlements(season_id, after.as_ref(), i64::from(limit) + 1).await?;
    let next_after = next_cursor(&mut settlements, limit).map(|last| last.id);
    Ok(Json(SettlementPage {
        next_after,
        settlements: settlements.iter().map(SettlementAnswer::of).collect(),
    }))
}

/// A page of a season's settlements; `next_after` is the cursor of the next page, null on the
/// last. (Fields in alphabetical order, as the answer always had them.)
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SettlementPage {
    next_after: Option<SettlementId>,
    settlements: Vec<SettlementAnswer>,
}

/// A settlement with its lines.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SettlementWithLines {
    lines: Vec<SettlementLineAnswer>,
    settlement: SettlementAnswer,
}

/// What a settlement pays one merchant, in yuan, and each funder's part of it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SettlementLineAnswer {
    amount: String,
    funders: Vec<FunderAmount>,
    merchant_id: MerchantId,
    merchant_name: String,
    redemptions: i64,
    /// `none` (in the payout file), `held`, `released` or `rejected`.
    status: &'static str,
}

/// A funder's part of an amount, in yuan.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FunderAmount {
    amount: String,
    #[schema(value_type = String)]
    funder: RegionCode,
}

/// A settlement and its lines (a city's finance sees its own city's merchants' lines).
#[utoipa::path(get, operation_id = "get_settlement", path = "/v1/settlements/{id}", security(("staff_key" = [])), params(("id" = Uuid, Path)), responses((status = 200, description = "the settlement and its lines", body = SettlementWithLines)))]
pub async fn get_settlement(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(settlement_id): ApiPath<SettlementId>,
) -> Result<Json<SettlementWithLines>, ApiError> {
    let (settlement, lines) = settlement_for(&state, &staff, settlement_id).await?;
    let lines = lines
        .iter()
        .map(|l| SettlementLineAnswer {
            amount: finance::yuan(l.amount_fen),
            funders: l
                .funders
                .iter()
                .map(|(f, a)| FunderAmount { amount: a.to_string(), funder: *f })
                .collect(),
            merchant_id: l.merchant_id,
            merchant_name: l.merchant_name.clone(),
            redemptions: l.redemption_count,
            status: l.hold_status.as_str(),
        })
        .collect();
    Ok(Json(SettlementWithLines { lines, settlement: SettlementAnswer::of(&settlement) }))
}

async fn settlement_for(
    state: &AppState,
    staff: &Staff,
    settlement_id: SettlementId,
) -> Result<(crate::storage::SettlementRecord, Vec<crate::storage::SettlementLineRecord>), ApiError> {
    let settlement = load_settlement(state.store(), settlement_id).await?;
    let season = load_season(state.store(), settlement.season_id).await?;
    let city = viewer_city(staff, &season)?;
    let mut lines = state.store().settlement_lines(settlement_id).await?;
    if let Some(city) = city {
        let city = city.to_string();
        lines.retain(|line| line.merchant_city == city);
    }
    Ok((settlement, lines))
}

/// The payout file for the bank: merchant, account, amount, and the split per funder.
#[utoipa::path(get, operation_id = "payout_csv", path = "/v1/settlements/{id}/payout.csv", security(("staff_key" = [])), params(("id" = Uuid, Path), ("lang" = Option<String>, Query, description = "zh (default) or en")), responses((status = 200, description = "the payout file", content_type = "text/csv", body = String)))]
pub async fn payout_csv(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(settlement_id): ApiPath<SettlementId>,
    ApiQuery(query): ApiQuery<LangQuery>,
) -> Result<Response, ApiError> {
    let settlement = load_settlement(state.store(), settlement_id).await?;
    let season = load_season(state.store(), settlement.season_id).await?;
    let city = viewer_city(&staff, &season)?.map(|c| c.to_string());
    let lang = file_lang(query.lang.as_deref())?;
    if settlement.completed_at.is_none() {
        return Err(finance_error(FinanceError::InProgress));
    }
    // Held lines wait for a decision; lines released since the last settlement are paid here.
    let mut lines = state.store().payout_lines(settlement_id).await?;
    if let Some(city) = city {
        lines.retain(|l| l.merchant_city == city);
    }
    let body = report_files::payout_csv(&settlement, &lines, lang).map_err(file_failed)?;
    Ok(file_response("text/csv; charset=utf-8", format!("payout-{settlement_id}.csv"), body))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PaidBody {
    /// The bank's reference for the payout batch.
    payout_ref: String,
}

/// Records that the bank paid a settlement out (a ledger entry per merchant: settled -> paid).
#[utoipa::path(post, operation_id = "mark_settlement_paid", request_body = PaidBody, path = "/v1/settlements/{id}/paid", security(("staff_key" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 201, description = "the settlement, paid", body = SettlementAnswer), (status = 409, body = super::error::ErrorBody, description = "already_paid, settlement_in_progress")))]
pub async fn paid(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(settlement_id): ApiPath<SettlementId>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let path = format!("/v1/settlements/{settlement_id}/paid");
    let (scope, hash) = match staff_prelude(state.store(), staff.key_id, &path, &key, &body).await? {
        Prelude::Replay(replayed) => return Ok(replayed),
        Prelude::Fresh { scope, hash } => (scope, hash),
    };
    let request: PaidBody = parse_json(&body)?;
    let payout_ref = match plain_text(&request.payout_ref, 100) {
        Some(payout_ref) if !payout_ref.is_empty() => payout_ref,
        _ => {
            return Err(ApiError::unprocessable(
                ErrorCode::InvalidPayoutRef,
                format!("payout_ref is 1-100 characters, {}", super::extract::PLAIN_TEXT_RULE),
            ));
        }
    };
    let settlement = load_settlement(state.store(), settlement_id).await?;
    let season = load_season(state.store(), settlement.season_id).await?;
    require_province_finance(&staff, &season)?;
    let now = state.clock().now();
    let paid = crate::storage::SettlementRecord {
        paid_at: Some(now),
        payout_ref: Some(payout_ref.as_str().to_owned()),
        ..settlement
    };
    let answer =
        IdemRecord { scope, key, request_hash: hash, status: 201, body: SettlementAnswer::text(&paid) };
    match state.store().commit_payout(settlement_id, payout_ref.as_str(), now, &answer).await {
        Ok(()) => Ok(json_response(201, answer.body)),
        Err(error) => match FinanceError::from(error) {
            FinanceError::Replay => replay_answer(&state, &answer).await,
            other => Err(finance_error(other)),
        },
    }
}

/// Closes a season (province finance, after it ends). Idempotent by itself: closing again
/// answers the outcome stored at the first close. The Idempotency-Key is required, as on every
/// write, but nothing is stored under it: the season's own record is the answer.
#[utoipa::path(post, operation_id = "close_season", path = "/v1/seasons/{id}/close", security(("staff_key" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 200, description = "the season closed: its checkpoint and reconciliation", body = CloseOutcome), (status = 409, body = super::error::ErrorBody, description = "season_not_ended")))]
pub async fn close(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    IdempotencyKey(_key): IdempotencyKey,
) -> Result<Json<CloseOutcome>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    require_province_finance(&staff, &season)?;
    let now = state.clock().now();
    let outcome =
        finance::close(state.store(), state.ledger_key(), &season, now, state.settlement_chunking())
            .await
            .map_err(finance_error)?;
    // Claims decided from memory must see the season closed at once, here and on every node.
    state.announce(crate::app::events::NodeEvent::ClaimsChanged).await;
    Ok(Json(outcome))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    season: SeasonId,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// A merchant's redemptions, reversals, settlements and payouts in a season, with running totals.
#[utoipa::path(get, operation_id = "merchant_statement", path = "/v1/merchants/{id}/statement", security(("staff_key" = [])), params(("id" = Uuid, Path), ("season" = Uuid, Query), ("format" = Option<String>, Query), ("lang" = Option<String>, Query, description = "zh (default) or en")), responses((status = 200, description = "the statement, as JSON or CSV", content((Statement = "application/json"), (String = "text/csv")))))]
pub async fn statement(
    State(state): State<AppState>,
    staff: Option<Staff>,
    ApiPath(merchant_id): ApiPath<MerchantId>,
    ApiQuery(query): ApiQuery<StatementQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let merchant = super::merchants::load(&state, merchant_id).await?;
    // Its own terminals (signed), or finance and auditors over its city.
    let rule = access::read_merchant_money;
    merchant_or_staff(&state, staff, &merchant, rule, (&method, &uri, &headers), &[]).await?;
    let lang = file_lang(query.lang.as_deref())?;
    let events = state.reads().read(|store| statement_events(store, merchant_id, query.season)).await?;
    report_files::statement_within_limit(&events)?;
    let lines = report_files::statement_lines(&events);
    if !report_files::statement_is_csv(query.format.as_deref())? {
        // What the merchant is told about its held lines: each with why it was held and, once
        // decided, the release's or the rejection's note.
        let holds = state.store().held_lines(query.season).await?;
        let holds = holds
            .iter()
            .filter(|l| l.merchant_id == merchant_id)
            .map(|l| StatementHold {
                settlement_id: l.settlement_id,
                amount: finance::yuan(l.amount_fen),
                status: l.status.as_str(),
                reason: l.reason.clone(),
                note: match l.status {
                    crate::domain::finance::HoldStatus::Rejected => l.reject_note.clone(),
                    crate::domain::finance::HoldStatus::Released => l.release_note.clone(),
                    _ => None,
                },
            })
            .collect();
        return Ok(Json(Statement { holds, lines, merchant_id, season_id: query.season }).into_response());
    }
    let body = report_files::statement_csv(&lines, lang).map_err(file_failed)?;
    let name = format!("statement-{merchant_id}-{}.csv", query.season);
    Ok(file_response("text/csv; charset=utf-8", name, body))
}

/// A merchant's statement events in a season (one more than the most a statement lists), read
/// on `store` (the read side).
async fn statement_events(
    store: Arc<dyn Storage>,
    merchant_id: MerchantId,
    season_id: SeasonId,
) -> Result<Vec<crate::storage::StatementEvent>, ApiError> {
    load_season(store.as_ref(), season_id).await?;
    Ok(store.merchant_statement(merchant_id, season_id, MAX_REPORT_ROWS + 1).await?)
}

/// A merchant's statement of a season: each redemption, reversal, settlement and payout, with
/// running totals.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Statement {
    /// Its settlement lines that were held, and what finance decided (docs/settlement-holds.md).
    holds: Vec<StatementHold>,
    lines: Vec<StatementLine>,
    merchant_id: MerchantId,
    season_id: SeasonId,
}

/// A held line as its merchant's statement shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatementHold {
    settlement_id: SettlementId,
    amount: String,
    /// `held`, `released` or `rejected`.
    status: &'static str,
    /// Why it was held.
    reason: String,
    /// A rejection's note (why the subsidy is not paid), or a release's.
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalQuery {
    merchant: MerchantId,
}

/// Matches a till's journal (the merchant SDK's JSON-lines file, as the body) against the
/// server's redemptions: matched, missing on the server, missing in the till, mismatched.
#[utoipa::path(post, operation_id = "reconcile_merchant_journal", request_body(content = String, content_type = "application/x-ndjson", description = "the till's journal: the merchant SDK's JSON-lines file"), path = "/v1/seasons/{id}/reconciliation/merchant-journal", security(("staff_key" = [])), params(("id" = Uuid, Path), ("merchant" = Uuid, Query)), responses((status = 200, description = "matched, missing on the server, missing in the till, mismatched", body = MatchOutcome), (status = 422, body = super::error::ErrorBody)))]
pub async fn merchant_journal(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    ApiQuery(query): ApiQuery<JournalQuery>,
    super::extract::ApiRawBytes(body): super::extract::ApiRawBytes,
) -> Result<Json<MatchOutcome>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    let merchant = super::merchants::load(&state, query.merchant).await?;
    staff.may(access::match_till_journal, merchant.city)?;
    let till = crate::app::till::journal_match::read_journal(&body, MAX_JOURNAL_LINES)
        .map_err(|m| ApiError::unprocessable(ErrorCode::InvalidJournal, m))?;
    for terminal in &till.terminals {
        let of_merchant =
            state.store().terminal(*terminal).await?.is_some_and(|t| t.merchant_id == merchant.id);
        if !of_merchant {
            return Err(ApiError::unprocessable(
                ErrorCode::InvalidJournal,
                format!("terminal {terminal} in the journal is not a terminal of this merchant"),
            ));
        }
    }
    let outcome = crate::app::till::journal_match::match_journal(state.store(), &season, &till).await?;
    Ok(Json(outcome))
}

// ---------------------------------------------------------------------------------------------
// Settlement holds (docs/settlement-holds.md)

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    merchant_id: MerchantId,
    /// Why (a complaint, what was seen): kept with the hold and with every line it holds.
    reason: String,
}

/// Puts a merchant on hold for the season (the province's finance): from the next settlement
/// on, its lines are held (payable -> held), not in the payout file, until finance releases or
/// rejects them. A merchant already on hold answers its first hold. The Idempotency-Key is
/// required, as on every write; the hold itself is the stored answer.
#[utoipa::path(post, operation_id = "hold_merchant", request_body = HoldBody, path = "/v1/seasons/{id}/holds", security(("staff_key" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 201, description = "the hold", body = finance::holds::HoldAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody, description = "season_not_found, merchant_not_found"), (status = 422, body = super::error::ErrorBody, description = "invalid_field")))]
pub async fn hold_merchant(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    IdempotencyKey(_key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    require_province_finance(&staff, &season)?;
    let request: HoldBody = parse_json(&body)?;
    let hold = finance::holds::hold_merchant(
        state.store(),
        season_id,
        request.merchant_id,
        crate::domain::finance::HoldSource::Manual,
        &request.reason,
        Some(staff.key_id),
        state.clock().now(),
    )
    .await?;
    Ok((axum::http::StatusCode::CREATED, Json(finance::holds::HoldAnswer::of(&hold))).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LiftBody {
    /// Why (what finance checked): 1 to 500 characters, kept with the hold.
    note: String,
}

/// Lifts a merchant's hold for the season (the province's finance, with a note): the next
/// settlements pay the merchant normally; lines held already stay held until released or
/// rejected, and a score does not hold it again this season (a hold by hand may). A lifted hold
/// answers as it is. The Idempotency-Key is required, as on every write.
#[utoipa::path(post, operation_id = "lift_hold", request_body = LiftBody, path = "/v1/seasons/{id}/holds/{merchant_id}/lift", security(("staff_key" = [])), params(("id" = Uuid, Path), ("merchant_id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 200, description = "the hold, lifted", body = finance::holds::HoldAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody, description = "season_not_found, hold_not_found"), (status = 422, body = super::error::ErrorBody, description = "invalid_field")))]
pub async fn lift_hold(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((season_id, merchant_id)): ApiPath<(SeasonId, MerchantId)>,
    IdempotencyKey(_key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Json<finance::holds::HoldAnswer>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    require_province_finance(&staff, &season)?;
    let request: LiftBody = parse_json(&body)?;
    let hold = finance::holds::lift_hold(
        state.store(),
        season_id,
        merchant_id,
        staff.key_id,
        &request.note,
        state.clock().now(),
    )
    .await?;
    Ok(Json(finance::holds::HoldAnswer::of(&hold)))
}

/// A season's merchants on hold and its held settlement lines with finance's decisions.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SeasonHolds {
    holds: Vec<finance::holds::HoldAnswer>,
    lines: Vec<finance::holds::HeldLineAnswer>,
}

/// The season's holds (lifted ones too, with who lifted them, when and why) and held lines
/// (finance and auditors; those of a city see its own merchants).
#[utoipa::path(get, operation_id = "season_holds", path = "/v1/seasons/{id}/holds", security(("staff_key" = [])), params(("id" = Uuid, Path)), responses((status = 200, description = "the holds and the held lines", body = SeasonHolds), (status = 403, body = super::error::ErrorBody)))]
pub async fn season_holds(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
) -> Result<Json<SeasonHolds>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    let city = viewer_city(&staff, &season)?;
    let mut lines = state.store().held_lines(season_id).await?;
    let holds = state.store().season_holds(season_id, city).await?;
    if let Some(city) = city.map(|c| c.to_string()) {
        lines.retain(|l| l.merchant_city == city);
    }
    Ok(Json(SeasonHolds {
        holds: holds.iter().map(finance::holds::HoldAnswer::of).collect(),
        lines: lines.iter().map(finance::holds::HeldLineAnswer::of).collect(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HoldNote {
    /// Why: for a rejection, what the merchant is told. Required but when approving.
    #[serde(default)]
    note: Option<String>,
}

async fn decide_hold(
    state: &AppState,
    staff: &Staff,
    settlement_id: SettlementId,
    merchant_id: MerchantId,
    body: &[u8],
    kind: crate::domain::finance::HoldDecisionKind,
) -> Result<Json<finance::holds::HeldLineAnswer>, ApiError> {
    let settlement = load_settlement(state.store(), settlement_id).await?;
    let season = load_season(state.store(), settlement.season_id).await?;
    require_province_finance(staff, &season)?;
    let asked: HoldNote = if body.is_empty() { HoldNote { note: None } } else { parse_json(body)? };
    let line = finance::holds::decide(
        state.store(),
        settlement_id,
        merchant_id,
        kind,
        staff.key_id,
        asked.note.as_deref().unwrap_or(""),
        state.clock().now(),
    )
    .await?;
    Ok(Json(finance::holds::HeldLineAnswer::of(&line)))
}

/// Releases a held line (the province's finance, with a note): held -> settled, paid in the
/// next settlement's payout. Again answers the same; 409 `hold_decided` once rejected.
#[utoipa::path(post, operation_id = "release_held_line", request_body = HoldNote, path = "/v1/settlements/{id}/holds/{merchant_id}/release", security(("staff_key" = [])), params(("id" = Uuid, Path), ("merchant_id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 200, description = "the line, released", body = finance::holds::HeldLineAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody, description = "hold_not_found"), (status = 409, body = super::error::ErrorBody, description = "hold_decided"), (status = 422, body = super::error::ErrorBody, description = "invalid_field")))]
pub async fn release_held_line(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((settlement_id, merchant_id)): ApiPath<(SettlementId, MerchantId)>,
    IdempotencyKey(_key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Json<finance::holds::HeldLineAnswer>, ApiError> {
    let kind = crate::domain::finance::HoldDecisionKind::Release;
    decide_hold(&state, &staff, settlement_id, merchant_id, &body, kind).await
}

/// Proposes rejecting a held line (the province's finance, with the note the merchant is told);
/// another person approves it. Again answers the same; 409 `hold_decided` once released.
#[utoipa::path(post, operation_id = "propose_held_line_rejection", request_body = HoldNote, path = "/v1/settlements/{id}/holds/{merchant_id}/reject", security(("staff_key" = [])), params(("id" = Uuid, Path), ("merchant_id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 200, description = "the line, its rejection proposed", body = finance::holds::HeldLineAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody, description = "hold_not_found"), (status = 409, body = super::error::ErrorBody, description = "hold_decided"), (status = 422, body = super::error::ErrorBody, description = "invalid_field")))]
pub async fn propose_rejection(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((settlement_id, merchant_id)): ApiPath<(SettlementId, MerchantId)>,
    IdempotencyKey(_key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Json<finance::holds::HeldLineAnswer>, ApiError> {
    let kind = crate::domain::finance::HoldDecisionKind::ProposeReject;
    decide_hold(&state, &staff, settlement_id, merchant_id, &body, kind).await
}

/// Approves a proposed rejection (four eyes: another person of the province's finance than the
/// proposer, 403 `same_approver`): held -> each funder's pool. Again answers the same; 409
/// `rejection_not_proposed`, `hold_decided`.
#[utoipa::path(post, operation_id = "approve_held_line_rejection", request_body = Option<HoldNote>, path = "/v1/settlements/{id}/holds/{merchant_id}/reject/approve", security(("staff_key" = [])), params(("id" = Uuid, Path), ("merchant_id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 200, description = "the line, rejected", body = finance::holds::HeldLineAnswer), (status = 403, body = super::error::ErrorBody, description = "forbidden, same_approver"), (status = 404, body = super::error::ErrorBody, description = "hold_not_found"), (status = 409, body = super::error::ErrorBody, description = "hold_decided, rejection_not_proposed")))]
pub async fn approve_rejection(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((settlement_id, merchant_id)): ApiPath<(SettlementId, MerchantId)>,
    IdempotencyKey(_key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Json<finance::holds::HeldLineAnswer>, ApiError> {
    let kind = crate::domain::finance::HoldDecisionKind::ApproveReject;
    decide_hold(&state, &staff, settlement_id, merchant_id, &body, kind).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HoldThresholdBody {
    /// 0 to 100; null: no automatic holds.
    hold_score_threshold: Option<u32>,
}

/// The season's hold threshold, as set.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HoldThresholdAnswer {
    season_id: SeasonId,
    hold_score_threshold: Option<u8>,
}

/// Sets the cash-out score at or above which a merchant's settlement is held (0 to 100), or
/// clears it (null: no automatic holds). Where seasons are configured: the province_admin of the
/// season's province. Holds already made stay.
#[utoipa::path(put, operation_id = "set_hold_threshold", request_body = HoldThresholdBody, path = "/v1/seasons/{id}/hold-threshold", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the season's hold threshold", body = HoldThresholdAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody, description = "invalid_hold_threshold")))]
pub async fn set_hold_threshold(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<HoldThresholdAnswer>, ApiError> {
    let season = load_season(state.store(), season_id).await?;
    staff.may(access::open_season, season.province)?;
    let request: HoldThresholdBody = parse_json(&body)?;
    let threshold = crate::app::seasons::hold_score_threshold(request.hold_score_threshold)?;
    if !state.store().set_hold_threshold(season_id, threshold).await? {
        return Err(ApiError::not_found(ErrorCode::SeasonNotFound, "no such season"));
    }
    tracing::info!(season = %season_id, threshold = ?threshold, staff_key = %staff.key_id, "season hold threshold set");
    Ok(Json(HoldThresholdAnswer { season_id, hold_score_threshold: threshold }))
}
