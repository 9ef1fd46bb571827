//! `GET /api/v1/activities/{id}/result`: "did I win?", for a buyer whose purchase was queued
//! or whose buy request timed out. The buyer is named as in the buy path: the `user_id`
//! query parameter under `auth.mode: none`, the JWT's subject or the gateway's header
//! otherwise.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::check_user_id;
use super::client_addr::Client;
use super::error::ApiError;
use super::identity::Caller;
use super::query::{buyer_orders, OrderView};
use super::state::AppState;
use crate::error::Error;
use crate::model::OrderStatus;
use crate::ops::{catalog, order};

/// Query of `GET /api/v1/activities/{id}/result`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultQuery {
    /// The buyer: required under `auth.mode: none`; otherwise optional, and then it must be
    /// the authenticated buyer.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// One order of the buyer, as the result shows it.
#[derive(Debug, Serialize)]
pub struct ResultOrder {
    /// The order number.
    pub order_no: String,
    /// `queued` (reserved, not yet in MySQL), `pending` (persisted, awaiting payment),
    /// `paid`, `cancelled` or `expired`.
    pub status: String,
    /// Whether the order is in MySQL.
    pub persisted: bool,
    /// The product.
    pub product_id: u64,
    /// Units.
    pub quantity: u32,
}

/// Answer of `GET /api/v1/activities/{id}/result`.
#[derive(Debug, Serialize)]
pub struct BuyerResult {
    /// The activity.
    pub activity_id: u64,
    /// The buyer.
    pub user_id: String,
    /// Whether the buyer holds units: an order queued, pending or paid.
    pub reserved: bool,
    /// Every order of the buyer in the activity, oldest first.
    pub orders: Vec<ResultOrder>,
}

impl From<OrderView> for ResultOrder {
    fn from(o: OrderView) -> Self {
        ResultOrder {
            persisted: o.status != "queued",
            order_no: o.order_no,
            status: o.status,
            product_id: o.product_id,
            quantity: o.quantity,
        }
    }
}

/// `GET /api/v1/activities/{id}/result[?user_id=U]`: whether the buyer has a reservation,
/// with each order's number and state. 404 for an unknown activity, 400 without a buyer.
/// Counted against the token requests' rate limits, per client address and per buyer (like a
/// token request, it proves no identity under `none`).
pub async fn result(
    State(state): State<AppState>,
    caller: Caller,
    client: Client,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ResultQuery>, QueryRejection>,
) -> Result<Json<BuyerResult>, ApiError> {
    let raw = path
        .map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let activity_id: u64 = raw
        .parse()
        .map_err(|_| ApiError::not_found(format!("no activity {raw:?}")))?;
    let Query(ResultQuery { user_id }) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let user_id = match (caller, user_id) {
        (Caller::User(me), None) => me,
        (caller, Some(named)) => {
            caller.may_act_as(&named)?;
            named
        }
        (Caller::Anyone, None) => return Err(ApiError::bad_request("missing query parameter `user_id`")),
    };
    check_user_id(&user_id)?;
    if !state.limits.allow_token_request(&user_id, client.0) {
        state.stats.rate_limited.increment(1);
        return Err(ApiError::too_many_requests());
    }
    match catalog::get_activity(&state.db, activity_id).await {
        Ok(_) => {}
        Err(Error::NotFound(_)) => return Err(ApiError::not_found(format!("no activity {activity_id}"))),
        Err(e) => {
            tracing::warn!(activity = activity_id, error = %e, "result: mysql failed");
            return Err(ApiError::database_unavailable());
        }
    }
    let orders: Vec<ResultOrder> = match all_persisted(&state, activity_id, &user_id).await? {
        Some(rows) => rows
            .into_iter()
            .map(|o| ResultOrder::from(OrderView::from(o)))
            .collect(),
        None => buyer_orders(&state, activity_id, &user_id)
            .await?
            .into_iter()
            .map(ResultOrder::from)
            .collect(),
    };
    let reserved = orders
        .iter()
        .any(|o| matches!(o.status.as_str(), "queued" | "pending" | "paid"));
    Ok(Json(BuyerResult {
        activity_id,
        user_id,
        reserved,
        orders,
    }))
}

/// The buyer's orders from MySQL alone, when they account for every unit Redis says the buyer
/// holds (so nothing of theirs waits in the stream); `None` when some may still be queued.
///
/// Polling buyers must not each read the whole unpersisted stream while consumers lag: the
/// per-product totals in Redis tell, in one round trip, whether that read is needed. Redis
/// is read first, so a reservation made after it is simply not shown yet, and an order
/// cancelled between the two reads makes the counts differ (the full read then decides).
async fn all_persisted(
    state: &AppState,
    activity_id: u64,
    user_id: &str,
) -> Result<Option<Vec<crate::model::Order>>, ApiError> {
    let keys = state.redis.keys();
    let mut conn = state.redis.conn();
    let products: Vec<u64> = redis::cmd("SMEMBERS")
        .arg(keys.products(activity_id))
        .query_async(&mut conn)
        .await
        .map_err(redis_down)?;
    let mut held: Vec<Option<u64>> = Vec::new();
    if !products.is_empty() {
        let mut pipe = redis::pipe();
        for p in &products {
            pipe.hget(keys.bought(activity_id, *p), user_id).hmget(
                keys.product(activity_id, *p),
                &["shards", crate::totals::IDS_BELOW_FIELD],
            );
        }
        type Read = (Option<u64>, (Option<u16>, Option<u64>));
        let read: Vec<Read> = pipe.query_async(&mut conn).await.map_err(redis_down)?;
        // A sharded product's total lives in the buyer's bucket, and a numbered buyer's may
        // live in the product's totals array (src/totals.rs): one more round trip there.
        let mut elsewhere = redis::pipe();
        let mut places = Vec::new();
        for (i, (p, (units, (shards, below)))) in products.iter().zip(&read).enumerate() {
            held.push(*units);
            if let Some(&n) = shards.as_ref().filter(|&&n| n > 1) {
                let k = crate::buckets::quota::bucket_of_user(user_id, n);
                elsewhere.hget(keys.bucket_bought(activity_id, k, *p), user_id);
                places.push(i);
            } else if let Some(offset) = crate::totals::array_offset(user_id, below.unwrap_or(0)) {
                // One GET of one field answers a one-value list: the total (0 when none).
                elsewhere
                    .cmd("BITFIELD_RO")
                    .arg(keys.totals(activity_id, *p))
                    .arg("GET")
                    .arg(crate::totals::TOTAL_TYPE)
                    .arg(offset);
                places.push(i);
            }
        }
        if !places.is_empty() {
            let units: Vec<redis::Value> = elsewhere.query_async(&mut conn).await.map_err(redis_down)?;
            for (i, units) in places.into_iter().zip(units) {
                held[i] = units_of(&units);
            }
        }
    }
    let filter = order::OrderFilter {
        activity_id,
        user_id: Some(user_id.to_string()),
        ..Default::default()
    };
    let rows = order::list(&state.db, &filter).await.map_err(|e| {
        tracing::warn!(activity = activity_id, error = %e, "result: mysql failed");
        ApiError::database_unavailable()
    })?;
    let mut in_mysql: HashMap<u64, u64> = HashMap::new();
    for row in rows
        .iter()
        .filter(|o| matches!(o.status, OrderStatus::Pending | OrderStatus::Paid))
    {
        *in_mysql.entry(row.product_id).or_default() += u64::from(row.quantity);
    }
    let in_redis: HashMap<u64, u64> = products
        .iter()
        .zip(held)
        .filter_map(|(p, units)| units.filter(|u| *u > 0).map(|u| (*p, u)))
        .collect();
    Ok((in_redis == in_mysql).then_some(rows))
}

fn redis_down(e: redis::RedisError) -> ApiError {
    tracing::warn!(error = %e, "result: redis failed");
    ApiError::redis_unavailable()
}

/// A buyer's units from an HGET of a bought hash (a number, or nothing) or a BITFIELD_RO GET of
/// a totals array (a list of one number): `None` when the buyer holds none.
fn units_of(value: &redis::Value) -> Option<u64> {
    match value {
        redis::Value::Array(items) => items.first().and_then(units_of),
        redis::Value::Int(n) => u64::try_from(*n).ok().filter(|&n| n > 0),
        other => redis::from_redis_value::<Option<u64>>(other.clone()).ok().flatten(),
    }
}
