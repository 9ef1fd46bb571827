//! Batches in flight: sent to MySQL in a task of their own, then landed (acknowledged
//! once committed, or reported refused for the loop to let go of).

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::watch;

use super::batch::{Batch, Decoded, Held, Reject};
use super::Worker;
use crate::error::{Error, Result};
use crate::persist::{self, Persisted};
use crate::reservation::Reservation;

/// A batch whose transaction is in flight.
pub(super) struct Flight {
    pub(super) held: Vec<Held>,
    /// As in [`Decoded`].
    entry_of: Vec<usize>,
    rejected: HashMap<usize, Vec<Reject>>,
    started: Instant,
    pub(super) task: tokio::task::JoinHandle<(Vec<Reservation>, Result<Persisted>)>,
    /// True once its transaction ended; the batch sent after it waits for that before it
    /// reads its products' versions.
    ended: watch::Receiver<bool>,
}

/// How a batch in flight ended.
pub(super) enum Landed {
    /// Committed and acknowledged.
    Committed,
    /// MySQL refused it: `entries` entries, `orders` reservations, not acknowledged.
    Refused { entries: u64, orders: usize, error: Error },
    /// Committed, but asked to stop while its acknowledgement failed (counted as left pending).
    Stop,
}

impl Worker {
    /// Sends the batch to MySQL in a task of its own (so building and sending its INSERTs
    /// runs beside the reads), after `earlier` if that is still in flight.
    pub(super) fn launch(&self, batch: Batch, earlier: Option<&Flight>) -> Flight {
        let Batch {
            held,
            decoded:
                Decoded {
                    reservations,
                    entry_of,
                    rejected,
                },
        } = batch;
        let reason = format!("consumer {}", self.opts.name);
        let (db, redis) = (self.db.clone(), self.redis.clone());
        let (ended_tx, ended) = watch::channel(false);
        let earlier = earlier.map(|f| f.ended.clone());
        let task = tokio::spawn(async move {
            let done = persist::persist_after(&db, &redis, &reservations, &reason, earlier).await;
            let _ = ended_tx.send(true);
            (reservations, done)
        });
        Flight {
            held,
            entry_of,
            rejected,
            started: Instant::now(),
            task,
            ended,
        }
    }

    /// [`Self::land`] with nothing else in flight: a refusal lets go of the batch and of the
    /// `read_ahead` entries read meanwhile. Returns false when asked to stop meanwhile.
    pub(super) async fn land_alone(&mut self, flight: Flight, read_ahead: u64) -> bool {
        match self.land(flight).await {
            Landed::Committed => true,
            Landed::Stop => {
                self.report.left_pending += read_ahead;
                false
            }
            Landed::Refused { entries, orders, error } => {
                self.let_go_of_batch(entries + read_ahead, orders, &error).await
            }
        }
    }

    /// Waits for the batch's transaction; when it committed, acknowledges its entries and
    /// buries those that failed too often. Nothing of a batch is acknowledged before its own
    /// commit; a refused one is only reported, for the caller to let go of.
    pub(super) async fn land(&mut self, flight: Flight) -> Landed {
        let Flight {
            held,
            entry_of,
            mut rejected,
            started,
            task,
            ended: _,
        } = flight;
        let (reservations, done) = task.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let done = match done {
            Ok(done) => done,
            Err(error) => {
                return Landed::Refused {
                    entries: held.len() as u64,
                    orders: reservations.len(),
                    error,
                }
            }
        };
        // Rare (a product missing from MySQL): indexed only when it happens.
        let by_order: HashMap<&str, usize> = if done.rejected.is_empty() {
            HashMap::new()
        } else {
            reservations
                .iter()
                .map(|r| r.order_no.as_str())
                .zip(entry_of.iter().copied())
                .collect()
        };
        for (order_no, why) in &done.rejected {
            if let (Some(i), Some((_, _, index))) = (
                by_order.get(order_no.as_str()),
                crate::keys::parse_purchase_no(order_no),
            ) {
                rejected.entry(*i).or_default().push(Reject {
                    index: Some(index),
                    why: why.clone(),
                });
            }
        }
        if !self.ack_committed(&held, &rejected).await {
            return Landed::Stop;
        }
        self.bury_or_keep(&held, rejected).await;
        self.record_batch(&done, started);
        Landed::Committed
    }

    /// The next batch, read without blocking and decoded while the one in hand commits;
    /// `None` when nothing new is there or the read failed (the next `fetch` meets the
    /// failure again and backs off; what a failed read delivered stays pending).
    pub(super) async fn read_ahead(&mut self) -> Option<Batch> {
        match self.fetch(true).await {
            Ok((held, _)) if !held.is_empty() => {
                self.last_read_short = held.len() < self.opts.batch;
                Some(Batch::new(held))
            }
            Ok(_) => {
                self.last_read_short = true;
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading ahead failed");
                None
            }
        }
    }
}
