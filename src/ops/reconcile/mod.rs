//! `seckill reconcile`: compare Redis (stock, sold, per-user totals, the order stream)
//! with MySQL (orders, `products.sold`, the ledger), classify every difference and, with
//! `fix`, repair what is safe to repair.

mod fix;
mod gather;
mod judge;
mod sharded;
pub mod textfile;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::db::Db;
use crate::error::{DbContext, Result};
use crate::lost_state::{self, Loss};
use crate::redis_client::RedisClient;
use gather::Snapshot;
use judge::{analyse, Analysis, Expected};

/// The kind of a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Queued recently, not yet persisted: fine.
    InFlight,
    /// A stream entry acknowledged (or stuck past the grace period) without an order.
    LostReservation,
    /// An order whose stream entry does not exist.
    OrderWithoutReservation,
    /// Redis or MySQL stock counters disagree with the orders.
    StockDrift,
    /// A user's total in Redis disagrees with the user's orders.
    QuotaDrift,
    /// A cancelled or expired order whose units never went back on sale.
    Unreleased,
    /// A reservation in the dead-letter stream: it holds its units and its buyer's total
    /// until an operator replays it (`seckill consumer dlq`); never repaired away.
    DeadLettered,
    /// A stock change (`stock add`, `stock sold-out`) left pending past the grace period.
    UnsettledStockChange,
    /// A move of a sharded product's units (an order no bucket held whole) noted longer ago
    /// than the grace period and not over: its mover stopped midway.
    UnfinishedMove,
    /// Redis lost the activity's state (see [`crate::lost_state`]): nothing else is judged
    /// and nothing repaired; the way back is `stop`, `hot`, `start`.
    RedisStateLost,
}

impl Class {
    /// Snake-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::InFlight => "in_flight",
            Class::LostReservation => "lost_reservation",
            Class::OrderWithoutReservation => "order_without_reservation",
            Class::StockDrift => "stock_drift",
            Class::QuotaDrift => "quota_drift",
            Class::Unreleased => "unreleased",
            Class::DeadLettered => "dead_lettered",
            Class::UnsettledStockChange => "unsettled_stock_change",
            Class::UnfinishedMove => "unfinished_move",
            Class::RedisStateLost => "redis_state_lost",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// Its kind.
    pub class: Class,
    /// The product, when it concerns one.
    pub product_id: Option<u64>,
    /// Order number, user or counter concerned.
    pub subject: String,
    /// What differs.
    pub detail: String,
    /// What `--fix` does about it (`None`: needs a person).
    pub fix: Option<String>,
}

/// Both sides of one product.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProductLine {
    /// The product.
    pub product_id: u64,
    /// Redis stock, sold, total (`None`: not preheated).
    pub redis: Option<(i64, i64, i64)>,
    /// MySQL total_stock.
    pub mysql_total: i64,
    /// MySQL products.sold.
    pub mysql_sold: i64,
    /// Units of pending + paid orders.
    pub order_units: i64,
    /// Orders per status.
    pub orders: BTreeMap<String, u64>,
    /// Units queued and not yet persisted (in flight + lost).
    pub unpersisted_units: i64,
    /// Units of cancelled/expired orders not yet back in Redis.
    pub unreleased_units: i64,
    /// Units held by dead-lettered reservations.
    pub dead_lettered_units: i64,
    /// Units of orders (in `order_units`) reserved after the Redis view was taken: left out
    /// of the comparison with Redis.
    pub after_snapshot_units: i64,
    /// Units MySQL's total counts and Redis's does not because a stock change is midway
    /// (an add not yet applied in Redis, a sold-out not yet completed in MySQL).
    pub unsettled_units: i64,
    /// Net ledger delta since the last preheat.
    pub ledger_net: i64,
    /// Units of returns under way (a sharded product's released orders whose units are not
    /// yet in their bucket): neither sold nor on sale.
    pub returning_units: i64,
    /// Units of a sharded product taken out of its buckets by moves under way (an order no
    /// bucket held whole, being gathered into one): neither sold nor on sale.
    pub moving_units: i64,
    /// Units a sharded product's stock changes midway (`part`) already moved in its buckets:
    /// added (positive) or withdrawn (negative) there, not yet in its `total`.
    pub midway_units: i64,
    /// Each bucket of a sharded product (empty for a product without buckets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<BucketLine>,
}

/// One bucket of a sharded product: its counters and the units it should have reserved.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BucketLine {
    /// The bucket number.
    pub bucket: u16,
    /// Units on sale in it.
    pub stock: i64,
    /// Units it reserved since `hot`, as Redis counts them.
    pub sold: i64,
    /// Units of the reservations its stream holds since `hot` (orders of any status, queued,
    /// dead-lettered): what `sold` should be.
    pub expected_sold: i64,
}

impl ProductLine {
    /// What Redis stock, sold and total should be, given MySQL and the reservations queued.
    pub fn redis_target(&self) -> (i64, i64, i64) {
        let sold = self.order_units - self.after_snapshot_units
            + self.unpersisted_units
            + self.unreleased_units
            + self.dead_lettered_units;
        let total = self.mysql_total - self.unsettled_units;
        (
            total - sold - self.returning_units - self.moving_units + self.midway_units,
            sold,
            total,
        )
    }
}

/// The outcome of a reconcile run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReconcileReport {
    /// The activity.
    pub activity_id: u64,
    /// Per-product comparison (after repairs, with `fix`).
    pub products: Vec<ProductLine>,
    /// Differences found (before repairs).
    pub findings: Vec<Finding>,
    /// Repairs made (with `fix`).
    pub repairs: Vec<String>,
    /// Differences left after the repairs (only with `fix`).
    pub remaining: Vec<Finding>,
    /// Dead-lettered entries (see `seckill consumer dlq list`).
    pub dead_letters: usize,
    /// True when only in-flight differences are left.
    pub consistent: bool,
}

/// The activities `reconcile --all` checks: every one on sale (online or paused: Redis holds
/// its stock) and every one that ended within `window` (their orders still get paid,
/// cancelled and expired), oldest first.
pub async fn activities_to_check(db: &Db, window: Duration) -> Result<Vec<u64>> {
    let since = chrono::Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    sqlx::query_scalar(
        "SELECT id FROM activities WHERE status IN ('online', 'paused') \
         OR (status = 'ended' AND GREATEST(end_at, updated_at) >= ?) ORDER BY id",
    )
    .bind(since)
    .fetch_all(db.pool())
    .await
    .at(db)
}

/// Compares activity `activity` (and repairs, with `fix`). `grace` is how long a queued
/// reservation may wait for its order before it counts as lost.
pub async fn reconcile(
    db: &Db,
    redis: &RedisClient,
    group: &str,
    activity: u64,
    grace: Duration,
    fix: bool,
) -> Result<ReconcileReport> {
    let snap = gather::snapshot(db, redis, group, activity).await?;
    if let Some(loss) = lost_state::inspect(db, redis, activity).await? {
        return lost(db, redis, &snap, activity, grace, &loss, fix).await;
    }
    let mut first = analyse(&snap, activity, grace);
    let findings = std::mem::take(&mut first.findings);
    let mut report = ReconcileReport {
        activity_id: activity,
        products: std::mem::take(&mut first.lines),
        consistent: findings.iter().all(|f| f.class == Class::InFlight),
        findings,
        repairs: Vec::new(),
        remaining: Vec::new(),
        dead_letters: snap.dead_letter_count,
    };
    if !fix || report.consistent {
        return Ok(report);
    }
    report.repairs = fix::repair(db, redis, group, activity, &snap, &first, grace).await?;
    let after = gather::snapshot(db, redis, group, activity).await?;
    let Analysis {
        findings: remaining,
        lines,
        ..
    } = analyse(&after, activity, grace);
    report.consistent = remaining.iter().all(|f| f.class == Class::InFlight);
    report.remaining = remaining;
    report.products = lines;
    Ok(report)
}

/// The report when Redis lost the activity's state: Redis's counters say nothing then, so
/// the loss is the one finding, and `fix` suspends the sale instead of repairing counters.
async fn lost(
    db: &Db,
    redis: &RedisClient,
    snap: &Snapshot,
    activity: u64,
    grace: Duration,
    loss: &Loss,
    fix: bool,
) -> Result<ReconcileReport> {
    let mut repairs = Vec::new();
    if fix {
        lost_state::suspend(db, redis, loss).await?;
        repairs.push(format!(
            "selling suspended; nothing repaired: run `seckill stop {activity}`, `seckill hot {activity}`, `seckill start {activity}`"
        ));
    }
    let finding = Finding {
        class: Class::RedisStateLost,
        product_id: None,
        subject: format!("{:?}", loss.kind).to_lowercase(),
        detail: format!(
            "{} ({} unit(s) at risk of being sold twice)",
            loss.detail, loss.units_at_risk
        ),
        fix: Some("suspend the sale; an operator runs stop, hot, start".into()),
    };
    Ok(ReconcileReport {
        activity_id: activity,
        products: analyse(snap, activity, grace).lines,
        findings: vec![finding.clone()],
        remaining: if fix { vec![finding] } else { Vec::new() },
        repairs,
        dead_letters: snap.dead_letter_count,
        consistent: false,
    })
}
