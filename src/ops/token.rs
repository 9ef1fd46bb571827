//! `seckill token`: issue purchase tokens ahead of the sale, and revoke them.

use std::io::Write;
use std::path::Path;

use redis::AsyncCommands;
use serde::Serialize;

use crate::buckets::gate;
use crate::db::Db;
use crate::error::{Error, RedisContext, Result};
use crate::model::ActivityStatus;
use crate::ops::catalog;
use crate::redis_client::RedisClient;
use crate::token::{expiry_of, Signer};
use crate::user_id;
use crate::{progress, scripts};

/// Tokens registered per script call: big enough to amortise the round trip, small enough
/// not to stall Redis for other clients.
const CHUNK: usize = 1000;

/// Token lifetimes accepted, in seconds: up to a year, far beyond any sale, and small
/// enough that the expiry cannot overflow and Redis accepts it as a key TTL.
pub const TTL_SECS: std::ops::RangeInclusive<u64> = 1..=365 * 24 * 3600;

/// A token handed to one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedToken {
    /// The buyer.
    pub user_id: String,
    /// The token to present when buying.
    pub token: String,
    /// When it stops being accepted (unix seconds).
    pub expires_at: u64,
}

/// Whether tokens may be issued for an activity right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Preheated and not over.
    Open {
        /// Milliseconds until the sale's start by Redis's clock (the one `reserve.lua`
        /// judges the window by); zero or less once started.
        starts_in_ms: i64,
    },
    /// Not in Redis: unknown, or never preheated.
    NotPreheated,
    /// Ended, or past its window.
    Ended,
}

/// Reads the activity's state in Redis, by Redis's clock.
pub async fn gate(redis: &RedisClient, activity: u64) -> Result<Gate> {
    let mut conn = redis.conn();
    // (status, start_ms, end_ms, preheated_at) of the activity hash, then Redis's TIME.
    type Reply = ((Option<String>, Option<i64>, Option<i64>, Option<String>), (i64, i64));
    let ((status, start_ms, end_ms, preheated), (secs, micros)): Reply = redis::pipe()
        .hmget(
            redis.keys().activity(activity),
            &["status", "start_ms", "end_ms", "preheated_at"],
        )
        .cmd("TIME")
        .query_async(&mut conn)
        .await
        .at(redis)?;
    let now_ms = secs * 1000 + micros / 1000;
    Ok(match (status, preheated) {
        (None, _) | (_, None) => Gate::NotPreheated,
        (_, Some(p)) if p.is_empty() => Gate::NotPreheated,
        (Some(s), _) if s == ActivityStatus::Ended.as_str() => Gate::Ended,
        _ if end_ms.is_some_and(|end| now_ms >= end) => Gate::Ended,
        _ => Gate::Open {
            starts_in_ms: start_ms.map_or(0, |start| start - now_ms),
        },
    })
}

/// Issues (or returns the already registered) tokens of `users` in `activity`, valid for
/// `ttl_secs`, registering each in Redis with that lifetime. Refuses an activity that is
/// unknown in MySQL, not preheated, or ended. Shows a progress bar on a terminal.
pub async fn issue(
    db: &Db,
    redis: &RedisClient,
    signer: &Signer,
    activity: u64,
    users: &[String],
    ttl_secs: u64,
) -> Result<Vec<IssuedToken>> {
    catalog::get_activity(db, activity).await?;
    match gate(redis, activity).await? {
        // The operator hands tokens out ahead of the start: `token.open_before_secs` is for
        // buyers asking over HTTP.
        Gate::Open { .. } => {}
        Gate::NotPreheated => {
            return Err(Error::refused(format!(
                "activity {activity} is not preheated; run `seckill hot {activity}` first"
            )))
        }
        Gate::Ended => return Err(Error::refused(format!("activity {activity} has ended"))),
    }
    let bar = progress::bar(users.len() as u64, "tokens");
    let issued = register(redis, signer, activity, users, ttl_secs, |n| bar.inc(n)).await;
    bar.finish_and_clear();
    issued
}

/// Signs and registers tokens without checking the activity (callers do, once).
/// `progress` is told how many users each finished chunk covered.
pub async fn register(
    redis: &RedisClient,
    signer: &Signer,
    activity: u64,
    users: &[String],
    ttl_secs: u64,
    progress: impl FnMut(u64),
) -> Result<Vec<IssuedToken>> {
    register_with(redis, signer, activity, users, ttl_secs, false, progress).await
}

/// `user`'s own token, as a buyer asks for it (`POST /api/v1/token`): like [`register`],
/// but `None` while the operator has the user revoked (`seckill token revoke`, until
/// `seckill token lift`).
pub async fn register_own(
    redis: &RedisClient,
    signer: &Signer,
    activity: u64,
    user: &str,
    ttl_secs: u64,
) -> Result<Option<IssuedToken>> {
    let users = [user.to_string()];
    let mut issued = register_with(redis, signer, activity, &users, ttl_secs, true, |_| {}).await?;
    Ok(issued.pop().filter(|t| !t.token.is_empty()))
}

async fn register_with(
    redis: &RedisClient,
    signer: &Signer,
    activity: u64,
    users: &[String],
    ttl_secs: u64,
    refuse_revoked: bool,
    mut progress: impl FnMut(u64),
) -> Result<Vec<IssuedToken>> {
    if !TTL_SECS.contains(&ttl_secs) {
        return Err(Error::invalid(format!(
            "token lifetime {ttl_secs} s is outside {}..={} s",
            TTL_SECS.start(),
            TTL_SECS.end()
        )));
    }
    for user in users {
        user_id::validate(user)?;
    }
    let expiry = crate::token::unix_now() + ttl_secs;
    let keys = redis.keys();
    let mut out = Vec::with_capacity(users.len());
    let mut conn = redis.conn();
    // One script call per chunk, one after another: 1000 SETs per round trip already
    // issues 100,000 tokens in well under a second, and keeps the output in input order.
    for chunk in users.chunks(CHUNK) {
        let mut invocation = scripts::ISSUE_TOKEN.prepare_invoke();
        invocation
            .key(keys.revoked(activity))
            .arg(ttl_secs)
            .arg(if refuse_revoked { "1" } else { "0" });
        for user in chunk {
            invocation
                .key(keys.token(activity, user))
                .arg(user)
                .arg(signer.sign(activity, user, expiry));
        }
        let tokens: Vec<String> = invocation.invoke_async(&mut conn).await.at(redis)?;
        for (user, token) in chunk.iter().zip(tokens) {
            let expires_at = expiry_of(&token).unwrap_or(expiry);
            out.push(IssuedToken {
                user_id: user.clone(),
                token,
                expires_at,
            });
        }
        progress(chunk.len() as u64);
    }
    Ok(out)
}

/// Bars the user from buying (`invalid_token`, whatever token they present) and from fetching
/// a token over HTTP until [`lift`]ed, and deletes their registered token so that the next
/// one issued is new; returns whether there was a token. A token is checked by its signature,
/// not looked up, so once lifted the old token works again until it expires.
pub async fn revoke(redis: &RedisClient, activity: u64, user: &str) -> Result<bool> {
    user_id::validate(user)?;
    let keys = redis.keys();
    let mut conn = redis.conn();
    let (removed, _): (u64, u64) = redis::pipe()
        .atomic()
        .del(keys.token(activity, user))
        .sadd(keys.revoked(activity), user)
        .query_async(&mut conn)
        .await
        .at(redis)?;
    gate::member(redis, activity, gate::Set::Revoked, user, true).await?;
    Ok(removed > 0)
}

/// Lets a revoked user buy and fetch tokens over HTTP again; returns whether they were
/// revoked.
pub async fn lift(redis: &RedisClient, activity: u64, user: &str) -> Result<bool> {
    user_id::validate(user)?;
    let mut conn = redis.conn();
    let lifted: u64 = conn.srem(redis.keys().revoked(activity), user).await.at(redis)?;
    gate::member(redis, activity, gate::Set::Revoked, user, false).await?;
    Ok(lifted > 0)
}

/// Most users one `--range` may name.
pub const MAX_RANGE_USERS: u64 = 10_000_000;

/// Numeric user ids `first..=last`, as given by `--range FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRange {
    /// First id.
    pub first: u64,
    /// Last id (inclusive).
    pub last: u64,
}

impl UserRange {
    /// The ids, in order.
    pub fn ids(&self) -> Vec<String> {
        (self.first..=self.last).map(|n| n.to_string()).collect()
    }
}

/// Parses `FIRST-LAST` (inclusive): whole numbers, FIRST <= LAST, at most
/// [`MAX_RANGE_USERS`] users.
pub fn parse_range(range: &str) -> Result<UserRange> {
    let bad = || Error::invalid(format!("range {range:?}: expected FIRST-LAST, e.g. 1-100000"));
    let (first, last) = range.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    if first > last || last - first >= MAX_RANGE_USERS {
        return Err(Error::invalid(format!(
            "range {range:?}: FIRST must not exceed LAST, and at most {MAX_RANGE_USERS} users"
        )));
    }
    Ok(UserRange { first, last })
}

/// Reads user ids from a file, one per line; blank lines are skipped and the line break
/// (`\n` or `\r\n`) is not part of the id, but any other whitespace is refused like
/// everywhere else, naming the line.
pub fn read_users(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        user_id::validate(line).map_err(|e| Error::invalid(format!("{}: line {}: {e}", path.display(), i + 1)))?;
        users.push(line.to_string());
    }
    Ok(users)
}

/// Writes one `user_id,token` line per token (no header, so line count = user count),
/// quoting ids that need it.
pub fn write_csv(out: &mut impl Write, tokens: &[IssuedToken]) -> std::io::Result<()> {
    for t in tokens {
        if t.user_id.contains([',', '"']) {
            writeln!(out, "\"{}\",{}", t.user_id.replace('"', "\"\""), t.token)?;
        } else {
            writeln!(out, "{},{}", t.user_id, t.token)?;
        }
    }
    out.flush()
}
