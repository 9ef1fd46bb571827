//! The naive flash-sale server a user would write instead of `seckill serve`, for the
//! comparison in scripts/bench.sh: axum + redis-rs (one multiplexed connection), parse the
//! JSON, one EVALSHA per request of the classic deduct script (`scripts/bench/naive_deduct.lua`:
//! GET the user's count, GET the stock, SET, INCRBY). No token check, no queue, no batching,
//! no funnel. It takes the same request as `POST /api/v1/buy`, so the same wrk script
//! (`scripts/bench/buy.lua`) drives both.
//!
//! - `POST /api/v1/buy` `{"product_id":1,"user_id":"u","quantity":1,"token":"..."}`:
//!   200 `{"status":"ok"}`, 409 `{"error":"sold_out"}` or `{"error":"limit_exceeded"}`,
//!   400 `{"error":"bad_request"}`, 503 `{"error":"busy"}` when Redis fails.
//! - `GET /health`: `ok`.
//!
//! Keys: `<KEY_PREFIX>:stock:<product>` (set it before the run) and
//! `<KEY_PREFIX>:bought:<product>:<user>` (KEY_PREFIX defaults to `naive`); per-user limit 1.
//!
//! cargo build --release --example naive_server
//! REDIS_URL=redis://127.0.0.1:6379 target/release/examples/naive_server 127.0.0.1:18083
//! redis-cli set naive:stock:1 100000000

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
#[allow(dead_code)] // the token is read, as a real request carries it, but not checked
struct Buy {
    product_id: u64,
    user_id: String,
    #[serde(default)]
    quantity: Option<u32>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Clone)]
struct App {
    redis: redis::aio::MultiplexedConnection,
    script: redis::Script,
    prefix: std::sync::Arc<str>,
}

async fn health() -> &'static str {
    "ok"
}

async fn buy(State(app): State<App>, body: axum::body::Bytes) -> impl IntoResponse {
    let Ok(req) = serde_json::from_slice::<Buy>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "bad_request"})));
    };
    let mut conn = app.redis.clone();
    let answer: redis::RedisResult<i64> = app
        .script
        .key(format!("{}:bought:{}:{}", app.prefix, req.product_id, req.user_id))
        .key(format!("{}:stock:{}", app.prefix, req.product_id))
        .arg(1)
        .invoke_async(&mut conn)
        .await;
    match answer {
        Ok(1) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Ok(0) => (StatusCode::CONFLICT, Json(json!({"error": "sold_out"}))),
        Ok(_) => (StatusCode::CONFLICT, Json(json!({"error": "limit_exceeded"}))),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "busy"}))),
    }
}

#[tokio::main]
async fn main() {
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18083".into());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let script = redis::Script::new(include_str!("../scripts/bench/naive_deduct.lua"));
    let app = Router::new()
        .route("/health", get(health))
        .route("/api/v1/buy", post(buy))
        .with_state(App {
            redis,
            script,
            prefix: std::env::var("KEY_PREFIX").unwrap_or_else(|_| "naive".into()).into(),
        });
    let listener = tokio::net::TcpListener::bind(&bind).await.expect("bind");
    eprintln!("naive_server on {bind}");
    axum::serve(listener, app).await.expect("serve");
}
