//! Read-only endpoints: order state, activity page data, server time, health, readiness.

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::state::AppState;
use crate::keys::{parse_order_no, parse_purchase_no};
use crate::model::Order;
use crate::ops::order;
use crate::reservation::{self, parse_id, Reservation};
use crate::token::unix_now;

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
            status: o.status.to_string(),
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

/// A reservation not yet in MySQL, from its stream entry.
fn queued(r: Reservation) -> OrderView {
    OrderView {
        order_no: r.order_no,
        status: "queued".into(),
        activity_id: r.activity_id,
        product_id: r.product_id,
        user_id: r.user_id,
        quantity: r.quantity,
        unit_price: r.price.to_string(),
        amount: None,
        reserved_ms: r.reserved_at.timestamp_millis(),
    }
}

fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p).map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn persisted(state: &AppState, order_no: &str) -> Result<Option<Order>, ApiError> {
    order::find(&state.db, order_no).await.map_err(|e| {
        tracing::warn!(order_no, error = %e, "order lookup: mysql failed");
        ApiError::database_unavailable()
    })
}

/// `GET /api/v1/orders/{order_no}`: MySQL first (the truth once persisted), then the
/// activity's stream (reserved, not yet persisted: `queued`).
pub async fn order(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let order_no = path_param(path)?;
    let Some((activity, _)) = parse_order_no(&order_no) else {
        return Err(ApiError::not_found(format!("no order {order_no:?}")));
    };
    if let Some(order) = persisted(&state, &order_no).await? {
        return Ok(Json(order.into()));
    }
    let queued_entry = reservation::lookup(&state.redis, &order_no).await.map_err(|e| {
        tracing::warn!(activity, order_no, error = %e, "order lookup: redis failed");
        ApiError::redis_unavailable()
    })?;
    if let Some(r) = queued_entry {
        return Ok(Json(OrderView { order_no, ..queued(r) }));
    }
    // The consumer may have persisted and trimmed the entry between our two reads.
    if let Some(order) = persisted(&state, &order_no).await? {
        return Ok(Json(order.into()));
    }
    Err(ApiError::not_found(format!("no order {order_no}")))
}

/// Query of `GET /api/v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserOrdersQuery {
    /// The activity.
    pub activity_id: u64,
    /// The buyer.
    pub user_id: String,
}

/// Answer of `GET /api/v1/orders`.
#[derive(Debug, Serialize)]
pub struct UserOrders {
    /// The activity.
    pub activity_id: u64,
    /// The buyer.
    pub user_id: String,
    /// Every order of the buyer in the activity, oldest first: persisted ones with their
    /// MySQL status, the others `queued`.
    pub orders: Vec<OrderView>,
}

/// `GET /api/v1/orders?activity_id=A&user_id=U` with `Authorization: Bearer TOKEN` (the
/// user's purchase token for the activity): every order of the user in the activity. This
/// is how a buyer answered `unknown_outcome` learns whether the purchase was made.
///
/// The orders are read by [`buyer_orders`].
pub async fn orders_of_user(
    State(state): State<AppState>,
    query: Result<Query<UserOrdersQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<UserOrders>, ApiError> {
    let Query(UserOrdersQuery { activity_id, user_id }) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::invalid_token)?;
    if !state.signer.verify(activity_id, &user_id, token.trim(), unix_now()) {
        return Err(ApiError::invalid_token());
    }
    if !state.limits.allow_user(&user_id) {
        state.stats.rate_limited.increment(1);
        return Err(ApiError::too_many_requests());
    }
    let orders = buyer_orders(&state, activity_id, &user_id).await?;
    Ok(Json(UserOrders {
        activity_id,
        user_id,
        orders,
    }))
}

/// Every order of `user_id` in `activity_id`, oldest first: persisted ones with their MySQL
/// status, the others `queued`.
///
/// Read in an order that misses none: first Redis (the reservations not yet persisted: the
/// stream from its oldest unacknowledged entry on, and the dead-letter stream), then MySQL.
/// An entry persisted meanwhile is then found in MySQL; MySQL's row wins over the entry.
pub async fn buyer_orders(state: &AppState, activity_id: u64, user_id: &str) -> Result<Vec<OrderView>, ApiError> {
    // Keyed by (entry ms, entry seq, index): entry order, then the purchase's place in it.
    let mut found: BTreeMap<(u64, u64, u32), OrderView> = BTreeMap::new();
    let group = &state.config.consumer.group;
    for r in reservation::unpersisted(&state.redis, activity_id, group)
        .await
        .map_err(|e| {
            tracing::warn!(activity = activity_id, error = %e, "orders of user: redis failed");
            ApiError::redis_unavailable()
        })?
    {
        if r.user_id == user_id {
            let (ms, seq) = parse_id(&r.entry_id);
            found.insert((ms, seq, r.index), queued(r));
        }
    }
    let filter = order::OrderFilter {
        activity_id,
        user_id: Some(user_id.to_string()),
        ..Default::default()
    };
    let rows = order::list(&state.db, &filter).await.map_err(|e| {
        tracing::warn!(activity = activity_id, error = %e, "orders of user: mysql failed");
        ApiError::database_unavailable()
    })?;
    for row in rows {
        if let Some((_, id, index)) = parse_purchase_no(&row.order_no) {
            let (ms, seq) = parse_id(id);
            found.insert((ms, seq, index), row.into());
        }
    }
    Ok(found.into_values().collect())
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
    ApiError::redis_unavailable()
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
            &["stock", "total", "limit", "max_per_order", "price", "name", "shards"],
        );
    }
    type Row = (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<u16>,
    );
    let mut rows: Vec<Row> = pipe.query_async(&mut conn).await.map_err(redis_down)?;
    // A sharded product's units are in its buckets.
    for (p, row) in product_ids.iter().zip(rows.iter_mut()) {
        if let (None, Some(shards @ 2..)) = (row.0, row.6) {
            let (stock, _) = crate::buckets::stock::totals(&state.redis, id, *p, shards)
                .await
                .map_err(|e| {
                    tracing::warn!(activity = id, product = p, error = %e, "activity view: buckets unreadable");
                    ApiError::redis_unavailable()
                })?;
            row.0 = Some(stock);
        }
    }
    let mut products: Vec<ProductView> = product_ids
        .iter()
        .zip(rows)
        .map(|(id, (stock, total, limit, max, price, name, _))| ProductView {
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
