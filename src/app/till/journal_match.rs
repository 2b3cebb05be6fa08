//! Matching a till's own journal (written by the merchant SDK, `merchant-sdk/src/journal.rs`)
//! against the server's redemptions.
//!
//! What the till believes: every `redeem` attempt the service answered 201 (or replayed) is a
//! redemption; every `reverse` attempt answered 201 reversed one. The server's side: every
//! redemption made by the journal's terminals since the journal's first line (less 5 minutes of
//! clock skew). Each redemption is then matched, missing on the server, missing in the till, or
//! mismatched (order amount, discount, or reversed or not).

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::ids::{Id, RedemptionId, TerminalId};
use serde::Serialize;
use wenhui_merchant_sdk::journal::JournalLine;

use crate::app::finance::yuan;
use crate::domain::ids::SeasonId;
use crate::domain::money::Fen;
use crate::domain::season::Season;
use crate::domain::time::Timestamp;
use crate::storage::{FinanceStore, RedemptionRecord, StorageError};

/// The allowed clock difference between a till and the service.
const SKEW_S: i64 = 300;
const MAX_SERVER_ROWS: i64 = 200_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TillRedemption {
    pub order_ref: String,
    pub order_amount_fen: i64,
    pub discount_fen: i64,
    pub reversed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct TillRecord {
    pub terminals: BTreeSet<TerminalId>,
    pub since: Option<Timestamp>,
    pub redemptions: BTreeMap<RedemptionId, TillRedemption>,
}

fn fen(value: &serde_json::Value, field: &str) -> Option<i64> {
    Fen::parse_yuan(value.get(field)?.as_str()?).ok().map(Fen::as_fen)
}

fn uuid_field<K>(value: &serde_json::Value, field: &str) -> Option<Id<K>> {
    value.get(field)?.as_str()?.parse().ok()
}

/// Reads a journal upload. A line that is not a journal line is refused with its number, except
/// a torn last line (a till that crashed mid-write), which is skipped as the SDK does.
pub fn read_journal(body: &[u8], max_lines: usize) -> Result<TillRecord, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the journal is not UTF-8".to_owned())?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() > max_lines {
        return Err(format!("the journal has more than {max_lines} lines; upload it in parts"));
    }
    let mut record = TillRecord::default();
    let mut reversed = BTreeSet::new();
    for (index, raw) in lines.iter().enumerate() {
        let line: JournalLine = match serde_json::from_str(raw) {
            Ok(line) => line,
            Err(_) if index + 1 == lines.len() => continue,
            Err(error) => return Err(format!("line {}: {error}", index + 1)),
        };
        record.terminals.insert(line.terminal_id.into());
        if let Some(at) = Timestamp::parse_rfc3339(&line.at) {
            record.since = Some(record.since.map_or(at, |s| s.min(at)));
        }
        if !line.is_final_answer() || !matches!(line.status, Some(200 | 201)) {
            continue;
        }
        let Some(response) = &line.response else { continue };
        match line.op.as_str() {
            "redeem" => {
                let parsed = (|| {
                    let id = uuid_field(response, "redemption_id")?;
                    let order_ref = response.get("order_ref")?.as_str()?.to_owned();
                    // With a card payment on the order, the server records the amount the voucher
                    // applied to (after the member discount): compare like with like.
                    let order_amount =
                        fen(response, "voucher_basis").or_else(|| fen(response, "order_amount"))?;
                    Some((id, order_ref, order_amount, fen(response, "discount")?))
                })();
                if let Some((id, order_ref, order_amount_fen, discount_fen)) = parsed {
                    record.redemptions.insert(
                        id,
                        TillRedemption { order_ref, order_amount_fen, discount_fen, reversed: false },
                    );
                }
            }
            "reverse" => {
                if let Some(id) = uuid_field(response, "redemption_id") {
                    reversed.insert(id);
                }
            }
            _ => {}
        }
    }
    for id in reversed {
        if let Some(r) = record.redemptions.get_mut(&id) {
            r.reversed = true;
        }
    }
    Ok(record)
}

// The answer's fields are in alphabetical order, the order it had as a JSON map.

/// A redemption as the till or the server records it (amounts in yuan).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MatchedRecord {
    pub discount: String,
    pub order_amount: String,
    pub order_ref: String,
    pub redemption_id: RedemptionId,
    pub reversed: bool,
}

/// A field on which the till and the server disagree about a redemption.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Mismatch {
    pub field: &'static str,
    pub redemption_id: RedemptionId,
    pub server: String,
    pub till: String,
}

/// A till's journal matched against the server's redemptions.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MatchOutcome {
    pub matched: Vec<MatchedRecord>,
    pub mismatched: Vec<Mismatch>,
    pub missing_in_till: Vec<MatchedRecord>,
    pub missing_on_server: Vec<MatchedRecord>,
}

fn till_view(id: RedemptionId, r: &TillRedemption) -> MatchedRecord {
    MatchedRecord {
        redemption_id: id,
        order_ref: r.order_ref.clone(),
        order_amount: yuan(r.order_amount_fen),
        discount: yuan(r.discount_fen),
        reversed: r.reversed,
    }
}

fn server_view(r: &RedemptionRecord) -> MatchedRecord {
    MatchedRecord {
        redemption_id: r.id,
        order_ref: r.order_ref.clone(),
        order_amount: yuan(r.order_amount_fen),
        discount: yuan(r.discount_fen),
        reversed: r.reversed_at.is_some(),
    }
}

/// Compares one redemption both sides hold.
fn differences(id: RedemptionId, till: &TillRedemption, server: &RedemptionRecord) -> Vec<Mismatch> {
    let mut found = Vec::new();
    let mut differ = |field, till: String, server: String| {
        if till != server {
            found.push(Mismatch { redemption_id: id, field, till, server });
        }
    };
    differ("order_amount", yuan(till.order_amount_fen), yuan(server.order_amount_fen));
    differ("discount", yuan(till.discount_fen), yuan(server.discount_fen));
    differ("reversed", till.reversed.to_string(), server.reversed_at.is_some().to_string());
    found
}

/// Pure matching of a till record against the server's redemptions of the season.
pub fn compare(
    season_id: SeasonId,
    till: &TillRecord,
    by_id: &[RedemptionRecord],
    recent: &[RedemptionRecord],
) -> MatchOutcome {
    let mut outcome = MatchOutcome::default();
    let by_id: BTreeMap<RedemptionId, &RedemptionRecord> = by_id.iter().map(|r| (r.id, r)).collect();
    for (id, ours) in &till.redemptions {
        match by_id.get(id) {
            None => outcome.missing_on_server.push(till_view(*id, ours)),
            Some(server) if server.season_id != season_id => {}
            Some(server) => {
                let found = differences(*id, ours, server);
                if found.is_empty() {
                    outcome.matched.push(till_view(*id, ours));
                } else {
                    outcome.mismatched.extend(found);
                }
            }
        }
    }
    for server in recent {
        if server.season_id == season_id && !till.redemptions.contains_key(&server.id) {
            outcome.missing_in_till.push(server_view(server));
        }
    }
    outcome
}

pub async fn match_journal(
    store: &dyn FinanceStore,
    season: &Season,
    till: &TillRecord,
) -> Result<MatchOutcome, StorageError> {
    let ids: Vec<RedemptionId> = till.redemptions.keys().copied().collect();
    let by_id = store.redemptions_by_id(&ids).await?;
    let terminals: Vec<TerminalId> = till.terminals.iter().copied().collect();
    let recent = match till.since {
        Some(since) => {
            store.terminal_redemptions(&terminals, since.plus_seconds(-SKEW_S), MAX_SERVER_ROWS).await?
        }
        None => Vec::new(),
    };
    Ok(compare(season.id, till, &by_id, &recent))
}
