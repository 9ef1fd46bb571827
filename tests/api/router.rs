//! The router without a socket (axum's `examples/testing` style): `server::router(state)`
//! answered through `tower::ServiceExt::oneshot`.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use seckill::server::{router, AppState};
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::TestApp;

async fn call(app: &TestApp, request: Request<Body>) -> (StatusCode, Value) {
    let state = AppState::new(app.config.clone(), app.redis.clone(), app.db.clone());
    let response = router(state).oneshot(request).await.expect("router answers");
    let status = response.status();
    let body = to_bytes(response.into_body(), 64 * 1024).await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_answers_without_a_socket() {
    let app = TestApp::new().await;
    let (status, _) = call(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_buy_and_unknown_route_get_json_errors() {
    let app = TestApp::new().await;
    let buy = Request::post("/api/v1/buy")
        .header("content-type", "application/json")
        .body(Body::from("{\"product_id\": 1, \"user_id\": "))
        .unwrap();
    let (status, body) = call(&app, buy).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");

    let (status, body) = call(&app, Request::get("/api/v1/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found", "{body}");
}
