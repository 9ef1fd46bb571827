//! `GET /metrics` of `seckill serve`: the handles the request path records into, and their
//! Prometheus exposition (remaining stock is refreshed by `refresh`; every request is
//! counted by `api`).
//!
//! Every handle is registered once (at start, or on first use of a route/code pair) and kept,
//! so recording is an atomic add: no label strings are built and no registry lookup happens
//! per request.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{Counter, Gauge, Histogram};

use super::connections::CutReason;
use super::funnel::{Limits, Table};
use super::routes::Route;
use crate::metrics::{self as names, Metrics};

/// Route labels: each [`Route`]'s path at its index, then `other` for requests no route
/// matched.
const ROUTE_LABELS: usize = Route::ALL.len() + 1;

/// The index of `route`'s handles (`None`: no route matched).
fn route_index(route: Option<Route>) -> usize {
    route.map_or(ROUTE_LABELS - 1, |route| route as usize)
}

/// The label of the handles at `index`.
fn route_label(index: usize) -> &'static str {
    Route::ALL.get(index).map_or("other", |route| route.path())
}

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
    "degraded",
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

/// Records the result code of the current request (called by `error::ApiError`;
/// a request that sets none counts as `ok` when 2xx, else `error`).
pub fn set_result_code(code: &'static str) {
    let _ = RESULT_CODE.try_with(|c| c.set(Some(code)));
}

/// Awaits `answer` and gives the result code set meanwhile (see [`set_result_code`]) with
/// it: that code, else `ok` for a 2xx answer and `error` for any other.
pub async fn with_result_code(answer: impl std::future::Future<Output = Response>) -> (&'static str, Response) {
    let (set, response) = RESULT_CODE
        .scope(Cell::new(None), async move {
            let response = answer.await;
            (RESULT_CODE.with(Cell::get), response)
        })
        .await;
    let code = match set {
        Some(code) => code,
        None if response.status().is_success() => "ok",
        None => "error",
    };
    (code, response)
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
    rate_limit_keys: [Gauge; 3],
    /// Purchases per script call (handed to the batchers).
    pub batch_size: Histogram,
    /// Seconds per `WAIT` for replicas (handed to the batchers).
    pub wait_replicas: Histogram,
    /// Connections refused over the connection cap.
    pub connections_refused: Counter,
    /// Connections cut, by [`CutReason`].
    pub connections_cut: [Counter; 2],
}

impl ServerMetrics {
    /// Registers the handles in `registry`.
    pub fn new(registry: Arc<Metrics>) -> ServerMetrics {
        registry.scope(|| {
            let latency = (0..ROUTE_LABELS)
                .map(|index| metrics::histogram!(names::REQUEST_SECONDS, "route" => route_label(index)))
                .collect();
            let busy = ["admission", "breaker", "redis", "suspended"]
                .map(|reason| metrics::counter!(names::BUSY, "reason" => reason));
            ServerMetrics {
                requests: (0..ROUTE_LABELS)
                    .map(|_| CODES.iter().map(|_| OnceLock::new()).collect())
                    .collect(),
                latency,
                reservations: metrics::counter!(names::RESERVATIONS),
                sold_out_cache_hits: metrics::counter!(names::SOLD_OUT_CACHE_HITS),
                rate_limited: metrics::counter!(names::RATE_LIMITED),
                busy,
                in_flight: metrics::gauge!(names::IN_FLIGHT),
                breaker_state: metrics::gauge!(names::BREAKER_STATE),
                rate_limit_keys: Table::ALL
                    .map(|table| metrics::gauge!(names::RATE_LIMIT_KEYS, "table" => table.label())),
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

    /// The gauge saying whether one activity is degraded (`seckill degrade`).
    pub fn degraded(&self, activity: u64) -> Gauge {
        self.registry
            .scope(|| metrics::gauge!(names::DEGRADED, "activity" => activity.to_string()))
    }

    /// Counts one connection cut for `reason`.
    pub fn connection_cut(&self, reason: CutReason) {
        self.connections_cut[reason as usize].increment(1);
    }

    /// The remaining-stock gauge of one product.
    pub fn remaining_stock(&self, activity: u64, product: u64) -> Gauge {
        self.registry.scope(|| {
            metrics::gauge!(names::REMAINING_STOCK, "activity" => activity.to_string(), "product" => product.to_string())
        })
    }

    /// Records one answered request of `route` (`None`: no route matched) that began at
    /// `started`: its count by result code, its latency, and a debug log line.
    pub fn answered(&self, route: Option<Route>, code: &'static str, status: StatusCode, started: Instant) {
        let elapsed = started.elapsed();
        let route = route_index(route);
        self.request(route, code);
        self.latency[route].record(elapsed.as_secs_f64());
        tracing::debug!(
            route = route_label(route),
            status = status.as_u16(),
            code,
            micros = elapsed.as_micros() as u64,
            "request"
        );
    }

    fn request(&self, route: usize, code: &'static str) {
        let code = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len() - 1);
        self.requests[route][code]
            .get_or_init(|| {
                let (route_label, code_label) = (route_label(route), CODES[code]);
                self.registry
                    .scope(|| metrics::counter!(names::REQUESTS, "route" => route_label, "code" => code_label))
            })
            .increment(1);
    }

    /// The answer to `GET /metrics`: the Prometheus text exposition, with the funnel's gauges
    /// sampled now (`in_flight` requests admitted, the breaker's `breaker_state` code, the
    /// keys each capped rate-limit table of `limits` tracks).
    pub fn render(&self, in_flight: usize, breaker_state: u8, limits: &Limits) -> Response {
        self.in_flight.set(in_flight as f64);
        self.breaker_state.set(f64::from(breaker_state));
        for (gauge, table) in self.rate_limit_keys.iter().zip(Table::ALL) {
            gauge.set(limits.tracked(table) as f64);
        }
        exposition(&self.registry)
    }
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
