//! Giving freed heap memory back to the operating system.
//!
//! After a large Consul response is parsed, applied and published, the
//! buffers it needed are freed, but glibc keeps freed pages of its main
//! arena (and of the threads' arenas) mapped until the top of the heap is
//! free, so a worker's RSS stays at its peak. `malloc_trim(0)` releases every
//! whole free page (with `MADV_DONTNEED`), wherever it lies in the heap.

/// Returns freed heap pages to the OS: glibc's `malloc_trim(0)`; a no-op
/// with other C libraries. Its cost grows with the heap's free space, not
/// with what is in use; callers decide how often it is worth it.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own
    // arenas, under their locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// Resident bytes of this process.
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_small_blocks_below_a_live_one_leave_the_resident_set() {
        // Many small blocks (below the mmap threshold, so they live in an
        // arena), all freed but the last: the heap cannot shrink from its
        // top, so only trimming returns the pages.
        const BLOCKS: usize = 64 * 1024;
        let freed = std::thread::spawn(|| {
            let mut blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; 1024]).collect();
            let last = blocks.pop();
            drop(blocks);
            let before = rss();
            super::release_free_memory();
            let after = rss();
            drop(last);
            before.saturating_sub(after)
        })
        .join()
        .unwrap();
        let allocated = (BLOCKS * 1024) as u64;
        assert!(
            freed >= allocated / 2,
            "trimming released {freed} bytes of {allocated} freed"
        );
    }
}
