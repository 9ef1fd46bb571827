//! The Redis key map: the only place that spells key names. README's "Redis key map" repeats
//! this table row for row (a test checks it).
//!
//! Every key of one activity carries the hash tag `{a:ID}`, so each Lua script
//! touches a single Redis Cluster slot; the stock buckets of a sharded product (see
//! [`crate::buckets`]) carry `{a:ID:b:K}` instead, one slot per bucket number K, so a cluster
//! spreads them over its primaries; the two keys without a tag span activities and are only
//! ever used one command at a time:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{a:A}:activity` | hash | `id name status start_ms end_ms preheated_at epoch persist_seq lost_reason buckets gate_ver`; status `lost` while selling is suspended because Redis lost the activity's state; `buckets`: how many bucket streams the activity may have (never lowered while they exist); `gate_ver`: the number of the last status change (raised by every change and every preheat, never lowered), under which the buckets' gates copy the status |
//! | `P:{a:A}:products` | set | product ids of the activity |
//! | `P:{a:A}:product:ID` | hash | `id stock sold total limit max_per_order price name shards ids_below` (`ids_below`: see `totals:ID`; `stock` = units still on sale, `sold` = units reserved; a product with `shards` > 1 has no `stock` here: its units are in its buckets, and `sold` counts those sold before `hot`) |
//! | `P:{a:A}:bought:ID` | hash | user id → units the user holds of product ID (of a product without buckets; a sharded product's totals are in its buckets, `P:{a:A:b:K}:bought:ID`) |
//! | `P:{a:A}:totals:ID` | string | units each buyer holds of product ID, for the buyers whose user id is a whole number below the product's `ids_below` (no leading zero; `redis.numeric_user_ids_below`, stamped by `hot`): a `u16` at index = the id, read and raised with BITFIELD (`src/totals.rs`); every other buyer's total is in the bought hash |
//! | `P:{a:A}:token:USER` | string | the user's registered purchase token (expires with it): handed out again by `seckill token` and `POST /api/v1/token`; a purchase does not read it (`serve` checks the token's signature) |
//! | `P:{a:A}:revoked` | set | users whose token the operator revoked: their buys are refused (`invalid_token`) and `POST /api/v1/token` gives them none until `seckill token lift`; probed only while it exists, once per script call (one SMISMEMBER of its buyers) |
//! | `P:{a:A}:blacklist` | set | users who may not buy |
//! | `P:{a:A}:orders` | stream | one entry per reserve script call, holding its accepted purchases (`activity reserved_ms`, then per run of one product `product price buyers quantities`, buyers and quantities space-separated, or `buyer_numbers` instead of `buyers` for numbered buyers whose totals are in the totals array, each id written `#<id>`; entries of earlier versions: `product user quantity price` per purchase); consumer group `persist` |
//! | `P:{a:A}:dlq` | stream | purchases (one each, with `dlq_index`, their place in the entry) or unreadable whole entries that failed persisting `max_deliveries` times, with the error |
//! | `P:{a:A}:released` | set | order numbers whose units went back on sale (makes the return exactly-once) |
//! | `P:{a:A}:stock_ops` | hash | `stock add` / `remove` / `sold-out` ledger row id → units added or withdrawn, `not_loaded`, `void` (settled as undone by reconcile), or `part` (a sharded product's change begun, its buckets not all done) |
//! | `P:{a:A}:returning` | hash | order number → `product:quantity:epoch`: a cancelled/expired order of a sharded product released, its units not yet in their bucket (`release_sharded.lua` → `bucket_return.lua`) |
//! | `P:{a:A}:moving` | hash | move id → `product units noted_ms buckets user epoch`: an order of a sharded product no bucket holds whole, its units being gathered into one bucket (`move_note.lua`; dropped once sold or put back) |
//! | `P:{a:A}:degraded` | string | present while `seckill degrade A on`: the message buyers get with `503 degraded` (read by `serve`; not used by scripts) |
//! | `P:{a:A:b:K}:product:ID` | hash | bucket K of sharded product ID: `stock sold` (units on sale in this bucket, units it reserved since `hot`), `limit max_per_order price shards` (copies `hot` writes, for the purchase decided here), `epoch from` (the `hot` that loaded it, its stream's last entry id then), `op:L` (units live stock change L added / withdrew here), `r:ORDER` (a returned order's units, added here, and its buyer's total lowered, once), `m:MOVE` (units move MOVE took here: `N` in hand, `N:back` put back, `N:in:Q` the target that sold Q) |
//! | `P:{a:A:b:K}:orders` | stream | the reservations bucket K of the activity's sharded products made (entries in the `orders` format: `activity reserved_ms`, then per run of one product `product price buyers quantities`; entries of earlier versions: `product user quantity price` per purchase); consumer group `persist` |
//! | `P:{a:A:b:K}:seq` | hash | `ms n`: the last entry id bucket K gave out, so the next is higher and tells its bucket (see `BUCKET_SEQ_BASE`) |
//! | `P:{a:A:b:K}:gate` | hash | bucket K's copy of what a purchase checks of the activity: `status start_ms end_ms persist_seq ver` (written by `hot`, `start`/`stop`/`pause`/`end`, a lost state's suspension and, `persist_seq`, every persisted batch; `ver` orders the status changes) |
//! | `P:{a:A:b:K}:bought:ID` | hash | user id → units the user holds of sharded product ID, for the users whose bucket is K (FNV-1a of the user id mod the product's bucket count): the one place that buyer's total lives |
//! | `P:{a:A:b:K}:blacklist` | set | bucket K's copy of `P:{a:A}:blacklist` (written with it) |
//! | `P:{a:A:b:K}:revoked` | set | bucket K's copy of `P:{a:A}:revoked` (written with it) |
//! | `P:activities` | set | preheated activity ids (read by consumers; not used by scripts; one command at a time) |
//! | `P:product_activity` | hash | product id → activity id (read by `serve`; not used by scripts; one command at a time) |
//!
//! `P` is `redis.key_prefix`.

/// Builds key names for one deployment (one key prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`redis.key_prefix`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything of activity `activity` starts with this (includes the hash tag).
    pub fn activity_base(&self, activity: u64) -> String {
        format!("{}:{{a:{activity}}}", self.prefix)
    }

    /// SCAN pattern matching every key of `activity`.
    pub fn activity_pattern(&self, activity: u64) -> String {
        // `{` and `}` are literal in glob patterns, but `[`/`]`/`*`/`?` in the prefix would not be.
        let base = self.activity_base(activity);
        let mut escaped = String::with_capacity(base.len() + 4);
        for c in base.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped + ":*"
    }

    /// Activity hash: status, window, name.
    pub fn activity(&self, activity: u64) -> String {
        format!("{}:activity", self.activity_base(activity))
    }

    /// Set of the activity's product ids.
    pub fn products(&self, activity: u64) -> String {
        format!("{}:products", self.activity_base(activity))
    }

    /// Product hash: stock, sold, limits, price.
    pub fn product(&self, activity: u64, product: u64) -> String {
        format!("{}:product:{product}", self.activity_base(activity))
    }

    /// Hash of units each user holds of one product.
    pub fn bought(&self, activity: u64, product: u64) -> String {
        format!("{}:bought:{product}", self.activity_base(activity))
    }

    /// Array of units each buyer with a numeric user id below the product's `ids_below`
    /// holds of one product (see [`crate::totals`]); the others' are in [`Keys::bought`].
    pub fn totals(&self, activity: u64, product: u64) -> String {
        format!("{}:totals:{product}", self.activity_base(activity))
    }

    /// A user's registered purchase token.
    pub fn token(&self, activity: u64, user: &str) -> String {
        format!("{}:token:{user}", self.activity_base(activity))
    }

    /// SCAN pattern of every registered token of the activity.
    pub fn token_pattern(&self, activity: u64) -> String {
        format!("{}:token:*", self.activity_pattern(activity).trim_end_matches(":*"))
    }

    /// Users whose token was revoked: their buys are refused, and they get no token over
    /// HTTP, until lifted.
    pub fn revoked(&self, activity: u64) -> String {
        format!("{}:revoked", self.activity_base(activity))
    }

    /// Users barred from buying in the activity.
    pub fn blacklist(&self, activity: u64) -> String {
        format!("{}:blacklist", self.activity_base(activity))
    }

    /// Stream of reservations waiting to be persisted.
    pub fn orders_stream(&self, activity: u64) -> String {
        format!("{}:orders", self.activity_base(activity))
    }

    /// Dead-letter stream.
    pub fn dlq(&self, activity: u64) -> String {
        format!("{}:dlq", self.activity_base(activity))
    }

    /// Order numbers whose units were returned to stock.
    pub fn released(&self, activity: u64) -> String {
        format!("{}:released", self.activity_base(activity))
    }

    /// Live stock changes seen by Redis: ledger row id -> units added or withdrawn,
    /// `not_loaded`, or `void` (settled by reconcile before it reached Redis).
    pub fn stock_ops(&self, activity: u64) -> String {
        format!("{}:stock_ops", self.activity_base(activity))
    }

    /// Returns of a sharded product's units under way: order number -> `product:quantity`,
    /// from `release_sharded.lua` until the units are in their bucket.
    pub fn returning(&self, activity: u64) -> String {
        format!("{}:returning", self.activity_base(activity))
    }

    /// Moves under way (an order no bucket holds, its units gathered into one bucket): move
    /// id -> `product units noted_ms buckets user epoch` (see `crate::buckets::moves`).
    pub fn moving(&self, activity: u64) -> String {
        format!("{}:moving", self.activity_base(activity))
    }

    /// The activity's degrade switch: present (holding the message for buyers) while on.
    pub fn degraded(&self, activity: u64) -> String {
        format!("{}:degraded", self.activity_base(activity))
    }

    /// Everything of bucket `bucket` of activity `activity` starts with this (its own hash tag).
    pub fn bucket_base(&self, activity: u64, bucket: u16) -> String {
        format!("{}:{{a:{activity}:b:{bucket}}}", self.prefix)
    }

    /// SCAN pattern matching every key of bucket `bucket` of `activity`.
    pub fn bucket_pattern(&self, activity: u64, bucket: u16) -> String {
        let activity_pattern = self.activity_pattern(activity);
        let tag_end = activity_pattern.len() - ":*".len() - 1;
        format!("{}:b:{bucket}}}:*", &activity_pattern[..tag_end])
    }

    /// SCAN pattern matching every key of every bucket of `activity`.
    pub fn buckets_pattern(&self, activity: u64) -> String {
        let activity_pattern = self.activity_pattern(activity);
        let tag_end = activity_pattern.len() - ":*".len() - 1;
        format!("{}:b:*", &activity_pattern[..tag_end])
    }

    /// Bucket `bucket` of sharded product `product`: its stock and sold counters.
    pub fn bucket_product(&self, activity: u64, bucket: u16, product: u64) -> String {
        format!("{}:product:{product}", self.bucket_base(activity, bucket))
    }

    /// The reservation stream of bucket `bucket` (shared by the activity's sharded products).
    pub fn bucket_orders(&self, activity: u64, bucket: u16) -> String {
        format!("{}:orders", self.bucket_base(activity, bucket))
    }

    /// The last entry id bucket `bucket` gave out.
    pub fn bucket_seq(&self, activity: u64, bucket: u16) -> String {
        format!("{}:seq", self.bucket_base(activity, bucket))
    }

    /// Bucket `bucket`'s copy of what a purchase checks of the activity (status, window,
    /// persist sequence), so a purchase is decided in the bucket's slot alone.
    pub fn bucket_gate(&self, activity: u64, bucket: u16) -> String {
        format!("{}:gate", self.bucket_base(activity, bucket))
    }

    /// The totals of sharded product `product` of the buyers whose bucket is `bucket` (see
    /// [`crate::buckets::quota::bucket_of_user`]).
    pub fn bucket_bought(&self, activity: u64, bucket: u16, product: u64) -> String {
        format!("{}:bought:{product}", self.bucket_base(activity, bucket))
    }

    /// Bucket `bucket`'s copy of the activity's blacklist.
    pub fn bucket_blacklist(&self, activity: u64, bucket: u16) -> String {
        format!("{}:blacklist", self.bucket_base(activity, bucket))
    }

    /// Bucket `bucket`'s copy of the activity's revoked users.
    pub fn bucket_revoked(&self, activity: u64, bucket: u16) -> String {
        format!("{}:revoked", self.bucket_base(activity, bucket))
    }

    /// Set of preheated activities.
    pub fn activities(&self) -> String {
        format!("{}:activities", self.prefix)
    }

    /// Hash product id -> activity id.
    pub fn product_activity(&self) -> String {
        format!("{}:product_activity", self.prefix)
    }
}

/// The per-purchase keys of one activity, built on a prefix spelled once (the buy hot path
/// needs three keys per purchase; this halves their allocations).
#[derive(Debug, Clone)]
pub struct ActivityKeys {
    base: String,
}

impl ActivityKeys {
    fn join(&self, kind: &str, id: impl std::fmt::Display) -> String {
        use std::fmt::Write;
        let mut key = String::with_capacity(self.base.len() + kind.len() + 24);
        key.push_str(&self.base);
        key.push_str(kind);
        let _ = write!(key, "{id}");
        key
    }

    /// Same as [`Keys::product`].
    pub fn product(&self, product: u64) -> String {
        self.join(":product:", product)
    }

    /// Same as [`Keys::bought`].
    pub fn bought(&self, product: u64) -> String {
        self.join(":bought:", product)
    }

    /// Same as [`Keys::totals`].
    pub fn totals(&self, product: u64) -> String {
        self.join(":totals:", product)
    }

    /// Same as [`Keys::token`].
    pub fn token(&self, user: &str) -> String {
        self.join(":token:", user)
    }
}

impl Keys {
    /// The per-purchase keys of `activity`.
    pub fn for_activity(&self, activity: u64) -> ActivityKeys {
        ActivityKeys {
            base: self.activity_base(activity),
        }
    }
}

/// The order number of a reservation: activity id and stream entry id, e.g. `42-1732250000123-0`.
/// Because it contains the entry id, a queued order is found with one XRANGE. This is the
/// number of the first (or only) purchase of an entry; see [`purchase_order_no`].
pub fn order_no(activity: u64, entry_id: &str) -> String {
    purchase_order_no(activity, entry_id, 0)
}

/// The order number of the purchase at `index` (from 0) of a stream entry: the entry's
/// [`order_no`] for index 0, `<activity>-<entry id>-<index>` after it. An entry holds one
/// script call's purchases, so numbers stay unique; index 0 keeps the form numbers had when
/// an entry held one purchase, so an entry written before the change keeps its number.
pub fn purchase_order_no(activity: u64, entry_id: &str, index: u32) -> String {
    // Written piece by piece, not with `format!`: serve numbers every accepted purchase, and
    // the formatting machinery cost several times the rest of reading a verdict.
    let (mut activity_digits, mut index_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let activity = activity_digits.format(activity);
    if index == 0 {
        [activity, "-", entry_id].concat()
    } else {
        [activity, "-", entry_id, "-", index_digits.format(index)].concat()
    }
}

/// Splits an order number into activity id and stream entry id (the purchase's place within
/// the entry is dropped; see [`parse_purchase_no`]).
pub fn parse_order_no(order_no: &str) -> Option<(u64, &str)> {
    parse_purchase_no(order_no).map(|(activity, entry, _)| (activity, entry))
}

/// Splits an order number into activity id, stream entry id and the purchase's index within
/// the entry. Only the canonical form [`purchase_order_no`] makes is accepted, so one
/// purchase has one number.
pub fn parse_purchase_no(order_no: &str) -> Option<(u64, &str, u32)> {
    let (activity, rest) = order_no.split_once('-')?;
    let activity = activity.parse().ok()?;
    if is_entry_id(rest) {
        return Some((activity, rest, 0));
    }
    let (entry, index) = rest.rsplit_once('-')?;
    let canonical = !index.starts_with('0') && index.bytes().all(|b| b.is_ascii_digit());
    let index: u32 = index.parse().ok().filter(|_| canonical)?;
    (is_entry_id(entry) && index > 0).then_some((activity, entry, index))
}

/// Bucket streams number their entries `<ms>-<seq>` with `seq` = this + n × 1024 + bucket
/// (`lua/bucket_reserve.lua`), so an order number, which is activity and entry id, keeps its
/// form and still tells which stream holds it; the activity stream never gets near it (Redis
/// numbers its entries of one millisecond from 0).
pub const BUCKET_SEQ_BASE: u64 = 1 << 40;

/// The bucket whose stream gave out `entry_id`; `None` for an entry of the activity stream.
pub fn bucket_of_entry(entry_id: &str) -> Option<u16> {
    let (_, seq) = entry_id.split_once('-')?;
    let seq: u64 = seq.parse().ok()?;
    (seq >= BUCKET_SEQ_BASE).then(|| ((seq - BUCKET_SEQ_BASE) % 1024) as u16)
}

/// A stream entry id as Redis makes them: `<ms>-<seq>`, both decimal and within u64 (Redis
/// refuses anything larger).
pub fn is_entry_id(id: &str) -> bool {
    let whole =
        |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && part.parse::<u64>().is_ok();
    id.split_once('-').is_some_and(|(ms, seq)| whole(ms) && whole(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_keys_match_the_key_map() {
        let (keys, a) = (Keys::new("p"), 7);
        let per = keys.for_activity(a);
        assert_eq!(per.product(3), keys.product(a, 3));
        assert_eq!(per.bought(3), keys.bought(a, 3));
        assert_eq!(per.totals(3), keys.totals(a, 3));
        assert_eq!(per.token("u:1"), keys.token(a, "u:1"));
    }

    #[test]
    fn all_activity_keys_share_one_hash_tag() {
        let k = Keys::new("p");
        for key in [
            k.activity(7),
            k.products(7),
            k.product(7, 1),
            k.bought(7, 1),
            k.totals(7, 1),
            k.token(7, "u"),
            k.revoked(7),
            k.blacklist(7),
            k.orders_stream(7),
            k.dlq(7),
            k.released(7),
            k.degraded(7),
        ] {
            assert!(key.starts_with("p:{a:7}:"), "{key}");
        }
        assert_eq!(k.activity_pattern(7), "p:{a:7}:*");
        assert_eq!(k.token_pattern(7), "p:{a:7}:token:*");
    }

    /// Rows of the markdown key table in `text` (lines starting `| \``, after `strip`).
    fn key_table<'t>(text: &'t str, strip: &'t str) -> Vec<&'t str> {
        text.lines()
            .filter_map(|line| line.strip_prefix(strip))
            .filter(|line| line.starts_with("| `"))
            .collect()
    }

    #[test]
    fn the_key_map_in_these_docs_and_in_the_readme_are_the_same_and_complete() {
        let source = include_str!("keys.rs");
        let readme = include_str!("../README.md");
        let readme = &readme[readme.find("## Redis key map").expect("README has a key map")..];
        let readme = &readme[..readme[3..].find("\n## ").map_or(readme.len(), |end| end + 3)];
        let docs = key_table(source, "//! ");
        assert_eq!(docs, key_table(readme, ""), "README's key map differs from src/keys.rs");

        // Every key function, rendered with the table's placeholders.
        let (k, a, id) = (Keys::new("P"), 4242, 77);
        let rendered = [
            ("activity", k.activity(a)),
            ("products", k.products(a)),
            ("product", k.product(a, id)),
            ("bought", k.bought(a, id)),
            ("totals", k.totals(a, id)),
            ("token", k.token(a, "USER")),
            ("revoked", k.revoked(a)),
            ("blacklist", k.blacklist(a)),
            ("orders_stream", k.orders_stream(a)),
            ("dlq", k.dlq(a)),
            ("released", k.released(a)),
            ("stock_ops", k.stock_ops(a)),
            ("returning", k.returning(a)),
            ("moving", k.moving(a)),
            ("degraded", k.degraded(a)),
            ("bucket_product", k.bucket_product(a, 999, id)),
            ("bucket_orders", k.bucket_orders(a, 999)),
            ("bucket_seq", k.bucket_seq(a, 999)),
            ("bucket_gate", k.bucket_gate(a, 999)),
            ("bucket_bought", k.bucket_bought(a, 999, id)),
            ("bucket_blacklist", k.bucket_blacklist(a, 999)),
            ("bucket_revoked", k.bucket_revoked(a, 999)),
            ("activities", k.activities()),
            ("product_activity", k.product_activity()),
        ];
        let in_table: Vec<String> = docs
            .iter()
            .map(|row| row.split('`').nth(1).expect("a key in backquotes").to_string())
            .collect();
        let mut listed: Vec<String> = rendered
            .iter()
            .map(|(_, key)| key.replace("4242", "A").replace("999", "K").replace("77", "ID"))
            .collect();
        assert_eq!(
            listed, in_table,
            "the table lists the keys in the order of the functions"
        );
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), rendered.len(), "two functions build the same key");

        // A new key function must be added above (and so to both tables).
        let keys_impl = &source[source.find("impl Keys {").unwrap()..source.find("pub struct ActivityKeys").unwrap()];
        let not_keys = [
            "new",
            "prefix",
            "activity_base",
            "activity_pattern",
            "token_pattern",
            "bucket_base",
            "bucket_pattern",
            "buckets_pattern",
        ];
        let functions: Vec<&str> = keys_impl
            .split("pub fn ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .filter(|name| !not_keys.contains(name))
            .collect();
        let checked: Vec<&str> = rendered.iter().map(|(name, _)| *name).collect();
        assert_eq!(functions, checked);
    }

    /// In a cluster a script may touch one slot only: every key a script's header names
    /// (`-- KEYS[n] ... P:...`) must be one of an activity's, or all of one bucket's, never a
    /// key that spans activities.
    #[test]
    fn every_script_names_only_keys_of_one_activity() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let mut scripts = 0;
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "lua") {
                continue;
            }
            scripts += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let named: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("-- KEYS"))
                .flat_map(|l| l.split_whitespace())
                .filter(|word| word.starts_with("P:"))
                .collect();
            assert!(!named.is_empty(), "{} names no key in its header", path.display());
            let tag = if named[0].starts_with("P:{a:A:b:K}:") {
                "P:{a:A:b:K}:"
            } else {
                "P:{a:A}:"
            };
            for key in named {
                assert!(key.starts_with(tag), "{}: {key}", path.display());
            }
        }
        assert!(scripts >= 10, "found only {scripts} scripts in {}", dir.display());
    }

    #[test]
    fn bucket_keys_have_their_own_tag_and_entries_name_their_bucket() {
        let k = Keys::new("p");
        assert_eq!(k.bucket_product(7, 3, 9), "p:{a:7:b:3}:product:9");
        assert_eq!(k.bucket_orders(7, 3), "p:{a:7:b:3}:orders");
        assert_eq!(k.bucket_seq(7, 3), "p:{a:7:b:3}:seq");
        assert_eq!(k.bucket_pattern(7, 3), "p:{a:7:b:3}:*");
        assert_eq!(k.buckets_pattern(7), "p:{a:7:b:*");
        assert_eq!(Keys::new("p*").bucket_pattern(7, 3), "p\\*:{a:7:b:3}:*");
        assert_eq!(bucket_of_entry("1732250000123-0"), None);
        assert_eq!(bucket_of_entry("1732250000123-1023"), None);
        let seq = BUCKET_SEQ_BASE + 5 * 1024 + 1023;
        assert_eq!(bucket_of_entry(&format!("1-{seq}")), Some(1023));
        assert_eq!(bucket_of_entry(&format!("1-{}", BUCKET_SEQ_BASE + 2)), Some(2));
        assert!(is_entry_id(&format!("1-{seq}")));
    }

    #[test]
    fn order_numbers_round_trip() {
        let no = order_no(42, "1732250000123-3");
        assert_eq!(parse_order_no(&no), Some((42, "1732250000123-3")));
        assert_eq!(parse_order_no("x-1-2"), None);
        assert_eq!(parse_order_no("42-abc"), None);
        assert_eq!(parse_order_no("42-1-"), None);
        assert_eq!(purchase_order_no(42, "1732250000123-3", 0), no);
        let third = purchase_order_no(42, "1732250000123-3", 2);
        assert_eq!(third, "42-1732250000123-3-2");
        assert_eq!(parse_purchase_no(&third), Some((42, "1732250000123-3", 2)));
        assert_eq!(parse_order_no(&third), Some((42, "1732250000123-3")));
        assert_eq!(parse_purchase_no(&no), Some((42, "1732250000123-3", 0)));
        for bad in [
            "42-1-2-0",
            "42-1-2-01",
            "42-1-2-x",
            "42-1-2-",
            "42-1-2-3-4",
            "42-1-2--1",
        ] {
            assert_eq!(parse_purchase_no(bad), None, "{bad}");
        }
        assert!(is_entry_id("1732250000123-3"));
        for bad in [
            "",
            "1732250000123",
            "-3",
            "1-",
            "1-2-3",
            "sold_out",
            "1-x",
            "1-18446744073709551616",
            "18446744073709551616-0",
        ] {
            assert!(!is_entry_id(bad), "{bad}");
        }
    }
}
