//! The voucher ledger's entries: one builder per entry kind, each pure (no store, no clock but
//! the entry id), so that the service and the benchmarks post exactly the same shapes.
//!
//! | kind            | builder              | moves                                               |
//! |-----------------|----------------------|-----------------------------------------------------|
//! | `budget`        | [`budget_entry`]     | appropriation -> pool                               |
//! | `batch_reserve` | [`reserve_entry`]    | pool -> batch reserve (stock x value)               |
//! | `claim`         | [`claim_entry`]      | batch reserve -> issued                             |
//! | `expiry`        | [`expiry_entry`]     | issued -> batch reserve (or pool once it closed)    |
//! | `batch_close`   | [`close_entry`]      | what is left in the batch reserve -> pool           |
//! | `redemption`    | [`redemption_entry`] | issued -> merchant payable (discount) and pool      |
//! | `reversal`      | [`reversal_entry`]   | the compensating entry of a redemption              |
//! | `settlement`    | [`settlement_entry`] | merchant payable -> settled (held: -> held)         |
//! | `hold_release`  | [`hold_release_entry`] | held -> settled (paid in the next payout)         |
//! | `hold_reject`   | [`hold_reject_entry`] | held -> each funder's pool                         |
//! | `payout`        | [`released_payout_entry`] | a released line: settled -> paid             |
//!
//! The benefit card's entries are in [`super::card`], the season close in [`super::finance`].

use super::accounts;
use super::ledger::{AccountSpec, NewEntry, NewPosting, Side};
use super::money::{Fen, MAX_AMOUNT_FEN};
use super::region::RegionCode;
use super::season::{Batch, Season, SeasonStatus, Voucher, VoucherStatus};
use super::time::Timestamp;
use crate::domain::ids::{MerchantId, RedemptionId, ReversalId, SeasonId, SettlementId, VoucherId};
use std::collections::BTreeMap;

/// One funder's part of a redeemed voucher: (funder, its part of the value, its part of the
/// discount).
pub type FunderPart = (RegionCode, Fen, Fen);

/// Each funder's part of a voucher's value and of the discount it gave.
pub fn funder_parts(batch: &Batch, value: Fen, discount: Fen) -> Vec<FunderPart> {
    let values = batch.funding.split(value);
    let discounts = batch.funding.split_within(discount, value);
    values.iter().zip(&discounts).map(|((funder, v), (_, d))| (*funder, *v, *d)).collect()
}

/// A budget: `amount` from the funder's appropriation into its pool for the season.
pub fn budget_entry(season: SeasonId, funder: RegionCode, amount: Fen, reference: String) -> NewEntry {
    NewEntry::transfer(
        "budget",
        reference,
        accounts::appropriation(season, funder),
        accounts::pool(season, funder),
        amount,
    )
}

/// A batch's stock times its voucher value is more than one entry may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stock x value is too large")]
pub struct ReserveTooLarge;

/// The reserve entry: stock x each funder's share of one voucher's value, from each pool.
pub fn reserve_entry(batch: &Batch) -> Result<NewEntry, ReserveTooLarge> {
    let mut postings = Vec::new();
    for (funder, part) in batch.funding.split(batch.voucher_value()) {
        let amount = part.checked_mul(batch.stock).filter(|a| a.as_fen() <= MAX_AMOUNT_FEN);
        let amount_fen = amount.ok_or(ReserveTooLarge)?.as_fen();
        let from = accounts::pool(batch.season_id, funder);
        push_nonzero(&mut postings, from, Side::Debit, amount_fen);
        let to = accounts::reserve(batch.season_id, batch.id, funder);
        push_nonzero(&mut postings, to, Side::Credit, amount_fen);
    }
    Ok(NewEntry::new("batch_reserve", format!("batch_reserve:{}", batch.id), postings))
}

/// A waitlist's forfeited voucher moving on (docs/waitlist.md): the forfeit put its value back
/// in each funder's pool; this takes one voucher's value from the pools into the batch reserve
/// again, so that the next in line's claim entry draws it from there, as any claim does.
pub fn waitlist_refill_entry(batch: &Batch, forfeited: VoucherId) -> NewEntry {
    let mut postings = Vec::new();
    for (funder, part) in batch.funding.split(batch.voucher_value()) {
        push_nonzero(&mut postings, accounts::pool(batch.season_id, funder), Side::Debit, part.as_fen());
        let to = accounts::reserve(batch.season_id, batch.id, funder);
        push_nonzero(&mut postings, to, Side::Credit, part.as_fen());
    }
    NewEntry::new("waitlist_refill", format!("waitlist_refill:{forfeited}"), postings)
}

/// The reference of a voucher's claim entry: one per voucher, ever.
pub fn claim_reference(voucher_id: VoucherId) -> String {
    format!("claim:{voucher_id}")
}

/// A claim moves the voucher's value from the batch reserve to voucher liability, per funder.
pub fn claim_entry(batch: &Batch, voucher: &Voucher) -> NewEntry {
    let mut postings = Vec::new();
    for (funder, part) in batch.funding.split(voucher.value) {
        let from = accounts::reserve(batch.season_id, batch.id, funder);
        push_nonzero(&mut postings, from, Side::Debit, part.as_fen());
        let to = accounts::issued(batch.season_id, batch.id, funder);
        push_nonzero(&mut postings, to, Side::Credit, part.as_fen());
    }
    NewEntry::new("claim", claim_reference(voucher.id), postings)
}

/// Expiry returns the value to the batch reserve while the batch is claimable, else to the pool.
pub fn expiry_entry(batch: &Batch, voucher: &Voucher) -> NewEntry {
    let mut postings = Vec::new();
    for (funder, part) in batch.funding.split(voucher.value) {
        let destination = if batch.reserve_returned {
            accounts::pool(batch.season_id, funder)
        } else {
            accounts::reserve(batch.season_id, batch.id, funder)
        };
        let from = accounts::issued(batch.season_id, batch.id, funder);
        push_nonzero(&mut postings, from, Side::Debit, part.as_fen());
        push_nonzero(&mut postings, destination, Side::Credit, part.as_fen());
    }
    NewEntry::new("expiry", format!("expiry:{}", voucher.id), postings)
}

/// At claim close, whatever is left in the batch reserve goes back to each funder's pool.
/// `reserve_left` is each funder's reserve balance (credits minus debits) as read now; `None`
/// when nothing is left.
pub fn close_entry(batch: &Batch, reserve_left: &[(RegionCode, i64)]) -> Option<NewEntry> {
    let mut postings = Vec::new();
    for &(funder, left_fen) in reserve_left {
        let from = accounts::reserve(batch.season_id, batch.id, funder);
        push_nonzero(&mut postings, from, Side::Debit, left_fen);
        push_nonzero(&mut postings, accounts::pool(batch.season_id, funder), Side::Credit, left_fen);
    }
    (!postings.is_empty())
        .then(|| NewEntry::new("batch_close", format!("batch_close:{}", batch.id), postings))
}

/// The voucher's value leaves liability: the discount to the merchant, the rest back to the pool.
pub fn redemption_entry(
    batch: &Batch,
    parts: &[FunderPart],
    merchant: MerchantId,
    redemption: RedemptionId,
) -> NewEntry {
    let (season, batch) = (batch.season_id, batch.id);
    let mut postings = Vec::new();
    for (funder, value, discount) in parts {
        let rest = value.as_fen() - discount.as_fen();
        let mut push = |account, side, amount_fen| push_nonzero(&mut postings, account, side, amount_fen);
        push(accounts::issued(season, batch, *funder), Side::Debit, value.as_fen());
        push(accounts::payable(season, merchant, *funder), Side::Credit, discount.as_fen());
        push(accounts::pool(season, *funder), Side::Credit, rest);
    }
    NewEntry::new("redemption", format!("redemption:{redemption}"), postings)
}

/// What a reversal leaves of its voucher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterReversal {
    /// Still valid in an open season: usable again.
    Active,
    /// Past its validity, or the season is over: expired, its stock back to the batch.
    Expired,
    /// The season's refunds forfeit the voucher (Guangzhou): spent for its holder.
    Forfeited,
}

impl AfterReversal {
    pub fn of(season: &Season, voucher: &Voucher, now: Timestamp) -> AfterReversal {
        if season.refund_forfeits_voucher {
            AfterReversal::Forfeited
        } else if now < voucher.expires_at && season.status_at(now) == SeasonStatus::Open {
            AfterReversal::Active
        } else {
            AfterReversal::Expired
        }
    }

    pub fn status(self) -> VoucherStatus {
        match self {
            AfterReversal::Active => VoucherStatus::Active,
            AfterReversal::Expired => VoucherStatus::Expired,
            AfterReversal::Forfeited => VoucherStatus::Forfeited,
        }
    }
}

/// The compensating entry for a refunded sale. A still-valid voucher gets its full value back in
/// liability (the discount from the merchant, the unused rest from the pool); an expired one
/// returns its value and its stock to the batch (or to the pool once the batch has closed); a
/// forfeited one returns the discount to the pool, where the redemption put the rest.
pub fn reversal_entry(
    batch: &Batch,
    parts: &[FunderPart],
    merchant: MerchantId,
    reversal: ReversalId,
    after: AfterReversal,
) -> NewEntry {
    let (season, batch_id) = (batch.season_id, batch.id);
    let mut postings = Vec::new();
    for (funder, value, discount) in parts {
        let rest = value.as_fen() - discount.as_fen();
        let mut push = |account, side, amount_fen| push_nonzero(&mut postings, account, side, amount_fen);
        push(accounts::payable(season, merchant, *funder), Side::Debit, discount.as_fen());
        if after == AfterReversal::Forfeited {
            push(accounts::pool(season, *funder), Side::Credit, discount.as_fen());
        } else if after == AfterReversal::Active {
            push(accounts::pool(season, *funder), Side::Debit, rest);
            push(accounts::issued(season, batch_id, *funder), Side::Credit, value.as_fen());
        } else if batch.reserve_returned {
            push(accounts::pool(season, *funder), Side::Credit, discount.as_fen());
        } else {
            push(accounts::pool(season, *funder), Side::Debit, rest);
            push(accounts::reserve(season, batch_id, *funder), Side::Credit, value.as_fen());
        }
    }
    NewEntry::new("reversal", format!("reversal:{reversal}"), postings)
}

/// Postings moving each funder's amount from one account to another (zero amounts left out).
fn move_per_funder(
    by_funder: &BTreeMap<RegionCode, i64>,
    accounts: impl Fn(RegionCode) -> (AccountSpec, AccountSpec),
) -> Vec<NewPosting> {
    let mut postings = Vec::new();
    for (funder, amount_fen) in by_funder {
        let (from, to) = accounts(*funder);
        push_nonzero(&mut postings, from, Side::Debit, *amount_fen);
        push_nonzero(&mut postings, to, Side::Credit, *amount_fen);
    }
    postings
}

/// A merchant's settlement line: its payable to settled, or, while the merchant is on hold, to
/// its held account (not in the payout file). One entry per line, `settlement:<S>:<M>`.
pub fn settlement_entry(
    season: SeasonId,
    merchant: MerchantId,
    settlement: SettlementId,
    by_funder: &BTreeMap<RegionCode, i64>,
    held: bool,
) -> NewEntry {
    let postings = move_per_funder(by_funder, |f| {
        let to =
            if held { accounts::held(season, merchant, f) } else { accounts::settled(season, merchant, f) };
        (accounts::payable(season, merchant, f), to)
    });
    NewEntry::new("settlement", format!("settlement:{settlement}:{merchant}"), postings)
}

/// Finance releases a held line: held to settled, paid in the next payout.
pub fn hold_release_entry(
    season: SeasonId,
    merchant: MerchantId,
    settlement: SettlementId,
    by_funder: &BTreeMap<RegionCode, i64>,
) -> NewEntry {
    let postings = move_per_funder(by_funder, |f| {
        (accounts::held(season, merchant, f), accounts::settled(season, merchant, f))
    });
    NewEntry::new("hold_release", format!("hold_release:{settlement}:{merchant}"), postings)
}

/// Finance rejects a held line (four eyes): each funder's part of the subsidy goes back to its pool.
pub fn hold_reject_entry(
    season: SeasonId,
    merchant: MerchantId,
    settlement: SettlementId,
    by_funder: &BTreeMap<RegionCode, i64>,
) -> NewEntry {
    let postings =
        move_per_funder(by_funder, |f| (accounts::held(season, merchant, f), accounts::pool(season, f)));
    NewEntry::new("hold_reject", format!("hold_reject:{settlement}:{merchant}"), postings)
}

/// The bank paid a released line (of `settlement`, the one that held it) with a later
/// settlement's payout: settled to paid, `hold_payout:<S>:<M>`.
pub fn released_payout_entry(
    season: SeasonId,
    merchant: MerchantId,
    settlement: SettlementId,
    by_funder: &BTreeMap<RegionCode, i64>,
) -> NewEntry {
    let postings = move_per_funder(by_funder, |f| {
        (accounts::settled(season, merchant, f), accounts::paid(season, merchant, f))
    });
    NewEntry::new("payout", format!("hold_payout:{settlement}:{merchant}"), postings)
}

/// Adds a posting unless its amount is zero (a funder's part of a small discount can be).
fn push_nonzero(postings: &mut Vec<NewPosting>, account: AccountSpec, side: Side, amount_fen: i64) {
    if amount_fen > 0 {
        postings.push(NewPosting { account, side, amount_fen });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::funding::{FundingShares, VoucherTerms};
    use crate::domain::season::Category;
    use uuid::Uuid;

    const PROVINCE: &str = "370000";
    const CITY: &str = "370200";

    fn region(code: &str) -> RegionCode {
        code.parse().expect("region")
    }

    /// A batch of 10-yuan-off vouchers, 60% from the province and 40% from the city.
    fn batch(stock: i64) -> Batch {
        let funding = FundingShares::new(vec![(region(PROVINCE), 60), (region(CITY), 40)]).expect("shares");
        Batch {
            id: crate::domain::ids::BatchId::from_uuid(Uuid::from_u128(2)),
            season_id: SeasonId::from_uuid(Uuid::from_u128(1)),
            name: "batch".into(),
            issuer: region(PROVINCE),
            terms: VoucherTerms::Threshold {
                face_value: Fen::from_fen_unchecked(1_000),
                min_spend: Fen::from_fen_unchecked(5_000),
            },
            stock,
            per_citizen_limit: 1,
            valid_hours: 24,
            claim_opens_at: Timestamp::from_unix_us(0),
            claim_closes_at: Timestamp::from_unix_us(1_000_000),
            categories: vec![Category::Bookstore],
            funding,
            releases: Vec::new(),
            claimed_count: 0,
            returned_count: 0,
            reserve_returned: false,
            points_price: None,
            lottery: None,
        }
    }

    fn voucher(batch: &Batch) -> Voucher {
        Voucher {
            id: Uuid::from_u128(3).into(),
            batch_id: batch.id,
            season_id: batch.season_id,
            citizen_id: Uuid::from_u128(4).into(),
            slot: 1,
            status: VoucherStatus::Active,
            value: batch.voucher_value(),
            claimed_at: Timestamp::from_unix_us(10),
            expires_at: Timestamp::from_unix_us(20),
        }
    }

    /// The entry's postings as (address, side, fen), after checking that it balances.
    fn lines(entry: &NewEntry) -> Vec<(String, Side, i64)> {
        entry.validate().expect("a valid, balanced entry");
        entry.postings.iter().map(|p| (p.account.address.to_string(), p.side, p.amount_fen)).collect()
    }

    fn line(account: AccountSpec, side: Side, amount_fen: i64) -> (String, Side, i64) {
        (account.address.to_string(), side, amount_fen)
    }

    #[test]
    fn budget_moves_the_appropriation_into_the_pool() {
        let (season, funder) = (SeasonId::from_uuid(Uuid::from_u128(1)), region(CITY));
        let entry = budget_entry(season, funder, Fen::from_fen_unchecked(500), "budget:x".into());
        assert_eq!((entry.kind.as_str(), entry.reference.as_str()), ("budget", "budget:x"));
        assert_eq!(
            lines(&entry),
            [
                line(accounts::appropriation(season, funder), Side::Debit, 500),
                line(accounts::pool(season, funder), Side::Credit, 500),
            ]
        );
    }

    #[test]
    fn reserve_takes_stock_times_each_share_from_each_pool() {
        let b = batch(7);
        let (s, p, c) = (b.season_id, region(PROVINCE), region(CITY));
        let entry = reserve_entry(&b).expect("entry");
        assert_eq!(entry.reference, format!("batch_reserve:{}", b.id));
        assert_eq!(
            lines(&entry),
            [
                line(accounts::pool(s, p), Side::Debit, 4_200),
                line(accounts::reserve(s, b.id, p), Side::Credit, 4_200),
                line(accounts::pool(s, c), Side::Debit, 2_800),
                line(accounts::reserve(s, b.id, c), Side::Credit, 2_800),
            ]
        );
        assert_eq!(reserve_entry(&batch(i64::MAX / 10)), Err(ReserveTooLarge));
    }

    #[test]
    fn claim_moves_the_value_from_reserve_to_issued() {
        let b = batch(7);
        let (s, p, c) = (b.season_id, region(PROVINCE), region(CITY));
        let entry = claim_entry(&b, &voucher(&b));
        assert_eq!(
            (entry.kind.as_str(), entry.reference.clone()),
            ("claim", format!("claim:{}", voucher(&b).id))
        );
        assert_eq!(
            lines(&entry),
            [
                line(accounts::reserve(s, b.id, p), Side::Debit, 600),
                line(accounts::issued(s, b.id, p), Side::Credit, 600),
                line(accounts::reserve(s, b.id, c), Side::Debit, 400),
                line(accounts::issued(s, b.id, c), Side::Credit, 400),
            ]
        );
    }

    #[test]
    fn expiry_returns_to_the_reserve_then_to_the_pool_once_closed() {
        let mut b = batch(7);
        let (s, p, c) = (b.season_id, region(PROVINCE), region(CITY));
        let open = expiry_entry(&b, &voucher(&b));
        assert_eq!(open.kind, "expiry");
        assert_eq!(lines(&open)[1], line(accounts::reserve(s, b.id, p), Side::Credit, 600));
        assert_eq!(lines(&open)[2], line(accounts::issued(s, b.id, c), Side::Debit, 400));
        b.reserve_returned = true;
        let closed = expiry_entry(&b, &voucher(&b));
        assert_eq!(lines(&closed)[1], line(accounts::pool(s, p), Side::Credit, 600));
        assert_eq!(lines(&closed)[3], line(accounts::pool(s, c), Side::Credit, 400));
    }

    #[test]
    fn close_returns_what_is_left_of_each_reserve_to_its_pool() {
        let b = batch(7);
        let (s, p, c) = (b.season_id, region(PROVINCE), region(CITY));
        let entry = close_entry(&b, &[(p, 1_800), (c, 0)]).expect("an entry");
        assert_eq!(
            (entry.kind.as_str(), entry.reference.clone()),
            ("batch_close", format!("batch_close:{}", b.id))
        );
        assert_eq!(
            lines(&entry),
            [
                line(accounts::reserve(s, b.id, p), Side::Debit, 1_800),
                line(accounts::pool(s, p), Side::Credit, 1_800),
            ]
        );
        assert!(close_entry(&b, &[(p, 0), (c, 0)]).is_none());
    }

    #[test]
    fn redemption_pays_the_discount_to_the_merchant_and_the_rest_to_the_pool() {
        let b = batch(7);
        let (s, p, c, merchant) =
            (b.season_id, region(PROVINCE), region(CITY), MerchantId::from_uuid(Uuid::from_u128(9)));
        let parts = funder_parts(&b, b.voucher_value(), Fen::from_fen_unchecked(500));
        assert_eq!(
            parts,
            [
                (p, Fen::from_fen_unchecked(600), Fen::from_fen_unchecked(300)),
                (c, Fen::from_fen_unchecked(400), Fen::from_fen_unchecked(200))
            ]
        );
        let entry = redemption_entry(&b, &parts, merchant, Uuid::from_u128(10).into());
        assert_eq!(entry.reference, format!("redemption:{}", Uuid::from_u128(10)));
        assert_eq!(
            lines(&entry),
            [
                line(accounts::issued(s, b.id, p), Side::Debit, 600),
                line(accounts::payable(s, merchant, p), Side::Credit, 300),
                line(accounts::pool(s, p), Side::Credit, 300),
                line(accounts::issued(s, b.id, c), Side::Debit, 400),
                line(accounts::payable(s, merchant, c), Side::Credit, 200),
                line(accounts::pool(s, c), Side::Credit, 200),
            ]
        );
        let whole = funder_parts(&b, b.voucher_value(), b.voucher_value());
        let entry = redemption_entry(&b, &whole, merchant, Uuid::from_u128(10).into());
        assert_eq!(lines(&entry).len(), 4, "a zero rest is left out");
    }

    #[test]
    fn reversal_undoes_the_redemption_as_the_voucher_ends() {
        let mut b = batch(7);
        let (s, p, merchant) = (b.season_id, region(PROVINCE), MerchantId::from_uuid(Uuid::from_u128(9)));
        let parts = funder_parts(&b, b.voucher_value(), Fen::from_fen_unchecked(500));
        let id = ReversalId::from_uuid(Uuid::from_u128(11));
        let active = reversal_entry(&b, &parts, merchant, id, AfterReversal::Active);
        assert_eq!((active.kind.as_str(), active.reference.clone()), ("reversal", format!("reversal:{id}")));
        assert_eq!(
            lines(&active)[..3],
            [
                line(accounts::payable(s, merchant, p), Side::Debit, 300),
                line(accounts::pool(s, p), Side::Debit, 300),
                line(accounts::issued(s, b.id, p), Side::Credit, 600),
            ]
        );
        let expired = reversal_entry(&b, &parts, merchant, id, AfterReversal::Expired);
        assert_eq!(lines(&expired)[2], line(accounts::reserve(s, b.id, p), Side::Credit, 600));
        let forfeited = reversal_entry(&b, &parts, merchant, id, AfterReversal::Forfeited);
        assert_eq!(lines(&forfeited)[1], line(accounts::pool(s, p), Side::Credit, 300));
        b.reserve_returned = true;
        let expired_closed = reversal_entry(&b, &parts, merchant, id, AfterReversal::Expired);
        assert_eq!(lines(&expired_closed), lines(&forfeited));
    }

    #[test]
    fn a_held_line_moves_to_held_then_to_settled_or_back_to_the_pools() {
        let (s, p, c) = (SeasonId::from_uuid(Uuid::from_u128(1)), region(PROVINCE), region(CITY));
        let (m, id) =
            (MerchantId::from_uuid(Uuid::from_u128(9)), SettlementId::from_uuid(Uuid::from_u128(5)));
        let by_funder: BTreeMap<RegionCode, i64> = [(p, 300), (c, 200)].into_iter().collect();
        let held = settlement_entry(s, m, id, &by_funder, true);
        assert_eq!(held.reference, format!("settlement:{id}:{m}"));
        assert_eq!(lines(&held)[1], line(accounts::held(s, m, p), Side::Credit, 300));
        let normal = settlement_entry(s, m, id, &by_funder, false);
        assert_eq!(lines(&normal)[3], line(accounts::settled(s, m, c), Side::Credit, 200));
        let release = hold_release_entry(s, m, id, &by_funder);
        assert_eq!(
            lines(&release)[..2],
            [
                line(accounts::held(s, m, p), Side::Debit, 300),
                line(accounts::settled(s, m, p), Side::Credit, 300)
            ]
        );
        let reject = hold_reject_entry(s, m, id, &by_funder);
        assert_eq!(reject.reference, format!("hold_reject:{id}:{m}"));
        assert_eq!(
            lines(&reject)[2..],
            [line(accounts::held(s, m, c), Side::Debit, 200), line(accounts::pool(s, c), Side::Credit, 200)]
        );
        let paid = released_payout_entry(s, m, id, &by_funder);
        assert_eq!((paid.kind.as_str(), paid.reference.clone()), ("payout", format!("hold_payout:{id}:{m}")));
        assert_eq!(lines(&paid)[1], line(accounts::paid(s, m, p), Side::Credit, 300));
    }

    #[test]
    fn a_reversal_leaves_the_voucher_as_the_season_says() {
        let b = batch(7);
        let v = voucher(&b);
        let mut season = Season {
            id: b.season_id,
            name: "s".into(),
            province: region(PROVINCE),
            starts_at: Timestamp::from_unix_us(0),
            ends_at: Timestamp::from_unix_us(100),
            per_citizen_cap: None,
            per_citizen_monthly_cap: None,
            allow_stacking: false,
            refund_forfeits_voucher: false,
            merchant_redemption_limit: None,
            subsidy_ceilings: crate::domain::season::SubsidyCeilings::default(),
            hold_score_threshold: None,
            closed_at: None,
        };
        let (valid, past_expiry) = (Timestamp::from_unix_us(15), Timestamp::from_unix_us(20));
        assert_eq!(AfterReversal::of(&season, &v, valid), AfterReversal::Active);
        assert_eq!(AfterReversal::of(&season, &v, past_expiry), AfterReversal::Expired);
        season.closed_at = Some(Timestamp::from_unix_us(12));
        assert_eq!(AfterReversal::of(&season, &v, valid), AfterReversal::Expired);
        season.refund_forfeits_voucher = true;
        assert_eq!(AfterReversal::of(&season, &v, valid), AfterReversal::Forfeited);
        assert_eq!(AfterReversal::Forfeited.status(), VoucherStatus::Forfeited);
    }
}
