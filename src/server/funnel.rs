//! The layers that shed load before it reaches Redis: the local sold-out cache (with the
//! product -> activity map it lives in), bounded admission, rate limits and the circuit
//! breaker. Each is cheap and synchronous, so rejected requests cost no Redis round trip.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limiter::CappedBuckets;
use crate::config::FunnelConfig;

/// What this server knows about one product.
#[derive(Debug)]
pub struct ProductSlot {
    /// The activity selling it.
    pub activity: u64,
    // Milliseconds since the catalog's epoch until which the product is known sold out.
    sold_out_until: AtomicU64,
    /// The product's remaining-stock gauge (set from every verdict).
    pub remaining: Gauge,
}

/// The known products' slots. foldhash rather than std's SipHash: two lookups per buy
/// request, and only products Redis knows get in, so a buyer cannot choose the keys.
type Slots = HashMap<u64, Arc<ProductSlot>, foldhash::fast::RandomState>;

/// Product -> activity map plus the local sold-out cache, filled on demand.
///
/// Read by every buy request and written once per product, so the map is swapped whole on
/// insert (copy on write): a read takes no lock and writes no shared memory, which keeps the
/// cores from handing the same cache line back and forth under load.
#[derive(Debug)]
pub struct Catalog {
    slots: ArcSwap<Slots>,
    epoch: Instant,
    sold_out_for_ms: u64,
}

impl Catalog {
    /// An empty map; sold-out answers are cached for `sold_out_cache_ms`.
    pub fn new(sold_out_cache_ms: u64) -> Self {
        Catalog {
            slots: ArcSwap::default(),
            epoch: Instant::now(),
            sold_out_for_ms: sold_out_cache_ms,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The product, if already known.
    pub fn get(&self, product: u64) -> Option<Arc<ProductSlot>> {
        self.slots.load().get(&product).cloned()
    }

    /// The activity of `product`, if known (without taking a reference to its slot).
    pub fn known_activity(&self, product: u64) -> Option<u64> {
        self.slots.load().get(&product).map(|slot| slot.activity)
    }

    /// The activity of `product` when it is known and Redis said it is sold out less than
    /// `sold_out_cache_ms` ago: the sold-out answer without touching any shared counter.
    pub fn sold_out_activity(&self, product: u64) -> Option<u64> {
        let slots = self.slots.load();
        let slot = slots.get(&product)?;
        self.is_sold_out(slot).then_some(slot.activity)
    }

    /// Remembers that `product` belongs to `activity` (`remaining`: its stock gauge).
    pub fn insert(&self, product: u64, activity: u64, remaining: Gauge) -> Arc<ProductSlot> {
        let fresh = Arc::new(ProductSlot {
            activity,
            sold_out_until: AtomicU64::new(0),
            remaining,
        });
        let mut kept = fresh.clone();
        // rcu retries the closure when another insert won the race; the winner's slot is kept.
        self.slots.rcu(|slots| {
            let mut slots = Slots::clone(slots);
            kept = slots.entry(product).or_insert_with(|| fresh.clone()).clone();
            slots
        });
        kept
    }

    /// Whether Redis said the product is sold out less than `sold_out_cache_ms` ago.
    pub fn is_sold_out(&self, slot: &ProductSlot) -> bool {
        // Until the first sold-out answer, every buy request passes here: no clock read then.
        let until = slot.sold_out_until.load(Ordering::Relaxed);
        until != 0 && until > self.now_ms()
    }

    /// Records Redis's answer "sold out, 0 remaining".
    pub fn mark_sold_out(&self, slot: &ProductSlot) {
        if self.sold_out_for_ms > 0 {
            slot.sold_out_until
                .store(self.now_ms() + self.sold_out_for_ms, Ordering::Relaxed);
        }
    }
}

/// The activities whose buys are answered `degraded`, each with the message for buyers, as
/// the last refresh read them from Redis (see `ops::degrade`).
///
/// Read by every buy request and replaced whole (rarely) by the refresh, like [`Catalog`]:
/// while no activity is degraded, a request pays one lock-free load.
#[derive(Debug, Default)]
pub struct DegradeSwitches(ArcSwap<HashMap<u64, Arc<str>>>);

impl DegradeSwitches {
    /// Whether any activity is degraded.
    pub fn any(&self) -> bool {
        !self.0.load().is_empty()
    }

    /// The message for buyers when `activity` is degraded.
    pub fn message(&self, activity: u64) -> Option<Arc<str>> {
        self.0.load().get(&activity).cloned()
    }

    /// The switches now on.
    pub fn current(&self) -> Arc<HashMap<u64, Arc<str>>> {
        self.0.load_full()
    }

    /// Replaces the switches with `on`.
    pub fn set(&self, on: HashMap<u64, Arc<str>>) {
        self.0.store(Arc::new(on));
    }
}

/// Bounded admission: at most `max_in_flight` buy requests past this point at once.
#[derive(Debug)]
pub struct Admission(Arc<Semaphore>, usize);

impl Admission {
    /// Room for `max_in_flight` requests.
    pub fn new(max_in_flight: usize) -> Self {
        Admission(Arc::new(Semaphore::new(max_in_flight)), max_in_flight)
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.1.saturating_sub(self.0.available_permits())
    }

    /// A slot, or `None` at once when all are taken.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// The global, per-address and per-user token buckets.
///
/// A user's buy bucket is charged only by requests whose token signature verified (see
/// [`Limits::allow_user`]): anyone can send requests in anyone's name, and those must not
/// use up the real buyer's allowance. Token requests carry no proof of identity, so they
/// have buckets of their own, per address and per named user ([`Limits::allow_token_request`]).
/// The buckets keyed by what a client picks (its address, a user id in a token request) are
/// [`CappedBuckets`]: their memory stays bounded under a flood of distinct keys.
pub struct Limits {
    global: Option<DefaultDirectRateLimiter>,
    // Keyed by a hash of the user id, not the id: a fresh user then costs no String clone
    // for the key, and hashing a u64 in the map is cheap. Random hash keys per process, so
    // nobody can pick user ids that share a bucket (accidental sharing is 1 in 2^64).
    per_user: Option<DefaultKeyedRateLimiter<u64>>,
    per_address: Option<CappedBuckets<IpAddr>>,
    token_per_address: Option<CappedBuckets<IpAddr>>,
    token_per_user: Option<CappedBuckets<u64>>,
    hasher: RandomState,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("global", &self.global.is_some())
            .field("per_user", &self.per_user.is_some())
            .field("per_address", &self.per_address.is_some())
            .finish()
    }
}

/// The key of `ip`'s per-address bucket: an IPv6 address counts as its /64, the block one
/// subscriber usually holds whole (per address, one host could take 2^64 buckets).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Which capped table [`Limits::tracked`] reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Buy requests per client address (`funnel.per_ip_rps`).
    PerAddress,
    /// Token requests per client address (`funnel.token_per_ip_rps`).
    TokenPerAddress,
    /// Token requests per named user (`funnel.token_per_user_rps`).
    TokenPerUser,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 3] = [Table::PerAddress, Table::TokenPerAddress, Table::TokenPerUser];

    /// Its `table` label in the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Table::PerAddress => "per_ip",
            Table::TokenPerAddress => "token_per_ip",
            Table::TokenPerUser => "token_per_user",
        }
    }
}

impl Limits {
    /// Buckets per `config` (a rate of 0 disables that bucket).
    pub fn new(config: &FunnelConfig) -> Self {
        let global = NonZeroU32::new(config.global_rps).map(|rps| RateLimiter::direct(Quota::per_second(rps)));
        let per_user = NonZeroU32::new(config.per_user_rps).map(|rps| {
            let burst = NonZeroU32::new(config.per_user_burst).unwrap_or(rps);
            RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))
        });
        let cap = config.rate_limit_keys_max;
        Limits {
            global,
            per_user,
            per_address: NonZeroU32::new(config.per_ip_rps)
                .map(|rps| CappedBuckets::new(rps, config.per_ip_burst, cap)),
            token_per_address: NonZeroU32::new(config.token_per_ip_rps)
                .map(|rps| CappedBuckets::new(rps, config.token_per_ip_burst, cap)),
            token_per_user: NonZeroU32::new(config.token_per_user_rps)
                .map(|rps| CappedBuckets::new(rps, config.token_per_user_burst, cap)),
            hasher: RandomState::new(),
        }
    }

    /// Takes one request from the global bucket; `false` means too many requests.
    pub fn allow_global(&self) -> bool {
        self.global.as_ref().is_none_or(|g| g.check().is_ok())
    }

    /// Takes one buy request from the bucket of the client at `client` (`None`: address
    /// unknown, not limited); `false` means too many requests.
    pub fn allow_address(&self, client: Option<IpAddr>) -> bool {
        match (&self.per_address, client) {
            (Some(buckets), Some(ip)) => buckets.allow(address_key(ip)),
            _ => true,
        }
    }

    /// Takes one request from `user`'s buy bucket; `false` means too many requests. Only for
    /// requests whose token verified.
    pub fn allow_user(&self, user: &str) -> bool {
        self.per_user
            .as_ref()
            .is_none_or(|b| b.check_key(&self.hasher.hash_one(user)).is_ok())
    }

    /// Takes one token request from the client address's token bucket, from `user`'s and
    /// from the global one.
    pub fn allow_token_request(&self, user: &str, client: Option<IpAddr>) -> bool {
        let address_ok = match (&self.token_per_address, client) {
            (Some(buckets), Some(ip)) => buckets.allow(address_key(ip)),
            _ => true,
        };
        address_ok
            && self
                .token_per_user
                .as_ref()
                .is_none_or(|b| b.allow(self.hasher.hash_one(user)))
            && self.allow_global()
    }

    /// Keys `table` tracks now (0 when its limit is off).
    pub fn tracked(&self, table: Table) -> usize {
        match table {
            Table::PerAddress => self.per_address.as_ref().map_or(0, |b| b.tracked()),
            Table::TokenPerAddress => self.token_per_address.as_ref().map_or(0, |b| b.tracked()),
            Table::TokenPerUser => self.token_per_user.as_ref().map_or(0, |b| b.tracked()),
        }
    }

    /// Forgets keys whose bucket is full again, so the tables do not grow forever.
    pub fn forget_idle(&self) {
        if let Some(buckets) = &self.per_user {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
        for buckets in [&self.per_address, &self.token_per_address].into_iter().flatten() {
            buckets.forget_idle();
        }
        if let Some(buckets) = &self.token_per_user {
            buckets.forget_idle();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

/// Circuit breaker around Redis: after `breaker_failures` consecutive failures, every
/// request is answered `busy` for `breaker_open_ms`; then one probe goes through, and its
/// success closes the breaker again.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(failures: u32, open_ms: u64) -> Self {
        Breaker {
            threshold: failures.max(1),
            open_for: Duration::from_millis(open_ms),
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go to Redis now.
    pub fn admit(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen { probe_since: now };
                true
            }
            BreakerState::Open { .. } => false,
            // A probe whose request vanished (client gone) must not keep the breaker shut.
            BreakerState::HalfOpen { probe_since } if now.duration_since(probe_since) >= self.open_for => {
                *state = BreakerState::HalfOpen { probe_since: now };
                true
            }
            BreakerState::HalfOpen { .. } => false,
        }
    }

    /// Redis answered.
    pub fn success(&self) {
        let mut state = self.state();
        if !matches!(*state, BreakerState::Closed { failures: 0 }) {
            *state = BreakerState::Closed { failures: 0 };
        }
    }

    /// Redis failed or timed out.
    pub fn failure(&self) {
        let mut state = self.state();
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed { failures: failures + 1 }
            }
            _ => BreakerState::Open {
                until: Instant::now() + self.open_for,
            },
        };
    }

    /// The state as a gauge value: 0 closed, 1 open, 2 half-open (an open breaker whose
    /// wait is over counts as half-open: the next request probes).
    pub fn state_code(&self) -> u8 {
        match *self.state() {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { until } if Instant::now() < until => 1,
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_probes_and_closes() {
        let b = Breaker::new(2, 30);
        assert!(b.admit());
        b.failure();
        assert!(b.admit());
        b.failure();
        assert!(!b.admit(), "open after 2 failures");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "one probe");
        assert!(!b.admit(), "only one probe");
        b.failure();
        assert!(!b.admit(), "failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
        b.success();
        assert!(b.admit() && b.admit());
    }

    #[test]
    fn sold_out_cache_expires() {
        let c = Catalog::new(30);
        let slot = c.insert(1, 9, Gauge::noop());
        assert!(!c.is_sold_out(&slot));
        assert_eq!(c.sold_out_activity(1), None);
        c.mark_sold_out(&slot);
        assert!(c.is_sold_out(&c.get(1).unwrap()));
        assert_eq!(c.sold_out_activity(1), Some(9));
        assert_eq!(c.sold_out_activity(2), None);
        std::thread::sleep(Duration::from_millis(40));
        assert!(!c.is_sold_out(&slot));
        assert_eq!(c.sold_out_activity(1), None);
    }

    #[test]
    fn a_second_insert_keeps_the_first_slot() {
        let c = Catalog::new(1000);
        let first = c.insert(1, 9, Gauge::noop());
        c.mark_sold_out(&first);
        let again = c.insert(1, 9, Gauge::noop());
        assert!(Arc::ptr_eq(&first, &again));
        c.insert(2, 9, Gauge::noop());
        assert!(Arc::ptr_eq(&first, &c.get(1).unwrap()));
        assert_eq!(c.sold_out_activity(1), Some(9));
    }

    #[test]
    fn degrade_switches_answer_per_activity() {
        let d = DegradeSwitches::default();
        assert!(!d.any());
        d.set(HashMap::from([(9, Arc::from("back soon"))]));
        assert!(d.any());
        assert_eq!(d.message(9).as_deref(), Some("back soon"));
        assert_eq!(d.message(8), None);
        d.set(HashMap::new());
        assert!(!d.any() && d.message(9).is_none());
    }

    #[test]
    fn per_user_limit() {
        let l = Limits::new(&FunnelConfig {
            per_user_rps: 1,
            per_user_burst: 2,
            token_per_user_rps: 1,
            token_per_user_burst: 2,
            ..FunnelConfig::default()
        });
        let (a, b) = ("a".to_string(), "b".to_string());
        assert!(l.allow_user(&a) && l.allow_user(&a));
        assert!(!l.allow_user(&a));
        assert!(l.allow_user(&b));
        // Token requests in a's name have their own bucket.
        assert!(l.allow_token_request(&a, None) && l.allow_token_request(&a, None));
        assert!(!l.allow_token_request(&a, None));
        assert!(!l.allow_user(&a));
    }

    #[test]
    fn per_address_limits_key_ipv6_by_its_64() {
        let l = Limits::new(&FunnelConfig {
            per_ip_rps: 1,
            per_ip_burst: 2,
            token_per_ip_rps: 1,
            token_per_ip_burst: 1,
            ..FunnelConfig::default()
        });
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert!(l.allow_address(ip("2001:db8::1")) && l.allow_address(ip("2001:db8::ffff:2")));
        assert!(!l.allow_address(ip("2001:db8::3")), "one /64, one bucket");
        assert!(l.allow_address(ip("2001:db8:0:1::1")), "the next /64 has its own");
        assert!(l.allow_address(ip("192.0.2.1")) && l.allow_address(ip("192.0.2.1")));
        assert!(
            !l.allow_address(ip("::ffff:192.0.2.1")),
            "a mapped v4 address is the v4 one"
        );
        assert!(l.allow_address(None), "unknown address: not limited");
        // Token requests per address: their own bucket, whatever user they name.
        assert!(l.allow_token_request("u1", ip("192.0.2.1")));
        assert!(!l.allow_token_request("u2", ip("192.0.2.1")));
        assert_eq!(l.tracked(Table::PerAddress), 3);
        assert_eq!(l.tracked(Table::TokenPerAddress), 1);
    }
}
