//! A new table from the previous one when only nodes changed: the records
//! of unchanged services, the heads and the index are copied as bytes, and
//! only the changed records are written again. At 10k services one changed
//! node costs a copy of the file instead of laying out every name again.
//!
//! The caller vouches for the names (the leader knows no service was added
//! or removed since `prev` was built, `ServerModel::names_epoch`); what can
//! be checked cheaply is checked, and anything unexpected gives `None`, for
//! a full build.

use super::{header, raw_record, u32_at, Layout, Table, HEADER_LEN};
use crate::snapshot::{Meta, ServiceRef};

impl Table {
    /// The table of `services` (under `meta`), made from `prev`, when
    /// `services` are, in order, the services of `prev`'s records under the
    /// same names, and `prev` was built from its services in that order
    /// ([`Table::build`] of an ordered list). A service is taken as
    /// unchanged when its generation is its record's and not newer than
    /// `prev` (a later change is stamped with a later sequence number);
    /// every other record is written again from the service.
    ///
    /// The result has the bytes a full build under `prev`'s seed would give.
    /// `None` when `prev` cannot be patched (opened from a file, another
    /// count, a server or name length that differs, or a file past 4 GiB).
    pub fn patched(prev: &Table, meta: &Meta, services: &[ServiceRef<'_>]) -> Option<Table> {
        Table::patched_in(prev, meta, services.iter().copied(), Vec::new())
    }

    /// [`Table::patched`] of the services `services` yields, written into
    /// `room` (a previous table's buffer, [`Table::into_heap_bytes`]) when
    /// it is large enough. Both spare the leader a fresh buffer per change
    /// (a list of every service, the file): the pages of a fresh buffer of
    /// a megabyte or more are each faulted in as they are first written,
    /// which at 10k services took longer than the patch.
    pub fn patched_in<'a>(
        prev: &Table,
        meta: &Meta,
        services: impl IntoIterator<Item = ServiceRef<'a>>,
        room: Vec<u8>,
    ) -> Option<Table> {
        if !prev.follows_input {
            return None;
        }
        let b = prev.as_bytes();
        let head_len = |h: u16| prev.heads.get(usize::from(h)).map(|&(_, len)| len);
        // Which records change, and by how many bytes the file grows.
        // (record number, where it starts, the record, the service) of
        // each changed one.
        let mut changed = Vec::new();
        let mut grow: i64 = 0;
        let mut nodes = prev.nodes;
        let mut given = 0;
        for (i, s) in services.into_iter().enumerate() {
            given += 1;
            if i >= prev.count {
                return None;
            }
            let at = u32_at(b, prev.offsets_at + 4 * i)? as usize;
            let r = raw_record(b, at, prev.offsets_at)?;
            if r.server != s.server || head_len(r.head)? + r.tail.1 != s.name.len() {
                return None;
            }
            let same = r.generation == s.generation
                && r.generation <= prev.meta.seq
                && r.node_count == s.node_count
                && r.json.1 == s.nodes_json.len();
            if !same {
                grow += s.nodes_json.len() as i64 - r.json.1 as i64;
                nodes = nodes.saturating_sub(u64::from(r.node_count)) + u64::from(s.node_count);
                changed.push((i, at, r, s));
            }
        }
        if given != prev.count {
            return None;
        }
        let offsets_at = usize::try_from(prev.offsets_at as i64 + grow).ok()?;
        let layout = Layout {
            count: prev.count,
            slots: prev.mask + 1,
            heads: prev.heads.len(),
            records_at: prev.records_at,
            offsets_at,
        };
        if !super::fits_u32(layout.file_len()) {
            return None;
        }
        let need = layout.file_len();
        let mut out = room;
        out.clear();
        if out.capacity() < need {
            // A little more than needed, so that the next patch, a few bytes
            // longer, still fits.
            out = Vec::with_capacity(need + need / 64);
        }
        out.extend_from_slice(&header(meta, prev.seed, &layout));
        out.extend_from_slice(b.get(HEADER_LEN..prev.records_at)?);
        // Runs of unchanged records are copied whole.
        let mut copied_to = prev.records_at;
        for (_, at, r, s) in &changed {
            let at = *at;
            out.extend_from_slice(b.get(copied_to..at)?);
            out.extend_from_slice(&s.generation.to_le_bytes());
            out.extend_from_slice(&s.node_count.to_le_bytes());
            // server, head and tail length (bytes 12..20): the name is the same
            out.extend_from_slice(b.get(at + 12..at + 20)?);
            out.extend_from_slice(&(s.nodes_json.len() as u32).to_le_bytes());
            out.extend_from_slice(b.get(r.tail.0..r.tail.0 + r.tail.1)?);
            out.extend_from_slice(s.nodes_json.as_bytes());
            copied_to = r.end;
        }
        out.extend_from_slice(b.get(copied_to..prev.offsets_at)?);
        debug_assert_eq!(out.len(), offsets_at);
        // Offsets move by what the changed records before them grew.
        let mut shift: i64 = 0;
        let mut next = changed.iter().peekable();
        for i in 0..prev.count {
            let old = i64::from(u32_at(b, prev.offsets_at + 4 * i)?);
            out.extend_from_slice(&((old + shift) as u32).to_le_bytes());
            if let Some((_, _, r, s)) = next.next_if(|c| c.0 == i) {
                shift += s.nodes_json.len() as i64 - r.json.1 as i64;
            }
        }
        // Same names, same seed: the same index.
        out.extend_from_slice(b.get(prev.index_at..prev.index_at + 4 * (prev.mask + 1))?);
        debug_assert_eq!(out.len(), layout.file_len());
        Some(Table {
            bytes: out.into(),
            meta: *meta,
            count: prev.count,
            seed: prev.seed,
            heads: prev.heads.clone(),
            records_at: prev.records_at,
            offsets_at,
            index_at: layout.index_at(),
            mask: prev.mask,
            nodes,
            follows_input: true,
        })
    }
}
