//! Seasons, voucher batches (券种) and vouchers, and the pure rules of a claim.

use std::fmt;
use std::str::FromStr;

use super::funding::{FundingShares, VoucherTerms};
use super::money::Fen;
use super::region::RegionCode;
use super::time::Timestamp;
use crate::domain::ids::{BatchId, CitizenId, SeasonId, VoucherId};

/// Most tranches one batch may have (a daily release over a year).
pub const MAX_RELEASES: usize = 400;
pub const MAX_STOCK: i64 = 10_000_000;
/// Most batches one season may have: its public list of open batches is one unpaged answer
/// (a province's season has 16 cities' rounds of a few batches each: a few hundred).
pub const MAX_BATCHES_PER_SEASON: usize = 1_000;
pub const MAX_VALID_HOURS: u32 = 24 * 366;
/// The earliest a season may start: 2000-01-01T00:00:00Z.
pub const SEASON_EARLIEST: Timestamp = Timestamp::from_unix_us(946_684_800 * 1_000_000);
/// The latest a season (or anything dated by one, such as its points' expiry) may end:
/// 2101-01-01T00:00:00Z, the end of the year 2100.
pub const SEASON_LATEST: Timestamp = Timestamp::from_unix_us(4_133_980_800 * 1_000_000);
/// The longest a season may last: five years (of 366 days).
pub const MAX_SEASON_DAYS: i64 = 5 * 366;

/// A season's dates, checked: it ends after it starts, lasts at most [`MAX_SEASON_DAYS`], and
/// lies between [`SEASON_EARLIEST`] and [`SEASON_LATEST`]. The message says what is wrong.
pub fn check_season_dates(starts_at: Timestamp, ends_at: Timestamp) -> Result<(), &'static str> {
    if ends_at <= starts_at {
        return Err("ends_at must be after starts_at");
    }
    if starts_at < SEASON_EARLIEST || ends_at > SEASON_LATEST {
        return Err("a season lies between 2000-01-01 and the end of 2100 (UTC)");
    }
    if ends_at.unix_us() - starts_at.unix_us() > MAX_SEASON_DAYS * 86_400 * 1_000_000 {
        return Err("a season lasts at most five years");
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Season {
    pub id: SeasonId,
    pub name: String,
    pub province: RegionCode,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub per_citizen_cap: Option<Fen>,
    /// At most this much face value claimed per person per calendar month (CST), live
    /// vouchers only (Wuhan: 100 yuan a month); `None`, no monthly cap.
    pub per_citizen_monthly_cap: Option<Fen>,
    /// Whether a provincial and a city voucher may be used on one order (off by default).
    pub allow_stacking: bool,
    /// What a refunded sale (a reversal) does to its voucher. Off (Shandong: vouchers may be
    /// returned within their validity): the voucher is active again, or expired if its time or
    /// the season is over. On (Guangzhou: a refund forfeits the voucher): it is forfeited; its
    /// subsidy goes back to the funders' pools, and it keeps its holder's claim slot and caps,
    /// so "redeem, then refund, then claim again" gains nothing.
    pub refund_forfeits_voucher: bool,
    /// At most this many of a citizen's vouchers redeemed (and not reversed) at one merchant in
    /// the season (Shandong 2020: 5); `None`, no limit.
    pub merchant_redemption_limit: Option<u32>,
    /// The most of an order the season's vouchers may pay, per merchant category.
    pub subsidy_ceilings: SubsidyCeilings,
    /// The cash-out score (0 to 100) at or above which a merchant's settlement is held
    /// (docs/settlement-holds.md); `None`, no automatic holds.
    pub hold_score_threshold: Option<u8>,
    pub closed_at: Option<Timestamp>,
}

/// The most of an order a season's vouchers may pay at a merchant of a category, in percent of
/// the order (Shandong 2020: 50% for performances, 20% for other items). A category not listed
/// has no ceiling. Set when the season is created; never changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubsidyCeilings(std::collections::BTreeMap<Category, u32>);

impl SubsidyCeilings {
    /// Each percent is 1 to 100.
    pub fn new(ceilings: impl IntoIterator<Item = (Category, u32)>) -> Result<SubsidyCeilings, String> {
        let mut map = std::collections::BTreeMap::new();
        for (category, percent) in ceilings {
            if !(1..=100).contains(&percent) {
                return Err(format!("the subsidy ceiling of {category} is 1 to 100 percent; got {percent}"));
            }
            map.insert(category, percent);
        }
        Ok(SubsidyCeilings(map))
    }

    pub fn percent_for(&self, category: Category) -> Option<u32> {
        self.0.get(&category).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Category, u32)> + '_ {
        self.0.iter().map(|(c, p)| (*c, *p))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeasonStatus {
    Scheduled,
    Open,
    Ended,
    Closed,
}

/// The period of a citizen's total a cap applies to: the whole season, or a calendar month.
pub const SEASON_PERIOD: i32 = 0;

impl Season {
    /// The totals a voucher claimed at `claimed_at` counts toward, each with its cap:
    /// `(SEASON_PERIOD, season cap)` and `(YYYYMM of the claim in CST, monthly cap)`, for the
    /// caps the season sets. A claim adds its face value to each; an expiry takes it back.
    pub fn capped_periods(&self, claimed_at: Timestamp) -> Vec<(i32, Fen)> {
        let mut periods = Vec::with_capacity(2);
        if let Some(cap) = self.per_citizen_cap {
            periods.push((SEASON_PERIOD, cap));
        }
        if let Some(cap) = self.per_citizen_monthly_cap {
            periods.push((super::finance::cst_month(claimed_at), cap));
        }
        periods
    }

    pub fn status_at(&self, now: Timestamp) -> SeasonStatus {
        if self.closed_at.is_some() {
            SeasonStatus::Closed
        } else if now < self.starts_at {
            SeasonStatus::Scheduled
        } else if now < self.ends_at {
            SeasonStatus::Open
        } else {
            SeasonStatus::Ended
        }
    }

    /// A funder of this season is the province itself or one of its cities.
    pub fn accepts_funder(&self, funder: RegionCode) -> bool {
        use super::region::RegionLevel;
        matches!(funder.level(), RegionLevel::Province | RegionLevel::City) && self.province.contains(funder)
    }
}

/// Merchant categories a batch can be redeemed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Bookstore,
    Ktv,
    InternetCafe,
    Cinema,
    Theatre,
    Museum,
    Performance,
    Sports,
    ScenicSpot,
}

impl Category {
    pub const ALL: [Category; 9] = [
        Category::Bookstore,
        Category::Ktv,
        Category::InternetCafe,
        Category::Cinema,
        Category::Theatre,
        Category::Museum,
        Category::Performance,
        Category::Sports,
        Category::ScenicSpot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Bookstore => "bookstore",
            Category::Ktv => "ktv",
            Category::InternetCafe => "internet_cafe",
            Category::Cinema => "cinema",
            Category::Theatre => "theatre",
            Category::Museum => "museum",
            Category::Performance => "performance",
            Category::Sports => "sports",
            Category::ScenicSpot => "scenic_spot",
        }
    }
}

impl FromStr for Category {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Category::ALL.into_iter().find(|c| c.as_str() == text).ok_or_else(|| {
            let known: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
            format!("unknown category {text:?}; known: {}", known.join(", "))
        })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A timed tranche: `quantity` more vouchers become claimable at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Release {
    pub at: Timestamp,
    pub quantity: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub season_id: SeasonId,
    pub name: String,
    pub issuer: RegionCode,
    pub terms: VoucherTerms,
    pub stock: i64,
    pub per_citizen_limit: u32,
    pub valid_hours: u32,
    pub claim_opens_at: Timestamp,
    pub claim_closes_at: Timestamp,
    pub categories: Vec<Category>,
    pub funding: FundingShares,
    /// Empty: the whole stock is released when the claim window opens.
    pub releases: Vec<Release>,
    pub claimed_count: i64,
    pub returned_count: i64,
    pub reserve_returned: bool,
    /// Points a card holder pays to get a voucher of this batch instead of claiming it (None: the
    /// batch cannot be exchanged for points).
    pub points_price: Option<i64>,
    /// Given out by lottery instead of a rush (None: first come, first served).
    pub lottery: Option<Lottery>,
}

/// A batch given out by lottery (摇号; Beijing 2021: 200,000 x 200 yuan): citizens enter during
/// the claim window, one entry each, and after it the issuer draws with a seed whose SHA-256 it
/// published when it created the batch, so that nobody, the issuer included, can choose the
/// winners. Each entrant is known to the public by a keyed hash, HMAC-SHA256(salt, citizen id),
/// under a per-batch salt drawn at creation and revealed with the seed; each entry ranks by
/// SHA-256(seed || that hash), lowest first (algorithm 2, docs/lottery-audit.md), so that anyone
/// with the draw's audit document can check the draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lottery {
    pub seed_sha256: [u8; 32],
    /// The salt of the entrants' keyed hashes: secret until the draw.
    pub salt: LotterySalt,
    /// When the seed's and the salt's SHA-256 were first published: the batch's creation, or
    /// for a batch made before the salt existed, the migration that gave it one.
    pub committed_at: Timestamp,
    /// How the batch is drawn: [`DRAW_ALGORITHM`], or 1 for a batch drawn before the audit
    /// existed (ranked by SHA-256(seed || citizen id), which cannot be published).
    pub algorithm: u8,
    /// When the issuer drew (the seed is revealed then); None before.
    pub drawn_at: Option<Timestamp>,
}

/// The draw algorithm of every batch drawn now (docs/lottery-audit.md).
pub const DRAW_ALGORITHM: u8 = 2;

/// A lottery batch's 32-byte salt. Secret until the draw: its `Debug` shows only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct LotterySalt(pub [u8; 32]);

impl fmt::Debug for LotterySalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LotterySalt(sha256 {})", hex(&self.sha256()))
    }
}

impl LotterySalt {
    /// The salt's SHA-256: its commitment, public from the batch's creation.
    pub fn sha256(&self) -> [u8; 32] {
        sha256(&self.0)
    }
}

/// The longest seed a draw accepts, in bytes.
pub const MAX_SEED_LEN: usize = 256;

/// Bytes as lowercase hexadecimal digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    digest
}

impl Lottery {
    /// A commitment (or any 32 bytes) written as 64 hexadecimal digits (either case).
    pub fn parse_commitment(hex: &str) -> Option<[u8; 32]> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(bytes)
    }

    /// The commitment as 64 lowercase hexadecimal digits.
    pub fn commitment_hex(&self) -> String {
        hex(&self.seed_sha256)
    }

    /// Whether `seed` is the one committed to.
    pub fn seed_matches(&self, seed: &str) -> bool {
        sha256(seed.as_bytes()) == self.seed_sha256
    }

    /// An entrant's public form: HMAC-SHA256 keyed with the salt's 32 bytes over the citizen id
    /// written as 36 lowercase characters (`0190a1b2-...`).
    pub fn entrant_hash(salt: &LotterySalt, citizen: CitizenId) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt.0);
        let tag = ring::hmac::sign(&key, citizen.as_uuid().hyphenated().to_string().as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(tag.as_ref());
        hash
    }

    /// An entry's place in the draw: SHA-256 of the seed's bytes then its entrant hash's 32 bytes.
    pub fn rank(seed: &str, entrant: &[u8; 32]) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(seed.as_bytes());
        context.update(entrant);
        let mut rank = [0u8; 32];
        rank.copy_from_slice(context.finish().as_ref());
        rank
    }
}

/// A draw fed its entries a page at a time: memory for the `keep` best ranks however many
/// entries there are. Owns its seed and salt, so that pages can be ranked off the request workers.
pub struct Draw {
    seed: String,
    salt: LotterySalt,
    keep: usize,
    best: std::collections::BinaryHeap<([u8; 32], CitizenId)>,
    entries: u64,
}

impl Draw {
    pub fn new(seed: &str, salt: LotterySalt, keep: usize) -> Draw {
        Draw { seed: seed.to_owned(), salt, keep, best: std::collections::BinaryHeap::new(), entries: 0 }
    }

    pub fn add(&mut self, citizen: CitizenId) {
        self.entries += 1;
        let ranked = (Lottery::rank(&self.seed, &Lottery::entrant_hash(&self.salt, citizen)), citizen);
        if self.best.len() < self.keep {
            self.best.push(ranked);
        } else if let Some(mut worst) = self.best.peek_mut()
            && ranked < *worst
        {
            *worst = ranked;
        }
    }

    /// How many entries were added.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The best `keep`, lowest rank first.
    pub fn finish(self) -> Vec<CitizenId> {
        self.best.into_sorted_vec().into_iter().map(|(_, citizen)| citizen).collect()
    }
}

/// Why a claim is refused, in the order the checks run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// The season was closed by finance: nothing more can be claimed in it.
    SeasonClosed,
    NotOpen(String),
    SoldOut(String),
    LimitReached(String),
}

impl Batch {
    /// Vouchers released by `now` (never more than the stock). Unreleased quota rolls over:
    /// releases are cumulative.
    pub fn released_at(&self, now: Timestamp) -> i64 {
        if now < self.claim_opens_at {
            return 0;
        }
        if self.releases.is_empty() {
            return self.stock;
        }
        let released: i64 = self.releases.iter().filter(|r| r.at <= now).map(|r| r.quantity).sum();
        released.min(self.stock)
    }

    /// Vouchers claimed and neither expired nor otherwise returned.
    pub fn outstanding(&self) -> i64 {
        self.claimed_count - self.returned_count
    }

    pub fn remaining_at(&self, now: Timestamp) -> i64 {
        (self.released_at(now) - self.outstanding()).max(0)
    }

    pub fn next_release_after(&self, now: Timestamp) -> Option<Timestamp> {
        if now < self.claim_opens_at && self.releases.is_empty() {
            return Some(self.claim_opens_at);
        }
        self.releases.iter().map(|r| r.at.max(self.claim_opens_at)).filter(|at| *at > now).min()
    }

    /// The most one voucher of this batch can be worth: what a claim reserves.
    pub fn voucher_value(&self) -> Fen {
        self.terms.max_value()
    }

    /// When a voucher claimed at `claimed_at` expires: `valid_hours` later, never past the season.
    pub fn expiry_for(&self, claimed_at: Timestamp, season: &Season) -> Timestamp {
        claimed_at.plus_seconds(i64::from(self.valid_hours) * 3600).min(season.ends_at)
    }

    /// Whether the batch can be claimed from at all at `now` (window, season, release).
    pub fn check_open(&self, season: &Season, now: Timestamp) -> Result<(), ClaimRefusal> {
        if season.closed_at.is_some() {
            return Err(ClaimRefusal::SeasonClosed);
        }
        if season.status_at(now) != SeasonStatus::Open {
            return Err(ClaimRefusal::NotOpen("the season is not open".into()));
        }
        if now < self.claim_opens_at {
            return Err(ClaimRefusal::NotOpen(format!("claims open at {}", self.claim_opens_at)));
        }
        if now >= self.claim_closes_at {
            return Err(ClaimRefusal::NotOpen(format!("claims closed at {}", self.claim_closes_at)));
        }
        if self.released_at(now) == 0 {
            let next = self.next_release_after(now).map(|t| t.to_string()).unwrap_or_default();
            return Err(ClaimRefusal::NotOpen(format!("nothing released yet; next release at {next}")));
        }
        if self.remaining_at(now) == 0 {
            let message = match self.next_release_after(now) {
                Some(next) if self.released_at(now) < self.stock => {
                    format!("sold out; the next release is at {next}")
                }
                _ => "sold out".to_owned(),
            };
            return Err(ClaimRefusal::SoldOut(message));
        }
        Ok(())
    }
}

/// What one citizen already holds, for the limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CitizenHoldings {
    /// Slots (1..=per_citizen_limit) of this citizen's live vouchers in the batch.
    pub slots: Vec<u32>,
    /// Value of this citizen's live (active or redeemed) vouchers across the season.
    pub season_total_fen: i64,
    /// Value of this citizen's live vouchers claimed in the current calendar month (CST).
    pub month_total_fen: i64,
}

impl CitizenHoldings {
    /// Checks the per-batch limit, the season cap and the monthly cap; returns the slot the new
    /// voucher takes.
    /// Live vouchers count; expired ones do not (their value went back to the pool).
    pub fn admit(&self, batch: &Batch, season: &Season) -> Result<u32, ClaimRefusal> {
        let slot = (1..=batch.per_citizen_limit).find(|s| !self.slots.contains(s)).ok_or_else(|| {
            ClaimRefusal::LimitReached(format!(
                "at most {} per person from this batch",
                batch.per_citizen_limit
            ))
        })?;
        if let Some(cap) = season.per_citizen_cap
            && self.season_total_fen + batch.voucher_value().as_fen() > cap.as_fen()
        {
            return Err(ClaimRefusal::LimitReached(format!(
                "the season allows at most {cap} yuan per person"
            )));
        }
        if let Some(cap) = season.per_citizen_monthly_cap
            && self.month_total_fen + batch.voucher_value().as_fen() > cap.as_fen()
        {
            return Err(ClaimRefusal::LimitReached(format!(
                "the season allows at most {cap} yuan per person a month"
            )));
        }
        Ok(slot)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoucherStatus {
    Active,
    Redeemed,
    Expired,
    /// Given up by a reversal in a season whose refunds forfeit the voucher: spent for the
    /// holder (slot and caps kept), its value back in the pools.
    Forfeited,
}

impl VoucherStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VoucherStatus::Active => "active",
            VoucherStatus::Redeemed => "redeemed",
            VoucherStatus::Expired => "expired",
            VoucherStatus::Forfeited => "forfeited",
        }
    }

    pub fn parse(text: &str) -> Option<VoucherStatus> {
        [VoucherStatus::Active, VoucherStatus::Redeemed, VoucherStatus::Expired, VoucherStatus::Forfeited]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voucher {
    pub id: VoucherId,
    pub batch_id: BatchId,
    pub season_id: SeasonId,
    pub citizen_id: CitizenId,
    pub slot: u32,
    pub status: VoucherStatus,
    pub value: Fen,
    pub claimed_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Voucher {
    /// The status as a citizen should see it: an active voucher past its expiry is expired,
    /// even if the background sweep has not booked it yet.
    pub fn status_at(&self, now: Timestamp) -> VoucherStatus {
        if self.status == VoucherStatus::Active && now >= self.expires_at {
            VoucherStatus::Expired
        } else {
            self.status
        }
    }
}

/// The slot a redemption takes on its order: one voucher per order ("any"), or, when the season
/// allows stacking, one provincial and one city voucher ("province", "city").
pub fn order_slot(season: &Season, batch: &Batch) -> String {
    if !season.allow_stacking {
        return "any".into();
    }
    match batch.issuer.level() {
        super::region::RegionLevel::Province => "province".into(),
        _ => "city".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn season_dates_are_bounded() {
        let at = |text: &str| Timestamp::parse_rfc3339(text).expect("a time");
        assert!(check_season_dates(at("2026-01-01T00:00:00Z"), at("2026-12-31T00:00:00Z")).is_ok());
        assert!(check_season_dates(at("2000-01-01T00:00:00Z"), at("2004-12-31T00:00:00Z")).is_ok());
        for (starts, ends) in [
            ("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            ("0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
            ("1999-12-31T23:59:59Z", "2000-06-01T00:00:00Z"),
            ("2100-06-01T00:00:00Z", "2101-01-01T00:00:01Z"),
            ("2026-01-01T00:00:00Z", "2031-01-06T00:00:00Z"),
        ] {
            assert!(check_season_dates(at(starts), at(ends)).is_err(), "{starts} to {ends}");
        }
    }

    #[test]
    fn subsidy_ceilings_are_one_to_a_hundred_percent() {
        let ceilings =
            SubsidyCeilings::new([(Category::Performance, 50), (Category::Bookstore, 20)]).expect("ok");
        assert_eq!(ceilings.percent_for(Category::Performance), Some(50));
        assert_eq!(ceilings.percent_for(Category::Cinema), None, "not listed: no ceiling");
        assert!(SubsidyCeilings::new([(Category::Ktv, 0)]).is_err());
        assert!(SubsidyCeilings::new([(Category::Ktv, 101)]).is_err());
        assert_eq!(SubsidyCeilings::default().iter().count(), 0);
    }

    #[test]
    fn a_draw_keeps_the_lowest_ranks_in_order() {
        let seed = "2026-12-01 province lottery";
        let salt = LotterySalt([7u8; 32]);
        let lottery = Lottery {
            seed_sha256: sha256(seed.as_bytes()),
            salt: salt.clone(),
            committed_at: Timestamp::from_unix_us(0),
            algorithm: DRAW_ALGORITHM,
            drawn_at: None,
        };
        assert!(lottery.seed_matches(seed) && !lottery.seed_matches("another seed"));
        assert!(!format!("{lottery:?}").contains(&hex(&salt.0)), "the salt is not in Debug");
        let draw = |seed: &str, entries: &mut dyn Iterator<Item = CitizenId>, keep: usize| {
            let mut draw = Draw::new(seed, salt.clone(), keep);
            entries.for_each(|citizen| draw.add(citizen));
            assert_eq!(draw.entries(), 50);
            draw.finish()
        };
        let entries: Vec<CitizenId> =
            (1..=50u128).map(|n| CitizenId::from_uuid(Uuid::from_u128(n))).collect();
        let mut by_rank = entries.clone();
        by_rank.sort_by_key(|c| Lottery::rank(seed, &Lottery::entrant_hash(&salt, *c)));
        assert_eq!(draw(seed, &mut entries.iter().copied(), 7), by_rank[..7]);
        assert_eq!(
            draw(seed, &mut entries.iter().rev().copied(), 7),
            by_rank[..7],
            "entry order does not matter"
        );
        assert_eq!(draw(seed, &mut entries.iter().copied(), 80), by_rank, "fewer entries than places");
        assert_ne!(draw("another seed", &mut entries.into_iter(), 7), by_rank[..7]);
    }

    #[test]
    fn an_entrant_hash_is_hmac_sha256_of_the_citizen_id_text() {
        // RFC 4231-style check against an independent computation (Python's hmac module):
        // hmac.new(bytes(range(32)), b"00000000-0000-0000-0000-000000000001", "sha256").hexdigest()
        let salt = LotterySalt(core::array::from_fn(|i| i as u8));
        let citizen = CitizenId::from_uuid(Uuid::from_u128(1));
        let expected = "7e3418e44a8796d25414f01f64d6131861374eb9b0f98058ac67439e857a9eef";
        assert_eq!(hex(&Lottery::entrant_hash(&salt, citizen)), expected);
    }

    #[test]
    fn a_voucher_counts_toward_the_season_and_its_claim_month() {
        let fen = |n: i64| Fen::new(n).expect("fen");
        let mut season = bare_season();
        // 2026-11-30T16:30:00Z is 2026-12-01 00:30 in CST: December's.
        let at = Timestamp::parse_rfc3339("2026-11-30T16:30:00Z").expect("time");
        assert!(season.capped_periods(at).is_empty());
        season.per_citizen_cap = Some(fen(50_000));
        season.per_citizen_monthly_cap = Some(fen(10_000));
        assert_eq!(season.capped_periods(at), [(SEASON_PERIOD, fen(50_000)), (202612, fen(10_000))]);
        let before = Timestamp::parse_rfc3339("2026-11-30T15:59:59Z").expect("time");
        assert_eq!(season.capped_periods(before)[1], (202611, fen(10_000)));
    }

    /// A season of province 370000 with no caps, limits or stacking.
    fn bare_season() -> Season {
        Season {
            id: SeasonId::from_uuid(Uuid::nil()),
            name: "s".into(),
            province: "370000".parse().expect("region"),
            starts_at: Timestamp::from_unix_us(0),
            ends_at: Timestamp::from_unix_us(1),
            per_citizen_cap: None,
            per_citizen_monthly_cap: None,
            allow_stacking: false,
            refund_forfeits_voucher: false,
            merchant_redemption_limit: None,
            subsidy_ceilings: SubsidyCeilings::default(),
            hold_score_threshold: None,
            closed_at: None,
        }
    }

    #[test]
    fn an_order_takes_one_slot_or_one_per_level_when_stacking() {
        let province: RegionCode = "370000".parse().expect("region");
        let city: RegionCode = "370200".parse().expect("region");
        let mut season = bare_season();
        let mut batch = Batch {
            id: BatchId::from_uuid(Uuid::nil()),
            season_id: SeasonId::from_uuid(Uuid::nil()),
            name: "b".into(),
            issuer: province,
            terms: crate::domain::funding::VoucherTerms::Threshold {
                face_value: Fen::from_fen_unchecked(1_000),
                min_spend: Fen::from_fen_unchecked(5_000),
            },
            stock: 1,
            per_citizen_limit: 1,
            valid_hours: 1,
            claim_opens_at: Timestamp::from_unix_us(0),
            claim_closes_at: Timestamp::from_unix_us(1),
            categories: Vec::new(),
            funding: crate::domain::funding::FundingShares::single(province),
            releases: Vec::new(),
            claimed_count: 0,
            returned_count: 0,
            reserve_returned: false,
            points_price: None,
            lottery: None,
        };
        assert_eq!(order_slot(&season, &batch), "any");
        season.allow_stacking = true;
        assert_eq!(order_slot(&season, &batch), "province");
        batch.issuer = city;
        assert_eq!(order_slot(&season, &batch), "city");
    }
}
