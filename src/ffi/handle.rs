//! The handle: create, inspect, stop, free.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::args::{boundary, boundary_reporting, bytes, copy_out, put, write_err};
use super::ckv_status;
use super::node_list::NodeCache;
use crate::engine::Engine;
use crate::log::{Level, Record};

/// A running watcher and the snapshot it keeps. Opaque to C.
///
/// Ownership: created by [`ckv_init`], freed by [`ckv_free`], exactly once.
/// Thread safety: every function taking a `const ckv_handle *` may be called
/// from any thread of the creating process, concurrently (`ckv_log_next`
/// from one thread at a time). `ckv_shutdown` and `ckv_free` must not race
/// with other calls on the same handle.
#[derive(Debug)]
pub struct ckv_handle {
    engine: Engine,
    /// Typed node lists decoded so far, shared with the views handed out.
    nodes: Arc<NodeCache>,
    /// A log record the caller's buffer was too small for, kept for the
    /// next `ckv_log_next`.
    pending_log: Mutex<Option<Record>>,
}

/// Largest configuration accepted by [`ckv_init`].
pub const CKV_MAX_CONFIG_BYTES: usize = 1 << 20;

/// Checks a handle pointer from C: not NULL, and used in the process that
/// created it.
///
/// # Safety
/// `h` must be NULL or a pointer returned by `ckv_init` and not yet freed.
pub(crate) unsafe fn handle<'a>(h: *const ckv_handle) -> Result<&'a ckv_handle, ckv_status> {
    // SAFETY: NULL or live, per the contract above.
    let h = unsafe { h.as_ref() }.ok_or(ckv_status::CKV_ERR_NULL_ARGUMENT)?;
    if h.engine.pid() != std::process::id() {
        return Err(ckv_status::CKV_ERR_FORKED);
    }
    Ok(h)
}

impl ckv_handle {
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn node_cache(&self) -> &Arc<NodeCache> {
        &self.nodes
    }

    pub(crate) fn pending_log(&self) -> &Mutex<Option<Record>> {
        &self.pending_log
    }
}

/// Parses `config` (a JSON object: APISIX's `discovery.consul_kv` fields plus
/// ckv's own, see README) and starts watching.
///
/// Call it after the process forks (in nginx: `init_worker`). Processes that
/// pass the same configuration with the same `share.group` share one Consul
/// watch per server; the others follow its snapshots. Without `share.group`
/// a process does not share: a C program that wants sharing names a group
/// (unguessable, one per instance; the Lua binding uses a random nonce made
/// in the nginx master). A shared directory that cannot be trusted or used
/// makes the process watch Consul itself (see `share_error` in `ckv_stats`).
///
/// * `config`, `config_len`: the JSON bytes (at most 1 MiB); not retained.
/// * `out`: receives the new handle on `CKV_OK`.
/// * `errbuf`, `errbuf_len`: optional. On input `*errbuf_len` is the buffer's
///   capacity; on failure the message is written (truncated to fit, not
///   NUL-terminated) and `*errbuf_len` set to its length. The message never
///   contains the ACL token. Text that is not UTF-8 is reported with the
///   byte offset of the first bad byte.
///
/// Returns `CKV_OK`, `CKV_ERR_NULL_ARGUMENT`, `CKV_ERR_TOO_LARGE`,
/// `CKV_ERR_INVALID_UTF8`, `CKV_ERR_INVALID_CONFIG`, `CKV_ERR_START` or
/// `CKV_ERR_PANIC` (with the panic's message in `errbuf`).
///
/// Ownership: free the handle with [`ckv_free`]. Blocking: reads the shared
/// snapshot or the dump file from disk; never talks to Consul.
#[no_mangle]
pub extern "C" fn ckv_init(
    config: *const u8,
    config_len: usize,
    out: *mut *mut ckv_handle,
    errbuf: *mut u8,
    errbuf_len: *mut usize,
) -> ckv_status {
    let fail = |status: ckv_status, msg: &str| {
        // SAFETY: the caller gives an optional error buffer of `*errbuf_len`
        // writable bytes.
        unsafe { write_err(errbuf, errbuf_len, msg) };
        status
    };
    boundary_reporting(
        // SAFETY: as for `fail`.
        |msg| unsafe { write_err(errbuf, errbuf_len, &format!("ckv_init: {msg}")) },
        || {
            if out.is_null() {
                return fail(ckv_status::CKV_ERR_NULL_ARGUMENT, "out is NULL");
            }
            if config_len > CKV_MAX_CONFIG_BYTES {
                return fail(
                    ckv_status::CKV_ERR_TOO_LARGE,
                    &format!("config is {config_len} bytes; the limit is {CKV_MAX_CONFIG_BYTES}"),
                );
            }
            // SAFETY: the caller gives `config_len` readable bytes at `config`.
            let json = match unsafe { bytes(config, config_len) } {
                Ok(b) => b,
                Err(s) => return fail(s, "config is NULL"),
            };
            if let Err(e) = std::str::from_utf8(json) {
                return fail(
                    ckv_status::CKV_ERR_INVALID_UTF8,
                    &format!("config: not valid UTF-8 at byte offset {}", e.valid_up_to()),
                );
            }
            let (config, warnings) = match crate::config::parse_with_warnings(json) {
                Ok(c) => c,
                Err(e) => return fail(ckv_status::CKV_ERR_INVALID_CONFIG, &e.to_string()),
            };
            let engine = match Engine::start(config) {
                Ok(e) => e,
                Err(e) => return fail(ckv_status::CKV_ERR_START, &e),
            };
            for w in warnings {
                engine.logs().push(Level::Warn, format!("ckv: config: {w}"));
            }
            let h = Box::into_raw(Box::new(ckv_handle {
                engine,
                nodes: Arc::default(),
                pending_log: Mutex::new(None),
            }));
            // SAFETY: checked non-NULL above; the caller gives a writable slot.
            unsafe { put(out, h) };
            ckv_status::CKV_OK
        },
    )
}

/// A pointer to a 32-bit counter that changes whenever the snapshot served
/// by this handle is replaced: the cheapest way to learn that something
/// changed, with no call and no lock. It is what the Lua binding polls.
///
/// C programs should rather use the snapshot sequence (`ckv_change_seq`,
/// `ckv_wait_change`, `ckv_notify_fd`). If you do read this pointer, read it
/// atomically, `__atomic_load_n(p, __ATOMIC_ACQUIRE)`, compare for
/// inequality only (it wraps around), and never write through it.
///
/// Returns NULL for a NULL handle or one used after fork.
/// Lifetime: valid until `ckv_free(h)`.
#[no_mangle]
pub extern "C" fn ckv_generation_ptr(h: *const ckv_handle) -> *const u32 {
    boundary(std::ptr::null(), || {
        // SAFETY: `h` is NULL or live, per the contract.
        match unsafe { handle(h) } {
            Ok(h) => h.engine.generation().as_ptr().cast_const(),
            Err(_) => std::ptr::null(),
        }
    })
}

/// Returns non-zero once the snapshot is worth serving: every configured
/// server has answered at least once, or a fresh dump file was loaded.
/// Returns 0 before that, and for a NULL handle or one used after fork.
///
/// Never blocks. Thread safety: any thread of the creating process.
#[no_mangle]
pub extern "C" fn ckv_ready(h: *const ckv_handle) -> i32 {
    boundary(0, || {
        // SAFETY: `h` is NULL or live, per the contract.
        match unsafe { handle(h) } {
            Ok(h) => {
                let snap = h.engine.snapshot();
                i32::from(snap.synced || snap.from_dump)
            }
            Err(_) => 0,
        }
    })
}

/// Writes the statistics as a JSON object into `buf`: version, pid, role
/// (`leader`, `follower` or `standalone`), `leader_pid`, `generation`,
/// `services`, `nodes`, `source` (`consul`, `dump` or `none`), `ready`, and
/// per server: `url`, `state`, `last_index`, `last_success_ms`,
/// `last_change_ms`, `last_error_ms`, `last_error`, `requests_total`,
/// `errors_total`, `consecutive_errors`, `index_resets`,
/// `malformed_entries`, `services`, `nodes`, `last_response_bytes`; and the
/// histograms `apply_seconds` (the leader's) and `propagation_seconds`
/// (this process's): `buckets`, `count`, `sum`.
///
/// Buffer rules as in the header's conventions (`CKV_ERR_BUFFER_TOO_SMALL`
/// sets `*out_len`). Thread safety: any thread of the creating process.
#[no_mangle]
pub extern "C" fn ckv_stats(
    h: *const ckv_handle,
    buf: *mut u8,
    buf_cap: usize,
    out_len: *mut usize,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        let json = h.engine.stats_json();
        // SAFETY: the caller gives `buf_cap` writable bytes and `out_len`.
        unsafe { copy_out(json.as_bytes(), buf, buf_cap, out_len) }
    })
}

/// Writes the statistics in Prometheus' text exposition format, version
/// 0.0.4 (serve it with `Content-Type: text/plain; version=0.0.4`): per
/// server `ckv_server_up`, `ckv_last_index`, `ckv_requests_total`,
/// `ckv_errors_total{kind}`, `ckv_last_success_timestamp_seconds`,
/// `ckv_index_resets_total`, `ckv_malformed_entries`, `ckv_services`,
/// `ckv_nodes`; `ckv_snapshot_generation`, `ckv_leader{pid}`, `ckv_ready`,
/// `ckv_stale`, and the histograms `ckv_apply_seconds` and
/// `ckv_propagation_seconds{pid}` (README "Metrics"). Every process of a
/// group reports the leader's figures, so any worker can be scraped; only
/// `ckv_propagation_seconds` is this process's own. Label values are
/// escaped; the token never appears.
///
/// Buffer rules as for [`ckv_stats`]: call with `buf` NULL and `buf_cap` 0
/// to learn the size (`CKV_ERR_BUFFER_TOO_SMALL`, `*out_len` set), then
/// again with a buffer that large; the text may grow between the two calls,
/// so loop on `CKV_ERR_BUFFER_TOO_SMALL`. The output is copied: the caller
/// owns `buf`. Never blocks on Consul (a follower reads the leader's small
/// stats file). Thread safety: any thread of the creating process.
///
/// Returns `CKV_OK`, `CKV_ERR_BUFFER_TOO_SMALL`, `CKV_ERR_NULL_ARGUMENT`,
/// `CKV_ERR_FORKED` or `CKV_ERR_PANIC`.
#[no_mangle]
pub extern "C" fn ckv_metrics(
    h: *const ckv_handle,
    buf: *mut u8,
    buf_cap: usize,
    out_len: *mut usize,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        let text = h.engine.metrics_text();
        // SAFETY: the caller gives `buf_cap` writable bytes and `out_len`.
        unsafe { copy_out(text.as_bytes(), buf, buf_cap, out_len) }
    })
}

/// Stops watching Consul and joins the library's threads, waiting at most
/// `timeout_ms`. The last snapshot stays readable until `ckv_free`; no
/// change is signalled after this.
///
/// Returns `CKV_OK`, `CKV_ERR_TIMEOUT` (a thread was left to finish alone),
/// `CKV_ERR_NULL_ARGUMENT` or `CKV_ERR_FORKED`. Calling it twice is harmless.
/// Must not race with `ckv_free` on the same handle.
#[no_mangle]
pub extern "C" fn ckv_shutdown(h: *mut ckv_handle, timeout_ms: u32) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        if h.engine
            .shutdown(Duration::from_millis(u64::from(timeout_ms)))
        {
            ckv_status::CKV_OK
        } else {
            ckv_status::CKV_ERR_TIMEOUT
        }
    })
}

/// Stops the handle (as `ckv_shutdown` with a 2 s limit), closes the
/// descriptor from `ckv_notify_fd` and frees the handle. NULL is ignored.
/// In a forked child the memory is deliberately leaked: the threads it
/// refers to do not exist there.
///
/// Views (`ckv_node_list`, `ckv_service_list`) taken from the handle stay
/// valid and must still be freed. Ownership: `h` must come from `ckv_init`
/// and is invalid afterwards, together with the pointer from
/// `ckv_generation_ptr`; remove the notification fd from your event loop
/// first.
#[no_mangle]
pub extern "C" fn ckv_free(h: *mut ckv_handle) {
    boundary((), || {
        if h.is_null() {
            return;
        }
        // SAFETY: `h` came from Box::into_raw in ckv_init and is freed once.
        let boxed = unsafe { Box::from_raw(h) };
        if boxed.engine.pid() != std::process::id() {
            std::mem::forget(boxed);
            return;
        }
        // Dropping the engine stops it (2 s limit); the fd closes even if a
        // thread is left running.
        boxed.engine.change_signal().close();
    })
}
