//! Keyed rate limits whose memory stays bounded whoever asks: [`CappedBuckets`], one token
//! bucket (GCRA) per key, at most a fixed number of keys tracked.
//!
//! The per-address and token-minting limits are keyed by values the other side picks (an
//! address from a botnet, an invented user id), so a keyed limiter that remembers every key
//! it saw grows with the attack. Here a key whose bucket is full again is the same as a key
//! never seen, so it is forgotten; and when the table is full even after forgetting those, a
//! new key is let through without a bucket rather than tracked: the limit is for one key that
//! asks too often, and a flood from many keys is the global limit's and admission's to shed.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Shards of the table: requests on different HTTP threads rarely wait for one another.
const SHARDS: usize = 16;

/// Least time between two sweeps of one full shard (ns): a shard kept full by a flood is
/// swept at this pace, not on every new key.
const SWEEP_EVERY_NS: u64 = 50_000_000;

struct Shard<K> {
    // Key -> theoretical arrival time (ns since `epoch`): the bucket is full again from then on.
    tats: HashMap<K, u64>,
    last_sweep: u64,
}

/// Per-key token buckets, `rate` per second with bursts of `burst`, tracking at most `cap`
/// keys (see the module docs for what happens beyond).
pub struct CappedBuckets<K> {
    shards: Vec<Mutex<Shard<K>>>,
    hasher: RandomState,
    epoch: Instant,
    // Nanoseconds between two requests at the steady rate, and the burst as nanoseconds.
    interval_ns: u64,
    tolerance_ns: u64,
    shard_cap: usize,
    untracked: AtomicU64,
}

impl<K: Hash + Eq> CappedBuckets<K> {
    /// Buckets of `rate` requests per second, `burst` at once (`burst` 0: `rate`), at most
    /// `cap` keys tracked (but at least one per shard: 16).
    pub fn new(rate: NonZeroU32, burst: u32, cap: usize) -> Self {
        let interval_ns = 1_000_000_000 / u64::from(rate.get());
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        CappedBuckets {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        tats: HashMap::new(),
                        last_sweep: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst.get()),
            shard_cap: (cap / SHARDS).max(1),
            untracked: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Takes one request from `key`'s bucket; `false` means too many requests.
    pub fn allow(&self, key: K) -> bool {
        let now = self.now_ns();
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = match shard.tats.get(&key) {
            Some(tat) => *tat,
            None => {
                if shard.tats.len() >= self.shard_cap {
                    if now.saturating_sub(shard.last_sweep) >= SWEEP_EVERY_NS {
                        shard.last_sweep = now;
                        shard.tats.retain(|_, tat| *tat > now);
                    }
                    if shard.tats.len() >= self.shard_cap {
                        self.untracked.fetch_add(1, Ordering::Relaxed);
                        return true;
                    }
                }
                now
            }
        };
        let next = tat.max(now) + self.interval_ns;
        if next - now > self.tolerance_ns {
            return false;
        }
        shard.tats.insert(key, next);
        true
    }

    /// Forgets every key whose bucket is full again (its next request would be allowed as a
    /// new key's) and gives the memory back.
    pub fn forget_idle(&self) {
        let now = self.now_ns();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.tats.retain(|_, tat| *tat > now);
            shard.tats.shrink_to_fit();
        }
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()).tats.len())
            .sum()
    }

    /// The most keys ever tracked at once.
    pub fn cap(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Requests let through without a bucket because the table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(rate: u32, burst: u32, cap: usize) -> CappedBuckets<u32> {
        CappedBuckets::new(NonZeroU32::new(rate).unwrap(), burst, cap)
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let b = buckets(20, 3, 100);
        assert!(b.allow(1) && b.allow(1) && b.allow(1));
        assert!(!b.allow(1), "over the burst");
        assert!(b.allow(2), "another key has its own bucket");
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(b.allow(1), "one request back every 50 ms");
        assert!(!b.allow(1));
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_under_the_cap() {
        let b = buckets(1, 1, 1_000);
        for key in 0..50_000 {
            assert!(b.allow(key), "a new key is never refused");
        }
        assert!(
            b.tracked() <= b.cap() && b.cap() < 1_100,
            "{} of {}",
            b.tracked(),
            b.cap()
        );
        assert!(b.untracked() >= 48_000, "{}", b.untracked());
        // Keys tracked before the table filled keep their (empty) buckets.
        assert!(!b.allow(0));
    }

    #[test]
    fn idle_keys_are_forgotten_and_make_room() {
        let b = buckets(1_000, 1, 16);
        for key in 0..16 {
            assert!(b.allow(key));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        b.forget_idle();
        assert_eq!(b.tracked(), 0);
        // A full shard is swept when a new key arrives, so buckets full again make room.
        let b = buckets(1_000, 1, 16);
        for key in 0..1_000 {
            b.allow(key);
        }
        std::thread::sleep(std::time::Duration::from_millis(60));
        let before = b.untracked();
        for key in 1_000..1_016 {
            assert!(b.allow(key));
        }
        assert!(b.untracked() - before < 16, "swept shards track the new keys");
    }
}
