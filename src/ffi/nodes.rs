//! The JSON reads the Lua binding uses: one service, its generation, or
//! everything. C programs have the typed views in `node_list` and
//! `service_list` instead.

use super::args::{boundary, copy_out, name_arg, out_arg, put, put_opt};
use super::ckv_status;
use super::handle::{ckv_handle, handle};

/// Copies the nodes of service `name` into `buf` as a JSON array of objects
/// `{"host":..,"port":..,"weight":..}` plus `max_fails`, `fail_timeout`,
/// `priority` and `metadata` where Consul's value has them, in Consul's key
/// order. `*out_generation` receives the generation at which this service
/// last changed.
///
/// `name` is the full service name, `{server url}/v1/kv/{prefix}/{service}/`.
/// Returns `CKV_OK`, `CKV_ERR_NOT_FOUND`, `CKV_ERR_BUFFER_TOO_SMALL` (with
/// `*out_len` set to the size needed; nothing else written),
/// `CKV_ERR_NULL_ARGUMENT`, `CKV_ERR_INVALID_UTF8`, `CKV_ERR_TOO_LARGE` or
/// `CKV_ERR_FORKED`. `out_generation` may be NULL.
///
/// Never blocks on the watcher. Thread safety: any thread of the creating
/// process.
#[no_mangle]
pub extern "C" fn ckv_nodes(
    h: *const ckv_handle,
    name: *const u8,
    name_len: usize,
    buf: *mut u8,
    buf_cap: usize,
    out_len: *mut usize,
    out_generation: *mut u64,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        // SAFETY: the caller gives `name_len` readable bytes at `name`.
        let name = try_arg!(unsafe { name_arg(name, name_len) });
        let snap = h.engine().snapshot();
        let Some(service) = snap.get(name) else {
            return ckv_status::CKV_ERR_NOT_FOUND;
        };
        // SAFETY: the caller gives `buf_cap` writable bytes and `out_len`.
        let status = unsafe { copy_out(service.nodes_json.as_bytes(), buf, buf_cap, out_len) };
        if status == ckv_status::CKV_OK {
            // SAFETY: NULL or writable, per the contract.
            unsafe { put_opt(out_generation, service.generation) };
        }
        status
    })
}

/// Writes the generation at which service `name` last changed into
/// `*out_generation`. Cheaper than `ckv_nodes` when only "did it change?"
/// matters. Returns `CKV_OK`, `CKV_ERR_NOT_FOUND`, `CKV_ERR_NULL_ARGUMENT`,
/// `CKV_ERR_INVALID_UTF8`, `CKV_ERR_TOO_LARGE` or `CKV_ERR_FORKED`.
///
/// Thread safety: any thread of the creating process.
#[no_mangle]
pub extern "C" fn ckv_service_generation(
    h: *const ckv_handle,
    name: *const u8,
    name_len: usize,
    out_generation: *mut u64,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        let out_generation = try_arg!(out_arg(out_generation));
        // SAFETY: the caller gives `name_len` readable bytes at `name`.
        let name = try_arg!(unsafe { name_arg(name, name_len) });
        match h.engine().snapshot().get(name) {
            Some(s) => {
                // SAFETY: checked non-NULL; writable per the contract.
                unsafe { put(out_generation, s.generation) };
                ckv_status::CKV_OK
            }
            None => ckv_status::CKV_ERR_NOT_FOUND,
        }
    })
}

/// Copies every service as one JSON object `{"<name>":[nodes],...}` (names
/// in byte order) into `buf`; `*out_seq` (may be NULL) receives the
/// snapshot's sequence number. The snapshot may change between a size query
/// and the copy: on `CKV_ERR_BUFFER_TOO_SMALL`, grow the buffer to `*out_len`
/// and call again.
///
/// Thread safety: any thread of the creating process.
#[no_mangle]
pub extern "C" fn ckv_all_nodes(
    h: *const ckv_handle,
    buf: *mut u8,
    buf_cap: usize,
    out_len: *mut usize,
    out_seq: *mut u64,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        let snap = h.engine().snapshot();
        let json = snap.all_nodes_json();
        // SAFETY: the caller gives `buf_cap` writable bytes and `out_len`.
        let status = unsafe { copy_out(json.as_bytes(), buf, buf_cap, out_len) };
        if status == ckv_status::CKV_OK {
            // SAFETY: NULL or writable, per the contract.
            unsafe { put_opt(out_seq, snap.seq) };
        }
        status
    })
}
