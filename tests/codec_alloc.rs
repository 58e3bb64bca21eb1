//! D5: a snapshot's service count is checked against its length, and the
//! decoder grows its map as entries decode, so a lying count costs nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Records the largest single allocation made by a thread that asked for it.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; the bookkeeping only
// touches an atomic and a thread-local flag (no allocation).
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACK.try_with(Cell::get).unwrap_or(false) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Largest = Largest;

fn largest_allocation_of(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    TRACK.with(|t| t.set(true));
    f();
    TRACK.with(|t| t.set(false));
    LARGEST.load(Ordering::Relaxed)
}

fn header(count: u32) -> Vec<u8> {
    let mut b = b"CKVSNAP1".to_vec();
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&count.to_le_bytes());
    b
}

#[test]
fn a_large_count_never_allocates_more_than_the_file() {
    // 100,000 claimed services, each the smallest possible (22 zero bytes,
    // all named ""): the old decoder reserved a map for all of them up front,
    // several times the file's size.
    let count = 100_000u32;
    let mut buf = header(count);
    buf.resize(buf.len() + 22 * count as usize, 0);
    let largest = largest_allocation_of(|| {
        let _ = ckv::shared::codec::decode(&buf, None);
    });
    assert!(
        largest < buf.len() / 4,
        "largest allocation {largest} bytes for a {} byte snapshot",
        buf.len()
    );
}

#[test]
fn a_count_the_rest_cannot_hold_is_refused_before_allocating() {
    let mut buf = header(1000);
    buf.resize(buf.len() + 22 * 999, 0);
    let mut result = None;
    let largest = largest_allocation_of(|| result = Some(ckv::shared::codec::decode(&buf, None)));
    let err = result.unwrap().unwrap_err();
    assert!(err.contains("claims 1000 services"), "{err}");
    assert!(largest < 256, "allocated {largest} bytes before refusing");
}
