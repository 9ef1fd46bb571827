//! Reconcile of the products whose stock is in buckets (see [`crate::buckets`]).
//!
//! What can be checked bucket by bucket is `sold`: the units its stream's reservations since
//! `hot` hold (an order number names its entry, and the entry id its bucket). A bucket's
//! `stock` cannot be: adds and returns land in buckets their ledger row or order number
//! picks. So the stock is judged over all buckets, against MySQL as for any product, with
//! returns under way (`returning`) and changes midway (`part`, the buckets' `op:L`) counted.
//!
//! The repair is safe against buyers without stopping the sale: the product's own `sold` and
//! `total` are written by compare-and-set in the activity's slot (only a return or a stock
//! change moves them, and the activity's view was read before the buckets'), and each bucket
//! is moved by deltas (`bucket_repair.lua`), which purchases since the view leave right.
//! A product with a stock change, a return or a move under way is not repaired (run again).
//! Units a move holds (`m:<id>` in its buckets) count as in flight, not as missing stock.

use std::collections::{BTreeMap, HashMap};

use super::fix::ledger;
use super::gather::Snapshot;
use super::{BucketLine, Class, Finding, ProductLine};
use crate::buckets::moves::{finish_left, Finished};
use crate::buckets::quota::bucket_of_user;
use crate::buckets::split;
use crate::buckets::stock::{finish_return, Return};
use crate::db::Db;
use crate::error::{DbContext, RedisContext, Result};
use crate::keys;
use crate::ops::stock::Applied;
use crate::redis_client::RedisClient;
use crate::reservation;
use crate::scripts;

/// Every reservation the snapshot knows of (orders of any status, queued, dead-lettered),
/// order number -> (product, quantity).
fn reservations(s: &Snapshot, activity: u64) -> HashMap<String, (u64, u32)> {
    let mut known: HashMap<String, (u64, u32)> = s
        .orders
        .iter()
        .map(|(no, (p, _, q, _))| (no.clone(), (*p, *q)))
        .collect();
    for (entry, _) in &s.entries {
        if keys::bucket_of_entry(&entry.id).is_none() {
            continue;
        }
        let Ok(all) = reservation::decode_all(activity, entry) else {
            continue;
        };
        for (index, decoded) in (0u32..).zip(all) {
            if let Ok(r) = decoded {
                known
                    .entry(keys::purchase_order_no(activity, &entry.id, index))
                    .or_insert((r.product_id, r.quantity));
            }
        }
    }
    for (no, (entry, index, _)) in &s.dead_letters {
        if let Ok(r) = reservation::decode_at(activity, entry, *index) {
            known.entry(no.clone()).or_insert((r.product_id, r.quantity));
        }
    }
    known
}

/// Fills in the sharded products' lines (buckets, returns under way, changes midway) and
/// reports each bucket whose `sold` disagrees with its stream, and each return cut short.
pub(super) fn judge(
    s: &Snapshot,
    activity: u64,
    lines: &mut BTreeMap<u64, ProductLine>,
    findings: &mut Vec<Finding>,
    totals: &mut super::Expected,
) {
    if s.sharded.is_empty() {
        return;
    }
    let mut expected: HashMap<(u64, u16), i64> = HashMap::new();
    for (no, (product, quantity)) in reservations(s, activity) {
        let Some(views) = s.buckets.get(&product) else {
            continue;
        };
        let Some((_, id)) = keys::parse_order_no(&no) else {
            continue;
        };
        let Some(k) = keys::bucket_of_entry(id) else {
            continue;
        };
        let Some(Some(view)) = views.get(usize::from(k)) else {
            continue;
        };
        let since_hot = view.from.is_empty() || reservation::cmp_ids(id, &view.from).is_gt();
        if since_hot && !s.after_cut(id) {
            *expected.entry((product, k)).or_default() += i64::from(quantity);
        }
    }
    for (&product, views) in &s.buckets {
        let Some(line) = lines.get_mut(&product) else {
            continue;
        };
        let shards = s.sharded.get(&product).copied().unwrap_or(0);
        for (k, view) in (0u16..).zip(views) {
            let Some(view) = view else {
                findings.push(drift(product, format!("bucket {k}"), "missing in Redis".into(), None));
                continue;
            };
            let want = expected.get(&(product, k)).copied().unwrap_or(0);
            line.buckets.push(BucketLine {
                bucket: k,
                stock: view.stock,
                sold: view.sold,
                expected_sold: want,
            });
            if view.sold != want {
                findings.push(drift(
                    product,
                    format!("bucket {k} sold"),
                    format!(
                        "Redis sold {} != {want} unit(s) its stream reserved since hot",
                        view.sold
                    ),
                    Some("move the bucket's sold by the difference"),
                ));
            }
            if view.stock < 0 {
                findings.push(drift(
                    product,
                    format!("bucket {k} stock"),
                    format!("stock {} below zero", view.stock),
                    Some("restore the buckets' stock from MySQL"),
                ));
            }
        }
        let mut returning: Vec<_> = s.returning.iter().filter(|(_, (p, _, _))| *p == product).collect();
        returning.sort();
        for (order_no, (_, quantity, _)) in returning {
            let Some((_, user, _, _)) = s.orders.get(order_no) else {
                continue;
            };
            let k = bucket_of_user(user, shards);
            let done = views
                .get(usize::from(k))
                .and_then(Option::as_ref)
                .is_some_and(|v| v.returns.contains(order_no));
            if done {
                continue;
            }
            // The buyer's total drops with the units going into the bucket, not before.
            *totals.entry((product, user.clone())).or_default() += i64::from(*quantity);
            line.returning_units += i64::from(*quantity);
            findings.push(Finding {
                class: Class::Unreleased,
                product_id: Some(product),
                subject: order_no.clone(),
                detail: format!("released; its {quantity} unit(s) not yet in bucket {k}"),
                fix: Some(format!("put them into bucket {k} (once)")),
            });
        }
        for change in s.pending_changes.iter().filter(|c| c.product_id == product) {
            if Applied::parse(s.stock_ops.get(&change.ledger_id).map(String::as_str)) != Applied::Started {
                continue;
            }
            let moved: i64 = views
                .iter()
                .flatten()
                .filter_map(|v| v.ops.get(&change.ledger_id))
                .sum();
            line.midway_units += if change.op == "adjust" { moved } else { -moved };
        }
    }
}

/// Counts the units moves hold (from the buckets' `m:<id>` fields, each read with its bucket's
/// counters, so right in any order the views were read) and the buyers' totals of noted moves
/// not sold yet; reports each move: in flight while young or begun after the view, unfinished
/// once older than the grace period.
pub(super) fn judge_moves(
    s: &Snapshot,
    grace_ms: i64,
    lines: &mut BTreeMap<u64, ProductLine>,
    findings: &mut Vec<Finding>,
    expected: &mut super::Expected,
) {
    // (product, move id) -> (units in hand, sold in its target)
    let mut moves: BTreeMap<(u64, &str), (i64, bool)> = BTreeMap::new();
    for (&product, views) in &s.buckets {
        for view in views.iter().flatten() {
            for (id, &(out, target)) in &view.moves {
                let m = moves.entry((product, id.as_str())).or_default();
                m.0 += out;
                m.1 |= target;
            }
        }
    }
    for (id, note) in &s.moves {
        moves.entry((note.product, id.as_str())).or_default();
    }
    for ((product, id), (units, sold)) in moves {
        if let Some(line) = lines.get_mut(&product) {
            line.moving_units += units;
        }
        let Some(note) = s.moves.get(id).filter(|n| n.product == product) else {
            if units != 0 {
                findings.push(Finding {
                    class: Class::InFlight,
                    product_id: Some(product),
                    subject: format!("move {id}"),
                    detail: format!("{units} unit(s) in hand, begun after the view"),
                    fix: None,
                });
            }
            continue;
        };
        if !sold {
            // The buyer's total holds the order's units while its move is under way.
            *expected.entry((product, note.user.clone())).or_default() += i64::from(note.quantity);
        }
        let age_ms = s.now_ms - note.noted_ms;
        let detail = format!(
            "{} unit(s) for {} noted {} ms ago, {units} in hand{}",
            note.quantity,
            note.user,
            age_ms,
            if sold { ", sold" } else { "" }
        );
        findings.push(if age_ms < grace_ms {
            Finding {
                class: Class::InFlight,
                product_id: Some(product),
                subject: format!("move {id}"),
                detail,
                fix: None,
            }
        } else {
            Finding {
                class: Class::UnfinishedMove,
                product_id: Some(product),
                subject: format!("move {id}"),
                detail,
                fix: Some(if sold {
                    "drop the note (its units were sold)".into()
                } else {
                    "put its units back into their buckets (once)".into()
                }),
            }
        });
    }
}

/// Ends the moves noted longer ago than `grace` in `snap` (their movers stopped midway), once
/// each ([`finish_left`]). Returns a line per move.
pub(super) async fn finish_moves(
    redis: &RedisClient,
    activity: u64,
    snap: &Snapshot,
    grace: std::time::Duration,
) -> Result<Vec<String>> {
    let mut moves: Vec<_> = snap
        .moves
        .iter()
        .filter(|(_, n)| snap.now_ms - n.noted_ms >= grace.as_millis() as i64)
        .collect();
    moves.sort_by_key(|(id, _)| id.as_str());
    let mut done = Vec::new();
    for (id, note) in moves {
        done.push(match finish_left(redis, activity, id, note).await? {
            Finished::Sold => format!("move {id}: its units were sold; note dropped"),
            Finished::Back(units) => {
                format!("move {id}: {units} unit(s) back into their buckets (left behind); note dropped")
            }
        });
    }
    Ok(done)
}

fn drift(product: u64, subject: String, detail: String, fix: Option<&str>) -> Finding {
    Finding {
        class: Class::StockDrift,
        product_id: Some(product),
        subject,
        detail,
        fix: fix.map(str::to_string),
    }
}

/// Finishes the returns of sharded products cut short (the units into their bucket, once;
/// the note dropped). Returns a line per return whose units went on sale now.
pub(super) async fn finish_returns(redis: &RedisClient, activity: u64, snap: &Snapshot) -> Result<Vec<String>> {
    let mut returning: Vec<_> = snap.returning.iter().collect();
    returning.sort();
    let mut done = Vec::new();
    for (order_no, (product, quantity, epoch)) in returning {
        let (Some(&shards), Some((_, user, _, _))) = (snap.sharded.get(product), snap.orders.get(order_no)) else {
            continue;
        };
        let back = Return {
            order_no,
            user,
            quantity: *quantity,
            epoch,
        };
        if finish_return(redis, activity, *product, shards, &back).await? == 1 {
            done.push(format!(
                "order {order_no}: {quantity} unit(s) into bucket {}, {user}'s total lowered (a return cut short)",
                bucket_of_user(user, shards)
            ));
        }
    }
    Ok(done)
}

/// Each bucket's stock change so the buckets hold `delta` units more (or fewer): added
/// spread evenly, withdrawn from the fullest buckets first, none below zero.
fn stock_plan(buckets: &[BucketLine], delta: i64) -> Vec<i64> {
    if delta >= 0 {
        return split(delta as u64, buckets.len() as u16)
            .into_iter()
            .map(|u| u as i64)
            .collect();
    }
    let mut plan = vec![0; buckets.len()];
    let mut order: Vec<usize> = (0..buckets.len()).collect();
    order.sort_by_key(|&i| -buckets[i].stock);
    let mut left = -delta;
    for i in order {
        let take = left.min(buckets[i].stock.max(0));
        plan[i] = -take;
        left -= take;
    }
    plan
}

/// Repairs one sharded product's counters from `now` (see the module docs); `None` when
/// they are right. Returns what it did or why it did not.
pub(super) async fn repair_product(
    db: &Db,
    redis: &RedisClient,
    activity: u64,
    now: &Snapshot,
    line: &ProductLine,
) -> Result<Option<String>> {
    let product = line.product_id;
    let (Some(&(sold_seen, total_seen)), Some(views), Some(have)) = (
        now.sharded_counters.get(&product),
        now.buckets.get(&product),
        line.redis,
    ) else {
        return Ok(None);
    };
    let (want_stock, want_sold, want_total) = line.redis_target();
    let buckets_right = line.buckets.iter().all(|b| b.sold == b.expected_sold);
    if have == (want_stock, want_sold, want_total) && buckets_right {
        return Ok(None);
    }
    let not_fixed = |why: String| Ok(Some(format!("product {product}: NOT fixed: {why}")));
    if let Some(c) = now.pending_changes.iter().find(|c| c.product_id == product) {
        return not_fixed(format!(
            "stock change #{} is under way; run reconcile again",
            c.ledger_id
        ));
    }
    if line.returning_units != 0 {
        return not_fixed("a return is under way; run reconcile again".into());
    }
    if line.moving_units != 0 || now.moves.values().any(|n| n.product == product) {
        return not_fixed("a move is under way; run reconcile again".into());
    }
    if views.iter().any(Option::is_none) || line.buckets.is_empty() {
        return not_fixed("a bucket is missing; stop the sale, run `seckill hot`".into());
    }
    if want_stock < 0 {
        return not_fixed(format!("units held ({want_sold}) exceed total stock ({want_total})"));
    }
    let bucket_sold: i64 = line.buckets.iter().map(|b| b.expected_sold).sum();
    let keys = redis.keys();
    let cas: i64 = scripts::REPAIR_SHARDED
        .key(keys.product(activity, product))
        .arg(sold_seen)
        .arg(total_seen)
        .arg(want_sold - bucket_sold)
        .arg(want_total)
        .invoke_async(&mut redis.conn())
        .await
        .at(redis)?;
    match cas {
        1 => {}
        0 => {
            return Ok(Some(format!(
                "product {product}: its counters changed meanwhile (a return or a stock change); run reconcile again"
            )))
        }
        _ => return Ok(None),
    }
    let plan = stock_plan(&line.buckets, want_stock - have.0);
    let (mut moved, mut notes) = (0, Vec::new());
    for (b, dstock) in line.buckets.iter().zip(plan) {
        let dsold = b.expected_sold - b.sold;
        if dsold == 0 && dstock == 0 {
            continue;
        }
        let epoch = views[usize::from(b.bucket)]
            .as_ref()
            .map(|v| v.epoch.clone())
            .unwrap_or_default();
        let r = scripts::BUCKET_REPAIR
            .key(keys.bucket_product(activity, b.bucket, product))
            .arg(&epoch)
            .arg(dsold)
            .arg(dstock)
            .invoke_async::<i64>(&mut redis.conn())
            .await;
        match r {
            Ok(did) => {
                moved += did;
                if did != dstock {
                    notes.push(format!(
                        "bucket {}: {} of {dstock} unit(s) (bought meanwhile)",
                        b.bucket, did
                    ));
                }
            }
            Err(e) if e.to_string().contains("RELOADED") => notes.push(format!("bucket {}: reloaded by hot", b.bucket)),
            Err(e) => return Err(redis.err(e)),
        }
    }
    let what = format!(
        "reconcile: buckets' stock/sold/total {}/{}/{} -> {want_stock}/{want_sold}/{want_total} ({moved:+} unit(s) on sale){}",
        have.0,
        have.1,
        have.2,
        if notes.is_empty() {
            String::new()
        } else {
            format!("; {}; run reconcile again", notes.join(", "))
        }
    );
    let mut tx = db.pool().begin().await.at(db)?;
    ledger(db, &mut tx, activity, product, moved, &what).await?;
    tx.commit().await.at(db)?;
    Ok(Some(format!("product {product}: {}", &what[11..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(stock: &[i64]) -> Vec<BucketLine> {
        (0u16..)
            .zip(stock)
            .map(|(bucket, &stock)| BucketLine {
                bucket,
                stock,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_withdrawal_takes_from_the_fullest_buckets_and_never_below_zero() {
        assert_eq!(stock_plan(&buckets(&[25, 40, 25, 25]), -15), vec![0, -15, 0, 0]);
        assert_eq!(stock_plan(&buckets(&[3, 1, 0, 2]), -5), vec![-3, 0, 0, -2]);
        assert_eq!(stock_plan(&buckets(&[1, 1]), -5), vec![-1, -1]);
        assert_eq!(stock_plan(&buckets(&[0, 0, 0]), 7), vec![3, 2, 2]);
    }
}
