//! Live stock changes while the sale runs: `stock add` (top up), `stock sold-out` (the
//! source channel ran out) and `stock remove` (take a number of units off sale).
//!
//! Each change is made in an order where a failure or a kill at any point leaves no unit on
//! sale that MySQL does not count:
//! 1. MySQL: a `pending` ledger row (for an add, `total_stock` grows in the same transaction:
//!    MySQL counts the units before any of them is on sale);
//! 2. Redis: the script applies the change atomically with `reserve.lua`, at most once per
//!    ledger row, and records the row id with what it did (`P:{a:A}:stock_ops`);
//! 3. MySQL: the row becomes `done` (for a sold-out or a remove, `total_stock` shrinks by the
//!    units Redis withdrew: withdrawn units are off sale before MySQL hears of them).
//!
//! A change left `pending` (process killed, Redis or MySQL lost midway) is settled by
//! `seckill reconcile --fix` (see [`settle`]): completed when Redis applied it, undone when
//! it did not (marking it void in Redis first, so a late script call refuses).
//!
//! A product whose stock is in buckets takes step 2 in several scripts, one per slot
//! ([`crate::buckets::stock::live`]); a change begun there is completed, never undone.

mod remove;
pub use remove::remove;

use serde::Serialize;

use crate::buckets::stock::live::{self, Change};
use crate::db::Db;
use crate::error::{DbContext, Error, RedisContext, Result};
use crate::ops::lifecycle;
use crate::redis_client::RedisClient;
use crate::scripts;

/// The most `products.total_stock` (INT UNSIGNED) can hold.
pub const MAX_TOTAL_STOCK: i64 = u32::MAX as i64;

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

/// A stock change whose ledger row is still `pending`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingChange {
    /// The ledger row id.
    pub ledger_id: u64,
    /// The product.
    pub product_id: u64,
    /// `adjust` (stock add), `sold_out` or `remove`.
    pub op: String,
    /// Units added (an add), units asked to take (a remove, negative; 0 for a sold-out, whose
    /// amount Redis decides).
    pub delta: i64,
    /// How long ago the row was written, ms (MySQL clock).
    pub age_ms: i64,
}

/// What Redis did with a stock change (the value of its `stock_ops` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Not seen by Redis (yet).
    No,
    /// Applied: units added or withdrawn.
    Units(i64),
    /// The product was not loaded: only MySQL changes.
    NotLoaded,
    /// Settled as undone by reconcile; the scripts refuse it.
    Void,
    /// A sharded product's change begun and not yet recorded as done in every bucket
    /// (`part`): it is resumed, never undone.
    Started,
}

impl Applied {
    /// Decodes a `stock_ops` field value (`None`: absent).
    pub fn parse(value: Option<&str>) -> Applied {
        match value {
            None => Applied::No,
            Some("void") => Applied::Void,
            Some("not_loaded") => Applied::NotLoaded,
            Some("part") => Applied::Started,
            Some(n) => Applied::Units(n.parse().unwrap_or(0)),
        }
    }
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
    .at(db)?
    .ok_or_else(|| Error::not_found(format!("product {product_id}")))
}

fn redis_error_code(e: &redis::RedisError) -> Option<&'static str> {
    let text = e.to_string();
    ["NOT_LOADED", "VOIDED"].into_iter().find(|code| text.contains(code))
}

/// Writes the `pending` ledger row (and, for an add, the new `total_stock`); returns the row id.
async fn begin_change(
    db: &Db,
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    activity: u64,
    product: u64,
    op: &str,
    delta: i64,
    reason: &str,
) -> Result<u64> {
    if delta != 0 {
        sqlx::query(
            "UPDATE products SET total_stock = CAST(total_stock AS SIGNED) + ?, version = version + 1, \
             updated_at = updated_at WHERE id = ?",
        )
        .bind(delta)
        .bind(product)
        .execute(&mut **tx)
        .await
        .at(db)?;
    }
    let row = sqlx::query(
        "INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason, state) VALUES (?, ?, ?, ?, ?, 'pending')",
    )
    .bind(activity)
    .bind(product)
    .bind(op)
    .bind(delta)
    .bind(reason)
    .execute(&mut **tx)
    .await
    .at(db)?;
    Ok(row.last_insert_id())
}

/// The activity of `product` (not found: an error) and the product's bucket count in Redis
/// (0 or 1: its stock is in its own hash, or it is not loaded).
async fn activity_and_shards(db: &Db, redis: &RedisClient, product: u64) -> Result<(u64, u16)> {
    let activity: u64 = sqlx::query_scalar("SELECT activity_id FROM products WHERE id = ?")
        .bind(product)
        .fetch_optional(db.pool())
        .await
        .at(db)?
        .ok_or_else(|| Error::not_found(format!("product {product}")))?;
    let shards = crate::buckets::stock::shards_of(redis, activity, product).await?;
    Ok((activity, shards))
}

/// What Redis answered a change: its value (the stock after an add, the units a sold-out
/// withdrew), not loaded, voided, or a failure after which it is unknown whether it ran.
enum Answer {
    Value(i64),
    NotLoaded,
    Voided,
    Failed(Error),
}

impl Answer {
    fn of(redis: &RedisClient, reply: redis::RedisResult<i64>) -> Answer {
        match reply {
            Ok(v) => Answer::Value(v),
            Err(e) if redis_error_code(&e) == Some("NOT_LOADED") => Answer::NotLoaded,
            Err(e) if redis_error_code(&e) == Some("VOIDED") => Answer::Voided,
            Err(e) => Answer::Failed(redis.err(e)),
        }
    }
}

/// A change of a product whose stock is in buckets ([`live::apply`]), answered as the
/// single-slot scripts answer: the product's stock on sale after an add (summed over its
/// buckets), or the units a sold-out withdrew.
async fn sharded(
    redis: &RedisClient,
    activity: u64,
    product: u64,
    ledger_id: u64,
    change: Change,
    preheated_at: &str,
) -> Answer {
    let applied = match live::apply(redis, activity, product, ledger_id, change, preheated_at).await {
        Ok(applied) => applied,
        Err(e) => return Answer::Failed(e),
    };
    match (applied, change) {
        (Applied::NotLoaded, _) => Answer::NotLoaded,
        (Applied::Units(units), Change::SoldOut | Change::Remove(_)) => Answer::Value(units),
        (Applied::Units(_), Change::Add(_)) => {
            let shards = crate::buckets::stock::shards_of(redis, activity, product).await;
            let totals = match shards {
                Ok(shards) => crate::buckets::stock::totals(redis, activity, product, shards).await,
                Err(e) => Err(e),
            };
            match totals {
                Ok((stock, _)) => Answer::Value(stock),
                Err(e) => Answer::Failed(e),
            }
        }
        _ => Answer::Voided,
    }
}

fn pending_hint(ledger_id: u64, activity: u64) -> String {
    format!("stock change #{ledger_id} is pending; `seckill reconcile {activity} --fix` settles it")
}

/// Adds `units` to the product's stock, live in Redis and in MySQL, with an `adjust` ledger
/// row. Refused, with nothing changed, when `total_stock` could not hold the result.
pub async fn add(db: &Db, redis: &RedisClient, product_id: u64, units: u32) -> Result<StockChange> {
    if units == 0 {
        return Err(Error::invalid("units must be at least 1"));
    }
    let units = i64::from(units);
    let (activity, shards) = activity_and_shards(db, redis, product_id).await?;
    // Read before MySQL counts the units: a `hot` after this point may load them from MySQL,
    // and the script must then not add them a second time.
    let preheated_at = lifecycle::preheated_at(redis, activity)
        .await?
        .map(|ms| ms.to_string())
        .unwrap_or_default();
    let mut tx = db.pool().begin().await.at(db)?;
    let (activity, total, _) = lock_product(db, &mut tx, product_id).await?;
    if total + units > MAX_TOTAL_STOCK {
        return Err(Error::invalid(format!(
            "units: at most {} can be added to product {product_id} (total stock {total}, which can be at most {MAX_TOTAL_STOCK})",
            MAX_TOTAL_STOCK - total
        )));
    }
    let ledger_id = begin_change(db, &mut tx, activity, product_id, "adjust", units, "stock add").await?;
    tx.commit().await.at(db)?;

    let keys = redis.keys();
    let applied = if shards > 1 {
        sharded(
            redis,
            activity,
            product_id,
            ledger_id,
            Change::Add(units as u64),
            &preheated_at,
        )
        .await
    } else {
        let reply = scripts::STOCK_ADD
            .key(keys.product(activity, product_id))
            .key(keys.stock_ops(activity))
            .key(keys.activity(activity))
            .arg(units)
            .arg(ledger_id)
            .arg(&preheated_at)
            .invoke_async::<i64>(&mut redis.conn())
            .await;
        Answer::of(redis, reply)
    };
    let redis_stock = match applied {
        Answer::Value(stock) => Some(stock),
        Answer::NotLoaded => None,
        Answer::Voided => {
            return Err(Error::refused(format!(
                "stock change #{ledger_id} was settled as undone by reconcile meanwhile; nothing was added"
            )))
        }
        // Unknown whether the script ran: MySQL counts the units either way, so nothing can be
        // oversold; reconcile finds out and completes or undoes the change.
        Answer::Failed(e) => return Err(Error::Internal(format!("{}: {e}", pending_hint(ledger_id, activity)))),
    };
    // Redis applied it and MySQL counts it: the change is made. Marking the row done only
    // records that; should MySQL fail now, reconcile marks it (it sees Redis applied it).
    let confirmed = sqlx::query("UPDATE stock_ledger SET state = 'done' WHERE id = ? AND state = 'pending'")
        .bind(ledger_id)
        .execute(db.pool())
        .await;
    if let Err(e) = confirmed {
        tracing::warn!(error = %db.err(e), "{}", pending_hint(ledger_id, activity));
    }
    Ok(StockChange {
        product_id,
        activity_id: activity,
        delta: units,
        total_stock: total + units,
        redis_stock,
    })
}

/// Withdraws every unit of the product still on sale (Redis stock to 0, totals reduced by
/// as much in Redis and MySQL), with a `sold_out` ledger row. Units already reserved stay sold.
pub async fn sold_out(db: &Db, redis: &RedisClient, product_id: u64) -> Result<StockChange> {
    let (_, shards) = activity_and_shards(db, redis, product_id).await?;
    let mut tx = db.pool().begin().await.at(db)?;
    let (activity, _, _) = lock_product(db, &mut tx, product_id).await?;
    let ledger_id = begin_change(db, &mut tx, activity, product_id, "sold_out", 0, "source sold out").await?;
    tx.commit().await.at(db)?;

    let keys = redis.keys();
    let applied = if shards > 1 {
        sharded(redis, activity, product_id, ledger_id, Change::SoldOut, "").await
    } else {
        let reply = scripts::SOLD_OUT
            .key(keys.product(activity, product_id))
            .key(keys.stock_ops(activity))
            .arg(ledger_id)
            .invoke_async::<i64>(&mut redis.conn())
            .await;
        Answer::of(redis, reply)
    };
    let (applied, redis_stock) = match applied {
        Answer::Value(w) => (Applied::Units(w), Some(0)),
        Answer::NotLoaded => (Applied::NotLoaded, None),
        Answer::Voided => {
            return Err(Error::refused(format!(
                "stock change #{ledger_id} was settled as undone by reconcile meanwhile; nothing was withdrawn"
            )))
        }
        // Withdrawn or not, nothing extra is on sale; reconcile completes or undoes the change.
        Answer::Failed(e) => return Err(Error::Internal(format!("{}: {e}", pending_hint(ledger_id, activity)))),
    };
    // Once Redis withdrew the units they stay withdrawn; should MySQL fail here, the row
    // stays pending and reconcile completes it with the number Redis recorded.
    let finished = finish(db, ledger_id, product_id, "sold_out", applied)
        .await
        .map_err(|e| Error::Internal(format!("{}: {e}", pending_hint(ledger_id, activity))))?;
    Ok(StockChange {
        product_id,
        activity_id: activity,
        delta: -finished.withdrawn,
        total_stock: finished.total_stock,
        redis_stock,
    })
}

/// The MySQL side of a change once Redis decided: what was withdrawn, the new total.
struct Finished {
    withdrawn: i64,
    total_stock: i64,
    /// False when the row was no longer pending (someone else settled it).
    changed: bool,
}

/// Completes (`done`) or, for [`Applied::Void`], undoes (`undone`) a pending change in MySQL,
/// in one transaction and only if the row is still pending.
async fn finish(db: &Db, ledger_id: u64, product_id: u64, op: &str, applied: Applied) -> Result<Finished> {
    let mut tx = db.pool().begin().await.at(db)?;
    let (_, total, sold) = lock_product(db, &mut tx, product_id).await?;
    let row: Option<(String, i64)> = sqlx::query_as("SELECT state, delta FROM stock_ledger WHERE id = ? FOR UPDATE")
        .bind(ledger_id)
        .fetch_optional(&mut *tx)
        .await
        .at(db)?;
    let Some((state, delta)) = row else {
        return Err(Error::not_found(format!("stock change #{ledger_id}")));
    };
    if state != "pending" {
        return Ok(Finished {
            withdrawn: -delta.min(0),
            total_stock: total,
            changed: false,
        });
    }
    let (new_state, new_delta, total_change) = match (op, applied) {
        ("sold_out" | "remove", Applied::Units(w)) => ("done", -w, -w),
        ("remove", Applied::NotLoaded) => {
            let w = (-delta).min((total - sold).max(0));
            ("done", -w, -w)
        }
        ("remove", _) => ("undone", delta, 0),
        ("sold_out", Applied::NotLoaded) => ("done", -(total - sold).max(0), -(total - sold).max(0)),
        ("sold_out", _) => ("undone", 0, 0),
        (_, Applied::Void | Applied::No) => ("undone", delta, -delta),
        _ => ("done", delta, 0),
    };
    if total_change != 0 {
        sqlx::query(
            "UPDATE products SET total_stock = CAST(total_stock AS SIGNED) + ?, version = version + 1, \
             updated_at = updated_at WHERE id = ?",
        )
        .bind(total_change)
        .bind(product_id)
        .execute(&mut *tx)
        .await
        .at(db)?;
    }
    sqlx::query("UPDATE stock_ledger SET state = ?, delta = ? WHERE id = ?")
        .bind(new_state)
        .bind(new_delta)
        .bind(ledger_id)
        .execute(&mut *tx)
        .await
        .at(db)?;
    tx.commit().await.at(db)?;
    Ok(Finished {
        withdrawn: -new_delta.min(0),
        total_stock: total + total_change,
        changed: true,
    })
}

/// The activity's stock changes whose ledger rows are still `pending`, read on `conn`
/// (reconcile reads them in its consistent read).
pub async fn pending_changes(conn: &mut sqlx::MySqlConnection, db: &Db, activity: u64) -> Result<Vec<PendingChange>> {
    let rows: Vec<(u64, u64, String, i64, i64)> = sqlx::query_as(
        "SELECT id, product_id, op, delta, CAST(TIMESTAMPDIFF(MICROSECOND, created_at, NOW(3)) DIV 1000 AS SIGNED) \
         FROM stock_ledger WHERE activity_id = ? AND state = 'pending' ORDER BY id",
    )
    .bind(activity)
    .fetch_all(conn)
    .await
    .at(db)?;
    Ok(rows
        .into_iter()
        .map(|(ledger_id, product_id, op, delta, age_ms)| PendingChange {
            ledger_id,
            product_id,
            op,
            delta,
            age_ms,
        })
        .collect())
}

/// Settles a pending change for reconcile: asks Redis what it did with it (marking it void
/// when it did nothing, so it never will), then completes or undoes the MySQL side to match.
/// Returns a line for the report.
pub async fn settle(db: &Db, redis: &RedisClient, activity: u64, change: &PendingChange) -> Result<String> {
    let seen: Option<String> = scripts::SETTLE_STOCK_OP
        .key(redis.keys().stock_ops(activity))
        .arg(change.ledger_id)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    let mut applied = Applied::parse(seen.as_deref());
    if applied == Applied::Started {
        let what = match change.op.as_str() {
            "sold_out" => Change::SoldOut,
            "remove" => Change::Remove((-change.delta).max(0) as u64),
            _ => Change::Add(change.delta.max(0) as u64),
        };
        applied = live::apply(redis, activity, change.product_id, change.ledger_id, what, "*").await?;
    }
    let finished = finish(db, change.ledger_id, change.product_id, &change.op, applied).await?;
    let what = match change.op.as_str() {
        "sold_out" => "sold-out",
        "remove" => "stock remove",
        _ => "stock add",
    };
    Ok(if !finished.changed {
        format!("stock change #{} ({what}): already settled", change.ledger_id)
    } else {
        match applied {
            Applied::Void | Applied::No => format!(
                "stock change #{} ({what}, product {}): never reached Redis; undone in MySQL",
                change.ledger_id, change.product_id
            ),
            _ => format!(
                "stock change #{} ({what}, product {}): applied in Redis; completed in MySQL (total stock {})",
                change.ledger_id, change.product_id, finished.total_stock
            ),
        }
    })
}
