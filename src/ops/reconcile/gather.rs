//! Reading both sides for reconcile: the activity's stream and group state, Redis
//! counters, and MySQL orders, products and ledger.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::buckets::moves::{units_out, Note};
use crate::db::Db;
use crate::error::{DbContext, RedisContext, Result};
use crate::keys;
use crate::model::{OrderStatus, Product};
use crate::ops::catalog;
use crate::ops::stock::{self, PendingChange};
use crate::redis_client::RedisClient;
use crate::reservation::{self, dlq, items, pairs, text, Entry};
use crate::scripts;

/// Where a stream entry stands in the consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged by a consumer.
    Acked,
    /// Delivered, not acknowledged.
    Pending,
    /// Not delivered yet.
    Undelivered,
}

/// A snapshot of one activity on both sides.
///
/// The Redis counters, per-user totals, released set and stock changes are read in one
/// script (`reconcile_snapshot.lua`), atomically with purchases; the stream is read up to
/// that script's cut, and MySQL afterwards in one consistent read. A purchase is thus either
/// wholly in the Redis view or wholly after it; orders of reservations made after the cut
/// are kept apart ([`Snapshot::after_cut`]) rather than taken for drift.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Products in MySQL.
    pub products: Vec<Product>,
    /// Stream entries up to the cut, with their delivery state.
    pub entries: Vec<(Entry, Delivery)>,
    /// The stream's last generated id at the cut, deleted entries included (`None`: no entry yet).
    pub cut: Option<String>,
    /// Dead-lettered purchases of entries up to the cut, keyed by order number: the
    /// one-purchase entry rebuilt from the dead letter's original fields, its place in the
    /// original entry, and the error.
    pub dead_letters: BTreeMap<String, (Entry, u32, String)>,
    /// Every entry of the dead-letter stream.
    pub dead_letter_count: usize,
    /// Orders: order_no -> (product, user, quantity, status).
    pub orders: HashMap<String, (u64, String, u32, OrderStatus)>,
    /// The released set.
    pub released: HashSet<String>,
    /// Redis product hash fields (stock, sold, total) per loaded product.
    pub redis_products: BTreeMap<u64, (i64, i64, i64)>,
    /// Units each buyer holds, per product: its bought hash with its totals array (a sharded
    /// product's: its buckets' hashes together, each read with its bucket's purchases).
    pub bought: BTreeMap<u64, HashMap<String, i64>>,
    /// What Redis did with each stock change it saw (ledger row id -> `stock_ops` value).
    pub stock_ops: HashMap<u64, String>,
    /// Stock changes still pending in MySQL.
    pub pending_changes: Vec<PendingChange>,
    /// Ledger net delta since the last preheat, per product.
    pub ledger_net: HashMap<u64, i64>,
    /// Redis server time at the cut, ms.
    pub now_ms: i64,
    /// Per bucket stream read, the last entry id it had generated when read (see
    /// [`sharded`]); a reservation of a bucket is after the cut when its id is higher.
    pub bucket_cuts: HashMap<u16, Option<String>>,
    /// Products whose counters are summed over their buckets (`shards` in Redis).
    pub sharded: HashMap<u64, u16>,
    /// A sharded product's own `sold` (units sold before `hot`, less those returned since)
    /// and `total`, as the snapshot script read them.
    pub sharded_counters: HashMap<u64, (i64, i64)>,
    /// Each bucket of each sharded product, read atomically per bucket (`bucket_view.lua`)
    /// after the activity's view; index = bucket number, `None` when it does not exist.
    pub buckets: HashMap<u64, Vec<Option<BucketView>>>,
    /// Returns of sharded products under way: order number -> (product, quantity, the
    /// preheat epoch they were noted in).
    pub returning: HashMap<String, (u64, u32, String)>,
    /// Moves of sharded products' units under way, as noted: move id -> note.
    pub moves: HashMap<String, Note>,
}

/// One bucket of a sharded product, as `bucket_view.lua` read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BucketView {
    /// Units on sale in it.
    pub stock: i64,
    /// Units it reserved since `hot`.
    pub sold: i64,
    /// The `hot` that loaded it.
    pub epoch: String,
    /// Its stream's last entry id when `hot` loaded it ('' when none): its reservations
    /// since `hot` are the later ones.
    pub from: String,
    /// Live stock changes applied here: ledger row id -> units added or withdrawn.
    pub ops: HashMap<u64, i64>,
    /// Returned orders whose units were added here.
    pub returns: HashSet<String>,
    /// Moves that touched this bucket: move id -> (units out of it, in hand, see
    /// [`crate::buckets::moves::units_out`], negative for the target that sold them; whether
    /// it is that target).
    pub moves: HashMap<String, (i64, bool)>,
}

impl BucketView {
    fn parse(fields: Vec<(String, String)>) -> Option<BucketView> {
        let mut view = BucketView::default();
        let mut loaded = false;
        for (field, value) in fields {
            match field.as_str() {
                "stock" => {
                    loaded = true;
                    view.stock = value.parse().unwrap_or(0);
                }
                "sold" => view.sold = value.parse().unwrap_or(0),
                "epoch" => view.epoch = value,
                "from" => view.from = value,
                f => {
                    if let Some(ledger) = f.strip_prefix("op:").and_then(|l| l.parse().ok()) {
                        view.ops.insert(ledger, value.parse().unwrap_or(0));
                    } else if let Some(order) = f.strip_prefix("r:") {
                        view.returns.insert(order.to_string());
                    } else if let Some(id) = f.strip_prefix("m:") {
                        if let Some(out) = units_out(&value) {
                            view.moves.insert(id.to_string(), (out, value.contains(":in:")));
                        }
                    }
                }
            }
        }
        loaded.then_some(view)
    }
}

impl Snapshot {
    /// Whether the reservation with stream id `id` was made after the Redis view was taken.
    pub fn after_cut(&self, id: &str) -> bool {
        let cut = match crate::keys::bucket_of_entry(id) {
            Some(bucket) => self.bucket_cuts.get(&bucket).cloned().flatten(),
            None => self.cut.clone(),
        };
        match &cut {
            Some(last) => reservation::cmp_ids(id, last).is_gt(),
            // An empty stream: anything queued later has an id at or after the cut's time.
            None => reservation::parse_id(id).0 >= self.now_ms.max(0) as u64,
        }
    }
}

/// Reads everything reconcile compares.
pub async fn snapshot(db: &Db, redis: &RedisClient, group: &str, activity: u64) -> Result<Snapshot> {
    let product_ids: Vec<u64> = catalog::list_products(db, activity)
        .await?
        .iter()
        .map(|p| p.id)
        .collect();
    let keys = redis.keys();
    let mut conn = redis.conn();
    let name = keys.orders_stream(activity);

    let mut view = scripts::RECONCILE_SNAPSHOT.prepare_invoke();
    view.key(&name)
        .key(keys.released(activity))
        .key(keys.stock_ops(activity))
        .key(keys.returning(activity))
        .key(keys.moving(activity));
    for id in &product_ids {
        view.key(keys.product(activity, *id))
            .key(keys.bought(activity, *id))
            .key(keys.totals(activity, *id));
    }
    let reply: redis::Value = view.invoke_async(&mut conn).await.at(redis)?;
    let parts = items(reply);
    let number = |i: usize| {
        parts
            .get(i)
            .and_then(text)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let mut s = Snapshot {
        now_ms: number(0) * 1000 + number(1) / 1000,
        cut: parts.get(2).and_then(text).filter(|t| !t.is_empty()),
        released: parts
            .get(3)
            .map(|v| items(v.clone()).iter().filter_map(text).collect())
            .unwrap_or_default(),
        stock_ops: parts
            .get(4)
            .cloned()
            .map(pairs)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect(),
        returning: parts
            .get(5)
            .cloned()
            .map(pairs)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(order, what)| {
                let mut parts = what.splitn(3, ':');
                let (product, quantity) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
                Some((order, (product, quantity, parts.next().unwrap_or_default().to_string())))
            })
            .collect(),
        moves: parts
            .get(6)
            .cloned()
            .map(pairs)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(id, note)| Some((id, Note::parse(&note)?)))
            .collect(),
        ..Default::default()
    };
    for (i, id) in product_ids.iter().enumerate() {
        let counters: Vec<String> = parts
            .get(7 + 3 * i)
            .map(|v| items(v.clone()).iter().filter_map(text).collect())
            .unwrap_or_default();
        let number = |t: &String| t.parse::<i64>().ok();
        match counters.as_slice() {
            [b, sold, total, shards] if b == "b" => {
                let (sold, total) = (number(sold).unwrap_or(0), number(total).unwrap_or(0));
                s.sharded_counters.insert(*id, (sold, total));
                s.sharded.insert(*id, shards.parse().unwrap_or(0));
            }
            [stock, sold, total] => {
                let n = |t| number(t).unwrap_or(0);
                s.redis_products.insert(*id, (n(stock), n(sold), n(total)));
            }
            _ => continue,
        }
        let bought = parts.get(8 + 3 * i).cloned().map(pairs).unwrap_or_default();
        let mut held: HashMap<String, i64> = bought
            .into_iter()
            .filter_map(|(u, n)| Some((u, n.parse().ok()?)))
            .collect();
        // The buyers whose totals live in the product's array (src/totals.rs).
        if let Some(redis::Value::BulkString(array)) = parts.get(9 + 3 * i) {
            held.extend(crate::totals::decode(array));
        }
        s.bought.insert(*id, held);
    }

    bucket_views(redis, activity, &mut s).await?;
    let mut entries = reservation::read_all(redis, &name).await?;
    entries.retain(|e| !s.after_cut(&e.id));
    s.entries = with_delivery(redis, &name, group, entries).await?;
    for k in 0..crate::buckets::stock::count(redis, activity).await? {
        let name = keys.bucket_orders(activity, k);
        let mut entries = reservation::read_all(redis, &name).await?;
        entries.retain(|e| !s.after_cut(&e.id));
        s.entries.extend(with_delivery(redis, &name, group, entries).await?);
    }
    let letters = dlq::list(redis, Some(activity)).await?;
    s.dead_letter_count = letters.len();
    for letter in letters {
        if letter.entry_id.is_empty() || s.after_cut(&letter.entry_id) {
            continue;
        }
        for (index, one) in letter.purchases() {
            let order_no = keys::purchase_order_no(activity, &letter.entry_id, index);
            s.dead_letters.insert(order_no, (one, index, letter.error.clone()));
        }
    }

    // One consistent read, so products.sold and the orders agree with each other.
    let mut tx = db.pool().begin().await.at(db)?;
    s.products = sqlx::query_as::<_, Product>(&format!(
        "SELECT {} FROM products WHERE activity_id = ? ORDER BY id",
        catalog::PRODUCT_COLUMNS
    ))
    .bind(activity)
    .fetch_all(&mut *tx)
    .await
    .at(db)?;
    let rows: Vec<(String, u64, String, u32, OrderStatus)> = sqlx::query_as(
        "SELECT order_no, product_id, CAST(user_id AS CHAR), quantity, status FROM orders WHERE activity_id = ?",
    )
    .bind(activity)
    .fetch_all(&mut *tx)
    .await
    .at(db)?;
    s.orders = rows.into_iter().map(|(no, p, u, q, st)| (no, (p, u, q, st))).collect();
    let ledger: Vec<(u64, i64)> = sqlx::query_as(
        "SELECT l.product_id, CAST(SUM(l.delta) AS SIGNED) FROM stock_ledger l \
         WHERE l.activity_id = ? AND l.state <> 'undone' AND l.id >= (SELECT COALESCE(MAX(p.id), 0) FROM stock_ledger p \
         WHERE p.product_id = l.product_id AND p.op = 'preheat') GROUP BY l.product_id",
    )
    .bind(activity)
    .fetch_all(&mut *tx)
    .await
    .at(db)?;
    s.ledger_net = ledger.into_iter().collect();
    s.pending_changes = stock::pending_changes(&mut tx, db, activity).await?;
    tx.commit().await.at(db)?;
    Ok(s)
}

/// `entries` of `stream` with where each stands in `group`.
async fn with_delivery(
    redis: &RedisClient,
    stream: &str,
    group: &str,
    entries: Vec<Entry>,
) -> Result<Vec<(Entry, Delivery)>> {
    let reservation::Delivered {
        last_delivered_id: last_delivered,
        pending,
    } = reservation::delivered(redis, stream, group).await?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let d = if pending.contains(&e.id) {
                Delivery::Pending
            } else if last_delivered
                .as_deref()
                .is_none_or(|l| reservation::cmp_ids(&e.id, l).is_gt())
            {
                Delivery::Undelivered
            } else {
                Delivery::Acked
            };
            (e, d)
        })
        .collect())
}

/// Every bucket slot's view (`bucket_view.lua`, read after the activity's, one slot at a
/// time): its stream's cut, each sharded product's bucket there and the totals of the buyers
/// whose bucket it is; then each sharded
/// product's counters summed: stock over its buckets, sold its own plus its buckets'.
async fn bucket_views(redis: &RedisClient, activity: u64, s: &mut Snapshot) -> Result<()> {
    let keys = redis.keys();
    let mut products: Vec<(u64, u16)> = s.sharded.iter().map(|(&p, &n)| (p, n)).collect();
    products.sort();
    for (p, _) in &products {
        // A sharded product's buyers' totals are in its buckets, not the activity's slot.
        s.bought.insert(*p, HashMap::new());
    }
    for k in 0..crate::buckets::stock::count(redis, activity).await? {
        let mut view = scripts::BUCKET_VIEW.prepare_invoke();
        view.key(keys.bucket_orders(activity, k));
        for (p, _) in &products {
            view.key(keys.bucket_product(activity, k, *p))
                .key(keys.bucket_bought(activity, k, *p));
        }
        let reply: redis::Value = view.invoke_async(&mut redis.conn()).await.at(redis)?;
        let parts = items(reply);
        s.bucket_cuts
            .insert(k, parts.first().and_then(text).filter(|t| !t.is_empty()));
        for (i, (p, shards)) in products.iter().enumerate() {
            if k >= *shards {
                continue;
            }
            let bucket = parts.get(1 + 2 * i).cloned().map(pairs).and_then(BucketView::parse);
            s.buckets.entry(*p).or_default().push(bucket);
            // The totals of the buyers whose bucket this is, read with its purchases.
            let totals = parts.get(2 + 2 * i).cloned().map(pairs).unwrap_or_default();
            s.bought
                .entry(*p)
                .or_default()
                .extend(totals.into_iter().filter_map(|(u, n)| Some((u, n.parse().ok()?))));
        }
    }
    for (p, _) in products {
        let (sold, total) = s.sharded_counters[&p];
        let buckets = s.buckets.get(&p).map(Vec::as_slice).unwrap_or_default();
        let stock = buckets.iter().flatten().map(|b| b.stock).sum::<i64>();
        let bucket_sold = buckets.iter().flatten().map(|b| b.sold).sum::<i64>();
        s.redis_products.insert(p, (stock, sold + bucket_sold, total));
    }
    Ok(())
}
