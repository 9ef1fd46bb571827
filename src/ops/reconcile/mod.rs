//! `seckill reconcile`: compare Redis (stock, sold, per-user totals, the order stream)
//! with MySQL (orders, `products.sold`, the ledger), classify every difference and, with
//! `fix`, repair what is safe to repair.

mod fix;
mod gather;
mod sharded;
pub mod textfile;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::db::Db;
use crate::error::{DbContext, Result};
use crate::keys;
use crate::lost_state::{self, Loss};
use crate::model::OrderStatus;
use crate::ops::stock::{Applied, PendingChange};
use crate::redis_client::RedisClient;
use crate::reservation::{self, Reservation};
use gather::{Delivery, Snapshot};

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
        return lost(redis, &snap, activity, grace, &loss, fix).await;
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
    redis: &RedisClient,
    snap: &Snapshot,
    activity: u64,
    grace: Duration,
    loss: &Loss,
    fix: bool,
) -> Result<ReconcileReport> {
    let mut repairs = Vec::new();
    if fix {
        lost_state::suspend(redis, loss).await?;
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

/// Per-user units expected in Redis: orders holding units, queued entries, unreleased orders.
type Expected = HashMap<(u64, String), i64>;

/// What [`analyse`] concluded from a snapshot.
struct Analysis {
    findings: Vec<Finding>,
    lines: Vec<ProductLine>,
    lost: Vec<Reservation>,
    /// Stock changes pending past the grace period (what `--fix` settles).
    unsettled: Vec<PendingChange>,
    expected: Expected,
}

/// Judges a snapshot: the stream's entries, the dead letters, the pending stock changes, the
/// orders, then the counters each product line adds up to.
fn analyse(s: &Snapshot, activity: u64, grace: Duration) -> Analysis {
    let mut judge = Judge::new(s, activity, grace);
    let in_stream = judge.stream_entries();
    judge.dead_letters();
    judge.stock_changes();
    judge.orders(&in_stream);
    sharded::judge(s, activity, &mut judge.lines, &mut judge.findings, &mut judge.expected);
    sharded::judge_moves(
        s,
        judge.grace_ms,
        &mut judge.lines,
        &mut judge.findings,
        &mut judge.expected,
    );
    judge.counters();
    judge.finish()
}

/// The findings and per-product sums [`analyse`] builds up, one kind of record at a time.
struct Judge<'s> {
    s: &'s Snapshot,
    activity: u64,
    grace_ms: i64,
    findings: Vec<Finding>,
    lines: BTreeMap<u64, ProductLine>,
    lost: Vec<Reservation>,
    unsettled: Vec<PendingChange>,
    expected: Expected,
}

impl<'s> Judge<'s> {
    fn new(s: &'s Snapshot, activity: u64, grace: Duration) -> Self {
        let lines = s
            .products
            .iter()
            .map(|p| {
                (
                    p.id,
                    ProductLine {
                        product_id: p.id,
                        redis: s.redis_products.get(&p.id).copied(),
                        mysql_total: i64::from(p.total_stock),
                        mysql_sold: i64::from(p.sold),
                        ledger_net: s.ledger_net.get(&p.id).copied().unwrap_or(0),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Judge {
            s,
            activity,
            grace_ms: grace.as_millis() as i64,
            findings: Vec::new(),
            lines,
            lost: Vec::new(),
            unsettled: Vec::new(),
            expected: HashMap::new(),
        }
    }

    /// Stream purchases without an order: in flight while young, lost once acknowledged or
    /// past the grace period. Returns the order numbers of every purchase in the stream.
    fn stream_entries(&mut self) -> HashSet<String> {
        let (s, activity) = (self.s, self.activity);
        let mut in_stream = HashSet::new();
        for (entry, delivery) in &s.entries {
            let Ok(all) = reservation::decode_all(activity, entry) else {
                in_stream.insert(keys::order_no(activity, &entry.id));
                continue;
            };
            for (index, decoded) in (0u32..).zip(all) {
                let order_no = keys::purchase_order_no(activity, &entry.id, index);
                in_stream.insert(order_no.clone());
                if s.orders.contains_key(&order_no) || s.dead_letters.contains_key(&order_no) {
                    continue;
                }
                let Ok(r) = decoded else {
                    continue;
                };
                self.stream_purchase(r, *delivery);
            }
        }
        in_stream
    }

    /// One stream purchase without an order.
    fn stream_purchase(&mut self, r: Reservation, delivery: Delivery) {
        let age_ms = self.s.now_ms - r.reserved_at.timestamp_millis();
        let young = age_ms < self.grace_ms;
        let (class, detail, fix) = match (delivery, young) {
            (Delivery::Acked, _) => (
                Class::LostReservation,
                "entry acknowledged but no order".to_string(),
                Some("persist it from its stream entry".to_string()),
            ),
            (_, true) => (Class::InFlight, format!("queued {age_ms} ms ago"), None),
            (d, false) => (
                Class::LostReservation,
                format!("{d:?} for {} s with no order", age_ms / 1000).to_lowercase(),
                Some("persist it from its stream entry".to_string()),
            ),
        };
        if let Some(line) = self.lines.get_mut(&r.product_id) {
            line.unpersisted_units += i64::from(r.quantity);
        }
        *self.expected.entry((r.product_id, r.user_id.clone())).or_default() += i64::from(r.quantity);
        self.findings.push(Finding {
            class,
            product_id: Some(r.product_id),
            subject: r.order_no.clone(),
            detail,
            fix,
        });
        if class == Class::LostReservation {
            self.lost.push(r);
        }
    }

    /// Dead-lettered reservations without an order: they hold their units.
    fn dead_letters(&mut self) {
        let (s, activity) = (self.s, self.activity);
        for (order_no, (entry, index, error)) in &s.dead_letters {
            if s.orders.contains_key(order_no) {
                continue;
            }
            let (product_id, detail) = match reservation::decode_at(activity, entry, *index) {
                Ok(r) => {
                    if let Some(line) = self.lines.get_mut(&r.product_id) {
                        line.dead_lettered_units += i64::from(r.quantity);
                    }
                    *self.expected.entry((r.product_id, r.user_id.clone())).or_default() += i64::from(r.quantity);
                    (
                        Some(r.product_id),
                        format!("{} unit(s) held for {}; dead-lettered: {error}", r.quantity, r.user_id),
                    )
                }
                Err(why) => (None, format!("unreadable reservation ({why}); dead-lettered: {error}")),
            };
            self.findings.push(Finding {
                class: Class::DeadLettered,
                product_id,
                subject: order_no.clone(),
                detail,
                fix: None,
            });
        }
    }

    /// Stock changes left pending: in flight while young, unsettled past the grace period.
    fn stock_changes(&mut self) {
        let s = self.s;
        for change in &s.pending_changes {
            let applied = Applied::parse(s.stock_ops.get(&change.ledger_id).map(String::as_str));
            let counted_by_mysql_only = match (change.op.as_str(), applied) {
                ("sold_out" | "remove", Applied::Units(withdrawn)) => withdrawn,
                ("sold_out" | "remove", _) => 0,
                (_, Applied::No | Applied::Void | Applied::Started) => change.delta,
                _ => 0,
            };
            if let Some(line) = self.lines.get_mut(&change.product_id) {
                line.unsettled_units += counted_by_mysql_only;
            }
            let what = match change.op.as_str() {
                "sold_out" => "sold-out".to_string(),
                "remove" => format!("stock remove of {} unit(s)", -change.delta),
                _ => format!("stock add of {} unit(s)", change.delta),
            };
            let seen = match applied {
                Applied::No => "not applied in Redis".to_string(),
                Applied::Units(n) => format!("applied in Redis ({n} unit(s))"),
                Applied::NotLoaded => "product not in Redis".to_string(),
                Applied::Void => "voided in Redis".to_string(),
                Applied::Started => "begun in Redis, not in every bucket yet".to_string(),
            };
            let young = change.age_ms < self.grace_ms;
            let class = if young {
                Class::InFlight
            } else {
                Class::UnsettledStockChange
            };
            self.findings.push(Finding {
                class,
                product_id: Some(change.product_id),
                subject: format!("stock change #{}", change.ledger_id),
                detail: format!("{what} pending for {} ms, {seen}", change.age_ms),
                fix: (!young).then(|| "complete it if Redis applied it, else undo it in MySQL".to_string()),
            });
            if !young {
                self.unsettled.push(change.clone());
            }
        }
    }

    /// MySQL's orders: the units they hold, cancelled or expired ones whose units never went
    /// back on sale, and orders the stream has no entry for.
    fn orders(&mut self, in_stream: &HashSet<String>) {
        let s = self.s;
        let first_entry = s.entries.first().map(|(e, _)| e.id.clone());
        let mut orders: Vec<_> = s.orders.iter().collect();
        orders.sort_by(|a, b| a.0.cmp(b.0));
        for (order_no, (product, user, quantity, status)) in orders {
            let q = i64::from(*quantity);
            let loaded = s.redis_products.contains_key(product);
            let holds = matches!(status, OrderStatus::Pending | OrderStatus::Paid);
            let after_cut = keys::parse_order_no(order_no).is_some_and(|(_, id)| s.after_cut(id));
            if let Some(line) = self.lines.get_mut(product) {
                *line.orders.entry(status.to_string()).or_default() += 1;
                if holds {
                    line.order_units += q;
                    if after_cut {
                        line.after_snapshot_units += q;
                    }
                }
            }
            if after_cut {
                // Reserved after the Redis view was taken: neither its unit nor its buyer's
                // total is in that view, so it says nothing about drift.
                continue;
            }
            match status {
                OrderStatus::Pending | OrderStatus::Paid => {
                    *self.expected.entry((*product, user.clone())).or_default() += q
                }
                _ if loaded && !s.released.contains(order_no) => {
                    if let Some(line) = self.lines.get_mut(product) {
                        line.unreleased_units += q;
                    }
                    *self.expected.entry((*product, user.clone())).or_default() += q;
                    self.findings.push(Finding {
                        class: Class::Unreleased,
                        product_id: Some(*product),
                        subject: order_no.clone(),
                        detail: format!("{status} order's {q} unit(s) not back on sale"),
                        fix: Some("run release.lua (idempotent)".into()),
                    });
                }
                _ => {}
            }
            // Orders older than the stream's first entry predate a flush; only judge the rest.
            let covered = match (&first_entry, keys::parse_order_no(order_no)) {
                (Some(first), Some((_, id))) => reservation::cmp_ids(id, first).is_ge(),
                _ => false,
            };
            if covered && !in_stream.contains(order_no) {
                self.findings.push(Finding {
                    class: Class::OrderWithoutReservation,
                    product_id: Some(*product),
                    subject: order_no.clone(),
                    detail: "no stream entry for this order".into(),
                    fix: None,
                });
            }
        }
    }

    /// Each product's stock counters, and each buyer's units held in Redis against what
    /// the orders and the queue say.
    fn counters(&mut self) {
        let s = self.s;
        for line in self.lines.values() {
            stock_findings(line, &mut self.findings);
            let (Some(bought), Some(_)) = (s.bought.get(&line.product_id), line.redis) else {
                continue;
            };
            let mut users: Vec<&String> = bought
                .keys()
                .chain(
                    self.expected
                        .keys()
                        .filter(|(p, _)| *p == line.product_id)
                        .map(|(_, u)| u),
                )
                .collect();
            users.sort();
            users.dedup();
            for user in users {
                let have = bought.get(user).copied().unwrap_or(0);
                let want = self
                    .expected
                    .get(&(line.product_id, user.clone()))
                    .copied()
                    .unwrap_or(0);
                if have != want {
                    self.findings.push(Finding {
                        class: Class::QuotaDrift,
                        product_id: Some(line.product_id),
                        subject: user.clone(),
                        detail: format!("Redis holds {have} unit(s), orders and queue say {want}"),
                        fix: Some(format!("set to {want}")),
                    });
                }
            }
        }
    }

    fn finish(mut self) -> Analysis {
        self.findings
            .sort_by(|a, b| (a.class, a.product_id, &a.subject).cmp(&(b.class, b.product_id, &b.subject)));
        Analysis {
            findings: self.findings,
            lines: self.lines.into_values().collect(),
            lost: self.lost,
            unsettled: self.unsettled,
            expected: self.expected,
        }
    }
}

fn stock_findings(line: &ProductLine, findings: &mut Vec<Finding>) {
    if line.order_units > line.mysql_total {
        findings.push(Finding {
            class: Class::StockDrift,
            product_id: Some(line.product_id),
            subject: "oversold".into(),
            detail: format!(
                "orders hold {} units but total_stock is {}",
                line.order_units, line.mysql_total
            ),
            fix: None,
        });
    }
    let mut drift = |subject: &str, detail: String, fix: &str| {
        findings.push(Finding {
            class: Class::StockDrift,
            product_id: Some(line.product_id),
            subject: subject.into(),
            detail,
            fix: Some(fix.into()),
        });
    };
    if line.mysql_sold != line.order_units {
        drift(
            "mysql sold",
            format!(
                "products.sold {} but pending+paid orders hold {}",
                line.mysql_sold, line.order_units
            ),
            "set products.sold from the orders",
        );
    }
    let Some((stock, sold, total)) = line.redis else { return };
    let (_, want_sold, want_total) = line.redis_target();
    let (returning, moving, midway) = (line.returning_units, line.moving_units, line.midway_units);
    if stock + sold + returning + moving - midway != total {
        drift(
            "redis stock",
            if returning == 0 && moving == 0 && midway == 0 {
                format!("stock {stock} + sold {sold} != total {total}")
            } else {
                format!("stock {stock} + sold {sold} + returns under way {returning} + units moves hold {moving} - units moved by changes midway {midway} != total {total}")
            },
            "restore Redis counters from MySQL",
        );
    }
    if total != want_total {
        drift(
            "redis total",
            format!(
                "Redis total {total} != MySQL total_stock {} - units of stock changes midway {}",
                line.mysql_total, line.unsettled_units
            ),
            "restore Redis counters from MySQL",
        );
    }
    if sold != want_sold {
        drift(
            "redis sold",
            format!(
                "Redis sold {sold} != orders {} (- {} reserved after the snapshot) + queued {} + unreleased {} + dead-lettered {}",
                line.order_units,
                line.after_snapshot_units,
                line.unpersisted_units,
                line.unreleased_units,
                line.dead_lettered_units
            ),
            "restore Redis counters from MySQL",
        );
    }
}
