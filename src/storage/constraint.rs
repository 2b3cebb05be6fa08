//! Which database constraint refused a write, recognised by the constraint's identity, never by
//! free text.
//!
//! PostgreSQL names the constraint (`db.constraint()`): the names below are those PostgreSQL gave
//! the constraints of `migrations/postgres` (`<table>_<column>_key` for a column's UNIQUE,
//! `<table>_pkey`, `<table>_check` for an unnamed table CHECK, or the unique index's own name).
//! SQLite names none; its structured message names what failed instead, in one of two forms:
//! `UNIQUE constraint failed: table.col1, table.col2` (the table and the indexed columns, for a
//! primary key, a UNIQUE column or a unique index alike) and `CHECK constraint failed: <name or
//! expression>` (the CHECK's expression as written in `migrations/sqlite` when it has no name).
//! Both are read into the same [`Constraint`]. One not listed here is [`Constraint::Other`],
//! carrying the name or the message, which is logged and answered 409 `conflict`.

/// A unique or check constraint that refused a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// `idempotency_keys (scope, idem_key)`: another request with the key committed first.
    IdempotencyKey,
    /// `cards.card_number`: a freshly drawn card number collided; draw another.
    CardNumber,
    /// `cards.citizen_id`: the citizen already has a card.
    CardPerCitizen,
    /// `citizens.id_hash`: a citizen with this ID number is registered.
    CitizenIdNumber,
    /// `merchants.credit_code`: a merchant with this credit code exists.
    MerchantCreditCode,
    /// `terminals.public_key`: a terminal with this key is registered.
    TerminalPublicKey,
    /// `redemptions_one_per_order (merchant_id, order_ref, order_slot)`.
    RedemptionPerOrder,
    /// `card_payments_one_per_order (merchant_id, order_ref)`.
    CardPaymentPerOrder,
    /// `merchant_redemption_counts` CHECK `live_count <= limit_count`: the per-merchant limit.
    MerchantRedemptionLimit,
    /// `citizen_season_totals` CHECK `claimed_fen <= cap_fen`: the citizen's season cap.
    SeasonCap,
    /// Any other constraint: its PostgreSQL name or SQLite's message.
    Other(String),
}

impl Constraint {
    /// The constraint PostgreSQL names (`DatabaseError::constraint`).
    pub fn from_postgres_name(name: &str) -> Constraint {
        match name {
            "idempotency_keys_pkey" => Constraint::IdempotencyKey,
            "cards_card_number_key" => Constraint::CardNumber,
            "cards_citizen_id_key" => Constraint::CardPerCitizen,
            "citizens_id_hash_key" => Constraint::CitizenIdNumber,
            "merchants_credit_code_key" => Constraint::MerchantCreditCode,
            "terminals_public_key_key" => Constraint::TerminalPublicKey,
            "redemptions_one_per_order" => Constraint::RedemptionPerOrder,
            "card_payments_one_per_order" => Constraint::CardPaymentPerOrder,
            "merchant_redemption_counts_check" => Constraint::MerchantRedemptionLimit,
            "citizen_season_totals_check" => Constraint::SeasonCap,
            other => Constraint::Other(other.to_owned()),
        }
    }

    /// The constraint a SQLite constraint message names (`UNIQUE constraint failed: ...` or
    /// `CHECK constraint failed: ...`); any other message is [`Constraint::Other`].
    pub fn from_sqlite_message(message: &str) -> Constraint {
        if let Some(columns) = message.strip_prefix("UNIQUE constraint failed: ") {
            let columns: Vec<&str> = columns.split(", ").collect();
            return Constraint::from_sqlite_unique(&columns)
                .unwrap_or_else(|| Constraint::Other(message.into()));
        }
        match message.strip_prefix("CHECK constraint failed: ") {
            Some("live_count >= 0 AND live_count <= limit_count") => Constraint::MerchantRedemptionLimit,
            Some("claimed_fen >= 0 AND claimed_fen <= cap_fen") => Constraint::SeasonCap,
            _ => Constraint::Other(message.to_owned()),
        }
    }

    /// The unique constraint over exactly these `table.column`s.
    fn from_sqlite_unique(columns: &[&str]) -> Option<Constraint> {
        Some(match columns {
            ["idempotency_keys.scope", "idempotency_keys.idem_key"] => Constraint::IdempotencyKey,
            ["cards.card_number"] => Constraint::CardNumber,
            ["cards.citizen_id"] => Constraint::CardPerCitizen,
            ["citizens.id_hash"] => Constraint::CitizenIdNumber,
            ["merchants.credit_code"] => Constraint::MerchantCreditCode,
            ["terminals.public_key"] => Constraint::TerminalPublicKey,
            ["redemptions.merchant_id", "redemptions.order_ref", "redemptions.order_slot"] => {
                Constraint::RedemptionPerOrder
            }
            ["card_payments.merchant_id", "card_payments.order_ref"] => Constraint::CardPaymentPerOrder,
            _ => return None,
        })
    }

    /// The constraint a unique or check violation names, on either backend: PostgreSQL's name
    /// when there is one, else SQLite's message.
    pub fn of(db: &dyn sqlx::error::DatabaseError) -> Constraint {
        match db.constraint() {
            Some(name) => Constraint::from_postgres_name(name),
            None => Constraint::from_sqlite_message(db.message()),
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::Other(what) => write!(f, "constraint {what}"),
            known => write!(f, "constraint {known:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Constraint;

    const KNOWN: [Constraint; 10] = [
        Constraint::IdempotencyKey,
        Constraint::CardNumber,
        Constraint::CardPerCitizen,
        Constraint::CitizenIdNumber,
        Constraint::MerchantCreditCode,
        Constraint::TerminalPublicKey,
        Constraint::RedemptionPerOrder,
        Constraint::CardPaymentPerOrder,
        Constraint::MerchantRedemptionLimit,
        Constraint::SeasonCap,
    ];

    /// The names PostgreSQL gave the constraints of `migrations/postgres` (read from
    /// `pg_constraint` and `pg_index` after migrating).
    #[test]
    fn postgres_names_are_recognised() {
        let names = [
            "idempotency_keys_pkey",
            "cards_card_number_key",
            "cards_citizen_id_key",
            "citizens_id_hash_key",
            "merchants_credit_code_key",
            "terminals_public_key_key",
            "redemptions_one_per_order",
            "card_payments_one_per_order",
            "merchant_redemption_counts_check",
            "citizen_season_totals_check",
        ];
        for (name, expected) in names.iter().zip(KNOWN) {
            assert_eq!(Constraint::from_postgres_name(name), expected, "{name}");
        }
        assert_eq!(
            Constraint::from_postgres_name("redemptions_one_per_voucher"),
            Constraint::Other("redemptions_one_per_voucher".into())
        );
    }

    /// SQLite's messages as it words them for the constraints of `migrations/sqlite`.
    #[test]
    fn sqlite_messages_are_recognised() {
        let messages = [
            "UNIQUE constraint failed: idempotency_keys.scope, idempotency_keys.idem_key",
            "UNIQUE constraint failed: cards.card_number",
            "UNIQUE constraint failed: cards.citizen_id",
            "UNIQUE constraint failed: citizens.id_hash",
            "UNIQUE constraint failed: merchants.credit_code",
            "UNIQUE constraint failed: terminals.public_key",
            "UNIQUE constraint failed: redemptions.merchant_id, redemptions.order_ref, redemptions.order_slot",
            "UNIQUE constraint failed: card_payments.merchant_id, card_payments.order_ref",
            "CHECK constraint failed: live_count >= 0 AND live_count <= limit_count",
            "CHECK constraint failed: claimed_fen >= 0 AND claimed_fen <= cap_fen",
        ];
        for (message, expected) in messages.iter().zip(KNOWN) {
            assert_eq!(Constraint::from_sqlite_message(message), expected, "{message}");
        }
    }

    /// Only the exact table and columns count: a column of the same name elsewhere, a subset of
    /// the columns, or any other text is `Other`.
    #[test]
    fn near_misses_are_other() {
        for message in [
            "UNIQUE constraint failed: payouts.card_number",
            "UNIQUE constraint failed: idempotency_keys.scope",
            "UNIQUE constraint failed: redemptions.voucher_id",
            "CHECK constraint failed: stock > 0",
            "NOT NULL constraint failed: cards.card_number",
            "cards.card_number",
        ] {
            assert_eq!(Constraint::from_sqlite_message(message), Constraint::Other(message.into()));
        }
    }
}
