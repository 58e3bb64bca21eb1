//! A pinned view of every service in one snapshot.

use std::sync::{Arc, OnceLock};

use super::args::{boundary, out_arg, put};
use super::ckv_status;
use super::handle::{ckv_handle, handle};
use super::node_list::{ckv_node_list, NodeCache};
use crate::snapshot::Snapshot;

/// The services of one snapshot, names in byte order. Opaque to C.
///
/// Ownership: from `ckv_services_get`; free with `ckv_service_list_free`,
/// exactly once. It pins its snapshot: names and the node lists taken with
/// `ckv_service_list_nodes` all come from that one snapshot, whatever the
/// watcher publishes meanwhile, and stay valid after `ckv_free`.
/// Thread safety: immutable; any thread may read it concurrently.
#[derive(Debug)]
pub struct ckv_service_list {
    /// Its services are in name order already.
    snapshot: Arc<Snapshot>,
    cache: Arc<NodeCache>,
    /// Every name in one piece, put together at the first request: the
    /// snapshot holds each server's head once, apart from the names.
    names: OnceLock<Names>,
}

/// The list's names side by side, and where each ends.
#[derive(Debug, Default)]
struct Names {
    text: String,
    ends: Vec<usize>,
}

impl Names {
    fn of(snapshot: &Snapshot) -> Names {
        let mut names = Names::default();
        names.ends.reserve_exact(snapshot.len());
        for s in snapshot.iter() {
            s.name.push_to(&mut names.text);
            names.ends.push(names.text.len());
        }
        names
    }

    fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        self.text.get(start..end)
    }
}

/// # Safety
/// `list` must be NULL or a live pointer from `ckv_services_get`.
unsafe fn list_ref<'a>(list: *const ckv_service_list) -> Option<&'a ckv_service_list> {
    // SAFETY: NULL or live, per the contract above.
    unsafe { list.as_ref() }
}

/// Takes a pinned view of every service in the current snapshot into
/// `*out`. Returns `CKV_OK`, `CKV_ERR_NULL_ARGUMENT` or `CKV_ERR_FORKED`.
///
/// Ownership: free `*out` with `ckv_service_list_free`. Copies no service:
/// the list pins the snapshot. The first `ckv_service_list_name` puts the
/// names together once, for the list's life. Thread safety: any thread of
/// the creating process.
#[no_mangle]
pub extern "C" fn ckv_services_get(
    h: *const ckv_handle,
    out: *mut *const ckv_service_list,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: `h` is NULL or live, per the contract.
        let h = try_arg!(unsafe { handle(h) });
        let out = try_arg!(out_arg(out));
        let list = Box::new(ckv_service_list {
            snapshot: h.engine().snapshot(),
            cache: h.node_cache().clone(),
            names: OnceLock::new(),
        });
        // SAFETY: checked non-NULL; the caller gives a writable slot.
        unsafe { put(out, Box::into_raw(list).cast_const()) };
        ckv_status::CKV_OK
    })
}

/// The number of services in the list (0 for NULL).
#[no_mangle]
pub extern "C" fn ckv_service_list_len(list: *const ckv_service_list) -> usize {
    boundary(0, || {
        // SAFETY: NULL or live, per the contract.
        unsafe { list_ref(list) }.map_or(0, |l| l.snapshot.len())
    })
}

/// Points `*out_name` at the full name of service `index` (from 0, byte
/// order), `*out_len` bytes, not NUL-terminated; valid until
/// `ckv_service_list_free(list)`. The name is what `ckv_nodes_get` takes.
///
/// Returns `CKV_OK`, `CKV_ERR_NOT_FOUND` (index past the end) or
/// `CKV_ERR_NULL_ARGUMENT`.
#[no_mangle]
pub extern "C" fn ckv_service_list_name(
    list: *const ckv_service_list,
    index: usize,
    out_name: *mut *const u8,
    out_len: *mut usize,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: NULL or live, per the contract.
        let Some(list) = (unsafe { list_ref(list) }) else {
            return ckv_status::CKV_ERR_NULL_ARGUMENT;
        };
        let out_name = try_arg!(out_arg(out_name));
        let out_len = try_arg!(out_arg(out_len));
        let names = list.names.get_or_init(|| Names::of(&list.snapshot));
        let Some(name) = names.get(index) else {
            return ckv_status::CKV_ERR_NOT_FOUND;
        };
        // SAFETY: both checked non-NULL; the caller gives writable slots.
        // The name points into the list's own names, which live until the
        // list is freed and are never written after they were put together.
        unsafe {
            put(out_name, name.as_ptr());
            put(out_len, name.len());
        }
        ckv_status::CKV_OK
    })
}

/// Takes a node list of service `index` from the list's own snapshot
/// (so that every service read through one service list is consistent).
/// Free `*out` with `ckv_node_list_free`; it outlives the service list.
///
/// Returns `CKV_OK`, `CKV_ERR_NOT_FOUND` or `CKV_ERR_NULL_ARGUMENT`.
#[no_mangle]
pub extern "C" fn ckv_service_list_nodes(
    list: *const ckv_service_list,
    index: usize,
    out: *mut *const ckv_node_list,
) -> ckv_status {
    boundary(ckv_status::CKV_ERR_PANIC, || {
        // SAFETY: NULL or live, per the contract.
        let Some(list) = (unsafe { list_ref(list) }) else {
            return ckv_status::CKV_ERR_NULL_ARGUMENT;
        };
        let out = try_arg!(out_arg(out));
        let Some(service) = list.snapshot.nth(index) else {
            return ckv_status::CKV_ERR_NOT_FOUND;
        };
        let name = service.name.to_str();
        let view = try_arg!(list.cache.view(&list.snapshot, &name, None));
        // SAFETY: checked non-NULL; the caller gives a writable slot.
        unsafe { put(out, Box::into_raw(view).cast_const()) };
        ckv_status::CKV_OK
    })
}

/// The sequence number of the list's snapshot (as `ckv_change_seq`); 0 for
/// NULL.
#[no_mangle]
pub extern "C" fn ckv_service_list_seq(list: *const ckv_service_list) -> u64 {
    boundary(0, || {
        // SAFETY: NULL or live, per the contract.
        unsafe { list_ref(list) }.map_or(0, |l| l.snapshot.seq)
    })
}

/// Frees a service list; names taken from it become invalid (node lists
/// taken from it do not). NULL is ignored. Any thread; exactly once.
#[no_mangle]
pub extern "C" fn ckv_service_list_free(list: *const ckv_service_list) {
    boundary((), || {
        if !list.is_null() {
            // SAFETY: `list` came from Box::into_raw in ckv_services_get and
            // is freed once, per the contract.
            drop(unsafe { Box::from_raw(list.cast_mut()) });
        }
    })
}
