//! The throwaway sale of one bench run: created in the configured MySQL and Redis under a
//! name that says what it is, and removed again afterwards (rows and keys).

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use rust_decimal::Decimal;

use crate::db::Db;
use crate::error::{DbContext, Result};
use crate::ops::catalog::{self, NewActivity, NewProduct};
use crate::ops::token;
use crate::redis_client::RedisClient;
use crate::token::Signer;

use super::load::Buyer;

/// The activity and product a bench run sells.
#[derive(Debug, Clone)]
pub struct Sale {
    /// Activity id.
    pub activity: u64,
    /// Activity name, `bench <UTC timestamp>`.
    pub name: String,
    /// The one product on sale.
    pub product: u64,
}

/// Creates the activity (open from a minute ago for an hour) and its product, preheats it.
/// Not started yet: tokens come first, as in a real sale.
pub async fn create(db: &Db, redis: &RedisClient, group: &str, stock: u32, limit: u32, shards: u16) -> Result<Sale> {
    let now = Utc::now().trunc_subsecs(0);
    let name = format!("bench {}", now.format("%Y-%m-%dT%H:%M:%SZ"));
    let activity = catalog::create_activity(
        db,
        &NewActivity {
            name: name.clone(),
            start_at: now - chrono::Duration::minutes(1),
            end_at: now + chrono::Duration::hours(1),
            hot: Default::default(),
        },
    )
    .await?
    .id;
    let sale = async {
        let product = catalog::add_product(
            db,
            &NewProduct {
                activity_id: activity,
                name: "bench unit".into(),
                price: Decimal::new(100, 2),
                stock,
                per_user_limit: limit,
                max_per_order: Some(1),
                shards: Some(shards),
            },
        )
        .await?
        .id;
        // `start` refuses products changed at or after the preheat (millisecond clock):
        // let the clock move on before preheating.
        tokio::time::sleep(Duration::from_millis(10)).await;
        crate::ops::hot(db, redis, group, activity).await?;
        Ok(Sale {
            activity,
            name,
            product,
        })
    };
    match sale.await {
        Ok(sale) => Ok(sale),
        Err(e) => {
            let _ = remove(db, redis, group, activity).await;
            Err(e)
        }
    }
}

/// Issues tokens to users `u1..=uN` (pipelined, 1000 per script call).
pub async fn buyers(redis: &RedisClient, signer: &Signer, activity: u64, users: u64) -> Result<Vec<Buyer>> {
    let ids: Vec<String> = (1..=users).map(|i| format!("u{i}")).collect();
    let bar = crate::progress::bar(users, "tokens");
    let issued = token::register(redis, signer, activity, &ids, 3600, |n| bar.inc(n)).await;
    bar.finish_and_clear();
    Ok(issued?.into_iter().map(|t| (t.user_id, t.token)).collect())
}

/// Removes everything of the bench activity: its Redis keys (forced: a failed run may
/// leave it online or with reservations never persisted), then its orders, ledger,
/// products and the activity row, in one transaction.
pub async fn remove(db: &Db, redis: &RedisClient, group: &str, activity: u64) -> Result<()> {
    crate::ops::flush(db, redis, group, activity, true).await?;
    let mut tx = db.pool().begin().await.at(db)?;
    for sql in [
        "DELETE FROM orders WHERE activity_id = ?",
        "DELETE FROM stock_ledger WHERE activity_id = ?",
        "DELETE FROM products WHERE activity_id = ?",
        "DELETE FROM activities WHERE id = ?",
    ] {
        sqlx::query(sql).bind(activity).execute(&mut *tx).await.at(db)?;
    }
    tx.commit().await.at(db)
}
