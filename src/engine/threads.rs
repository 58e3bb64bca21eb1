//! The library's threads stay out of the host's way: every signal blocked,
//! a lower priority than the event loops.

use std::thread::JoinHandle;

/// Nice value of the library's threads: parsing a large prefix must not take
/// CPU from the nginx event loops that serve requests on the same cores.
const THREAD_NICE: i32 = 10;

/// Spawns a named thread with every signal blocked, at a lower priority.
pub fn spawn_quiet(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            block_all_signals();
            lower_priority();
            f()
        })
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

fn lower_priority() {
    // With PRIO_PROCESS and a thread id, Linux sets that thread's nice value
    // only. Lowering priority needs no privilege; failure keeps the default.
    let tid = rustix::thread::gettid();
    let _ = rustix::process::setpriority_process(Some(tid), THREAD_NICE);
}

fn block_all_signals() {
    // SAFETY: sigset_t is plain data, initialised by sigfillset before use;
    // pthread_sigmask changes only the calling thread's mask and we pass no
    // old-mask pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
