//! The public reads' own, lighter stack (issue 26): `GET` (and `HEAD`) of the season list, a
//! season and a season's batch list, which every phone polls before and during a rush and which
//! are answered from the node's snapshots (`app::public_reads`). They skip the main router's
//! per-request work, which cost a third of their throughput (BENCHMARKS.md, "The rush's
//! reads"):
//! - no request id: these answers are the same for everyone and caches hold them (ETag,
//!   `Cache-Control: public`); an id in them would be handed by a CDN to every phone;
//! - no tracing span and no access-log line per answer;
//! - no per-request timer: a fresh snapshot is answered at once, and waiting for a rebuild is
//!   bounded by the snapshots themselves (`app::public_reads::SLOW_READ_LIMIT`).
//!
//! What stays: a panic is answered 500 like anywhere else, every answer is counted and timed
//! in the same metrics as every route (`meters`), and an answer to a request that came with a
//! body says `Connection: close` (its body is never read).
//!
//! Anything else (another method on these paths, any other path) goes to the router behind
//! as it came, through its own layers.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures_util::FutureExt as _;
use futures_util::future::CatchUnwind;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::meters::Measure;
use super::{AppState, seasons};

/// The public reads on their stack, in front of `behind` (a router with its own layers and
/// fallbacks), which gets every other request. The split is by method first: a `POST` on a
/// public read's path never meets this router's matching, so what `behind` sees of a request
/// (its path's parameters, its matched route) is its own. The routes are declared as
/// everywhere (`routes!`), and `behind` declares them too, for the OpenAPI document.
pub fn router(behind: Router, state: AppState) -> ByMethod {
    let (reads, _) = OpenApiRouter::new()
        .routes(routes!(seasons::list_seasons))
        .routes(routes!(seasons::get_season))
        .routes(routes!(seasons::list_batches))
        .split_for_parts();
    let reads = reads
        // A route layer: a `GET` of another path is handed on through `behind`'s layers only.
        .route_layer(Observed)
        .fallback_service(behind.clone())
        .with_state(state);
    ByMethod { reads, behind }
}

/// A port's service: `GET` and `HEAD` to the public reads' router (which hands other paths on
/// to `behind`), every other method to `behind`. A plain `match`, not one more router level
/// (each boxes and clones its route per request).
#[derive(Clone, Debug)]
pub struct ByMethod {
    reads: Router,
    behind: Router,
}

impl Service<Request> for ByMethod {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match *request.method() {
            Method::GET | Method::HEAD => self.reads.call(request),
            _ => self.behind.call(request),
        }
    }
}

/// The layer of the public reads, in place of the main stack's: counts and times each answer
/// (`meters`), answers a panic 500, and says `Connection: close` to a request that came with a
/// body (these handlers never read one, as `serve::close_if_body_unread` does on the other
/// routes). One layer that allocates nothing per request: the same work through
/// `middleware::from_fn` and `CatchPanicLayer` (which boxes every answer's body) gave 4% to 9%
/// fewer of the batch list's answers a second (BENCHMARKS.md, "The rush's reads").
#[derive(Clone, Copy, Debug)]
struct Observed;

impl<S> Layer<S> for Observed {
    type Service = ObservedService<S>;

    fn layer(&self, inner: S) -> ObservedService<S> {
        ObservedService { inner }
    }
}

#[derive(Clone, Debug)]
struct ObservedService<S> {
    inner: S,
}

impl<S> Service<Request> for ObservedService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObservedAnswer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let measure = Some(Measure::start(&request));
        let sent_a_body = !request.body().is_end_stream();
        // `poll_ready` above made the inner service ready for this call.
        let answer = AssertUnwindSafe(self.inner.call(request)).catch_unwind();
        ObservedAnswer { answer, measure, sent_a_body }
    }
}

pin_project! {
    /// An answer under way, measured and its panic caught when it ends.
    struct ObservedAnswer<F> {
        #[pin]
        answer: CatchUnwind<AssertUnwindSafe<F>>,
        measure: Option<Measure>,
        sent_a_body: bool,
    }
}

impl<F> Future for ObservedAnswer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match ready!(this.answer.poll(cx)) {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => super::on_panic_answer(),
        };
        if *this.sent_a_body {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(measure) = this.measure.take() {
            measure.finish(&response);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt as _;

    use super::*;

    fn request(body: Body) -> Request {
        Request::builder().uri("/v1/seasons").body(body).expect("a request")
    }

    #[tokio::test]
    async fn a_panicking_read_is_answered_500() {
        let panics = tower::service_fn(|_: Request| async move {
            if true {
                panic!("a handler's bug");
            }
            Ok::<Response, Infallible>(Response::new(Body::empty()))
        });
        let answer = Observed.layer(panics).oneshot(request(Body::empty())).await.expect("infallible");
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(answer.headers().get(header::CONNECTION).is_none(), "no body came: kept alive");
    }

    #[tokio::test]
    async fn a_read_that_came_with_a_body_closes_its_connection() {
        let answers =
            tower::service_fn(|_: Request| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
        let answer = Observed.layer(answers).oneshot(request(Body::from("{}"))).await.expect("infallible");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers().get(header::CONNECTION).map(HeaderValue::as_bytes), Some(&b"close"[..]));
    }
}
