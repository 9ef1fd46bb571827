//! The buckets' copies of what a purchase checks of its activity: the status, window and
//! persist sequence (`P:{a:A:b:K}:gate`), the blacklist and the revoked users. A purchase of a
//! sharded product is decided in its buyer's bucket alone (`lua/bucket_buy.lua`), so no slot
//! sees every purchase; whatever changes these in the activity's slot writes every bucket's
//! copy too, before it returns:
//! - `hot` writes them whole ([`load`]), the status under the activity's current change
//!   number, and copies any change made meanwhile once it is done;
//! - `start`/`stop`/`pause`/`end` and a lost state's suspension write the status
//!   ([`status`]), numbered by the activity hash's `gate_ver`, so two fan-outs racing end at
//!   the later change (`lua/gate_set.lua`);
//! - every persisted batch raises the persist sequence ([`seq`]) before its MySQL commit, so a
//!   bucket's copy is never below MySQL's unless its primary lost writes;
//! - `blacklist add|remove`, `token revoke|lift` ([`member`]).
//!
//! A bucket whose gate is missing (its primary lost its keys) sells nothing (`suspended`).

use redis::AsyncCommands;

use crate::error::{Error, RedisContext, Result};
use crate::redis_client::RedisClient;
use crate::scripts;

/// Members added or removed per command when copying a set.
const CHUNK: usize = 1000;

/// Runs `call` for every bucket `0..buckets` at the same time (in a cluster they live on
/// different primaries); the first error, if any, once all are done.
async fn each_bucket<F, Fut>(redis: &RedisClient, buckets: u16, call: F) -> Result<()>
where
    F: Fn(RedisClient, u16) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..buckets {
        tasks.spawn(call(redis.clone(), k));
    }
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(Error::Internal(format!("a bucket call panicked: {e}"))),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The activity's status as the gates copy it: change number, status, window.
type StatusChange = (i64, String, i64, i64);

/// The activity hash's current status change.
async fn current_status(redis: &RedisClient, activity: u64) -> Result<StatusChange> {
    let (ver, status, start_ms, end_ms): (Option<i64>, Option<String>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
        .arg(redis.keys().activity(activity))
        .arg(&["gate_ver", "status", "start_ms", "end_ms"])
        .query_async(&mut redis.conn())
        .await
        .at(redis)?;
    Ok((
        ver.unwrap_or(0),
        status.unwrap_or_default(),
        start_ms.unwrap_or(0),
        end_ms.unwrap_or(0),
    ))
}

/// Writes every bucket's copies whole (`hot`, after `preheat.lua` wrote the activity hash and
/// the blacklist): the gate from the activity hash, under its current status change number,
/// the blacklist and the revoked users from the activity's sets. A status change made while
/// they are written (a lost state's suspension, or its take-back) may have reached a bucket
/// before the copy read earlier replaced it, so the change is copied again once all are
/// written (later ones are copied by whoever makes them: the gates then hold a lower number).
pub async fn load(redis: &RedisClient, activity: u64, buckets: u16) -> Result<()> {
    if buckets == 0 {
        return Ok(());
    }
    let keys = redis.keys();
    let mut conn = redis.conn();
    let (fields, blacklist, revoked): (Vec<Option<String>>, Vec<String>, Vec<String>) = redis::pipe()
        .cmd("HMGET")
        .arg(keys.activity(activity))
        .arg(&["status", "start_ms", "end_ms", "persist_seq", "gate_ver"])
        .smembers(keys.blacklist(activity))
        .smembers(keys.revoked(activity))
        .query_async(&mut conn)
        .await
        .at(redis)?;
    let field = |i: usize| fields.get(i).cloned().flatten().unwrap_or_default();
    let loaded_ver = field(4).parse::<i64>().unwrap_or(0);
    let gate = [
        ("status", field(0)),
        ("start_ms", field(1)),
        ("end_ms", field(2)),
        ("persist_seq", field(3)),
        ("ver", loaded_ver.to_string()),
    ];
    let (blacklist, revoked) = (std::sync::Arc::new(blacklist), std::sync::Arc::new(revoked));
    each_bucket(redis, buckets, |redis, k| {
        let (gate, blacklist, revoked) = (gate.clone(), blacklist.clone(), revoked.clone());
        async move {
            let keys = redis.keys();
            let mut conn = redis.conn();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&[
                    keys.bucket_gate(activity, k),
                    keys.bucket_blacklist(activity, k),
                    keys.bucket_revoked(activity, k),
                ])
                .ignore()
                .hset_multiple(keys.bucket_gate(activity, k), &gate)
                .ignore();
            let () = pipe.query_async(&mut conn).await.at(&redis)?;
            for (set, members) in [
                (keys.bucket_blacklist(activity, k), &blacklist),
                (keys.bucket_revoked(activity, k), &revoked),
            ] {
                for chunk in members.chunks(CHUNK) {
                    let () = conn.sadd(&set, chunk).await.at(&redis)?;
                }
            }
            Ok(())
        }
    })
    .await?;
    let (ver, status_now, start_ms, end_ms) = current_status(redis, activity).await?;
    if ver != loaded_ver {
        status(redis, activity, ver, &status_now, start_ms, end_ms).await?;
    }
    Ok(())
}

/// Copies status change number `ver` (`status` with its window) into every bucket's gate.
pub async fn status(
    redis: &RedisClient,
    activity: u64,
    ver: i64,
    status: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<()> {
    let buckets = super::stock::count(redis, activity).await?;
    let status = status.to_string();
    each_bucket(redis, buckets, |redis, k| {
        let status = status.clone();
        async move {
            let _: i64 = scripts::GATE_SET
                .key(redis.keys().bucket_gate(activity, k))
                .arg("status")
                .arg(&status)
                .arg(start_ms)
                .arg(end_ms)
                .arg(ver)
                .invoke_async(&mut redis.conn())
                .await
                .at(&redis)?;
            Ok(())
        }
    })
    .await
}

/// Raises every bucket's copy of the persist sequence to at least `seq`.
pub async fn seq(redis: &RedisClient, activity: u64, buckets: u16, seq: u64) -> Result<()> {
    each_bucket(redis, buckets, |redis, k| async move {
        let _: i64 = scripts::GATE_SET
            .key(redis.keys().bucket_gate(activity, k))
            .arg("seq")
            .arg(seq)
            .invoke_async(&mut redis.conn())
            .await
            .at(&redis)?;
        Ok(())
    })
    .await
}

/// Which copied set [`member`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// `P:{a:A:b:K}:blacklist`.
    Blacklist,
    /// `P:{a:A:b:K}:revoked`.
    Revoked,
}

/// Adds `user` to (or removes them from) every bucket's copy of `set`.
pub async fn member(redis: &RedisClient, activity: u64, set: Set, user: &str, add: bool) -> Result<()> {
    let buckets = super::stock::count(redis, activity).await?;
    let user = user.to_string();
    each_bucket(redis, buckets, |redis, k| {
        let user = user.clone();
        async move {
            let keys = redis.keys();
            let key = match set {
                Set::Blacklist => keys.bucket_blacklist(activity, k),
                Set::Revoked => keys.bucket_revoked(activity, k),
            };
            let mut conn = redis.conn();
            let () = if add {
                conn.sadd(&key, &user).await.at(&redis)?
            } else {
                conn.srem(&key, &user).await.at(&redis)?
            };
            Ok(())
        }
    })
    .await
}
