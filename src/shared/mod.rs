//! One Consul watch per nginx instance: the processes of one instance elect a
//! leader with a file lock; the leader publishes each snapshot into a shared
//! directory (tmpfs) and wakes the others through a futex word in a shared
//! header. See `docs/architecture.md`.

pub mod codec;
pub mod codec_v1;
pub mod codec_v2;
mod fork;
mod futex;
pub mod group;

pub use group::{Group, Limits};
