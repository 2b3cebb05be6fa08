//! The season report as charts (SVG, drawn with `plotters`' SVG backend), for the finance
//! console: money per funder, claims and redemptions per day, redemptions and discount by
//! category and by city, and the leverage. Every figure is read from the [`SeasonReport`] the
//! JSON answer holds (its yuan strings read back into fen), so a chart shows what the report
//! says; the axis runs in fen (integers) and only the drawing maps it to pixels.
//!
//! Labels are Chinese (`app::zh`): funder and city names, category names, amounts as `¥1,234.50`.
//! The text is set by the browser (no font file here), in the page's CJK font.

use std::collections::BTreeMap;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::SeasonReport;
use crate::app::zh;
use crate::domain::region::RegionCode;
use crate::domain::season::Category;

/// The charts there are, by `view`.
pub const VIEWS: [&str; 5] = ["funders", "days", "categories", "cities", "leverage"];

/// The wide chart (money per funder) and the others, which the console shows two abreast: drawn
/// smaller, with larger text, so that their text reads at the same size on the page.
const WIDE: (u32, u32) = (960, 360);
const HALF: (u32, u32) = (600, 360);
const FONT: &str = "sans-serif";
/// The series' colours: the page's red, then calm tones that tell apart in print.
const PALETTE: [RGBColor; 6] = [
    RGBColor(179, 38, 30),
    RGBColor(27, 110, 58),
    RGBColor(33, 90, 160),
    RGBColor(204, 132, 0),
    RGBColor(110, 74, 150),
    RGBColor(90, 90, 90),
];

/// What a series counts: money (fen, labelled ¥) or things (a plain count).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Fen,
    Count,
}

impl Unit {
    fn label(self, value: i64) -> String {
        match self {
            Unit::Fen => zh::yuan_text(value),
            Unit::Count => value.to_string(),
        }
    }
}

/// A grouped bar chart: one group per label, one bar per series in each.
struct Bars {
    title: String,
    unit: Unit,
    labels: Vec<String>,
    /// (name, one value per label)
    series: Vec<(String, Vec<i64>)>,
    /// Write each bar's value above it (few bars only).
    values_on_bars: bool,
    size: (u32, u32),
}

/// The chart `view` of the report, as an SVG document; `None` for a view that does not exist.
pub fn chart(report: &SeasonReport, view: &str) -> Option<String> {
    let bars = match view {
        "funders" => funders(report),
        "days" => days(report),
        "categories" => sales("各品类核销（财政补贴）", &by_category(report)),
        "cities" => sales("各城市核销（财政补贴）", &by_city(report)),
        "leverage" => leverage(report),
        _ => return None,
    };
    Some(draw(&bars))
}

/// A yuan string of the report ("1234.50", "-3.00") in fen, read as the finance files read it
/// (`report_files::parse_fen`); a malformed one (none is) as 0.
fn fen(text: &str) -> i64 {
    super::report_files::parse_fen(text).unwrap_or(0)
}

fn region(code: &str) -> String {
    code.parse::<RegionCode>().ok().and_then(zh::region_name).unwrap_or_else(|| code.to_owned())
}

fn category(slug: &str) -> String {
    slug.parse::<Category>().map(zh::category_name).map(str::to_owned).unwrap_or_else(|_| slug.to_owned())
}

fn funders(report: &SeasonReport) -> Bars {
    let labels = report.funders.iter().map(|f| region(&f.funder)).collect();
    let measure = |name: &str, pick: fn(&super::FunderRow) -> &String| {
        (name.to_owned(), report.funders.iter().map(|f| fen(pick(f))).collect())
    };
    Bars {
        title: "各出资方资金".into(),
        unit: Unit::Fen,
        labels,
        series: vec![
            measure("拨付", |f| &f.appropriated),
            measure("预留", |f| &f.reserved),
            measure("已领未用", |f| &f.outstanding),
            measure("已核销", |f| &f.redeemed),
            measure("已结算", |f| &f.settled),
            measure("可用", |f| &f.available),
        ],
        values_on_bars: false,
        size: WIDE,
    }
}

fn days(report: &SeasonReport) -> Bars {
    Bars {
        title: "每日领券与核销（笔）".into(),
        unit: Unit::Count,
        labels: report.days.iter().map(|d| d.day.clone()).collect(),
        series: vec![
            ("领券".into(), report.days.iter().map(|d| d.claims).collect()),
            ("核销".into(), report.days.iter().map(|d| d.redemptions).collect()),
        ],
        values_on_bars: report.days.len() <= 16,
        size: HALF,
    }
}

/// Sales by some key: (name, redemptions, discount fen, order amount fen).
type Sales = Vec<(String, i64, i64, i64)>;

fn by_category(report: &SeasonReport) -> Sales {
    report
        .categories
        .iter()
        .map(|c| (category(&c.key), c.redemptions, fen(&c.discount), fen(&c.order_amount)))
        .collect()
}

/// The report's merchants summed by city, in fen: the figures the console's city table shows.
pub fn by_city(report: &SeasonReport) -> Sales {
    let mut cities: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for m in &report.merchants {
        let city = cities.entry(m.city.as_str()).or_default();
        city.0 += m.redemptions;
        city.1 += fen(&m.discount);
        city.2 += fen(&m.order_amount);
    }
    cities.into_iter().map(|(code, (n, discount, order))| (region(code), n, discount, order)).collect()
}

fn sales(title: &str, rows: &Sales) -> Bars {
    Bars {
        title: title.into(),
        unit: Unit::Fen,
        labels: rows.iter().map(|(name, n, _, _)| format!("{name}（{n}笔）")).collect(),
        series: vec![("财政补贴".into(), rows.iter().map(|r| r.2).collect())],
        values_on_bars: rows.len() <= 12,
        size: HALF,
    }
}

fn leverage(report: &SeasonReport) -> Bars {
    let rows = by_category(report);
    let ratio = report.totals.leverage.as_deref().unwrap_or("—");
    Bars {
        title: format!("杠杆率 {ratio}：每 1 元补贴带动的消费"),
        unit: Unit::Fen,
        labels: rows.iter().map(|r| r.0.clone()).chain(["合计".to_owned()]).collect(),
        series: vec![
            ("财政补贴".into(), rows.iter().map(|r| r.2).chain([fen(&report.totals.discount)]).collect()),
            ("带动消费".into(), rows.iter().map(|r| r.3).chain([fen(&report.totals.order_amount)]).collect()),
        ],
        values_on_bars: rows.len() <= 8,
        size: HALF,
    }
}

/// Draws `bars` into an SVG string. The x axis is in slots: each label gets one slot per
/// series and one of space.
fn draw(bars: &Bars) -> String {
    let mut svg = String::new();
    let drawn = draw_into(&mut svg, bars);
    if let Err(error) = drawn {
        tracing::warn!(%error, "drawing a chart failed");
    }
    svg
}

fn draw_into(svg: &mut String, bars: &Bars) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, bars.size).into_drawing_area();
    // Text scaled so that it shows at about the same size on the page whichever width the
    // chart is drawn at (a half chart is shown at about 470 px of its 600).
    let scaled = |size: u32| if bars.size == WIDE { size } else { size * 128 / 100 };
    let text = |size: u32| f64::from(scaled(size));
    root.fill(&WHITE)?;
    // Each bar is two units wide and a group is its bars with a bar's width of space split
    // either side, so that a group's middle falls on a whole unit, where its name is written.
    let series = i64::try_from(bars.series.len()).unwrap_or(1).max(1);
    let per_group = 2 * series + 2;
    let groups = i64::try_from(bars.labels.len()).unwrap_or(0).max(1);
    let top = bars.series.iter().flat_map(|(_, values)| values.iter().copied()).max().unwrap_or(0).max(1);
    // Headroom for the value labels and the legend (upper right), clear of the tallest bar.
    let top = top + top / 2 + 1;
    let mut chart = ChartBuilder::on(&root)
        .caption(&bars.title, (FONT, text(20)).into_font().color(&BLACK))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(scaled(if bars.unit == Unit::Fen { 110 } else { 50 }))
        .build_cartesian_2d(0..groups * per_group, 0..top)?;
    let labels = &bars.labels;
    let unit = bars.unit;
    let label_at = |slot: &i64| {
        // A group's name under the middle of its bars.
        if slot % per_group == 1 + series {
            usize::try_from(slot / per_group).ok().and_then(|i| labels.get(i)).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(usize::try_from(groups * per_group + 1).unwrap_or(2))
        .x_label_formatter(&label_at)
        .y_labels(6)
        .y_label_formatter(&|v: &i64| unit.label(*v))
        .label_style((FONT, text(13)))
        .light_line_style(RGBColor(238, 234, 228))
        .draw()?;
    for (s, (name, values)) in bars.series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let offset = 1 + 2 * i64::try_from(s).unwrap_or(0);
        let rects = values.iter().enumerate().map(move |(g, value)| {
            let x = i64::try_from(g).unwrap_or(0) * per_group + offset;
            Rectangle::new([(x, 0), (x + 2, *value)], color.filled())
        });
        chart
            .draw_series(rects)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        if bars.values_on_bars {
            let label_style =
                (FONT, text(12)).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
            let texts = values.iter().enumerate().map(move |(g, value)| {
                let x = i64::try_from(g).unwrap_or(0) * per_group + offset;
                Text::new(unit.label(*value), (x + 1, *value), label_style.clone())
            });
            chart.draw_series(texts)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 195, 188))
        .label_font((FONT, text(13)))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings_read_back_to_fen() {
        assert_eq!(fen("1234.50"), 123_450);
        assert_eq!(fen("0.05"), 5);
        assert_eq!(fen("-3.00"), -300);
        assert_eq!(fen("7"), 700);
        assert_eq!(fen("1.005"), 0, "more than two places is not an amount");
    }
}
