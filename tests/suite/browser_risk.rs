//! The console's 风险评分 (cash-out risk) section in a real browser (the harness of
//! `browser.rs`), over the synthetic season of `fraud.rs`: the province's finance officer sees
//! the KTV and the phone farm flagged high with their reasons in Chinese, the bookstore normal,
//! as the API scores them. Screenshot: `target/screenshots/console-risk-*.png`.

use serde_json::json;
use wenhui::domain::staff::Role;

use crate::both_backends;
use crate::browser::Browser;
use crate::browser_console::{clean, open, sign_in};
use crate::common::Backend;
use crate::fraud::{cst, three_merchants};

both_backends!(the_risk_scores_in_the_console);

async fn the_risk_scores_in_the_console(backend: Backend) {
    let browser = Browser::start().await;
    let (s, bookstore, ktv, farm) = three_merchants(backend).await;
    // The console scores up to "now": a day after the last redemption.
    s.world.clock.set(cst(6, 0, 0, 0));
    let app = &s.world.app;
    let base = app.base.clone();
    let finance = app.staff_key(Role::Finance, "370000").await;
    browser.viewport(1280, 800).await;
    sign_in(&browser, &base, &finance).await;
    let offered = browser.texts("#sections button").await;
    assert!(offered.iter().any(|s| s == "风险评分"), "{offered:?}");
    open(&browser, "risk").await;

    let (status, page) =
        app.get(&format!("/v1/seasons/{}/fraud/scores?limit=200", s.world.season_id), Some(&finance)).await;
    assert_eq!(status, 200, "{page}");
    let rows = browser.texts("table.risk tbody tr").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    // Rows in the API's order, each with its score.
    let keys = browser
        .client
        .execute("return [...document.querySelectorAll('table.risk tbody tr')].map(r => [r.dataset.key, r.querySelector('[data-field=score] .score').textContent, r.className])", vec![])
        .await
        .expect("rows");
    let expected: Vec<serde_json::Value> = page["merchants"]
        .as_array()
        .expect("merchants")
        .iter()
        .map(|m| {
            let score = m["score"].as_u64().expect("score");
            let level = if score >= 60 {
                "high"
            } else if score >= 20 {
                "medium"
            } else {
                "low"
            };
            json!([m["merchant_id"], score.to_string(), format!("risk-{level}")])
        })
        .collect();
    assert_eq!(keys, json!(expected));
    let reasons = |id: &str| format!("tr[data-key=\"{id}\"] [data-field=reasons]");
    let ktv_reasons = browser.text(&reasons(&ktv)).await;
    assert!(ktv_reasons.contains("门槛整额") && ktv_reasons.contains("恰好等于用券门槛"), "{ktv_reasons}");
    assert!(ktv_reasons.contains("非营业时段"), "{ktv_reasons}");
    let farm_reasons = browser.text(&reasons(&farm)).await;
    assert!(farm_reasons.contains("短时多人") && farm_reasons.contains("外地即领即用"), "{farm_reasons}");
    assert_eq!(browser.text(&reasons(&bookstore)).await, "未见异常");
    assert!(browser.text("[data-field=high]").await.starts_with("2 家商户"));
    browser.screenshot(&format!("console-risk-{backend:?}").to_lowercase()).await;
    clean(&browser, &base).await;
}
