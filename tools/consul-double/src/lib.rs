//! `ckv-consul-double`: a test double of Consul's KV HTTP API with fault
//! injection. It is a test tool, not a Consul replacement: no Raft, no
//! persistence, no catalog, no sessions. See README.md.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let cfg = ckv_consul_double::Config {
//!     listen: vec!["127.0.0.1:0".parse().unwrap()],
//!     ..Default::default()
//! };
//! let handle = ckv_consul_double::spawn(cfg).await?;
//! println!("listening on {}", handle.addr());
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod acl;
pub mod blocking;
pub mod body;
pub mod bootstrap;
pub mod config;
pub mod control;
pub mod faults;
pub mod gocompat;
pub mod http;
pub mod kv;
pub mod render;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;

pub use config::{Config, ReadToken, Tls};
pub use server::{spawn, Handle, Server};
