//! The claim path for a flash crowd: one writer task per process takes claims from a queue,
//! decides them in memory against authoritative counters, and commits each group of decisions
//! in ONE database transaction (vouchers, counters, stored answers and ledger entries together).
//! A request is answered only after its group commits, so every 201 is durable.
//!
//! The database still holds every limit on its own (a conditional stock update, a unique index
//! per person and slot, a CHECK on the season cap): if anything the writer believed was stale
//! (another process wrote), the group's transaction fails, caches are dropped, and the group is
//! replayed one claim per transaction. See ARCHITECTURE.md, "The claim rush".

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::app::coalesce::Coalescer;
use crate::app::error::AppError;
use crate::app::events::NodeEvent;
use crate::app::sold_out::{AnsweredKeys, KeysState, KeysTicket, Loaded, SoldOutMemory};
use crate::app::waitlist::{Notifier, WaitlistNotice};
use crate::domain::accounts;
use crate::domain::entries::{self, claim_entry, expiry_entry};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{BatchId, CardId, CitizenId, SeasonId, VoucherId};
use crate::domain::ledger::NewEntry;
use crate::domain::region::RegionCode;
use crate::domain::season::{
    Batch, CitizenHoldings, ClaimRefusal, SEASON_PERIOD, Season, SeasonStatus, Voucher, VoucherStatus,
};
use crate::domain::time::{Clock, Timestamp};
use crate::storage::{
    ClaimCommit, ExpiryCommit, IdemRecord, LedgerStore, Refusal, SeasonTotalDelta, Storage, StorageError,
    StoredAnswer, WaitlistMove, WriteError,
};
use crate::telemetry::WriterStats;

/// Most claims decided and committed in one transaction.
pub const MAX_GROUP: usize = 1_024;
const QUEUE_DEPTH: usize = 65_536;
const CACHE_MAX: usize = 500_000;
const SWEEP_LIMIT: i64 = 2_000;
/// Most times one claim is decided again after the database refused it (another process
/// committed first); each try reads fresh state, so a sold-out batch ends it at the next.
const MAX_TRIES: u32 = 8;
/// Most times a group the database refused is decided again whole, on fresh state, before its
/// claims are tried one at a time: another node's commits (a rush over many nodes) make a group
/// decided on cached counters fail, and one transaction for the group beats one per claim.
const GROUP_TRIES: u32 = 3;
/// Most (citizen, key) pairs a sold-out batch's memory holds (a pair is about 8 bytes, a holder
/// 16): more, and its keys read their stored answers.
const MAX_ANSWERED_KEYS: u32 = 1_000_000;
/// How long before its stock was released a stored refusal may be of a batch sold out (a claim
/// tried early and answered `not_open`): see docs/claims.md, "Sold out from memory".
const REFUSALS_BEFORE_RELEASE_S: i64 = 3_600;

/// A claim as the HTTP layer hands it over.
pub struct ClaimRequest {
    pub citizen_id: CitizenId,
    pub batch_id: BatchId,
    pub idem_key: String,
    pub request_hash: Vec<u8>,
    /// A points exchange: the voucher is paid for with the card's points.
    pub exchange: Option<Exchange>,
    pub reply: oneshot::Sender<Answer>,
}

/// What a points exchange adds to a claim: the card paying, and the price the citizen agreed to.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    pub card_id: CardId,
    pub points: i64,
}

/// A card as an exchange needs it: its state and its points per season, oldest first. Loaded
/// afresh for every group (card payments and reversals change points outside the writer); the
/// ledger's limit on each card points account has the last word.
struct CardPoints {
    frozen: bool,
    balances: Vec<(SeasonId, i64)>,
}

/// An HTTP answer: status and JSON body, exactly as stored for replays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// The first answer to this Idempotency-Key, given again (`idempotent-replayed: true`).
    pub replayed: bool,
}

impl Answer {
    fn error(status: u16, code: ErrorCode, message: &str) -> Answer {
        let body = json!({"error": {"code": code, "message": message}}).to_string();
        Answer { status, body, replayed: false }
    }

    fn from_stored(stored: &StoredAnswer) -> Answer {
        Answer { status: stored.status, body: stored.body.clone(), replayed: true }
    }

    fn unavailable() -> Answer {
        Answer::error(
            503,
            ErrorCode::DatabaseUnavailable,
            "the claim could not be recorded; retry with the same Idempotency-Key",
        )
    }
}

type SweepAnswer = (Result<SweepReport, String>, Vec<WaitlistNotice>);

enum Message {
    Claim(ClaimRequest),
    /// A sweep's report, and the waitlist notices its moves made (sent even if a later stage
    /// of the sweep failed: the moves committed).
    Sweep(oneshot::Sender<SweepAnswer>),
    /// Another path changed claim state (a reversal expired a voucher): reload on next use.
    Invalidate,
    /// Issue a drawn lottery batch's vouchers to its winners, in draw order.
    Draw(DrawJob),
}

/// A draw's issuance in progress: one group of winners a turn, then back in the queue, so that
/// claims queued meanwhile are not kept waiting for the whole draw.
struct DrawJob {
    batch_id: BatchId,
    /// The winners not yet reached, in draw order.
    winners: std::collections::VecDeque<CitizenId>,
    reply: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub batches_closed: usize,
    /// Cards whose points of a season expired.
    pub points_expired: usize,
    /// Expired or forfeited waitlist vouchers moved on (to the next in line, or to nobody).
    pub moved_on: usize,
    /// The people the moves gave a voucher, told by SMS once the sweep returns.
    pub notices: Vec<WaitlistNotice>,
}

/// The handle the HTTP layer and the sweeper hold.
#[derive(Clone)]
pub struct ClaimWriter {
    queue: mpsc::Sender<Message>,
    stats: Arc<WriterStats>,
    clock: Arc<dyn Clock>,
    /// Batches known sold out: their claims are answered without the writer.
    sold_out: Arc<SoldOutMemory>,
    /// The stored answers of the keys of claims answered from memory, read in batches.
    stored_answers: Coalescer<(String, String), Option<StoredAnswer>>,
    /// Claims answered `sold_out` from memory since the start.
    from_memory: Arc<AtomicU64>,
    /// Of those, the ones answered without reading their key's stored answer.
    without_read: Arc<AtomicU64>,
    store: Arc<dyn Storage>,
    /// Texts the people a waitlist's voucher moved on to (None: nobody is told).
    notifier: Option<Arc<Notifier>>,
}

impl ClaimWriter {
    pub fn spawn(store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> ClaimWriter {
        let (queue, inbox) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::new(crate::telemetry::CLAIM_WRITER));
        let sold_out = Arc::new(SoldOutMemory::default());
        let stored_answers = stored_answers(store.clone());
        let writer = Writer {
            me: queue.downgrade(),
            store: store.clone(),
            clock: clock.clone(),
            caches: Caches::default(),
            cards: HashMap::new(),
            stats: stats.clone(),
            sold_out: sold_out.clone(),
            ahead: None,
            epoch_before_reads: None,
        };
        crate::app::own_thread::spawn(writer.run(inbox));
        let (from_memory, without_read) = (Arc::default(), Arc::default());
        let notifier = None;
        ClaimWriter {
            queue,
            stats,
            clock,
            sold_out,
            stored_answers,
            from_memory,
            without_read,
            store,
            notifier,
        }
    }

    /// Tells the people a waitlist's voucher moves on to, through `notifier`, after each sweep.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> ClaimWriter {
        self.notifier = Some(notifier);
        self
    }

    /// Messages waiting in the writer's queue (claims, sweeps, draws' next turns).
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// The writer's commits: group sizes, commit times, the last one.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// The batches this node knows sold out (marked by another node's event too).
    pub fn sold_out(&self) -> &SoldOutMemory {
        &self.sold_out
    }

    /// How many claims were answered `sold_out` from memory since the start.
    pub fn answered_from_memory(&self) -> u64 {
        self.from_memory.load(Ordering::Relaxed)
    }

    /// Of the claims answered `sold_out` from memory, how many without reading their key's
    /// stored answer (outside the batch's [`AnsweredKeys`]).
    pub fn answered_without_read(&self) -> u64 {
        self.without_read.load(Ordering::Relaxed)
    }

    /// A plain claim on a batch known sold out, answered without the writer: the stored answer
    /// of its key if it has one (a retry is answered as the first time, on any node), else
    /// 409 `sold_out`, not stored (the batch's state, not the request, decided it). The stored
    /// answer is read only for a key of the batch's [`AnsweredKeys`], or while they are not
    /// loaded. `None`: the batch is not known sold out, or the stored answer could not be
    /// read; the writer decides.
    async fn answer_from_memory(
        &self,
        citizen_id: CitizenId,
        batch_id: BatchId,
        idem_key: &str,
        request_hash: &[u8],
    ) -> Option<Answer> {
        let sold_out = self.sold_out.check_keys(batch_id, self.clock.now())?;
        if let Some(epoch) = sold_out.renew {
            self.renew_sold_out(batch_id, epoch);
        }
        let unanswered = match &sold_out.keys {
            KeysState::Known(keys) => !keys.may_have_answer(citizen_id, idem_key),
            KeysState::Load(ticket) => {
                self.load_answered_keys(*ticket);
                false
            }
            KeysState::Unknown => false,
        };
        if unanswered {
            self.without_read.fetch_add(1, Ordering::Relaxed);
        } else {
            let key = (citizen_scope(citizen_id), idem_key.to_owned());
            if let Some(stored) = self.stored_answers.load(key).await.ok()? {
                return Some(replay(&stored, request_hash));
            }
        }
        self.from_memory.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::telemetry::CLAIMS_SOLD_OUT_FROM_MEMORY).increment(1);
        Some(Answer::error(409, ErrorCode::SoldOut, &sold_out.message))
    }

    /// Reads, in the background, a batch whose sold-out mark lapses soon, and marks it again if
    /// it is still sold out (as the writer would on its next claim, without the claim waiting
    /// for a group's commit).
    fn renew_sold_out(&self, batch_id: BatchId, epoch: u64) {
        let (store, memory, now) = (self.store.clone(), self.sold_out.clone(), self.clock.now());
        tokio::spawn(async move {
            let read = async {
                let Some(batch) = store.batch(batch_id).await? else { return Ok(None) };
                let season = store.season(batch.season_id).await?;
                Ok::<_, StorageError>(season.and_then(|season| sold_out_event(&batch, &season, now)))
            };
            match read.await {
                Ok(Some(NodeEvent::SoldOut { batch_id, until, message })) => {
                    memory.mark_unless_forgotten(epoch, batch_id, until, message);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, %batch_id, "could not read a sold-out batch again"),
            }
            memory.renewed(batch_id);
        });
    }

    /// Loads, in the background, the keys of a batch known sold out that may have a stored
    /// answer, and gives them to the memory (which keeps them only if nothing was forgotten
    /// meanwhile).
    fn load_answered_keys(&self, ticket: KeysTicket) {
        let (store, memory, now) = (self.store.clone(), self.sold_out.clone(), self.clock.now());
        tokio::spawn(async move {
            let loaded = answered_keys(store.as_ref(), ticket.batch_id, now).await;
            memory.install_keys(ticket, loaded);
        });
    }

    /// Queues a claim and waits for its committed answer.
    pub async fn claim(
        &self,
        citizen_id: CitizenId,
        batch_id: BatchId,
        idem_key: String,
        request_hash: Vec<u8>,
    ) -> Answer {
        self.submit(citizen_id, batch_id, idem_key, request_hash, None).await
    }

    /// Queues a points exchange (a claim paid for with the card's points) and waits for its
    /// committed answer: the same stock, limits and rush rules as a claim.
    pub async fn exchange(
        &self,
        citizen_id: CitizenId,
        batch_id: BatchId,
        exchange: Exchange,
        idem_key: String,
        request_hash: Vec<u8>,
    ) -> Answer {
        self.submit(citizen_id, batch_id, idem_key, request_hash, Some(exchange)).await
    }

    async fn submit(
        &self,
        citizen_id: CitizenId,
        batch_id: BatchId,
        idem_key: String,
        request_hash: Vec<u8>,
        exchange: Option<Exchange>,
    ) -> Answer {
        if exchange.is_none()
            && let Some(answer) =
                self.answer_from_memory(citizen_id, batch_id, &idem_key, &request_hash).await
        {
            crate::telemetry::claim_answered(answer.status, answer.replayed, &answer.body);
            return answer;
        }
        let (reply, answer) = oneshot::channel();
        let request = ClaimRequest { citizen_id, batch_id, idem_key, request_hash, exchange, reply };
        let answer = match self.queue.send(Message::Claim(request)).await {
            Ok(()) => answer.await.unwrap_or_else(|_| Answer::unavailable()),
            Err(_) => Answer::unavailable(),
        };
        crate::telemetry::claim_answered(answer.status, answer.replayed, &answer.body);
        answer
    }

    /// Expires due vouchers and closes batches whose claim window ended, through the writer so
    /// that its counters stay exact.
    pub async fn sweep(&self) -> Result<SweepReport, String> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Message::Sweep(reply)).await.map_err(|_| "writer stopped".to_owned())?;
        let (report, notices) = answer.await.map_err(|_| "writer stopped".to_owned())?;
        // Off the writer: the moves are committed; an SMS is slow and may fail.
        if let Some(notifier) = &self.notifier {
            notifier.send(&notices).await;
        }
        report
    }

    /// Issues a drawn lottery batch's vouchers: to `winners` in draw order, as long as stock
    /// lasts, skipping a winner a per-person cap refuses or who holds one already (a draw
    /// issued again after a failure part way). The batch's claimed count says how many in all.
    pub async fn issue_drawn(&self, batch_id: BatchId, winners: Vec<CitizenId>) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        let job = DrawJob { batch_id, winners: winners.into(), reply };
        self.queue.send(Message::Draw(job)).await.map_err(|_| "writer stopped".to_owned())?;
        answer.await.map_err(|_| "writer stopped".to_owned())?
    }

    /// Tells the writer its cached counters may be stale, and forgets every sold-out batch.
    pub async fn invalidate(&self) {
        self.sold_out.forget_all();
        let _ = self.queue.send(Message::Invalidate).await;
    }

    /// Vouchers of `batch_id` went back to its stock (on any node): it is no longer known sold
    /// out, and the writer reads its counters again.
    pub async fn stock_returned(&self, batch_id: BatchId) {
        self.sold_out.forget(batch_id);
        let _ = self.queue.send(Message::Invalidate).await;
    }

    /// Sweeps every `every` until the process ends, the first time `every` after the start.
    pub fn spawn_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let writer = self.clone();
        tokio::spawn(async move {
            let mut ticker = crate::app::housekeeping::every_from_now(every);
            loop {
                ticker.tick().await;
                match writer.sweep().await {
                    Ok(report) if report != SweepReport::default() => {
                        let points = report.points_expired;
                        tracing::info!(
                            expired = report.expired,
                            closed = report.batches_closed,
                            points,
                            moved_on = report.moved_on,
                            "swept"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "sweep failed"),
                }
            }
        })
    }
}

pub fn citizen_scope(citizen_id: CitizenId) -> String {
    format!("citizen:{citizen_id}")
}

/// The keys of sold-out `batch_id` that may have a stored answer, read now (after the mark was
/// made, so after every 201 it counts): its holders, and the stored refusals since an hour
/// before its stock was released.
async fn answered_keys(store: &dyn Storage, batch_id: BatchId, now: Timestamp) -> Loaded {
    let batch = match store.batch(batch_id).await {
        Ok(Some(batch)) => batch,
        Ok(None) => return Loaded::TooMany,
        Err(error) => {
            tracing::warn!(%error, %batch_id, "could not read a sold-out batch");
            return Loaded::Failed;
        }
    };
    let since = refusals_since(&batch, now);
    match store.claim_answer_keys(batch_id, since, MAX_ANSWERED_KEYS).await {
        Ok(Some(found)) => {
            let refused: Vec<(CitizenId, String)> = found
                .refused
                .into_iter()
                .filter_map(|(scope, key)| Some((scope.strip_prefix("citizen:")?.parse().ok()?, key)))
                .collect();
            Loaded::Keys(AnsweredKeys::new(found.holders, &refused))
        }
        Ok(None) => {
            tracing::info!(%batch_id, "a sold-out batch has too many answered keys to hold; reading each");
            Loaded::TooMany
        }
        Err(error) => {
            tracing::warn!(%error, %batch_id, "could not load a sold-out batch's answered keys");
            Loaded::Failed
        }
    }
}

/// `batch` left with nothing released to claim at `now`: a [`NodeEvent::SoldOut`] until the first
/// moment stock or the answer can change by time alone (a release, the end of the claim window
/// or season). `None` for a lottery batch or one that is not sold out.
fn sold_out_event(batch: &Batch, season: &Season, now: Timestamp) -> Option<NodeEvent> {
    if batch.lottery.is_some() {
        return None;
    }
    let Err(ClaimRefusal::SoldOut(message)) = batch.check_open(season, now) else { return None };
    let mut until = batch.claim_closes_at.min(season.ends_at);
    if let Some(release) = batch.next_release_after(now) {
        until = until.min(release);
    }
    Some(NodeEvent::SoldOut { batch_id: batch.id, until, message })
}

/// From when a stored refusal may be of a claim on `batch` that a retry now would replay: an
/// hour ([`REFUSALS_BEFORE_RELEASE_S`]) before the stock claimable now was released.
fn refusals_since(batch: &Batch, now: Timestamp) -> Timestamp {
    let opens = batch.claim_opens_at;
    let released = batch.releases.iter().map(|r| r.at.max(opens)).filter(|at| *at <= now).max();
    released.unwrap_or(opens).plus_seconds(-REFUSALS_BEFORE_RELEASE_S)
}

/// Reads stored answers by (scope, key), many in one query.
fn stored_answers(store: Arc<dyn Storage>) -> Coalescer<(String, String), Option<StoredAnswer>> {
    Coalescer::spawn(move |keys: Vec<(String, String)>| {
        let store = store.clone();
        async move {
            let found = store.idempotent_answers(&keys).await?;
            Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
        }
    })
}

/// What the writer knows. Only the writer changes claim state, so these are exact while it is
/// the only writer; on any database refusal they are dropped and reloaded.
#[derive(Default)]
struct Caches {
    batches: HashMap<BatchId, (Batch, Season)>,
    holdings: HashMap<(BatchId, CitizenId), CitizenHoldings>,
    /// (season, citizen, period): see `SeasonTotalDelta`.
    season_totals: HashMap<(SeasonId, CitizenId, i32), i64>,
    answers: HashMap<(CitizenId, String), StoredAnswer>,
    /// Keys read ahead (during the last commit) and found without a stored answer: not read
    /// again for the group about to be decided, then forgotten (another node may store one).
    unanswered: std::collections::HashSet<(CitizenId, String)>,
    /// Counts the times anything was dropped: rows read before a drop are not merged after it.
    generation: u64,
}

impl Caches {
    fn clear(&mut self) {
        *self = Caches { generation: self.generation + 1, ..Caches::default() };
    }

    /// Drops the counters (batches, holdings, totals) and keeps the stored answers.
    fn drop_counters(&mut self) {
        self.batches.clear();
        self.holdings.clear();
        self.season_totals.clear();
        self.generation += 1;
    }

    fn trim(&mut self) {
        if self.holdings.len() > CACHE_MAX
            || self.answers.len() > CACHE_MAX
            || self.season_totals.len() > CACHE_MAX
        {
            self.holdings.clear();
            self.answers.clear();
            self.season_totals.clear();
            self.generation += 1;
        }
    }

    /// Adds rows read for a group, unless something was dropped since they were read; what the
    /// caches hold wins (the writer's own decisions, committed or being committed, are newer
    /// than any read).
    fn merge(&mut self, read: Context) {
        if read.generation != self.generation {
            return;
        }
        for (key, stored) in read.answers {
            self.answers.entry(key).or_insert(stored);
        }
        for key in read.asked {
            if !self.answers.contains_key(&key) {
                self.unanswered.insert(key);
            }
        }
        for (batch_id, rows) in read.batches {
            self.batches.entry(batch_id).or_insert(rows);
        }
        for held in read.holdings {
            for (citizen, rows) in held.rows {
                let totals = &mut self.season_totals;
                totals.entry((held.season_id, citizen, SEASON_PERIOD)).or_insert(rows.season_total_fen);
                if held.monthly {
                    totals.entry((held.season_id, citizen, held.month)).or_insert(rows.month_total_fen);
                }
                self.holdings.entry((held.batch_id, citizen)).or_insert(rows);
            }
        }
    }
}

/// What a group's claims need and the caches lacked, as read (see [`read_context`]).
#[derive(Default)]
struct Context {
    /// The caches' generation when the reads began.
    generation: u64,
    /// The keys whose stored answers were read (found or not).
    asked: Vec<(CitizenId, String)>,
    answers: Vec<((CitizenId, String), StoredAnswer)>,
    batches: Vec<(BatchId, (Batch, Season))>,
    holdings: Vec<HoldingsRead>,
}

/// Citizens' holdings of one batch, and their totals in its season.
struct HoldingsRead {
    batch_id: BatchId,
    season_id: SeasonId,
    month: i32,
    /// The season has a monthly cap: `month`'s totals were read.
    monthly: bool,
    rows: HashMap<CitizenId, CitizenHoldings>,
}

/// Reads what `claims` need that `caches` lack: stored answers, batches, holdings. Changes no
/// cache: the writer merges the rows ([`Caches::merge`]) when it decides the group.
async fn read_context(
    store: &dyn Storage,
    caches: &Caches,
    claims: &[&ClaimRequest],
    now: Timestamp,
) -> Result<Context, StorageError> {
    let mut read = Context { generation: caches.generation, ..Context::default() };
    read.asked = claims
        .iter()
        .map(|c| (c.citizen_id, c.idem_key.clone()))
        .filter(|key| !caches.answers.contains_key(key) && !caches.unanswered.contains(key))
        .collect();
    let missing_keys: Vec<(String, String)> =
        read.asked.iter().map(|(citizen, key)| (citizen_scope(*citizen), key.clone())).collect();
    if !missing_keys.is_empty() {
        for ((scope, key), stored) in store.idempotent_answers(&missing_keys).await? {
            if let Some(citizen) = scope.strip_prefix("citizen:").and_then(|c| c.parse().ok()) {
                read.answers.push(((citizen, key), stored));
            }
        }
    }
    let mut by_batch: HashMap<BatchId, Vec<CitizenId>> = HashMap::new();
    for c in claims {
        by_batch.entry(c.batch_id).or_default().push(c.citizen_id);
    }
    // A new month starts each citizen's monthly total afresh: in a season with a monthly cap,
    // read it even with the batch's holdings cached.
    let month = crate::domain::finance::cst_month(now);
    for (batch_id, citizens) in by_batch {
        let (season_id, monthly) = match caches.batches.get(&batch_id) {
            Some((batch, season)) => (batch.season_id, season.per_citizen_monthly_cap.is_some()),
            None => {
                let Some(batch) = store.batch(batch_id).await? else { continue };
                let Some(season) = store.season(batch.season_id).await? else { continue };
                let ids = (batch.season_id, season.per_citizen_monthly_cap.is_some());
                read.batches.push((batch_id, (batch, season)));
                ids
            }
        };
        let unknown: Vec<CitizenId> = citizens
            .into_iter()
            .filter(|c| {
                !caches.holdings.contains_key(&(batch_id, *c))
                    || (monthly && !caches.season_totals.contains_key(&(season_id, *c, month)))
            })
            .collect();
        if unknown.is_empty() {
            continue;
        }
        let rows = store.holdings(batch_id, season_id, month, &unknown).await?;
        read.holdings.push(HoldingsRead { batch_id, season_id, month, monthly, rows });
    }
    Ok(read)
}

/// The writer's next turn, gathered while a group's commit was in flight, with what its claims
/// needed read meanwhile (`None`: the reads failed; they are made again).
struct Ahead {
    turn: Turn,
    context: Option<Context>,
    /// The sold-out memory's epoch before those reads.
    epoch: u64,
}

/// What the writer does in one turn, gathered from its queue.
#[derive(Default)]
struct Turn {
    /// Decided together, in one group.
    claims: Vec<ClaimRequest>,
    sweeps: Vec<oneshot::Sender<SweepAnswer>>,
    /// The caches are dropped before the group is decided.
    invalidate: bool,
    /// A draw's next group of winners, issued last: a draw's group takes far longer than a
    /// group of claims, so the claims queued before it are decided first.
    draw: Option<DrawJob>,
}

impl Turn {
    /// Takes `first` and then whatever `next` yields without waiting, up to [`MAX_GROUP`]
    /// claims or a draw, whichever comes first; the rest stays queued for the next turn.
    fn gather(first: Message, next: impl FnMut() -> Option<Message>) -> Turn {
        let mut turn = Turn::default();
        turn.take(first);
        turn.gather_more(next);
        turn
    }

    /// Goes on gathering from `next`, as [`Turn::gather`] would have had these messages been
    /// queued when it ran.
    fn gather_more(&mut self, mut next: impl FnMut() -> Option<Message>) {
        while self.claims.len() < MAX_GROUP && self.draw.is_none() {
            let Some(message) = next() else { return };
            self.take(message);
        }
    }

    fn take(&mut self, message: Message) {
        match message {
            Message::Claim(request) => self.claims.push(request),
            Message::Sweep(reply) => self.sweeps.push(reply),
            Message::Invalidate => self.invalidate = true,
            Message::Draw(job) => self.draw = Some(job),
        }
    }
}

struct Writer {
    /// The writer's own queue, for a draw to put its next turn back in line; weak, so that
    /// the writer still stops when every handle is dropped.
    me: mpsc::WeakSender<Message>,
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    caches: Caches,
    /// The cards of the exchanges in the group being decided.
    cards: HashMap<CardId, CardPoints>,
    stats: Arc<WriterStats>,
    /// Batches known sold out, marked after a group that leaves one so commits.
    sold_out: Arc<SoldOutMemory>,
    /// The next turn, gathered during the last group's commit.
    ahead: Option<Ahead>,
    /// The sold-out epoch before the reads of the group about to be decided, when they were made
    /// before its turn (`ahead`).
    epoch_before_reads: Option<u64>,
}

/// One claim's fate within a group.
struct Pending {
    request: ClaimRequest,
    answer: Option<Answer>,
}

impl Writer {
    async fn run(mut self, mut inbox: mpsc::Receiver<Message>) {
        // Before the first group: its claims would otherwise wait for the connections to open
        // and the statements to be prepared (a rush's opening burst took 22-33 ms to commit).
        if let Err(error) = self.store.warm_claim_path().await {
            tracing::warn!(%error, "could not warm the claim path; the first claims will");
        }
        loop {
            let (turn, context) = match self.ahead.take() {
                Some(ahead) => {
                    // With the claims queued during the last commit: the group is as large as
                    // without the reads ahead (those claims' reads are made now).
                    let mut turn = ahead.turn;
                    turn.gather_more(|| inbox.try_recv().ok());
                    self.epoch_before_reads = Some(ahead.epoch);
                    (turn, ahead.context)
                }
                None => match inbox.recv().await {
                    Some(first) => (Turn::gather(first, || inbox.try_recv().ok()), None),
                    None => break,
                },
            };
            if turn.invalidate {
                self.caches.clear();
            }
            if let Some(context) = context {
                self.caches.merge(context);
            }
            if !turn.claims.is_empty() {
                self.process_group(turn.claims, &mut inbox).await;
            }
            self.epoch_before_reads = None;
            for reply in turn.sweeps {
                let (report, notices) = self.sweep().await;
                let _ = reply.send((report.map_err(|e| e.to_string()), notices));
            }
            if let Some(job) = turn.draw {
                self.draw_turn(job).await;
            }
            self.caches.trim();
        }
    }

    /// Decides and commits a group; while its commit is in flight, gathers the next turn from
    /// `inbox` and reads what its claims need (`ahead`).
    async fn process_group(&mut self, requests: Vec<ClaimRequest>, inbox: &mut mpsc::Receiver<Message>) {
        let pending: Vec<Pending> =
            requests.into_iter().map(|request| Pending { request, answer: None }).collect();
        let (pending, outcome) = self.decide_and_commit(pending, Some(inbox)).await;
        match outcome {
            Ok(()) => reply_all(pending),
            Err(error) if !decide_again(&error) => {
                tracing::error!(%error, "claim group failed");
                self.caches.clear();
                for p in pending {
                    let _ = p.request.reply.send(Answer::unavailable());
                }
            }
            Err(error) => self.decide_group_again(pending, error).await,
        }
    }

    /// A group the database refused (another node committed between the reads and the commit):
    /// decided again whole on fresh state, up to [`GROUP_TRIES`] times (a batch sold out
    /// meanwhile is seen and marked at the first), then one claim at a time.
    async fn decide_group_again(&mut self, mut pending: Vec<Pending>, mut error: WriteError) {
        for attempt in 2..=GROUP_TRIES {
            tracing::info!(%error, attempt, claims = pending.len(), "claim group refused by the database; deciding it again");
            self.caches.clear();
            for p in &mut pending {
                p.answer = None;
            }
            let (again, outcome) = self.decide_and_commit(pending, None).await;
            pending = again;
            error = match outcome {
                Ok(()) => return reply_all(pending),
                Err(error) if !decide_again(&error) => {
                    tracing::error!(%error, "claim group failed");
                    self.caches.clear();
                    for p in pending {
                        let _ = p.request.reply.send(Answer::unavailable());
                    }
                    return;
                }
                Err(error) => error,
            };
        }
        tracing::warn!(%error, "claim group refused by the database again; replaying one by one");
        self.caches.clear();
        for p in pending {
            self.process_single(p.request).await;
        }
    }

    /// One claim in a transaction of its own, decided again on fresh state each time the
    /// database refuses it (another process committed between the reads and the commit), at
    /// most [`MAX_TRIES`] times; answered 503 only when the database cannot be reached.
    async fn process_single(&mut self, mut request: ClaimRequest) {
        for attempt in 1..=MAX_TRIES {
            let single = vec![Pending { request, answer: None }];
            let (mut single, outcome) = self.decide_and_commit(single, None).await;
            let error = match outcome {
                Ok(()) => return reply_all(single),
                Err(error) => error,
            };
            self.caches.clear();
            let Some(p) = single.pop() else { return };
            if !decide_again(&error) || attempt == MAX_TRIES {
                tracing::error!(%error, attempt, "single claim failed");
                let _ = p.request.reply.send(Answer::unavailable());
                return;
            }
            tracing::info!(%error, attempt, "single claim refused by the database; deciding it again");
            request = p.request;
        }
    }

    async fn decide_and_commit(
        &mut self,
        mut pending: Vec<Pending>,
        inbox: Option<&mut mpsc::Receiver<Message>>,
    ) -> (Vec<Pending>, Result<(), WriteError>) {
        let now = self.clock.now();
        // Before the reads (some may have been made during the last commit): a forget (stock
        // returned) after them leaves the marks unmade.
        let epoch = self.epoch_before_reads.take().unwrap_or_else(|| self.sold_out.epoch());
        if let Err(error) = self.load_context(&pending, now).await {
            return (pending, Err(WriteError::Storage(error)));
        }
        let mut commit = ClaimCommit::default();
        let mut fresh_answers: HashMap<(CitizenId, String), usize> = HashMap::new();
        for index in 0..pending.len() {
            let key = (pending[index].request.citizen_id, pending[index].request.idem_key.clone());
            if let Some(stored) = self.caches.answers.get(&key) {
                pending[index].answer = Some(replay(stored, &pending[index].request.request_hash));
                continue;
            }
            if let Some(first) = fresh_answers.get(&key) {
                let (stored_hash, answer) = {
                    let first = &pending[*first];
                    (first.request.request_hash.clone(), first.answer.clone())
                };
                let stored = StoredAnswer { request_hash: stored_hash, status: 0, body: String::new() };
                let same = stored.request_hash == pending[index].request.request_hash;
                pending[index].answer = if same {
                    answer.map(|first| Answer { replayed: true, ..first })
                } else {
                    Some(replay(&stored, &pending[index].request.request_hash))
                };
                continue;
            }
            let answer = self.decide(&pending[index].request, now, &mut commit);
            commit.answers.push(IdemRecord {
                scope: citizen_scope(key.0),
                key: key.1.clone(),
                request_hash: pending[index].request.request_hash.clone(),
                status: answer.status,
                body: answer.body.clone(),
            });
            pending[index].answer = Some(answer);
            fresh_answers.insert(key, index);
        }
        if commit.answers.is_empty() {
            return (pending, Ok(()));
        }
        let sold_out = self.sold_out_now(&pending, now);
        commit.notices.extend(sold_out.iter().map(NodeEvent::encode));
        let store = self.store.clone();
        let timed = async {
            let started = std::time::Instant::now();
            let outcome = store.commit_claims(&commit).await;
            (outcome, started.elapsed())
        };
        // The next turn's claims, if any are queued, and their reads while this commit is in
        // flight: its effects are in the caches already (`note_claimed`), so the reads skip
        // every key it touches, and the caches win over them when merged.
        let next = inbox.and_then(|inbox| {
            let first = inbox.try_recv().ok()?;
            Some(Turn::gather(first, || inbox.try_recv().ok()))
        });
        let (outcome, took) = match next {
            None => timed.await,
            Some(turn) => {
                let epoch = self.sold_out.epoch();
                let claims: Vec<&ClaimRequest> = turn.claims.iter().collect();
                let reads = read_context(self.store.as_ref(), &self.caches, &claims, self.clock.now());
                let ((outcome, took), context) = tokio::join!(timed, reads);
                drop(claims);
                let context = context
                    .inspect_err(|error| tracing::debug!(%error, "the next group's reads failed; made again"))
                    .ok();
                self.ahead = Some(Ahead { turn, context, epoch });
                (outcome, took)
            }
        };
        if outcome.is_ok() {
            self.stats.committed(commit.answers.len(), took);
            self.remember(&commit);
            for event in sold_out {
                if let NodeEvent::SoldOut { batch_id, until, message } = event {
                    self.sold_out.mark_unless_forgotten(epoch, batch_id, until, message);
                }
            }
        }
        (pending, outcome)
    }

    /// The group's batches left with nothing released to claim, as the writer now sees them
    /// (its decisions applied): a [`NodeEvent::SoldOut`] each, until the first moment stock or
    /// the answer can change by time alone (a release, the end of the claim window or season).
    fn sold_out_now(&self, pending: &[Pending], now: Timestamp) -> Vec<NodeEvent> {
        let mut events: Vec<NodeEvent> = Vec::new();
        for p in pending {
            let batch_id = p.request.batch_id;
            let seen =
                events.iter().any(|e| matches!(e, NodeEvent::SoldOut { batch_id: b, .. } if *b == batch_id));
            let Some((batch, season)) = self.caches.batches.get(&batch_id) else { continue };
            if seen {
                continue;
            }
            events.extend(sold_out_event(batch, season, now));
        }
        events
    }

    /// Loads what the group needs and the caches lack: stored answers, batches, holdings (and
    /// the exchanges' cards, afresh).
    async fn load_context(&mut self, pending: &[Pending], now: Timestamp) -> Result<(), StorageError> {
        let claims: Vec<&ClaimRequest> = pending.iter().map(|p| &p.request).collect();
        let read = read_context(self.store.as_ref(), &self.caches, &claims, now).await;
        self.caches.unanswered.clear();
        self.caches.merge(read?);
        self.caches.unanswered.clear();
        self.cards.clear();
        for exchange in pending.iter().filter_map(|p| p.request.exchange) {
            if self.cards.contains_key(&exchange.card_id) {
                continue;
            }
            let Some(card) = self.store.card(exchange.card_id).await? else { continue };
            let lines = self.store.card_points(exchange.card_id).await?;
            let balances = lines.iter().map(|l| (l.season_id, l.points)).collect();
            let frozen = card.status != crate::domain::card::CardStatus::Active;
            self.cards.insert(exchange.card_id, CardPoints { frozen, balances });
        }
        Ok(())
    }

    /// Decides one claim against the in-memory state and, if accepted, adds it to the commit.
    fn decide(&mut self, request: &ClaimRequest, now: Timestamp, commit: &mut ClaimCommit) -> Answer {
        let Some((batch, season)) = self.caches.batches.get(&request.batch_id) else {
            return Answer::error(404, ErrorCode::BatchNotFound, "no such batch");
        };
        if let Some(exchange) = &request.exchange
            && let Err(refusal) = exchange_allowed(batch, exchange, self.cards.get(&exchange.card_id))
        {
            return refusal;
        }
        if batch.lottery.is_some() {
            let message = "this batch is given out by lottery: enter the draw at /v1/batches/{id}/entries";
            return Answer::error(409, ErrorCode::LotteryBatch, message);
        }
        if let Err(refusal) = batch.check_open(season, now) {
            return refusal_answer(refusal);
        }
        let held_key = (batch.id, request.citizen_id);
        let mut held = self.caches.holdings.get(&held_key).cloned().unwrap_or_default();
        let month = crate::domain::finance::cst_month(now);
        let total = |period: i32| {
            *self.caches.season_totals.get(&(season.id, request.citizen_id, period)).unwrap_or(&0)
        };
        held.season_total_fen = total(SEASON_PERIOD);
        held.month_total_fen = total(month);
        let slot = match held.admit(batch, season) {
            Ok(slot) => slot,
            Err(refusal) => return refusal_answer(refusal),
        };
        // Points last: the stock and the limits are the same refusals as for a claim.
        let spent = match self.points_to_spend(request) {
            Ok(spent) => spent,
            Err(refusal) => return refusal,
        };
        let voucher = add_claimed(batch, season, request.citizen_id, slot, now, commit);
        let mut body =
            ClaimAnswer { voucher: voucher_json(&voucher, batch), points_spent: None, points_balance: None };
        if let Some((card_id, parts)) = &spent {
            let left = spend_points(&mut self.cards, voucher.id, *card_id, parts, commit);
            body.points_spent = Some(parts.iter().map(|(_, p)| *p).sum::<i64>());
            body.points_balance = Some(left);
        }
        let answer = match serde_json::to_string(&body) {
            Ok(body) => Answer { status: 201, body, replayed: false },
            Err(_) => Answer::error(500, ErrorCode::Internal, "internal error; it has been logged"),
        };
        let monthly = season.per_citizen_monthly_cap.is_some();
        let released = batch.released_at(now);
        match commit.batch_claims.iter_mut().find(|(id, _, _)| *id == batch.id) {
            Some((_, count, _)) => *count += 1,
            None => commit.batch_claims.push((batch.id, 1, released)),
        }
        held.slots.push(slot);
        self.note_claimed(&voucher, held, if monthly { Some(month) } else { None });
        answer
    }

    /// The points an exchange spends, oldest season first (none for a plain claim); 409
    /// `insufficient_points` when the card holds too few.
    fn points_to_spend(&self, request: &ClaimRequest) -> Result<Option<Spent>, Answer> {
        let Some(exchange) = &request.exchange else { return Ok(None) };
        let balances = self.cards.get(&exchange.card_id).map(|c| c.balances.as_slice()).unwrap_or(&[]);
        match crate::domain::card::spend_oldest_first(balances, exchange.points) {
            Some(parts) => Ok(Some((exchange.card_id, parts))),
            None => {
                let held: i64 = balances.iter().map(|(_, p)| (*p).max(0)).sum();
                let message = format!("this voucher costs {} points; the card holds {held}", exchange.points);
                Err(Answer::error(409, ErrorCode::InsufficientPoints, &message))
            }
        }
    }

    /// Applies a claimed voucher to the in-memory state now, so later claims in the group see
    /// it: the batch's count, the holder's slots (already in `held`) and totals (of the season,
    /// and of `month` when the season has a monthly cap).
    fn note_claimed(&mut self, voucher: &Voucher, mut held: CitizenHoldings, month: Option<i32>) {
        if let Some((batch, _)) = self.caches.batches.get_mut(&voucher.batch_id) {
            batch.claimed_count += 1;
        }
        held.season_total_fen += voucher.value.as_fen();
        held.month_total_fen += voucher.value.as_fen();
        let citizen = voucher.citizen_id;
        self.caches.season_totals.insert((voucher.season_id, citizen, SEASON_PERIOD), held.season_total_fen);
        if let Some(month) = month {
            self.caches.season_totals.insert((voucher.season_id, citizen, month), held.month_total_fen);
        }
        self.caches.holdings.insert((voucher.batch_id, citizen), held);
    }

    fn remember(&mut self, commit: &ClaimCommit) {
        for record in &commit.answers {
            if let Some(citizen) = record.scope.strip_prefix("citizen:").and_then(|c| c.parse().ok()) {
                let stored = StoredAnswer {
                    request_hash: record.request_hash.clone(),
                    status: record.status,
                    body: record.body.clone(),
                };
                self.caches.answers.insert((citizen, record.key.clone()), stored);
            }
        }
    }

    /// Expires due vouchers, expires due points and closes the reserves of batches whose claim
    /// window closed. Each stage runs whatever became of the others (a voucher the database
    /// refuses must not keep a batch's reserve from going back); the first failure is returned.
    async fn sweep(&mut self) -> (Result<SweepReport, WriteError>, Vec<WaitlistNotice>) {
        let now = self.clock.now();
        let expired = self.expire_due(now).await;
        let moved = self.move_waitlists(now).await;
        let points_expired = self.expire_points(now).await;
        let batches_closed = self.close_batches(now).await;
        let notices = moved.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
        let report = (|| {
            let (moved_on, notices) = moved?;
            Ok(SweepReport {
                expired: expired?,
                batches_closed: batches_closed?,
                points_expired: points_expired?,
                moved_on,
                notices,
            })
        })();
        (report, notices)
    }

    /// Moves every expired or forfeited voucher of an opened waitlist on to the next in line
    /// (docs/waitlist.md), one transaction each; a move the database refuses (another node's
    /// sweep moved the line first, a cap changed) is tried again at the next sweep.
    async fn move_waitlists(&mut self, now: Timestamp) -> Result<(usize, Vec<WaitlistNotice>), WriteError> {
        const MOVES_PER_SWEEP: i64 = 200;
        let freed = self.store.waitlist_freed(MOVES_PER_SWEEP).await?;
        let (mut moved, mut notices) = (0, Vec::new());
        for voucher in &freed {
            match self.move_one(voucher, now).await {
                Ok((outcome, notice)) => {
                    moved += 1;
                    metrics::counter!(crate::telemetry::WAITLIST_MOVES, "outcome" => outcome).increment(1);
                    notices.extend(notice);
                }
                Err(error) => {
                    tracing::warn!(%error, voucher = %voucher.id, "a waitlist move was refused; tried again next sweep");
                }
            }
        }
        if !freed.is_empty() {
            self.caches.clear();
        }
        Ok((moved, notices))
    }

    /// One freed voucher moved on: the people from the line's cursor on are tried in order; the
    /// first a per-person cap admits gets a voucher (a forfeit's value is first taken back from
    /// the pools into the batch reserve), those it refuses are passed with why. Committed with
    /// the cursor's compare-and-set and the freed voucher's move row (each moves once).
    async fn move_one(
        &mut self,
        freed: &Voucher,
        now: Timestamp,
    ) -> Result<(&'static str, Option<WaitlistNotice>), WriteError> {
        const LOOK_AHEAD: i64 = 100;
        let missing = || WriteError::Refused(Refusal::Code(ErrorCode::BatchNotFound));
        let batch = self.store.batch(freed.batch_id).await?.ok_or_else(missing)?;
        let season = self.store.season(batch.season_id).await?.ok_or_else(missing)?;
        let Some(from_place) = batch.lottery.as_ref().and_then(|l| l.next_place) else {
            return Err(missing());
        };
        let refill = freed.status == VoucherStatus::Forfeited;
        let mut moved = WaitlistMove {
            batch_id: batch.id,
            freed: freed.id,
            new_voucher: None,
            outcome: "list_end",
            from_place,
            to_place: from_place,
            passed: Vec::new(),
            refill: false,
            at: now,
        };
        let mut commit = ClaimCommit::default();
        let mut notice = None;
        if batch.reserve_returned {
            moved.outcome = "batch_closed";
        } else if season.status_at(now) != SeasonStatus::Open {
            moved.outcome = "season_over";
        } else if refill && !self.pools_cover_one(&batch).await? {
            // The forfeit's value went back to the pools and has since been given to another
            // batch: nothing to fund a new voucher with. Recorded, so it is not tried again at
            // every sweep (nor holds back the moves after it).
            moved.outcome = "pools_spent";
        } else {
            let month = crate::domain::finance::cst_month(now);
            'line: loop {
                let people = self.store.waitlist_people(batch.id, moved.to_place, LOOK_AHEAD).await?;
                if people.is_empty() {
                    break;
                }
                let ids: Vec<CitizenId> = people.iter().map(|p| p.citizen_id).collect();
                let holdings = self.store.holdings(batch.id, season.id, month, &ids).await?;
                for person in people {
                    moved.to_place = person.place + 1;
                    let held = holdings.get(&person.citizen_id).cloned().unwrap_or_default();
                    let slot = match held.admit(&batch, &season) {
                        Ok(slot) => slot,
                        Err(_) => {
                            moved.passed.push((person.place, "limit_reached".to_owned()));
                            continue;
                        }
                    };
                    if refill {
                        commit.entries.push(entries::waitlist_refill_entry(&batch, freed.id));
                    }
                    let voucher = add_claimed(&batch, &season, person.citizen_id, slot, now, &mut commit);
                    commit.batch_claims.push((batch.id, 1, batch.stock + i64::from(refill)));
                    moved.new_voucher = Some(voucher.id);
                    moved.outcome = "issued";
                    moved.refill = refill;
                    notice = Some(WaitlistNotice {
                        batch_id: batch.id,
                        batch_name: batch.name.clone(),
                        citizen_id: person.citizen_id,
                        voucher_id: voucher.id,
                        expires_at: voucher.expires_at,
                        sealed_phone: person.sealed_phone,
                    });
                    break 'line;
                }
            }
        }
        let outcome = moved.outcome;
        commit.waitlist_move = Some(moved);
        self.store.commit_claims(&commit).await?;
        Ok((outcome, notice))
    }

    /// Whether each funder's pool still holds its part of one of the batch's vouchers.
    async fn pools_cover_one(&self, batch: &Batch) -> Result<bool, WriteError> {
        for (funder, part) in batch.funding.split(batch.voucher_value()) {
            let pool = crate::domain::accounts::pool(batch.season_id, funder);
            let balance = self.store.balance(&pool.address).await?.unwrap_or_default();
            if balance.credits_fen - balance.debits_fen < part.as_fen() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn close_batches(&mut self, now: Timestamp) -> Result<usize, WriteError> {
        let mut batches_closed = 0;
        for batch in self.store.batches_to_close(now, 100).await? {
            let entry = close_entry(self.store.as_ref(), &batch).await?;
            self.store.close_batch_reserve(batch.id, now, entry.as_ref()).await?;
            self.caches.batches.remove(&batch.id);
            self.caches.generation += 1;
            batches_closed += 1;
        }
        Ok(batches_closed)
    }

    /// Expires the points of every season whose points expiry has come (see
    /// `domain::card::points_expiry`): one entry per card, posted with the season's mark in one
    /// transaction. Runs in the writer, so exchanges never race it.
    async fn expire_points(&mut self, now: Timestamp) -> Result<usize, WriteError> {
        let mut expired = 0;
        for policy in self.store.unexpired_points_policies(100).await? {
            let Some(season) = self.store.season(policy.season_id).await? else { continue };
            let all = self.store.seasons(Some(season.province), None, 1_000).await?;
            let due = crate::domain::card::points_expiry(&season, policy.expire_at, &all)
                .is_some_and(|at| at <= now);
            if !due {
                continue;
            }
            let entries: Vec<NewEntry> = self
                .store
                .season_card_points(season.id)
                .await?
                .into_iter()
                .map(|held| crate::domain::card::expiry_entry(season.id, held.card_id, held.points))
                .collect();
            self.store.commit_points_expiry(season.id, &entries, now).await?;
            expired += entries.len();
        }
        Ok(expired)
    }

    /// One turn of a draw's issuance (see `ClaimWriter::issue_drawn`): the next group of
    /// winners in one transaction; then the job goes back to the end of the queue, or, when the
    /// stock or the winners run out (or on an error), its answer is sent.
    async fn draw_turn(&mut self, mut job: DrawJob) {
        match self.issue_draw_group(&mut job).await {
            Ok(true) => {
                let _ = job.reply.send(Ok(()));
            }
            Ok(false) => {
                let Some(queue) = self.me.upgrade() else { return };
                if let Err(refused) = queue.try_send(Message::Draw(job)) {
                    // The queue is full (or closing): carry on now rather than wait on ourselves.
                    if let Message::Draw(job) = refused.into_inner() {
                        Box::pin(self.draw_turn(job)).await;
                    }
                }
            }
            Err(error) => {
                let _ = job.reply.send(Err(error.to_string()));
            }
        }
    }

    /// Issues vouchers to the next `DRAW_GROUP` winners, as long as stock lasts, skipping a
    /// winner a per-person cap refuses or who holds one already. Whether the draw is done.
    async fn issue_draw_group(&mut self, job: &mut DrawJob) -> Result<bool, WriteError> {
        const DRAW_GROUP: usize = 1_000;
        let now = self.clock.now();
        let missing = || WriteError::Refused(Refusal::Code(ErrorCode::BatchNotFound));
        // The rows as they are now, not as cached: claims of other batches share the totals.
        let batch = self.store.batch(job.batch_id).await?.ok_or_else(missing)?;
        let season = self.store.season(batch.season_id).await?.ok_or_else(missing)?;
        let mut left = batch.stock - batch.outstanding();
        let group: Vec<CitizenId> = job.winners.drain(..DRAW_GROUP.min(job.winners.len())).collect();
        if left <= 0 || group.is_empty() {
            return Ok(true);
        }
        let month = crate::domain::finance::cst_month(now);
        let holdings = self.store.holdings(batch.id, season.id, month, &group).await?;
        let mut commit = ClaimCommit::default();
        for citizen in &group {
            if left <= 0 {
                break;
            }
            let held = holdings.get(citizen).cloned().unwrap_or_default();
            let Ok(slot) = held.admit(&batch, &season) else { continue };
            add_claimed(&batch, &season, *citizen, slot, now, &mut commit);
            left -= 1;
        }
        if !commit.vouchers.is_empty() {
            let count = i64::try_from(commit.vouchers.len()).unwrap_or(i64::MAX);
            commit.batch_claims.push((batch.id, count, batch.stock));
            self.store.commit_claims(&commit).await?;
            // The winners' totals changed under the writer's caches.
            self.caches.clear();
        }
        Ok(left <= 0 || job.winners.is_empty())
    }

    /// Expires up to `SWEEP_LIMIT` due vouchers in one transaction. If the database refuses the
    /// group, each voucher is tried alone, so that one it refuses (a bug, or a row changed behind
    /// the service's back) is logged and skipped instead of holding back every expiry after it.
    async fn expire_due(&mut self, now: Timestamp) -> Result<usize, WriteError> {
        let due = self.store.due_vouchers(now, SWEEP_LIMIT).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut rows: HashMap<BatchId, Option<(Batch, Season)>> = HashMap::new();
        for voucher in &due {
            if let std::collections::hash_map::Entry::Vacant(slot) = rows.entry(voucher.batch_id) {
                let batch = self.store.batch(voucher.batch_id).await?;
                let season = self.store.season(voucher.season_id).await?;
                slot.insert(batch.zip(season));
            }
        }
        let group = expiry_commit(now, &due, &rows);
        let result = self.store.commit_expiries(&group).await;
        // Forgetting is always safe; the notices tell the other nodes (in the transaction).
        for (batch_id, _) in &group.batch_returns {
            self.sold_out.forget(*batch_id);
        }
        // Expiry changes counters and holdings (and a refusal may leave them stale): reload them
        // on next use.
        self.caches.drop_counters();
        let group_error = match result {
            Ok(()) => return Ok(group.voucher_ids.len()),
            Err(error) if due.len() == 1 => return Err(error),
            Err(error) => error,
        };
        tracing::error!(error = %group_error, vouchers = due.len(), "expiry group refused; expiring one at a time");
        let mut expired = 0;
        for voucher in &due {
            let one = expiry_commit(now, std::slice::from_ref(voucher), &rows);
            if one.voucher_ids.is_empty() {
                continue;
            }
            match self.store.commit_expiries(&one).await {
                Ok(()) => expired += 1,
                Err(error) => tracing::error!(%error, voucher = %voucher.id, "voucher expiry refused"),
            }
        }
        if expired == 0 { Err(group_error) } else { Ok(expired) }
    }
}

/// Adds a voucher of `batch` for `citizen` in `slot`, claimed at `now`, to the commit: the
/// voucher, its claim entry and the capped totals it counts toward (the caller counts it
/// against the batch's stock).
fn add_claimed(
    batch: &Batch,
    season: &Season,
    citizen: CitizenId,
    slot: u32,
    now: Timestamp,
    commit: &mut ClaimCommit,
) -> Voucher {
    let voucher = Voucher {
        id: VoucherId::new_v7(),
        batch_id: batch.id,
        season_id: season.id,
        citizen_id: citizen,
        slot,
        status: VoucherStatus::Active,
        value: batch.voucher_value(),
        claimed_at: now,
        expires_at: batch.expiry_for(now, season),
    };
    commit.entries.push(claim_entry(batch, &voucher));
    commit.season_totals.extend(SeasonTotalDelta::for_voucher(season, &voucher, true));
    commit.vouchers.push(voucher.clone());
    voucher
}

/// The expiry of `vouchers` at `now`: entries, counters and season totals. A voucher whose
/// batch or season row is missing (`rows`) is left out.
fn expiry_commit(
    now: Timestamp,
    vouchers: &[Voucher],
    rows: &HashMap<BatchId, Option<(Batch, Season)>>,
) -> ExpiryCommit {
    let mut commit = ExpiryCommit { expired_at: now, ..ExpiryCommit::default() };
    for voucher in vouchers {
        let Some(Some((batch, season))) = rows.get(&voucher.batch_id) else { continue };
        commit.entries.push(expiry_entry(batch, voucher));
        commit.voucher_ids.push(voucher.id);
        match commit.batch_returns.iter_mut().find(|(id, _)| *id == batch.id) {
            Some((_, count)) => *count += 1,
            None => {
                commit.batch_returns.push((batch.id, 1));
                commit.planned_reserves.push((batch.id, batch.reserve_returned));
            }
        }
        commit.season_totals.extend(SeasonTotalDelta::for_voucher(season, voucher, false));
    }
    commit.notices = commit
        .batch_returns
        .iter()
        .map(|(batch_id, _)| NodeEvent::StockReturned(*batch_id).encode())
        .collect();
    commit
}

/// Whether a refused commit is worth deciding again on fresh state: everything but a database
/// that could not be reached (or failed otherwise), where the answer is 503.
fn decide_again(error: &WriteError) -> bool {
    match error {
        WriteError::Storage(storage) => storage.is_transient_conflict(),
        _ => true,
    }
}

fn reply_all(pending: Vec<Pending>) {
    for p in pending {
        let answer = p.answer.unwrap_or_else(Answer::unavailable);
        let _ = p.request.reply.send(answer);
    }
}

fn replay(stored: &StoredAnswer, request_hash: &[u8]) -> Answer {
    if stored.request_hash == request_hash {
        Answer::from_stored(stored)
    } else {
        Answer::error(
            422,
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        )
    }
}

/// The card an exchange pays with, and the points it spends per season.
type Spent = (CardId, Vec<(SeasonId, i64)>);

/// Adds the exchange's points entry to the commit and takes the points off the card in
/// memory; returns the points the card has left.
fn spend_points(
    cards: &mut HashMap<CardId, CardPoints>,
    voucher_id: VoucherId,
    card_id: CardId,
    parts: &[(SeasonId, i64)],
    commit: &mut ClaimCommit,
) -> i64 {
    // Its own entry: points never share an entry with fen.
    commit.entries.push(crate::domain::card::exchange_entry(voucher_id, card_id, parts));
    commit.paying_cards.push(card_id);
    let Some(card) = cards.get_mut(&card_id) else { return 0 };
    for (season, balance) in card.balances.iter_mut() {
        *balance -= parts.iter().filter(|(s, _)| s == season).map(|(_, p)| *p).sum::<i64>();
    }
    card.balances.iter().map(|(_, p)| (*p).max(0)).sum()
}

/// The exchange's own refusals, before the claim's: the batch takes points, at this price, and
/// the card may pay.
fn exchange_allowed(batch: &Batch, exchange: &Exchange, card: Option<&CardPoints>) -> Result<(), Answer> {
    let Some(price) = batch.points_price else {
        return Err(Answer::error(
            409,
            ErrorCode::NotExchangeable,
            "this batch cannot be exchanged for points",
        ));
    };
    if exchange.points != price {
        let message = format!("a voucher of this batch costs {price} points, not {}", exchange.points);
        return Err(Answer::error(409, ErrorCode::PointsPriceMismatch, &message));
    }
    match card {
        None => Err(Answer::error(404, ErrorCode::CardNotFound, "no such card")),
        Some(card) if card.frozen => Err(Answer::error(403, ErrorCode::CardFrozen, "the card is frozen")),
        Some(_) => Ok(()),
    }
}

fn refusal_answer(refusal: ClaimRefusal) -> Answer {
    match refusal {
        ClaimRefusal::SeasonClosed => Answer::error(409, ErrorCode::SeasonClosed, "the season is closed"),
        ClaimRefusal::NotOpen(message) => Answer::error(409, ErrorCode::NotOpen, &message),
        ClaimRefusal::SoldOut(message) => Answer::error(409, ErrorCode::SoldOut, &message),
        ClaimRefusal::LimitReached(message) => Answer::error(409, ErrorCode::LimitReached, &message),
    }
}

/// The voucher as the API shows it.
pub fn voucher_json(voucher: &Voucher, batch: &Batch) -> VoucherAnswer {
    VoucherAnswer {
        id: voucher.id,
        batch_id: voucher.batch_id,
        status: voucher.status.as_str(),
        claimed_at: voucher.claimed_at.to_string(),
        expires_at: voucher.expires_at.to_string(),
        terms: TermsAnswer::of(batch),
    }
}

/// A voucher as its holder sees it: its batch's terms and its own dates.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VoucherAnswer {
    pub id: VoucherId,
    pub batch_id: BatchId,
    /// active, used, expired or forfeited.
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub claimed_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[serde(flatten)]
    pub terms: TermsAnswer,
}

/// A batch's voucher terms, by `kind`; amounts in yuan.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TermsAnswer {
    /// `face_value` off an order of at least `min_spend`.
    Threshold { face_value: String, min_spend: String },
    /// `percent` off, at most `cap`, in steps of `step`, on an order of at least `min_spend`.
    Percent { percent: u32, cap: String, step: String, min_spend: String },
}

impl TermsAnswer {
    pub fn of(batch: &Batch) -> TermsAnswer {
        use crate::domain::funding::VoucherTerms;
        match &batch.terms {
            VoucherTerms::Threshold { face_value, min_spend } => TermsAnswer::Threshold {
                face_value: face_value.to_string(),
                min_spend: min_spend.to_string(),
            },
            VoucherTerms::Percent { percent, cap, step, min_spend } => TermsAnswer::Percent {
                percent: *percent,
                cap: cap.to_string(),
                step: step.to_string(),
                min_spend: min_spend.to_string(),
            },
        }
    }
}

/// The answer to a claim (and to a points exchange, which adds what the card paid and kept).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ClaimAnswer {
    pub voucher: VoucherAnswer,
    /// Points the card paid (an exchange only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_spent: Option<i64>,
    /// Points the card holds after paying (an exchange only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_balance: Option<i64>,
}

/// The batch close entry ([`entries::close_entry`]), built from each funder's reserve balance as
/// read now; `None` when nothing is left.
pub async fn close_entry(store: &dyn LedgerStore, batch: &Batch) -> Result<Option<NewEntry>, StorageError> {
    Ok(entries::close_entry(batch, &reserve_left(store, batch).await?))
}

/// What is left in each funder's part of the batch reserve (credits minus debits).
async fn reserve_left(
    store: &dyn LedgerStore,
    batch: &Batch,
) -> Result<Vec<(RegionCode, i64)>, StorageError> {
    let mut left = Vec::new();
    for (funder, _) in batch.funding.iter() {
        let reserve = accounts::reserve(batch.season_id, batch.id, funder);
        let balance = store.balance(&reserve.address).await?;
        left.push((funder, balance.map(|b| b.credits_fen - b.debits_fen).unwrap_or(0)));
    }
    Ok(left)
}

/// Enters the citizen in a lottery batch's draw, during its claim window (409 `not_a_lottery` for
/// a batch claimed in a rush, `not_open` outside the window), once: when they first entered.
pub async fn enter_lottery(
    store: &dyn Storage,
    batch_id: BatchId,
    citizen_id: CitizenId,
    now: Timestamp,
) -> Result<Timestamp, AppError> {
    let batch = batch_taking_entries(store, batch_id, now, |batch| match batch.lottery {
        Some(_) => Ok(()),
        None => Err(crate::app::seasons::not_a_lottery()),
    })
    .await?;
    Ok(store.enter_lottery(batch.id, citizen_id, now).await?)
}

/// The batch a citizen enters (a lottery's draw, a waitlist), if `kind` accepts it and its
/// window is open at `now`: 404 `batch_not_found`, `kind`'s refusal, 409 `not_open` (or a
/// closed season) outside the window.
pub async fn batch_taking_entries(
    store: &dyn Storage,
    batch_id: BatchId,
    now: Timestamp,
    kind: impl FnOnce(&Batch) -> Result<(), AppError>,
) -> Result<Batch, AppError> {
    let batch = store
        .batch(batch_id)
        .await?
        .ok_or_else(|| AppError::not_found(ErrorCode::BatchNotFound, "no such batch"))?;
    kind(&batch)?;
    let season = store
        .season(batch.season_id)
        .await?
        .ok_or_else(|| AppError::internal("a batch without its season"))?;
    let window = match batch.check_open(&season, now) {
        Err(ClaimRefusal::SeasonClosed) => Err("the season is closed".to_owned()),
        Err(ClaimRefusal::NotOpen(message)) => Err(message),
        _ => Ok(()),
    };
    window.map_err(|message| AppError::conflict(ErrorCode::NotOpen, message))?;
    Ok(batch)
}

/// The voucher a QR code may be drawn for: the citizen's own (404 `voucher_not_found` for
/// another's, as for none) and active now (409 `voucher_not_redeemable`).
pub fn voucher_for_qr(
    found: Option<Voucher>,
    citizen_id: CitizenId,
    now: Timestamp,
) -> Result<Voucher, AppError> {
    let voucher = found
        .filter(|v| v.citizen_id == citizen_id)
        .ok_or_else(|| AppError::not_found(ErrorCode::VoucherNotFound, "no such voucher of yours"))?;
    let status = voucher.status_at(now);
    if status != VoucherStatus::Active {
        return Err(AppError::conflict(
            ErrorCode::VoucherNotRedeemable,
            format!("the voucher is {}", status.as_str()),
        ));
    }
    Ok(voucher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_qr_code_is_for_ones_own_active_voucher() {
        let holder = CitizenId::from_uuid(Uuid::from_u128(1));
        let voucher = Voucher {
            id: VoucherId::from_uuid(Uuid::from_u128(2)),
            batch_id: BatchId::from_uuid(Uuid::from_u128(3)),
            season_id: SeasonId::from_uuid(Uuid::from_u128(4)),
            citizen_id: holder,
            slot: 1,
            status: VoucherStatus::Active,
            value: crate::domain::money::Fen::from_fen_unchecked(1_000),
            claimed_at: Timestamp::from_unix_us(0),
            expires_at: Timestamp::from_unix_us(100),
        };
        let now = Timestamp::from_unix_us(50);
        assert_eq!(voucher_for_qr(Some(voucher.clone()), holder, now).expect("own, active"), voucher);
        let code = |result: Result<Voucher, AppError>| result.expect_err("refused").code();
        let stranger = CitizenId::from_uuid(Uuid::from_u128(9));
        assert_eq!(
            code(voucher_for_qr(Some(voucher.clone()), stranger, now)),
            Some(ErrorCode::VoucherNotFound)
        );
        assert_eq!(code(voucher_for_qr(None, holder, now)), Some(ErrorCode::VoucherNotFound));
        let late = Timestamp::from_unix_us(100);
        assert_eq!(
            code(voucher_for_qr(Some(voucher.clone()), holder, late)),
            Some(ErrorCode::VoucherNotRedeemable)
        );
        let used = Voucher { status: VoucherStatus::Redeemed, ..voucher };
        assert_eq!(code(voucher_for_qr(Some(used), holder, now)), Some(ErrorCode::VoucherNotRedeemable));
    }

    fn claim(n: u128) -> Message {
        let (reply, _) = oneshot::channel();
        Message::Claim(ClaimRequest {
            citizen_id: CitizenId::from_uuid(Uuid::from_u128(n)),
            batch_id: BatchId::from_uuid(Uuid::from_u128(0)),
            idem_key: format!("key-{n}"),
            request_hash: Vec::new(),
            exchange: None,
            reply,
        })
    }

    fn draw() -> Message {
        let (reply, _) = oneshot::channel();
        Message::Draw(DrawJob {
            batch_id: BatchId::from_uuid(Uuid::from_u128(9)),
            winners: [CitizenId::from_uuid(Uuid::from_u128(1))].into(),
            reply,
        })
    }

    fn citizens(turn: &Turn) -> Vec<u128> {
        turn.claims.iter().map(|c| c.citizen_id.as_uuid().as_u128()).collect()
    }

    #[test]
    fn a_draw_ends_the_gathering_and_goes_after_the_claims_before_it() {
        let mut queue: std::collections::VecDeque<Message> =
            [draw(), claim(3), Message::Invalidate, claim(4)].into();
        let mut turn = Turn::gather(claim(1), || queue.pop_front());
        assert_eq!((citizens(&turn), turn.draw.is_some(), turn.invalidate), (vec![1], true, false));
        turn.gather_more(|| queue.pop_front());
        assert_eq!(queue.len(), 3, "the claims after the draw wait for the next turn");
        let first = queue.pop_front().expect("queued");
        let mut next = Turn::gather(first, || None);
        assert_eq!(citizens(&next), vec![3], "gathered ahead, while a commit was in flight");
        next.gather_more(|| queue.pop_front());
        assert_eq!((citizens(&next), next.draw.is_none(), next.invalidate), (vec![3, 4], true, true));
    }

    #[test]
    fn rows_read_ahead_never_replace_the_caches_and_are_dropped_after_a_clear() {
        let (batch, season) =
            (BatchId::from_uuid(Uuid::from_u128(1)), SeasonId::from_uuid(Uuid::from_u128(2)));
        let (known, fresh) =
            (CitizenId::from_uuid(Uuid::from_u128(3)), CitizenId::from_uuid(Uuid::from_u128(4)));
        let mut caches = Caches::default();
        let claimed = CitizenHoldings { slots: vec![1], season_total_fen: 500, month_total_fen: 500 };
        caches.holdings.insert((batch, known), claimed.clone());
        caches.season_totals.insert((season, known, SEASON_PERIOD), 500);
        let read = || Context {
            generation: 0,
            asked: vec![(fresh, "k".to_owned())],
            holdings: vec![HoldingsRead {
                batch_id: batch,
                season_id: season,
                month: 202612,
                monthly: false,
                rows: [(known, CitizenHoldings::default()), (fresh, CitizenHoldings::default())].into(),
            }],
            ..Context::default()
        };
        caches.merge(read());
        assert_eq!(caches.holdings.get(&(batch, known)), Some(&claimed), "the writer's own state wins");
        assert_eq!(caches.season_totals.get(&(season, known, SEASON_PERIOD)), Some(&500));
        assert_eq!(caches.holdings.get(&(batch, fresh)), Some(&CitizenHoldings::default()));
        assert!(caches.unanswered.contains(&(fresh, "k".to_owned())));
        caches.clear();
        caches.merge(read());
        assert!(caches.holdings.is_empty() && caches.unanswered.is_empty(), "read before the clear");
    }

    #[test]
    fn a_group_stops_at_max_group_claims() {
        let mut queue: std::collections::VecDeque<Message> = (1..=MAX_GROUP as u128 + 5).map(claim).collect();
        let first = queue.pop_front().expect("queued");
        let turn = Turn::gather(first, || queue.pop_front());
        assert_eq!((turn.claims.len(), queue.len()), (MAX_GROUP, 5));
        let sweep_only = Turn::gather(Message::Sweep(oneshot::channel().0), || None);
        assert_eq!((sweep_only.sweeps.len(), sweep_only.claims.len()), (1, 0));
    }
}
