//! Finance files: the season report as CSV (one view at a time) and as an `.xlsx` workbook (one
//! sheet per view), the bank's payout file, and a merchant's statement as CSV.
//!
//! Two languages ([`Lang`]): Chinese by default ([`zh`]: Chinese sheet names and headers, region
//! and category names beside their codes, totals rows, times in China Standard Time, CSV with a
//! UTF-8 byte-order mark so that Excel on a Chinese system reads it), and `lang=en`, the English
//! snake_case files as they were before (no byte-order mark, no totals row, codes only).
//!
//! Money is exact: a [`Cell::Money`] holds integer fen, totals are summed in fen. In CSV an
//! amount is the decimal text (`30.00`). An xlsx number cell is an IEEE double by the file
//! format's definition (it has no other number type), so for the workbook, and only there, the
//! fen become `Decimal::new(fen, 2)` (exact) and then the nearest double ([`xlsx_amount`]), shown
//! with the number format `#,##0.00`; the JSON and CSV forms remain the exact record.
//!
//! Every CSV this module writes is opened in a spreadsheet by finance, so a text cell (a name, a
//! bank, an account name, an order reference, a label) that begins with `=`, `+`, `-`, `@`, a tab
//! or a carriage return is written with a leading `'` ([`csv_text`], the OWASP rule against
//! formula injection). Amounts and counts are numbers the service wrote itself and stay as they
//! are, a negative amount (`-30.00`) included. The workbook writes text as string cells, never
//! as formulas, and its totals are numbers summed here, not formulas.

mod sheets;
mod zh;

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use uuid::Uuid;

use crate::app::error::AppError;
use crate::app::finance::{SeasonReport, yuan};
use crate::domain::error_code::ErrorCode;
use crate::domain::money::Fen;
use crate::storage::{MAX_REPORT_ROWS, SettlementLineRecord, SettlementRecord, StatementEvent};

/// The language of a finance file: Chinese unless `lang=en` is asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    /// The `lang` query parameter: absent, `zh` or `zh-CN` for Chinese, `en` for English; None
    /// for anything else.
    pub fn parse(text: Option<&str>) -> Option<Lang> {
        match text {
            None | Some("zh" | "zh-CN") => Some(Lang::Zh),
            Some("en") => Some(Lang::En),
            Some(_) => None,
        }
    }
}

/// A cell of a finance table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    Count(i64),
    /// An amount in fen, shown as yuan with two places.
    Money(i64),
    /// A plain decimal number such as the leverage (`7.09`).
    Ratio(Decimal),
    Empty,
}

impl Cell {
    /// The cell as CSV text: text neutralised ([`csv_text`]), numbers as written.
    fn csv_text(&self) -> String {
        match self {
            Cell::Text(t) => csv_text(t),
            Cell::Money(fen) => yuan(*fen),
            Cell::Count(n) => n.to_string(),
            Cell::Ratio(d) => d.to_string(),
            Cell::Empty => String::new(),
        }
    }

    /// About how many character widths the cell takes shown in a spreadsheet (a Chinese
    /// character two).
    fn shown_width(&self) -> usize {
        match self {
            Cell::Text(t) => text_width(t),
            Cell::Money(fen) => crate::app::zh::yuan_text(*fen).chars().count(),
            Cell::Count(n) => n.to_string().len(),
            Cell::Ratio(d) => d.to_string().len(),
            Cell::Empty => 0,
        }
    }
}

/// A text cell as a CSV file carries it: prefixed with `'` when a spreadsheet would otherwise
/// read it as a formula (it begins with `=`, `+`, `-`, `@`, a tab or a carriage return).
pub fn csv_text(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() }
}

fn text_width(text: &str) -> usize {
    text.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

pub struct Table {
    /// The sheet's name in the workbook.
    pub name: &'static str,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// The totals row (合计), after the rows; only in the Chinese files.
    pub totals: Option<Vec<Cell>>,
    pub lang: Lang,
}

fn strings(headers: &[&str]) -> Vec<String> {
    headers.iter().map(|h| (*h).to_owned()).collect()
}

/// An amount as the report writes it (`30.00`, `-0.50`) in fen; None if it is not one.
pub fn parse_fen(text: &str) -> Option<i64> {
    match text.strip_prefix('-') {
        Some(positive) => Fen::parse_yuan(positive).ok().map(|f| -f.as_fen()),
        None => Fen::parse_yuan(text).ok().map(Fen::as_fen),
    }
}

/// The views of a report, in the order of the workbook's sheets.
pub const VIEWS: [&str; 7] = ["summary", "funders", "batches", "merchants", "categories", "days", "cards"];

fn text(value: impl Into<String>) -> Cell {
    Cell::Text(value.into())
}

/// An amount of the report as a cell: its fen, or the text as it is if it were not an amount.
fn money(value: &str) -> Cell {
    parse_fen(value).map_or_else(|| Cell::Text(value.to_owned()), Cell::Money)
}

/// One view of the report as a table; None for an unknown view name.
pub fn table(report: &SeasonReport, view: &str, lang: Lang) -> Option<Table> {
    Some(match view {
        "summary" => match lang {
            Lang::Zh => zh::summary_table(report),
            Lang::En => summary_table(report),
        },
        "funders" => sheets::FUNDERS.table(&report.funders, lang),
        "batches" => sheets::BATCHES.table(&report.batches, lang),
        "merchants" => sheets::MERCHANTS.table(&report.merchants, lang),
        "categories" => sheets::CATEGORIES.table(&report.categories, lang),
        "days" => sheets::DAYS.table(&report.days, lang),
        "cards" => sheets::CARDS.table(report.cards.as_slice(), lang),
        _ => return None,
    })
}

/// The report's summary in English: one item a row.
fn summary_table(report: &SeasonReport) -> Table {
    Table {
        name: "summary",
        headers: strings(&["item", "value"]),
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
        totals: None,
        lang: Lang::En,
    }
}

/// The byte-order mark that tells a spreadsheet a CSV file is UTF-8.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A table as CSV text (RFC 4180, with a header row, and the totals row if any); a Chinese
/// file begins with the UTF-8 byte-order mark.
pub fn csv(table: &Table) -> Result<Vec<u8>, csv::Error> {
    let start = if table.lang == Lang::Zh { UTF8_BOM.to_vec() } else { Vec::new() };
    let mut writer = csv::Writer::from_writer(start);
    writer.write_record(table.headers.iter().map(|h| csv_text(h)))?;
    for row in table.rows.iter().chain(&table.totals) {
        writer.write_record(row.iter().map(Cell::csv_text))?;
    }
    writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The report's views as tables, in the order of the workbook's sheets.
pub fn tables(report: &SeasonReport, lang: Lang) -> Vec<Table> {
    VIEWS.iter().filter_map(|view| table(report, view, lang)).collect()
}

/// The cell formats of a sheet, plain and for the header and totals rows (bold).
struct Formats {
    header: Format,
    text: [Format; 2],
    count: [Format; 2],
    amount: [Format; 2],
    ratio: [Format; 2],
}

impl Formats {
    fn new() -> Formats {
        let both = |f: Format| [f.clone(), f.set_bold()];
        Formats {
            header: Format::new().set_bold().set_text_wrap(),
            text: both(Format::new()),
            count: both(Format::new().set_num_format("#,##0")),
            amount: both(Format::new().set_num_format("#,##0.00")),
            ratio: both(Format::new().set_num_format("0.00")),
        }
    }
}

/// The whole report as a workbook, one sheet per view: a bold header row, frozen and repeated
/// on every printed page, columns as wide as their widest cell, A4 landscape one page wide.
pub fn xlsx(report: &SeasonReport, lang: Lang) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let formats = Formats::new();
    for table in tables(report, lang) {
        let sheet = workbook.add_worksheet();
        sheet.set_name(table.name)?;
        for (col, header) in table.headers.iter().enumerate() {
            sheet.write_string_with_format(0, col as u16, header, &formats.header)?;
        }
        for (index, row) in table.rows.iter().enumerate() {
            write_row(sheet, index as u32 + 1, row, &formats, 0)?;
        }
        if let Some(totals) = &table.totals {
            write_row(sheet, table.rows.len() as u32 + 1, totals, &formats, 1)?;
        }
        for (col, width) in column_widths(&table).into_iter().enumerate() {
            sheet.set_column_width(col as u16, width)?;
        }
        sheet.set_freeze_panes(1, 0)?;
        sheet.set_repeat_rows(0, 0)?;
        sheet.set_landscape().set_paper_size(9).set_print_fit_to_pages(1, 0);
    }
    workbook.save_to_buffer()
}

/// One row of cells; `style` 0 plain, 1 bold. Text is always a string cell, never a formula.
fn write_row(
    sheet: &mut Worksheet,
    r: u32,
    row: &[Cell],
    formats: &Formats,
    style: usize,
) -> Result<(), XlsxError> {
    for (col, cell) in row.iter().enumerate() {
        let c = col as u16;
        match cell {
            Cell::Text(t) => sheet.write_string_with_format(r, c, t, &formats.text[style])?,
            Cell::Count(n) => sheet.write_number_with_format(r, c, *n as f64, &formats.count[style])?,
            Cell::Money(fen) => {
                sheet.write_number_with_format(r, c, xlsx_amount(*fen), &formats.amount[style])?
            }
            Cell::Ratio(d) => {
                sheet.write_number_with_format(r, c, d.to_f64().unwrap_or(0.0), &formats.ratio[style])?
            }
            Cell::Empty => continue,
        };
    }
    Ok(())
}

/// Each column's width in characters: its widest cell or header and a margin, within 8 to 60
/// (a long name wraps rather than widening its column past that).
fn column_widths(table: &Table) -> Vec<f64> {
    let mut widths: Vec<usize> = table.headers.iter().map(|h| text_width(h)).collect();
    for row in table.rows.iter().chain(&table.totals) {
        for (col, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(col) {
                *width = (*width).max(cell.shown_width());
            }
        }
    }
    widths.into_iter().map(|w| (w + 2).clamp(8, 60) as f64).collect()
}

/// An amount in fen as the xlsx format's number (see the module docs): the exact decimal
/// `fen / 100`, then the double nearest to it.
fn xlsx_amount(fen: i64) -> f64 {
    Decimal::new(fen, 2).to_f64().unwrap_or(0.0)
}

/// The bank's payout file: one row per merchant, with the split per funder; in Chinese with the
/// funders' names in their columns' headers and a totals row.
pub fn payout_csv(
    settlement: &SettlementRecord,
    lines: &[SettlementLineRecord],
    lang: Lang,
) -> Result<Vec<u8>, csv::Error> {
    csv(&payout_table(settlement, lines, lang))
}

fn payout_table(settlement: &SettlementRecord, lines: &[SettlementLineRecord], lang: Lang) -> Table {
    let funders: BTreeSet<String> =
        lines.iter().flat_map(|l| l.funders.iter().map(|(f, _)| f.to_string())).collect();
    let mut headers = match lang {
        Lang::En => strings(&[
            "settlement_id",
            "merchant_id",
            "merchant_name",
            "bank",
            "account_no",
            "account_name",
            "redemptions",
            "amount",
        ]),
        Lang::Zh => strings(&zh::PAYOUT_HEADERS),
    };
    headers.extend(funders.iter().map(|f| match lang {
        Lang::En => format!("funder_{f}"),
        Lang::Zh => zh::funder_header(f),
    }));
    let rows: Vec<Vec<Cell>> = lines
        .iter()
        .map(|line| {
            let mut row = vec![
                text(settlement.id.to_string()),
                text(line.merchant_id.to_string()),
                text(&line.merchant_name),
                text(&line.bank),
                text(&line.account_no),
                text(&line.account_name),
                Cell::Count(line.redemption_count),
                Cell::Money(line.amount_fen),
            ];
            for funder in &funders {
                let part =
                    line.funders.iter().find(|(f, _)| f.to_string() == *funder).map(|(_, a)| a.as_fen());
                row.push(Cell::Money(part.unwrap_or(0)));
            }
            row
        })
        .collect();
    let totals = (lang == Lang::Zh).then(|| zh::totals_row(&rows, 6, &[])).flatten();
    Table { name: "payout", headers, rows, totals, lang }
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
    /// On a `rejected` line the rejection's note (what the merchant is told), on a `released`
    /// line the release's; else none.
    pub note: Option<String>,
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
                // Held money left payable like settled money; a rejection takes the subsidy back.
                "settlement" | "held" => settled += e.amount_fen,
                "rejected" => {
                    redeemed -= e.amount_fen;
                    settled -= e.amount_fen;
                }
                "released" => {}
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
                note: e.note.clone(),
            }
        })
        .collect()
}

/// A statement as CSV: the order reference (a till wrote it) and a decision's note (staff wrote
/// it), the only free text, neutralised ([`csv_text`]).
/// In Chinese: Chinese headers and kinds, times as Beijing wall-clock seconds, and no totals row
/// (each line carries the running totals; the last line is the statement's total).
pub fn statement_csv(lines: &[StatementLine], lang: Lang) -> Result<Vec<u8>, csv::Error> {
    if lang == Lang::Zh {
        return csv(&zh::statement_table(lines));
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    for line in lines {
        let order_ref = line.order_ref.as_deref().map(csv_text);
        let note = line.note.as_deref().map(csv_text);
        writer.serialize(StatementLine { order_ref, note, ..line.clone() })?;
    }
    writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// How a season report is asked for: JSON, one view (of [`VIEWS`]) as CSV, or the workbook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Csv(&'static str),
    Xlsx,
    /// A chart of the report, one of `charts::VIEWS`.
    Svg(&'static str),
}

/// A season report's `format` (json by default, csv or xlsx: else 422 `invalid_format`) and,
/// for CSV, its `view` (funders by default, one of [`VIEWS`]: else 422 `invalid_view`); `svg`, a
/// chart, its view one of `charts::VIEWS` (funders by default).
pub fn report_format(format: Option<&str>, view: Option<&str>) -> Result<ReportFormat, AppError> {
    match format.unwrap_or("json") {
        "json" => Ok(ReportFormat::Json),
        "csv" => {
            let view = view.unwrap_or("funders");
            VIEWS.iter().find(|known| **known == view).map(|known| ReportFormat::Csv(known)).ok_or_else(
                || AppError::invalid(ErrorCode::InvalidView, format!("view is one of {}", VIEWS.join(", "))),
            )
        }
        "xlsx" => Ok(ReportFormat::Xlsx),
        "svg" => {
            let view = view.unwrap_or("funders");
            let views = crate::app::finance::charts::VIEWS;
            views.iter().find(|known| **known == view).map(|known| ReportFormat::Svg(known)).ok_or_else(
                || {
                    AppError::invalid(
                        ErrorCode::InvalidView,
                        format!("a chart's view is one of {}", views.join(", ")),
                    )
                },
            )
        }
        _ => Err(AppError::invalid(ErrorCode::InvalidFormat, "format is json, csv, xlsx or svg")),
    }
}

/// A merchant statement's `format`: JSON (the default) or CSV, else 422 `invalid_format`.
pub fn statement_is_csv(format: Option<&str>) -> Result<bool, AppError> {
    match format.unwrap_or("json") {
        "json" => Ok(false),
        "csv" => Ok(true),
        _ => Err(AppError::invalid(ErrorCode::InvalidFormat, "format is json or csv")),
    }
}

/// A statement is served whole up to `MAX_REPORT_ROWS` events (read one more to know); past
/// that, 422 `statement_too_large`.
pub fn statement_within_limit(events: &[StatementEvent]) -> Result<(), AppError> {
    if events.len() as i64 > MAX_REPORT_ROWS {
        return Err(AppError::invalid(
            ErrorCode::StatementTooLarge,
            "more than 200,000 lines: ask finance for a file",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;

    #[test]
    fn a_report_is_json_a_csv_view_or_a_workbook() {
        assert_eq!(report_format(None, Some("bogus")).expect("default"), ReportFormat::Json);
        assert_eq!(report_format(Some("csv"), None).expect("default view"), ReportFormat::Csv("funders"));
        assert_eq!(report_format(Some("csv"), Some("days")).expect("a view"), ReportFormat::Csv("days"));
        assert_eq!(report_format(Some("xlsx"), Some("days")).expect("workbook"), ReportFormat::Xlsx);
        assert_eq!(report_format(Some("svg"), Some("cities")).expect("a chart"), ReportFormat::Svg("cities"));
        assert_eq!(report_format(Some("svg"), None).expect("default chart"), ReportFormat::Svg("funders"));
        let code = |r: Result<ReportFormat, AppError>| r.expect_err("refused").code();
        assert_eq!(code(report_format(Some("csv"), Some("bogus"))), Some(ErrorCode::InvalidView));
        assert_eq!(code(report_format(Some("pdf"), None)), Some(ErrorCode::InvalidFormat));
        assert!(!statement_is_csv(None).expect("json") && statement_is_csv(Some("csv")).expect("csv"));
        assert_eq!(
            statement_is_csv(Some("xlsx")).expect_err("refused").code(),
            Some(ErrorCode::InvalidFormat)
        );
    }

    #[test]
    fn a_statement_is_served_up_to_its_limit() {
        let events = vec![event("redemption", 1, 0); MAX_REPORT_ROWS as usize];
        statement_within_limit(&events).expect("at the limit");
        let over = [events, vec![event("redemption", 1, 0)]].concat();
        let refused = statement_within_limit(&over).expect_err("over");
        assert_eq!(refused.code(), Some(ErrorCode::StatementTooLarge));
    }

    fn event(kind: &str, amount_fen: i64, at_s: i64) -> StatementEvent {
        StatementEvent {
            at: Timestamp::from_unix_us(at_s * 1_000_000),
            kind: kind.into(),
            id: Uuid::now_v7(),
            order_ref: None,
            order_amount_fen: 0,
            amount_fen,
            note: None,
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
        let csv = String::from_utf8(statement_csv(&lines, Lang::En).expect("csv")).expect("utf8");
        assert!(csv.starts_with(
            "at,kind,id,order_ref,order_amount,amount,redeemed_net,settled,paid,unsettled,note\n"
        ));
        assert_eq!(csv.lines().count(), 6);
        let zh = statement_csv(&lines, Lang::Zh).expect("csv");
        let zh = String::from_utf8(zh.strip_prefix(UTF8_BOM).expect("a BOM").to_vec()).expect("utf8");
        assert!(zh.starts_with("时间（北京时间）,类型,流水ID,订单号,"), "{zh}");
        assert!(zh.lines().next().expect("headers").ends_with(",未结算,说明"), "{zh}");
        let rows: Vec<&str> = zh.lines().collect();
        assert_eq!(rows.len(), 6, "no totals row on a statement");
        assert!(rows[1].starts_with("1970-01-01 08:00:01,核销,"), "{zh}");
        assert!(rows[5].ends_with(",30.00,30.00,30.00,0.00,"), "{zh}");
    }

    #[test]
    fn a_rejected_lines_note_is_on_the_statement_csv_neutralised() {
        let note = |kind: &str, amount_fen: i64, at_s: i64, note: &str| StatementEvent {
            note: Some(note.to_owned()),
            ..event(kind, amount_fen, at_s)
        };
        let lines = statement_lines(&[
            event("redemption", 1_000, 1),
            event("held", 1_000, 2),
            note("rejected", 1_000, 3, "同一顾客反复满额消费，补贴不予结算"),
            note("rejected", 0, 4, "=HYPERLINK(\"http://x/\")"),
        ]);
        assert_eq!(lines[2].note.as_deref(), Some("同一顾客反复满额消费，补贴不予结算"));
        let en = String::from_utf8(statement_csv(&lines, Lang::En).expect("csv")).expect("utf8");
        let rows: Vec<&str> = en.lines().collect();
        assert!(rows[2].ends_with(",10.00,10.00,0.00,0.00,"), "a held line has no note: {en}");
        assert!(rows[3].ends_with(",0.00,0.00,0.00,0.00,同一顾客反复满额消费，补贴不予结算"), "{en}");
        assert!(rows[4].ends_with(",\"'=HYPERLINK(\"\"http://x/\"\")\""), "neutralised: {en}");
        let zh = statement_csv(&lines, Lang::Zh).expect("csv");
        let zh = String::from_utf8(zh.strip_prefix(UTF8_BOM).expect("a BOM").to_vec()).expect("utf8");
        let rows: Vec<&str> = zh.lines().collect();
        assert!(
            rows[3].contains(",拒付,") && rows[3].ends_with(",同一顾客反复满额消费，补贴不予结算"),
            "{zh}"
        );
        assert!(rows[4].ends_with(",\"'=HYPERLINK(\"\"http://x/\"\")\""), "neutralised: {zh}");
    }

    #[test]
    fn text_that_a_spreadsheet_would_run_is_neutralised() {
        for formula in ["=2+3", "+cmd|' /C calc'!A0", "-1+1", "@SUM(1+1)", "\tx", "\rx"] {
            assert_eq!(csv_text(formula), format!("'{formula}"));
        }
        for plain in ["书店", "P-1", "a=b", "'quoted", ""] {
            assert_eq!(csv_text(plain), plain);
        }
        let rows = vec![vec![text("=HYPERLINK(\"http://x/\")"), money("-30.00"), Cell::Count(-2)]];
        let mut table = Table {
            name: "t",
            headers: strings(&["name", "amount", "count"]),
            rows,
            totals: None,
            lang: Lang::En,
        };
        let csv_en = String::from_utf8(csv(&table).expect("csv")).expect("utf8");
        assert_eq!(csv_en, "name,amount,count\n\"'=HYPERLINK(\"\"http://x/\"\")\",-30.00,-2\n");
        table.lang = Lang::Zh;
        table.totals = zh::totals_row(&table.rows, 1, &[]);
        let csv_zh = csv(&table).expect("csv");
        assert_eq!(csv_zh[..3], *UTF8_BOM);
        assert_eq!(csv_zh[3..], *format!("{csv_en}合计,-30.00,-2\n").as_bytes());
    }

    #[test]
    fn totals_are_summed_in_fen_per_column() {
        let rows = vec![
            vec![text("a"), text("x"), money("0.10"), Cell::Count(1), money("7.00")],
            vec![text("b"), text("y"), money("0.20"), Cell::Count(2), money("-0.05")],
        ];
        let totals = zh::totals_row(&rows, 2, &[4]).expect("rows");
        assert_eq!(totals, [text("合计"), Cell::Empty, Cell::Money(30), Cell::Count(3), Cell::Empty]);
        assert_eq!(zh::totals_row(&[], 1, &[]), None);
        assert_eq!(parse_fen("-0.05"), Some(-5));
        assert_eq!(money("n/a"), text("n/a"));
    }

    #[test]
    fn xlsx_amounts_come_from_exact_fen() {
        assert_eq!(xlsx_amount(3_010), 30.1);
        assert_eq!(xlsx_amount(-5), -0.05);
        assert_eq!(xlsx_amount(123_456_789_012), 1_234_567_890.12);
    }
}
