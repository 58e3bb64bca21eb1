//! The status codes: their numbers (the enum, which cbindgen copies into the
//! header, and from there `scripts/gen-cdefs.py` into the Lua constants) and
//! their texts (one table, checked exhaustive by the compiler).

use std::ffi::{c_char, CStr};

use super::args::boundary;

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
    /// No such service (or an index past the end of a list).
    CKV_ERR_NOT_FOUND = 4,
    /// The output buffer is too small; `*out_len` holds the size needed.
    CKV_ERR_BUFFER_TOO_SMALL = 5,
    /// The handle was created by another process (used after fork).
    CKV_ERR_FORKED = 6,
    /// Nothing to return (for example, no queued log record).
    CKV_ERR_EMPTY = 7,
    /// The library could not start (threads, shared directory), or a system
    /// resource could not be created (the notification fd).
    CKV_ERR_START = 8,
    /// An input is larger than the library accepts.
    CKV_ERR_TOO_LARGE = 9,
    /// `ckv_shutdown` or `ckv_wait_change` timed out.
    CKV_ERR_TIMEOUT = 10,
    /// A Rust panic was caught at the boundary. Please report it.
    CKV_ERR_PANIC = 99,
}

/// The one table of status texts. The `match` it generates is exhaustive,
/// so a new code without a text does not compile, and `ALL` lists every
/// code exactly once (a repeated arm is an unreachable-pattern error).
macro_rules! status_texts {
    ($($name:ident => $text:literal,)*) => {
        impl ckv_status {
            /// Every status code, in table order.
            pub const ALL: &'static [ckv_status] = &[$(ckv_status::$name,)*];

            /// The code as a static English phrase (what `ckv_status_str` returns).
            pub fn describe(self) -> &'static CStr {
                #[deny(unreachable_patterns)]
                match self {
                    $(ckv_status::$name => $text,)*
                }
            }

            /// The code with this number, if there is one.
            pub fn from_code(code: i32) -> Option<ckv_status> {
                Self::ALL.iter().copied().find(|s| *s as i32 == code)
            }
        }
    };
}

status_texts! {
    CKV_OK => c"ok",
    CKV_ERR_NULL_ARGUMENT => c"a required pointer argument was NULL",
    CKV_ERR_INVALID_UTF8 => c"input is not valid UTF-8",
    CKV_ERR_INVALID_CONFIG => c"invalid configuration",
    CKV_ERR_NOT_FOUND => c"not found (no such service, or an index past the end of a list)",
    CKV_ERR_BUFFER_TOO_SMALL => c"output buffer too small",
    CKV_ERR_FORKED => c"handle used in a process other than the one that created it",
    CKV_ERR_EMPTY => c"nothing to return",
    CKV_ERR_START => c"the library could not start",
    CKV_ERR_TOO_LARGE => c"input too large",
    CKV_ERR_TIMEOUT => c"timed out",
    CKV_ERR_PANIC => c"internal error (panic caught)",
}

/// Describes a status code as a static NUL-terminated English phrase.
/// Unknown codes give `"unknown status"`.
///
/// Lifetime: static; never free it. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn ckv_status_str(status: i32) -> *const c_char {
    boundary(c"unknown status".as_ptr(), || {
        ckv_status::from_code(status)
            .map_or(c"unknown status", ckv_status::describe)
            .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_number_and_text() {
        let mut seen = std::collections::HashSet::new();
        for s in ckv_status::ALL {
            assert!(seen.insert(*s as i32), "{s:?} reuses a number");
            assert!(!s.describe().to_bytes().is_empty());
            assert_eq!(ckv_status::from_code(*s as i32), Some(*s));
        }
        assert_eq!(ckv_status::from_code(-1), None);
    }
}
