//! Rendering the services a response touched: each one's `nodes_json` is
//! put together from its nodes' text, in key order, copying unchanged nodes
//! out of the service's previous `nodes_json` (no per-node allocation is
//! kept) and new ones out of the response's fresh text.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::entry::{Entry, FRESH};
use super::slots::Slots;
use crate::snapshot::Service;

/// What the services map must become.
pub(super) struct Target<'a> {
    pub services: &'a mut FxHashMap<Arc<str>, Service>,
    pub nodes: &'a mut u64,
    pub server: u16,
    pub generation: u64,
}

/// Renders every slot in `dirty`; returns how many services changed.
pub(super) fn render(
    entries: &mut [Entry],
    slots: &mut Slots,
    dirty: &[u32],
    fresh: &[u8],
    target: Target<'_>,
) -> usize {
    // Count each dirty service's nodes, give each a range of `order`, and
    // fill it with entry indices in key order (a counting sort: two passes
    // over the entries, however many services changed).
    for &s in dirty {
        slots.list[s as usize].at = 0;
    }
    for e in entries.iter().filter(|e| e.is_node()) {
        if let Some(s) = slots.list.get_mut(e.slot as usize).filter(|s| s.dirty) {
            s.at += 1;
        }
    }
    let mut total = 0u32;
    for &s in dirty {
        let slot = &mut slots.list[s as usize];
        let n = slot.at;
        slot.at = total;
        total += n;
    }
    let mut order = vec![0u32; total as usize];
    for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.is_node()) {
        if let Some(s) = slots.list.get_mut(e.slot as usize).filter(|s| s.dirty) {
            order[s.at as usize] = i as u32;
            s.at += 1;
        }
    }
    let Target {
        services,
        nodes,
        server,
        generation,
    } = target;
    let mut changed = 0;
    let mut start = 0usize;
    let mut buf = String::new();
    for &s in dirty {
        let end = slots.list[s as usize].at as usize;
        let mine = &order[start..end];
        start = end;
        slots.list[s as usize].dirty = false;
        let Some(name) = slots.name(s).cloned() else {
            continue;
        };
        let old = services.get(&name).map(|o| o.nodes_json.clone());
        if mine.is_empty() {
            if let Some(gone) = services.remove(&name) {
                *nodes -= u64::from(gone.node_count);
                changed += 1;
            }
            slots.release(s);
            continue;
        }
        buf.clear();
        buf.push('[');
        let mut count = 0u32;
        for &i in mine {
            let e = &mut entries[i as usize];
            let text = if e.flags & FRESH != 0 {
                fresh.get(e.json.range()).and_then(|t| std::str::from_utf8(t).ok())
            } else {
                old.as_deref().and_then(|o| o.get(e.json.range()))
            };
            // Always found: a node is either fresh or was rendered into its
            // service's current `nodes_json`.
            let Some(text) = text else { continue };
            if count > 0 {
                buf.push(',');
            }
            let (Ok(off), Ok(len)) = (u32::try_from(buf.len()), u32::try_from(text.len())) else {
                break;
            };
            e.json.off = off;
            e.json.len = len;
            e.flags &= !FRESH;
            buf.push_str(text);
            count += 1;
        }
        buf.push(']');
        if old.as_deref() == Some(buf.as_str()) {
            continue;
        }
        let service = Service {
            generation,
            server,
            node_count: count,
            nodes_json: Arc::from(buf.as_str()),
        };
        *nodes += u64::from(count);
        if let Some(was) = services.insert(name, service) {
            *nodes -= u64::from(was.node_count);
        }
        changed += 1;
    }
    changed
}
