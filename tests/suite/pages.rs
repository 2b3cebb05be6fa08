//! The pages over plain HTTP (no browser): served at `/` and `/console/`, compressed, with
//! strong ETags, a strict Content-Security-Policy, no inline script, nothing from another
//! origin, and the citizen's first page within its weight budget. The browser tests are in
//! `browser.rs`.

use reqwest::header;
use serde_json::json;

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, code, read};

/// The citizen's first page, everything it loads, compressed: at most 60 KB.
const FIRST_PAGE_BUDGET_BYTES: usize = 60 * 1024;

/// What the citizen's first page loads before it shows the batches (the API answers too).
const FIRST_PAGE_ASSETS: [&str; 6] = [
    "/assets/style.css",
    "/assets/wenhui.js",
    "/assets/citizen.js",
    "/assets/icon.svg",
    "/assets/names.json",
    "/v1/seasons",
];

both_backends!(the_pages_are_served_compressed_with_strict_headers, assets_answer_304_to_their_etag);

async fn the_pages_are_served_compressed_with_strict_headers(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    world.batch(json!({"name": "满100减30", "face_value": "30.00", "min_spend": "100.00"})).await;
    let app = &world.app;
    let mut weight = 0;
    for path in ["/", "/console/"] {
        let response =
            app.client.get(app.url(path)).header(header::ACCEPT_ENCODING, "gzip").send().await.expect("send");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8", "{path}");
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip", "{path}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], wenhui::web::CONTENT_SECURITY_POLICY, "{path}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(csp.starts_with("default-src 'self';") && csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        let compressed = response.bytes().await.expect("body").len();
        if path == "/" {
            weight += compressed;
        }
        let html = app.client.get(app.url(path)).send().await.expect("send").text().await.expect("text");
        assert!(html.starts_with("<!DOCTYPE html><html lang=\"zh-CN\">"), "{html}");
        assert!(html.contains("<meta name=\"wenhui-now\" content=\""), "{html}");
        for script in html.split("<script").skip(1) {
            assert!(script.starts_with(" src=\"/assets/"), "a script not from our assets: {script}");
            assert!(script.contains("></script>"), "an inline script: {script}");
        }
        assert!(!html.contains("style=") && !html.contains(" on"), "inline style or handler: {html}");
        assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//"), "{html}");
    }
    for path in FIRST_PAGE_ASSETS {
        let response =
            app.client.get(app.url(path)).header(header::ACCEPT_ENCODING, "gzip").send().await.expect("send");
        assert_eq!(response.status(), 200, "{path}");
        weight += response.bytes().await.expect("body").len();
    }
    let season = format!("/v1/seasons/{}/batches", world.season_id);
    weight += app.client.get(app.url(&season)).send().await.expect("send").bytes().await.expect("body").len();
    assert!(weight <= FIRST_PAGE_BUDGET_BYTES, "the citizen's first page weighs {weight} bytes");
    // The console without its slash is the console.
    let response = app.client.get(app.url("/console")).send().await.expect("send");
    assert_eq!((response.status().as_u16(), response.url().path()), (200, "/console/"));
    // An unknown asset is the API's JSON 404; the API's own routes are unchanged.
    let (status, body) = app.get("/assets/nothing.js", None).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = app.get("/v1/seasons", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seasons"][0]["name"], "2026 文化消费季");
}

async fn assets_answer_304_to_their_etag(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let app = &world.app;
    for encoding in ["gzip", "identity"] {
        for path in ["/assets/citizen.js", "/assets/style.css", "/assets/messages.json", "/assets/names.json"]
        {
            let get = || app.client.get(app.url(path)).header(header::ACCEPT_ENCODING, encoding);
            let first = get().send().await.expect("send");
            assert_eq!(first.status(), 200, "{path}");
            let etag = first.headers()[header::ETAG].to_str().expect("ascii").to_owned();
            assert!(etag.starts_with('"') && !etag.starts_with("W/"), "a strong ETag: {etag}");
            assert_eq!(etag.ends_with("-gzip\""), encoding == "gzip", "{etag}");
            assert_eq!(first.headers().get(header::CONTENT_ENCODING).is_some(), encoding == "gzip");
            assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
            assert_eq!(first.headers()[header::X_FRAME_OPTIONS], "DENY");
            let again = get().header(header::IF_NONE_MATCH, &etag).send().await.expect("send");
            assert_eq!(again.status(), 304, "{path} {encoding}");
            assert_eq!(again.headers()[header::ETAG].to_str().expect("ascii"), etag);
            assert!(again.bytes().await.expect("body").is_empty());
            let changed = get().header(header::IF_NONE_MATCH, "\"0123\"").send().await.expect("send");
            assert_eq!(changed.status(), 200, "{path}");
        }
    }
    // The messages the pages show: one for every error code, in Chinese.
    let (status, messages) =
        read(app.client.get(app.url("/assets/messages.json")).send().await.expect("send")).await;
    assert_eq!(status, 200);
    let messages = messages.as_object().expect("an object");
    assert_eq!(messages.len(), wenhui::domain::error_code::ErrorCode::ALL.len());
    assert_eq!(messages["sold_out"], "这批券已经领完了。");
    let (_, names) = read(app.client.get(app.url("/assets/names.json")).send().await.expect("send")).await;
    assert_eq!(
        (names["regions"]["370200"].as_str(), names["categories"]["ktv"].as_str()),
        (Some("青岛市"), Some("KTV"))
    );
}
