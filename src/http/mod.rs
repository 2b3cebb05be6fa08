//! The HTTP layer: a thin shell of extractors, DTOs and one error type around the domain and
//! storage. Routing, middleware (request ids, tracing, body limit, timeout, panics, metrics).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::app::citizens::Citizens;
use crate::app::claims::ClaimWriter;
use crate::app::coalesce::Coalescer;
use crate::app::signing::SigningKey;
use crate::app::till::ttl_cache::TtlCache;
use crate::domain::error_code::ErrorCode;
use crate::domain::time::Clock;
use crate::storage::Storage;
use openapi::{operation_id, terminal_signed};

mod card;
mod citizens;
mod conditional;
pub mod error;
mod events;
pub mod extract;
mod finance;
mod fraud;
pub mod idempotency;
pub mod lean;
mod ledger;
mod merchants;
mod meters;
pub mod openapi;
mod ops;
pub mod polls;
pub mod rate_limit;
pub(crate) mod seasons;
pub mod serve;
pub mod staff;
pub(crate) mod till;

pub use error::ApiError;
pub use events::spawn_node_events;
pub use serve::ConnectionLimits;

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
    reads: Arc<crate::app::read_side::ReadSide>,
    ledger_key: Arc<SigningKey>,
    /// The process-wide recorder (`None` if another was installed first) and this node's gauges.
    metrics: (Option<PrometheusHandle>, crate::telemetry::NodeGauges),
    clock: Arc<dyn Clock>,
    citizens: Arc<Citizens>,
    writer: ClaimWriter,
    qr: Arc<crate::app::qr::QrKeys>,
    redemptions: crate::app::till::writer::RedemptionWriter,
    settlement_chunking: crate::domain::finance::SettlementChunking,
    pub(crate) tills: TtlCache<
        crate::domain::ids::TerminalId,
        (crate::storage::TerminalRecord, crate::domain::merchant::Merchant),
    >,
    pub(crate) batches:
        TtlCache<crate::domain::ids::BatchId, (crate::domain::season::Batch, crate::domain::season::Season)>,
    /// The till path's per-request reads and nonce writes, coalesced (`src/app/coalesce.rs`).
    pub(crate) till_reads: TillReads,
    /// Per-citizen request rates on claims and QR codes (`rate_limit.rs`), per process or
    /// shared through Redis.
    pub(crate) citizen_rates: std::sync::Arc<rate_limit::CitizenRates>,
    waitlist_seal: Arc<crate::app::waitlist::PhoneSeal>,
    /// The season list, seasons and batch lists from memory (`app::public_reads`).
    public_reads: Arc<crate::app::public_reads::PublicReads>,
    /// The scores API's recent scorings of a season (`app::fraud::ScoresCache`).
    fraud_scores: crate::app::fraud::ScoresCache,
    /// First pages of "my vouchers", many citizens' in one read (`app::coalesce`).
    voucher_pages: VoucherPages,
}

/// A citizen and the most vouchers wanted, answered with the citizen's newest vouchers.
pub(crate) type VoucherPages =
    Coalescer<(crate::domain::ids::CitizenId, i64), Vec<crate::domain::season::Voucher>>;

/// Reads the first pages of many citizens' vouchers at once, on the read side (a standby within
/// its bound): every read starts after its requests arrived, so it sees what they saw committed.
fn voucher_pages(reads: &Arc<crate::app::read_side::ReadSide>) -> VoucherPages {
    let reads = reads.clone();
    Coalescer::spawn(move |wanted: Vec<(crate::domain::ids::CitizenId, i64)>| {
        let (reads, wanted) = (reads.clone(), Arc::new(wanted));
        async move {
            let read = |store: Arc<dyn Storage>| {
                let wanted = wanted.clone();
                async move { store.first_voucher_pages(&wanted).await }
            };
            reads.read(read).await
        }
    })
}

pub(crate) struct TillReads {
    pub vouchers: Coalescer<crate::domain::ids::VoucherId, Option<crate::domain::season::Voucher>>,
    pub nonces: Coalescer<(crate::domain::ids::TerminalId, String), bool>,
    pub card_payments:
        Coalescer<(crate::domain::ids::MerchantId, String), Option<crate::storage::CardPaymentRecord>>,
}

impl TillReads {
    fn spawn(store: &Arc<dyn Storage>, clock: &Arc<dyn Clock>) -> TillReads {
        let (s1, s2, s3, clock) = (store.clone(), store.clone(), store.clone(), clock.clone());
        TillReads {
            vouchers: Coalescer::spawn(move |ids: Vec<crate::domain::ids::VoucherId>| {
                let store = s1.clone();
                async move { store.vouchers(&ids).await }
            }),
            nonces: Coalescer::spawn(move |seen: Vec<(crate::domain::ids::TerminalId, String)>| {
                let (store, at) = (s2.clone(), clock.now());
                async move { store.record_nonces(&seen, at).await }
            }),
            card_payments: Coalescer::spawn(move |orders: Vec<(crate::domain::ids::MerchantId, String)>| {
                let store = s3.clone();
                async move { store.live_card_payments(&orders).await }
            }),
        }
    }
}

/// A signed QR token and its drawing: the answer of both QR endpoints (voucher and card).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct QrAnswer {
    /// What the till scans.
    pub token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The token drawn as an SVG image.
    pub svg: String,
}

/// How long till-path rows are served from memory.
const TILL_CACHE_TTL: Duration = Duration::from_secs(2);

/// What the HTTP layer is built from.
pub struct Services {
    pub store: Arc<dyn Storage>,
    /// Where the read-only requests read (`app::read_side`): a standby or `store`.
    pub reads: Arc<crate::app::read_side::ReadSide>,
    pub ledger_key: Arc<SigningKey>,
    pub clock: Arc<dyn Clock>,
    pub citizens: Arc<Citizens>,
    pub writer: ClaimWriter,
    pub qr: Arc<crate::app::qr::QrKeys>,
    pub redemptions: crate::app::till::writer::RedemptionWriter,
    pub settlement_chunking: crate::domain::finance::SettlementChunking,
    /// The rate buckets shared by every node (`--rate-limit-store`), if configured.
    pub rate_store: Option<rate_limit::RateStore>,
    /// Seals a waiting person's phone (`app::waitlist`).
    pub waitlist_seal: Arc<crate::app::waitlist::PhoneSeal>,
}

impl AppState {
    pub fn new(services: Services) -> AppState {
        let Services {
            store,
            reads,
            ledger_key,
            clock,
            citizens,
            writer,
            qr,
            redemptions,
            settlement_chunking,
            rate_store,
            waitlist_seal,
        } = services;
        let metrics = (crate::telemetry::recorder(), crate::telemetry::NodeGauges::default());
        let (tills, batches) = (TtlCache::new(TILL_CACHE_TTL), TtlCache::new(TILL_CACHE_TTL));
        let till_reads = TillReads::spawn(&store, &clock);
        let citizen_rates = std::sync::Arc::new(rate_limit::CitizenRates::new(rate_store));
        spawn_forget_idle(&citizen_rates);
        if citizen_rates.store().is_some() {
            rate_limit::store::spawn_pings(std::sync::Arc::downgrade(&citizen_rates));
        }
        let public_reads =
            Arc::new(crate::app::public_reads::PublicReads::with_read_side(reads.clone(), clock.clone()));
        let fraud_scores = crate::app::fraud::ScoresCache::new(reads.clone(), clock.clone());
        let voucher_pages = voucher_pages(&reads);
        let inner = AppInner {
            store,
            reads,
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
            public_reads,
            fraud_scores,
            waitlist_seal,
            voucher_pages,
        };
        let state = AppState(Arc::new(inner));
        spawn_metrics_upkeep(Arc::downgrade(&state.0));
        state
    }

    pub fn citizen_rates(&self) -> &rate_limit::CitizenRates {
        &self.0.citizen_rates
    }

    /// The public reads' snapshots; a change notifier from other nodes calls `invalidate` on it.
    pub fn public_reads(&self) -> &Arc<crate::app::public_reads::PublicReads> {
        &self.0.public_reads
    }

    /// The scores API's recent scorings, per season (`app::fraud::ScoresCache`).
    pub fn fraud_scores(&self) -> &crate::app::fraud::ScoresCache {
        &self.0.fraud_scores
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

    pub fn waitlist_seal(&self) -> &crate::app::waitlist::PhoneSeal {
        &self.0.waitlist_seal
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
    ) -> Result<QrAnswer, ApiError> {
        let (token, expires_at) = self.qr().issue(kind, subject).await?;
        let svg = crate::app::qr::svg(token.clone()).await.map_err(|error| {
            tracing::error!(%error, "drawing a QR code failed");
            ApiError::internal()
        })?;
        Ok(QrAnswer { token, expires_at: expires_at.to_string(), svg })
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

    /// Where the read-only requests read: a standby within its lag bound, else the primary.
    pub fn reads(&self) -> &crate::app::read_side::ReadSide {
        &self.0.reads
    }

    /// The first pages of "my vouchers", coalesced across citizens.
    pub(crate) fn voucher_pages(&self) -> &VoucherPages {
        &self.0.voucher_pages
    }

    pub fn settlement_chunking(&self) -> crate::domain::finance::SettlementChunking {
        self.0.settlement_chunking
    }

    pub fn ledger_key(&self) -> &SigningKey {
        &self.0.ledger_key
    }
}

/// The main port's router: the public reads on their lighter stack (`lean`), in front of every
/// route with the layers below.
pub fn router(state: AppState, timeouts: RequestTimeouts) -> lean::ByMethod {
    let dev_sms = state.citizens().codes().sms().dev_outbox().is_some();
    let (api, _) = api_routes(timeouts, dev_sms).split_for_parts();
    lean::router(with_layers(api.merge(crate::web::router()), state.clone()), state)
}

/// `routes` with the fallbacks and the layers every answer but the public reads' (`lean`) goes
/// through (request ids, tracing, body limit, panics), on the main port and the polls port alike.
fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(ops::not_found)
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
                .layer(middleware::from_fn(serve::close_if_body_unread))
                .layer(CatchPanicLayer::custom(on_panic)),
        )
        .with_state(state)
}

/// The OpenAPI document: built from the same declarations as the router ([`api_routes`]), so a
/// route cannot be served without being documented.
pub fn openapi() -> utoipa::openapi::OpenApi {
    // The development route is documented, marked as such, though only a dev server serves it.
    let mut document = api_routes(RequestTimeouts::default(), true).into_openapi();
    utoipa::Modify::modify(&openapi::ErrorResponses, &mut document);
    document
}

/// Every documented route, each added with `routes!` from its handler's `#[utoipa::path]`
/// (never with a bare `.route`, which would serve a path the document does not list).
/// `dev_sms`: whether `GET /v1/dev/sms` is served (the `dev` SMS provider only).
fn api_routes(timeouts: RequestTimeouts, dev_sms: bool) -> OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    let dev = match dev_sms {
        true => OpenApiRouter::new().routes(routes!(citizens::dev_sms)),
        false => OpenApiRouter::new(),
    };
    let routes = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ledger_staff_and_season_routes())
        .merge(citizen_routes())
        .merge(dev)
        .merge(merchant_routes())
        .merge(till_and_card_routes())
        .merge(finance_routes())
        .merge(ops_routes());
    // A route layer wraps every route added before it: the season-wide limit wraps the routes
    // above too, outside their shorter request timeout.
    let routes = time_limited(routes, timeouts.request).merge(season_wide_routes());
    measured(time_limited(routes, timeouts.season_wide))
}

/// `routes`, each answered 503 `timeout` once it has run for `limit` (the main port's and the
/// polls port's).
fn time_limited(routes: OpenApiRouter<AppState>, limit: Duration) -> OpenApiRouter<AppState> {
    routes.route_layer(ServiceBuilder::new().layer(HandleErrorLayer::new(on_timeout)).timeout(limit))
}

/// `routes`, each request counted and timed in the metrics by its route.
fn measured(routes: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    routes.route_layer(middleware::from_fn(meters::record))
}

fn ledger_staff_and_season_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ledger::verify))
        .routes(routes!(ledger::latest_checkpoint))
        .routes(routes!(staff::create_key))
        .routes(routes!(staff::claim))
        .routes(routes!(staff::me))
        .routes(routes!(seasons::create_season, seasons::list_seasons))
        .routes(routes!(seasons::get_season))
        .routes(routes!(seasons::add_budget))
        .routes(routes!(seasons::create_batch, seasons::list_batches))
}

fn citizen_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(citizens::register))
        .routes(routes!(citizens::send_code))
        .routes(routes!(citizens::sign_in))
        .routes(routes!(citizens::revoke_sessions))
        .routes(routes!(citizens::sign_out))
        .routes(routes!(citizens::my_vouchers))
        .routes(routes!(citizens::claim))
        .routes(routes!(citizens::enter_lottery, seasons::lottery_entrants))
        .routes(routes!(citizens::my_lottery_entry))
        .routes(routes!(citizens::join_waitlist, seasons::waitlist_summary))
        .routes(routes!(citizens::my_waitlist_place))
        .routes(routes!(citizens::voucher_qr))
}

fn merchant_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(merchants::create, merchants::list))
        .routes(routes!(merchants::suspend))
        .routes(routes!(merchants::activate))
        .routes(routes!(merchants::change_account))
        .routes(routes!(merchants::account_changes))
        .routes(routes!(merchants::account_requests))
        .routes(routes!(merchants::approve_account_request))
        .routes(routes!(merchants::reject_account_request))
        .routes(routes!(merchants::register_terminal))
        .routes(routes!(merchants::revoke_terminal))
}

/// The till's and the card's routes. The terminal-signed handlers' annotations belong with the
/// till; the operation ids are set here, where the names `get` and `reverse` would clash.
fn till_and_card_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(operation_id(routes!(till::keys), "list_qr_keys"))
        .routes(terminal_signed(operation_id(routes!(till::redeem), "redeem")))
        .routes(terminal_signed(operation_id(routes!(till::quote), "quote_redemption")))
        .routes(terminal_signed(operation_id(routes!(till::get), "get_redemption")))
        .routes(terminal_signed(operation_id(routes!(till::reverse), "reverse_redemption")))
        .routes(routes!(card::issue, card::mine))
        .routes(routes!(card::qr))
        .routes(routes!(card::exchange))
        .routes(routes!(card::freeze))
        .routes(routes!(card::unfreeze))
        .routes(routes!(card::set_terms))
        .routes(routes!(card::set_points_rate))
        .routes(terminal_signed(operation_id(routes!(card::pay), "pay_by_card")))
        .routes(terminal_signed(operation_id(routes!(card::get), "get_card_payment")))
        .routes(terminal_signed(operation_id(routes!(card::reverse), "reverse_card_payment")))
}

/// Finance routes under the request timeout; the season-wide ones are [`season_wide_routes`].
fn finance_routes() -> OpenApiRouter<AppState> {
    let journal_limit = DefaultBodyLimit::max(finance::JOURNAL_LIMIT_BYTES);
    OpenApiRouter::new()
        .routes(routes!(finance::report))
        .routes(routes!(finance::merchant_journal).layer(journal_limit))
        .routes(routes!(finance::get_settlement))
        .routes(routes!(finance::payout_csv))
        .routes(routes!(finance::paid))
        .routes(routes!(finance::statement))
        .routes(routes!(finance::hold_merchant, finance::season_holds))
        .routes(routes!(finance::lift_hold))
        .routes(routes!(finance::release_held_line))
        .routes(routes!(finance::propose_rejection))
        .routes(routes!(finance::approve_rejection))
        .routes(routes!(finance::set_hold_threshold))
}

fn ops_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
}

/// Routes under the season-wide timeout instead of the request timeout.
fn season_wide_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // Finance work over a whole season: reconciling a million vouchers takes ~20 s.
        .routes(routes!(finance::reconciliation))
        .routes(routes!(finance::close))
        .routes(routes!(finance::settle))
        .routes(routes!(finance::season_settlements))
        // Scoring reads every redemption of the season (1,000,000 in a few seconds).
        .routes(routes!(fraud::scores))
        // A draw issues a batch's whole stock (200,000 vouchers for Beijing 2021's).
        .routes(routes!(seasons::draw))
        // Its audit hashes every entry twice, once per process (then it is cached).
        .routes(routes!(seasons::lottery_audit))
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
    on_panic_answer()
}

/// The answer to a request whose handler panicked (logged): 500 `internal`.
fn on_panic_answer() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

/// Drains the process-wide histograms every few seconds, for as long as the state lives, so
/// that samples do not pile up in memory between scrapes (or without any).
fn spawn_metrics_upkeep(state: std::sync::Weak<AppInner>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            let Some(state) = state.upgrade() else { return };
            if let Some(handle) = &state.metrics.0 {
                handle.run_upkeep();
            }
        }
    });
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
