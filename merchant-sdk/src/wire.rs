//! The request bodies and answers of the terminal-signed endpoints, one definition for the
//! service (which builds and parses them) and the till (which sends and reads them), so that a
//! renamed field breaks the build of both rather than a till in the field.
//!
//! Shapes are documented in `docs/terminal-signing.md`, section 6. Amounts are yuan decimal
//! strings (`"100.00"`): a request may send at most two places, every answer has exactly two.
//! Times are RFC 3339 strings in UTC with microseconds. With the `openapi` feature every type
//! also derives `utoipa::ToSchema` (the service enables it; a till need not).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::token::{KeyRing, VerificationKey};

/// The body of `POST /v1/redemptions` and of `POST /v1/card-payments`: a scanned token and the
/// order it pays for. `Debug` shows the token's length only (a log line needs no usable copy).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    /// The QR token scanned from the citizen's phone: a voucher (kind 1) to redeem, a benefit
    /// card (kind 2) to pay with.
    pub qr: String,
    /// The order's full amount in yuan, above `0.00`, at most two places, e.g. `"100.00"`.
    pub order_amount: String,
    /// The till's reference for the order: trimmed, 1-64 bytes, no control characters.
    pub order_ref: String,
}

impl std::fmt::Debug for OrderBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderBody")
            .field("qr", &format_args!("<token, {} characters>", self.qr.len()))
            .field("order_amount", &self.order_amount)
            .field("order_ref", &self.order_ref)
            .finish()
    }
}

/// The body of a reversal: `POST /v1/redemptions/{id}/reversal` and
/// `POST /v1/card-payments/{id}/reversal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why: trimmed, not empty, no control characters, cut to 200 characters.
    pub reason: String,
}

/// One funder's share of a redemption's discount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunderShare {
    /// The funding region's code, e.g. `"370000"`.
    pub funder: String,
    /// In yuan; the shares sum to the discount.
    pub amount: String,
}

/// The answer of `POST /v1/redemptions` (201): the redemption as the service recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Redemption {
    pub redemption_id: Uuid,
    pub voucher_id: Uuid,
    pub merchant_id: Uuid,
    pub order_ref: String,
    /// The order's full amount, as sent.
    pub order_amount: String,
    /// What the voucher takes off.
    pub discount: String,
    /// What the customer pays: `order_amount - member_discount - discount`.
    pub payable: String,
    /// The discount split between the funders of the voucher's batch.
    pub funders: Vec<FunderShare>,
    /// The card's member discount, when a card payment on the same order came first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_discount: Option<String>,
    /// `order_amount - member_discount`: what the voucher applied to (with a card payment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher_basis: Option<String>,
    /// The card payment on the same order (with a card payment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_payment_id: Option<Uuid>,
}

/// The answer of `POST /v1/redemptions/{id}/reversal` (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reversal {
    pub reversal_id: Uuid,
    pub redemption_id: Uuid,
    pub voucher_id: Uuid,
    /// What the voucher becomes: `"active"` (usable again), `"expired"`, or `"forfeited"` (the
    /// season's refunds forfeit the voucher).
    pub voucher_status: String,
    /// The discount given back, in yuan.
    pub amount: String,
}

/// A redemption as `GET /v1/redemptions/{id}` answers it (200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedemptionView {
    pub redemption_id: Uuid,
    pub voucher_id: Uuid,
    pub merchant_id: Uuid,
    pub terminal_id: Uuid,
    pub order_ref: String,
    /// The amount the voucher applied to: after any member discount.
    pub order_amount: String,
    pub discount: String,
    /// `order_amount - discount`.
    pub payable: String,
    pub funders: Vec<FunderShare>,
    pub redeemed_at: String,
    pub reversed: bool,
    /// `null` until reversed.
    pub reversed_at: Option<String>,
    /// `null` until reversed.
    pub reversal_id: Option<Uuid>,
    pub settled: bool,
}

/// A voucher's terms, by `kind`; amounts in yuan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuoteTerms {
    /// 满减: `face_value` off an order of at least `min_spend` (`"0.00"`: any order).
    Threshold { face_value: String, min_spend: String },
    /// `percent` off (20: 8折), at most `cap`, rounded down to a multiple of `step`, on an order
    /// of at least `min_spend`.
    Percent { percent: u32, cap: String, step: String, min_spend: String },
}

/// The answer of `POST /v1/redemptions/quote` (200): what a redemption of the same body would
/// take off now, and the voucher's terms to show the cashier. Nothing is written: the voucher
/// stays unused and its QR token unspent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quote {
    pub voucher_id: Uuid,
    /// The voucher's batch, as its issuer named it.
    pub batch_name: String,
    pub terms: QuoteTerms,
    /// The issuing region's code, e.g. `"370200"`: a city's vouchers are accepted in that city,
    /// a province's anywhere in the province.
    pub issuer: String,
    /// Its name, e.g. `"青岛市"`.
    pub issuer_name: String,
    /// Where the voucher is accepted, e.g. `["bookstore"]`.
    pub categories: Vec<String>,
    /// Their names, in the same order, e.g. `["书店"]`.
    pub category_names: Vec<String>,
    /// When the voucher expires (RFC 3339, UTC).
    pub expires_at: String,
    /// The order's full amount, as sent.
    pub order_amount: String,
    /// The card's member discount, when a card payment on the same order came first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_discount: Option<String>,
    /// What the voucher applies to: `order_amount - member_discount`.
    pub voucher_basis: String,
    /// What the voucher would take off.
    pub discount: String,
    /// What the customer would pay: `voucher_basis - discount`.
    pub payable: String,
    /// The discount split between the funders of the voucher's batch.
    pub funders: Vec<FunderShare>,
}

/// The answer of `POST /v1/card-payments` (201): the payment as the service recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardPayment {
    pub card_payment_id: Uuid,
    pub card_id: Uuid,
    /// Masked: `9156 **** **** 1234`.
    pub card_number: String,
    pub merchant_id: Uuid,
    pub order_ref: String,
    pub order_amount: String,
    /// The merchant's member discount (funded by the merchant).
    pub member_discount: String,
    /// What is left to pay (before any voucher).
    pub amount_after_discount: String,
    pub points_earned: i64,
    /// The season the points were earned in; `null` when no season is open.
    pub season_id: Option<Uuid>,
    /// The part of `points_earned` that repaid the card's points debt.
    pub points_debt_repaid: i64,
}

/// The answer of `POST /v1/card-payments/{id}/reversal` (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardReversal {
    pub reversal_id: Uuid,
    pub card_payment_id: Uuid,
    /// The points the payment earned, all taken back.
    pub points_reversed: i64,
    /// Taken from the card's balance.
    pub points_taken_back: i64,
    /// Recorded as the card's debt (already spent, or repaid a debt).
    pub points_debt_added: i64,
}

/// A card payment as `GET /v1/card-payments/{id}` answers it (200).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardPaymentView {
    pub card_payment_id: Uuid,
    pub card_id: Uuid,
    pub merchant_id: Uuid,
    pub terminal_id: Uuid,
    pub season_id: Option<Uuid>,
    pub order_ref: String,
    pub order_amount: String,
    pub member_discount: String,
    pub amount_after_discount: String,
    pub points_earned: i64,
    pub paid_at: String,
    pub reversed: bool,
    /// `null` until reversed.
    pub reversed_at: Option<String>,
    /// `null` until reversed.
    pub reversal_id: Option<Uuid>,
    /// `null` until reversed.
    pub points_taken_back: Option<i64>,
    /// `null` until reversed.
    pub points_debt_added: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    /// The JSON blocks of section 6 of `docs/terminal-signing.md`, in order.
    fn documented_examples() -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/terminal-signing.md");
        let text = std::fs::read_to_string(path).expect("docs/terminal-signing.md");
        let start = text.find("\n## 6.").expect("section 6");
        let end = text[start..].find("\n## 7.").map_or(text.len(), |n| start + n);
        text[start..end]
            .split("```json\n")
            .skip(1)
            .map(|block| block.split("```").next().unwrap_or_default())
            .map(|block| serde_json::from_str(block).expect("a documented example is JSON"))
            .collect()
    }

    /// `example` read as `T` and written back is the same JSON: the same field names, nothing
    /// dropped, nothing added.
    fn round_trips<T: DeserializeOwned + Serialize>(example: &Value) -> T {
        let typed: T = serde_json::from_value(example.clone()).expect("the example reads as the type");
        assert_eq!(&serde_json::to_value(&typed).expect("serializes"), example);
        typed
    }

    fn example_with(key: &str) -> Value {
        let found = documented_examples().into_iter().find(|e| e.get(key).is_some());
        found.unwrap_or_else(|| panic!("section 6 has an example with {key}"))
    }

    #[test]
    fn the_documented_redemption_request_round_trips() {
        let body: OrderBody = round_trips(&example_with("qr"));
        assert_eq!(body.order_amount, "100.00");
        assert!(!format!("{body:?}").contains("WH1."), "Debug withholds the token");
    }

    #[test]
    fn the_documented_redemption_answer_round_trips() {
        let redemption: Redemption = round_trips(&example_with("payable"));
        assert_eq!(redemption.funders.len(), 2);
        assert_eq!(redemption.member_discount, None, "absent, not null");
    }

    #[test]
    fn a_redemption_after_a_card_payment_round_trips() {
        let mut example = example_with("payable");
        example["member_discount"] = json!("10.00");
        example["voucher_basis"] = json!("90.00");
        example["card_payment_id"] = json!("0190f5a4-0000-7000-8000-000000000004");
        let redemption: Redemption = round_trips(&example);
        assert_eq!(redemption.voucher_basis.as_deref(), Some("90.00"));
    }

    #[test]
    fn the_documented_reversal_request_round_trips() {
        let body: ReasonBody = round_trips(&example_with("reason"));
        assert_eq!(body.reason, "customer returned the book");
    }

    #[test]
    fn the_documented_reversal_answer_round_trips() {
        let reversal: Reversal = round_trips(&example_with("voucher_status"));
        assert_eq!((reversal.voucher_status.as_str(), reversal.amount.as_str()), ("active", "10.00"));
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let mut body = example_with("qr");
        body["tip"] = json!("1.00");
        assert!(serde_json::from_value::<OrderBody>(body).is_err());
        assert!(serde_json::from_value::<ReasonBody>(json!({"reason": "x", "by": "me"})).is_err());
    }

    /// Section 6 lists the fields of the GET answer; this example holds exactly those.
    #[test]
    fn the_redemption_as_get_answers_it_round_trips() {
        let mut example = example_with("payable");
        example["terminal_id"] = json!("0190f5a0-0000-7000-8000-000000000005");
        example["redeemed_at"] = json!("2026-01-01T00:00:00.000000Z");
        example["reversed"] = json!(false);
        example["reversed_at"] = Value::Null;
        example["reversal_id"] = Value::Null;
        example["settled"] = json!(false);
        let view: RedemptionView = round_trips(&example);
        assert_eq!(view.reversal_id, None);
    }

    /// The key ring of the test vector in docs/qr-token.md, section 4 (the shape of `GET /v1/keys`).
    #[test]
    fn the_documented_keys_answer_round_trips() {
        let example = json!({"keys": [{"key_id": "fe812c12f3ab4ce6", "public_key": "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw", "status": "current", "valid_from_s": 1767225000, "valid_until_s": null}]});
        let ring: KeyRing = round_trips(&example);
        assert_eq!(ring.keys[0].valid_until_s, None);
    }

    /// Card payments have no JSON example in the docs (docs/card.md names their fields); these
    /// hold the fields the service answers.
    #[test]
    fn card_payment_answers_round_trip() {
        let paid = json!({
            "card_payment_id": "0190f5a4-0000-7000-8000-000000000004",
            "card_id": "0190f5a5-0000-7000-8000-000000000006", "card_number": "9156 **** **** 1234",
            "merchant_id": "0190f5a0-0000-7000-8000-000000000002", "order_ref": "A-1",
            "order_amount": "100.00", "member_discount": "10.00", "amount_after_discount": "90.00",
            "points_earned": 90, "season_id": null, "points_debt_repaid": 0,
        });
        let payment: CardPayment = round_trips(&paid);
        assert_eq!(payment.season_id, None, "null, not absent");
        let reversed = json!({
            "reversal_id": "0190f5a6-0000-7000-8000-000000000007",
            "card_payment_id": "0190f5a4-0000-7000-8000-000000000004",
            "points_reversed": 90, "points_taken_back": 60, "points_debt_added": 30,
        });
        round_trips::<CardReversal>(&reversed);
        let mut view = paid;
        for gone in ["card_number", "points_debt_repaid"] {
            view.as_object_mut().map(|o| o.remove(gone));
        }
        view["terminal_id"] = json!("0190f5a0-0000-7000-8000-000000000005");
        view["paid_at"] = json!("2026-01-01T00:00:00.000000Z");
        view["reversed"] = json!(true);
        view["reversed_at"] = json!("2026-01-01T00:05:00.000000Z");
        view["reversal_id"] = json!("0190f5a6-0000-7000-8000-000000000007");
        view["points_taken_back"] = json!(60);
        view["points_debt_added"] = json!(30);
        let view: CardPaymentView = round_trips(&view);
        assert_eq!(view.points_debt_added, Some(30));
    }
}
