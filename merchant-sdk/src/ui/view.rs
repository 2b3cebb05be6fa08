//! Today's journal as the page lists it: one row per redemption or card payment intent, with
//! its outcome (done, refused, pending) and whether it was reversed since.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset, Offset, Utc};
use serde_json::{Value, json};

use super::money;
use crate::journal::JournalLine;

/// China Standard Time, UTC+8 (no daylight saving).
fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or(Utc.fix())
}

fn in_cst(at: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&cst()))
}

/// The CST day of an RFC 3339 time, `2026-12-03`.
pub fn cst_day(at: &str) -> Option<String> {
    in_cst(at).map(|t| t.format("%Y-%m-%d").to_string())
}

/// Today in China Standard Time.
pub fn today_cst() -> String {
    Utc::now().with_timezone(&cst()).format("%Y-%m-%d").to_string()
}

/// What became of one intent.
enum Outcome<'a> {
    Done(&'a Value),
    Refused(&'a Value),
    Pending,
}

/// The final answer to `intent` among `lines`, if any.
fn outcome<'a>(intent: &JournalLine, answers: &HashMap<Asked<'a>, &'a JournalLine>) -> Outcome<'a> {
    match answers.get(&asked(intent)) {
        Some(answer) => {
            let body = answer.response.as_ref().unwrap_or(&Value::Null);
            if answer.status.is_some_and(|s| (200..300).contains(&s)) {
                Outcome::Done(body)
            } else {
                Outcome::Refused(body)
            }
        }
        None => Outcome::Pending,
    }
}

type Asked<'a> = (Option<&'a str>, &'a str, &'a str, String);

fn asked(line: &JournalLine) -> Asked<'_> {
    (line.idempotency_key.as_deref(), line.op.as_str(), line.path.as_str(), line.request.to_string())
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// The rows of today, newest first. `in_flight`: keys being sent now; `message`: a code's
/// Chinese message (with a fallback).
pub fn today(
    lines: &[JournalLine],
    in_flight: &HashSet<String>,
    message: &dyn Fn(&str, &str) -> String,
) -> Vec<Value> {
    let today = today_cst();
    let answers: HashMap<Asked<'_>, &JournalLine> =
        lines.iter().filter(|line| line.is_final_answer()).map(|line| (asked(line), line)).collect();
    // Reversals by their target's id: done, or still pending.
    let mut reversed: HashSet<String> = HashSet::new();
    let mut reversing: HashSet<String> = HashSet::new();
    for line in
        lines.iter().filter(|l| l.phase == "intent" && matches!(l.op.as_str(), "reverse" | "reverse_card"))
    {
        let Some(target) = line.path.split('/').nth(3) else { continue };
        match outcome(line, &answers) {
            Outcome::Done(_) => {
                reversed.insert(target.to_owned());
            }
            Outcome::Refused(body) if body["error"]["code"] == "already_reversed" => {
                reversed.insert(target.to_owned());
            }
            Outcome::Refused(_) => {}
            Outcome::Pending => {
                reversing.insert(target.to_owned());
            }
        }
    }
    let mut rows = Vec::new();
    // A resent write journals its intent again, under the same key: one row for both.
    let mut listed = HashSet::new();
    let intents =
        lines.iter().filter(|l| l.phase == "intent" && matches!(l.op.as_str(), "redeem" | "card_pay"));
    for intent in intents.filter(|line| listed.insert(asked(line))) {
        let Some(at) = in_cst(&intent.at) else { continue };
        if at.format("%Y-%m-%d").to_string() != today {
            continue;
        }
        let key = intent.idempotency_key.clone().unwrap_or_default();
        let mut row = json!({
            "key": key,
            "op": intent.op,
            "kind": if intent.op == "redeem" { "消费券" } else { "文惠卡" },
            "time": at.format("%H:%M:%S").to_string(),
            "order_ref": text(&intent.request, "order_ref"),
            "order_amount": money::shown(text(&intent.request, "order_amount")),
        });
        match outcome(intent, &answers) {
            Outcome::Done(body) => {
                let (id, off, collect) = if intent.op == "redeem" {
                    (text(body, "redemption_id"), text(body, "discount"), text(body, "payable"))
                } else {
                    (
                        text(body, "card_payment_id"),
                        text(body, "member_discount"),
                        text(body, "amount_after_discount"),
                    )
                };
                row["status"] = json!("done");
                row["id"] = json!(id);
                row["discount"] = json!(money::shown(off));
                row["collect"] = json!(money::shown(collect));
                row["reversed"] = json!(reversed.contains(id));
                row["reversing"] = json!(reversing.contains(id));
            }
            Outcome::Refused(body) => {
                let code = text(&body["error"], "code");
                row["status"] = json!("refused");
                row["code"] = json!(code);
                row["message"] = json!(message(code, text(&body["error"], "message")));
            }
            Outcome::Pending => {
                row["status"] = json!("pending");
                row["retrying"] = json!(in_flight.contains(&key));
                row["message"] = json!(message("pending", "pending"));
            }
        }
        rows.push(row);
    }
    rows.reverse();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn line(
        op: &str,
        phase: &str,
        key: &str,
        path: &str,
        status: Option<u16>,
        response: Value,
    ) -> JournalLine {
        JournalLine {
            at: crate::journal::now_rfc3339(),
            terminal_id: Uuid::from_u128(1),
            op: op.into(),
            phase: phase.into(),
            path: path.into(),
            idempotency_key: Some(key.into()),
            attempt: u32::from(phase == "attempt"),
            request: if op == "redeem" {
                json!({"qr": "WH1.x.y", "order_amount": "1234.50", "order_ref": "A-1"})
            } else {
                json!({"reason": "退货"})
            },
            status,
            response: status.map(|_| response),
            error: None,
        }
    }

    #[test]
    fn rows_show_outcomes_and_reversals() {
        let id = "0190f5a4-0000-7000-8000-000000000004";
        let done = json!({"redemption_id": id, "discount": "10.00", "payable": "1224.50"});
        let reversal = format!("/v1/redemptions/{id}/reversal");
        let lines = [
            line("redeem", "intent", "k1", "/v1/redemptions", None, Value::Null),
            line("redeem", "attempt", "k1", "/v1/redemptions", Some(201), done),
            line("redeem", "intent", "k2", "/v1/redemptions", None, Value::Null),
            line("redeem", "attempt", "k2", "/v1/redemptions", None, Value::Null),
            line("redeem", "intent", "k2", "/v1/redemptions", None, Value::Null),
            line("redeem", "intent", "k3", "/v1/redemptions", None, Value::Null),
            line(
                "redeem",
                "attempt",
                "k3",
                "/v1/redemptions",
                Some(409),
                json!({"error": {"code": "qr_replayed", "message": "used"}}),
            ),
            line("reverse", "intent", "k4", &reversal, None, Value::Null),
            line("reverse", "attempt", "k4", &reversal, Some(201), json!({})),
        ];
        let message = |code: &str, _: &str| format!("zh:{code}");
        let rows = today(&lines, &HashSet::new(), &message);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0]["status"].as_str(), rows[0]["message"].as_str()),
            (Some("refused"), Some("zh:qr_replayed"))
        );
        assert_eq!(rows[1]["status"], "pending");
        assert_eq!(rows[2]["status"], "done");
        assert_eq!(rows[2]["collect"], "¥1,224.50");
        assert_eq!(rows[2]["order_amount"], "¥1,234.50");
        assert_eq!(rows[2]["reversed"], true);
    }
}
