//! Finance, the pure part: the figures of a season report, the per-funder identity that
//! reconciliation checks, settlement lines, and the calendar day a movement belongs to.
//! No SQL and no HTTP: storage hands in rows, this module says what they add up to.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Offset};
use serde::Serialize;

use super::accounts::{self, SeasonAccount};
use super::funding::FundingShares;
use super::ledger::{Balance, NewEntry, NewPosting, Side};
use super::money::Fen;
use super::region::RegionCode;
use super::time::Timestamp;
use crate::domain::ids::{BatchId, MerchantId, SeasonId};

/// Report days are calendar days in China Standard Time (UTC+8, no daylight saving).
pub const CST_OFFSET_S: i32 = 8 * 3600;
const US_PER_DAY: i64 = 86_400_000_000;

/// The day number (days since 1970-01-01 in CST) of an instant: what SQL computes as
/// `(at_us + 28800000000) / 86400000000` (every instant in a season is after 1970).
pub fn cst_day_number(at: Timestamp) -> i64 {
    (at.unix_us() + i64::from(CST_OFFSET_S) * 1_000_000).div_euclid(US_PER_DAY)
}

/// The calendar month of an instant in CST as `YYYYMM` (202611): what SQL computes from
/// `(at_us + 28800000000) / 1000000` seconds (`cst_month_sql`).
pub fn cst_month(at: Timestamp) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let day = epoch + Duration::days(cst_day_number(at));
    chrono::Datelike::year(&day) * 100 + i32::try_from(chrono::Datelike::month(&day)).unwrap_or(0)
}

/// `2026-11-26` for a day number.
pub fn day_label(day_number: i64) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    (epoch + Duration::days(day_number)).format("%Y-%m-%d").to_string()
}

/// An instant as an RFC 3339 string in CST (`2026-11-26T08:00:00+08:00`), for finance files.
pub fn cst_rfc3339(at: Timestamp) -> String {
    let offset = FixedOffset::east_opt(CST_OFFSET_S).unwrap_or(chrono::Utc.fix());
    let utc: DateTime<chrono::Utc> = at.to_datetime();
    utc.with_timezone(&offset).to_rfc3339()
}

/// One funder's money in a season, in fen. Balances are what is there now; `redeemed`,
/// `reversed` and `returned_by_expiry` are flows over the season so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FunderFigures {
    pub appropriated: i64,
    /// In the funder's pool: appropriated, not reserved for any batch (incl. money returned).
    pub available: i64,
    /// Held for batches' unclaimed vouchers.
    pub reserved: i64,
    /// Claimed vouchers not yet redeemed or expired (voucher liability).
    pub outstanding: i64,
    /// Discounts redeemed (gross, before reversals).
    pub redeemed: i64,
    /// Discounts given back by reversals.
    pub reversed: i64,
    /// The value of vouchers that expired unredeemed.
    pub returned_by_expiry: i64,
    /// Owed to merchants, not yet settled.
    pub payable: i64,
    /// Settled while its merchant was on hold: not in a payout file until finance decides.
    pub held: i64,
    /// Released from hold (flow): into settled, paid in the next payout.
    pub released: i64,
    /// Rejected from hold (flow): back in the funder's pool.
    pub rejected: i64,
    /// Settled into a payout file, not yet paid by the bank.
    pub settled: i64,
    pub paid: i64,
    /// Settled in all (paid or not, held or not): the flow out of payable into settlement.
    pub settled_total: i64,
}

impl FunderFigures {
    /// `appropriated = available + reserved + outstanding + payable + held + settled + paid`.
    pub fn money_identity_gap(&self) -> i64 {
        self.appropriated
            - (self.available
                + self.reserved
                + self.outstanding
                + self.payable
                + self.held
                + self.settled
                + self.paid)
    }

    /// `redeemed - reversed - settled_total = payable`: the flows through the payable accounts.
    pub fn payable_flow_gap(&self) -> i64 {
        self.redeemed - self.reversed - self.settled_total - self.payable
    }
}

fn credit_balance(balance: &Balance) -> i64 {
    balance.credits_fen - balance.debits_fen
}

/// Per-funder balances and payable/settlement flows from the season's account rows.
pub fn funder_figures(season: SeasonId, rows: &[(String, Balance)]) -> BTreeMap<RegionCode, FunderFigures> {
    let mut figures: BTreeMap<RegionCode, FunderFigures> = BTreeMap::new();
    for (address, balance) in rows {
        let Some(account) = SeasonAccount::parse(season, address) else { continue };
        let entry = figures.entry(account.funder()).or_default();
        match account {
            SeasonAccount::Appropriation { .. } => entry.appropriated += -credit_balance(balance),
            SeasonAccount::Pool { .. } => entry.available += credit_balance(balance),
            SeasonAccount::Reserve { .. } => entry.reserved += credit_balance(balance),
            SeasonAccount::Issued { .. } => entry.outstanding += credit_balance(balance),
            SeasonAccount::Payable { .. } => {
                entry.payable += credit_balance(balance);
                entry.redeemed += balance.credits_fen;
                entry.reversed += balance.debits_fen;
            }
            SeasonAccount::Held { .. } => {
                entry.held += credit_balance(balance);
                // Only a settlement credits a held account.
                entry.settled_total += balance.credits_fen;
            }
            SeasonAccount::Settled { .. } => {
                entry.settled += credit_balance(balance);
                // Settlements and releases credit it; `add_hold_flows` takes the releases out.
                entry.settled_total += balance.credits_fen;
            }
            SeasonAccount::Paid { .. } => entry.paid += credit_balance(balance),
        }
    }
    // Payable is debited by reversals and by settlements; the settlement part is not a reversal.
    for entry in figures.values_mut() {
        entry.reversed -= entry.settled_total;
    }
    figures
}

/// Adds the lines released and rejected from hold (per funder, from the settlement lines): a
/// release credits settled from held, not from payable, so it is no flow out of payable.
pub fn add_hold_flows(
    figures: &mut BTreeMap<RegionCode, FunderFigures>,
    released: &BTreeMap<RegionCode, i64>,
    rejected: &BTreeMap<RegionCode, i64>,
) {
    for (funder, fen) in released {
        let entry = figures.entry(*funder).or_default();
        entry.released += fen;
        entry.settled_total -= fen;
        entry.reversed += fen;
    }
    for (funder, fen) in rejected {
        figures.entry(*funder).or_default().rejected += fen;
    }
}

/// Adds each batch's expired vouchers, split between its funders, to `returned_by_expiry`.
pub fn add_expiry_returns(
    figures: &mut BTreeMap<RegionCode, FunderFigures>,
    funding: &FundingShares,
    voucher_value: Fen,
    expired_count: i64,
) {
    for (funder, part) in funding.split(voucher_value) {
        figures.entry(funder).or_default().returned_by_expiry += part.as_fen() * expired_count;
    }
}

/// One batch's vouchers: counts, and amounts at the voucher's value (`redeemed_discount` is
/// what was actually paid out, which for percent vouchers is less than the value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchFigures {
    pub batch_id: BatchId,
    pub name: String,
    pub issuer: String,
    pub voucher_value: i64,
    pub stock: i64,
    pub claimed: i64,
    pub redeemed: i64,
    pub expired: i64,
    /// Given up by a refund in a season whose refunds forfeit the voucher.
    pub forfeited: i64,
    pub active: i64,
    /// Vouchers claimed from stock that expiries gave back: claims beyond the stock.
    pub reissued: i64,
    pub redeemed_discount: i64,
    pub redeemed_order_amount: i64,
}

impl BatchFigures {
    pub fn amount(&self, count: i64) -> i64 {
        count * self.voucher_value
    }
}

/// Redemptions grouped by one key (a merchant, a category, a day).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SalesFigures {
    /// Live (unreversed) redemptions.
    pub redemptions: i64,
    pub reversals: i64,
    /// Discounts paid by the funders on live redemptions.
    pub discount: i64,
    /// The order amounts of live redemptions: the spending the vouchers drove.
    pub order_amount: i64,
}

/// A settlement line being built: one merchant's unsettled redemptions up to the cut-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementLine {
    pub merchant_id: MerchantId,
    pub redemption_count: i64,
    pub amount_fen: i64,
    pub by_funder: BTreeMap<RegionCode, i64>,
}

impl SettlementLine {
    /// A line of `merchant_id` with no redemption yet.
    pub fn new(merchant_id: MerchantId) -> SettlementLine {
        SettlementLine { merchant_id, redemption_count: 0, amount_fen: 0, by_funder: BTreeMap::new() }
    }

    /// Adds one redemption's funder parts (which sum to its discount).
    pub fn add(&mut self, parts: &[(RegionCode, Fen)]) {
        self.redemption_count += 1;
        for (funder, amount) in parts {
            self.amount_fen += amount.as_fen();
            *self.by_funder.entry(*funder).or_default() += amount.as_fen();
        }
    }
}

/// How big one settlement transaction may grow: a settlement of a whole season settles its
/// merchants in chunks, each chunk one transaction, so that tills (which wait for the one writer
/// on SQLite, and for the ledger head while a chunk posts on PostgreSQL) wait for a chunk only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettlementChunking {
    /// Redemption rows per chunk at most; a merchant with more is a chunk of its own (a
    /// merchant's rows are never split: it has one line and one entry per settlement).
    pub max_rows: i64,
    /// Merchants per chunk at most: each is a line and a ledger entry.
    pub max_merchants: usize,
}

/// A merchant's unsettled, unreversed redemptions of a season up to a cut-off: what a settlement
/// run plans its chunks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsettledCount {
    pub merchant_id: MerchantId,
    pub redemptions: i64,
}

impl SettlementChunking {
    /// Where settling the redemption rows holds up every other writer (SQLite, one writer at a
    /// time): rows and merchants both bounded, about 0.25 s of the write lock per chunk
    /// (`BENCHMARKS.md`, "Settlement in chunks").
    pub const ONE_WRITER: SettlementChunking = SettlementChunking { max_rows: 10_000, max_merchants: 200 };
    /// Where the rows are locked one by one and other writers wait only while a chunk posts
    /// (PostgreSQL: see the lock-order invariant): only the merchants (entries) are bounded,
    /// since every extra chunk revisits table pages the others touched.
    pub const ROW_LOCKS: SettlementChunking = SettlementChunking { max_rows: i64::MAX, max_merchants: 200 };

    /// Groups the merchants' unsettled rows in the given order into chunks: each merchant
    /// exactly once, a chunk closed before it would pass either limit.
    pub fn chunks(&self, counts: &[UnsettledCount]) -> Vec<Vec<MerchantId>> {
        let mut chunks: Vec<Vec<MerchantId>> = Vec::new();
        let mut rows_in_last = 0i64;
        for &UnsettledCount { merchant_id: merchant, redemptions: rows } in counts {
            let fits = chunks.last().is_some_and(|last| {
                last.len() < self.max_merchants && rows_in_last.saturating_add(rows) <= self.max_rows
            });
            match chunks.last_mut() {
                Some(last) if fits => {
                    last.push(merchant);
                    rows_in_last += rows;
                }
                _ => {
                    chunks.push(vec![merchant]);
                    rows_in_last = rows;
                }
            }
        }
        chunks
    }
}

/// A redemption's (or settlement line's) funder parts as stored and answered:
/// `[{"funder":"440000","amount":"3.00"}]`, zero parts left out. [`parse_funder_parts`] reads it.
pub fn funder_parts_json(parts: impl IntoIterator<Item = (RegionCode, Fen)>) -> serde_json::Value {
    let parts: Vec<serde_json::Value> = parts
        .into_iter()
        .filter(|(_, amount)| !amount.is_zero())
        .map(|(funder, amount)| serde_json::json!({"funder": funder.to_string(), "amount": amount.to_string()}))
        .collect();
    serde_json::Value::Array(parts)
}

/// Reads a redemption's stored funder parts (`[{"funder":"440000","amount":"3.00"}]`).
pub fn parse_funder_parts(json: &str) -> Option<Vec<(RegionCode, Fen)>> {
    #[derive(serde::Deserialize)]
    struct Part {
        funder: String,
        amount: String,
    }
    let parts: Vec<Part> = serde_json::from_str(json).ok()?;
    parts.into_iter().map(|p| Some((p.funder.parse().ok()?, Fen::parse_yuan(&p.amount).ok()?))).collect()
}

// ---------------------------------------------------------------------------------------------
// Settlement holds (docs/settlement-holds.md)

/// Why a merchant is on hold for a season: a finance officer's hand (on a complaint), or its
/// cash-out score at or above the season's threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldSource {
    Manual,
    Score(u8),
}

impl HoldSource {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldSource::Manual => "manual",
            HoldSource::Score(_) => "score",
        }
    }

    pub fn score(self) -> Option<u8> {
        match self {
            HoldSource::Manual => None,
            HoldSource::Score(score) => Some(score),
        }
    }
}

/// Where a settlement line stands: paid normally (`None`), or held, then released (paid in the
/// next payout) or rejected (the subsidy back to the funders' pools).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStatus {
    None,
    Held,
    Released,
    Rejected,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::None => "none",
            HoldStatus::Held => "held",
            HoldStatus::Released => "released",
            HoldStatus::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<HoldStatus> {
        [HoldStatus::None, HoldStatus::Held, HoldStatus::Released, HoldStatus::Rejected]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What finance decides about a held line. A release is one person's decision; a rejection
/// takes two: one proposes it, another (an unrelated person) approves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldDecisionKind {
    Release,
    ProposeReject,
    ApproveReject,
}

/// Why a decision about a held line is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldRefused {
    /// The line was never held.
    NotHeld,
    /// It was decided the other way already.
    Decided,
    /// Approving a rejection nobody proposed.
    NotProposed,
    /// The approver is the proposer, or may share a holder with them (four eyes).
    SameApprover,
}

/// What a decision does: applies now, or was made before (a retry: answer the line as it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    Apply,
    AlreadyDone,
}

/// The rule of a decision on a line in `status` with a rejection proposed (or not): `related`
/// says whether the decider may share a holder with the proposer (`KeyLineage::may_share_holder`).
/// A release while a rejection waits decides the line (the proposal lapses).
pub fn decide_hold(
    status: HoldStatus,
    proposed: bool,
    kind: HoldDecisionKind,
    related: bool,
) -> Result<HoldOutcome, HoldRefused> {
    use HoldDecisionKind as K;
    match (status, kind) {
        (HoldStatus::None, _) => Err(HoldRefused::NotHeld),
        (HoldStatus::Held, K::Release) => Ok(HoldOutcome::Apply),
        (HoldStatus::Held, K::ProposeReject) if proposed => Ok(HoldOutcome::AlreadyDone),
        (HoldStatus::Held, K::ProposeReject) => Ok(HoldOutcome::Apply),
        (HoldStatus::Held, K::ApproveReject) if !proposed => Err(HoldRefused::NotProposed),
        (HoldStatus::Held, K::ApproveReject) if related => Err(HoldRefused::SameApprover),
        (HoldStatus::Held, K::ApproveReject) => Ok(HoldOutcome::Apply),
        (HoldStatus::Released, K::Release) => Ok(HoldOutcome::AlreadyDone),
        (HoldStatus::Rejected, K::ProposeReject | K::ApproveReject) => Ok(HoldOutcome::AlreadyDone),
        (HoldStatus::Released, _) | (HoldStatus::Rejected, K::Release) => Err(HoldRefused::Decided),
    }
}

/// Closing a season: per batch, one entry that moves whatever is left in its reserve and in its
/// voucher liability (the vouchers the close expires) back to each funder's pool.
pub fn season_close_entries(season: SeasonId, batch_balances: &[(String, Balance)]) -> Vec<NewEntry> {
    let mut by_batch: BTreeMap<BatchId, Vec<NewPosting>> = BTreeMap::new();
    for (address, balance) in batch_balances {
        let (batch, funder, spec) = match SeasonAccount::parse(season, address) {
            Some(SeasonAccount::Reserve { batch, funder }) => {
                (batch, funder, accounts::reserve(season, batch, funder))
            }
            Some(SeasonAccount::Issued { batch, funder }) => {
                (batch, funder, accounts::issued(season, batch, funder))
            }
            _ => continue,
        };
        let left = credit_balance(balance);
        if left <= 0 {
            continue;
        }
        let postings = by_batch.entry(batch).or_default();
        postings.push(NewPosting { account: spec, side: Side::Debit, amount_fen: left });
        postings.push(NewPosting {
            account: accounts::pool(season, funder),
            side: Side::Credit,
            amount_fen: left,
        });
    }
    by_batch
        .into_iter()
        .map(|(batch, postings)| NewEntry::new("season_close", format!("season_close:{batch}"), postings))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::accounts;
    use crate::domain::ids::SettlementId;
    use uuid::Uuid;

    fn region(code: &str) -> RegionCode {
        code.parse().expect("region")
    }

    #[test]
    fn days_are_china_standard_time() {
        // 2026-11-25T16:00:00Z is midnight on the 26th in Beijing.
        let midnight = Timestamp::parse_rfc3339("2026-11-25T16:00:00Z").expect("time");
        assert_eq!(day_label(cst_day_number(midnight)), "2026-11-26");
        assert_eq!(day_label(cst_day_number(midnight.plus_seconds(-1))), "2026-11-25");
        assert_eq!(cst_rfc3339(midnight), "2026-11-26T00:00:00+08:00");
    }

    #[test]
    fn funder_figures_follow_the_chart() {
        let (s, b, m) = (SeasonId::new_v7(), BatchId::new_v7(), MerchantId::new_v7());
        let f = region("440000");
        let rows = vec![
            (
                accounts::appropriation(s, f).address.as_str().to_owned(),
                Balance { debits_fen: 10_000, credits_fen: 0 },
            ),
            (
                accounts::pool(s, f).address.as_str().to_owned(),
                Balance { debits_fen: 6_000, credits_fen: 10_000 },
            ),
            (
                accounts::reserve(s, b, f).address.as_str().to_owned(),
                Balance { debits_fen: 3_000, credits_fen: 5_000 },
            ),
            (
                accounts::issued(s, b, f).address.as_str().to_owned(),
                Balance { debits_fen: 2_000, credits_fen: 3_000 },
            ),
            (
                accounts::payable(s, m, f).address.as_str().to_owned(),
                Balance { debits_fen: 1_500, credits_fen: 2_000 },
            ),
            (
                accounts::settled(s, m, f).address.as_str().to_owned(),
                Balance { debits_fen: 800, credits_fen: 1_200 },
            ),
            (
                accounts::paid(s, m, f).address.as_str().to_owned(),
                Balance { debits_fen: 0, credits_fen: 800 },
            ),
        ];
        let figures = funder_figures(s, &rows);
        let got = &figures[&f];
        assert_eq!(got.appropriated, 10_000);
        assert_eq!(got.available, 4_000);
        assert_eq!((got.reserved, got.outstanding, got.payable), (2_000, 1_000, 500));
        assert_eq!((got.settled, got.paid, got.settled_total), (400, 800, 1_200));
        assert_eq!((got.redeemed, got.reversed), (2_000, 300));
        assert_eq!(got.payable_flow_gap(), 0);
        // 10,000 = 4,000 + 2,000 + 1,000 + 500 + 400 + 800 would need 8,700: a gap of 1,300.
        assert_eq!(got.money_identity_gap(), 1_300);
    }

    #[test]
    fn held_money_counts_in_the_identity_and_a_release_is_no_settlement() {
        let (s, m) = (SeasonId::new_v7(), MerchantId::new_v7());
        let f = region("440000");
        let row = |spec: crate::domain::ledger::AccountSpec, debits_fen, credits_fen| {
            (spec.address.as_str().to_owned(), Balance { debits_fen, credits_fen })
        };
        // 1,000 redeemed; 600 settled normally, 400 held; of it 100 released, 50 rejected.
        let rows = vec![
            row(accounts::appropriation(s, f), 1_000, 0),
            row(accounts::pool(s, f), 0, 50),
            row(accounts::payable(s, m, f), 1_000, 1_000),
            row(accounts::held(s, m, f), 150, 400),
            row(accounts::settled(s, m, f), 0, 700),
        ];
        let mut figures = funder_figures(s, &rows);
        add_hold_flows(&mut figures, &[(f, 100)].into_iter().collect(), &[(f, 50)].into_iter().collect());
        let got = &figures[&f];
        assert_eq!((got.held, got.released, got.rejected), (250, 100, 50));
        assert_eq!((got.settled_total, got.reversed, got.settled), (1_000, 0, 700));
        assert_eq!(got.payable_flow_gap(), 0);
        assert_eq!(got.money_identity_gap(), 0);
    }

    #[test]
    fn a_rejection_takes_two_people_and_a_decided_line_stays_decided() {
        use HoldDecisionKind::{ApproveReject, ProposeReject, Release};
        use HoldStatus::{Held, Rejected, Released};
        assert_eq!(decide_hold(HoldStatus::None, false, Release, false), Err(HoldRefused::NotHeld));
        assert_eq!(decide_hold(Held, false, Release, false), Ok(HoldOutcome::Apply));
        assert_eq!(decide_hold(Held, true, Release, false), Ok(HoldOutcome::Apply));
        assert_eq!(decide_hold(Held, false, ProposeReject, false), Ok(HoldOutcome::Apply));
        assert_eq!(decide_hold(Held, true, ProposeReject, true), Ok(HoldOutcome::AlreadyDone));
        assert_eq!(decide_hold(Held, false, ApproveReject, false), Err(HoldRefused::NotProposed));
        assert_eq!(decide_hold(Held, true, ApproveReject, true), Err(HoldRefused::SameApprover));
        assert_eq!(decide_hold(Held, true, ApproveReject, false), Ok(HoldOutcome::Apply));
        assert_eq!(decide_hold(Rejected, true, ApproveReject, false), Ok(HoldOutcome::AlreadyDone));
        assert_eq!(decide_hold(Rejected, true, Release, false), Err(HoldRefused::Decided));
        assert_eq!(decide_hold(Released, false, ProposeReject, false), Err(HoldRefused::Decided));
        assert_eq!(decide_hold(Released, false, Release, false), Ok(HoldOutcome::AlreadyDone));
        for status in [HoldStatus::None, Held, Released, Rejected] {
            assert_eq!(HoldStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn settlement_lines_sum_their_parts() {
        let mut line = SettlementLine::new(MerchantId::from_uuid(Uuid::nil()));
        let (p, c) = (region("440000"), region("440100"));
        line.add(&[(p, Fen::new(300).expect("fen")), (c, Fen::new(200).expect("fen"))]);
        line.add(&[(p, Fen::new(1).expect("fen"))]);
        assert_eq!((line.redemption_count, line.amount_fen), (2, 501));
        assert_eq!(line.by_funder[&p] + line.by_funder[&c], 501);
    }

    #[test]
    fn parses_stored_funder_parts() {
        let parts = parse_funder_parts(
            r#"[{"funder":"440000","amount":"3.00"},{"funder":"440100","amount":"0.01"}]"#,
        )
        .expect("parts");
        assert_eq!(
            parts,
            vec![
                (region("440000"), Fen::new(300).expect("fen")),
                (region("440100"), Fen::new(1).expect("fen"))
            ]
        );
        assert!(parse_funder_parts("[{\"funder\":\"x\",\"amount\":\"1\"}]").is_none());
        assert!(parse_funder_parts("not json").is_none());
    }

    #[test]
    fn settlement_chunks_keep_to_their_limits() {
        let m = |n: u128| MerchantId::from_uuid(Uuid::from_u128(n));
        let chunking = SettlementChunking { max_rows: 10, max_merchants: 2 };
        let counts = [(1, 4), (2, 6), (3, 1), (4, 25), (5, 3), (6, 3), (7, 3)]
            .map(|(n, redemptions)| UnsettledCount { merchant_id: m(n), redemptions });
        assert_eq!(
            chunking.chunks(&counts),
            vec![vec![m(1), m(2)], vec![m(3)], vec![m(4)], vec![m(5), m(6)], vec![m(7)]]
        );
        assert!(chunking.chunks(&[]).is_empty());
    }

    /// Applies an entry's postings to balances by address (what the ledger maintains).
    fn apply(balances: &mut BTreeMap<String, Balance>, entry: &NewEntry) {
        entry.validate().expect("a balanced entry");
        for p in &entry.postings {
            let b = balances
                .entry(p.account.address.as_str().to_owned())
                .or_insert(Balance { debits_fen: 0, credits_fen: 0 });
            match p.side {
                Side::Debit => b.debits_fen += p.amount_fen,
                Side::Credit => b.credits_fen += p.amount_fen,
            }
        }
    }

    proptest::proptest! {
        /// Random redemptions, settlements (some merchants on hold), releases, rejections and
        /// payouts: the money identity holds at every step, nothing counts as reversed, and
        /// held, released, rejected and settled_total are what the lines say.
        #[test]
        fn the_identity_holds_through_holds_releases_and_rejections(
            steps in proptest::collection::vec((0u8..5, 0usize..3, 1i64..5_000), 1..60),
        ) {
            use crate::domain::entries;
            let season = SeasonId::from_uuid(Uuid::from_u128(1));
            let (p, c) = (region("440000"), region("440100"));
            let merchants: Vec<MerchantId> = (0..3u128).map(|n| MerchantId::from_uuid(Uuid::from_u128(10 + n))).collect();
            let mut balances: BTreeMap<String, Balance> = BTreeMap::new();
            for f in [p, c] {
                apply(&mut balances, &entries::budget_entry(season, f, Fen::from_fen_unchecked(10_000_000), "budget".into()));
            }
            // Per merchant: unsettled parts; held lines waiting; released lines not yet paid.
            let mut unsettled: Vec<BTreeMap<RegionCode, i64>> = vec![BTreeMap::new(); 3];
            let mut held: Vec<(usize, BTreeMap<RegionCode, i64>)> = Vec::new();
            let mut released_unpaid: Vec<(usize, BTreeMap<RegionCode, i64>)> = Vec::new();
            let (mut released, mut rejected) = (BTreeMap::new(), BTreeMap::new());
            let (mut settled_lines, mut held_now) = (0i64, 0i64);
            for (n, (op, m, amount)) in steps.into_iter().enumerate() {
                let id = SettlementId::from_uuid(Uuid::from_u128(1_000 + n as u128));
                let merchant = merchants[m];
                match op {
                    0 => {
                        // A redemption: the pools pay the merchant's payable (2/3 and 1/3).
                        let parts = [(p, amount * 2 / 3), (c, amount - amount * 2 / 3)];
                        let mut postings = Vec::new();
                        for (f, fen) in parts {
                            if fen > 0 {
                                postings.push(NewPosting { account: accounts::pool(season, f), side: Side::Debit, amount_fen: fen });
                                postings.push(NewPosting { account: accounts::payable(season, merchant, f), side: Side::Credit, amount_fen: fen });
                                *unsettled[m].entry(f).or_insert(0) += fen;
                            }
                        }
                        apply(&mut balances, &NewEntry::new("redemption", format!("r{n}"), postings));
                    }
                    1 if !unsettled[m].is_empty() => {
                        // A settlement of the merchant, held when `amount` is even.
                        let line = std::mem::take(&mut unsettled[m]);
                        let on_hold = amount % 2 == 0;
                        apply(&mut balances, &entries::settlement_entry(season, merchant, id, &line, on_hold));
                        settled_lines += line.values().sum::<i64>();
                        if on_hold {
                            held_now += line.values().sum::<i64>();
                            held.push((m, line));
                        } else {
                            released_unpaid.push((m, line));
                        }
                    }
                    2 | 3 if !held.is_empty() => {
                        let (hm, line) = held.remove(amount as usize % held.len());
                        held_now -= line.values().sum::<i64>();
                        let into = if op == 2 { &mut released } else { &mut rejected };
                        for (f, fen) in &line {
                            *into.entry(*f).or_insert(0) += fen;
                        }
                        if op == 2 {
                            apply(&mut balances, &entries::hold_release_entry(season, merchants[hm], id, &line));
                            released_unpaid.push((hm, line));
                        } else {
                            apply(&mut balances, &entries::hold_reject_entry(season, merchants[hm], id, &line));
                        }
                    }
                    4 if !released_unpaid.is_empty() => {
                        let (pm, line) = released_unpaid.remove(0);
                        apply(&mut balances, &entries::released_payout_entry(season, merchants[pm], id, &line));
                    }
                    _ => {}
                }
                let rows: Vec<(String, Balance)> = balances.iter().map(|(a, b)| (a.clone(), *b)).collect();
                proptest::prop_assert!(rows.iter().all(|(a, b)| a.ends_with("appropriation") || b.credits_fen >= b.debits_fen), "a limited account went negative");
                let mut figures = funder_figures(season, &rows);
                add_hold_flows(&mut figures, &released, &rejected);
                let (mut held_sum, mut settled_total) = (0, 0);
                for f in figures.values() {
                    proptest::prop_assert_eq!(f.money_identity_gap(), 0);
                    proptest::prop_assert_eq!(f.payable_flow_gap(), 0);
                    proptest::prop_assert_eq!(f.reversed, 0);
                    held_sum += f.held;
                    settled_total += f.settled_total;
                }
                proptest::prop_assert_eq!(held_sum, held_now);
                proptest::prop_assert_eq!(settled_total, settled_lines);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn settlement_chunks_take_every_merchant_once(
            rows in proptest::collection::vec(1i64..5_000, 0..300),
            max_rows in 1i64..20_000,
            max_merchants in 1usize..50,
        ) {
            let counts: Vec<UnsettledCount> = rows
                .iter()
                .enumerate()
                .map(|(i, n)| UnsettledCount { merchant_id: MerchantId::from_uuid(Uuid::from_u128(i as u128)), redemptions: *n })
                .collect();
            let chunks = SettlementChunking { max_rows, max_merchants }.chunks(&counts);
            let flat: Vec<MerchantId> = chunks.iter().flatten().copied().collect();
            proptest::prop_assert_eq!(flat, counts.iter().map(|c| c.merchant_id).collect::<Vec<_>>());
            for chunk in &chunks {
                let rows: i64 = chunk.iter().map(|m| counts[m.as_uuid().as_u128() as usize].redemptions).sum();
                proptest::prop_assert!(!chunk.is_empty() && chunk.len() <= max_merchants);
                proptest::prop_assert!(chunk.len() == 1 || rows <= max_rows, "{} rows in {:?}", rows, chunk);
            }
        }
    }
}
