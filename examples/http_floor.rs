//! A bare axum Router for bench.sh's row 4b: axum and hyper served the way `seckill serve`
//! serves HTTP (same features, allocator, listeners and `http.threads`), with none of our
//! work.
//!
//! - `GET /health` answers `ok`, as the real server does;
//! - `POST /api/v1/buy` reads the body and answers the real server's sold-out response
//!   (409, the same JSON) without looking at it: no parsing, no funnel, no metrics.
//!
//! Both go through the Router, as every request did in `seckill serve` before the buy
//! request got its own way in (`src/server/api.rs`): the ratio of the two rates shows
//! what a POST with a body costs the stack alone (two more headers to parse, hyper's body
//! channel, the load generator's larger request) when it is routed like any other request.
//!
//! cargo build --release --example http_floor && target/release/examples/http_floor 127.0.0.1:18082

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SOLD_OUT: &str = r#"{"error":"sold_out","message":"sold out"}"#;

async fn health() -> &'static str {
    "ok"
}

async fn sold_out(body: Bytes) -> impl IntoResponse {
    std::hint::black_box(body);
    (
        StatusCode::CONFLICT,
        [(header::CONTENT_TYPE, "application/json")],
        SOLD_OUT,
    )
}

fn main() -> anyhow::Result<()> {
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18082".to_string());
    let http = seckill::config::HttpConfig::default();
    let threads = http.threads;
    let limits = seckill::server::connections::ConnectionLimits::new(
        http.connection_cap(),
        http.header_read_timeout(),
        metrics::Counter::noop(),
        [metrics::Counter::noop(), metrics::Counter::noop()],
    );
    let app = Router::new()
        .route("/health", get(health))
        .route("/api/v1/buy", post(sold_out));
    let listeners = seckill::server::bind(&bind, threads)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(seckill::server::http_threads::serve(
            listeners,
            app,
            limits,
            false,
            threads > 0,
            std::future::pending(),
        ))?;
    Ok(())
}
