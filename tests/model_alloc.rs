//! The model's steady state allocates (almost) nothing: a response equal to
//! the previous one is walked without a single allocation, and one changed
//! value costs a handful, however many keys there are. Counts, not times.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use base64::Engine as _;
use ckv::kv::{Field, RawEntry, Rules};
use ckv::model::ServerModel;

/// Counts allocations made by a thread that asked for it (per thread: the
/// tests of this file run side by side).
struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    if TRACK.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards to the system allocator unchanged; the bookkeeping only
// touches thread-local cells (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    ALLOCATIONS.with(|n| n.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (ALLOCATIONS.with(Cell::get), out)
}

fn body(keys: usize, per_service: usize) -> Vec<RawEntry<'static>> {
    let value = base64::engine::general_purpose::STANDARD.encode(r#"{"weight":1,"max_fails":2}"#);
    let mut keys: Vec<String> = (0..keys)
        .map(|i| {
            format!(
                "upstreams/svc{}/10.0.{}.{}:80",
                i / per_service,
                i / 250,
                i % 250
            )
        })
        .collect();
    keys.sort();
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| RawEntry {
            key: Field::Ok(Cow::Owned(k)),
            value: Field::Ok(Cow::Owned(value.clone())),
            modify_index: Field::Ok(100 + i as u64),
        })
        .collect()
}

fn model() -> ServerModel {
    ServerModel::new(
        0,
        "http://127.0.0.1:8500",
        Rules {
            prefix: "upstreams".into(),
            skip_keys: vec![],
            default_weight: 1,
        },
    )
}

/// A 10,000-key response and a model that has applied it.
fn applied_once(per_service: usize) -> (Vec<RawEntry<'static>>, ServerModel) {
    let entries = body(10_000, per_service);
    let mut m = model();
    m.apply(&entries, 1).unwrap();
    (entries, m)
}

#[test]
fn an_unchanged_response_allocates_nothing() {
    for per_service in [1, 10] {
        let (entries, mut m) = applied_once(per_service);
        let (n, applied) = allocations_of(|| m.apply(&entries, 2).unwrap());
        assert!(!applied.changed);
        assert_eq!(n, 0, "{per_service} node(s) per service");
    }
}

#[test]
fn one_changed_value_allocates_a_handful() {
    for per_service in [1, 10] {
        let (entries, mut m) = applied_once(per_service);
        let mut changed: Vec<RawEntry<'static>> = entries.clone();
        changed[5_000].value = Field::Ok(Cow::Owned(
            base64::engine::general_purpose::STANDARD.encode(r#"{"weight":7}"#),
        ));
        changed[5_000].modify_index = Field::Ok(99_999);
        let (n, applied) = allocations_of(|| m.apply(&changed, 2).unwrap());
        assert_eq!(applied.changed_services, 1);
        assert!(
            n <= 32,
            "{n} allocations ({per_service} node(s) per service)"
        );
    }
}
