//! Configuration: `config.yaml`, overridden by `SECKILL_*` environment variables.
//!
//! Every field has a default, so a missing file (or a partial one) still yields a
//! working configuration for a local Redis and MariaDB.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::durability::Durability;
use crate::error::{Error, Result};

mod auth;
pub use auth::{AuthConfig, AuthMode, Cidr, MIN_JWT_SECRET_BYTES};

/// The whole configuration of every subcommand.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// MySQL / MariaDB.
    pub database: DatabaseConfig,
    /// Redis.
    pub redis: RedisConfig,
    /// The buyer-facing HTTP endpoint of `seckill serve`.
    pub http: HttpConfig,
    /// Purchase tokens.
    pub token: TokenConfig,
    /// The flow-control funnel in front of Redis.
    pub funnel: FunnelConfig,
    /// The order persisting daemons.
    pub consumer: ConsumerConfig,
    /// Order lifecycle rules.
    pub orders: OrdersConfig,
    /// Payment rules.
    pub payment: PaymentConfig,
    /// The daemon that opens and ends activities on time.
    pub scheduler: SchedulerConfig,
    /// Who the buyer is (`seckill serve`).
    pub auth: AuthConfig,
}

/// MySQL / MariaDB connection settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `mysql://user:password@host:port/database`; the database is created by `seckill migrate`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection before failing, in milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "mysql://root@127.0.0.1:3306/seckill".into(),
            max_connections: 8,
            connect_timeout_ms: 3000,
        }
    }
}

/// Redis connection settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db`.
    pub url: String,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Per-command response timeout in milliseconds.
    pub response_timeout_ms: u64,
    /// What the Redis server must do so that an acknowledged order survives its failure;
    /// `hot`, `start` and `serve` refuse a server that does not (see [`Durability`]).
    pub durability: Durability,
    /// Replicas that must acknowledge each purchase batch before buyers hear `queued`
    /// (0: none; with `durability: replicas`, at least this many must be connected).
    pub wait_replicas: u32,
    /// How long a batch waits for those replicas (ms) before its buyers hear `unconfirmed`;
    /// below `response_timeout_ms`, which the `WAIT` shares the connection with.
    pub wait_timeout_ms: u64,
    /// Buyers whose user id is a whole number below this (digits only, no leading zero) keep
    /// their units of a product without stock buckets in one array per product, which a batch
    /// reads and raises with one command, instead of a field of the product's bought hash
    /// (see `crate::totals`). Costs up to 2 bytes per id below it, per product. 0: every
    /// total in the hash. `hot` stamps it on each product: a change applies at the next `hot`.
    pub numeric_user_ids_below: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: "seckill".into(),
            connect_timeout_ms: 1000,
            response_timeout_ms: 1000,
            durability: Durability::default(),
            wait_replicas: 0,
            wait_timeout_ms: 500,
            numeric_user_ids_below: 0,
        }
    }
}

/// HTTP settings of `seckill serve`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address.
    pub bind: String,
    /// Larger request bodies are rejected with `bad_request`.
    pub max_body_bytes: usize,
    /// HTTP threads of their own, each an event loop with its own listener on `bind`; 0 (the
    /// default): none, the process's runtime serves HTTP beside group commit and Redis, with
    /// a worker per core, so a buy is decided without a hand-off between threads (see
    /// `server::http_threads`).
    pub threads: usize,
    /// A request's head (request line and headers) must be complete within this many
    /// milliseconds of the server starting to wait for it: from the connection's opening, or
    /// from the previous answer on a kept-alive connection. So this is also how long a silent
    /// or idle connection is kept. Slower connections are closed.
    pub header_read_timeout_ms: u64,
    /// A request's body must be complete within this many milliseconds of the server starting
    /// to wait for it; a slower one is answered `bad_request` and its connection closed.
    pub body_read_timeout_ms: u64,
    /// Open connections per process; a connection beyond is answered 503 `busy` at once and
    /// closed (0: three quarters of the open-file limit). See [`HttpConfig::connection_cap`].
    pub max_connections: usize,
}

impl HttpConfig {
    /// The connection cap: `max_connections`, or when 0 three quarters of the process's
    /// open-file limit (the rest stays for Redis, MySQL, logs and the connections being
    /// refused), at least 16.
    pub fn connection_cap(&self) -> usize {
        match self.max_connections {
            0 => (open_file_limit() / 4 * 3).max(16),
            n => n,
        }
    }

    /// [`HttpConfig::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`HttpConfig::body_read_timeout_ms`] as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// The soft limit on open files of this process (`ulimit -n`); 1024 when it cannot be read.
#[cfg(unix)]
fn open_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if read != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return 1024;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(not(unix))]
fn open_file_limit() -> usize {
    1024
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_body_bytes: 4096,
            threads: 0,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_connections: 0,
        }
    }
}

/// Purchase token settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// HMAC-SHA256 key; change it in production (`SECKILL_TOKEN_SECRET`).
    pub secret: String,
    /// Default lifetime of an issued token, in seconds.
    pub ttl_secs: u64,
    /// `POST /api/v1/token` hands tokens out from this many seconds before the sale's start
    /// (`not_started` until then); `seckill token` works ahead of time regardless.
    pub open_before_secs: u64,
}

/// The token secret every build ships with; `serve` refuses it (see [`TokenConfig::weak_secret`]).
pub const DEFAULT_TOKEN_SECRET: &str = "change-me-in-production";

/// Shortest token secret `serve` accepts without `--insecure-dev-secret`, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

impl TokenConfig {
    /// Whether a buyer may fetch a token over HTTP when the sale starts in `starts_in_ms`
    /// milliseconds (zero or less: started).
    pub fn open_for(&self, starts_in_ms: i64) -> bool {
        let opens_before_ms = i64::try_from(self.open_before_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        starts_in_ms <= opens_before_ms
    }

    /// Why the secret is not fit for a real sale (the shipped default, or shorter than
    /// [`MIN_SECRET_BYTES`]); `None` when it is.
    pub fn weak_secret(&self) -> Option<String> {
        if self.secret == DEFAULT_TOKEN_SECRET {
            Some("token.secret is the shipped default".into())
        } else if self.secret.len() < MIN_SECRET_BYTES {
            Some(format!(
                "token.secret is only {} bytes; use {MIN_SECRET_BYTES} or more random bytes",
                self.secret.len()
            ))
        } else {
            None
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            secret: DEFAULT_TOKEN_SECRET.into(),
            ttl_secs: 3600,
            open_before_secs: 0,
        }
    }
}

/// The layers that shed load before it reaches Redis.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunnelConfig {
    /// After Redis answered sold out for a product, answer locally for this long.
    pub sold_out_cache_ms: u64,
    /// Requests in flight beyond this are answered `busy` at once.
    pub max_in_flight: usize,
    /// Global token bucket, requests per second (0 disables).
    pub global_rps: u32,
    /// Per-user token bucket, requests per second (0 disables).
    pub per_user_rps: u32,
    /// Per-user burst.
    pub per_user_burst: u32,
    /// Buy requests per second per client address (an IPv6 address counts as its /64; 0
    /// disables). Off by default: until `auth.trusted_proxies` names the proxies in front,
    /// every buyer behind one shares its address.
    pub per_ip_rps: u32,
    /// Per-address burst (0: `per_ip_rps`).
    pub per_ip_burst: u32,
    /// `POST /api/v1/token` requests per second per client address (0 disables; off by
    /// default for the same reason as `per_ip_rps`).
    pub token_per_ip_rps: u32,
    /// Its burst (0: `token_per_ip_rps`).
    pub token_per_ip_burst: u32,
    /// `POST /api/v1/token` requests per second per named user (0 disables): a buyer needs
    /// one token per activity, and asking again returns the same one.
    pub token_per_user_rps: u32,
    /// Its burst (0: `token_per_user_rps`).
    pub token_per_user_burst: u32,
    /// Most keys each of the per-address and token-request tables tracks; beyond, a new key
    /// is not limited by that table (README: Identity and abuse).
    pub rate_limit_keys_max: usize,
    /// Consecutive Redis failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe, in milliseconds.
    pub breaker_open_ms: u64,
    /// Most buy requests decided by one script call (group commit).
    pub batch_max: usize,
    /// Script calls in flight at once per activity. 1 makes the largest batches (purchases
    /// pile up while a call is out), which costs Redis the least; raise it when Redis is far
    /// away, since one activity then decides at most `batch_max` per round trip per call.
    pub batch_pipeline: usize,
    /// Script calls in flight per activity under `redis.durability: aof_always`, in place of
    /// `batch_pipeline`: Redis answers a call only after fsyncing it, and a second call lets
    /// the next batch be gathered and wait in Redis's socket meanwhile, so the HTTP work of
    /// one batch and Redis's turn for another overlap (see README, Running Redis for a flash
    /// sale, for the measurement that chose 2).
    pub batch_pipeline_aof_always: usize,
    /// Group commit delay, in microseconds: the longest a batch keeps gathering while
    /// purchases keep arriving. After taking what is queued it lets the runtime's other
    /// tasks run once (the connections with requests read meanwhile); it goes as soon as such
    /// a turn brings no purchase, or it holds the purchases expected (those queued while the
    /// last call was out plus the buyers it just answered), or this long has passed. So under
    /// load a batch takes in the requests already on their way and a call's fixed cost in
    /// Redis is shared by them, while no core idles waiting for buyers who are not coming.
    /// 0: never wait.
    pub batch_linger_us: u64,
    /// The group commit delay under `redis.durability: aof_always`, in place of
    /// `batch_linger_us`, and a different wait: a batch smaller than the purchases expected
    /// waits up to this long for them, since every call then also costs Redis one fsync
    /// whatever its size. A lone buyer after a lone buyer expects nobody and never waits.
    pub batch_linger_us_aof_always: u64,
}

/// How a group-commit batch waits for more purchases before its script call
/// ([`FunnelConfig::batch_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchWait {
    /// Goes with what is queued.
    Never,
    /// Gathers while each turn of the runtime brings more purchases, at most this long
    /// (`funnel.batch_linger_us`).
    WhileArriving(Duration),
    /// Waits for the purchases expected, at most this long
    /// (`funnel.batch_linger_us_aof_always`).
    ForExpected(Duration),
}

impl FunnelConfig {
    /// Script calls in flight per activity under `durability`.
    pub fn pipeline_under(&self, durability: Durability) -> usize {
        match durability {
            Durability::AofAlways => self.batch_pipeline_aof_always,
            _ => self.batch_pipeline,
        }
    }

    /// How a batch waits for more purchases under `durability`.
    pub fn batch_wait(&self, durability: Durability) -> BatchWait {
        let (micros, wait): (u64, fn(Duration) -> BatchWait) = match durability {
            Durability::AofAlways => (self.batch_linger_us_aof_always, BatchWait::ForExpected),
            _ => (self.batch_linger_us, BatchWait::WhileArriving),
        };
        match micros {
            0 => BatchWait::Never,
            micros => wait(Duration::from_micros(micros)),
        }
    }
}

impl Default for FunnelConfig {
    fn default() -> Self {
        Self {
            sold_out_cache_ms: 1000,
            max_in_flight: 4096,
            global_rps: 0,
            per_user_rps: 20,
            per_user_burst: 20,
            per_ip_rps: 0,
            per_ip_burst: 0,
            token_per_ip_rps: 0,
            token_per_ip_burst: 0,
            token_per_user_rps: 1,
            token_per_user_burst: 5,
            rate_limit_keys_max: 100_000,
            breaker_failures: 5,
            breaker_open_ms: 1000,
            batch_max: 128,
            batch_pipeline: 1,
            batch_pipeline_aof_always: 2,
            batch_linger_us: 500,
            batch_linger_us_aof_always: 1500,
        }
    }
}

/// Settings of the order persisting daemons.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Redis Streams consumer group shared by every consumer.
    pub group: String,
    /// Entries read (and persisted in one transaction) at once.
    pub batch: usize,
    /// How long one read blocks waiting for new entries, in milliseconds.
    pub block_ms: u64,
    /// After a read that found less than a batch, wait this long (ms) before reading again,
    /// so entries gather into fewer, larger batches. Each read, mark and acknowledgement is a
    /// write that Redis fsyncs on its own under `appendfsync always` (blocking every buyer),
    /// and each batch is a MySQL commit. A full read never waits: a backlog drains at full
    /// speed. 0: read again at once.
    pub linger_ms: u64,
    /// Entries held this long by a consumer (silent, or one that let them go when MySQL
    /// failed) are reclaimed by another, in milliseconds.
    pub claim_idle_ms: u64,
    /// Deliveries after which an entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// First retry delay after a MySQL failure, doubled up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group: "persist".into(),
            batch: 1000,
            block_ms: 1000,
            linger_ms: 50,
            claim_idle_ms: 30_000,
            max_deliveries: 5,
            retry_base_ms: 200,
            retry_max_ms: 10_000,
        }
    }
}

/// Order lifecycle rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// Reservations and stock changes younger than this are "in flight" for reconcile, in
    /// seconds; `reconcile --fix` settles a stock change pending longer.
    pub in_flight_grace_secs: u64,
    /// `reconcile --all` checks the activities that ended this recently (e.g. `24h`), besides
    /// the online ones: their orders still expire and get cancelled after the sale.
    #[serde(with = "human_duration")]
    pub reconcile_window: Duration,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            in_flight_grace_secs: 60,
            reconcile_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Payment rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentConfig {
    /// How long a buyer has to pay (e.g. `15m`): `order expire` expires pending orders older
    /// than this unless `--older-than` says otherwise.
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    /// HMAC-SHA256 key the payment provider signs its callbacks with
    /// (`SECKILL_PAYMENT_WEBHOOK_SECRET`); empty: `POST /api/v1/payments/callback` answers
    /// 503 `disabled`, so a provider that retries loses no payment while it is unset.
    pub webhook_secret: String,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15 * 60),
            webhook_secret: String::new(),
        }
    }
}

/// Settings of `seckill scheduler`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How often it looks for activities due to open or end, in milliseconds: the most an
    /// opening or ending can lag behind its time.
    pub tick_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { tick_ms: 200 }
    }
}

/// Durations written for people (`15m`, `24h`, `1h 30m`) in the file.
mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (expected e.g. 15m, 24h)")))
    }
}

impl Config {
    /// Loads `path` when it exists (built-in defaults otherwise), then applies the
    /// environment overrides. `explicit` means the user named the file, so its absence is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::parse(&text).map_err(|message| Error::Config(format!("{}: {message}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Config::default(),
            Err(e) => return Err(Error::Config(format!("{}: {e}", path.display()))),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses YAML text; the error names the line and the field.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `SECKILL_*` overrides read through `var`; fails on a value that does not parse.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        let fields: [(&str, &mut String); 7] = [
            ("SECKILL_DATABASE_URL", &mut self.database.url),
            ("SECKILL_REDIS_URL", &mut self.redis.url),
            ("SECKILL_KEY_PREFIX", &mut self.redis.key_prefix),
            ("SECKILL_HTTP_BIND", &mut self.http.bind),
            ("SECKILL_TOKEN_SECRET", &mut self.token.secret),
            ("SECKILL_PAYMENT_WEBHOOK_SECRET", &mut self.payment.webhook_secret),
            ("SECKILL_AUTH_JWT_SECRET", &mut self.auth.jwt_secret),
        ];
        for (name, field) in fields {
            if let Some(value) = var(name) {
                *field = value;
            }
        }
        if let Some(value) = var("SECKILL_REDIS_DURABILITY") {
            self.redis.durability = value
                .parse()
                .map_err(|e| Error::Config(format!("SECKILL_REDIS_DURABILITY: {e}")))?;
        }
        Ok(())
    }

    /// Rejects values no component can work with.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}', ' ']) {
            return bad("redis.key_prefix", "must be non-empty, without braces or spaces");
        }
        if self.redis.wait_replicas > 0
            && (self.redis.wait_timeout_ms == 0 || self.redis.wait_timeout_ms >= self.redis.response_timeout_ms)
        {
            return bad(
                "redis.wait_timeout_ms",
                "must be positive and below redis.response_timeout_ms when redis.wait_replicas is set",
            );
        }
        if self.redis.numeric_user_ids_below > crate::totals::MAX_IDS_BELOW {
            return bad(
                "redis.numeric_user_ids_below",
                &format!("must be at most {}", crate::totals::MAX_IDS_BELOW),
            );
        }
        if let Err(e) = crate::redis_client::RedisTarget::parse(&self.redis.url) {
            return bad("redis.url", &e);
        }
        if self.token.secret.len() < 8 {
            return bad("token.secret", "must be at least 8 characters");
        }
        if self.token.ttl_secs == 0 {
            return bad("token.ttl_secs", "must be positive");
        }
        if self.funnel.batch_max == 0 || self.funnel.batch_pipeline == 0 {
            return bad("funnel.batch_max", "batch_max and batch_pipeline must be positive");
        }
        if self.funnel.batch_pipeline_aof_always == 0 {
            return bad("funnel.batch_pipeline_aof_always", "must be positive");
        }
        if self.funnel.batch_max > crate::buy::MAX_PURCHASES_PER_CALL {
            return bad(
                "funnel.batch_max",
                &format!(
                    "must be at most {} (one script call)",
                    crate::buy::MAX_PURCHASES_PER_CALL
                ),
            );
        }
        if self.funnel.max_in_flight == 0 {
            return bad("funnel.max_in_flight", "must be positive");
        }
        if !(1..=100_000_000).contains(&self.funnel.rate_limit_keys_max) {
            return bad("funnel.rate_limit_keys_max", "must be 1..=100000000");
        }
        if self.http.threads > 256 {
            return bad("http.threads", "at most 256 (0: served by the runtime's workers)");
        }
        for (field, ms) in [
            ("http.header_read_timeout_ms", self.http.header_read_timeout_ms),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                return bad(field, "must be 1..=3600000 (ms)");
            }
        }
        if self.consumer.batch == 0 || self.consumer.max_deliveries == 0 {
            return bad("consumer.batch", "batch and max_deliveries must be positive");
        }
        if self.consumer.linger_ms > 10_000 {
            return bad("consumer.linger_ms", "must be 0..=10000 (ms)");
        }
        if self.funnel.batch_linger_us > 100_000 {
            return bad("funnel.batch_linger_us", "must be 0..=100000 (µs)");
        }
        if self.funnel.batch_linger_us_aof_always > 100_000 {
            return bad("funnel.batch_linger_us_aof_always", "must be 0..=100000 (µs)");
        }
        if !(10..=60_000).contains(&self.scheduler.tick_ms) {
            return bad("scheduler.tick_ms", "must be 10..=60000 (ms)");
        }
        if self.payment.timeout.is_zero() || self.payment.timeout > Duration::from_secs(3650 * 86_400) {
            return bad("payment.timeout", "must be 1s to 3650d");
        }
        if let Some((field, why)) = self.auth.fault() {
            return bad(field, &why);
        }
        Ok(())
    }

    /// Redis connect timeout.
    pub fn redis_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.redis.connect_timeout_ms)
    }

    /// Redis per-command timeout.
    pub fn redis_response_timeout(&self) -> Duration {
        Duration::from_millis(self.redis.response_timeout_ms)
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!(
                "{}://{}@{}{}",
                &url[..scheme_end],
                masked,
                &authority[at + 1..],
                &rest[authority_end..]
            )
        }
        None => url.to_string(),
    }
}

/// `host:port` of a URL, for "cannot reach" messages.
pub fn url_address(url: &str) -> String {
    let redacted = redact_url(url);
    let rest = redacted.split("://").nth(1).unwrap_or(&redacted);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority).to_string()
}

#[cfg(test)]
mod tests;
