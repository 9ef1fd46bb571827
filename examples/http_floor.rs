//! The HTTP stack's own floor for bench.sh's sold-out row: axum and hyper as `seckill serve`
//! uses them (same features, allocator and runtime), with none of our work.
//!
//! - `GET /health` answers `ok`, as the real server does;
//! - `POST /api/v1/buy` reads the body and answers the real server's sold-out response
//!   (409, the same JSON) without looking at it: no parsing, no funnel, no metrics.
//!
//! The ratio of the two rates, under the same wrk commands as the real server, is the most
//! the sold-out row can reach on this machine with this stack: everything beyond it is the
//! price of a POST with a body (two more headers to parse, hyper's body channel) and of the
//! load generator's larger request.
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
    let threads = seckill::config::HttpConfig::default().thread_count();
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
            std::future::pending(),
        ))?;
    Ok(())
}
