//! A counting global allocator: live heap bytes and the peak since the last
//! `reset_peak`, so the bench can say what a model or a snapshot retains.
//! Counting is off outside `counting(true)` … `counting(false)`, so that the
//! CPU timings do not pay for the atomics; the figures are deltas taken
//! inside one counted stretch (a block freed there that was allocated before
//! it counts negative: the heap steps allocate what they measure).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};

struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(n: usize) {
    if ON.load(Relaxed) {
        let now = LIVE.fetch_add(n as isize, Relaxed) + n as isize;
        PEAK.fetch_max(now, Relaxed);
    }
}

fn shrank(n: usize) {
    if ON.load(Relaxed) {
        LIVE.fetch_sub(n as isize, Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        shrank(l.size());
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, l, new_size);
        if !q.is_null() {
            if new_size >= l.size() {
                grew(new_size - l.size());
            } else {
                shrank(l.size() - new_size);
            }
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Turns counting on or off.
pub fn counting(on: bool) {
    ON.store(on, Relaxed);
}

/// Bytes allocated while counting and not freed since (requested sizes,
/// without allocator overhead).
pub fn live() -> isize {
    LIVE.load(Relaxed)
}

/// The highest `live()` since the last `reset_peak`.
pub fn peak() -> isize {
    PEAK.load(Relaxed)
}

pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}
