//! What every exported function does with its arguments: the panic
//! boundary, the early returns for bad handles and pointers, borrowing input
//! bytes, copying output bytes, and truncating text to a caller's buffer.

use std::any::Any;

use super::ckv_status;

/// Returns early from an exported function with the status of a failed
/// argument check: `let h = try_arg!(handle(h));`.
macro_rules! try_arg {
    ($check:expr) => {
        match $check {
            Ok(v) => v,
            Err(status) => return status,
        }
    };
}

/// Runs `body`, turning a panic into `default`.
pub(crate) fn boundary<T>(default: T, body: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(default)
}

/// Runs `body`; on a panic, returns `CKV_ERR_PANIC` and gives the panic's
/// message to `report` (for functions that have an error buffer).
pub(crate) fn boundary_reporting(
    report: impl FnOnce(&str),
    body: impl FnOnce() -> ckv_status,
) -> ckv_status {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(payload) => {
            let what = panic_message(payload.as_ref());
            // Reporting must not panic again; if it does, the code stands alone.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                report(&format!(
                    "internal error (panic caught): {what}; please report it"
                ))
            }));
            ckv_status::CKV_ERR_PANIC
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "no message"
    }
}

/// Borrows `len` bytes at `ptr`; a zero length needs no pointer.
///
/// # Safety
/// When `len > 0`, `ptr` must point to `len` readable bytes that stay
/// unchanged for `'a`.
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
    // SAFETY: non-NULL, `len` fits an allocation, and the caller promises
    // `len` readable bytes at `ptr` that outlive `'a`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Largest service name accepted.
pub const CKV_MAX_NAME_BYTES: usize = 4096;

/// A service name from C: at most [`CKV_MAX_NAME_BYTES`], UTF-8.
///
/// # Safety
/// As [`bytes`].
pub(crate) unsafe fn name_arg<'a>(name: *const u8, name_len: usize) -> Result<&'a str, ckv_status> {
    if name_len > CKV_MAX_NAME_BYTES {
        return Err(ckv_status::CKV_ERR_TOO_LARGE);
    }
    if name.is_null() {
        return Err(ckv_status::CKV_ERR_NULL_ARGUMENT);
    }
    // SAFETY: forwarded from this function's contract.
    let b = unsafe { bytes(name, name_len) }?;
    std::str::from_utf8(b).map_err(|_| ckv_status::CKV_ERR_INVALID_UTF8)
}

/// An out-parameter from C: not NULL.
pub(crate) fn out_arg<T>(out: *mut T) -> Result<*mut T, ckv_status> {
    if out.is_null() {
        Err(ckv_status::CKV_ERR_NULL_ARGUMENT)
    } else {
        Ok(out)
    }
}

/// Writes `value` through an out-parameter checked by [`out_arg`].
///
/// # Safety
/// `out` must be non-NULL, aligned and writable.
pub(crate) unsafe fn put<T>(out: *mut T, value: T) {
    // SAFETY: per this function's contract.
    unsafe { out.write(value) };
}

/// Writes `value` through an optional out-parameter (NULL: not wanted).
///
/// # Safety
/// `out` must be NULL, or aligned and writable.
pub(crate) unsafe fn put_opt<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL; writable per this function's contract.
        unsafe { out.write(value) };
    }
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
    let out_len = try_arg!(out_arg(out_len));
    // SAFETY: checked non-NULL; the caller promises it is writable.
    unsafe { put(out_len, data.len()) };
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

/// The longest prefix of `text` that fits `cap` bytes without cutting a
/// UTF-8 character.
pub(crate) fn truncated(text: &str, cap: usize) -> &str {
    if text.len() <= cap {
        return text;
    }
    let mut n = cap;
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    &text[..n]
}

/// Writes a message into an optional error buffer (`errbuf` with capacity
/// `*errbuf_len`), truncated to fit, and sets `*errbuf_len` to what was
/// written. Does nothing when either pointer is NULL.
///
/// # Safety
/// `errbuf_len` must be NULL or writable; `errbuf` must be NULL or point to
/// `*errbuf_len` writable bytes.
pub(crate) unsafe fn write_err(errbuf: *mut u8, errbuf_len: *mut usize, msg: &str) {
    if errbuf.is_null() || errbuf_len.is_null() {
        return;
    }
    // SAFETY: checked non-NULL; readable per the contract.
    let cap = unsafe { *errbuf_len };
    let text = truncated(msg, cap);
    // SAFETY: `text.len() <= cap` bytes fit in `errbuf`; the regions cannot
    // overlap (ours is Rust-owned); `errbuf_len` is writable.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), errbuf, text.len());
        put(errbuf_len, text.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_cuts_a_character() {
        assert_eq!(truncated("héllo", 10), "héllo");
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("é", 0), "");
    }

    #[test]
    fn a_panic_is_reported_in_words() {
        let mut got = String::new();
        let rc = boundary_reporting(
            |m| got = m.to_string(),
            || panic!("config parser fell over at {}", 17),
        );
        assert_eq!(rc, ckv_status::CKV_ERR_PANIC);
        assert_eq!(
            got,
            "internal error (panic caught): config parser fell over at 17; please report it"
        );
    }
}
