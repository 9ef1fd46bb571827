//! The HTTP API as served: the [`router`] built from the route table ([`Route`]) with the
//! middleware that counts every request, and [`Api`], which sends the buy request to its
//! handler ahead of the router.
//!
//! The herd that arrives at a flash sale is almost all buy requests, and after the sell-out
//! almost all of them are answered from memory, on the one HTTP thread that answers
//! everything on a small machine. The router's generic work per request (the route lookup,
//! the matched-path extension, the middleware's boxed `Next` and task-local) is then a
//! noticeable part of each answer (`scripts/bench/README.md` has the measurement), so the buy
//! request skips it and is recorded in the same metrics and log line as the middleware would.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tower::Service;

use super::body::JsonBody;
use super::error::{no_route, wrong_method};
use super::metrics::with_result_code;
use super::routes::Route;
use super::state::AppState;
use super::{buy, page, payment, query, result, token};

/// The whole HTTP API: every [`Route`] with its handler, JSON errors for unknown routes and
/// wrong methods, every request counted in the metrics.
pub fn router(state: AppState) -> Router {
    Route::ALL
        .into_iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path(), handler(route))
        })
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// `route`'s handler, on the route's method.
fn handler(route: Route) -> MethodRouter<AppState> {
    let method = MethodFilter::try_from(route.method()).expect("every route's method is a standard one");
    match route {
        Route::Buy => on(method, buy::buy),
        Route::Token => on(method, token::token),
        Route::Order => on(method, query::order),
        Route::UserOrders => on(method, query::orders_of_user),
        Route::Activity => on(method, query::activity),
        Route::Time => on(method, query::time),
        Route::Health => on(method, query::health),
        Route::Ready => on(method, query::ready),
        Route::Metrics => on(method, metrics),
        Route::PaymentCallback => on(method, payment::callback),
        Route::Result => on(method, result::result),
        Route::Home => on(method, page::home),
        Route::SalePage => on(method, page::sale),
        Route::Asset => on(method, page::asset),
    }
}

/// `GET /metrics`.
async fn metrics(State(state): State<AppState>) -> Response {
    state
        .stats
        .render(state.admission.in_flight(), state.breaker.state_code(), &state.limits)
}

/// Middleware: counts every request by route and result code, times it, logs its outcome.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| Route::of_path(path.as_str()));
    let started = Instant::now();
    let (code, response) = with_result_code(next.run(request)).await;
    state.stats.answered(route, code, response.status(), started);
    response
}

/// The method of the buy endpoint, as [`Api`] matches it.
const BUY_METHOD: Method = Route::Buy.method();
/// The path of the buy endpoint, as [`Api`] matches it.
const BUY_PATH: &str = Route::Buy.path();

/// The whole HTTP API as served: the buy endpoint first, then the [`router`].
#[derive(Clone)]
pub struct Api {
    state: AppState,
    router: Router,
}

impl Api {
    /// The API over `state`.
    pub fn new(state: AppState) -> Api {
        Api {
            router: router(state.clone()),
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
        if request.method() == BUY_METHOD && request.uri().path() == BUY_PATH {
            ApiFuture::Buy(Box::pin(answer_buy(self.state.clone(), request)))
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

/// The buy request's answer, recorded as [`track`] records the others.
async fn answer_buy(state: AppState, request: Request) -> Response {
    let started = Instant::now();
    // The caller first: a request without valid credentials is refused before its body is read.
    let client = state.client_addrs.of(request.headers(), request.extensions());
    let answer = match state.identity.caller(request.headers(), request.extensions()) {
        Ok(caller) => match JsonBody::from_request(request, &state).await {
            Ok(JsonBody(body)) => buy::answer(&state, &caller, client, &body).await,
            Err(refused) => Err(refused),
        },
        Err(refused) => Err(refused),
    };
    let code = match &answer {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    let response = answer.into_response();
    state.stats.answered(Some(Route::Buy), code, response.status(), started);
    response
}
