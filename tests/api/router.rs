//! The router without a socket (axum's `examples/testing` style): `server::router(state)`
//! answered through `tower::ServiceExt::oneshot`.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use seckill::server::{router, AppState};
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::{spawn_app, TestApp};

async fn call(app: &TestApp, request: Request<Body>) -> (StatusCode, Value) {
    let state = AppState::new(app.config.clone(), app.redis.clone(), app.db.clone());
    let response = router(state).oneshot(request).await.expect("router answers");
    let status = response.status();
    let body = to_bytes(response.into_body(), 64 * 1024).await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_answers_without_a_socket() {
    let app = spawn_app().await;
    let (status, _) = call(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_buy_and_unknown_route_get_json_errors() {
    let app = spawn_app().await;
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

/// `seckill serve` answers through `server::Api`, which sends `POST /api/v1/buy` past the
/// router: every buy request must get the router's answer and be counted the same way.
#[tokio::test]
async fn the_served_api_answers_buy_requests_as_the_router_does() {
    use seckill::server::Api;

    let app = spawn_app().await;
    let json = |path: &str, body: &'static str| {
        Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let requests = || {
        vec![
            json("/api/v1/buy", r#"{"product_id": 1, "user_id": "#),
            json(
                "/api/v1/buy",
                r#"{"product_id":1,"user_id":"u","quantity":0,"token":"t"}"#,
            ),
            json(
                "/api/v1/buy",
                r#"{"product_id":1,"user_id":"u","quantity":1,"token":"t","x":1}"#,
            ),
            json(
                "/api/v1/buy?src=app",
                r#"{"product_id":999999,"user_id":"u","quantity":1,"token":"t.t"}"#,
            ),
            json(
                "/api/v1/buy/",
                r#"{"product_id":1,"user_id":"u","quantity":1,"token":"t"}"#,
            ),
            Request::post("/api/v1/buy")
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
            Request::get("/api/v1/buy").body(Body::empty()).unwrap(),
            Request::put("/api/v1/buy").body(Body::empty()).unwrap(),
        ]
    };
    let answer = |response: axum::response::Response| async move {
        let status = response.status();
        let kind = response.headers().get("content-type").cloned();
        let body = to_bytes(response.into_body(), 64 * 1024).await.expect("body");
        (status, kind, body)
    };
    let buy_counts = |metrics: &str| -> Vec<String> {
        let mut lines: Vec<String> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("seckill_requests_total{route=\"/api/v1/buy\"")
                    || l.starts_with("seckill_request_duration_seconds_count{route=\"/api/v1/buy\"}")
            })
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };

    let routed = router(AppState::new(app.config.clone(), app.redis.clone(), app.db.clone()));
    let served = Api::new(AppState::new(app.config.clone(), app.redis.clone(), app.db.clone()));
    let mut statuses = Vec::new();
    for (by_router, by_api) in requests().into_iter().zip(requests()) {
        let expected = answer(routed.clone().oneshot(by_router).await.unwrap()).await;
        let got = answer(served.clone().oneshot(by_api).await.unwrap()).await;
        assert_eq!(got, expected);
        statuses.push(got.0.as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 404, 404, 400, 405, 405]);
    let metrics = || Request::get("/metrics").body(Body::empty()).unwrap();
    let routed_metrics = answer(routed.oneshot(metrics()).await.unwrap()).await.2;
    let served_metrics = answer(served.oneshot(metrics()).await.unwrap()).await.2;
    let (routed_counts, served_counts) = (
        buy_counts(std::str::from_utf8(&routed_metrics).unwrap()),
        buy_counts(std::str::from_utf8(&served_metrics).unwrap()),
    );
    assert!(routed_counts.iter().any(|l| l.ends_with("} 7")), "{routed_counts:?}");
    assert_eq!(served_counts, routed_counts);
}
