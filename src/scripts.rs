//! The Lua script registry: one script per file under `lua/`, embedded in the binary
//! and run with EVALSHA (loaded on first use, and again after a Redis restart).

use std::sync::LazyLock;

use redis::Script;

/// `lua/preheat.lua`: load an activity and its products unless the activity is online.
pub static PREHEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/preheat.lua")));

/// `lua/set_status.lua`: change a preheated activity's status and window.
pub static SET_STATUS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/set_status.lua")));

/// Every script, for `hot` to load ahead of the sale.
pub fn all() -> Vec<&'static Script> {
    vec![
        &PREHEAT,
        &SET_STATUS,
        &RESERVE,
        &ISSUE_TOKEN,
        &RELEASE,
        &STOCK_ADD,
        &SOLD_OUT,
        &REPAIR_PRODUCT,
        &REPAIR_BOUGHT,
        &SETTLE_STOCK_OP,
        &RECONCILE_SNAPSHOT,
        &PERSIST_MARK,
        &LOST_WITHDRAW,
        &LOST_UNDO,
        &RESTORE_GROUP,
        &BUCKET_BUY,
        &GATE_SET,
        &QUOTA_RETURN,
        &BUCKET_RESERVE,
        &BUCKET_TAKE,
        &MOVE_NOTE,
        &RELEASE_SHARDED,
        &BUCKET_RETURN,
        &SHARDED_STOCK_BEGIN,
        &BUCKET_STOCK_OP,
        &SHARDED_STOCK_FINISH,
        &BUCKET_VIEW,
        &REPAIR_SHARDED,
        &BUCKET_REPAIR,
        &STOCK_REMOVE,
    ]
}

/// The libraries `lua/reserve.lua` runs behind (see [`RESERVE`]), as one literal.
macro_rules! reserve_prelude {
    () => {
        concat!(
            include_str!("../lua/lib/set_probe.lua"),
            include_str!("../lua/lib/totals.lua")
        )
    };
}

/// `lua/reserve.lua`: decide a batch of purchases and queue the reservations. Behind
/// `lua/lib/set_probe.lua`, the blacklist and revoked check it shares with [`BUCKET_BUY`], and
/// `lua/lib/totals.lua`, where a buyer's total lives (shared with [`RELEASE`] and
/// [`REPAIR_BOUGHT`]).
pub static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(reserve_prelude!(), include_str!("../lua/reserve.lua"))));

/// What [`RESERVE`] puts in front of `lua/reserve.lua`, for a benchmark that runs another
/// version of it the same way (`examples/redis_cost.rs`).
pub const RESERVE_PRELUDE: &str = reserve_prelude!();

/// `lua/issue_token.lua`: register purchase tokens, one per user and activity.
pub static ISSUE_TOKEN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/issue_token.lua")));
/// `lua/release.lua`: return a cancelled or expired order's units to stock, exactly once.
/// Behind `lua/lib/totals.lua`.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/lib/totals.lua"),
        include_str!("../lua/release.lua")
    ))
});

/// `lua/stock_add.lua`: top up a product's live stock.
pub static STOCK_ADD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/stock_add.lua")));

/// `lua/sold_out.lua`: withdraw a product's remaining live stock.
pub static SOLD_OUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/sold_out.lua")));

/// `lua/repair_product.lua`: reconcile's compare-and-set of a product's counters.
pub static REPAIR_PRODUCT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/repair_product.lua")));

/// `lua/repair_bought.lua`: reconcile's compare-and-set of one user's total. Behind
/// `lua/lib/totals.lua`.
pub static REPAIR_BOUGHT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/lib/totals.lua"),
        include_str!("../lua/repair_bought.lua")
    ))
});

/// `lua/settle_stock_op.lua`: reconcile's settling of a stock change left pending.
pub static SETTLE_STOCK_OP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/settle_stock_op.lua")));

/// `lua/reconcile_snapshot.lua`: reconcile's atomic view of an activity's Redis counters.
pub static RECONCILE_SNAPSHOT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/reconcile_snapshot.lua")));

/// `lua/persist_mark.lua`: raise an activity's persist sequence before a batch is committed.
pub static PERSIST_MARK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/persist_mark.lua")));

/// `lua/lost_withdraw.lua`: remove an activity hash that holds nothing but a lost state's
/// suspension written after `flush` removed the activity.
pub static LOST_WITHDRAW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/lost_withdraw.lua")));

/// `lua/lost_undo.lua`: put back the status a lost state's suspension replaced, when the
/// suspension was judged against a mark `hot` has since replaced.
pub static LOST_UNDO: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/lost_undo.lua")));

/// `lua/restore_group.lua`: create the consumers' group on a reservation stream that lost it,
/// only if the stream exists (a flushed stream stays gone).
pub static RESTORE_GROUP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/restore_group.lua")));

/// `lua/bucket_buy.lua`: a batch's purchases of sharded products in their buyers' bucket:
/// checks, the buyers' totals and, when the bucket holds them, the units. Behind
/// `lua/lib/bucket_entry.lua`, the bucket's stream entry it shares with [`BUCKET_RESERVE`],
/// and `lua/lib/set_probe.lua`, the blacklist and revoked check it shares with [`RESERVE`].
pub static BUCKET_BUY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/lib/bucket_entry.lua"),
        include_str!("../lua/lib/set_probe.lua"),
        include_str!("../lua/bucket_buy.lua")
    ))
});

/// `lua/gate_set.lua`: brings a bucket's copy of the activity's sale switches up to date.
pub static GATE_SET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/gate_set.lua")));

/// `lua/quota_return.lua`: gives back, in one bucket, a batch's quotas no bucket could fill.
pub static QUOTA_RETURN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/quota_return.lua")));

/// `lua/bucket_reserve.lua`: sharded products' purchases, step two: units from one bucket, one entry per call.
/// Behind `lua/lib/bucket_entry.lua`, the bucket's stream entry it shares with [`BUCKET_BUY`].
pub static BUCKET_RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/lib/bucket_entry.lua"),
        include_str!("../lua/bucket_reserve.lua")
    ))
});

/// `lua/bucket_take.lua`: a move's units out of (or back into) one bucket, recorded there.
pub static BUCKET_TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/bucket_take.lua")));

/// `lua/move_note.lua`: a move noted in the activity's slot before its units leave their buckets.
pub static MOVE_NOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/move_note.lua")));

/// `lua/release_sharded.lua`: a sharded product's order released, before its units go to a bucket.
pub static RELEASE_SHARDED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release_sharded.lua")));

/// `lua/bucket_return.lua`: a released order's units into its bucket, once.
pub static BUCKET_RETURN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/bucket_return.lua")));

/// `lua/sharded_stock_begin.lua`: a live stock change of a sharded product, step one.
pub static SHARDED_STOCK_BEGIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/sharded_stock_begin.lua")));

/// `lua/bucket_stock_op.lua`: one bucket's share of a live stock change, once.
pub static BUCKET_STOCK_OP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/bucket_stock_op.lua")));

/// `lua/sharded_stock_finish.lua`: a live stock change of a sharded product, recorded.
pub static SHARDED_STOCK_FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/sharded_stock_finish.lua")));

/// `lua/bucket_view.lua`: reconcile's atomic view of one bucket slot.
pub static BUCKET_VIEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/bucket_view.lua")));

/// `lua/repair_sharded.lua`: reconcile's compare-and-set of a sharded product's `sold` and `total`.
pub static REPAIR_SHARDED: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/repair_sharded.lua")));

/// `lua/bucket_repair.lua`: reconcile's delta repair of one bucket.
pub static BUCKET_REPAIR: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/bucket_repair.lua")));

/// `lua/stock_remove.lua`: take a number of units of a product off sale, all or nothing.
pub static STOCK_REMOVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/stock_remove.lua")));
