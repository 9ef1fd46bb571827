//! A registry nobody scrapes must not grow with every request it times: the Prometheus
//! recorder keeps each histogram sample until an upkeep folds it into the buckets, and
//! `seckill serve` (and a consumer's `/metrics`) once ran upkeep only on a scrape, so a
//! server without Prometheus grew by every request (about 20 bytes each) until it ran out of
//! memory. [`Metrics::new`] now keeps itself up.
//!
//! A test binary of its own: it counts the bytes the process holds with a global allocator,
//! which the other tests' allocations would blur.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seckill::metrics::{Metrics, REQUEST_SECONDS, UPKEEP_EVERY};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size, Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SAMPLES: usize = 1_000_000;
const MIB: usize = 1 << 20;

#[tokio::test]
async fn a_registry_nobody_scrapes_folds_its_samples_and_gives_the_memory_back() {
    let metrics = Metrics::new();
    let latency = metrics.scope(|| metrics::histogram!(REQUEST_SECONDS, "route" => "/health"));
    latency.record(0.001);
    let before = HELD.load(Ordering::Relaxed);
    for _ in 0..SAMPLES {
        latency.record(0.001);
    }
    let pending = HELD.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        pending >= 4 * MIB,
        "a million samples waiting for upkeep hold {pending} bytes: the test would not see a leak"
    );

    // Let the upkeep task's timer fire. The folded blocks are freed once the recorder's epoch
    // moves on, which later records drive.
    tokio::time::sleep(UPKEEP_EVERY + Duration::from_millis(1)).await;
    let (mut held, mut recorded) = (usize::MAX, 1 + SAMPLES);
    for _ in 0..100_000 {
        latency.record(0.001);
        recorded += 1;
        held = HELD.load(Ordering::Relaxed).saturating_sub(before);
        if held < MIB {
            break;
        }
    }
    assert!(
        held < MIB,
        "{UPKEEP_EVERY:?} after a million samples the registry still holds {held} bytes more than before them"
    );
    let text = metrics.render();
    let count = format!("{REQUEST_SECONDS}_count{{route=\"/health\"}} {recorded}\n");
    assert!(
        text.contains(&count),
        "every sample is counted, none dropped: no {count:?} in\n{text}"
    );
}
