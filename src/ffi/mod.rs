//! The C ABI. Every exported name starts with `ckv_`.
//!
//! Conventions (the same for every function, see also `include/ckv.h`):
//! * Fallible functions return a [`ckv_status`]; out-parameters are written
//!   only on `CKV_OK`, except `out_len`, which also reports the size needed
//!   on `CKV_ERR_BUFFER_TOO_SMALL`.
//! * Bytes go in and out as pointer plus length; nothing relies on NUL
//!   termination. Output is copied into the caller's buffer: call with
//!   `buf_cap = 0` (and `buf` NULL) to learn the size.
//! * Every pointer is checked for NULL, and every body runs inside
//!   `catch_unwind`: a panic becomes `CKV_ERR_PANIC`, never an abort.
//! * A handle belongs to the process that created it: used in a forked
//!   child it answers `CKV_ERR_FORKED` and does nothing else.

#![allow(non_camel_case_types)]
// Exported functions check their pointers themselves; callers get codes.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod handle;
mod log;
mod nodes;
mod version;

pub use handle::*;
pub use log::*;
pub use nodes::*;
pub use version::*;

/// Status codes. Values are stable: a code is never renumbered or reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ckv_status {
    /// Success.
    CKV_OK = 0,
    /// A required pointer argument was NULL.
    CKV_ERR_NULL_ARGUMENT = 1,
    /// A name or document was not valid UTF-8.
    CKV_ERR_INVALID_UTF8 = 2,
    /// The configuration was refused; the error buffer says why.
    CKV_ERR_INVALID_CONFIG = 3,
    /// No such service.
    CKV_ERR_NOT_FOUND = 4,
    /// The output buffer is too small; `*out_len` holds the size needed.
    CKV_ERR_BUFFER_TOO_SMALL = 5,
    /// The handle was created by another process (used after fork).
    CKV_ERR_FORKED = 6,
    /// Nothing to return (for example, no queued log record).
    CKV_ERR_EMPTY = 7,
    /// The library could not start (threads, shared directory).
    CKV_ERR_START = 8,
    /// An input is larger than the library accepts.
    CKV_ERR_TOO_LARGE = 9,
    /// `ckv_shutdown` timed out; threads were left to finish alone.
    CKV_ERR_TIMEOUT = 10,
    /// A Rust panic was caught at the boundary. Please report it.
    CKV_ERR_PANIC = 99,
}

impl ckv_status {
    pub fn describe(self) -> &'static std::ffi::CStr {
        match self {
            ckv_status::CKV_OK => c"ok",
            ckv_status::CKV_ERR_NULL_ARGUMENT => c"a required pointer argument was NULL",
            ckv_status::CKV_ERR_INVALID_UTF8 => c"input is not valid UTF-8",
            ckv_status::CKV_ERR_INVALID_CONFIG => c"invalid configuration",
            ckv_status::CKV_ERR_NOT_FOUND => c"no such service",
            ckv_status::CKV_ERR_BUFFER_TOO_SMALL => c"output buffer too small",
            ckv_status::CKV_ERR_FORKED => {
                c"handle used in a process other than the one that created it"
            }
            ckv_status::CKV_ERR_EMPTY => c"nothing to return",
            ckv_status::CKV_ERR_START => c"the library could not start",
            ckv_status::CKV_ERR_TOO_LARGE => c"input too large",
            ckv_status::CKV_ERR_TIMEOUT => c"timed out",
            ckv_status::CKV_ERR_PANIC => c"internal error (panic caught)",
        }
    }
}

/// Runs `body`, turning a panic into `default`.
pub(crate) fn boundary<T>(default: T, body: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(default)
}

/// Borrows `len` bytes at `ptr`; a zero length needs no pointer.
///
/// # Safety
/// When `len > 0`, `ptr` must point to `len` readable bytes.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], ckv_status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(ckv_status::CKV_ERR_NULL_ARGUMENT);
    }
    if len > isize::MAX as usize {
        return Err(ckv_status::CKV_ERR_TOO_LARGE);
    }
    // SAFETY: the caller promises `len` readable bytes at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Copies `data` into the caller's buffer, or reports the size needed.
///
/// # Safety
/// `buf` must point to `cap` writable bytes (or be NULL with `cap == 0`);
/// `out_len` must be NULL or writable.
pub(crate) unsafe fn copy_out(
    data: &[u8],
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> ckv_status {
    if out_len.is_null() {
        return ckv_status::CKV_ERR_NULL_ARGUMENT;
    }
    // SAFETY: checked non-NULL; the caller promises it is writable.
    unsafe { *out_len = data.len() };
    if data.len() > cap {
        return ckv_status::CKV_ERR_BUFFER_TOO_SMALL;
    }
    if !data.is_empty() {
        if buf.is_null() {
            return ckv_status::CKV_ERR_NULL_ARGUMENT;
        }
        // SAFETY: `buf` has `cap >= data.len()` writable bytes; the regions
        // cannot overlap (ours is Rust-owned).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    }
    ckv_status::CKV_OK
}
