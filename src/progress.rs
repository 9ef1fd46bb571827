//! Progress bars for long operations: drawn on stderr only when a person is watching (stdout
//! and stderr both terminals) and only once the job has run for [`show_after`], so quick
//! jobs, pipes and scripts see nothing. One bar at a time: a job started inside another
//! (the products of one activity under `reconcile --all`) stays hidden, so two bars never
//! draw over each other.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle, WeakProgressBar};

/// The bar of the outermost job still running, if any.
static OUTER: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// How long a job runs before its bar appears by default: a bar that flashes for a few
/// milliseconds only clutters the terminal.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);

/// How long a job runs before its bar appears: `SECKILL_PROGRESS_AFTER_MS` when set (a test
/// or an impatient operator sets 0 to see every bar), else [`SHOW_AFTER`].
pub fn show_after() -> Duration {
    std::env::var("SECKILL_PROGRESS_AFTER_MS")
        .ok()
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(SHOW_AFTER, Duration::from_millis)
}

/// True when a person is at a terminal: stdout is one (no script reads it) and so is stderr
/// (where the bar is drawn).
pub fn watched() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A bar of `len` steps labelled `label`; hidden unless [`watched`], shown after [`show_after`].
pub fn bar(len: u64, label: &str) -> ProgressBar {
    shown_later(
        Some(len),
        label,
        "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
    )
}

/// A counter for a job of unknown size (`label`: what is counted); hidden unless
/// [`watched`], shown after [`show_after`].
pub fn counter(label: &str) -> ProgressBar {
    shown_later(None, label, "{spinner} {msg:>10} {pos} ({per_sec}, {elapsed})")
}

fn shown_later(len: Option<u64>, label: &str, template: &str) -> ProgressBar {
    if !watched() {
        return ProgressBar::hidden();
    }
    let mut outer = OUTER.lock().unwrap_or_else(|e| e.into_inner());
    if outer
        .as_ref()
        .and_then(WeakProgressBar::upgrade)
        .is_some_and(|bar| !bar.is_finished())
    {
        return ProgressBar::hidden();
    }
    // Cleared however the job ends, an error included: the bar never outlives it on screen.
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden()).with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    *outer = Some(bar.downgrade());
    // A weak handle: a job that ends first drops its bar, and this thread then draws nothing.
    let weak = bar.downgrade();
    let after = show_after();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        if let Some(bar) = weak.upgrade() {
            if !bar.is_finished() {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(200));
            }
        }
    });
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_every_bar_is_hidden() {
        if watched() {
            return; // run by hand at a terminal: nothing to check
        }
        assert!(bar(1_000_000, "x").is_hidden());
        assert!(counter("x").is_hidden());
    }
}
