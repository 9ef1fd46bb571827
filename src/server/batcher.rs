//! Group commit: concurrent buy requests of one activity share script calls.
//!
//! One task per activity receives requests over a channel. Whenever a pipeline slot is
//! free it drains everything queued (up to `batch_max`) and decides the lot with one
//! [`buy::reserve`] call, whose verdicts are identical to one-by-one calls. Before the call a
//! batch keeps gathering briefly while purchases keep arriving (`funnel.batch_linger_us`;
//! under `aof_always`, where each call also costs an fsync, it waits for the purchases
//! expected instead; see `gather`), since each call has a fixed cost in Redis that a larger
//! batch shares.
//! Up to `batch_pipeline` calls per activity are in flight on the shared connection
//! (`batch_pipeline_aof_always` under `aof_always`, where a second call is gathered and waits
//! in Redis's socket while the first one's fsync runs), so under load requests pile up while
//! a call is out and the next batch grows by itself; with light load a request goes out alone
//! at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::Histogram;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::guard::KnownSeqs;
use crate::buckets::{self, Sharded};
use crate::buy::{Outcome, Purchase, Verdict};
use crate::config::BatchWait;
use crate::redis_client::RedisClient;

/// Why a purchase got no verdict.
#[derive(Debug, Clone)]
pub enum BatchError {
    /// The script call went out but no verdict came back: Redis failed or did not answer in
    /// time, or the batcher stopped mid-call. The script may have run (a stalled Redis runs
    /// it when it resumes), so the purchase may or may not have been made.
    Undecided(String),
    /// The batcher is gone (server shutting down) and the purchase was never sent.
    Closed,
    /// Reserved on the primary, but fewer than `redis.wait_replicas` replicas acknowledged
    /// it in time: a failover now could lose it. The buyer can look it up by `order_no`.
    Unconfirmed {
        /// The reservation's order number.
        order_no: String,
        /// What `WAIT` answered.
        why: String,
    },
}

/// `redis.wait_replicas`: after each script call that queued anything, one `WAIT` on the same
/// connection for that many replicas (group commit pays one per batch, not one per buyer).
#[derive(Clone)]
pub struct ReplicaWait {
    /// Replicas that must acknowledge.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
    /// How long each `WAIT` took.
    pub seconds: Histogram,
}

impl ReplicaWait {
    /// Waits for the replicas of the primary holding `key` (in a cluster, the primary of its
    /// slot); the error says how many acknowledged.
    async fn confirm(&self, redis: &RedisClient, key: &str) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut conn = redis.conn().for_key(key);
        let acked: redis::RedisResult<u32> = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(self.timeout.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        self.seconds.record(started.elapsed().as_secs_f64());
        match acked {
            Ok(n) if n >= self.replicas => Ok(()),
            Ok(n) => Err(format!(
                "{n} of {} replica(s) acknowledged within {:?}",
                self.replicas, self.timeout
            )),
            Err(e) => Err(format!("WAIT failed: {e}")),
        }
    }
}

/// The purchase goes back with its verdict, so the caller can still log who bought
/// without cloning the user id up front.
type Reply = (Purchase, Result<Verdict, BatchError>);

struct Job {
    purchase: Purchase,
    reply: oneshot::Sender<Reply>,
}

/// The batchers of every activity, started on first use.
pub struct Batchers {
    redis: RedisClient,
    batch_max: usize,
    pipeline: usize,
    timeout: Duration,
    wait: BatchWait,
    batch_sizes: Histogram,
    known_seqs: Arc<KnownSeqs>,
    replica_wait: Option<ReplicaWait>,
    senders: RwLock<HashMap<u64, mpsc::UnboundedSender<Job>>>,
    sharded: Arc<Sharded>,
    runtime: tokio::runtime::Handle,
}

impl Batchers {
    /// Batchers on `redis`; a script call not answered within `timeout` fails its batch.
    pub fn new(redis: RedisClient, batch_max: usize, pipeline: usize, timeout: Duration) -> Self {
        Batchers {
            redis,
            batch_max,
            pipeline,
            timeout,
            wait: BatchWait::Never,
            batch_sizes: Histogram::noop(),
            known_seqs: Arc::default(),
            replica_wait: None,
            senders: RwLock::default(),
            sharded: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Records the size of every batch in `histogram`.
    pub fn with_batch_sizes(mut self, histogram: Histogram) -> Self {
        self.batch_sizes = histogram;
        self
    }

    /// How a batch waits for more purchases before its call (`funnel.batch_linger_us`, see
    /// `gather`).
    pub fn with_wait(mut self, wait: BatchWait) -> Self {
        self.wait = wait;
        self
    }

    /// Hands every batch the persist sequences MySQL is known to have recorded, so a Redis
    /// that went back in time refuses it (see [`crate::lost_state`]).
    pub fn with_known_seqs(mut self, known_seqs: Arc<KnownSeqs>) -> Self {
        self.known_seqs = known_seqs;
        self
    }

    /// Waits for replicas after every batch that queued a reservation (see [`ReplicaWait`]).
    pub fn with_replica_wait(mut self, wait: Option<ReplicaWait>) -> Self {
        self.replica_wait = wait;
        self
    }

    /// Decides `purchase` (of `activity`) together with whatever else is queued; hands the
    /// purchase back (`None` only when the batcher vanished with it).
    pub async fn submit(&self, activity: u64, purchase: Purchase) -> (Option<Purchase>, Result<Verdict, BatchError>) {
        let (reply, verdict) = oneshot::channel();
        if let Err(refused) = self.send(activity, Job { purchase, reply }) {
            return (Some(refused.0.purchase), Err(BatchError::Closed));
        }
        match verdict.await {
            Ok((purchase, verdict)) => (Some(purchase), verdict),
            // Dropped with its batch: the call may have gone out.
            Err(_) => (None, Err(BatchError::Undecided("the batcher stopped".into()))),
        }
    }

    /// Sends under the read lock (sending never blocks): no sender clone per request, whose
    /// reference count every core would otherwise fight over.
    fn send(&self, activity: u64, job: Job) -> Result<(), mpsc::error::SendError<Job>> {
        if let Some(tx) = self.senders.read().unwrap_or_else(|e| e.into_inner()).get(&activity) {
            return tx.send(job);
        }
        self.sender(activity).send(job)
    }

    fn sender(&self, activity: u64) -> mpsc::UnboundedSender<Job> {
        let mut senders = self.senders.write().unwrap_or_else(|e| e.into_inner());
        senders
            .entry(activity)
            .or_insert_with(|| {
                // Unbounded is safe: admission caps the requests that can be queued.
                let (tx, rx) = mpsc::unbounded_channel();
                let batch = Batch {
                    max: self.batch_max,
                    pipeline: self.pipeline,
                    wait: self.wait,
                    sizes: self.batch_sizes.clone(),
                    known_seqs: self.known_seqs.clone(),
                    calls: Arc::new(Calls {
                        timeout: self.timeout,
                        wait: self.replica_wait.clone(),
                        sharded: self.sharded.clone(),
                    }),
                };
                self.runtime.spawn(run(self.redis.clone(), activity, rx, batch));
                tx
            })
            .clone()
    }
}

/// How one activity's batcher batches.
struct Batch {
    max: usize,
    pipeline: usize,
    wait: BatchWait,
    sizes: Histogram,
    known_seqs: Arc<KnownSeqs>,
    calls: Arc<Calls>,
}

/// How each script call of a batcher is made.
struct Calls {
    /// A script call not answered within this fails its batch.
    timeout: Duration,
    /// Replicas to wait for after the call.
    wait: Option<ReplicaWait>,
    /// Which products go through their stock buckets.
    sharded: Arc<Sharded>,
}

async fn run(redis: RedisClient, activity: u64, mut rx: mpsc::UnboundedReceiver<Job>, batch: Batch) {
    let Batch {
        max: batch_max,
        pipeline,
        wait,
        sizes,
        known_seqs,
        calls,
    } = batch;
    let slots = Arc::new(Semaphore::new(pipeline));
    let mut answered = 0;
    loop {
        // Queued while the last call was out: with `answered`, what the next batch may expect.
        let queued = rx.len();
        let Some(first) = rx.recv().await else { return };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let expected = queued + answered;
        let jobs = gather(&mut rx, first, batch_max, expected, wait).await;
        let mut purchases = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            purchases.push(job.purchase);
            replies.push(job.reply);
        }
        answered = purchases.len();
        sizes.record(purchases.len() as f64);
        let min_seq = known_seqs.get(activity);
        let call = decide(
            redis.clone(),
            activity,
            min_seq,
            purchases,
            replies,
            calls.clone(),
            slot,
        );
        if pipeline == 1 {
            // Nothing could be sent meanwhile anyway: decided here, without a task of its own.
            call.await;
        } else {
            tokio::spawn(call);
        }
    }
}

/// The next batch: `first` and everything queued (up to `max`), drained only once a pipeline
/// slot is free so whatever arrived meanwhile joins; then, by `wait`, more. Every call costs
/// Redis a fixed amount whatever its size (the script's set-up and its reads per batch; under
/// `appendfsync always` also one fsync), so a batch that goes with only what was queued at
/// the instant its slot freed leaves each purchase several times its share of that cost.
/// - [`BatchWait::WhileArriving`]: after each drain the batch lets the runtime's other tasks
///   run once (`yield_now` comes back after the runtime has polled its sockets and run what
///   they woke: the connections whose requests arrived meanwhile), and goes at the first
///   such turn that brought no purchase. No core waits on a timer for buyers who are not on
///   their way, and a lone buyer waits one turn.
/// - [`BatchWait::ForExpected`]: while it holds fewer than `expected` it waits for more, as
///   the buyers just answered usually come straight back; a lone buyer after a lone buyer
///   expects nobody else and never waits.
///
/// Both stop at `max` purchases, at `expected`, and after the wait's duration.
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Job>,
    first: Job,
    max: usize,
    expected: usize,
    wait: BatchWait,
) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(max.min(64));
    jobs.push(first);
    let drain = |rx: &mut mpsc::UnboundedReceiver<Job>, jobs: &mut Vec<Job>| {
        while jobs.len() < max {
            let Ok(job) = rx.try_recv() else { break };
            jobs.push(job);
        }
    };
    drain(rx, &mut jobs);
    let expected = expected.min(max);
    match wait {
        BatchWait::Never => {}
        BatchWait::WhileArriving(linger) => {
            let started = std::time::Instant::now();
            while jobs.len() < expected && started.elapsed() < linger {
                let before = jobs.len();
                tokio::task::yield_now().await;
                drain(rx, &mut jobs);
                if jobs.len() == before {
                    break;
                }
            }
        }
        BatchWait::ForExpected(linger) => {
            let deadline = tokio::time::Instant::now() + linger;
            while jobs.len() < expected {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => {
                        jobs.push(job);
                        drain(rx, &mut jobs);
                    }
                    _ => break,
                }
            }
        }
    }
    jobs
}

/// WAITs on every primary that took a reservation of the batch: the activity's, and each
/// stock bucket's (see [`crate::buckets`]) whose stream got one; the first failure is the answer.
async fn confirm_all(
    wait: &ReplicaWait,
    redis: &RedisClient,
    activity: u64,
    verdicts: &[Verdict],
) -> Result<(), String> {
    let keys = redis.keys();
    let mut slots: Vec<String> = Vec::new();
    for verdict in verdicts.iter().filter(|v| v.outcome == Outcome::Ok) {
        let bucket = verdict
            .order_no
            .as_deref()
            .and_then(crate::keys::parse_order_no)
            .and_then(|(_, entry)| crate::keys::bucket_of_entry(entry));
        let key = match bucket {
            Some(k) => keys.bucket_orders(activity, k),
            None => keys.activity(activity),
        };
        if !slots.contains(&key) {
            slots.push(key);
        }
    }
    if !redis.is_cluster() {
        // One server holds every slot: one WAIT covers the batch.
        slots.truncate(1);
    }
    for key in &slots {
        wait.confirm(redis, key).await?;
    }
    Ok(())
}

/// One script call for `purchases`; each verdict goes to its reply in order. The pipeline
/// slot is freed as soon as Redis answered, before the replies go out.
async fn decide(
    redis: RedisClient,
    activity: u64,
    min_seq: u64,
    purchases: Vec<Purchase>,
    replies: Vec<oneshot::Sender<Reply>>,
    calls: Arc<Calls>,
    slot: OwnedSemaphorePermit,
) {
    let timeout = calls.timeout;
    let decided = tokio::time::timeout(
        timeout,
        buckets::reserve_routed(&redis, activity, min_seq, &purchases, &calls.sharded),
    )
    .await;
    drop(slot);
    match decided {
        Ok(Ok(verdicts)) => {
            let unconfirmed = match &calls.wait {
                Some(wait) if verdicts.iter().any(|v| v.outcome == Outcome::Ok) => {
                    confirm_all(wait, &redis, activity, &verdicts).await.err()
                }
                _ => None,
            };
            for ((reply, purchase), verdict) in replies.into_iter().zip(purchases).zip(verdicts) {
                let answer = match (&unconfirmed, verdict.outcome, verdict.order_no.clone()) {
                    (Some(why), Outcome::Ok, Some(order_no)) => Err(BatchError::Unconfirmed {
                        order_no,
                        why: why.clone(),
                    }),
                    _ => Ok(verdict),
                };
                let _ = reply.send((purchase, answer));
            }
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer from redis within {timeout:?}"),
            };
            for (reply, purchase) in replies.into_iter().zip(purchases) {
                let _ = reply.send((purchase, Err(BatchError::Undecided(why.clone()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn job() -> Job {
        let (reply, _) = oneshot::channel();
        Job {
            purchase: Purchase {
                product_id: 1,
                user_id: "u".into(),
                quantity: 1,
                token: "t".into(),
            },
            reply,
        }
    }

    #[tokio::test]
    async fn a_batch_holding_what_is_expected_goes_at_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(job()).unwrap();
        let started = Instant::now();
        let jobs = gather(&mut rx, job(), 128, 2, BatchWait::ForExpected(Duration::from_secs(5))).await;
        assert_eq!(jobs.len(), 2);
        // A lone buyer after a lone buyer: nobody else is expected.
        let jobs = gather(&mut rx, job(), 128, 1, BatchWait::ForExpected(Duration::from_secs(5))).await;
        assert_eq!(jobs.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_small_batch_waits_for_the_expected_buyers_and_no_longer() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.send(job()).unwrap();
            }
            // Keeps the channel open past the linger.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let started = Instant::now();
        let jobs = gather(&mut rx, job(), 128, 3, BatchWait::ForExpected(Duration::from_secs(5))).await;
        assert_eq!(jobs.len(), 3, "went when the third expected buyer came");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // The fourth is queued meanwhile; the fifth never comes: the linger ends the wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let jobs = gather(
            &mut rx,
            job(),
            128,
            5,
            BatchWait::ForExpected(Duration::from_millis(200)),
        )
        .await;
        assert_eq!(jobs.len(), 2);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn no_linger_or_a_full_batch_never_waits() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for _ in 0..5 {
            tx.send(job()).unwrap();
        }
        let started = Instant::now();
        assert_eq!(gather(&mut rx, job(), 128, 100, BatchWait::Never).await.len(), 6);
        for _ in 0..5 {
            tx.send(job()).unwrap();
        }
        // batch_max caps the batch and what is expected of it.
        assert_eq!(
            gather(&mut rx, job(), 3, 3, BatchWait::ForExpected(Duration::from_secs(5)))
                .await
                .len(),
            3
        );
        assert_eq!(rx.len(), 3);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    /// A batch gathering while purchases arrive takes those sent by tasks that run in the
    /// meantime, one after another, and goes at the first turn that brings none: long before
    /// its linger, even though fewer than expected came.
    #[tokio::test]
    async fn a_batch_gathers_while_purchases_keep_arriving_and_goes_when_they_stop() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Each sender sends on its first poll: one arrives per turn of the runtime.
        let mut senders = Vec::new();
        for _ in 0..4 {
            let tx = tx.clone();
            senders.push(tokio::spawn(async move {
                tx.send(job()).unwrap();
                tokio::task::yield_now().await;
            }));
        }
        let started = Instant::now();
        let jobs = gather(
            &mut rx,
            job(),
            128,
            100,
            BatchWait::WhileArriving(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(jobs.len(), 5, "the first and the four sent meanwhile");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // A late one joins the next batch; expected and max still end the gathering.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(job()).unwrap();
        tx.send(job()).unwrap();
        let jobs = gather(&mut rx, job(), 2, 100, BatchWait::WhileArriving(Duration::from_secs(5))).await;
        assert_eq!(jobs.len(), 2);
        assert_eq!(rx.len(), 1);
        drop(tx);
        for sender in senders {
            sender.await.unwrap();
        }
    }
}
