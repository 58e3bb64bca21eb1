//! Giving freed heap back to the operating system.

/// Returns the free pages at the top and in the middle of the heap to the
/// OS (glibc `malloc_trim(0)`); a no-op elsewhere. Called after a snapshot
/// is replaced, so a process's RSS follows what it holds now rather than
/// its peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and may be called from any
    // thread at any time; it only takes glibc's allocator locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
