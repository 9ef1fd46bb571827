//! What the handlers share ([`AppState`]), the background tasks that live as long as it (stock
//! refresh, lost-state guard, trimming of the rate limiter), and the answers every handler
//! gives when Redis cannot be asked.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::batcher::{Batchers, ReplicaWait};
use super::client_addr::ClientAddrs;
use super::error::ApiError;
use super::funnel::{Admission, Breaker, Catalog, DegradeSwitches, Limits};
use super::guard::{self, KnownSeqs, GUARD_EVERY};
use super::identity::Identity;
use super::metrics::{BusyReason, ServerMetrics};
use super::refresh;
use crate::config::Config;
use crate::db::Db;
use crate::redis_client::RedisClient;
use crate::ticks::Ticks;
use crate::token::Signer;

/// How often stock is read from Redis (see [`refresh`]): half the sold-out cache time, so a
/// product sold out elsewhere stays answered from memory without gaps; within 100ms..5s.
fn stock_refresh_every(sold_out_cache_ms: u64) -> Duration {
    Duration::from_millis((sold_out_cache_ms / 2).clamp(100, 5000))
}

/// How often the degrade switches are read (see [`refresh::refresh_degraded`]): a switch
/// must reach every server within a second, whatever the stock refresh's pace.
const DEGRADE_REFRESH_EVERY: Duration = Duration::from_millis(400);

/// How often users whose rate-limit buckets are full again are forgotten.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(10);

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The shared parts of [`AppState`].
pub struct Shared {
    /// Redis (decisions, tokens, activities).
    pub redis: RedisClient,
    /// MySQL (order lookups).
    pub db: Db,
    /// Token signer.
    pub signer: Signer,
    /// Who the buyer is (`auth.mode`).
    pub identity: Identity,
    /// Where the buyer is (the peer, or what a trusted proxy says).
    pub client_addrs: ClientAddrs,
    /// The configuration the server was started with.
    pub config: Config,
    /// Product -> activity map and sold-out cache.
    pub catalog: Catalog,
    /// Bounded admission of buy requests.
    pub admission: Admission,
    /// Activities whose buys are answered `degraded`.
    pub degraded: DegradeSwitches,
    /// Rate limits.
    pub limits: Limits,
    /// Circuit breaker around Redis.
    pub breaker: Breaker,
    /// Group commit.
    pub batchers: Batchers,
    /// What `GET /metrics` shows.
    pub stats: ServerMetrics,
    /// MySQL's persist sequences, for the batchers (see [`guard`]).
    pub known_seqs: Arc<KnownSeqs>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AsRef<Identity> for AppState {
    fn as_ref(&self) -> &Identity {
        &self.identity
    }
}

impl AsRef<ClientAddrs> for AppState {
    fn as_ref(&self) -> &ClientAddrs {
        &self.client_addrs
    }
}

impl AppState {
    /// State for a server over `redis` and `db`. Must be called inside a Tokio runtime
    /// (it starts the background tasks, which stop once the state is dropped).
    pub fn new(config: Config, redis: RedisClient, db: Db) -> AppState {
        let f = &config.funnel;
        let stats = ServerMetrics::new(crate::metrics::Metrics::new());
        let known_seqs = Arc::new(KnownSeqs::default());
        // `serve` refuses a mode that cannot be set up before it gets here; should the key
        // file go away in between, buyers are refused rather than let in unchecked.
        let identity = Identity::new(&config.auth).unwrap_or_else(|why| {
            tracing::error!(%why, "buyer identity cannot be checked: every buyer is refused");
            Identity::Refuse
        });
        let shared = Shared {
            signer: Signer::new(&config.token.secret),
            identity,
            client_addrs: ClientAddrs::new(&config.auth.trusted_proxies),
            catalog: Catalog::new(f.sold_out_cache_ms),
            admission: Admission::new(f.max_in_flight),
            degraded: DegradeSwitches::default(),
            limits: Limits::new(f),
            breaker: Breaker::new(f.breaker_failures, f.breaker_open_ms),
            batchers: Batchers::new(
                redis.clone(),
                f.batch_max,
                f.pipeline_under(config.redis.durability),
                config.redis_response_timeout(),
            )
            .with_batch_sizes(stats.batch_size.clone())
            .with_wait(f.batch_wait(config.redis.durability))
            .with_replica_wait((config.redis.wait_replicas > 0).then(|| ReplicaWait {
                replicas: config.redis.wait_replicas,
                timeout: Duration::from_millis(config.redis.wait_timeout_ms),
                seconds: stats.wait_replicas.clone(),
            }))
            .with_known_seqs(known_seqs.clone()),
            known_seqs,
            stats,
            redis,
            db,
            config,
        };
        let shared = Arc::new(shared);
        spawn_background(&shared);
        AppState(shared)
    }
}

/// The request a failed Redis call served, as its log line names it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The activity, when known.
    pub activity: Option<u64>,
    /// The product, when known.
    pub product: Option<u64>,
    /// The buyer.
    pub user: &'a str,
}

impl Shared {
    /// Whether the circuit breaker lets a call to Redis go now; when it does not, the answer
    /// (`busy`, counted with reason `breaker`).
    pub fn admit_redis(&self) -> Result<(), ApiError> {
        if self.breaker.admit() {
            return Ok(());
        }
        self.stats.busy(BusyReason::Breaker);
        Err(ApiError::redis_unavailable())
    }

    /// The answer to a call to Redis that failed or timed out (`why`) for `subject`: counted
    /// against the circuit breaker and as a `busy` answer with reason `redis`, and logged as
    /// `message`.
    pub fn redis_failed(&self, message: &'static str, why: &dyn Display, subject: Subject<'_>) -> ApiError {
        self.breaker.failure();
        self.stats.busy(BusyReason::Redis);
        let Subject {
            activity,
            product,
            user,
        } = subject;
        tracing::warn!(activity, product, user, error = %why, "{message}");
        ApiError::redis_unavailable()
    }
}

/// Starts the tasks that work for the state `shared` until it is dropped: the stock refresh
/// and the degrade switches' (at once, then periodically), the lost-state guard (likewise),
/// and the trimming of the per-user rate limiter.
fn spawn_background(shared: &Arc<Shared>) {
    let now = Instant::now();
    let every = stock_refresh_every(shared.config.funnel.sold_out_cache_ms);
    let mut ticks = Ticks::new(Arc::downgrade(shared), now, every);
    tokio::spawn(async move {
        let mut gauges = HashMap::new();
        while let Some(shared) = ticks.next().await {
            if let Err(e) = refresh::refresh(&shared.redis, &shared.catalog, &shared.stats, &mut gauges).await {
                tracing::debug!(error = %e, "stock refresh failed");
            }
        }
    });
    let mut ticks = Ticks::new(Arc::downgrade(shared), now, DEGRADE_REFRESH_EVERY);
    tokio::spawn(async move {
        let mut gauges = HashMap::new();
        while let Some(shared) = ticks.next().await {
            if let Err(e) = refresh::refresh_degraded(&shared.redis, &shared.degraded, &shared.stats, &mut gauges).await
            {
                tracing::debug!(error = %e, "degrade switch refresh failed");
            }
        }
    });
    let mut ticks = Ticks::new(Arc::downgrade(shared), now, GUARD_EVERY);
    tokio::spawn(async move {
        let mut gauges = HashMap::new();
        while let Some(shared) = ticks.next().await {
            guard::check(
                &shared.db,
                &shared.redis,
                &shared.stats,
                &shared.known_seqs,
                &mut gauges,
            )
            .await;
        }
    });
    let mut ticks = Ticks::new(Arc::downgrade(shared), now + FORGET_IDLE_EVERY, FORGET_IDLE_EVERY);
    tokio::spawn(async move {
        while let Some(shared) = ticks.next().await {
            shared.limits.forget_idle();
        }
    });
}
