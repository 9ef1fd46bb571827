//! The live progress bar of a bench run: requests answered, queued, sold out, rejected.
//! On stderr, and hidden when stderr is not a terminal (scripts and tests see nothing).

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use super::load::LiveCounts;

/// A bar redrawn from the load's counters ten times a second until [`LiveBar::finish`].
pub struct LiveBar {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
}

impl LiveBar {
    /// Starts drawing `live` against `total` requests.
    pub fn start(total: u64, live: Arc<LiveCounts>) -> LiveBar {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("requests [{bar:30}] {pos}/{len} ({per_sec}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let shown = bar.clone();
        // The load workers only bump atomics; drawing happens here, off the hot path.
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                shown.set_position(live.sent.load(Ordering::Relaxed));
                shown.set_message(format!(
                    "queued {} · sold out {} · rejected {}",
                    live.queued.load(Ordering::Relaxed),
                    live.sold_out.load(Ordering::Relaxed),
                    live.rejected.load(Ordering::Relaxed),
                ));
            }
        });
        LiveBar { bar, ticker }
    }

    /// Stops drawing and clears the bar.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
