//! The snapshot as bytes: the file the leader writes into the shared
//! directory, laid out so that a follower serves lookups straight from a
//! read-only mapping of it, without decoding it into the heap. The leader
//! serves from the same layout in memory, so there is one lookup path.
//!
//! All integers are little-endian and unaligned; offsets count from the
//! first byte of the file, which is under 4 GiB.
//!
//! ```text
//! header (64 bytes)
//!    0  magic        "CKVSNAP3"
//!    8  seq          u64
//!   16  received_us  u64   unix µs the Consul response arrived (0: none)
//!   24  flags        u32   1 = from the dump, 2 = synced; other bits 0
//!   28  count        u32   number of services
//!   32  slots        u32   index slots: a power of two, more than count
//!   36  seed         u32   the index hash's seed
//!   40  records_at   u32   end of the heads, start of the records
//!   44  offsets_at   u32   end of the records, start of the offset table
//!   48  index_at     u32   = offsets_at + 4 × count
//!   52  file_len     u32   = index_at + 4 × slots, the file's size
//!   56  heads        u16   number of name heads
//!   58  reserved     6 bytes, 0
//! name heads, from byte 64 to records_at:
//!   heads × { len u16, bytes[len] (UTF-8) }
//! records, from records_at, back to back, in strict byte order of name:
//!   generation u64, node_count u32, server u16, head u16, tail_len u32,
//!   json_len u32, tail[tail_len] (UTF-8), json[json_len] (UTF-8, the nodes
//!   array); the service's name is head number `head`, then the tail
//! offset table: count × u32, the offset of each record, in record order
//! index: slots × u32, 0 = empty, else record number + 1
//! ```
//!
//! Every name of a server starts with `{server url}/v1/kv/{prefix}/`: the
//! file holds that head once per server and each record only the rest,
//! which takes a third off a file of one-node services.
//!
//! The index is an open-addressing table with linear probing: the service
//! named `n` sits at the first slot from `home(n)` (wrapping) that holds its
//! record number, and every slot from `home(n)` to there is occupied. The
//! hash is fixed by this format (a leader and a follower of different
//! releases share files during a reload), never a std hash: [`seeded_hash`]
//! of the whole name under the header's seed, which each leader process
//! draws at random, so that names written into Consul cannot be chosen to
//! pile up in one run of the index.
//!
//! A file is validated once, when opened ([`Table::open`]): sizes, every
//! offset and length, UTF-8 of heads, names and JSON, name order, and that
//! the index reaches every record exactly once. After that, lookups only
//! read proven data. A bad file is an error naming what is wrong.
//!
//! Files of earlier layouts (`CKVSNAP1`, `CKVSNAP2`) still open: they are
//! decoded and laid out again in the heap (`codec_v1`, `codec_v2`).

use std::borrow::Cow;
use std::fmt;

use memmap2::Mmap;

use super::{codec_v1, codec_v2};
use crate::snapshot::{Meta, Name, ServiceRef, Snapshot};

/// What every snapshot file starts with, whatever its version.
pub const MAGIC_PREFIX: &[u8] = b"CKVSNAP";
const MAGIC: &[u8; 8] = b"CKVSNAP3";
const HEADER_LEN: usize = 64;
/// generation, node_count, server, head, tail_len, json_len.
const RECORD_FIXED: usize = 8 + 4 + 2 + 2 + 4 + 4;
const FLAG_FROM_DUMP: u32 = 1;
const FLAG_SYNCED: u32 = 2;
/// Heads of at most this many bytes, at most this many heads.
const HEAD_MAX: usize = u16::MAX as usize;

/// 64 × 64 → 128-bit multiply, halves xored.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

const SEED_MIX: u64 = 0xa076_1d64_78bd_642f;
const FINAL_MIX: u64 = 0xe703_7ed1_a0b4_28db;

#[inline(always)]
fn word(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

/// The format's name hash: eight bytes per step, so a lookup of a 60-byte
/// name costs a handful of multiplies. With `m = fold(seed ^
/// 0xa0761d6478bd642f, 0xe7037ed1a0b428db) | 1` and `h = m ^ len`, each
/// 8-byte little-endian word of the name (the last one zero-padded) gives
/// `h = fold(h ^ word, m)`; the hash is `fold(h, 0xe7037ed1a0b428db)`.
pub fn seeded_hash(seed: u32, name: &[u8]) -> u64 {
    let m = multiplier(seed);
    fold(absorb(m ^ name.len() as u64, m, name), FINAL_MIX)
}

fn multiplier(seed: u32) -> u64 {
    fold(u64::from(seed) ^ SEED_MIX, FINAL_MIX) | 1
}

/// `h` after the 8-byte words of `bytes`, the last one zero-padded.
#[inline(always)]
fn absorb(mut h: u64, m: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = fold(h ^ word(w), m);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        h = fold(h ^ word(rest), m);
    }
    h
}

/// [`seeded_hash`] of `a` followed by `b`, without putting them together.
pub fn seeded_hash_of_parts(seed: u32, a: &[u8], b: &[u8]) -> u64 {
    let m = multiplier(seed);
    let whole = a.len() / 8 * 8;
    let mut h = absorb(m ^ (a.len() + b.len()) as u64, m, &a[..whole]);
    let rest = &a[whole..];
    let mut b = b;
    if !rest.is_empty() {
        // The word that straddles the two parts.
        let take = (8 - rest.len()).min(b.len());
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        w[rest.len()..rest.len() + take].copy_from_slice(&b[..take]);
        h = fold(h ^ u64::from_le_bytes(w), m);
        b = &b[take..];
    }
    fold(absorb(h, m, b), FINAL_MIX)
}

/// The hash of a name in whatever pieces it is held.
fn hash_name(seed: u32, name: &Name<'_>) -> u64 {
    match name.parts() {
        ("", whole) => seeded_hash(seed, whole.as_bytes()),
        (head, tail) => seeded_hash_of_parts(seed, head.as_bytes(), tail.as_bytes()),
    }
}

/// The seed this process's leader writes: one random seed per process (a
/// table built twice from the same services is the same bytes).
pub fn seed_for_this_process() -> u32 {
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let mut b = [0u8; 4];
        if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_ok() {
            return u32::from_le_bytes(b);
        }
        // No entropy to be had: still differ between processes.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        t ^ std::process::id().rotate_left(16)
    })
}

/// The home slot of a hash: its two halves xored, masked to the table size.
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

/// How many names ahead an index walk asks for the slot it will read.
const PROBE_AHEAD: usize = 16;

/// Index slots for `count` services: a power of two of at least twice the
/// count (half full at most, so probes stay short), and at least one.
fn slots_for(count: usize) -> usize {
    count.saturating_mul(2).max(1).next_power_of_two()
}

/// The bytes behind a table.
pub enum Bytes {
    /// Built by this process (leader, dump, a previous-release file). A
    /// `Vec`, so that the buffer can be handed to the next table
    /// ([`Table::into_heap_bytes`]).
    Heap(Vec<u8>),
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
        Bytes::Heap(v)
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
    seed: u32,
    /// (offset, length) of each name head.
    heads: Box<[(usize, usize)]>,
    records_at: usize,
    offsets_at: usize,
    index_at: usize,
    mask: usize,
    /// Sum of every service's node count.
    nodes: u64,
    /// Built from services already in name order, none left out: record `i`
    /// is the `i`-th service given, so the table can be patched
    /// ([`Table::patched`]). False for a table opened from a file.
    follows_input: bool,
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The fixed part and the extent of the record at `at`, within `end`.
struct RawRecord {
    generation: u64,
    node_count: u32,
    server: u16,
    head: u16,
    tail: (usize, usize),
    json: (usize, usize),
    end: usize,
}

#[inline]
fn raw_record(b: &[u8], at: usize, end: usize) -> Option<RawRecord> {
    let fixed = b.get(at..at.checked_add(RECORD_FIXED)?)?;
    let tail_len = u32_at(fixed, 16)? as usize;
    let json_len = u32_at(fixed, 20)? as usize;
    let tail_at = at + RECORD_FIXED;
    let json_at = tail_at.checked_add(tail_len)?;
    let rec_end = json_at.checked_add(json_len)?;
    if rec_end > end {
        return None;
    }
    Some(RawRecord {
        generation: u64_at(fixed, 0)?,
        node_count: u32_at(fixed, 8)?,
        server: u16_at(fixed, 12)?,
        head: u16_at(fixed, 14)?,
        tail: (tail_at, tail_len),
        json: (json_at, json_len),
        end: rec_end,
    })
}

/// Whether a file of these parts fits the format's u32 offsets.
fn fits_u32(n: usize) -> bool {
    u32::try_from(n).is_ok()
}

impl Table {
    /// Opens snapshot file bytes of any version, validating all of it.
    pub fn open(bytes: Bytes) -> Result<Table, String> {
        let b = bytes.as_slice();
        if b.starts_with(codec_v1::MAGIC) {
            let (meta, services) = codec_v1::decode(b)?;
            return Ok(Table::build(&meta, services));
        }
        if b.starts_with(codec_v2::MAGIC) {
            let (meta, services) = codec_v2::decode(b)?;
            return Ok(Table::build(&meta, services));
        }
        let layout = validate(b)?;
        Ok(Table { bytes, ..layout })
    }

    /// [`Table::open`] of the file that follows `prev` (a follower's next
    /// snapshot): when it differs from `prev` in nodes only, the records
    /// whose names are `prev`'s bytes for bytes need no order or index check
    /// again. Any other file is validated whole.
    pub fn open_after(bytes: Bytes, prev: &Table) -> Result<Table, String> {
        match after::validate_after(bytes.as_slice(), prev) {
            Some(layout) => Ok(Table { bytes, ..layout }),
            None => Table::open(bytes),
        }
    }

    /// Lays out `services` (any order; sorted here) in this format, in the
    /// heap. Of several services with one name, one is kept. A name or JSON
    /// of 4 GiB or more, or services past a file of 4 GiB, do not fit the
    /// format and are left out (responses are capped far below that by
    /// `max_response_bytes`).
    pub fn build(meta: &Meta, services: Vec<ServiceRef<'_>>) -> Table {
        Table::build_seeded(meta, services, seed_for_this_process())
    }

    /// [`Table::build`] with the index hashed under `seed`.
    pub fn build_seeded(meta: &Meta, mut services: Vec<ServiceRef<'_>>, seed: u32) -> Table {
        let given = services.len();
        services.retain(|s| fits_u32(s.name.len()) && fits_u32(s.nodes_json.len()));
        // A model lists its services in key order after a first sync: one
        // look tells, and spares the sort and a second list.
        let in_order = services.windows(2).all(|w| w[0].name < w[1].name);
        if !in_order {
            let full: Vec<Cow<'_, str>> = services.iter().map(|s| s.name.to_str()).collect();
            let names: Vec<&[u8]> = full.iter().map(|n| n.as_bytes()).collect();
            let mut order: Vec<u32> = (0..services.len() as u32).collect();
            sort_by_name(&names, &mut order, 0);
            order.dedup_by(|a, b| names[*a as usize] == names[*b as usize]);
            services = order.iter().map(|&i| services[i as usize]).collect();
        }
        let heads = Heads::of(&services);
        // Each name's head, chosen once (a comparison of tens of bytes).
        let mut chosen: Vec<(u16, usize)> = Vec::with_capacity(services.len());
        let (mut size, mut records) = (HEADER_LEN + heads.bytes(), 0);
        for s in &services {
            let head = heads.choose(s);
            let record = RECORD_FIXED + s.name.len() - head.1 + s.nodes_json.len();
            // The record, its offset, and at most four index slots.
            if !fits_u32(size + record + 20 + 4) {
                break;
            }
            size += record + 20;
            records += record;
            chosen.push(head);
        }
        let follows_input = in_order && services.len() == given && chosen.len() == given;
        services.truncate(chosen.len());
        let mut table = encode_sorted(meta, &services, &chosen, &heads, seed, records);
        table.follows_input = follows_input;
        table
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
            heads: self.heads.clone(),
            ..*self
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The buffer of a table built in the heap, to build the next one in
    /// (`None` for a mapped table).
    pub fn into_heap_bytes(self) -> Option<Vec<u8>> {
        match self.bytes {
            Bytes::Heap(v) => Some(v),
            Bytes::Mapped(_) => None,
        }
    }

    /// The seed its index is hashed under.
    pub fn seed(&self) -> u32 {
        self.seed
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
    #[inline]
    fn text(&self, (at, len): (usize, usize)) -> &str {
        let Some(bytes) = self.as_bytes().get(at..at + len) else {
            return "";
        };
        // SAFETY: every head, tail and JSON extent a table yields was
        // checked to be UTF-8 when the table was opened (`validate`) or was
        // copied from a `&str` (`build`; a head and a tail are cut at a
        // '/', a character of its own). The bytes never change afterwards:
        // heap bytes are owned by the table and never written; a mapping is
        // read-only and private, of a file the leader renamed into place
        // complete and never writes again. Only a process of our own uid
        // could rewrite it in place (the directory is 0700 and the file ours
        // with one link), and that uid is trusted, as for the shared header.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn head(&self, head: u16) -> &str {
        self.heads
            .get(usize::from(head))
            .map_or("", |&h| self.text(h))
    }

    fn service_of(&self, r: &RawRecord) -> ServiceRef<'_> {
        ServiceRef {
            name: Name::new(self.head(r.head), self.text(r.tail)),
            generation: r.generation,
            server: r.server,
            node_count: r.node_count,
            nodes_json: self.text(r.json),
        }
    }

    fn record_at(&self, at: usize) -> Option<ServiceRef<'_>> {
        let r = raw_record(self.as_bytes(), at, self.offsets_at)?;
        Some(self.service_of(&r))
    }

    #[inline]
    fn offset_of(&self, i: usize) -> Option<usize> {
        if i >= self.count {
            return None;
        }
        Some(u32_at(self.as_bytes(), self.offsets_at + 4 * i)? as usize)
    }

    /// Service number `i` in name order.
    pub fn nth(&self, i: usize) -> Option<ServiceRef<'_>> {
        self.record_at(self.offset_of(i)?)
    }

    /// The position of service `name` in name order, and its record's
    /// offset.
    fn find(&self, name: &str) -> Option<(usize, usize)> {
        let b = self.as_bytes();
        let name = name.as_bytes();
        let home = home(seeded_hash(self.seed, name), self.mask);
        for i in run_from(b, self.index_at, self.mask, home) {
            let at = self.offset_of(i)?;
            let r = raw_record(b, at, self.offsets_at)?;
            let (head_at, head_len) = *self.heads.get(usize::from(r.head))?;
            if name.len() == head_len + r.tail.1
                && name[..head_len] == b[head_at..head_at + head_len]
                && name[head_len..] == b[r.tail.0..r.tail.0 + r.tail.1]
            {
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
        let b = self.as_bytes();
        let mut at = self.records_at;
        std::iter::from_fn(move || {
            if at >= self.offsets_at {
                return None;
            }
            let r = raw_record(b, at, self.offsets_at)?;
            at = r.end;
            Some(self.service_of(&r))
        })
    }
}

/// The name heads of a file: per server, the part every one of its names
/// shares, up to and with its last '/'; the last head is the empty one.
struct Heads<'a> {
    list: Vec<&'a str>,
    /// (server, head number) for each server of the services.
    of_server: Vec<(u16, u16)>,
}

/// How many of `a`'s bytes `name` starts with.
fn common_len(a: &[u8], name: &Name<'_>) -> usize {
    let (head, tail) = name.parts();
    a.iter()
        .zip(head.bytes().chain(tail.bytes()))
        .take_while(|(x, y)| **x == *y)
        .count()
}

impl<'a> Heads<'a> {
    /// The heads of `services`, which are in name order (as
    /// [`Table::build_seeded`] leaves them).
    fn of(services: &[ServiceRef<'a>]) -> Heads<'a> {
        // By server: its first and last service. In a sorted list, what all
        // of a server's names share is what its first and last share, so
        // only those two names are read (reading every name here cost a
        // tenth of a snapshot build at 100k services: each one a cache miss).
        let mut ends: Vec<(u16, usize, usize)> = Vec::new();
        let mut last = 0;
        for (i, s) in services.iter().enumerate() {
            if let Some(e) = ends.get_mut(last).filter(|e| e.0 == s.server) {
                e.2 = i;
                continue;
            }
            // Servers are few, and a server's names come one after the
            // other.
            match ends.iter().position(|e| e.0 == s.server) {
                Some(k) => {
                    ends[k].2 = i;
                    last = k;
                }
                None => {
                    ends.push((s.server, i, i));
                    last = ends.len() - 1;
                }
            }
        }
        debug_assert!(services.windows(2).all(|w| w[0].name <= w[1].name));
        let shared = ends.iter().map(|&(server, first, last)| {
            // Borrowed from the first name's first piece.
            let (head, tail) = services[first].name.parts();
            let held = if head.is_empty() { tail } else { head }.as_bytes();
            (server, &held[..common_len(held, &services[last].name)])
        });
        let mut list: Vec<&'a str> = Vec::new();
        let mut of_server = Vec::with_capacity(ends.len());
        for (server, held) in shared {
            // Up to and with the last '/': a head never ends inside a
            // character, and stays put as services come and go.
            let cut = held.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
            let head = std::str::from_utf8(&held[..cut]).unwrap_or("");
            if head.is_empty() || head.len() > HEAD_MAX || list.len() + 1 >= HEAD_MAX {
                continue;
            }
            of_server.push((server, list.len() as u16));
            list.push(head);
        }
        // The last head is the empty one, for every other name.
        list.push("");
        Heads { list, of_server }
    }

    /// The head number service `s` is written with, and its length. `s`
    /// must be one of the services the heads were made [`of`](Heads::of):
    /// a server's head is a prefix of what all of its names share, so no
    /// name is compared with it again.
    fn choose(&self, s: &ServiceRef<'_>) -> (u16, usize) {
        let empty = (self.list.len() - 1) as u16;
        let k = self
            .of_server
            .iter()
            .find(|e| e.0 == s.server)
            .map_or(empty, |e| e.1);
        let head = self.list[usize::from(k)];
        debug_assert!(s.name.starts_with(head.as_bytes()));
        (k, head.len())
    }

    /// Bytes of the heads part of the file.
    fn bytes(&self) -> usize {
        self.list.iter().map(|h| 2 + h.len()).sum()
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

fn flags_of(meta: &Meta) -> u32 {
    let mut flags = 0;
    if meta.from_dump {
        flags |= FLAG_FROM_DUMP;
    }
    if meta.synced {
        flags |= FLAG_SYNCED;
    }
    flags
}

/// Where a file's parts begin.
#[derive(Debug, Clone, Copy)]
struct Layout {
    count: usize,
    slots: usize,
    heads: usize,
    records_at: usize,
    offsets_at: usize,
}

impl Layout {
    fn index_at(&self) -> usize {
        self.offsets_at + 4 * self.count
    }

    fn file_len(&self) -> usize {
        self.index_at() + 4 * self.slots
    }
}

/// The header of a file with these fields and sizes (all below 4 GiB, as
/// `build` made sure).
fn header(meta: &Meta, seed: u32, l: &Layout) -> [u8; HEADER_LEN] {
    let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&meta.seq.to_le_bytes());
    h[16..24].copy_from_slice(&meta.received_us.to_le_bytes());
    h[24..28].copy_from_slice(&flags_of(meta).to_le_bytes());
    h[28..32].copy_from_slice(&u32_of(l.count));
    h[32..36].copy_from_slice(&u32_of(l.slots));
    h[36..40].copy_from_slice(&seed.to_le_bytes());
    h[40..44].copy_from_slice(&u32_of(l.records_at));
    h[44..48].copy_from_slice(&u32_of(l.offsets_at));
    h[48..52].copy_from_slice(&u32_of(l.index_at()));
    h[52..56].copy_from_slice(&u32_of(l.file_len()));
    h[56..58].copy_from_slice(&(l.heads as u16).to_le_bytes());
    h
}

/// The table of services sorted by name, without duplicates, that fit.
/// `records` is the size of their records.
fn encode_sorted(
    meta: &Meta,
    services: &[ServiceRef<'_>],
    chosen: &[(u16, usize)],
    heads: &Heads<'_>,
    seed: u32,
    records: usize,
) -> Table {
    let count = services.len();
    let slots = slots_for(count);
    let records_at = HEADER_LEN + heads.bytes();
    let layout = Layout {
        count,
        slots,
        heads: heads.list.len(),
        records_at,
        offsets_at: records_at + records,
    };
    let mut out = Vec::with_capacity(layout.file_len());
    out.extend_from_slice(&header(meta, seed, &layout));
    let mut head_spans = Vec::with_capacity(heads.list.len());
    for h in &heads.list {
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        head_spans.push((out.len(), h.len()));
        out.extend_from_slice(h.as_bytes());
    }
    let mut offsets = Vec::with_capacity(count);
    let mask = slots - 1;
    // Each name's home slot, hashed while the name is at hand.
    let mut homes: Vec<u32> = Vec::with_capacity(count);
    let mut nodes = 0u64;
    for (s, &(head, skip)) in services.iter().zip(chosen) {
        homes.push(home(hash_name(seed, &s.name), mask) as u32);
        let (a, b) = s.name.after(skip);
        offsets.push(out.len() as u32);
        out.extend_from_slice(&s.generation.to_le_bytes());
        out.extend_from_slice(&s.node_count.to_le_bytes());
        out.extend_from_slice(&s.server.to_le_bytes());
        out.extend_from_slice(&head.to_le_bytes());
        out.extend_from_slice(&((a.len() + b.len()) as u32).to_le_bytes());
        out.extend_from_slice(&(s.nodes_json.len() as u32).to_le_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b.as_bytes());
        out.extend_from_slice(s.nodes_json.as_bytes());
        nodes += u64::from(s.node_count);
    }
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let mut index = vec![0u32; slots];
    // The homes are all over an index larger than the caches: each is asked
    // for some names ahead, so that the probes do not wait on memory.
    for (i, &h) in homes.iter().enumerate() {
        if let Some(&ahead) = homes.get(i + PROBE_AHEAD) {
            crate::prefetch::prefetch(index.as_ptr().wrapping_add(ahead as usize));
        }
        let mut slot = h as usize;
        while index[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        index[slot] = i as u32 + 1;
    }
    for e in index {
        out.extend_from_slice(&e.to_le_bytes());
    }
    Table {
        bytes: Bytes::from(out),
        meta: *meta,
        count,
        seed,
        heads: head_spans.into_boxed_slice(),
        records_at,
        offsets_at: layout.offsets_at,
        index_at: layout.index_at(),
        mask,
        nodes,
        follows_input: false,
    }
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
    let layout = Layout {
        count: table.count,
        slots: table.mask + 1,
        heads: table.heads.len(),
        records_at: table.records_at,
        offsets_at: table.offsets_at,
    };
    bytes[..HEADER_LEN].copy_from_slice(&header(&meta, table.seed, &layout));
    Cow::Owned(bytes)
}

/// The snapshot in file bytes of any version (a mapping of the current
/// version is served in place), validated.
pub fn open(bytes: impl Into<Bytes>) -> Result<Snapshot, String> {
    Table::open(bytes.into()).map(Snapshot::from_table)
}

/// [`open`] of the snapshot that follows `prev` ([`Table::open_after`]).
pub fn open_after(bytes: impl Into<Bytes>, prev: &Snapshot) -> Result<Snapshot, String> {
    Table::open_after(bytes.into(), prev.table()).map(Snapshot::from_table)
}

/// Decodes snapshot file bytes of any version into a snapshot in the heap.
/// `_previous` is accepted for callers of the previous API: nothing is
/// shared with it any more.
pub fn decode(buf: &[u8], _previous: Option<&Snapshot>) -> Result<Snapshot, String> {
    // Older layouts are laid out again anyway: read them in place.
    let older = if buf.starts_with(codec_v1::MAGIC) {
        Some(codec_v1::decode(buf)?)
    } else if buf.starts_with(codec_v2::MAGIC) {
        Some(codec_v2::decode(buf)?)
    } else {
        None
    };
    if let Some((meta, services)) = older {
        return Ok(Snapshot::from_table(Table::build(&meta, services)));
    }
    open(buf.to_vec())
}

/// Checks the header and the heads of a current file; returns the layout
/// and the heads' extents.
fn validate_header(b: &[u8]) -> Result<(Layout, Vec<(usize, usize)>), String> {
    if b.len() < HEADER_LEN {
        return Err(format!(
            "snapshot truncated: {} bytes, the header alone is {HEADER_LEN}",
            b.len()
        ));
    }
    if &b[..8] != MAGIC {
        return Err("not a ckv snapshot (bad magic)".into());
    }
    let small = |at: usize| u32_at(b, at).unwrap_or(0) as usize;
    let flags = small(24) as u32;
    if flags & !(FLAG_FROM_DUMP | FLAG_SYNCED) != 0 {
        return Err(format!("unknown flags {flags:#x} in the header"));
    }
    if b[58..64].iter().any(|&x| x != 0) {
        return Err("reserved header bytes 58..64 are not zero".into());
    }
    let l = Layout {
        count: small(28),
        slots: small(32),
        heads: usize::from(u16_at(b, 56).unwrap_or(0)),
        records_at: small(40),
        offsets_at: small(44),
    };
    let (index_at, file_len) = (small(48), small(52));
    if file_len != b.len() {
        return Err(format!(
            "snapshot is {} bytes, its header says {file_len} (truncated or padded)",
            b.len()
        ));
    }
    if !l.slots.is_power_of_two() || l.slots <= l.count {
        return Err(format!(
            "index of {} slots for {} services (needs a power of two above the count)",
            l.slots, l.count
        ));
    }
    // From here every size is below 4 GiB: the sums cannot overflow.
    if l.records_at < HEADER_LEN || l.records_at > l.offsets_at || l.offsets_at > file_len {
        return Err(format!(
            "records from byte {} to {}, outside the file of {file_len} bytes",
            l.records_at, l.offsets_at
        ));
    }
    if index_at != l.index_at() || l.file_len() != file_len {
        return Err(format!(
            "header counts lie: {} services and {} slots do not fit offset table at {}, index at {index_at}, end at {file_len}",
            l.count, l.slots, l.offsets_at
        ));
    }
    // Two bytes at least per head: a count the part cannot hold is refused
    // before anything is allocated for it.
    if l.heads * 2 > l.records_at - HEADER_LEN {
        return Err(format!(
            "{} name heads do not fit in the {} bytes before the records",
            l.heads,
            l.records_at - HEADER_LEN
        ));
    }
    let mut heads = Vec::with_capacity(l.heads);
    let mut at = HEADER_LEN;
    for k in 0..l.heads {
        let len = u16_at(b, at).map(usize::from);
        let Some(len) = len.filter(|&n| at + 2 + n <= l.records_at) else {
            return Err(format!("name head {k} at byte {at} runs past the heads"));
        };
        std::str::from_utf8(&b[at + 2..at + 2 + len])
            .map_err(|e| format!("name head {k} at byte {at} is not UTF-8: {e}"))?;
        heads.push((at + 2, len));
        at += 2 + len;
    }
    if at != l.records_at {
        return Err(format!(
            "{} stray bytes between the name heads and the records",
            l.records_at - at
        ));
    }
    Ok((l, heads))
}

/// Checks every byte of a current file; returns its layout (with empty
/// bytes, for the caller to fill in).
fn validate(b: &[u8]) -> Result<Table, String> {
    let (l, heads) = validate_header(b)?;
    let seed = u32_at(b, 36).unwrap_or(0);
    let (offsets_at, index_at) = (l.offsets_at, l.index_at());
    let mask = l.slots - 1;
    // Checked to be UTF-8 by validate_header; looked at once here.
    let head_texts: Vec<&str> = heads
        .iter()
        .map(|&(at, len)| std::str::from_utf8(&b[at..at + len]).unwrap_or(""))
        .collect();
    let head_text = |k: usize| head_texts[k];
    let mut at = l.records_at;
    let mut previous: Option<Name<'_>> = None;
    let mut nodes = 0u64;
    // A lookup of each name must reach its record. The homes are all over
    // an index larger than the caches, so each is asked for when its record
    // is read and walked PROBE_AHEAD records later: (record, home, name).
    let mut pending = [(0, 0, Name::whole("")); PROBE_AHEAD];
    let reaches = |(i, h, name): (usize, usize, Name<'_>)| {
        if run_from(b, index_at, mask, h).any(|e| e == i) {
            Ok(())
        } else {
            Err(format!("index does not lead to service {name:?}"))
        }
    };
    for i in 0..l.count {
        let listed = u32_at(b, offsets_at + 4 * i).map_or(u64::MAX, u64::from);
        if listed != at as u64 {
            return Err(format!(
                "offset table says record {i} starts at byte {listed}; it starts at {at}"
            ));
        }
        let r = raw_record(b, at, offsets_at).ok_or_else(|| {
            format!("record {i} at byte {at} runs past the records (which end at {offsets_at})")
        })?;
        let head = usize::from(r.head);
        if head >= heads.len() {
            return Err(format!(
                "record {i} at byte {at} names head {head} of {}",
                heads.len()
            ));
        }
        // Tail and nodes lie side by side: one UTF-8 check of both, and the
        // tail must end on a character boundary.
        let both = std::str::from_utf8(&b[r.tail.0..r.json.0 + r.json.1]);
        let tail = match both {
            Ok(t) if t.is_char_boundary(r.tail.1) => &t[..r.tail.1],
            _ => {
                let tail = std::str::from_utf8(&b[r.tail.0..r.tail.0 + r.tail.1])
                    .map_err(|e| format!("name of record {i} at byte {at} is not UTF-8: {e}"))?;
                let name = Name::new(head_text(head), tail);
                return Err(
                    match std::str::from_utf8(&b[r.json.0..r.json.0 + r.json.1]) {
                        Err(e) => format!("nodes of service {name:?} are not UTF-8: {e}"),
                        Ok(_) => format!("record {i} at byte {at} is not UTF-8"),
                    },
                );
            }
        };
        let name = Name::new(head_text(head), tail);
        if previous.is_some_and(|p| p >= name) {
            return Err(format!(
                "services are not in strict name order at record {i} ({name:?})"
            ));
        }
        previous = Some(name);
        let h = home(hash_name(seed, &name), mask);
        crate::prefetch::prefetch(b.as_ptr().wrapping_add(index_at + 4 * h));
        let due = std::mem::replace(&mut pending[i % PROBE_AHEAD], (i, h, name));
        if i >= PROBE_AHEAD {
            reaches(due)?;
        }
        nodes += u64::from(r.node_count);
        at = r.end;
    }
    for i in l.count.saturating_sub(PROBE_AHEAD)..l.count {
        reaches(pending[i % PROBE_AHEAD])?;
    }
    if at != offsets_at {
        return Err(format!(
            "{} stray bytes between the last record and the offset table",
            offsets_at - at
        ));
    }
    check_index(b, index_at, l.count, l.slots)?;
    Ok(validated(b, &l, heads, nodes))
}

/// The table of a validated file `b` of layout `l` (with empty bytes, for
/// the caller to fill in).
fn validated(b: &[u8], l: &Layout, heads: Vec<(usize, usize)>, nodes: u64) -> Table {
    let flags = u32_at(b, 24).unwrap_or(0);
    Table {
        bytes: Bytes::Heap(Vec::new()),
        meta: Meta {
            seq: u64_at(b, 8).unwrap_or(0),
            from_dump: flags & FLAG_FROM_DUMP != 0,
            synced: flags & FLAG_SYNCED != 0,
            received_us: u64_at(b, 16).unwrap_or(0),
        },
        count: l.count,
        seed: u32_at(b, 36).unwrap_or(0),
        heads: heads.into_boxed_slice(),
        records_at: l.records_at,
        offsets_at: l.offsets_at,
        index_at: l.index_at(),
        mask: l.slots - 1,
        nodes,
        follows_input: false,
    }
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

mod after;
mod patch;
#[cfg(test)]
mod tests;
