//! The invariants of a bench run, judged from sources independent of the load generator:
//! MySQL orders, the Redis reservation stream, and `reconcile`.

use std::collections::HashMap;

use serde::Serialize;

use crate::db::Db;
use crate::error::{DbContext, Result};
use crate::ops::reconcile::ReconcileReport;
use crate::redis_client::RedisClient;
use crate::reservation;

/// What MySQL and the stream say was sold.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Evidence {
    /// `products.total_stock`.
    pub stock: u64,
    /// `products.per_user_limit`.
    pub limit: u64,
    /// Orders of the product in MySQL.
    pub mysql_orders: u64,
    /// Units of those orders.
    pub mysql_units: u64,
    /// Most units one user holds in MySQL.
    pub mysql_max_per_user: u64,
    /// Purchases in the reservation stream (what Redis sold), counted per purchase, not per entry.
    pub stream_entries: u64,
    /// Units of those entries.
    pub stream_units: u64,
    /// Most units one user reserved in the stream.
    pub stream_max_per_user: u64,
}

/// The promises, each `true` when it held.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Invariants {
    /// Neither MySQL orders nor the Redis reservations exceed the stock in MySQL.
    pub no_oversell: bool,
    /// No user holds more than the per-user limit, in MySQL or in the stream.
    pub per_user_limit_held: bool,
    /// MySQL orders == `queued` answers == stream entries: every promise was kept, once.
    pub orders_equal_reservations: bool,
    /// `reconcile` found no difference at all (not even in-flight ones) and no dead letters.
    pub reconcile_clean: bool,
}

impl Invariants {
    /// Judges the evidence; `queued_answers` is what buyers were told.
    pub fn judge(e: &Evidence, queued_answers: u64, reconcile: &ReconcileReport) -> Invariants {
        Invariants {
            no_oversell: e.mysql_units <= e.stock && e.stream_units <= e.stock,
            per_user_limit_held: e.mysql_max_per_user <= e.limit && e.stream_max_per_user <= e.limit,
            orders_equal_reservations: e.mysql_orders == queued_answers && e.mysql_orders == e.stream_entries,
            reconcile_clean: reconcile.findings.is_empty() && reconcile.dead_letters == 0,
        }
    }

    /// Names of the invariants that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        [
            ("no_oversell", self.no_oversell),
            ("per_user_limit_held", self.per_user_limit_held),
            ("orders_equal_reservations", self.orders_equal_reservations),
            ("reconcile_clean", self.reconcile_clean),
        ]
        .into_iter()
        .filter(|(_, held)| !held)
        .map(|(name, _)| name)
        .collect()
    }
}

/// Reads the product's orders from MySQL and every entry of the activity's stream.
pub async fn gather(db: &Db, redis: &RedisClient, activity: u64, product: u64) -> Result<Evidence> {
    let (stock, limit): (u32, u32) = sqlx::query_as("SELECT total_stock, per_user_limit FROM products WHERE id = ?")
        .bind(product)
        .fetch_one(db.pool())
        .await
        .at(db)?;
    // DECIMAL sums come back as decimals: cast them to integers in SQL.
    let (orders, units): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders WHERE product_id = ?")
            .bind(product)
            .fetch_one(db.pool())
            .await
            .at(db)?;
    let max_per_user: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(units), 0) AS SIGNED) FROM \
         (SELECT SUM(quantity) AS units FROM orders WHERE product_id = ? GROUP BY user_id) AS per_user",
    )
    .bind(product)
    .fetch_one(db.pool())
    .await
    .at(db)?;

    let mut e = Evidence {
        stock: stock.into(),
        limit: limit.into(),
        mysql_orders: orders as u64,
        mysql_units: units as u64,
        mysql_max_per_user: max_per_user as u64,
        ..Evidence::default()
    };
    let mut entries = Vec::new();
    for stream in crate::buckets::stock::streams(redis, activity).await? {
        entries.extend(reservation::read_all(redis, &stream).await?);
    }
    let mut per_user: HashMap<String, u64> = HashMap::new();
    for entry in entries {
        let purchases = reservation::purchases(&entry).unwrap_or_else(|_| vec![entry.clone()]);
        for (index, one) in (0u32..).zip(purchases) {
            match reservation::decode_at(activity, &one, index) {
                Ok(r) if r.product_id != product => {}
                Ok(r) => {
                    e.stream_entries += 1;
                    e.stream_units += u64::from(r.quantity);
                    *per_user.entry(r.user_id).or_default() += u64::from(r.quantity);
                }
                // A purchase no consumer can persist still counts as a reservation (of no units),
                // so orders and reservations differ and the run fails.
                Err(_) if one.get(reservation::field::PRODUCT) == Some(product.to_string().as_str()) => {
                    e.stream_entries += 1
                }
                Err(_) => {}
            }
        }
    }
    e.stream_max_per_user = per_user.values().copied().max().unwrap_or(0);
    Ok(e)
}
