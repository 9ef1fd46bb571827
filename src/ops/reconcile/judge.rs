//! Judging one snapshot of an activity (Redis's counters, streams and pending changes against
//! MySQL's orders): the findings and the per-product sums that `reconcile` reports and
//! `--fix` repairs from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::gather::{Delivery, Snapshot};
use super::{sharded, Class, Finding, ProductLine};
use crate::keys;
use crate::model::OrderStatus;
use crate::ops::stock::{Applied, PendingChange};
use crate::reservation::{self, Reservation};

/// Per-user units expected in Redis: orders holding units, queued entries, unreleased orders.
pub(super) type Expected = HashMap<(u64, String), i64>;

/// What [`analyse`] concluded from a snapshot.
pub(super) struct Analysis {
    pub(super) findings: Vec<Finding>,
    pub(super) lines: Vec<ProductLine>,
    pub(super) lost: Vec<Reservation>,
    /// Stock changes pending past the grace period (what `--fix` settles).
    pub(super) unsettled: Vec<PendingChange>,
    pub(super) expected: Expected,
}

/// Judges a snapshot: the stream's entries, the dead letters, the pending stock changes, the
/// orders, then the counters each product line adds up to.
pub(super) fn analyse(s: &Snapshot, activity: u64, grace: Duration) -> Analysis {
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
