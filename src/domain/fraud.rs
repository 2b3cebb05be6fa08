//! Cash-out (套现) scoring: seven signals per merchant, from the season's redemptions, combined
//! into a score from 0 to 100 with its reasons. Pure: the facts come in, the scores go out.
//!
//! The facts stream in ordered by merchant, then redemption time ([`Aggregator`]); each
//! merchant's redemptions are folded into per-CST-day tallies (hour-of-day counts, threshold
//! orders, reversals, ...) as they pass, and only the tallies are kept: memory grows with
//! merchants × days, never with redemptions. Once every merchant is tallied, [`assess`] compares
//! each with its category (leaving the merchant itself out) and scores it.
//!
//! Arithmetic is integer per-mille (‰) throughout, with fixed weights: the same redemptions give
//! the same scores, whatever order they were read in. `docs/fraud-scoring.md` explains each
//! signal and the fraud it catches.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::finance::cst_day_number;
use super::ids::{CitizenId, MerchantId};
use super::region::RegionCode;
use super::season::Category;
use super::time::Timestamp;

const US_PER_MINUTE: i64 = 60 * 1_000_000;
/// The window in which distinct citizens are counted for a burst (a phone farm).
pub const BURST_WINDOW_US: i64 = 10 * US_PER_MINUTE;
/// A voucher redeemed this soon after its claim counts as "claimed and redeemed at once".
pub const FAST_REDEMPTION_US: i64 = 30 * US_PER_MINUTE;
/// A reversal this soon after its redemption counts as a redemption followed by a refund.
pub const REVERSAL_WINDOW_US: i64 = 72 * 60 * US_PER_MINUTE;
/// Below this many redemptions a merchant's signals count in proportion (a shop with 5
/// redemptions, 3 of them at the threshold, is not yet evidence).
pub const FULL_CONFIDENCE_REDEMPTIONS: u32 = 20;
/// A category's (or the season's) figures are a baseline once they hold this many redemptions
/// of at least [`BASELINE_MIN_MERCHANTS`] other merchants; else the fixed defaults below apply.
pub const BASELINE_MIN_REDEMPTIONS: u64 = 200;
pub const BASELINE_MIN_MERCHANTS: u32 = 3;
/// The share of threshold orders at exactly the threshold taken as normal without a baseline.
pub const DEFAULT_AT_THRESHOLD_PERMILLE: u32 = 150;
/// Business hours (CST, `[8, 22)`), always usual; a category's baseline may add more hours.
pub const BUSINESS_HOURS: std::ops::Range<u8> = 8..22;
/// An hour of the day is usual for a category when it holds this share of its redemptions.
pub const USUAL_HOUR_PERMILLE: u64 = 30;
/// A citizen with this many redemptions at one merchant is a repeat citizen there.
pub const REPEAT_AT: u32 = 3;

/// The signals, in the order they are reported when their points tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Orders at exactly the voucher's threshold (满100减30 with orders of 100.00), against the
    /// category: a fake sale written at the threshold, the cash handed back.
    AtThreshold,
    /// Redemptions per hour against the merchant's own usual hour and its category's: vouchers
    /// pushed through the till in bulk.
    HourlyRate,
    /// The same citizens again and again: a ring of friends or bought vouchers cashed out.
    RepeatCitizens,
    /// Many distinct citizens within minutes: a phone farm's accounts redeemed in one go.
    DistinctBurst,
    /// Redemptions followed by reversals (refunds): a sale that never was, reversed later.
    Reversals,
    /// Redemptions outside usual hours: fake sales written when the shop is shut.
    OddHours,
    /// Vouchers claimed and redeemed within minutes at a merchant far from the citizen's city:
    /// accounts collected elsewhere, redeemed by the merchant itself.
    FarAndFast,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::AtThreshold,
        Signal::HourlyRate,
        Signal::RepeatCitizens,
        Signal::DistinctBurst,
        Signal::Reversals,
        Signal::OddHours,
        Signal::FarAndFast,
    ];

    /// The most points the signal gives (at full strength and confidence). They sum past 100
    /// (200): two strong signals are enough to reach the holding range; the score is capped.
    pub fn weight(self) -> u16 {
        match self {
            Signal::AtThreshold => 45,
            Signal::HourlyRate => 15,
            Signal::RepeatCitizens => 20,
            Signal::DistinctBurst => 35,
            Signal::Reversals => 25,
            Signal::OddHours => 25,
            Signal::FarAndFast => 35,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::AtThreshold => "at_threshold",
            Signal::HourlyRate => "hourly_rate",
            Signal::RepeatCitizens => "repeat_citizens",
            Signal::DistinctBurst => "distinct_burst",
            Signal::Reversals => "reversals",
            Signal::OddHours => "odd_hours",
            Signal::FarAndFast => "far_and_fast",
        }
    }
}

/// One redemption, with what the signals need of its voucher, citizen and merchant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedemptionFact {
    pub merchant_id: MerchantId,
    pub category: Category,
    /// The merchant's region (a city or county code).
    pub merchant_region: RegionCode,
    /// The voucher's spending threshold (满100减30: 100.00) in fen; None for vouchers without
    /// one (a percentage without a minimum spend).
    pub threshold_fen: Option<i64>,
    pub order_amount_fen: i64,
    pub redeemed_at: Timestamp,
    pub citizen_id: CitizenId,
    pub claimed_at: Timestamp,
    /// The citizen's home region (from the masked ID number's first digits), if known.
    pub citizen_home: Option<RegionCode>,
    pub reversed_at: Option<Timestamp>,
}

/// How far a citizen's home is from the merchant: per-mille weight of a far-and-fast redemption.
fn distance_weight(home: Option<RegionCode>, merchant: RegionCode) -> u64 {
    match home {
        None => 0,
        Some(home) if home.province() != merchant.province() => 1000,
        Some(home) if home.city() != merchant.city() => 500,
        Some(_) => 0,
    }
}

/// One merchant's redemptions on one CST day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayTally {
    /// Days since 1970-01-01 in CST (`finance::cst_day_number`).
    pub day: i64,
    pub redemptions: u32,
    /// Redemptions by CST hour of the day.
    pub hours: [u32; 24],
    /// Redemptions of vouchers that have a threshold, and of those, orders of exactly it.
    pub with_threshold: u32,
    pub at_threshold: u32,
    /// Reversed within [`REVERSAL_WINDOW_US`].
    pub reversed: u32,
    /// Redeemed within [`FAST_REDEMPTION_US`] of the claim by a citizen of another city.
    pub far_and_fast: u32,
    /// The same, weighted: 1000 another province, 500 another city of the province.
    pub far_and_fast_permille: u64,
    /// Most distinct citizens in a [`BURST_WINDOW_US`] window ending this day.
    pub max_distinct_in_window: u32,
}

/// One merchant's tallies over the season up to the cut-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantTally {
    pub merchant_id: MerchantId,
    pub category: Category,
    pub merchant_region: RegionCode,
    pub redemptions: u32,
    pub distinct_citizens: u32,
    /// Redemptions by citizens with at least [`REPEAT_AT`] redemptions here.
    pub repeat_redemptions: u32,
    pub max_distinct_in_window: u32,
    /// By day, ascending.
    pub days: Vec<DayTally>,
}

impl MerchantTally {
    fn hours_of_day(&self) -> [u64; 24] {
        let mut hours = [0u64; 24];
        for day in &self.days {
            for (sum, count) in hours.iter_mut().zip(day.hours) {
                *sum += u64::from(count);
            }
        }
        hours
    }

    fn sum(&self, field: impl Fn(&DayTally) -> u64) -> u64 {
        self.days.iter().map(field).sum()
    }

    /// The counts of the hours (day × hour) with a redemption, ascending.
    fn active_hour_counts(&self) -> Vec<u32> {
        let mut counts: Vec<u32> =
            self.days.iter().flat_map(|d| d.hours.into_iter().filter(|&c| c > 0)).collect();
        counts.sort_unstable();
        counts
    }
}

/// A fact came out of the (merchant, time) order the aggregator needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redemption facts out of order: {0}")]
pub struct OutOfOrder(pub String);

/// The merchant being tallied.
struct Open {
    tally: MerchantTally,
    days: BTreeMap<i64, DayTally>,
    citizens: HashMap<CitizenId, u32>,
    window: VecDeque<(i64, CitizenId)>,
    in_window: HashMap<CitizenId, u32>,
    last_at: Timestamp,
}

impl Open {
    fn new(fact: &RedemptionFact) -> Open {
        Open {
            tally: MerchantTally {
                merchant_id: fact.merchant_id,
                category: fact.category,
                merchant_region: fact.merchant_region,
                redemptions: 0,
                distinct_citizens: 0,
                repeat_redemptions: 0,
                max_distinct_in_window: 0,
                days: Vec::new(),
            },
            days: BTreeMap::new(),
            citizens: HashMap::new(),
            window: VecDeque::new(),
            in_window: HashMap::new(),
            last_at: fact.redeemed_at,
        }
    }

    fn add(&mut self, fact: &RedemptionFact) {
        let at_us = fact.redeemed_at.unix_us();
        // The burst window: citizens redeemed in (at - window, at].
        while let Some(&(front_us, citizen)) = self.window.front() {
            if front_us > at_us - BURST_WINDOW_US {
                break;
            }
            self.window.pop_front();
            if let Some(count) = self.in_window.get_mut(&citizen) {
                *count -= 1;
                if *count == 0 {
                    self.in_window.remove(&citizen);
                }
            }
        }
        self.window.push_back((at_us, fact.citizen_id));
        *self.in_window.entry(fact.citizen_id).or_insert(0) += 1;
        let distinct = u32::try_from(self.in_window.len()).unwrap_or(u32::MAX);

        let day_number = cst_day_number(fact.redeemed_at);
        let day = self
            .days
            .entry(day_number)
            .or_insert_with(|| DayTally { day: day_number, ..DayTally::default() });
        day.redemptions += 1;
        day.hours[cst_hour(fact.redeemed_at)] += 1;
        if let Some(threshold) = fact.threshold_fen.filter(|&t| t > 0) {
            day.with_threshold += 1;
            if fact.order_amount_fen == threshold {
                day.at_threshold += 1;
            }
        }
        if fact.reversed_at.is_some_and(|r| r.unix_us() - at_us <= REVERSAL_WINDOW_US) {
            day.reversed += 1;
        }
        if at_us - fact.claimed_at.unix_us() <= FAST_REDEMPTION_US {
            let weight = distance_weight(fact.citizen_home, fact.merchant_region);
            if weight > 0 {
                day.far_and_fast += 1;
                day.far_and_fast_permille += weight;
            }
        }
        day.max_distinct_in_window = day.max_distinct_in_window.max(distinct);
        self.tally.max_distinct_in_window = self.tally.max_distinct_in_window.max(distinct);
        self.tally.redemptions += 1;
        *self.citizens.entry(fact.citizen_id).or_insert(0) += 1;
        self.last_at = fact.redeemed_at;
    }

    fn close(self) -> MerchantTally {
        let mut tally = self.tally;
        tally.distinct_citizens = u32::try_from(self.citizens.len()).unwrap_or(u32::MAX);
        tally.repeat_redemptions = self.citizens.values().filter(|&&c| c >= REPEAT_AT).sum();
        tally.days = self.days.into_values().collect();
        tally
    }
}

/// The CST hour of the day (0..24) of an instant.
pub fn cst_hour(at: Timestamp) -> usize {
    let cst_s = at.unix_us().div_euclid(1_000_000) + 8 * 3_600;
    usize::try_from(cst_s.rem_euclid(86_400) / 3_600).unwrap_or(0)
}

/// Folds facts, ordered by merchant then redemption time, into one tally per merchant; holds one
/// merchant's citizens and burst window at a time.
#[derive(Default)]
pub struct Aggregator {
    open: Option<Open>,
    closed: Vec<MerchantTally>,
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator::default()
    }

    pub fn push(&mut self, fact: &RedemptionFact) -> Result<(), OutOfOrder> {
        match &mut self.open {
            Some(open) if open.tally.merchant_id == fact.merchant_id => {
                if fact.redeemed_at < open.last_at {
                    return Err(OutOfOrder(format!("merchant {} goes back in time", fact.merchant_id)));
                }
                open.add(fact);
            }
            Some(open) if open.tally.merchant_id > fact.merchant_id => {
                return Err(OutOfOrder(format!(
                    "merchant {} after {}",
                    fact.merchant_id, open.tally.merchant_id
                )));
            }
            _ => {
                if let Some(done) = self.open.take() {
                    self.closed.push(done.close());
                }
                let mut open = Open::new(fact);
                open.add(fact);
                self.open = Some(open);
            }
        }
        Ok(())
    }

    /// Merchants tallied so far (the one being read included).
    pub fn merchants(&self) -> usize {
        self.closed.len() + usize::from(self.open.is_some())
    }

    pub fn finish(mut self) -> Vec<MerchantTally> {
        if let Some(done) = self.open.take() {
            self.closed.push(done.close());
        }
        self.closed
    }
}

/// A signal's contribution to a merchant's score, with the figures that explain it (named,
/// integers; shares in per-mille).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    pub signal: Signal,
    pub points: u16,
    pub figures: BTreeMap<&'static str, i64>,
}

/// One day of a merchant's figures, as finance reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayFigures {
    pub day: i64,
    pub redemptions: u32,
    pub at_threshold: u32,
    pub outside_usual_hours: u32,
    pub reversed: u32,
    pub far_and_fast: u32,
    pub max_distinct_in_window: u32,
}

/// A merchant's score (0..=100) and its reasons, largest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub merchant_id: MerchantId,
    pub category: Category,
    pub merchant_region: RegionCode,
    pub redemptions: u32,
    pub score: u16,
    pub reasons: Vec<Reason>,
    pub days: Vec<DayFigures>,
}

/// Sums over a group of merchants (a category, or the season), from which one merchant is
/// left out to give its baseline.
#[derive(Clone, Debug, Default)]
struct GroupSums {
    merchants: u32,
    redemptions: u64,
    with_threshold: u64,
    at_threshold: u64,
    hours: [u64; 24],
    /// Each merchant's mean redemptions per active hour, ‰ (merchants with full confidence).
    rates: Vec<(MerchantId, u64)>,
}

impl GroupSums {
    fn add(&mut self, tally: &MerchantTally) {
        self.merchants += 1;
        self.redemptions += u64::from(tally.redemptions);
        self.with_threshold += tally.sum(|d| u64::from(d.with_threshold));
        self.at_threshold += tally.sum(|d| u64::from(d.at_threshold));
        for (sum, count) in self.hours.iter_mut().zip(tally.hours_of_day()) {
            *sum += count;
        }
        if tally.redemptions >= FULL_CONFIDENCE_REDEMPTIONS {
            self.rates.push((tally.merchant_id, mean_rate_permille(tally)));
        }
    }

    /// The group without `tally`, if what is left is large enough to be a baseline.
    fn without(&self, tally: &MerchantTally) -> Option<GroupSums> {
        let mut rest = self.clone();
        rest.merchants -= 1;
        rest.redemptions -= u64::from(tally.redemptions);
        rest.with_threshold -= tally.sum(|d| u64::from(d.with_threshold));
        rest.at_threshold -= tally.sum(|d| u64::from(d.at_threshold));
        for (sum, count) in rest.hours.iter_mut().zip(tally.hours_of_day()) {
            *sum -= count;
        }
        rest.rates.retain(|(id, _)| *id != tally.merchant_id);
        (rest.merchants >= BASELINE_MIN_MERCHANTS && rest.redemptions >= BASELINE_MIN_REDEMPTIONS)
            .then_some(rest)
    }
}

fn mean_rate_permille(tally: &MerchantTally) -> u64 {
    let active = tally.active_hour_counts().len().max(1) as u64;
    u64::from(tally.redemptions) * 1000 / active
}

fn permille(part: u64, whole: u64) -> i64 {
    (part * 1000).checked_div(whole).map_or(0, |share| i64::try_from(share).unwrap_or(i64::MAX))
}

/// `excess` over `full` in per-mille, clamped to 0..=1000.
fn strength(excess: i64, full: i64) -> i64 {
    if excess <= 0 || full <= 0 { 0 } else { (excess.saturating_mul(1000) / full).min(1000) }
}

/// Scores every tallied merchant against its category (or the season, or the fixed defaults)
/// and returns them by score, highest first, then by merchant id.
pub fn assess(tallies: &[MerchantTally]) -> Vec<Assessment> {
    let mut categories: BTreeMap<Category, GroupSums> = BTreeMap::new();
    let mut season = GroupSums::default();
    for tally in tallies {
        categories.entry(tally.category).or_default().add(tally);
        season.add(tally);
    }
    let mut assessed: Vec<Assessment> = tallies
        .iter()
        .map(|tally| {
            let category = categories.get(&tally.category).and_then(|c| c.without(tally));
            let rest = season.without(tally);
            assess_one(tally, category.as_ref(), rest.as_ref())
        })
        .collect();
    assessed.sort_by(|a, b| b.score.cmp(&a.score).then(a.merchant_id.cmp(&b.merchant_id)));
    assessed
}

/// The usual hours of the day (CST) for a merchant: business hours, and the hours its
/// category's other merchants trade in.
fn usual_hours(category: Option<&GroupSums>) -> [bool; 24] {
    let mut usual = [false; 24];
    for hour in BUSINESS_HOURS {
        usual[usize::from(hour)] = true;
    }
    if let Some(group) = category {
        let total: u64 = group.hours.iter().sum();
        for (slot, count) in usual.iter_mut().zip(group.hours) {
            if total > 0 && count * 1000 / total >= USUAL_HOUR_PERMILLE {
                *slot = true;
            }
        }
    }
    usual
}

fn assess_one(tally: &MerchantTally, category: Option<&GroupSums>, season: Option<&GroupSums>) -> Assessment {
    let n = u64::from(tally.redemptions);
    let confidence = i64::from(tally.redemptions.min(FULL_CONFIDENCE_REDEMPTIONS)) * 1000
        / i64::from(FULL_CONFIDENCE_REDEMPTIONS);
    let mut reasons = Vec::new();
    let mut add = |signal: Signal, strength_permille: i64, figures: Vec<(&'static str, i64)>| {
        let points = i64::from(signal.weight()) * strength_permille * confidence / 1_000_000;
        if points > 0 {
            reasons.push(Reason {
                signal,
                points: u16::try_from(points).unwrap_or(u16::MAX),
                figures: figures.into_iter().collect(),
            });
        }
    };

    // 1. Orders at exactly the threshold, against the category (else the season, else 15%).
    let with_threshold = tally.sum(|d| u64::from(d.with_threshold));
    let at_threshold = tally.sum(|d| u64::from(d.at_threshold));
    if with_threshold > 0 {
        let share = permille(at_threshold, with_threshold);
        // Where the baseline comes from: 1 the category, 2 the season's other merchants, 0 the
        // fixed default.
        let (baseline, baseline_from) = match (category, season) {
            (Some(g), _) if g.with_threshold > 0 => (permille(g.at_threshold, g.with_threshold), 1),
            (_, Some(g)) if g.with_threshold > 0 => (permille(g.at_threshold, g.with_threshold), 2),
            _ => (i64::from(DEFAULT_AT_THRESHOLD_PERMILLE), 0),
        };
        add(
            Signal::AtThreshold,
            strength(share - baseline - 100, 400),
            vec![
                ("at_threshold", at_threshold as i64),
                ("with_threshold", with_threshold as i64),
                ("share_permille", share),
                ("baseline_permille", baseline),
                ("baseline_from", baseline_from),
            ],
        );
    }

    // 2. Redemptions per hour: the busiest hour against the merchant's median active hour, and
    // its mean per active hour against the category's median merchant.
    let counts = tally.active_hour_counts();
    if let (Some(&peak), Some(&median)) = (counts.last(), counts.get(counts.len().saturating_sub(1) / 2)) {
        let own_ratio = i64::from(peak) * 1000 / i64::from(median.max(1));
        let own = if peak >= 10 { strength(own_ratio - 4000, 6000) } else { 0 };
        let mean = mean_rate_permille(tally) as i64;
        let category_median = category.and_then(|g| {
            let mut rates: Vec<u64> = g.rates.iter().map(|(_, r)| *r).collect();
            rates.sort_unstable();
            (rates.len() >= BASELINE_MIN_MERCHANTS as usize).then(|| rates[(rates.len() - 1) / 2] as i64)
        });
        let against_category = category_median.map_or(0, |m| strength(mean * 1000 / m.max(1) - 4000, 6000));
        add(
            Signal::HourlyRate,
            own.max(against_category),
            vec![
                ("peak_hour", i64::from(peak)),
                ("median_hour", i64::from(median)),
                ("mean_per_hour_permille", mean),
                ("category_median_per_hour_permille", category_median.unwrap_or(-1)),
            ],
        );
    }

    // 3. The same citizens again and again.
    let repeat_share = permille(u64::from(tally.repeat_redemptions), n);
    add(
        Signal::RepeatCitizens,
        strength(repeat_share - 200, 500),
        vec![
            ("repeat_redemptions", i64::from(tally.repeat_redemptions)),
            ("redemptions", n as i64),
            ("distinct_citizens", i64::from(tally.distinct_citizens)),
            ("share_permille", repeat_share),
        ],
    );

    // 4. Many distinct citizens within minutes, against twice the usual ten minutes.
    let median_hour = counts.get(counts.len().saturating_sub(1) / 2).copied().unwrap_or(0);
    let expected = i64::from((median_hour / 3).max(6));
    let burst = i64::from(tally.max_distinct_in_window);
    add(
        Signal::DistinctBurst,
        strength(burst - expected, 15),
        vec![
            ("max_distinct_citizens", burst),
            ("window_minutes", BURST_WINDOW_US / US_PER_MINUTE),
            ("expected", expected),
        ],
    );

    // 5. Redemptions followed by reversals.
    let reversed = tally.sum(|d| u64::from(d.reversed));
    let reversed_share = permille(reversed, n);
    add(
        Signal::Reversals,
        strength(reversed_share - 100, 300),
        vec![("reversed", reversed as i64), ("redemptions", n as i64), ("share_permille", reversed_share)],
    );

    // 6. Redemptions outside usual hours.
    let usual = usual_hours(category);
    let hours = tally.hours_of_day();
    let odd: u64 = hours.iter().zip(usual).filter(|(_, usual)| !usual).map(|(count, _)| count).sum();
    let odd_share = permille(odd, n);
    add(
        Signal::OddHours,
        strength(odd_share - 50, 300),
        vec![("outside_usual_hours", odd as i64), ("redemptions", n as i64), ("share_permille", odd_share)],
    );

    // 7. Claimed and redeemed within minutes, far from home.
    let far = tally.sum(|d| u64::from(d.far_and_fast));
    let far_weighted = tally.sum(|d| d.far_and_fast_permille);
    let far_share = far_weighted.checked_div(n).map_or(0, |share| i64::try_from(share).unwrap_or(i64::MAX));
    add(
        Signal::FarAndFast,
        strength(far_share - 50, 350),
        vec![
            ("far_and_fast", far as i64),
            ("redemptions", n as i64),
            ("minutes", FAST_REDEMPTION_US / US_PER_MINUTE),
            ("share_permille", far_share),
        ],
    );

    reasons.sort_by(|a, b| b.points.cmp(&a.points).then(a.signal.cmp(&b.signal)));
    let total: u32 = reasons.iter().map(|r| u32::from(r.points)).sum();
    let days = tally
        .days
        .iter()
        .map(|d| DayFigures {
            day: d.day,
            redemptions: d.redemptions,
            at_threshold: d.at_threshold,
            outside_usual_hours: d.hours.iter().zip(usual).filter(|(_, usual)| !usual).map(|(c, _)| c).sum(),
            reversed: d.reversed,
            far_and_fast: d.far_and_fast,
            max_distinct_in_window: d.max_distinct_in_window,
        })
        .collect();
    Assessment {
        merchant_id: tally.merchant_id,
        category: tally.category,
        merchant_region: tally.merchant_region,
        redemptions: tally.redemptions,
        score: u16::try_from(total.min(100)).unwrap_or(100),
        reasons,
        days,
    }
}

/// Scores facts given in any order: sorted by merchant and time, then aggregated and assessed
/// (what the streaming read does with an ordered scan).
pub fn score_facts(mut facts: Vec<RedemptionFact>) -> Vec<Assessment> {
    facts.sort_by_key(|a| (a.merchant_id, a.redeemed_at));
    let mut aggregator = Aggregator::new();
    for fact in &facts {
        // Sorted just above: never out of order.
        if aggregator.push(fact).is_err() {
            return Vec::new();
        }
    }
    assess(&aggregator.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY_US: i64 = 86_400 * 1_000_000;
    const HOUR_US: i64 = 3_600 * 1_000_000;
    // 2026-03-01T00:00:00+08:00.
    const DAY0_US: i64 = 1_772_294_400_000_000;

    fn id<K>(n: u128) -> crate::domain::ids::Id<K> {
        uuid::Uuid::from_u128(n).into()
    }

    fn region(code: &str) -> RegionCode {
        code.parse().expect("region")
    }

    fn fact(
        merchant: u128,
        category: Category,
        citizen: u128,
        at_us: i64,
        amount_fen: i64,
    ) -> RedemptionFact {
        RedemptionFact {
            merchant_id: id(merchant),
            category,
            merchant_region: region("370202"),
            threshold_fen: Some(10_000),
            order_amount_fen: amount_fen,
            redeemed_at: Timestamp::from_unix_us(at_us),
            citizen_id: id(citizen),
            claimed_at: Timestamp::from_unix_us(at_us - 2 * DAY_US),
            citizen_home: Some(region("370200")),
            reversed_at: None,
        }
    }

    /// An honest bookstore, a KTV cashing out at the threshold at night, and a phone farm.
    fn season() -> Vec<RedemptionFact> {
        let mut facts = Vec::new();
        for i in 0..40i64 {
            let at = DAY0_US + (i % 5) * DAY_US + (10 + i % 9) * HOUR_US + i * 60_000_000;
            facts.push(fact(1, Category::Bookstore, 1_000 + i as u128, at, 10_000 + 137 * i));
        }
        for i in 0..30i64 {
            let hour = if i % 3 == 0 { 15 } else { 1 + i % 4 };
            let at = DAY0_US + (i % 6) * DAY_US + hour * HOUR_US + i * 60_000_000;
            let amount = if i % 10 == 9 { 12_300 } else { 10_000 };
            facts.push(fact(2, Category::Ktv, 2_000 + i as u128, at, amount));
        }
        for i in 0..30i64 {
            let at = DAY0_US + 2 * DAY_US + 14 * HOUR_US + i * 15_000_000;
            let mut farmed = fact(3, Category::InternetCafe, 3_000 + i as u128, at, 10_500 + i);
            farmed.claimed_at = Timestamp::from_unix_us(at - 3 * 60_000_000);
            farmed.citizen_home = Some(region("440100"));
            facts.push(farmed);
        }
        facts
    }

    fn signals(assessment: &Assessment) -> Vec<Signal> {
        assessment.reasons.iter().map(|r| r.signal).collect()
    }

    #[test]
    fn the_frauds_score_high_and_the_bookstore_low() {
        let scores = score_facts(season());
        let by = |m: u128| scores.iter().find(|s| s.merchant_id == id(m)).expect("scored").clone();
        let (bookstore, ktv, farm) = (by(1), by(2), by(3));
        assert!(bookstore.score < 20, "{bookstore:?}");
        assert!(ktv.score > 60, "{ktv:?}");
        assert!(signals(&ktv).starts_with(&[Signal::AtThreshold, Signal::OddHours]), "{ktv:?}");
        assert!(farm.score > 60, "{farm:?}");
        assert!(signals(&farm).contains(&Signal::DistinctBurst), "{farm:?}");
        assert!(signals(&farm).contains(&Signal::FarAndFast), "{farm:?}");
        assert_eq!(scores.last().map(|s| s.merchant_id), Some(id(1)), "sorted by score");
        assert_eq!(farm.days.len(), 1);
        assert_eq!(farm.days[0].far_and_fast, 30);
    }

    #[test]
    fn few_redemptions_count_in_proportion() {
        let facts: Vec<RedemptionFact> =
            (0..5).map(|i| fact(9, Category::Ktv, i, DAY0_US + 2 * HOUR_US + i as i64, 10_000)).collect();
        let scores = score_facts(facts);
        // At full strength threshold (45) and odd hours (25) would give 70; 5 of 20 is a quarter.
        assert_eq!(scores[0].score, 11 + 6);
    }

    #[test]
    fn reversals_and_repeats_are_seen() {
        let mut facts = Vec::new();
        for i in 0..24i64 {
            let mut f = fact(
                5,
                Category::Cinema,
                (i % 4) as u128,
                DAY0_US + 12 * HOUR_US + i * HOUR_US / 4,
                5_000 + i,
            );
            if i % 2 == 0 {
                f.reversed_at = Some(f.redeemed_at.plus_seconds(3_600));
            }
            facts.push(f);
        }
        let scores = score_facts(facts);
        let found = signals(&scores[0]);
        assert!(found.contains(&Signal::Reversals) && found.contains(&Signal::RepeatCitizens), "{scores:?}");
    }

    #[test]
    fn the_aggregator_refuses_facts_out_of_order() {
        let mut aggregator = Aggregator::new();
        aggregator.push(&fact(2, Category::Ktv, 1, DAY0_US, 1)).expect("first");
        assert!(aggregator.push(&fact(2, Category::Ktv, 1, DAY0_US - 1, 1)).is_err());
        assert!(aggregator.push(&fact(1, Category::Ktv, 1, DAY0_US, 1)).is_err());
        assert_eq!(cst_hour(Timestamp::from_unix_us(DAY0_US)), 0);
        assert_eq!(cst_hour(Timestamp::from_unix_us(DAY0_US - 1)), 23);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Same data, same scores: any order of the same redemptions scores the same.
        #[test]
        fn the_order_of_the_facts_changes_nothing(seed in any::<u64>(), extra in proptest::collection::vec((0u128..4, 0u128..30, 0i64..(7 * 24), 1_000i64..20_000), 0..60)) {
            let mut facts = season();
            for (merchant, citizen, hour, amount) in extra {
                // A merchant keeps its category (a fact carries its merchant's).
                let category = [Category::Bookstore, Category::Ktv, Category::InternetCafe, Category::Cinema][merchant as usize];
                facts.push(fact(merchant + 1, category, citizen, DAY0_US + hour * HOUR_US, amount));
            }
            let expected = score_facts(facts.clone());
            // A deterministic shuffle by the seed (Fisher-Yates with an LCG).
            let mut state = seed;
            for i in (1..facts.len()).rev() {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap_or(0);
                facts.swap(i, j);
            }
            prop_assert_eq!(score_facts(facts), expected);
        }
    }
}
