//! `GET /metrics` of `seckill serve`: the handles the hot path records into and the middleware
//! that counts every request (remaining stock is refreshed by [`super::refresh`]).
//!
//! Every handle is registered once (at start, or on first use of a route/code pair) and kept,
//! so recording is an atomic add: no label strings are built and no registry lookup happens
//! per request.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{Counter, Gauge, Histogram};

use super::hot_path::BUY_PATH;
use super::AppState;
use crate::metrics::{self as names, Metrics};

/// Route labels: the routes of [`super::router`]; anything else is `other`.
/// The buy route comes first: [`BUY_ROUTE`] is its index.
const ROUTES: &[&str] = &[
    BUY_PATH,
    "/api/v1/token",
    "/api/v1/orders/{order_no}",
    "/api/v1/orders",
    "/api/v1/activities/{id}",
    "/api/v1/time",
    "/health",
    "/ready",
    "/metrics",
    "other",
];

/// Route index of `POST /api/v1/buy` in the request metrics (see [`ServerMetrics::answered`]).
pub const BUY_ROUTE: usize = 0;

/// Result-code labels: `ok`, every error code of the API, and `error` for anything else.
const CODES: &[&str] = &[
    "ok",
    "bad_request",
    "not_found",
    "not_started",
    "paused",
    "ended",
    "blacklisted",
    "invalid_token",
    "limit_exceeded",
    "sold_out",
    "busy",
    "unknown_outcome",
    "unconfirmed",
    "too_many_requests",
    "method_not_allowed",
    "headers_too_large",
    "uri_too_long",
    "error",
];

tokio::task_local! {
    // The result code of the request being answered, set by [`set_result_code`]. A task-local
    // (not a response extension) because an extension costs an allocation per response.
    static RESULT_CODE: Cell<Option<&'static str>>;
}

/// Records the result code of the current request (called by [`super::error::ApiError`];
/// a request that sets none counts as `ok` when 2xx, else `error`).
pub fn set_result_code(code: &'static str) {
    let _ = RESULT_CODE.try_with(|c| c.set(Some(code)));
}

/// Why a buy request was answered busy.
#[derive(Debug, Clone, Copy)]
pub enum BusyReason {
    /// Admission full.
    Admission,
    /// Circuit breaker open.
    Breaker,
    /// Redis failed or timed out.
    Redis,
    /// The activity is suspended: Redis lost its state (see `crate::lost_state`).
    Suspended,
}

/// The recording handles of one server.
pub struct ServerMetrics {
    registry: Arc<Metrics>,
    requests: Vec<Vec<OnceLock<Counter>>>,
    latency: Vec<Histogram>,
    /// Reservations queued.
    pub reservations: Counter,
    /// Buy requests answered from the sold-out cache.
    pub sold_out_cache_hits: Counter,
    /// Requests refused by the rate limits.
    pub rate_limited: Counter,
    busy: [Counter; 4],
    in_flight: Gauge,
    breaker_state: Gauge,
    /// Purchases per script call (handed to the batchers).
    pub batch_size: Histogram,
    /// Seconds per `WAIT` for replicas (handed to the batchers).
    pub wait_replicas: Histogram,
    /// Connections refused over the connection cap.
    pub connections_refused: Counter,
    /// Connections cut, by [`super::connections::CutReason`].
    pub connections_cut: [Counter; 2],
}

impl ServerMetrics {
    /// Registers the handles in `registry`.
    pub fn new(registry: Arc<Metrics>) -> ServerMetrics {
        registry.scope(|| {
            let latency = ROUTES
                .iter()
                .map(|r| metrics::histogram!(names::REQUEST_SECONDS, "route" => *r))
                .collect();
            let busy = ["admission", "breaker", "redis", "suspended"]
                .map(|reason| metrics::counter!(names::BUSY, "reason" => reason));
            ServerMetrics {
                requests: ROUTES
                    .iter()
                    .map(|_| CODES.iter().map(|_| OnceLock::new()).collect())
                    .collect(),
                latency,
                reservations: metrics::counter!(names::RESERVATIONS),
                sold_out_cache_hits: metrics::counter!(names::SOLD_OUT_CACHE_HITS),
                rate_limited: metrics::counter!(names::RATE_LIMITED),
                busy,
                in_flight: metrics::gauge!(names::IN_FLIGHT),
                breaker_state: metrics::gauge!(names::BREAKER_STATE),
                batch_size: metrics::histogram!(names::BATCH_SIZE),
                wait_replicas: metrics::histogram!(names::WAIT_REPLICAS_SECONDS),
                connections_refused: metrics::counter!(names::HTTP_CONNECTIONS_REFUSED),
                connections_cut: ["header_timeout", "body_timeout"]
                    .map(|reason| metrics::counter!(names::HTTP_CONNECTIONS_CUT, "reason" => reason)),
                registry: registry.clone(),
            }
        })
    }

    /// The registry (for gauges registered later, such as remaining stock).
    pub fn registry(&self) -> &Arc<Metrics> {
        &self.registry
    }

    /// Counts one busy answer.
    pub fn busy(&self, reason: BusyReason) {
        self.busy[reason as usize].increment(1);
    }

    /// The gauge saying whether Redis lost one activity's state.
    pub fn redis_state_lost(&self, activity: u64) -> Gauge {
        self.registry
            .scope(|| metrics::gauge!(names::REDIS_STATE_LOST, "activity" => activity.to_string()))
    }

    /// Counts one connection cut for `reason`.
    pub fn connection_cut(&self, reason: super::connections::CutReason) {
        self.connections_cut[reason as usize].increment(1);
    }

    /// The remaining-stock gauge of one product.
    pub fn remaining_stock(&self, activity: u64, product: u64) -> Gauge {
        self.registry.scope(|| {
            metrics::gauge!(names::REMAINING_STOCK, "activity" => activity.to_string(), "product" => product.to_string())
        })
    }

    /// Records one answered request of route `route` (an index into the route labels; see
    /// [`BUY_ROUTE`]) that began at `started`: its count by result code, its latency, and a
    /// debug log line.
    pub fn answered(&self, route: usize, code: &'static str, status: StatusCode, started: Instant) {
        let elapsed = started.elapsed();
        self.request(route, code);
        self.latency[route].record(elapsed.as_secs_f64());
        tracing::debug!(
            route = ROUTES[route],
            status = status.as_u16(),
            code,
            micros = elapsed.as_micros() as u64,
            "request"
        );
    }

    fn request(&self, route: usize, code: &'static str) {
        let code = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len() - 1);
        let (route_label, code_label) = (ROUTES[route], CODES[code]);
        self.requests[route][code]
            .get_or_init(|| {
                self.registry
                    .scope(|| metrics::counter!(names::REQUESTS, "route" => route_label, "code" => code_label))
            })
            .increment(1);
    }
}

/// Middleware: counts every request by route and result code, times it, logs its outcome.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| ROUTES.iter().position(|r| *r == p.as_str()))
        .unwrap_or(ROUTES.len() - 1);
    let started = Instant::now();
    let (set, response) = RESULT_CODE
        .scope(Cell::new(None), async move {
            let response = next.run(request).await;
            (RESULT_CODE.with(Cell::get), response)
        })
        .await;
    let code = match set {
        Some(code) => code,
        None if response.status().is_success() => "ok",
        None => "error",
    };
    state.stats.answered(route, code, response.status(), started);
    response
}

/// `GET /metrics`: the Prometheus text exposition (gauges of the funnel are sampled now).
pub async fn render(State(state): State<AppState>) -> Response {
    state.stats.in_flight.set(state.admission.in_flight() as f64);
    state.stats.breaker_state.set(f64::from(state.breaker.state_code()));
    exposition(&state.stats.registry)
}

fn exposition(metrics: &Metrics) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}

/// A router with only `GET /metrics` over `metrics` (the consumer's exporter).
pub fn exporter(metrics: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(move || async move { exposition(&metrics) }))
}
