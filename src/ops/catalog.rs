//! Activities and their products in MySQL: create, update, list, show, delete.
//!
//! While an activity is `online` its products and window are frozen (Redis holds the live
//! stock and the window it sells in) and it cannot be deleted; nor can it or its products
//! while reservations of it wait to be persisted or replayed. Each check runs under a row
//! lock on the activity, so it cannot interleave with `start`.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::{MySql, Transaction};

use crate::db::Db;
use crate::error::{DbContext, Error, Result};
use crate::model::{Activity, ActivityStatus, Product};
use crate::redis_client::RedisClient;
use crate::reservation;

const ACTIVITY_COLUMNS: &str = "id, name, status, start_at, end_at, hot_at, created_at, updated_at";
pub(crate) const PRODUCT_COLUMNS: &str = "id, activity_id, name, price, total_stock, per_user_limit, \
     max_per_order, shards, sold, version, created_at, updated_at";
/// Longest activity or product name.
pub const MAX_NAME_LEN: usize = 128;

/// What `activity create` needs.
#[derive(Debug, Clone)]
pub struct NewActivity {
    /// Shown to operators.
    pub name: String,
    /// Sale opens.
    pub start_at: DateTime<Utc>,
    /// Sale closes.
    pub end_at: DateTime<Utc>,
    /// When `seckill scheduler` preheats it.
    pub hot: HotAt,
}

/// Most minutes ahead of its start a preheat may be scheduled (`--hot-before`): a year.
pub const MAX_HOT_BEFORE_MINUTES: u32 = 525_600;

/// When `seckill scheduler` is to preheat an activity (`activities.hot_at`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HotAt {
    /// Not scheduled: `hot` is run by hand.
    #[default]
    Unscheduled,
    /// At this time (at or before the start).
    At(DateTime<Utc>),
    /// This many minutes before the start (stored as the time it comes to).
    MinutesBefore(u32),
}

impl HotAt {
    /// The time it names for an activity starting at `start_at`; checked to lie between
    /// 1970 and the start.
    pub fn resolve(self, start_at: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let at = match self {
            HotAt::Unscheduled => return Ok(None),
            HotAt::At(at) => at,
            HotAt::MinutesBefore(minutes) => {
                if minutes > MAX_HOT_BEFORE_MINUTES {
                    return Err(Error::invalid(format!(
                        "hot before: {minutes} minutes is not in 0..={MAX_HOT_BEFORE_MINUTES}"
                    )));
                }
                start_at - chrono::Duration::minutes(i64::from(minutes))
            }
        };
        check_time(at)?;
        if at > start_at {
            return Err(Error::invalid(format!(
                "hot at ({at}) must be at or before the start ({start_at}): the sale cannot open unpreheated"
            )));
        }
        Ok(Some(at))
    }
}

/// Fields `activity update` may change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ActivityChanges {
    /// New name.
    pub name: Option<String>,
    /// New start.
    pub start_at: Option<DateTime<Utc>>,
    /// New end.
    pub end_at: Option<DateTime<Utc>>,
    /// New scheduled preheat. `None` keeps it, moved by as much as the start moves (so a
    /// preheat set "N minutes before the start" stays N minutes before it).
    pub hot: Option<HotAt>,
}

/// What `product add` needs.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// The activity selling it.
    pub activity_id: u64,
    /// Shown to buyers.
    pub name: String,
    /// Unit price.
    pub price: Decimal,
    /// Units on sale.
    pub stock: u32,
    /// Most units one user may hold.
    pub per_user_limit: u32,
    /// Most units in one order; defaults to `per_user_limit`.
    pub max_per_order: Option<u32>,
    /// Stock buckets, 1 to [`MAX_SHARDS`]; defaults to 1.
    pub shards: Option<u16>,
}

/// Fields `product update` may change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    /// New name.
    pub name: Option<String>,
    /// New unit price.
    pub price: Option<Decimal>,
    /// New total stock (not below what is already sold).
    pub stock: Option<u32>,
    /// New per-user limit.
    pub per_user_limit: Option<u32>,
    /// New per-order maximum.
    pub max_per_order: Option<u32>,
    /// New number of stock buckets.
    pub shards: Option<u16>,
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid("name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(format!("name is longer than {MAX_NAME_LEN} characters")));
    }
    Ok(())
}

/// The instants a sale window may name, as words for messages.
pub const WINDOW_RANGE: &str = "between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z";

/// Checks that `t` is within [`WINDOW_RANGE`]: MySQL's DATETIME ends with year 9999, and
/// Redis keeps the window as Unix milliseconds, which start in 1970.
pub fn check_time(t: DateTime<Utc>) -> Result<()> {
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a valid date");
    let first = day(1970, 1, 1).and_hms_opt(0, 0, 0).expect("a valid time").and_utc();
    let last = day(9999, 12, 31)
        .and_hms_milli_opt(23, 59, 59, 999)
        .expect("a valid time")
        .and_utc();
    if t < first || t > last {
        return Err(Error::invalid(format!("{} is not {WINDOW_RANGE}", t.to_rfc3339())));
    }
    Ok(())
}

// Times are bound as UTC DATETIME values (`naive_utc`): bound as `DateTime<Utc>` sqlx sends a
// TIMESTAMP, which MariaDB turns into NULL outside 1970..2038 ("Column 'end_at' cannot be null").
fn check_window(start_at: DateTime<Utc>, end_at: DateTime<Utc>) -> Result<()> {
    check_time(start_at)?;
    check_time(end_at)?;
    if end_at <= start_at {
        return Err(Error::invalid(format!(
            "end ({end_at}) must be after start ({start_at})"
        )));
    }
    Ok(())
}

/// Checks a price: not negative, at most two decimals, fits DECIMAL(12,2).
pub fn check_price(price: Decimal) -> Result<()> {
    if price.is_sign_negative() {
        return Err(Error::invalid(format!("price {price} must not be negative")));
    }
    if price.normalize().scale() > 2 {
        return Err(Error::invalid(format!("price {price} has more than two decimals")));
    }
    if price >= Decimal::from(10_000_000_000u64) {
        return Err(Error::invalid(format!("price {price} is too large")));
    }
    Ok(())
}

/// Most stock buckets one product may have.
pub const MAX_SHARDS: u16 = 1024;

fn check_shards(shards: u16) -> Result<()> {
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(Error::invalid(format!(
            "shards {shards} is out of range 1 to {MAX_SHARDS}"
        )));
    }
    Ok(())
}

fn check_limits(per_user_limit: u32, max_per_order: u32) -> Result<()> {
    if per_user_limit == 0 {
        return Err(Error::invalid("per-user limit must be at least 1"));
    }
    if max_per_order == 0 {
        return Err(Error::invalid("max per order must be at least 1"));
    }
    Ok(())
}

/// Creates an activity in `draft`.
pub async fn create_activity(db: &Db, new: &NewActivity) -> Result<Activity> {
    check_name(&new.name)?;
    check_window(new.start_at, new.end_at)?;
    let hot_at = new.hot.resolve(new.start_at)?;
    let id =
        sqlx::query("INSERT INTO activities (name, status, start_at, end_at, hot_at) VALUES (?, 'draft', ?, ?, ?)")
            .bind(new.name.trim())
            .bind(new.start_at.naive_utc())
            .bind(new.end_at.naive_utc())
            .bind(hot_at.map(|t| t.naive_utc()))
            .execute(db.pool())
            .await
            .at(db)?
            .last_insert_id();
    get_activity(db, id).await
}

/// One activity.
pub async fn get_activity(db: &Db, id: u64) -> Result<Activity> {
    sqlx::query_as::<_, Activity>(&format!("SELECT {ACTIVITY_COLUMNS} FROM activities WHERE id = ?"))
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .at(db)?
        .ok_or_else(|| Error::not_found(format!("activity {id}")))
}

/// Every activity, newest first.
pub async fn list_activities(db: &Db) -> Result<Vec<Activity>> {
    sqlx::query_as::<_, Activity>(&format!("SELECT {ACTIVITY_COLUMNS} FROM activities ORDER BY id DESC"))
        .fetch_all(db.pool())
        .await
        .at(db)
}

/// Locks the activity row for the rest of `tx` and returns it.
pub(crate) async fn lock_activity(db: &Db, tx: &mut Transaction<'_, MySql>, id: u64) -> Result<Activity> {
    sqlx::query_as::<_, Activity>(&format!(
        "SELECT {ACTIVITY_COLUMNS} FROM activities WHERE id = ? FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .at(db)?
    .ok_or_else(|| Error::not_found(format!("activity {id}")))
}

/// Changes name, window and scheduled preheat. The window is refused while online, like the
/// products: Redis sells by its own copy, which `hot` and `start` write, so a change now would
/// be recorded and not applied. To extend or cut a live sale: `stop`, `update`, `start`.
pub async fn update_activity(db: &Db, id: u64, changes: &ActivityChanges) -> Result<Activity> {
    if let Some(name) = &changes.name {
        check_name(name)?;
    }
    let mut tx = db.pool().begin().await.at(db)?;
    let current = lock_activity(db, &mut tx, id).await?;
    let start_at = changes.start_at.unwrap_or(current.start_at);
    let end_at = changes.end_at.unwrap_or(current.end_at);
    check_window(start_at, end_at)?;
    let window_changes = (start_at, end_at) != (current.start_at, current.end_at);
    if window_changes && current.status == ActivityStatus::Online {
        return Err(Error::refused(format!(
            "activity {id} is online: its window is live in Redis; run `seckill stop {id}`, \
             update it, then `seckill start {id}`"
        )));
    }
    let hot_at = match changes.hot {
        Some(hot) => hot.resolve(start_at)?,
        None => match current.hot_at {
            Some(at) => HotAt::At(at + (start_at - current.start_at)).resolve(start_at)?,
            None => None,
        },
    };
    let name = changes.name.as_deref().map(str::trim).unwrap_or(&current.name);
    sqlx::query("UPDATE activities SET name = ?, start_at = ?, end_at = ?, hot_at = ? WHERE id = ?")
        .bind(name)
        .bind(start_at.naive_utc())
        .bind(end_at.naive_utc())
        .bind(hot_at.map(|t| t.naive_utc()))
        .bind(id)
        .execute(&mut *tx)
        .await
        .at(db)?;
    tx.commit().await.at(db)?;
    get_activity(db, id).await
}

/// Refuses while reservations of the activity are not in MySQL: in its stream, not yet
/// acknowledged by `consumer_group` (what `hot` and `flush` check), or dead-lettered and
/// waiting for `consumer dlq replay`. Deleting under them would leave those reservations
/// pointing at rows that no longer exist, dead-lettered for good.
async fn refuse_if_unsettled(redis: &RedisClient, consumer_group: &str, activity_id: u64) -> Result<()> {
    let backlog = reservation::backlog(redis, activity_id, consumer_group).await?;
    if backlog > 0 {
        return Err(Error::refused(format!(
            "activity {activity_id} has {backlog} reservations not yet persisted; \
             let `seckill consumer` drain them first"
        )));
    }
    let dead = reservation::dlq::count(redis, activity_id).await?;
    if dead > 0 {
        return Err(Error::refused(format!(
            "activity {activity_id} has {dead} dead-lettered reservations; \
             run `seckill consumer dlq replay {activity_id}` first"
        )));
    }
    Ok(())
}

/// Deletes an activity that is not online, has no orders and no reservations waiting to
/// be persisted or replayed, with its products and ledger.
pub async fn delete_activity(db: &Db, redis: &RedisClient, consumer_group: &str, id: u64) -> Result<Activity> {
    let mut tx = db.pool().begin().await.at(db)?;
    let activity = lock_activity(db, &mut tx, id).await?;
    if activity.status == ActivityStatus::Online {
        return Err(Error::refused(format!("activity {id} is online; stop it first")));
    }
    refuse_if_unsettled(redis, consumer_group, id).await?;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE activity_id = ?")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .at(db)?;
    if orders > 0 {
        return Err(Error::refused(format!(
            "activity {id} has {orders} orders; it is kept as their record"
        )));
    }
    for sql in [
        "DELETE FROM stock_ledger WHERE activity_id = ?",
        "DELETE FROM products WHERE activity_id = ?",
        "DELETE FROM activities WHERE id = ?",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await.at(db)?;
    }
    tx.commit().await.at(db)?;
    Ok(activity)
}

/// Adds a product to an activity that is not online.
pub async fn add_product(db: &Db, new: &NewProduct) -> Result<Product> {
    check_name(&new.name)?;
    check_price(new.price)?;
    let max_per_order = new.max_per_order.unwrap_or(new.per_user_limit);
    check_limits(new.per_user_limit, max_per_order)?;
    let shards = new.shards.unwrap_or(1);
    check_shards(shards)?;
    let mut tx = db.pool().begin().await.at(db)?;
    let activity = lock_activity(db, &mut tx, new.activity_id).await?;
    refuse_if_frozen(&activity)?;
    let id = sqlx::query(
        "INSERT INTO products (activity_id, name, price, total_stock, per_user_limit, max_per_order, shards) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.activity_id)
    .bind(new.name.trim())
    .bind(new.price)
    .bind(new.stock)
    .bind(new.per_user_limit)
    .bind(max_per_order)
    .bind(shards)
    .execute(&mut *tx)
    .await
    .at(db)?
    .last_insert_id();
    tx.commit().await.at(db)?;
    get_product(db, id).await
}

fn refuse_if_frozen(activity: &Activity) -> Result<()> {
    match activity.status {
        ActivityStatus::Online => Err(Error::refused(format!(
            "activity {} is online: its products are frozen; run `seckill stop {}` first",
            activity.id, activity.id
        ))),
        _ => Ok(()),
    }
}

/// One product.
pub async fn get_product(db: &Db, id: u64) -> Result<Product> {
    sqlx::query_as::<_, Product>(&format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?"))
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .at(db)?
        .ok_or_else(|| Error::not_found(format!("product {id}")))
}

/// The products of an activity (which must exist), by id.
pub async fn list_products(db: &Db, activity_id: u64) -> Result<Vec<Product>> {
    get_activity(db, activity_id).await?;
    sqlx::query_as::<_, Product>(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE activity_id = ? ORDER BY id"
    ))
    .bind(activity_id)
    .fetch_all(db.pool())
    .await
    .at(db)
}

/// Changes a product of an activity that is not online.
pub async fn update_product(db: &Db, id: u64, changes: &ProductChanges) -> Result<Product> {
    if let Some(name) = &changes.name {
        check_name(name)?;
    }
    if let Some(price) = changes.price {
        check_price(price)?;
    }
    let current = get_product(db, id).await?;
    let mut tx = db.pool().begin().await.at(db)?;
    let activity = lock_activity(db, &mut tx, current.activity_id).await?;
    refuse_if_frozen(&activity)?;
    let current = sqlx::query_as::<_, Product>(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ? FOR UPDATE"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .at(db)?;
    let stock = changes.stock.unwrap_or(current.total_stock);
    if stock < current.sold {
        return Err(Error::invalid(format!(
            "stock {stock} is below the {} units already sold",
            current.sold
        )));
    }
    let per_user_limit = changes.per_user_limit.unwrap_or(current.per_user_limit);
    let max_per_order = changes.max_per_order.unwrap_or(current.max_per_order);
    check_limits(per_user_limit, max_per_order)?;
    let shards = changes.shards.unwrap_or(current.shards);
    check_shards(shards)?;
    sqlx::query(
        "UPDATE products SET name = ?, price = ?, total_stock = ?, per_user_limit = ?, \
         max_per_order = ?, shards = ? WHERE id = ?",
    )
    .bind(changes.name.as_deref().map(str::trim).unwrap_or(&current.name))
    .bind(changes.price.unwrap_or(current.price))
    .bind(stock)
    .bind(per_user_limit)
    .bind(max_per_order)
    .bind(shards)
    .bind(id)
    .execute(&mut *tx)
    .await
    .at(db)?;
    tx.commit().await.at(db)?;
    get_product(db, id).await
}

/// Deletes a product of an activity that is not online, if it has no orders and the
/// activity has no reservations waiting to be persisted or replayed.
pub async fn delete_product(db: &Db, redis: &RedisClient, consumer_group: &str, id: u64) -> Result<Product> {
    let product = get_product(db, id).await?;
    let mut tx = db.pool().begin().await.at(db)?;
    let activity = lock_activity(db, &mut tx, product.activity_id).await?;
    refuse_if_frozen(&activity)?;
    refuse_if_unsettled(redis, consumer_group, activity.id).await?;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE product_id = ?")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .at(db)?;
    if orders > 0 {
        return Err(Error::refused(format!(
            "product {id} has {orders} orders; it is kept as their record"
        )));
    }
    sqlx::query("DELETE FROM stock_ledger WHERE product_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .at(db)?;
    sqlx::query("DELETE FROM products WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .at(db)?;
    tx.commit().await.at(db)?;
    Ok(product)
}
