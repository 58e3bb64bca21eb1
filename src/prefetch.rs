//! A hint to the CPU to load a cache line before it is needed: for walks
//! whose next address is known well ahead (a big response body, the homes
//! of the names going into an index) and that otherwise wait on memory.

/// Asks for the cache line holding `p` to be loaded. Reads nothing into
/// the program, so any address is fine, even one past an allocation.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint: it never faults, whatever the
    // address, and SSE (all `_mm_prefetch` needs) is part of the x86_64
    // baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
