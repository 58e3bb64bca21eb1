//! D5: a snapshot's service count is checked against its length before
//! anything is allocated for it, and opening a snapshot never copies it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ckv::shared::codec;
use ckv::snapshot::{Meta, Name, ServiceRef, Snapshot};

/// Records the largest single allocation made by a thread that asked for it.
struct Largest;

// Both per thread: tests run in parallel, and each measures only its own
// allocations (one process-wide maximum mixed them up).
thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the bookkeeping only
// touches two thread-local cells (no allocation).
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACK.try_with(Cell::get).unwrap_or(false) {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
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
    LARGEST.with(|l| l.set(0));
    TRACK.with(|t| t.set(true));
    f();
    TRACK.with(|t| t.set(false));
    LARGEST.with(Cell::get)
}

/// A previous-release (`CKVSNAP1`) header claiming `count` services.
fn v1_header(count: u32) -> Vec<u8> {
    let mut b = b"CKVSNAP1".to_vec();
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&count.to_le_bytes());
    b
}

#[test]
fn a_v1_count_the_rest_cannot_hold_is_refused_before_allocating() {
    let mut buf = v1_header(1000);
    buf.resize(buf.len() + 22 * 999, 0);
    let mut result = None;
    let largest = largest_allocation_of(|| result = Some(codec::decode(&buf, None)));
    let err = result.unwrap().unwrap_err();
    assert!(err.contains("claims 1000 services"), "{err}");
    assert!(largest < 256, "allocated {largest} bytes before refusing");
}

#[test]
fn a_v1_file_allocates_in_proportion_to_its_size() {
    // 100,000 services, each the smallest possible (22 zero bytes, all
    // named ""): what is allocated follows the file, not a claimed count.
    let count = 100_000u32;
    let mut buf = v1_header(count);
    buf.resize(buf.len() + 22 * count as usize, 0);
    let largest = largest_allocation_of(|| {
        let s = codec::decode(&buf, None).unwrap();
        assert_eq!(s.len(), 1, "one name, kept once");
    });
    assert!(
        largest < 3 * buf.len(),
        "largest allocation {largest} bytes for a {} byte snapshot",
        buf.len()
    );
}

fn big_file() -> Vec<u8> {
    let names: Vec<String> = (0..100_000)
        .map(|i| format!("http://127.0.0.1:8500/v1/kv/upstreams/svc-{i:06}/"))
        .collect();
    let json = r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#;
    let services = names.iter().map(|name| ServiceRef {
        name: Name::whole(name),
        generation: 1,
        server: 0,
        node_count: 1,
        nodes_json: json,
    });
    codec::encode(&Snapshot::new(Meta::default(), services))
}

#[test]
fn opening_a_file_never_copies_it() {
    let file = big_file();
    let len = file.len();
    let mut opened = None;
    let largest = largest_allocation_of(|| opened = Some(codec::open(file)));
    let s = opened.unwrap().unwrap();
    assert_eq!(s.len(), 100_000);
    // The validation keeps one bit per service.
    assert!(
        largest <= 100_000 / 8 + 64,
        "largest allocation {largest} for {len} bytes"
    );
}

#[test]
fn a_head_count_the_file_cannot_hold_is_refused_before_allocating() {
    let mut file = big_file();
    file[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
    let mut result = None;
    let largest = largest_allocation_of(|| result = Some(codec::open(file)));
    let err = result.unwrap().unwrap_err();
    assert!(err.contains("name heads do not fit"), "{err}");
    assert!(largest < 256, "allocated {largest} bytes before refusing");
}

#[test]
fn a_count_the_file_cannot_hold_is_refused_before_allocating() {
    let mut file = big_file();
    // Claim 2^31 services and slots: the header's sizes no longer add up.
    file[28..32].copy_from_slice(&(1u32 << 31).to_le_bytes());
    file[32..36].copy_from_slice(&(1u32 << 31).to_le_bytes());
    let mut result = None;
    let largest = largest_allocation_of(|| result = Some(codec::open(file)));
    let err = result.unwrap().unwrap_err();
    assert!(err.contains("services"), "{err}");
    assert!(largest < 256, "allocated {largest} bytes before refusing");
}
