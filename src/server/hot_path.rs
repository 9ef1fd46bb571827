//! The buy request's own way in: `POST /api/v1/buy` goes straight to its handler, every other
//! request through the [`Router`](super::router).
//!
//! The herd that arrives at a flash sale is almost all buy requests, and after the sell-out
//! almost all of them are answered from memory. The router's generic work per request (the
//! route lookup, the matched-path extension, the middleware's boxed `Next` and task-local)
//! cost about 3,000 of the 21,300 instructions a sold-out answer took (callgrind), on the one
//! HTTP thread that answers everything on a small machine. Here the buy request skips it and is
//! recorded in the same metrics and log line as the middleware would.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{FromRequest, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use tower::Service;

use super::error::JsonBody;
use super::metrics::BUY_ROUTE;
use super::AppState;

/// The path of the buy endpoint.
pub const BUY_PATH: &str = "/api/v1/buy";

/// The whole HTTP API as served: the buy endpoint first, then the [`Router`](super::router).
#[derive(Clone)]
pub struct Api {
    state: AppState,
    router: Router,
}

impl Api {
    /// The API over `state`.
    pub fn new(state: AppState) -> Api {
        Api {
            router: super::router(state.clone()),
            state,
        }
    }
}

impl Service<Request> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request) -> ApiFuture {
        // Anything else at this path (another method) is the router's to refuse.
        if request.method() == Method::POST && request.uri().path() == BUY_PATH {
            ApiFuture::Buy(Box::pin(buy(self.state.clone(), request)))
        } else {
            ApiFuture::Routed(self.router.call(request))
        }
    }
}

/// The answer of [`Api`].
// Not boxed: the routed future is as big as it is, and boxing it would cost every other
// request an allocation.
#[allow(clippy::large_enum_variant)]
pub enum ApiFuture {
    /// A buy request.
    Buy(Pin<Box<dyn Future<Output = Response> + Send>>),
    /// Anything else.
    Routed(RouteFuture<Infallible>),
}

impl Future for ApiFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ApiFuture::Buy(answer) => answer.as_mut().poll(cx).map(Ok),
            ApiFuture::Routed(answer) => Pin::new(answer).poll(cx),
        }
    }
}

async fn buy(state: AppState, request: Request) -> Response {
    let started = Instant::now();
    let answer = match JsonBody::from_request(request, &state).await {
        Ok(JsonBody(body)) => super::routes::answer_buy(&state, &body).await,
        Err(refused) => Err(refused),
    };
    let code = match &answer {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    let response = answer.into_response();
    state.stats.answered(BUY_ROUTE, code, response.status(), started);
    response
}
