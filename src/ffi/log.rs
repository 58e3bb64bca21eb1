//! Draining the library's log records (pull-style: Rust never calls back).

use super::{boundary, ckv_handle, ckv_status, handle::handle};

/// Takes the oldest queued log record: its text goes into `buf` (truncated
/// to `buf_cap` bytes, not NUL-terminated, length in `*out_len`) and its level
/// into `*out_level`, using nginx's numbering: 4 error, 5 warn, 6 notice,
/// 7 info, 8 debug.
///
/// Returns `CKV_OK`, `CKV_ERR_EMPTY` when nothing is queued,
/// `CKV_ERR_NULL_ARGUMENT` or `CKV_ERR_FORKED`. Records never contain the
/// ACL token. Call it until `CKV_ERR_EMPTY`, from one thread at a time.
#[no_mangle]
pub extern "C" fn ckv_log_next(
    h: *const ckv_handle,
    buf: *mut u8,
    buf_cap: usize,
    out_len: *mut usize,
    out_level: *mut i32,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: per the function contract.
        let h = match unsafe { handle(h) } {
            Ok(h) => h,
            Err(s) => return s,
        };
        if out_len.is_null() || out_level.is_null() || (buf.is_null() && buf_cap > 0) {
            return ckv_status::CKV_ERR_NULL_ARGUMENT;
        }
        let Some(record) = h.engine().logs().pop() else {
            return ckv_status::CKV_ERR_EMPTY;
        };
        let msg = record.message.as_bytes();
        let mut n = msg.len().min(buf_cap);
        while n > 0 && !record.message.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `buf` has `buf_cap >= n` writable bytes; out pointers checked.
        unsafe {
            if n > 0 {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), buf, n);
            }
            *out_len = n;
            *out_level = record.level as i32;
        }
        ckv_status::CKV_OK
    })
}
