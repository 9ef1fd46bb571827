//! The periodic wake-ups of a background task that works for something shared (a server's
//! state, a metrics registry) only as long as that thing lives: the task holds a weak
//! reference, so it never keeps its owner alive, and it ends at the first tick after the owner
//! is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The ticks of one background task, each with its owner, until the owner is dropped. A tick
/// missed while the task was busy is not made up for.
pub struct Ticks<T> {
    owner: Weak<T>,
    interval: Interval,
}

impl<T> Ticks<T> {
    /// The first tick at `first`, then every `every`.
    pub fn new(owner: Weak<T>, first: Instant, every: Duration) -> Ticks<T> {
        let mut interval = tokio::time::interval_at(first, every);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ticks { owner, interval }
    }

    /// The owner at the next tick; `None` once it is dropped.
    pub async fn next(&mut self) -> Option<Arc<T>> {
        self.interval.tick().await;
        self.owner.upgrade()
    }
}
