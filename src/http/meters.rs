//! The HTTP metrics (`http_requests_total` by route, method and status, and
//! `http_request_duration_seconds` by route and method), with their handles registered once per
//! label set: recording a request looks its handles up here instead of building the labels
//! anew (three strings) and finding them in the recorder's registry, twice.
//!
//! The labels are bounded: a route is a matched path or `unmatched`, a method one of the
//! standard ones or `other` (a request may name any method, and each would be a series).

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};

/// Middleware: counts and times the request under its matched route.
pub async fn record(request: Request, next: Next) -> Response {
    let measure = Measure::start(&request);
    let response = next.run(request).await;
    measure.finish(&response);
    response
}

/// A request being answered, for its metrics once it is.
pub struct Measure {
    started: Instant,
    route: Option<MatchedPath>,
    method: &'static str,
}

impl Measure {
    pub fn start(request: &Request) -> Measure {
        let route = request.extensions().get::<MatchedPath>().cloned();
        Measure { started: Instant::now(), route, method: method_label(request.method()) }
    }

    /// Counts the answer under its route, method and status, and times it.
    pub fn finish(self, response: &Response) {
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let (count, duration) = METERS.handles(route, self.method, response.status().as_u16());
        count.increment(1);
        duration.record(self.started.elapsed().as_secs_f64());
    }
}

/// The label of `method`: its name if it is a standard method, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The process's handles. Made after the recorder is installed (a handle made before would
/// record nowhere for good).
static METERS: LazyLock<Meters> = LazyLock::new(|| {
    let _ = crate::telemetry::recorder();
    Meters::default()
});

#[derive(Default)]
struct Meters {
    routes: RwLock<HashMap<String, RouteMeters>>,
}

/// One route's handles: a handful of methods and statuses each, scanned in order.
#[derive(Default)]
struct RouteMeters {
    durations: Vec<(&'static str, Histogram)>,
    counts: Vec<((&'static str, u16), Counter)>,
}

impl RouteMeters {
    fn find(&self, method: &'static str, status: u16) -> Option<(Counter, Histogram)> {
        let count = self.counts.iter().find(|(key, _)| *key == (method, status))?;
        let duration = self.durations.iter().find(|(m, _)| *m == method)?;
        Some((count.1.clone(), duration.1.clone()))
    }
}

impl Meters {
    fn handles(&self, route: &str, method: &'static str, status: u16) -> (Counter, Histogram) {
        let known = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(handles) = known.get(route).and_then(|r| r.find(method, status)) {
            return handles;
        }
        drop(known);
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let meters = routes.entry(route.to_owned()).or_default();
        if let Some(handles) = meters.find(method, status) {
            return handles;
        }
        let duration = match meters.durations.iter().find(|(m, _)| *m == method) {
            Some((_, histogram)) => histogram.clone(),
            None => {
                let labels = [("route", route.to_owned()), ("method", method.to_owned())];
                let histogram = metrics::histogram!(crate::telemetry::HTTP_REQUEST_DURATION, &labels);
                meters.durations.push((method, histogram.clone()));
                histogram
            }
        };
        let labels =
            [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
        let count = metrics::counter!(crate::telemetry::HTTP_REQUESTS, &labels);
        meters.counts.push(((method, status), count.clone()));
        (count, duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").expect("a method")), "other");
        assert_eq!(method_label(&Method::from_bytes(b"WHATEVER").expect("a method")), "other");
    }

    #[test]
    fn handles_are_registered_once_per_label_set() {
        let meters = Meters::default();
        let _ = meters.handles("/v1/test/a", "GET", 200);
        let _ = meters.handles("/v1/test/a", "GET", 200);
        let _ = meters.handles("/v1/test/a", "GET", 304);
        let _ = meters.handles("/v1/test/a", "POST", 201);
        let routes = meters.routes.read().expect("not poisoned");
        let route = routes.get("/v1/test/a").expect("the route");
        assert_eq!(route.counts.len(), 3, "one counter per method and status");
        assert_eq!(route.durations.len(), 2, "one histogram per method");
    }
}
