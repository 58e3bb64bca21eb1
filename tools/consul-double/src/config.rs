//! Server configuration (what the command line sets).

use std::net::SocketAddr;
use std::time::Duration;

/// A token with one rule on one key prefix and nothing else: `read` (in
/// `read_tokens`) or `list` (in `list_tokens`, read and list; Consul's
/// `enforce`: a `read` rule does not allow lists under
/// `enable_key_list_policy`).
#[derive(Clone, Debug)]
pub struct ReadToken {
    pub secret: String,
    pub prefix: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// ACL mode: the management token. `None` disables ACLs.
    pub token: Option<String>,
    /// Extra read-only tokens (ACL mode only).
    pub read_tokens: Vec<ReadToken>,
    /// Tokens with a `list` rule on their prefix (ACL mode only).
    pub list_tokens: Vec<ReadToken>,
    /// `acl.enable_key_list_policy`: recurse/keys need `key:list` on the prefix.
    pub acl_key_list_policy: bool,
    /// `max_query_time`: cap on `?wait`.
    pub max_wait: Duration,
    /// `default_query_time`: the wait when `?wait` is absent or <= 0.
    pub default_wait: Duration,
    /// `TombstoneTTL`.
    pub tombstone_ttl: Duration,
    /// The Raft index the store starts at.
    pub start_index: u64,
    /// Each write consumes 1..=max_index_skip indexes.
    pub max_index_skip: u64,
    /// `kv_max_value_size`.
    pub kv_max_value_size: usize,
    /// `limits.http_max_conns_per_client` (0 = unlimited).
    pub max_conns_per_client: usize,
    /// Pairs loaded at start, in one write.
    pub seed: Vec<(Vec<u8>, Vec<u8>)>,
    /// What `GET /v1/status/leader` answers while a leader is known.
    pub leader_addr: String,
    /// Every listener speaks TLS with this certificate.
    pub tls: Option<Tls>,
}

/// PEM files of a TLS listener, as `verify_incoming` Consul agents have.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// Clients must present a certificate issued by this CA (mutual TLS).
    pub client_ca_file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8500))],
            token: None,
            read_tokens: Vec::new(),
            list_tokens: Vec::new(),
            acl_key_list_policy: false,
            max_wait: Duration::from_secs(600),
            default_wait: Duration::from_secs(300),
            tombstone_ttl: Duration::from_secs(15 * 60),
            start_index: 1000 + rand::random::<u64>() % 1000,
            max_index_skip: 3,
            kv_max_value_size: 524_288,
            max_conns_per_client: 0,
            seed: Vec::new(),
            leader_addr: "127.0.0.1:8300".to_string(),
            tls: None,
        }
    }
}
