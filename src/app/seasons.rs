//! Seasons, budgets, voucher batches and lottery draws: the requests that make them, checked
//! against the rules, and the ledger entries they post. See [docs/seasons.md](../../docs/seasons.md).

use serde::Deserialize;
use uuid::Uuid;

use crate::app::error::AppError;
use crate::domain::access;
use crate::domain::entries::{budget_entry, reserve_entry};
use crate::domain::error_code::ErrorCode;
use crate::domain::funding::{FundingShares, VoucherTerms};
use crate::domain::ids::{BatchId, CitizenId, SeasonId, VoucherId};
use crate::domain::ledger::NewEntry;
use crate::domain::money::{Fen, Yuan};
use crate::domain::region::{RegionCode, RegionLevel};
use crate::domain::season::{
    Batch, Category, DRAW_ALGORITHM, Lottery, LotterySalt, MAX_BATCHES_PER_SEASON, MAX_RELEASES, MAX_STOCK,
    MAX_VALID_HOURS, Release, Season, SeasonStatus, SubsidyCeilings,
};
use crate::domain::staff::StaffScope;
use crate::domain::text::{PLAIN_TEXT_RULE, plain_text};
use crate::domain::time::Timestamp;
use crate::storage::Storage;

const MAX_BUDGETS: usize = 64;
/// The highest per-merchant redemption limit a season takes.
const MAX_MERCHANT_REDEMPTION_LIMIT: u32 = 1_000;
const MAX_NAME_CHARS: usize = 100;

fn invalid(code: ErrorCode, message: impl Into<String>) -> AppError {
    AppError::invalid(code, message)
}

pub fn parse_region(text: &str, what: &str) -> Result<RegionCode, AppError> {
    text.parse().map_err(|e: crate::domain::region::RegionError| {
        invalid(ErrorCode::InvalidRegion, format!("{what}: {e}"))
    })
}

pub fn check_name(name: &str) -> Result<String, AppError> {
    match plain_text(name, MAX_NAME_CHARS) {
        Some(name) if !name.is_empty() => Ok(name.into_string()),
        _ => Err(invalid(ErrorCode::InvalidName, format!("a name is 1-100 characters, {PLAIN_TEXT_RULE}"))),
    }
}

pub fn season_closed() -> AppError {
    AppError::conflict(ErrorCode::SeasonClosed, "the season is closed: it takes no more budgets or batches")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetLine {
    pub funder: String,
    pub amount: Yuan,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSeason {
    pub name: String,
    pub province: String,
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Timestamp,
    pub budgets: Vec<BudgetLine>,
    #[serde(default)]
    pub per_citizen_cap: Option<Yuan>,
    /// At most this much face value claimed per person per calendar month (CST).
    #[serde(default)]
    pub per_citizen_monthly_cap: Option<Yuan>,
    #[serde(default)]
    pub allow_stacking: bool,
    /// A refunded sale forfeits its voucher (Guangzhou) instead of giving it back (off).
    #[serde(default)]
    pub refund_forfeits_voucher: bool,
    /// At most this many of a citizen's vouchers at one merchant in the season (1 to 1,000).
    #[serde(default)]
    pub merchant_redemption_limit: Option<u32>,
    /// The most of an order the vouchers may pay, in percent (1 to 100), per merchant category:
    /// `{"performance": 50, "bookstore": 20}`. A category not listed has no ceiling.
    #[serde(default)]
    pub subsidy_ceilings: std::collections::BTreeMap<String, u32>,
    /// The cash-out score (0 to 100) at or above which a merchant's settlement lines are held
    /// (docs/settlement-holds.md); absent: no automatic holds.
    #[serde(default)]
    pub hold_score_threshold: Option<u32>,
}

/// The season's hold threshold as asked: 0 to 100, or none (422 `invalid_hold_threshold`).
pub fn hold_score_threshold(asked: Option<u32>) -> Result<Option<u8>, AppError> {
    match asked {
        None => Ok(None),
        Some(n) => u8::try_from(n).ok().filter(|n| *n <= 100).map(Some).ok_or_else(|| {
            invalid(ErrorCode::InvalidHoldThreshold, "hold_score_threshold is a score from 0 to 100")
        }),
    }
}

/// A season's subsidy ceilings from the request: known categories, 1 to 100 percent each (422
/// `invalid_subsidy_ceiling`).
fn parse_ceilings(asked: &std::collections::BTreeMap<String, u32>) -> Result<SubsidyCeilings, AppError> {
    let mut pairs = Vec::with_capacity(asked.len());
    for (category, percent) in asked {
        let category: Category =
            category.parse().map_err(|m: String| invalid(ErrorCode::InvalidSubsidyCeiling, m))?;
        pairs.push((category, *percent));
    }
    SubsidyCeilings::new(pairs).map_err(|m| invalid(ErrorCode::InvalidSubsidyCeiling, m))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBudget {
    pub funder: String,
    pub amount: Yuan,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundingLine {
    pub funder: String,
    pub share: u32,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DailyRelease {
    #[schema(value_type = String, format = DateTime)]
    pub first_at: Timestamp,
    pub quantity: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    pub name: String,
    pub issuer: String,
    pub kind: String,
    #[serde(default)]
    pub face_value: Option<Yuan>,
    #[serde(default)]
    pub percent: Option<u32>,
    #[serde(default)]
    pub cap: Option<Yuan>,
    #[serde(default)]
    pub step: Option<Yuan>,
    #[serde(default)]
    pub min_spend: Option<Yuan>,
    pub stock: i64,
    pub per_citizen_limit: u32,
    pub valid_hours: u32,
    #[schema(value_type = String, format = DateTime)]
    pub claim_opens_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub claim_closes_at: Timestamp,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub releases: Option<Vec<Release>>,
    #[serde(default)]
    pub daily_release: Option<DailyRelease>,
    pub categories: Vec<String>,
    #[serde(default)]
    pub funding: Option<Vec<FundingLine>>,
    /// Points a benefit card holder pays to exchange for one voucher (absent: not exchangeable).
    #[serde(default)]
    pub points_price: Option<i64>,
    /// Given out by lottery: `{"seed_sha256": "<64 hex digits>"}`, the SHA-256 of the seed the
    /// issuer will reveal when it draws (absent: a rush).
    #[serde(default)]
    pub lottery: Option<LotteryRequest>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LotteryRequest {
    pub seed_sha256: String,
}

/// A lottery batch's terms: a well-formed commitment; one voucher per person; no releases and
/// no points exchange (both are ways of claiming, which a lottery replaces). 422 `invalid_lottery`.
/// The salt of its entrants' keyed hashes is drawn now, and committed to `now`.
fn batch_lottery(request: &CreateBatch, now: Timestamp) -> Result<Option<Lottery>, AppError> {
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
    let mut salt = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| AppError::internal("the system's random generator failed"))?;
    Ok(Some(Lottery {
        seed_sha256,
        salt: LotterySalt(salt),
        committed_at: now,
        algorithm: DRAW_ALGORITHM,
        drawn_at: None,
    }))
}

fn batch_terms(request: &CreateBatch) -> Result<VoucherTerms, AppError> {
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

fn batch_releases(request: &CreateBatch) -> Result<Vec<Release>, AppError> {
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
) -> Result<FundingShares, AppError> {
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

fn batch_categories(request: &CreateBatch) -> Result<Vec<Category>, AppError> {
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

fn check_batch_numbers(request: &CreateBatch, season: &Season) -> Result<(), AppError> {
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

/// A season as asked, checked, with its initial budget entries (one per funder) and each
/// funder's amount, in the order asked.
pub struct SeasonPlan {
    pub season: Season,
    pub funders: Vec<RegionCode>,
    pub amounts: Vec<Fen>,
    pub entries: Vec<NewEntry>,
}

/// A new season from the request of `scope` (a province_admin of that province), checked.
pub fn plan_season(scope: &StaffScope, request: &CreateSeason) -> Result<SeasonPlan, AppError> {
    let province = parse_region(&request.province, "province")?;
    access::open_season(scope, province)?;
    crate::domain::season::check_season_dates(request.starts_at, request.ends_at)
        .map_err(|message| invalid(ErrorCode::InvalidDates, message))?;
    let merchant_redemption_limit = match request.merchant_redemption_limit {
        Some(1..=MAX_MERCHANT_REDEMPTION_LIMIT) | None => request.merchant_redemption_limit,
        Some(_) => {
            let message = format!("merchant_redemption_limit is 1 to {MAX_MERCHANT_REDEMPTION_LIMIT}");
            return Err(invalid(ErrorCode::InvalidMerchantRedemptionLimit, message));
        }
    };
    let subsidy_ceilings = parse_ceilings(&request.subsidy_ceilings)?;
    let hold_score_threshold = hold_score_threshold(request.hold_score_threshold)?;
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
        hold_score_threshold,
        closed_at: None,
    };
    opening_budgets(season, &request.budgets)
}

/// The initial budgets of `season`: 1 to 64 distinct funders of its province, each more than 0.00.
fn opening_budgets(season: Season, budgets: &[BudgetLine]) -> Result<SeasonPlan, AppError> {
    if budgets.is_empty() || budgets.len() > MAX_BUDGETS {
        return Err(invalid(ErrorCode::InvalidBudgets, "a season needs 1 to 64 budgets"));
    }
    let (mut funders, mut amounts, mut entries) = (Vec::new(), Vec::new(), Vec::new());
    for line in budgets {
        let funder = parse_region(&line.funder, "funder")?;
        if !season.accepts_funder(funder) || funders.contains(&funder) {
            return Err(invalid(
                ErrorCode::InvalidFunder,
                format!("{funder} is not a distinct funder of province {}", season.province),
            ));
        }
        if line.amount.0.is_zero() {
            return Err(invalid(ErrorCode::InvalidAmount, "a budget must be more than 0.00"));
        }
        let memo = format!("budget:{}:{funder}:initial", season.id);
        entries.push(budget_entry(season.id, funder, line.amount.0, memo));
        funders.push(funder);
        amounts.push(line.amount.0);
    }
    Ok(SeasonPlan { season, funders, amounts, entries })
}

/// The funder and the entry of a budget added to `season` by `scope` (that funder's admin).
pub fn plan_budget(
    scope: &StaffScope,
    season: &Season,
    request: &AddBudget,
) -> Result<(RegionCode, NewEntry), AppError> {
    let funder = parse_region(&request.funder, "funder")?;
    if !season.accepts_funder(funder) {
        return Err(invalid(
            ErrorCode::InvalidFunder,
            format!("{funder} cannot fund a season of {}", season.province),
        ));
    }
    access::act_as_funder(scope, funder)?;
    if request.amount.0.is_zero() {
        return Err(invalid(ErrorCode::InvalidAmount, "a budget must be more than 0.00"));
    }
    let memo = format!("budget:{}:{}", season.id, Uuid::now_v7());
    Ok((funder, budget_entry(season.id, funder, request.amount.0, memo)))
}

/// A new batch of `season` from the request of `scope` (the issuer's admin) at `now`, checked,
/// with the entry that reserves its money.
pub async fn plan_batch(
    store: &dyn Storage,
    scope: &StaffScope,
    season: &Season,
    request: &CreateBatch,
    now: Timestamp,
) -> Result<(Batch, NewEntry), AppError> {
    let issuer = parse_region(&request.issuer, "issuer")?;
    if !season.accepts_funder(issuer) {
        return Err(invalid(
            ErrorCode::InvalidIssuer,
            format!("{issuer} is not the province or a city of {}", season.province),
        ));
    }
    access::act_as_funder(scope, issuer)?;
    check_batch_numbers(request, season)?;
    // A size guard, read outside the write: concurrent creations may pass it by a few.
    if store.season_batches(season.id).await?.len() >= MAX_BATCHES_PER_SEASON {
        return Err(AppError::conflict(
            ErrorCode::TooManyBatches,
            format!("a season has at most {MAX_BATCHES_PER_SEASON} batches"),
        ));
    }
    let batch = Batch {
        id: BatchId::new_v7(),
        season_id: season.id,
        name: check_name(&request.name)?,
        issuer,
        terms: batch_terms(request)?,
        stock: request.stock,
        per_citizen_limit: request.per_citizen_limit,
        valid_hours: request.valid_hours,
        claim_opens_at: request.claim_opens_at,
        claim_closes_at: request.claim_closes_at,
        categories: batch_categories(request)?,
        funding: batch_funding(request, issuer, season)?,
        releases: batch_releases(request)?,
        claimed_count: 0,
        returned_count: 0,
        reserve_returned: false,
        points_price: request.points_price,
        lottery: batch_lottery(request, now)?,
    };
    let entry = reserve_entry(&batch).map_err(|e| invalid(ErrorCode::InvalidStock, e.to_string()))?;
    Ok((batch, entry))
}

/// 409 `not_a_lottery`: entries and draws are for lottery batches only.
pub fn not_a_lottery() -> AppError {
    AppError::conflict(ErrorCode::NotALottery, "this batch is claimed in a rush, not drawn")
}

/// Where a citizen stands in a lottery batch's draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LotteryResult {
    /// The citizen did not enter.
    NotEntered,
    /// Entered; the batch is not drawn yet.
    Pending,
    /// Drawn, and the draw gave the citizen a voucher.
    Won,
    /// Drawn, and the citizen was not among the winners.
    Lost,
}

impl LotteryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LotteryResult::NotEntered => "not_entered",
            LotteryResult::Pending => "pending",
            LotteryResult::Won => "won",
            LotteryResult::Lost => "lost",
        }
    }
}

/// A citizen's entry in a lottery batch and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotteryStandingView {
    pub batch_id: BatchId,
    pub batch_name: String,
    pub result: LotteryResult,
    pub entered_at: Option<Timestamp>,
    pub drawn_at: Option<Timestamp>,
    /// The voucher the draw gave, when won.
    pub voucher_id: Option<VoucherId>,
    /// After an audited draw, the citizen's keyed hash in its audit: HMAC-SHA256(salt, citizen
    /// id), which they find among the entrants (and the winners, if won).
    pub entrant_hash: Option<[u8; 32]>,
}

/// What a citizen learns of a lottery batch they may have entered: entered or not, and after
/// the draw, won (with the voucher) or lost. The draw records its time only once every winner's
/// voucher is written, so a drawn batch without a voucher for the citizen is a loss.
pub async fn lottery_standing(
    store: &dyn Storage,
    citizen_id: CitizenId,
    batch_id: BatchId,
) -> Result<LotteryStandingView, AppError> {
    let batch = store
        .batch(batch_id)
        .await?
        .ok_or_else(|| AppError::not_found(ErrorCode::BatchNotFound, "no such batch"))?;
    let Some(lottery) = &batch.lottery else {
        return Err(not_a_lottery());
    };
    let standing = store.lottery_standing(batch.id, citizen_id).await?;
    let drawn_at = lottery.drawn_at;
    let result = match (&standing, drawn_at) {
        (None, _) => LotteryResult::NotEntered,
        (Some(_), None) => LotteryResult::Pending,
        (Some(entry), Some(_)) if entry.voucher_id.is_some() => LotteryResult::Won,
        (Some(_), Some(_)) => LotteryResult::Lost,
    };
    Ok(LotteryStandingView {
        batch_id: batch.id,
        batch_name: batch.name.clone(),
        result,
        entered_at: standing.as_ref().map(|s| s.entered_at),
        drawn_at,
        voucher_id: standing.as_ref().and_then(|s| s.voucher_id).filter(|_| result == LotteryResult::Won),
        entrant_hash: audited_hash(lottery, citizen_id).filter(|_| standing.is_some()),
    })
}

/// The citizen's keyed hash in a drawn batch's audit: none before the draw (the salt is secret
/// until then) or for a batch drawn by algorithm 1 (it has no audit).
fn audited_hash(lottery: &Lottery, citizen_id: CitizenId) -> Option<[u8; 32]> {
    let audited = lottery.drawn_at.is_some() && lottery.algorithm == DRAW_ALGORITHM;
    audited.then(|| Lottery::entrant_hash(&lottery.salt, citizen_id))
}

/// 409 `already_drawn`.
pub fn already_drawn() -> AppError {
    AppError::conflict(ErrorCode::AlreadyDrawn, "the batch was drawn already")
}

/// The lottery of a batch that may be drawn now with `seed`, or why not.
pub async fn check_drawable(
    store: &dyn Storage,
    batch: &Batch,
    seed: &str,
    now: Timestamp,
) -> Result<Lottery, AppError> {
    let Some(lottery) = batch.lottery.clone() else {
        return Err(not_a_lottery());
    };
    if lottery.drawn_at.is_some() {
        return Err(already_drawn());
    }
    let season = store
        .season(batch.season_id)
        .await?
        .ok_or_else(|| AppError::not_found(ErrorCode::SeasonNotFound, "no such season"))?;
    // Vouchers drawn after the season's end would be born expired.
    if season.status_at(now) != SeasonStatus::Open {
        return Err(AppError::conflict(ErrorCode::SeasonClosed, "the season is not open"));
    }
    if now < batch.claim_closes_at {
        let message = format!("entries close at {}; draw after that", batch.claim_closes_at);
        return Err(AppError::conflict(ErrorCode::DrawTooEarly, message));
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
pub fn draw_places(stock: i64) -> usize {
    let stock = usize::try_from(stock).unwrap_or(0);
    stock.saturating_add((stock / 10).max(1_000))
}

/// Reads a lottery batch's entries 10,000 a page and ranks each page on the blocking pool:
/// ranking is an HMAC and a SHA-256 per entry, about 10 ms of CPU a page, which on a request
/// worker would hold up the claims and redemptions sharing it.
pub async fn rank_entries(
    store: &dyn Storage,
    batch_id: BatchId,
    seed: &str,
    salt: &LotterySalt,
    keep: usize,
) -> Result<crate::domain::season::Draw, AppError> {
    const PAGE: usize = 10_000;
    let mut ranking = crate::domain::season::Draw::new(seed, salt.clone(), keep);
    let mut after = None;
    loop {
        let page = store.lottery_entrants(batch_id, after, PAGE as i64).await?;
        let last = if page.len() == PAGE { page.last().copied() } else { None };
        let rank_page = move || {
            page.iter().for_each(|citizen| ranking.add(*citizen));
            ranking
        };
        ranking = tokio::task::spawn_blocking(rank_page).await.map_err(|error| {
            AppError::internal(format!("ranking a page of lottery entries failed: {error}"))
        })?;
        match last {
            Some(last) => after = Some(last),
            None => return Ok(ranking),
        }
    }
}
