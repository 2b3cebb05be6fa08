//! The Chinese finance files: sheet names and headers in Chinese, a region's and a category's
//! name beside its code (separate columns, so that the files stay machine-readable), totals rows
//! (合计) summed in fen, the leverage as a number, times in China Standard Time.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::{Cell, Lang, StatementLine, Table, money, strings, text};
use crate::app::finance::SeasonReport;
use crate::app::zh;
use crate::domain::region::RegionCode;
use crate::domain::season::Category;
use crate::domain::time::Timestamp;

/// The payout file's columns before one column per funder.
pub const PAYOUT_HEADERS: [&str; 8] =
    ["结算单ID", "商户ID", "商户名称", "开户银行", "银行账号", "账户名称", "核销笔数", "结算金额"];

/// The label of a totals row, in its first column.
pub const TOTALS: &str = "合计";

fn zh_table(name: &'static str, headers: &[&str], rows: Vec<Vec<Cell>>, totals: Option<Vec<Cell>>) -> Table {
    Table { name, headers: strings(headers), rows, totals, lang: Lang::Zh }
}

/// The name of a region code as the report writes it (`370200` → 青岛市); empty if unknown.
pub fn region(code: &str) -> String {
    RegionCode::from_str(code).ok().and_then(zh::region_name).unwrap_or_default()
}

/// A category slug's Chinese name (`internet_cafe` → 网吧); the slug itself if unknown.
pub fn category(slug: &str) -> String {
    Category::from_str(slug).map_or_else(|_| slug.to_owned(), |c| zh::category_name(c).to_owned())
}

/// A payout file's column header for a funder: `山东省 (370000)`.
pub fn funder_header(code: &str) -> String {
    match region(code).as_str() {
        "" => code.to_owned(),
        name => format!("{name} ({code})"),
    }
}

/// The totals row of `rows`: 合计 in the first column, and the sum of every column from `from`
/// on whose cells are all amounts (summed in fen) or all counts, `skip` excepted; None for no
/// rows (a sum that overflowed i64 is left empty).
pub fn totals_row(rows: &[Vec<Cell>], from: usize, skip: &[usize]) -> Option<Vec<Cell>> {
    let width = rows.first()?.len();
    let mut totals = vec![Cell::Empty; width];
    totals[0] = Cell::Text(TOTALS.to_owned());
    for (col, total) in totals.iter_mut().enumerate().skip(from.max(1)) {
        if skip.contains(&col) {
            continue;
        }
        let column = rows.iter().map(|row| row.get(col));
        let sum = |pick: fn(&Cell) -> Option<i64>| -> Option<i64> {
            let mut sum = 0i128;
            for cell in column.clone() {
                sum += i128::from(pick(cell?)?);
            }
            i64::try_from(sum).ok()
        };
        if let Some(fen) = sum(|c| if let Cell::Money(f) = c { Some(*f) } else { None }) {
            *total = Cell::Money(fen);
        } else if let Some(n) = sum(|c| if let Cell::Count(n) = c { Some(*n) } else { None }) {
            *total = Cell::Count(n);
        }
    }
    Some(totals)
}

/// An instant as a Beijing wall-clock time to the second: `2026-12-02 22:04:05`.
fn cst_time(at: Timestamp) -> String {
    zh::cst_second(at)
}

/// The report's summary in Chinese: one item a row.
pub fn summary_table(report: &SeasonReport) -> Table {
    let city = report.city.clone().unwrap_or_default();
    let leverage = report.totals.leverage.as_deref().and_then(|l| Decimal::from_str(l).ok());
    let rows = vec![
        vec![text("活动期ID"), text(report.season_id.to_string())],
        vec![text("活动期"), text(&report.season_name)],
        vec![text("生成时间（北京时间）"), text(cst_time(report.generated_at))],
        vec![text("结账时间（北京时间）"), text(report.closed_at.map(cst_time).unwrap_or_default())],
        vec![text("最终报表"), text(if report.r#final { "是" } else { "否" })],
        vec![text("城市代码"), text(&city)],
        vec![text("城市"), text(if city.is_empty() { "全省".to_owned() } else { region(&city) })],
        vec![text("优惠金额（政府补贴）"), money(&report.totals.discount)],
        vec![text("带动消费金额"), money(&report.totals.order_amount)],
        vec![text("杠杆率（每元补贴带动消费）"), leverage.map_or(Cell::Empty, Cell::Ratio)],
    ];
    zh_table("概要", &["项目", "数值"], rows, None)
}

/// A statement line's kind in Chinese.
fn kind(kind: &str) -> &str {
    match kind {
        "redemption" => "核销",
        "reversal" => "冲正",
        "settlement" => "结算",
        "payout" => "付款",
        "held" => "暂扣",
        "released" => "放行",
        "rejected" => "拒付",
        other => other,
    }
}

/// A merchant's statement in Chinese: the time (the lines carry it as CST RFC 3339) to the
/// second, the kind in words, amounts as numbers, a decision's note last (说明).
pub fn statement_table(lines: &[StatementLine]) -> Table {
    let headers = [
        "时间（北京时间）",
        "类型",
        "流水ID",
        "订单号",
        "订单金额",
        "金额",
        "累计核销净额",
        "累计已结算",
        "累计已付款",
        "未结算",
        "说明",
    ];
    let rows = lines
        .iter()
        .map(|l| {
            let at = Timestamp::parse_rfc3339(&l.at).map_or_else(|| l.at.clone(), cst_time);
            let mut row = vec![text(at), text(kind(&l.kind)), text(l.id.to_string())];
            row.push(text(l.order_ref.clone().unwrap_or_default()));
            let amounts = [&l.order_amount, &l.amount, &l.redeemed_net, &l.settled, &l.paid, &l.unsettled];
            row.extend(amounts.into_iter().map(|a| money(a)));
            row.push(text(l.note.clone().unwrap_or_default()));
            row
        })
        .collect();
    Table { name: "对账单", headers: strings(&headers), rows, totals: None, lang: Lang::Zh }
}
