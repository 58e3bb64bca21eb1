//! A child forked by the leader must not keep leadership (flock locks belong
//! to the open file description, which `fork` shares). A `pthread_atfork`
//! child handler replaces every registered lock descriptor with `/dev/null`
//! in the child: the child's reference to the lock goes away, the parent's
//! stays, and the descriptor number stays occupied so that the child's
//! `File` values never close someone else's descriptor later.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

/// Room for the lock files of 32 groups in one process (two each).
const SLOTS: usize = 64;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static DEV_NULL: AtomicI32 = AtomicI32::new(-1);
static INSTALL: Once = Once::new();

extern "C" fn in_child() {
    let null = DEV_NULL.load(Ordering::Acquire);
    for slot in &FDS {
        let fd = slot.load(Ordering::Acquire);
        if fd < 0 {
            continue;
        }
        // SAFETY: dup2 and close are async-signal-safe, the only kind of call
        // allowed between fork and exec in a multi-threaded process. `fd` is
        // a descriptor this process registered and has not unregistered;
        // replacing or closing it in the child cannot affect the parent.
        unsafe {
            if null >= 0 {
                libc::dup2(null, fd);
            } else {
                libc::close(fd);
            }
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            // Kept open for the life of the process (close-on-exec).
            DEV_NULL.store(std::os::fd::IntoRawFd::into_raw_fd(f), Ordering::Release);
        }
        // SAFETY: `in_child` is an `extern "C" fn()` that lives for the whole
        // program and only makes async-signal-safe calls (see above).
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

/// A registered descriptor; unregistered when dropped (before it is closed).
#[derive(Debug)]
pub struct Guard(usize);

impl Drop for Guard {
    fn drop(&mut self) {
        FDS[self.0].store(-1, Ordering::Release);
    }
}

/// Registers `fd` to be dropped in forked children. Fails when every slot is
/// taken (the caller then does not share).
pub fn register(fd: &impl AsRawFd) -> std::io::Result<Guard> {
    install();
    let raw: RawFd = fd.as_raw_fd();
    for (i, slot) in FDS.iter().enumerate() {
        if slot
            .compare_exchange(-1, raw, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Ok(Guard(i));
        }
    }
    Err(std::io::Error::other(
        "too many shared groups in one process",
    ))
}
