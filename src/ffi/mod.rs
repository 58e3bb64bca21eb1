//! The C ABI. Every exported name starts with `ckv_`.
//!
//! Conventions (the same for every function, see also `include/ckv.h`):
//! * Fallible functions return a [`ckv_status`]; out-parameters are written
//!   only on `CKV_OK`, except `out_len`, which also reports the size needed
//!   on `CKV_ERR_BUFFER_TOO_SMALL`.
//! * Bytes go in and out as pointer plus length; nothing relies on NUL
//!   termination. Output is either copied into the caller's buffer (call
//!   with `buf_cap = 0` and `buf` NULL to learn the size) or read from a
//!   pinned view (`ckv_node_list`, `ckv_service_list`) that stays valid
//!   until its `_free`.
//! * Every pointer is checked for NULL, and every body runs inside
//!   `catch_unwind`: a panic becomes `CKV_ERR_PANIC`, never an abort.
//! * A handle belongs to the process that created it: used in a forked
//!   child it answers `CKV_ERR_FORKED` and does nothing else.
//!
//! One file per exported object: [`handle`] (`ckv_handle`), [`node_list`],
//! [`service_list`], [`change`] (waiting and the notification fd), [`nodes`]
//! (the JSON reads the Lua binding uses), [`log`], [`version`]; [`status`]
//! holds the status table and [`args`] the argument checks they share.

#![allow(non_camel_case_types)]
// Exported functions check their pointers themselves; callers get codes.
#![allow(clippy::not_unsafe_ptr_arg_deref)]
// Nothing a caller passes may make the library panic or abort, and every
// unsafe block names what makes it sound.
#![deny(
    clippy::undocumented_unsafe_blocks,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[macro_use]
mod args;
mod change;
mod handle;
mod log;
mod node_list;
mod nodes;
mod service_list;
mod status;
mod version;

pub use args::CKV_MAX_NAME_BYTES;
pub use change::*;
pub use handle::*;
pub use log::*;
pub use node_list::*;
pub use nodes::*;
pub use service_list::*;
pub use status::*;
pub use version::*;
