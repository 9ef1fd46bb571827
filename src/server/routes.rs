//! The route table: every endpoint of the API, with its method and path, declared once.
//!
//! The router (`api::router`) gives each [`Route`] its handler, the buy request's own way in
//! (`api::Api`) matches [`Route::Buy`] by the same method and path, and the request metrics
//! (`metrics`) label each route with its path.

use axum::http::Method;

/// An endpoint of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/v1/buy`: a purchase.
    Buy,
    /// `POST /api/v1/token`: a buyer's purchase token.
    Token,
    /// `GET /api/v1/orders/{order_no}`: one order.
    Order,
    /// `GET /api/v1/orders`: a buyer's orders in an activity.
    UserOrders,
    /// `GET /api/v1/activities/{id}`: an activity's page data.
    Activity,
    /// `GET /api/v1/time`: the server clock.
    Time,
    /// `GET /health`: the process is alive.
    Health,
    /// `GET /ready`: Redis answers.
    Ready,
    /// `GET /metrics`: the Prometheus exposition.
    Metrics,
    /// `POST /api/v1/payments/callback`: the payment provider reports a payment.
    PaymentCallback,
    /// `GET /api/v1/activities/{id}/result`: "did I win?", the buyer's reservations.
    Result,
    /// `GET /`: the buyer page's list of activities on sale.
    Home,
    /// `GET /sale/{id}`: the buyer page of one activity.
    SalePage,
    /// `GET /assets/{file}`: the buyer page's script and style sheet.
    Asset,
}

impl Route {
    /// Every route, each at the index of its discriminant (the metrics index by it).
    pub const ALL: [Route; 14] = [
        Route::Buy,
        Route::Token,
        Route::Order,
        Route::UserOrders,
        Route::Activity,
        Route::Time,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::PaymentCallback,
        Route::Result,
        Route::Home,
        Route::SalePage,
        Route::Asset,
    ];

    /// The path, in axum's syntax (`{name}` for a path parameter); also the route's metric label.
    pub const fn path(self) -> &'static str {
        match self {
            Route::Buy => "/api/v1/buy",
            Route::Token => "/api/v1/token",
            Route::Order => "/api/v1/orders/{order_no}",
            Route::UserOrders => "/api/v1/orders",
            Route::Activity => "/api/v1/activities/{id}",
            Route::Time => "/api/v1/time",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
            Route::PaymentCallback => "/api/v1/payments/callback",
            Route::Result => "/api/v1/activities/{id}/result",
            Route::Home => "/",
            Route::SalePage => "/sale/{id}",
            Route::Asset => "/assets/{file}",
        }
    }

    /// The one method the route answers (any other is `method_not_allowed`).
    pub const fn method(self) -> Method {
        match self {
            Route::Buy | Route::Token | Route::PaymentCallback => Method::POST,
            Route::Order
            | Route::UserOrders
            | Route::Activity
            | Route::Time
            | Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::Result
            | Route::Home
            | Route::SalePage
            | Route::Asset => Method::GET,
        }
    }

    /// The route whose path (as axum's `MatchedPath` gives it) is `path`.
    pub fn of_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|route| route.path() == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once_at_its_index() {
        for (index, route) in Route::ALL.into_iter().enumerate() {
            assert_eq!(route as usize, index, "{route:?}");
            assert_eq!(Route::of_path(route.path()), Some(route));
        }
        assert_eq!(Route::of_path("/api/v1/orders/1"), None);
    }
}
