//! Draining the library's log records (pull-style: Rust never calls back).

use super::args::{boundary, copy_out, out_arg, put};
use super::ckv_status;
use super::handle::{ckv_handle, handle};

/// Takes the oldest queued log record: its text goes into `buf` (not
/// NUL-terminated, length in `*out_len`) and its level into `*out_level`,
/// using nginx's numbering: 4 error, 5 warn, 6 notice, 7 info, 8 debug.
///
/// When the record does not fit `buf_cap` bytes, returns
/// `CKV_ERR_BUFFER_TOO_SMALL` with its size in `*out_len` and keeps it:
/// the next call returns the same record. `buf` may be NULL when
/// `buf_cap` is 0 (a size query).
///
/// Returns `CKV_OK`, `CKV_ERR_EMPTY` when nothing is queued,
/// `CKV_ERR_BUFFER_TOO_SMALL`, `CKV_ERR_NULL_ARGUMENT` or `CKV_ERR_FORKED`.
/// Records never contain the ACL token and are single lines. Call it until
/// `CKV_ERR_EMPTY`, from one thread at a time.
#[no_mangle]
pub extern "C" fn ckv_log_next(
    h: *const ckv_handle,
    buf: *mut u8,
    buf_cap: usize,
    out_len: *mut usize,
    out_level: *mut i32,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        try_arg!(out_arg(out_len));
        let out_level = try_arg!(out_arg(out_level));
        if buf.is_null() && buf_cap > 0 {
            return ckv_status::CKV_ERR_NULL_ARGUMENT;
        }
        // A record refused for size waits here; it goes before the queue.
        let mut pending = h.pending_log().lock();
        let Some(record) = pending.take().or_else(|| h.engine().logs().pop()) else {
            return ckv_status::CKV_ERR_EMPTY;
        };
        // SAFETY: `buf` has `buf_cap` writable bytes; `out_len` checked.
        let status = unsafe { copy_out(record.message.as_bytes(), buf, buf_cap, out_len) };
        if status == ckv_status::CKV_OK {
            // SAFETY: checked non-NULL; the caller gives a writable int.
            unsafe { put(out_level, record.level as i32) };
        } else {
            *pending = Some(record);
        }
        status
    })
}
