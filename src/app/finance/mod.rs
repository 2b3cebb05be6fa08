//! Finance, the application part: the season report, reconciliation, settlement and closing a
//! season. Used alike by the HTTP layer and the command line (`wenhui reconcile`, `wenhui settle`).
//!
//! The report is built from aggregates the database computes (storage's `FinanceStore`): memory
//! grows with the number of funders, batches, merchants and days, never with vouchers or
//! redemptions. Reconciliation reads the same aggregates and checks them against the ledger.

pub mod charts;
pub mod holds;
pub mod report_files;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::app::audit;
use crate::app::signing::SigningKey;
use crate::domain::accounts::SeasonAccount;
use crate::domain::error_code::ErrorCode;
use crate::domain::finance::{
    BatchFigures, FunderFigures, HoldStatus, SalesFigures, SettlementChunking, add_expiry_returns,
    add_hold_flows, day_label, funder_figures,
};
use crate::domain::ids::{BatchId, MerchantId, SeasonId, SettlementId};
use crate::domain::ledger::Balance;
use crate::domain::region::RegionCode;
use crate::domain::season::{Batch, Season, VoucherStatus};
use crate::domain::time::Timestamp;
use crate::storage::{
    CardFigures, FinalReport, HeldLineRecord, IdemRecord, MAX_BREAKS_LISTED, Refusal, SettlementPlan,
    SettlementRecord, Storage, StorageError, WriteError,
};

/// A money figure as the API and the finance files show it: yuan with two places.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunderRow {
    pub funder: String,
    pub appropriated: String,
    pub available: String,
    pub reserved: String,
    pub outstanding: String,
    pub redeemed: String,
    pub reversed: String,
    pub returned_by_expiry: String,
    pub payable: String,
    /// Settled while the merchant is on hold, not yet released or rejected (absent from
    /// reports stored before holds existed: none were held then).
    #[serde(default = "zero_yuan")]
    pub held: String,
    /// Released from hold: paid in the next payout.
    #[serde(default = "zero_yuan")]
    pub released: String,
    /// Rejected from hold: back in the funder's pool.
    #[serde(default = "zero_yuan")]
    pub rejected: String,
    pub settled: String,
    pub paid: String,
}

fn zero_yuan() -> String {
    yuan(0)
}

impl FunderRow {
    fn new(funder: RegionCode, f: &FunderFigures) -> FunderRow {
        FunderRow {
            funder: funder.to_string(),
            appropriated: yuan(f.appropriated),
            available: yuan(f.available),
            reserved: yuan(f.reserved),
            outstanding: yuan(f.outstanding),
            redeemed: yuan(f.redeemed),
            reversed: yuan(f.reversed),
            returned_by_expiry: yuan(f.returned_by_expiry),
            payable: yuan(f.payable),
            held: yuan(f.held),
            released: yuan(f.released),
            rejected: yuan(f.rejected),
            settled: yuan(f.settled),
            paid: yuan(f.paid),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchRow {
    pub batch_id: BatchId,
    pub name: String,
    pub issuer: String,
    pub voucher_value: String,
    pub stock: i64,
    pub claimed: i64,
    pub redeemed: i64,
    pub expired: i64,
    /// Absent from reports stored before forfeiture existed: none were forfeited then.
    #[serde(default)]
    pub forfeited: i64,
    pub active: i64,
    pub reissued: i64,
    pub claimed_amount: String,
    pub redeemed_amount: String,
    pub expired_amount: String,
    pub reissued_amount: String,
    pub discount_paid: String,
    pub order_amount: String,
}

impl BatchRow {
    fn new(b: &BatchFigures) -> BatchRow {
        BatchRow {
            batch_id: b.batch_id,
            name: b.name.clone(),
            issuer: b.issuer.clone(),
            voucher_value: yuan(b.voucher_value),
            stock: b.stock,
            claimed: b.claimed,
            redeemed: b.redeemed,
            expired: b.expired,
            forfeited: b.forfeited,
            active: b.active,
            reissued: b.reissued,
            claimed_amount: yuan(b.amount(b.claimed)),
            redeemed_amount: yuan(b.amount(b.redeemed)),
            expired_amount: yuan(b.amount(b.expired)),
            reissued_amount: yuan(b.amount(b.reissued)),
            discount_paid: yuan(b.redeemed_discount),
            order_amount: yuan(b.redeemed_order_amount),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SalesRow {
    /// The merchant id, the category, or the day.
    pub key: String,
    pub name: String,
    pub city: String,
    pub category: String,
    pub redemptions: i64,
    pub reversals: i64,
    pub discount: String,
    pub order_amount: String,
}

impl SalesRow {
    fn new(key: String, name: String, city: String, category: String, s: &SalesFigures) -> SalesRow {
        SalesRow {
            key,
            name,
            city,
            category,
            redemptions: s.redemptions,
            reversals: s.reversals,
            discount: yuan(s.discount),
            order_amount: yuan(s.order_amount),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayRow {
    pub day: String,
    pub claims: i64,
    pub claimed_amount: String,
    pub redemptions: i64,
    pub reversals: i64,
    pub discount: String,
    pub order_amount: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardRow {
    pub cards_issued_mobile: i64,
    pub cards_issued_bank_card: i64,
    pub member_discount: String,
    pub points_earned: i64,
    pub points_exchanged: i64,
    pub points_expired: i64,
    pub points_reversed: i64,
    pub points_outstanding: i64,
    pub points_debt: i64,
}

impl CardRow {
    fn new(c: &CardFigures) -> CardRow {
        CardRow {
            cards_issued_mobile: c.cards_issued_mobile,
            cards_issued_bank_card: c.cards_issued_bank_card,
            member_discount: yuan(c.member_discount_fen),
            points_earned: c.points_earned,
            points_exchanged: c.points_exchanged,
            points_expired: c.points_expired,
            points_reversed: c.points_reversed,
            points_outstanding: c.points_outstanding,
            points_debt: c.points_debt,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Discounts on live redemptions: the government money the vouchers spent.
    pub discount: String,
    /// Order amounts on live redemptions: the spending the vouchers drove.
    pub order_amount: String,
    /// order_amount / discount to two places, rounded down ("7.09" means each yuan of vouchers
    /// went with 7.09 yuan of spending); null when nothing was redeemed.
    pub leverage: Option<String>,
}

/// The season report. A closed season's report is stored at close and served as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeasonReport {
    pub season_id: SeasonId,
    pub season_name: String,
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub closed_at: Option<Timestamp>,
    /// True for the report stored when the season closed.
    pub r#final: bool,
    /// The city this view is limited to, if any (a city's finance sees its own money and merchants).
    pub city: Option<String>,
    pub totals: Totals,
    pub funders: Vec<FunderRow>,
    pub batches: Vec<BatchRow>,
    pub merchants: Vec<SalesRow>,
    pub categories: Vec<SalesRow>,
    pub days: Vec<DayRow>,
    pub cards: Option<CardRow>,
}

/// The funder figures of a season from its account balances, with expiry returns from its batches.
pub fn season_funder_figures(
    season: &Season,
    balances: &[(String, Balance)],
    batches: &[Batch],
    held_lines: &[HeldLineRecord],
) -> BTreeMap<RegionCode, FunderFigures> {
    let mut figures = funder_figures(season.id, balances);
    for batch in batches {
        add_expiry_returns(&mut figures, &batch.funding, batch.voucher_value(), batch.returned_count);
    }
    let (mut released, mut rejected) = (BTreeMap::new(), BTreeMap::new());
    for line in held_lines {
        let into = match line.status {
            HoldStatus::Released => &mut released,
            HoldStatus::Rejected => &mut rejected,
            HoldStatus::None | HoldStatus::Held => continue,
        };
        for (funder, fen) in line.by_funder() {
            *into.entry(funder).or_insert(0) += fen;
        }
    }
    add_hold_flows(&mut figures, &released, &rejected);
    figures
}

async fn batch_figures(
    store: &dyn Storage,
    season: &Season,
    batches: &[Batch],
) -> Result<Vec<BatchFigures>, StorageError> {
    let sales: HashMap<BatchId, SalesFigures> = store.batch_sales(season.id).await?.into_iter().collect();
    // Forfeits have no counter of their own: counted from the rows, in the seasons that have them.
    let mut forfeits: HashMap<BatchId, i64> = HashMap::new();
    if season.refund_forfeits_voucher {
        for count in store.voucher_status_counts(season.id).await? {
            if count.status == VoucherStatus::Forfeited.as_str() {
                forfeits.insert(count.batch_id, count.vouchers);
            }
        }
    }
    Ok(batches
        .iter()
        .map(|batch| {
            let sold = sales.get(&batch.id).cloned().unwrap_or_default();
            let expired = batch.returned_count;
            let forfeited = forfeits.get(&batch.id).copied().unwrap_or(0);
            BatchFigures {
                batch_id: batch.id,
                name: batch.name.clone(),
                issuer: batch.issuer.to_string(),
                voucher_value: batch.voucher_value().as_fen(),
                stock: batch.stock,
                claimed: batch.claimed_count,
                redeemed: sold.redemptions,
                expired,
                forfeited,
                active: batch.claimed_count - expired - forfeited - sold.redemptions,
                reissued: (batch.claimed_count - batch.stock).max(0),
                redeemed_discount: sold.discount,
                redeemed_order_amount: sold.order_amount,
            }
        })
        .collect())
}

fn leverage(discount: i64, order_amount: i64) -> Option<String> {
    (discount > 0).then(|| {
        let hundredths = i128::from(order_amount) * 100 / i128::from(discount);
        format!("{}.{:02}", hundredths / 100, hundredths % 100)
    })
}

/// Builds the report of a season from the database, limited to `city` if given.
pub async fn build_report(
    store: &dyn Storage,
    season: &Season,
    city: Option<RegionCode>,
    now: Timestamp,
) -> Result<SeasonReport, StorageError> {
    let batches = store.season_batches(season.id).await?;
    let held_lines = store.held_lines(season.id).await?;
    let funders =
        season_funder_figures(season, &store.season_balances(season.id).await?, &batches, &held_lines);
    let batch_rows = batch_figures(store, season, &batches).await?;
    let merchants = store.merchant_sales(season.id, city).await?;
    let mut categories: BTreeMap<String, SalesFigures> = BTreeMap::new();
    let mut total = SalesFigures::default();
    for m in &merchants {
        let c = categories.entry(m.category.clone()).or_default();
        for target in [c, &mut total] {
            target.redemptions += m.sales.redemptions;
            target.reversals += m.sales.reversals;
            target.discount += m.sales.discount;
            target.order_amount += m.sales.order_amount;
        }
    }
    let days = store.day_activity(season.id, city).await?;
    let in_city = |region: &str| city.is_none_or(|c| c.to_string() == region);
    Ok(SeasonReport {
        season_id: season.id,
        season_name: season.name.clone(),
        generated_at: now,
        closed_at: season.closed_at,
        r#final: false,
        city: city.map(|c| c.to_string()),
        totals: Totals {
            discount: yuan(total.discount),
            order_amount: yuan(total.order_amount),
            leverage: leverage(total.discount, total.order_amount),
        },
        funders: funders
            .iter()
            .filter(|(f, _)| in_city(&f.to_string()))
            .map(|(f, figures)| FunderRow::new(*f, figures))
            .collect(),
        batches: batch_rows.iter().filter(|b| in_city(&b.issuer)).map(BatchRow::new).collect(),
        merchants: merchants
            .into_iter()
            .map(|m| SalesRow::new(m.merchant_id.to_string(), m.name, m.city, m.category.clone(), &m.sales))
            .collect(),
        categories: categories
            .iter()
            .map(|(c, s)| SalesRow::new(c.clone(), c.clone(), String::new(), c.clone(), s))
            .collect(),
        days: days
            .iter()
            .map(|d| DayRow {
                day: day_label(d.day_number),
                claims: d.claims,
                claimed_amount: yuan(d.claimed_fen),
                redemptions: d.sales.redemptions,
                reversals: d.sales.reversals,
                discount: yuan(d.sales.discount),
                order_amount: yuan(d.sales.order_amount),
            })
            .collect(),
        cards: if city.is_none() { Some(CardRow::new(&store.card_figures(season.id).await?)) } else { None },
    })
}

/// The report a viewer gets: a closed season's stored report (narrowed to `city`), or a live one.
pub async fn report_for(
    store: &dyn Storage,
    season: &Season,
    city: Option<RegionCode>,
    now: Timestamp,
) -> Result<SeasonReport, StorageError> {
    let Some(stored) = store.final_report(season.id).await? else {
        return build_report(store, season, city, now).await;
    };
    let mut report: SeasonReport = serde_json::from_str(&stored.report)
        .map_err(|e| StorageError::Corrupt(format!("stored report of season {}: {e}", season.id)))?;
    if let Some(city) = city {
        let live = build_report(store, season, Some(city), now).await?;
        let code = city.to_string();
        report.funders.retain(|f| f.funder == code);
        report.batches.retain(|b| b.issuer == code);
        report.merchants = live.merchants;
        report.categories = live.categories;
        report.days = live.days;
        report.totals = live.totals;
        report.city = Some(code);
        report.cards = None;
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Reconciliation

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// How many breaks; the first few are listed.
    pub breaks: i64,
    pub listed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reconciliation {
    pub season_id: SeasonId,
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: Timestamp,
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Reconciliation {
    pub fn breaks(&self) -> i64 {
        self.checks.iter().map(|c| c.breaks).sum()
    }
}

fn check(name: &str, listed_all: Vec<String>) -> Check {
    let breaks = listed_all.len() as i64;
    let listed = listed_all.into_iter().take(MAX_BREAKS_LISTED as usize).collect();
    Check { name: name.to_owned(), ok: breaks == 0, breaks, listed }
}

/// Checks everything the issue lists (and `docs`/ARCHITECTURE.md "Finance" describes): the
/// chain, the money identity per funder, voucher counts, the ledger against every voucher,
/// redemption, reversal and settlement, and the clearing accounts.
pub async fn reconcile(
    store: &dyn Storage,
    season: &Season,
    now: Timestamp,
) -> Result<Reconciliation, StorageError> {
    // The chain check (half of the work at a million vouchers, much of it hashing here) and the
    // business checks (queries the database computes) are independent: they run side by side.
    let (chain, business) = tokio::join!(audit::verify_store(store), business_checks(store, season));
    let mut checks = vec![check(
        "ledger_chain",
        match chain {
            Ok(_) => Vec::new(),
            Err(audit::VerifyFailure::Storage(error)) => return Err(error),
            Err(failure) => vec![failure.to_string()],
        },
    )];
    checks.extend(business?);
    let ok = checks.iter().all(|c| c.ok);
    Ok(Reconciliation { season_id: season.id, checked_at: now, ok, checks })
}

/// Every check of `reconcile` but the ledger chain's.
async fn business_checks(store: &dyn Storage, season: &Season) -> Result<Vec<Check>, StorageError> {
    let mut checks = Vec::new();
    // Read once, checked several ways.
    let batches = store.season_batches(season.id).await?;
    let balances = store.season_balances(season.id).await?;
    let mut by_status: StatusCounts = HashMap::new();
    for count in store.voucher_status_counts(season.id).await? {
        by_status.entry(count.batch_id).or_default().insert(count.status, count.vouchers);
    }
    let sales: HashMap<BatchId, SalesFigures> = store.batch_sales(season.id).await?.into_iter().collect();
    let funders = season_funder_figures(season, &balances, &batches, &store.held_lines(season.id).await?);
    checks.push(check("funder_identity", funder_breaks(&funders)));
    checks.push(check("batch_counts", batch_count_breaks(&batches, &by_status, &sales)));
    checks.push(check("batch_money", batch_money_breaks(season, &batches, &balances, &by_status)));
    checks.push(check("merchant_money", merchant_money_breaks(store, season, &balances).await?));
    for found in store.link_breaks(season).await? {
        checks.push(Check {
            name: found.check.to_owned(),
            ok: found.breaks == 0,
            breaks: found.breaks,
            listed: found.listed,
        });
    }
    if season.closed_at.is_some() {
        checks.push(check("clearing_after_close", clearing_breaks(season, &balances)));
    }
    checks.push(check("card_points", store.card_breaks(season.id).await?));
    Ok(checks)
}

fn funder_breaks(funders: &BTreeMap<RegionCode, FunderFigures>) -> Vec<String> {
    let mut breaks = Vec::new();
    for (funder, f) in funders {
        let gap = f.money_identity_gap();
        if gap != 0 {
            breaks.push(format!(
                "funder {funder}: appropriated {} <> available {} + reserved {} + outstanding {} + payable {} + held {} + settled {} + paid {} (off by {})",
                yuan(f.appropriated), yuan(f.available), yuan(f.reserved), yuan(f.outstanding),
                yuan(f.payable), yuan(f.held), yuan(f.settled), yuan(f.paid), yuan(gap)
            ));
        }
        let flow = f.payable_flow_gap();
        if flow != 0 {
            breaks.push(format!(
                "funder {funder}: redeemed - reversed - settled <> payable (off by {})",
                yuan(flow)
            ));
        }
    }
    breaks
}

/// Voucher rows counted by batch and status.
type StatusCounts = HashMap<BatchId, HashMap<String, i64>>;

fn batch_count_breaks(
    batches: &[Batch],
    by_status: &StatusCounts,
    sales: &HashMap<BatchId, SalesFigures>,
) -> Vec<String> {
    let mut breaks = Vec::new();
    let none = HashMap::new();
    for batch in batches {
        let counts = by_status.get(&batch.id).unwrap_or(&none);
        let get = |s: &str| counts.get(s).copied().unwrap_or(0);
        let (active, redeemed, expired) = (get("active"), get("redeemed"), get("expired"));
        let forfeited = get(VoucherStatus::Forfeited.as_str());
        let rows = counts.values().sum::<i64>();
        if batch.claimed_count != active + redeemed + expired + forfeited || rows != batch.claimed_count {
            breaks.push(format!(
                "batch {}: claimed {} <> redeemed {redeemed} + expired {expired} + forfeited {forfeited} \
                 + active {active}",
                batch.id, batch.claimed_count
            ));
        }
        if batch.returned_count != expired {
            breaks.push(format!(
                "batch {}: {} returned by expiry, {expired} vouchers expired",
                batch.id, batch.returned_count
            ));
        }
        let live = sales.get(&batch.id).map(|s| s.redemptions).unwrap_or(0);
        if live != redeemed {
            breaks.push(format!("batch {}: {redeemed} vouchers redeemed, {live} live redemptions", batch.id));
        }
        if batch.claimed_count - batch.returned_count > batch.stock {
            breaks.push(format!("batch {}: more live vouchers than stock", batch.id));
        }
    }
    for batch in by_status.keys().filter(|id| !batches.iter().any(|b| b.id == **id)) {
        breaks.push(format!("vouchers of batch {batch}, which is not a batch of this season"));
    }
    breaks
}

/// Per batch and funder: voucher liability equals the active vouchers' value, and the reserve
/// equals the unclaimed stock's value (zero once the reserve has gone back).
fn batch_money_breaks(
    season: &Season,
    batches: &[Batch],
    balances: &[(String, Balance)],
    by_status: &StatusCounts,
) -> Vec<String> {
    let mut actual: HashMap<(BatchId, RegionCode, bool), i64> = HashMap::new();
    for (address, balance) in balances {
        match SeasonAccount::parse(season.id, address) {
            Some(SeasonAccount::Reserve { batch, funder }) => {
                *actual.entry((batch, funder, false)).or_default() +=
                    balance.credits_fen - balance.debits_fen;
            }
            Some(SeasonAccount::Issued { batch, funder }) => {
                *actual.entry((batch, funder, true)).or_default() += balance.credits_fen - balance.debits_fen;
            }
            _ => {}
        }
    }
    let active = |batch: &BatchId| by_status.get(batch).and_then(|c| c.get("active")).copied().unwrap_or(0);
    let mut breaks = Vec::new();
    for batch in batches {
        let unclaimed = if batch.reserve_returned {
            0
        } else {
            batch.stock - (batch.claimed_count - batch.returned_count)
        };
        let live = active(&batch.id);
        for (funder, part) in batch.funding.split(batch.voucher_value()) {
            for (issued, count, what) in [(true, live, "liability"), (false, unclaimed, "reserve")] {
                let expected = part.as_fen() * count;
                let got = actual.remove(&(batch.id, funder, issued)).unwrap_or(0);
                if got != expected {
                    breaks.push(format!(
                        "batch {} funder {funder}: {what} {} in the ledger, {} from {count} vouchers",
                        batch.id,
                        yuan(got),
                        yuan(expected)
                    ));
                }
            }
        }
    }
    for ((batch, funder, issued), fen) in actual {
        if fen != 0 {
            breaks.push(format!(
                "batch {batch} funder {funder}: {} in an account no batch explains (issued: {issued})",
                yuan(fen)
            ));
        }
    }
    breaks
}

/// Per merchant: payable equals its unsettled redemptions, held its held lines, settled its
/// unpaid settlement lines (and released lines not yet paid), paid its paid lines.
async fn merchant_money_breaks(
    store: &dyn Storage,
    season: &Season,
    balances: &[(String, Balance)],
) -> Result<Vec<String>, StorageError> {
    let mut ledger: HashMap<MerchantId, [i64; 4]> = HashMap::new();
    for (address, balance) in balances {
        let (merchant, slot) = match SeasonAccount::parse(season.id, address) {
            Some(SeasonAccount::Payable { merchant, .. }) => (merchant, 0),
            Some(SeasonAccount::Settled { merchant, .. }) => (merchant, 1),
            Some(SeasonAccount::Paid { merchant, .. }) => (merchant, 2),
            Some(SeasonAccount::Held { merchant, .. }) => (merchant, 3),
            _ => continue,
        };
        ledger.entry(merchant).or_default()[slot] += balance.credits_fen - balance.debits_fen;
    }
    let mut breaks = Vec::new();
    for (merchant, money) in store.merchant_money(season.id).await? {
        let rows = [money.unsettled_fen, money.settled_unpaid_fen, money.paid_fen, money.held_fen];
        let books = ledger.remove(&merchant).unwrap_or_default();
        for (index, what) in ["payable", "settled", "paid", "held"].iter().enumerate() {
            if rows[index] != books[index] {
                breaks.push(format!(
                    "merchant {merchant}: {what} {} in the ledger, {} in redemptions and settlements",
                    yuan(books[index]),
                    yuan(rows[index])
                ));
            }
        }
    }
    for (merchant, books) in ledger {
        if books.iter().any(|fen| *fen != 0) {
            breaks.push(format!(
                "merchant {merchant}: ledger money with no redemption or settlement behind it"
            ));
        }
    }
    Ok(breaks)
}

fn clearing_breaks(season: &Season, balances: &[(String, Balance)]) -> Vec<String> {
    balances
        .iter()
        .filter(|(address, balance)| {
            matches!(
                SeasonAccount::parse(season.id, address),
                Some(SeasonAccount::Reserve { .. } | SeasonAccount::Issued { .. })
            ) && balance.credits_fen != balance.debits_fen
        })
        .map(|(address, balance)| {
            format!("{address}: {} left after close", yuan(balance.credits_fen - balance.debits_fen))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Settlement and closing

#[derive(Debug, thiserror::Error)]
pub enum FinanceError {
    #[error("nothing to settle up to the cut-off")]
    NothingToSettle,
    #[error("the cut-off is in the future")]
    CutOffInFuture,
    #[error("the season has not ended yet")]
    SeasonNotEnded,
    #[error("the settlement was already paid")]
    AlreadyPaid,
    #[error("the settlement is still in progress")]
    InProgress,
    /// The Idempotency-Key made a settlement of another season or cut-off.
    #[error("the Idempotency-Key was used for another request")]
    KeyReused,
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The same Idempotency-Key committed first: replay its answer.
    #[error("answered before")]
    Replay,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Write(String),
    /// Scoring the season's merchants, or holding one, before a settlement failed.
    #[error(transparent)]
    Holding(#[from] crate::app::error::AppError),
}

impl From<WriteError> for FinanceError {
    fn from(error: WriteError) -> FinanceError {
        match error {
            WriteError::IdempotencyTaken => FinanceError::Replay,
            WriteError::Refused(Refusal::Code(code)) => match code {
                ErrorCode::NothingToSettle => FinanceError::NothingToSettle,
                ErrorCode::AlreadyPaid => FinanceError::AlreadyPaid,
                ErrorCode::SettlementInProgress => FinanceError::InProgress,
                ErrorCode::IdempotencyKeyReused => FinanceError::KeyReused,
                ErrorCode::SettlementNotFound => FinanceError::NotFound("settlement"),
                ErrorCode::SeasonNotFound => FinanceError::NotFound("season"),
                other => FinanceError::Write(other.to_string()),
            },
            WriteError::Storage(error) => FinanceError::Storage(error),
            other => FinanceError::Write(other.to_string()),
        }
    }
}

/// A settlement as the API answers it (amounts in yuan). The fields are in alphabetical order,
/// the order of the answers stored before this type existed, so a replay reads the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SettlementAnswer {
    /// When its last chunk was written; null while it is in progress.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub cut_off: Timestamp,
    /// Of its lines, how many were held (their merchants on hold), and their total: not in its
    /// payout file until released.
    pub held: i64,
    pub held_total: String,
    /// How many merchants it settled (one line each, held or not).
    pub merchants: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_at: Option<Timestamp>,
    pub payout_ref: Option<String>,
    /// What its payout file pays: its lines not held, and the lines released since the last one.
    pub payout_total: String,
    /// Lines released from hold since the previous settlement, paid by its payout.
    pub released: i64,
    pub released_total: String,
    pub season_id: SeasonId,
    pub settlement_id: SettlementId,
    /// complete or in_progress.
    pub status: &'static str,
    /// All its lines, held or not.
    pub total: String,
}

impl SettlementAnswer {
    pub fn of(s: &SettlementRecord) -> SettlementAnswer {
        SettlementAnswer {
            completed_at: s.completed_at,
            created_at: s.created_at,
            cut_off: s.cut_off,
            held: s.held_count,
            held_total: yuan(s.held_fen),
            merchants: s.line_count,
            paid_at: s.paid_at,
            payout_ref: s.payout_ref.clone(),
            payout_total: yuan(s.payout_fen()),
            released: s.released_count,
            released_total: yuan(s.released_fen),
            season_id: s.season_id,
            settlement_id: s.id,
            status: if s.completed_at.is_some() { "complete" } else { "in_progress" },
            total: yuan(s.total_fen),
        }
    }

    /// The answer as the JSON text the service sends and stores.
    pub fn text(s: &SettlementRecord) -> String {
        // Strings, ids, integers and timestamps: serializing cannot fail.
        serde_json::to_string(&SettlementAnswer::of(s)).unwrap_or_default()
    }
}

fn render_settlement(s: &SettlementRecord) -> String {
    SettlementAnswer::text(s)
}

/// The id of the settlement an idempotent request makes: derived from the request's scope and
/// key, so that a retry after a crash (with the settlement part done) finds it and goes on with it.
pub fn settlement_id(scope: &str, key: &str) -> SettlementId {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in ["wenhui settlement", scope, key] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&context.finish().as_ref()[..16]);
    SettlementId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// Settles the season's unsettled redemptions up to `cut_off`: one line and one ledger entry
/// per merchant, written a chunk of merchants at a time (`chunking`), then marked complete with
/// `answer` (scope, key and request hash; its body is the settlement) stored in the same
/// transaction. Every chunk is a consistent state of its own: a run that stops part way leaves a
/// settlement in progress (it cannot be paid out) which a retry with the same key finishes, as
/// does the next settlement of the season under any key.
pub async fn settle(
    store: &dyn Storage,
    season: &Season,
    cut_off: Timestamp,
    now: Timestamp,
    answer: IdemRecord,
    chunking: SettlementChunking,
) -> Result<SettlementRecord, FinanceError> {
    if cut_off > now {
        return Err(FinanceError::CutOffInFuture);
    }
    let id = settlement_id(&answer.scope, &answer.key);
    finish_left_in_progress(store, Some(season.id), Some(id), chunking, now).await?;
    let existing = store.settlement(id).await?;
    if existing.as_ref().is_some_and(|s| s.season_id != season.id || s.cut_off != cut_off) {
        return Err(FinanceError::KeyReused);
    }
    let plan = SettlementPlan {
        id,
        season_id: season.id,
        cut_off,
        created_at: existing.as_ref().map_or(now, |s| s.created_at),
        answer: Some(IdemRecord { status: 201, ..answer }),
        render: render_settlement,
    };
    if existing.as_ref().is_some_and(|s| s.completed_at.is_some()) {
        // Made under this key, and finished by another run (which stored no answer for this
        // key): store the answer now and give it.
        return Ok(store.finish_settlement(&plan, now).await?);
    }
    if existing.is_none() {
        // Before the first chunk writes the settlement: a retry after a crash part way through
        // the holds scores again; one after the first chunk goes on with the holds made.
        hold_by_scores(store, season, cut_off, now).await?;
    }
    settle_in_chunks(store, &plan, chunking, now).await
}

/// Before a settlement's chunks: every merchant whose cash-out score up to the cut-off
/// (`app::fraud`, docs/fraud-scoring.md) reaches the season's `hold_score_threshold` is put on
/// hold with the score's reasons, so that the settlement holds its line
/// (docs/settlement-holds.md). No threshold: nothing is scored. Answers how many merchants the
/// scores put on hold (a merchant on hold already keeps its first hold).
pub async fn hold_by_scores(
    store: &dyn Storage,
    season: &Season,
    cut_off: Timestamp,
    now: Timestamp,
) -> Result<usize, FinanceError> {
    let Some(threshold) = season.hold_score_threshold else { return Ok(0) };
    let scores = crate::app::fraud::score_season(store, season, cut_off).await?;
    let mut held = 0;
    for merchant in scores.merchants.iter().filter(|m| m.score >= u16::from(threshold)) {
        let reasons: Vec<&str> = merchant.reasons.iter().map(|r| r.explanation_zh.as_str()).collect();
        let reasons = reasons.join("；");
        let score = u8::try_from(merchant.score.min(100)).unwrap_or(100);
        if holds::hold_by_score(store, season, merchant.merchant_id, score, &reasons, now).await?.is_some() {
            held += 1;
        }
    }
    Ok(held)
}

/// Finishes the settlements that runs left in progress (a crash, a restart, a client that gave
/// up) in every season, oldest first, and returns how many. The server does this when it starts;
/// a retry of such a settlement's key, or any later settlement of its season, does it too. Their
/// answers are stored when their keys are retried.
pub async fn finish_settlements_in_progress(
    store: &dyn Storage,
    chunking: SettlementChunking,
    now: Timestamp,
) -> Result<usize, FinanceError> {
    finish_left_in_progress(store, None, None, chunking, now).await
}

/// Finishes the settlements in progress of `season_id` (or of every season), but `except`.
async fn finish_left_in_progress(
    store: &dyn Storage,
    season_id: Option<SeasonId>,
    except: Option<SettlementId>,
    chunking: SettlementChunking,
    now: Timestamp,
) -> Result<usize, FinanceError> {
    let mut finished = 0;
    for left in store.settlements_in_progress(season_id).await? {
        if Some(left.id) == except {
            continue;
        }
        tracing::info!(settlement_id = %left.id, "finishing a settlement left in progress");
        let plan = SettlementPlan {
            id: left.id,
            season_id: left.season_id,
            cut_off: left.cut_off,
            created_at: left.created_at,
            answer: None,
            render: render_settlement,
        };
        settle_in_chunks(store, &plan, chunking, now).await?;
        finished += 1;
    }
    Ok(finished)
}

async fn settle_in_chunks(
    store: &dyn Storage,
    plan: &SettlementPlan,
    chunking: SettlementChunking,
    now: Timestamp,
) -> Result<SettlementRecord, FinanceError> {
    let counts = store.unsettled_counts(plan.season_id, plan.cut_off).await?;
    for merchants in chunking.chunks(&counts) {
        store.settle_merchants(plan, &merchants).await?;
    }
    Ok(store.finish_settlement(plan, now).await?)
}

/// The answer to closing a season.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CloseOutcome {
    pub season_id: SeasonId,
    #[schema(value_type = String, format = DateTime)]
    pub closed_at: Timestamp,
    pub checkpoint_seq: i64,
    pub reconciled: bool,
    pub breaks: i64,
}

/// Closes a season: first finishes its settlements left in progress (so that the final report
/// holds none half done), then the closing transaction, then (once, resumable after a crash) the
/// reconciliation, a signed checkpoint and the stored final report.
pub async fn close(
    store: &dyn Storage,
    key: &SigningKey,
    season: &Season,
    now: Timestamp,
    chunking: SettlementChunking,
) -> Result<CloseOutcome, FinanceError> {
    if season.closed_at.is_none() && now < season.ends_at {
        return Err(FinanceError::SeasonNotEnded);
    }
    finish_left_in_progress(store, Some(season.id), None, chunking, now).await?;
    let closed_at = store.close_season(season.id, now).await?;
    if let Some(stored) = store.final_report(season.id).await? {
        return outcome_of(season.id, closed_at, &stored);
    }
    let season = store.season(season.id).await?.ok_or(FinanceError::NotFound("season"))?;
    let reconciliation = reconcile(store, &season, now).await?;
    let checkpoint = audit::checkpoint(store, key).await?;
    let mut report = build_report(store, &season, None, now).await?;
    report.r#final = true;
    let encode_error =
        |e: serde_json::Error| StorageError::Corrupt(format!("encoding the final report: {e}"));
    let stored = FinalReport {
        season_id: season.id,
        report: serde_json::to_string(&report).map_err(encode_error)?,
        reconciliation: serde_json::to_string(&reconciliation).map_err(encode_error)?,
        checkpoint_seq: checkpoint.seq,
        created_at: now,
    };
    store.insert_final_report(&stored).await?;
    // A concurrent close may have stored first: answer with what is stored.
    let stored = store.final_report(season.id).await?.ok_or(FinanceError::NotFound("final report"))?;
    outcome_of(season.id, closed_at, &stored)
}

fn outcome_of(
    season_id: SeasonId,
    closed_at: Timestamp,
    stored: &FinalReport,
) -> Result<CloseOutcome, FinanceError> {
    let reconciliation: Reconciliation = serde_json::from_str(&stored.reconciliation)
        .map_err(|e| StorageError::Corrupt(format!("stored reconciliation of season {season_id}: {e}")))?;
    Ok(CloseOutcome {
        season_id,
        closed_at,
        checkpoint_seq: stored.checkpoint_seq,
        reconciled: reconciliation.ok,
        breaks: reconciliation.breaks(),
    })
}
