//! Order lifecycle: `pending` -> `paid` | `cancelled` | `expired`.
//!
//! MySQL decides every state change with a conditional UPDATE (only `pending` moves), so
//! when cancel, expire and pay race, exactly one wins. A winner that frees units also
//! takes them off `products.sold` and writes a `release` ledger row in the same
//! transaction; only after the commit does `release.lua` put them back on sale, and that
//! script is idempotent (released set), so a retry or reconcile can finish the job safely.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{MySql, QueryBuilder};

use crate::db::Db;
use crate::error::{DbContext, Error, RedisContext, Result};
use crate::model::{Order, OrderStatus};
use crate::redis_client::RedisClient;
use crate::scripts;

/// The `orders` columns an [`Order`] is read from, for `SELECT {ORDER_COLUMNS} FROM orders ...`.
/// `user_id` is cast for sqlx's sake: see [`crate::user_id`] on the binary collation.
pub const ORDER_COLUMNS: &str = "id, order_no, activity_id, product_id, CAST(user_id AS CHAR) AS user_id, quantity, \
     unit_price, amount, status, reserved_at, created_at, updated_at";
/// Attempts of the optimistic update of `products.sold`.
const ATTEMPTS: usize = 8;

/// One order by number; `None` when MySQL has no such order (yet: a reservation still
/// queued has none).
pub async fn find(db: &Db, order_no: &str) -> Result<Option<Order>> {
    sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_no = ?"))
        .bind(order_no)
        .fetch_optional(db.pool())
        .await
        .at(db)
}

/// One order by number.
pub async fn get(db: &Db, order_no: &str) -> Result<Order> {
    find(db, order_no).await?.ok_or_else(|| {
        Error::not_found(format!(
            "order {order_no} (a reservation still queued has no order yet)"
        ))
    })
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// The activity.
    pub activity_id: u64,
    /// Only this buyer.
    pub user_id: Option<String>,
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// At most this many, oldest first.
    pub limit: Option<u64>,
}

/// Orders of an activity, oldest first.
pub async fn list(db: &Db, filter: &OrderFilter) -> Result<Vec<Order>> {
    let mut q = QueryBuilder::<MySql>::new(format!("SELECT {ORDER_COLUMNS} FROM orders WHERE activity_id = "));
    q.push_bind(filter.activity_id);
    if let Some(user) = &filter.user_id {
        q.push(" AND user_id = ").push_bind(user);
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    q.push(" ORDER BY id");
    if let Some(limit) = filter.limit {
        q.push(" LIMIT ").push_bind(limit);
    }
    q.build_query_as().fetch_all(db.pool()).await.at(db)
}

/// What a state change did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transition {
    /// The order.
    pub order_no: String,
    /// Status before.
    pub from: OrderStatus,
    /// Status after.
    pub to: OrderStatus,
    /// This call changed it (false: it already was in the target state).
    pub changed: bool,
    /// Units went back on sale in Redis now (`None`: nothing to return; `Some(false)`: the
    /// Redis step failed or was already done, and reconcile will finish it).
    pub released: Option<bool>,
}

/// Marks a pending order paid. Paying a paid order again is a no-op; a cancelled or
/// expired order cannot be paid (its units may already be sold to someone else).
pub async fn pay(db: &Db, order_no: &str) -> Result<Transition> {
    let updated = sqlx::query("UPDATE orders SET status = 'paid' WHERE order_no = ? AND status = 'pending'")
        .bind(order_no)
        .execute(db.pool())
        .await
        .at(db)?;
    if updated.rows_affected() == 1 {
        return Ok(Transition {
            order_no: order_no.into(),
            from: OrderStatus::Pending,
            to: OrderStatus::Paid,
            changed: true,
            released: None,
        });
    }
    let order = get(db, order_no).await?;
    match order.status {
        OrderStatus::Paid => Ok(Transition {
            order_no: order_no.into(),
            from: OrderStatus::Paid,
            to: OrderStatus::Paid,
            changed: false,
            released: None,
        }),
        other => Err(Error::refused(format!(
            "order {order_no} is {other} and cannot be paid"
        ))),
    }
}

/// Cancels a pending order and returns its units to stock (and the user's quota).
pub async fn cancel(db: &Db, redis: &RedisClient, order_no: &str) -> Result<Transition> {
    let order = get(db, order_no).await?;
    match release(db, redis, &order, OrderStatus::Cancelled, "cancel").await? {
        Some(t) => Ok(t),
        None => {
            let now = get(db, order_no).await?;
            if now.status == OrderStatus::Cancelled {
                return Ok(Transition {
                    order_no: order_no.into(),
                    from: OrderStatus::Cancelled,
                    to: OrderStatus::Cancelled,
                    changed: false,
                    released: None,
                });
            }
            Err(Error::refused(format!(
                "order {order_no} is {} and cannot be cancelled",
                now.status
            )))
        }
    }
}

/// What `expire` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ExpireReport {
    /// Pending orders found past the window.
    pub candidates: u64,
    /// Orders this run expired.
    pub expired: Vec<Transition>,
    /// Orders paid or cancelled meanwhile (lost the race; fine).
    pub skipped: u64,
}

/// Expires pending orders reserved more than `older_than` ago (optionally of one
/// activity), returning their units to stock. Safe to run from cron while orders are paid.
pub async fn expire(db: &Db, redis: &RedisClient, older_than: Duration, activity: Option<u64>) -> Result<ExpireReport> {
    let mut q = QueryBuilder::<MySql>::new(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'pending' AND reserved_at < NOW(3) - INTERVAL "
    ));
    q.push_bind(older_than.as_millis() as i64).push(" * 1000 MICROSECOND");
    if let Some(a) = activity {
        q.push(" AND activity_id = ").push_bind(a);
    }
    q.push(" ORDER BY id");
    let orders: Vec<Order> = q.build_query_as().fetch_all(db.pool()).await.at(db)?;
    let mut report = ExpireReport {
        candidates: orders.len() as u64,
        ..Default::default()
    };
    let bar = crate::progress::bar(orders.len() as u64, "expire");
    for order in &orders {
        match release(db, redis, order, OrderStatus::Expired, "expire").await? {
            Some(t) => report.expired.push(t),
            None => report.skipped += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

/// Moves `order` from pending to `to` and takes its units off `products.sold`, in one
/// transaction; then returns them in Redis. `None` when the order was no longer pending.
async fn release(
    db: &Db,
    redis: &RedisClient,
    order: &Order,
    to: OrderStatus,
    why: &str,
) -> Result<Option<Transition>> {
    let mut won = false;
    for attempt in 0..ATTEMPTS {
        match take_off_sold(db, order, to, why).await {
            Ok(Some(true)) => {
                won = true;
                break;
            }
            Ok(Some(false)) => {}
            Ok(None) => return Ok(None),
            Err(e) if crate::db::is_transaction_conflict(&e) => {}
            Err(e) => return Err(db.err(e)),
        }
        tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
    }
    if !won {
        return Err(Error::Internal(format!(
            "order {}: products.sold of product {} kept changing (or is below the order's units); nothing changed",
            order.order_no, order.product_id
        )));
    }
    let released = match return_units(
        redis,
        order.activity_id,
        order.product_id,
        &order.order_no,
        &order.user_id,
        order.quantity,
    )
    .await
    {
        Ok(r) => (r >= 0).then_some(r == 1),
        Err(e) => {
            tracing::warn!(order = %order.order_no, error = %e, "units not yet back on sale; `seckill reconcile --fix` finishes it");
            Some(false)
        }
    };
    Ok(Some(Transition {
        order_no: order.order_no.clone(),
        from: OrderStatus::Pending,
        to,
        changed: true,
        released,
    }))
}

/// One attempt of [`release`]'s transaction: the order from pending to `to`, its units off
/// `products.sold` (optimistic, on `version`) and a `release` ledger row. `None` when the order
/// is no longer pending; `Some(false)` when the product's version moved (nothing written: try
/// again); a conflict MySQL reports as an error is the caller's to retry too.
async fn take_off_sold(db: &Db, order: &Order, to: OrderStatus, why: &str) -> sqlx::Result<Option<bool>> {
    let mut tx = db.pool().begin().await?;
    let updated = sqlx::query("UPDATE orders SET status = ? WHERE order_no = ? AND status = 'pending'")
        .bind(to.as_str())
        .bind(&order.order_no)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() != 1 {
        return Ok(None);
    }
    let version: u64 = sqlx::query_scalar("SELECT version FROM products WHERE id = ?")
        .bind(order.product_id)
        .fetch_one(&mut *tx)
        .await?;
    let product = sqlx::query(
        "UPDATE products SET sold = sold - ?, version = version + 1, updated_at = updated_at \
         WHERE id = ? AND version = ? AND sold >= ?",
    )
    .bind(order.quantity)
    .bind(order.product_id)
    .bind(version)
    .bind(order.quantity)
    .execute(&mut *tx)
    .await?;
    if product.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(Some(false));
    }
    sqlx::query(
        "INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason, ref) VALUES (?, ?, 'release', ?, ?, ?)",
    )
    .bind(order.activity_id)
    .bind(order.product_id)
    .bind(i64::from(order.quantity))
    .bind(why)
    .bind(&order.order_no)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(true))
}

/// Runs `release.lua` for a cancelled or expired order: 1 released now, 0 already, -1 not loaded.
/// A sharded product's units go back into one of its buckets ([`crate::buckets::stock::release`]).
pub async fn return_units(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    order_no: &str,
    user: &str,
    quantity: u32,
) -> Result<i64> {
    let shards = crate::buckets::stock::shards_of(redis, activity, product).await?;
    if shards > 1 {
        return crate::buckets::stock::release(redis, activity, product, shards, order_no, user, quantity).await;
    }
    let keys = redis.keys();
    let mut conn = redis.conn();
    scripts::RELEASE
        .key(keys.released(activity))
        .key(keys.product(activity, product))
        .key(keys.bought(activity, product))
        .key(keys.totals(activity, product))
        .arg(order_no)
        .arg(user)
        .arg(quantity)
        .invoke_async(&mut conn)
        .await
        .at(redis)
}

/// A payment the provider reports (`POST /api/v1/payments/callback`).
#[derive(Debug, Clone)]
pub struct PaymentNotice {
    /// The order paid for.
    pub order_no: String,
    /// What the buyer paid.
    pub amount: Decimal,
    /// The provider's id of the payment.
    pub transaction_id: String,
}

/// What [`settle`] made of a [`PaymentNotice`]; each is also the `outcome` of its
/// `payment_events` row.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// The order was pending and is now paid by this transaction.
    Paid,
    /// The order was already paid by this transaction (a repeated callback): nothing changed.
    AlreadyPaid,
    /// The amount is not the order's: nothing changed.
    AmountMismatch {
        /// The order's amount.
        expected: Decimal,
    },
    /// The order expired (or was cancelled) before the payment arrived: it stays so, and the
    /// provider must refund.
    TooLate(OrderStatus),
    /// The order is paid by another transaction: this one must be refunded.
    PaidByOther,
    /// The transaction already paid another order.
    TransactionReused,
    /// No such order.
    UnknownOrder,
}

impl Settlement {
    /// The name recorded in `payment_events.outcome`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Settlement::Paid => "paid",
            Settlement::AlreadyPaid => "duplicate",
            Settlement::AmountMismatch { .. } => "amount_mismatch",
            Settlement::TooLate(OrderStatus::Cancelled) => "cancelled",
            Settlement::TooLate(_) => "expired",
            Settlement::PaidByOther => "paid_by_other",
            Settlement::TransactionReused => "transaction_reused",
            Settlement::UnknownOrder => "unknown_order",
        }
    }
}

/// Applies a provider's payment to its order, once, and records the callback in
/// `payment_events` in the same transaction.
///
/// The order row is locked (`FOR UPDATE`) before its status is read, and `cancel`/`expire`
/// change it under the same lock, so whichever commits first wins: a payment that arrives
/// while an expiry holds the row waits for it and then finds the order expired. A pending
/// order is paid even past `payment.timeout` as long as no expiry has committed: the buyer
/// did pay, and its units are still reserved for them.
pub async fn settle(db: &Db, notice: &PaymentNotice) -> Result<Settlement> {
    let mut tx = db.pool().begin().await.at(db)?;
    let row: Option<(String, Decimal, Option<String>)> =
        sqlx::query_as("SELECT status, amount, transaction_id FROM orders WHERE order_no = ? FOR UPDATE")
            .bind(&notice.order_no)
            .fetch_optional(&mut *tx)
            .await
            .at(db)?;
    let settlement = match row {
        None => Settlement::UnknownOrder,
        Some((status, expected, paid_by)) => {
            let status: OrderStatus = status
                .parse()
                .map_err(|e| Error::Internal(format!("order {}: {e}", notice.order_no)))?;
            match status {
                OrderStatus::Paid if paid_by.as_deref() == Some(notice.transaction_id.as_str()) => {
                    Settlement::AlreadyPaid
                }
                OrderStatus::Paid => Settlement::PaidByOther,
                OrderStatus::Cancelled | OrderStatus::Expired => Settlement::TooLate(status),
                OrderStatus::Pending if notice.amount != expected => Settlement::AmountMismatch { expected },
                OrderStatus::Pending => {
                    let paid = sqlx::query(
                        "UPDATE orders SET status = 'paid', transaction_id = ? WHERE order_no = ? AND status = 'pending'",
                    )
                    .bind(&notice.transaction_id)
                    .bind(&notice.order_no)
                    .execute(&mut *tx)
                    .await;
                    match paid {
                        Ok(_) => Settlement::Paid,
                        // The unique key: this transaction already paid another order.
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            // Rolled back to drop the failed statement's effects; the event is
                            // then recorded in a fresh transaction below.
                            tx.rollback().await.at(db)?;
                            tx = db.pool().begin().await.at(db)?;
                            Settlement::TransactionReused
                        }
                        Err(e) => return Err(e).at(db),
                    }
                }
            }
        }
    };
    sqlx::query("INSERT INTO payment_events (order_no, transaction_id, amount, outcome) VALUES (?, ?, ?, ?)")
        .bind(&notice.order_no)
        .bind(&notice.transaction_id)
        .bind(notice.amount)
        .bind(settlement.as_str())
        .execute(&mut *tx)
        .await
        .at(db)?;
    tx.commit().await.at(db)?;
    Ok(settlement)
}
