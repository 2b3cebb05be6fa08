//! The stable error codes of the API: one enum, the snake_case strings clients match on.
//!
//! Every `{"error": {"code": ..}}` body the service sends carries one of these; the strings are a
//! contract and never change (add a variant instead). The enum is the one table: its variants,
//! in the alphabetical order of their strings, give `ALL` (strum's `VariantArray`), and their
//! names in snake_case give the string, the same way for serde and for `as_str` (strum's
//! `IntoStaticStr`); the tests below hold the two to each other and to the order. Storage and application code name their
//! refusals with these too, so no layer compares code strings. Nothing here knows about HTTP: the
//! status that goes with a code is chosen where the answer is built.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code, serialised as its snake_case string.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// More than one Idempotency-Key header: which one the client meant is unknown.,
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
    DuplicateIdempotencyKey,
    EnrolmentClaimed,
    EnrolmentExpired,
    EnrolmentNotFound,
    Forbidden,
    FundingDuplicateFunder,
    FundingEmpty,
    FundingSharesSum,
    FundingTooMany,
    HoldDecided,
    HoldNotFound,
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
    InvalidHoldThreshold,
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
    RejectionNotProposed,
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
    /// Every code, once each, in alphabetical order of its string (the enum's order).
    pub const ALL: &'static [ErrorCode] = <ErrorCode as strum::VariantArray>::VARIANTS;

    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        self.into()
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

    #[test]
    fn codes_are_unique_snake_case_in_order() {
        let strings: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let unique: HashSet<&str> = strings.iter().copied().collect();
        assert_eq!(unique.len(), strings.len());
        assert!(
            strings.windows(2).all(|pair| pair[0] < pair[1]),
            "the enum is not in the order of its strings"
        );
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
        assert_eq!(ErrorCode::NotALottery.as_str(), "not_a_lottery");
        assert_eq!(ErrorCode::IdNumberBirthDate.as_str(), "id_number_birth_date");
        assert!(serde_json::from_str::<ErrorCode>("\"no_such_code\"").is_err());
    }

    /// The codes clients match on, as they were when the enum became the one table: a renamed
    /// or reordered variant changes no string unnoticed (add new codes here too).
    #[test]
    fn the_wire_strings_are_the_stable_ones() {
        let pinned = "
        already_drawn already_paid already_registered already_reversed already_settled
        bad_request bad_signature bank_card_check_digit bank_card_format batch_not_found
        below_min_spend body_too_large budget_exceeded card_after_voucher card_exists
        card_frozen card_not_found card_number_busy card_number_check_digit card_number_format
        card_payment_not_found change_pending citizen_not_found code_format code_locked conflict
        credit_code_check credit_code_format database_busy database_unavailable
        draw_not_auditable draw_too_early draw_unfinished duplicate_idempotency_key
        enrolment_claimed enrolment_expired enrolment_not_found forbidden
        funding_duplicate_funder funding_empty funding_shares_sum funding_too_many hold_decided
        hold_not_found id_number_birth_date id_number_check_digit id_number_format
        id_number_region idempotency_key_reused identity_rejected insufficient_points internal
        invalid_account invalid_amount invalid_body invalid_budgets invalid_category
        invalid_code invalid_cursor invalid_cut_off invalid_dates invalid_field invalid_format
        invalid_funder invalid_funding invalid_hold_threshold invalid_idempotency_key
        invalid_issuer invalid_journal invalid_key invalid_kind invalid_label invalid_limit
        invalid_lottery invalid_merchant_redemption_limit invalid_name invalid_payout_ref
        invalid_points invalid_points_price invalid_points_rate invalid_public_key invalid_query
        invalid_region invalid_releases invalid_role invalid_scope invalid_seed invalid_stock
        invalid_subsidy_ceiling invalid_terms invalid_token invalid_valid_hours invalid_via
        invalid_view key_revoked ledger_refused limit_reached lottery_batch malformed_json
        merchant_exists merchant_limit_reached merchant_not_eligible merchant_not_found
        merchant_not_in_card_programme merchant_suspended method_not_allowed
        missing_idempotency_key missing_signature name_format no_card no_checkpoint
        not_a_lottery not_drawn not_exchangeable not_found not_open nothing_to_settle
        order_amount_mismatch order_changed order_ref_used phone_format points_expired
        points_price_mismatch points_refused provider_unavailable qr_expired qr_invalid
        qr_replayed rate_limited redemption_not_found rejection_not_proposed replayed_request
        request_decided request_expired request_not_found reverse_voucher_first same_approver
        season_closed season_not_ended season_not_found seed_mismatch settlement_in_progress
        settlement_not_found sold_out stacking_not_allowed stale_request statement_too_large
        terminal_exists terminal_not_found terminal_revoked terms_invalid timeout
        timestamp_malformed too_many_batches unauthenticated unknown_citizen unknown_terminal
        unreadable_body unsupported_media_type voucher_not_found voucher_not_redeemable
        ";
        let pinned: Vec<&str> = pinned.split_whitespace().collect();
        let strings: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strings, pinned);
    }
}
