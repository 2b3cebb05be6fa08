//! The Chinese finance files: sheet names and headers in Chinese, a region's and a category's
//! name beside its code (separate columns, so that the files stay machine-readable), totals rows
//! (合计) summed in fen, the leverage as a number, times in China Standard Time.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::{Cell, Lang, StatementLine, Table, money, strings, text};
use crate::app::finance::{SalesRow, SeasonReport};
use crate::app::zh;
use crate::domain::region::RegionCode;
use crate::domain::season::Category;
use crate::domain::time::Timestamp;

/// The payout file's columns before one column per funder.
pub const PAYOUT_HEADERS: [&str; 8] =
    ["结算单ID", "商户ID", "商户名称", "开户银行", "银行账号", "账户名称", "核销笔数", "结算金额"];

/// The label of a totals row, in its first column.
pub const TOTALS: &str = "合计";

/// One view of the report as a Chinese table; None for an unknown view name.
pub fn table(report: &SeasonReport, view: &str) -> Option<Table> {
    Some(match view {
        "summary" => summary_table(report),
        "funders" => funders_table(report),
        "batches" => batches_table(report),
        "merchants" => merchants_table(&report.merchants),
        "categories" => categories_table(&report.categories),
        "days" => days_table(report),
        "cards" => cards_table(report),
        _ => return None,
    })
}

fn zh_table(name: &'static str, headers: &[&str], rows: Vec<Vec<Cell>>, totals: Option<Vec<Cell>>) -> Table {
    Table { name, headers: strings(headers), rows, totals, lang: Lang::Zh }
}

/// The name of a region code as the report writes it (`370200` → 青岛市); empty if unknown.
pub fn region(code: &str) -> String {
    RegionCode::from_str(code).ok().and_then(zh::region_name).unwrap_or_default()
}

/// A category slug's Chinese name (`internet_cafe` → 网吧); the slug itself if unknown.
fn category(slug: &str) -> String {
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

fn summary_table(report: &SeasonReport) -> Table {
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

fn funders_table(report: &SeasonReport) -> Table {
    let headers = [
        "出资方代码",
        "出资方",
        "拨付",
        "可用余额",
        "已预留",
        "已领未核销",
        "已核销",
        "已冲正",
        "过期退回",
        "应付商户",
        "已结算",
        "已付款",
    ];
    let rows: Vec<Vec<Cell>> = report
        .funders
        .iter()
        .map(|f| {
            let amounts = [
                &f.appropriated,
                &f.available,
                &f.reserved,
                &f.outstanding,
                &f.redeemed,
                &f.reversed,
                &f.returned_by_expiry,
                &f.payable,
                &f.settled,
                &f.paid,
            ];
            let mut row = vec![text(&f.funder), text(region(&f.funder))];
            row.extend(amounts.into_iter().map(|a| money(a)));
            row
        })
        .collect();
    let totals = totals_row(&rows, 2, &[]);
    zh_table("出资方", &headers, rows, totals)
}

fn batches_table(report: &SeasonReport) -> Table {
    let headers = [
        "批次ID",
        "批次名称",
        "发放方代码",
        "发放方",
        "券面额",
        "发行量",
        "已领取",
        "已核销",
        "已过期",
        "已作废",
        "未使用",
        "已补发",
        "领取金额",
        "核销金额",
        "过期金额",
        "补发金额",
        "实付优惠",
        "带动消费",
    ];
    let rows: Vec<Vec<Cell>> = report
        .batches
        .iter()
        .map(|b| {
            let mut row =
                vec![text(b.batch_id.to_string()), text(&b.name), text(&b.issuer), text(region(&b.issuer))];
            row.push(money(&b.voucher_value));
            let counts = [b.stock, b.claimed, b.redeemed, b.expired, b.forfeited, b.active, b.reissued];
            row.extend(counts.into_iter().map(Cell::Count));
            let amounts = [
                &b.claimed_amount,
                &b.redeemed_amount,
                &b.expired_amount,
                &b.reissued_amount,
                &b.discount_paid,
                &b.order_amount,
            ];
            row.extend(amounts.into_iter().map(|a| money(a)));
            row
        })
        .collect();
    // A voucher's value is not a flow: no total.
    let totals = totals_row(&rows, 5, &[]);
    zh_table("批次", &headers, rows, totals)
}

fn sales_cells(r: &SalesRow) -> [Cell; 4] {
    [Cell::Count(r.redemptions), Cell::Count(r.reversals), money(&r.discount), money(&r.order_amount)]
}

fn merchants_table(merchants: &[SalesRow]) -> Table {
    let headers =
        ["商户ID", "商户名称", "城市代码", "城市", "类别", "核销笔数", "冲正笔数", "优惠金额", "订单金额"];
    let rows: Vec<Vec<Cell>> = merchants
        .iter()
        .map(|r| {
            let mut row = vec![text(&r.key), text(&r.name), text(&r.city), text(region(&r.city))];
            row.push(text(category(&r.category)));
            row.extend(sales_cells(r));
            row
        })
        .collect();
    let totals = totals_row(&rows, 5, &[]);
    zh_table("商户", &headers, rows, totals)
}

fn categories_table(categories: &[SalesRow]) -> Table {
    let headers = ["类别代码", "类别", "核销笔数", "冲正笔数", "优惠金额", "订单金额"];
    let rows: Vec<Vec<Cell>> = categories
        .iter()
        .map(|r| {
            let mut row = vec![text(&r.key), text(category(&r.key))];
            row.extend(sales_cells(r));
            row
        })
        .collect();
    let totals = totals_row(&rows, 2, &[]);
    zh_table("类别", &headers, rows, totals)
}

fn days_table(report: &SeasonReport) -> Table {
    let headers =
        ["日期（北京时间）", "领取张数", "领取金额", "核销笔数", "冲正笔数", "优惠金额", "订单金额"];
    let rows: Vec<Vec<Cell>> = report
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
        .collect();
    let totals = totals_row(&rows, 1, &[]);
    zh_table("每日", &headers, rows, totals)
}

/// The benefit cards' figures: one row, so no totals row.
fn cards_table(report: &SeasonReport) -> Table {
    let headers = [
        "开卡数（手机号）",
        "开卡数（银行卡）",
        "会员优惠金额",
        "获得积分",
        "兑换积分",
        "过期积分",
        "冲正积分",
        "积分余额",
        "积分欠额",
    ];
    let rows = report
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
        .collect();
    zh_table("惠民卡", &headers, rows, None)
}

/// A statement line's kind in Chinese.
fn kind(kind: &str) -> &str {
    match kind {
        "redemption" => "核销",
        "reversal" => "冲正",
        "settlement" => "结算",
        "payout" => "付款",
        other => other,
    }
}

/// A merchant's statement in Chinese: the time (the lines carry it as CST RFC 3339) to the
/// second, the kind in words, amounts as numbers.
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
    ];
    let rows = lines
        .iter()
        .map(|l| {
            let at = Timestamp::parse_rfc3339(&l.at).map_or_else(|| l.at.clone(), cst_time);
            let mut row = vec![text(at), text(kind(&l.kind)), text(l.id.to_string())];
            row.push(text(l.order_ref.clone().unwrap_or_default()));
            let amounts = [&l.order_amount, &l.amount, &l.redeemed_net, &l.settled, &l.paid, &l.unsettled];
            row.extend(amounts.into_iter().map(|a| money(a)));
            row
        })
        .collect();
    Table { name: "对账单", headers: strings(&headers), rows, totals: None, lang: Lang::Zh }
}
