//! ckv: Consul KV service discovery for OpenResty and Apache APISIX.
//!
//! The crate is a pure-Rust core (config, Consul client, KV model, snapshot,
//! dump, cross-process sharing) that needs neither nginx nor FFI to test, and
//! a C ABI in [`ffi`] over it. See `docs/architecture.md`.

#![deny(missing_debug_implementations)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
pub mod config;
pub mod dump;
pub mod engine;
pub mod fsutil;
pub mod kv;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod policy;
mod prefetch;
pub mod shared;
pub mod snapshot;
pub mod stats;
pub mod watcher;

#[cfg(feature = "ffi")]
pub mod ffi;

/// Version of the library, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
