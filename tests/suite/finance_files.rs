//! The finance files in Chinese (the default) and in English (`lang=en`), read back: the
//! workbook's sheet names, headers, totals rows, frozen header and column widths; the CSV's
//! byte-order mark. Called from the scripted season of `finance.rs` (both backends).

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use crate::finance::Script;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A file the finance key downloads.
pub(crate) async fn download(s: &Script, path: &str) -> Vec<u8> {
    let response =
        s.world.app.client.get(s.world.app.url(path)).bearer_auth(&s.finance).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.bytes().await.expect("bytes").to_vec()
}

/// A Chinese CSV file as text: it must begin with the UTF-8 byte-order mark.
pub(crate) fn chinese_csv(bytes: &[u8]) -> String {
    let text =
        bytes.strip_prefix(BOM).unwrap_or_else(|| panic!("no BOM: {:?}", &bytes[..bytes.len().min(16)]));
    String::from_utf8(text.to_vec()).expect("utf-8")
}

/// Every XML part of a workbook by name.
fn parts(xlsx: &[u8]) -> BTreeMap<String, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(xlsx.to_vec())).expect("a zip archive");
    let mut parts = BTreeMap::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).expect("a file");
        let name = file.name().expect("a file name").into_owned();
        let mut xml = String::new();
        file.read_to_string(&mut xml).expect("xml");
        parts.insert(name, xml);
    }
    parts
}

/// The number cells' `<v>` values of a sheet's last row (the totals row), by column letter
/// (a string cell, `t="s"`, is left out).
fn last_row_values(sheet: &str) -> BTreeMap<String, String> {
    let row = &sheet[sheet.rfind("<row ").expect("a row")..];
    let mut values = BTreeMap::new();
    for cell in row.split("<c r=\"").skip(1) {
        let column: String = cell.chars().take_while(char::is_ascii_uppercase).collect();
        let head = cell.split_once('>').map_or(cell, |(head, _)| head);
        if head.contains(" t=") {
            continue;
        }
        if let Some(value) = cell.split_once("<v>").and_then(|(_, v)| v.split_once("</v>")) {
            values.insert(column, value.0.to_owned());
        }
    }
    values
}

/// A number cell's text (`46`, `30.1`) or a report's amount (`46.00`) in fen, by its digits.
fn fen(text: &str) -> i64 {
    let (whole, places) = text.split_once('.').unwrap_or((text, ""));
    let places = format!("{places:0<2}");
    assert_eq!(places.len(), 2, "{text}");
    whole.parse::<i64>().expect("whole") * 100 + places.parse::<i64>().expect("places")
}

pub(crate) async fn check_report_files(s: &Script, season: &str, report: &Value) {
    let discount = fen(report["totals"]["discount"].as_str().expect("discount"));
    let order_amount = fen(report["totals"]["order_amount"].as_str().expect("order amount"));

    let xlsx = parts(&download(s, &format!("/v1/seasons/{season}/report?format=xlsx")).await);
    let workbook = &xlsx["xl/workbook.xml"];
    let names = ["概要", "出资方", "批次", "商户", "类别", "每日", "文惠卡"];
    let positions: Vec<usize> = names
        .iter()
        .map(|n| workbook.find(&format!("<sheet name=\"{n}\"")).unwrap_or_else(|| panic!("{n}: {workbook}")))
        .collect();
    assert!(positions.is_sorted(), "the sheets in order: {workbook}");
    let strings = &xlsx["xl/sharedStrings.xml"];
    for header in
        ["出资方代码", "山东省", "青岛市", "核销笔数", "优惠金额", "书店", "电影院", "合计", "杠杆率"]
    {
        assert!(strings.contains(header), "{header} in {strings}");
    }
    for index in 1..=7 {
        let sheet = &xlsx[&format!("xl/worksheets/sheet{index}.xml")];
        assert!(sheet.contains("ySplit=\"1\"") && sheet.contains("state=\"frozen\""), "sheet{index}: frozen");
        assert!(sheet.contains("<cols>") && sheet.contains("customWidth=\"1\""), "sheet{index}: widths");
        assert!(!sheet.contains("<f>") && !sheet.contains("<f "), "sheet{index}: a formula");
    }
    // The totals rows equal the JSON report's totals: categories (E, F) and merchants (H, I).
    for (sheet, [discount_col, order_col]) in [(5, ["E", "F"]), (4, ["H", "I"])] {
        let totals = last_row_values(&xlsx[&format!("xl/worksheets/sheet{sheet}.xml")]);
        assert_eq!(
            (fen(&totals[discount_col]), fen(&totals[order_col])),
            (discount, order_amount),
            "sheet{sheet}"
        );
    }
    // The leverage is a number cell (the summary's last row), not text.
    let leverage = last_row_values(&xlsx["xl/worksheets/sheet1.xml"]);
    let leverage_text = report["totals"]["leverage"].as_str().expect("leverage");
    assert_eq!(fen(&leverage["B"]), fen(leverage_text), "{leverage:?}");

    let english = parts(&download(s, &format!("/v1/seasons/{season}/report?format=xlsx&lang=en")).await);
    assert!(english["xl/workbook.xml"].contains("<sheet name=\"summary\""), "English sheet names");
    assert!(english["xl/sharedStrings.xml"].contains(">appropriated<"), "English headers");
    assert!(!english["xl/sharedStrings.xml"].contains("合计"), "no totals row in English");

    let csv = download(s, &format!("/v1/seasons/{season}/report?format=csv&view=categories")).await;
    assert_eq!(
        chinese_csv(&csv),
        "类别代码,类别,核销笔数,冲正笔数,优惠金额,订单金额\n\
         bookstore,书店,2,0,26.00,180.00\ncinema,电影院,1,0,10.00,50.00\nktv,KTV,2,1,10.00,70.00\n\
         合计,,5,1,46.00,300.00\n"
    );
    let summary =
        chinese_csv(&download(s, &format!("/v1/seasons/{season}/report?format=csv&view=summary")).await);
    let generated = summary.lines().find(|l| l.starts_with("生成时间（北京时间）,")).expect("generated at");
    let shown = generated.split_once(',').expect("value").1;
    assert!(shown.len() == 19 && shown.as_bytes()[10] == b' ', "a CST time to the second: {shown}");
    assert!(summary.contains(&format!("杠杆率（每元补贴带动消费）,{leverage_text}\n")), "{summary}");
}
