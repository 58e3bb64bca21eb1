//! Rendering the services a response touched: each one's `nodes_json` is
//! put together from its nodes' text, in key order, copying unchanged nodes
//! out of the service's previous `nodes_json` (no per-node allocation is
//! kept) and new ones out of the response's fresh text.

use std::sync::Arc;

use super::entry::{self, FRESH};
use super::slots::Slots;
use crate::snapshot::Service;

/// Where the rendered services go besides their slots.
pub(super) struct Target<'a> {
    pub nodes: &'a mut u64,
    /// `{server url}/v1/kv/`, for the names of new services.
    pub base: &'a str,
    pub server: u16,
    pub generation: u64,
}

/// Up to this many changed services, their nodes are collected in one pass
/// and sorted; beyond, counted and placed in two passes.
const FEW: usize = 256;

/// The entry indices of the dirty slots' nodes, grouped by slot in `dirty`
/// order and in key order within a slot; each dirty slot's `at` is left at
/// the end of its group.
fn nodes_in_order_few(entries: &[entry::Entry], slots: &mut Slots, dirty: &[u32]) -> Vec<u32> {
    for (k, &s) in dirty.iter().enumerate() {
        slots.list[s as usize].at = k as u32;
    }
    let mut pairs: Vec<(u32, u32)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_node() && slots.is_dirty(e.slot))
        .map(|(i, e)| (slots.list[e.slot as usize].at, i as u32))
        .collect();
    pairs.sort_unstable();
    let mut p = 0;
    for (k, &s) in dirty.iter().enumerate() {
        while pairs.get(p).is_some_and(|&(rank, _)| rank == k as u32) {
            p += 1;
        }
        slots.list[s as usize].at = p as u32;
    }
    pairs.into_iter().map(|(_, i)| i).collect()
}

/// As [`nodes_in_order_few`], by a counting sort.
fn nodes_in_order_many(entries: &[entry::Entry], slots: &mut Slots, dirty: &[u32]) -> Vec<u32> {
    for &s in dirty {
        slots.list[s as usize].at = 0;
    }
    for e in entries.iter().filter(|e| e.is_node()) {
        if slots.is_dirty(e.slot) {
            slots.list[e.slot as usize].at += 1;
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
        if slots.is_dirty(e.slot) {
            let s = &mut slots.list[e.slot as usize];
            order[s.at as usize] = i as u32;
            s.at += 1;
        }
    }
    order
}

/// Renders every slot in `dirty`; returns how many services changed.
pub(super) fn render(
    entries: &mut [entry::Entry],
    slots: &mut Slots,
    dirty: &[u32],
    fresh: &str,
    target: Target<'_>,
) -> usize {
    // New slots keep their path's place in `at` until named: note it first.
    let born: Vec<_> = dirty.iter().map(|&s| slots.born_span(s)).collect();
    let order = if dirty.len() <= FEW {
        nodes_in_order_few(entries, slots, dirty)
    } else {
        nodes_in_order_many(entries, slots, dirty)
    };
    let Target {
        nodes,
        base,
        server,
        generation,
    } = target;
    let mut changed = 0;
    let mut start = 0usize;
    let mut buf = String::new();
    for (&s, &born) in dirty.iter().zip(&born) {
        let end = slots.list[s as usize].at as usize;
        let mine = &order[start..end];
        start = end;
        slots.unmark(s);
        if mine.is_empty() {
            if let Some(gone) = slots.set_service(s, None) {
                *nodes -= u64::from(gone.node_count);
                changed += 1;
            }
            slots.release(s);
            continue;
        }
        if slots.name_of(s, base, born).is_none() {
            continue;
        }
        let old = slots.list[s as usize]
            .service
            .as_ref()
            .map(|o| o.nodes_json.clone());
        buf.clear();
        buf.push('[');
        let mut count = 0u32;
        for &i in mine {
            let e = &mut entries[i as usize];
            let text = if e.flags & FRESH != 0 {
                fresh.get(e.json.range())
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
        if let Some(before) = slots.set_service(s, Some(service)) {
            *nodes -= u64::from(before.node_count);
        }
        changed += 1;
    }
    changed
}
