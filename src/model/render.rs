//! Rendering the services a response touched: each one's `nodes_json` is
//! put together from its nodes' text, in key order, copying unchanged nodes
//! out of the service's previous `nodes_json` (no per-node allocation is
//! kept) and new ones out of the response's fresh text, or from their key's
//! host and port and their value's memoized tail.

use std::sync::Arc;

use super::entry::{self, FRESH, FRESH_TAIL};
use super::keys::KeyArena;
use super::nodes::{node_head, HOST_OPEN, PORT_OPEN};
use super::slots::Slots;
use crate::snapshot::Service;

/// This response's text the new nodes are made of.
pub(super) struct Fresh<'a> {
    /// Whole node objects (`FRESH`).
    pub nodes: &'a str,
    /// Value tails (`FRESH_TAIL`), after the host and port of the key.
    pub tails: &'a str,
    pub keys: &'a KeyArena,
}

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
    fresh: Fresh<'_>,
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
        let Some(name) = slots.name_of(s, base, born) else {
            continue;
        };
        // Every node of the slot has its key start with the slot's path.
        let path_len = name.len().saturating_sub(base.len());
        let old = slots.list[s as usize]
            .service
            .as_ref()
            .map(|o| o.nodes_json.clone());
        buf.clear();
        buf.push('[');
        let mut count = 0u32;
        for &i in mine {
            let e = &mut entries[i as usize];
            let text = if e.flags & FRESH_TAIL != 0 {
                let key = fresh.keys.get_str(e.key);
                node_head(key, path_len)
                    .zip(fresh.tails.get(e.json.range()))
                    .map(|((host, port), tail)| Text::Parts(host, port, tail))
            } else if e.flags & FRESH != 0 {
                fresh.nodes.get(e.json.range()).map(Text::Whole)
            } else {
                old.as_deref()
                    .and_then(|o| o.get(e.json.range()))
                    .map(Text::Whole)
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
            e.flags &= !(FRESH | FRESH_TAIL);
            match text {
                Text::Whole(t) => buf.push_str(t),
                Text::Parts(host, port, tail) => {
                    buf.push_str(HOST_OPEN);
                    buf.push_str(host);
                    buf.push_str(PORT_OPEN);
                    buf.push_str(port);
                    buf.push_str(tail);
                }
            }
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

/// A node's text, whole or in the pieces it is made of.
#[derive(Clone, Copy)]
enum Text<'a> {
    Whole(&'a str),
    /// Host, port and the value's tail.
    Parts(&'a str, &'a str, &'a str),
}

impl Text<'_> {
    fn len(&self) -> usize {
        match self {
            Text::Whole(t) => t.len(),
            Text::Parts(host, port, tail) => {
                HOST_OPEN.len() + host.len() + PORT_OPEN.len() + port.len() + tail.len()
            }
        }
    }
}
