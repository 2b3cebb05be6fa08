//! The stable error codes of the API: one enum, the snake_case strings clients match on.
//!
//! Every `{"error": {"code": ..}}` body the service sends carries one of these; the strings are a
//! contract and never change (add a variant instead). Storage and application code name their
//! refusals with these too, so no layer compares code strings. Nothing here knows about HTTP: the
//! status that goes with a code is chosen where the answer is built.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code, serialised as its snake_case string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    AlreadyDrawn,
    AlreadyPaid,
    AlreadyRegistered,
    AlreadyReversed,
    AlreadySettled,
    BadRequest,
    BadSignature,
    BankCardCheckDigit,
    BankCardFormat,
    BatchNotFound,
    BelowMinSpend,
    BodyTooLarge,
    BudgetExceeded,
    CardAfterVoucher,
    CardExists,
    CardFrozen,
    CardNotFound,
    CardNumberBusy,
    CardNumberCheckDigit,
    CardNumberFormat,
    CardPaymentNotFound,
    ChangePending,
    CitizenNotFound,
    CodeFormat,
    CodeLocked,
    Conflict,
    CreditCodeCheck,
    CreditCodeFormat,
    DatabaseBusy,
    DatabaseUnavailable,
    DrawNotAuditable,
    DrawTooEarly,
    DrawUnfinished,
    /// More than one Idempotency-Key header: which one the client meant is unknown.
    DuplicateIdempotencyKey,
    EnrolmentClaimed,
    EnrolmentExpired,
    EnrolmentNotFound,
    Forbidden,
    FundingDuplicateFunder,
    FundingEmpty,
    FundingSharesSum,
    FundingTooMany,
    IdNumberBirthDate,
    IdNumberCheckDigit,
    IdNumberFormat,
    IdNumberRegion,
    IdempotencyKeyReused,
    IdentityRejected,
    InsufficientPoints,
    Internal,
    InvalidAccount,
    InvalidAmount,
    InvalidBody,
    InvalidBudgets,
    InvalidCategory,
    InvalidCode,
    InvalidCursor,
    InvalidCutOff,
    InvalidDates,
    InvalidField,
    InvalidFormat,
    InvalidFunder,
    InvalidFunding,
    InvalidIdempotencyKey,
    InvalidIssuer,
    InvalidJournal,
    InvalidKey,
    InvalidKind,
    InvalidLabel,
    InvalidLimit,
    InvalidLottery,
    InvalidMerchantRedemptionLimit,
    InvalidName,
    InvalidPayoutRef,
    InvalidPoints,
    InvalidPointsPrice,
    InvalidPointsRate,
    InvalidPublicKey,
    InvalidQuery,
    InvalidRegion,
    InvalidReleases,
    InvalidRole,
    InvalidScope,
    InvalidSeed,
    InvalidStock,
    InvalidSubsidyCeiling,
    InvalidTerms,
    InvalidToken,
    InvalidValidHours,
    InvalidVia,
    InvalidView,
    KeyRevoked,
    LedgerRefused,
    LimitReached,
    LotteryBatch,
    MalformedJson,
    MerchantExists,
    MerchantLimitReached,
    MerchantNotEligible,
    MerchantNotFound,
    MerchantNotInCardProgramme,
    MerchantSuspended,
    MethodNotAllowed,
    MissingIdempotencyKey,
    MissingSignature,
    NameFormat,
    NoCard,
    NoCheckpoint,
    NotALottery,
    NotDrawn,
    NotExchangeable,
    NotFound,
    NotOpen,
    NothingToSettle,
    OrderAmountMismatch,
    OrderChanged,
    OrderRefUsed,
    PhoneFormat,
    PointsExpired,
    PointsPriceMismatch,
    PointsRefused,
    ProviderUnavailable,
    QrExpired,
    QrInvalid,
    QrReplayed,
    RateLimited,
    RedemptionNotFound,
    ReplayedRequest,
    RequestDecided,
    RequestExpired,
    RequestNotFound,
    ReverseVoucherFirst,
    SameApprover,
    SeasonClosed,
    SeasonNotEnded,
    SeasonNotFound,
    SeedMismatch,
    SettlementInProgress,
    SettlementNotFound,
    SoldOut,
    StackingNotAllowed,
    StaleRequest,
    StatementTooLarge,
    TerminalExists,
    TerminalNotFound,
    TerminalRevoked,
    TermsInvalid,
    Timeout,
    TimestampMalformed,
    TooManyBatches,
    Unauthenticated,
    UnknownCitizen,
    UnknownTerminal,
    UnreadableBody,
    UnsupportedMediaType,
    VoucherNotFound,
    VoucherNotRedeemable,
}

impl ErrorCode {
    /// Every code, once each, in alphabetical order of its string.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::AlreadyDrawn,
        ErrorCode::AlreadyPaid,
        ErrorCode::AlreadyRegistered,
        ErrorCode::AlreadyReversed,
        ErrorCode::AlreadySettled,
        ErrorCode::BadRequest,
        ErrorCode::BadSignature,
        ErrorCode::BankCardCheckDigit,
        ErrorCode::BankCardFormat,
        ErrorCode::BatchNotFound,
        ErrorCode::BelowMinSpend,
        ErrorCode::BodyTooLarge,
        ErrorCode::BudgetExceeded,
        ErrorCode::CardAfterVoucher,
        ErrorCode::CardExists,
        ErrorCode::CardFrozen,
        ErrorCode::CardNotFound,
        ErrorCode::CardNumberBusy,
        ErrorCode::CardNumberCheckDigit,
        ErrorCode::CardNumberFormat,
        ErrorCode::CardPaymentNotFound,
        ErrorCode::ChangePending,
        ErrorCode::CitizenNotFound,
        ErrorCode::CodeFormat,
        ErrorCode::CodeLocked,
        ErrorCode::Conflict,
        ErrorCode::CreditCodeCheck,
        ErrorCode::CreditCodeFormat,
        ErrorCode::DatabaseBusy,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::DrawNotAuditable,
        ErrorCode::DrawTooEarly,
        ErrorCode::DrawUnfinished,
        ErrorCode::DuplicateIdempotencyKey,
        ErrorCode::EnrolmentClaimed,
        ErrorCode::EnrolmentExpired,
        ErrorCode::EnrolmentNotFound,
        ErrorCode::Forbidden,
        ErrorCode::FundingDuplicateFunder,
        ErrorCode::FundingEmpty,
        ErrorCode::FundingSharesSum,
        ErrorCode::FundingTooMany,
        ErrorCode::IdNumberBirthDate,
        ErrorCode::IdNumberCheckDigit,
        ErrorCode::IdNumberFormat,
        ErrorCode::IdNumberRegion,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::IdentityRejected,
        ErrorCode::InsufficientPoints,
        ErrorCode::Internal,
        ErrorCode::InvalidAccount,
        ErrorCode::InvalidAmount,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidBudgets,
        ErrorCode::InvalidCategory,
        ErrorCode::InvalidCode,
        ErrorCode::InvalidCursor,
        ErrorCode::InvalidCutOff,
        ErrorCode::InvalidDates,
        ErrorCode::InvalidField,
        ErrorCode::InvalidFormat,
        ErrorCode::InvalidFunder,
        ErrorCode::InvalidFunding,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::InvalidIssuer,
        ErrorCode::InvalidJournal,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidKind,
        ErrorCode::InvalidLabel,
        ErrorCode::InvalidLimit,
        ErrorCode::InvalidLottery,
        ErrorCode::InvalidMerchantRedemptionLimit,
        ErrorCode::InvalidName,
        ErrorCode::InvalidPayoutRef,
        ErrorCode::InvalidPoints,
        ErrorCode::InvalidPointsPrice,
        ErrorCode::InvalidPointsRate,
        ErrorCode::InvalidPublicKey,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidRegion,
        ErrorCode::InvalidReleases,
        ErrorCode::InvalidRole,
        ErrorCode::InvalidScope,
        ErrorCode::InvalidSeed,
        ErrorCode::InvalidStock,
        ErrorCode::InvalidSubsidyCeiling,
        ErrorCode::InvalidTerms,
        ErrorCode::InvalidToken,
        ErrorCode::InvalidValidHours,
        ErrorCode::InvalidVia,
        ErrorCode::InvalidView,
        ErrorCode::KeyRevoked,
        ErrorCode::LedgerRefused,
        ErrorCode::LimitReached,
        ErrorCode::LotteryBatch,
        ErrorCode::MalformedJson,
        ErrorCode::MerchantExists,
        ErrorCode::MerchantLimitReached,
        ErrorCode::MerchantNotEligible,
        ErrorCode::MerchantNotFound,
        ErrorCode::MerchantNotInCardProgramme,
        ErrorCode::MerchantSuspended,
        ErrorCode::MethodNotAllowed,
        ErrorCode::MissingIdempotencyKey,
        ErrorCode::MissingSignature,
        ErrorCode::NameFormat,
        ErrorCode::NoCard,
        ErrorCode::NoCheckpoint,
        ErrorCode::NotALottery,
        ErrorCode::NotDrawn,
        ErrorCode::NotExchangeable,
        ErrorCode::NotFound,
        ErrorCode::NotOpen,
        ErrorCode::NothingToSettle,
        ErrorCode::OrderAmountMismatch,
        ErrorCode::OrderChanged,
        ErrorCode::OrderRefUsed,
        ErrorCode::PhoneFormat,
        ErrorCode::PointsExpired,
        ErrorCode::PointsPriceMismatch,
        ErrorCode::PointsRefused,
        ErrorCode::ProviderUnavailable,
        ErrorCode::QrExpired,
        ErrorCode::QrInvalid,
        ErrorCode::QrReplayed,
        ErrorCode::RateLimited,
        ErrorCode::RedemptionNotFound,
        ErrorCode::ReplayedRequest,
        ErrorCode::RequestDecided,
        ErrorCode::RequestExpired,
        ErrorCode::RequestNotFound,
        ErrorCode::ReverseVoucherFirst,
        ErrorCode::SameApprover,
        ErrorCode::SeasonClosed,
        ErrorCode::SeasonNotEnded,
        ErrorCode::SeasonNotFound,
        ErrorCode::SeedMismatch,
        ErrorCode::SettlementInProgress,
        ErrorCode::SettlementNotFound,
        ErrorCode::SoldOut,
        ErrorCode::StackingNotAllowed,
        ErrorCode::StaleRequest,
        ErrorCode::StatementTooLarge,
        ErrorCode::TerminalExists,
        ErrorCode::TerminalNotFound,
        ErrorCode::TerminalRevoked,
        ErrorCode::TermsInvalid,
        ErrorCode::Timeout,
        ErrorCode::TimestampMalformed,
        ErrorCode::TooManyBatches,
        ErrorCode::Unauthenticated,
        ErrorCode::UnknownCitizen,
        ErrorCode::UnknownTerminal,
        ErrorCode::UnreadableBody,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::VoucherNotFound,
        ErrorCode::VoucherNotRedeemable,
    ];

    /// The code as sent on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AlreadyDrawn => "already_drawn",
            ErrorCode::AlreadyPaid => "already_paid",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::AlreadyReversed => "already_reversed",
            ErrorCode::AlreadySettled => "already_settled",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::BankCardCheckDigit => "bank_card_check_digit",
            ErrorCode::BankCardFormat => "bank_card_format",
            ErrorCode::BatchNotFound => "batch_not_found",
            ErrorCode::BelowMinSpend => "below_min_spend",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::CardAfterVoucher => "card_after_voucher",
            ErrorCode::CardExists => "card_exists",
            ErrorCode::CardFrozen => "card_frozen",
            ErrorCode::CardNotFound => "card_not_found",
            ErrorCode::CardNumberBusy => "card_number_busy",
            ErrorCode::CardNumberCheckDigit => "card_number_check_digit",
            ErrorCode::CardNumberFormat => "card_number_format",
            ErrorCode::CardPaymentNotFound => "card_payment_not_found",
            ErrorCode::ChangePending => "change_pending",
            ErrorCode::CitizenNotFound => "citizen_not_found",
            ErrorCode::CodeFormat => "code_format",
            ErrorCode::CodeLocked => "code_locked",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CreditCodeCheck => "credit_code_check",
            ErrorCode::CreditCodeFormat => "credit_code_format",
            ErrorCode::DatabaseBusy => "database_busy",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::DrawNotAuditable => "draw_not_auditable",
            ErrorCode::DrawTooEarly => "draw_too_early",
            ErrorCode::DrawUnfinished => "draw_unfinished",
            ErrorCode::DuplicateIdempotencyKey => "duplicate_idempotency_key",
            ErrorCode::EnrolmentClaimed => "enrolment_claimed",
            ErrorCode::EnrolmentExpired => "enrolment_expired",
            ErrorCode::EnrolmentNotFound => "enrolment_not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::FundingDuplicateFunder => "funding_duplicate_funder",
            ErrorCode::FundingEmpty => "funding_empty",
            ErrorCode::FundingSharesSum => "funding_shares_sum",
            ErrorCode::FundingTooMany => "funding_too_many",
            ErrorCode::IdNumberBirthDate => "id_number_birth_date",
            ErrorCode::IdNumberCheckDigit => "id_number_check_digit",
            ErrorCode::IdNumberFormat => "id_number_format",
            ErrorCode::IdNumberRegion => "id_number_region",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdentityRejected => "identity_rejected",
            ErrorCode::InsufficientPoints => "insufficient_points",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidAccount => "invalid_account",
            ErrorCode::InvalidAmount => "invalid_amount",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidBudgets => "invalid_budgets",
            ErrorCode::InvalidCategory => "invalid_category",
            ErrorCode::InvalidCode => "invalid_code",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::InvalidCutOff => "invalid_cut_off",
            ErrorCode::InvalidDates => "invalid_dates",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidFormat => "invalid_format",
            ErrorCode::InvalidFunder => "invalid_funder",
            ErrorCode::InvalidFunding => "invalid_funding",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::InvalidIssuer => "invalid_issuer",
            ErrorCode::InvalidJournal => "invalid_journal",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::InvalidKind => "invalid_kind",
            ErrorCode::InvalidLabel => "invalid_label",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::InvalidLottery => "invalid_lottery",
            ErrorCode::InvalidMerchantRedemptionLimit => "invalid_merchant_redemption_limit",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidPayoutRef => "invalid_payout_ref",
            ErrorCode::InvalidPoints => "invalid_points",
            ErrorCode::InvalidPointsPrice => "invalid_points_price",
            ErrorCode::InvalidPointsRate => "invalid_points_rate",
            ErrorCode::InvalidPublicKey => "invalid_public_key",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidRegion => "invalid_region",
            ErrorCode::InvalidReleases => "invalid_releases",
            ErrorCode::InvalidRole => "invalid_role",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidSeed => "invalid_seed",
            ErrorCode::InvalidStock => "invalid_stock",
            ErrorCode::InvalidSubsidyCeiling => "invalid_subsidy_ceiling",
            ErrorCode::InvalidTerms => "invalid_terms",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InvalidValidHours => "invalid_valid_hours",
            ErrorCode::InvalidVia => "invalid_via",
            ErrorCode::InvalidView => "invalid_view",
            ErrorCode::KeyRevoked => "key_revoked",
            ErrorCode::LedgerRefused => "ledger_refused",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::LotteryBatch => "lottery_batch",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MerchantExists => "merchant_exists",
            ErrorCode::MerchantLimitReached => "merchant_limit_reached",
            ErrorCode::MerchantNotEligible => "merchant_not_eligible",
            ErrorCode::MerchantNotFound => "merchant_not_found",
            ErrorCode::MerchantNotInCardProgramme => "merchant_not_in_card_programme",
            ErrorCode::MerchantSuspended => "merchant_suspended",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::MissingIdempotencyKey => "missing_idempotency_key",
            ErrorCode::MissingSignature => "missing_signature",
            ErrorCode::NameFormat => "name_format",
            ErrorCode::NoCard => "no_card",
            ErrorCode::NoCheckpoint => "no_checkpoint",
            ErrorCode::NotALottery => "not_a_lottery",
            ErrorCode::NotDrawn => "not_drawn",
            ErrorCode::NotExchangeable => "not_exchangeable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotOpen => "not_open",
            ErrorCode::NothingToSettle => "nothing_to_settle",
            ErrorCode::OrderAmountMismatch => "order_amount_mismatch",
            ErrorCode::OrderChanged => "order_changed",
            ErrorCode::OrderRefUsed => "order_ref_used",
            ErrorCode::PhoneFormat => "phone_format",
            ErrorCode::PointsExpired => "points_expired",
            ErrorCode::PointsPriceMismatch => "points_price_mismatch",
            ErrorCode::PointsRefused => "points_refused",
            ErrorCode::ProviderUnavailable => "provider_unavailable",
            ErrorCode::QrExpired => "qr_expired",
            ErrorCode::QrInvalid => "qr_invalid",
            ErrorCode::QrReplayed => "qr_replayed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RedemptionNotFound => "redemption_not_found",
            ErrorCode::ReplayedRequest => "replayed_request",
            ErrorCode::RequestDecided => "request_decided",
            ErrorCode::RequestExpired => "request_expired",
            ErrorCode::RequestNotFound => "request_not_found",
            ErrorCode::ReverseVoucherFirst => "reverse_voucher_first",
            ErrorCode::SameApprover => "same_approver",
            ErrorCode::SeasonClosed => "season_closed",
            ErrorCode::SeasonNotEnded => "season_not_ended",
            ErrorCode::SeasonNotFound => "season_not_found",
            ErrorCode::SeedMismatch => "seed_mismatch",
            ErrorCode::SettlementInProgress => "settlement_in_progress",
            ErrorCode::SettlementNotFound => "settlement_not_found",
            ErrorCode::SoldOut => "sold_out",
            ErrorCode::StackingNotAllowed => "stacking_not_allowed",
            ErrorCode::StaleRequest => "stale_request",
            ErrorCode::StatementTooLarge => "statement_too_large",
            ErrorCode::TerminalExists => "terminal_exists",
            ErrorCode::TerminalNotFound => "terminal_not_found",
            ErrorCode::TerminalRevoked => "terminal_revoked",
            ErrorCode::TermsInvalid => "terms_invalid",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TimestampMalformed => "timestamp_malformed",
            ErrorCode::TooManyBatches => "too_many_batches",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::UnknownCitizen => "unknown_citizen",
            ErrorCode::UnknownTerminal => "unknown_terminal",
            ErrorCode::UnreadableBody => "unreadable_body",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::VoucherNotFound => "voucher_not_found",
            ErrorCode::VoucherNotRedeemable => "voucher_not_redeemable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::ErrorCode;

    /// Its position in [`ErrorCode::ALL`]; exhaustive, so a new variant must be placed here (and
    /// so in ALL) before this compiles.
    fn position(code: ErrorCode) -> usize {
        let at = |wanted: ErrorCode| ErrorCode::ALL.iter().position(|c| *c == wanted);
        let found = match code {
            ErrorCode::AlreadyDrawn
            | ErrorCode::AlreadyPaid
            | ErrorCode::AlreadyRegistered
            | ErrorCode::AlreadyReversed
            | ErrorCode::AlreadySettled
            | ErrorCode::BadRequest
            | ErrorCode::BadSignature
            | ErrorCode::BankCardCheckDigit
            | ErrorCode::BankCardFormat
            | ErrorCode::BatchNotFound
            | ErrorCode::BelowMinSpend
            | ErrorCode::BodyTooLarge
            | ErrorCode::BudgetExceeded
            | ErrorCode::CardAfterVoucher
            | ErrorCode::CardExists
            | ErrorCode::CardFrozen
            | ErrorCode::CardNotFound
            | ErrorCode::CardNumberBusy
            | ErrorCode::CardNumberCheckDigit
            | ErrorCode::CardNumberFormat
            | ErrorCode::CardPaymentNotFound
            | ErrorCode::ChangePending
            | ErrorCode::CitizenNotFound
            | ErrorCode::CodeFormat
            | ErrorCode::CodeLocked
            | ErrorCode::Conflict
            | ErrorCode::CreditCodeCheck
            | ErrorCode::CreditCodeFormat
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseUnavailable
            | ErrorCode::DrawNotAuditable
            | ErrorCode::DrawTooEarly
            | ErrorCode::DrawUnfinished
            | ErrorCode::DuplicateIdempotencyKey
            | ErrorCode::EnrolmentClaimed
            | ErrorCode::EnrolmentExpired
            | ErrorCode::EnrolmentNotFound
            | ErrorCode::Forbidden
            | ErrorCode::FundingDuplicateFunder
            | ErrorCode::FundingEmpty
            | ErrorCode::FundingSharesSum
            | ErrorCode::FundingTooMany
            | ErrorCode::IdNumberBirthDate
            | ErrorCode::IdNumberCheckDigit
            | ErrorCode::IdNumberFormat
            | ErrorCode::IdNumberRegion
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::IdentityRejected
            | ErrorCode::InsufficientPoints
            | ErrorCode::Internal
            | ErrorCode::InvalidAccount
            | ErrorCode::InvalidAmount
            | ErrorCode::InvalidBody
            | ErrorCode::InvalidBudgets
            | ErrorCode::InvalidCategory
            | ErrorCode::InvalidCode
            | ErrorCode::InvalidCursor
            | ErrorCode::InvalidCutOff
            | ErrorCode::InvalidDates
            | ErrorCode::InvalidField
            | ErrorCode::InvalidFormat
            | ErrorCode::InvalidFunder
            | ErrorCode::InvalidFunding
            | ErrorCode::InvalidIdempotencyKey
            | ErrorCode::InvalidIssuer
            | ErrorCode::InvalidJournal
            | ErrorCode::InvalidKey
            | ErrorCode::InvalidKind
            | ErrorCode::InvalidLabel
            | ErrorCode::InvalidLimit
            | ErrorCode::InvalidLottery
            | ErrorCode::InvalidMerchantRedemptionLimit
            | ErrorCode::InvalidName
            | ErrorCode::InvalidPayoutRef
            | ErrorCode::InvalidPoints
            | ErrorCode::InvalidPointsPrice
            | ErrorCode::InvalidPointsRate
            | ErrorCode::InvalidPublicKey
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidRegion
            | ErrorCode::InvalidReleases
            | ErrorCode::InvalidRole
            | ErrorCode::InvalidScope
            | ErrorCode::InvalidSeed
            | ErrorCode::InvalidStock
            | ErrorCode::InvalidSubsidyCeiling
            | ErrorCode::InvalidTerms
            | ErrorCode::InvalidToken
            | ErrorCode::InvalidValidHours
            | ErrorCode::InvalidVia
            | ErrorCode::InvalidView
            | ErrorCode::KeyRevoked
            | ErrorCode::LedgerRefused
            | ErrorCode::LimitReached
            | ErrorCode::LotteryBatch
            | ErrorCode::MalformedJson
            | ErrorCode::MerchantExists
            | ErrorCode::MerchantLimitReached
            | ErrorCode::MerchantNotEligible
            | ErrorCode::MerchantNotFound
            | ErrorCode::MerchantNotInCardProgramme
            | ErrorCode::MerchantSuspended
            | ErrorCode::MethodNotAllowed
            | ErrorCode::MissingIdempotencyKey
            | ErrorCode::MissingSignature
            | ErrorCode::NameFormat
            | ErrorCode::NoCard
            | ErrorCode::NoCheckpoint
            | ErrorCode::NotALottery
            | ErrorCode::NotDrawn
            | ErrorCode::NotExchangeable
            | ErrorCode::NotFound
            | ErrorCode::NotOpen
            | ErrorCode::NothingToSettle
            | ErrorCode::OrderAmountMismatch
            | ErrorCode::OrderChanged
            | ErrorCode::OrderRefUsed
            | ErrorCode::PhoneFormat
            | ErrorCode::PointsExpired
            | ErrorCode::PointsPriceMismatch
            | ErrorCode::PointsRefused
            | ErrorCode::ProviderUnavailable
            | ErrorCode::QrExpired
            | ErrorCode::QrInvalid
            | ErrorCode::QrReplayed
            | ErrorCode::RateLimited
            | ErrorCode::RedemptionNotFound
            | ErrorCode::ReplayedRequest
            | ErrorCode::RequestDecided
            | ErrorCode::RequestExpired
            | ErrorCode::RequestNotFound
            | ErrorCode::ReverseVoucherFirst
            | ErrorCode::SameApprover
            | ErrorCode::SeasonClosed
            | ErrorCode::SeasonNotEnded
            | ErrorCode::SeasonNotFound
            | ErrorCode::SeedMismatch
            | ErrorCode::SettlementInProgress
            | ErrorCode::SettlementNotFound
            | ErrorCode::SoldOut
            | ErrorCode::StackingNotAllowed
            | ErrorCode::StaleRequest
            | ErrorCode::StatementTooLarge
            | ErrorCode::TerminalExists
            | ErrorCode::TerminalNotFound
            | ErrorCode::TerminalRevoked
            | ErrorCode::TermsInvalid
            | ErrorCode::Timeout
            | ErrorCode::TimestampMalformed
            | ErrorCode::TooManyBatches
            | ErrorCode::Unauthenticated
            | ErrorCode::UnknownCitizen
            | ErrorCode::UnknownTerminal
            | ErrorCode::UnreadableBody
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::VoucherNotFound
            | ErrorCode::VoucherNotRedeemable => at(code),
        };
        found.unwrap_or_else(|| panic!("{code:?} is missing from ErrorCode::ALL"))
    }

    #[test]
    fn all_lists_every_variant_once() {
        let positions: HashSet<usize> = ErrorCode::ALL.iter().map(|c| position(*c)).collect();
        assert_eq!(positions.len(), ErrorCode::ALL.len(), "a code is listed twice");
    }

    #[test]
    fn codes_are_unique_snake_case_in_order() {
        let strings: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let unique: HashSet<&str> = strings.iter().copied().collect();
        assert_eq!(unique.len(), strings.len());
        assert!(strings.windows(2).all(|pair| pair[0] < pair[1]), "ALL is not in order");
        for code in strings {
            let snake = code.split('_').all(|word| {
                !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
            assert!(snake && code.starts_with(|c: char| c.is_ascii_lowercase()), "{code} is not snake_case");
        }
    }

    #[test]
    fn serde_and_display_use_the_wire_string() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).expect("a code serialises");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("and reads back"), *code);
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(ErrorCode::SeasonClosed.as_str(), "season_closed");
        assert!(serde_json::from_str::<ErrorCode>("\"no_such_code\"").is_err());
    }
}
