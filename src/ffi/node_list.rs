//! Typed node lists: a pinned, immutable view of one service's nodes.
//!
//! The snapshot keeps each service's nodes as pre-rendered JSON (what the
//! Lua binding copies). A C caller gets them decoded once per version of a
//! service's node list: the cache below remembers, per service name, the
//! decoded list and the generation it came from (a service's nodes change
//! only with its generation), so a reader decodes again only when the
//! watcher replaced that service's nodes. The key holds for a snapshot in
//! the heap as for one mapped from the leader's file, across snapshots. A
//! view holds an `Arc` of the decoded list, which pins every byte it points
//! to until `ckv_node_list_free`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::args::{boundary, name_arg, out_arg, put};
use super::ckv_status;
use super::handle::{ckv_handle, handle};
use crate::log::Level;
use crate::snapshot::{ServiceRef, Snapshot};

/// `ckv_node.present` bit: `max_fails` was given in Consul's value.
pub const CKV_NODE_HAS_MAX_FAILS: u32 = 1;
/// `ckv_node.present` bit: `fail_timeout` was given.
pub const CKV_NODE_HAS_FAIL_TIMEOUT: u32 = 2;
/// `ckv_node.present` bit: `priority` was given (absent means 0 to APISIX).
pub const CKV_NODE_HAS_PRIORITY: u32 = 4;

/// One node, as `ckv_node_list_get` fills it in. A plain struct owned by
/// the caller; the two pointers in it point into the list and stay valid
/// until `ckv_node_list_free` of that list.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ckv_node {
    /// The host: an IPv4 address, a name, or a bracketed IPv6 address
    /// (`[2001:db8::1]`), `host_len` bytes. `host[host_len]` is a NUL byte,
    /// so `host` may also be used as a C string.
    pub host: *const u8,
    pub host_len: usize,
    /// The node's `metadata` as JSON object text, NUL-terminated like
    /// `host`; NULL with `metadata_len` 0 when Consul's value has none.
    pub metadata: *const u8,
    pub metadata_len: usize,
    /// Seconds; meaningful when `present & CKV_NODE_HAS_FAIL_TIMEOUT`.
    pub fail_timeout: f64,
    /// Meaningful when `present & CKV_NODE_HAS_MAX_FAILS`.
    pub max_fails: u64,
    /// Meaningful when `present & CKV_NODE_HAS_PRIORITY`; may be negative.
    pub priority: i64,
    /// Weight for load balancing, 0 to 2^31-1 (the default weight when
    /// Consul's value has none).
    pub weight: u32,
    /// Which optional fields were given: `CKV_NODE_HAS_*` bits.
    pub present: u32,
    pub port: u16,
}

/// A pinned, immutable view of one service's nodes, taken from a single
/// snapshot. Opaque to C.
///
/// Ownership: from `ckv_nodes_get` or `ckv_service_list_nodes`; free it
/// with `ckv_node_list_free`, exactly once. It stays valid (and unchanged)
/// whatever the watcher publishes, and even after `ckv_free` of its handle.
/// Thread safety: immutable; any thread may read it concurrently, and it
/// may be freed from another thread than the one that got it.
#[derive(Debug)]
pub struct ckv_node_list {
    nodes: Arc<TypedNodes>,
    generation: u64,
    seq: u64,
}

/// One service's nodes, decoded from one `nodes_json`.
#[derive(Debug)]
pub(crate) struct TypedNodes {
    /// The version decoded: the service's generation and, as a second
    /// guard, the length of its JSON.
    version: (u64, usize),
    nodes: Vec<TypedNode>,
}

#[derive(Debug)]
struct TypedNode {
    /// Host bytes followed by a NUL.
    host: Box<[u8]>,
    /// Metadata JSON followed by a NUL, when present.
    metadata: Option<Box<[u8]>>,
    fail_timeout: Option<f64>,
    max_fails: Option<u64>,
    priority: Option<i64>,
    weight: u32,
    port: u16,
}

/// The JSON shape `kv.rs` renders for a node.
#[derive(Deserialize)]
struct WireNode<'a> {
    host: &'a str,
    port: u16,
    weight: u32,
    #[serde(default)]
    max_fails: Option<u64>,
    #[serde(default)]
    fail_timeout: Option<f64>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
}

fn nul_terminated(text: &str) -> Box<[u8]> {
    let mut v = Vec::with_capacity(text.len() + 1);
    v.extend_from_slice(text.as_bytes());
    v.push(0);
    v.into_boxed_slice()
}

impl TypedNodes {
    fn decode(service: &ServiceRef<'_>) -> Result<TypedNodes, serde_json::Error> {
        let wire: Vec<WireNode<'_>> = serde_json::from_str(service.nodes_json)?;
        let nodes = wire
            .into_iter()
            .map(|n| TypedNode {
                host: nul_terminated(n.host),
                metadata: n.metadata.map(|m| nul_terminated(m.get())),
                fail_timeout: n.fail_timeout,
                max_fails: n.max_fails,
                priority: n.priority,
                weight: n.weight,
                port: n.port,
            })
            .collect();
        Ok(TypedNodes {
            version: version_of(service),
            nodes,
        })
    }
}

fn version_of(service: &ServiceRef<'_>) -> (u64, usize) {
    (service.generation, service.nodes_json.len())
}

/// Decoded node lists by service name, shared by a handle and its views.
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    by_name: RwLock<HashMap<Arc<str>, Arc<TypedNodes>>>,
}

impl NodeCache {
    /// The typed nodes of `service` (of `snap`), decoded at most once per
    /// version of its node list.
    fn typed(
        &self,
        snap: &Snapshot,
        name: &str,
        service: &ServiceRef<'_>,
    ) -> Result<Arc<TypedNodes>, serde_json::Error> {
        if let Some(t) = self.by_name.read().get(name) {
            if t.version == version_of(service) {
                return Ok(t.clone());
            }
        }
        let typed = Arc::new(TypedNodes::decode(service)?);
        let mut map = self.by_name.write();
        map.insert(Arc::from(name), typed.clone());
        // Services that left the snapshot are forgotten now and then.
        if map.len() > snap.len() + 64 {
            map.retain(|k, _| snap.contains(k));
        }
        Ok(typed)
    }

    /// A view of service `name` in `snap`; `CKV_ERR_NOT_FOUND` when absent.
    pub(crate) fn view(
        &self,
        snap: &Snapshot,
        name: &str,
        logs: Option<&crate::log::LogQueue>,
    ) -> Result<Box<ckv_node_list>, ckv_status> {
        let service = snap.get(name).ok_or(ckv_status::CKV_ERR_NOT_FOUND)?;
        let nodes = self.typed(snap, name, &service).map_err(|e| {
            // Our own rendering did not decode: a bug, reported as one.
            if let Some(logs) = logs {
                logs.push(
                    Level::Err,
                    format!("ckv: internal error: nodes of a service do not decode: {e}"),
                );
            }
            ckv_status::CKV_ERR_PANIC
        })?;
        Ok(Box::new(ckv_node_list {
            nodes,
            generation: service.generation,
            seq: snap.seq,
        }))
    }
}

/// Borrows a list pointer from C.
///
/// # Safety
/// `list` must be NULL or a live pointer from `ckv_nodes_get` or
/// `ckv_service_list_nodes`.
unsafe fn list_ref<'a>(list: *const ckv_node_list) -> Option<&'a ckv_node_list> {
    // SAFETY: NULL or live, per the contract above.
    unsafe { list.as_ref() }
}

/// Takes a pinned view of service `name`'s nodes from the current snapshot
/// into `*out`, without copying the nodes into a caller buffer.
///
/// `name` is the full service name, as `ckv_nodes` takes it. Returns
/// `CKV_OK`, `CKV_ERR_NOT_FOUND`, `CKV_ERR_NULL_ARGUMENT`,
/// `CKV_ERR_INVALID_UTF8`, `CKV_ERR_TOO_LARGE` or `CKV_ERR_FORKED`.
///
/// Ownership: free `*out` with `ckv_node_list_free`. The first call after a
/// service changed decodes its nodes (once, for every thread); later calls
/// cost a lookup. Never blocks on the watcher. Thread safety: any thread of
/// the creating process, concurrently.
#[no_mangle]
pub extern "C" fn ckv_nodes_get(
    h: *const ckv_handle,
    name: *const u8,
    name_len: usize,
    out: *mut *const ckv_node_list,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        let out = try_arg!(out_arg(out));
        // SAFETY: the caller gives `name_len` readable bytes at `name`.
        let name = try_arg!(unsafe { name_arg(name, name_len) });
        let snap = h.engine().snapshot();
        let view = try_arg!(h.node_cache().view(&snap, name, Some(h.engine().logs())));
        // SAFETY: checked non-NULL; the caller gives a writable slot.
        unsafe { put(out, Box::into_raw(view).cast_const()) };
        ckv_status::CKV_OK
    })
}

/// The number of nodes in the list (0 for NULL). May be 0: a service
/// whose every node was removed stays listed until it is deleted.
#[no_mangle]
pub extern "C" fn ckv_node_list_len(list: *const ckv_node_list) -> usize {
    boundary(0, || {
        // SAFETY: NULL or live, per the contract.
        unsafe { list_ref(list) }.map_or(0, |l| l.nodes.nodes.len())
    })
}

/// Fills `*out` with node `index` (from 0, in Consul's key order).
///
/// Returns `CKV_OK`, `CKV_ERR_NOT_FOUND` (index past the end) or
/// `CKV_ERR_NULL_ARGUMENT`. The pointers in `*out` stay valid until
/// `ckv_node_list_free(list)`. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn ckv_node_list_get(
    list: *const ckv_node_list,
    index: usize,
    out: *mut ckv_node,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: NULL or live, per the contract.
        let Some(list) = (unsafe { list_ref(list) }) else {
            return ckv_status::CKV_ERR_NULL_ARGUMENT;
        };
        let out = try_arg!(out_arg(out));
        let Some(n) = list.nodes.nodes.get(index) else {
            return ckv_status::CKV_ERR_NOT_FOUND;
        };
        let mut present = 0;
        if n.max_fails.is_some() {
            present |= CKV_NODE_HAS_MAX_FAILS;
        }
        if n.fail_timeout.is_some() {
            present |= CKV_NODE_HAS_FAIL_TIMEOUT;
        }
        if n.priority.is_some() {
            present |= CKV_NODE_HAS_PRIORITY;
        }
        let (metadata, metadata_len) = match &n.metadata {
            Some(m) => (m.as_ptr(), m.len() - 1),
            None => (std::ptr::null(), 0),
        };
        let node = ckv_node {
            host: n.host.as_ptr(),
            host_len: n.host.len() - 1,
            metadata,
            metadata_len,
            fail_timeout: n.fail_timeout.unwrap_or(0.0),
            max_fails: n.max_fails.unwrap_or(0),
            priority: n.priority.unwrap_or(0),
            weight: n.weight,
            present,
            port: n.port,
        };
        // SAFETY: checked non-NULL; the caller gives a writable ckv_node.
        unsafe { put(out, node) };
        ckv_status::CKV_OK
    })
}

/// The generation at which this service last changed (as
/// `ckv_service_generation`); 0 for NULL. Two lists of the same service
/// with the same generation hold the same nodes.
#[no_mangle]
pub extern "C" fn ckv_node_list_generation(list: *const ckv_node_list) -> u64 {
    boundary(0, || {
        // SAFETY: NULL or live, per the contract.
        unsafe { list_ref(list) }.map_or(0, |l| l.generation)
    })
}

/// The sequence number of the snapshot the list was taken from (as
/// `ckv_change_seq`); 0 for NULL.
#[no_mangle]
pub extern "C" fn ckv_node_list_seq(list: *const ckv_node_list) -> u64 {
    boundary(0, || {
        // SAFETY: NULL or live, per the contract.
        unsafe { list_ref(list) }.map_or(0, |l| l.seq)
    })
}

/// Frees a list; every pointer taken from it becomes invalid. NULL is
/// ignored. Any thread; exactly once per list.
#[no_mangle]
pub extern "C" fn ckv_node_list_free(list: *const ckv_node_list) {
    boundary((), || {
        if !list.is_null() {
            // SAFETY: `list` came from Box::into_raw in this module and is
            // freed once, per the contract.
            drop(unsafe { Box::from_raw(list.cast_mut()) });
        }
    })
}
