//! Answers that caches can hold: a strong ETag, `Cache-Control`, and 304 when the request's
//! `If-None-Match` names the ETag. The public reads (`app::public_reads`) render each answer once
//! per snapshot; this only picks 200 or 304.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::public_reads::Rendered;

/// The batch list: a second fresh, then served stale for up to 5 s while a cache revalidates.
pub const BATCHES: &str = "public, max-age=1, stale-while-revalidate=5";
/// Seasons: they change rarely (a budget, a batch's reserve); 5 s fresh, 30 s stale.
pub const SEASONS: &str = "public, max-age=5, stale-while-revalidate=30";
/// The QR verification keys: a rotation keeps the previous key valid, so a minute is safe.
pub const KEYS: &str = "public, max-age=60, stale-while-revalidate=60";

/// A request's `If-None-Match` values (none: no allocation), taken without copying its other
/// headers as a `HeaderMap` extractor would.
#[derive(Debug, Default)]
pub struct IfNoneMatch(Vec<HeaderValue>);

impl IfNoneMatch {
    pub fn of(headers: &HeaderMap) -> IfNoneMatch {
        IfNoneMatch(headers.get_all(header::IF_NONE_MATCH).iter().cloned().collect())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<IfNoneMatch, Self::Rejection> {
        Ok(IfNoneMatch::of(&parts.headers))
    }
}

/// `rendered` as a JSON answer, or 304 if `If-None-Match` names its ETag (weak comparison, as
/// RFC 9110 asks for this header, or `*`).
pub fn answer(
    if_none_match: &IfNoneMatch,
    rendered: &Rendered,
    cache_control: &'static str,
) -> Result<Response, ApiError> {
    let etag = HeaderValue::from_str(&rendered.etag).map_err(|_| ApiError::internal())?;
    let cache = HeaderValue::from_static(cache_control);
    if none_match(if_none_match, &rendered.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache)])
            .into_response());
    }
    let json = HeaderValue::from_static("application/json");
    let headers = [(header::ETAG, etag), (header::CACHE_CONTROL, cache), (header::CONTENT_TYPE, json)];
    Ok((headers, Body::from(rendered.body.clone())).into_response())
}

fn none_match(if_none_match: &IfNoneMatch, etag: &str) -> bool {
    if_none_match.0.iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
    })
}

/// An answer serialised, for [`Rendered`].
pub fn to_json(answer: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(answer).unwrap_or_else(|error| {
        tracing::error!(%error, "a public answer did not serialise");
        b"null".to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_names_the_etag_or_a_star() {
        let rendered = Rendered::new(b"[]".to_vec());
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).expect("header"));
            answer(&IfNoneMatch::of(&headers), &rendered, BATCHES).expect("answer").status()
        };
        assert_eq!(with(&rendered.etag), StatusCode::NOT_MODIFIED);
        assert_eq!(with(&format!("W/{}, \"other\"", rendered.etag)), StatusCode::NOT_MODIFIED);
        assert_eq!(with("*"), StatusCode::NOT_MODIFIED);
        assert_eq!(with("\"other\""), StatusCode::OK);
        assert_eq!(
            answer(&IfNoneMatch::default(), &rendered, BATCHES).expect("answer").status(),
            StatusCode::OK
        );
    }
}
