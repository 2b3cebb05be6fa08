//! A lottery the public can check (docs/lottery-audit.md): after a draw, the audit document
//! (`GET /v1/batches/{id}/draw/audit`) publishes the seed, the salt, their commitments, the
//! entrants and the winners as keyed hashes; [`verify`] recomputes the draw from the document
//! alone (`wenhui lottery verify --file audit.json`).
//!
//! The document is built from what happened, not from the algorithm: the winners are the
//! citizens holding a voucher of the batch, the skipped are those ranked ahead of the last
//! winner (or, when the stock was not all given, within the draw's places) who got none. The
//! verifier checks that these facts are what the algorithm gives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::app::error::AppError;
use crate::app::seasons::{draw_places, not_a_lottery};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{BatchId, CitizenId};
use crate::domain::season::{Batch, DRAW_ALGORITHM, Lottery, LotterySalt, hex, sha256};
use crate::storage::Storage;

/// The `format` of an audit document.
pub const FORMAT: &str = "wenhui-lottery-audit";

/// What an outside check of a lottery draw needs, and no personal data: each person is the
/// keyed hash HMAC-SHA256(salt, citizen id), 64 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LotteryAudit {
    /// Always `wenhui-lottery-audit`.
    pub format: String,
    /// The draw algorithm: 2 (docs/lottery-audit.md).
    pub algorithm: u8,
    pub batch_id: BatchId,
    pub batch_name: String,
    /// The vouchers the batch had to give.
    pub stock: i64,
    /// How many of the best-ranked entries the draw walks: stock + max(stock / 10, 1000).
    pub places: u64,
    /// The seed the issuer revealed at the draw (its UTF-8 bytes are hashed).
    pub seed: String,
    /// SHA-256 of the seed, published when the batch was made.
    pub seed_sha256: String,
    /// The per-batch salt, 32 bytes as 64 hex digits, revealed with the seed.
    pub salt: String,
    /// SHA-256 of the salt's 32 bytes, published with the seed's.
    pub salt_sha256: String,
    /// When both commitments were first published (the batch's creation).
    #[schema(format = DateTime)]
    pub committed_at: String,
    #[schema(format = DateTime)]
    pub drawn_at: String,
    /// Every entrant's keyed hash, ascending.
    pub entrants: Vec<String>,
    /// The winners' keyed hashes, in draw order.
    pub winners: Vec<String>,
    /// Entrants the draw reached but gave nothing, in draw order: a per-person cap (the season's
    /// or the month's) refused them, or they held the batch's voucher already.
    pub skipped: Vec<String>,
}

/// The audit of a drawn batch: 404 `batch_not_found`, 409 `not_a_lottery`, `not_drawn` (before
/// the draw), `draw_not_auditable` (drawn by algorithm 1, before the salt existed). Built once
/// per process and batch (a drawn batch's audit never changes), off the request workers.
pub async fn audit(store: &dyn Storage, batch_id: BatchId) -> Result<Arc<LotteryAudit>, AppError> {
    let batch = store
        .batch(batch_id)
        .await?
        .ok_or_else(|| AppError::not_found(ErrorCode::BatchNotFound, "no such batch"))?;
    let lottery = auditable(&batch)?;
    if let Some(cached) = cached(batch_id) {
        return Ok(cached);
    }
    // One build at a time: a crowd asking for a fresh draw's audit waits for the first build.
    let _building = BUILDING.lock().await;
    if let Some(cached) = cached(batch_id) {
        return Ok(cached);
    }
    let entrants = all_entrants(store, batch_id).await?;
    let winners = store.lottery_winners(batch_id).await?;
    let seed = store.lottery_seed(batch_id).await?;
    let seed = seed.ok_or_else(|| AppError::internal("a drawn batch without a seed"))?;
    let job = move || {
        let drawn = Drawn {
            batch_id: batch.id,
            name: &batch.name,
            stock: batch.stock,
            lottery: &lottery,
            seed: &seed,
        };
        build(&drawn, &entrants, &winners)
    };
    let built = tokio::task::spawn_blocking(job)
        .await
        .map_err(|error| AppError::internal(format!("building a lottery audit failed: {error}")))?;
    Ok(remember(batch_id, Arc::new(built)))
}

/// The batch's lottery, if it is drawn by the audited algorithm.
fn auditable(batch: &Batch) -> Result<Lottery, AppError> {
    let lottery = batch.lottery.clone().ok_or_else(not_a_lottery)?;
    if lottery.drawn_at.is_none() {
        let message = "the audit is published with the draw; the batch is not drawn yet";
        return Err(AppError::conflict(ErrorCode::NotDrawn, message));
    }
    if lottery.algorithm != DRAW_ALGORITHM {
        let message = "drawn before audits existed (algorithm 1, by citizen id): no audit can be published";
        return Err(AppError::conflict(ErrorCode::DrawNotAuditable, message));
    }
    Ok(lottery)
}

async fn all_entrants(store: &dyn Storage, batch_id: BatchId) -> Result<Vec<CitizenId>, AppError> {
    const PAGE: i64 = 10_000;
    let mut all = Vec::new();
    loop {
        let page = store.lottery_entrants(batch_id, all.last().copied(), PAGE).await?;
        let full = page.len() as i64 == PAGE;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// A drawn batch: what its audit says of it besides the people.
pub struct Drawn<'a> {
    pub batch_id: BatchId,
    pub name: &'a str,
    pub stock: i64,
    pub lottery: &'a Lottery,
    /// The seed revealed at the draw.
    pub seed: &'a str,
}

/// The document of a drawn batch from its entrants and the citizens holding its vouchers.
pub fn build(drawn: &Drawn<'_>, entrants: &[CitizenId], winners: &[CitizenId]) -> LotteryAudit {
    let Drawn { lottery, seed, .. } = *drawn;
    let winners: HashSet<CitizenId> = winners.iter().copied().collect();
    let mut ranked: Vec<([u8; 32], [u8; 32], bool)> = entrants
        .iter()
        .map(|citizen| {
            let entrant = Lottery::entrant_hash(&lottery.salt, *citizen);
            (Lottery::rank(seed, &entrant), entrant, winners.contains(citizen))
        })
        .collect();
    ranked.sort_unstable();
    let places = draw_places(drawn.stock);
    let (won, skipped) = walk(&ranked, places, winners.len(), drawn.stock);
    let mut all: Vec<String> = ranked.iter().map(|(_, entrant, _)| hex(entrant)).collect();
    all.sort_unstable();
    LotteryAudit {
        format: FORMAT.to_owned(),
        algorithm: lottery.algorithm,
        batch_id: drawn.batch_id,
        batch_name: drawn.name.to_owned(),
        stock: drawn.stock,
        places: places as u64,
        seed: seed.to_owned(),
        seed_sha256: lottery.commitment_hex(),
        salt: hex(&lottery.salt.0),
        salt_sha256: hex(&lottery.salt.sha256()),
        committed_at: lottery.committed_at.to_string(),
        drawn_at: lottery.drawn_at.map(|t| t.to_string()).unwrap_or_default(),
        entrants: all,
        winners: won,
        skipped,
    }
}

/// The winners in draw order (every one, also one ranked where the algorithm would not have
/// reached: the verifier says so), and the skipped: the non-winners ranked ahead of the last
/// winner, and when fewer than `stock` won, the rest of the first `places` too.
fn walk(
    ranked: &[([u8; 32], [u8; 32], bool)],
    places: usize,
    winners: usize,
    stock: i64,
) -> (Vec<String>, Vec<String>) {
    let (mut won, mut skipped) = (Vec::new(), Vec::new());
    let stock_given = i64::try_from(winners).unwrap_or(i64::MAX) >= stock;
    for (at, (_, entrant, winner)) in ranked.iter().enumerate() {
        if *winner {
            won.push(hex(entrant));
        } else if won.len() < winners || (!stock_given && at < places) {
            skipped.push(hex(entrant));
        }
    }
    (won, skipped)
}

/// What differs between a document and the draw its own data gives (empty: it verifies).
pub fn verify(audit: &LotteryAudit) -> Vec<String> {
    let mut differences = commitments(audit);
    if audit.algorithm != DRAW_ALGORITHM {
        differences.push(format!(
            "algorithm {} is not {DRAW_ALGORITHM}, the one this verifier knows",
            audit.algorithm
        ));
        return differences;
    }
    let places = draw_places(audit.stock);
    if audit.places != places as u64 {
        differences.push(format!("places is {}, but stock {} gives {places}", audit.places, audit.stock));
    }
    match parse_lists(audit) {
        Ok(lists) => differences.extend(redraw(audit, &lists, places)),
        Err(bad) => differences.extend(bad),
    }
    differences
}

/// The seed's and the salt's commitments.
fn commitments(audit: &LotteryAudit) -> Vec<String> {
    let mut differences = Vec::new();
    if audit.format != FORMAT {
        differences.push(format!("format is {:?}, not {FORMAT:?}", audit.format));
    }
    if hex(&sha256(audit.seed.as_bytes())) != audit.seed_sha256.to_ascii_lowercase() {
        differences.push("SHA-256 of the seed is not seed_sha256".to_owned());
    }
    match Lottery::parse_commitment(&audit.salt) {
        Some(salt) if hex(&LotterySalt(salt).sha256()) == audit.salt_sha256.to_ascii_lowercase() => {}
        Some(_) => differences.push("SHA-256 of the salt is not salt_sha256".to_owned()),
        None => differences.push("the salt is not 64 hex digits".to_owned()),
    }
    differences
}

/// The three lists as bytes.
struct Lists {
    entrants: Vec<[u8; 32]>,
    winners: Vec<[u8; 32]>,
    skipped: HashSet<[u8; 32]>,
}

fn parse_lists(audit: &LotteryAudit) -> Result<Lists, Vec<String>> {
    let parse = |name: &str, list: &[String]| -> Result<Vec<[u8; 32]>, String> {
        let parsed: Option<Vec<[u8; 32]>> = list.iter().map(|h| Lottery::parse_commitment(h)).collect();
        let parsed = parsed.ok_or_else(|| format!("{name}: an item is not 64 hex digits"))?;
        let distinct: HashSet<&[u8; 32]> = parsed.iter().collect();
        match distinct.len() == parsed.len() {
            true => Ok(parsed),
            false => Err(format!("{name}: an item is listed twice")),
        }
    };
    let (entrants, winners, skipped) = (
        parse("entrants", &audit.entrants),
        parse("winners", &audit.winners),
        parse("skipped", &audit.skipped),
    );
    match (entrants, winners, skipped) {
        (Ok(entrants), Ok(winners), Ok(skipped)) => {
            Ok(Lists { entrants, winners, skipped: skipped.into_iter().collect() })
        }
        (e, w, s) => Err([e.err(), w.err(), s.err()].into_iter().flatten().collect()),
    }
}

/// Ranks the entrants and walks the first `places`, passing over the skipped, until `stock`
/// winners: the differences from the published winners.
fn redraw(audit: &LotteryAudit, lists: &Lists, places: usize) -> Vec<String> {
    let mut differences = Vec::new();
    let entrants: HashSet<&[u8; 32]> = lists.entrants.iter().collect();
    let strangers = lists.winners.iter().chain(&lists.skipped).filter(|h| !entrants.contains(h)).count();
    if strangers > 0 {
        differences.push(format!("{strangers} winners or skipped are not among the entrants"));
    }
    let mut ranked: Vec<([u8; 32], [u8; 32])> =
        lists.entrants.iter().map(|e| (Lottery::rank(&audit.seed, e), *e)).collect();
    ranked.sort_unstable();
    let top: Vec<[u8; 32]> = ranked.into_iter().take(places).map(|(_, e)| e).collect();
    let in_top: HashSet<&[u8; 32]> = top.iter().collect();
    let outside = lists.skipped.iter().filter(|s| !in_top.contains(s)).count();
    if outside > 0 {
        differences.push(format!("{outside} skipped entrants are outside the draw's first {places} places"));
    }
    let stock = usize::try_from(audit.stock).unwrap_or(0);
    let expected: Vec<[u8; 32]> =
        top.into_iter().filter(|e| !lists.skipped.contains(e)).take(stock).collect();
    differences.extend(compare_winners(&expected, &lists.winners));
    differences
}

/// The expected winners against the published ones, in draw order.
fn compare_winners(expected: &[[u8; 32]], published: &[[u8; 32]]) -> Vec<String> {
    if expected == published {
        return Vec::new();
    }
    let position: HashMap<&[u8; 32], usize> = expected.iter().enumerate().map(|(i, e)| (e, i)).collect();
    let missing: Vec<String> =
        expected.iter().filter(|e| !published.contains(*e)).map(|e| hex(e.as_slice())).collect();
    let extra: Vec<String> =
        published.iter().filter(|p| !position.contains_key(p)).map(|p| hex(p.as_slice())).collect();
    let mut differences = Vec::new();
    if !missing.is_empty() {
        differences.push(format!("winners by the draw but not published: {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        differences.push(format!("published winners the draw does not give: {}", extra.join(", ")));
    }
    if differences.is_empty() {
        differences.push("the winners are the draw's, but not in draw order".to_owned());
    }
    differences
}

/// The last few audits built: a drawn batch's audit never changes, and a public endpoint should
/// not hash 200,000 entries a request.
static CACHE: Mutex<VecDeque<(BatchId, Arc<LotteryAudit>)>> = Mutex::new(VecDeque::new());
static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CACHED: usize = 4;

fn cached(batch_id: BatchId) -> Option<Arc<LotteryAudit>> {
    let cache = CACHE.lock().ok()?;
    cache.iter().find(|(id, _)| *id == batch_id).map(|(_, audit)| Arc::clone(audit))
}

fn remember(batch_id: BatchId, audit: Arc<LotteryAudit>) -> Arc<LotteryAudit> {
    if let Ok(mut cache) = CACHE.lock() {
        cache.retain(|(id, _)| *id != batch_id);
        cache.push_back((batch_id, Arc::clone(&audit)));
        while cache.len() > CACHED {
            cache.pop_front();
        }
    }
    audit
}

/// Where a citizen stands in an audit document: their keyed hash under its salt, and whether it
/// is among the entrants and the winners.
pub fn find_citizen(audit: &LotteryAudit, citizen: CitizenId) -> String {
    let Some(salt) = Lottery::parse_commitment(&audit.salt) else {
        return "the salt is not 64 hex digits: no citizen's hash can be computed".to_owned();
    };
    let mine = hex(&Lottery::entrant_hash(&LotterySalt(salt), citizen));
    let listed = |list: &[String]| list.iter().any(|h| h.eq_ignore_ascii_case(&mine));
    let standing = match (listed(&audit.entrants), listed(&audit.winners)) {
        (false, _) => "not among the entrants",
        (true, false) => "among the entrants, not among the winners",
        (true, true) => "among the entrants and among the winners",
    };
    format!("citizen {citizen}: entrant hash {mine}, {standing}")
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::time::Timestamp;

    /// The test vector of docs/lottery-audit.md, made by the Python verifier there: eight
    /// entrants (citizen ids ...01 to ...08), stock 3, the second in draw order skipped.
    const VECTOR: &str = include_str!("../../docs/lottery-audit-vector.json");

    fn vector() -> LotteryAudit {
        serde_json::from_str(VECTOR).expect("the test vector parses")
    }

    fn citizen(n: u128) -> CitizenId {
        CitizenId::from_uuid(Uuid::from_u128(n))
    }

    fn hash_of(audit: &LotteryAudit, n: u128) -> String {
        let salt = Lottery::parse_commitment(&audit.salt).expect("salt");
        hex(&Lottery::entrant_hash(&LotterySalt(salt), citizen(n)))
    }

    #[test]
    fn the_test_vector_verifies_with_its_expected_winners() {
        let audit = vector();
        assert_eq!(verify(&audit), Vec::<String>::new());
        let expected: Vec<String> = [2, 1, 8].iter().map(|n| hash_of(&audit, *n)).collect();
        assert_eq!(audit.winners, expected, "citizens 2, 1 and 8 win, in that order");
        assert_eq!(audit.skipped, [hash_of(&audit, 5)], "citizen 5, second in draw order, skipped");
    }

    #[test]
    fn the_server_builds_the_test_vector_from_the_entrants_and_the_vouchers() {
        let audit = vector();
        let time = |text: &str| Timestamp::parse_rfc3339(text).expect("time");
        let lottery = Lottery {
            seed_sha256: sha256(audit.seed.as_bytes()),
            salt: LotterySalt(core::array::from_fn(|i| i as u8)),
            committed_at: time(&audit.committed_at),
            algorithm: DRAW_ALGORITHM,
            drawn_at: Some(time(&audit.drawn_at)),
            waitlist: false,
            next_place: None,
        };
        let drawn = Drawn {
            batch_id: audit.batch_id,
            name: &audit.batch_name,
            stock: 3,
            lottery: &lottery,
            seed: &audit.seed,
        };
        let entrants: Vec<CitizenId> = (1..=8).map(citizen).collect();
        let built = build(&drawn, &entrants, &[citizen(1), citizen(2), citizen(8)]);
        assert_eq!(built, audit);
        // Fewer winners than the stock (caps refused the rest): every other entrant is skipped.
        let short = build(&drawn, &entrants, &[citizen(2)]);
        assert_eq!((short.winners.len(), short.skipped.len()), (1, 7));
        assert_eq!(verify(&short), Vec::<String>::new(), "a short draw verifies too");
    }

    #[test]
    fn a_tampered_document_fails_and_says_what_differs() {
        let tamper = |change: &dyn Fn(&mut LotteryAudit)| {
            let mut audit = vector();
            change(&mut audit);
            verify(&audit)
        };
        let says = |differences: Vec<String>, wanted: &str| {
            assert!(differences.iter().any(|d| d.contains(wanted)), "{wanted:?} not in {differences:?}");
        };
        says(tamper(&|a| a.seed.push('!')), "SHA-256 of the seed");
        says(tamper(&|a| a.salt = "00".repeat(32)), "SHA-256 of the salt");
        let loser = hash_of(&vector(), 3);
        says(tamper(&|a| a.winners[2] = loser.clone()), "published winners the draw does not give");
        says(tamper(&|a| a.skipped.clear()), "winners by the draw but not published");
        says(tamper(&|a| a.winners.swap(0, 1)), "not in draw order");
        says(tamper(&|a| a.winners.push("zz".repeat(32))), "not 64 hex digits");
        says(tamper(&|a| a.places = 3), "places is 3");
        says(tamper(&|a| a.algorithm = 1), "algorithm 1");
        says(tamper(&|a| a.entrants.retain(|e| *e != a.winners[0])), "not among the entrants");
    }

    #[test]
    fn a_citizen_finds_their_own_entry() {
        let audit = vector();
        assert!(find_citizen(&audit, citizen(8)).ends_with("among the entrants and among the winners"));
        assert!(find_citizen(&audit, citizen(5)).ends_with("among the entrants, not among the winners"));
        assert!(find_citizen(&audit, citizen(9)).ends_with("not among the entrants"));
    }
}
