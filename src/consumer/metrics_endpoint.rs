//! `seckill consumer --metrics-bind ADDR`: the consumer's Prometheus metrics on
//! `GET /metrics`, served beside the worker (the same exposition as `seckill serve`'s).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Listens on `bind` and serves a fresh registry's `/metrics` from a spawned task, until
/// the process ends; returns the registry for [`super::run_with_metrics`] to record into.
pub async fn serve(bind: &str) -> Result<Arc<Metrics>> {
    let io = |source| Error::Io {
        path: bind.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(io)?;
    tracing::info!(addr = %listener.local_addr().map_err(io)?, "serving /metrics");
    let metrics = Metrics::new();
    let app = crate::server::metrics::exporter(metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok(metrics)
}
