//! Version queries: what the caller checks before anything else.

use std::ffi::c_char;

use super::{boundary, ckv_status};

/// The ABI version this library implements. Bumped on any incompatible change
/// to `include/ckv.h`; bindings refuse a version they were not written for.
pub const CKV_ABI_VERSION: u32 = 1;

/// Returns [`CKV_ABI_VERSION`].
///
/// Thread safety: any thread, any time, no handle needed.
#[no_mangle]
pub extern "C" fn ckv_abi_version() -> u32 {
    CKV_ABI_VERSION
}

/// Returns the library version as a static NUL-terminated string, e.g.
/// `"ckv/0.1.0"`.
///
/// Lifetime: static; never free it. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn ckv_version() -> *const c_char {
    concat!("ckv/", env!("CARGO_PKG_VERSION"), "\0")
        .as_ptr()
        .cast()
}

/// Describes a status code as a static NUL-terminated English sentence.
/// Unknown codes give `"unknown status"`.
///
/// Lifetime: static; never free it. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn ckv_status_str(status: i32) -> *const c_char {
    use ckv_status::*;
    let known = [
        CKV_OK,
        CKV_ERR_NULL_ARGUMENT,
        CKV_ERR_INVALID_UTF8,
        CKV_ERR_INVALID_CONFIG,
        CKV_ERR_NOT_FOUND,
        CKV_ERR_BUFFER_TOO_SMALL,
        CKV_ERR_FORKED,
        CKV_ERR_EMPTY,
        CKV_ERR_START,
        CKV_ERR_TOO_LARGE,
        CKV_ERR_TIMEOUT,
        CKV_ERR_PANIC,
    ];
    boundary(c"unknown status".as_ptr(), || {
        known
            .iter()
            .find(|s| **s as i32 == status)
            .map_or(c"unknown status", |s| s.describe())
            .as_ptr()
    })
}
