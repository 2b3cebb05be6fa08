//! The pages: what a browser gets from `wenhui serve`. The citizen's page at `/`, the finance
//! console at `/console/`, and their assets at `/assets/{name}`, all compiled into the binary
//! (templates with maud, CSS and our own JavaScript with `include_bytes!`). The pages call the
//! same JSON API as any other client; nothing here reads or writes the store.
//!
//! Every answer here is gzip-compressed when the browser accepts it, carries a strict
//! Content-Security-Policy (no inline script, nothing from another origin) and
//! `X-Frame-Options: DENY`. Assets carry a strong ETag and answer `If-None-Match` with 304.
//! Pages are not API operations: they are not in the OpenAPI document.

mod assets;
mod pages;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::get;
use tower_http::compression::CompressionLayer;

use crate::http::AppState;

/// What the pages may load: our own origin only, and no inline script or style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The page routes, merged into the API's router by `http::router`.
#[expect(
    clippy::disallowed_methods,
    reason = "pages and their assets are not API operations: the OpenAPI document does not list them"
)]
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::citizen))
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(pages::console))
        .route("/assets/{name}", get(assets::serve))
        .layer(CompressionLayer::new().gzip(true))
        .layer(middleware::from_fn(security_headers))
}

/// The headers every page and asset carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
