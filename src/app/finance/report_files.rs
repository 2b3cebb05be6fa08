//! Finance files: the season report as CSV (one view at a time) and as an `.xlsx` workbook (one
//! sheet per view), the bank's payout file, and a merchant's statement as CSV.
//!
//! Amounts are written from their exact decimal text ("30.00"). In CSV they stay text. An xlsx
//! number cell is an IEEE double by the file format's definition (it has no other number type),
//! so for the workbook the exact text is parsed into the nearest double at this boundary only,
//! with a two-decimal number format; the JSON and CSV forms remain the exact record.
//!
//! Every CSV this module writes is opened in a spreadsheet by finance, so a text cell (a name, a
//! bank, an account name, an order reference, a label) that begins with `=`, `+`, `-`, `@`, a tab
//! or a carriage return is written with a leading `'` ([`csv_text`], the OWASP rule against
//! formula injection). Amounts and counts are numbers the service wrote itself and stay as they
//! are, a negative amount (`-30.00`) included. The workbook writes text as string cells, never
//! as formulas.

use std::collections::BTreeSet;

use rust_xlsxwriter::{Format, Workbook, XlsxError};
use uuid::Uuid;

use crate::app::finance::{SalesRow, SeasonReport, yuan};
use crate::storage::{SettlementLineRecord, SettlementRecord, StatementEvent};

/// A cell of a finance table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    Count(i64),
    /// Yuan with two places, as text.
    Money(String),
}

impl Cell {
    /// The cell as CSV text: text neutralised ([`csv_text`]), numbers as written.
    fn csv_text(&self) -> String {
        match self {
            Cell::Text(t) => csv_text(t),
            Cell::Money(t) => t.clone(),
            Cell::Count(n) => n.to_string(),
        }
    }
}

/// A text cell as a CSV file carries it: prefixed with `'` when a spreadsheet would otherwise
/// read it as a formula (it begins with `=`, `+`, `-`, `@`, a tab or a carriage return).
pub fn csv_text(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() }
}

pub struct Table {
    pub name: &'static str,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

/// The views of a report, in the order of the workbook's sheets.
pub const VIEWS: [&str; 7] = ["summary", "funders", "batches", "merchants", "categories", "days", "cards"];

fn text(value: impl Into<String>) -> Cell {
    Cell::Text(value.into())
}

fn money(value: &str) -> Cell {
    Cell::Money(value.to_owned())
}

/// One view of the report as a table; None for an unknown view name.
pub fn table(report: &SeasonReport, view: &str) -> Option<Table> {
    Some(match view {
        "summary" => summary_table(report),
        "funders" => funders_table(report),
        "batches" => batches_table(report),
        "merchants" => sales_table("merchants", &report.merchants),
        "categories" => sales_table("categories", &report.categories),
        "days" => days_table(report),
        "cards" => cards_table(report),
        _ => return None,
    })
}

fn summary_table(report: &SeasonReport) -> Table {
    Table {
        name: "summary",
        headers: vec!["item", "value"],
        rows: vec![
            vec![text("season_id"), text(report.season_id.to_string())],
            vec![text("season"), text(&report.season_name)],
            vec![text("generated_at"), text(report.generated_at.to_string())],
            vec![text("closed_at"), text(report.closed_at.map(|t| t.to_string()).unwrap_or_default())],
            vec![text("final"), text(report.r#final.to_string())],
            vec![text("city"), text(report.city.clone().unwrap_or_default())],
            vec![text("discount"), money(&report.totals.discount)],
            vec![text("order_amount"), money(&report.totals.order_amount)],
            vec![text("leverage"), text(report.totals.leverage.clone().unwrap_or_default())],
        ],
    }
}

fn funders_table(report: &SeasonReport) -> Table {
    Table {
        name: "funders",
        headers: vec![
            "funder",
            "appropriated",
            "available",
            "reserved",
            "outstanding",
            "redeemed",
            "reversed",
            "returned_by_expiry",
            "payable",
            "settled",
            "paid",
        ],
        rows: report
            .funders
            .iter()
            .map(|f| {
                vec![
                    text(&f.funder),
                    money(&f.appropriated),
                    money(&f.available),
                    money(&f.reserved),
                    money(&f.outstanding),
                    money(&f.redeemed),
                    money(&f.reversed),
                    money(&f.returned_by_expiry),
                    money(&f.payable),
                    money(&f.settled),
                    money(&f.paid),
                ]
            })
            .collect(),
    }
}

fn batches_table(report: &SeasonReport) -> Table {
    Table {
        name: "batches",
        headers: vec![
            "batch_id",
            "name",
            "issuer",
            "voucher_value",
            "stock",
            "claimed",
            "redeemed",
            "expired",
            "forfeited",
            "active",
            "reissued",
            "claimed_amount",
            "redeemed_amount",
            "expired_amount",
            "reissued_amount",
            "discount_paid",
            "order_amount",
        ],
        rows: report
            .batches
            .iter()
            .map(|b| {
                vec![
                    text(b.batch_id.to_string()),
                    text(&b.name),
                    text(&b.issuer),
                    money(&b.voucher_value),
                    Cell::Count(b.stock),
                    Cell::Count(b.claimed),
                    Cell::Count(b.redeemed),
                    Cell::Count(b.expired),
                    Cell::Count(b.forfeited),
                    Cell::Count(b.active),
                    Cell::Count(b.reissued),
                    money(&b.claimed_amount),
                    money(&b.redeemed_amount),
                    money(&b.expired_amount),
                    money(&b.reissued_amount),
                    money(&b.discount_paid),
                    money(&b.order_amount),
                ]
            })
            .collect(),
    }
}

/// The merchants' or the categories' sales: the same columns, keyed by merchant or category.
fn sales_table(name: &'static str, rows: &[SalesRow]) -> Table {
    let headers =
        vec!["key", "name", "city", "category", "redemptions", "reversals", "discount", "order_amount"];
    let rows = rows
        .iter()
        .map(|r| {
            vec![
                text(&r.key),
                text(&r.name),
                text(&r.city),
                text(&r.category),
                Cell::Count(r.redemptions),
                Cell::Count(r.reversals),
                money(&r.discount),
                money(&r.order_amount),
            ]
        })
        .collect();
    Table { name, headers, rows }
}

fn days_table(report: &SeasonReport) -> Table {
    Table {
        name: "days",
        headers: vec![
            "day",
            "claims",
            "claimed_amount",
            "redemptions",
            "reversals",
            "discount",
            "order_amount",
        ],
        rows: report
            .days
            .iter()
            .map(|d| {
                vec![
                    text(&d.day),
                    Cell::Count(d.claims),
                    money(&d.claimed_amount),
                    Cell::Count(d.redemptions),
                    Cell::Count(d.reversals),
                    money(&d.discount),
                    money(&d.order_amount),
                ]
            })
            .collect(),
    }
}

fn cards_table(report: &SeasonReport) -> Table {
    Table {
        name: "cards",
        headers: vec![
            "cards_issued_mobile",
            "cards_issued_bank_card",
            "member_discount",
            "points_earned",
            "points_exchanged",
            "points_expired",
            "points_reversed",
            "points_outstanding",
            "points_debt",
        ],
        rows: report
            .cards
            .iter()
            .map(|c| {
                vec![
                    Cell::Count(c.cards_issued_mobile),
                    Cell::Count(c.cards_issued_bank_card),
                    money(&c.member_discount),
                    Cell::Count(c.points_earned),
                    Cell::Count(c.points_exchanged),
                    Cell::Count(c.points_expired),
                    Cell::Count(c.points_reversed),
                    Cell::Count(c.points_outstanding),
                    Cell::Count(c.points_debt),
                ]
            })
            .collect(),
    }
}

/// A table as CSV text (RFC 4180, with a header row).
pub fn csv(table: &Table) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&table.headers)?;
    for row in &table.rows {
        writer.write_record(row.iter().map(Cell::csv_text))?;
    }
    writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The whole report as a workbook, one sheet per view.
pub fn xlsx(report: &SeasonReport) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let amount = Format::new().set_num_format("#,##0.00");
    for view in VIEWS {
        let Some(table) = table(report, view) else { continue };
        let sheet = workbook.add_worksheet();
        sheet.set_name(table.name)?;
        for (col, header) in table.headers.iter().enumerate() {
            sheet.write_string_with_format(0, col as u16, *header, &bold)?;
        }
        for (index, row) in table.rows.iter().enumerate() {
            let r = index as u32 + 1;
            for (col, cell) in row.iter().enumerate() {
                let c = col as u16;
                match cell {
                    Cell::Text(t) => sheet.write_string(r, c, t)?,
                    Cell::Count(n) => sheet.write_number(r, c, *n as f64)?,
                    Cell::Money(t) => match xlsx_amount(t) {
                        Some(number) => sheet.write_number_with_format(r, c, number, &amount)?,
                        None => sheet.write_string(r, c, t)?,
                    },
                };
            }
        }
        sheet.set_freeze_panes(1, 0)?;
    }
    workbook.save_to_buffer()
}

/// The exact decimal text of an amount as the xlsx format's number (see the module docs).
fn xlsx_amount(exact: &str) -> Option<f64> {
    exact.parse::<f64>().ok()
}

/// The bank's payout file: one row per merchant, with the split per funder.
pub fn payout_csv(
    settlement: &SettlementRecord,
    lines: &[SettlementLineRecord],
) -> Result<Vec<u8>, csv::Error> {
    let funders: BTreeSet<String> =
        lines.iter().flat_map(|l| l.funders.iter().map(|(f, _)| f.to_string())).collect();
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "settlement_id".to_owned(),
        "merchant_id".into(),
        "merchant_name".into(),
        "bank".into(),
        "account_no".into(),
        "account_name".into(),
        "redemptions".into(),
        "amount".into(),
    ];
    header.extend(funders.iter().map(|f| format!("funder_{f}")));
    writer.write_record(&header)?;
    for line in lines {
        let mut row = vec![
            settlement.id.to_string(),
            line.merchant_id.to_string(),
            csv_text(&line.merchant_name),
            csv_text(&line.bank),
            csv_text(&line.account_no),
            csv_text(&line.account_name),
            line.redemption_count.to_string(),
            yuan(line.amount_fen),
        ];
        for funder in &funders {
            let part = line.funders.iter().find(|(f, _)| f.to_string() == *funder).map(|(_, a)| a.as_fen());
            row.push(yuan(part.unwrap_or(0)));
        }
        writer.write_record(&row)?;
    }
    writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// A statement line with its running totals (yuan); also a row of the statement's CSV, in
/// this order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StatementLine {
    pub at: String,
    pub kind: String,
    pub id: Uuid,
    pub order_ref: Option<String>,
    pub order_amount: String,
    pub amount: String,
    /// Discounts redeemed net of reversals, so far.
    pub redeemed_net: String,
    pub settled: String,
    pub paid: String,
    /// Redeemed net, not yet settled.
    pub unsettled: String,
}

/// Running totals over a merchant's events in time order.
pub fn statement_lines(events: &[StatementEvent]) -> Vec<StatementLine> {
    let (mut redeemed, mut settled, mut paid) = (0i64, 0i64, 0i64);
    events
        .iter()
        .map(|e| {
            match e.kind.as_str() {
                "redemption" => redeemed += e.amount_fen,
                "reversal" => redeemed -= e.amount_fen,
                "settlement" => settled += e.amount_fen,
                _ => paid += e.amount_fen,
            }
            StatementLine {
                at: crate::domain::finance::cst_rfc3339(e.at),
                kind: e.kind.clone(),
                id: e.id,
                order_ref: e.order_ref.clone(),
                order_amount: yuan(e.order_amount_fen),
                amount: yuan(e.amount_fen),
                redeemed_net: yuan(redeemed),
                settled: yuan(settled),
                paid: yuan(paid),
                unsettled: yuan(redeemed - settled),
            }
        })
        .collect()
}

/// A statement as CSV: the order reference, the one text a till wrote, neutralised ([`csv_text`]).
pub fn statement_csv(lines: &[StatementLine]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for line in lines {
        let order_ref = line.order_ref.as_deref().map(csv_text);
        writer.serialize(StatementLine { order_ref, ..line.clone() })?;
    }
    writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;

    fn event(kind: &str, amount_fen: i64, at_s: i64) -> StatementEvent {
        StatementEvent {
            at: Timestamp::from_unix_us(at_s * 1_000_000),
            kind: kind.into(),
            id: Uuid::now_v7(),
            order_ref: None,
            order_amount_fen: 0,
            amount_fen,
        }
    }

    #[test]
    fn statement_keeps_running_totals() {
        let lines = statement_lines(&[
            event("redemption", 3_000, 1),
            event("redemption", 2_000, 2),
            event("reversal", 2_000, 3),
            event("settlement", 3_000, 4),
            event("payout", 3_000, 5),
        ]);
        let last = lines.last().expect("lines");
        assert_eq!(
            (last.redeemed_net.as_str(), last.settled.as_str(), last.paid.as_str()),
            ("30.00", "30.00", "30.00")
        );
        assert_eq!(lines[2].unsettled, "30.00");
        assert_eq!(lines[3].unsettled, "0.00");
        let csv = String::from_utf8(statement_csv(&lines).expect("csv")).expect("utf8");
        assert!(
            csv.starts_with("at,kind,id,order_ref,order_amount,amount,redeemed_net,settled,paid,unsettled\n")
        );
        assert_eq!(csv.lines().count(), 6);
    }

    #[test]
    fn text_that_a_spreadsheet_would_run_is_neutralised() {
        for formula in ["=2+3", "+cmd|' /C calc'!A0", "-1+1", "@SUM(1+1)", "\tx", "\rx"] {
            assert_eq!(csv_text(formula), format!("'{formula}"));
        }
        for plain in ["书店", "P-1", "a=b", "'quoted", ""] {
            assert_eq!(csv_text(plain), plain);
        }
        let table = Table {
            name: "t",
            headers: vec!["name", "amount", "count"],
            rows: vec![vec![text("=HYPERLINK(\"http://x/\")"), money("-30.00"), Cell::Count(-2)]],
        };
        let csv = String::from_utf8(csv(&table).expect("csv")).expect("utf8");
        assert_eq!(csv, "name,amount,count\n\"'=HYPERLINK(\"\"http://x/\"\")\",-30.00,-2\n");
    }

    #[test]
    fn xlsx_amounts_come_from_the_exact_text() {
        assert_eq!(xlsx_amount("30.10"), Some(30.1));
        assert_eq!(xlsx_amount("not money"), None);
    }
}
