//! What the nodes over one database tell each other, so that each forgets what it caches within
//! about a second of a change anywhere: one [`NodeEvent`], two transports (PostgreSQL
//! `LISTEN`/`NOTIFY`, an in-process channel on SQLite: `storage::Notice`). See
//! [docs/operations.md](../../docs/operations.md#running-many-nodes).
//!
//! An event is sent in the transaction of its change where the writer builds one (claims and
//! expiries: delivered only if it commits), else right after the commit. A node receives its own
//! events too; applying one twice is harmless. A lost event is bounded by each cache's own
//! safety net (the revocation poll, the till cache's 2 s, the sold-out memory's second, the
//! public reads' second), and a listener that reconnects makes its node forget everything.

use std::str::FromStr;

use crate::domain::ids::{BatchId, CitizenId, MerchantId, TerminalId};
use crate::domain::time::Timestamp;

/// The wire format's version, the payload's first word.
const VERSION: &str = "v1";

/// A change another node must know of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Nothing is left of the batch until `until` (its next release, the end of its claim
    /// window, or of its season): claims are answered `message` from memory.
    SoldOut { batch_id: BatchId, until: Timestamp, message: String },
    /// Vouchers of the batch went back to its stock (an expiry, a forfeit by a reversal).
    StockReturned(BatchId),
    /// Claim state changed in a way the writers' caches cannot follow (a season closed).
    ClaimsChanged,
    /// A citizen's session was revoked: its token hash (SHA-256, never the token).
    SessionRevoked([u8; 32]),
    /// Every session of a citizen was revoked.
    CitizenSessionsRevoked(CitizenId),
    /// A merchant was suspended or activated, or its settlement account changed.
    MerchantChanged(MerchantId),
    /// A terminal was revoked.
    TerminalChanged(TerminalId),
    /// A QR signing key was added and the previous one retired.
    QrKeysRotated,
    /// A season or a batch was created or changed: the public reads rebuild.
    CatalogChanged,
}

impl NodeEvent {
    /// The notice's payload: `v1 <kind> [fields...]`, space separated, the message last.
    pub fn encode(&self) -> String {
        let body = match self {
            NodeEvent::SoldOut { batch_id, until, message } => {
                format!("sold_out {batch_id} {} {message}", until.unix_us())
            }
            NodeEvent::StockReturned(batch_id) => format!("stock_returned {batch_id}"),
            NodeEvent::ClaimsChanged => "claims_changed".to_owned(),
            NodeEvent::SessionRevoked(hash) => format!("session_revoked {}", hex::encode(hash)),
            NodeEvent::CitizenSessionsRevoked(id) => format!("citizen_sessions_revoked {id}"),
            NodeEvent::MerchantChanged(id) => format!("merchant_changed {id}"),
            NodeEvent::TerminalChanged(id) => format!("terminal_changed {id}"),
            NodeEvent::QrKeysRotated => "qr_keys_rotated".to_owned(),
            NodeEvent::CatalogChanged => "catalog_changed".to_owned(),
        };
        format!("{VERSION} {body}")
    }

    /// The event a payload encodes; `None` for one this version does not know (a newer node's).
    pub fn parse(payload: &str) -> Option<NodeEvent> {
        let rest = payload.strip_prefix(VERSION)?.strip_prefix(' ')?;
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let id = |text: &str| uuid::Uuid::from_str(text).ok();
        Some(match kind {
            "sold_out" => {
                let mut fields = rest.splitn(3, ' ');
                let batch_id = BatchId::from_uuid(id(fields.next()?)?);
                let until = Timestamp::from_unix_us(fields.next()?.parse().ok()?);
                NodeEvent::SoldOut { batch_id, until, message: fields.next()?.to_owned() }
            }
            "stock_returned" => NodeEvent::StockReturned(BatchId::from_uuid(id(rest)?)),
            "claims_changed" => NodeEvent::ClaimsChanged,
            "session_revoked" => {
                NodeEvent::SessionRevoked(hex::decode(rest).ok()?.as_slice().try_into().ok()?)
            }
            "citizen_sessions_revoked" => NodeEvent::CitizenSessionsRevoked(CitizenId::from_uuid(id(rest)?)),
            "merchant_changed" => NodeEvent::MerchantChanged(MerchantId::from_uuid(id(rest)?)),
            "terminal_changed" => NodeEvent::TerminalChanged(TerminalId::from_uuid(id(rest)?)),
            "qr_keys_rotated" => NodeEvent::QrKeysRotated,
            "catalog_changed" => NodeEvent::CatalogChanged,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn every_event_reads_back_as_itself() {
        let events = [
            NodeEvent::SoldOut {
                batch_id: BatchId::from_uuid(Uuid::from_u128(1)),
                until: Timestamp::from_unix_us(1_700_000_000_000_000),
                message: "sold out; the next release is at 2026-12-03T10:00:00Z".into(),
            },
            NodeEvent::StockReturned(BatchId::from_uuid(Uuid::from_u128(2))),
            NodeEvent::ClaimsChanged,
            NodeEvent::SessionRevoked([7; 32]),
            NodeEvent::CitizenSessionsRevoked(CitizenId::from_uuid(Uuid::from_u128(3))),
            NodeEvent::MerchantChanged(MerchantId::from_uuid(Uuid::from_u128(4))),
            NodeEvent::TerminalChanged(TerminalId::from_uuid(Uuid::from_u128(5))),
            NodeEvent::QrKeysRotated,
            NodeEvent::CatalogChanged,
        ];
        for event in events {
            assert_eq!(NodeEvent::parse(&event.encode()), Some(event.clone()), "{}", event.encode());
        }
    }

    #[test]
    fn an_unknown_or_malformed_payload_is_no_event() {
        for payload in
            ["", "v1", "v2 catalog_changed", "v1 unknown", "v1 stock_returned nope", "v1 session_revoked 00"]
        {
            assert_eq!(NodeEvent::parse(payload), None, "{payload}");
        }
    }
}
