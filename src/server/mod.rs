//! `seckill serve`: the buyer-facing HTTP API (axum).
//!
//! - [`routes`]: the route table, every endpoint's method and path;
//! - [`api`]: the router built from it, and the buy request's way in ahead of the router;
//! - [`buy`] (the funnel, then group commit in the [`batcher`]), [`token`], [`query`]
//!   (orders, activities, time, health, readiness) and [`result`] ("did I win?"): the
//!   handlers; [`page`]: the buyer page embedded in the binary;
//! - [`body`]: reading and parsing request bodies, with the buy body's fast path;
//! - [`error`]: the JSON error shape every failure uses;
//! - [`state`]: what the handlers share, and the background tasks beside it ([`refresh`] of
//!   the stock, the lost-state [`guard`]);
//! - [`identity`]: who the buyer is (`auth.mode`: none, JWT, trusted gateway);
//! - [`client_addr`]: where the buyer is (the peer, or what a trusted proxy says);
//! - [`funnel`]: the local layers that shed load before Redis, with [`limiter`]'s capped
//!   per-key buckets;
//! - [`metrics`]: what `GET /metrics` shows;
//! - [`connections`]: the connection cap, and JSON on hyper's own refusals;
//! - [`http_threads`]: the listeners, and the runtime's tasks or the threads that serve them.
//!
//! [`router`] builds the whole service (tests drive it with `tower::ServiceExt::oneshot`);
//! [`Api`] serves it with the buy request dispatched ahead of the router;
//! [`bind`] opens the listeners and [`run`] serves them ([`http_threads`]: on the calling
//! runtime, or on `http.threads` threads of their own) until the shutdown future completes,
//! then drains in-flight requests.
//!
//! The files depend on one another in this order, each only on files listed before it (none on
//! this one): `limiter`, `client_addr`, `funnel`, `connections`, `routes`, `metrics`, `error`,
//! `identity`, `guard`, `refresh`, `batcher`, `state`, `body`, `token`, `buy`, `query`, `result`,
//! `page`, `api`, `http_threads`.

pub mod api;
pub mod batcher;
pub mod body;
pub mod buy;
pub mod client_addr;
pub mod connections;
pub mod error;
pub mod funnel;
pub mod guard;
pub mod http_threads;
pub mod identity;
pub mod limiter;
pub mod metrics;
pub mod page;
pub mod payment;
pub mod query;
pub mod refresh;
pub mod result;
pub mod routes;
pub mod state;
pub mod token;

use std::future::Future;

use crate::error::Result;
pub use api::{router, Api};
pub use http_threads::bind;
pub use state::{AppState, Shared};

/// Serves the API on `listeners` (from [`bind`]) until `shutdown` completes or this future
/// is dropped; then stops accepting, lets in-flight requests finish, and returns. The
/// listeners are served by tasks of the calling runtime when `http.threads` is 0, else by a
/// thread each. Must run inside the Tokio runtime that created `state`: group commit and the
/// Redis connection live there.
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
    let own_threads = http.threads > 0;
    tracing::info!(%addr, http_threads = if own_threads { listeners.len() } else { 0 }, max_connections = http.connection_cap(), page = %format!("http://{addr}/"), "serving the HTTP API and the buyer page");
    // Every request carries its peer's address: the client address is logged and may be
    // rate-limited in every auth mode.
    http_threads::serve(listeners, Api::new(state), limits, true, own_threads, shutdown).await
}

/// Completes on ctrl-c or SIGTERM, for [`run`].
pub use crate::shutdown::signal as shutdown_signal;
