//! Live stock changes while the sale runs: `stock add` (top up) and `stock sold-out`
//! (the source channel ran out). Redis changes through a script, so it is atomic with
//! `reserve.lua`; MySQL's `total_stock` follows in a transaction held open around the
//! script call, with a ledger row.

use serde::Serialize;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::redis_client::RedisClient;
use crate::scripts;

/// What a stock change did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StockChange {
    /// The product.
    pub product_id: u64,
    /// The activity.
    pub activity_id: u64,
    /// Units added (positive) or withdrawn (negative).
    pub delta: i64,
    /// `total_stock` in MySQL afterwards.
    pub total_stock: i64,
    /// Stock left on sale in Redis afterwards (`None`: not preheated).
    pub redis_stock: Option<i64>,
}

async fn lock_product(
    db: &Db,
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    product_id: u64,
) -> Result<(u64, i64, i64)> {
    sqlx::query_as(
        "SELECT activity_id, CAST(total_stock AS SIGNED), CAST(sold AS SIGNED) FROM products WHERE id = ? FOR UPDATE",
    )
    .bind(product_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| db.err(e))?
    .ok_or_else(|| Error::not_found(format!("product {product_id}")))
}

fn not_loaded(e: &redis::RedisError) -> bool {
    e.to_string().contains("NOT_LOADED")
}

/// Adds `units` to the product's stock, live in Redis and in MySQL, with an `adjust` ledger row.
pub async fn add(db: &Db, redis: &RedisClient, product_id: u64, units: u32) -> Result<StockChange> {
    if units == 0 {
        return Err(Error::invalid("units must be positive"));
    }
    let mut tx = db.pool().begin().await.map_err(|e| db.err(e))?;
    let (activity, total, _) = lock_product(db, &mut tx, product_id).await?;
    let mut conn = redis.conn();
    let redis_stock = match scripts::STOCK_ADD
        .key(redis.keys().product(activity, product_id))
        .arg(units)
        .invoke_async::<i64>(&mut conn)
        .await
    {
        Ok(stock) => Some(stock),
        Err(e) if not_loaded(&e) => None,
        Err(e) => return Err(redis.err(e)),
    };
    let written = write(
        db,
        &mut tx,
        activity,
        product_id,
        i64::from(units),
        "adjust",
        "stock add",
    )
    .await;
    let committed = match written {
        Ok(()) => tx.commit().await.map_err(|e| db.err(e)),
        Err(e) => Err(e),
    };
    if let Err(e) = committed {
        if redis_stock.is_some() {
            // Take the units back off sale: selling units MySQL does not know of could oversell.
            let undo: redis::RedisResult<i64> = scripts::STOCK_ADD
                .key(redis.keys().product(activity, product_id))
                .arg(-i64::from(units))
                .invoke_async(&mut conn)
                .await;
            if let Err(u) = undo {
                tracing::error!(error = %u, product = product_id, "could not undo the Redis top-up; run `seckill reconcile --fix`");
            }
        }
        return Err(e);
    }
    Ok(StockChange {
        product_id,
        activity_id: activity,
        delta: i64::from(units),
        total_stock: total + i64::from(units),
        redis_stock,
    })
}

/// Withdraws every unit of the product still on sale (Redis stock to 0, totals reduced by
/// as much in Redis and MySQL), with a `sold_out` ledger row. Units already reserved stay sold.
pub async fn sold_out(db: &Db, redis: &RedisClient, product_id: u64) -> Result<StockChange> {
    let mut tx = db.pool().begin().await.map_err(|e| db.err(e))?;
    let (activity, total, sold) = lock_product(db, &mut tx, product_id).await?;
    let mut conn = redis.conn();
    let (withdrawn, redis_stock) = match scripts::SOLD_OUT
        .key(redis.keys().product(activity, product_id))
        .invoke_async::<i64>(&mut conn)
        .await
    {
        Ok(w) => (w, Some(0)),
        Err(e) if not_loaded(&e) => (total - sold, None),
        Err(e) => return Err(redis.err(e)),
    };
    // Once Redis withdrew the units they must not come back; a MySQL failure here leaves
    // MySQL's total too high (reported by reconcile as drift), never stock on sale twice.
    write(
        db,
        &mut tx,
        activity,
        product_id,
        -withdrawn,
        "sold_out",
        "source sold out",
    )
    .await?;
    tx.commit().await.map_err(|e| db.err(e))?;
    Ok(StockChange {
        product_id,
        activity_id: activity,
        delta: -withdrawn,
        total_stock: total - withdrawn,
        redis_stock,
    })
}

async fn write(
    db: &Db,
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    activity: u64,
    product: u64,
    delta: i64,
    op: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE products SET total_stock = CAST(total_stock AS SIGNED) + ?, version = version + 1, \
         updated_at = updated_at WHERE id = ?",
    )
    .bind(delta)
    .bind(product)
    .execute(&mut **tx)
    .await
    .map_err(|e| db.err(e))?;
    sqlx::query("INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason) VALUES (?, ?, ?, ?, ?)")
        .bind(activity)
        .bind(product)
        .bind(op)
        .bind(delta)
        .bind(reason)
        .execute(&mut **tx)
        .await
        .map_err(|e| db.err(e))?;
    Ok(())
}
