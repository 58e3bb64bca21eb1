//! Version queries: what the caller checks before anything else.

use std::ffi::c_char;

/// The ABI version this library implements. Bumped on any incompatible change
/// to `include/ckv.h`; bindings refuse a version they were not written for.
/// (Adding functions or constants is compatible and keeps the number.)
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
