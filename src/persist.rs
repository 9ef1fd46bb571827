//! Turning reservations into MySQL orders: one transaction per batch, idempotent on
//! `order_no`, so an entry delivered twice (or raced by two consumers) makes one order
//! and counts as sold once. The consumers persist what they read, `reconcile --fix` what
//! they lost, and `consumer dlq replay` what they buried.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rust_decimal::Decimal;
use sqlx::{MySql, QueryBuilder};

use crate::db::{self, Db};
use crate::error::{Error, Result};
use crate::lost_state;
use crate::redis_client::RedisClient;
use crate::reservation::Reservation;

/// What one call of [`persist`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Persisted {
    /// Orders inserted now.
    pub inserted: u64,
    /// Reservations that already had their order (redelivered or raced).
    pub duplicates: u64,
    /// Units newly counted as sold.
    pub units: u64,
    /// Reservations that can never be persisted as they are (order number, reason).
    pub rejected: Vec<(String, String)>,
}

/// Transaction attempts when optimistic locking or a racing consumer forces a retry.
const TX_ATTEMPTS: usize = 8;
/// Rows per INSERT statement (10 placeholders each, well under MySQL's 65,535).
const INSERT_CHUNK: usize = 2000;

enum TxError {
    Retry(String),
    Fail(Error),
}

/// Persists `batch` in one transaction: inserts the orders not yet in MySQL (`pending`),
/// adds their units to `products.sold` under optimistic locking on `version`, and writes
/// one `reserve` ledger row per product. Fails as a whole (nothing written) when MySQL
/// does, so the caller can keep the entries pending and retry.
///
/// Around the transaction, each activity's persist sequence is raised in Redis first and
/// recorded in MySQL after the commit (see [`crate::lost_state`]), so a Redis that later
/// goes back past this batch is noticed.
pub async fn persist(db: &Db, redis: &RedisClient, batch: &[Reservation], reason: &str) -> Result<Persisted> {
    persist_after(db, redis, batch, reason, None).await
}

/// Tells a [`persist_after`] that the call before it ended (committed or gave up): the
/// sender's side says so with `true`, or by being dropped.
pub type Earlier = tokio::sync::watch::Receiver<bool>;

/// [`persist`], while the `earlier` call of the same consumer may still be in flight: the
/// orders are inserted at once, beside it, and the products' versions read only once it
/// ended, so the two do not conflict on their common products (its commit would make the
/// version read before it stale). MySQL works on both batches' rows at the same time.
pub async fn persist_after(
    db: &Db,
    redis: &RedisClient,
    batch: &[Reservation],
    reason: &str,
    mut earlier: Option<Earlier>,
) -> Result<Persisted> {
    let activities: BTreeSet<u64> = batch.iter().map(|r| r.activity_id).collect();
    let mut marks = Vec::with_capacity(activities.len());
    for activity in activities {
        marks.push((activity, lost_state::advance(redis, activity).await?));
    }
    let mut last = String::new();
    for attempt in 0..TX_ATTEMPTS {
        // The first attempt takes every order for new (the usual case: each entry is read
        // once) and saves the lookup; a duplicate fails it (1062) and later attempts look first.
        match try_persist(db, batch, reason, attempt > 0, &mut earlier).await {
            Ok(done) => {
                if done.inserted > 0 {
                    for (activity, seq) in marks {
                        lost_state::record(db, activity, seq).await?;
                    }
                }
                return Ok(done);
            }
            Err(TxError::Fail(e)) => return Err(e),
            Err(TxError::Retry(why)) => {
                tracing::debug!(attempt, %why, "persist transaction retried");
                last = why;
                tokio::time::sleep(std::time::Duration::from_millis(2 << attempt)).await;
            }
        }
    }
    Err(Error::Internal(format!(
        "persisting gave up after {TX_ATTEMPTS} attempts: {last}"
    )))
}

/// Whether MySQL error `number` means "try the transaction again": another transaction got
/// in its way ([`db::is_conflict_number`]), or 1062, a duplicate `order_no` (a racing consumer
/// committed it).
fn retryable(number: u16) -> bool {
    number == 1062 || db::is_conflict_number(number)
}

fn classify(db: &Db, e: sqlx::Error) -> TxError {
    if db::error_number(&e).is_some_and(retryable) {
        return TxError::Retry(e.to_string());
    }
    TxError::Fail(db.err(e))
}

/// Waits until the call before (if any) ended; then there is nothing more to wait for.
async fn wait_for(earlier: &mut Option<Earlier>) {
    if let Some(mut e) = earlier.take() {
        // An error means the sender is gone, which says the same.
        let _ = e.wait_for(|ended| *ended).await;
    }
}

async fn try_persist(
    db: &Db,
    batch: &[Reservation],
    reason: &str,
    look_first: bool,
    earlier: &mut Option<Earlier>,
) -> std::result::Result<Persisted, TxError> {
    let mut out = Persisted::default();
    if batch.is_empty() {
        return Ok(out);
    }
    if look_first {
        // A retry (rare) does not overlap: its lookup opens the snapshot the versions are
        // read from, so that must come after the earlier call's commit.
        wait_for(earlier).await;
    }
    let product_ids: Vec<u64> = batch
        .iter()
        .map(|r| r.product_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Read before the transaction: a plain read inside it would open its snapshot here, and
    // the versions read later would be as old as that (a product's activity never changes
    // once it has orders).
    let mut q = QueryBuilder::<MySql>::new("SELECT id, activity_id FROM products WHERE id IN ");
    q.push_tuples(&product_ids, |mut b, id| {
        b.push_bind(*id);
    });
    let products: Vec<(u64, u64)> = q
        .build_query_as()
        .fetch_all(db.pool())
        .await
        .map_err(|e| classify(db, e))?;
    let known: BTreeMap<u64, u64> = products.into_iter().collect();
    let mut tx = db.pool().begin().await.map_err(|e| TxError::Fail(db.err(e)))?;

    let existing: HashSet<String> = if look_first {
        let mut q = QueryBuilder::<MySql>::new("SELECT order_no FROM orders WHERE order_no IN ");
        q.push_tuples(batch, |mut b, r| {
            b.push_bind(&r.order_no);
        });
        q.build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(db, e))?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };

    let mut fresh = Vec::new();
    let mut seen = HashSet::new();
    for r in batch {
        match known.get(&r.product_id) {
            None => out
                .rejected
                .push((r.order_no.clone(), format!("product {} not in MySQL", r.product_id))),
            Some(a) if *a != r.activity_id => out.rejected.push((
                r.order_no.clone(),
                format!(
                    "product {} belongs to activity {a}, not {}",
                    r.product_id, r.activity_id
                ),
            )),
            Some(_) if existing.contains(&r.order_no) || !seen.insert(&r.order_no) => out.duplicates += 1,
            Some(_) => fresh.push(r),
        }
    }
    for chunk in fresh.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<MySql>::new(
            "INSERT INTO orders (order_no, activity_id, product_id, user_id, quantity, unit_price, amount, status, reserved_at) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(&r.order_no)
                .push_bind(r.activity_id)
                .push_bind(r.product_id)
                .push_bind(&r.user_id)
                .push_bind(r.quantity)
                .push_bind(r.price)
                .push_bind(r.price * Decimal::from(r.quantity))
                .push_bind("pending")
                .push_bind(r.reserved_at);
        });
        q.build().execute(&mut *tx).await.map_err(|e| classify(db, e))?;
    }
    let mut per_product: BTreeMap<u64, (u64, u64, Vec<&str>)> = BTreeMap::new();
    for r in &fresh {
        let e = per_product
            .entry(r.product_id)
            .or_insert((r.activity_id, 0, Vec::new()));
        e.1 += u64::from(r.quantity);
        e.2.push(&r.order_no);
    }
    // The first plain read of the transaction, so its snapshot (and the versions) postdate
    // the earlier call's commit.
    wait_for(earlier).await;
    let versions: BTreeMap<u64, u64> = if per_product.is_empty() {
        BTreeMap::new()
    } else {
        let mut q = QueryBuilder::<MySql>::new("SELECT id, version FROM products WHERE id IN ");
        q.push_tuples(per_product.keys(), |mut b, id| {
            b.push_bind(*id);
        });
        let rows: Vec<(u64, u64)> = q
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify(db, e))?;
        rows.into_iter().collect()
    };
    // BTreeMap order: every transaction locks products in ascending id order (no deadlock cycles).
    for (product, (activity, units, ids)) in &per_product {
        let Some(&version) = versions.get(product) else {
            // Deleted since the read before the transaction: the next attempt rejects it.
            return Err(TxError::Retry(format!("product {product} is gone")));
        };
        let updated = sqlx::query(
            "UPDATE products SET sold = sold + ?, version = version + 1, updated_at = updated_at \
             WHERE id = ? AND version = ?",
        )
        .bind(units)
        .bind(product)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(db, e))?;
        if updated.rows_affected() != 1 {
            return Err(TxError::Retry(format!(
                "product {product} changed concurrently (version {version})"
            )));
        }
        let reference = match ids.as_slice() {
            [one] => one.to_string(),
            many => {
                // `ref` is VARCHAR(64): a stock bucket's order numbers are long (see keys.rs).
                let range = format!("batch {}..{}", many[0], many[many.len() - 1]);
                if range.len() <= 64 {
                    range
                } else {
                    format!("batch {} +{}", many[0], many.len() - 1)
                }
            }
        };
        sqlx::query(
            "INSERT INTO stock_ledger (activity_id, product_id, op, delta, reason, ref) VALUES (?, ?, 'reserve', ?, ?, ?)",
        )
        .bind(activity)
        .bind(product)
        .bind(-(*units as i64))
        .bind(format!("{reason}: {} orders", ids.len()))
        .bind(reference)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(db, e))?;
        out.units += units;
    }
    tx.commit().await.map_err(|e| classify(db, e))?;
    out.inserted = fresh.len() as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::retryable;

    #[test]
    fn conflicts_are_retried_and_other_errors_are_not() {
        for conflict in [1062, 1213, 1205, 1020] {
            assert!(retryable(conflict), "{conflict}");
        }
        // Unknown column, table missing, out of range: retrying cannot help.
        for other in [1054, 1146, 1264] {
            assert!(!retryable(other), "{other}");
        }
    }
}
