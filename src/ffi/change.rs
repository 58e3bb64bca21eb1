//! Learning that the snapshot changed: a sequence number, a blocking wait,
//! and a file descriptor for event loops.
//!
//! The snapshot sequence number is *the* change counter for C: it moves
//! (increases) whenever the handle starts serving a new snapshot.
//! `ckv_node_list_generation` / `ckv_service_generation` say whether one
//! service changed; `ckv_generation_ptr` is the Lua binding's lock-free
//! poll and not needed in C.

use std::time::{Duration, Instant};

use super::args::{boundary, out_arg, put};
use super::ckv_status;
use super::handle::{ckv_handle, handle};

/// The sequence number of the snapshot served now; 0 before the first one
/// (and for a NULL handle or one used after fork). Compare it for
/// inequality with a value you saw before.
///
/// Never blocks. Thread safety: any thread of the creating process.
#[no_mangle]
pub extern "C" fn ckv_change_seq(h: *const ckv_handle) -> u64 {
    boundary(0, || {
        // SAFETY: `h` is NULL or live, per the contract.
        unsafe { handle(h) }.map_or(0, |h| h.engine().snapshot().seq)
    })
}

/// Blocks the calling thread until the snapshot sequence differs from
/// `seen_seq` or `timeout_ms` passes, then writes the current sequence into
/// `*out_seq`. Returns at once when it already differs (pass 0 the first
/// time, or the value of `ckv_change_seq`).
///
/// Returns `CKV_OK`, `CKV_ERR_TIMEOUT` (nothing written),
/// `CKV_ERR_NULL_ARGUMENT` or `CKV_ERR_FORKED`. `timeout_ms = 0` polls
/// without blocking. After `ckv_shutdown` nothing changes any more and the
/// call waits for its timeout.
///
/// Thread safety: any number of threads may wait at once; `ckv_free` must
/// not be called while a thread waits (wake waiters with a short timeout
/// and join them first). Never call it on an event-loop thread; use
/// `ckv_notify_fd` there.
#[no_mangle]
pub extern "C" fn ckv_wait_change(
    h: *const ckv_handle,
    seen_seq: u64,
    timeout_ms: u32,
    out_seq: *mut u64,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        let out_seq = try_arg!(out_arg(out_seq));
        let signal = h.engine().change_signal();
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        loop {
            // Read the signal before the snapshot: a publish in between
            // then makes the wait below return at once.
            let signalled = signal.seq();
            let now = h.engine().snapshot().seq;
            if now != seen_seq {
                // SAFETY: checked non-NULL; the caller gives a writable slot.
                unsafe { put(out_seq, now) };
                return ckv_status::CKV_OK;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || signal.wait(signalled, left).is_none() {
                return ckv_status::CKV_ERR_TIMEOUT;
            }
        }
    })
}

/// Returns a file descriptor that becomes readable whenever the snapshot
/// changes, for epoll, poll, select, libuv, libevent; -1 for a NULL handle,
/// one used after fork, or when the descriptor cannot be created (errno
/// says why).
///
/// It is a Linux eventfd, non-blocking and close-on-exec, created on the
/// first call; later calls return the same descriptor. To drain it, read 8
/// bytes (`uint64_t`, the number of changes since the last read) until
/// `read` fails with `EAGAIN`; then read what you need (`ckv_change_seq`,
/// `ckv_nodes_get`). Several changes may be folded into one wake-up.
///
/// Ownership: the library owns it. Do not close it, write to it or use it
/// after fork; `ckv_free` closes it (remove it from your event loop first).
/// Thread safety: any thread of the creating process.
#[no_mangle]
pub extern "C" fn ckv_notify_fd(h: *const ckv_handle) -> i32 {
    boundary(-1, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let Ok(h) = (unsafe { handle(h) }) else {
            return -1;
        };
        match h.engine().change_signal().fd() {
            Ok(fd) => fd,
            Err(e) => {
                let code = e.raw_os_error().unwrap_or(libc::EBADF);
                // SAFETY: errno is this thread's; setting it is what C expects.
                unsafe { *libc::__errno_location() = code };
                -1
            }
        }
    })
}
