//! The change signal: how a C thread or an event loop learns that a new
//! snapshot was published, without polling.
//!
//! The engine calls [`ChangeSignal::publish`] with the snapshot's sequence
//! number right after every local publish. Readers either block on
//! [`ChangeSignal::wait`] (a condition variable) or poll an eventfd from
//! [`ChangeSignal::fd`], created on first use so that programs that never
//! ask for it never hold a descriptor.

#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub struct ChangeSignal {
    /// The last published sequence, readable without the lock.
    seq: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The eventfd, once someone asked for it.
    fd: Option<OwnedFd>,
    /// Set by [`ChangeSignal::close`]: no fd is handed out any more.
    closed: bool,
}

impl ChangeSignal {
    /// Records `seq` as current and wakes every waiter and the eventfd.
    pub fn publish(&self, seq: u64) {
        let state = self.state.lock();
        self.seq.store(seq, Ordering::Release);
        if let Some(fd) = &state.fd {
            signal_eventfd(fd);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// The last published sequence (0 before the first publish).
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Blocks until the sequence differs from `seen` or `timeout` passes.
    /// Returns the sequence then current, or None on timeout.
    pub fn wait(&self, seen: u64, timeout: Duration) -> Option<u64> {
        let now = self.seq();
        if now != seen {
            return Some(now);
        }
        // A timeout too large to add is as good as forever.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.state.lock();
        loop {
            let now = self.seq();
            if now != seen {
                return Some(now);
            }
            match deadline {
                Some(d) => {
                    if self.changed.wait_until(&mut state, d).timed_out() {
                        let now = self.seq();
                        return (now != seen).then_some(now);
                    }
                }
                None => self.changed.wait(&mut state),
            }
        }
    }

    /// The eventfd that becomes readable after each publish (non-blocking,
    /// close-on-exec). Created on the first call; later calls return the
    /// same descriptor. It stays open until [`ChangeSignal::close`].
    pub fn fd(&self) -> io::Result<RawFd> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(io::Error::other("the change signal is closed"));
        }
        if let Some(fd) = &state.fd {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: eventfd takes no pointers; the flags are valid.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let out = fd.as_raw_fd();
        state.fd = Some(fd);
        Ok(out)
    }

    /// Closes the eventfd (if any) and refuses to make another.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.fd = None;
    }
}

/// Adds 1 to the eventfd's counter. A full counter (2^64 - 2 unread
/// signals) or any other error is ignored: the fd is readable either way.
fn signal_eventfd(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wait_returns_at_once_when_already_changed_and_times_out_otherwise() {
        let s = ChangeSignal::default();
        s.publish(3);
        assert_eq!(s.wait(0, Duration::ZERO), Some(3));
        assert_eq!(s.wait(3, Duration::from_millis(20)), None);
    }

    #[test]
    fn a_waiter_is_woken_by_publish() {
        let s = Arc::new(ChangeSignal::default());
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait(0, Duration::from_secs(30)))
        };
        // The waiter may or may not be parked yet: either way it must see 7.
        s.publish(7);
        assert_eq!(waiter.join().unwrap(), Some(7));
    }

    #[test]
    fn the_fd_is_readable_after_publish_and_drains() {
        let s = ChangeSignal::default();
        let fd = s.fd().unwrap();
        assert_eq!(s.fd().unwrap(), fd, "one descriptor per signal");
        let mut n = 0u64;
        // SAFETY: reads at most 8 bytes into a live u64.
        let read = |n: &mut u64| unsafe { libc::read(fd, (n as *mut u64).cast(), 8) };
        assert_eq!(read(&mut n), -1, "not readable before a publish");
        s.publish(1);
        s.publish(2);
        assert_eq!(read(&mut n), 8);
        assert_eq!(n, 2, "one read drains every signal so far");
        assert_eq!(read(&mut n), -1);
        s.close();
        assert!(s.fd().is_err(), "no new descriptor after close");
    }
}
