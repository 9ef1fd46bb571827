//! Read-only endpoints: order state, activity page data, server time, health, readiness.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use redis::AsyncCommands;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::keys::parse_order_no;
use crate::model::Order;

/// Answer of `GET /api/v1/orders/{order_no}`.
#[derive(Debug, Serialize)]
pub struct OrderView {
    /// The order number.
    pub order_no: String,
    /// `queued` (reserved, not yet persisted), or the MySQL status: pending, paid, cancelled, expired.
    pub status: String,
    /// The activity.
    pub activity_id: u64,
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: String,
    /// Units.
    pub quantity: u32,
    /// Price per unit (decimal string).
    pub unit_price: String,
    /// Total (decimal string), once persisted.
    pub amount: Option<String>,
    /// When Redis reserved the units (ms since the epoch).
    pub reserved_ms: i64,
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        OrderView {
            order_no: o.order_no,
            status: o.status,
            activity_id: o.activity_id,
            product_id: o.product_id,
            user_id: o.user_id,
            quantity: o.quantity,
            unit_price: o.unit_price.to_string(),
            amount: Some(o.amount.to_string()),
            reserved_ms: o.reserved_at.timestamp_millis(),
        }
    }
}

fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p).map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn persisted(state: &AppState, order_no: &str) -> Result<Option<Order>, ApiError> {
    sqlx::query_as(
        "SELECT id, order_no, activity_id, product_id, CAST(user_id AS CHAR) AS user_id, quantity, unit_price, \
         amount, status, reserved_at, created_at, updated_at FROM orders WHERE order_no = ?",
    )
    .bind(order_no)
    .fetch_optional(state.db.pool())
    .await
    .map_err(|e| {
        tracing::warn!(order_no, error = %e, "order lookup: mysql failed");
        ApiError::busy("database unavailable, retry shortly")
    })
}

/// `GET /api/v1/orders/{order_no}`: MySQL first (the truth once persisted), then the
/// activity's stream (reserved, not yet persisted: `queued`).
pub async fn order(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let order_no = path_param(path)?;
    let Some((activity, entry_id)) = parse_order_no(&order_no) else {
        return Err(ApiError::not_found(format!("no order {order_no:?}")));
    };
    if let Some(order) = persisted(&state, &order_no).await? {
        return Ok(Json(order.into()));
    }
    let mut conn = state.redis.conn();
    let range: redis::RedisResult<redis::streams::StreamRangeReply> = conn
        .xrange(state.redis.keys().orders_stream(activity), entry_id, entry_id)
        .await;
    let range = range.map_err(|e| {
        tracing::warn!(activity, order_no, error = %e, "order lookup: redis failed");
        ApiError::busy("redis unavailable, retry shortly")
    })?;
    if let Some(entry) = range.ids.into_iter().next() {
        let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
        return Ok(Json(OrderView {
            order_no,
            status: "queued".into(),
            activity_id: activity,
            product_id: field("product").parse().unwrap_or(0),
            user_id: field("user"),
            quantity: field("quantity").parse().unwrap_or(0),
            unit_price: field("price"),
            amount: None,
            reserved_ms: field("reserved_ms").parse().unwrap_or(0),
        }));
    }
    // The consumer may have persisted and trimmed the entry between our two reads.
    if let Some(order) = persisted(&state, &order_no).await? {
        return Ok(Json(order.into()));
    }
    Err(ApiError::not_found(format!("no order {order_no}")))
}

/// A product as the buyer page shows it.
#[derive(Debug, Serialize)]
pub struct ProductView {
    /// Product id.
    pub id: u64,
    /// Name shown to buyers.
    pub name: String,
    /// Unit price (decimal string).
    pub price: String,
    /// Units left.
    pub remaining: i64,
    /// Units put on sale.
    pub total: i64,
    /// Most units per user.
    pub per_user_limit: i64,
    /// Most units per order.
    pub max_per_order: i64,
}

/// Answer of `GET /api/v1/activities/{id}`.
#[derive(Debug, Serialize)]
pub struct ActivityView {
    /// Activity id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// draft, online, paused or ended.
    pub status: String,
    /// Sale opens (ms since the epoch).
    pub start_ms: i64,
    /// Sale closes (ms since the epoch).
    pub end_ms: i64,
    /// Redis's clock: the one clock every server shares (ms since the epoch).
    pub server_time_ms: i64,
    /// Seconds until the sale opens (0 once open), for the countdown.
    pub starts_in_secs: i64,
    /// The products with their remaining stock.
    pub products: Vec<ProductView>,
}

/// Answer of `GET /api/v1/time`.
#[derive(Debug, Serialize)]
pub struct TimeView {
    /// Redis's clock, ms since the epoch.
    pub server_time_ms: i64,
}

fn redis_down(e: redis::RedisError) -> ApiError {
    tracing::warn!(error = %e, "redis failed");
    ApiError::busy("redis unavailable, retry shortly")
}

fn millis((secs, micros): (i64, i64)) -> i64 {
    secs * 1000 + micros / 1000
}

/// `GET /api/v1/activities/{id}`.
pub async fn activity(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ActivityView>, ApiError> {
    let raw = path_param(path)?;
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::not_found(format!("no activity {raw:?}")))?;
    let keys = state.redis.keys();
    let mut conn = state.redis.conn();
    let (hash, product_ids, time): (HashMap<String, String>, Vec<u64>, (i64, i64)) = redis::pipe()
        .hgetall(keys.activity(id))
        .smembers(keys.products(id))
        .cmd("TIME")
        .query_async(&mut conn)
        .await
        .map_err(redis_down)?;
    if hash.is_empty() {
        return Err(ApiError::not_found(format!("activity {id} is not on sale")));
    }
    let mut pipe = redis::pipe();
    for p in &product_ids {
        pipe.hmget(
            keys.product(id, *p),
            &["stock", "total", "limit", "max_per_order", "price", "name"],
        );
    }
    type Row = (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = pipe.query_async(&mut conn).await.map_err(redis_down)?;
    let mut products: Vec<ProductView> = product_ids
        .iter()
        .zip(rows)
        .map(|(id, (stock, total, limit, max, price, name))| ProductView {
            id: *id,
            name: name.unwrap_or_default(),
            price: price.unwrap_or_default(),
            remaining: stock.unwrap_or(0),
            total: total.unwrap_or(0),
            per_user_limit: limit.unwrap_or(0),
            max_per_order: max.unwrap_or(0),
        })
        .collect();
    products.sort_by_key(|p| p.id);
    let num = |k: &str| hash.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let (start_ms, end_ms, now) = (num("start_ms"), num("end_ms"), millis(time));
    Ok(Json(ActivityView {
        id,
        name: hash.get("name").cloned().unwrap_or_default(),
        status: hash.get("status").cloned().unwrap_or_default(),
        start_ms,
        end_ms,
        server_time_ms: now,
        starts_in_secs: ((start_ms - now).max(0) + 999) / 1000,
        products,
    }))
}

/// `GET /api/v1/time`: Redis's clock.
pub async fn time(State(state): State<AppState>) -> Result<Json<TimeView>, ApiError> {
    let mut conn = state.redis.conn();
    let t: (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.map_err(redis_down)?;
    Ok(Json(TimeView {
        server_time_ms: millis(t),
    }))
}

/// `GET /health`: the process is alive.
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /ready`: Redis answers a PING in time (503 `busy` otherwise).
pub async fn ready(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let mut conn = state.redis.conn();
    let ping = tokio::time::timeout(
        state.config.redis_response_timeout(),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    match ping {
        Ok(Ok(_)) => Ok("ready"),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "redis unreachable",
        )),
    }
}
