//! The load generator of `seckill bench`: many keep-alive HTTP/1.1 connections, each
//! sending buy requests back to back, like wrk does, recording latency and outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;

use serde::Deserialize;

use super::conn::Conn;
use crate::error::{Error, Result};

/// One buyer: user id and purchase token.
pub type Buyer = (String, String);

/// What each request is.
#[derive(Debug, Clone)]
pub enum Target {
    /// `POST /api/v1/buy` of one unit of `product_id`, buyers used round-robin.
    Buy {
        /// The product everybody buys.
        product_id: u64,
        /// Buyers, used round-robin.
        buyers: Arc<Vec<Buyer>>,
    },
    /// `GET path`; the outcome is the HTTP status code. Measures the client itself
    /// (against `/health`, next to `wrk`).
    Get {
        /// E.g. `/health`.
        path: String,
    },
}

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// `host:port` of the server.
    pub authority: String,
    /// What to ask.
    pub target: Target,
    /// Requests in all.
    pub requests: u64,
    /// Connections (each sends its next request when the previous one is answered).
    pub concurrency: usize,
}

#[derive(serde::Serialize)]
struct BuyBody<'a> {
    product_id: u64,
    user_id: &'a str,
    quantity: u32,
    token: &'a str,
}

/// Live counters, readable while the load runs (for the progress bar).
#[derive(Debug, Default)]
pub struct LiveCounts {
    /// Requests answered.
    pub sent: AtomicU64,
    /// Answered `queued` (for a [`Target::Get`]: answered 200).
    pub queued: AtomicU64,
    /// Answered `sold_out`.
    pub sold_out: AtomicU64,
    /// Any other answer, or a transport error.
    pub rejected: AtomicU64,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests answered (or failed in transport).
    pub requests: u64,
    /// Wall time of the whole load.
    pub duration: Duration,
    /// Latency of every answered request, sorted, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Answers by code (`queued`, `sold_out`, ..., `transport_error`).
    pub outcomes: BTreeMap<String, u64>,
    /// Units reserved (sum of quantities answered `queued`).
    pub queued_units: u64,
    /// When the first answer said no stock was left.
    pub sellout: Option<Duration>,
    /// Units each user got, from the answers.
    pub per_user: BTreeMap<String, u64>,
}

impl LoadResult {
    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        f64::from(self.latencies_us[rank]) / 1000.0
    }
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    remaining: Option<i64>,
}

struct WorkerResult {
    latencies_us: Vec<u32>,
    outcomes: BTreeMap<String, u64>,
    /// HTTP statuses of GETs (kept as numbers: no allocation per answer).
    statuses: HashMap<u16, u64>,
    per_user: BTreeMap<String, u64>,
}

/// Sends the plan's requests and gathers the answers.
pub async fn run(plan: LoadPlan, live: Arc<LiveCounts>) -> Result<LoadResult> {
    let no_buyers = matches!(&plan.target, Target::Buy { buyers, .. } if buyers.is_empty());
    if no_buyers || plan.concurrency == 0 {
        return Err(Error::invalid("the load needs at least one buyer and one connection"));
    }
    let next = Arc::new(AtomicU64::new(0));
    let sellout: Arc<Mutex<Option<Duration>>> = Arc::default();
    let started = Instant::now();
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let (plan, next, live, sellout) = (plan.clone(), next.clone(), live.clone(), sellout.clone());
        workers.push(tokio::spawn(
            async move { worker(plan, next, live, sellout, started).await },
        ));
    }
    let mut result = LoadResult {
        requests: 0,
        duration: Duration::ZERO,
        latencies_us: Vec::with_capacity(plan.requests as usize),
        outcomes: BTreeMap::new(),
        queued_units: 0,
        sellout: None,
        per_user: BTreeMap::new(),
    };
    for worker in workers {
        let part = worker
            .await
            .map_err(|e| Error::Internal(format!("load worker failed: {e}")))??;
        result.latencies_us.extend(part.latencies_us);
        for (code, n) in part.outcomes {
            *result.outcomes.entry(code).or_default() += n;
        }
        for (status, n) in part.statuses {
            *result.outcomes.entry(status.to_string()).or_default() += n;
        }
        for (user, n) in part.per_user {
            *result.per_user.entry(user).or_default() += n;
        }
    }
    result.duration = started.elapsed();
    result.latencies_us.sort_unstable();
    result.requests = result.outcomes.values().sum();
    result.queued_units = result.per_user.values().sum();
    result.sellout = *sellout.lock().expect("sellout lock");
    Ok(result)
}

async fn connect(authority: &str) -> Result<Conn> {
    Conn::connect(authority).await.map_err(|e| Error::Io {
        path: format!("http://{authority}"),
        source: e,
    })
}

/// Writes the buy request of `user` into `out` (reused between requests).
fn buy_request(out: &mut Vec<u8>, authority: &str, product_id: u64, user: &str, token: &str) -> Result<()> {
    let body = BuyBody {
        product_id,
        user_id: user,
        quantity: 1,
        token,
    };
    let body = serde_json::to_vec(&body).map_err(|e| Error::Internal(e.to_string()))?;
    out.clear();
    write!(
        out,
        "POST /api/v1/buy HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(())
}

fn count(outcomes: &mut BTreeMap<String, u64>, code: &str) {
    match outcomes.get_mut(code) {
        Some(n) => *n += 1,
        None => {
            outcomes.insert(code.to_string(), 1);
        }
    }
}

async fn worker(
    plan: LoadPlan,
    next: Arc<AtomicU64>,
    live: Arc<LiveCounts>,
    sellout: Arc<Mutex<Option<Duration>>>,
    started: Instant,
) -> Result<WorkerResult> {
    let mut out = WorkerResult {
        latencies_us: Vec::new(),
        outcomes: BTreeMap::new(),
        statuses: HashMap::new(),
        per_user: BTreeMap::new(),
    };
    let mut conn = connect(&plan.authority).await?;
    let mut request = Vec::with_capacity(512);
    if let Target::Get { path } = &plan.target {
        request.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", plan.authority).as_bytes());
    }
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.requests {
            return Ok(out);
        }
        let user = match &plan.target {
            Target::Buy { product_id, buyers } => {
                let (user, token) = &buyers[(i % buyers.len() as u64) as usize];
                buy_request(&mut request, &plan.authority, *product_id, user, token)?;
                Some(user)
            }
            Target::Get { .. } => None,
        };
        let sent_at = Instant::now();
        let answer = conn.round_trip(&request).await;
        let latency = sent_at.elapsed();
        live.sent.fetch_add(1, Ordering::Relaxed);
        let (status, bytes) = match answer {
            Ok(answer) => answer,
            Err(_) => {
                count(&mut out.outcomes, "transport_error");
                live.rejected.fetch_add(1, Ordering::Relaxed);
                conn = connect(&plan.authority).await?;
                continue;
            }
        };
        out.latencies_us
            .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
        let Some(user) = user else {
            // A GET: the status code is the outcome; its body is not parsed.
            if status == 200 {
                live.queued.fetch_add(1, Ordering::Relaxed);
            } else {
                live.rejected.fetch_add(1, Ordering::Relaxed);
            }
            *out.statuses.entry(status).or_default() += 1;
            continue;
        };
        let answer: Answer = serde_json::from_slice(bytes).unwrap_or(Answer {
            status: None,
            error: None,
            remaining: None,
        });
        let code = answer
            .error
            .or(answer.status)
            .unwrap_or(Cow::Borrowed("unreadable_answer"));
        match code.as_ref() {
            "queued" => {
                live.queued.fetch_add(1, Ordering::Relaxed);
                *out.per_user.entry(user.clone()).or_default() += 1;
            }
            "sold_out" => {
                live.sold_out.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                live.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        if answer.remaining == Some(0) {
            let at = started.elapsed();
            let mut first = sellout.lock().expect("sellout lock");
            if first.is_none_or(|t| at < t) {
                *first = Some(at);
            }
        }
        count(&mut out.outcomes, &code);
    }
}
