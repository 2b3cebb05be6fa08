//! The benefit card's storage: cards, member discount terms, the points policy of a season, card
//! payments and their reversals, points expiry, and the finance figures and checks of the
//! points accounts: the trait, its shapes, and its implementation on either backend.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::accounts;
use crate::domain::card::{self, Card, CardStatus, CardVia, Clawback, Earning, MemberTerms, PointsDebt};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{CardId, CardPaymentId, CitizenId, MerchantId, ReversalId, SeasonId, TerminalId};
use crate::domain::ledger::{Balance, NewEntry};
use crate::domain::money::Fen;
use crate::domain::time::Timestamp;
use crate::storage::db::{AsExec, QueryBuilder, query, query_as};
use crate::storage::ledger::{AddressBalanceRow, BalanceMismatchRow, INSERT_CHUNK_ROWS};
use crate::storage::{IdemRecord, LedgerStore, Refusal, SeasonStore, SqlStore, StorageError, WriteError};

/// A card's points in one season: what it holds and what it owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardPointsLine {
    pub season_id: SeasonId,
    pub points: i64,
    pub debt: i64,
}

/// A citizen's card as its holder sees it: the card, and its points per season.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardHolding {
    pub card: Card,
    /// Oldest season (by start, then id) first.
    pub seasons: Vec<HeldPoints>,
}

/// A card's points in one season, and when they expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldPoints {
    pub season_id: SeasonId,
    pub points: i64,
    pub debt: i64,
    /// `card::points_expiry` of the season, when the season has a points policy.
    pub expires_at: Option<Timestamp>,
}

/// The points a card holds in one season (more than none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardSeasonPoints {
    pub card_id: CardId,
    pub points: i64,
}

/// The province's points policy for a season.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointsPolicy {
    pub season_id: SeasonId,
    pub points_per_yuan: u32,
    /// A moment the province fixed for the season's points to expire (None: the default rule).
    pub expire_at: Option<Timestamp>,
    /// When the sweeper expired the season's points.
    pub expired_at: Option<Timestamp>,
}

/// A card payment ready to commit. The checks that need the database (QR nonce, card state, the
/// order's other payments) and the repayment of debts run inside its transaction; `answer`
/// renders the stored answer from the decided earning.
pub struct NewCardPayment {
    pub id: CardPaymentId,
    pub card_id: CardId,
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    pub season_id: Option<SeasonId>,
    pub order_ref: String,
    pub order_amount_fen: i64,
    pub discount_fen: i64,
    pub points: i64,
    pub paid_at: Timestamp,
    pub qr_nonce: Vec<u8>,
    pub answer: Box<dyn Fn(&Earning) -> IdemRecord + Send + Sync>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardPaymentRecord {
    pub id: CardPaymentId,
    pub card_id: CardId,
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    pub season_id: Option<SeasonId>,
    pub order_ref: String,
    pub order_amount_fen: i64,
    pub discount_fen: i64,
    pub points: i64,
    pub debt_repaid: Vec<PointsDebt>,
    pub paid_at: Timestamp,
    pub reversed_at: Option<Timestamp>,
    pub reversal_id: Option<ReversalId>,
    pub points_taken_back: Option<i64>,
    pub points_debt_added: Option<i64>,
}

/// A reversal of a card payment; how many points come back from the card and how many become
/// debt is decided under the ledger lock, and `answer` renders the stored answer from it.
pub struct NewCardReversal {
    pub payment_id: CardPaymentId,
    pub reversal_id: ReversalId,
    pub reason: String,
    pub at: Timestamp,
    pub answer: Box<dyn Fn(&Clawback) -> IdemRecord + Send + Sync>,
}

/// Card figures of one season, for the season report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CardFigures {
    /// Cards issued while the season ran (`starts_at <= issued_at < ends_at`), by way.
    pub cards_issued_mobile: i64,
    pub cards_issued_bank_card: i64,
    /// Member discounts merchants gave on the season's card payments that stand (not reversed).
    /// Merchants fund these; they are not government money and not in the ledger.
    pub member_discount_fen: i64,
    /// From the ledger, in points: the season's points accounts.
    pub points_earned: i64,
    pub points_exchanged: i64,
    pub points_expired: i64,
    pub points_reversed: i64,
    pub points_outstanding: i64,
    pub points_debt: i64,
}

/// A merchant's member terms as stored: a percent, and a cap in fen if any.
#[derive(sqlx::FromRow)]
struct CardTermsRow {
    percent: i32,
    cap_fen: Option<i64>,
}

/// How many cards were issued one way (`mobile` or `bank_card`).
#[derive(sqlx::FromRow)]
struct IssuedCardsRow {
    via: String,
    cards: i64,
}

/// A `season_points` row.
#[derive(sqlx::FromRow)]
struct PointsPolicyRow {
    season_id: SeasonId,
    points_per_yuan: i32,
    expire_at_us: Option<i64>,
    expired_at_us: Option<i64>,
}

#[async_trait]
pub trait CardStore: Send + Sync {
    /// Issues a card; `Constraint(CardPerCitizen)` if the citizen has one (the database's UNIQUE),
    /// `Constraint(CardNumber)` if the random number collided (draw another).
    async fn insert_card(&self, card: &Card) -> Result<(), WriteError>;

    async fn card(&self, id: CardId) -> Result<Option<Card>, StorageError>;

    async fn card_by_citizen(&self, citizen_id: CitizenId) -> Result<Option<Card>, StorageError>;

    async fn set_card_status(
        &self,
        id: CardId,
        status: crate::domain::card::CardStatus,
        at: Timestamp,
    ) -> Result<bool, StorageError>;

    /// The citizen's card, its points and debts per season and when they expire, in one
    /// statement (`GET /v1/me/card`).
    async fn card_holding(&self, citizen_id: CitizenId) -> Result<Option<CardHolding>, StorageError>;

    /// The card's points and debts per season, oldest season (by start) first.
    async fn card_points(&self, card_id: CardId) -> Result<Vec<CardPointsLine>, StorageError>;

    async fn set_card_terms(
        &self,
        merchant_id: MerchantId,
        terms: &MemberTerms,
        at: Timestamp,
    ) -> Result<(), StorageError>;

    async fn card_terms(&self, merchant_id: MerchantId) -> Result<Option<MemberTerms>, StorageError>;

    async fn set_points_policy(&self, policy: &PointsPolicy, at: Timestamp) -> Result<(), StorageError>;

    async fn points_policy(&self, season_id: SeasonId) -> Result<Option<PointsPolicy>, StorageError>;

    /// Policies of seasons whose points have not expired yet.
    async fn unexpired_points_policies(&self, limit: i64) -> Result<Vec<PointsPolicy>, StorageError>;

    /// `live_card_payment` for many (merchant, order_ref) pairs in one query, in order.
    async fn live_card_payments(
        &self,
        orders: &[(MerchantId, String)],
    ) -> Result<Vec<Option<CardPaymentRecord>>, StorageError>;

    /// Whether a live voucher redemption exists on an order at a merchant.
    async fn live_redemption_on(
        &self,
        merchant_id: MerchantId,
        order_ref: &str,
    ) -> Result<bool, StorageError>;

    /// Commits a card payment under the ledger lock and returns the answer it stored.
    async fn commit_card_payment(&self, payment: &NewCardPayment) -> Result<IdemRecord, WriteError>;

    async fn card_payment(&self, id: CardPaymentId) -> Result<Option<CardPaymentRecord>, StorageError>;

    /// Commits a reversal under the ledger lock and returns the answer it stored.
    async fn commit_card_reversal(&self, reversal: &NewCardReversal) -> Result<IdemRecord, WriteError>;

    /// Every card's positive points balance of a season.
    async fn season_card_points(&self, season_id: SeasonId) -> Result<Vec<CardSeasonPoints>, StorageError>;

    /// Posts a season's points expiry entries and marks the season's points expired, at once.
    async fn commit_points_expiry(
        &self,
        season_id: SeasonId,
        entries: &[NewEntry],
        at: Timestamp,
    ) -> Result<(), WriteError>;

    /// The season report's card figures (for `GET /v1/seasons/{id}/report`).
    async fn card_figures(&self, season_id: SeasonId) -> Result<CardFigures, StorageError>;

    /// What does not reconcile in the season's points (empty: everything does): the points
    /// identity `earned - exchanged - expired - reversed = outstanding - debt`; every card points
    /// account's maintained balance against its postings; every card payment and reversal that
    /// moved points against exactly one ledger entry of the same points, and every such entry
    /// against its payment.
    async fn card_breaks(&self, season_id: SeasonId) -> Result<Vec<String>, StorageError>;
}

pub(crate) const CARD_COLUMNS: &str =
    "id, citizen_id, card_number, via, bank_bin, bank_last4, status, issued_at_us";
pub(crate) const CARD_PAYMENT_COLUMNS: &str = "id, card_id, merchant_id, terminal_id, season_id, order_ref, \
     order_amount_fen, discount_fen, points, debt_repaid, paid_at_us, reversed_at_us, reversal_id, \
     points_taken_back, points_debt_added";

#[derive(Clone, sqlx::FromRow)]
pub(crate) struct CardRow {
    id: CardId,
    citizen_id: CitizenId,
    card_number: String,
    via: String,
    bank_bin: Option<String>,
    bank_last4: Option<String>,
    status: String,
    issued_at_us: i64,
}

impl CardRow {
    pub fn into_card(self) -> Result<Card, StorageError> {
        use crate::domain::card::{CardNumber, CardStatus, CardVia};
        let corrupt = |what: &str| StorageError::Corrupt(format!("card {}: {what}", self.id));
        let via = match (self.via.as_str(), &self.bank_bin, &self.bank_last4) {
            ("mobile", None, None) => CardVia::Mobile,
            ("bank_card", Some(bin), Some(last4)) => {
                CardVia::BankCard { bin: bin.clone(), last4: last4.clone() }
            }
            _ => return Err(corrupt("via")),
        };
        Ok(Card {
            id: self.id,
            citizen_id: self.citizen_id,
            number: CardNumber::parse(&self.card_number).map_err(|_| corrupt("number"))?,
            via,
            status: CardStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            issued_at: Timestamp::from_unix_us(self.issued_at_us),
        })
    }
}

/// A row of the card read: the card, and one season it has points in (all NULL when none).
#[derive(sqlx::FromRow)]
struct CardHoldingRow {
    #[sqlx(flatten)]
    card: CardRow,
    season_id: Option<SeasonId>,
    /// The season's `season_points` row, if any (no policy: the points never expire).
    policy_season_id: Option<SeasonId>,
    fixed_expire_at_us: Option<i64>,
    /// The `ends_at` of the second season of the province starting after this one.
    after_next_ends_at_us: Option<i64>,
    points: i64,
    points_debt: i64,
}

impl CardHoldingRow {
    fn into_holding(rows: Vec<CardHoldingRow>) -> Result<Option<CardHolding>, StorageError> {
        let mut rows = rows.into_iter().peekable();
        let Some(first) = rows.peek() else { return Ok(None) };
        let card = first.card.clone().into_card()?;
        let seasons = rows.filter_map(CardHoldingRow::held).collect();
        Ok(Some(CardHolding { card, seasons }))
    }

    fn held(self) -> Option<HeldPoints> {
        let season_id = self.season_id?;
        let fixed = self.fixed_expire_at_us.map(Timestamp::from_unix_us);
        let after_next = self.after_next_ends_at_us.map(Timestamp::from_unix_us);
        Some(HeldPoints {
            season_id,
            points: self.points,
            debt: self.points_debt,
            expires_at: self.policy_season_id.and(fixed.or(after_next)),
        })
    }
}

impl SqlStore {
    /// The card read of `card_holding`: the citizen's card (its UNIQUE `citizen_id`), the seasons
    /// it has payments in (`card_payments_by_card_season`), each season's points policy and the
    /// season after next (as `card::points_expiry` finds it), and the two points accounts'
    /// balances (`accounts.address` is unique). One row per season, or one with NULLs.
    fn card_holding_sql(&self) -> String {
        let (card, season) =
            (self.backend.uuid_text_sql("c.id"), self.backend.uuid_text_sql("paid.season_id"));
        let address = |kind: &str| format!("'card:' || {card} || ':season:' || {season} || ':{kind}'");
        format!(
            "WITH c AS (SELECT {CARD_COLUMNS} FROM cards WHERE citizen_id = $1), \
             paid AS (SELECT DISTINCT p.season_id, s.province, s.starts_at_us FROM card_payments p \
               JOIN c ON p.card_id = c.id JOIN seasons s ON s.id = p.season_id) \
             SELECT c.id, c.citizen_id, c.card_number, c.via, c.bank_bin, c.bank_last4, c.status, c.issued_at_us, \
               paid.season_id, sp.season_id AS policy_season_id, sp.expire_at_us AS fixed_expire_at_us, \
               (SELECT n.ends_at_us FROM seasons n WHERE n.province = paid.province AND n.id <> paid.season_id \
                 AND n.starts_at_us > paid.starts_at_us ORDER BY n.starts_at_us, n.id LIMIT 1 OFFSET 1) \
                 AS after_next_ends_at_us, \
               COALESCE(hb.credits_fen - hb.debits_fen, 0) AS points, \
               COALESCE(ob.debits_fen - ob.credits_fen, 0) AS points_debt \
             FROM c LEFT JOIN paid ON TRUE \
             LEFT JOIN season_points sp ON sp.season_id = paid.season_id \
             LEFT JOIN accounts ha ON ha.address = {held} \
             LEFT JOIN account_balances hb ON hb.account_id = ha.id \
             LEFT JOIN accounts oa ON oa.address = {owed} \
             LEFT JOIN account_balances ob ON ob.account_id = oa.id \
             ORDER BY paid.starts_at_us, paid.season_id",
            held = address("points"),
            owed = address("points_debt"),
        )
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CardPaymentRow {
    id: CardPaymentId,
    card_id: CardId,
    merchant_id: MerchantId,
    terminal_id: TerminalId,
    season_id: Option<SeasonId>,
    order_ref: String,
    order_amount_fen: i64,
    discount_fen: i64,
    points: i64,
    debt_repaid: String,
    paid_at_us: i64,
    reversed_at_us: Option<i64>,
    reversal_id: Option<ReversalId>,
    points_taken_back: Option<i64>,
    points_debt_added: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RepaidJson {
    season_id: SeasonId,
    points: i64,
}

pub(crate) fn repaid_json(repaid: &[PointsDebt]) -> String {
    let rows: Vec<RepaidJson> =
        repaid.iter().map(|d| RepaidJson { season_id: d.season_id, points: d.points }).collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}

impl CardPaymentRow {
    pub fn into_record(self) -> Result<CardPaymentRecord, StorageError> {
        let repaid: Vec<RepaidJson> = serde_json::from_str(&self.debt_repaid)
            .map_err(|_| StorageError::Corrupt(format!("card payment {}: debt_repaid", self.id)))?;
        Ok(CardPaymentRecord {
            id: self.id,
            card_id: self.card_id,
            merchant_id: self.merchant_id,
            terminal_id: self.terminal_id,
            season_id: self.season_id,
            order_ref: self.order_ref,
            order_amount_fen: self.order_amount_fen,
            discount_fen: self.discount_fen,
            points: self.points,
            debt_repaid: repaid
                .into_iter()
                .map(|r| PointsDebt { season_id: r.season_id, points: r.points })
                .collect(),
            paid_at: Timestamp::from_unix_us(self.paid_at_us),
            reversed_at: self.reversed_at_us.map(Timestamp::from_unix_us),
            reversal_id: self.reversal_id,
            points_taken_back: self.points_taken_back,
            points_debt_added: self.points_debt_added,
        })
    }
}

/// What the rows of a season say the ledger must hold, against what it holds: one break per
/// difference. `rows` are (payment id, points, reversal id); `entries` are (reference, points
/// credited) for every card payment and reversal entry; `known` every card payment's and
/// reversal's id.
/// A `card_payments` row as the ledger check reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct PaymentPointsRow {
    pub id: Uuid,
    pub points: i64,
    pub reversal_id: Option<Uuid>,
}

pub(crate) fn entry_breaks(
    rows: &[PaymentPointsRow],
    entries: &std::collections::HashMap<String, i64>,
    known: &std::collections::HashSet<Uuid>,
) -> Vec<String> {
    let mut breaks = Vec::new();
    for PaymentPointsRow { id, points, reversal_id } in rows {
        let mut expect = vec![format!("card_payment:{id}")];
        expect.extend(reversal_id.map(|r| format!("card_reversal:{r}")));
        for reference in expect {
            match (entries.get(&reference), *points > 0) {
                (Some(found), true) if found == points => {}
                (Some(found), true) => {
                    breaks.push(format!("{reference} moved {found} points, its row {points}"))
                }
                (None, true) => {
                    breaks.push(format!("{reference} earned {points} points but has no ledger entry"))
                }
                (Some(_), false) => {
                    breaks.push(format!("{reference} earned no points but has a ledger entry"))
                }
                (None, false) => {}
            }
        }
    }
    for reference in entries.keys() {
        let id = reference.split_once(':').and_then(|(_, id)| id.parse::<Uuid>().ok());
        if !id.is_some_and(|id| known.contains(&id)) {
            breaks.push(format!("ledger entry {reference} has no card payment or reversal"));
        }
    }
    breaks.sort();
    breaks
}

impl SqlStore {
    /// Maintained balances of the given addresses (absent accounts are absent).
    async fn balances_on(
        conn: &mut impl AsExec,
        addresses: &[String],
    ) -> Result<HashMap<String, Balance>, sqlx::Error> {
        let mut found = HashMap::new();
        for chunk in addresses.chunks(INSERT_CHUNK_ROWS) {
            let mut q = QueryBuilder::new(
                "SELECT a.address, COALESCE(b.debits_fen, 0) AS debits_fen, COALESCE(b.credits_fen, 0) AS credits_fen \
                 FROM accounts a \
                 LEFT JOIN account_balances b ON b.account_id = a.id WHERE a.address IN (",
            );
            let mut list = q.separated(", ");
            for address in chunk {
                list.push_bind(address.clone());
            }
            q.push(")");
            let rows: Vec<AddressBalanceRow> = q.build_query_as().fetch_all(&mut *conn).await?;
            found.extend(rows.into_iter().map(AddressBalanceRow::into_pair));
        }
        Ok(found)
    }

    /// The card's points and debts per season, oldest season first. Points only ever
    /// land in seasons the card has payments in, so those name every account.
    async fn points_lines_on(
        conn: &mut impl AsExec,
        card_id: CardId,
    ) -> Result<Vec<CardPointsLine>, sqlx::Error> {
        let seasons: Vec<(SeasonId, i64)> = query_as(
            "SELECT DISTINCT p.season_id, s.starts_at_us FROM card_payments p JOIN seasons s ON s.id = p.season_id \
             WHERE p.card_id = $1 ORDER BY s.starts_at_us, p.season_id",
        )
        .bind(card_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut addresses = Vec::new();
        for (season, _) in &seasons {
            addresses.push(accounts::card_points(card_id, *season).address.to_string());
            addresses.push(accounts::card_points_debt(card_id, *season).address.to_string());
        }
        let balances = Self::balances_on(conn, &addresses).await?;
        Ok(seasons
            .into_iter()
            .map(|(season, _)| {
                let held = balances
                    .get(accounts::card_points(card_id, season).address.as_str())
                    .copied()
                    .unwrap_or_default();
                let owed = balances
                    .get(accounts::card_points_debt(card_id, season).address.as_str())
                    .copied()
                    .unwrap_or_default();
                CardPointsLine {
                    season_id: season,
                    points: held.credits_fen - held.debits_fen,
                    debt: owed.debits_fen - owed.credits_fen,
                }
            })
            .collect())
    }

    async fn card_answer_exists(
        conn: &mut impl AsExec,
        answer_scope: &str,
        key: &str,
    ) -> Result<bool, sqlx::Error> {
        let row: Option<(i32,)> =
            query_as("SELECT status FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
                .bind(answer_scope.to_owned())
                .bind(key.to_owned())
                .fetch_optional(&mut *conn)
                .await?;
        Ok(row.is_some())
    }

    async fn live_redemption_on_conn(
        conn: &mut impl AsExec,
        merchant_id: MerchantId,
        order_ref: &str,
    ) -> Result<bool, sqlx::Error> {
        let row: Option<(Uuid,)> = query_as(
            "SELECT id FROM redemptions WHERE merchant_id = $1 AND order_ref = $2 AND reversed_at_us IS NULL LIMIT 1",
        )
        .bind(merchant_id)
        .bind(order_ref.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.is_some())
    }

    /// A card payment's checks under the ledger lock, each refused with its own code: the QR
    /// token unspent, the card active, no live voucher redemption and no live card payment on
    /// the order, and the earning season's points not expired meanwhile.
    async fn card_payment_checks(conn: &mut impl AsExec, p: &NewCardPayment) -> Result<(), WriteError> {
        let nonce: Option<(i64,)> = query_as("SELECT used_at_us FROM qr_nonces WHERE nonce = $1")
            .bind(p.qr_nonce.clone())
            .fetch_optional(&mut *conn)
            .await?;
        if nonce.is_some() {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::QrReplayed)));
        }
        let status: Option<(String,)> = query_as("SELECT status FROM cards WHERE id = $1")
            .bind(p.card_id)
            .fetch_optional(&mut *conn)
            .await?;
        if status.is_none_or(|(s,)| s != CardStatus::Active.as_str()) {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::CardFrozen)));
        }
        if Self::live_redemption_on_conn(&mut *conn, p.merchant_id, &p.order_ref).await? {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::CardAfterVoucher)));
        }
        let taken: Option<(Uuid,)> = query_as(
            "SELECT id FROM card_payments WHERE merchant_id = $1 AND order_ref = $2 AND reversed_at_us IS NULL",
        )
        .bind(p.merchant_id)
        .bind(p.order_ref.clone())
        .fetch_optional(&mut *conn)
        .await?;
        if taken.is_some() {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::OrderRefUsed)));
        }
        if let (Some(season_id), true) = (p.season_id, p.points > 0) {
            // Read under the head, which the points expiry holds: points earned into a
            // season whose points have just expired would never expire.
            let expired: Option<(Option<i64>,)> =
                query_as("SELECT expired_at_us FROM season_points WHERE season_id = $1")
                    .bind(season_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if matches!(expired, Some((Some(_),))) {
                return Err(WriteError::Refused(Refusal::PointsExpiredMeanwhile));
            }
        }
        Ok(())
    }

    /// A card payment's rows: its QR nonce, spent, and the payment with the debts it repaid.
    async fn insert_card_payment(
        conn: &mut impl AsExec,
        p: &NewCardPayment,
        earning: &Earning,
    ) -> Result<(), sqlx::Error> {
        query("INSERT INTO qr_nonces (nonce, subject_id, used_at_us) VALUES ($1, $2, $3)")
            .bind(p.qr_nonce.clone())
            .bind(p.card_id)
            .bind(p.paid_at.unix_us())
            .execute(&mut *conn)
            .await?;
        query(
            "INSERT INTO card_payments (id, card_id, merchant_id, terminal_id, season_id, order_ref, order_amount_fen, \
             discount_fen, points, debt_repaid, paid_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(p.id)
        .bind(p.card_id)
        .bind(p.merchant_id)
        .bind(p.terminal_id)
        .bind(p.season_id)
        .bind(p.order_ref.clone())
        .bind(p.order_amount_fen)
        .bind(p.discount_fen)
        .bind(p.points)
        .bind(repaid_json(&earning.repaid))
        .bind(p.paid_at.unix_us())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn policy_from(row: PointsPolicyRow) -> Result<PointsPolicy, StorageError> {
        let rate =
            u32::try_from(row.points_per_yuan).map_err(|_| StorageError::Corrupt("points rate".into()))?;
        Ok(PointsPolicy {
            season_id: row.season_id,
            points_per_yuan: rate,
            expire_at: row.expire_at_us.map(Timestamp::from_unix_us),
            expired_at: row.expired_at_us.map(Timestamp::from_unix_us),
        })
    }

    async fn balance_of(&self, spec: crate::domain::ledger::AccountSpec) -> Result<Balance, StorageError> {
        Ok(LedgerStore::balance(self, &spec.address).await?.unwrap_or_default())
    }
}

#[async_trait]
impl CardStore for SqlStore {
    async fn insert_card(&self, card: &Card) -> Result<(), WriteError> {
        let (bin, last4) = match &card.via {
            CardVia::Mobile => (None, None),
            CardVia::BankCard { bin, last4 } => (Some(bin.clone()), Some(last4.clone())),
        };
        let done = query(
            "INSERT INTO cards (id, citizen_id, card_number, via, bank_bin, bank_last4, status, issued_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(card.id)
        .bind(card.citizen_id)
        .bind(card.number.as_str().to_owned())
        .bind(card.via.as_str())
        .bind(bin)
        .bind(last4)
        .bind(card.status.as_str())
        .bind(card.issued_at.unix_us())
        .execute(&self.pool)
        .await;
        done.map_err(WriteError::from)?;
        Ok(())
    }

    async fn card(&self, id: CardId) -> Result<Option<Card>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {CARD_COLUMNS} FROM cards WHERE id = $1"));
        let row: Option<CardRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(CardRow::into_card).transpose()
    }

    async fn card_by_citizen(&self, citizen_id: CitizenId) -> Result<Option<Card>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {CARD_COLUMNS} FROM cards WHERE citizen_id = $1"));
        let row: Option<CardRow> = query_as(sql).bind(citizen_id).fetch_optional(&self.pool).await?;
        row.map(CardRow::into_card).transpose()
    }

    async fn set_card_status(
        &self,
        id: CardId,
        status: CardStatus,
        at: Timestamp,
    ) -> Result<bool, StorageError> {
        // Under the ledger lock, as every card payment and exchange checks the card's
        // status: a freeze is ordered before or after each of them, never in between.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.lock_head(&mut tx).await?;
        let done = query("UPDATE cards SET status = $1, status_changed_at_us = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(at.unix_us())
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn card_holding(&self, citizen_id: CitizenId) -> Result<Option<CardHolding>, StorageError> {
        let sql = sqlx::AssertSqlSafe(self.card_holding_sql());
        let rows: Vec<CardHoldingRow> = query_as(sql).bind(citizen_id).fetch_all(&self.pool).await?;
        CardHoldingRow::into_holding(rows)
    }

    async fn card_points(&self, card_id: CardId) -> Result<Vec<CardPointsLine>, StorageError> {
        let mut conn = self.pool.acquire().await?;
        Ok(Self::points_lines_on(&mut conn, card_id).await?)
    }

    async fn set_card_terms(
        &self,
        merchant_id: MerchantId,
        terms: &MemberTerms,
        at: Timestamp,
    ) -> Result<(), StorageError> {
        query(
            "INSERT INTO merchant_card_terms (merchant_id, percent, cap_fen, updated_at_us) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (merchant_id) DO UPDATE SET percent = excluded.percent, cap_fen = excluded.cap_fen, \
             updated_at_us = excluded.updated_at_us",
        )
        .bind(merchant_id)
        .bind(terms.percent as i32)
        .bind(terms.cap.map(Fen::as_fen))
        .bind(at.unix_us())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn card_terms(&self, merchant_id: MerchantId) -> Result<Option<MemberTerms>, StorageError> {
        let row: Option<CardTermsRow> =
            query_as("SELECT percent, cap_fen FROM merchant_card_terms WHERE merchant_id = $1")
                .bind(merchant_id)
                .fetch_optional(&self.pool)
                .await?;
        let corrupt = || StorageError::Corrupt(format!("card terms of merchant {merchant_id}"));
        row.map(|row| {
            let cap = row.cap_fen.map(Fen::new).transpose().map_err(|_| corrupt())?;
            MemberTerms::new(u32::try_from(row.percent).map_err(|_| corrupt())?, cap).map_err(|_| corrupt())
        })
        .transpose()
    }

    async fn set_points_policy(&self, policy: &PointsPolicy, at: Timestamp) -> Result<(), StorageError> {
        query(
            "INSERT INTO season_points (season_id, points_per_yuan, expire_at_us, updated_at_us) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (season_id) DO UPDATE SET points_per_yuan = excluded.points_per_yuan, \
             expire_at_us = excluded.expire_at_us, updated_at_us = excluded.updated_at_us",
        )
        .bind(policy.season_id)
        .bind(policy.points_per_yuan as i32)
        .bind(policy.expire_at.map(Timestamp::unix_us))
        .bind(at.unix_us())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn points_policy(&self, season_id: SeasonId) -> Result<Option<PointsPolicy>, StorageError> {
        let row: Option<PointsPolicyRow> = query_as(
            "SELECT season_id, points_per_yuan, expire_at_us, expired_at_us FROM season_points WHERE season_id = $1",
        )
        .bind(season_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Self::policy_from).transpose()
    }

    async fn unexpired_points_policies(&self, limit: i64) -> Result<Vec<PointsPolicy>, StorageError> {
        let rows: Vec<PointsPolicyRow> = query_as(
            "SELECT season_id, points_per_yuan, expire_at_us, expired_at_us FROM season_points \
             WHERE expired_at_us IS NULL ORDER BY season_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Self::policy_from).collect()
    }

    async fn live_card_payments(
        &self,
        orders: &[(MerchantId, String)],
    ) -> Result<Vec<Option<CardPaymentRecord>>, StorageError> {
        let mut found: std::collections::HashMap<(MerchantId, String), CardPaymentRecord> =
            Default::default();
        for chunk in orders.chunks(crate::storage::ledger::INSERT_CHUNK_ROWS) {
            let order_refs: Vec<String> = chunk.iter().map(|(_, order_ref)| order_ref.clone()).collect();
            for row in self.backend.live_card_payment_rows(&order_refs).await? {
                let payment = row.into_record()?;
                found.insert((payment.merchant_id, payment.order_ref.clone()), payment);
            }
        }
        Ok(orders.iter().map(|key| found.get(key).cloned()).collect())
    }

    async fn live_redemption_on(
        &self,
        merchant_id: MerchantId,
        order_ref: &str,
    ) -> Result<bool, StorageError> {
        let mut conn = self.pool.acquire().await?;
        Ok(Self::live_redemption_on_conn(&mut conn, merchant_id, order_ref).await?)
    }

    async fn commit_card_payment(&self, p: &NewCardPayment) -> Result<IdemRecord, WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        // The ledger lock first: card payments, redemptions and reversals of one order
        // are decided one after another.
        self.lock_head(&mut tx).await?;
        let probe = (p.answer)(&card::Earning::default());
        if Self::card_answer_exists(&mut tx, &probe.scope, &probe.key).await? {
            return Err(WriteError::IdempotencyTaken);
        }
        Self::card_payment_checks(&mut tx, p).await?;
        let debts: Vec<PointsDebt> = if p.points > 0 {
            Self::points_lines_on(&mut tx, p.card_id)
                .await?
                .into_iter()
                .filter(|l| l.debt > 0)
                .map(|l| PointsDebt { season_id: l.season_id, points: l.debt })
                .collect()
        } else {
            Vec::new()
        };
        let earning = card::plan_earning(p.points, &debts);
        let answer = (p.answer)(&earning);
        self.insert_answers(&mut tx, std::slice::from_ref(&answer)).await?;
        Self::insert_card_payment(&mut tx, p, &earning).await?;
        let entry = p.season_id.and_then(|season| card::earning_entry(p.id, p.card_id, season, &earning));
        let opened = match entry {
            Some(entry) => self.post_in(&mut tx, std::slice::from_ref(&entry)).await?,
            None => HashMap::new(),
        };
        self.commit_and_cache(tx, opened).await?;
        Ok(answer)
    }

    async fn card_payment(&self, id: CardPaymentId) -> Result<Option<CardPaymentRecord>, StorageError> {
        let sql =
            sqlx::AssertSqlSafe(format!("SELECT {CARD_PAYMENT_COLUMNS} FROM card_payments WHERE id = $1"));
        let row: Option<CardPaymentRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(CardPaymentRow::into_record).transpose()
    }

    async fn commit_card_reversal(&self, r: &NewCardReversal) -> Result<IdemRecord, WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.lock_head(&mut tx).await?;
        let probe = (r.answer)(&card::Clawback::default());
        if Self::card_answer_exists(&mut tx, &probe.scope, &probe.key).await? {
            return Err(WriteError::IdempotencyTaken);
        }
        let sql =
            sqlx::AssertSqlSafe(format!("SELECT {CARD_PAYMENT_COLUMNS} FROM card_payments WHERE id = $1"));
        let row: Option<CardPaymentRow> = query_as(sql).bind(r.payment_id).fetch_optional(&mut tx).await?;
        let payment = row.map(CardPaymentRow::into_record).transpose()?;
        let Some(payment) = payment.filter(|p| p.reversed_at.is_none()) else {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::AlreadyReversed)));
        };
        if Self::live_redemption_on_conn(&mut tx, payment.merchant_id, &payment.order_ref).await? {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::ReverseVoucherFirst)));
        }
        let repaid: i64 = payment.debt_repaid.iter().map(|d| d.points).sum();
        let kept = payment.points - repaid;
        let clawback = match payment.season_id {
            Some(season) if kept > 0 => {
                let address = accounts::card_points(payment.card_id, season).address.to_string();
                let balances = Self::balances_on(&mut tx, std::slice::from_ref(&address)).await?;
                let held = balances.get(&address).map(|b| b.credits_fen - b.debits_fen).unwrap_or(0);
                card::plan_reversal(kept, held)
            }
            _ => card::Clawback::default(),
        };
        let answer = (r.answer)(&clawback);
        self.insert_answers(&mut tx, std::slice::from_ref(&answer)).await?;
        query(
            "UPDATE card_payments SET reversed_at_us = $1, reversal_id = $2, reversal_reason = $3, \
             points_taken_back = $4, points_debt_added = $5 WHERE id = $6 AND reversed_at_us IS NULL",
        )
        .bind(r.at.unix_us())
        .bind(r.reversal_id)
        .bind(r.reason.clone())
        .bind(clawback.taken)
        .bind(clawback.debt + repaid)
        .bind(r.payment_id)
        .execute(&mut tx)
        .await?;
        let entry = payment.season_id.and_then(|season| {
            card::reversal_entry(r.reversal_id, payment.card_id, season, &payment.debt_repaid, clawback)
        });
        let opened = match entry {
            Some(entry) => self.post_in(&mut tx, std::slice::from_ref(&entry)).await?,
            None => HashMap::new(),
        };
        self.commit_and_cache(tx, opened).await?;
        Ok(answer)
    }

    async fn season_card_points(&self, season_id: SeasonId) -> Result<Vec<CardSeasonPoints>, StorageError> {
        let mut conn = self.pool.acquire().await?;
        let cards: Vec<(CardId,)> =
            query_as("SELECT DISTINCT card_id FROM card_payments WHERE season_id = $1 ORDER BY card_id")
                .bind(season_id)
                .fetch_all(&mut conn)
                .await?;
        let addresses: Vec<String> =
            cards.iter().map(|(c,)| accounts::card_points(*c, season_id).address.to_string()).collect();
        let balances = Self::balances_on(&mut conn, &addresses).await?;
        Ok(cards
            .into_iter()
            .zip(addresses)
            .filter_map(|((card,), address)| {
                let points = balances.get(&address).map(|b| b.credits_fen - b.debits_fen).unwrap_or(0);
                (points > 0).then_some(CardSeasonPoints { card_id: card, points })
            })
            .collect())
    }

    async fn commit_points_expiry(
        &self,
        season_id: SeasonId,
        entries: &[NewEntry],
        at: Timestamp,
    ) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let done = query(
            "UPDATE season_points SET expired_at_us = $1 WHERE season_id = $2 AND expired_at_us IS NULL",
        )
        .bind(at.unix_us())
        .bind(season_id)
        .execute(&mut tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(WriteError::Refused(Refusal::Changed(format!(
                "the points of season {season_id} already expired"
            ))));
        }
        let mut opened = HashMap::new();
        for chunk in entries.chunks(crate::domain::ledger::MAX_ENTRIES_PER_BATCH) {
            opened.extend(self.post_in(&mut tx, chunk).await?);
        }
        self.commit_and_cache(tx, opened).await?;
        Ok(())
    }

    async fn card_figures(&self, season_id: SeasonId) -> Result<CardFigures, StorageError> {
        let mut figures = CardFigures::default();
        if let Some(season) = SeasonStore::season(self, season_id).await? {
            let rows: Vec<IssuedCardsRow> = query_as(
                "SELECT via, COUNT(*) AS cards FROM cards WHERE issued_at_us >= $1 AND issued_at_us < $2 GROUP BY via",
            )
            .bind(season.starts_at.unix_us())
            .bind(season.ends_at.unix_us())
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                match row.via.as_str() {
                    "mobile" => figures.cards_issued_mobile = row.cards,
                    _ => figures.cards_issued_bank_card = row.cards,
                }
            }
        }
        let (discount,): (i64,) = query_as(
            "SELECT CAST(COALESCE(SUM(discount_fen), 0) AS BIGINT) FROM card_payments \
             WHERE season_id = $1 AND reversed_at_us IS NULL",
        )
        .bind(season_id)
        .fetch_one(&self.pool)
        .await?;
        figures.member_discount_fen = discount;
        let credit = |b: Balance| b.credits_fen - b.debits_fen;
        let debit = |b: Balance| b.debits_fen - b.credits_fen;
        figures.points_earned = debit(self.balance_of(accounts::points_earned(season_id)).await?);
        figures.points_exchanged = credit(self.balance_of(accounts::points_exchanged(season_id)).await?);
        figures.points_expired = credit(self.balance_of(accounts::points_expired(season_id)).await?);
        figures.points_reversed = credit(self.balance_of(accounts::points_reversed(season_id)).await?);
        let outstanding =
            SeasonStore::sum_balances_like(self, &accounts::season_cards_pattern(season_id, "points"))
                .await?;
        figures.points_outstanding = credit(outstanding);
        let debt =
            SeasonStore::sum_balances_like(self, &accounts::season_cards_pattern(season_id, "points_debt"))
                .await?;
        figures.points_debt = debit(debt);
        Ok(figures)
    }

    async fn card_breaks(&self, season_id: SeasonId) -> Result<Vec<String>, StorageError> {
        let mut breaks = Vec::new();
        let f = self.card_figures(season_id).await?;
        let left = f.points_earned - f.points_exchanged - f.points_expired - f.points_reversed;
        let right = f.points_outstanding - f.points_debt;
        if left != right {
            breaks.push(format!(
                "points of season {season_id}: earned {} - exchanged {} - expired {} - reversed {} = {left}, \
                 but outstanding {} - debt {} = {right}",
                f.points_earned,
                f.points_exchanged,
                f.points_expired,
                f.points_reversed,
                f.points_outstanding,
                f.points_debt
            ));
        }
        for kind in ["points", "points_debt"] {
            let rows: Vec<BalanceMismatchRow> = query_as(
                "SELECT a.address, COALESCE(b.debits_fen, 0) AS debits_fen, COALESCE(b.credits_fen, 0) AS credits_fen, \
                        COALESCE(s.debits_fen, 0) AS posted_debits_fen, COALESCE(s.credits_fen, 0) AS posted_credits_fen \
                 FROM accounts a \
                 LEFT JOIN account_balances b ON b.account_id = a.id \
                 LEFT JOIN (SELECT p.account_id, \
                               CAST(SUM(CASE WHEN p.side = 'D' THEN p.amount_fen ELSE 0 END) AS BIGINT) AS debits_fen, \
                               CAST(SUM(CASE WHEN p.side = 'C' THEN p.amount_fen ELSE 0 END) AS BIGINT) AS credits_fen \
                            FROM postings p JOIN accounts pa ON pa.id = p.account_id WHERE pa.address LIKE $1 \
                            GROUP BY p.account_id) s ON s.account_id = a.id \
                 WHERE a.address LIKE $1 AND (COALESCE(b.debits_fen, 0) <> COALESCE(s.debits_fen, 0) \
                    OR COALESCE(b.credits_fen, 0) <> COALESCE(s.credits_fen, 0)) \
                 ORDER BY a.address LIMIT 1000",
            )
            .bind(accounts::season_cards_pattern(season_id, kind))
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                breaks.push(format!(
                    "{}: maintained {} debits / {} credits, postings {} / {}",
                    r.address, r.debits_fen, r.credits_fen, r.posted_debits_fen, r.posted_credits_fen
                ));
            }
        }
        let rows: Vec<PaymentPointsRow> =
            query_as("SELECT id, points, reversal_id FROM card_payments WHERE season_id = $1")
                .bind(season_id)
                .fetch_all(&self.pool)
                .await?;
        let entries: Vec<(String, i64)> = query_as(
            "SELECT e.reference, CAST(SUM(p.amount_fen) AS BIGINT) FROM journal_entries e \
             JOIN postings p ON p.entry_seq = e.seq \
             WHERE e.kind IN ('card_payment', 'card_reversal') AND p.side = 'C' GROUP BY e.reference",
        )
        .fetch_all(&self.pool)
        .await?;
        let known: Vec<(Uuid, Option<Uuid>)> =
            query_as("SELECT id, reversal_id FROM card_payments").fetch_all(&self.pool).await?;
        let known: HashSet<Uuid> =
            known.into_iter().flat_map(|(id, reversal)| std::iter::once(id).chain(reversal)).collect();
        let entries: HashMap<String, i64> = entries.into_iter().collect();
        let season_ids: HashSet<Uuid> =
            rows.iter().flat_map(|r| std::iter::once(r.id).chain(r.reversal_id)).collect();
        // Entries of this season's payments, and entries of no payment at all.
        let relevant: HashMap<String, i64> = entries
            .into_iter()
            .filter(|(reference, _)| {
                let id = reference.split_once(':').and_then(|(_, id)| id.parse::<Uuid>().ok());
                id.is_none_or(|id| season_ids.contains(&id) || !known.contains(&id))
            })
            .collect();
        breaks.extend(entry_breaks(&rows, &relevant, &known));
        Ok(breaks)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use uuid::Uuid;

    #[test]
    fn entry_breaks_names_each_missing_or_wrong_entry() {
        let (a, b, c, r) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3), Uuid::from_u128(4));
        let row = |id, points, reversal_id| super::PaymentPointsRow { id, points, reversal_id };
        let rows = vec![row(a, 10, None), row(b, 0, None), row(c, 5, Some(r))];
        let known: HashSet<Uuid> = [a, b, c, r].into_iter().collect();
        let mut entries: HashMap<String, i64> = [
            (format!("card_payment:{a}"), 10),
            (format!("card_payment:{c}"), 5),
            (format!("card_reversal:{r}"), 5),
        ]
        .into_iter()
        .collect();
        assert!(super::entry_breaks(&rows, &entries, &known).is_empty());
        entries.insert(format!("card_reversal:{r}"), 4);
        entries.insert(format!("card_payment:{b}"), 1);
        entries.insert(format!("card_payment:{}", Uuid::from_u128(9)), 3);
        entries.remove(&format!("card_payment:{a}"));
        let breaks = super::entry_breaks(&rows, &entries, &known);
        assert_eq!(breaks.len(), 4, "{breaks:?}");
    }
}
