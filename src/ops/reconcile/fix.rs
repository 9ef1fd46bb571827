//! `reconcile --fix`: the safe repairs, in an order where each builds on the last:
//! settle stock changes left pending, persist lost reservations, finish half-done stock
//! returns, then set counters from the (now complete) orders. Counter writes are
//! compare-and-set against a view of Redis taken atomically with purchases (see
//! [`gather::snapshot`]), so a purchase racing the repair makes it skip (and say so) rather
//! than be overwritten. Dead-lettered reservations count as held: never repaired away.

use std::time::Duration;

use super::gather::{self, Snapshot};
use super::{analyse, Analysis, Class};
use crate::db::Db;
use crate::error::Result;
use crate::ops::order;
use crate::ops::stock;
use crate::persist;
use crate::redis_client::RedisClient;
use crate::scripts;

pub(super) async fn repair(
    db: &Db,
    redis: &RedisClient,
    group: &str,
    activity: u64,
    snap: &Snapshot,
    first: &Analysis,
    grace: Duration,
) -> Result<Vec<String>> {
    let (lost, unsettled) = (&first.lost, &first.unsettled);
    let mut done = Vec::new();
    for change in unsettled {
        done.push(stock::settle(db, redis, activity, change).await?);
    }
    if !lost.is_empty() {
        let p = persist::persist(db, redis, lost, "reconcile: lost reservation").await?;
        done.push(format!(
            "persisted {} lost reservation(s) ({} unit(s)); {} already had an order",
            p.inserted, p.units, p.duplicates
        ));
        for (order_no, why) in p.rejected {
            done.push(format!("could not persist {order_no}: {why}"));
        }
    }
    let mut unreleased: Vec<_> = snap
        .orders
        .iter()
        .filter(|(no, (p, _, _, st))| {
            (st == "cancelled" || st == "expired")
                && snap.redis_products.contains_key(p)
                && !snap.released.contains(*no)
        })
        .collect();
    unreleased.sort_by(|a, b| a.0.cmp(b.0));
    for (order_no, (product, user, quantity, _)) in unreleased {
        let r = order::return_units(redis, activity, *product, order_no, user, *quantity).await?;
        done.push(match r {
            1 => format!("order {order_no}: {quantity} unit(s) back on sale"),
            _ => format!("order {order_no}: already back on sale"),
        });
    }

    let now = gather::snapshot(db, redis, group, activity).await?;
    let Analysis {
        findings,
        lines,
        expected,
        ..
    } = analyse(&now, activity, grace);
    let mut conn = redis.conn();
    for line in &lines {
        if line.mysql_sold != line.order_units {
            let version = now
                .products
                .iter()
                .find(|p| p.id == line.product_id)
                .map(|p| p.version)
                .unwrap_or(0);
            let mut tx = db.pool().begin().await.map_err(|e| db.err(e))?;
            let updated = sqlx::query(
                "UPDATE products SET sold = (SELECT COALESCE(SUM(quantity), 0) FROM orders \
                 WHERE product_id = ? AND status IN ('pending', 'paid')), version = version + 1, updated_at = updated_at \
                 WHERE id = ? AND version = ?",
            )
            .bind(line.product_id).bind(line.product_id).bind(version)
            .execute(&mut *tx).await.map_err(|e| db.err(e))?;
            if updated.rows_affected() == 1 {
                ledger(
                    db,
                    &mut tx,
                    activity,
                    line.product_id,
                    line.mysql_sold - line.order_units,
                    &format!("reconcile: products.sold {} -> {}", line.mysql_sold, line.order_units),
                )
                .await?;
                tx.commit().await.map_err(|e| db.err(e))?;
                done.push(format!(
                    "product {}: products.sold {} -> {}",
                    line.product_id, line.mysql_sold, line.order_units
                ));
            } else {
                done.push(format!(
                    "product {}: products.sold changed meanwhile; run reconcile again",
                    line.product_id
                ));
            }
        }
        let Some((stock, sold, total)) = line.redis else {
            continue;
        };
        let (want_stock, want_sold, want_total) = line.redis_target();
        if (stock, sold, total) == (want_stock, want_sold, want_total) {
            continue;
        }
        if want_stock < 0 {
            done.push(format!(
                "product {}: NOT fixed: units held ({want_sold}) exceed total stock ({want_total})",
                line.product_id
            ));
            continue;
        }
        let r: i64 = scripts::REPAIR_PRODUCT
            .key(redis.keys().product(activity, line.product_id))
            .arg(stock)
            .arg(sold)
            .arg(want_stock)
            .arg(want_sold)
            .arg(want_total)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis.err(e))?;
        if r == 1 {
            let what = format!(
                "reconcile: Redis stock/sold/total {stock}/{sold}/{total} -> {want_stock}/{want_sold}/{want_total}"
            );
            let mut tx = db.pool().begin().await.map_err(|e| db.err(e))?;
            ledger(db, &mut tx, activity, line.product_id, want_stock - stock, &what).await?;
            tx.commit().await.map_err(|e| db.err(e))?;
            done.push(format!("product {}: {}", line.product_id, &what[11..]));
        } else {
            done.push(format!(
                "product {}: Redis counters changed meanwhile; run reconcile again",
                line.product_id
            ));
        }
    }
    for f in findings.iter().filter(|f| f.class == Class::QuotaDrift) {
        let Some(product) = f.product_id else { continue };
        let have = now
            .bought
            .get(&product)
            .and_then(|b| b.get(&f.subject))
            .copied()
            .unwrap_or(0);
        let want = expected.get(&(product, f.subject.clone())).copied().unwrap_or(0);
        let r: i64 = scripts::REPAIR_BOUGHT
            .key(redis.keys().bought(activity, product))
            .arg(&f.subject)
            .arg(have)
            .arg(want)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis.err(e))?;
        done.push(if r == 1 {
            format!("product {product} user {}: units held {have} -> {want}", f.subject)
        } else {
            format!(
                "product {product} user {}: changed meanwhile; run reconcile again",
                f.subject
            )
        });
    }
    Ok(done)
}

async fn ledger(
    db: &Db,
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    activity: u64,
    product: u64,
    delta: i64,
    reason: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason, ref) VALUES (?, ?, 'adjust', ?, ?, 'reconcile')")
        .bind(activity).bind(product).bind(delta).bind(reason)
        .execute(&mut **tx).await.map_err(|e| db.err(e))?;
    Ok(())
}
