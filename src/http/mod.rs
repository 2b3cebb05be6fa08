//! The HTTP layer: a thin shell of extractors, DTOs and one error type around the domain and
//! storage. Routing, middleware (request ids, tracing, body limit, timeout, panics, metrics).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::app::citizens::Citizens;
use crate::app::claims::ClaimWriter;
use crate::app::signing::SigningKey;
use crate::app::till::coalesce::Coalescer;
use crate::app::till::ttl_cache::TtlCache;
use crate::domain::error_code::ErrorCode;
use crate::domain::time::Clock;
use crate::storage::Storage;

mod card;
mod citizens;
pub mod error;
pub mod extract;
mod finance;
pub mod idempotency;
mod ledger;
mod merchants;
mod ops;
pub mod rate_limit;
pub(crate) mod seasons;
pub mod staff;
pub(crate) mod till;

pub use error::ApiError;

/// Largest request body accepted anywhere (a claim or a redemption is a few hundred bytes).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// How long a request may take before it is answered 503 `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeouts {
    /// Every endpoint but the season-wide finance calls.
    pub request: Duration,
    /// Finance calls that work over a whole season (reconcile, close, settle).
    pub season_wide: Duration,
}

impl Default for RequestTimeouts {
    fn default() -> RequestTimeouts {
        RequestTimeouts { request: Duration::from_secs(15), season_wide: Duration::from_secs(300) }
    }
}
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub(crate) struct AppInner {
    store: Arc<dyn Storage>,
    ledger_key: Arc<SigningKey>,
    metrics: PrometheusHandle,
    clock: Arc<dyn Clock>,
    citizens: Arc<Citizens>,
    writer: ClaimWriter,
    qr: Arc<crate::app::qr::QrKeys>,
    redemptions: crate::app::till::writer::RedemptionWriter,
    settlement_chunking: crate::domain::finance::SettlementChunking,
    pub(crate) tills:
        TtlCache<uuid::Uuid, (crate::storage::TerminalRecord, crate::domain::merchant::Merchant)>,
    pub(crate) batches: TtlCache<uuid::Uuid, (crate::domain::season::Batch, crate::domain::season::Season)>,
    /// The till path's per-request reads and nonce writes, coalesced (`src/app/till/coalesce.rs`).
    pub(crate) till_reads: TillReads,
    /// Per-citizen request rates on claims and QR codes (`rate_limit.rs`).
    pub(crate) citizen_rates: std::sync::Arc<rate_limit::CitizenRates>,
}

pub(crate) struct TillReads {
    pub vouchers: Coalescer<uuid::Uuid, Option<crate::domain::season::Voucher>>,
    pub nonces: Coalescer<(uuid::Uuid, String), bool>,
    pub card_payments: Coalescer<(uuid::Uuid, String), Option<crate::storage::CardPaymentRecord>>,
}

impl TillReads {
    fn spawn(store: &Arc<dyn Storage>, clock: &Arc<dyn Clock>) -> TillReads {
        let (s1, s2, s3, clock) = (store.clone(), store.clone(), store.clone(), clock.clone());
        TillReads {
            vouchers: Coalescer::spawn(move |ids: Vec<uuid::Uuid>| {
                let store = s1.clone();
                async move { store.vouchers(&ids).await }
            }),
            nonces: Coalescer::spawn(move |seen: Vec<(uuid::Uuid, String)>| {
                let (store, at) = (s2.clone(), clock.now());
                async move { store.record_nonces(&seen, at).await }
            }),
            card_payments: Coalescer::spawn(move |orders: Vec<(uuid::Uuid, String)>| {
                let store = s3.clone();
                async move { store.live_card_payments(&orders).await }
            }),
        }
    }
}

/// How long till-path rows are served from memory.
const TILL_CACHE_TTL: Duration = Duration::from_secs(2);

/// What the HTTP layer is built from.
pub struct Services {
    pub store: Arc<dyn Storage>,
    pub ledger_key: Arc<SigningKey>,
    pub clock: Arc<dyn Clock>,
    pub citizens: Arc<Citizens>,
    pub writer: ClaimWriter,
    pub qr: Arc<crate::app::qr::QrKeys>,
    pub redemptions: crate::app::till::writer::RedemptionWriter,
    pub settlement_chunking: crate::domain::finance::SettlementChunking,
}

impl AppState {
    pub fn new(services: Services) -> AppState {
        let Services { store, ledger_key, clock, citizens, writer, qr, redemptions, settlement_chunking } =
            services;
        let metrics = metrics_handle();
        let (tills, batches) = (TtlCache::new(TILL_CACHE_TTL), TtlCache::new(TILL_CACHE_TTL));
        let till_reads = TillReads::spawn(&store, &clock);
        let citizen_rates = std::sync::Arc::new(rate_limit::CitizenRates::default());
        spawn_forget_idle(&citizen_rates);
        let inner = AppInner {
            store,
            ledger_key,
            metrics,
            clock,
            citizens,
            writer,
            qr,
            redemptions,
            settlement_chunking,
            tills,
            batches,
            till_reads,
            citizen_rates,
        };
        AppState(Arc::new(inner))
    }

    pub fn citizen_rates(&self) -> &rate_limit::CitizenRates {
        &self.0.citizen_rates
    }

    pub fn clock(&self) -> &dyn Clock {
        self.0.clock.as_ref()
    }

    pub fn citizens(&self) -> &Citizens {
        &self.0.citizens
    }

    pub fn writer(&self) -> &ClaimWriter {
        &self.0.writer
    }

    pub fn qr(&self) -> &crate::app::qr::QrKeys {
        &self.0.qr
    }

    /// A fresh signed token for `subject` and its drawing: `{token, expires_at, svg}`, the answer
    /// of both QR endpoints (voucher and card).
    pub async fn fresh_qr(
        &self,
        kind: wenhui_merchant_sdk::token::TokenKind,
        subject: uuid::Uuid,
    ) -> Result<serde_json::Value, ApiError> {
        let (token, expires_at) = self.qr().issue(kind, subject).await?;
        let svg = crate::app::qr::svg(token.clone()).await.map_err(|error| {
            tracing::error!(%error, "drawing a QR code failed");
            ApiError::internal()
        })?;
        Ok(serde_json::json!({"token": token, "expires_at": expires_at.to_string(), "svg": svg}))
    }

    pub fn redemptions(&self) -> &crate::app::till::writer::RedemptionWriter {
        &self.0.redemptions
    }

    pub(crate) fn inner(&self) -> &AppInner {
        &self.0
    }

    pub fn store(&self) -> &dyn Storage {
        self.0.store.as_ref()
    }

    pub fn settlement_chunking(&self) -> crate::domain::finance::SettlementChunking {
        self.0.settlement_chunking
    }

    pub fn ledger_key(&self) -> &SigningKey {
        &self.0.ledger_key
    }
}

/// The process-wide Prometheus recorder (a recorder can be installed once per process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder already installed; using a detached one");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

pub fn router(state: AppState, timeouts: RequestTimeouts) -> Router {
    let api = Router::new()
        .merge(ledger_staff_and_season_routes())
        .merge(citizen_routes())
        .merge(merchant_routes())
        .merge(till_and_card_routes())
        .merge(finance_routes())
        .merge(ops_routes())
        .route_layer(ServiceBuilder::new().layer(HandleErrorLayer::new(on_timeout)).timeout(timeouts.request))
        .merge(season_wide_routes())
        // A route layer wraps every route added before it: this one wraps the routes above too,
        // outside their shorter request timeout.
        .route_layer(
            ServiceBuilder::new().layer(HandleErrorLayer::new(on_timeout)).timeout(timeouts.season_wide),
        )
        .route_layer(middleware::from_fn(record_metrics));
    api.fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(on_panic)),
        )
        .with_state(state)
}

fn ledger_staff_and_season_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/ledger/verify", get(ledger::verify))
        .route("/v1/ledger/checkpoints/latest", get(ledger::latest_checkpoint))
        .route("/v1/staff/keys", post(staff::create_key))
        .route("/v1/staff/me", get(staff::me))
        .route("/v1/seasons", post(seasons::create_season).get(seasons::list_seasons))
        .route("/v1/seasons/{id}", get(seasons::get_season))
        .route("/v1/seasons/{id}/budgets", post(seasons::add_budget))
        .route("/v1/seasons/{id}/batches", post(seasons::create_batch).get(seasons::list_batches))
}

fn citizen_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/citizens", post(citizens::register))
        .route("/v1/citizens/sessions", post(citizens::sign_in))
        .route("/v1/citizens/{id}/sessions/revoke", post(citizens::revoke_sessions))
        .route("/v1/me/session", delete(citizens::sign_out))
        .route("/v1/me/vouchers", get(citizens::my_vouchers))
        .route("/v1/batches/{id}/claims", post(citizens::claim))
        .route("/v1/batches/{id}/entries", post(citizens::enter_lottery).get(seasons::lottery_entrants))
        .route("/v1/vouchers/{id}/qr", post(citizens::voucher_qr))
}

fn merchant_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/merchants", post(merchants::create).get(merchants::list))
        .route("/v1/merchants/{id}/suspend", post(merchants::suspend))
        .route("/v1/merchants/{id}/activate", post(merchants::activate))
        .route("/v1/merchants/{id}/settlement-account", put(merchants::change_account))
        .route("/v1/merchants/{id}/settlement-account/changes", get(merchants::account_changes))
        .route("/v1/merchants/{id}/settlement-account/requests", get(merchants::account_requests))
        .route(
            "/v1/merchants/{id}/settlement-account/requests/{request_id}/approve",
            post(merchants::approve_account_request),
        )
        .route(
            "/v1/merchants/{id}/settlement-account/requests/{request_id}/reject",
            post(merchants::reject_account_request),
        )
        .route("/v1/merchants/{id}/terminals", post(merchants::register_terminal))
        .route("/v1/merchants/{id}/terminals/{terminal_id}/revoke", post(merchants::revoke_terminal))
}

fn till_and_card_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(till::keys))
        .route("/v1/redemptions", post(till::redeem))
        .route("/v1/redemptions/{id}", get(till::get))
        .route("/v1/redemptions/{id}/reversal", post(till::reverse))
        .route("/v1/me/card", post(card::issue).get(card::mine))
        .route("/v1/me/card/qr", post(card::qr))
        .route("/v1/me/card/exchanges", post(card::exchange))
        .route("/v1/cards/{id}/freeze", post(card::freeze))
        .route("/v1/cards/{id}/unfreeze", post(card::unfreeze))
        .route("/v1/merchants/{id}/card-terms", put(card::set_terms))
        .route("/v1/seasons/{id}/points-rate", put(card::set_points_rate))
        .route("/v1/card-payments", post(card::pay))
        .route("/v1/card-payments/{id}", get(card::get))
        .route("/v1/card-payments/{id}/reversal", post(card::reverse))
}

/// Finance routes under the request timeout; the season-wide ones are [`season_wide_routes`].
fn finance_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/seasons/{id}/report", get(finance::report))
        .route(
            "/v1/seasons/{id}/reconciliation/merchant-journal",
            post(finance::merchant_journal).layer(DefaultBodyLimit::max(finance::JOURNAL_LIMIT_BYTES)),
        )
        .route("/v1/settlements/{id}", get(finance::get_settlement))
        .route("/v1/settlements/{id}/payout.csv", get(finance::payout_csv))
        .route("/v1/settlements/{id}/paid", post(finance::paid))
        .route("/v1/merchants/{id}/statement", get(finance::statement))
}

fn ops_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
}

/// Routes under the season-wide timeout instead of the request timeout.
fn season_wide_routes() -> Router<AppState> {
    Router::new()
        // Finance work over a whole season: reconciling a million vouchers takes ~20 s.
        .route("/v1/seasons/{id}/reconciliation", get(finance::reconciliation))
        .route("/v1/seasons/{id}/close", post(finance::close))
        .route("/v1/settlements", post(finance::settle))
        .route("/v1/seasons/{id}/settlements", get(finance::season_settlements))
        // A draw issues a batch's whole stock (200,000 vouchers for Beijing 2021's).
        .route("/v1/batches/{id}/draw", post(seasons::draw))
}

fn make_span(request: &Request) -> tracing::Span {
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
}

async fn on_timeout(_: tower::BoxError) -> ApiError {
    ApiError::unavailable(
        ErrorCode::Timeout,
        "the request took too long; retry with the same Idempotency-Key",
    )
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2])
        .record(started.elapsed().as_secs_f64());
    response
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Wenhui", description = "Cultural consumption vouchers and benefit cards"),
    paths(finance::report, finance::reconciliation, finance::merchant_journal, finance::close, finance::settle, finance::season_settlements,
        finance::get_settlement, finance::payout_csv, finance::paid, finance::statement,
        ops::healthz, ops::readyz, ops::metrics, ledger::verify, ledger::latest_checkpoint, staff::create_key, staff::me,
        citizens::register, citizens::sign_in, citizens::sign_out, citizens::revoke_sessions, citizens::my_vouchers,
        citizens::claim, citizens::voucher_qr,
        seasons::create_season, seasons::add_budget, seasons::list_seasons, seasons::get_season,
        seasons::create_batch, seasons::list_batches, merchants::create, merchants::list, merchants::suspend,
        merchants::activate, merchants::change_account, merchants::account_changes,
        merchants::account_requests, merchants::approve_account_request, merchants::reject_account_request, merchants::register_terminal,
        merchants::revoke_terminal, till::keys, till::redeem,
        till::reverse, till::get, card::issue, card::mine, card::qr, card::freeze, card::unfreeze, card::set_terms,
        card::set_points_rate, card::pay, card::reverse, card::get, card::exchange),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["staff_key", "citizen_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Forgets idle citizens' rate buckets every minute, for as long as the state lives.
fn spawn_forget_idle(rates: &std::sync::Arc<rate_limit::CitizenRates>) {
    let rates = std::sync::Arc::downgrade(rates);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(rate_limit::FORGET_IDLE_EVERY);
        loop {
            ticker.tick().await;
            let Some(rates) = rates.upgrade() else { return };
            rates.forget_idle();
        }
    });
}
