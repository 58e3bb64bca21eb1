//! The snapshot as bytes: the file the leader writes into the shared
//! directory, laid out so that a follower serves lookups straight from a
//! read-only mapping of it, without decoding it into the heap. The leader
//! serves from the same layout in memory, so there is one lookup path.
//!
//! All integers are little-endian and unaligned; offsets count from the
//! first byte of the file.
//!
//! ```text
//! header (64 bytes)
//!    0  magic        "CKVSNAP2"
//!    8  seq          u64
//!   16  received_us  u64   unix µs the Consul response arrived (0: none)
//!   24  flags        u32   1 = from the dump, 2 = synced, 4 = seeded hash;
//!                            other bits 0
//!   28  count        u32   number of services
//!   32  slots        u32   index slots: a power of two, more than count
//!   36  seed         u32   the hash seed with flag 4, else 0
//!   40  offsets_at   u64   end of the records, start of the offset table
//!   48  index_at     u64   = offsets_at + 8 × count
//!   56  file_len     u64   = index_at + 4 × slots, the file's size
//! records, from byte 64, back to back, in strict byte order of name
//!   generation u64, node_count u32, server u16, name_len u32, json_len u32,
//!   name[name_len] (UTF-8), json[json_len] (UTF-8, the nodes array)
//! offset table: count × u64, the offset of each record, in record order
//! index: slots × u32, 0 = empty, else record number + 1
//! ```
//!
//! The index is an open-addressing table with linear probing: the service
//! named `n` sits at the first slot from `home(n)` (wrapping) that holds its
//! record number, and every slot from `home(n)` to there is occupied. The
//! hash is fixed by this format (a leader and a follower of different
//! releases share files during a reload), never a std hash: with flag 4,
//! [`seeded_hash`] under the header's seed, which each leader process draws
//! at random, so that names written into Consul cannot be chosen to pile
//! up in one run of the index; without it (files of earlier builds),
//! [`name_hash`].
//!
//! A file is validated once, when opened ([`Table::open`]): sizes, every
//! offset and length, UTF-8 of names and JSON, name order, and that the
//! index reaches every record exactly once. After that, lookups only read
//! proven data. A bad file is an error naming what is wrong.
//!
//! Files of the previous release (`CKVSNAP1`) still open: they are decoded
//! into a table in the heap (see `codec_v1`).

use std::borrow::Cow;
use std::fmt;

use memmap2::Mmap;

use super::codec_v1;
use crate::snapshot::{Meta, ServiceRef, Snapshot};

/// What every snapshot file starts with, whatever its version.
pub const MAGIC_PREFIX: &[u8] = b"CKVSNAP";
const MAGIC: &[u8; 8] = b"CKVSNAP2";
const HEADER_LEN: usize = 64;
/// generation, node_count, server, name_len, json_len.
const RECORD_FIXED: usize = 8 + 4 + 2 + 4 + 4;
const FLAG_FROM_DUMP: u32 = 1;
const FLAG_SYNCED: u32 = 2;
const FLAG_SEEDED_HASH: u32 = 4;

/// The format's name hash, version 1: 64-bit FNV-1a over the name's bytes
/// (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// 64 × 64 → 128-bit multiply, halves xored.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

const SEED_MIX: u64 = 0xa076_1d64_78bd_642f;
const FINAL_MIX: u64 = 0xe703_7ed1_a0b4_28db;

/// The format's name hash, version 2 (flag 4): eight bytes per step, so a
/// lookup of a 60-byte name costs a handful of multiplies instead of one
/// per byte. With `m = fold(seed ^ 0xa0761d6478bd642f,
/// 0xe7037ed1a0b428db) | 1` and `h = m ^ len`, each 8-byte little-endian
/// word of the name (the last one zero-padded) gives `h = fold(h ^ word,
/// m)`; the hash is `fold(h, 0xe7037ed1a0b428db)`.
pub fn seeded_hash(seed: u32, name: &[u8]) -> u64 {
    let m = fold(u64::from(seed) ^ SEED_MIX, FINAL_MIX) | 1;
    let mut h = m ^ name.len() as u64;
    let mut words = name.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = fold(h ^ u64::from_le_bytes(b), m);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(b), m);
    }
    fold(h, FINAL_MIX)
}

/// How a table hashes names into its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// [`name_hash`]: files without flag 4.
    Fnv,
    /// [`seeded_hash`] under this seed.
    Seeded(u32),
}

impl Hashing {
    #[inline]
    fn of(self, name: &[u8]) -> u64 {
        match self {
            Hashing::Fnv => name_hash(name),
            Hashing::Seeded(seed) => seeded_hash(seed, name),
        }
    }

    /// What this process's leader writes: one random seed per process (a
    /// table built twice from the same services is the same bytes).
    pub fn for_this_process() -> Hashing {
        static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        Hashing::Seeded(*SEED.get_or_init(|| {
            let mut b = [0u8; 4];
            if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_ok() {
                return u32::from_le_bytes(b);
            }
            // No entropy to be had: still differ between processes.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            t ^ std::process::id().rotate_left(16)
        }))
    }
}

/// The home slot of a hash: its two halves xored (FNV's low bits alone mix
/// poorly), masked to the table size.
fn home(hash: u64, mask: usize) -> usize {
    ((hash ^ (hash >> 32)) as usize) & mask
}

/// The record numbers the index holds from slot `home` on, up to the first
/// empty slot (or one past the file): what a lookup of a name with that
/// home walks through. Every slot is visited at most once.
fn run_from(
    b: &[u8],
    index_at: usize,
    mask: usize,
    home: usize,
) -> impl Iterator<Item = usize> + '_ {
    (0..=mask)
        .map(move |k| (home + k) & mask)
        .map_while(move |slot| (u32_at(b, index_at + 4 * slot)? as usize).checked_sub(1))
}

/// Index slots for `count` services: a power of two of at least twice the
/// count (half full at most, so probes stay short), and at least one.
fn slots_for(count: usize) -> usize {
    count.saturating_mul(2).max(1).next_power_of_two()
}

/// The bytes behind a table.
pub enum Bytes {
    /// Built by this process (leader, dump, a previous-release file).
    Heap(Box<[u8]>),
    /// A read-only mapping of a file in the shared directory.
    Mapped(Mmap),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Heap(b) => b,
            Bytes::Mapped(m) => m,
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Bytes::Heap(_) => "heap",
            Bytes::Mapped(_) => "mapped",
        };
        write!(f, "{kind} {} bytes", self.as_slice().len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes::Heap(v.into_boxed_slice())
    }
}

impl From<Mmap> for Bytes {
    fn from(m: Mmap) -> Bytes {
        Bytes::Mapped(m)
    }
}

/// A validated snapshot in the format above: lookups by name in O(1), and
/// the services in name order.
#[derive(Debug)]
pub struct Table {
    bytes: Bytes,
    meta: Meta,
    count: usize,
    offsets_at: usize,
    index_at: usize,
    mask: usize,
    hashing: Hashing,
    /// Sum of every service's node count.
    nodes: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The fixed part and the extent of the record at `at`, within `end`.
struct RawRecord {
    generation: u64,
    node_count: u32,
    server: u16,
    name: (usize, usize),
    json: (usize, usize),
    end: usize,
}

fn raw_record(b: &[u8], at: usize, end: usize) -> Option<RawRecord> {
    let name_len = u32_at(b, at.checked_add(14)?)? as usize;
    let json_len = u32_at(b, at.checked_add(18)?)? as usize;
    let name_at = at.checked_add(RECORD_FIXED)?;
    let json_at = name_at.checked_add(name_len)?;
    let rec_end = json_at.checked_add(json_len)?;
    if rec_end > end {
        return None;
    }
    Some(RawRecord {
        generation: u64_at(b, at)?,
        node_count: u32_at(b, at + 8)?,
        server: u16_at(b, at + 12)?,
        name: (name_at, name_len),
        json: (json_at, json_len),
        end: rec_end,
    })
}

impl Table {
    /// Opens snapshot file bytes of either version, validating all of it.
    pub fn open(bytes: Bytes) -> Result<Table, String> {
        let b = bytes.as_slice();
        if b.starts_with(codec_v1::MAGIC) {
            let (meta, services) = codec_v1::decode(b)?;
            return Ok(Table::build(&meta, services));
        }
        let layout = validate(b)?;
        Ok(Table { bytes, ..layout })
    }

    /// Lays out `services` (any order; sorted here) in this format, in the
    /// heap. Of several services with one name, one is kept. A name or JSON
    /// of 4 GiB or more does not fit the format and is left out (responses
    /// are capped far below that by `max_response_bytes`).
    pub fn build(meta: &Meta, services: Vec<ServiceRef<'_>>) -> Table {
        Table::build_hashed(meta, services, Hashing::for_this_process())
    }

    /// [`Table::build`] with the index hashed as given.
    pub fn build_hashed(meta: &Meta, mut services: Vec<ServiceRef<'_>>, hashing: Hashing) -> Table {
        let fits = |n: usize| u32::try_from(n).is_ok();
        services.retain(|s| fits(s.name.len()) && fits(s.nodes_json.len()));
        services.truncate(u32::MAX as usize / 4);
        // A model lists its services in key order after a first sync: one
        // look tells, and spares the sort and a second list.
        let in_order = services.windows(2).all(|w| w[0].name < w[1].name);
        if !in_order {
            let names: Vec<&[u8]> = services.iter().map(|s| s.name.as_bytes()).collect();
            let mut order: Vec<u32> = (0..services.len() as u32).collect();
            sort_by_name(&names, &mut order, 0);
            order.dedup_by(|a, b| names[*a as usize] == names[*b as usize]);
            services = order.iter().map(|&i| services[i as usize]).collect();
        }
        let bytes = encode_sorted(meta, &services, hashing);
        let count = services.len();
        let offsets_at = HEADER_LEN
            + services
                .iter()
                .map(|s| RECORD_FIXED + s.name.len() + s.nodes_json.len())
                .sum::<usize>();
        Table {
            bytes: Bytes::from(bytes),
            meta: *meta,
            count,
            offsets_at,
            index_at: offsets_at + 8 * count,
            mask: slots_for(count) - 1,
            hashing,
            nodes: services.iter().map(|s| u64::from(s.node_count)).sum(),
        }
    }

    /// The same table served from `mapping`, when the mapping holds exactly
    /// this table's bytes (the leader's own file, just written): its pages
    /// are shared with the followers, so the heap copy can go. The layout
    /// was proven when the table was built; the byte comparison proves the
    /// mapping is that layout, so nothing is validated again.
    pub fn remapped(&self, mapping: Mmap) -> Option<Table> {
        if mapping[..] != *self.as_bytes() {
            return None;
        }
        Some(Table {
            bytes: Bytes::Mapped(mapping),
            ..*self
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// True when the table is a mapping of a shared file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped(_))
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn node_count(&self) -> u64 {
        self.nodes
    }

    /// Text the validation proved to be UTF-8.
    fn text(&self, (at, len): (usize, usize)) -> &str {
        let Some(bytes) = self.as_bytes().get(at..at + len) else {
            return "";
        };
        // SAFETY: every name and JSON extent a record yields was checked to
        // be UTF-8 when the table was opened (`validate`) or was copied from
        // a `&str` (`build`). The bytes never change afterwards: heap bytes
        // are owned by the table and never written; a mapping is read-only
        // and private, of a file the leader renamed into place complete and
        // never writes again. Only a process of our own uid could rewrite it
        // in place (the directory is 0700 and the file ours with one link),
        // and that uid is trusted, as for the shared header.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn record_at(&self, at: usize) -> Option<ServiceRef<'_>> {
        let r = raw_record(self.as_bytes(), at, self.offsets_at)?;
        Some(ServiceRef {
            name: self.text(r.name),
            generation: r.generation,
            server: r.server,
            node_count: r.node_count,
            nodes_json: self.text(r.json),
        })
    }

    fn offset_of(&self, i: usize) -> Option<usize> {
        if i >= self.count {
            return None;
        }
        usize::try_from(u64_at(self.as_bytes(), self.offsets_at + 8 * i)?).ok()
    }

    /// Service number `i` in name order.
    pub fn nth(&self, i: usize) -> Option<ServiceRef<'_>> {
        self.record_at(self.offset_of(i)?)
    }

    /// The position of service `name` in name order, and its record's
    /// offset.
    fn find(&self, name: &str) -> Option<(usize, usize)> {
        let b = self.as_bytes();
        let home = home(self.hashing.of(name.as_bytes()), self.mask);
        for i in run_from(b, self.index_at, self.mask, home) {
            let at = self.offset_of(i)?;
            let r = raw_record(b, at, self.offsets_at)?;
            if b.get(r.name.0..r.name.0 + r.name.1)? == name.as_bytes() {
                return Some((i, at));
            }
        }
        None
    }

    /// The position of service `name` in name order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.find(name).map(|(i, _)| i)
    }

    pub fn get(&self, name: &str) -> Option<ServiceRef<'_>> {
        self.record_at(self.find(name)?.1)
    }

    /// Every service in name order.
    pub fn iter(&self) -> impl Iterator<Item = ServiceRef<'_>> + '_ {
        let mut at = HEADER_LEN;
        std::iter::from_fn(move || {
            if at >= self.offsets_at {
                return None;
            }
            let s = self.record_at(at)?;
            at += RECORD_FIXED + s.name.len() + s.nodes_json.len();
            Some(s)
        })
    }
}

/// The 8 bytes of `name` from `at` as a big-endian number, zero-padded: a
/// smaller key means a smaller name, equal keys decide nothing.
fn key8(name: &[u8], at: usize) -> u64 {
    let mut k = [0u8; 8];
    let tail = name.get(at..).unwrap_or_default();
    let n = tail.len().min(8);
    k[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(k)
}

/// Sorts `order` (indexes into `names`) by name, byte order. All names in
/// `order` share their first `known` bytes. A comparison sort of full names
/// spends its time comparing the long prefix they share (the server URL and
/// the prefix): this sorts by 8-byte keys taken after the common prefix,
/// then each run of equal keys by the next 8 bytes, and so on.
fn sort_by_name(names: &[&[u8]], order: &mut [u32], known: usize) {
    let name = |i: u32| names[i as usize];
    if order.len() <= 32 {
        order.sort_unstable_by(|&a, &b| name(a)[known..].cmp(&name(b)[known..]));
        return;
    }
    let first = name(order[0]);
    let mut lcp = first.len();
    for &i in &order[1..] {
        let same = first[known..lcp]
            .iter()
            .zip(&name(i)[known..])
            .take_while(|(a, b)| a == b)
            .count();
        lcp = known + same;
    }
    let mut keyed: Vec<(u64, u32)> = order.iter().map(|&i| (key8(name(i), lcp), i)).collect();
    keyed.sort_unstable_by_key(|k| k.0);
    for (o, k) in order.iter_mut().zip(&keyed) {
        *o = k.1;
    }
    let mut start = 0;
    while start < keyed.len() {
        let end = start
            + keyed[start..]
                .iter()
                .take_while(|k| k.0 == keyed[start].0)
                .count();
        let run = &mut order[start..end];
        if run.len() > 1 {
            if run.iter().all(|&i| name(i).len() >= lcp + 8) {
                // They share 8 more bytes.
                sort_by_name(names, run, lcp + 8);
            } else {
                run.sort_unstable_by(|&a, &b| name(a)[lcp..].cmp(&name(b)[lcp..]));
            }
        }
        start = end;
    }
}

fn flags_of(meta: &Meta, hashing: Hashing) -> u32 {
    let mut flags = 0;
    if let Hashing::Seeded(_) = hashing {
        flags |= FLAG_SEEDED_HASH;
    }
    if meta.from_dump {
        flags |= FLAG_FROM_DUMP;
    }
    if meta.synced {
        flags |= FLAG_SYNCED;
    }
    flags
}

/// The header of a file with these fields and sizes.
fn header(
    meta: &Meta,
    hashing: Hashing,
    count: usize,
    slots: usize,
    offsets_at: usize,
) -> [u8; HEADER_LEN] {
    let index_at = offsets_at + 8 * count;
    let file_len = index_at + 4 * slots;
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&meta.seq.to_le_bytes());
    h[16..24].copy_from_slice(&meta.received_us.to_le_bytes());
    h[24..28].copy_from_slice(&flags_of(meta, hashing).to_le_bytes());
    h[28..32].copy_from_slice(&(count as u32).to_le_bytes());
    h[32..36].copy_from_slice(&(slots as u32).to_le_bytes());
    if let Hashing::Seeded(seed) = hashing {
        h[36..40].copy_from_slice(&seed.to_le_bytes());
    }
    h[40..48].copy_from_slice(&(offsets_at as u64).to_le_bytes());
    h[48..56].copy_from_slice(&(index_at as u64).to_le_bytes());
    h[56..64].copy_from_slice(&(file_len as u64).to_le_bytes());
    h
}

/// The file for services sorted by name, without duplicates.
fn encode_sorted(meta: &Meta, services: &[ServiceRef<'_>], hashing: Hashing) -> Vec<u8> {
    let count = services.len();
    let slots = slots_for(count);
    let records: usize = services
        .iter()
        .map(|s| RECORD_FIXED + s.name.len() + s.nodes_json.len())
        .sum();
    let offsets_at = HEADER_LEN + records;
    let mut out = Vec::with_capacity(offsets_at + 8 * count + 4 * slots);
    out.extend_from_slice(&header(meta, hashing, count, slots, offsets_at));
    let mut offsets = Vec::with_capacity(count);
    for s in services {
        offsets.push(out.len() as u64);
        out.extend_from_slice(&s.generation.to_le_bytes());
        out.extend_from_slice(&s.node_count.to_le_bytes());
        out.extend_from_slice(&s.server.to_le_bytes());
        out.extend_from_slice(&(s.name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(s.nodes_json.len() as u32).to_le_bytes());
        out.extend_from_slice(s.name.as_bytes());
        out.extend_from_slice(s.nodes_json.as_bytes());
    }
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let mut index = vec![0u32; slots];
    let mask = slots - 1;
    for (i, s) in services.iter().enumerate() {
        let mut slot = home(hashing.of(s.name.as_bytes()), mask);
        while index[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        index[slot] = i as u32 + 1;
    }
    for e in index {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out
}

/// The file bytes of `snapshot`, copied (see [`file_bytes`]).
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    file_bytes(snapshot).into_owned()
}

/// The file bytes of `snapshot`: its table's, unless the snapshot's fields
/// were changed after it was built (then a copy with the header rewritten).
pub fn file_bytes(snapshot: &Snapshot) -> Cow<'_, [u8]> {
    let table = snapshot.table();
    let meta = snapshot.meta();
    if *table.meta() == meta {
        return Cow::Borrowed(table.as_bytes());
    }
    let mut bytes = table.as_bytes().to_vec();
    let h = header(
        &meta,
        table.hashing,
        table.count,
        table.mask + 1,
        table.offsets_at,
    );
    bytes[..HEADER_LEN].copy_from_slice(&h);
    Cow::Owned(bytes)
}

/// The snapshot in file bytes of either version (a mapping is served in
/// place), validated.
pub fn open(bytes: impl Into<Bytes>) -> Result<Snapshot, String> {
    Table::open(bytes.into()).map(Snapshot::from_table)
}

/// Decodes snapshot file bytes of either version into a snapshot in the
/// heap. `_previous` is accepted for callers of the previous API: nothing
/// is shared with it any more.
pub fn decode(buf: &[u8], _previous: Option<&Snapshot>) -> Result<Snapshot, String> {
    if buf.starts_with(codec_v1::MAGIC) {
        let (meta, services) = codec_v1::decode(buf)?;
        return Ok(Snapshot::from_table(Table::build(&meta, services)));
    }
    open(buf.to_vec())
}

/// Checks every byte of a version-2 file; returns its layout (with empty
/// bytes, for the caller to fill in).
fn validate(b: &[u8]) -> Result<Table, String> {
    if b.len() < HEADER_LEN {
        return Err(format!(
            "snapshot truncated: {} bytes, the header alone is {HEADER_LEN}",
            b.len()
        ));
    }
    if &b[..8] != MAGIC {
        return Err("not a ckv snapshot (bad magic)".into());
    }
    let field = |at: usize| u64_at(b, at).unwrap_or(0);
    let small = |at: usize| u32_at(b, at).unwrap_or(0);
    let (seq, received_us, flags) = (field(8), field(16), small(24));
    let (count, slots, seed) = (small(28) as usize, small(32) as usize, small(36));
    let (offsets_at, index_at, file_len) = (field(40), field(48), field(56));
    if file_len != b.len() as u64 {
        return Err(format!(
            "snapshot is {} bytes, its header says {file_len} (truncated or padded)",
            b.len()
        ));
    }
    if flags & !(FLAG_FROM_DUMP | FLAG_SYNCED | FLAG_SEEDED_HASH) != 0 {
        return Err(format!("unknown flags {flags:#x} in the header"));
    }
    let hashing = if flags & FLAG_SEEDED_HASH != 0 {
        Hashing::Seeded(seed)
    } else if seed != 0 {
        return Err(format!(
            "seed {seed:#x} in the header without the seeded-hash flag"
        ));
    } else {
        Hashing::Fnv
    };
    if !slots.is_power_of_two() || slots <= count {
        return Err(format!(
            "index of {slots} slots for {count} services (needs a power of two above the count)"
        ));
    }
    // From here every size is within the file, so within usize.
    let len = b.len() as u64;
    if offsets_at < HEADER_LEN as u64 || offsets_at > len {
        return Err(format!(
            "offset table at byte {offsets_at}, outside the file of {len} bytes"
        ));
    }
    let expect_index = offsets_at + 8 * count as u64;
    if index_at != expect_index || index_at + 4 * slots as u64 != file_len {
        return Err(format!(
            "header counts lie: {count} services and {slots} slots do not fit offset table at {offsets_at}, index at {index_at}, end at {file_len}"
        ));
    }
    let (offsets_at, index_at) = (offsets_at as usize, index_at as usize);
    let mask = slots - 1;
    let mut at = HEADER_LEN;
    let mut previous: Option<&[u8]> = None;
    let mut nodes = 0u64;
    for i in 0..count {
        let listed = u64_at(b, offsets_at + 8 * i).unwrap_or(u64::MAX);
        if listed != at as u64 {
            return Err(format!(
                "offset table says record {i} starts at byte {listed}; it starts at {at}"
            ));
        }
        let r = raw_record(b, at, offsets_at).ok_or_else(|| {
            format!("record {i} at byte {at} runs past the records (which end at {offsets_at})")
        })?;
        let name = &b[r.name.0..r.name.0 + r.name.1];
        // Name and nodes lie side by side: one UTF-8 check of both, and the
        // name must end on a character boundary.
        let both = std::str::from_utf8(&b[r.name.0..r.json.0 + r.json.1]);
        let name_text = match both {
            Ok(t) if t.is_char_boundary(r.name.1) => &t[..r.name.1],
            _ => {
                let name_text = std::str::from_utf8(name)
                    .map_err(|e| format!("name of record {i} at byte {at} is not UTF-8: {e}"))?;
                return Err(
                    match std::str::from_utf8(&b[r.json.0..r.json.0 + r.json.1]) {
                        Err(e) => format!("nodes of service {name_text:?} are not UTF-8: {e}"),
                        Ok(_) => format!("record {i} at byte {at} is not UTF-8"),
                    },
                );
            }
        };
        if previous.is_some_and(|p| p >= name) {
            return Err(format!(
                "services are not in strict name order at record {i} ({name_text:?})"
            ));
        }
        previous = Some(name);
        // A lookup of the name reaches this record: every slot from its
        // home up to the record's is taken.
        if !run_from(b, index_at, mask, home(hashing.of(name), mask)).any(|e| e == i) {
            return Err(format!("index does not lead to service {name_text:?}"));
        }
        nodes += u64::from(r.node_count);
        at = r.end;
    }
    if at != offsets_at {
        return Err(format!(
            "{} stray bytes between the last record and the offset table",
            offsets_at - at
        ));
    }
    check_index(b, index_at, count, slots)?;
    Ok(Table {
        bytes: Bytes::Heap(Box::default()),
        meta: Meta {
            seq,
            from_dump: flags & FLAG_FROM_DUMP != 0,
            synced: flags & FLAG_SYNCED != 0,
            received_us,
        },
        count,
        offsets_at,
        index_at,
        mask: slots - 1,
        hashing,
        nodes,
    })
}

/// The name of record `i`, through the offset table.
#[cfg(test)]
fn name_in(b: &[u8], offsets_at: usize, i: usize) -> Option<&[u8]> {
    let at = usize::try_from(u64_at(b, offsets_at.checked_add(i.checked_mul(8)?)?)?).ok()?;
    let r = raw_record(b, at, offsets_at)?;
    b.get(r.name.0..r.name.0 + r.name.1)
}

/// The index names every record exactly once. (That a lookup of each name
/// reaches its record is checked with the records.)
fn check_index(b: &[u8], index_at: usize, count: usize, slots: usize) -> Result<(), String> {
    let entry = |slot: usize| u32_at(b, index_at + 4 * slot).unwrap_or(0) as usize;
    // One bit per record: the only allocation of a validation.
    let mut seen = vec![0u64; count.div_ceil(64)];
    let mut used = 0;
    for slot in 0..slots {
        let e = entry(slot);
        if e == 0 {
            continue;
        }
        let i = e - 1;
        if i >= count {
            return Err(format!("index slot {slot} names record {i} of {count}"));
        }
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if seen[word] & bit != 0 {
            return Err(format!("index names record {i} twice"));
        }
        seen[word] |= bit;
        used += 1;
    }
    if used != count {
        return Err(format!("index holds {used} entries for {count} services"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
