//! `reconcile --fix`: the safe repairs, in an order where each builds on the last:
//! settle stock changes left pending, persist lost reservations, finish half-done stock
//! returns and moves left behind, then set counters from the (now complete) orders. Counter writes are
//! compare-and-set against a view of Redis taken atomically with purchases (see
//! [`gather::snapshot`]), so a purchase racing the repair makes it skip (and say so) rather
//! than be overwritten. Dead-lettered reservations count as held: never repaired away.
//! Products whose stock is in buckets are repaired by [`super::sharded`].

use std::time::Duration;

use super::gather::{self, Snapshot};
use super::{analyse, Analysis, Class, ProductLine};
use crate::buckets::quota::bucket_of_user;
use crate::db::Db;
use crate::error::{DbContext, RedisContext, Result};
use crate::model::OrderStatus;
use crate::ops::order;
use crate::ops::stock;
use crate::persist;
use crate::redis_client::RedisClient;
use crate::reservation::Reservation;
use crate::scripts;

/// Makes every safe repair of `first` (found in `snap`), then judges the activity again and
/// sets the counters that still disagree. Returns what it did, one line per repair.
pub(super) async fn repair(
    db: &Db,
    redis: &RedisClient,
    group: &str,
    activity: u64,
    snap: &Snapshot,
    first: &Analysis,
    grace: Duration,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for change in &first.unsettled {
        done.push(stock::settle(db, redis, activity, change).await?);
    }
    done.extend(persist_lost(db, redis, &first.lost).await?);
    done.extend(release_unreleased(db, redis, activity, snap).await?);
    done.extend(super::sharded::finish_returns(redis, activity, snap).await?);
    done.extend(super::sharded::finish_moves(redis, activity, snap, grace).await?);

    let now = gather::snapshot(db, redis, group, activity).await?;
    let Analysis {
        findings,
        lines,
        expected,
        ..
    } = analyse(&now, activity, grace);
    let bar = crate::progress::bar(lines.len() as u64, "products");
    for line in &lines {
        bar.inc(1);
        if line.mysql_sold != line.order_units {
            done.push(set_mysql_sold(db, activity, &now, line).await?);
        }
        if now.sharded.contains_key(&line.product_id) {
            done.extend(super::sharded::repair_product(db, redis, activity, &now, line).await?);
        } else {
            done.extend(set_redis_counters(db, redis, activity, line).await?);
        }
    }
    bar.finish_and_clear();
    for f in findings.iter().filter(|f| f.class == Class::QuotaDrift) {
        let Some(product) = f.product_id else { continue };
        let want = expected.get(&(product, f.subject.clone())).copied().unwrap_or(0);
        done.push(set_units_held(db, redis, activity, &now, product, &f.subject, want).await?);
    }
    Ok(done)
}

/// Persists the lost reservations as orders (a duplicate is counted, not inserted twice).
async fn persist_lost(db: &Db, redis: &RedisClient, lost: &[Reservation]) -> Result<Vec<String>> {
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    let p = persist::persist(db, redis, lost, "reconcile: lost reservation").await?;
    let mut done = vec![format!(
        "persisted {} lost reservation(s) ({} unit(s)); {} already had an order",
        p.inserted, p.units, p.duplicates
    )];
    for (order_no, why) in p.rejected {
        done.push(format!("could not persist {order_no}: {why}"));
    }
    Ok(done)
}

/// Puts the units of cancelled and expired orders back on sale where Redis never got them,
/// with a ledger row each. Its delta is 0: the order's own `release` row already counted
/// the units when MySQL gave them back; this row records that Redis caught up.
async fn release_unreleased(db: &Db, redis: &RedisClient, activity: u64, snap: &Snapshot) -> Result<Vec<String>> {
    let mut unreleased: Vec<_> = snap
        .orders
        .iter()
        .filter(|(no, (p, _, _, st))| {
            matches!(st, OrderStatus::Cancelled | OrderStatus::Expired)
                && snap.redis_products.contains_key(p)
                && !snap.released.contains(*no)
        })
        .collect();
    unreleased.sort_by(|a, b| a.0.cmp(b.0));
    let mut done = Vec::new();
    for (order_no, (product, user, quantity, _)) in unreleased {
        let r = order::return_units(redis, activity, *product, order_no, user, *quantity).await?;
        if r != 1 {
            done.push(format!("order {order_no}: already back on sale"));
            continue;
        }
        let what = format!("order {order_no}: {quantity} unit(s) back on sale");
        let mut tx = db.pool().begin().await.at(db)?;
        ledger(
            db,
            &mut tx,
            activity,
            *product,
            0,
            &format!("reconcile: {what} in Redis"),
        )
        .await?;
        tx.commit().await.at(db)?;
        done.push(what);
    }
    Ok(done)
}

/// Sets `products.sold` to the units of the product's pending and paid orders, unless the
/// row changed since `now` was read.
async fn set_mysql_sold(db: &Db, activity: u64, now: &Snapshot, line: &ProductLine) -> Result<String> {
    let version = now
        .products
        .iter()
        .find(|p| p.id == line.product_id)
        .map(|p| p.version)
        .unwrap_or(0);
    let mut tx = db.pool().begin().await.at(db)?;
    let updated = sqlx::query(
        "UPDATE products SET sold = (SELECT COALESCE(SUM(quantity), 0) FROM orders \
         WHERE product_id = ? AND status IN ('pending', 'paid')), version = version + 1, updated_at = updated_at \
         WHERE id = ? AND version = ?",
    )
    .bind(line.product_id)
    .bind(line.product_id)
    .bind(version)
    .execute(&mut *tx)
    .await
    .at(db)?;
    if updated.rows_affected() != 1 {
        return Ok(format!(
            "product {}: products.sold changed meanwhile; run reconcile again",
            line.product_id
        ));
    }
    ledger(
        db,
        &mut tx,
        activity,
        line.product_id,
        line.mysql_sold - line.order_units,
        &format!("reconcile: products.sold {} -> {}", line.mysql_sold, line.order_units),
    )
    .await?;
    tx.commit().await.at(db)?;
    Ok(format!(
        "product {}: products.sold {} -> {}",
        line.product_id, line.mysql_sold, line.order_units
    ))
}

/// Sets Redis stock, sold and total to [`ProductLine::redis_target`] (compare-and-set
/// against the view read); `None` when the product is not preheated or already right.
async fn set_redis_counters(db: &Db, redis: &RedisClient, activity: u64, line: &ProductLine) -> Result<Option<String>> {
    let Some((stock, sold, total)) = line.redis else {
        return Ok(None);
    };
    let (want_stock, want_sold, want_total) = line.redis_target();
    if (stock, sold, total) == (want_stock, want_sold, want_total) {
        return Ok(None);
    }
    if want_stock < 0 {
        return Ok(Some(format!(
            "product {}: NOT fixed: units held ({want_sold}) exceed total stock ({want_total})",
            line.product_id
        )));
    }
    let r: i64 = scripts::REPAIR_PRODUCT
        .key(redis.keys().product(activity, line.product_id))
        .arg(stock)
        .arg(sold)
        .arg(want_stock)
        .arg(want_sold)
        .arg(want_total)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    if r != 1 {
        return Ok(Some(format!(
            "product {}: Redis counters changed meanwhile; run reconcile again",
            line.product_id
        )));
    }
    let what =
        format!("reconcile: Redis stock/sold/total {stock}/{sold}/{total} -> {want_stock}/{want_sold}/{want_total}");
    let mut tx = db.pool().begin().await.at(db)?;
    ledger(db, &mut tx, activity, line.product_id, want_stock - stock, &what).await?;
    tx.commit().await.at(db)?;
    Ok(Some(format!("product {}: {}", line.product_id, &what[11..])))
}

/// Sets `user`'s units held of `product` in Redis to `want` (compare-and-set against `now`),
/// with a ledger row (delta 0: no unit changes hands, only the user's count).
async fn set_units_held(
    db: &Db,
    redis: &RedisClient,
    activity: u64,
    now: &Snapshot,
    product: u64,
    user: &str,
    want: i64,
) -> Result<String> {
    let have = now.bought.get(&product).and_then(|b| b.get(user)).copied().unwrap_or(0);
    // A sharded product's buyer's total lives in the buyer's bucket; another product's in its
    // bought hash or its totals array, which the script tells apart (src/totals.rs).
    let keys = redis.keys();
    let mut repair = scripts::REPAIR_BOUGHT.prepare_invoke();
    match now.sharded.get(&product) {
        Some(&shards) => repair.key(keys.bucket_bought(activity, bucket_of_user(user, shards), product)),
        None => repair
            .key(keys.bought(activity, product))
            .key(keys.product(activity, product))
            .key(keys.totals(activity, product)),
    };
    let r: i64 = repair
        .arg(user)
        .arg(have)
        .arg(want)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    if r != 1 {
        return Ok(format!(
            "product {product} user {user}: changed meanwhile; run reconcile again"
        ));
    }
    let what = format!("product {product} user {user}: units held {have} -> {want}");
    let mut tx = db.pool().begin().await.at(db)?;
    ledger(db, &mut tx, activity, product, 0, &format!("reconcile: {what}")).await?;
    tx.commit().await.at(db)?;
    Ok(what)
}

/// Writes an `adjust` ledger row for a repair (`ref` = `reconcile`).
pub(super) async fn ledger(
    db: &Db,
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    activity: u64,
    product: u64,
    delta: i64,
    reason: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason, ref) VALUES (?, ?, 'adjust', ?, ?, 'reconcile')")
        .bind(activity).bind(product).bind(delta).bind(reason)
        .execute(&mut **tx).await.at(db)?;
    Ok(())
}
