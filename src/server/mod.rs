//! `seckill serve`: the buyer-facing HTTP API (axum).
//!
//! - [`routes`]: token and buy, the hot path through the [`funnel`] and the [`batcher`]
//!   ([`buy_body`] reads the buy request);
//! - [`query`]: orders, activities, time, health and readiness;
//! - [`error`]: the JSON error shape every failure uses;
//! - [`connections`]: the connection cap, and JSON on hyper's own refusals.
//!
//! [`router`] builds the whole service (tests drive it with `tower::ServiceExt::oneshot`);
//! [`hot_path::Api`] serves it with the buy request dispatched ahead of the router;
//! [`bind`] opens the listeners and [`run`] serves them, one [`http_threads`] thread each,
//! until the shutdown future completes, then drains in-flight requests.

pub mod batcher;
pub mod buy_body;
pub mod connections;
pub mod error;
pub mod funnel;
pub mod guard;
pub mod hot_path;
pub mod http_threads;
pub mod metrics;
pub mod query;
pub mod refresh;
pub mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::db::Db;
use crate::error::Result;
use crate::redis_client::RedisClient;
use crate::token::Signer;
pub use http_threads::bind;

/// How often stock is read from Redis (see [`refresh`]): half the sold-out cache time, so a
/// product sold out elsewhere stays answered from memory without gaps; within 100ms..5s.
fn stock_refresh_every(sold_out_cache_ms: u64) -> Duration {
    Duration::from_millis((sold_out_cache_ms / 2).clamp(100, 5000))
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The shared parts of [`AppState`].
pub struct Shared {
    /// Redis (decisions, tokens, activities).
    pub redis: RedisClient,
    /// MySQL (order lookups).
    pub db: Db,
    /// Token signer.
    pub signer: Signer,
    /// The configuration the server was started with.
    pub config: Config,
    /// Product -> activity map and sold-out cache.
    pub catalog: funnel::Catalog,
    /// Bounded admission of buy requests.
    pub admission: funnel::Admission,
    /// Rate limits.
    pub limits: funnel::Limits,
    /// Circuit breaker around Redis.
    pub breaker: funnel::Breaker,
    /// Group commit.
    pub batchers: batcher::Batchers,
    /// What `GET /metrics` shows.
    pub stats: metrics::ServerMetrics,
    /// MySQL's persist sequences, for the batchers (see [`guard`]).
    pub known_seqs: Arc<guard::KnownSeqs>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for a server over `redis` and `db`. Must be called inside a Tokio runtime
    /// (it starts a task that trims the per-user rate limiter).
    pub fn new(config: Config, redis: RedisClient, db: Db) -> AppState {
        let f = &config.funnel;
        let stats = metrics::ServerMetrics::new(Arc::new(crate::metrics::Metrics::new()));
        let known_seqs = Arc::new(guard::KnownSeqs::default());
        let shared = Shared {
            signer: Signer::new(&config.token.secret),
            catalog: funnel::Catalog::new(f.sold_out_cache_ms),
            admission: funnel::Admission::new(f.max_in_flight),
            limits: funnel::Limits::new(f),
            breaker: funnel::Breaker::new(f.breaker_failures, f.breaker_open_ms),
            batchers: batcher::Batchers::new(
                redis.clone(),
                f.batch_max,
                f.batch_pipeline,
                config.redis_response_timeout(),
            )
            .with_batch_sizes(stats.batch_size.clone())
            .with_replica_wait((config.redis.wait_replicas > 0).then(|| batcher::ReplicaWait {
                replicas: config.redis.wait_replicas,
                timeout: std::time::Duration::from_millis(config.redis.wait_timeout_ms),
                seconds: stats.wait_replicas.clone(),
            }))
            .with_known_seqs(known_seqs.clone()),
            known_seqs,
            stats,
            redis,
            db,
            config,
        };
        let shared = Arc::new(shared);
        let weak = Arc::downgrade(&shared);
        refresh::spawn(
            weak.clone(),
            stock_refresh_every(shared.config.funnel.sold_out_cache_ms),
        );
        guard::spawn(weak.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.limits.forget_idle();
            }
        });
        AppState(shared)
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/token", post(routes::token))
        .route(hot_path::BUY_PATH, post(routes::buy))
        .route("/api/v1/orders", get(query::orders_of_user))
        .route("/api/v1/orders/{order_no}", get(query::order))
        .route("/api/v1/activities/{id}", get(query::activity))
        .route("/api/v1/time", get(query::time))
        .route("/health", get(query::health))
        .route("/ready", get(query::ready))
        .route("/metrics", get(metrics::render))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Serves the API on `listeners` (from [`bind`]), one HTTP thread each, until `shutdown`
/// completes or this future is dropped; then stops accepting, lets in-flight requests
/// finish, and returns. Must run inside the Tokio runtime that created `state`: group
/// commit and the Redis connection live there.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let http = &state.config.http;
    let limits = connections::ConnectionLimits::new(
        http.connection_cap(),
        http.header_read_timeout(),
        state.stats.connections_refused.clone(),
        state.stats.connections_cut.clone(),
    );
    tracing::info!(%addr, threads = listeners.len(), max_connections = http.connection_cap(), "serving the HTTP API");
    http_threads::serve(listeners, hot_path::Api::new(state), limits, shutdown).await
}

/// Completes on ctrl-c or SIGTERM, for [`run`].
pub use crate::shutdown::signal as shutdown_signal;
