//! The report's row sheets, defined once for both languages: each column names its header in
//! English and in Chinese (a column only one language's file has names None for the other: the
//! Chinese files put a region's or category's name beside its code, the English ones keep the
//! slug) and how a row becomes its cell.

use super::zh::{category, region, totals_row};
use super::{Cell, Lang, Table, money, text};
use crate::app::finance::{BatchRow, CardRow, DayRow, FunderRow, SalesRow};

/// A column of a sheet: its header in each language (None: not in that language's file) and
/// its cell from a row.
pub struct Column<R> {
    en: Option<&'static str>,
    zh: Option<&'static str>,
    cell: fn(&R) -> Cell,
}

impl<R> Column<R> {
    fn header(&self, lang: Lang) -> Option<&'static str> {
        match lang {
            Lang::En => self.en,
            Lang::Zh => self.zh,
        }
    }
}

/// A column in both languages' files.
const fn both<R>(en: &'static str, zh: &'static str, cell: fn(&R) -> Cell) -> Column<R> {
    Column { en: Some(en), zh: Some(zh), cell }
}

/// A column of the Chinese files only (a name beside its code).
const fn zh_only<R>(zh: &'static str, cell: fn(&R) -> Cell) -> Column<R> {
    Column { en: None, zh: Some(zh), cell }
}

/// A column of the English files only.
const fn en_only<R>(en: &'static str, cell: fn(&R) -> Cell) -> Column<R> {
    Column { en: Some(en), zh: None, cell }
}

/// A sheet: its name in each language, its columns, and, in the Chinese files, the first column
/// of the totals row (None: no totals row, e.g. a sheet of one row).
pub struct Sheet<R: 'static> {
    en: &'static str,
    zh: &'static str,
    columns: &'static [Column<R>],
    zh_totals_from: Option<usize>,
}

impl<R: 'static> Sheet<R> {
    /// The sheet of `rows` in `lang`: the language's columns, and its totals row.
    pub fn table(&self, rows: &[R], lang: Lang) -> Table {
        let columns: Vec<&Column<R>> = self.columns.iter().filter(|c| c.header(lang).is_some()).collect();
        let rows: Vec<Vec<Cell>> =
            rows.iter().map(|row| columns.iter().map(|column| (column.cell)(row)).collect()).collect();
        let totals = match lang {
            Lang::Zh => self.zh_totals_from.and_then(|from| totals_row(&rows, from, &[])),
            Lang::En => None,
        };
        let name = match lang {
            Lang::En => self.en,
            Lang::Zh => self.zh,
        };
        let headers = columns.iter().filter_map(|column| column.header(lang)).map(str::to_owned).collect();
        Table { name, headers, rows, totals, lang }
    }
}

pub const FUNDERS: Sheet<FunderRow> = Sheet {
    en: "funders",
    zh: "出资方",
    columns: &[
        both("funder", "出资方代码", |f| text(&f.funder)),
        zh_only("出资方", |f| text(region(&f.funder))),
        both("appropriated", "拨付", |f| money(&f.appropriated)),
        both("available", "可用余额", |f| money(&f.available)),
        both("reserved", "已预留", |f| money(&f.reserved)),
        both("outstanding", "已领未核销", |f| money(&f.outstanding)),
        both("redeemed", "已核销", |f| money(&f.redeemed)),
        both("reversed", "已冲正", |f| money(&f.reversed)),
        both("returned_by_expiry", "过期退回", |f| money(&f.returned_by_expiry)),
        both("payable", "应付商户", |f| money(&f.payable)),
        both("held", "暂扣", |f| money(&f.held)),
        both("released", "暂扣放行", |f| money(&f.released)),
        both("rejected", "暂扣拒付", |f| money(&f.rejected)),
        both("settled", "已结算", |f| money(&f.settled)),
        both("paid", "已付款", |f| money(&f.paid)),
    ],
    zh_totals_from: Some(2),
};

pub const BATCHES: Sheet<BatchRow> = Sheet {
    en: "batches",
    zh: "批次",
    columns: &[
        both("batch_id", "批次ID", |b| text(b.batch_id.to_string())),
        both("name", "批次名称", |b| text(&b.name)),
        both("issuer", "发放方代码", |b| text(&b.issuer)),
        zh_only("发放方", |b| text(region(&b.issuer))),
        both("voucher_value", "券面额", |b| money(&b.voucher_value)),
        both("stock", "发行量", |b| Cell::Count(b.stock)),
        both("claimed", "已领取", |b| Cell::Count(b.claimed)),
        both("redeemed", "已核销", |b| Cell::Count(b.redeemed)),
        both("expired", "已过期", |b| Cell::Count(b.expired)),
        both("forfeited", "已作废", |b| Cell::Count(b.forfeited)),
        both("active", "未使用", |b| Cell::Count(b.active)),
        both("reissued", "已补发", |b| Cell::Count(b.reissued)),
        both("claimed_amount", "领取金额", |b| money(&b.claimed_amount)),
        both("redeemed_amount", "核销金额", |b| money(&b.redeemed_amount)),
        both("expired_amount", "过期金额", |b| money(&b.expired_amount)),
        both("reissued_amount", "补发金额", |b| money(&b.reissued_amount)),
        both("discount_paid", "实付优惠", |b| money(&b.discount_paid)),
        both("order_amount", "带动消费", |b| money(&b.order_amount)),
    ],
    // A voucher's value is not a flow: the totals begin at the stock.
    zh_totals_from: Some(5),
};

pub const MERCHANTS: Sheet<SalesRow> = Sheet {
    en: "merchants",
    zh: "商户",
    columns: &[
        both("key", "商户ID", |r| text(&r.key)),
        both("name", "商户名称", |r| text(&r.name)),
        both("city", "城市代码", |r| text(&r.city)),
        zh_only("城市", |r| text(region(&r.city))),
        en_only("category", |r| text(&r.category)),
        zh_only("类别", |r| text(category(&r.category))),
        both("redemptions", "核销笔数", |r| Cell::Count(r.redemptions)),
        both("reversals", "冲正笔数", |r| Cell::Count(r.reversals)),
        both("discount", "优惠金额", |r| money(&r.discount)),
        both("order_amount", "订单金额", |r| money(&r.order_amount)),
    ],
    zh_totals_from: Some(5),
};

/// The categories' sales: the English file keeps the merchants' columns (name, city and
/// category empty), the Chinese one the category's code and name.
pub const CATEGORIES: Sheet<SalesRow> = Sheet {
    en: "categories",
    zh: "类别",
    columns: &[
        both("key", "类别代码", |r| text(&r.key)),
        zh_only("类别", |r| text(category(&r.key))),
        en_only("name", |r| text(&r.name)),
        en_only("city", |r| text(&r.city)),
        en_only("category", |r| text(&r.category)),
        both("redemptions", "核销笔数", |r| Cell::Count(r.redemptions)),
        both("reversals", "冲正笔数", |r| Cell::Count(r.reversals)),
        both("discount", "优惠金额", |r| money(&r.discount)),
        both("order_amount", "订单金额", |r| money(&r.order_amount)),
    ],
    zh_totals_from: Some(2),
};

pub const DAYS: Sheet<DayRow> = Sheet {
    en: "days",
    zh: "每日",
    columns: &[
        both("day", "日期（北京时间）", |d| text(&d.day)),
        both("claims", "领取张数", |d| Cell::Count(d.claims)),
        both("claimed_amount", "领取金额", |d| money(&d.claimed_amount)),
        both("redemptions", "核销笔数", |d| Cell::Count(d.redemptions)),
        both("reversals", "冲正笔数", |d| Cell::Count(d.reversals)),
        both("discount", "优惠金额", |d| money(&d.discount)),
        both("order_amount", "订单金额", |d| money(&d.order_amount)),
    ],
    zh_totals_from: Some(1),
};

/// The benefit cards' figures: one row, so no totals row.
pub const CARDS: Sheet<CardRow> = Sheet {
    en: "cards",
    zh: "文惠卡",
    columns: &[
        both("cards_issued_mobile", "开卡数（手机号）", |c| Cell::Count(c.cards_issued_mobile)),
        both("cards_issued_bank_card", "开卡数（银行卡）", |c| Cell::Count(c.cards_issued_bank_card)),
        both("member_discount", "会员优惠金额", |c| money(&c.member_discount)),
        both("points_earned", "获得积分", |c| Cell::Count(c.points_earned)),
        both("points_exchanged", "兑换积分", |c| Cell::Count(c.points_exchanged)),
        both("points_expired", "过期积分", |c| Cell::Count(c.points_expired)),
        both("points_reversed", "冲正积分", |c| Cell::Count(c.points_reversed)),
        both("points_outstanding", "积分余额", |c| Cell::Count(c.points_outstanding)),
        both("points_debt", "积分欠额", |c| Cell::Count(c.points_debt)),
    ],
    zh_totals_from: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn sales() -> SalesRow {
        SalesRow {
            key: "internet_cafe".into(),
            name: String::new(),
            city: String::new(),
            category: String::new(),
            redemptions: 3,
            reversals: 1,
            discount: "60.00".into(),
            order_amount: "200.00".into(),
        }
    }

    #[test]
    fn each_language_keeps_its_columns_in_order() {
        let en = CATEGORIES.table(&[sales()], Lang::En);
        assert_eq!(en.name, "categories");
        assert_eq!(
            en.headers,
            ["key", "name", "city", "category", "redemptions", "reversals", "discount", "order_amount"]
        );
        assert_eq!(en.rows[0][0], text("internet_cafe"));
        assert_eq!(en.totals, None, "no totals row in English");
        let zh = CATEGORIES.table(&[sales(), sales()], Lang::Zh);
        assert_eq!(zh.headers, ["类别代码", "类别", "核销笔数", "冲正笔数", "优惠金额", "订单金额"]);
        assert_eq!(zh.rows[0][1], text("网吧"));
        let totals = zh.totals.expect("a totals row");
        assert_eq!(totals[..3], [text("合计"), Cell::Empty, Cell::Count(6)]);
        assert_eq!(totals[4], Cell::Money(12_000));
    }

    #[test]
    fn every_row_is_as_wide_as_its_header() {
        for lang in [Lang::En, Lang::Zh] {
            let table = MERCHANTS.table(&[sales()], lang);
            assert!(table.rows.iter().all(|row| row.len() == table.headers.len()));
        }
    }
}
