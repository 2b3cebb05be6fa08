//! The assets the pages load, compiled in: our CSS and JavaScript as written, and JSON built
//! once from the zh-CN tables (`app::zh`). Each is served with a strong ETag (SHA-256 of its
//! bytes, a `-gzip` suffix on the compressed representation) and `Cache-Control: no-cache`, so a
//! browser revalidates and gets 304 while nothing changed.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::zh;
use crate::domain::error_code::ErrorCode;
use crate::domain::season::Category;
use crate::domain::staff::Role;
use crate::http::ApiError;

struct Asset {
    body: Vec<u8>,
    content_type: &'static str,
    /// The SHA-256 of `body`, hex, first 128 bits.
    digest: String,
}

impl Asset {
    fn new(body: Vec<u8>, content_type: &'static str) -> Asset {
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        Asset { digest: hex::encode(&digest.as_ref()[..16]), body, content_type }
    }
}

const JS: &str = "text/javascript; charset=utf-8";
const JSON: &str = "application/json";

fn assets() -> &'static BTreeMap<&'static str, Asset> {
    static ASSETS: OnceLock<BTreeMap<&'static str, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let file = |bytes: &[u8], content_type| Asset::new(bytes.to_vec(), content_type);
        BTreeMap::from([
            ("style.css", file(include_bytes!("static/style.css"), "text/css; charset=utf-8")),
            ("wenhui.js", file(include_bytes!("static/wenhui.js"), JS)),
            ("citizen.js", file(include_bytes!("static/citizen.js"), JS)),
            ("console.js", file(include_bytes!("static/console.js"), JS)),
            ("console-money.js", file(include_bytes!("static/console-money.js"), JS)),
            ("console-admin.js", file(include_bytes!("static/console-admin.js"), JS)),
            ("icon.svg", file(include_bytes!("static/icon.svg"), "image/svg+xml")),
            ("names.json", Asset::new(names_json(), JSON)),
            ("messages.json", Asset::new(messages_json(), JSON)),
        ])
    })
}

/// The names the pages show for codes: regions (GB/T 2260), categories, staff roles.
fn names_json() -> Vec<u8> {
    let regions: BTreeMap<String, String> =
        zh::regions().into_iter().map(|(code, name)| (code.to_string(), name)).collect();
    let categories: BTreeMap<&str, &str> =
        Category::ALL.iter().map(|c| (c.as_str(), zh::category_name(*c))).collect();
    let roles: BTreeMap<&str, &str> = Role::ALL.iter().map(|r| (r.as_str(), zh::role_name(*r))).collect();
    let names = serde_json::json!({"regions": regions, "categories": categories, "roles": roles});
    names.to_string().into_bytes()
}

/// Every error code's plain Chinese message, `{"sold_out": "这批券已经领完了。", ..}`.
fn messages_json() -> Vec<u8> {
    let messages: BTreeMap<&str, &str> =
        ErrorCode::ALL.iter().map(|code| (code.as_str(), zh::message(*code))).collect();
    serde_json::to_vec(&messages).unwrap_or_default()
}

/// `GET /assets/{name}`: the asset, or 304 when the browser's `If-None-Match` names its ETag.
pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = assets()
        .get(name.as_str())
        .ok_or_else(|| ApiError::not_found(ErrorCode::NotFound, "no such asset"))?;
    let etag = if accepts_gzip(&headers) {
        format!("\"{}-gzip\"", asset.digest)
    } else {
        format!("\"{}\"", asset.digest)
    };
    let etag = HeaderValue::from_str(&etag).map_err(|_| ApiError::internal())?;
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache]).into_response());
    }
    let content_type = HeaderValue::from_static(asset.content_type);
    let headers = [(header::ETAG, etag), (header::CONTENT_TYPE, content_type), cache];
    Ok((headers, Body::from(asset.body.as_slice())).into_response())
}

/// Whether the compression layer will gzip this answer: the request accepts gzip with a
/// quality above zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused =
                parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0)));
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
    })
}

/// `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for this header) or is `*`.
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_built_and_the_json_ones_parse() {
        for (name, asset) in assets() {
            assert!(!asset.body.is_empty(), "{name} is empty");
            if asset.content_type == JSON {
                let parsed: serde_json::Value = serde_json::from_slice(&asset.body).unwrap();
                assert!(parsed.is_object(), "{name}");
            }
        }
        let messages: BTreeMap<String, String> =
            serde_json::from_slice(&assets()["messages.json"].body).unwrap();
        assert_eq!(messages.len(), ErrorCode::ALL.len());
        assert_eq!(messages["sold_out"], "这批券已经领完了。");
    }

    #[test]
    fn if_none_match_is_compared_weakly_and_accepts_lists() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            none_match(&headers, &etag)
        };
        assert!(with("\"abc\""));
        assert!(with("W/\"abc\""));
        assert!(with("\"x\", \"abc\""));
        assert!(with("*"));
        assert!(!with("\"abd\""));
        assert!(!none_match(&HeaderMap::new(), &etag));
    }

    #[test]
    fn gzip_is_accepted_unless_refused() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
