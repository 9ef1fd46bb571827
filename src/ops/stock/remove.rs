//! `stock remove`: a number of units taken off sale, with the steps and promises of the
//! other live changes (see the parent module).

use redis::AsyncCommands;

use super::{activity_and_shards, begin_change, finish, lock_product, pending_hint, sharded, Answer, StockChange};
use crate::buckets::stock::live::Change;
use crate::db::Db;
use crate::error::{DbContext, Error, RedisContext, Result};
use crate::ops::stock::Applied;
use crate::redis_client::RedisClient;
use crate::scripts;

/// Takes `units` off sale (never units already reserved): Redis first, then MySQL's total
/// shrinks by as many, with a `remove` ledger row. Refused, with nothing changed, when fewer
/// units are on sale (or, for a product not in Redis, left unsold in MySQL). A product with
/// buckets gives them from its fullest buckets; should buyers take some of them meanwhile,
/// fewer are taken, and the answer says how many.
pub async fn remove(db: &Db, redis: &RedisClient, product_id: u64, units: u32) -> Result<StockChange> {
    if units == 0 {
        return Err(Error::invalid("units must be at least 1"));
    }
    let units = i64::from(units);
    let (activity, shards) = activity_and_shards(db, redis, product_id).await?;
    let on_sale = if shards > 1 {
        Some(
            crate::buckets::stock::totals(redis, activity, product_id, shards)
                .await?
                .0,
        )
    } else {
        redis
            .conn()
            .hget::<_, _, Option<i64>>(redis.keys().product(activity, product_id), "stock")
            .await
            .at(redis)?
    };
    let mut tx = db.pool().begin().await.at(db)?;
    let (activity, total, sold) = lock_product(db, &mut tx, product_id).await?;
    let available = on_sale.unwrap_or(total - sold);
    if available < units {
        return Err(Error::refused(format!(
            "product {product_id}: only {available} unit(s) on sale, {units} asked; nothing taken"
        )));
    }
    let ledger_id = begin_change(db, &mut tx, activity, product_id, "remove", 0, "stock remove").await?;
    sqlx::query("UPDATE stock_ledger SET delta = ? WHERE id = ?")
        .bind(-units)
        .bind(ledger_id)
        .execute(&mut *tx)
        .await
        .at(db)?;
    tx.commit().await.at(db)?;

    let keys = redis.keys();
    let applied = if shards > 1 {
        sharded(redis, activity, product_id, ledger_id, Change::Remove(units as u64), "").await
    } else {
        let reply = scripts::STOCK_REMOVE
            .key(keys.product(activity, product_id))
            .key(keys.stock_ops(activity))
            .arg(ledger_id)
            .arg(units)
            .invoke_async::<i64>(&mut redis.conn())
            .await;
        Answer::of(redis, reply)
    };
    let applied = match applied {
        Answer::Value(w) => Applied::Units(w),
        Answer::NotLoaded => Applied::NotLoaded,
        Answer::Voided => Applied::Void,
        // Withdrawn or not, nothing extra is on sale; reconcile completes or undoes the change.
        Answer::Failed(e) => return Err(Error::Internal(format!("{}: {e}", pending_hint(ledger_id, activity)))),
    };
    let finished = finish(db, ledger_id, product_id, "remove", applied)
        .await
        .map_err(|e| Error::Internal(format!("{}: {e}", pending_hint(ledger_id, activity))))?;
    if applied == Applied::Void {
        return Err(Error::refused(format!(
            "product {product_id}: fewer than {units} unit(s) were on sale when Redis was asked (bought meanwhile), \
             or reconcile settled stock change #{ledger_id} as undone; nothing taken"
        )));
    }
    let redis_stock = match applied {
        Applied::NotLoaded => None,
        _ if shards > 1 => Some(
            crate::buckets::stock::totals(redis, activity, product_id, shards)
                .await?
                .0,
        ),
        _ => redis
            .conn()
            .hget::<_, _, Option<i64>>(keys.product(activity, product_id), "stock")
            .await
            .at(redis)?,
    };
    Ok(StockChange {
        product_id,
        activity_id: activity,
        delta: -finished.withdrawn,
        total_stock: finished.total_stock,
        redis_stock,
    })
}
